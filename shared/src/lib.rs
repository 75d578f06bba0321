pub mod alloc;
pub mod cache;
pub mod dataset;
pub mod image;
pub mod model;
pub mod prompts;
pub mod splits;
pub mod views;
