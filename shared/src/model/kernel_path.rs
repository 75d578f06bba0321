//! Which path a layer takes: our fused CPU kernels (f32 on the CPU) or candle's device-generic ops, which are
//! what a CUDA build runs. `VL2V_GENERIC_OPS=1` forces the generic path on the CPU for a whole process, and
//! [`with_generic_ops`] for one thread, so that tests and users can compare the code a GPU runs with the
//! optimised CPU path on a machine without one.
//!
//! It also decides the precision of the products (matrix products and convolutions): f32, or bf16 under
//! `--precision bf16` ([`product`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor};

thread_local! {
    static FORCED: Cell<bool> = const { Cell::new(false) };
    static FORCED_BF16: Cell<bool> = const { Cell::new(false) };
}

static BF16_PRODUCTS: AtomicBool = AtomicBool::new(false);

fn forced_by_env() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    *ENV.get_or_init(|| std::env::var("VL2V_GENERIC_OPS").is_ok_and(|v| v == "1"))
}

/// Whether the device-generic path is forced (by the environment or [`with_generic_ops`]).
pub fn generic_forced() -> bool {
    forced_by_env() || FORCED.with(Cell::get)
}

/// Whether every tensor may go through a fused CPU kernel: f32 on the CPU, the generic path not forced.
pub fn fused_cpu(tensors: &[&Tensor]) -> bool {
    !generic_forced()
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Runs `f` with the device-generic path forced on this thread (the layers choose their path on the
/// calling thread; the backward pass follows the ops the forward chose).
pub fn with_generic_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|c| c.replace(true)));
    f()
}

/// Makes every product bf16 (`true`) or f32 from now on, process-wide (`Precision::apply`).
pub fn set_bf16_products(on: bool) {
    BF16_PRODUCTS.store(on, Ordering::Relaxed);
}

/// Whether products run in bf16 (process-wide, or forced on this thread by [`with_bf16_products`]).
pub fn bf16_products() -> bool {
    BF16_PRODUCTS.load(Ordering::Relaxed) || FORCED_BF16.with(Cell::get)
}

/// Runs `f` with bf16 products on this thread (tests; the process-wide switch is `Precision::apply`).
pub fn with_bf16_products<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED_BF16.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED_BF16.with(|c| c.replace(true)));
    f()
}

/// Whether a layer whose op contains a product may take its fused CPU kernel: as [`fused_cpu`], and the
/// products in f32 (the fused kernels multiply in f32; bf16 products take the generic ops through
/// [`product`]).
pub fn fused_cpu_products(tensors: &[&Tensor]) -> bool {
    !bf16_products() && fused_cpu(tensors)
}

/// `f(a, b)`, a matrix product or a convolution of two f32 tensors, in the products' precision. With bf16
/// products (PyTorch's autocast to bfloat16, for products only): both operands rounded to bf16, the sums in
/// f32, the result rounded to bf16 and returned as f32, so that everything between products (norms,
/// softmax, activations, residual sums, losses) and every parameter and optimiser state stay f32; the
/// backward pass rounds the gradients entering and leaving the product to bf16 likewise. A GPU runs `f` on
/// bf16 tensors (its tensor cores: bf16 inputs, f32 accumulation, bf16 output); candle's CPU has no bf16
/// product (its conv2d refuses bf16, its matmul widens to f32), so the CPU computes the same roundings
/// around an f32 product: the same numbers up to the order of the f32 sums, and slower.
pub fn product(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if !bf16_products() || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return f(a, b);
    }
    if a.device().is_cpu() {
        let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
        round(&f(&round(a)?, &round(b)?)?)
    } else {
        f(&a.to_dtype(DType::BF16)?, &b.to_dtype(DType::BF16)?)?.to_dtype(DType::F32)
    }
}
