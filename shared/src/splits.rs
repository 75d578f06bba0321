//! DomainBed's in/out split of every environment, reproduced bit for bit.
//!
//! DomainBed (`domainbed/lib/misc.py`, `scripts/train.py`; VL2V-ADiP's SWAD fork does the same) splits each
//! environment `env_i` of `N` images as
//!
//! ```python
//! def seed_hash(*args):
//!     return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)
//!
//! keys = list(range(N))
//! np.random.RandomState(seed_hash(trial_seed, env_i)).shuffle(keys)
//! out, in_ = keys[:int(N * holdout_fraction)], keys[int(N * holdout_fraction):]
//! ```
//!
//! where the keys index the environment's `ImageFolder` list (sorted class folder, then sorted path: the
//! order of [`crate::dataset`]'s discovery within a domain). `out` is the validation split of a training
//! domain; `in` is what is trained on (or, for the test domain, what the reported accuracy is measured on).
//!
//! This needs MD5 (the `md-5` crate), numpy's legacy MT19937 (the `rand_mt` crate's `Mt`: `np.random.
//! RandomState(int)` seeds with `init_genrand`, as `Mt::new` does, and draws 64 bits high half first, as
//! `Mt::next_u64` does) and numpy's Fisher–Yates shuffle with its masked rejection sampling
//! ([`numpy_interval`], which no crate provides). `tests/fixtures/splits/make_splits.py` writes the numpy
//! reference values the tests compare against.

use md5::{Digest, Md5};
use rand_mt::Mt;

/// DomainBed's `seed_hash(*args)` given `str(args)`, the Python repr of the argument tuple, e.g. `"(0, 0)"`
/// or `"('PACS', 'ERM', [0], 0, 0)"`: the MD5 digest read as a big-endian integer, modulo 2^31.
pub fn seed_hash(args_repr: &str) -> u32 {
    let digest = Md5::digest(args_repr.as_bytes());
    // A 128-bit big-endian integer mod 2^31 only depends on its last four bytes.
    u32::from_be_bytes([digest[12], digest[13], digest[14], digest[15]]) & 0x7fff_ffff
}

/// `seed_hash(a, b)` for two Python ints: `str((a, b))` is `"(a, b)"`.
pub fn seed_hash_pair(a: i64, b: i64) -> u32 {
    seed_hash(&format!("({a}, {b})"))
}

/// `np.random.RandomState(seed).shuffle(keys)` for a Python list (or 1-d array): Fisher–Yates from the end,
/// `j = random_interval(i)` for `i = n-1, ..., 1`.
pub fn numpy_shuffle<T>(keys: &mut [T], seed: u32) {
    let mut rng = Mt::new(seed);
    for i in (1..keys.len()).rev() {
        let j = numpy_interval(&mut rng, i as u64) as usize;
        keys.swap(i, j);
    }
}

/// numpy's `random_interval(max)` (legacy `rk_interval`): uniform in `[0, max]` by masked rejection
/// sampling, on 32-bit draws when `max` fits in 32 bits and on 64-bit draws otherwise.
pub fn numpy_interval(rng: &mut Mt, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut mask = max;
    for shift in [1, 2, 4, 8, 16, 32] {
        mask |= mask >> shift;
    }
    if max <= u64::from(u32::MAX) {
        loop {
            let value = u64::from(rng.next_u32()) & mask;
            if value <= max {
                return value;
            }
        }
    }
    loop {
        let value = rng.next_u64() & mask;
        if value <= max {
            return value;
        }
    }
}

/// `int(n * holdout_fraction)` as Python computes it: the product in f64, truncated (e.g. `100 * 0.29` is
/// 28.999999999999996, so 28).
///
/// # Panics
/// If `holdout_fraction` is not in `[0, 1]` (DomainBed asserts the holdout fits in the environment).
pub fn holdout_count(n: usize, holdout_fraction: f64) -> usize {
    assert!(
        (0.0..=1.0).contains(&holdout_fraction),
        "holdout fraction {holdout_fraction} is not in [0, 1]"
    );
    (n as f64 * holdout_fraction).trunc() as usize
}

/// One environment's split: indices into its image list, in shuffled order (as DomainBed's `keys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Training part (DomainBed's `in_`, `keys[n_out:]`).
    pub in_: Vec<usize>,
    /// Held-out validation part (DomainBed's `out`, `keys[:n_out]`).
    pub out: Vec<usize>,
}

impl Split {
    /// `mask[i]` is true when image `i` of the environment is in `out`.
    pub fn out_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.in_.len() + self.out.len()];
        for &i in &self.out {
            mask[i] = true;
        }
        mask
    }
}

/// DomainBed's split of environment `env` (its index among the dataset's sorted domains) of `n` images:
/// `split_dataset(env, int(n * holdout_fraction), seed_hash(trial_seed, env))`.
///
/// # Panics
/// If `holdout_fraction` is not in `[0, 1]`.
pub fn domainbed_split(n: usize, holdout_fraction: f64, trial_seed: i64, env: usize) -> Split {
    let n_out = holdout_count(n, holdout_fraction);
    let env = i64::try_from(env).expect("environment index fits in i64");
    let mut keys: Vec<usize> = (0..n).collect();
    numpy_shuffle(&mut keys, seed_hash_pair(trial_seed, env));
    let in_ = keys.split_off(n_out);
    Split { in_, out: keys }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use sha2::{Digest, Sha256};

    fn fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/splits/expected.json"
        );
        let text = std::fs::read_to_string(path).expect("tests/fixtures/splits/expected.json");
        serde_json::from_str(&text).unwrap()
    }

    fn usizes(v: &Value) -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_u64().unwrap() as usize)
            .collect()
    }

    fn u32_of(v: &Value) -> u32 {
        u32::try_from(v.as_u64().unwrap()).unwrap()
    }

    /// The fixture's `list_sha256`: sha256 of the keys joined by ",".
    fn list_sha256(keys: &[usize]) -> String {
        let text = keys
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn seed_hash_matches_python() {
        let fx = fixture();
        let pairs = fx["seed_hash"].as_array().unwrap();
        assert!(pairs.len() >= 4);
        for case in pairs {
            let args = case["args"].as_array().unwrap();
            let (a, b) = (args[0].as_i64().unwrap(), args[1].as_i64().unwrap());
            let expected = u32_of(&case["value"]);
            assert_eq!(seed_hash_pair(a, b), expected, "({a}, {b})");
            assert_eq!(seed_hash(case["repr"].as_str().unwrap()), expected);
        }
        for case in fx["seed_hash_repr"].as_array().unwrap() {
            let repr = case["repr"].as_str().unwrap();
            assert_eq!(seed_hash(repr), u32_of(&case["value"]), "{repr}");
        }
        // Spot values, independent of the fixture file.
        assert_eq!(seed_hash_pair(0, 0), 894_182_419);
        assert_eq!(seed_hash_pair(0, 1), 1_514_274_641);
    }

    #[test]
    fn mt19937_matches_numpy_randomstate() {
        for case in fixture()["mt19937"].as_array().unwrap() {
            let mut mt = Mt::new(u32_of(&case["seed"]));
            let first: Vec<u32> = (0..8).map(|_| mt.next_u32()).collect();
            let expected: Vec<u32> = case["first"]
                .as_array()
                .unwrap()
                .iter()
                .map(u32_of)
                .collect();
            assert_eq!(first, expected, "seed {}", case["seed"]);
            for _ in 8..1000 {
                mt.next_u32();
            }
            assert_eq!(mt.next_u32(), u32_of(&case["at_1000"]));
        }
    }

    #[test]
    fn shuffle_matches_numpy() {
        let cases = fixture()["shuffle"].as_array().unwrap().clone();
        assert!(cases.len() >= 6);
        for case in cases {
            let n = case["n"].as_u64().unwrap() as usize;
            let seed = u32_of(&case["seed"]);
            let mut keys: Vec<usize> = (0..n).collect();
            numpy_shuffle(&mut keys, seed);
            if let Some(expected) = case.get("keys") {
                assert_eq!(keys, usizes(expected), "n {n}, seed {seed}");
            } else {
                assert_eq!(case["len"].as_u64().unwrap() as usize, n);
                assert_eq!(
                    list_sha256(&keys),
                    case["sha256"].as_str().unwrap(),
                    "n {n}, seed {seed}"
                );
            }
        }
    }

    #[test]
    fn domainbed_split_matches_numpy() {
        let cases = fixture()["split"].as_array().unwrap().clone();
        for case in cases {
            let n = case["n"].as_u64().unwrap() as usize;
            let holdout = case["holdout_fraction"].as_f64().unwrap();
            let trial_seed = case["trial_seed"].as_i64().unwrap();
            let env = case["env"].as_u64().unwrap() as usize;
            let what = format!("n {n}, holdout {holdout}, trial {trial_seed}, env {env}");
            assert_eq!(
                seed_hash_pair(trial_seed, env as i64),
                u32_of(&case["seed"]),
                "{what}"
            );
            let split = domainbed_split(n, holdout, trial_seed, env);
            let n_out = case["n_out"].as_u64().unwrap() as usize;
            assert_eq!(holdout_count(n, holdout), n_out, "{what}");
            assert_eq!(split.out.len(), n_out, "{what}");
            assert_eq!(split.in_.len(), n - n_out, "{what}");
            match case.get("out") {
                Some(out) => assert_eq!(split.out, usizes(out), "{what}"),
                None => assert_eq!(
                    list_sha256(&split.out),
                    case["out_sha256"].as_str().unwrap(),
                    "{what}"
                ),
            }
            assert_eq!(
                list_sha256(&split.in_),
                case["in_sha256"].as_str().unwrap(),
                "{what}"
            );
            let mask = split.out_mask();
            assert_eq!(mask.len(), n);
            assert_eq!(mask.iter().filter(|&&m| m).count(), n_out);
        }
    }

    #[test]
    fn holdout_count_truncates_the_float_product() {
        assert_eq!(holdout_count(100, 0.29), 28);
        assert_eq!(holdout_count(10, 0.3), 3);
        assert_eq!(holdout_count(2427, 0.2), 485);
        assert_eq!(holdout_count(4, 0.2), 0);
        assert_eq!(holdout_count(7, 1.0), 7);
        assert_eq!(holdout_count(0, 0.2), 0);
    }

    #[test]
    #[should_panic(expected = "not in [0, 1]")]
    fn holdout_fraction_out_of_range_panics() {
        holdout_count(10, 1.5);
    }

    #[test]
    fn empty_and_single_environments() {
        let empty = domainbed_split(0, 0.2, 0, 0);
        assert!(empty.in_.is_empty() && empty.out.is_empty());
        let one = domainbed_split(1, 0.2, 0, 0);
        assert_eq!(one.in_, [0]);
        assert!(one.out.is_empty());
    }

    #[test]
    fn interval_uses_64_bit_draws_above_u32() {
        // Not checked against numpy (no environment has 2^32 images); only the branch and the bound.
        let mut mt = Mt::new(1);
        for _ in 0..100 {
            assert!(numpy_interval(&mut mt, 1 << 40) <= 1 << 40);
        }
        assert_eq!(numpy_interval(&mut Mt::new(3), 0), 0);
    }
}
