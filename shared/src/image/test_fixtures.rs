//! The committed reference fixtures under `tests/fixtures/` for the image tests. A missing fixture fails
//! the test that needs it, naming the file and how to regenerate it: a parity test that skips itself
//! silently checks nothing.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `tests/fixtures/`.
pub(crate) fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// `tests/fixtures/<rel>`, which must exist.
///
/// # Panics
/// If it does not, with a message naming the file and `make fixtures`.
pub(crate) fn path(rel: &str) -> PathBuf {
    let path = dir().join(rel);
    assert!(
        path.exists(),
        "missing test fixture {}: it is committed; restore it, or regenerate every fixture with \
         `make fixtures` (see tests/fixtures/README.md)",
        path.display()
    );
    path
}

/// The JSON fixture `tests/fixtures/<rel>`.
pub(crate) fn json(rel: &str) -> Value {
    let path = path(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{} is not valid JSON ({e}): run `make fixtures`",
            path.display()
        )
    })
}

/// `tests/fixtures/pillow/pillow.json`, written by `tests/fixtures/make_pillow_fixtures.py`.
pub(crate) fn pillow() -> Value {
    json("pillow/pillow.json")
}

/// The first 16 hex digits of the sha256 of `bytes` (the fixtures' `sha256_16`).
pub(crate) fn short_sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A non-negative integer field that fits `T` (a fixture's byte, size or count).
pub(crate) fn int<T: TryFrom<u64>>(v: &Value) -> T {
    v.as_u64()
        .and_then(|n| T::try_from(n).ok())
        .unwrap_or_else(|| panic!("fixture value {v} is not an integer in range"))
}

/// A number field as the `f32` the Rust side uses (the fixtures store `f32` values exactly).
pub(crate) fn f32_of(v: &Value) -> f32 {
    v.as_f64()
        .unwrap_or_else(|| panic!("fixture value {v} is not a number")) as f32
}

/// A string field.
pub(crate) fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("fixture value {v} is not a string"))
}

/// A list field.
pub(crate) fn list(v: &Value) -> &[Value] {
    v.as_array()
        .unwrap_or_else(|| panic!("fixture value {v} is not a list"))
}

/// An `[r, g, b]` (or `[h, s, v]`) byte triple.
pub(crate) fn triple(v: &Value) -> [u8; 3] {
    match list(v) {
        [a, b, c] => [int(a), int(b), int(c)],
        _ => panic!("fixture value {v} is not a triple"),
    }
}

/// A list of byte triples.
pub(crate) fn triples(v: &Value) -> Vec<[u8; 3]> {
    list(v).iter().map(triple).collect()
}

#[test]
#[should_panic(
    expected = "no-such-fixture.json: it is committed; restore it, or regenerate every fixture with `make fixtures`"
)]
fn a_missing_fixture_fails_naming_it() {
    path("pillow/no-such-fixture.json");
}
