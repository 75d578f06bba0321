//! Evaluation (accuracy of `predict` on view-0 rows) and DomainBed's training-domain validation
//! selection.

use anyhow::Result;

use crate::algorithms::{Algorithm, EvalRows};

/// One evaluated split: its results.jsonl key (`env{i}_in_acc` / `env{i}_out_acc`), rows and labels.
pub struct EvalSet {
    pub key: String,
    /// Test-domain split (`in` or `out`), or `None` for a training domain's `out` split.
    pub test_split: Option<&'static str>,
    pub student: Vec<f32>,
    pub teacher: Vec<f32>,
    pub labels: Vec<usize>,
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

/// Accuracies of `algorithm` on every set, in order.
pub fn evaluate(algorithm: &dyn Algorithm, sets: &[EvalSet], classes: usize) -> Result<Vec<f64>> {
    sets.iter()
        .map(|set| {
            let predicted = algorithm.predict_labels(
                &EvalRows {
                    student: &set.student,
                    teacher: &set.teacher,
                },
                classes,
            )?;
            Ok(accuracy_of(&predicted, &set.labels))
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
    fn accuracy_counts_missing_predictions_as_wrong() {
        assert_eq!(
            accuracy_of(&[Some(0), Some(1), None], &[0, 1, 0]),
            2.0 / 3.0
        );
        assert_eq!(accuracy_of(&[Some(1)], &[0]), 0.0);
        assert_eq!(accuracy_of(&[], &[]), 0.0);
    }
}
