//! A trainable `nn.Linear` (weight `[out, in]`, bias `[out]`, torch's default initialisation) with its own
//! Adam: forward is one matrix product, backward one more.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};

use super::NamedTensor;
use crate::adam::Adam;
use crate::data::Rng;
use crate::losses::{matmul_nt, matmul_tn};

#[derive(Clone, Debug)]
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    /// Row-major `[outputs, inputs]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub adam: Adam,
}

impl Linear {
    /// torch's `nn.Linear` initialisation: weight and bias uniform in ±1/sqrt(inputs), seeded.
    pub fn new(inputs: usize, outputs: usize, seed: u64, lr: f64, weight_decay: f64) -> Self {
        let mut rng = Rng::new(seed ^ 0x4c49_4e45_4152_0001);
        let bound = 1.0 / (inputs as f32).sqrt();
        let mut uniform = || (2.0 * rng.unit_f32() - 1.0) * bound;
        let weight = (0..inputs * outputs).map(|_| uniform()).collect();
        let bias = (0..outputs).map(|_| uniform()).collect();
        Linear {
            inputs,
            outputs,
            weight,
            bias,
            adam: Adam::new(&[inputs * outputs, outputs], lr, weight_decay),
        }
    }

    /// `x · Wᵀ + b` for row-major `x: [n, inputs]`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        ensure!(
            x.len().is_multiple_of(self.inputs),
            "{} input values are not rows of {}",
            x.len(),
            self.inputs
        );
        let mut y = matmul_nt(x, &self.weight, self.inputs)?;
        for row in y.chunks_exact_mut(self.outputs) {
            row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v += b);
        }
        Ok(y)
    }

    /// Gradients of the weight (`gᵀ · x`) and bias (column sums of `g`) from `g = dL/dy: [n, outputs]`.
    pub fn backward(&self, x: &[f32], g: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let dw = matmul_tn(g, self.outputs, x, self.inputs)?;
        let mut db = vec![0.0f32; self.outputs];
        for row in g.chunks_exact(self.outputs) {
            db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
        }
        Ok((dw, db))
    }

    /// Backward, then one Adam step.
    pub fn train_step(&mut self, x: &[f32], g: &[f32]) -> Result<()> {
        let (dw, db) = self.backward(x, g)?;
        self.adam
            .step(&mut [&mut self.weight, &mut self.bias], &[&dw, &db]);
        Ok(())
    }

    /// `<prefix>weight` and `<prefix>bias`.
    pub fn parameters(&self, prefix: &str) -> Vec<NamedTensor> {
        vec![
            (
                format!("{prefix}weight"),
                vec![self.outputs, self.inputs],
                self.weight.clone(),
            ),
            (
                format!("{prefix}bias"),
                vec![self.outputs],
                self.bias.clone(),
            ),
        ]
    }

    /// Parameters plus Adam moments (`adam.m.<name>`, `adam.v.<name>`), and Adam's step count.
    pub fn state(&self, prefix: &str) -> (Vec<NamedTensor>, u64) {
        let mut out = self.parameters(prefix);
        let shapes = [vec![self.outputs, self.inputs], vec![self.outputs]];
        for (i, name) in ["weight", "bias"].iter().enumerate() {
            for (kind, buf) in [("m", &self.adam.m[i]), ("v", &self.adam.v[i])] {
                out.push((
                    format!("adam.{kind}.{prefix}{name}"),
                    shapes[i].clone(),
                    buf.clone(),
                ));
            }
        }
        (out, self.adam.t)
    }

    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Vec<f32>>,
        steps: u64,
    ) -> Result<()> {
        let get = |name: String, len: usize| -> Result<Vec<f32>> {
            let v = tensors
                .get(&name)
                .with_context(|| format!("checkpoint has no tensor {name}"))?;
            ensure!(
                v.len() == len,
                "checkpoint tensor {name} has {} values, expected {len}",
                v.len()
            );
            Ok(v.clone())
        };
        let sizes = [self.outputs * self.inputs, self.outputs];
        self.weight = get(format!("{prefix}weight"), sizes[0])?;
        self.bias = get(format!("{prefix}bias"), sizes[1])?;
        for (i, name) in ["weight", "bias"].iter().enumerate() {
            self.adam.m[i] = get(format!("adam.m.{prefix}{name}"), sizes[i])?;
            self.adam.v[i] = get(format!("adam.v.{prefix}{name}"), sizes[i])?;
        }
        self.adam.t = steps;
        Ok(())
    }
}
