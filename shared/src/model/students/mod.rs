//! Trainable student backbones (the official `domainbed/networks/backbones.py` and `networks.py`): torchvision ResNet-18/50 without `fc` (frozen
//! BatchNorm), timm ViT-S/16, ViT-B/16 without head, and timm's distilled DeiT-S/16 without either head,
//! each under its checkpoint's own weight names so pretrained files load as they are.
//!
//! Our own model code rather than candle-transformers': candle's fused layer-norm and softmax kernels have
//! no backward pass, and its ResNet fails in backward at the strided max-pool. Each student has two paths,
//! picked by `train` in `forward`: a differentiable one for training, and a faster one for inference.
//!
//! Training: `Student::trainable(&varmap, weights, config, device)` creates the parameters in `varmap`
//! (fill it, then train `varmap.all_vars()`); BatchNorm running statistics are read from the same file as
//! constants, never variables. Inference: `Student::load(vb, config, true)` from any file-backed builder.

mod batch_norm;
mod resnet;
mod vit;

use std::path::Path;

use candle_core::{Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

pub use batch_norm::{FrozenBatchNorm, BN_EPS};
pub use resnet::{max_pool_3x3_s2_p1, BlockKind, ResNet, ResNetConfig};
pub use vit::{Vit, VitConfig};

use super::{load_into_varmap, mmap_weights, weights_error, ModelError, TRAIN_DTYPE};

/// The architectures vl2v trains as students, by their VL2V names (`--backbone`/`model`), and the offline
/// demo's miniature ViT.
pub const STUDENT_NAMES: [&str; 6] = [
    "resnet18",
    "resnet50",
    "vit-small",
    "vit-base",
    "deit-small",
    "mini-vit",
];

/// Fixture-sized versions of each architecture (tests/fixtures/students/): same code paths, tiny widths.
pub const TEST_STUDENT_NAMES: [&str; 4] = [
    "test-resnet-basic",
    "test-resnet-bottleneck",
    "test-vit",
    "test-deit",
];

/// A student cache's `encoder.architecture` in its manifest: `student {name}, {dim} features`.
pub fn architecture_label(name: &str, dim: usize) -> String {
    format!("student {name}, {dim} features")
}

/// The student name in an [`architecture_label`] (what `distill` rebuilds the student from).
pub fn name_from_architecture(label: &str) -> Option<&str> {
    let name = label.strip_prefix("student ")?.split(',').next()?.trim();
    StudentConfig::by_name(name).map(|_| name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StudentConfig {
    ResNet(ResNetConfig),
    Vit(VitConfig),
}

impl StudentConfig {
    /// One of `STUDENT_NAMES` or `TEST_STUDENT_NAMES`; `None` for anything else.
    pub fn by_name(name: &str) -> Option<Self> {
        let test_vit = VitConfig {
            image_size: 32,
            patch_size: 16,
            dim: 48,
            depth: 2,
            heads: 4,
            mlp: 192,
            distilled: false,
        };
        let tiny_resnet = |block| {
            Self::ResNet(ResNetConfig {
                block,
                layers: [1, 1, 1, 1],
                width: 16,
            })
        };
        Some(match name {
            "resnet18" => Self::ResNet(ResNetConfig::RESNET18),
            "resnet50" => Self::ResNet(ResNetConfig::RESNET50),
            "vit-small" => Self::Vit(VitConfig::VIT_SMALL),
            "vit-base" => Self::Vit(VitConfig::VIT_BASE),
            // timm's deit_small_distilled_patch16_224 (the official `deit-small`).
            "deit-small" => Self::Vit(VitConfig::DEIT_SMALL),
            // The offline demo's student (`distill pretrain student`, shared/models/mini-vit): sized for
            // the 64-pixel generated benchmark.
            "mini-vit" => Self::Vit(VitConfig {
                image_size: 64,
                patch_size: 16,
                dim: 128,
                depth: 4,
                heads: 4,
                mlp: 512,
                distilled: false,
            }),
            "test-resnet-basic" => tiny_resnet(BlockKind::Basic),
            "test-resnet-bottleneck" => tiny_resnet(BlockKind::Bottleneck),
            "test-vit" => Self::Vit(test_vit),
            "test-deit" => Self::Vit(VitConfig {
                distilled: true,
                ..test_vit
            }),
            _ => return None,
        })
    }

    /// Feature size: 512 (ResNet-18), 2048 (ResNet-50), 384 (ViT-S, DeiT-S), 768 (ViT-B).
    pub fn dim(&self) -> usize {
        match self {
            Self::ResNet(c) => c.dim(),
            Self::Vit(c) => c.dim,
        }
    }

    /// The input side the student expects: a ViT's fixed size; ResNets take any, 224 is their training size.
    pub fn image_size(&self) -> usize {
        match self {
            Self::ResNet(_) => 224,
            Self::Vit(c) => c.image_size,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Student {
    ResNet(ResNet),
    Vit(Vit),
}

impl Student {
    /// Every tensor from `vb`, running statistics included. `train` false: the weights will never train,
    /// so inference-only fusions are precomputed (BatchNorm folded into convolutions, q pre-scaled); the
    /// differentiable path stays available either way. With a `VarMap`-backed `vb` the running statistics
    /// would become variables: use [`Student::trainable`] for training.
    pub fn load(vb: VarBuilder, config: &StudentConfig, train: bool) -> Result<Self> {
        Self::load_with_stats(vb.clone(), vb, config, train)
    }

    /// Parameters from `vb`, BatchNorm running statistics from `stats`.
    pub fn load_with_stats(
        vb: VarBuilder,
        stats: VarBuilder,
        config: &StudentConfig,
        train: bool,
    ) -> Result<Self> {
        Ok(match config {
            StudentConfig::ResNet(c) => Self::ResNet(ResNet::load(vb, stats, c, !train)?),
            StudentConfig::Vit(c) => Self::Vit(Vit::load(vb, c, !train)?),
        })
    }

    /// A student whose parameters are variables of `varmap` (in `TRAIN_DTYPE`) holding the tensors of
    /// `weights` (a safetensors checkpoint under the torchvision/timm names); BatchNorm running statistics
    /// are read from the same file as constants. Extra tensors in the file (`fc.*`, `head.*`,
    /// `num_batches_tracked`) are ignored; a missing or misshapen one is an error.
    pub fn trainable(
        varmap: &VarMap,
        weights: &Path,
        config: &StudentConfig,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        let stats = mmap_weights(weights, device)?;
        let vb = VarBuilder::from_varmap(varmap, TRAIN_DTYPE, device);
        let student = Self::load_with_stats(vb, stats, config, true)
            .map_err(|e| weights_error(weights, e))?;
        load_into_varmap(varmap, weights)?;
        Ok(student)
    }

    /// Frozen weights, memory-mapped, with the inference fusions (caching a student's features).
    pub fn load_frozen(
        weights: &Path,
        config: &StudentConfig,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        Self::load(mmap_weights(weights, device)?, config, false)
            .map_err(|e| weights_error(weights, e))
    }

    /// Raw features of `n` preprocessed images given as one CHW f32 buffer, through the inference path.
    pub fn features(
        &self,
        pixels: &[f32],
        n: usize,
        device: &Device,
    ) -> std::result::Result<Vec<Vec<f32>>, ModelError> {
        let compute = |e: candle_core::Error| ModelError::Compute(e.to_string());
        let size = self.config().image_size();
        let x = Tensor::from_slice(pixels, (n, 3, size, size), device).map_err(compute)?;
        self.forward(&x, false)
            .and_then(|f| f.to_vec2::<f32>())
            .map_err(compute)
    }

    /// (batch, 3, h, w) normalised pixels → features (batch, dim). `train` true: the differentiable path.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::ResNet(m) => m.forward(x, train),
            Self::Vit(m) => m.forward(x, train),
        }
    }

    pub fn dim(&self) -> usize {
        self.config().dim()
    }

    pub fn config(&self) -> StudentConfig {
        match self {
            Self::ResNet(m) => StudentConfig::ResNet(*m.config()),
            Self::Vit(m) => StudentConfig::Vit(*m.config()),
        }
    }
}

#[cfg(test)]
mod tests;
