//! Criterion benchmarks of the engine at the reference (`baseline`, 224x224)
//! shapes: im2col/col2im alone, the three GEMMs of the dominant convolution,
//! the Winograd point GEMM, every layer kind forward and backward (conv2 by
//! im2col and by Winograd), and whole training steps at 224 and 64.
//!
//!     cargo bench --bench layers
//!
//! Results and the machine are recorded in BENCHMARKS.md.

use convnet::optim::{Adam, Optimizer};
use convnet::tensor::kernels::gemm::{gemm, Trans};
use convnet::tensor::kernels::gemm_nt::gemm_nt;
use convnet::tensor::kernels::gemm_packed::{gemm_packed, PackedA};
use convnet::tensor::kernels::im2col::{col2im, im2col};
use convnet::tensor::ndarray::{ArrayD, IxDyn};
use convnet::tensor::WindowGeometry;
use convnet::tensor::{
    init, Conv2d, ConvAlgo, Dense, Layer, MaxPool2d, Mode, ModelSpec, Padding, Relu, SoftmaxCrossEntropy,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};

fn random(shape: &[usize]) -> ArrayD<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0..1.0))
}

/// conv2 of baseline: 32 -> 64 channels, 3x3, 222x222 -> 220x220, one image.
fn conv2_parts(c: &mut Criterion) {
    let geom = WindowGeometry::new(32, 222, 222, (3, 3), (1, 1), Padding::Valid).unwrap();
    let image = random(&[geom.in_len()]);
    let weight = random(&[64 * geom.col_rows()]);
    let rows = 4;
    let cols = rows * geom.out_w;
    let mut col = vec![0.0f32; geom.col_rows() * cols];
    let mut out = vec![0.0f32; 64 * geom.out_pixels()];
    let grad_out = random(&[64 * geom.out_pixels()]);
    let mut grad_w = vec![0.0f32; 64 * geom.col_rows()];
    let mut grad_col = vec![0.0f32; geom.col_rows() * cols];
    let mut grad_image = vec![0.0f32; geom.in_len()];
    let mut group = c.benchmark_group("conv2_one_image_one_tile_of_4_rows");
    let flops = 2 * 64 * geom.col_rows() * cols;
    group.bench_function("im2col", |b| b.iter(|| im2col(&geom, image.as_slice().unwrap(), 100, 100 + rows, &mut col)));
    group.bench_function("col2im", |b| b.iter(|| col2im(&geom, &grad_col, 100, 100 + rows, &mut grad_image)));
    group.throughput(Throughput::Elements(flops as u64));
    group.bench_function("gemm_forward", |b| {
        b.iter(|| {
            gemm(
                Trans::No,
                Trans::No,
                64,
                cols,
                geom.col_rows(),
                1.0,
                weight.as_slice().unwrap(),
                geom.col_rows(),
                &col,
                cols,
                0.0,
                &mut out[100 * geom.out_w..],
                geom.out_pixels(),
            )
        })
    });
    group.bench_function("gemm_weight_grad", |b| {
        b.iter(|| {
            gemm(
                Trans::No,
                Trans::Yes,
                64,
                geom.col_rows(),
                cols,
                1.0,
                &grad_out.as_slice().unwrap()[100 * geom.out_w..],
                geom.out_pixels(),
                &col,
                cols,
                1.0,
                &mut grad_w,
                geom.col_rows(),
            )
        })
    });
    let mut packed_weight = PackedA::new();
    packed_weight.pack(Trans::No, 64, geom.col_rows(), weight.as_slice().unwrap(), geom.col_rows());
    group.bench_function("gemm_packed_forward", |b| {
        b.iter(|| gemm_packed(&packed_weight, cols, &col, cols, 0.0, &mut out[100 * geom.out_w..], geom.out_pixels()))
    });
    let mut packed_weight_t = PackedA::new();
    packed_weight_t.pack(Trans::Yes, geom.col_rows(), 64, weight.as_slice().unwrap(), geom.col_rows());
    group.bench_function("gemm_packed_col_grad", |b| {
        b.iter(|| {
            gemm_packed(
                &packed_weight_t,
                cols,
                &grad_out.as_slice().unwrap()[100 * geom.out_w..],
                geom.out_pixels(),
                0.0,
                &mut grad_col,
                cols,
            )
        })
    });
    group.bench_function("gemm_nt_weight_grad", |b| {
        b.iter(|| {
            gemm_nt(
                64,
                geom.col_rows(),
                cols,
                &grad_out.as_slice().unwrap()[100 * geom.out_w..],
                geom.out_pixels(),
                &col,
                cols,
                1.0,
                &mut grad_w,
                geom.col_rows(),
            )
        })
    });
    group.bench_function("gemm_col_grad", |b| {
        b.iter(|| {
            gemm(
                Trans::Yes,
                Trans::No,
                geom.col_rows(),
                cols,
                64,
                1.0,
                weight.as_slice().unwrap(),
                geom.col_rows(),
                &grad_out.as_slice().unwrap()[100 * geom.out_w..],
                geom.out_pixels(),
                0.0,
                &mut grad_col,
                cols,
            )
        })
    });
    group.finish();
}

/// Each layer kind forward and backward at its baseline shape, batch 32.
fn layers(c: &mut Criterion) {
    let batch = 32;
    let mut group = c.benchmark_group("layer_batch32");
    group.sample_size(10);
    type Case = (&'static str, Box<dyn Layer<f32>>, Vec<usize>);
    let mut cases: Vec<Case> = Vec::new();
    let mut conv1 = Conv2d::new(3, 32, (3, 3), (1, 1), Padding::Valid).unwrap();
    init::glorot_uniform(conv1.weight_mut(), 1, 0);
    cases.push(("conv1_3to32_224", Box::new(conv1), vec![3, 224, 224]));
    for (name, algo) in
        [("conv2_32to64_222_im2col", ConvAlgo::Im2col), ("conv2_32to64_222_winograd", ConvAlgo::Winograd)]
    {
        let mut conv2 = Conv2d::new(32, 64, (3, 3), (1, 1), Padding::Valid).unwrap();
        conv2.set_algo(algo);
        init::glorot_uniform(conv2.weight_mut(), 1, 2);
        cases.push((name, Box::new(conv2), vec![32, 222, 222]));
    }
    cases.push(("relu_64x220x220", Box::new(Relu), vec![64, 220, 220]));
    cases.push((
        "maxpool2_64x220x220",
        Box::new(MaxPool2d::new((2, 2), (2, 2), Padding::Valid).unwrap()),
        vec![64, 220, 220],
    ));
    let mut dense = Dense::new(40000, 120).unwrap();
    init::glorot_uniform(dense.weight_mut(), 1, 12);
    cases.push(("dense_40000to120", Box::new(dense), vec![40000]));
    for (name, mut layer, shape) in cases {
        let in_shape: Vec<usize> = std::iter::once(batch).chain(shape.iter().copied()).collect();
        let out_shape: Vec<usize> = std::iter::once(batch).chain(layer.output_shape(&shape).unwrap()).collect();
        let input = random(&in_shape);
        let grad_output = random(&out_shape);
        let mut output = ArrayD::zeros(IxDyn(&out_shape));
        let mut grad_input = ArrayD::zeros(IxDyn(&in_shape));
        group.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| layer.forward(input.view(), output.view_mut(), Mode::Eval))
        });
        group.bench_function(BenchmarkId::new("backward", name), |b| {
            b.iter(|| layer.backward(input.view(), output.view(), grad_output.view(), Some(grad_input.view_mut())))
        });
    }
    group.finish();
}

/// Whole training steps of baseline (forward, loss, backward, Adam).
fn training_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline_training_step_batch32");
    group.sample_size(10);
    for size in [64, 224] {
        let mut model = ModelSpec::baseline().build::<f32>(&[3, size, size], 8, 1).unwrap();
        let images = random(&[32, 3, size, size]).mapv(|v| v.abs());
        let labels: Vec<usize> = (0..32).map(|i| i % 8).collect();
        let mut loss_fn = SoftmaxCrossEntropy::new();
        let mut adam = Adam::new(1e-3);
        group.throughput(Throughput::Elements(32));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                let logits = model.forward(images.view(), Mode::train(1)).unwrap();
                loss_fn.forward(logits, &labels).unwrap();
                model.backward(loss_fn.grad_logits().view()).unwrap();
                adam.step(&mut model.params_mut()).unwrap();
            })
        });
    }
    group.finish();
}

/// The yardstick: a large square sgemm (2048^3) on one core.
fn square_sgemm(c: &mut Criterion) {
    let n = 2048;
    let a = random(&[n * n]);
    let b = random(&[n * n]);
    let mut out = vec![0.0f32; n * n];
    let mut group = c.benchmark_group("sgemm_square_one_core");
    group.sample_size(10);
    group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    group.bench_function("2048", |bench| {
        bench.iter(|| {
            gemm(
                Trans::No,
                Trans::No,
                n,
                n,
                n,
                1.0,
                a.as_slice().unwrap(),
                n,
                b.as_slice().unwrap(),
                n,
                0.0,
                &mut out,
                n,
            )
        })
    });
    group.finish();
}

/// The 36 point GEMMs of one Winograd block of conv2: `M[p] (64 x 24) = U[p]
/// (64 x 32) V[p] (32 x 24)`, one core.
fn winograd_point_gemm(c: &mut Criterion) {
    use convnet::tensor::kernels::winograd::point_gemm::point_gemm;
    let (k, channels, tiles) = (64, 32, 24);
    let u = random(&[36 * k * channels]);
    let v = random(&[36 * channels * tiles]);
    let mut m = vec![0.0f32; 36 * k * tiles];
    let mut group = c.benchmark_group("winograd_conv2_block_of_24_tiles");
    group.throughput(Throughput::Elements((2 * 36 * k * channels * tiles) as u64));
    let (u, v) = (u.as_slice().unwrap(), v.as_slice().unwrap());
    group.bench_function("point_gemms", |b| {
        b.iter(|| {
            for p in 0..36 {
                point_gemm(
                    k,
                    tiles,
                    channels,
                    &u[p * k * channels..],
                    channels,
                    &v[p * channels * tiles..],
                    tiles,
                    &mut m[p * k * tiles..],
                    tiles,
                    false,
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, conv2_parts, winograd_point_gemm, layers, training_step, square_sgemm);
criterion_main!(benches);
