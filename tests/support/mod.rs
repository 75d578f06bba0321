//! Helpers shared by the end-to-end tests: the built binaries, the committed fixtures, and synthetic
//! DomainBed-layout datasets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};

/// A binary of this workspace, built by `cargo build --bins` (the Makefile's `test` target does it).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn tiny_clip() -> PathBuf {
    fixtures().join("tiny_clip")
}

/// Runs a binary and returns its output, with stdout/stderr as text.
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `embed --dataset toy --root ROOT --cache-dir CACHE_DIR EXTRA…`, offline.
pub fn embed(root: &Path, cache_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("embed"));
    cmd.args(["--dataset", "toy", "--root"])
        .arg(root)
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(extra)
        .env("HF_HUB_OFFLINE", "1");
    cmd
}

/// [`embed`] with the committed tiny CLIP as the teacher.
pub fn embed_tiny_clip(root: &Path, cache_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = embed(root, cache_dir, extra);
    cmd.arg("--model").arg(tiny_clip());
    cmd
}

/// Runs an `embed` command that must succeed and returns the cache it wrote (its last stdout line).
pub fn cache_dir_of(cmd: &mut Command) -> PathBuf {
    let (out, stdout, stderr) = run(cmd);
    assert!(out.status.success(), "{stderr}");
    PathBuf::from(stdout.lines().last().expect("embed prints the cache dir"))
}

/// The records of a run folder's results.jsonl.
pub fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A deterministic picture: a gradient whose colours depend on (domain, class, index), plus a square.
pub fn picture(domain: usize, class: usize, index: usize, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let inside = x > w / 4 && x < 3 * w / 4 && y > h / 4 && y < 3 * h / 4;
        let base = [
            (40 * class) as u32 + x * 3,
            (60 * domain) as u32 + y * 2,
            (index * 7) as u32 + x + y,
        ];
        let v = |i: usize| {
            if inside {
                255 - (base[i] % 256) as u8
            } else {
                (base[i] % 256) as u8
            }
        };
        Rgb([v(0), v(1), v(2)])
    })
}

/// Writes `root/<domain>/<class>/img_<i>.<ext>` for every domain and class; extensions cycle through
/// png, JPG and jpeg. Returns the number of images written.
pub fn write_dataset(
    root: &Path,
    domains: &[&str],
    classes: &[&str],
    per_class: usize,
    size: (u32, u32),
) -> usize {
    let mut n = 0;
    for (d, domain) in domains.iter().enumerate() {
        for (c, class) in classes.iter().enumerate() {
            let dir = root.join(domain).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let ext = ["png", "JPG", "jpeg"][i % 3];
                picture(d, c, i, size.0, size.1)
                    .save(dir.join(format!("img_{i:03}.{ext}")))
                    .unwrap();
                n += 1;
            }
        }
    }
    n
}
