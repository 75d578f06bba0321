//! Trainable student backbones (the official `domainbed/networks/backbones.py` and `networks.py`): torchvision ResNet-18/50 without `fc` (frozen
//! BatchNorm) and timm ViT-S/16, ViT-B/16 without head, each under its checkpoint's own weight names so
//! pretrained files load as they are.
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
pub const STUDENT_NAMES: [&str; 5] = ["resnet18", "resnet50", "vit-small", "vit-base", "mini-vit"];

/// Fixture-sized versions of each architecture (tests/fixtures/students/): same code paths, tiny widths.
pub const TEST_STUDENT_NAMES: [&str; 3] =
    ["test-resnet-basic", "test-resnet-bottleneck", "test-vit"];

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
            // The offline demo's student (`distill pretrain student`, shared/models/mini-vit): sized for
            // the 64-pixel generated benchmark.
            "mini-vit" => Self::Vit(VitConfig {
                image_size: 64,
                patch_size: 16,
                dim: 128,
                depth: 4,
                heads: 4,
                mlp: 512,
            }),
            "test-resnet-basic" => tiny_resnet(BlockKind::Basic),
            "test-resnet-bottleneck" => tiny_resnet(BlockKind::Bottleneck),
            "test-vit" => Self::Vit(VitConfig {
                image_size: 32,
                patch_size: 16,
                dim: 48,
                depth: 2,
                heads: 4,
                mlp: 192,
            }),
            _ => return None,
        })
    }

    /// Feature size: 512 (ResNet-18), 2048 (ResNet-50), 384 (ViT-S), 768 (ViT-B).
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
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/students")
    }

    fn expected() -> HashMap<String, Tensor> {
        candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu)
            .unwrap()
    }

    #[test]
    fn architecture_labels_round_trip() {
        let label = architecture_label("resnet50", 2048);
        assert_eq!(label, "student resnet50, 2048 features");
        assert_eq!(name_from_architecture(&label), Some("resnet50"));
        assert_eq!(name_from_architecture("student nope, 3 features"), None);
        assert_eq!(name_from_architecture("CLIP ViT-B/16"), None);
    }

    fn scalar(t: Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    fn max_abs(t: &Tensor) -> f32 {
        scalar(t.abs().unwrap().max_all().unwrap())
    }

    /// max |a − b| / max |b|.
    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        max_abs(&(a - b).unwrap()) / max_abs(b)
    }

    fn min_cosine(a: &Tensor, b: &Tensor) -> f32 {
        let dot = (a * b).unwrap().sum(1).unwrap();
        let norm = |t: &Tensor| t.sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
        let cos = (dot / (norm(a) * norm(b)).unwrap()).unwrap();
        scalar(cos.min_all().unwrap())
    }

    /// (fixture prefix, registry name).
    const FIXTURES: [(&str, &str); 3] = [
        ("resnet_basic", "test-resnet-basic"),
        ("resnet_bottleneck", "test-resnet-bottleneck"),
        ("vit", "test-vit"),
    ];

    /// Features of torchvision's / timm's own models (eval mode, frozen BatchNorm) on both paths, and the
    /// gradients torch computes for a linear loss of them.
    #[test]
    fn students_match_torchvision_and_timm() {
        let dev = Device::Cpu;
        let expected = expected();
        for (prefix, name) in FIXTURES {
            let config = StudentConfig::by_name(name).unwrap();
            let weights = fixtures().join(format!("{prefix}.safetensors"));
            let input = &expected[&format!("{prefix}.input")];
            let want = &expected[&format!("{prefix}.features")];
            assert_eq!(want.dims(), [2, config.dim()]);

            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev) }
                .unwrap();
            let frozen = Student::load(vb, &config, false).unwrap();
            for train in [false, true] {
                let got = frozen.forward(input, train).unwrap();
                let (rel, cos) = (rel_diff(&got, want), min_cosine(&got, want));
                eprintln!(
                    "{prefix} frozen, train path {train}: rel max diff {rel:.2e}, min cos {cos}"
                );
                assert!(
                    rel <= 1e-4 && cos >= 0.9999,
                    "{prefix} (train {train}): {rel}, {cos}"
                );
            }

            let varmap = VarMap::new();
            let model = Student::trainable(&varmap, &weights, &config, &dev).unwrap();
            let got = model.forward(input, true).unwrap();
            let rel = rel_diff(&got, want);
            eprintln!("{prefix} trainable: rel max diff {rel:.2e}");
            assert!(rel <= 1e-4, "{prefix}: {rel}");

            // The input-dependent part alone (ResNet features share a large positive component).
            let centre = |t: &Tensor| t.broadcast_sub(&t.mean_keepdim(0).unwrap()).unwrap();
            let rel = rel_diff(&centre(&got), &centre(want));
            eprintln!("{prefix} trainable, centred: rel max diff {rel:.2e}");
            assert!(rel <= 1e-3, "{prefix} centred: {rel}");

            let r = &expected[&format!("{prefix}.loss_weights")];
            let grads = (got * r).unwrap().sum_all().unwrap().backward().unwrap();
            let vars = varmap.data().lock().unwrap();
            let grad_prefix = format!("{prefix}.grad.");
            let mut checked = 0;
            for (key, want) in &expected {
                let Some(param) = key.strip_prefix(&grad_prefix) else {
                    continue;
                };
                let g = grads.get(vars[param].as_tensor()).unwrap();
                let rel = rel_diff(g, want);
                eprintln!("{prefix} grad {param}: rel max diff {rel:.2e}");
                assert!(rel <= 1e-3, "{prefix} gradient of {param}: {rel}");
                checked += 1;
            }
            assert!(checked >= 7, "{prefix}: only {checked} gradients checked");
        }
    }

    /// Every parameter of every architecture gets a non-zero gradient through the training path (candle's
    /// fused kernels and its strided max-pool would silently pass none or fail), BatchNorm running
    /// statistics are not variables, and the training path computes what the inference path does.
    #[test]
    fn every_parameter_gets_a_gradient_and_paths_agree() {
        let dev = Device::Cpu;
        for (prefix, name) in FIXTURES {
            let config = StudentConfig::by_name(name).unwrap();
            let weights = fixtures().join(format!("{prefix}.safetensors"));
            let varmap = VarMap::new();
            let model = Student::trainable(&varmap, &weights, &config, &dev).unwrap();
            let frozen = {
                let vb =
                    unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev) }
                        .unwrap();
                Student::load(vb, &config, false).unwrap()
            };
            // 56 for the ResNets: odd feature maps (7 → 4) inside, as at 224.
            let size = match config {
                StudentConfig::ResNet(_) => 56,
                StudentConfig::Vit(c) => c.image_size,
            };
            let pixels = Tensor::randn(0f32, 1.0, (3, 3, size, size), &dev).unwrap();
            let features = model.forward(&pixels, true).unwrap();
            assert_eq!(features.dims(), [3, config.dim()]);
            let fast = frozen.forward(&pixels, false).unwrap();
            let rel = rel_diff(&features, &fast);
            assert!(rel < 1e-4, "{prefix}: paths differ by {rel}");

            let weights = Tensor::randn(0f32, 1.0, features.dims(), &dev).unwrap();
            let loss = (features * weights).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let vars = varmap.data().lock().unwrap();
            let mut missing = Vec::new();
            for (name, var) in vars.iter() {
                assert!(!name.contains("running_"), "{prefix}: {name} is a variable");
                let nonzero = grads
                    .get(var.as_tensor())
                    .map(|g| scalar(g.abs().unwrap().sum_all().unwrap()) > 0.0)
                    .unwrap_or(false);
                if !nonzero {
                    missing.push(name.clone());
                }
            }
            missing.sort();
            assert!(
                missing.is_empty(),
                "{prefix}: {} of {} parameters get no gradient: {missing:?}",
                missing.len(),
                vars.len()
            );
            eprintln!("{prefix}: all {} parameters get a gradient", vars.len());
        }
    }

    /// The real architectures build under their checkpoint names and give features of the right size.
    #[test]
    fn registry_names_give_the_paper_feature_sizes() {
        let dev = Device::Cpu;
        for (name, dim, params) in [
            ("resnet18", 512, 60),
            ("resnet50", 2048, 159),
            ("vit-small", 384, 4 + 12 * 12 + 2),
            ("vit-base", 768, 4 + 12 * 12 + 2),
        ] {
            let config = StudentConfig::by_name(name).unwrap();
            assert_eq!(config.dim(), dim);
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let stats = VarBuilder::zeros(DType::F32, &dev);
            let student = Student::load_with_stats(vb, stats, &config, true).unwrap();
            assert_eq!(student.dim(), dim);
            // torchvision's / timm's parameter tensors less fc's or head's weight and bias.
            assert_eq!(varmap.all_vars().len(), params, "{name}");
        }
        assert!(StudentConfig::by_name("resnet101").is_none());
        for name in STUDENT_NAMES.iter().chain(&TEST_STUDENT_NAMES) {
            assert!(StudentConfig::by_name(name).is_some());
        }
        // One forward at 224 through a zero-initialised ViT-S: shapes only.
        let config = StudentConfig::by_name("vit-small").unwrap();
        let student = Student::load(VarBuilder::zeros(DType::F32, &dev), &config, false).unwrap();
        let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &dev).unwrap();
        assert_eq!(student.forward(&x, false).unwrap().dims(), [1, 384]);
    }
}
