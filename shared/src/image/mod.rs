//! Images: decoding to RGB ([`load_rgb`]), Pillow-compatible resampling ([`resize`]), the encoder's
//! preprocessing with augmented-view replay ([`Preprocess`]) and the view's pixel operations ([`augment`]).
//! View parameters themselves live in [`crate::views`].

pub mod augment;
mod convert;
pub mod decode;
mod hsv;
pub mod preprocess;
pub mod resize;

#[cfg(test)]
mod parity_tests;
#[cfg(test)]
mod test_fixtures;
#[cfg(test)]
mod view_parity_tests;

pub use decode::{decode_rgb, load_rgb, DecodeError, MAX_PIXELS};
pub use preprocess::{Preprocess, PreprocessMode};
pub use resize::Filter;
