//! CutMix (Yun et al., ICCV 2019) as the official VL2V-ADiP code applies it in Align and Distill
//! (`domainbed/algorithms/distill_clip.py`, `DFC_STAGE*.update` and `rand_bbox`; off unless `beta` and
//! `cutmix_prob` are set): with probability `cutmix_prob` a step draws λ ~ Beta(β, β), a permutation of the
//! minibatch and a box centre; every image's box is replaced by its partner's, λ becomes the share of
//! pixels left outside the box, and the loss is λ·loss(label) + (1 − λ)·loss(partner's label). The teacher
//! embeds the mixed image, so CutMix needs `--teacher online`.
//!
//! The draws come from a generator seeded by (seed, step) — resumed runs draw the same — not numpy's.

use vl2v::rng::{mix64, SplitMix64};

/// `--cutmix-beta` and `--cutmix-prob`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub beta: f64,
    pub prob: f64,
}

/// One step's mixing.
#[derive(Clone, Debug, PartialEq)]
pub struct CutMix {
    /// The share of each image outside the box (the official `lam` after "adjust lambda to exactly match
    /// pixel ratio").
    pub lam: f64,
    /// Row r's box comes from row `partner[r]` (`rand_index`).
    pub partner: Vec<usize>,
    /// The box: rows `x1..x2` (the official `bbx`, along dimension 2) and columns `y1..y2` (`bby`).
    pub rows: (usize, usize),
    pub cols: (usize, usize),
}

/// The official `rand_bbox` of an `h × w` image (it calls them W and H) for λ and the centre (cx, cy) it
/// draws with `np.random.randint`: ((x1, x2), (y1, y2)).
pub fn rand_bbox(
    h: usize,
    w: usize,
    lam: f64,
    cx: usize,
    cy: usize,
) -> ((usize, usize), (usize, usize)) {
    let cut_rat = (1.0 - lam).sqrt();
    let cut_w = (h as f64 * cut_rat) as i64; // np.int truncates
    let cut_h = (w as f64 * cut_rat) as i64;
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    let (cx, cy) = (cx as i64, cy as i64);
    (
        (clip(cx - cut_w / 2, h), clip(cx + cut_w / 2, h)),
        (clip(cy - cut_h / 2, w), clip(cy + cut_h / 2, w)),
    )
}

impl CutMix {
    /// The mixing of a `size × size` minibatch of `n` images for `step`, or `None` when the step does not
    /// mix (probability 1 − prob, or β = 0).
    pub fn draw(settings: Settings, seed: u64, step: usize, n: usize, size: usize) -> Option<Self> {
        let mut rng = SplitMix64::new(mix64(
            mix64(seed ^ 0x6375_746d_6978).wrapping_add(step as u64),
        ));
        let r = rng.unit_f64();
        if !(settings.beta > 0.0 && r < settings.prob) {
            return None;
        }
        let lam = beta(&mut rng, settings.beta);
        let mut partner: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            partner.swap(i, rng.below(i + 1));
        }
        let (cx, cy) = (rng.below(size), rng.below(size));
        Some(Self::with(lam, partner, cx, cy, size))
    }

    /// The mixing of given draws.
    pub fn with(lam: f64, partner: Vec<usize>, cx: usize, cy: usize, size: usize) -> Self {
        let (rows, cols) = rand_bbox(size, size, lam, cx, cy);
        let area = (rows.1 - rows.0) * (cols.1 - cols.0);
        CutMix {
            lam: 1.0 - area as f64 / (size * size) as f64,
            partner,
            rows,
            cols,
        }
    }

    /// `all_x[:, :, x1:x2, y1:y2] = all_x[rand_index, :, x1:x2, y1:y2]` on `[n, 3, size, size]` pixels.
    pub fn apply(&self, pixels: &mut [f32], size: usize) {
        let plane = size * size;
        let image = 3 * plane;
        let original = pixels.to_vec();
        for (r, &p) in self.partner.iter().enumerate() {
            for c in 0..3 {
                for x in self.rows.0..self.rows.1 {
                    let at = c * plane + x * size;
                    let (from, to) = (p * image + at, r * image + at);
                    pixels[to + self.cols.0..to + self.cols.1]
                        .copy_from_slice(&original[from + self.cols.0..from + self.cols.1]);
                }
            }
        }
    }
}

/// A Beta(a, a) draw: X / (X + Y) of two Gamma(a) draws.
fn beta(rng: &mut SplitMix64, a: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, a);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// Marsaglia and Tsang's Gamma(a, 1) draw (a < 1 through Gamma(a + 1)·U^(1/a)).
fn gamma(rng: &mut SplitMix64, a: f64) -> f64 {
    if a < 1.0 {
        let u = 1.0 - rng.unit_f64();
        return gamma(rng, a + 1.0) * u.powf(1.0 / a);
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (x, v) = loop {
            let x = normal(rng);
            let v = 1.0 + c * x;
            if v > 0.0 {
                break (x, v * v * v);
            }
        };
        let u = 1.0 - rng.unit_f64();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.unit_f64();
    let u2 = rng.unit_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Box, λ and mixed pixels against the official lines run by torch and numpy
    /// (tests/fixtures/family/make_cutmix.py).
    #[test]
    fn box_lambda_and_pixels_match_the_official_lines() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/family/cutmix.json"
        );
        let f: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in f["cases"].as_array().unwrap() {
            let u = |k: &str| case[k].as_u64().unwrap() as usize;
            let (n, size) = (u("n"), u("size"));
            let partner: Vec<usize> = case["partner"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let mix = CutMix::with(
                case["lam"].as_f64().unwrap(),
                partner,
                u("cx"),
                u("cy"),
                size,
            );
            let b: Vec<usize> = case["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!((mix.rows, mix.cols), ((b[0], b[2]), (b[1], b[3])), "{case}");
            assert!((mix.lam - case["lam_adjusted"].as_f64().unwrap()).abs() < 1e-12);
            let mut pixels: Vec<f32> = (0..n * 3 * size * size).map(|i| i as f32 / 100.0).collect();
            mix.apply(&mut pixels, size);
            let want: Vec<f32> = case["mixed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(pixels, want);
        }
    }

    #[test]
    fn draws_are_per_step_and_follow_the_probability() {
        let on = Settings {
            beta: 1.0,
            prob: 1.0,
        };
        let a = CutMix::draw(on, 3, 7, 6, 32).unwrap();
        assert_eq!(Some(a.clone()), CutMix::draw(on, 3, 7, 6, 32));
        let mut sorted = a.partner.clone();
        sorted.sort();
        assert_eq!(sorted, (0..6).collect::<Vec<_>>(), "a permutation");
        let off = Settings {
            beta: 0.0,
            prob: 1.0,
        };
        assert_eq!(CutMix::draw(off, 3, 7, 6, 32), None);
        let half = Settings {
            beta: 1.0,
            prob: 0.5,
        };
        let mixed = (0..2000)
            .filter(|&s| CutMix::draw(half, 1, s, 4, 16).is_some())
            .count();
        assert!((900..1100).contains(&mixed), "{mixed} of 2000 steps mix");
    }

    /// Beta(a, a) has mean 1/2 and variance 1/(4(2a + 1)).
    #[test]
    fn beta_draws_have_the_right_moments() {
        for a in [0.5, 1.0, 2.0] {
            let mut rng = SplitMix64::new(11);
            let n = 20_000;
            let draws: Vec<f64> = (0..n).map(|_| beta(&mut rng, a)).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let want = 1.0 / (4.0 * (2.0 * a + 1.0));
            assert!((mean - 0.5).abs() < 0.01, "a {a}: mean {mean}");
            assert!(
                (var - want).abs() < 0.1 * want,
                "a {a}: var {var} vs {want}"
            );
        }
    }
}
