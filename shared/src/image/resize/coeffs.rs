//! Pillow's resampling weights (`precompute_coeffs` + `normalize_coeffs_8bpc`) in 22-bit fixed point.

use super::Filter;

pub(super) const PRECISION_BITS: u32 = 32 - 8 - 2;
pub(super) const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `clip8`: a fixed-point sum to a byte.
#[inline(always)]
pub(super) fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Fixed-point weights for one axis: output pixel `i` reads `count[i]` source pixels from `start[i]`,
/// with weights `k[i * ksize ..][..count[i]]`.
///
/// For the SIMD kernels every weight is also split as `k = hi * 2^11 + lo` (`lo` in 0..2048), both halves
/// fitting `i16`, and consecutive taps are packed in pairs (`lo16 = tap 2j`, `hi16 = tap 2j + 1`, zero
/// past the last tap) for `pmaddwd`: `sum(p * k) = (sum(p * hi) << 11) + sum(p * lo)`, exactly (with
/// wrapping `i32` arithmetic, as the true sum fits `i32`).
pub(super) struct Coeffs {
    pub(super) ksize: usize,
    pub(super) start: Vec<usize>,
    pub(super) count: Vec<usize>,
    pub(super) k: Vec<i32>,
    pub(super) npairs: usize,
    /// Each packed pair repeated in four lanes, ready for a 16-byte load.
    pub(super) pairs_hi: Vec<[i32; 4]>,
    pub(super) pairs_lo: Vec<[i32; 4]>,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
    pub(super) fn new(in_size: usize, in0: f32, in1: f32, out_size: usize, filter: Filter) -> Self {
        let scale = f64::from(in1 - in0) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut count = Vec::with_capacity(out_size);
        let mut k = vec![0i32; out_size * ksize];
        let mut w = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; negative values are clamped to 0 right after.
            let xmin = ((center - support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(n) {
                *wx = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
                ww += *wx;
            }
            let row = &mut k[xx * ksize..xx * ksize + n];
            for (kx, &wx) in row.iter_mut().zip(&w) {
                let v = if ww != 0.0 { wx / ww } else { wx };
                let fixed = v * f64::from(1u32 << PRECISION_BITS);
                *kx = if v < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            start.push(xmin);
            count.push(n);
        }
        let npairs = ksize.div_ceil(2);
        let mut pairs_hi = vec![[0i32; 4]; out_size * npairs];
        let mut pairs_lo = vec![[0i32; 4]; out_size * npairs];
        for xx in 0..out_size {
            let taps = &k[xx * ksize..xx * ksize + count[xx]];
            for (j, pair) in taps.chunks(2).enumerate() {
                let (a, b) = (pair[0], pair.get(1).copied().unwrap_or(0));
                let pack = |x: i32, y: i32| (x as u16 as u32 | (y as u16 as u32) << 16) as i32;
                pairs_hi[xx * npairs + j] = [pack(a >> 11, b >> 11); 4];
                pairs_lo[xx * npairs + j] = [pack(a & 0x7FF, b & 0x7FF); 4];
            }
        }
        Coeffs {
            ksize,
            start,
            count,
            k,
            npairs,
            pairs_hi,
            pairs_lo,
        }
    }

    /// Packed weight pairs of output pixel `i` (see the type's docs).
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn pairs(&self, i: usize) -> (&[[i32; 4]], &[[i32; 4]]) {
        let n = self.count[i].div_ceil(2);
        let at = i * self.npairs;
        (&self.pairs_hi[at..at + n], &self.pairs_lo[at..at + n])
    }

    #[inline(always)]
    pub(super) fn taps(&self, i: usize) -> (usize, &[i32]) {
        let n = self.count[i];
        (self.start[i], &self.k[i * self.ksize..i * self.ksize + n])
    }
}
