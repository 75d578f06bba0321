//! Times the pieces of a CLIP ViT-B/16 encoder layer on CPU at batch 32, to see where the forward pass
//! spends its time. `cargo run --release -p vl2v-shared --example forward_profile`
#[global_allocator]
static GLOBAL: vl2v::alloc::Allocator = vl2v::alloc::ALLOCATOR;

use std::time::Instant;

use candle_core::{Device, Tensor};
use vl2v::model::layers::{quick_gelu, softmax, Linear};

fn time<T>(name: &str, reps: usize, mut f: impl FnMut() -> T) -> T {
    let mut out = f();
    let start = Instant::now();
    for _ in 0..reps {
        out = f();
    }
    eprintln!(
        "{name:>28}: {:8.2} ms",
        start.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
    out
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (b, t, d, h, ff) = (32usize, 197usize, 768usize, 12usize, 3072usize);
    let hd = d / h;
    let x = Tensor::randn(0f32, 1.0, (b, t, d), &dev)?;
    let w = |o: usize, i: usize| Tensor::randn(0f32, 0.02, (o, i), &dev);
    let qkv = Linear::new(
        w(3 * d, d)?,
        Some(Tensor::zeros(3 * d, candle_core::DType::F32, &dev)?),
    );
    let out = Linear::new(
        w(d, d)?,
        Some(Tensor::zeros(d, candle_core::DType::F32, &dev)?),
    );
    let bias = |n: usize| Some(Tensor::zeros(n, candle_core::DType::F32, &dev).unwrap());
    let fc1 = Linear::new(w(ff, d)?, bias(ff));
    let fc2 = Linear::new(w(d, ff)?, bias(d));
    let ln_w = Tensor::ones(d, candle_core::DType::F32, &dev)?;
    let ln_b = Tensor::zeros(d, candle_core::DType::F32, &dev)?;
    let reps = 3;
    time("layer_norm", reps, || {
        candle_nn::ops::layer_norm(&x, &ln_w, &ln_b, 1e-5).unwrap()
    });
    let y = time("qkv matmul", reps, || {
        qkv.forward_t(&x, false, false).unwrap()
    });
    let (q, k, v) = time("qkv split (permute+copy)", reps, || {
        let y = y
            .reshape((b, t, 3, h, hd))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap();
        let c = |i| {
            y.get(i)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b * h, t, hd))
                .unwrap()
        };
        (c(0), c(1), c(2))
    });
    let s = time("q @ k.T", reps, || q.matmul(&k.t().unwrap()).unwrap());
    let kt = k.t()?.contiguous()?;
    time("q @ k.T (k.T contiguous)", reps, || q.matmul(&kt).unwrap());
    let p = time("softmax_last_dim", reps, || softmax(&s, false).unwrap());
    let a = time("p @ v", reps, || p.matmul(&v).unwrap());
    let a = time("merge heads (copy)", reps, || {
        a.reshape((b, h, t, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, t, d))
            .unwrap()
    });
    let o = time("out proj", reps, || {
        out.forward_t(&a, false, false).unwrap()
    });
    time("residual add", reps, || (&x + &o).unwrap());
    let f = time("fc1", reps, || fc1.forward_t(&x, false, false).unwrap());
    time("fc1 + quick_gelu (fused)", reps, || {
        fc1.forward_t(&x, false, true).unwrap()
    });
    let g = time("quick_gelu", reps, || quick_gelu(&f, false).unwrap());
    time("fc2", reps, || fc2.forward_t(&g, false, false).unwrap());
    let flops = 2.0 * (b * t) as f64 * (d * 3 * d + d * d + 2 * d * ff) as f64
        + 4.0 * (b * h * t * t * hd) as f64;
    eprintln!("layer GFLOP: {:.1}", flops / 1e9);
    Ok(())
}
