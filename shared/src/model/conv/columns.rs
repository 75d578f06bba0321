//! The column matrix of the fused convolution and its adjoint: `im2col` into the K-major layout
//! `colsᵀ [C·k·k, n·L]` (Caffe's and PyTorch's: row `(c, i, j)` is a run of output positions, so filling it
//! is a run of row copies) and `col2im` back.

use rayon::prelude::*;

use super::Geometry;

/// `f(index, chunk)` for each `len`-long chunk of `data`: across rayon's threads when `par`, else in order on
/// this thread (a chunk of the fused convolution already running on a thread of its own).
pub(super) fn for_each_chunk(
    data: &mut [f32],
    len: usize,
    par: bool,
    f: impl Fn(usize, &mut [f32]) + Send + Sync,
) {
    if par {
        data.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// For output column `ox` of tap column `j`: the input column is `ox·s + j − p`. The range of `ox` whose
/// input column lies inside `[0, w)`.
fn valid_range(out: usize, n: usize, s: usize, tap: usize, p: usize) -> (usize, usize) {
    // ox·s + tap ≥ p  ⇔  ox ≥ ceil((p − tap) / s)
    let lo = if tap >= p { 0 } else { (p - tap).div_ceil(s) };
    // ox·s + tap − p ≤ n − 1  ⇔  ox ≤ (n − 1 + p − tap) / s
    let hi = if n + p > tap {
        ((n - 1 + p - tap) / s + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// `colsᵀ` of images `x[0..images]` (each `[C, H, W]`): row `(c, i, j)`, column `img·L + oy·wo + ox`.
pub(super) fn im2col_t(g: &Geometry, x: &[f32], images: usize, cols: &mut [f32], par: bool) {
    let (ho, wo) = g.out();
    let l = ho * wo;
    let (k, s, p) = (g.k, g.stride, g.padding);
    let plane = g.h * g.w;
    let (ox_lo_hi, oy_lo_hi): (Vec<_>, Vec<_>) = (0..k)
        .map(|t| (valid_range(wo, g.w, s, t, p), valid_range(ho, g.h, s, t, p)))
        .unzip();
    for_each_chunk(
        &mut cols[..g.row_len() * images * l],
        images * l,
        par,
        |r, row| {
            let (c, i, j) = (r / (k * k), r / k % k, r % k);
            let (ox_lo, ox_hi) = ox_lo_hi[j];
            let (oy_lo, oy_hi) = oy_lo_hi[i];
            for img in 0..images {
                let src = &x[(img * g.channels + c) * plane..][..plane];
                let dst = &mut row[img * l..][..l];
                dst[..oy_lo * wo].fill(0.0);
                dst[oy_hi * wo..].fill(0.0);
                for oy in oy_lo..oy_hi {
                    let y = oy * s + i - p;
                    let out = &mut dst[oy * wo..][..wo];
                    out[..ox_lo].fill(0.0);
                    out[ox_hi..].fill(0.0);
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    let x0 = ox_lo * s + j - p;
                    let src_row = &src[y * g.w..][..g.w];
                    if s == 1 {
                        out[ox_lo..ox_hi].copy_from_slice(&src_row[x0..x0 + ox_hi - ox_lo]);
                    } else {
                        for (o, v) in out[ox_lo..ox_hi]
                            .iter_mut()
                            .zip(src_row[x0..].iter().step_by(s))
                        {
                            *o = *v;
                        }
                    }
                }
            }
        },
    );
}

/// The adjoint of [`im2col_t`]: adds `colsᵀ` back into `dx[0..images]` (zeroed by the caller).
pub(super) fn col2im_t(g: &Geometry, cols: &[f32], images: usize, dx: &mut [f32], par: bool) {
    let (ho, wo) = g.out();
    let l = ho * wo;
    let (k, s, p) = (g.k, g.stride, g.padding);
    let plane = g.h * g.w;
    let (ox_lo_hi, oy_lo_hi): (Vec<_>, Vec<_>) = (0..k)
        .map(|t| (valid_range(wo, g.w, s, t, p), valid_range(ho, g.h, s, t, p)))
        .unzip();
    let row_len = images * l;
    // Plane (img, c) is written by rows (c, ·, ·) only: planes run in parallel.
    for_each_chunk(
        &mut dx[..images * g.channels * plane],
        plane,
        par,
        |ic, dst| {
            let (img, c) = (ic / g.channels, ic % g.channels);
            for (i, &(oy_lo, oy_hi)) in oy_lo_hi.iter().enumerate() {
                for (j, &(ox_lo, ox_hi)) in ox_lo_hi.iter().enumerate() {
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    let r = (c * k + i) * k + j;
                    let src = &cols[r * row_len + img * l..][..l];
                    for oy in oy_lo..oy_hi {
                        let y = oy * s + i - p;
                        let x0 = ox_lo * s + j - p;
                        let from = &src[oy * wo + ox_lo..oy * wo + ox_hi];
                        let to = &mut dst[y * g.w..][..g.w];
                        if s == 1 {
                            for (d, v) in to[x0..x0 + from.len()].iter_mut().zip(from) {
                                *d += *v;
                            }
                        } else {
                            for (d, v) in to[x0..].iter_mut().step_by(s).zip(from) {
                                *d += *v;
                            }
                        }
                    }
                }
            }
        },
    );
}
