//! Which operand layout makes candle's CPU matmul fastest for a Linear layer (6304×768 · 768×2304)?
use std::time::Instant;

use candle_core::{Device, Tensor};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (m, k, n) = (6304usize, 768usize, 2304usize);
    let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
    let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
    let wt = w.t()?.contiguous()?;
    let gflop = 2.0 * (m * k * n) as f64 / 1e9;
    for (name, rhs) in [
        ("w.t() (strided)", w.t()?),
        ("w.t().contiguous()", wt.clone()),
    ] {
        let _ = x.matmul(&rhs)?;
        let start = Instant::now();
        for _ in 0..3 {
            let _ = x.matmul(&rhs)?;
        }
        let s = start.elapsed().as_secs_f64() / 3.0;
        eprintln!("{name:>22}: {:7.1} ms  {:6.1} GFLOP/s", s * 1e3, gflop / s);
    }
    Ok(())
}
