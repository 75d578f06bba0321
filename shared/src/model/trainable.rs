//! Trainable weights: a `VarMap` filled from a safetensors checkpoint, so pretrained models fine-tune.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::ModelError;

/// Overwrites every variable of `varmap` with the tensor of the same name in `weights` (converted to the
/// variable's dtype). Every variable must be present with the same shape: a checkpoint that does not fit
/// the architecture is an error, never a silently half-initialised model. Extra tensors are ignored.
pub fn load_into_varmap(varmap: &VarMap, weights: &Path) -> Result<(), ModelError> {
    let err = |reason: String| ModelError::Config {
        path: weights.to_path_buf(),
        reason,
    };
    // SAFETY: read-only memory map of a file vl2v does not modify while it runs.
    let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights) }
        .map_err(|e| err(e.to_string()))?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| err("variable map poisoned".into()))?;
    for (name, var) in vars.iter() {
        let tensor = tensors
            .load(name, &Device::Cpu)
            .map_err(|_| err(format!("has no tensor '{name}'")))?
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(|e| err(e.to_string()))?;
        if tensor.dims() != var.dims() {
            return Err(err(format!(
                "tensor '{name}' has shape {:?}, the model expects {:?}",
                tensor.dims(),
                var.dims()
            )));
        }
        var.set(&tensor).map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

/// Frozen f32 weights memory-mapped from a safetensors file: plain tensors, no autograd (inference on
/// `VarMap` variables keeps every intermediate alive).
pub fn mmap_weights(weights: &Path, device: &Device) -> Result<VarBuilder<'static>, ModelError> {
    // SAFETY: read-only memory map of a file vl2v does not modify while it runs.
    unsafe { VarBuilder::from_mmaped_safetensors(&[weights], TRAIN_DTYPE, device) }
        .map_err(|e| weights_error(weights, e))
}

/// A model file that does not fit the architecture, named.
pub fn weights_error(weights: &Path, e: candle_core::Error) -> ModelError {
    ModelError::Config {
        path: weights.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Variables are created in f32: training in half precision is out of scope on CPU.
pub const TRAIN_DTYPE: DType = DType::F32;
