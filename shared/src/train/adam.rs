//! `torch.optim.Adam` (β 0.9/0.999, eps 1e-8, L2 weight decay added to the gradient, no AMSGrad), with
//! state that can be saved and restored so that resumed runs continue bit for bit.

/// Adam over a fixed list of parameter buffers (by position).
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken.
    pub t: u64,
    /// First and second moments, one buffer per parameter.
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// A parameter's own learning rate (torch's parameter groups), by position; `None` or missing: `lr`.
    pub group_lr: Vec<Option<f64>>,
}

impl Adam {
    /// An optimiser for parameters of the given sizes.
    pub fn new(sizes: &[usize], lr: f64, weight_decay: f64) -> Self {
        Adam {
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            group_lr: Vec::new(),
        }
    }

    /// The update of parameter `i` within step `update` (its group's learning rate, if it has one).
    fn update_of(&self, update: AdamUpdate, i: usize) -> AdamUpdate {
        match self.group_lr.get(i).copied().flatten() {
            Some(lr) => AdamUpdate {
                step_size: (lr / (1.0 - self.beta1.powi(self.t as i32))) as f32,
                ..update
            },
            None => update,
        }
    }

    /// Starts step `t + 1`: counts it and returns the update of that step, to apply to every parameter
    /// buffer with its moments (all of them, each exactly once). [`Adam::step`] is the whole step; a caller
    /// that produces the gradient in pieces (see `Linear::train_step`) applies each piece while it is still
    /// in cache.
    pub fn begin_step(&mut self) -> AdamUpdate {
        self.t += 1;
        let t = self.t as i32;
        AdamUpdate {
            step_size: (self.lr / (1.0 - self.beta1.powi(t))) as f32,
            bc2_sqrt: (1.0 - self.beta2.powi(t)).sqrt() as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
        }
    }

    /// One step over whole buffers: `params[i] -= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps)`, as torch
    /// computes it. (Training applies [`Adam::begin_step`]'s update block by block instead.)
    #[cfg(test)]
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        assert_eq!(params.len(), self.m.len(), "one buffer per parameter");
        let update = self.begin_step();
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            update.apply(p, g, &mut self.m[i], &mut self.v[i]);
        }
    }
}

impl Adam {
    /// One step over candle variables (one moment buffer each, in a fixed order) with the gradients of
    /// `grads`. As torch, a variable without a gradient is left alone, moments included. Parameters go
    /// through the same [`AdamUpdate::apply`] as the linear layers', so both follow torch to the bit.
    pub fn step_vars(
        &mut self,
        vars: &[&candle_core::Var],
        grads: &candle_core::backprop::GradStore,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        assert_eq!(vars.len(), self.m.len(), "one moment buffer per variable");
        let update = self.begin_step();
        let updates: Vec<AdamUpdate> = (0..vars.len()).map(|i| self.update_of(update, i)).collect();
        vars.par_iter()
            .zip(updates)
            .zip(self.m.par_iter_mut())
            .zip(self.v.par_iter_mut())
            .try_for_each(|(((var, update), m), v)| {
                let Some(g) = grads.get(var.as_tensor()) else {
                    return Ok(());
                };
                let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let g = g.flatten_all()?.to_vec1::<f32>()?;
                update.apply(&mut p, &g, m, v);
                var.set(&candle_core::Tensor::from_vec(
                    p,
                    var.shape(),
                    var.device(),
                )?)
            })
    }
}

/// Adam's moments on the parameters' device (a GPU), so that a step there moves no parameter, gradient or
/// moment through host memory. Made from (and read back into) the host buffers of [`Adam`], which stay the
/// checkpointed state.
pub struct DeviceMoments {
    m: Vec<candle_core::Tensor>,
    v: Vec<candle_core::Tensor>,
}

impl DeviceMoments {
    /// The moments of `adam` on `device`.
    pub fn upload(adam: &Adam, device: &candle_core::Device) -> candle_core::Result<Self> {
        let up = |bufs: &[Vec<f32>]| {
            bufs.iter()
                .map(|b| candle_core::Tensor::from_slice(b, b.len(), device))
                .collect::<candle_core::Result<Vec<_>>>()
        };
        Ok(DeviceMoments {
            m: up(&adam.m)?,
            v: up(&adam.v)?,
        })
    }

    /// The moments in host memory, one buffer per parameter: (m, v).
    #[allow(clippy::type_complexity)]
    pub fn download(&self) -> candle_core::Result<(Vec<Vec<f32>>, Vec<Vec<f32>>)> {
        let down = |ts: &[candle_core::Tensor]| {
            ts.iter()
                .map(|t| t.to_vec1::<f32>())
                .collect::<candle_core::Result<Vec<_>>>()
        };
        Ok((down(&self.m)?, down(&self.v)?))
    }
}

impl Adam {
    /// One step wherever the variables live: [`Adam::step_vars`] on the CPU (unless the device-generic path
    /// is forced), else [`Adam::step_on_device`] with `moments`, uploaded from the host buffers on first use.
    pub fn step_where_they_live(
        &mut self,
        vars: &[&candle_core::Var],
        grads: &candle_core::backprop::GradStore,
        moments: &mut Option<DeviceMoments>,
    ) -> candle_core::Result<()> {
        let Some(device) = vars.first().map(|v| v.device().clone()) else {
            return Ok(());
        };
        if device.is_cpu() && !crate::model::kernel_path::generic_forced() {
            return self.step_vars(vars, grads);
        }
        let moments = match moments {
            Some(moments) => moments,
            None => moments.insert(DeviceMoments::upload(self, &device)?),
        };
        self.step_on_device(vars, grads, moments)
    }

    /// [`Adam::step_vars`] as tensor operations on the variables' own device, with the moments of `moments`
    /// (torch's formula; on a GPU the rounding differs from the host path's by a few ulps).
    pub fn step_on_device(
        &mut self,
        vars: &[&candle_core::Var],
        grads: &candle_core::backprop::GradStore,
        moments: &mut DeviceMoments,
    ) -> candle_core::Result<()> {
        assert_eq!(
            vars.len(),
            moments.m.len(),
            "one moment buffer per variable"
        );
        let step = self.begin_step();
        let (b1, b2) = (f64::from(step.beta1), f64::from(step.beta2));
        for (i, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let u = self.update_of(step, i);
            let p = var.as_tensor().flatten_all()?;
            let mut g = g.flatten_all()?;
            if u.weight_decay != 0.0 {
                g = (g + p.affine(f64::from(u.weight_decay), 0.0)?)?;
            }
            let m = (moments.m[i].affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
            let v = (moments.v[i].affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let denom = v
                .sqrt()?
                .affine(1.0 / f64::from(u.bc2_sqrt), f64::from(u.eps))?;
            let p = (p - (m.affine(f64::from(u.step_size), 0.0)? / denom)?)?;
            var.set(&p.reshape(var.shape())?)?;
            moments.m[i] = m;
            moments.v[i] = v;
        }
        Ok(())
    }
}

/// The coefficients of one Adam step (from [`Adam::begin_step`]).
#[derive(Clone, Copy, Debug)]
pub struct AdamUpdate {
    step_size: f32,
    bc2_sqrt: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

impl AdamUpdate {
    /// Updates parameters `p` and their moments `m`, `v` from gradients `g` (all the same length), in one
    /// pass. Elementwise: any split of a buffer into pieces gives the same result.
    pub fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len());
        // The square root and the division dominate; compiled for the baseline x86-64 they are 4 lanes
        // wide. The same code compiled for AVX-512 or AVX2 runs 16 or 8 lanes and gives identical results
        // (IEEE sqrt and division are exact, and no multiply-add is fused).
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports the feature `apply_avx512` is compiled for.
                return unsafe { self.apply_avx512(p, g, m, v) };
            }
            if is_x86_feature_detected!("avx2") {
                // SAFETY: as above.
                return unsafe { self.apply_avx2(p, g, m, v) };
            }
        }
        self.apply_lanes(p, g, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn apply_avx512(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_lanes(p, g, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_lanes(p, g, m, v)
    }

    #[inline(always)]
    fn apply_lanes(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let (step_size, bc2_sqrt) = (self.step_size, self.bc2_sqrt);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = if wd != 0.0 { g + wd * *p } else { g };
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p -= step_size * *m / denom;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_match_hand_computed_values() {
        let mut adam = Adam::new(&[1], 0.1, 0.0);
        let mut p = [1.0f32];
        // Step 1, g = 0.5: m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25 → p = 1 − 0.1·0.5/(0.5 + 1e-8).
        adam.step(&mut [&mut p], &[&[0.5]]);
        let want1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((f64::from(p[0]) - want1).abs() < 1e-6, "{}", p[0]);
        // Step 2, g = −1: m = 0.045 − 0.1 = −0.055, v = 0.999·0.00025 + 0.001 = 0.00124975,
        // p += 0.1/0.19 · 0.055 / (sqrt(0.00124975)/sqrt(0.001999) + 1e-8).
        adam.step(&mut [&mut p], &[&[-1.0]]);
        let want2 =
            want1 + 0.1 / 0.19 * 0.055 / ((0.00124975f64).sqrt() / 0.001999f64.sqrt() + 1e-8);
        assert!(
            (f64::from(p[0]) - want2).abs() < 1e-6,
            "{} vs {want2}",
            p[0]
        );
        assert!((want2 - 0.936_610).abs() < 1e-5);
        assert_eq!(adam.t, 2);
    }

    /// A parameter group's own learning rate (torch: `[{'params': …}, {'params': [s], 'lr': 1e-4}]`): on
    /// step 1 with g = 0.5, m̂/(sqrt(v̂) + eps) = 0.5/(0.5 + 1e-8), so each parameter moves by its own lr;
    /// the host and the device paths alike.
    #[test]
    fn a_group_learning_rate_applies_to_its_parameter_alone() {
        use candle_core::{backprop::GradStore, Device, Tensor, Var};
        for device_path in [false, true] {
            let dev = Device::Cpu;
            let a = Var::from_tensor(&Tensor::new(&[1.0f32], &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::new(&[1.0f32], &dev).unwrap()).unwrap();
            let loss = ((a.as_tensor() + b.as_tensor()).unwrap() * 0.5)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads: GradStore = loss.backward().unwrap();
            let mut adam = Adam::new(&[1, 1], 0.1, 0.0);
            adam.group_lr = vec![None, Some(1e-2)];
            if device_path {
                let mut moments = DeviceMoments::upload(&adam, &dev).unwrap();
                adam.step_on_device(&[&a, &b], &grads, &mut moments)
                    .unwrap();
            } else {
                adam.step_vars(&[&a, &b], &grads).unwrap();
            }
            let moved = 0.5 / (0.5 + 1e-8);
            let got = |v: &Var| f64::from(v.as_tensor().to_vec1::<f32>().unwrap()[0]);
            assert!((got(&a) - (1.0 - 0.1 * moved)).abs() < 1e-6, "{}", got(&a));
            assert!((got(&b) - (1.0 - 0.01 * moved)).abs() < 1e-6, "{}", got(&b));
        }
    }

    /// The device path (tensor operations; on the CPU, or on `VL2V_TEST_DEVICE` in a CUDA build: see
    /// tests/cuda/gpu_check.sh) takes the host path's steps, weight decay and a variable without a gradient
    /// included, and its moments read back as the host path's.
    #[test]
    fn device_steps_match_host_steps() {
        use candle_core::{Device, Tensor, Var};
        let gpu = crate::model::device(
            &std::env::var("VL2V_TEST_DEVICE").unwrap_or_else(|_| "cpu".into()),
        )
        .unwrap();
        // A GPU's division and square root may round differently from the CPU's.
        let tol = if gpu.is_cpu() { 1e-6 } else { 1e-5 };
        let init = |dev: &Device| {
            let a = Var::from_tensor(
                &Tensor::arange(0f32, 6.0, dev)
                    .unwrap()
                    .affine(0.3, 0.1)
                    .unwrap()
                    .reshape((2, 3))
                    .unwrap(),
            )
            .unwrap();
            let b = Var::from_tensor(&Tensor::new(&[0.5f32, -1.5], dev).unwrap()).unwrap();
            let idle = Var::from_tensor(&Tensor::new(&[7.0f32], dev).unwrap()).unwrap();
            [a, b, idle]
        };
        let (host, device) = (init(&Device::Cpu), init(&gpu));
        let mut host_adam = Adam::new(&[6, 2, 1], 0.05, 0.01);
        let mut device_adam = host_adam.clone();
        let mut moments = DeviceMoments::upload(&device_adam, &gpu).unwrap();
        for step in 0..5 {
            let c = step as f64 * 0.7 - 1.0;
            let loss = |vars: &[Var; 3]| {
                let a = vars[0].as_tensor().sqr().unwrap().sum_all().unwrap();
                let b = vars[1].as_tensor().affine(c, 0.0).unwrap().exp().unwrap();
                (a + b.sum_all().unwrap()).unwrap().backward().unwrap()
            };
            let (gh, gd) = (loss(&host), loss(&device));
            host_adam
                .step_vars(&host.iter().collect::<Vec<_>>(), &gh)
                .unwrap();
            device_adam
                .step_on_device(&device.iter().collect::<Vec<_>>(), &gd, &mut moments)
                .unwrap();
        }
        for (h, d) in host.iter().zip(&device) {
            let (h, d) = (
                h.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                d.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            for (x, y) in h.iter().zip(&d) {
                assert!((x - y).abs() <= tol * x.abs().max(1.0), "{h:?} vs {d:?}");
            }
        }
        assert_eq!(device[2].to_vec1::<f32>().unwrap(), [7.0]);
        let (m, v) = moments.download().unwrap();
        for (a, b) in m
            .iter()
            .chain(&v)
            .zip(host_adam.m.iter().chain(&host_adam.v))
        {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= tol * y.abs().max(1e-3), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(device_adam.t, host_adam.t);
    }

    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        // g = 0, wd = 0.5, p = 2: the effective gradient is 1; the first Adam step moves p by lr.
        let mut adam = Adam::new(&[1], 0.01, 0.5);
        let mut p = [2.0f32];
        adam.step(&mut [&mut p], &[&[0.0]]);
        assert!((p[0] - 1.99).abs() < 1e-6);
    }
}
