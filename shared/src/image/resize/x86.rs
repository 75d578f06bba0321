//! SSSE3 kernels for the two resampling passes, giving exactly the scalar code's (and Pillow's) bytes.
//!
//! Pillow's 22-bit weights do not fit `pmaddwd`'s 16-bit operands, so each weight is split as
//! `k = hi * 2^11 + lo` (see `Coeffs`): two `pmaddwd`s per pair of taps, recombined as
//! `(sum_hi << 11) + sum_lo + 2^21`, then `>> 22` and saturating packs, which is Pillow's `clip8`.
//! Integer sums are exact (wrapping `i32` lanes, true result within `i32`), so the order of additions
//! does not matter.

use std::arch::x86_64::*;

use super::coeffs::{clip8, Coeffs, HALF, PRECISION_BITS};
use super::passes::Plane;

/// Whether the CPU has SSSE3 (`std` caches the detection).
#[inline]
pub(super) fn available() -> bool {
    is_x86_feature_detected!("ssse3")
}

/// A packed weight pair, broadcast.
#[inline(always)]
fn load(pair: &[i32; 4]) -> __m128i {
    // SAFETY: reads the 16 bytes of `pair`.
    unsafe { _mm_loadu_si128(pair.as_ptr().cast()) }
}

#[inline(always)]
unsafe fn finish(acc_hi: __m128i, acc_lo: __m128i) -> __m128i {
    let total = _mm_add_epi32(
        _mm_add_epi32(_mm_slli_epi32::<11>(acc_hi), acc_lo),
        _mm_set1_epi32(HALF),
    );
    _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(total)
}

/// See `horizontal_row` in the parent module; `row` may extend past the row (over-reads stay inside it).
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn horizontal_row(
    row: &[u8],
    col_offset: usize,
    dst: &mut [u8],
    c: &Coeffs,
    x_first: usize,
) {
    // Bytes r0 g0 b0 r1 g1 b1 → 16-bit lanes [r0, r1, g0, g1, b0, b1, 0, 0].
    let pair_mask = _mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
    let zero = _mm_setzero_si128();
    for (i, px) in dst.chunks_exact_mut(3).enumerate() {
        let (xmin, _) = c.taps(x_first + i);
        let (hi, lo) = c.pairs(x_first + i);
        let mut acc_hi = zero;
        let mut acc_lo = zero;
        let mut off = (xmin - col_offset) * 3;
        for (kh, kl) in hi.iter().zip(lo) {
            let v = if off + 16 <= row.len() {
                // SAFETY: 16 bytes from `off` are inside `row`.
                let raw = unsafe { _mm_loadu_si128(row.as_ptr().add(off).cast()) };
                _mm_shuffle_epi8(raw, pair_mask)
            } else {
                // Near the end of the buffer; a missing second pixel has weight 0.
                let b = |k: usize| i16::from(row.get(off + k).copied().unwrap_or(0));
                _mm_setr_epi16(b(0), b(3), b(1), b(4), b(2), b(5), 0, 0)
            };
            acc_hi = _mm_add_epi32(acc_hi, _mm_madd_epi16(v, load(kh)));
            acc_lo = _mm_add_epi32(acc_lo, _mm_madd_epi16(v, load(kl)));
            off += 6;
        }
        let v = finish(acc_hi, acc_lo);
        let packed = _mm_packus_epi16(_mm_packs_epi32(v, zero), zero);
        let bytes = (_mm_cvtsi128_si32(packed) as u32).to_le_bytes();
        px.copy_from_slice(&bytes[..3]);
    }
}

/// See `vertical_pass` in the parent module.
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn vertical_pass(
    src: Plane<'_>,
    c: &Coeffs,
    first_row: usize,
    row_offset: usize,
    dst: &mut [u8],
) {
    let row_len = src.width * 3;
    let simd_len = row_len / 16 * 16;
    let zero = _mm_setzero_si128();
    for (i, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let (ymin, k) = c.taps(first_row + i);
        let (hi, lo) = c.pairs(first_row + i);
        let first = ymin - row_offset;
        for x in (0..simd_len).step_by(16) {
            let mut acc_hi = [zero; 4];
            let mut acc_lo = [zero; 4];
            for (j, (kh, kl)) in hi.iter().zip(lo).enumerate() {
                let t = 2 * j;
                let a = src.row(first + t)[x..x + 16].as_ptr();
                // SAFETY: both loads read 16 bytes inside a row (x + 16 <= row_len).
                let a = unsafe { _mm_loadu_si128(a.cast()) };
                let b = if t + 1 < k.len() {
                    let b = src.row(first + t + 1)[x..x + 16].as_ptr();
                    unsafe { _mm_loadu_si128(b.cast()) }
                } else {
                    zero
                };
                let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
                let q = [
                    _mm_unpacklo_epi8(ab_lo, zero),
                    _mm_unpackhi_epi8(ab_lo, zero),
                    _mm_unpacklo_epi8(ab_hi, zero),
                    _mm_unpackhi_epi8(ab_hi, zero),
                ];
                let (ch, cl) = (load(kh), load(kl));
                for g in 0..4 {
                    acc_hi[g] = _mm_add_epi32(acc_hi[g], _mm_madd_epi16(q[g], ch));
                    acc_lo[g] = _mm_add_epi32(acc_lo[g], _mm_madd_epi16(q[g], cl));
                }
            }
            let v: [__m128i; 4] = std::array::from_fn(|g| finish(acc_hi[g], acc_lo[g]));
            let packed = _mm_packus_epi16(_mm_packs_epi32(v[0], v[1]), _mm_packs_epi32(v[2], v[3]));
            let out = &mut dst_row[x..x + 16];
            // SAFETY: `out` is 16 bytes long.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), packed) };
        }
        // The last `row_len % 16` bytes.
        for (x, d) in dst_row.iter_mut().enumerate().skip(simd_len) {
            let mut acc = HALF;
            for (t, &w) in k.iter().enumerate() {
                acc += i32::from(src.row(first + t)[x]) * w;
            }
            *d = clip8(acc);
        }
    }
}
