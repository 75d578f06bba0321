//! Any decoded pixel layout → 8-bit RGB, as Hugging Face transformers' `convert_to_rgb` does it:
//! an RGB image is kept as it is; every other mode goes to RGBA and is alpha-composited over opaque white
//! with Pillow's `Image.alpha_composite` integer arithmetic, then the alpha channel is dropped.
//!
//! Deliberate differences from Pillow: 16-bit samples are scaled with `round(v / 257)` (Pillow keeps the
//! high byte of 16-bit RGB(A) PNGs and clamps 16-bit grayscale to 255); float samples are taken as 0..1 and
//! scaled with `round(v * 255)` after clamping.

use ::image::{DynamicImage, RgbImage};

/// Pillow's `ImagingAlphaComposite` for one channel with an opaque white destination.
#[inline(always)]
pub(crate) fn over_white(src: u8, alpha: u8) -> u8 {
    // Same names and steps as libImaging/AlphaComposite.c (PRECISION_BITS = 7), dst = (255, 255, 255, 255).
    const PRECISION_BITS: u32 = 7;
    if alpha == 0 {
        return 255;
    }
    let (sa, dst, da) = (u32::from(alpha), 255u32, 255u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = u32::from(src) * coef1 + dst * coef2 + (0x80 << PRECISION_BITS);
    (((tmp >> 8) + tmp) >> 8 >> PRECISION_BITS) as u8
}

#[inline(always)]
fn u16_to_u8(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

#[inline(always)]
fn f32_to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

fn from_rgba_iter(w: u32, h: u32, px: impl Iterator<Item = [u8; 4]>) -> RgbImage {
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for [r, g, b, a] in px {
        if a == 255 {
            out.extend_from_slice(&[r, g, b]);
        } else {
            out.extend_from_slice(&[over_white(r, a), over_white(g, a), over_white(b, a)]);
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

fn from_rgb_iter(w: u32, h: u32, px: impl Iterator<Item = [u8; 3]>) -> RgbImage {
    let out: Vec<u8> = px.flatten().collect();
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Converts a decoded image to RGB like `convert_to_rgb`. `drop_alpha` keeps the colour of pixels whose
/// alpha came only from a PNG `tRNS` chunk on an RGB image (Pillow opens those as mode `RGB`, which
/// `convert_to_rgb` returns unchanged).
pub(crate) fn to_rgb(img: DynamicImage, drop_alpha: bool) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(l) => {
            from_rgb_iter(w, h, l.into_raw().into_iter().map(|v| [v, v, v]))
        }
        DynamicImage::ImageLumaA8(la) => from_rgba_iter(
            w,
            h,
            la.as_raw()
                .chunks_exact(2)
                .map(|p| [p[0], p[0], p[0], p[1]]),
        ),
        DynamicImage::ImageRgba8(rgba) if drop_alpha => from_rgb_iter(
            w,
            h,
            rgba.as_raw().chunks_exact(4).map(|p| [p[0], p[1], p[2]]),
        ),
        DynamicImage::ImageRgba8(rgba) => from_rgba_iter(
            w,
            h,
            rgba.as_raw()
                .chunks_exact(4)
                .map(|p| [p[0], p[1], p[2], p[3]]),
        ),
        DynamicImage::ImageLuma16(l) => from_rgb_iter(
            w,
            h,
            l.as_raw().iter().map(|&v| {
                let v = u16_to_u8(v);
                [v, v, v]
            }),
        ),
        DynamicImage::ImageLumaA16(la) => from_rgba_iter(
            w,
            h,
            la.as_raw().chunks_exact(2).map(|p| {
                let v = u16_to_u8(p[0]);
                [v, v, v, u16_to_u8(p[1])]
            }),
        ),
        DynamicImage::ImageRgb16(rgb) => from_rgb_iter(
            w,
            h,
            rgb.as_raw()
                .chunks_exact(3)
                .map(|p| [u16_to_u8(p[0]), u16_to_u8(p[1]), u16_to_u8(p[2])]),
        ),
        DynamicImage::ImageRgba16(rgba) => {
            let px = rgba.as_raw().chunks_exact(4).map(|p| {
                let a = if drop_alpha { 255 } else { u16_to_u8(p[3]) };
                [u16_to_u8(p[0]), u16_to_u8(p[1]), u16_to_u8(p[2]), a]
            });
            from_rgba_iter(w, h, px)
        }
        DynamicImage::ImageRgb32F(rgb) => from_rgb_iter(
            w,
            h,
            rgb.as_raw()
                .chunks_exact(3)
                .map(|p| [f32_to_u8(p[0]), f32_to_u8(p[1]), f32_to_u8(p[2])]),
        ),
        DynamicImage::ImageRgba32F(rgba) => from_rgba_iter(
            w,
            h,
            rgba.as_raw().chunks_exact(4).map(|p| {
                [
                    f32_to_u8(p[0]),
                    f32_to_u8(p[1]),
                    f32_to_u8(p[2]),
                    f32_to_u8(p[3]),
                ]
            }),
        ),
        // `DynamicImage` is non-exhaustive: anything newer goes through the crate's own RGBA conversion.
        other => {
            let rgba = other.to_rgba8();
            from_rgba_iter(
                w,
                h,
                rgba.as_raw()
                    .chunks_exact(4)
                    .map(|p| [p[0], p[1], p[2], p[3]]),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_fixtures;
    use ::image::{GrayAlphaImage, ImageBuffer, LumaA, Rgba, RgbaImage};

    #[test]
    fn composite_endpoints() {
        for v in 0..=255u8 {
            assert_eq!(over_white(v, 255), v, "opaque keeps the colour");
            assert_eq!(over_white(v, 0), 255, "transparent becomes white");
        }
    }

    #[test]
    fn composite_matches_pillow() {
        // Pillow's alpha_composite(opaque white, (v, v, v, alpha)), from tests/fixtures/pillow/pillow.json
        // (make_pillow_fixtures.py): single values, and a hash of the 256×256 table (row = alpha, column = v).
        let fixture = &test_fixtures::pillow()["over_white"];
        let cases = test_fixtures::list(&fixture["cases"]);
        assert!(!cases.is_empty());
        for case in cases {
            let (v, alpha): (u8, u8) = (
                test_fixtures::int(&case["v"]),
                test_fixtures::int(&case["alpha"]),
            );
            let want: u8 = test_fixtures::int(&case["out"]);
            assert_eq!(over_white(v, alpha), want, "over_white({v}, {alpha})");
        }
        let table: Vec<u8> = (0..=255u8)
            .flat_map(|alpha| (0..=255u8).map(move |v| over_white(v, alpha)))
            .collect();
        assert_eq!(
            test_fixtures::short_sha(&table),
            test_fixtures::str_of(&fixture["table_sha256_16"])
        );
    }

    #[test]
    fn modes_convert_like_convert_to_rgb() {
        let la = GrayAlphaImage::from_raw(2, 1, vec![10, 255, 10, 0]).unwrap();
        let rgb = to_rgb(DynamicImage::ImageLumaA8(la), false);
        assert_eq!(rgb.as_raw(), &[10, 10, 10, 255, 255, 255]);

        let rgba = RgbaImage::from_pixel(1, 1, Rgba([0, 100, 200, 0]));
        assert_eq!(
            to_rgb(DynamicImage::ImageRgba8(rgba.clone()), false).as_raw(),
            &[255; 3]
        );
        assert_eq!(
            to_rgb(DynamicImage::ImageRgba8(rgba), true).as_raw(),
            &[0, 100, 200]
        );

        let l16: ImageBuffer<LumaA<u16>, Vec<u16>> =
            ImageBuffer::from_raw(1, 1, vec![65535, 65535]).unwrap();
        assert_eq!(
            to_rgb(DynamicImage::ImageLumaA16(l16), false).as_raw(),
            &[255; 3]
        );
        let l16 = ImageBuffer::from_raw(3, 1, vec![128u16, 129, 32896]).unwrap();
        assert_eq!(
            to_rgb(DynamicImage::ImageLuma16(l16), false).as_raw(),
            &[0, 0, 0, 1, 1, 1, 128, 128, 128]
        );
    }
}
