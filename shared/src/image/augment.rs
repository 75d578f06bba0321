//! The pixel operations of an augmented view, in place on an RGB image: horizontal flip, torchvision's
//! `ColorJitter` on PIL images (brightness, contrast, saturation, hue) and `RandomGrayscale`.
//!
//! Each follows the arithmetic of the Pillow function torchvision calls, so results are deterministic and
//! (up to torchvision's own random draws) the same as the reference pipeline:
//! - brightness / contrast / saturation: `ImageEnhance` = `Image.blend(degenerate, img, factor)` computed
//!   in `f32`, truncated to `u8` and clipped (libImaging/Blend.c). The degenerate image is black,
//!   a flat grey at the rounded mean of the luma image, or the luma image itself;
//! - luma: Pillow's `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16` (ITU-R 601-2);
//! - hue: RGB → HSV (8-bit channels), `h += trunc(hue * 255)` wrapping modulo 256, HSV → RGB, with
//!   Pillow's `rgb2hsv` / `hsv2rgb` rounding (libImaging/Convert.c).

use ::image::RgbImage;

use crate::views::{JitterOp, ViewParams};

/// Pillow's 8-bit luma of an RGB pixel.
#[inline(always)]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// `ImagingBlend` for one sample: `in1 + alpha * (in2 - in1)` in `f32`, clipped to 0..=255 and truncated
/// (Rust's saturating `as u8` is exactly that).
#[inline(always)]
fn blend(in1: u8, in2: u8, alpha: f32) -> u8 {
    (f32::from(in1) + alpha * (f32::from(in2) - f32::from(in1))) as u8
}

/// Mirrors the image left to right.
pub fn hflip(img: &mut RgbImage) {
    let w = img.width() as usize;
    if w == 0 {
        return;
    }
    let buf: &mut [u8] = img;
    for row in buf.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            let (a, b) = (x * 3, (w - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

/// `F.adjust_brightness`: blend with black.
pub fn adjust_brightness(img: &mut RgbImage, factor: f32) {
    let lut: [u8; 256] = std::array::from_fn(|v| blend(0, v as u8, factor));
    for v in img.iter_mut() {
        *v = lut[usize::from(*v)];
    }
}

/// `F.adjust_contrast`: blend with a flat grey at the mean luma, `int(mean + 0.5)`.
pub fn adjust_contrast(img: &mut RgbImage, factor: f32) {
    let n = u64::from(img.width()) * u64::from(img.height());
    if n == 0 {
        return;
    }
    let sum: u64 = img
        .pixels()
        .map(|p| u64::from(luma(p[0], p[1], p[2])))
        .sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    let lut: [u8; 256] = std::array::from_fn(|v| blend(mean, v as u8, factor));
    for v in img.iter_mut() {
        *v = lut[usize::from(*v)];
    }
}

/// `F.adjust_saturation`: blend with the luma image.
pub fn adjust_saturation(img: &mut RgbImage, factor: f32) {
    for p in img.pixels_mut() {
        let l = luma(p[0], p[1], p[2]);
        for v in p.0.iter_mut() {
            *v = blend(l, *v, factor);
        }
    }
}

/// `F.adjust_hue` with `hue` in turns (−0.5..=0.5).
pub fn adjust_hue(img: &mut RgbImage, hue: f32) {
    // Even a zero shift goes through the (lossy) HSV round trip, as in torchvision.
    let shift = ((f64::from(hue) * 255.0) as i32) as u8;
    let tables = super::hsv::tables();
    for p in img.pixels_mut() {
        let [h, s, v] = tables.rgb_to_hsv(p[0], p[1], p[2]);
        p.0 = tables.hsv_to_rgb(h.wrapping_add(shift), s, v);
    }
}

/// `F.rgb_to_grayscale(img, num_output_channels=3)`: luma in all three channels.
pub fn to_grayscale(img: &mut RgbImage) {
    for p in img.pixels_mut() {
        let l = luma(p[0], p[1], p[2]);
        p.0 = [l, l, l];
    }
}

/// Flip, colour jitter (in `view.jitter_order`; factors of exactly 1 and a zero hue are skipped) and
/// grayscale, as DomainBed's training transform applies them after `RandomResizedCrop`.
pub fn apply_pixel_ops(img: &mut RgbImage, view: &ViewParams) {
    if view.flip {
        hflip(img);
    }
    for op in view.jitter_order {
        match op {
            JitterOp::Brightness if view.brightness != 1.0 => {
                adjust_brightness(img, view.brightness)
            }
            JitterOp::Contrast if view.contrast != 1.0 => adjust_contrast(img, view.contrast),
            JitterOp::Saturation if view.saturation != 1.0 => {
                adjust_saturation(img, view.saturation)
            }
            JitterOp::Hue if view.hue != 0.0 => adjust_hue(img, view.hue),
            _ => {}
        }
    }
    if view.grayscale {
        to_grayscale(img);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_fixtures;
    use ::image::Rgb;

    fn sample() -> RgbImage {
        RgbImage::from_fn(16, 9, |x, y| {
            Rgb([(x * 16) as u8, (y * 28) as u8, ((x * y * 5) % 256) as u8])
        })
    }

    /// Every 8-bit triple, `(x, y, z)` at index `x * 65536 + y * 256 + z`.
    fn all_triples() -> impl Iterator<Item = (u8, u8, u8)> {
        (0..=255u8).flat_map(|x| (0..=255u8).flat_map(move |y| (0..=255u8).map(move |z| (x, y, z))))
    }

    #[test]
    fn luma_matches_pillow() {
        // Pillow's convert("L"), from tests/fixtures/pillow/pillow.json (make_pillow_fixtures.py): a few
        // colours, and a hash of all 2^24.
        let fixture = &test_fixtures::pillow()["luma"];
        let cases = test_fixtures::list(&fixture["cases"]);
        assert!(!cases.is_empty());
        for case in cases {
            let [r, g, b] = test_fixtures::triple(&case["rgb"]);
            let want: u8 = test_fixtures::int(&case["l"]);
            assert_eq!(luma(r, g, b), want, "rgb {r} {g} {b}");
        }
        let all: Vec<u8> = all_triples().map(|(r, g, b)| luma(r, g, b)).collect();
        assert_eq!(
            test_fixtures::short_sha(&all),
            test_fixtures::str_of(&fixture["all_sha256_16"]),
            "luma of every triple"
        );
    }

    #[test]
    fn blend_truncates_and_clips_like_pillow() {
        // Pillow's Image.blend, from tests/fixtures/pillow/pillow.json: single samples, and per alpha a hash
        // of the 256×256 table (row = in1, column = in2).
        let fixture = &test_fixtures::pillow()["blend"];
        let cases = test_fixtures::list(&fixture["cases"]);
        assert!(!cases.is_empty());
        for case in cases {
            let (in1, in2): (u8, u8) = (
                test_fixtures::int(&case["in1"]),
                test_fixtures::int(&case["in2"]),
            );
            let alpha = test_fixtures::f32_of(&case["alpha"]);
            let want: u8 = test_fixtures::int(&case["out"]);
            assert_eq!(blend(in1, in2, alpha), want, "blend({in1}, {in2}, {alpha})");
        }
        let tables = test_fixtures::list(&fixture["tables"]);
        assert!(!tables.is_empty());
        for table in tables {
            let alpha = test_fixtures::f32_of(&table["alpha"]);
            let got: Vec<u8> = (0..=255u8)
                .flat_map(|a| (0..=255u8).map(move |b| blend(a, b, alpha)))
                .collect();
            assert_eq!(
                test_fixtures::short_sha(&got),
                test_fixtures::str_of(&table["sha256_16"]),
                "blend table for alpha {alpha}"
            );
        }
    }

    #[test]
    fn flip_twice_is_identity() {
        let img = sample();
        let mut f = img.clone();
        hflip(&mut f);
        assert_ne!(f, img);
        assert_eq!(f.get_pixel(0, 3), img.get_pixel(15, 3));
        hflip(&mut f);
        assert_eq!(f, img);
    }

    #[test]
    fn grayscale_has_equal_channels() {
        let mut img = sample();
        to_grayscale(&mut img);
        assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    }
}
