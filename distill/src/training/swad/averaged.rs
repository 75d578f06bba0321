//! [`AveragedModel`]: the running mean of a model's parameters, as `domainbed/lib/swa_utils.py`'s
//! `AveragedModel` (itself modified from `torch.optim.swa_utils`).

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;

/// A model's parameters: an ordered list of named tensors. Every parameter set given to one
/// [`AveragedModel`] must have the same names, in the same order, with the same shapes and dtypes.
pub type NamedParams = Vec<(String, Tensor)>;

/// Running mean of parameter sets, `p̄ ← p̄ + (p − p̄)/(n+1)` (`n` = sets averaged so far), plus the range of
/// training steps the mean covers.
///
/// Mirrors `swa_utils.AveragedModel`:
/// - the first update (`n == 0`) *copies* the parameters (so a model seeded by [`AveragedModel::seeded`],
///   upstream's `AveragedModel(model)` constructor, is overwritten by its first update, not averaged with it);
/// - `start_step` is set only by the update that makes `n == 1`; `end_step` by every update that names one;
/// - a fresh or seeded model has no step range (upstream's `-1`), shown here as `None`.
///
/// Tensors are detached and the first update deep-copies its input, so later in-place changes of the
/// training loop's variables (`candle_core::Var::set`) never leak into the average. Every later update
/// builds new tensors, so cloning an `AveragedModel` is a cheap, independent snapshot (upstream deep-copies).
#[derive(Clone, Debug, Default)]
pub struct AveragedModel {
    params: Option<NamedParams>,
    n_averaged: u64,
    start_step: Option<u64>,
    end_step: Option<u64>,
}

impl AveragedModel {
    /// An empty average: no parameters, `n = 0`, no step range.
    pub fn new() -> Self {
        Self::default()
    }

    /// Upstream's `AveragedModel(model)`: holds a copy of `params` but with `n = 0` and no step range, so
    /// the next update replaces them.
    pub fn seeded(params: &[(String, Tensor)]) -> Result<Self> {
        Ok(Self {
            params: Some(deep_copy(params)?),
            n_averaged: 0,
            start_step: None,
            end_step: None,
        })
    }

    /// Folds in the parameters of one optimisation step (`update_parameters(model, step=step)`): the step
    /// becomes `end_step`, and `start_step` too if this is the first parameter set averaged.
    pub fn update(&mut self, params: &[(String, Tensor)], step: u64) -> Result<()> {
        self.update_parameters(params, Some(step), Some(step))
    }

    /// Folds in a parameter set that itself covers `start_step..=end_step`
    /// (`update_parameters(model, start_step=…, end_step=…)`, used to fold segments).
    pub fn update_range(
        &mut self,
        params: &[(String, Tensor)],
        start_step: u64,
        end_step: u64,
    ) -> Result<()> {
        self.update_parameters(params, Some(start_step), Some(end_step))
    }

    fn update_parameters(
        &mut self,
        params: &[(String, Tensor)],
        start_step: Option<u64>,
        end_step: Option<u64>,
    ) -> Result<()> {
        match &self.params {
            Some(avg) if self.n_averaged > 0 => {
                check_compatible(avg, params)?;
                let n = self.n_averaged;
                let new = avg
                    .iter()
                    .zip(params)
                    .map(|((name, a), (_, p))| {
                        running_mean(a, &p.detach(), n)
                            .with_context(|| format!("averaging parameter {name}"))
                            .map(|t| (name.clone(), t))
                    })
                    .collect::<Result<NamedParams>>()?;
                self.params = Some(new);
            }
            Some(avg) => {
                // Seeded (n == 0): upstream copies into the existing parameters, so they must match.
                check_compatible(avg, params)?;
                self.params = Some(deep_copy(params)?);
            }
            None => self.params = Some(deep_copy(params)?),
        }
        self.n_averaged += 1;
        if self.n_averaged == 1 {
            if let Some(start) = start_step {
                self.start_step = Some(start);
            }
        }
        if let Some(end) = end_step {
            self.end_step = Some(end);
        }
        Ok(())
    }

    /// The averaged parameters (cheap clones of the held tensors); empty if nothing was ever averaged or
    /// seeded.
    pub fn params(&self) -> NamedParams {
        self.params.clone().unwrap_or_default()
    }

    /// Borrowed view of the averaged parameters, `None` if empty.
    pub fn params_ref(&self) -> Option<&[(String, Tensor)]> {
        self.params.as_deref()
    }

    /// Whether no parameters are held (never updated nor seeded, or just reset).
    #[cfg_attr(not(test), allow(dead_code))] // part of the unit's API, used by its tests
    pub fn is_empty(&self) -> bool {
        self.params.is_none()
    }

    /// Number of parameter sets averaged (upstream's `n_averaged`).
    pub fn n_averaged(&self) -> u64 {
        self.n_averaged
    }

    /// First step covered (upstream's `start_step`; `None` for upstream's `-1`).
    pub fn start_step(&self) -> Option<u64> {
        self.start_step
    }

    /// Last step covered (upstream's `end_step`; `None` for upstream's `-1`).
    pub fn end_step(&self) -> Option<u64> {
        self.end_step
    }

    /// Back to empty (upstream replaces the object with `AveragedModel(algorithm)`, whose copy is
    /// overwritten by the next update, so empty is equivalent).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// `a + (p − a)/(n+1)`, dividing (as PyTorch does) rather than multiplying by the reciprocal.
fn running_mean(a: &Tensor, p: &Tensor, n: u64) -> Result<Tensor> {
    let count = Tensor::new((n + 1) as f64, a.device())?.to_dtype(a.dtype())?;
    let p = p.to_device(a.device())?;
    Ok(a.add(&p.sub(a)?.broadcast_div(&count)?)?)
}

/// Detached copies with their own storage.
fn deep_copy(params: &[(String, Tensor)]) -> Result<NamedParams> {
    params
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.detach().copy()?)))
        .collect()
}

fn check_compatible(avg: &[(String, Tensor)], params: &[(String, Tensor)]) -> Result<()> {
    ensure!(
        avg.len() == params.len(),
        "parameter count changed: the average holds {}, got {}",
        avg.len(),
        params.len()
    );
    for ((an, a), (pn, p)) in avg.iter().zip(params) {
        ensure!(
            an == pn,
            "parameter order/names changed: expected {an}, got {pn}"
        );
        ensure!(
            a.dims() == p.dims() && a.dtype() == p.dtype(),
            "parameter {an} changed: the average is {:?} {:?}, got {:?} {:?}",
            a.dims(),
            a.dtype(),
            p.dims(),
            p.dtype()
        );
    }
    Ok(())
}
