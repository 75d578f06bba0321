//! Parity of the students with torchvision and timm (tests/fixtures/students/), gradients, the registry.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/students")
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn architecture_labels_round_trip() {
    let label = architecture_label("resnet50", 2048);
    assert_eq!(label, "student resnet50, 2048 features");
    assert_eq!(name_from_architecture(&label), Some("resnet50"));
    assert_eq!(name_from_architecture("student nope, 3 features"), None);
    assert_eq!(name_from_architecture("CLIP ViT-B/16"), None);
}

fn scalar(t: Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    scalar(t.abs().unwrap().max_all().unwrap())
}

/// max |a − b| / max |b|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap()) / max_abs(b)
}

fn min_cosine(a: &Tensor, b: &Tensor) -> f32 {
    let dot = (a * b).unwrap().sum(1).unwrap();
    let norm = |t: &Tensor| t.sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
    let cos = (dot / (norm(a) * norm(b)).unwrap()).unwrap();
    scalar(cos.min_all().unwrap())
}

/// (fixture prefix, registry name).
const FIXTURES: [(&str, &str); 4] = [
    ("resnet_basic", "test-resnet-basic"),
    ("resnet_bottleneck", "test-resnet-bottleneck"),
    ("vit", "test-vit"),
    ("deit", "test-deit"),
];

/// Features of torchvision's / timm's own models (eval mode, frozen BatchNorm) on both paths, and the
/// gradients torch computes for a linear loss of them.
#[test]
fn students_match_torchvision_and_timm() {
    let dev = Device::Cpu;
    let expected = expected();
    for (prefix, name) in FIXTURES {
        let config = StudentConfig::by_name(name).unwrap();
        let weights = fixtures().join(format!("{prefix}.safetensors"));
        let input = &expected[&format!("{prefix}.input")];
        let want = &expected[&format!("{prefix}.features")];
        assert_eq!(want.dims(), [2, config.dim()]);

        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev) }.unwrap();
        let frozen = Student::load(vb, &config, false).unwrap();
        for train in [false, true] {
            let got = frozen.forward(input, train).unwrap();
            let (rel, cos) = (rel_diff(&got, want), min_cosine(&got, want));
            let abs = max_abs(&(&got - want).unwrap());
            eprintln!(
                "{prefix} frozen, train path {train}: max abs diff {abs:.2e}, rel max diff \
                 {rel:.2e}, min cos {cos}"
            );
            assert!(
                rel <= 1e-4 && cos >= 0.9999,
                "{prefix} (train {train}): {rel}, {cos}"
            );
        }

        let varmap = VarMap::new();
        let model = Student::trainable(&varmap, &weights, &config, &dev).unwrap();
        let got = model.forward(input, true).unwrap();
        let rel = rel_diff(&got, want);
        let abs = max_abs(&(&got - want).unwrap());
        eprintln!("{prefix} trainable: max abs diff {abs:.2e}, rel max diff {rel:.2e}");
        assert!(rel <= 1e-4, "{prefix}: {rel}");

        // The input-dependent part alone (ResNet features share a large positive component).
        let centre = |t: &Tensor| t.broadcast_sub(&t.mean_keepdim(0).unwrap()).unwrap();
        let rel = rel_diff(&centre(&got), &centre(want));
        eprintln!("{prefix} trainable, centred: rel max diff {rel:.2e}");
        assert!(rel <= 1e-3, "{prefix} centred: {rel}");

        let r = &expected[&format!("{prefix}.loss_weights")];
        let grads = (got * r).unwrap().sum_all().unwrap().backward().unwrap();
        let vars = varmap.data().lock().unwrap();
        let grad_prefix = format!("{prefix}.grad.");
        let mut checked = 0;
        for (key, want) in &expected {
            let Some(param) = key.strip_prefix(&grad_prefix) else {
                continue;
            };
            let g = grads.get(vars[param].as_tensor()).unwrap();
            let rel = rel_diff(g, want);
            eprintln!("{prefix} grad {param}: rel max diff {rel:.2e}");
            assert!(rel <= 1e-3, "{prefix} gradient of {param}: {rel}");
            checked += 1;
        }
        assert!(checked >= 7, "{prefix}: only {checked} gradients checked");
    }
}

/// Every parameter of every architecture gets a non-zero gradient through the training path (candle's
/// fused kernels and its strided max-pool would silently pass none or fail), BatchNorm running
/// statistics are not variables, and the training path computes what the inference path does.
#[test]
fn every_parameter_gets_a_gradient_and_paths_agree() {
    let dev = Device::Cpu;
    for (prefix, name) in FIXTURES {
        let config = StudentConfig::by_name(name).unwrap();
        let weights = fixtures().join(format!("{prefix}.safetensors"));
        let varmap = VarMap::new();
        let model = Student::trainable(&varmap, &weights, &config, &dev).unwrap();
        let frozen = {
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev) }
                .unwrap();
            Student::load(vb, &config, false).unwrap()
        };
        // 56 for the ResNets: odd feature maps (7 → 4) inside, as at 224.
        let size = match config {
            StudentConfig::ResNet(_) => 56,
            StudentConfig::Vit(c) => c.image_size,
        };
        let pixels = Tensor::randn(0f32, 1.0, (3, 3, size, size), &dev).unwrap();
        let features = model.forward(&pixels, true).unwrap();
        assert_eq!(features.dims(), [3, config.dim()]);
        let fast = frozen.forward(&pixels, false).unwrap();
        let rel = rel_diff(&features, &fast);
        assert!(rel < 1e-4, "{prefix}: paths differ by {rel}");

        let weights = Tensor::randn(0f32, 1.0, features.dims(), &dev).unwrap();
        let loss = (features * weights).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = varmap.data().lock().unwrap();
        let mut missing = Vec::new();
        for (name, var) in vars.iter() {
            assert!(!name.contains("running_"), "{prefix}: {name} is a variable");
            let nonzero = grads
                .get(var.as_tensor())
                .map(|g| scalar(g.abs().unwrap().sum_all().unwrap()) > 0.0)
                .unwrap_or(false);
            if !nonzero {
                missing.push(name.clone());
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "{prefix}: {} of {} parameters get no gradient: {missing:?}",
            missing.len(),
            vars.len()
        );
        eprintln!("{prefix}: all {} parameters get a gradient", vars.len());
    }
}

/// The real architectures build under their checkpoint names and give features of the right size.
#[test]
fn registry_names_give_the_paper_feature_sizes() {
    let dev = Device::Cpu;
    for (name, dim, params) in [
        ("resnet18", 512, 60),
        ("resnet50", 2048, 159),
        ("vit-small", 384, 4 + 12 * 12 + 2),
        ("vit-base", 768, 4 + 12 * 12 + 2),
        // ViT-S's and `dist_token`.
        ("deit-small", 384, 5 + 12 * 12 + 2),
    ] {
        let config = StudentConfig::by_name(name).unwrap();
        assert_eq!(config.dim(), dim);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let stats = VarBuilder::zeros(DType::F32, &dev);
        let student = Student::load_with_stats(vb, stats, &config, true).unwrap();
        assert_eq!(student.dim(), dim);
        // torchvision's / timm's parameter tensors less fc's or head's weight and bias.
        assert_eq!(varmap.all_vars().len(), params, "{name}");
    }
    assert!(StudentConfig::by_name("resnet101").is_none());
    for name in STUDENT_NAMES.iter().chain(&TEST_STUDENT_NAMES) {
        assert!(StudentConfig::by_name(name).is_some());
    }
    // One forward at 224 through a zero-initialised ViT-S and DeiT-S: shapes only.
    for name in ["vit-small", "deit-small"] {
        let config = StudentConfig::by_name(name).unwrap();
        let student = Student::load(VarBuilder::zeros(DType::F32, &dev), &config, false).unwrap();
        let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &dev).unwrap();
        assert_eq!(
            student.forward(&x, false).unwrap().dims(),
            [1, 384],
            "{name}"
        );
    }
}
