use anyhow::Result;
use candle_core::{Device, Tensor, Var};

use super::*;

/// Length of the one-hot "parameter" that identifies segments.
const K: usize = 16;
const FREQ: u64 = 200;

fn vec_param(values: &[f64]) -> NamedParams {
    vec![("w".to_string(), Tensor::new(values, &Device::Cpu).unwrap())]
}

fn one_hot(k: usize) -> NamedParams {
    let mut v = [0.0; K];
    v[k] = 1.0;
    vec_param(&v)
}

fn values(m: &AveragedModel) -> Vec<f64> {
    m.params_ref().expect("non-empty")[0]
        .1
        .to_vec1::<f64>()
        .unwrap()
}

/// How many times each one-hot segment went into `m` (`value · n`, which must be an integer).
fn counts(m: &AveragedModel) -> Vec<u64> {
    let n = m.n_averaged() as f64;
    values(m)
        .iter()
        .map(|v| {
            let c = v * n;
            assert!((c - c.round()).abs() < 1e-9, "{v} · {n} is not a count");
            c.round() as u64
        })
        .collect()
}

fn counts_of(pairs: &[(usize, u64)]) -> Vec<u64> {
    let mut c = vec![0; K];
    for &(k, n) in pairs {
        c[k] = n;
    }
    c
}

/// Index of the upstream segment holding `step` with checkpoints every `FREQ` steps: 0 = [0-0],
/// k = [200(k−1)+1 − 200k].
fn segment_of(step: u64) -> usize {
    step.div_ceil(FREQ) as usize
}

/// Upstream variant, checkpoint k at step 200k with loss `losses[k]`; the parameter after step t is the
/// one-hot of its segment, so every segment average is exactly that one-hot. Stops at a dead valley and
/// returns the checkpoint index it stopped at; `inspect(k, &swad)` runs after each checkpoint.
fn run_upstream(
    losses: &[f64],
    mut inspect: impl FnMut(usize, &Swad),
) -> Result<(Swad, Option<usize>)> {
    let mut swad = Swad::new(SwadConfig::new(SwadVariant::Upstream))?;
    let last = FREQ * (losses.len() as u64 - 1);
    for step in 0..=last {
        swad.after_step(step, &one_hot(segment_of(step)))?;
        if step.is_multiple_of(FREQ) {
            let k = (step / FREQ) as usize;
            let decision = swad.at_checkpoint(step, 0.5, losses[k])?;
            inspect(k, &swad);
            if decision == Decision::Stop {
                return Ok((swad, Some(k)));
            }
        }
    }
    Ok((swad, None))
}

// ---------------------------------------------------------------------------------------------------------
// AveragedModel

#[test]
fn averaged_model_hand_computed_means() -> Result<()> {
    let mut m = AveragedModel::new();
    assert!(m.is_empty() && m.params().is_empty());
    let p = |a: f32, b: f32| vec![("w".to_string(), Tensor::new(&[a, b], &Device::Cpu).unwrap())];
    m.update(&p(1.0, 2.0), 10)?;
    assert_eq!(m.params()[0].1.to_vec1::<f32>()?, [1.0, 2.0]);
    m.update(&p(3.0, 4.0), 11)?; // 1 + (3−1)/2 = 2, 2 + (4−2)/2 = 3
    assert_eq!(m.params()[0].1.to_vec1::<f32>()?, [2.0, 3.0]);
    m.update(&p(5.0, 9.0), 12)?; // 2 + (5−2)/3 = 3, 3 + (9−3)/3 = 5
    assert_eq!(m.params()[0].1.to_vec1::<f32>()?, [3.0, 5.0]);
    assert_eq!(
        (m.n_averaged(), m.start_step(), m.end_step()),
        (3, Some(10), Some(12))
    );

    // f64, several named tensors of different shapes.
    let mut m = AveragedModel::new();
    let sets = [
        [0.1, 0.2, 0.7, -4.0],
        [0.3, 0.5, 0.1, 2.0],
        [0.8, -0.1, 0.4, 5.0],
    ];
    for (i, s) in sets.iter().enumerate() {
        let params = vec![
            (
                "a".to_string(),
                Tensor::new(&s[..2], &Device::Cpu)?.reshape((1, 2))?,
            ),
            ("b".to_string(), Tensor::new(&s[2..], &Device::Cpu)?),
        ];
        m.update(&params, 100 + i as u64)?;
    }
    let got = m.params();
    assert_eq!(got[0].0, "a");
    assert_eq!(got[1].0, "b");
    assert_eq!(got[0].1.dims(), [1, 2]);
    let a = got[0].1.flatten_all()?.to_vec1::<f64>()?;
    let b = got[1].1.to_vec1::<f64>()?;
    let want = [0.4, 0.2, 0.4, 1.0];
    for (g, w) in a.iter().chain(&b).zip(want) {
        assert!((g - w).abs() < 1e-12, "{g} vs {w}");
    }

    m.reset();
    assert!(m.is_empty());
    assert_eq!(
        (m.n_averaged(), m.start_step(), m.end_step()),
        (0, None, None)
    );
    Ok(())
}

#[test]
fn averaged_model_seeded_and_ranges() -> Result<()> {
    // Upstream AveragedModel(model): holds a copy, n = 0, no range; the first update overwrites it.
    let mut m = AveragedModel::seeded(&vec_param(&[7.0]))?;
    assert_eq!(
        (m.n_averaged(), m.start_step(), m.end_step()),
        (0, None, None)
    );
    assert_eq!(values(&m), [7.0]);
    m.update_range(&vec_param(&[1.0]), 401, 600)?;
    assert_eq!(values(&m), [1.0]);
    assert_eq!(
        (m.n_averaged(), m.start_step(), m.end_step()),
        (1, Some(401), Some(600))
    );
    // start_step only from the first update; end_step from every one (even backwards).
    m.update_range(&vec_param(&[3.0]), 0, 0)?;
    assert_eq!(values(&m), [2.0]);
    assert_eq!(
        (m.n_averaged(), m.start_step(), m.end_step()),
        (2, Some(401), Some(0))
    );
    Ok(())
}

#[test]
fn averaged_model_does_not_alias_variables() -> Result<()> {
    let var = Var::new(&[1.0f64, 2.0], &Device::Cpu)?;
    let mut m = AveragedModel::new();
    m.update(&[("w".to_string(), var.as_tensor().clone())], 0)?;
    var.set(&Tensor::new(&[5.0f64, 6.0], &Device::Cpu)?)?;
    assert_eq!(values(&m), [1.0, 2.0]);
    m.update(&[("w".to_string(), var.as_tensor().clone())], 1)?;
    assert_eq!(values(&m), [3.0, 4.0]);
    Ok(())
}

#[test]
fn averaged_model_rejects_mismatched_params() -> Result<()> {
    let mut m = AveragedModel::new();
    m.update(&vec_param(&[1.0, 2.0]), 0)?;
    let renamed = vec![("v".to_string(), Tensor::new(&[1.0f64, 2.0], &Device::Cpu)?)];
    assert!(m.update(&renamed, 1).is_err());
    assert!(m.update(&vec_param(&[1.0]), 1).is_err());
    assert!(m.update(&[], 1).is_err());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// LossValley through Swad (upstream reset schedule, checkpoint every 200 steps)

/// (a) Converges, then the valley dies. n_converge 3, n_tolerance 6, ratio 0.3; s_k = segment of checkpoint
/// k (s0 = [0-0], s_k = [200k−199, 200k]); losses by checkpoint:
///
/// k:    0    1    2    3    4    5    6    7    8    9    10   11   12   13   14
/// loss: 1.0  0.8  0.6  0.5  0.55 0.58 0.6  0.65 0.7  0.8  0.9  1.0  1.1  1.2  1.3
///
/// - k0, k1: fewer than 3 segments → nothing. k2: argmin([1.0,.8,.6]) = 2; k3: argmin([.8,.6,.5]) = 2;
///   k4: argmin([.6,.5,.55]) = 1 → not converged.
/// - k5: argmin([.5,.55,.58]) = 0 → converged, converge_step = s3.end = 600, final = seed(s3) with n = 0,
///   threshold = mean(.5,.55,.58)·1.3 = 0.706333…; smooth_Q = [s0..s5], Q = smooth_Q[:4] = [s0..s3]; scanning
///   back, s3 .5 and s2 .6 ≤ th, s1 .8 > th → start_idx = 2 → fold Q[3:] = [s3] (overwrites the seed):
///   final = {s3}, n 1, [401-600].
/// - k6, k7: smooth_Q[0] = s1, s2 end before 600 → nothing.
/// - k8: smooth_Q = [s3..s8], min .5 ≤ th → fold s3 again → {s3×2}. k9..k13: front s4..s8, minima .55, .58, .6,
///   .65, .7, all ≤ th → fold s4, s5, s6, s7, s8 → n 7, [401-1600].
/// - k14: smooth_Q = [s9..s14], min .8 > th → dead valley → Stop at step 2800; get_final_model returns the
///   final model as is.
#[test]
fn loss_valley_converges_then_dead_valley() -> Result<()> {
    let losses = [
        1.0, 0.8, 0.6, 0.5, 0.55, 0.58, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3,
    ];
    let (swad, stopped) = run_upstream(&losses, |k, swad| {
        let lv = swad.loss_valley();
        assert_eq!(lv.is_converged(), k >= 5, "k{k}");
        match k {
            5..=7 => {
                let f = lv.final_model().unwrap();
                assert_eq!(counts(f), counts_of(&[(3, 1)]), "k{k}");
                assert_eq!((f.start_step(), f.end_step()), (Some(401), Some(600)));
            }
            8 => assert_eq!(counts(lv.final_model().unwrap()), counts_of(&[(3, 2)])),
            _ => {}
        }
    })?;
    assert_eq!(stopped, Some(14));
    let lv = swad.loss_valley();
    assert!(lv.is_dead_valley());
    assert_eq!(lv.converge_step(), Some(600));
    assert!((lv.threshold().unwrap() - 1.63 / 3.0 * 1.3).abs() < 1e-12);
    let final_model = swad.finish_model()?.unwrap();
    assert_eq!(final_model.n_averaged(), 7);
    assert_eq!(
        counts(&final_model),
        counts_of(&[(3, 2), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1)])
    );
    assert_eq!(
        (final_model.start_step(), final_model.end_step()),
        (Some(401), Some(1600))
    );
    Ok(())
}

#[test]
fn stop_is_sticky_after_dead_valley() -> Result<()> {
    let losses = [
        1.0, 0.8, 0.6, 0.5, 0.55, 0.58, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3,
    ];
    let (mut swad, _) = run_upstream(&losses, |_, _| {})?;
    swad.after_step(2801, &one_hot(15))?;
    assert_eq!(swad.at_checkpoint(2801, 0.5, 0.1)?, Decision::Stop);
    assert_eq!(swad.finish_model()?.unwrap().n_averaged(), 7);
    Ok(())
}

/// (b) Never converges (each new checkpoint has a lower loss): the last segment is the SWAD model.
#[test]
fn loss_valley_never_converges_falls_back_to_last_segment() -> Result<()> {
    let losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5];
    let (swad, stopped) = run_upstream(&losses, |_, _| {})?;
    assert_eq!(stopped, None);
    assert!(!swad.loss_valley().is_converged());
    let m = swad.finish_model()?.unwrap();
    assert_eq!(values(&m), one_hot(5)[0].1.to_vec1::<f64>()?);
    assert_eq!(
        (m.n_averaged(), m.start_step(), m.end_step()),
        (200, Some(801), Some(1000))
    );

    // No checkpoint at all → no SWAD model.
    let mut swad = Swad::new(SwadConfig::new(SwadVariant::Upstream))?;
    swad.after_step(0, &one_hot(0))?;
    assert!(swad.finish()?.is_none());
    Ok(())
}

/// (c) Converges at the first possible checkpoint, before the tolerance window is full, and training ends
/// without a dead valley. Upstream, step by step (ratio 0.3):
///
/// k:    0    1    2    3    4    5    6    7
/// loss: 0.5  0.6  0.7  0.9  0.95 1.0  0.75 0.85
///
/// - k2: converge_Q = [s0,s1,s2], argmin 0 → converge_step = s0.end = 0, threshold = 0.6·1.3 = 0.78,
///   final = seed(s0), n 0. smooth_Q = [s0,s1,s2], Q = smooth_Q[:4] = all three; scanning back none exceeds
///   0.78 → start_idx = 0 → fold Q[1:] = s1 (overwrites the seed; start 1), s2 → {s1,s2}, n 2, [1-400].
/// - k3: smooth_Q = [s0..s3], s0.end = 0 is not < 0, min .5 ≤ .78 → fold s0 (end_step goes back to 0).
///   k4: [s0..s4] → fold s0 again. k5: [s0..s5] (now full) → fold s0 again → {s0×3,s1,s2}, n 5.
/// - k6: [s1..s6], min .6 → fold s1. k7: [s2..s7], min .7 → fold s2 → {s0×3,s1×2,s2×2}, n 7, end 400.
/// - get_final_model (not dead): popleft s2 → [s3..s7] min .75 ≤ .78 → fold s3 (step = 600); [s4..s7] → s4;
///   [s5..s7] → s5; [s6,s7] min .75 → s6; [s7] .85 > .78 → break.
///   Final: {s0×3, s1×2, s2×2, s3, s4, s5, s6}, n 11, start 1, end 1200.
#[test]
fn loss_valley_early_convergence_hand_traced() -> Result<()> {
    let losses = [0.5, 0.6, 0.7, 0.9, 0.95, 1.0, 0.75, 0.85];
    let (swad, stopped) = run_upstream(&losses, |k, swad| {
        let lv = swad.loss_valley();
        let expect: &[(usize, u64)] = match k {
            0 | 1 => {
                assert!(!lv.is_converged());
                return;
            }
            2 => &[(1, 1), (2, 1)],
            3 => &[(0, 1), (1, 1), (2, 1)],
            4 => &[(0, 2), (1, 1), (2, 1)],
            5 => &[(0, 3), (1, 1), (2, 1)],
            6 => &[(0, 3), (1, 2), (2, 1)],
            _ => &[(0, 3), (1, 2), (2, 2)],
        };
        let f = lv.final_model().unwrap();
        assert_eq!(counts(f), counts_of(expect), "k{k}");
        let end = match k {
            2 => 400,
            3..=5 => 0,
            6 => 200,
            _ => 400,
        };
        assert_eq!((f.start_step(), f.end_step()), (Some(1), Some(end)), "k{k}");
    })?;
    assert_eq!(stopped, None);
    assert_eq!(swad.loss_valley().converge_step(), Some(0));
    assert!((swad.loss_valley().threshold().unwrap() - 0.78).abs() < 1e-12);
    let m = swad.finish_model()?.unwrap();
    assert_eq!(m.n_averaged(), 11);
    assert_eq!(
        counts(&m),
        counts_of(&[(0, 3), (1, 2), (2, 2), (3, 1), (4, 1), (5, 1), (6, 1)])
    );
    assert_eq!((m.start_step(), m.end_step()), (Some(1), Some(1200)));
    Ok(())
}

/// `n_tolerance < n_converge`: at convergence the segments after the converged one in the converge window are
/// folded (`converge_Q[1 + i]` for i < n_converge − n_tolerance). n_converge 3, n_tolerance 1:
/// k2 converges on s0 (threshold 0.78) and folds s1, s2; k3: window [s3] .7 ≤ .78 → fold s3;
/// k4: [s4] .9 > .78 → dead.
#[test]
fn loss_valley_short_tolerance_window() -> Result<()> {
    let config = SwadConfig {
        variant: SwadVariant::Upstream,
        loss_valley: LossValleyConfig {
            n_converge: 3,
            n_tolerance: 1,
            tolerance_ratio: 0.3,
        },
    };
    let mut swad = Swad::new(config)?;
    let losses = [0.5, 0.6, 0.7, 0.7, 0.9];
    let mut stopped = None;
    for step in 0..=800 {
        swad.after_step(step, &one_hot(segment_of(step)))?;
        if step.is_multiple_of(FREQ)
            && swad.at_checkpoint(step, 0.5, losses[(step / FREQ) as usize])? == Decision::Stop
        {
            stopped = Some(step);
            break;
        }
    }
    assert_eq!(stopped, Some(800));
    let m = swad.finish_model()?.unwrap();
    assert_eq!(counts(&m), counts_of(&[(1, 1), (2, 1), (3, 1)]));
    assert_eq!((m.start_step(), m.end_step()), (Some(1), Some(600)));
    Ok(())
}

#[test]
fn checkpoint_requires_the_step_to_be_averaged() -> Result<()> {
    let mut swad = Swad::new(SwadConfig::new(SwadVariant::Upstream))?;
    assert!(swad.at_checkpoint(0, 0.5, 1.0).is_err());
    swad.after_step(0, &one_hot(0))?;
    assert!(swad.after_step(0, &one_hot(0)).is_err());
    assert!(swad.at_checkpoint(0, 0.5, f64::NAN).is_err());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Reset schedules over DomainBed's 5001 steps, checkpoint every 200

/// (start, end, n, mean parameter) of a segment at a checkpoint.
type SegmentRecord = (u64, u64, u64, f64);

/// Segment (start, end, n, mean parameter) seen at every checkpoint, with the parameter after step t = t and a
/// strictly decreasing loss (never converges, so never stops).
fn segments_over_5001_steps(variant: SwadVariant) -> Result<(Vec<SegmentRecord>, Swad)> {
    let mut swad = Swad::new(SwadConfig::new(variant))?;
    let mut seen = Vec::new();
    for step in 0..5001u64 {
        swad.after_step(step, &vec_param(&[step as f64]))?;
        if step.is_multiple_of(FREQ) {
            let s = swad.segment();
            seen.push((
                s.start_step().unwrap(),
                s.end_step().unwrap(),
                s.n_averaged(),
                values(s)[0],
            ));
            let decision = swad.at_checkpoint(step, 0.5, 10.0 - step as f64 / 1000.0)?;
            assert_eq!(decision, Decision::Continue);
            assert_eq!(
                swad.segment().is_empty(),
                variant.resets_after(step),
                "step {step}"
            );
        }
    }
    Ok((seen, swad))
}

#[test]
fn vl2v_fix_segments_reset_at_3000_4000_5000() -> Result<()> {
    let resets: Vec<u64> = (0..=5000)
        .step_by(200)
        .filter(|&s| SwadVariant::Vl2vFix.resets_after(s))
        .collect();
    assert_eq!(resets, [3000, 4000, 5000]);

    let (seen, swad) = segments_over_5001_steps(SwadVariant::Vl2vFix)?;
    assert_eq!(seen.len(), 26);
    for (i, &(start, end, n, mean)) in seen.iter().enumerate() {
        let c = 200 * i as u64;
        let want_start = match c {
            0..=3000 => 0,
            3001..=4000 => 3001,
            _ => 4001,
        };
        assert_eq!(
            (start, end, n),
            (want_start, c, c - want_start + 1),
            "checkpoint {c}"
        );
        assert!(
            (mean - (want_start + c) as f64 / 2.0).abs() < 1e-9,
            "checkpoint {c}: {mean}"
        );
    }
    // Never converged → the last segment, [4001-5000].
    let m = swad.finish_model()?.unwrap();
    assert_eq!(
        (m.start_step(), m.end_step(), m.n_averaged()),
        (Some(4001), Some(5000), 1000)
    );
    Ok(())
}

#[test]
fn upstream_segments_reset_every_checkpoint() -> Result<()> {
    let (seen, _) = segments_over_5001_steps(SwadVariant::Upstream)?;
    assert_eq!(seen.len(), 26);
    assert_eq!(seen[0], (0, 0, 1, 0.0));
    for (i, &(start, end, n, mean)) in seen.iter().enumerate().skip(1) {
        let c = 200 * i as u64;
        assert_eq!((start, end, n), (c - 199, c, 200), "checkpoint {c}");
        assert!(
            (mean - (c as f64 - 99.5)).abs() < 1e-9,
            "checkpoint {c}: {mean}"
        );
    }
    Ok(())
}
