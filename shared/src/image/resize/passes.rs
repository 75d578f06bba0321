//! The two resampling passes over packed RGB rows (scalar; `x86.rs` has the SSSE3 versions).

use ::image::RgbImage;

use super::coeffs::{clip8, Coeffs, HALF};
#[cfg(target_arch = "x86_64")]
use super::x86;

/// A borrowed rectangle of packed RGB rows.
#[derive(Clone, Copy)]
pub(super) struct Plane<'a> {
    pub(super) data: &'a [u8],
    /// Bytes from one row to the next.
    pub(super) stride: usize,
    /// Byte offset of the rectangle's top-left pixel.
    pub(super) start: usize,
    pub(super) width: usize,
    pub(super) height: usize,
}

impl<'a> Plane<'a> {
    pub(super) fn whole(img: &'a RgbImage) -> Self {
        Plane::packed(img.as_raw(), img.width() as usize, img.height() as usize)
    }

    pub(super) fn packed(data: &'a [u8], width: usize, height: usize) -> Self {
        Plane {
            data,
            stride: width * 3,
            start: 0,
            width,
            height,
        }
    }

    pub(super) fn sub(&self, x: usize, y: usize, width: usize, height: usize) -> Self {
        Plane {
            start: self.start + y * self.stride + x * 3,
            width,
            height,
            ..*self
        }
    }

    #[inline(always)]
    pub(super) fn row(&self, y: usize) -> &'a [u8] {
        let off = self.start + y * self.stride;
        &self.data[off..off + self.width * 3]
    }

    /// Row `y` and everything after it in the buffer (what a SIMD load may over-read).
    #[inline(always)]
    pub(super) fn row_tail(&self, y: usize) -> &'a [u8] {
        &self.data[self.start + y * self.stride..]
    }
}

/// Vertical pass: output rows `first_row..` (as many as fit in `dst`) from `src`, whose row 0 is source
/// row `row_offset`.
pub(super) fn vertical_pass(
    src: Plane<'_>,
    c: &Coeffs,
    first_row: usize,
    row_offset: usize,
    dst: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU supports SSSE3 (checked at run time).
        return unsafe { x86::vertical_pass(src, c, first_row, row_offset, dst) };
    }
    vertical_pass_scalar(src, c, first_row, row_offset, dst);
}

/// One row of the horizontal pass: output columns `x_first..x_first + dst.len() / 3`, reading `row`
/// (which may run on past the row's end), whose pixel 0 is source column `col_offset`.
pub(super) fn horizontal_row(
    row: &[u8],
    col_offset: usize,
    dst: &mut [u8],
    c: &Coeffs,
    x_first: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU supports SSSE3 (checked at run time).
        return unsafe { x86::horizontal_row(row, col_offset, dst, c, x_first) };
    }
    horizontal_row_scalar(row, col_offset, dst, c, x_first);
}

fn vertical_pass_scalar(
    src: Plane<'_>,
    c: &Coeffs,
    first_row: usize,
    row_offset: usize,
    dst: &mut [u8],
) {
    let row_len = src.width * 3;
    let mut acc = vec![0i32; row_len];
    for (i, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let (ymin, k) = c.taps(first_row + i);
        acc.fill(HALF);
        for (t, &w) in k.iter().enumerate() {
            let row = src.row(ymin + t - row_offset);
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}

fn horizontal_row_scalar(
    row: &[u8],
    col_offset: usize,
    dst: &mut [u8],
    c: &Coeffs,
    x_first: usize,
) {
    for (i, px) in dst.chunks_exact_mut(3).enumerate() {
        let (xmin, k) = c.taps(x_first + i);
        let x = xmin - col_offset;
        let taps = &row[x * 3..(x + k.len()) * 3];
        let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
        for (p, &w) in taps.chunks_exact(3).zip(k) {
            s0 += i32::from(p[0]) * w;
            s1 += i32::from(p[1]) * w;
            s2 += i32::from(p[2]) * w;
        }
        px[0] = clip8(s0);
        px[1] = clip8(s1);
        px[2] = clip8(s2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::resize::Filter;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_kernels_equal_the_scalar_ones() {
        if !x86::available() {
            return;
        }
        let mut seed = 0x1234_5678u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for case in 0..200 {
            let filter = if case % 2 == 0 {
                Filter::Bilinear
            } else {
                Filter::Bicubic
            };
            let (iw, ih) = (1 + next() % 300, 1 + next() % 60);
            let (ow, oh) = (1 + next() % 260, 1 + next() % 70);
            // Extreme contrast (0/255 pixels) exercises clipping of bicubic overshoot.
            let data: Vec<u8> = (0..iw * ih * 3)
                .map(|_| {
                    if case % 3 == 0 {
                        (next() % 2 * 255) as u8
                    } else {
                        next() as u8
                    }
                })
                .collect();
            let src = Plane::packed(&data, iw as usize, ih as usize);
            let x0 = (next() % iw) as f32 * 0.3;
            let h = Coeffs::new(iw as usize, x0, iw as f32, ow as usize, filter);
            for y in 0..ih as usize {
                let mut a = vec![0u8; ow as usize * 3];
                let mut b = a.clone();
                horizontal_row_scalar(src.row_tail(y), 0, &mut a, &h, 0);
                unsafe { x86::horizontal_row(src.row_tail(y), 0, &mut b, &h, 0) };
                assert_eq!(a, b, "horizontal case {case} row {y}");
            }
            let v = Coeffs::new(ih as usize, 0.0, ih as f32, oh as usize, filter);
            let mut a = vec![0u8; (iw * oh * 3) as usize];
            let mut b = a.clone();
            vertical_pass_scalar(src, &v, 0, 0, &mut a);
            unsafe { x86::vertical_pass(src, &v, 0, 0, &mut b) };
            assert_eq!(a, b, "vertical case {case}");
        }
    }
}
