//! A captioned image corpus written by `synthdg corpus` (`<style>/<class>/<i>.png` plus `captions.jsonl`),
//! decoded into memory once, with the minibatch augmentation the pretraining uses: DomainBed's random
//! resized crop and flip, no colour jitter (captions name colours).

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use rayon::prelude::*;
use serde::Deserialize;
use vl2v::image::{load_rgb, Preprocess};
use vl2v::views::ViewParams;

use vl2v::rng::SplitMix64;

#[derive(Debug, Deserialize)]
struct Line {
    path: String,
    caption: String,
    class: String,
    style: String,
}

pub struct Corpus {
    pub paths: Vec<String>,
    pub images: Vec<RgbImage>,
    pub captions: Vec<String>,
    /// Class of every image, as an index into `class_names` (sorted).
    pub labels: Vec<usize>,
    pub class_names: Vec<String>,
    pub styles: Vec<String>,
}

impl Corpus {
    /// Reads `dir/captions.jsonl` and decodes every image it lists, in parallel.
    pub fn load(dir: &Path) -> Result<Self> {
        let list = dir.join("captions.jsonl");
        let text = std::fs::read_to_string(&list).with_context(|| {
            format!(
                "cannot read {} (generate the corpus with `synthdg corpus --out {}`)",
                list.display(),
                dir.display()
            )
        })?;
        let lines: Vec<Line> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| {
                    format!("{} line {}: not a caption record", list.display(), i + 1)
                })
            })
            .collect::<Result<_>>()?;
        if lines.is_empty() {
            bail!("{} lists no images", list.display());
        }
        let images = lines
            .par_iter()
            .map(|l| load_rgb(&dir.join(&l.path)).map_err(anyhow::Error::from))
            .collect::<Result<Vec<_>>>()?;
        let mut class_names: Vec<String> = lines.iter().map(|l| l.class.clone()).collect();
        class_names.sort();
        class_names.dedup();
        let labels = lines
            .iter()
            .map(|l| class_names.binary_search(&l.class).unwrap_or(0))
            .collect();
        Ok(Corpus {
            paths: lines.iter().map(|l| l.path.clone()).collect(),
            captions: lines.iter().map(|l| l.caption.clone()).collect(),
            styles: lines.iter().map(|l| l.style.clone()).collect(),
            images,
            labels,
            class_names,
        })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Preprocessed pixels `[n, 3, s, s]` of `items`; `augment` draws a fresh crop and flip per item.
    pub fn pixels(
        &self,
        items: &[usize],
        preprocess: &Preprocess,
        augment: Option<&mut SplitMix64>,
    ) -> Vec<f32> {
        let views: Vec<ViewParams> = match augment {
            Some(rng) => items
                .iter()
                .map(|&i| {
                    let img = &self.images[i];
                    let seed = rng.next_u64();
                    let drawn =
                        ViewParams::sample(seed, &self.paths[i], 1, img.width(), img.height());
                    ViewParams {
                        crop: drawn.crop,
                        flip: drawn.flip,
                        ..ViewParams::identity()
                    }
                })
                .collect(),
            None => vec![ViewParams::identity(); items.len()],
        };
        let per = 3 * (preprocess.size as usize).pow(2);
        let mut out = vec![0.0f32; items.len() * per];
        out.par_chunks_mut(per)
            .zip(items.par_iter().zip(views.par_iter()))
            .for_each(|(slot, (&i, view))| preprocess.apply_into(&self.images[i], view, slot));
        out
    }
}
