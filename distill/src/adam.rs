//! `torch.optim.Adam` (β 0.9/0.999, eps 1e-8, L2 weight decay added to the gradient, no AMSGrad), with
//! state that can be saved and restored so that resumed runs continue bit for bit.

use rayon::prelude::*;

/// Parameters per thread task, and the size from which a buffer is updated in parallel.
const CHUNK: usize = 1 << 14;
const PARALLEL_MIN: usize = 1 << 16;

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
        }
    }

    /// One step: `params[i] -= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps)`, as torch computes it.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        assert_eq!(params.len(), self.m.len(), "one buffer per parameter");
        self.t += 1;
        let t = self.t as i32;
        let step_size = (self.lr / (1.0 - self.beta1.powi(t))) as f32;
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt() as f32;
        let (b1, b2, eps, wd) = (
            self.beta1 as f32,
            self.beta2 as f32,
            self.eps as f32,
            self.weight_decay as f32,
        );
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = if wd != 0.0 { g + wd * *p } else { g };
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *p -= step_size * *m / denom;
            }
        };
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            assert_eq!(p.len(), g.len());
            if p.len() < PARALLEL_MIN {
                update(p, g, m, v);
            } else {
                // Elementwise, so splitting the work across threads changes nothing in the result.
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .for_each(|(((p, g), m), v)| update(p, g, m, v));
            }
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

    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        // g = 0, wd = 0.5, p = 2: the effective gradient is 1; the first Adam step moves p by lr.
        let mut adam = Adam::new(&[1], 0.01, 0.5);
        let mut p = [2.0f32];
        adam.step(&mut [&mut p], &[&[0.0]]);
        assert!((p[0] - 1.99).abs() < 1e-6);
    }
}
