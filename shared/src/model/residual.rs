//! A residual block's join, `relu(y + identity)`, as one CPU op with its own backward pass: one pass
//! forward, and backward one masked copy of the output gradient that serves both branches (candle's
//! composition makes an add, a ReLU, its comparison mask, a product and two gradient sums).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_kernels::{contiguous_f32, tensor_f32};

const CHUNK: usize = 1 << 14;

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
        if l1.shape() != l2.shape() {
            candle_core::bail!("add-relu: {:?} and {:?}", l1.shape(), l2.shape());
        }
        let mut out = vec![0f32; a.len()];
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| {
                for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                    *o = (a + b).max(0.0);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let mut g = vec![0f32; res.elem_count()];
        tensor_f32(res, |y| {
            tensor_f32(&grad, |gr| {
                g.par_chunks_mut(CHUNK)
                    .zip(y.par_chunks(CHUNK).zip(gr.par_chunks(CHUNK)))
                    .for_each(|(g, (y, gr))| {
                        for ((g, y), gr) in g.iter_mut().zip(y).zip(gr) {
                            *g = if *y > 0.0 { *gr } else { 0.0 };
                        }
                    });
                Ok(())
            })
        })?;
        let g = Tensor::from_vec(g, res.shape(), res.device())?;
        Ok((a.track_op().then(|| g.clone()), b.track_op().then_some(g)))
    }
}

/// `relu(a + b)` for two tensors of one shape; differentiable in both.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
    if cpu_f32(a) && cpu_f32(b) && a.dims() == b.dims() {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Values and both gradients equal candle's `(a + b).relu()`'s, with and without a gradient for `b`.
    #[test]
    fn matches_the_composition() {
        let dev = Device::Cpu;
        for b_grad in [true, false] {
            let a =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 40, 50), &dev).unwrap()).unwrap();
            let b0 = Tensor::randn(0f32, 1.0, (2, 3, 40, 50), &dev).unwrap();
            let b = Var::from_tensor(&b0).unwrap();
            let bt = if b_grad {
                b.as_tensor().clone()
            } else {
                b0.clone()
            };
            let ours = add_relu(a.as_tensor(), &bt).unwrap();
            let theirs = (a.as_tensor() + &bt).unwrap().relu().unwrap();
            assert_eq!(max_diff(&ours, &theirs), 0.0);
            let r = Tensor::randn(0f32, 1.0, ours.dims(), &dev).unwrap();
            let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&theirs * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (da1, da2) = (
                g1.get(a.as_tensor()).unwrap(),
                g2.get(a.as_tensor()).unwrap(),
            );
            assert_eq!(max_diff(da1, da2), 0.0);
            match (g1.get(b.as_tensor()), g2.get(b.as_tensor())) {
                (Some(x), Some(y)) => assert_eq!(max_diff(x, y), 0.0),
                (None, None) => assert!(!b_grad),
                _ => panic!("db on one side only"),
            }
        }
    }

    /// Finite differences away from the kink.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let a0: Vec<f32> = (0..12).map(|i| (i as f32 * 0.9).sin()).collect();
        let b0: Vec<f32> = (0..12).map(|i| (i as f32 * 0.4).cos() * 0.5).collect();
        let r: Vec<f32> = (0..12).map(|i| i as f32 - 5.5).collect();
        let rt = Tensor::from_vec(r, (1, 1, 3, 4), &dev).unwrap();
        let a =
            Var::from_tensor(&Tensor::from_vec(a0.clone(), (1, 1, 3, 4), &dev).unwrap()).unwrap();
        let b =
            Var::from_tensor(&Tensor::from_vec(b0.clone(), (1, 1, 3, 4), &dev).unwrap()).unwrap();
        let y = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
        let g = (y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
        let da = g
            .get(a.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let db = g
            .get(b.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let loss = |a: &[f32], b: &[f32]| -> f32 {
            let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), (1, 1, 3, 4), &dev).unwrap();
            let y = add_relu(&t(a), &t(b)).unwrap();
            (y * &rt)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let eps = 1e-3;
        for i in 0..12 {
            if (a0[i] + b0[i]).abs() < 10.0 * eps {
                continue;
            }
            let (mut up, mut down) = (a0.clone(), a0.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (loss(&up, &b0) - loss(&down, &b0)) / (2.0 * eps);
            assert!((fd - da[i]).abs() < 1e-2, "{i}: {fd} vs {}", da[i]);
            assert_eq!(da[i], db[i]);
        }
    }
}
