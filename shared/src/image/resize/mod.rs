//! Pillow-compatible resampling: `Image.resize(size, resample, box)` for RGB images with `BILINEAR` and
//! `BICUBIC` (a = −0.5), bit-exact with Pillow's `ImagingResample` (`libImaging/Resample.c`).
//!
//! What makes it Pillow's and not any bicubic:
//! - antialiasing: when downscaling, the filter support is stretched by the scale factor;
//! - per output pixel, the weights are computed in `f64`, normalised to sum to 1, then rounded to 22-bit
//!   fixed point (`PRECISION_BITS = 32 - 8 - 2`); sums start at one half and are clipped to 0..=255;
//! - two passes with an 8-bit intermediate image, horizontal first unless the height shrinks much more
//!   than the width (Pillow ≥ 13); a pass whose size and box leave it unchanged is skipped;
//! - box coordinates are `f32` (Pillow parses the box tuple as C floats).
//!
//! Besides the full resize, [`resize_region`] computes only a window of the output (what a centre crop
//! keeps) and [`resize_crop`] resizes an integer sub-rectangle as if it had been cropped first (torchvision's
//! `resized_crop` on a PIL image), both without copying the source.
//!
//! Files: `coeffs.rs` (the fixed-point weights), `passes.rs` (the two passes, scalar), `x86.rs` (the same
//! passes with SSSE3, chosen at run time).

use ::image::RgbImage;

mod coeffs;
mod passes;
#[cfg(target_arch = "x86_64")]
mod x86;

use coeffs::Coeffs;
use passes::{horizontal_row, vertical_pass, Plane};

/// Resampling filter, named as in Pillow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1 (`PIL.Image.BILINEAR`).
    Bilinear,
    /// Keys cubic with a = −0.5, support 2 (`PIL.Image.BICUBIC`).
    Bicubic,
}

impl Filter {
    /// Parses `"bilinear"` or `"bicubic"` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "bilinear" => Some(Filter::Bilinear),
            "bicubic" => Some(Filter::Bicubic),
            _ => None,
        }
    }

    /// The name [`Filter::from_name`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Bilinear => "bilinear",
            Filter::Bicubic => "bicubic",
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Window `[x, x + w) × [y, y + h)` of a full output of size `out_w × out_h`.
#[derive(Clone, Copy)]
struct Window {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

/// Resizes the whole image to `width × height`, exactly like Pillow's `img.resize((width, height), filter)`.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (w, h) = img.dimensions();
    resize_region(
        img,
        [0.0, 0.0, w as f32, h as f32],
        width,
        height,
        [0, 0, width, height],
        filter,
    )
}

/// Pillow's `img.resize((width, height), filter, box=(x0, y0, x1, y1))`: the box (in source pixels, may be
/// fractional) is scaled to the output; filter taps that reach past the box but stay inside the image read
/// real pixels, as in Pillow. The box is clamped to the image.
pub fn resize_box(
    img: &RgbImage,
    bx: [f32; 4],
    width: u32,
    height: u32,
    filter: Filter,
) -> RgbImage {
    resize_region(img, bx, width, height, [0, 0, width, height], filter)
}

/// Like [`resize_box`], but computes only the output window `[x, y, w, h]` (e.g. the centre crop of a
/// shortest-side resize), which is identical to resizing fully and cropping afterwards. The window is
/// clamped to the output.
pub fn resize_region(
    img: &RgbImage,
    bx: [f32; 4],
    width: u32,
    height: u32,
    window: [u32; 4],
    filter: Filter,
) -> RgbImage {
    let (iw, ih) = (img.width() as f32, img.height() as f32);
    let x0 = bx[0].clamp(0.0, iw);
    let y0 = bx[1].clamp(0.0, ih);
    let bx = [x0, y0, bx[2].clamp(x0, iw), bx[3].clamp(y0, ih)];
    let win = clamp_window(window, width, height);
    resample(
        Plane::whole(img),
        bx,
        width as usize,
        height as usize,
        win,
        filter,
    )
}

/// Resizes the integer rectangle `[x, y, w, h]` of `img` to `width × height` as if it had been cropped
/// first (`img.crop((x, y, x + w, y + h)).resize(...)`, torchvision's `resized_crop`): taps never read
/// outside the rectangle. The rectangle is clamped to the image and to at least one pixel.
pub fn resize_crop(
    img: &RgbImage,
    rect: [u32; 4],
    width: u32,
    height: u32,
    filter: Filter,
) -> RgbImage {
    let (iw, ih) = img.dimensions();
    if iw == 0 || ih == 0 {
        return RgbImage::new(width, height);
    }
    let x = rect[0].min(iw - 1);
    let y = rect[1].min(ih - 1);
    let w = rect[2].clamp(1, iw - x);
    let h = rect[3].clamp(1, ih - y);
    let src = Plane::whole(img).sub(x as usize, y as usize, w as usize, h as usize);
    let win = clamp_window([0, 0, width, height], width, height);
    resample(
        src,
        [0.0, 0.0, w as f32, h as f32],
        width as usize,
        height as usize,
        win,
        filter,
    )
}

fn clamp_window(window: [u32; 4], width: u32, height: u32) -> Window {
    let x = window[0].min(width);
    let y = window[1].min(height);
    Window {
        x: x as usize,
        y: y as usize,
        w: window[2].min(width - x) as usize,
        h: window[3].min(height - y) as usize,
    }
}

/// Source pixels `first..last` that output pixels `start..start + len` read along one axis.
fn used_range(c: Option<&Coeffs>, start: usize, len: usize) -> (usize, usize) {
    match c {
        Some(c) => {
            let first = (start..start + len).map(|i| c.start[i]).min().unwrap_or(0);
            let last = (start..start + len)
                .map(|i| c.start[i] + c.count[i])
                .max()
                .unwrap_or(0);
            (first, last.max(first))
        }
        None => (start, start + len),
    }
}

/// Pillow's `ImagingResampleInner`, restricted to an output window.
///
/// Pillow (since 13.0, python-pillow/Pillow#9549) runs the vertical pass first when the height shrinks by
/// more than twice as many pixels as the width (`ih - oh > 2 * (iw - ow)`, image sizes, not the box);
/// otherwise horizontal first. The order changes the 8-bit intermediate, so it is reproduced.
fn resample(
    src: Plane<'_>,
    bx: [f32; 4],
    out_w: usize,
    out_h: usize,
    win: Window,
    filter: Filter,
) -> RgbImage {
    let mut out = RgbImage::new(win.w as u32, win.h as u32);
    if win.w == 0 || win.h == 0 || src.width == 0 || src.height == 0 {
        return out;
    }
    let need_horizontal = out_w != src.width || bx[0] != 0.0 || bx[2] != out_w as f32;
    let need_vertical = out_h != src.height || bx[1] != 0.0 || bx[3] != out_h as f32;
    let horiz = need_horizontal.then(|| Coeffs::new(src.width, bx[0], bx[2], out_w, filter));
    let vert = need_vertical.then(|| Coeffs::new(src.height, bx[1], bx[3], out_h, filter));
    let vertical_first = need_horizontal
        && need_vertical
        && out_h < src.height
        && (src.height - out_h) as i64 > 2 * (src.width as i64 - out_w as i64);
    let out_buf: &mut [u8] = &mut out;

    if vertical_first {
        // Vertical over the source columns the window needs, then horizontal.
        let (c0, c1) = used_range(horiz.as_ref(), win.x, win.w);
        let mut tmp = vec![0u8; win.h * (c1 - c0) * 3];
        let cols = src.sub(c0, 0, c1 - c0, src.height);
        if let Some(v) = &vert {
            vertical_pass(cols, v, win.y, 0, &mut tmp);
        }
        let tmp = Plane::packed(&tmp, c1 - c0, win.h);
        if let Some(h) = &horiz {
            for (y, dst) in out_buf.chunks_exact_mut(win.w * 3).enumerate() {
                horizontal_row(tmp.row_tail(y), c0, dst, h, win.x);
            }
        }
        return out;
    }

    // Horizontal (or a plain copy of the window's columns) over the source rows the window needs.
    let (r0, r1) = used_range(vert.as_ref(), win.y, win.h);
    let mut tmp = vec![0u8; (r1 - r0) * win.w * 3];
    for (r, dst) in tmp.chunks_exact_mut(win.w * 3).enumerate() {
        match &horiz {
            Some(h) => horizontal_row(src.row_tail(r0 + r), 0, dst, h, win.x),
            None => dst.copy_from_slice(&src.row(r0 + r)[win.x * 3..(win.x + win.w) * 3]),
        }
    }
    match &vert {
        Some(v) => vertical_pass(Plane::packed(&tmp, win.w, r1 - r0), v, win.y, r0, out_buf),
        None => out_buf.copy_from_slice(&tmp),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            ::image::Rgb([
                (x * 7 + y * 3) as u8,
                (x * x + y) as u8,
                (255 - (x ^ y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = gradient(31, 17);
        for f in [Filter::Bilinear, Filter::Bicubic] {
            assert_eq!(resize(&img, 31, 17, f), img);
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(123, 77, ::image::Rgb([10, 200, 255]));
        for f in [Filter::Bilinear, Filter::Bicubic] {
            for (w, h) in [(224, 224), (40, 13), (500, 300)] {
                let out = resize(&img, w, h, f);
                assert!(out.pixels().all(|p| p.0 == [10, 200, 255]), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn region_equals_crop_of_full_resize() {
        let img = gradient(97, 61);
        for f in [Filter::Bilinear, Filter::Bicubic] {
            let full = resize(&img, 150, 80, f);
            let bx = [0.0, 0.0, 97.0, 61.0];
            let part = resize_region(&img, bx, 150, 80, [20, 5, 100, 70], f);
            let expect = ::image::imageops::crop_imm(&full, 20, 5, 100, 70).to_image();
            assert_eq!(part, expect, "{f:?}");
        }
    }

    #[test]
    fn crop_then_resize_equals_resize_of_copied_crop() {
        let img = gradient(90, 70);
        for f in [Filter::Bilinear, Filter::Bicubic] {
            let copied = ::image::imageops::crop_imm(&img, 11, 7, 53, 41).to_image();
            let a = resize(&copied, 32, 32, f);
            let b = resize_crop(&img, [11, 7, 53, 41], 32, 32, f);
            assert_eq!(a, b, "{f:?}");
        }
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let img = gradient(1, 1);
        for f in [Filter::Bilinear, Filter::Bicubic] {
            assert_eq!(resize(&img, 5, 3, f).dimensions(), (5, 3));
            assert_eq!(resize(&img, 0, 3, f).dimensions(), (0, 3));
            assert_eq!(
                resize_crop(&img, [4, 4, 0, 0], 2, 2, f).dimensions(),
                (2, 2)
            );
            let big = gradient(40, 40);
            assert_eq!(
                resize_box(&big, [50.0, -3.0, 10.0, 90.0], 7, 7, f).dimensions(),
                (7, 7)
            );
        }
    }
}
