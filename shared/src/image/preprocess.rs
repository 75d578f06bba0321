//! Turning a decoded RGB image and a [`ViewParams`] into the encoder's input tensor.
//!
//! Two reference pipelines:
//! - [`PreprocessMode::Clip`]: Hugging Face `CLIPImageProcessor` — shortest side to `size` (bicubic, the
//!   long side `int(size * long / short)`), centre crop `size × size` (top `(h - size) // 2`, zero padding
//!   if the image were smaller), rescale 1/255, OpenAI CLIP mean/std;
//! - [`PreprocessMode::Vl2v`]: what the official VL2V-ADiP code feeds its teacher — torchvision
//!   `Resize((size, size))` on a PIL image (bilinear squash with antialias), `ToTensor`, ImageNet mean/std.
//!
//! The identity view is exactly that evaluation path. Any other view is DomainBed's training transform:
//! the view's crop box (from the original image) resized to `size × size` with the pipeline's
//! interpolation (torchvision `resized_crop`), then flip, colour jitter and grayscale
//! ([`super::augment`]), then the same normalisation.

use ::image::RgbImage;
use serde::{Deserialize, Serialize};

use super::augment::apply_pixel_ops;
use super::resize::{resize_crop, resize_region, Filter};
use crate::views::ViewParams;

/// OpenAI CLIP normalisation (`OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`: 0.48145466, 0.4578275, 0.40821073 /
/// 0.26862954, 0.26130258, 0.27577711, as `f32`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
/// ImageNet normalisation (torchvision / DomainBed).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `Preprocess::resize` values.
pub const RESIZE_SHORTEST_CENTER_CROP: &str = "shortest-side+center-crop";
pub const RESIZE_SQUASH: &str = "squash";

/// Which reference pipeline a [`Preprocess`] reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreprocessMode {
    /// Hugging Face `CLIPImageProcessor`.
    Clip,
    /// The official VL2V-ADiP / DomainBed evaluation transform.
    Vl2v,
}

impl PreprocessMode {
    /// `"clip"` or `"vl2v"`.
    pub fn name(self) -> &'static str {
        match self {
            PreprocessMode::Clip => "clip",
            PreprocessMode::Vl2v => "vl2v",
        }
    }
}

impl std::fmt::Display for PreprocessMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PreprocessMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "clip" => Ok(PreprocessMode::Clip),
            "vl2v" => Ok(PreprocessMode::Vl2v),
            _ => Err(format!(
                "unknown preprocessing mode {s:?} (expected \"clip\" or \"vl2v\")"
            )),
        }
    }
}

/// A complete preprocessing recipe; serialisable into a cache manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub mode: PreprocessMode,
    /// Output side in pixels.
    pub size: u32,
    /// `"shortest-side+center-crop"` or `"squash"`: the evaluation view's geometry.
    pub resize: String,
    /// `"bicubic"` or `"bilinear"`, for the evaluation resize and for augmented crops alike.
    pub interpolation: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// `CLIPImageProcessor` with `shortest_edge = crop_size = size`.
    pub fn clip(size: u32) -> Self {
        Preprocess {
            mode: PreprocessMode::Clip,
            size,
            resize: RESIZE_SHORTEST_CENTER_CROP.into(),
            interpolation: Filter::Bicubic.name().into(),
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// The VL2V-ADiP teacher input: squash to `size × size` bilinear, ImageNet normalisation.
    pub fn vl2v(size: u32) -> Self {
        Preprocess {
            mode: PreprocessMode::Vl2v,
            size,
            resize: RESIZE_SQUASH.into(),
            interpolation: Filter::Bilinear.name().into(),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    pub fn new(mode: PreprocessMode, size: u32) -> Self {
        match mode {
            PreprocessMode::Clip => Self::clip(size),
            PreprocessMode::Vl2v => Self::vl2v(size),
        }
    }

    /// Checks the free-form fields (e.g. after reading a manifest). [`Preprocess::apply`] never fails:
    /// an unrecognised `resize` or `interpolation` falls back to the mode's own.
    pub fn validate(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("preprocessing size must be at least 1".into());
        }
        if ![RESIZE_SHORTEST_CENTER_CROP, RESIZE_SQUASH].contains(&self.resize.as_str()) {
            return Err(format!(
                "unknown resize {:?} (expected {RESIZE_SHORTEST_CENTER_CROP:?} or {RESIZE_SQUASH:?})",
                self.resize
            ));
        }
        if Filter::from_name(&self.interpolation).is_none() {
            return Err(format!(
                "unknown interpolation {:?} (expected \"bicubic\" or \"bilinear\")",
                self.interpolation
            ));
        }
        if self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(format!(
                "std must be finite and non-zero, got {:?}",
                self.std
            ));
        }
        Ok(())
    }

    /// The resampling filter in use.
    pub fn filter(&self) -> Filter {
        Filter::from_name(&self.interpolation).unwrap_or(match self.mode {
            PreprocessMode::Clip => Filter::Bicubic,
            PreprocessMode::Vl2v => Filter::Bilinear,
        })
    }

    fn squash(&self) -> bool {
        match self.resize.as_str() {
            RESIZE_SQUASH => true,
            RESIZE_SHORTEST_CENTER_CROP => false,
            _ => self.mode == PreprocessMode::Vl2v,
        }
    }

    /// The `size × size` 8-bit image before rescaling and normalisation.
    pub fn render(&self, img: &RgbImage, view: &ViewParams) -> RgbImage {
        let size = self.size.max(1);
        let filter = self.filter();
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return RgbImage::new(size, size);
        }
        if view.is_identity() {
            return if self.squash() {
                resize_region(img, full_box(w, h), size, size, [0, 0, size, size], filter)
            } else {
                shortest_side_center_crop(img, size, filter)
            };
        }
        let mut out = resize_crop(img, view.crop_rect(w, h), size, size, filter);
        apply_pixel_ops(&mut out, view);
        out
    }

    /// CHW `f32` tensor of length `3 * size * size`, normalised.
    pub fn apply(&self, img: &RgbImage, view: &ViewParams) -> Vec<f32> {
        let n = self.size.max(1) as usize;
        let mut out = vec![0.0; 3 * n * n];
        self.apply_into(img, view, &mut out);
        out
    }

    /// Like [`Preprocess::apply`], writing into `out` (e.g. one slot of a batch buffer).
    ///
    /// # Panics
    /// If `out.len() != 3 * size * size`.
    pub fn apply_into(&self, img: &RgbImage, view: &ViewParams, out: &mut [f32]) {
        let rendered = self.render(img, view);
        self.normalize_into(&rendered, out);
    }

    /// Rescales and normalises an already rendered image into CHW order.
    ///
    /// # Panics
    /// If `out.len()` is not three times the image's pixel count.
    pub fn normalize_into(&self, img: &RgbImage, out: &mut [f32]) {
        let plane = img.width() as usize * img.height() as usize;
        assert_eq!(out.len(), 3 * plane, "output buffer has the wrong length");
        let lut = self.lookup_table();
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
            r[i] = lut[0][usize::from(p[0])];
            g[i] = lut[1][usize::from(p[1])];
            b[i] = lut[2][usize::from(p[2])];
        }
    }

    /// Normalised value of every 8-bit sample, per channel, with the reference's float arithmetic:
    /// transformers rescales in `f64` then casts to `f32`; torchvision divides in `f32`.
    fn lookup_table(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                let x = match self.mode {
                    PreprocessMode::Clip => (v as f64 * (1.0 / 255.0)) as f32,
                    PreprocessMode::Vl2v => v as f32 / 255.0,
                };
                *slot = (x - self.mean[c]) / self.std[c];
            }
        }
        lut
    }
}

fn full_box(w: u32, h: u32) -> [f32; 4] {
    [0.0, 0.0, w as f32, h as f32]
}

/// transformers' `resize` with `get_resize_output_image_size(default_to_square=False)` followed by
/// `center_crop`; only the kept window is resampled.
fn shortest_side_center_crop(img: &RgbImage, size: u32, filter: Filter) -> RgbImage {
    let (w, h) = img.dimensions();
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python: int(size * long / short), a correctly rounded float division then truncation.
    let new_long = ((u64::from(size) * u64::from(long)) as f64 / f64::from(short)) as u32;
    let (nw, nh) = if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    };
    if nw >= size && nh >= size {
        let (left, top) = ((nw - size) / 2, (nh - size) / 2);
        return resize_region(img, full_box(w, h), nw, nh, [left, top, size, size], filter);
    }
    // Smaller than the crop (cannot happen when the shortest side is resized to the crop size, kept
    // for completeness): transformers pads with zeros, centring with ceil((new - old) / 2).
    let resized = resize_region(img, full_box(w, h), nw, nh, [0, 0, nw, nh], filter);
    let mut out = RgbImage::new(size, size);
    let pad = |n: u32| (size.saturating_sub(n)).div_ceil(2);
    let crop_off = |n: u32| n.saturating_sub(size) / 2;
    let (px, py, cx, cy) = (pad(nw), pad(nh), crop_off(nw), crop_off(nh));
    for y in 0..nh.min(size) {
        for x in 0..nw.min(size) {
            out.put_pixel(px + x, py + y, *resized.get_pixel(cx + x, cy + y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::Rgb;

    fn sample(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 3) as u8, (y * 5) as u8, ((x * y) % 251) as u8])
        })
    }

    #[test]
    fn identity_view_is_the_eval_path() {
        let img = sample(120, 90);
        let clip = Preprocess::clip(64);
        let expect = {
            let full = super::super::resize::resize(&img, 85, 64, Filter::Bicubic);
            ::image::imageops::crop_imm(&full, 10, 0, 64, 64).to_image()
        };
        assert_eq!(clip.render(&img, &ViewParams::identity()), expect);
        let vl2v = Preprocess::vl2v(64);
        let squash = super::super::resize::resize(&img, 64, 64, Filter::Bilinear);
        assert_eq!(vl2v.render(&img, &ViewParams::identity()), squash);
    }

    #[test]
    fn augmented_views_replay_exactly() {
        let img = sample(200, 150);
        for pre in [Preprocess::clip(48), Preprocess::vl2v(48)] {
            for view in 1..20u16 {
                let v = ViewParams::sample(3, "a/b/c.jpg", view, 200, 150);
                let a = pre.apply(&img, &v);
                let b = pre.apply(&img, &v.clone());
                assert_eq!(a.len(), 3 * 48 * 48);
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
                assert!(a.iter().all(|x| x.is_finite()));
            }
            let v1 = ViewParams::sample(3, "a/b/c.jpg", 1, 200, 150);
            let v2 = ViewParams::sample(4, "a/b/c.jpg", 1, 200, 150);
            assert_ne!(pre.render(&img, &v1), pre.render(&img, &v2));
        }
    }

    #[test]
    fn normalisation_matches_the_references() {
        let img = RgbImage::from_pixel(2, 2, Rgb([0, 128, 255]));
        let v = Preprocess::vl2v(2).apply(&img, &ViewParams::identity());
        assert!((v[0] - (0.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((v[4] - (128.0 / 255.0 - 0.456) / 0.224).abs() < 1e-6);
        assert!((v[8] - (1.0 - 0.406) / 0.225).abs() < 1e-6);
        let c = Preprocess::clip(2).apply(&img, &ViewParams::identity());
        assert!((c[0] + 0.481_454_66 / 0.268_629_54).abs() < 1e-6);
    }

    #[test]
    fn clip_output_size_follows_transformers() {
        // 300x200 → shortest side 224 → 336x224 → crop left (336 - 224) // 2 = 56.
        let img = sample(300, 200);
        let full = super::super::resize::resize(&img, 336, 224, Filter::Bicubic);
        let expect = ::image::imageops::crop_imm(&full, 56, 0, 224, 224).to_image();
        assert_eq!(
            Preprocess::clip(224).render(&img, &ViewParams::identity()),
            expect
        );
        // Odd: 7x3 → size 4: long = int(4 * 7 / 3) = 9.
        let img = sample(7, 3);
        let full = super::super::resize::resize(&img, 9, 4, Filter::Bicubic);
        let expect = ::image::imageops::crop_imm(&full, 2, 0, 4, 4).to_image();
        assert_eq!(
            Preprocess::clip(4).render(&img, &ViewParams::identity()),
            expect
        );
    }

    #[test]
    fn serde_and_validation() {
        let p = Preprocess::clip(224);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"mode\":\"clip\""));
        assert_eq!(serde_json::from_str::<Preprocess>(&json).unwrap(), p);
        assert!(p.validate().is_ok());
        let bad = Preprocess {
            interpolation: "lanczos".into(),
            ..Preprocess::vl2v(224)
        };
        assert!(bad.validate().is_err());
        assert_eq!(bad.filter(), Filter::Bilinear);
        assert_eq!(
            "VL2V".parse::<PreprocessMode>().unwrap(),
            PreprocessMode::Vl2v
        );
    }

    #[test]
    fn tiny_and_empty_images_do_not_panic() {
        for pre in [Preprocess::clip(8), Preprocess::vl2v(8)] {
            for (w, h) in [(1, 1), (1, 50), (50, 1), (0, 0)] {
                let img = sample(w, h);
                for view in 0..5 {
                    let v = ViewParams::sample(0, "x", view, w, h);
                    assert_eq!(pre.apply(&img, &v).len(), 3 * 64);
                }
            }
        }
    }
}
