//! The zero-shot head of the official VL2V-ADiP code (`get_zeroshot_classifier` + `ClassificationHead` in
//! `domainbed/algorithms/distill_clip.py`):
//!
//! - class prototype = normalise(mean over templates of normalise(text embedding of class × template));
//! - weight = logit_scale · prototype (`[C, D]`), bias = 0;
//! - logits = weight · normalise(image), i.e. `logit_scale · cos(image, prototype)`.
//!
//! Normalising a zero vector leaves it zero (the official code would produce NaN), so a zero prototype or a
//! zero image gives logits of 0. Also: the cosine-similarity matrix product used for neighbour search.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// Rows of an image batch multiplied at once in [`ZeroShotHead::logits`].
const LOGIT_BLOCK_ROWS: usize = 4096;

/// L2-normalises `v` in place; a zero vector stays zero.
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// L2-normalises every `dim`-long row of a row-major matrix in place.
pub fn normalise_rows(matrix: &mut [f32], dim: usize) {
    matrix.chunks_exact_mut(dim).for_each(normalise);
}

/// normalise(mean(normalise(v) for v in vectors)), the official template averaging; zero if `vectors`
/// is empty.
pub fn mean_direction<'a>(vectors: impl IntoIterator<Item = &'a [f32]>, dim: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; dim];
    let mut unit = vec![0.0f32; dim];
    let mut n = 0usize;
    for v in vectors {
        unit.copy_from_slice(v);
        normalise(&mut unit);
        sum.iter_mut().zip(&unit).for_each(|(s, u)| *s += u);
        n += 1;
    }
    if n > 0 {
        sum.iter_mut().for_each(|s| *s /= n as f32);
        normalise(&mut sum);
    }
    sum
}

/// `a · b_t` for row-major `a: [na, dim]` and a `[dim, nb]` CPU tensor `b_t` (e.g. the transposed view of a
/// gallery kept across calls), as a row-major `[na, nb]` matrix: cosine similarities when the rows are unit
/// vectors.
pub fn dot_products_with(a: &[f32], b_t: &Tensor, dim: usize) -> Result<Vec<f32>> {
    ensure!(
        dim > 0 && a.len().is_multiple_of(dim) && b_t.dim(0)? == dim,
        "dot_products_with: {} values are not rows of {dim} or the right side is not [{dim}, n]",
        a.len()
    );
    let a = Tensor::from_slice(a, (a.len() / dim, dim), &Device::Cpu)?;
    Ok(a.matmul(b_t)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Index of the largest value (the first one on ties); `None` if every value is NaN or −∞ or `row` is
/// empty.
pub fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v > f32::NEG_INFINITY && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// A linear head with zero bias whose input is L2-normalised: `logits = logit_scale · cos(x, prototype)`.
#[derive(Clone, Debug)]
pub struct ZeroShotHead {
    /// `logit_scale · prototype`, row-major `[C, D]`.
    weight: Vec<f32>,
    classes: usize,
    dim: usize,
}

impl ZeroShotHead {
    /// The official zero-shot classifier from text embeddings: `per_template[t]` is the row-major `[C, D]`
    /// matrix of template `t` (row = label); each row is normalised, averaged over templates and
    /// renormalised.
    pub fn from_templates(per_template: &[&[f32]], dim: usize, logit_scale: f32) -> Result<Self> {
        ensure!(
            !per_template.is_empty(),
            "a zero-shot head needs at least one template"
        );
        let classes = per_template[0].len() / dim;
        ensure!(
            per_template.iter().all(|m| m.len() == classes * dim),
            "every template needs one {dim}-d embedding per class ({classes} classes)"
        );
        let mut prototypes = Vec::with_capacity(classes * dim);
        for c in 0..classes {
            let rows = per_template.iter().map(|m| &m[c * dim..(c + 1) * dim]);
            prototypes.extend(mean_direction(rows, dim));
        }
        Self::from_prototypes(prototypes, dim, logit_scale)
    }

    /// A head from given class prototypes (row-major `[C, D]`), normalised here.
    pub fn from_prototypes(mut prototypes: Vec<f32>, dim: usize, logit_scale: f32) -> Result<Self> {
        ensure!(
            dim > 0 && prototypes.len().is_multiple_of(dim),
            "{} prototype values are not rows of {dim}",
            prototypes.len()
        );
        normalise_rows(&mut prototypes, dim);
        let classes = prototypes.len() / dim;
        prototypes.iter_mut().for_each(|w| *w *= logit_scale);
        Ok(ZeroShotHead {
            weight: prototypes,
            classes,
            dim,
        })
    }

    /// `logit_scale · prototype`, row-major `[C, D]` (the official head's weight).
    #[allow(dead_code)] // API for the training code (the frozen head of Distill)
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// Logits of row-major `images: [N, D]` (normalised here, in blocks), row-major `[N, C]`.
    pub fn logits(&self, images: &[f32]) -> Result<Vec<f32>> {
        ensure!(
            images.len().is_multiple_of(self.dim),
            "{} image values are not rows of {}",
            images.len(),
            self.dim
        );
        let weight = Tensor::from_slice(&self.weight, (self.classes, self.dim), &Device::Cpu)?;
        let weight_t = weight.t()?;
        let mut logits = Vec::with_capacity(images.len() / self.dim * self.classes);
        for block in images.chunks(LOGIT_BLOCK_ROWS * self.dim) {
            let mut block = block.to_vec();
            normalise_rows(&mut block, self.dim);
            logits.extend(dot_products_with(&block, &weight_t, self.dim)?);
        }
        Ok(logits)
    }

    /// The predicted class of every image (first on ties; `None` only for NaN logits).
    pub fn predict(&self, images: &[f32]) -> Result<Vec<Option<usize>>> {
        let logits = self.logits(images)?;
        Ok(logits.chunks_exact(self.classes).map(argmax).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 classes in 4-d, two templates, values chosen so that every step is exact in f32.
    fn templates() -> (Vec<f32>, Vec<f32>) {
        #[rustfmt::skip]
        let t1 = vec![
            0.5, 0.5, 0.5, 0.5,  // class 0
            1.0, 1.0, 1.0, 1.0,  // class 1: not unit (norm 2), normalised before averaging
            0.5, 0.5, 0.5, 0.5,  // class 2
        ];
        #[rustfmt::skip]
        let t2 = vec![
            0.5, -0.5, -0.5, -0.5,
            -0.5, 0.5, -0.5, -0.5,
            -1.5, -1.5, 1.5, -1.5, // norm 3
        ];
        // Means of the unit rows: (0.5,0,0,0), (0,0.5,0,0), (0,0,0.5,0) → prototypes e1, e2, e3.
        (t1, t2)
    }

    #[test]
    fn prototypes_average_normalised_templates_and_renormalise() {
        let (t1, t2) = templates();
        let head = ZeroShotHead::from_templates(&[&t1, &t2], 4, 100.0).unwrap();
        #[rustfmt::skip]
        assert_eq!(head.weight(), [
            100.0, 0.0, 0.0, 0.0,
            0.0, 100.0, 0.0, 0.0,
            0.0, 0.0, 100.0, 0.0,
        ]);
        #[rustfmt::skip]
        let images = [
            3.0, 0.0, 0.0, 0.0,    // → e1
            0.5, -0.5, 0.5, 0.5,   // unit already
            -2.0, 2.0, 2.0, 2.0,   // norm 4
            0.0, 0.0, 0.0, 7.0,    // orthogonal to every prototype
        ];
        let logits = head.logits(&images).unwrap();
        #[rustfmt::skip]
        assert_eq!(logits, [
            100.0, 0.0, 0.0,
            50.0, -50.0, 50.0,
            -50.0, 50.0, 50.0,
            0.0, 0.0, 0.0,
        ]);
        assert_eq!(
            head.predict(&images).unwrap(),
            [Some(0), Some(0), Some(1), Some(0)],
            "ties go to the first class"
        );
    }

    #[test]
    fn one_template_is_just_normalised_and_scale_is_applied() {
        let (t1, _) = templates();
        let head = ZeroShotHead::from_templates(&[&t1], 4, 2.0).unwrap();
        assert_eq!(head.weight(), [1.0; 12]);
        assert_eq!(head.logits(&[0.0, 0.0, 0.0, -5.0]).unwrap(), [-1.0; 3]);
    }

    #[test]
    fn zero_vectors_stay_zero_and_argmax_skips_nan() {
        let mut v = [0.0f32; 3];
        normalise(&mut v);
        assert_eq!(v, [0.0; 3]);
        assert_eq!(mean_direction(std::iter::empty(), 2), [0.0, 0.0]);
        assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, 3.0]), Some(2));
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN]), None);
    }

    #[test]
    fn dot_products_match_a_plain_loop() {
        let a: Vec<f32> = (0..15).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..10).map(|i| (i as f32 * 0.11).cos()).collect();
        let b_t = Tensor::from_slice(&b, (2, 5), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        let got = dot_products_with(&a, &b_t, 5).unwrap();
        assert_eq!(got.len(), 6);
        for i in 0..3 {
            for j in 0..2 {
                let want: f32 = (0..5).map(|k| a[i * 5 + k] * b[j * 5 + k]).sum();
                assert!((got[i * 2 + j] - want).abs() < 1e-5);
            }
        }
    }
}
