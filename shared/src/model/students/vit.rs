//! timm's `VisionTransformer` (vit_small/base_patch16_224) without its head, under timm's weight names
//! (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
//! mlp.fc2}`, `norm`), so its checkpoints load as they are: pre-LayerNorm blocks (eps 1e-6), exact GELU,
//! fused q/k/v projection, learned positions added after the class token is prepended, final `norm`. The
//! feature is the class token after `norm` (timm's `global_pool='token'`, `fc_norm` absent).
//!
//! With `distilled`, timm's `VisionTransformerDistilled` (deit_small_distilled_patch16_224): a second
//! learned token, `dist_token`, follows the class token (positions cover both), and with `head` and
//! `head_dist` replaced by `Identity`, as the official code does, its forward returns the mean of the two
//! tokens after `norm`, `(x[:, 0] + x[:, 1]) / 2`, in eval and train mode alike (timm 0.6.12 and 1.0.x;
//! only `set_distilled_training` would return the pair, and the official code never sets it).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::model::layers::{self_attention, LayerNorm, Linear};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VitConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// The MLP's hidden width (mlp_ratio 4: 4·dim).
    pub mlp: usize,
    /// DeiT's distillation token (`dist_token`); the feature is then the mean of the two tokens.
    pub distilled: bool,
}

impl VitConfig {
    pub const VIT_SMALL: Self = Self {
        image_size: 224,
        patch_size: 16,
        dim: 384,
        depth: 12,
        heads: 6,
        mlp: 1536,
        distilled: false,
    };
    pub const VIT_BASE: Self = Self {
        image_size: 224,
        patch_size: 16,
        dim: 768,
        depth: 12,
        heads: 12,
        mlp: 3072,
        distilled: false,
    };
    /// timm's `deit_small_distilled_patch16_224`: ViT-S/16 with the distillation token.
    pub const DEIT_SMALL: Self = Self {
        distilled: true,
        ..Self::VIT_SMALL
    };

    /// Tokens before the patches': the class token and, distilled, the distillation token.
    fn prefix_tokens(&self) -> usize {
        1 + usize::from(self.distilled)
    }

    /// The prefix tokens, then one per patch (`pos_embed`'s length).
    fn tokens(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + self.prefix_tokens()
    }
}

/// timm's `partial(nn.LayerNorm, eps=1e-6)`.
const LN_EPS: f32 = 1e-6;

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    /// [3·dim, dim]: q, k, v stacked. For frozen weights the q rows are pre-scaled by 1/sqrt(head_dim).
    qkv: Linear,
    q_prescaled: bool,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn load(vb: VarBuilder, c: &VitConfig, frozen: bool) -> Result<Self> {
        let d = c.dim;
        let mut qkv = Linear::load(vb.pp("attn.qkv"), d, 3 * d, true)?;
        if frozen {
            let scale = ((d / c.heads) as f64).powf(-0.5);
            let pre = |t: &Tensor| -> Result<Tensor> {
                Tensor::cat(&[(t.narrow(0, 0, d)? * scale)?, t.narrow(0, d, 2 * d)?], 0)
            };
            let weight = pre(qkv.weight())?.detach();
            let bias = pre(qkv.bias().expect("qkv has a bias"))?.detach();
            qkv = Linear::new(weight, Some(bias));
        }
        Ok(Self {
            norm1: LayerNorm::load(vb.pp("norm1"), d, LN_EPS)?,
            qkv,
            q_prescaled: frozen,
            proj: Linear::load(vb.pp("attn.proj"), d, d, true)?,
            norm2: LayerNorm::load(vb.pp("norm2"), d, LN_EPS)?,
            fc1: Linear::load(vb.pp("mlp.fc1"), d, c.mlp, true)?,
            fc2: Linear::load(vb.pp("mlp.fc2"), c.mlp, d, true)?,
            heads: c.heads,
        })
    }

    fn attention(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let hd = x.dim(2)? / self.heads;
        let scale = if self.q_prescaled {
            1.0
        } else {
            (hd as f64).powf(-0.5)
        };
        let qkv = self.qkv.forward_t(x, train, false)?;
        let attn = self_attention(&qkv, self.heads, scale, train)?;
        self.proj.forward_t(&attn, train, false)
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = (x + self.attention(&self.norm1.forward(x, train)?, train)?)?;
        let hidden = self
            .fc1
            .forward_gelu_erf(&self.norm2.forward(&x, train)?, train)?;
        x + self.fc2.forward_t(&hidden, train, false)?
    }
}

#[derive(Clone, Debug)]
pub struct Vit {
    config: VitConfig,
    /// The patch convolution (stride = kernel = patch) as a matrix over flattened patches.
    patch: Linear,
    cls_token: Tensor,
    /// (1, 1, dim) when `distilled`.
    dist_token: Option<Tensor>,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl Vit {
    /// `frozen`: the weights will never train (enables inference-only precomputation).
    pub fn load(vb: VarBuilder, config: &VitConfig, frozen: bool) -> Result<Self> {
        let c = config;
        let p = c.patch_size;
        let conv = vb.get((c.dim, 3, p, p), "patch_embed.proj.weight")?;
        let patch = Linear::new(
            conv.reshape((c.dim, 3 * p * p))?,
            Some(vb.get(c.dim, "patch_embed.proj.bias")?),
        );
        let blocks = (0..c.depth)
            .map(|i| Block::load(vb.pp("blocks").pp(i), c, frozen))
            .collect::<Result<_>>()?;
        Ok(Self {
            config: *c,
            patch,
            cls_token: vb.get((1, 1, c.dim), "cls_token")?,
            dist_token: c
                .distilled
                .then(|| vb.get((1, 1, c.dim), "dist_token"))
                .transpose()?,
            pos_embed: vb.get((1, c.tokens(), c.dim), "pos_embed")?,
            blocks,
            norm: LayerNorm::load(vb.pp("norm"), c.dim, LN_EPS)?,
        })
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// (batch, 3, image_size, image_size) → the class token after `norm` (batch, dim); distilled: the mean
    /// of the class and distillation tokens after `norm`.
    pub fn forward(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let (b, ch, h, w) = pixels.dims4()?;
        let c = &self.config;
        if ch != 3 || h != c.image_size || w != c.image_size {
            candle_core::bail!(
                "expected (batch, 3, {s}, {s}) pixels, got {:?}",
                pixels.dims(),
                s = c.image_size
            );
        }
        let p = c.patch_size;
        let (gh, gw) = (h / p, w / p);
        // (b, 3, gh, p, gw, p) → (b, gh, gw, 3, p, p): each row one patch in the conv weight's order.
        let patches = pixels
            .reshape((b, 3, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, 3 * p * p))?;
        let patches = self.patch.forward_t(&patches, train, false)?;
        let token = |t: &Tensor| t.broadcast_as((b, 1, c.dim))?.contiguous();
        let mut tokens = vec![token(&self.cls_token)?];
        if let Some(dist) = &self.dist_token {
            tokens.push(token(dist)?);
        }
        tokens.push(patches);
        let mut x = Tensor::cat(&tokens, 1)?.broadcast_add(&self.pos_embed)?;
        for block in &self.blocks {
            x = block.forward(&x, train)?;
        }
        if self.dist_token.is_none() {
            let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
            return self.norm.forward(&cls, train);
        }
        // timm: `(x[:, 0] + x[:, 1]) / 2` of the normed tokens.
        let prefix = x.narrow(1, 0, 2)?.contiguous()?;
        let normed = self.norm.forward(&prefix, train)?;
        (normed.narrow(1, 0, 1)? + normed.narrow(1, 1, 1)?)?.squeeze(1)? / 2.0
    }
}
