//! View parameters: view 0 is the deterministic evaluation view, views 1..=K are DomainBed-style augmented
//! training views. Every parameter is stored on the cache row so a student can replay exactly the same view.

use crate::rng::{fnv1a_extend, mix64, SplitMix64, FNV1A_START};
use serde::{Deserialize, Serialize};

/// The four colour-jitter operations, in the order torchvision's `ColorJitter` may apply them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JitterOp {
    Brightness,
    Contrast,
    Saturation,
    Hue,
}

/// Everything needed to rebuild one view of an image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewParams {
    /// Crop box normalised to the source image: x, y, width, height, each in [0, 1].
    pub crop: [f32; 4],
    pub flip: bool,
    /// Multiplicative factors (1 = unchanged).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    /// Hue shift in turns, in [-0.5, 0.5] (0 = unchanged).
    pub hue: f32,
    /// Order the jitter operations are applied in.
    pub jitter_order: [JitterOp; 4],
    pub grayscale: bool,
}

/// DomainBed's training augmentation (`DBT.aug`): RandomResizedCrop scale and ratio ranges, flip and
/// grayscale probabilities, ColorJitter strengths.
pub mod recipe {
    pub const SCALE: (f64, f64) = (0.7, 1.0);
    pub const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
    pub const FLIP_P: f64 = 0.5;
    pub const GRAYSCALE_P: f64 = 0.1;
    /// Brightness, contrast and saturation factors are drawn from `[1 - JITTER, 1 + JITTER]`.
    pub const JITTER: f64 = 0.3;
    /// Hue shifts are drawn from `[-HUE, HUE]` turns.
    pub const HUE: f64 = 0.3;
    /// One line for manifests.
    pub const DESCRIPTION: &str = "RandomResizedCrop(scale=(0.7, 1.0), ratio=(3/4, 4/3)) -> \
        RandomHorizontalFlip(0.5) -> ColorJitter(0.3, 0.3, 0.3, 0.3) -> RandomGrayscale(0.1)";
}

impl ViewParams {
    /// View 0: the whole image, unflipped, no colour change.
    pub fn identity() -> Self {
        ViewParams {
            crop: [0.0, 0.0, 1.0, 1.0],
            flip: false,
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
            hue: 0.0,
            jitter_order: [
                JitterOp::Brightness,
                JitterOp::Contrast,
                JitterOp::Saturation,
                JitterOp::Hue,
            ],
            grayscale: false,
        }
    }

    /// Whether this is [`ViewParams::identity`] (the evaluation view).
    pub fn is_identity(&self) -> bool {
        *self == Self::identity()
    }

    /// Draws view `view` of the image at `path` (relative to the dataset root, `/` separators) whose size
    /// is `width × height`, following [`recipe`]. Depends only on the arguments, never on processing
    /// order or thread, so sharded or resumed runs agree. View 0 is [`ViewParams::identity`].
    ///
    /// The draws follow torchvision's order and algorithms (`RandomResizedCrop.get_params` with its ten
    /// attempts and central-crop fallback, Python's round-half-to-even), with a SplitMix64 stream seeded
    /// by a stable hash of `(seed, path, view)` in place of torch's generator.
    pub fn sample(seed: u64, path: &str, view: u16, width: u32, height: u32) -> Self {
        if view == 0 {
            return Self::identity();
        }
        let mut rng = SplitMix64::new(stream_seed(seed, path, view));
        let crop = random_resized_crop(&mut rng, width.max(1), height.max(1));
        let flip = rng.unit_f64() < recipe::FLIP_P;
        // ColorJitter.get_params: permutation first, then the four factors.
        let mut jitter_order = Self::identity().jitter_order;
        for i in (1..jitter_order.len()).rev() {
            let j = rng.below_exact(i as u64 + 1) as usize;
            jitter_order.swap(i, j);
        }
        let (lo, hi) = (1.0 - recipe::JITTER, 1.0 + recipe::JITTER);
        let brightness = rng.uniform(lo, hi) as f32;
        let contrast = rng.uniform(lo, hi) as f32;
        let saturation = rng.uniform(lo, hi) as f32;
        let hue = rng.uniform(-recipe::HUE, recipe::HUE) as f32;
        let grayscale = rng.unit_f64() < recipe::GRAYSCALE_P;
        ViewParams {
            crop,
            flip,
            brightness,
            contrast,
            saturation,
            hue,
            jitter_order,
            grayscale,
        }
    }

    /// The crop as whole pixels `[x, y, w, h]` of a `width × height` image (the normalised box rounded
    /// back to the integers it was drawn as), clamped to the image and at least one pixel.
    pub fn crop_rect(&self, width: u32, height: u32) -> [u32; 4] {
        let px = |v: f32, n: u32| {
            (f64::from(v) * f64::from(n))
                .round()
                .clamp(0.0, f64::from(n)) as u32
        };
        let x = px(self.crop[0], width).min(width.saturating_sub(1));
        let y = px(self.crop[1], height).min(height.saturating_sub(1));
        let w = px(self.crop[2], width).clamp(1, (width - x).max(1));
        let h = px(self.crop[3], height).clamp(1, (height - y).max(1));
        [x, y, w, h]
    }
}

/// torchvision's `RandomResizedCrop.get_params`, returned normalised as `[x/W, y/H, w/W, h/H]`.
fn random_resized_crop(rng: &mut SplitMix64, width: u32, height: u32) -> [f32; 4] {
    let (wf, hf) = (f64::from(width), f64::from(height));
    let area = wf * hf;
    let (log_lo, log_hi) = (recipe::RATIO.0.ln(), recipe::RATIO.1.ln());
    let norm = |j: u32, i: u32, w: u32, h: u32| {
        [
            (f64::from(j) / wf) as f32,
            (f64::from(i) / hf) as f32,
            (f64::from(w) / wf) as f32,
            (f64::from(h) / hf) as f32,
        ]
    };
    for _ in 0..10 {
        let target_area = area * rng.uniform(recipe::SCALE.0, recipe::SCALE.1);
        let aspect = rng.uniform(log_lo, log_hi).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if 0.0 < w && w <= wf && 0.0 < h && h <= hf {
            let (w, h) = (w as u32, h as u32);
            let i = rng.below_exact(u64::from(height - h) + 1) as u32;
            let j = rng.below_exact(u64::from(width - w) + 1) as u32;
            return norm(j, i, w, h);
        }
    }
    // Fallback to a central crop.
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < recipe::RATIO.0 {
        (
            width,
            ((wf / recipe::RATIO.0).round_ties_even() as u32).min(height),
        )
    } else if in_ratio > recipe::RATIO.1 {
        (
            ((hf * recipe::RATIO.1).round_ties_even() as u32).min(width),
            height,
        )
    } else {
        (width, height)
    };
    norm((width - w) / 2, (height - h) / 2, w, h)
}

/// A stable 64-bit seed for `(seed, path, view)`: FNV-1a over the three, finished with SplitMix64's mixer.
fn stream_seed(seed: u64, path: &str, view: u16) -> u64 {
    let bytes = seed
        .to_le_bytes()
        .into_iter()
        .chain((path.len() as u64).to_le_bytes())
        .chain(path.bytes())
        .chain(view.to_le_bytes());
    mix64(fnv1a_extend(FNV1A_START, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_zero_is_identity() {
        let v = ViewParams::sample(7, "art/dog/1.jpg", 0, 640, 480);
        assert_eq!(v, ViewParams::identity());
        assert!(v.is_identity());
        assert_eq!(v.crop_rect(640, 480), [0, 0, 640, 480]);
    }

    #[test]
    fn sampling_is_a_pure_function_of_its_inputs() {
        let a = ViewParams::sample(0, "photo/dog/pic_001.jpg", 3, 227, 227);
        assert_eq!(
            a,
            ViewParams::sample(0, "photo/dog/pic_001.jpg", 3, 227, 227)
        );
        assert_ne!(
            a,
            ViewParams::sample(1, "photo/dog/pic_001.jpg", 3, 227, 227)
        );
        assert_ne!(
            a,
            ViewParams::sample(0, "photo/dog/pic_002.jpg", 3, 227, 227)
        );
        assert_ne!(
            a,
            ViewParams::sample(0, "photo/dog/pic_001.jpg", 4, 227, 227)
        );
        assert_ne!(stream_seed(0, "a", 1), stream_seed(0, "a", 256));
        // Pinned: a change here silently changes every cached view, so it must be deliberate.
        assert_eq!(
            stream_seed(0, "photo/dog/pic_001.jpg", 3),
            5304065763721142062
        );
        assert_eq!(a.crop_rect(227, 227), [1, 11, 225, 183]);
        assert!(a.flip && !a.grayscale);
        use JitterOp::*;
        assert_eq!(a.jitter_order, [Brightness, Hue, Contrast, Saturation]);
        let factors = [a.brightness, a.contrast, a.saturation, a.hue];
        let pinned = [0.748_034_4, 0.924_352_5, 1.040_780_5, 0.031_731_766];
        for (got, want) in factors.iter().zip(pinned) {
            assert!((got - want).abs() < 1e-6, "{factors:?}");
        }
    }

    #[test]
    fn parameters_stay_in_the_recipe_ranges() {
        let (mut flips, mut grays, n) = (0, 0, 4000);
        let mut orders = std::collections::HashSet::new();
        for k in 0..n {
            let (w, h) = [(640, 480), (227, 227), (100, 400), (1000, 90), (1, 1)][k % 5];
            let v = ViewParams::sample(42, &format!("d/c/{k}.png"), 1 + (k % 7) as u16, w, h);
            let [x, y, cw, ch] = v.crop_rect(w, h);
            assert!(x + cw <= w && y + ch <= h && cw >= 1 && ch >= 1, "{v:?}");
            let (fx, fy, fw, fh) = (v.crop[0], v.crop[1], v.crop[2], v.crop[3]);
            assert!(fx >= 0.0 && fy >= 0.0 && fx + fw <= 1.0 + 1e-6 && fy + fh <= 1.0 + 1e-6);
            let area = f64::from(cw * ch) / f64::from(w * h);
            let ratio = f64::from(cw) / f64::from(ch);
            let fallback = cw == w || ch == h;
            if !fallback && w > 50 && h > 50 {
                assert!((0.68..=1.0).contains(&area), "area {area} {v:?}");
                assert!((0.72..=1.39).contains(&ratio), "ratio {ratio} {v:?}");
            }
            for f in [v.brightness, v.contrast, v.saturation] {
                assert!((0.7..=1.3).contains(&f), "{v:?}");
            }
            assert!((-0.3..=0.3).contains(&v.hue));
            let mut ops = v.jitter_order.to_vec();
            ops.sort_by_key(|o| *o as u8);
            assert_eq!(ops, ViewParams::identity().jitter_order.to_vec());
            orders.insert(format!("{:?}", v.jitter_order));
            flips += usize::from(v.flip);
            grays += usize::from(v.grayscale);
        }
        let (pf, pg) = (flips as f64 / n as f64, grays as f64 / n as f64);
        assert!((0.45..0.55).contains(&pf), "flip rate {pf}");
        assert!((0.08..0.12).contains(&pg), "grayscale rate {pg}");
        assert_eq!(orders.len(), 24, "all jitter orders occur");
    }

    #[test]
    fn central_fallback_for_extreme_aspect_ratios() {
        // A 1000x10 strip can never fit a crop of ratio <= 4/3 with 70% of its area: central crop.
        let v = ViewParams::sample(0, "strip.png", 1, 1000, 10);
        assert_eq!(v.crop_rect(1000, 10), [493, 0, 13, 10]);
    }
}
