//! Class prototypes built per test image from its nearest neighbours (rows E5 and E6 of the paper's
//! robustness table): for each class, the mean of the `k` gallery images of that class most similar
//! (cosine) to the test image; the test image gets the class whose mean is most similar to it (cosine).
//!
//! Similarities come from blocked matrix products (candle, CPU) against the label-sorted gallery, so each
//! class is one contiguous range of a similarity row and its top `k` is a single pass with a small sorted
//! buffer. cos(q, Σ n_j) = Σ cos(q, n_j) / ‖Σ n_j‖, and ‖Σ n_j‖² = Σ_jl n_j·n_l is read from the gallery's
//! within-class Gram matrices (precomputed when they fit [`GRAM_BUDGET`], else the sum is formed).

use std::ops::Range;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use vl2v::zeroshot::{dot_products_with, normalise_rows};

/// Similarity values held at once (one block of query rows × the whole gallery): 128 MiB of f32.
const SIMILARITY_BUDGET: usize = 1 << 25;
/// Largest total size of the within-class Gram matrices (Σ n_c² values): 256 MiB of f32.
const GRAM_BUDGET: usize = 1 << 26;

/// The images neighbours are drawn from, normalised and sorted by label.
pub struct Gallery {
    dim: usize,
    /// Unit rows, sorted by (label, original index).
    sorted: Vec<f32>,
    /// `sorted` as a `[D, N]` tensor (a transposed view).
    sorted_t: Tensor,
    /// Rows of each class in `sorted`.
    classes: Vec<Range<usize>>,
    /// Original row index → row in `sorted`.
    position: Vec<usize>,
    /// Per class, the row-major `[n_c, n_c]` dot products of its rows (if within [`GRAM_BUDGET`]).
    gram: Option<Vec<Vec<f32>>>,
}

impl Gallery {
    /// `embeddings`: row-major `[labels.len(), dim]`; labels must be `< classes`.
    pub fn new(embeddings: &[f32], labels: &[usize], classes: usize, dim: usize) -> Result<Self> {
        Self::with_gram_budget(embeddings, labels, classes, dim, GRAM_BUDGET)
    }

    fn with_gram_budget(
        embeddings: &[f32],
        labels: &[usize],
        classes: usize,
        dim: usize,
        gram_budget: usize,
    ) -> Result<Self> {
        ensure!(dim > 0, "gallery: embedding dimension must be positive");
        ensure!(
            embeddings.len() == labels.len() * dim,
            "gallery: {} values for {} rows of {dim}",
            embeddings.len(),
            labels.len()
        );
        ensure!(
            labels.iter().all(|&l| l < classes),
            "gallery: a label is not below {classes}"
        );
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| labels[i]);
        let mut position = vec![0; labels.len()];
        let mut sorted = Vec::with_capacity(embeddings.len());
        for (at, &i) in order.iter().enumerate() {
            position[i] = at;
            sorted.extend_from_slice(&embeddings[i * dim..(i + 1) * dim]);
        }
        normalise_rows(&mut sorted, dim);
        let mut ranges = Vec::with_capacity(classes);
        let mut start = 0;
        for c in 0..classes {
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|&&i| labels[i] == c)
                    .count();
            ranges.push(start..end);
            start = end;
        }
        let sorted_t = Tensor::from_slice(&sorted, (labels.len(), dim), &Device::Cpu)?.t()?;
        let gram_size: usize = ranges.iter().map(|r| r.len() * r.len()).sum();
        let gram = if gram_size <= gram_budget {
            let block = |r: &Range<usize>| {
                let rows = &sorted[r.start * dim..r.end * dim];
                dot_products_with(rows, &sorted_t.narrow(1, r.start, r.len())?, dim)
            };
            Some(ranges.iter().map(block).collect::<Result<Vec<_>>>()?)
        } else {
            None
        };
        Ok(Gallery {
            dim,
            sorted,
            sorted_t,
            classes: ranges,
            position,
            gram,
        })
    }

    pub fn len(&self) -> usize {
        self.position.len()
    }

    fn row(&self, at: usize) -> &[f32] {
        &self.sorted[at * self.dim..(at + 1) * self.dim]
    }

    /// The predicted class of every query (row-major `[N, D]`, normalised here) with `k` neighbours per
    /// class. With `queries_are_gallery`, query `i` is gallery row `i` and is never its own neighbour.
    /// A class with fewer than `k` candidates uses all of them and one with none is never predicted;
    /// `None` means no class had a candidate. Ties go to the first class.
    pub fn predict(
        &self,
        queries: &[f32],
        k: usize,
        queries_are_gallery: bool,
    ) -> Result<Vec<Option<usize>>> {
        let dim = self.dim;
        ensure!(k > 0, "k must be at least 1");
        ensure!(
            queries.len().is_multiple_of(dim),
            "{} query values are not rows of {dim}",
            queries.len()
        );
        let n = queries.len() / dim;
        ensure!(
            !queries_are_gallery || n == self.len(),
            "queries_are_gallery needs as many queries ({n}) as gallery rows ({})",
            self.len()
        );
        let mut predictions = Vec::with_capacity(n);
        if self.len() == 0 {
            predictions.resize(n, None);
            return Ok(predictions);
        }
        let block_rows = (SIMILARITY_BUDGET / self.len()).clamp(1, n.max(1));
        for (b, block) in queries.chunks(block_rows * dim).enumerate() {
            let mut block = block.to_vec();
            normalise_rows(&mut block, dim);
            let sims = dot_products_with(&block, &self.sorted_t, dim)?;
            let first = b * block_rows;
            let block_predictions: Vec<Option<usize>> = sims
                .par_chunks_exact(self.len())
                .enumerate()
                .map_init(
                    || Scratch {
                        top: Vec::with_capacity(k + 1),
                        sum: vec![0.0; dim],
                    },
                    |scratch, (r, row)| {
                        let skip = queries_are_gallery.then(|| self.position[first + r]);
                        self.classify(row, k, skip, scratch)
                    },
                )
                .collect();
            predictions.extend(block_predictions);
        }
        Ok(predictions)
    }

    /// The class whose top-`k` mean is most similar to the query whose similarity row (sorted order) is
    /// `sims`, never using row `skip`.
    fn classify(
        &self,
        sims: &[f32],
        k: usize,
        skip: Option<usize>,
        scratch: &mut Scratch,
    ) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for (class, range) in self.classes.iter().enumerate() {
            let top = &mut scratch.top;
            top.clear();
            for at in range.clone() {
                if Some(at) == skip {
                    continue;
                }
                let s = sims[at];
                if top.len() == k {
                    if s <= top[k - 1].0 || s.is_nan() {
                        continue;
                    }
                    top.pop();
                }
                let slot = top.iter().position(|&(v, _)| s > v).unwrap_or(top.len());
                top.insert(slot, (s, at));
            }
            if top.is_empty() {
                continue;
            }
            let dot: f32 = top.iter().map(|&(s, _)| s).sum();
            let norm = match &self.gram {
                Some(gram) => {
                    let (gram, n, start) = (&gram[class], range.len(), range.start);
                    let mut squared = 0.0f32;
                    for &(_, a) in top.iter() {
                        let row = &gram[(a - start) * n..(a - start + 1) * n];
                        squared += top.iter().map(|&(_, b)| row[b - start]).sum::<f32>();
                    }
                    squared.max(0.0).sqrt()
                }
                None => {
                    let sum = &mut scratch.sum;
                    sum.fill(0.0);
                    for &(_, at) in top.iter() {
                        sum.iter_mut().zip(self.row(at)).for_each(|(a, x)| *a += x);
                    }
                    sum.iter().map(|x| x * x).sum::<f32>().sqrt()
                }
            };
            let score = if norm > 0.0 { dot / norm } else { 0.0 };
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((class, score));
            }
        }
        best.map(|(class, _)| class)
    }
}

struct Scratch {
    top: Vec<(f32, usize)>,
    sum: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same rule written plainly: all similarities, full sort, explicit mean.
    fn reference(
        queries: &[f32],
        gallery: &[f32],
        labels: &[usize],
        classes: usize,
        dim: usize,
        k: usize,
        self_excluded: bool,
    ) -> Vec<Option<usize>> {
        let unit = |v: &[f32]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let g: Vec<Vec<f32>> = gallery.chunks(dim).map(unit).collect();
        queries
            .chunks(dim)
            .enumerate()
            .map(|(qi, q)| {
                let q = unit(q);
                let mut best: Option<(usize, f32)> = None;
                for c in 0..classes {
                    let mut cand: Vec<(f32, usize)> = (0..g.len())
                        .filter(|&j| labels[j] == c && !(self_excluded && j == qi))
                        .map(|j| (dot(&q, &g[j]), j))
                        .collect();
                    if cand.is_empty() {
                        continue;
                    }
                    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    cand.truncate(k);
                    let mut mean = vec![0.0f32; dim];
                    for &(_, j) in &cand {
                        mean.iter_mut().zip(&g[j]).for_each(|(m, x)| *m += x);
                    }
                    let score = dot(&q, &unit(&mean));
                    if best.is_none_or(|(_, b)| score > b) {
                        best = Some((c, score));
                    }
                }
                best.map(|(c, _)| c)
            })
            .collect()
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn agrees_with_a_plain_implementation() {
        let (dim, classes, k) = (6, 4, 3);
        let gallery = pseudo_random(40 * dim, 1);
        let labels: Vec<usize> = (0..40).map(|i| (i * 7) % classes).collect();
        let queries = pseudo_random(25 * dim, 2);
        let want = reference(&queries, &gallery, &labels, classes, dim, k, false);
        let want_self = reference(&gallery, &gallery, &labels, classes, dim, k, true);
        // With the Gram matrices and, budget 0, with explicit sums.
        for budget in [GRAM_BUDGET, 0] {
            let g = Gallery::with_gram_budget(&gallery, &labels, classes, dim, budget).unwrap();
            assert_eq!(g.gram.is_some(), budget > 0);
            assert_eq!(g.predict(&queries, k, false).unwrap(), want);
            assert_eq!(g.predict(&gallery, k, true).unwrap(), want_self);
        }
    }

    #[test]
    fn own_image_is_excluded_and_empty_classes_are_never_predicted() {
        // Class 0: one image identical to the query; class 1: two images near it; class 2: none.
        let gallery = [1.0, 0.0, 0.8, 0.6, 0.6, 0.8];
        let labels = [0, 1, 1];
        let g = Gallery::new(&gallery, &labels, 3, 2).unwrap();
        assert_eq!(g.predict(&[2.0, 0.0], 10, false).unwrap(), [Some(0)]);
        // As its own query, image 0 has no class-0 neighbour left: class 1 wins.
        assert_eq!(
            g.predict(&gallery, 10, true).unwrap(),
            [Some(1), Some(1), Some(1)]
        );
        let empty = Gallery::new(&[], &[], 3, 2).unwrap();
        assert_eq!(empty.predict(&[1.0, 0.0], 10, false).unwrap(), [None]);
    }
}
