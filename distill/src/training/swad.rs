//! SWAD (Cha et al., 2021) as run by VL2V-ADiP: dense stochastic weight averaging with the `LossValley`
//! choice of averaging range (`domainbed/swad.py`, `domainbed/lib/swa_utils.py`, `domainbed/trainer.py`).
//!
//! The training loop drives one [`Swad`] per held-out domain:
//!
//! ```text
//! let mut swad = Swad::new(SwadConfig::new(SwadVariant::Vl2vFix))?;
//! for step in 0..n_steps {
//!     optimiser step …
//!     swad.after_step(step, &params)?;                  // segment average, after every step
//!     if step % checkpoint_freq == 0 {
//!         evaluate → train_out (acc), tr_outloss (loss) …
//!         if swad.at_checkpoint(step, train_out, tr_outloss)? == Decision::Stop { break; }
//!     }
//! }
//! let swad_params = swad.finish()?;                      // evaluate these as "SWAD"
//! ```
//!
//! Rules (trainer.py of both repositories):
//! - the *segment* average is updated after every optimisation step, including step 0;
//! - at each checkpoint (`step % checkpoint_freq == 0`, so step 0 is one) the segment, with that checkpoint's
//!   `train_out` / `tr_outloss`, goes to [`LossValley::update_and_evaluate`]; if the valley is dead, training
//!   stops right there (before any reset);
//! - then the segment is reset: [`SwadVariant::Upstream`] (khanrc/swad; VL2V with `--swad_fix`) after every
//!   checkpoint, so segments are `[0-0]`, `[1-200]`, `[201-400]`, …; [`SwadVariant::Vl2vFix`] (VL2V's default,
//!   `swad_fix = True`) only when `step % 1000 == 0 && step > 2500`, so with checkpoints every 200 steps
//!   segments are cumulative `[0-c]` up to 3000, then `[3001-c]` up to 4000, then `[4001-c]`;
//! - at the end the final model is [`LossValley::get_final_model`]; BN statistics are not recomputed
//!   (`freeze_bn = True`).

mod averaged;
mod loss_valley;
#[cfg(test)]
mod tests;

use anyhow::{ensure, Result};
use candle_core::Tensor;

pub use averaged::{AveragedModel, NamedParams};
pub use loss_valley::{LossValley, LossValleyConfig};

/// When the segment average is reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwadVariant {
    /// khanrc/swad: after every checkpoint (VL2V with `--swad_fix`, i.e. `swad_fix = False`; only the ViT-B
    /// stage-2 script).
    Upstream,
    /// VL2V-ADiP's default (`swad_fix = True`): only at checkpoints with `step % 1000 == 0 && step > 2500`.
    Vl2vFix,
}

impl SwadVariant {
    /// Whether the segment is reset after the checkpoint at `step`.
    pub fn resets_after(self, step: u64) -> bool {
        match self {
            Self::Upstream => true,
            Self::Vl2vFix => step.is_multiple_of(1000) && step > 2500,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SwadConfig {
    pub variant: SwadVariant,
    pub loss_valley: LossValleyConfig,
}

impl SwadConfig {
    /// `variant` with the shipped `swad_kwargs` (n_converge 3, n_tolerance 6, tolerance_ratio 0.3).
    pub fn new(variant: SwadVariant) -> Self {
        Self {
            variant,
            loss_valley: LossValleyConfig::default(),
        }
    }
}

/// What the training loop does after a checkpoint.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Continue,
    /// The loss valley is dead: stop training (upstream `break`s out of the step loop).
    Stop,
}

/// Segment average + [`LossValley`] + the variant's reset schedule.
#[derive(Clone, Debug)]
pub struct Swad {
    variant: SwadVariant,
    segment: AveragedModel,
    valley: LossValley,
}

impl Swad {
    pub fn new(config: SwadConfig) -> Result<Self> {
        Ok(Self {
            variant: config.variant,
            segment: AveragedModel::new(),
            valley: LossValley::new(config.loss_valley)?,
        })
    }

    pub fn variant(&self) -> SwadVariant {
        self.variant
    }

    /// Folds the parameters after optimisation step `step` into the segment average
    /// (`swad_algorithm.update_parameters(algorithm, step=step)`).
    pub fn after_step(&mut self, step: u64, params: &[(String, Tensor)]) -> Result<()> {
        if let Some(last) = self.segment.end_step() {
            ensure!(
                step > last,
                "SWAD steps must increase: got step {step} after step {last}"
            );
        }
        self.segment.update(params, step)
    }

    /// At a checkpoint at `step` (right after [`Swad::after_step`] for that step): hands the segment to the
    /// loss valley with `val_acc` (`train_out`) and `val_loss` (`tr_outloss`), then resets the segment if the
    /// variant says so. [`Decision::Stop`] once the valley is dead (then nothing else changes).
    pub fn at_checkpoint(&mut self, step: u64, val_acc: f64, val_loss: f64) -> Result<Decision> {
        if self.valley.is_dead_valley() {
            return Ok(Decision::Stop);
        }
        ensure!(
            self.segment.end_step() == Some(step),
            "checkpoint at step {step}, but the segment average ends at {:?}: call after_step({step}, …) first",
            self.segment.end_step()
        );
        self.valley
            .update_and_evaluate(&self.segment, val_acc, val_loss)?;
        if self.valley.is_dead_valley() {
            return Ok(Decision::Stop);
        }
        if self.variant.resets_after(step) {
            self.segment.reset();
        }
        Ok(Decision::Continue)
    }

    /// The current segment average.
    #[cfg_attr(not(test), allow(dead_code))] // part of the unit's API, used by its tests
    pub fn segment(&self) -> &AveragedModel {
        &self.segment
    }

    /// The loss-valley state (convergence step, threshold, dead valley, final model so far), for logging.
    pub fn loss_valley(&self) -> &LossValley {
        &self.valley
    }

    /// The SWAD model with its step range and `n_averaged` (upstream logs `[start-end] (N=n)`); `None` if
    /// there was no checkpoint.
    pub fn finish_model(self) -> Result<Option<AveragedModel>> {
        self.valley.get_final_model()
    }

    /// The SWAD model's parameters; `None` if there was no checkpoint.
    #[cfg_attr(not(test), allow(dead_code))] // part of the unit's API, used by its tests
    pub fn finish(self) -> Result<Option<NamedParams>> {
        Ok(self.finish_model()?.map(|m| m.params()))
    }
}
