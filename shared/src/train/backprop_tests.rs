//! candle's backward pass as vendored (shared/vendor: the first gradient of a tensor is stored as it is,
//! not added to a zero tensor): gradients of tensors used once, twice and three times, reached through
//! transposes (strided), broadcasts and subtractions, against derivatives worked by hand; every variable's
//! gradient contiguous, as candle's zero-plus-sum made it.

use candle_core::{Device, Tensor, Var};

fn var(values: &[f32], dims: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(values, dims, &Device::Cpu).unwrap()).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

const W: [f32; 6] = [0.5, -1.0, 2.0, 1.5, -0.25, 3.0];

#[test]
fn gradients_through_one_two_and_three_uses_match_the_hand_derivatives() {
    let w = var(&W, &[2, 3]);
    let c = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.], (3, 2), &Device::Cpu).unwrap();

    // Used once, through a transpose: ∂/∂w Σ (wᵀ ⊙ c) = cᵀ, which arrives as a strided view.
    let grads = (w.t().unwrap() * &c)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = grads.get(&w).unwrap();
    assert!(
        g.is_contiguous(),
        "a transposed first gradient was stored strided"
    );
    assert_eq!(values(g), [1., 3., 5., 2., 4., 6.]);

    // Used twice: Σ 2w + Σ 3wᵀ → 5 everywhere.
    let loss = ((w.as_tensor() * 2.0).unwrap().sum_all().unwrap()
        + (w.t().unwrap() * 3.0).unwrap().sum_all().unwrap())
    .unwrap();
    assert_eq!(values(loss.backward().unwrap().get(&w).unwrap()), [5.0; 6]);

    // Three times: Σ w·w·w → 3w².
    let cube = (w.as_tensor() * w.as_tensor())
        .unwrap()
        .mul(w.as_tensor())
        .unwrap();
    let g = cube.sum_all().unwrap().backward().unwrap();
    let want: Vec<f32> = W.iter().map(|v| 3.0 * v * v).collect();
    assert_eq!(values(g.get(&w).unwrap()), want);
}

#[test]
fn first_gradients_of_subtractions_divisions_and_broadcasts_match_the_hand_derivatives() {
    let w = var(&W, &[2, 3]);
    let b = var(&[0.1, 0.2, 0.3], &[3]);
    let a = Tensor::from_slice(&[2f32, 4., 6., 8., 10., 12.], (2, 3), &Device::Cpu).unwrap();

    // Σ (a − w) + Σ (a / w) + Σ (w + b broadcast over the rows):
    // ∂/∂w = −1 − a/w² + 1 = −a/w², ∂/∂b = 2 (two rows).
    let loss = ((&a - w.as_tensor()).unwrap().sum_all().unwrap()
        + (&a / w.as_tensor()).unwrap().sum_all().unwrap())
    .unwrap();
    let loss = (loss
        + w.as_tensor()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let want: Vec<f32> = values(&a)
        .iter()
        .zip(W)
        .map(|(a, w)| -a / (w * w))
        .collect();
    let got = values(grads.get(&w).unwrap());
    for (g, e) in got.iter().zip(&want) {
        assert!(
            (g - e).abs() <= 1e-5 * e.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
    assert_eq!(values(grads.get(&b).unwrap()), [2.0; 3]);
    for v in [&w, &b] {
        assert!(grads.get(v).unwrap().is_contiguous());
    }

    // Only a subtraction: the first gradient is the negated upstream one.
    let grads = (&a - w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(grads.get(&w).unwrap()), [-1.0; 6]);
}
