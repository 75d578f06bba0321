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
    // The last element each operand is read at must lie inside it (strides are non-negative).
    let last = |o: &Operand, rows: usize, cols: usize| {
        (rows - 1) * o.row_stride + (cols - 1) * o.col_stride
    };
    assert!(
        n <= dst_row_stride && (m - 1) * dst_row_stride + n <= dst.len(),
        "gemm: dst too small"
    );
    if k > 0 {
        assert!(last(&lhs, m, k) < lhs.data.len(), "gemm: lhs too small");
        assert!(last(&rhs, k, n) < rhs.data.len(), "gemm: rhs too small");
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every (row, col) of the three operands inside their slices, and `dst`
    // is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
