//! Training data from caches: every view of every image ([`ViewTable`], memory-mapped from a file built
//! once under the cache directory, see [`view_file`]), DomainBed's per-domain split ([`DomainSplits`]) and
//! the seeded per-domain minibatch sampler ([`Sampler`]).
//!
//! Images are in the teacher cache's order (view-0 rows, part order then row order: DomainBed's
//! `ImageFolder` order within a domain, see `splits_cmd`). A student cache is joined on (path, view); both
//! caches must hold the same images with the same views.

pub mod cache_tables;
pub mod cutmix;
pub mod loader;
pub mod online;
#[cfg(test)]
pub mod toy_manifest;
mod view_file;
pub mod view_replay;
mod view_table;

use anyhow::{ensure, Result};
use vl2v::rng::SplitMix64;
use vl2v::splits::domainbed_split;

pub use view_file::Reads;
pub use view_table::ViewTable;

/// DomainBed's in/out split of every domain, as image numbers (indices into the cache's image list).
#[derive(Clone, Debug)]
pub struct DomainSplits {
    pub in_: Vec<Vec<usize>>,
    pub out: Vec<Vec<usize>>,
}

impl DomainSplits {
    /// Splits the images of each domain (`domains[i]` = domain index of image `i`, images of a domain in
    /// cache order) with `domainbed_split(n, holdout_fraction, trial_seed, env = domain index)`.
    pub fn new(
        domains: &[usize],
        n_domains: usize,
        holdout_fraction: f64,
        trial_seed: i64,
    ) -> Self {
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_domains];
        for (image, &d) in domains.iter().enumerate() {
            members[d].push(image);
        }
        let (mut in_, mut out) = (Vec::new(), Vec::new());
        for (env, rows) in members.iter().enumerate() {
            let split = domainbed_split(rows.len(), holdout_fraction, trial_seed, env);
            in_.push(split.in_.iter().map(|&k| rows[k]).collect());
            out.push(split.out.iter().map(|&k| rows[k]).collect());
        }
        DomainSplits { in_, out }
    }
}

/// Draws each step's minibatch: `batch_size` images per training domain, uniformly with replacement from
/// the domain's in split (domains in index order, as DomainBed concatenates them), and for each image a
/// view uniformly among the augmented views `1..=K` (view 0 when the cache has none).
#[derive(Clone, Debug)]
pub struct Sampler {
    pools: Vec<Vec<usize>>,
    batch_size: usize,
    augmented_views: usize,
    pub rng: SplitMix64,
}

impl Sampler {
    /// `pools`: the in-split images of each training domain; `views`: the views drawn from, view 0 included
    /// (the first `views - 1` augmented views of a cache that may hold more).
    pub fn new(pools: Vec<Vec<usize>>, batch_size: usize, views: usize, seed: u64) -> Result<Self> {
        ensure!(batch_size > 0, "the batch size must be at least 1");
        ensure!(
            pools.iter().all(|p| !p.is_empty()),
            "a training domain has no images in its in split"
        );
        // Decorrelate from other streams seeded with the same number.
        let rng = SplitMix64::new(seed ^ 0x5a4d_504c_4552_0001);
        Ok(Sampler {
            pools,
            batch_size,
            augmented_views: views.saturating_sub(1),
            rng,
        })
    }

    /// The next minibatch as `(image, view)` pairs, written into `out` (cleared first).
    pub fn next_batch(&mut self, out: &mut Vec<(usize, usize)>) {
        let mut rng = self.rng;
        self.draw(&mut rng, out);
        self.rng = rng;
    }

    /// The minibatch [`Sampler::next_batch`] will give next, without drawing it.
    pub fn peek_batch(&self, out: &mut Vec<(usize, usize)>) {
        self.draw(&mut { self.rng }, out);
    }

    fn draw(&self, rng: &mut SplitMix64, out: &mut Vec<(usize, usize)>) {
        out.clear();
        for pool in &self.pools {
            for _ in 0..self.batch_size {
                let image = pool[rng.below(pool.len())];
                let view = if self.augmented_views > 0 {
                    1 + rng.below(self.augmented_views)
                } else {
                    0
                };
                out.push((image, view));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(sampler: &mut Sampler, steps: usize) -> Vec<(usize, usize)> {
        let mut all = Vec::new();
        let mut batch = Vec::new();
        for _ in 0..steps {
            sampler.next_batch(&mut batch);
            all.extend_from_slice(&batch);
        }
        all
    }

    #[test]
    fn sampler_is_deterministic_resumable_and_respects_pools() {
        let pools = vec![vec![0, 1, 2], vec![10, 11, 12, 13, 14]];
        let mut a = Sampler::new(pools.clone(), 4, 3, 7).unwrap();
        let mut b = Sampler::new(pools.clone(), 4, 3, 7).unwrap();
        let seq = draw(&mut a, 50);
        assert_eq!(seq, draw(&mut b, 50), "same seed, same draws");
        assert_eq!(seq.len(), 50 * 8);
        for (k, &(image, view)) in seq.iter().enumerate() {
            let domain = (k % 8) / 4;
            assert!(pools[domain].contains(&image), "draw {k} from its domain");
            assert!((1..=2).contains(&view), "augmented views only");
        }
        // Every image and both augmented views of domain 1 show up.
        for image in 10..15 {
            assert!(seq.iter().any(|&(i, _)| i == image));
        }
        assert!(seq.iter().any(|&(_, v)| v == 2) && seq.iter().any(|&(_, v)| v == 1));

        let mut c = Sampler::new(pools.clone(), 4, 3, 8).unwrap();
        assert_ne!(seq, draw(&mut c, 50), "another seed, other draws");

        // Restoring the RNG state continues the same sequence.
        let mut d = Sampler::new(pools.clone(), 4, 3, 7).unwrap();
        draw(&mut d, 20);
        let saved = d.rng.state;
        let mut e = Sampler::new(pools, 4, 3, 0).unwrap();
        e.rng = SplitMix64 { state: saved };
        assert_eq!(draw(&mut e, 30), seq[20 * 8..]);
    }

    /// `distill run --views K` on a cache of more views: exactly the views 1..=K are drawn (view 0 alone
    /// for K = 0).
    #[test]
    fn a_k_view_subset_draws_exactly_the_first_k_views() {
        let pools = vec![(0..20).collect::<Vec<_>>()];
        for k in [0usize, 1, 3, 7] {
            let mut sampler = Sampler::new(pools.clone(), 16, k + 1, 3).unwrap();
            let drawn: std::collections::BTreeSet<usize> = draw(&mut sampler, 100)
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            let want: std::collections::BTreeSet<usize> = if k == 0 {
                [0].into()
            } else {
                (1..=k).collect()
            };
            assert_eq!(drawn, want, "K = {k}");
        }
    }

    #[test]
    fn without_augmented_views_the_sampler_uses_view_0() {
        let mut s = Sampler::new(vec![vec![3, 4]], 5, 1, 0).unwrap();
        assert!(draw(&mut s, 10).iter().all(|&(_, v)| v == 0));
    }

    #[test]
    fn splits_map_back_to_domain_images() {
        let domains = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let s = DomainSplits::new(&domains, 2, 0.2, 0);
        assert_eq!((s.out[0].len(), s.in_[0].len()), (1, 4));
        assert_eq!((s.out[1].len(), s.in_[1].len()), (2, 8));
        let mut all: Vec<usize> = s.in_.concat();
        all.extend(s.out.concat());
        all.sort_unstable();
        assert_eq!(all, (0..15).collect::<Vec<_>>());
        assert!(s.in_[1].iter().all(|&i| i >= 5));
    }
}
