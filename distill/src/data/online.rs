//! `distill run --teacher online`: the official pipeline, whose teacher embeds a freshly drawn
//! augmentation of every sampled image at every step, instead of one of the K views `embed` cached. The
//! teacher is the cache's own CLIP image tower (found and checked against the manifest's sha256 as VL2V-SD
//! finds it), on the cache's preprocessing; for the algorithms that train on cached student features
//! (adip-align, erm-lp) the frozen student encodes the same fresh views too, as the student cache's
//! encoder. The fresh view is an (image, view) pair like the cached ones, with a view number drawn per
//! (step, row), so the student replays exactly the augmentation the teacher embedded and a resumed run
//! draws the same views.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::algorithms::BackboneSetup;
use crate::data::cutmix::CutMix;
use crate::data::view_replay::ImageSource;
use crate::data::ViewTable;
use crate::training::trainable_backbone::{Backbone, Snapshot};

/// Images per teacher forward pass.
const CHUNK: usize = 64;

/// The encoders of `--teacher online`.
pub struct Online {
    pub teacher: OnlineEncoder,
    /// The frozen student, for the algorithms that train on its cached features.
    pub student: Option<OnlineEncoder>,
}

/// A frozen encoder of a cache, on fresh views.
pub struct OnlineEncoder {
    images: Arc<ImageSource>,
    model: Snapshot,
    /// Rows L2-normalised, as the cache stores them (the teacher's) or raw (a student's features).
    normalize: bool,
}

impl OnlineEncoder {
    /// The model and images of `setup` (`backbone_setup` of the cache's encoder), frozen.
    pub fn new(setup: &BackboneSetup, normalize: bool) -> Result<Self> {
        let backbone = Backbone::load(setup.arch.clone(), &setup.weights, &setup.device)
            .with_context(|| format!("loading {}", setup.weights.display()))?;
        Ok(OnlineEncoder {
            images: Arc::clone(&setup.images),
            model: backbone.snapshot()?,
            normalize,
        })
    }

    /// Side of the encoder's preprocessed images.
    pub fn size(&self) -> usize {
        self.images.size()
    }

    /// The embeddings of `picks` (row-major `[n, D]`) into `out`, of the images mixed by `mix` if given.
    pub fn embed_into(
        &self,
        picks: &[(usize, usize)],
        mix: Option<&CutMix>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.clear();
        let size = self.images.size();
        let mut pixels = self.images.pixels(picks)?;
        if let Some(mix) = mix {
            mix.apply(&mut pixels, size);
        }
        let image = 3 * size * size;
        for chunk in pixels.chunks(CHUNK * image) {
            let n = chunk.len() / image;
            let features = self.model.features(chunk, n, size)?;
            let mut rows = features.flatten_all()?.to_vec1::<f32>()?;
            if self.normalize {
                let dim = rows.len() / n;
                vl2v::zeroshot::normalise_rows(&mut rows, dim);
            }
            out.extend(rows);
        }
        Ok(())
    }
}

impl OnlineEncoder {
    /// How this encoder's embeddings agree with the cache's over the first images' view 0 and last cached
    /// view: the smallest cosine and the largest relative difference of lengths, about 1 and 0 when it is
    /// the model and preprocessing the cache was embedded with (f16 caches round to ~1e-4).
    pub fn agreement(&self, table: &ViewTable, images: usize) -> Result<(f64, f64)> {
        let last = table.views() - 1;
        let picks: Vec<(usize, usize)> = (0..images.min(8))
            .flat_map(|i| [(i, 0), (i, last)])
            .collect();
        let (mut online, mut cached) = (Vec::new(), Vec::new());
        self.embed_into(&picks, None, &mut online)?;
        table.gather_into(&picks, &mut cached);
        let dim = table.dim();
        let norm = |v: &[f32]| v.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
        Ok(online
            .chunks_exact(dim)
            .zip(cached.chunks_exact(dim))
            .map(|(a, b)| {
                let dot: f64 = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| f64::from(*x) * f64::from(*y))
                    .sum();
                let (na, nb) = (norm(a), norm(b));
                (dot / (na * nb).max(1e-12), (na / nb.max(1e-12) - 1.0).abs())
            })
            .fold((1.0, 0.0), |(c, l), (ci, li)| (c.min(ci), l.max(li))))
    }
}

/// Gives each pick of step `step` a fresh view: a view number (1 to 65535) drawn from (seed, step, row), so
/// that view parameters — a function of (seed, path, view) — are a new augmentation of the image. (A draw
/// may repeat a cached view's number; for the image it is one more augmentation among 65535.)
pub fn fresh_views(seed: u64, step: usize, picks: &mut [(usize, usize)]) {
    for (row, pick) in picks.iter_mut().enumerate() {
        let h = vl2v::rng::mix64(
            vl2v::rng::mix64(seed ^ 0x6f6e_6c69_6e65) // "online"
                .wrapping_add(step as u64)
                .rotate_left(17)
                ^ row as u64,
        );
        pick.1 = 1 + (h % u64::from(u16::MAX)) as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_views_are_augmented_reproducible_and_vary() {
        let mut a = vec![(3usize, 0usize); 64];
        fresh_views(7, 10, &mut a);
        let mut b = vec![(3usize, 0usize); 64];
        fresh_views(7, 10, &mut b);
        assert_eq!(a, b, "the same (seed, step) draws the same views");
        assert!(a.iter().all(|&(i, v)| i == 3 && (1..=65535).contains(&v)));
        let distinct: std::collections::HashSet<usize> = a.iter().map(|p| p.1).collect();
        assert!(distinct.len() > 60, "rows draw different views");
        let mut c = vec![(3usize, 0usize); 64];
        fresh_views(7, 11, &mut c);
        assert_ne!(a, c, "the next step draws new views");
    }
}
