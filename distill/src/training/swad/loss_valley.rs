//! [`LossValley`]: SWAD's choice of which segments to average, a line-by-line port of `LossValley` in
//! `domainbed/swad.py` (identical in khanrc/swad and val-iisc/VL2V-ADiP), quirks included:
//!
//! - the final model is *seeded* with the converged segment (`AveragedModel(segment)`, `n = 0`), so its first
//!   fold overwrites that copy instead of averaging with it;
//! - at convergence with `n_tolerance > n_converge` the look-back over earlier segments skips the first
//!   qualifying one (`Q[start_idx + 1:]`) and includes the converged segment itself, which is folded again
//!   later when it reaches the front of the tolerance window;
//! - while the tolerance window is not yet full its front stays the same segment, which is then folded at
//!   every checkpoint (only when convergence happens in the first `n_tolerance − 1` checkpoints);
//! - folding with a segment's own range can move `end_step` backwards.

use std::collections::VecDeque;

use anyhow::{ensure, Context, Result};

use super::averaged::AveragedModel;

/// `swad_kwargs` of `config.yaml` (both upstream and VL2V: 3, 6, 0.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossValleyConfig {
    /// Converge-detector window: converged when the oldest of the last `n_converge` segments has their
    /// minimum validation loss.
    pub n_converge: usize,
    /// Loss-min smoothing window: a segment is folded while the minimum loss of the last `n_tolerance`
    /// segments (starting at it) stays under the threshold.
    pub n_tolerance: usize,
    /// Threshold = mean loss of the converge window · (1 + `tolerance_ratio`).
    pub tolerance_ratio: f64,
}

impl Default for LossValleyConfig {
    fn default() -> Self {
        Self {
            n_converge: 3,
            n_tolerance: 6,
            tolerance_ratio: 0.3,
        }
    }
}

/// A segment average frozen at a checkpoint, tagged with that checkpoint's validation loss
/// (upstream's `frozen` with `end_loss`).
#[derive(Clone, Debug)]
struct Frozen {
    model: AveragedModel,
    start_step: u64,
    end_step: u64,
    end_loss: f64,
}

/// Detects the validation-loss valley over segment averages and builds the final SWAD model.
#[derive(Clone, Debug)]
pub struct LossValley {
    config: LossValleyConfig,
    converge_q: VecDeque<Frozen>,
    smooth_q: VecDeque<Frozen>,
    final_model: Option<AveragedModel>,
    converge_step: Option<u64>,
    dead_valley: bool,
    threshold: Option<f64>,
}

impl LossValley {
    pub fn new(config: LossValleyConfig) -> Result<Self> {
        ensure!(config.n_converge >= 1, "n_converge must be at least 1");
        ensure!(config.n_tolerance >= 1, "n_tolerance must be at least 1");
        ensure!(
            config.tolerance_ratio.is_finite(),
            "tolerance_ratio must be finite"
        );
        Ok(Self {
            config,
            converge_q: VecDeque::with_capacity(config.n_converge),
            smooth_q: VecDeque::with_capacity(config.n_tolerance),
            final_model: None,
            converge_step: None,
            dead_valley: false,
            threshold: None,
        })
    }

    #[allow(dead_code)] // part of the unit's API
    pub fn config(&self) -> LossValleyConfig {
        self.config
    }

    /// Whether a valley start was found (upstream's `is_converged`).
    pub fn is_converged(&self) -> bool {
        self.converge_step.is_some()
    }

    /// `end_step` of the converged segment.
    pub fn converge_step(&self) -> Option<u64> {
        self.converge_step
    }

    /// The loss threshold fixed at convergence.
    pub fn threshold(&self) -> Option<f64> {
        self.threshold
    }

    /// Whether the valley died (training should stop; later updates are ignored).
    pub fn is_dead_valley(&self) -> bool {
        self.dead_valley
    }

    /// The final average built so far (`None` before convergence).
    #[cfg_attr(not(test), allow(dead_code))] // part of the unit's API, used by its tests
    pub fn final_model(&self) -> Option<&AveragedModel> {
        self.final_model.as_ref()
    }

    /// Upstream's `update_and_evaluate(segment_swa, val_acc, val_loss)`, called at every checkpoint with the
    /// current segment average and the checkpoint's training-domain validation accuracy (`train_out`,
    /// unused by `LossValley`, as upstream) and loss (`tr_outloss`).
    pub fn update_and_evaluate(
        &mut self,
        segment: &AveragedModel,
        _val_acc: f64,
        val_loss: f64,
    ) -> Result<()> {
        if self.dead_valley {
            return Ok(());
        }
        ensure!(
            val_loss.is_finite(),
            "validation loss {val_loss} is not finite"
        );
        let (Some(start_step), Some(end_step)) = (segment.start_step(), segment.end_step()) else {
            anyhow::bail!(
                "segment average is empty at a checkpoint (no step averaged since the last reset)"
            );
        };
        let frozen = Frozen {
            model: segment.clone(),
            start_step,
            end_step,
            end_loss: val_loss,
        };
        push_bounded(&mut self.converge_q, frozen.clone(), self.config.n_converge);
        push_bounded(&mut self.smooth_q, frozen, self.config.n_tolerance);

        let Some(threshold) = self.threshold else {
            self.try_converge()?;
            return Ok(());
        };
        let converge_step = self
            .converge_step
            .context("threshold set without convergence")?;

        if self.smooth_q[0].end_step < converge_step {
            return Ok(());
        }
        // converged -> loss valley
        if min_loss(&self.smooth_q) > threshold {
            self.dead_valley = true;
            return Ok(());
        }
        let front = &self.smooth_q[0];
        let final_model = self
            .final_model
            .as_mut()
            .context("converged without a final model")?;
        fold_range(final_model, front)
    }

    /// The not-yet-converged branch of `update_and_evaluate`.
    fn try_converge(&mut self) -> Result<()> {
        let LossValleyConfig {
            n_converge,
            n_tolerance,
            tolerance_ratio,
        } = self.config;
        if self.converge_q.len() < n_converge {
            return Ok(());
        }
        // np.argmin: the first minimum.
        let min_idx = self.converge_q.iter().enumerate().fold(0, |best, (i, f)| {
            if f.end_loss < self.converge_q[best].end_loss {
                i
            } else {
                best
            }
        });
        if min_idx != 0 {
            return Ok(());
        }
        let until_min = &self.converge_q[0];
        self.converge_step = Some(until_min.end_step);
        let seed = until_min
            .model
            .params_ref()
            .context("frozen segment has no parameters")?;
        let mut final_model = AveragedModel::seeded(seed)?;

        let th_base =
            self.converge_q.iter().map(|f| f.end_loss).sum::<f64>() / self.converge_q.len() as f64;
        let threshold = th_base * (1.0 + tolerance_ratio);
        self.threshold = Some(threshold);

        if n_tolerance < n_converge {
            for i in 0..(n_converge - n_tolerance) {
                fold_range(&mut final_model, &self.converge_q[1 + i])?;
            }
        } else if n_tolerance > n_converge {
            let converge_idx = n_tolerance - n_converge;
            let q: Vec<&Frozen> = self.smooth_q.iter().take(converge_idx + 1).collect();
            let mut start_idx = 0;
            for i in (0..q.len()).rev() {
                if q[i].end_loss > threshold {
                    start_idx = i + 1;
                    break;
                }
            }
            for frozen in q.iter().skip(start_idx + 1) {
                fold_range(&mut final_model, frozen)?;
            }
        }
        self.final_model = Some(final_model);
        Ok(())
    }

    /// Upstream's `get_final_model()`: if never converged, the last segment seen (`None` if there was no
    /// checkpoint at all); otherwise the final average, after — unless the valley died — dropping the front of
    /// the tolerance window (already folded) and folding the remaining queued segments in order while the
    /// minimum loss of those still queued stays under the threshold (each folded with `step = end_step`).
    pub fn get_final_model(mut self) -> Result<Option<AveragedModel>> {
        if !self.is_converged() {
            return Ok(self.converge_q.pop_back().map(|f| f.model));
        }
        let threshold = self.threshold.context("converged without a threshold")?;
        let mut final_model = self
            .final_model
            .take()
            .context("converged without a final model")?;
        if !self.dead_valley {
            self.smooth_q.pop_front();
            while !self.smooth_q.is_empty() {
                if min_loss(&self.smooth_q) > threshold {
                    break;
                }
                let Some(segment) = self.smooth_q.pop_front() else {
                    break;
                };
                let params = segment
                    .model
                    .params_ref()
                    .context("frozen segment has no parameters")?;
                final_model.update(params, segment.end_step)?;
            }
        }
        Ok(Some(final_model))
    }
}

/// `deque(maxlen=cap).append(item)`.
fn push_bounded(q: &mut VecDeque<Frozen>, item: Frozen, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(item);
}

fn min_loss(q: &VecDeque<Frozen>) -> f64 {
    q.iter().map(|f| f.end_loss).fold(f64::INFINITY, f64::min)
}

/// `final_model.update_parameters(model, start_step=model.start_step, end_step=model.end_step)`.
fn fold_range(final_model: &mut AveragedModel, frozen: &Frozen) -> Result<()> {
    let params = frozen
        .model
        .params_ref()
        .context("frozen segment has no parameters")?;
    final_model.update_range(params, frozen.start_step, frozen.end_step)
}
