//! SplitMix64 (Steele, Lea & Flood 2014) and the FNV-1a hash that seeds it: the project's one small
//! generator. Our own rather than a crate's, so that what a seed names (view parameters in existing
//! caches, generated images, training minibatches) can never change with a dependency upgrade.
//!
//! The three bounded draws below differ on purpose and are frozen: each is what one consumer has always
//! used, and switching any of them would change that consumer's seeded outputs.

/// FNV-1a's starting value (its 64-bit offset basis).
pub const FNV1A_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of a byte string.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV1A_START, bytes.iter().copied())
}

/// Continues an FNV-1a hash `h` over more bytes.
pub fn fnv1a_extend(h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(h, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's output function: a bijective mix, so distinct inputs never collide.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator whose whole state is one `u64` (saved in training checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    pub state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 24 random bits (all an f32 mantissa holds).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit_f64()
    }

    /// Uniform in `0..n` by multiply-shift (bias below 2^-32 for any `n` a minibatch sampler uses):
    /// training's sampler.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `0..n` (`n ≥ 1`) without bias (Lemire's method with rejection): view parameters.
    pub fn below_exact(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// `next_u64() % n` (`n > 0`; the modulo bias is negligible for small `n`): the demo generator's
    /// draw, kept so that its images stay the same.
    pub fn below_mod(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs for seed 1234567 from the reference C implementation (Vigna's splitmix64.c).
    #[test]
    fn matches_the_reference_sequence() {
        let mut rng = SplitMix64::new(1234567);
        let want = [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for w in want {
            assert_eq!(rng.next_u64(), w);
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for n in 1..50usize {
            assert!(rng.below(n) < n);
            assert!(rng.below_exact(n as u64) < n as u64);
            assert!(rng.below_mod(n) < n);
            assert!((0.0..1.0).contains(&rng.unit_f32()));
            assert!((0.0..1.0).contains(&rng.unit_f64()));
        }
    }

    /// FNV-1a 64 of "a" and "foobar" (the published test vectors).
    #[test]
    fn fnv1a_matches_published_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
