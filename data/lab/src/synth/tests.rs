use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::write::{CaptionRecord, SynthError, CAPTIONS};
use super::*;
use vl2v::dataset::{discover, lookup};

fn no_progress(_: usize, _: usize) {}

/// Every file under `root` (relative path → bytes).
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn small_corpus(seed: u64) -> Settings {
    let styles = ["sketch".to_string(), "photo".to_string()];
    let classes = ["star".to_string(), "key".to_string()];
    Settings::corpus(seed, 2, 32, &styles, &classes)
}

#[test]
fn the_same_seed_gives_identical_bytes_and_another_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    generate(&a, &small_corpus(5), &no_progress).unwrap();
    // One thread against rayon's default pool: scheduling must not show in the bytes.
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    single
        .install(|| generate(&b, &small_corpus(5), &no_progress))
        .unwrap();
    generate(&c, &small_corpus(6), &no_progress).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), 2 * 2 * 2 + 2, "images, captions and marker");
    assert_eq!(fa, fb);
    let differing = fa
        .iter()
        .filter(|(k, v)| k.ends_with(".png") && fc.get(*k) != Some(*v))
        .count();
    assert_eq!(differing, 8, "every image changes with the seed");
}

/// (mean saturation, fraction of near-white pixels, fraction of dark pixels, mean value, RGB spread: the
/// root mean squared distance of a pixel from the mean colour).
fn stats(img: &RgbImage) -> (f32, f32, f32, f32, f32) {
    let n = (img.width() * img.height()) as f32;
    let (mut sat, mut white, mut dark, mut val) = (0.0, 0.0, 0.0, 0.0);
    let (mut sum, mut sum2) = ([0.0f32; 3], 0.0);
    for p in img.pixels() {
        let rgb = p.0.map(|c| c as f32 / 255.0);
        let (_, s, v) = palette::to_hsv(rgb);
        sat += s;
        val += v;
        white += f32::from(v > 0.85 && s < 0.12);
        dark += f32::from(v < 0.5);
        for k in 0..3 {
            sum[k] += rgb[k];
            sum2 += rgb[k] * rgb[k];
        }
    }
    let mean2: f32 = sum.iter().map(|s| (s / n) * (s / n)).sum();
    let spread = (sum2 / n - mean2).max(0.0).sqrt();
    (sat / n, white / n, dark / n, val / n, spread)
}

#[test]
fn every_class_renders_something_in_every_style() {
    for style in Style::ALL {
        for class in CLASSES {
            let (img, _) = render(0, style, class, 0, 32).unwrap();
            assert_eq!(img.dimensions(), (32, 32));
            let (_, _, _, _, spread) = stats(&img);
            assert!(
                spread > 0.08,
                "{} {class} looks blank (spread {spread})",
                style.name()
            );
        }
    }
    assert!(render(0, Style::Photo, "giraffe", 0, 32).is_none());
}

#[test]
fn styles_shift_low_level_statistics() {
    let mean = |style: Style| {
        let mut acc = [0.0f32; 5];
        let mut n = 0.0;
        for class in CLASSES {
            for index in 0..2 {
                let (img, _) = render(1, style, class, index, 48).unwrap();
                let s = stats(&img);
                for (a, v) in acc.iter_mut().zip([s.0, s.1, s.2, s.3, s.4]) {
                    *a += v;
                }
                n += 1.0;
            }
        }
        acc.map(|a| a / n)
    };
    let [clip_sat, clip_white, ..] = mean(Style::Clipart);
    let [sketch_sat, sketch_white, ..] = mean(Style::Sketch);
    let [_, quick_white, quick_dark, ..] = mean(Style::Quickdraw);
    let [photo_sat, photo_white, ..] = mean(Style::Photo);
    let [_, _, _, neon_value, _] = mean(Style::Neon);
    let [paint_sat, paint_white, ..] = mean(Style::Painting);
    assert!(
        clip_sat > 3.0 * sketch_sat,
        "clipart {clip_sat} vs sketch {sketch_sat}"
    );
    assert!(sketch_white > 0.7, "sketch paper {sketch_white}");
    assert!(
        quick_white > 0.75 && quick_dark < 0.15,
        "quickdraw {quick_white} {quick_dark}"
    );
    assert!(
        photo_white < 0.1 && paint_white < 0.1,
        "textured backgrounds {photo_white} {paint_white}"
    );
    assert!(photo_sat > sketch_sat && paint_sat > sketch_sat);
    assert!(clip_white > 0.3, "clipart background {clip_white}");
    assert!(neon_value < 0.35, "neon is dark {neon_value}");
}

#[test]
fn the_benchmark_is_the_registered_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synthdg");
    let outcome = generate(&root, &Settings::benchmark(0, 2, 32), &no_progress).unwrap();
    assert_eq!(outcome, Outcome::Generated { images: 64 });
    let spec = lookup("synthdg").unwrap();
    assert_eq!(spec.folder, "synthdg");
    assert_eq!(spec.domains, Style::BENCHMARK.map(|s| s.name()));
    let data = discover("synthdg", &root, Some(spec)).unwrap();
    assert_eq!(data.domains, ["clipart", "painting", "photo", "sketch"]);
    let classes: Vec<&str> = data.classes.iter().map(|c| c.folder.as_str()).collect();
    assert_eq!(classes, BENCHMARK_CLASSES);
    assert_eq!(data.images.len(), 64);
    // Discovery without the registry entry sees the same domains (the marker is hidden).
    assert_eq!(discover("any", &root, None).unwrap().domains, data.domains);
}

/// Generates a corpus at `root` and reads back its caption records.
fn generate_captions(root: &Path, settings: &Settings) -> Vec<CaptionRecord> {
    generate(root, settings, &no_progress).unwrap();
    fs::read_to_string(root.join(CAPTIONS))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_corpus_captions_every_image_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("corpus");
    let settings = Settings::corpus(1, 2, 32, &[], &["cup".into(), "moon".into()]);
    let records = generate_captions(&root, &settings);
    assert_eq!(records.len(), Style::ALL.len() * 2 * 2);
    for r in &records {
        assert!(root.join(&r.path).is_file(), "{}", r.path);
        let style = Style::parse(&r.style).unwrap();
        assert!(r.caption.contains(style.noun()), "{}", r.caption);
        assert!(r.caption.contains(&r.class), "{}", r.caption);
        assert!(r.path.starts_with(&format!("{}/{}/", r.style, r.class)));
    }
}

#[test]
fn plain_captions_are_recorded_and_leave_the_style_unnamed_in_some() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("corpus");
    let settings = Settings::corpus(1, 4, 32, &[], &["cup".into()]).with_plain_captions(true);
    let records = generate_captions(&root, &settings);
    let named = records
        .iter()
        .filter(|r| r.caption.contains(Style::parse(&r.style).unwrap().noun()))
        .count();
    assert!(records.iter().all(|r| r.caption.contains("cup")));
    assert!(
        0 < named && named < records.len(),
        "{named} of {}",
        records.len()
    );
    // The same images as without the option; the marker records it, so neither is reused for the other.
    let styled = tmp.path().join("styled");
    let default = Settings::corpus(1, 4, 32, &[], &["cup".into()]);
    generate(&styled, &default, &no_progress).unwrap();
    for r in &records {
        assert_eq!(
            fs::read(root.join(&r.path)).unwrap(),
            fs::read(styled.join(&r.path)).unwrap()
        );
    }
    let err = generate(&root, &default, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("plain_captions"), "{err}");
}

#[test]
fn an_existing_output_is_reused_only_with_the_same_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("out");
    generate(&root, &small_corpus(0), &no_progress).unwrap();
    assert_eq!(
        generate(&root, &small_corpus(0), &no_progress).unwrap(),
        Outcome::AlreadyGenerated
    );
    let err = generate(&root, &small_corpus(9), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("seed = 0, not 9"), "{err}");
    let stranger = tmp.path().join("stranger");
    fs::create_dir(&stranger).unwrap();
    let err = generate(&stranger, &small_corpus(0), &no_progress).unwrap_err();
    assert!(matches!(err, SynthError::NotOurs(_)), "{err}");
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temporary folder left behind: {left:?}");
    let err = generate(
        &tmp.path().join("x"),
        &Settings::corpus(0, 1, 32, &[], &["giraffe".into()]),
        &no_progress,
    );
    assert!(matches!(err, Err(SynthError::UnknownClass { .. })));
}
