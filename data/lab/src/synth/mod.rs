//! `synthdg`: a deterministic procedural multi-domain image generator, for offline demos and tests.
//!
//! One library, three products: the **benchmark** (eight classes in four domains, DomainBed layout, the
//! registry's `synthdg`), the captioned **corpus** (every class in every style, for pretraining a small
//! CLIP), and the photo-only corpus a student is pretrained on. Every image is a function of
//! (seed, style, class, index) alone: the same seed gives byte-identical files on any thread count.

mod canvas;
mod captions;
mod geometry;
mod outline_styles;
mod palette;
mod rng;
mod scene;
mod shapes;
mod strokes;
mod styles;
mod write;

use image::RgbImage;

pub use shapes::{BENCHMARK_CLASSES, CLASSES};
pub use styles::Style;
pub use write::{generate, Outcome, Settings, SIZES};

/// One image as the products write it, with the name of its colour; `None` for an unknown class.
pub fn render(
    seed: u64,
    style: Style,
    class: &str,
    index: usize,
    size: usize,
) -> Option<(RgbImage, &'static str)> {
    let mut rng = rng::Rng::new(rng::image_seed(seed, style.name(), class, index));
    styles::render(style, class, &mut rng, size)
}

/// A contact sheet for eyeballing: one row per style, one column per class, `size` pixels per cell.
pub fn contact_sheet(
    seed: u64,
    styles: &[Style],
    classes: &[&str],
    size: usize,
    index: usize,
) -> RgbImage {
    let mut sheet = RgbImage::new((classes.len() * size) as u32, (styles.len() * size) as u32);
    for (row, &style) in styles.iter().enumerate() {
        for (col, class) in classes.iter().enumerate() {
            if let Some((img, _)) = render(seed, style, class, index, size) {
                image::imageops::replace(
                    &mut sheet,
                    &img,
                    (col * size) as i64,
                    (row * size) as i64,
                );
            }
        }
    }
    sheet
}

#[cfg(test)]
mod tests;
