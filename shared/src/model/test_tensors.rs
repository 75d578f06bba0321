//! What the model tests compare tensors with (test builds only).

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use candle_nn::VarMap;

/// Runs `check` on rayon pools of one, two and three threads in turn: the fused CPU ops split their work
/// by the pool they run on.
pub fn on_pools_of_1_2_3(check: fn()) {
    for threads in [1, 2, 3] {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(check);
    }
}

/// max |t| over every element.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a − b| over every element.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// Every variable of `varmap` with its gradient in `grads`, sorted by name; a variable without one panics.
pub fn named_gradients(varmap: &VarMap, grads: &GradStore) -> Vec<(String, Tensor)> {
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
    named
}

/// The gradient of Σ probe·y with respect to `x`, flattened (a probe makes every output count, with its
/// own weight, in one backward pass).
pub fn probe_gradient(y: &Tensor, probe: &Tensor, x: &Tensor) -> Vec<f32> {
    let grads = (y * probe).unwrap().sum_all().unwrap().backward().unwrap();
    grads
        .get(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}
