//! Evaluation (accuracy of `predict` on view-0 rows) and DomainBed's training-domain validation
//! selection.

use anyhow::Result;
pub use vl2v::train::accuracy_of;

use crate::algorithms::{Algorithm, EvalRows};

/// One evaluated split: its results.jsonl key (`env{i}_in_acc` / `env{i}_out_acc`), rows and labels.
pub struct EvalSet {
    pub key: String,
    /// Test-domain split (`in` or `out`), or `None` for a training domain's `out` split.
    pub test_split: Option<&'static str>,
    /// Image numbers (what the algorithms that load images evaluate on).
    pub images: Vec<usize>,
    pub student: Vec<f32>,
    pub teacher: Vec<f32>,
    pub labels: Vec<usize>,
}

/// One set's evaluation: accuracy, and for a training domain's out split also the mean cross-entropy of
/// the `predict` logits (the official evaluator's loss, averaged into `tr_outloss`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SetResult {
    pub acc: f64,
    pub loss: Option<f64>,
}

/// Mean cross-entropy of `logits` (`[n, C]`, row-major) against `labels`, in f64; 0 for no rows.
pub fn cross_entropy(logits: &[f32], labels: &[usize], classes: usize) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    row_cross_entropies(logits, labels, classes).sum::<f64>() / labels.len() as f64
}

/// Each row's cross-entropy of `logits` (`[n, C]`, row-major) against its label, in f64.
pub fn row_cross_entropies<'a>(
    logits: &'a [f32],
    labels: &'a [usize],
    classes: usize,
) -> impl Iterator<Item = f64> + 'a {
    logits.chunks_exact(classes).zip(labels).map(|(row, &y)| {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        max + sum.ln() - f64::from(row[y])
    })
}

/// Evaluates `algorithm` on every set, in order: training-domain out splits from the `predict` logits
/// (accuracy and loss), test-domain splits with `predict_labels` (accuracy only, like the "fast" evaluator).
pub fn evaluate(
    algorithm: &dyn Algorithm,
    sets: &[EvalSet],
    classes: usize,
) -> Result<Vec<SetResult>> {
    sets.iter()
        .map(|set| {
            let rows = EvalRows {
                images: &set.images,
                student: &set.student,
                teacher: &set.teacher,
            };
            if set.test_split.is_none() {
                let logits = algorithm.predict(&rows)?;
                let predicted: Vec<Option<usize>> = logits
                    .chunks_exact(classes)
                    .map(vl2v::zeroshot::argmax)
                    .collect();
                Ok(SetResult {
                    acc: accuracy_of(&predicted, &set.labels),
                    loss: Some(cross_entropy(&logits, &set.labels, classes)),
                })
            } else {
                let predicted = algorithm.predict_labels(&rows, classes)?;
                Ok(SetResult {
                    acc: accuracy_of(&predicted, &set.labels),
                    loss: None,
                })
            }
        })
        .collect()
}

/// Index of the first maximum of `train_out` (Python's `max`, DomainBed's IIDAccuracySelectionMethod);
/// `None` for no checkpoints. NaN never wins.
pub fn select(train_out: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in train_out.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) && !v.is_nan() {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_picks_the_first_maximum() {
        assert_eq!(select(&[0.5, 0.7, 0.6, 0.7, 0.1]), Some(1));
        assert_eq!(select(&[0.2]), Some(0));
        assert_eq!(select(&[f64::NAN, 0.1, 0.1]), Some(1));
        assert_eq!(select(&[]), None);
    }

    #[test]
    fn cross_entropy_is_the_mean_negative_log_softmax() {
        // Uniform logits over 4 classes: ln 4 per row.
        let ce = cross_entropy(&[1.0; 8], &[0, 3], 4);
        assert!((ce - 4f64.ln()).abs() < 1e-12);
        // [0, ln 3] with label 1: −ln(3/4).
        let ce = cross_entropy(&[0.0, 3f32.ln()], &[1], 2);
        assert!((ce + (0.75f64).ln()).abs() < 1e-6);
        assert_eq!(cross_entropy(&[], &[], 3), 0.0);
    }

    #[test]
    fn accuracy_counts_missing_predictions_as_wrong() {
        assert_eq!(
            accuracy_of(&[Some(0), Some(1), None], &[0, 1, 0]),
            2.0 / 3.0
        );
        assert_eq!(accuracy_of(&[Some(1)], &[0]), 0.0);
        assert_eq!(accuracy_of(&[], &[]), 0.0);
    }
}
