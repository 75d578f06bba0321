//! The view replay checked against torchvision: `embed` renders each cached (image, view) with
//! [`Preprocess::apply`] from the row's stored parameters, and `distill` feeds the student the same function's
//! output, so the student sees the view whose teacher embedding is cached only if that function renders the
//! view the way the reference pipeline (DomainBed's transforms on PIL images) would. Its own tests can only
//! check that it is deterministic; this one compares it with tensors that torchvision's functional ops made
//! from the same stored parameters (tests/fixtures/views/, written by make_view_fixture.py).
//!
//! The inputs are lossless (PNG, BMP) and every 8-bit step is bit-exact with Pillow, so the rendered images
//! must be identical and the normalised tensors can differ only by float rounding: `ToTensor`'s `v / 255`
//! is the same `f32` division here, and CLIP mode rescales in `f64` (transformers' order), which can move a
//! value by one `f32` ulp (≤ 2.4e-7 after dividing by the std). One grey level of difference is at least
//! 1 / 255 / 0.2758 ≈ 0.0142, so a tolerance of 1e-5 separates float rounding from any pixel change.

use serde_json::Value;

use super::test_fixtures::{self, f32_of, int, list, str_of};
use super::{load_rgb, Preprocess, PreprocessMode};
use crate::cache::schema::parse_jitter_order;
use crate::views::ViewParams;

const TOLERANCE: f32 = 1e-5;

/// The view as `distill` rebuilds it from a cache row (`jitter_order` as letters of `bcsh`).
fn stored_view(v: &Value) -> ViewParams {
    let crop: Vec<f32> = list(&v["crop"]).iter().map(f32_of).collect();
    let flag = |key: &str| {
        v[key]
            .as_bool()
            .unwrap_or_else(|| panic!("{key} is not a bool in {v}"))
    };
    ViewParams {
        crop: [crop[0], crop[1], crop[2], crop[3]],
        flip: flag("flip"),
        brightness: f32_of(&v["brightness"]),
        contrast: f32_of(&v["contrast"]),
        saturation: f32_of(&v["saturation"]),
        hue: f32_of(&v["hue"]),
        jitter_order: parse_jitter_order(str_of(&v["jitter_order"]))
            .unwrap_or_else(|e| panic!("{e} in {v}")),
        grayscale: flag("grayscale"),
    }
}

#[test]
fn replayed_views_match_torchvision() {
    let doc = test_fixtures::json("views/views.json");
    let raw = std::fs::read(test_fixtures::path("views/views.f32")).expect("views.f32");
    let tensors: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let size: u32 = int(&doc["size"]);
    let entries = list(&doc["views"]);
    assert!(!entries.is_empty());
    let (mut checked, mut worst, mut failures) = (0, 0.0f32, Vec::new());
    eprintln!(
        "{:<16} {:<7} {:<5} {:>11} {:<5} {:<5} {:<4} | max abs diff",
        "image", "view", "mode", "box", "order", "flip", "gray"
    );
    for entry in entries {
        let file = str_of(&entry["image"]);
        let img = load_rgb(&test_fixtures::path(file)).unwrap_or_else(|e| panic!("{e}"));
        let dims: Vec<u32> = list(&entry["size"]).iter().map(int).collect();
        assert_eq!(dims, [img.width(), img.height()], "{file}");
        let view = stored_view(&entry["view"]);
        // The normalised box must round back to the integer box torchvision cropped.
        let b = &entry["box"];
        let want_rect: [u32; 4] = [
            int(&b["left"]),
            int(&b["top"]),
            int(&b["width"]),
            int(&b["height"]),
        ];
        assert_eq!(
            view.crop_rect(img.width(), img.height()),
            want_rect,
            "{file}: crop box"
        );
        let kind = if view.is_identity() {
            "eval"
        } else {
            "augment"
        };
        for expected in list(&entry["expected"]) {
            let mode: PreprocessMode = str_of(&expected["mode"]).parse().expect("mode");
            let offset: usize = int(&expected["offset"]);
            let shape: Vec<u32> = list(&expected["shape"]).iter().map(int).collect();
            assert_eq!(shape, [3, size, size]);
            let want = &tensors[offset..offset + (3 * size * size) as usize];
            let got = Preprocess::new(mode, size).apply(&img, &view);
            assert_eq!(got.len(), want.len());
            let max = got
                .iter()
                .zip(want)
                // A NaN anywhere counts as an infinite difference (f32::max would drop it).
                .map(|(a, b)| (a - b).abs())
                .map(|d| if d.is_nan() { f32::INFINITY } else { d })
                .fold(0.0f32, f32::max);
            eprintln!(
                "{:<16} {kind:<7} {mode:<5} {:>11} {:<5} {:<5} {:<4} | {max:.3e}",
                file.trim_start_matches("images/"),
                format!("{want_rect:?}").replace(' ', ""),
                str_of(&entry["view"]["jitter_order"]),
                view.flip,
                view.grayscale,
            );
            worst = worst.max(max);
            checked += 1;
            if max > TOLERANCE {
                failures.push(format!(
                    "{file} {kind} view {:?} ({mode}): max abs diff {max} over {TOLERANCE}",
                    entry["view"]
                ));
            }
        }
    }
    eprintln!("{checked} tensors, largest max abs diff {worst:.3e} (tolerance {TOLERANCE:e})");
    assert!(
        checked >= 12,
        "expected at least 12 tensors, found {checked}"
    );
    assert!(
        failures.is_empty(),
        "the replayed views differ from torchvision's:\n{}",
        failures.join("\n")
    );
}
