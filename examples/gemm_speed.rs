//! How fast the convolution's packed GEMM runs on this machine, one thread:
//! `C (m x n) := A (m x k) * B (k x n)` with `A` packed once, best of 20 calls.
//!
//! ```text
//! cargo run --release --example gemm_speed -- 512 392 4608   # ResNet-18's 7x7 layers, 8 images
//! ```
//!
//! Compare with another library's single-threaded GEMM of the same shape (for
//! PyTorch: `torch.set_num_threads(1); torch.mm(a, b, out=c)`).

use convnet::tensor::kernels::gemm::Trans;
use convnet::tensor::kernels::gemm_packed::{gemm_packed, PackedA};
use std::time::Instant;

fn main() {
    let dims: Vec<usize> = std::env::args().skip(1).filter_map(|arg| arg.parse().ok()).collect();
    let [m, n, k] = dims[..] else {
        eprintln!("usage: gemm_speed M N K");
        std::process::exit(2);
    };
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let mut packed = PackedA::new();
    packed.pack(Trans::No, m, k, &a, k);
    let best = (0..20)
        .map(|_| {
            let start = Instant::now();
            gemm_packed(&packed, n, &b, n, 0.0, &mut c, n);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let gflops = 2.0 * (m * n * k) as f64 / best / 1e9;
    println!("{m} x {n} x {k}: {:.2} ms, {gflops:.1} GFLOP/s", best * 1e3);
}
