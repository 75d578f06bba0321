//! Parity with Pillow / transformers on the committed fixtures (tests/fixtures, made by make_fixtures.py):
//! decoded RGB pixels and the rendered 224×224 images of both preprocessing modes, per image. Skipped with
//! a note when the fixtures are absent.

use std::path::{Path, PathBuf};

use ::image::RgbImage;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{decode_rgb, load_rgb, DecodeError, Preprocess};
use crate::views::ViewParams;

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).to_path_buf()
}

fn expected() -> Option<Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).ok()?;
    Some(serde_json::from_str(&text).expect("tests/fixtures/expected.json is not valid JSON"))
}

/// Max and mean absolute difference over all samples.
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut max = 0u8;
    let mut sum = 0u64;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += u64::from(d);
    }
    (max, sum as f64 / a.as_raw().len().max(1) as f64)
}

/// Largest per-sample difference a fixture may show: 1 (rounding) everywhere except where a decoder other
/// than libjpeg-turbo is involved (see the comment at the use site).
fn allowed(format: &str) -> u8 {
    match format {
        // zune-jpeg's IDCT and chroma upsampling are not bit-exact with libjpeg-turbo's (±1–2 grey levels
        // on some decoded pixels before any resizing), so a resampled pixel can differ by a few levels.
        "JPEG" => 4,
        // libwebp and image-webp differ the same way for lossy WebP (YUV → RGB conversion).
        "WEBP" => 4,
        _ => 1,
    }
}

#[test]
fn fixtures_render_like_pillow() {
    let Some(expected) = expected() else {
        eprintln!("tests/fixtures/expected.json not found: parity test skipped");
        return;
    };
    let dir = fixtures();
    let images = expected["images"].as_array().expect("images[]");
    assert!(!images.is_empty());
    let mut failures = Vec::new();
    eprintln!(
        "{:<28} {:>5} {:>5} {:>9} | {:>9} {:>8} | {:>9} {:>8} | rgb",
        "image", "fmt", "mode", "size", "clip max", "mean", "vl2v max", "mean"
    );
    for entry in images {
        let file = entry["file"].as_str().expect("file");
        let format = entry["format"].as_str().unwrap_or("?");
        let mode = entry["mode"].as_str().unwrap_or("?");
        let img = match load_rgb(&dir.join(file)) {
            Ok(img) => img,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let rgb_same = entry["rgb_sha256"].as_str().map(|want| {
            let got: String = Sha256::digest(img.as_raw())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            got == want
        });
        let mut row = Vec::new();
        for (pre, key) in [
            (Preprocess::clip(224), "clip_crop"),
            (Preprocess::vl2v(224), "vl2v_resized"),
        ] {
            let want = entry[key].as_str().expect(key);
            let want = ::image::open(dir.join(want)).expect(want).to_rgb8();
            let got = pre.render(&img, &ViewParams::identity());
            let (max, mean) = diff(&got, &want);
            row.push((max, mean));
            if max > allowed(format) {
                failures.push(format!(
                    "{file} {key}: max diff {max} > {}",
                    allowed(format)
                ));
            }
        }
        let size = format!("{}x{}", img.width(), img.height());
        let rgb = match rgb_same {
            Some(true) => "same",
            Some(false) => "DIFFERENT",
            None => "-",
        };
        eprintln!(
            "{file:<28} {format:>5} {mode:>5} {size:>9} | {:>9} {:>8.4} | {:>9} {:>8.4} | {rgb}",
            row[0].0, row[0].1, row[1].0, row[1].1
        );
        // Lossless formats must decode to exactly Pillow's pixels.
        if !matches!(format, "JPEG" | "WEBP") && rgb_same == Some(false) {
            failures.push(format!("{file}: decoded RGB differs from Pillow's"));
        }
    }
    assert!(
        failures.is_empty(),
        "parity failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn bad_fixtures_are_clear_errors() {
    let dir = fixtures().join("bad");
    if !dir.exists() {
        eprintln!("tests/fixtures/bad not found: test skipped");
        return;
    }
    let check = |name: &str, want: fn(&DecodeError) -> bool, text: &str| {
        let path = dir.join(name);
        let err = load_rgb(&path).expect_err(name);
        let msg = err.to_string();
        eprintln!("{name}: {msg}");
        assert!(want(&err), "{name}: unexpected error {msg}");
        assert!(msg.contains(name) && msg.contains(text), "{name}: {msg}");
        assert!(!msg.contains('\n'));
    };
    check(
        "empty.jpg",
        |e| matches!(e, DecodeError::Empty { .. }),
        "empty",
    );
    check(
        "truncated.jpg",
        |e| matches!(e, DecodeError::Truncated { .. }),
        "image file is truncated",
    );
    check(
        "garbage.png",
        |e| matches!(e, DecodeError::UnknownFormat { .. }),
        "cannot identify image file",
    );
}

#[test]
fn every_prefix_of_every_fixture_decodes_or_errors() {
    let dir = fixtures().join("images");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("tests/fixtures/images not found: test skipped");
        return;
    };
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let step = (bytes.len() / 40).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let _ = decode_rgb(&bytes[..cut], &entry.path());
        }
    }
}

// SCRATCH (remove before handing over): compare with /tmp/imgref made by a local Pillow script.
#[test]
fn scratch_pillow_ops() {
    use super::augment::*;
    use super::resize::*;
    let dir = Path::new("/tmp/imgref");
    let Ok(text) = std::fs::read_to_string(dir.join("cases.json")) else {
        return;
    };
    let cases: Value = serde_json::from_str(&text).unwrap();
    let mut worst = 0;
    for c in cases.as_array().unwrap() {
        let src = ::image::open(dir.join(c["src"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let want = ::image::open(dir.join(c["out"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let f = |k: &str| c[k].as_f64().unwrap();
        let filt = || Filter::from_name(c["filter"].as_str().unwrap()).unwrap();
        let size = || {
            let s = c["size"].as_array().unwrap();
            (s[0].as_u64().unwrap() as u32, s[1].as_u64().unwrap() as u32)
        };
        let got = match c["op"].as_str().unwrap() {
            "resize" => resize(&src, size().0, size().1, filt()),
            "crop" => {
                let r: Vec<u32> = c["rect"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                resize_crop(&src, [r[0], r[1], r[2], r[3]], size().0, size().1, filt())
            }
            "box" => {
                let b: Vec<f32> = c["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                resize_box(&src, [b[0], b[1], b[2], b[3]], size().0, size().1, filt())
            }
            op => {
                let mut im = src.clone();
                match op {
                    "brightness" => adjust_brightness(&mut im, f("factor") as f32),
                    "contrast" => adjust_contrast(&mut im, f("factor") as f32),
                    "saturation" => adjust_saturation(&mut im, f("factor") as f32),
                    "hue" => adjust_hue(&mut im, f("factor") as f32),
                    "gray" => to_grayscale(&mut im),
                    _ => unreachable!(),
                }
                im
            }
        };
        let (max, mean) = diff(&got, &want);
        worst = worst.max(max);
        eprintln!(
            "{:<40} max {max} mean {mean:.5}",
            c["out"].as_str().unwrap()
        );
    }
    assert_eq!(worst, 0);
}

#[test]
fn scratch_dump_decoded() {
    if !Path::new("/tmp/imgref").exists() {
        return;
    }
    for f in ["rgb.jpg", "upper.JPG", "cmyk.jpg"] {
        let img = load_rgb(&fixtures().join("images").join(f)).unwrap();
        img.save(format!("/tmp/imgref/dec_{f}.png")).unwrap();
    }
}
