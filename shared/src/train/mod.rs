//! What every training loop of the project needs, whoever drives it (`distill`'s trainer, the demo lab's
//! pretraining): torch's Adam, the differentiable graph pieces of a classification loss, and a fixed order
//! of a model's variables.

pub mod adam;
pub mod graph;

use anyhow::Result;
use candle_core::Var;
use candle_nn::VarMap;

pub use adam::{Adam, DeviceMoments};

/// The variables of `varmap` sorted by name: the order optimisers and checkpoints use.
pub fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map poisoned"))?
        .iter()
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Fraction of predictions equal to their label (`None` counts as wrong); 0 for an empty split.
pub fn accuracy_of(predicted: &[Option<usize>], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let correct = predicted
        .iter()
        .zip(labels)
        .filter(|(p, &y)| **p == Some(y))
        .count();
    correct as f64 / labels.len() as f64
}

/// Call first in `main` of a binary that trains: candle's pool for elementwise ops spins 25,000 times
/// after each op before its workers sleep, and while a model trains the spinning takes the cores the next
/// op needs (a third of a tiny ResNet's step on 2 cores). Must run before candle's first op reads it; a
/// user's own `CANDLE_BARRIER_POOL_SPIN_LIMIT` wins.
pub fn limit_candle_pool_spinning() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
    }
}

#[cfg(test)]
mod backprop_tests;
