//! `--precision bf16`: one product's roundings (value and gradient) checked by hand, and every model under
//! bf16 products against its f32 self (outputs, and every parameter's gradient normwise) on the parity
//! tests' fixtures, no further from f32 than twice what PyTorch's own bf16 autocast gives on the same model,
//! input and loss (`tests/fixtures/make_bf16_autocast.py` → `bf16_autocast.json`). bf16 is approximate by
//! nature and these random fixtures amplify it (PyTorch's ResNets move their gradients by 8%), so the
//! yardstick is PyTorch's behaviour, not a number picked by hand; each distance must also exceed 1e-5,
//! which f32 rounding does not reach, so that a path that ignored the setting fails.
//!
//! With `VL2V_TEST_DEVICE=cuda` in a CUDA build the bf16 side runs on the GPU (its bf16 tensor cores).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use half::bf16;

use super::clip::{load_clip_config, Clip};
use super::kernel_path::{product, with_bf16_products};
use super::load_into_varmap;
use super::students::{Student, StudentConfig};
use super::test_tensors::named_gradients;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn test_device() -> Device {
    super::device(&std::env::var("VL2V_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())).unwrap()
}

fn round(v: f32) -> f32 {
    bf16::from_f32(v).to_f32()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Row-major `a (m×k) · b (k×n)` of the given element values, summed in f64.
fn matmul_by_hand(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|l| a[i * k + l] as f64 * b[l * n + j] as f64)
                .sum();
            out[i * n + j] = s as f32;
        }
    }
    out
}

/// Equal up to one bf16 rounding step (the f32 sums' order may move a result across a rounding boundary).
fn assert_within_one_bf16_step(what: &str, got: &[f32], expected: &[f32]) {
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= e.abs() * 2f32.powi(-7) + 1e-30,
            "{what}[{i}]: {g} against {e}"
        );
    }
}

#[test]
fn bf16_products_round_operands_result_and_gradients() {
    let dev = test_device();
    let (m, k, n) = (5, 37, 3);
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).unwrap();
    let probe = Tensor::randn(0f32, 1.0, (m, n), &Device::Cpu).unwrap();
    let (av, bv, pv) = (values(&a), values(&b), values(&probe));
    let r = |v: &[f32]| v.iter().map(|&x| round(x)).collect::<Vec<_>>();

    let a_var = candle_core::Var::from_tensor(&a.to_device(&dev).unwrap()).unwrap();
    let b_dev = b.to_device(&dev).unwrap();
    let y = with_bf16_products(|| product(a_var.as_tensor(), &b_dev, |a, b| a.matmul(b))).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let expected = r(&matmul_by_hand(&r(&av), &r(&bv), m, k, n));
    assert_within_one_bf16_step("product", &values(&y), &expected);
    let f32_product = matmul_by_hand(&av, &bv, m, k, n);
    let off = values(&y)
        .iter()
        .zip(&f32_product)
        .map(|(g, e)| (g - e).abs())
        .fold(0f32, f32::max);
    assert!(
        off > 1e-4,
        "the product was not rounded ({off:.1e} from f32)"
    );

    // d(Σ y ⊙ probe)/da = r(r(probe) · r(b)ᵀ): the gradient enters the product rounded and leaves it rounded.
    let grads = (&y * probe.to_device(&dev).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let bt: Vec<f32> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
    let expected = r(&matmul_by_hand(&r(&pv), &r(&bt), m, n, k));
    assert_within_one_bf16_step(
        "gradient",
        &values(grads.get(a_var.as_tensor()).unwrap()),
        &expected,
    );

    // f32 products are left alone.
    let y = product(&a, &b, |a, b| a.matmul(b)).unwrap();
    let exact = values(&y)
        .iter()
        .zip(&f32_product)
        .all(|(g, e)| (g - e).abs() <= 1e-5 * (1.0 + e.abs()));
    assert!(exact);
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (values(a), values(b));
    let scale = b
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// ‖a − b‖ / ‖b‖ over all the gradients together (the direction an optimiser follows).
fn normwise(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for ((na, a), (nb, b)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        for (x, y) in values(a).iter().zip(values(b)) {
            diff += ((x - y) as f64).powi(2);
            norm += (y as f64).powi(2);
        }
    }
    (diff / norm).sqrt()
}

/// The students on the committed inputs and losses of `tests/fixtures/students/expected.safetensors`, against
/// PyTorch's own bf16 autocast on the same models, inputs and losses (`tests/fixtures/make_bf16_autocast.py`
/// → `bf16_autocast.json`): the output's and the gradients' distance from f32 no worse than twice PyTorch's.
#[test]
fn students_under_bf16_products_are_as_close_to_f32_as_pytorch_autocast() {
    let dev = test_device();
    let students = fixtures().join("students");
    let expected =
        candle_core::safetensors::load(students.join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let torch: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("bf16_autocast.json")).unwrap(),
    )
    .unwrap();
    let cases = [
        ("resnet_basic", "test-resnet-basic"),
        ("resnet_bottleneck", "test-resnet-bottleneck"),
        ("vit", "test-vit"),
        ("deit", "test-deit"),
    ];
    for (prefix, name) in cases {
        let what = format!("{name} on {}", super::device_name(&dev));
        let config = StudentConfig::by_name(name).unwrap();
        let weights = students.join(format!("{prefix}.safetensors"));
        let x = expected[&format!("{prefix}.input")]
            .to_device(&dev)
            .unwrap();
        let r = expected[&format!("{prefix}.loss_weights")]
            .to_device(&dev)
            .unwrap();
        let pass = || {
            let varmap = VarMap::new();
            let model = Student::trainable(&varmap, &weights, &config, &dev).unwrap();
            let y = model.forward(&x, true).unwrap();
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            (y, named_gradients(&varmap, &grads))
        };
        let (y32, g32) = pass();
        let (ybf, gbf) = with_bf16_products(pass);
        let output = rel_diff(&ybf, &y32);
        let gradients = normwise(&gbf, &g32);
        let theirs = &torch["students"][prefix];
        let (t_out, t_grad) = (
            theirs["output"].as_f64().unwrap() as f32,
            theirs["gradients"].as_f64().unwrap(),
        );
        eprintln!(
            "{what}: output {output:.2e} (PyTorch autocast {t_out:.2e}), gradients {gradients:.2e} \
             ({t_grad:.2e})"
        );
        assert!(
            output > 1e-5 && output <= 2.0 * t_out,
            "{what}: bf16 output {output:.2e} from f32; PyTorch's autocast {t_out:.2e}"
        );
        assert!(
            gradients > 1e-5 && gradients <= 2.0 * t_grad,
            "{what}: bf16 gradients {gradients:.2e} from f32 (normwise); PyTorch's autocast {t_grad:.2e}"
        );
        // Inference (no graph: the layers' inference paths) rounds the same products.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev) }.unwrap();
        let model = Student::load(vb, &config, false).unwrap();
        let reference = model.forward(&x, false).unwrap();
        let got = with_bf16_products(|| model.forward(&x, false).unwrap());
        let rel = rel_diff(&got, &reference);
        assert!(
            rel > 1e-5 && rel <= 2.0 * t_out,
            "{what}: bf16 inference {rel:.2e} from f32; PyTorch's autocast {t_out:.2e}"
        );
    }
}

/// The tiny CLIP (both towers, inference and training) against transformers' CLIPModel under PyTorch's bf16
/// autocast on the same pixels, prompts and loss (`make_bf16_autocast.py`): no worse than twice its distance.
#[test]
fn clip_under_bf16_products_is_as_close_to_f32_as_pytorch_autocast() {
    let dev = test_device();
    let tiny = fixtures().join("tiny_clip");
    let weights = tiny.join("model.safetensors");
    let config = load_clip_config(&tiny.join("config.json")).unwrap();
    let torch: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("bf16_autocast.json")).unwrap(),
    )
    .unwrap();
    let (t_out, t_grad) = (
        torch["tiny_clip"]["output"].as_f64().unwrap() as f32,
        torch["tiny_clip"]["gradients"].as_f64().unwrap(),
    );
    let pixels = sines(&[2, 3, 224, 224], 0.37, &dev);
    let ids = vec![
        vec![49406, 320, 1125, 539, 320, 2368, 49407],
        vec![49406, 2368, 49407],
    ];
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &dev) }.unwrap();
    let model = Clip::load(vb, &config, true).unwrap();
    let image = || model.image_features(&pixels, false).unwrap();
    let text = || model.text_features(&ids, 49407, false).unwrap();
    let towers: [(&str, &dyn Fn() -> Tensor); 2] = [("image", &image), ("text", &text)];
    for (what, features) in towers {
        let rel = rel_diff(&with_bf16_products(features), &features());
        assert!(
            rel > 1e-5 && rel <= 2.0 * t_out,
            "CLIP {what} inference: bf16 {rel:.2e} from f32; PyTorch's autocast {t_out:.2e}"
        );
    }

    let pass = || {
        let varmap = VarMap::new();
        let model = Clip::load(
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
            &config,
            false,
        )
        .unwrap();
        load_into_varmap(&varmap, &weights).unwrap();
        let img = model.image_features(&pixels, true).unwrap();
        let txt = model.text_features(&ids, 49407, true).unwrap();
        let logits = img
            .matmul(&txt.t().unwrap())
            .unwrap()
            .broadcast_mul(&model.logit_scale().exp().unwrap())
            .unwrap();
        let grads = (&logits * sines(logits.dims(), 0.618, &dev))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (logits, named_gradients(&varmap, &grads))
    };
    let (y32, g32) = pass();
    let (ybf, gbf) = with_bf16_products(pass);
    let output = rel_diff(&ybf, &y32);
    let gradients = normwise(&gbf, &g32);
    eprintln!(
        "tiny CLIP: output {output:.2e} (PyTorch autocast {t_out:.2e}), gradients {gradients:.2e} \
         ({t_grad:.2e})"
    );
    assert!(
        output > 1e-5 && output <= 2.0 * t_out,
        "CLIP training: bf16 output {output:.2e}; PyTorch's autocast {t_out:.2e}"
    );
    assert!(
        gradients > 1e-5 && gradients <= 2.0 * t_grad,
        "CLIP training: bf16 gradients {gradients:.2e} (normwise); PyTorch's autocast {t_grad:.2e}"
    );
}

/// x[i] = sin(step · i), row-major, computed in f64 as the fixture's Python does.
fn sines(dims: &[usize], step: f64, device: &Device) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (step * i as f64).sin() as f32).collect();
    Tensor::from_vec(v, dims, device).unwrap()
}
