//! Evaluation (accuracy of `predict` on view-0 rows) and DomainBed's training-domain validation
//! selection.

use anyhow::{ensure, Result};
pub use vl2v::train::accuracy_of;

use crate::algorithms::{Algorithm, EvalRows, PredictsFrom};
use crate::data::ViewTable;

/// Images per evaluation chunk at most, for the algorithms that predict from cached features: the view-0
/// features of one chunk are gathered (widened to f32) from the mapped view tables at a time, so evaluation
/// holds a chunk, never a split, on the heap. A split of `n` images is cut into `⌈n / EVAL_CHUNK⌉` chunks
/// of equal size (the last one a few rows shorter at most), so every chunk of a split that is cut has at
/// least about `EVAL_CHUNK / 2` rows. The products then take the paths they take over the whole split
/// (the GEMM blocks the inner dimension, which orders each row's sums, by that dimension alone once an outer
/// one exceeds 64 rows, and has a separate kernel for a single row), and the zero-shot head's blocks of
/// 4,096 rows stay as they were, so a chunk predicts bit for bit what the whole split would.
pub const EVAL_CHUNK: usize = 16384;

/// One evaluated split: its results.jsonl key (`env{i}_in_acc` / `env{i}_out_acc`), images and labels.
/// Its features are the view tables' view-0 rows of `images`, read at each evaluation.
pub struct EvalSet {
    pub key: String,
    /// Test-domain split (`in` or `out`), or `None` for a training domain's `out` split.
    pub test_split: Option<&'static str>,
    /// Image numbers.
    pub images: Vec<usize>,
    pub labels: Vec<usize>,
}

/// The view tables evaluation gathers view-0 features from.
#[derive(Clone, Copy)]
pub struct EvalTables<'a> {
    pub student: Option<&'a ViewTable>,
    pub teacher: &'a ViewTable,
}
/// One set's evaluation: accuracy, and for a training domain's out split also the mean cross-entropy of
/// the `predict` logits (the official evaluator's loss, averaged into `tr_outloss`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SetResult {
    pub acc: f64,
    pub loss: Option<f64>,
}

/// Mean cross-entropy of `logits` (`[n, C]`, row-major) against `labels`, in f64; 0 for no rows.
#[cfg(test)]
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
    tables: EvalTables,
    classes: usize,
) -> Result<Vec<SetResult>> {
    evaluate_in_chunks(algorithm, sets, tables, classes, EVAL_CHUNK)
}

/// [`evaluate`] with `chunk` images per gather (tests).
pub fn evaluate_in_chunks(
    algorithm: &dyn Algorithm,
    sets: &[EvalSet],
    tables: EvalTables,
    classes: usize,
    chunk: usize,
) -> Result<Vec<SetResult>> {
    let from = algorithm.predicts_from();
    let table = match from {
        PredictsFrom::StudentFeatures => Some(tables.student.ok_or_else(|| {
            anyhow::anyhow!(
                "the algorithm predicts from student features, but the run has no student cache"
            )
        })?),
        PredictsFrom::TeacherFeatures => Some(tables.teacher),
        PredictsFrom::Images => None,
    };
    let mut features = Vec::new();
    sets.iter()
        .map(|set| {
            let n = set.images.len();
            // Equal chunks; the algorithms that load images batch them themselves: one call per split.
            let chunk = match table {
                Some(_) => n.div_ceil(n.div_ceil(chunk.max(1)).max(1)).max(1),
                None => n.max(1),
            };
            let mut predicted = Vec::with_capacity(n);
            // Each row's cross-entropy, summed at the end as one call over the split sums them.
            let mut losses: Vec<f64> = Vec::new();
            for (k, images) in set.images.chunks(chunk).enumerate() {
                if let Some(table) = table {
                    table.gather_view0_into(images, &mut features);
                }
                let rows = EvalRows {
                    images,
                    student: if from == PredictsFrom::StudentFeatures {
                        &features
                    } else {
                        &[]
                    },
                    teacher: if from == PredictsFrom::TeacherFeatures {
                        &features
                    } else {
                        &[]
                    },
                };
                let labels = &set.labels[k * chunk..][..images.len()];
                if set.test_split.is_none() {
                    let logits = algorithm.predict(&rows)?;
                    ensure!(
                        logits.len() == images.len() * classes,
                        "{}: predict gave {} logits for {} images of {classes} classes",
                        set.key,
                        logits.len(),
                        images.len()
                    );
                    losses.extend(row_cross_entropies(&logits, labels, classes));
                    predicted.extend(logits.chunks_exact(classes).map(vl2v::zeroshot::argmax));
                } else {
                    let labels = algorithm.predict_labels(&rows, classes)?;
                    ensure!(
                        labels.len() == images.len(),
                        "{}: predict_labels gave {} labels for {} images",
                        set.key,
                        labels.len(),
                        images.len()
                    );
                    predicted.extend(labels);
                }
            }
            let acc = accuracy_of(&predicted, &set.labels);
            Ok(if set.test_split.is_none() {
                let n = set.labels.len();
                let loss = if n == 0 {
                    0.0
                } else {
                    losses.into_iter().sum::<f64>() / n as f64
                };
                SetResult {
                    acc,
                    loss: Some(loss),
                }
            } else {
                SetResult { acc, loss: None }
            })
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
mod cache_tests;

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
