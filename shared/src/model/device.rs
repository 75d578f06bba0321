//! `--device cpu|cuda`: CUDA is compiled in only with the `cuda` cargo feature.

use candle_core::Device;

use super::ModelError;

/// Parses a device name into a candle device.
pub fn device(name: &str) -> Result<Device, ModelError> {
    let err = |reason: String| ModelError::Device {
        name: name.to_string(),
        reason,
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda().map_err(err),
        _ => Err(err("expected 'cpu' or 'cuda'".into())),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device, String> {
    Device::new_cuda(0).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device, String> {
    Err(
        "this build has no CUDA support; rebuild with `cargo build --release --features cuda`"
            .into(),
    )
}
