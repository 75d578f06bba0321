//! `--device auto|cpu|cuda|cuda:N`. `auto` (every command's default) is CUDA device 0 when this build has
//! CUDA (the `cuda` cargo feature; `make build` enables it where a toolkit is found) and a device answers,
//! else the CPU. CUDA is compiled in only with the `cuda` feature.

use candle_core::{Device, DeviceLocation};

use super::ModelError;

/// Parses a device name into a candle device.
pub fn device(name: &str) -> Result<Device, ModelError> {
    let err = |reason: String| ModelError::Device {
        name: name.to_string(),
        reason,
    };
    match name {
        "auto" => Ok(cuda(0).unwrap_or(Device::Cpu)),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0).map_err(err),
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => cuda(ordinal).map_err(err),
            _ => Err(err("expected auto, cpu, cuda or cuda:N".into())),
        },
    }
}

/// The name `--device` gives `device` (`cpu`, `cuda:0`, …): what runs print and record.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device, String> {
    Err(
        "this build has no CUDA support; rebuild with `make build CUDA=1` (or `cargo build --release \
         --features cuda`)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        assert_eq!(device_name(&device("cpu").unwrap()), "cpu");
        let auto = device_name(&device("auto").unwrap());
        if cfg!(feature = "cuda") {
            assert!(auto == "cpu" || auto == "cuda:0", "{auto}");
        } else {
            assert_eq!(auto, "cpu");
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let err = device(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {err}"
            );
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        for name in ["cuda", "cuda:1"] {
            let err = device(name).unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
