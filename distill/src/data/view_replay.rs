//! The images behind a cache, for the algorithms that train a backbone: each (image, view) is decoded and
//! preprocessed exactly as `embed` saw it, so the student trains on the very view whose teacher embedding
//! is cached (FKD's replay, Shen & Xing, ECCV 2022: augmentation parameters drawn once, re-applied when
//! training). View parameters depend only on (seed, path, view, image size), so they are recomputed
//! rather than read back from the rows.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use vl2v::image::{load_rgb, Preprocess};
use vl2v::views::ViewParams;

pub struct ImageSource {
    root: PathBuf,
    /// Relative paths, by image number (the teacher cache's order).
    paths: Vec<String>,
    /// The cache's view seed.
    seed: u64,
    preprocess: Preprocess,
}

impl ImageSource {
    /// `root`: the dataset folder the cache was embedded from; `preprocess`: the student's input.
    pub fn new(root: &Path, paths: &[String], seed: u64, preprocess: Preprocess) -> Result<Self> {
        if !root.is_dir() {
            bail!(
                "dataset folder {} (the cache's dataset root) does not exist; pass --data-root DIR \
                 if the images moved",
                root.display()
            );
        }
        preprocess
            .validate()
            .map_err(|e| anyhow::anyhow!("preprocessing: {e}"))?;
        if let Some(first) = paths.first() {
            let path = root.join(first);
            if !path.is_file() {
                bail!(
                    "{} is missing: is {} the folder the cache was embedded from? (--data-root)",
                    path.display(),
                    root.display()
                );
            }
        }
        Ok(ImageSource {
            root: root.to_path_buf(),
            paths: paths.to_vec(),
            seed,
            preprocess,
        })
    }

    /// Side of the preprocessed square images.
    pub fn size(&self) -> usize {
        self.preprocess.size as usize
    }

    /// The preprocessed `(image, view)` pairs as one `[n, 3, size, size]` buffer, decoded in parallel.
    pub fn pixels(&self, picks: &[(usize, usize)]) -> Result<Vec<f32>> {
        let per_image = 3 * self.size() * self.size();
        let mut out = vec![0.0f32; picks.len() * per_image];
        out.par_chunks_mut(per_image)
            .zip(picks.par_iter())
            .try_for_each(|(slot, &(image, view))| -> Result<()> {
                let rel = &self.paths[image];
                let path = self.root.join(rel);
                let img = load_rgb(&path).with_context(|| {
                    format!("cannot read {} (embedded into the cache)", path.display())
                })?;
                let view = u16::try_from(view).context("view number out of range")?;
                let params = ViewParams::sample(self.seed, rel, view, img.width(), img.height());
                self.preprocess.apply_into(&img, &params, slot);
                Ok(())
            })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_the_views_embed_computes() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(37, 23, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 3) as u8])
        });
        std::fs::create_dir_all(dir.path().join("d/c")).unwrap();
        img.save(dir.path().join("d/c/a.png")).unwrap();
        let pre = Preprocess::vl2v(16);
        let source = ImageSource::new(dir.path(), &["d/c/a.png".into()], 9, pre.clone()).unwrap();
        let got = source.pixels(&[(0, 2), (0, 0)]).unwrap();
        assert_eq!(got.len(), 2 * 3 * 16 * 16);
        let view2 = ViewParams::sample(9, "d/c/a.png", 2, 37, 23);
        assert!(!view2.is_identity());
        assert_eq!(got[..768], pre.apply(&img, &view2)[..]);
        assert_eq!(got[768..], pre.apply(&img, &ViewParams::identity())[..]);
        assert_ne!(got[..768], got[768..]);

        let err = ImageSource::new(&dir.path().join("nope"), &[], 0, pre.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("nope") && err.contains("--data-root"), "{err}");
        let err = ImageSource::new(dir.path(), &["d/c/missing.png".into()], 0, pre)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing.png"), "{err}");
    }
}
