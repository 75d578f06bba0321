//! A small seeded generator. Our own (SplitMix64) rather than a crate's, so the images a seed names can
//! never change with a dependency upgrade.

/// FNV-1a of a byte string: turns style and class names into seed material, so an image's seed does not
/// depend on where its style or class sits in a list (a corpus restricted to one style renders the same
/// images as the full one).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's output function: a bijective mix, so distinct inputs never collide.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one image: a function of (seed, style, class, index) only, never of thread scheduling.
pub fn image_seed(seed: u64, style: &str, class: &str, index: usize) -> u64 {
    let mut h = mix(seed);
    for part in [
        fnv1a(style.as_bytes()),
        fnv1a(class.as_bytes()),
        index as u64,
    ] {
        h = mix(h ^ part);
    }
    h
}

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1), from the top 24 bits (all an f32 mantissa holds).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in [-a, a].
    pub fn sym(&mut self, a: f32) -> f32 {
        self.range(-a, a)
    }

    /// Uniform index below `n` (n > 0); the bias of a plain modulo is negligible for our small n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An independent stream, so that adding draws to one consumer does not shift another's.
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng(mix(self.next_u64() ^ salt))
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
