//! The generator's seeded draws, on the project's one SplitMix64 ([`vl2v::rng`]), so the images a seed
//! names can never change with a dependency upgrade.

use vl2v::rng::{fnv1a, mix64, SplitMix64};

/// The seed of one image: a function of (seed, style, class, index) only, never of thread scheduling.
/// Style and class enter by name (FNV-1a), so an image's seed does not depend on where its style or class
/// sits in a list (a corpus restricted to one style renders the same images as the full one).
pub fn image_seed(seed: u64, style: &str, class: &str, index: usize) -> u64 {
    let mut h = mix64(seed);
    for part in [
        fnv1a(style.as_bytes()),
        fnv1a(class.as_bytes()),
        index as u64,
    ] {
        h = mix64(h ^ part);
    }
    h
}

#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1), from the top 24 bits (all an f32 mantissa holds).
    pub fn unit(&mut self) -> f32 {
        self.0.unit_f32()
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in [-a, a].
    pub fn sym(&mut self, a: f32) -> f32 {
        self.range(-a, a)
    }

    /// Uniform index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below_mod(n)
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An independent stream, so that adding draws to one consumer does not shift another's.
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng::new(mix64(self.next_u64() ^ salt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_depend_on_every_input() {
        let base = image_seed(0, "photo", "star", 0);
        assert_eq!(base, image_seed(0, "photo", "star", 0));
        assert_ne!(base, image_seed(1, "photo", "star", 0));
        assert_ne!(base, image_seed(0, "sketch", "star", 0));
        assert_ne!(base, image_seed(0, "photo", "ball", 0));
        assert_ne!(base, image_seed(0, "photo", "star", 1));
    }

    #[test]
    fn unit_stays_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
