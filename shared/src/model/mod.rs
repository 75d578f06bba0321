//! Model loading: resolving files (hub or local), configs, devices and the encoders built from them.

mod clip_config;
mod clip_teacher;
mod device;
mod files;

pub use clip_config::load_clip_config;
pub use clip_teacher::ClipTeacher;
pub use device::device;
pub use files::{
    hub_cache, resolve, sha256_file, ModelError, ModelFiles, CONFIG_FILE, TOKENIZER_FILE,
    WEIGHTS_FILE,
};
