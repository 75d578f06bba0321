//! Reading the reference fixtures of tests/fixtures/family/ (values the authors' own code computed with
//! torch), for the losses' tests.

use serde_json::Value;

/// `tests/fixtures/family/<name>`, parsed.
pub fn load(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/family/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The array `key` as f32s.
pub fn floats(v: &Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The array `key` as indices.
pub fn usizes(v: &Value, key: &str) -> Vec<usize> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// `a` within `tol`·(1 + |b|) of `b`.
pub fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
}
