//! The one safe entry to the `gemm` crate (the GEMM candle itself uses on CPU), for products on plain
//! slices: the fused linear kernel of inference and the small repeated products of training call it
//! directly, without tensor copies.

/// A strided read-only matrix operand of [`gemm`]: element `(r, c)` is `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major matrix whose rows start `row_stride` apart.
    pub fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows start `stride` apart: element `(r, c)` is
    /// `data[c · stride + r]`.
    pub fn transposed(data: &'a [f32], stride: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: stride,
        }
    }
}

/// A new row-major `[m, n]` matrix `lhs · rhs` (`lhs: [m, k]`, `rhs: [k, n]`), written by the GEMM
/// without being cleared first (a full pass through memory for a product that overwrites every element).
pub fn gemm_new(
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    threads: usize,
) -> Vec<f32> {
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    if m == 0 || n == 0 {
        return dst;
    }
    check_operands((m, n, k), &lhs, &rhs);
    // SAFETY: the operands were checked to lie inside their slices and `dst` has room for `m · n`
    // elements at row stride `n`. With `read_dst` false the `gemm` crate only writes `dst` (with k = 0
    // it writes zeros), so every one of those elements is initialised when it returns.
    unsafe {
        run(dst.as_mut_ptr(), n, false, (m, n, k), lhs, rhs, threads);
        dst.set_len(m * n);
    }
    dst
}

/// `dst = lhs · rhs` (`accumulate`: `dst += lhs · rhs`) for `lhs: [m, k]`, `rhs: [k, n]` and row-major
/// `dst: [m, n]` (row stride `dst_row_stride`), through the `gemm` crate; `threads > 1` splits the product
/// across rayon's pool.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    dst: &mut [f32],
    dst_row_stride: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= dst_row_stride && (m - 1) * dst_row_stride + n <= dst.len(),
        "gemm: dst too small"
    );
    check_operands((m, n, k), &lhs, &rhs);
    // SAFETY: the checks above keep every (row, col) of the three operands inside their slices, and
    // `dst` is borrowed mutably, so it overlaps neither input.
    unsafe {
        run(
            dst.as_mut_ptr(),
            dst_row_stride,
            accumulate,
            (m, n, k),
            lhs,
            rhs,
            threads,
        )
    };
}

/// Panics unless the last element each operand is read at lies inside it (strides are non-negative).
fn check_operands((m, n, k): (usize, usize, usize), lhs: &Operand, rhs: &Operand) {
    let last = |o: &Operand, rows: usize, cols: usize| {
        (rows - 1) * o.row_stride + (cols - 1) * o.col_stride
    };
    if k > 0 {
        assert!(last(lhs, m, k) < lhs.data.len(), "gemm: lhs too small");
        assert!(last(rhs, k, n) < rhs.data.len(), "gemm: rhs too small");
    }
}

/// The `gemm` crate's call.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads) of `m` rows of `n` elements at row
/// stride `dst_row_stride`, overlapping neither operand; the operands must have passed
/// [`check_operands`].
unsafe fn run(
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    threads: usize,
) {
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lhs · rhs` summed in f64 the schoolbook way.
    fn reference((m, n, k): (usize, usize, usize), lhs: &Operand, rhs: &Operand) -> Vec<f32> {
        let at =
            |o: &Operand, r: usize, c: usize| o.data[r * o.row_stride + c * o.col_stride] as f64;
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|l| at(lhs, i, l) * at(rhs, l, j)).sum::<f64>() as f32);
            }
        }
        out
    }

    #[test]
    fn a_new_product_equals_the_schoolbook_one_for_any_strides_and_threads() {
        let data: Vec<f32> = (0..4096)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        // Freed memory full of NaN first: a product that read its fresh output would carry them.
        drop(vec![f32::NAN; 1 << 16]);
        for (m, n, k) in [
            (1, 1, 1),
            (7, 5, 0),
            (33, 17, 9),
            (64, 48, 40),
            (3, 130, 20),
        ] {
            for (transposed, threads) in [(false, 1), (true, 1), (false, 2), (true, 3)] {
                let lhs = if transposed {
                    Operand::transposed(&data, m)
                } else {
                    Operand::rows(&data, k)
                };
                let rhs = Operand::rows(&data[7..], n + 3);
                let want = reference((m, n, k), &lhs, &rhs);
                let got = gemm_new((m, n, k), lhs, rhs, threads);
                assert_eq!(got.len(), m * n);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{m}x{n}x{k}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
