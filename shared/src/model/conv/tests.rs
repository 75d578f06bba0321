use candle_core::{Device, Var};

use super::*;

use crate::model::test_tensors::{max_abs, max_diff, on_pools_of_1_2_3};

/// Same values and gradients as candle's own conv2d (whose backward is correct, only slow).
#[test]
fn matches_candle_forward_and_backward() {
    let dev = Device::Cpu;
    for (c, h, w, cout, k, stride, padding) in [
        (3, 9, 7, 4, 3, 1, 1),
        (3, 11, 10, 5, 7, 2, 3),
        (4, 8, 8, 6, 1, 2, 0),
        (2, 6, 5, 3, 3, 2, 1),
    ] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap()).unwrap();
        let wt =
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (cout, c, k, k), &dev).unwrap()).unwrap();
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), stride, padding).unwrap();
        let theirs = x
            .as_tensor()
            .conv2d(wt.as_tensor(), padding, stride, 1, 1)
            .unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        assert!(max_diff(&ours, &theirs) < 1e-4);
        let r = Tensor::randn(0f32, 1.0, ours.dims(), &dev).unwrap();
        let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();

        // The input gradient is col2im, the adjoint of im2col: <im2col(x), C> = <x, col2im(C)>.
        let g = Geometry {
            batch: 2,
            channels: c,
            h,
            w,
            k,
            stride,
            padding,
        };
        let cols = x.as_tensor().apply_op1_no_bwd(&Im2Col(g)).unwrap();
        let probe = Tensor::randn(0f32, 1.0, cols.dims(), &dev).unwrap();
        let back = probe.apply_op1_no_bwd(&Col2Im(g)).unwrap();
        let lhs = (&cols * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let rhs = (x.as_tensor() * &back)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );

        // candle's own backward fails when the window does not end on the last row or column
        // (conv_transpose2d without output padding); compare where it works.
        let Ok(g2) = (&theirs * &r).unwrap().sum_all().unwrap().backward() else {
            assert!((h + 2 * padding - k) % stride != 0 || (w + 2 * padding - k) % stride != 0);
            continue;
        };
        for v in [&x, &wt] {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(max_diff(a, b) < 1e-3, "{:?}", (c, h, w, k, stride));
        }
    }
}

fn unfused(x: &Tensor, w: &Tensor, b: &Tensor, s: usize, p: usize, act: Activation) -> Tensor {
    let c = b.dim(0).unwrap();
    let y = conv2d(x, w, s, p)
        .unwrap()
        .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
        .unwrap();
    match act {
        Activation::Identity => y,
        Activation::Relu => y.relu().unwrap(),
    }
}

/// The fused op's values and its three gradients equal the unfused path's (im2col + matmul, a broadcast bias
/// add, candle's ReLU), over strides, paddings, 1×1 convolutions, one and several images per chunk (with an
/// uneven last chunk), and an input without a gradient; on one thread, and on two and three, where the batch
/// is split into runs of images (evenly or not) and a single image spreads its products over the threads.
#[test]
fn fused_matches_unfused_values_and_gradients() {
    on_pools_of_1_2_3(fused_matches_unfused_on_this_pool);
}

fn fused_matches_unfused_on_this_pool() {
    let threads = rayon::current_num_threads();
    let dev = Device::Cpu;
    // (batch, c, h, w, c_out, k, stride, padding)
    let cases = [
        (2, 3, 9, 7, 4, 3, 1, 1),   // several images per chunk
        (3, 3, 11, 10, 5, 7, 2, 3), // the stem's geometry
        (2, 4, 8, 8, 6, 1, 2, 0),   // downsample
        (3, 5, 6, 5, 3, 1, 1, 0),   // pointwise, chunked
        (2, 2, 56, 57, 3, 1, 1, 0), // pointwise, one image per chunk: the input is the columns
        (2, 2, 56, 56, 3, 3, 1, 1), // one image per chunk
        (3, 2, 32, 36, 3, 3, 1, 1), // chunks of 2 and 1
        (6, 2, 32, 36, 3, 3, 1, 1), // on two threads, runs of 3 images: chunks of 2 and 1 in each
        (1, 2, 56, 56, 3, 3, 1, 1), // one image: its products spread over the threads
        (3, 3, 6, 6, 37, 3, 1, 1),  // output channels in blocks of 16 and a partial one
        (2, 2, 6, 5, 3, 3, 2, 1),   // the window does not end on the last row
        (1, 1, 2, 2, 2, 3, 1, 1),   // windows larger than the image
    ];
    for (i, &(batch, c, h, w, cout, k, stride, padding)) in cases.iter().enumerate() {
        for act in [Activation::Identity, Activation::Relu] {
            for x_grad in [true, false] {
                let x0 = Tensor::randn(0f32, 1.0, (batch, c, h, w), &dev).unwrap();
                let x = Var::from_tensor(&x0).unwrap();
                let wt =
                    Var::from_tensor(&Tensor::randn(0f32, 0.5, (cout, c, k, k), &dev).unwrap())
                        .unwrap();
                let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, cout, &dev).unwrap()).unwrap();
                let input = if x_grad {
                    x.as_tensor().clone()
                } else {
                    x0.clone()
                };
                let ours =
                    conv2d_bias_act(&input, wt.as_tensor(), b.as_tensor(), stride, padding, act)
                        .unwrap();
                let theirs = unfused(&input, wt.as_tensor(), b.as_tensor(), stride, padding, act);
                assert_eq!(ours.dims(), theirs.dims(), "case {i}");
                assert!(
                    max_diff(&ours, &theirs) < 1e-4,
                    "case {i} {act:?} on {threads} threads"
                );
                let r = Tensor::randn(0f32, 1.0, ours.dims(), &dev).unwrap();
                let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (&theirs * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (name, v) in [("w", &wt), ("b", &b), ("x", &x)] {
                    match (g1.get(v.as_tensor()), g2.get(v.as_tensor())) {
                        (Some(a), Some(e)) => {
                            let scale = max_abs(e);
                            let d = max_diff(a, e);
                            assert!(
                                d <= 1e-4 * scale.max(1.0),
                                "case {i} {act:?} d{name} on {threads} threads: {d}"
                            );
                        }
                        (None, None) => assert!(name == "x" && !x_grad),
                        _ => panic!("case {i} {act:?}: d{name} on one side only"),
                    }
                }
            }
        }
    }
}

/// Central finite differences of a probe of the fused op's output, for every weight, bias and input
/// element of a tiny ReLU convolution (f64 sums of f32 values, so steps of 1e-2 are well above rounding).
#[test]
fn fused_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let (batch, c, h, w, cout, k, stride, padding) = (2, 2, 5, 4, 3, 3, 2, 1);
    let wave =
        |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 0.5) * f).sin()).collect() };
    let x0 = wave(batch * c * h * w, 0.71);
    let w0 = wave(cout * c * k * k, 0.37);
    let b0 = wave(cout, 1.3);
    let r = Tensor::from_vec(wave(batch * cout * 6, 1.9), (batch, cout, 3, 2), &dev).unwrap();
    let loss = |x: &[f32], wv: &[f32], bv: &[f32]| -> f64 {
        let y = conv2d_bias_act(
            &Tensor::from_vec(x.to_vec(), (batch, c, h, w), &dev).unwrap(),
            &Tensor::from_vec(wv.to_vec(), (cout, c, k, k), &dev).unwrap(),
            &Tensor::from_vec(bv.to_vec(), cout, &dev).unwrap(),
            stride,
            padding,
            Activation::Relu,
        )
        .unwrap();
        (y * &r)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .sum()
    };
    let xv =
        Var::from_tensor(&Tensor::from_vec(x0.clone(), (batch, c, h, w), &dev).unwrap()).unwrap();
    let wv =
        Var::from_tensor(&Tensor::from_vec(w0.clone(), (cout, c, k, k), &dev).unwrap()).unwrap();
    let bv = Var::from_tensor(&Tensor::from_vec(b0.clone(), cout, &dev).unwrap()).unwrap();
    let y = conv2d_bias_act(
        xv.as_tensor(),
        wv.as_tensor(),
        bv.as_tensor(),
        stride,
        padding,
        Activation::Relu,
    )
    .unwrap();
    assert_eq!(y.dims(), r.dims());
    let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |v: &Var| {
        grads
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (dx, dw, db) = (flat(&xv), flat(&wv), flat(&bv));
    let eps = 1e-2f32;
    let mut checked = 0;
    for which in 0..3 {
        let n = [x0.len(), w0.len(), b0.len()][which];
        for i in 0..n {
            let (mut up, mut down) = (
                [x0.clone(), w0.clone(), b0.clone()],
                [x0.clone(), w0.clone(), b0.clone()],
            );
            up[which][i] += eps;
            down[which][i] -= eps;
            let fd = (loss(&up[0], &up[1], &up[2]) - loss(&down[0], &down[1], &down[2]))
                / (2.0 * eps as f64);
            let got = [&dx, &dw, &db][which][i] as f64;
            // A ReLU kink inside the step makes the two one-sided quotients differ (in a linear piece
            // they agree to rounding): skip those few.
            let l0 = loss(&x0, &w0, &b0);
            let right = (loss(&up[0], &up[1], &up[2]) - l0) / eps as f64;
            let left = (l0 - loss(&down[0], &down[1], &down[2])) / eps as f64;
            if (right - left).abs() > 1e-3 * fd.abs().max(1.0) {
                continue;
            }
            assert!(
                (fd - got).abs() < 1e-3 * fd.abs().max(1.0),
                "arg {which} elem {i}: fd {fd} vs {got}"
            );
            checked += 1;
        }
    }
    assert!(
        checked > (x0.len() + w0.len() + b0.len()) * 3 / 4,
        "only {checked} checked"
    );
}

/// The device-generic path (what a CUDA build runs; forced here on the CPU) gives the fused path's values and
/// gradients on every geometry, including those where candle's own conv2d backward fails (the last window
/// not ending on the last row or column: the stem and the stride-2 convolutions on odd-sized maps, and
/// non-square inputs whose height and width differ in that respect).
#[test]
fn generic_path_matches_fused_values_and_gradients() {
    use crate::model::kernel_path::with_generic_ops;
    let dev = Device::Cpu;
    // (batch, c, h, w, c_out, k, stride, padding)
    let cases = [
        (2, 3, 9, 7, 4, 3, 1, 1),
        (2, 3, 11, 10, 5, 7, 2, 3), // the stem's geometry, height and width of different parity
        (2, 3, 57, 57, 4, 7, 2, 3), // the stem on an odd input
        (2, 4, 8, 8, 6, 1, 2, 0),   // downsample on an even map: the last row is never read
        (2, 4, 7, 7, 6, 1, 2, 0),   // downsample on an odd map
        (2, 2, 6, 5, 3, 3, 2, 1),
        (2, 2, 7, 8, 3, 3, 2, 1),
        (1, 1, 2, 2, 2, 3, 1, 1),
    ];
    for (i, &(batch, c, h, w, cout, k, stride, padding)) in cases.iter().enumerate() {
        for act in [Activation::Identity, Activation::Relu] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, c, h, w), &dev).unwrap())
                .unwrap();
            let wt = Var::from_tensor(&Tensor::randn(0f32, 0.5, (cout, c, k, k), &dev).unwrap())
                .unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, cout, &dev).unwrap()).unwrap();
            let run = || {
                let y = conv2d_bias_act(
                    x.as_tensor(),
                    wt.as_tensor(),
                    b.as_tensor(),
                    stride,
                    padding,
                    act,
                )
                .unwrap();
                let r = Tensor::ones(y.dims(), candle_core::DType::F32, &dev)
                    .unwrap()
                    .cumsum(3)
                    .unwrap()
                    .sin()
                    .unwrap();
                let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
                (y.clone(), [g(&x), g(&wt), g(&b)])
            };
            let (fused_y, fused_g) = run();
            let (generic_y, generic_g) = with_generic_ops(run);
            assert_eq!(fused_y.dims(), generic_y.dims(), "case {i}");
            assert!(max_diff(&fused_y, &generic_y) < 1e-4, "case {i} {act:?}");
            for (name, (a, e)) in ["x", "w", "b"].iter().zip(generic_g.iter().zip(&fused_g)) {
                assert_eq!(a.dims(), e.dims(), "case {i} d{name}");
                let scale = max_abs(e);
                let d = max_diff(a, e);
                assert!(d <= 1e-4 * scale.max(1.0), "case {i} {act:?} d{name}: {d}");
            }
        }
    }
}
