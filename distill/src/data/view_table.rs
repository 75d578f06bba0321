//! [`ViewTable`]: every view of every image of a cache, in the teacher cache's image order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use half::slice::HalfFloatSliceExt;
use vl2v::cache::Manifest;

use super::view_file::{self, Key, Layout, Mapped, Reads, Values, Writer};
use crate::data::cache_tables::for_each_row;

/// Every view (0..=K) of every image of a cache as one row-major `[N, K+1, D]` matrix: memory-mapped from
/// the cache's view file (see [`view_file`]), so resident memory is bounded by the OS page cache, or on the
/// heap for tables made in tests.
#[derive(Clone, Debug)]
pub struct ViewTable {
    dim: usize,
    views: usize,
    storage: Storage,
}

#[derive(Clone, Debug)]
enum Storage {
    #[cfg_attr(not(test), allow(dead_code))]
    Heap(Vec<f32>),
    Mapped(Arc<Mapped>),
}

impl ViewTable {
    /// Reads the cache in `dir` and places each row by its path (`index`: path → image number) and view.
    /// Every image of `paths` must have every view `0..=manifest.views.count`, and the cache may hold no
    /// other image; `what` names the cache in errors ("teacher", "student").
    ///
    /// The table is built once into `<dir>/distill/views-….bin` and mapped from there by later loads of the
    /// same cache content in the same image order (the checks ran when it was built); `reads` says how the
    /// run will read it (what the kernel is advised, see [`Reads`]).
    pub fn load(
        dir: &Path,
        manifest: &Manifest,
        paths: &[String],
        views: usize,
        what: &str,
        reads: Reads,
    ) -> Result<Self> {
        let dim = manifest.encoder.embedding_dim;
        let cache_views = manifest.views.count as usize + 1;
        ensure!(
            cache_views == views,
            "the {what} cache {} has {} augmented views per image but the teacher cache has {}: both \
             caches must be embedded with the same --views and --seed",
            dir.display(),
            cache_views - 1,
            views - 1
        );
        let layout = Layout {
            images: paths.len(),
            views,
            dim,
            dtype: manifest.embedding_dtype,
        };
        let key = Key::new(dir, manifest, paths)?;
        let mapped = match view_file::open(dir, &key, layout) {
            Some(mapped) => mapped,
            None => {
                // Another run may be building this very table: wait for it, then look again.
                let _lock = view_file::lock_builds(dir);
                match view_file::open(dir, &key, layout) {
                    Some(mapped) => mapped,
                    None => build(dir, manifest, paths, &key, layout, what)?,
                }
            }
        };
        mapped.advise(reads);
        Ok(ViewTable {
            dim,
            views,
            storage: Storage::Mapped(mapped),
        })
    }

    /// A table from its values, row-major `[n, views, dim]`.
    #[cfg(test)]
    pub fn from_values(dim: usize, views: usize, values: Vec<f32>) -> Self {
        assert_eq!(values.len() % (dim * views), 0);
        ViewTable {
            dim,
            views,
            storage: Storage::Heap(values),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Views per image, including view 0.
    pub fn views(&self) -> usize {
        self.views
    }

    /// Appends the rows of `(image, view)` pairs to `out` (cleared first): a contiguous `[n, dim]` f32
    /// batch (f16 tables are widened).
    pub fn gather_into(&self, picks: &[(usize, usize)], out: &mut Vec<f32>) {
        out.clear();
        match &self.storage {
            Storage::Heap(values) => self.gather_f32(values, picks, out),
            Storage::Mapped(mapped) => match mapped.values() {
                Values::F32(values) => self.gather_f32(values, picks, out),
                Values::F16(values) => {
                    let dim = self.dim;
                    out.reserve(picks.len() * dim);
                    for &(image, view) in picks {
                        let at = (image * self.views + view) * dim;
                        let start = out.len();
                        out.resize(start + dim, 0.0);
                        values[at..at + dim].convert_to_f32_slice(&mut out[start..]);
                    }
                }
            },
        }
    }

    fn gather_f32(&self, values: &[f32], picks: &[(usize, usize)], out: &mut Vec<f32>) {
        let dim = self.dim;
        for &(image, view) in picks {
            let at = (image * self.views + view) * dim;
            out.extend_from_slice(&values[at..at + dim]);
        }
    }

    /// View 0 of `images`, as a contiguous `[n, dim]` matrix.
    #[cfg(test)]
    pub fn gather_view0(&self, images: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(images.len() * self.dim);
        self.gather_view0_into(images, &mut out);
        out
    }

    /// View 0 of `images` into `out` (cleared first), as a contiguous `[n, dim]` f32 matrix.
    pub fn gather_view0_into(&self, images: &[usize], out: &mut Vec<f32>) {
        let picks: Vec<(usize, usize)> = images.iter().map(|&i| (i, 0)).collect();
        self.gather_into(&picks, out);
    }
}

/// Streams the cache's parts into a new view file, checking that every image of `paths` has every view
/// exactly once and that the cache holds no other image.
fn build(
    dir: &Path,
    manifest: &Manifest,
    paths: &[String],
    key: &Key,
    layout: Layout,
    what: &str,
) -> Result<Arc<Mapped>> {
    let views = layout.views;
    let index: HashMap<&str, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let mut seen = vec![false; paths.len() * views];
    let mut writer = Writer::create(dir, key, layout, what)?;
    for_each_row(dir, manifest, |path, row| {
        let Some(&image) = index.get(row.path.as_str()) else {
            bail!(
                "{}: the {what} cache holds image {}, which the teacher cache does not: the \
                 caches must be embedded from the same dataset",
                path.display(),
                row.path
            );
        };
        let view = usize::try_from(row.view).ok().filter(|&v| v < views);
        let Some(view) = view else {
            bail!(
                "{}: image {} has view {}, but the caches have views 0..={}",
                path.display(),
                row.path,
                row.view,
                views - 1
            );
        };
        let at = image * views + view;
        ensure!(
            !seen[at],
            "{}: image {} view {} appears twice",
            path.display(),
            row.path,
            view
        );
        seen[at] = true;
        writer.put(at, &row.embedding)
    })?;
    if let Some(missing) = seen.iter().position(|&s| !s) {
        bail!(
            "the {what} cache {} lacks image {} view {} (the image lists or view sets of the caches \
             differ: embed both from the same dataset with the same --views and --seed)",
            dir.display(),
            paths[missing / views],
            missing % views
        );
    }
    writer.finish()
}

#[cfg(test)]
mod tests;
