//! Model loading: resolving files (hub or local), configs, devices and the encoders built from them.

mod add_relu;
mod attention;
#[cfg(test)]
mod bf16_tests;
pub mod clip;
mod clip_teacher;
mod conv;
mod cpu_kernels;
mod device;
mod files;
pub mod gemm;
#[cfg(test)]
mod generic_path_tests;
pub mod kernel_path;
mod layer_norm;
pub mod layers;
mod pool;
mod scratch;
pub mod students;
#[cfg(test)]
mod test_tensors;
mod trainable;

pub use candle_core::Device;
pub use clip_teacher::ClipTeacher;
pub use device::{cuda_device_count, device, device_name, Precision};
pub use files::{
    hub_cache, resolve, sha256_file, weights_sha256, ModelError, ModelFiles, Needs, CONFIG_FILE,
    TOKENIZER_FILE, WEIGHTS_FILE,
};
pub use trainable::{load_into_varmap, mmap_weights, weights_error, TRAIN_DTYPE};
