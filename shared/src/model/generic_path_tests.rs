//! The device-generic path (candle's ops, what a CUDA build runs) against the fused CPU path: every model's
//! inference output, and its training output with the gradient of every parameter, on the fixtures the
//! parity tests use. Tolerances: outputs 1e-4 and gradients 1e-3, relative to the largest magnitude of the
//! fused side.
//!
//! The generic side runs on the CPU with the generic path forced (`kernel_path::with_generic_ops`), or, with
//! `VL2V_TEST_DEVICE=cuda` in a CUDA build, on the GPU itself (tests/cuda/gpu_check.sh): then these tests
//! compare what the GPU computes with the CPU path.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::clip::{load_clip_config, Clip};
use super::kernel_path::with_generic_ops;
use super::load_into_varmap;
use super::students::{Student, StudentConfig};
use super::test_tensors::named_gradients;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The device of the generic side: `VL2V_TEST_DEVICE` (default `cpu`).
fn generic_device() -> Device {
    super::device(&std::env::var("VL2V_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())).unwrap()
}

/// Runs `f` on the generic path of `device`: forced on the CPU, the only one elsewhere.
fn generic<R>(device: &Device, f: impl FnOnce() -> R) -> R {
    if device.is_cpu() {
        with_generic_ops(f)
    } else {
        f()
    }
}

fn to_cpu(t: &Tensor) -> Tensor {
    t.to_device(&Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    to_cpu(t)
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a − b| / max |b|, both brought to the CPU.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(to_cpu(a) - to_cpu(b)).unwrap()) / max_abs(b).max(f32::MIN_POSITIVE)
}

/// A fixed probe of an output's shape, so that both paths differentiate the same loss.
fn probe(dims: &[usize], device: &Device) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin()).collect();
    Tensor::from_vec(v, dims, device).unwrap()
}

/// Output and every variable's gradient (by name) of `forward` under a linear loss.
fn train_pass(varmap: &VarMap, forward: impl Fn() -> Tensor) -> (Tensor, Vec<(String, Tensor)>) {
    let y = forward();
    let grads = (&y * probe(y.dims(), y.device()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    (y, named_gradients(varmap, &grads))
}

fn assert_passes_agree(
    what: &str,
    fused: (Tensor, Vec<(String, Tensor)>),
    generic: (Tensor, Vec<(String, Tensor)>),
) {
    let rel = rel_diff(&generic.0, &fused.0);
    assert!(rel <= 1e-4, "{what}: training outputs differ by {rel:.2e}");
    // Some gradients vanish analytically (attention's key bias: softmax ignores a shift shared by a row),
    // leaving rounding noise on both sides; those are compared with the model's largest gradient.
    let largest = fused
        .1
        .iter()
        .map(|(_, e)| max_abs(e))
        .fold(0.0f32, f32::max);
    let mut worst = (0.0f32, String::new());
    for ((name, a), (_, e)) in generic.1.iter().zip(&fused.1) {
        let rel = rel_diff(a, e);
        if rel >= worst.0 {
            worst = (rel, name.clone());
        }
        let noise = max_abs(&(to_cpu(a) - to_cpu(e)).unwrap()) <= 1e-6 * largest;
        assert!(
            rel <= 1e-3 || noise,
            "{what}: gradient of {name} differs by {rel:.2e}"
        );
    }
    eprintln!(
        "{what}: output {rel:.1e}, {} gradients, worst {:.1e} ({})",
        fused.1.len(),
        worst.0,
        worst.1
    );
}

fn frozen<T>(weights: &Path, device: &Device, load: impl FnOnce(VarBuilder) -> T) -> T {
    load(unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device) }.unwrap())
}

#[test]
fn students_generic_path_matches_fused() {
    let cpu = Device::Cpu;
    let dev = generic_device();
    let cases = [
        // Odd and non-square inputs: stride-2 windows that do not end on the last row or column.
        ("resnet_basic", "test-resnet-basic", (57, 57)),
        ("resnet_basic", "test-resnet-basic", (64, 57)),
        ("resnet_bottleneck", "test-resnet-bottleneck", (45, 50)),
        ("vit", "test-vit", (32, 32)),
        ("deit", "test-deit", (32, 32)),
    ];
    for (prefix, name, (h, w)) in cases {
        let what = format!("{name} {h}×{w} on {}", super::device_name(&dev));
        let config = StudentConfig::by_name(name).unwrap();
        let weights = fixtures().join(format!("students/{prefix}.safetensors"));
        let pixels = Tensor::randn(0f32, 1.0, (2, 3, h, w), &cpu).unwrap();
        let on_dev = pixels.to_device(&dev).unwrap();

        let fused = frozen(&weights, &cpu, |vb| {
            Student::load(vb, &config, false).unwrap()
        })
        .forward(&pixels, false)
        .unwrap();
        let model = frozen(&weights, &dev, |vb| {
            Student::load(vb, &config, false).unwrap()
        });
        let got = generic(&dev, || model.forward(&on_dev, false).unwrap());
        let rel = rel_diff(&got, &fused);
        assert!(rel <= 1e-4, "{what}: inference outputs differ by {rel:.2e}");

        let pass = |device: &Device, x: &Tensor| {
            let varmap = VarMap::new();
            let model = Student::trainable(&varmap, &weights, &config, device).unwrap();
            train_pass(&varmap, || model.forward(x, true).unwrap())
        };
        let fused = pass(&cpu, &pixels);
        let got = generic(&dev, || pass(&dev, &on_dev));
        assert_passes_agree(&what, fused, got);
    }
}

#[test]
fn clip_generic_path_matches_fused() {
    let cpu = Device::Cpu;
    let dev = generic_device();
    let tiny = fixtures().join("tiny_clip");
    let weights = tiny.join("model.safetensors");
    let config = load_clip_config(&tiny.join("config.json")).unwrap();
    let pixels = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &cpu).unwrap();
    let on_dev = pixels.to_device(&dev).unwrap();
    let ids = vec![
        vec![49406, 320, 1125, 539, 320, 2368, 49407],
        vec![49406, 2368, 49407],
    ];

    let fused = frozen(&weights, &cpu, |vb| Clip::load(vb, &config, true).unwrap());
    let model = frozen(&weights, &dev, |vb| Clip::load(vb, &config, true).unwrap());
    let rel = rel_diff(
        &generic(&dev, || model.image_features(&on_dev, false).unwrap()),
        &fused.image_features(&pixels, false).unwrap(),
    );
    assert!(
        rel <= 1e-4,
        "CLIP image inference outputs differ by {rel:.2e}"
    );
    let rel = rel_diff(
        &generic(&dev, || model.text_features(&ids, 49407, false).unwrap()),
        &fused.text_features(&ids, 49407, false).unwrap(),
    );
    assert!(
        rel <= 1e-4,
        "CLIP text inference outputs differ by {rel:.2e}"
    );

    let pass = |device: &Device, x: &Tensor| {
        let varmap = VarMap::new();
        let model = Clip::load(
            VarBuilder::from_varmap(&varmap, DType::F32, device),
            &config,
            false,
        )
        .unwrap();
        load_into_varmap(&varmap, &weights).unwrap();
        train_pass(&varmap, || {
            let img = model.image_features(x, true).unwrap();
            let txt = model.text_features(&ids, 49407, true).unwrap();
            img.matmul(&txt.t().unwrap())
                .unwrap()
                .broadcast_mul(&model.logit_scale().exp().unwrap())
                .unwrap()
        })
    };
    let fused = pass(&cpu, &pixels);
    let got = generic(&dev, || pass(&dev, &on_dev));
    assert_passes_agree(
        &format!("tiny CLIP on {}", super::device_name(&dev)),
        fused,
        got,
    );
}
