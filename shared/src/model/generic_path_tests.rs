//! The device-generic path (candle's ops, what a CUDA build runs) against the fused CPU path, on the CPU with
//! the generic path forced (`kernel_path::with_generic_ops`): every model's inference output, and its training
//! output with the gradient of every parameter, on the fixtures the parity tests use. Tolerances: outputs
//! 1e-4 and gradients 1e-3, relative to the largest magnitude of the fused side.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::clip::{load_clip_config, Clip};
use super::kernel_path::with_generic_ops;
use super::load_into_varmap;
use super::students::{Student, StudentConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// max |a − b| / max |b|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let max = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    max(&(a - b).unwrap()) / max(b).max(f32::MIN_POSITIVE)
}

/// A fixed probe of an output's shape, so that both paths differentiate the same loss.
fn probe(dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin()).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Output and every variable's gradient (by name) of `forward` under a linear loss.
fn train_pass(varmap: &VarMap, forward: impl Fn() -> Tensor) -> (Tensor, Vec<(String, Tensor)>) {
    let y = forward();
    let grads = (&y * probe(y.dims()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let vars = varmap.data().lock().unwrap();
    let mut named: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(name, var)| {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            (name.clone(), g.clone())
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    (y, named)
}

fn assert_paths_agree(what: &str, varmap: &VarMap, forward: impl Fn() -> Tensor) {
    let (fused_y, fused_g) = train_pass(varmap, &forward);
    let (generic_y, generic_g) = with_generic_ops(|| train_pass(varmap, &forward));
    let rel = rel_diff(&generic_y, &fused_y);
    assert!(rel <= 1e-4, "{what}: training outputs differ by {rel:.2e}");
    let mut worst = (0.0f32, String::new());
    for ((name, a), (_, e)) in generic_g.iter().zip(&fused_g) {
        let rel = rel_diff(a, e);
        assert!(
            rel <= 1e-3,
            "{what}: gradient of {name} differs by {rel:.2e}"
        );
        if rel >= worst.0 {
            worst = (rel, name.clone());
        }
    }
    eprintln!(
        "{what}: output {rel:.1e}, {} gradients, worst {:.1e} ({})",
        fused_g.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn students_generic_path_matches_fused() {
    let dev = Device::Cpu;
    let cases = [
        // Odd and non-square inputs: stride-2 windows that do not end on the last row or column.
        ("resnet_basic", "test-resnet-basic", (57, 57)),
        ("resnet_basic", "test-resnet-basic", (64, 57)),
        ("resnet_bottleneck", "test-resnet-bottleneck", (45, 50)),
        ("vit", "test-vit", (32, 32)),
        ("deit", "test-deit", (32, 32)),
    ];
    for (prefix, name, (h, w)) in cases {
        let config = StudentConfig::by_name(name).unwrap();
        let weights = fixtures().join(format!("students/{prefix}.safetensors"));
        let pixels = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev).unwrap();

        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev) }.unwrap();
        let frozen = Student::load(vb, &config, false).unwrap();
        let fused = frozen.forward(&pixels, false).unwrap();
        let generic = with_generic_ops(|| frozen.forward(&pixels, false).unwrap());
        let rel = rel_diff(&generic, &fused);
        assert!(
            rel <= 1e-4,
            "{name} {h}×{w}: inference outputs differ by {rel:.2e}"
        );

        let varmap = VarMap::new();
        let model = Student::trainable(&varmap, &weights, &config, &dev).unwrap();
        assert_paths_agree(&format!("{name} {h}×{w}"), &varmap, || {
            model.forward(&pixels, true).unwrap()
        });
    }
}

#[test]
fn clip_generic_path_matches_fused() {
    let dev = Device::Cpu;
    let tiny = fixtures().join("tiny_clip");
    let config = load_clip_config(&tiny.join("config.json")).unwrap();
    let pixels = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &dev).unwrap();
    let ids = vec![
        vec![49406, 320, 1125, 539, 320, 2368, 49407],
        vec![49406, 2368, 49407],
    ];

    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[tiny.join("model.safetensors")], DType::F32, &dev)
    }
    .unwrap();
    let frozen = Clip::load(vb, &config, true).unwrap();
    let image = || frozen.image_features(&pixels, false).unwrap();
    let text = || frozen.text_features(&ids, 49407, false).unwrap();
    for (what, f) in [("image", &image as &dyn Fn() -> Tensor), ("text", &text)] {
        let rel = rel_diff(&with_generic_ops(f), &f());
        assert!(
            rel <= 1e-4,
            "CLIP {what} inference outputs differ by {rel:.2e}"
        );
    }

    let varmap = VarMap::new();
    let model = Clip::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        &config,
        false,
    )
    .unwrap();
    load_into_varmap(&varmap, &tiny.join("model.safetensors")).unwrap();
    assert_paths_agree("tiny CLIP", &varmap, || {
        let img = model.image_features(&pixels, true).unwrap();
        let txt = model.text_features(&ids, 49407, true).unwrap();
        img.matmul(&txt.t().unwrap())
            .unwrap()
            .broadcast_mul(&model.logit_scale().exp().unwrap())
            .unwrap()
    });
}
