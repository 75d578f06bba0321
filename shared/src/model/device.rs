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

/// How many CUDA devices answer (0 in a build without CUDA or on a machine without a GPU).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        candle_core::cuda_backend::cudarc::driver::CudaContext::device_count()
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }
    #[cfg(not(feature = "cuda"))]
    0
}

/// `--precision`: how products (matrix products, convolutions) are computed. `fp32` (the default, and the
/// official code's): full f32. `tf32`: a GPU's f32 matrix products on NVIDIA's TensorFloat-32 tensor cores
/// (inputs rounded to a 10-bit mantissa, f32 accumulation; what PyTorch's `allow_tf32` enables); it changes
/// nothing on the CPU. `bf16`: every product of the models on bf16 operands with f32 sums and a bf16
/// result (`kernel_path::product`; PyTorch's bf16 autocast, for products only), on any device (the CPU
/// computes the same roundings, slower). Parameters, optimiser states, activations between products,
/// losses and caches stay f32 in all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Tf32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("'{s}' is not a precision: fp32, tf32 or bf16")),
        }
    }
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The name, and what it means on `device` where a user would not expect it: bf16 on the CPU computes
    /// bf16's roundings around f32 products (without the fused CPU kernels: several times slower than fp32,
    /// with more memory), which is for checking what bf16 changes, not for speed.
    pub fn on(self, device: &Device) -> String {
        match (self, device.is_cpu()) {
            (Precision::Bf16, true) => "bf16 (on the CPU: bf16's roundings around f32 products, the numbers \
                                        a GPU's bf16 gives, several times slower than fp32: to check bf16, \
                                        not for speed)"
                .into(),
            _ => self.name().into(),
        }
    }

    /// Makes this the precision of every product from now on (process-wide).
    pub fn apply(self) {
        super::kernel_path::set_bf16_products(self == Precision::Bf16);
        #[cfg(feature = "cuda")]
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(self == Precision::Tf32);
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| cuda_error_line(&e.to_string()))
}

/// One line for a failed CUDA start: candle's error text carries a backtrace after its first line.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn cuda_error_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default().trim();
    if first.contains("CUDA_ERROR_NO_DEVICE") {
        "no CUDA device answers (CUDA_ERROR_NO_DEVICE): is there a GPU, with the NVIDIA driver loaded and \
         visible to this process (CUDA_VISIBLE_DEVICES)? --device cpu runs on the CPU"
            .into()
    } else if first.contains("CUDA_ERROR_INVALID_DEVICE") {
        format!("no such CUDA device ({first}); nvidia-smi lists the devices")
    } else {
        first.to_string()
    }
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

    /// candle's error for a machine without a GPU (as a CUDA build printed it there: its first line, then a
    /// backtrace) becomes one line that says what to check.
    #[test]
    fn a_missing_gpu_is_one_line() {
        let candle = "DriverError(CUDA_ERROR_NO_DEVICE, \"<Failure when calling cuGetErrorString()>\")\n   0: \
                      bt\n             at /root/.cargo/registry/src/candle-core-0.11.1/src/error.rs:260:25";
        let line = cuda_error_line(candle);
        assert!(!line.contains('\n') && !line.contains("error.rs"), "{line}");
        assert!(
            line.contains("no CUDA device") && line.contains("--device cpu"),
            "{line}"
        );
        assert_eq!(cuda_error_line("something else\n 0: bt"), "something else");
    }

    #[test]
    fn precisions_parse_and_print_back() {
        for name in ["fp32", "tf32", "bf16"] {
            assert_eq!(name.parse::<Precision>().unwrap().name(), name);
        }
        let err = "fp16".parse::<Precision>().unwrap_err();
        assert!(
            err.contains("'fp16'") && err.contains("fp32, tf32 or bf16"),
            "{err}"
        );
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
