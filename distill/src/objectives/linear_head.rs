//! A trainable `nn.Linear` (weight `[out, in]`, bias `[out]`, torch's default initialisation) with its own
//! Adam: forward is one matrix product, backward one more.
//!
//! Training steps are small products (a minibatch of ~100 rows against a weight of ~400k values) repeated
//! thousands of times, so both products call the GEMM directly ([`vl2v::model::gemm`]) on the caller's buffers
//! (no tensor copies of the weight per step), and the weight gradient is produced in blocks of rows that
//! Adam applies while each block is still in cache: the full gradient never makes a round trip through
//! memory.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;

use crate::algorithms::NamedTensor;
use vl2v::model::gemm::{gemm, Operand};
use vl2v::rng::SplitMix64;
use vl2v::train::Adam;

/// Rows of the weight per task of the fused backward + Adam step: small enough that a block of the
/// gradient, weight and moments (4 × 48 × 768 floats for a 768-input layer) stays in a core's L2 cache,
/// large enough to keep the GEMM efficient and the task count low; a multiple of the 6 columns of gemm's
/// f32 micro-kernel. (16, 32, 48 and 64 measured within noise of each other on the benchmark.)
const ROWS_PER_TASK: usize = 48;

#[derive(Clone, Debug)]
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    /// Row-major `[outputs, inputs]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub adam: Adam,
    /// Scratch for the weight gradient (`[outputs, inputs]`), reused by every step.
    grad: Vec<f32>,
}

/// The gradient of rows `rows` of a `[outputs, inputs]` weight, `g[:, rows]ᵀ · x`, into
/// `dw: [rows.len(), inputs]`, for `x: [n, inputs]` and `g = dL/dy: [n, outputs]`. Single-threaded: callers
/// split the rows across threads.
fn weight_grad_rows(
    (inputs, outputs): (usize, usize),
    x: &[f32],
    g: &[f32],
    rows: std::ops::Range<usize>,
    dw: &mut [f32],
) {
    let n = x.len() / inputs;
    // gᵀ's element (o, r) is g[r * outputs + o].
    gemm(
        dw,
        inputs,
        false,
        (rows.len(), inputs, n),
        Operand {
            data: &g[rows.start..],
            row_stride: 1,
            col_stride: outputs,
        },
        Operand {
            data: x,
            row_stride: inputs,
            col_stride: 1,
        },
        1,
    );
}

impl Linear {
    /// torch's `nn.Linear` initialisation: weight and bias uniform in ±1/sqrt(inputs), seeded.
    pub fn new(inputs: usize, outputs: usize, seed: u64, lr: f64, weight_decay: f64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x4c49_4e45_4152_0001);
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
            grad: vec![0.0; inputs * outputs],
        }
    }

    fn rows_of(&self, x: &[f32]) -> Result<usize> {
        ensure!(
            x.len().is_multiple_of(self.inputs),
            "{} input values are not rows of {}",
            x.len(),
            self.inputs
        );
        Ok(x.len() / self.inputs)
    }

    /// `x · Wᵀ + b` for row-major `x: [n, inputs]`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = Vec::new();
        self.forward_into(x, &mut y)?;
        Ok(y)
    }

    /// [`Linear::forward`] into `y` (resized to `[n, outputs]`; reusing it saves an allocation per step).
    pub fn forward_into(&self, x: &[f32], y: &mut Vec<f32>) -> Result<()> {
        let n = self.rows_of(x)?;
        y.clear();
        for _ in 0..n {
            y.extend_from_slice(&self.bias);
        }
        // y += x · Wᵀ; Wᵀ's element (i, o) is weight[o * inputs + i].
        gemm(
            y,
            self.outputs,
            true,
            (n, self.outputs, self.inputs),
            Operand {
                data: x,
                row_stride: self.inputs,
                col_stride: 1,
            },
            Operand {
                data: &self.weight,
                row_stride: 1,
                col_stride: self.inputs,
            },
            rayon::current_num_threads(),
        );
        Ok(())
    }

    fn check_grad(&self, x: &[f32], g: &[f32]) -> Result<usize> {
        let n = self.rows_of(x)?;
        ensure!(
            g.len() == n * self.outputs,
            "{} gradient values for {n} rows of {} outputs",
            g.len(),
            self.outputs
        );
        Ok(n)
    }

    /// Column sums of `g: [n, outputs]`.
    fn bias_grad(&self, g: &[f32]) -> Vec<f32> {
        let mut db = vec![0.0f32; self.outputs];
        for row in g.chunks_exact(self.outputs) {
            db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
        }
        db
    }

    /// Gradients of the weight (`gᵀ · x`) and bias (column sums of `g`) from `g = dL/dy: [n, outputs]`.
    #[cfg(test)]
    pub fn backward(&self, x: &[f32], g: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.check_grad(x, g)?;
        let mut dw = vec![0.0f32; self.outputs * self.inputs];
        weight_grad_rows((self.inputs, self.outputs), x, g, 0..self.outputs, &mut dw);
        Ok((dw, self.bias_grad(g)))
    }

    /// Backward, then one Adam step. The weight is processed in blocks of [`ROWS_PER_TASK`] rows across
    /// rayon's pool: each task computes its block of the gradient and applies Adam to it at once. Adam is
    /// elementwise and each block's GEMM is single-threaded, so the result does not depend on the number of
    /// threads.
    pub fn train_step(&mut self, x: &[f32], g: &[f32]) -> Result<()> {
        self.check_grad(x, g)?;
        let db = self.bias_grad(g);
        let shape = (self.inputs, self.outputs);
        let block = ROWS_PER_TASK * self.inputs;
        let Linear {
            weight,
            bias,
            adam,
            grad,
            ..
        } = self;
        let update = adam.begin_step();
        let (m_weight, m_bias) = adam.m.split_at_mut(1);
        let (v_weight, v_bias) = adam.v.split_at_mut(1);
        grad.par_chunks_mut(block)
            .zip(weight.par_chunks_mut(block))
            .zip(m_weight[0].par_chunks_mut(block))
            .zip(v_weight[0].par_chunks_mut(block))
            .enumerate()
            .for_each(|(i, (((dw, w), m), v))| {
                let first = i * ROWS_PER_TASK;
                weight_grad_rows(shape, x, g, first..first + dw.len() / shape.0, dw);
                update.apply(w, dw, m, v);
            });
        update.apply(bias, &db, &mut m_bias[0], &mut v_bias[0]);
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

    /// Replaces weight and bias by `{prefix}weight` / `{prefix}bias` of `tensors`.
    pub fn load_parameters(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Vec<f32>>,
    ) -> Result<()> {
        let sizes = [self.outputs * self.inputs, self.outputs];
        for (i, name) in ["weight", "bias"].iter().enumerate() {
            let name = format!("{prefix}{name}");
            let v = tensors
                .get(&name)
                .with_context(|| format!("no tensor {name}"))?;
            ensure!(
                v.len() == sizes[i],
                "tensor {name} has {} values, expected {}",
                v.len(),
                sizes[i]
            );
        }
        self.weight.clone_from(&tensors[&format!("{prefix}weight")]);
        self.bias.clone_from(&tensors[&format!("{prefix}bias")]);
        Ok(())
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
