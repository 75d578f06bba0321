//! A backbone that trains end to end: a pretrained student (ResNet, ViT; BatchNorm statistics frozen as the
//! official code freezes them) or CLIP's image tower with its projection (VL2V-SD). Its parameters are the
//! variables of one `VarMap`; evaluation runs a frozen snapshot of them through the inference path (folded
//! BatchNorm, fused attention, no autograd graph kept alive).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use vl2v::model::clip::{ClipConfig, ClipImageEncoder};
use vl2v::model::students::{Student, StudentConfig};
use vl2v::model::{load_into_varmap, mmap_weights, TRAIN_DTYPE};
use vl2v::train::sorted_vars;

#[derive(Clone, Debug)]
pub enum Arch {
    Student(StudentConfig),
    Clip(Box<ClipConfig>),
}

#[derive(Clone)]
enum Model {
    Student(Student),
    Clip(ClipImageEncoder),
}

impl Model {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Model::Student(m) => m.forward(x, train),
            Model::Clip(m) => m.forward(x, train),
        }
    }
}

pub struct Backbone {
    arch: Arch,
    /// The pretrained checkpoint (also the source of BatchNorm running statistics).
    weights: PathBuf,
    /// The differentiable model over `varmap`.
    model: Model,
    /// The variables sorted by name (the optimiser's and the checkpoint's order).
    vars: Vec<(String, Var)>,
    device: Device,
}

impl Backbone {
    /// The pretrained `weights` (a safetensors file under the checkpoint's own names) as variables.
    pub fn load(arch: Arch, weights: &Path, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let model = match &arch {
            Arch::Student(config) => {
                Model::Student(Student::trainable(&varmap, weights, config, device)?)
            }
            Arch::Clip(config) => {
                let vb = VarBuilder::from_varmap(&varmap, TRAIN_DTYPE, device);
                let model = ClipImageEncoder::load(vb, config, false)
                    .map_err(|e| vl2v::model::weights_error(weights, e))?;
                load_into_varmap(&varmap, weights)?;
                Model::Clip(model)
            }
        };
        let vars = sorted_vars(&varmap)?;
        Ok(Backbone {
            arch,
            weights: weights.to_path_buf(),
            model,
            vars,
            device: device.clone(),
        })
    }

    /// Feature size: the student's, or CLIP's projection dimension.
    pub fn dim(&self) -> usize {
        match &self.arch {
            Arch::Student(c) => c.dim(),
            Arch::Clip(c) => c.projection_dim,
        }
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Features `[n, dim]` of `n` preprocessed images through the differentiable path.
    pub fn forward_train(&self, pixels: &[f32], n: usize, size: usize) -> Result<Tensor> {
        let x = Tensor::from_slice(pixels, (n, 3, size, size), &self.device)?;
        Ok(self.model.forward(&x, true)?)
    }

    /// A frozen copy of the current parameters with the inference fusions, for evaluation.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let tensors: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        let vb = VarBuilder::from_tensors(tensors, TRAIN_DTYPE, &self.device);
        let model = match &self.arch {
            Arch::Student(config) => {
                let stats = mmap_weights(&self.weights, &self.device)?;
                Model::Student(Student::load_with_stats(vb, stats, config, false)?)
            }
            Arch::Clip(config) => Model::Clip(ClipImageEncoder::load(vb, config, true)?),
        };
        Ok(Snapshot {
            model,
            device: self.device.clone(),
        })
    }
}

/// The frozen evaluation model of [`Backbone::snapshot`].
pub struct Snapshot {
    model: Model,
    device: Device,
}

impl Snapshot {
    /// Features `[n, dim]` of `n` preprocessed images (row-major).
    pub fn features(&self, pixels: &[f32], n: usize, size: usize) -> Result<Tensor> {
        let x = Tensor::from_slice(pixels, (n, 3, size, size), &self.device)?;
        Ok(self.model.forward(&x, false)?)
    }
}
