//! The end of a ResNet block, `relu(a + b)`, as one CPU op.
//!
//! As candle's `add` then `relu`, the forward pass made two passes over the activations, and the backward
//! pass ten: candle differentiates ReLU through a zero tensor, a comparison, a cast and a product, each a
//! pass and an allocation of the block's output size. Here the forward pass is one pass, and the backward
//! pass one: the gradient masked by the output's sign, which is both inputs' gradient.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_kernels::{contiguous_f32, elementwise_backward, CHUNK};
use super::kernel_path::fused_cpu;
use super::scratch::zeros;

/// `relu(a + b)` for tensors of one shape; differentiable in both. One op on CPU (f32), candle's
/// ops elsewhere.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() || !fused_cpu(&[a, b]) {
        return (a + b)?.relu();
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "vl2v-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            contiguous_f32(s1, l1, self.name())?,
            contiguous_f32(s2, l2, self.name())?,
        );
        let mut out = zeros(a.len());
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| {
                for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                    *o = (a + b).max(0.0);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// The output is positive exactly where `a + b` is, so it carries the mask.
    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = elementwise_backward(res, grad_res, relu_backward)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// The gradient through a ReLU from its output `y`: `g` where `y > 0`, else 0 (PyTorch's rule at 0).
fn relu_backward(y: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
        *dx = if *y > 0.0 { *g } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::model::kernel_path::with_generic_ops;
    use crate::model::test_tensors::max_diff;

    /// Values and both gradients equal candle's `add` then `relu` (a gradient of 1 where the sum is
    /// positive, 0 elsewhere), for an input that feeds both sides as a ResNet block's identity does.
    #[test]
    fn matches_candle_add_then_relu() {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev).unwrap();
        let run = || {
            let y = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
            // `a` again as a second consumer: its gradient sums two contributions.
            let z = (add_relu(&y, a.as_tensor()).unwrap() * &r).unwrap();
            let grads = z.sum_all().unwrap().backward().unwrap();
            let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
            (z, g(&a), g(&b))
        };
        let (ours, da, db) = run();
        let (theirs, ea, eb) = with_generic_ops(run);
        assert_eq!(max_diff(&ours, &theirs), 0.0);
        assert_eq!(max_diff(&da, &ea), 0.0);
        assert_eq!(max_diff(&db, &eb), 0.0);
        // By hand: where a + b ≤ 0 nothing reaches b.
        let sum = (a.as_tensor() + b.as_tensor()).unwrap();
        let dead = sum
            .le(0f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let leaked = (&db * &dead).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(leaked.to_scalar::<f32>().unwrap(), 0.0);
    }
}
