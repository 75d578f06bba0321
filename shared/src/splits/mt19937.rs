//! The 32-bit Mersenne Twister as numpy's legacy `RandomState` runs it.
//!
//! `np.random.RandomState(seed)` with a Python int calls `_legacy_seeding`, which for an integer in
//! `[0, 2**32)` calls `mt19937_seed(state, seed)`: Matsumoto and Nishimura's `init_genrand`, not
//! `init_by_array` (that one is for array seeds). Verified against numpy's `get_state()` key by
//! `tests/fixtures/splits/make_splits.py`.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    pos: usize,
}

impl Mt19937 {
    /// `init_genrand(seed)`; the first draw regenerates the whole state, as numpy's `pos = 624` does.
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, pos: N }
    }

    fn regenerate(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// numpy's `mt19937_next32` (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.regenerate();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `mt19937_next64`: the first 32-bit draw is the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// numpy's `random_interval(max)` (legacy `rk_interval`): uniform in `[0, max]` by masked rejection
    /// sampling, on 32-bit draws when `max` fits in 32 bits and on 64-bit draws otherwise.
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        }
        loop {
            let value = self.next_u64() & mask;
            if value <= max {
                return value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mt19937;

    #[test]
    fn reference_output_of_the_default_seed() {
        // mt19937ar.c's reference output starts 3499211612 for init_genrand(5489) — std::mt19937's default.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        for _ in 1..9999 {
            mt.next_u32();
        }
        // C++11 [rand.predef]: the 10000th output of a default-constructed mt19937 is 4123659995.
        assert_eq!(mt.next_u32(), 4_123_659_995);
    }
}
