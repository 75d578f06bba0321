//! Which path a layer takes: our fused CPU kernels (f32 on the CPU) or candle's device-generic ops, which are
//! what a CUDA build runs. `VL2V_GENERIC_OPS=1` forces the generic path on the CPU for a whole process, and
//! [`with_generic_ops`] for one thread, so that tests and users can compare the code a GPU runs with the
//! optimised CPU path on a machine without one.

use std::cell::Cell;
use std::sync::OnceLock;

use candle_core::{DType, Tensor};

thread_local! {
    static FORCED: Cell<bool> = const { Cell::new(false) };
}

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
