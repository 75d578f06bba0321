//! `distill run --teacher online`: the official pipeline's teacher, which embeds a freshly drawn
//! augmentation of every sampled image at every step, instead of one of the K views `embed` cached. The
//! teacher is the cache's own CLIP image tower (found and checked against the manifest's sha256 as VL2V-SD
//! finds it), on the cache's preprocessing; the fresh view is an (image, view) pair like the cached ones,
//! with a view number drawn per (step, row), so the student replays exactly the augmentation the teacher
//! embedded and a resumed run draws the same views.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::algorithms::BackboneSetup;
use crate::data::cutmix::CutMix;
use crate::data::view_replay::ImageSource;
use crate::data::ViewTable;
use crate::training::trainable_backbone::{Backbone, Snapshot};

/// Images per teacher forward pass.
const CHUNK: usize = 64;

pub struct OnlineTeacher {
    images: Arc<ImageSource>,
    model: Snapshot,
}

impl OnlineTeacher {
    /// The teacher of `setup` (the CLIP image tower and images of `backbone_setup(Input::TeacherImages, …)`),
    /// frozen.
    pub fn new(setup: &BackboneSetup) -> Result<Self> {
        let backbone = Backbone::load(setup.arch.clone(), &setup.weights, &setup.device)
            .with_context(|| format!("loading the teacher {}", setup.weights.display()))?;
        Ok(OnlineTeacher {
            images: Arc::clone(&setup.images),
            model: backbone.snapshot()?,
        })
    }

    /// Side of the teacher's preprocessed images.
    pub fn size(&self) -> usize {
        self.images.size()
    }

    /// The teacher's unit embeddings of `picks` (row-major `[n, D]`) into `out`, of the images mixed by
    /// `mix` if given.
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
            let dim = rows.len() / n;
            vl2v::zeroshot::normalise_rows(&mut rows, dim);
            out.extend(rows);
        }
        Ok(())
    }
}

impl OnlineTeacher {
    /// The smallest cosine between this teacher's embeddings and the cache's over the first images' view 0
    /// and last cached view: about 1 when it is the teacher and preprocessing the cache was embedded with
    /// (f16 caches round to ~1e-4).
    pub fn agreement(&self, table: &ViewTable, images: usize) -> Result<f64> {
        let last = table.views() - 1;
        let picks: Vec<(usize, usize)> = (0..images.min(8))
            .flat_map(|i| [(i, 0), (i, last)])
            .collect();
        let (mut online, mut cached) = (Vec::new(), Vec::new());
        self.embed_into(&picks, None, &mut online)?;
        table.gather_into(&picks, &mut cached);
        let dim = table.dim();
        Ok(online
            .chunks_exact(dim)
            .zip(cached.chunks_exact(dim))
            .map(|(a, b)| {
                let dot: f64 = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| f64::from(*x) * f64::from(*y))
                    .sum();
                let nb: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
                dot / nb.max(1e-12)
            })
            .fold(1.0, f64::min))
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
