//! The fast Winograd convolution (`kernels/winograd/passes.rs`) against the
//! direct loops and the plain F(4x4, 3x3) reference: random shapes (odd sizes,
//! partial tiles, several tile blocks per row, valid and same), f64 and f32,
//! 1 to 3 threads bit for bit; and its f32 error on a conv2-like layer, the
//! figure BENCHMARKS.md quotes.

use crate::common::rng;
use crate::winograd_support::*;
use convnet::tensor::kernels::winograd::point_gemm::point_gemm;
use convnet::tensor::{ConvAlgo, Padding, WindowGeometry};
use rand::Rng;

#[test]
fn fast_winograd_equals_the_direct_convolution_in_f64_on_random_shapes() {
    let mut rng = rng(41);
    for _ in 0..40 {
        let case = random_case(&mut rng);
        let values = values(&mut rng, &case);
        let relu = rng.random_bool(0.5);
        let ours = run::<f64>(&case, &values, relu, 1);
        let reference = direct(&case, &values, relu);
        assert_within(&ours, &reference, 1e-12, &describe(&case));
    }
}

#[test]
fn fast_winograd_in_f32_is_within_its_error_budget_and_thread_count_independent() {
    let mut rng = rng(42);
    for _ in 0..25 {
        let case = random_case(&mut rng);
        let values = values(&mut rng, &case);
        let relu = rng.random_bool(0.5);
        let one = run::<f32>(&case, &values, relu, 1);
        let reference = direct(&case, &values, relu);
        assert_within(&one, &reference, 2e-5, &describe(&case));
        for threads in [2, 3] {
            let many = run::<f32>(&case, &values, relu, threads);
            assert_eq!(bits(&many.output), bits(&one.output), "{threads} threads, output, {}", describe(&case));
            assert_eq!(bits(&many.grad_input), bits(&one.grad_input), "{threads} threads, grad_input");
            assert_eq!(bits(&many.grad_weight), bits(&one.grad_weight), "{threads} threads, grad_weight");
            assert_eq!(bits(&many.grad_bias), bits(&one.grad_bias), "{threads} threads, grad_bias");
        }
    }
}

/// On small maps the tiles of several images share a span (`images_per_group`
/// in `kernels/winograd/passes.rs`: a 7x7 output has 4 tiles, so up to 8
/// images): 9 images of 7x7 outputs (on 1 thread a group of 8 filling a span
/// and a group of 1) and of 4x4 (one tile an image, all 9 in one group) equal
/// the direct convolution in f64, and in f32 give the bits of 1 thread on 2, 3
/// and 9 threads (groups of 5, 3 and 1).
#[test]
fn images_sharing_spans_on_small_maps_equal_the_direct_convolution_bit_for_bit_on_any_thread_count() {
    let mut rng = rng(47);
    for (size, padding) in [(7, Padding::Same), (9, Padding::Valid), (4, Padding::Same)] {
        let geom = WindowGeometry::new(5, size, size, (3, 3), (1, 1), padding).unwrap();
        let case = Case { batch: 9, out_channels: 6, geom };
        let values = values(&mut rng, &case);
        equals_direct_and_one_threads_bits(&case, &values, (1, &[2, 3, 9]));
    }
}

/// The f64 forward and input gradient on `f64_threads` threads equal the
/// direct convolution, and the f32 ones on each of `threads` threads give the
/// bits of 1 thread.
fn equals_direct_and_one_threads_bits(case: &Case, values: &Values, (f64_threads, threads): (usize, &[usize])) {
    assert_within(&run::<f64>(case, values, true, f64_threads), &direct(case, values, true), 1e-12, &describe(case));
    let one = run::<f32>(case, values, true, 1);
    for &threads in threads {
        let many = run::<f32>(case, values, true, threads);
        assert_eq!(bits(&many.output), bits(&one.output), "{threads} threads, output, {}", describe(case));
        assert_eq!(bits(&many.grad_input), bits(&one.grad_input), "{threads} threads, grad_input");
    }
}

/// With fewer images than threads on maps of one span of tiles (ResNet's 7-
/// and 14-wide), each image is cut into parts by output channels (each part
/// reading its rows of the transformed weights): the direct convolution in f64,
/// and in f32 the bits of 1 thread on 2, 3 and 4 threads (parts of 12 + 8,
/// 8 + 8 + 4 channels), forward and input gradient.
#[test]
fn parts_by_output_channels_equal_the_direct_convolution_bit_for_bit_on_any_thread_count() {
    let mut rng = rng(49);
    for (size, batch) in [(7, 1), (14, 1), (12, 2)] {
        let geom = WindowGeometry::new(6, size, size, (3, 3), (1, 1), Padding::Same).unwrap();
        let case = Case { batch, out_channels: 20, geom };
        let values = values(&mut rng, &case);
        equals_direct_and_one_threads_bits(&case, &values, (2, &[2, 3, 4]));
    }
}

/// Inference's fused convolution + ReLU + max-pool gives the bits of the three
/// layers one by one, for 2x2 and 4x4 pools, f32 (the AVX2 body pooling on the
/// phases) and f64 (the slab), on partial tiles, odd sizes and several tile
/// blocks per row, on 1 and 3 threads.
#[test]
fn fused_relu_maxpool_gives_the_bits_of_the_three_layers_one_by_one() {
    let mut rng = rng(46);
    let mut pooled_values = 0;
    for _ in 0..30 {
        let case = random_case(&mut rng);
        let values = values(&mut rng, &case);
        for pool in [2, 4] {
            let what = format!("pool {pool}, {}", describe(&case));
            let fused = fused_maxpool::<f32>(&case, &values, pool, 1);
            assert_eq!(bits(&fused), bits(&unfused_maxpool::<f32>(&case, &values, pool)), "f32, {what}");
            assert_eq!(bits(&fused_maxpool::<f32>(&case, &values, pool, 3)), bits(&fused), "3 threads, {what}");
            let fused = fused_maxpool::<f64>(&case, &values, pool, 1);
            assert_eq!(bits_of(&fused), bits_of(&unfused_maxpool::<f64>(&case, &values, pool)), "f64, {what}");
            pooled_values += fused.len();
        }
    }
    assert!(pooled_values > 10_000, "the cases pooled only {pooled_values} values");
}

/// The error table of BENCHMARKS.md: f32 Winograd and f32 im2col against f64
/// direct, on a conv2-like layer (32 -> 64 channels, 48x48 outputs) and on a
/// wide one (256 -> 256 channels: each output sums 2,304 products, where the
/// rounding of the transforms adds up most).
#[test]
fn f32_error_of_winograd_on_a_conv2_like_and_a_wide_layer_is_reported_and_within_2e_5() {
    use convnet::tensor::ndarray::{ArrayD, IxDyn};
    use convnet::tensor::{Conv2d, Layer, Mode};
    let mut rng = rng(43);
    let mut report = Vec::new();
    for (name, channels, out_channels, size, batch) in
        [("conv2-like 32 -> 64, 48x48", 32, 64, 50, 2), ("wide 256 -> 256, 12x12", 256, 256, 14, 1)]
    {
        let geom = WindowGeometry::new(channels, size, size, (3, 3), (1, 1), Padding::Valid).unwrap();
        let case = Case { batch, out_channels, geom };
        let mut values = values(&mut rng, &case);
        // weights at Glorot scale, as in training
        let limit = (6.0 / ((channels + out_channels) * 9) as f64).sqrt();
        values.weight.iter_mut().for_each(|w| *w *= limit);
        let reference = direct(&case, &values, false);
        for algo in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
            let mut conv = Conv2d::<f32>::new(channels, out_channels, (3, 3), (1, 1), Padding::Valid).unwrap();
            conv.set_algo(algo);
            conv.weight_mut().iter_mut().zip(&values.weight).for_each(|(w, &v)| *w = v as f32);
            conv.bias_mut().iter_mut().zip(&values.bias).for_each(|(b, &v)| *b = v as f32);
            let in_shape = [batch, channels, size, size];
            let out_shape = [batch, out_channels, geom.out_h, geom.out_w];
            let input = ArrayD::from_shape_vec(IxDyn(&in_shape), to::<f32>(&values.input)).unwrap();
            let grad_output = ArrayD::from_shape_vec(IxDyn(&out_shape), to::<f32>(&values.grad_output)).unwrap();
            let mut output = ArrayD::<f32>::zeros(IxDyn(&out_shape));
            let mut grad_input = ArrayD::<f32>::zeros(input.raw_dim());
            conv.forward(input.view(), output.view_mut(), Mode::Eval);
            conv.backward(input.view(), output.view(), grad_output.view(), Some(grad_input.view_mut()));
            let params = conv.params();
            let errors = [
                error(output.as_slice().unwrap(), &reference.output),
                error(grad_input.as_slice().unwrap(), &reference.grad_input),
                error(params[0].grad.as_slice().unwrap(), &reference.grad_weight),
            ];
            report.push(format!(
                "{name:>27}, {:>8}: forward {:.1e}, input gradient {:.1e}, weight gradient {:.1e}",
                algo.as_str(),
                errors[0],
                errors[1],
                errors[2]
            ));
            assert!(errors.iter().all(|&e| e < 2e-5), "{name}, {} error {errors:?}", algo.as_str());
            if algo == ConvAlgo::Winograd {
                assert_eq!(conv.resolved_algos(), convnet::tensor::ConvAlgos::all(ConvAlgo::Winograd));
            }
        }
    }
    println!("f32 error against f64 direct, max |error| / max |value|:\n{}", report.join("\n"));
}

/// Each pass chooses its method on its own: whatever the others run, a pass
/// gives exactly the bits its method gives when every pass runs by it (the
/// fused im2col backward and the split one compute the same sums).
#[test]
fn every_mix_of_methods_per_pass_gives_each_pass_the_bits_of_its_method() {
    use convnet::tensor::ndarray::{ArrayD, IxDyn};
    use convnet::tensor::{Conv2d, ConvAlgos, Layer, Mode};
    let mut rng = rng(45);
    for padding in [Padding::Valid, Padding::Same] {
        let geom = WindowGeometry::new(9, 13, 37, (3, 3), (1, 1), padding).unwrap();
        let case = Case { batch: 3, out_channels: 10, geom };
        let values = values(&mut rng, &case);
        let run = |algos: ConvAlgos| {
            let mut conv = Conv2d::<f32>::new(9, 10, (3, 3), (1, 1), padding).unwrap();
            conv.set_algos(algos);
            conv.weight_mut().iter_mut().zip(&values.weight).for_each(|(w, &v)| *w = v as f32);
            conv.bias_mut().iter_mut().zip(&values.bias).for_each(|(b, &v)| *b = v as f32);
            let input = ArrayD::from_shape_vec(IxDyn(&[3, 9, 13, 37]), to::<f32>(&values.input)).unwrap();
            let out_shape = [3, 10, geom.out_h, geom.out_w];
            let grad_output = ArrayD::from_shape_vec(IxDyn(&out_shape), to::<f32>(&values.grad_output)).unwrap();
            let mut output = ArrayD::<f32>::zeros(IxDyn(&out_shape));
            let mut grad_input = ArrayD::<f32>::from_elem(input.raw_dim(), f32::NAN);
            conv.forward(input.view(), output.view_mut(), Mode::Eval);
            conv.backward(input.view(), output.view(), grad_output.view(), Some(grad_input.view_mut()));
            let params = conv.params();
            let (grad_weight, grad_bias) = (params[0].grad.to_owned(), params[1].grad.to_owned());
            // and the weight gradient alone (a first layer: no input gradient)
            conv.backward(input.view(), output.view(), grad_output.view(), None);
            let params = conv.params();
            assert_eq!(bits(params[0].grad.as_slice().unwrap()), bits(grad_weight.as_slice().unwrap()));
            assert_eq!(bits(params[1].grad.as_slice().unwrap()), bits(grad_bias.as_slice().unwrap()));
            [output, grad_input, grad_weight, grad_bias].map(|a| bits(a.as_slice().unwrap()))
        };
        let im2col = run(ConvAlgos::all(ConvAlgo::Im2col));
        let winograd = run(ConvAlgos::all(ConvAlgo::Winograd));
        assert_ne!(im2col[1], winograd[1], "the methods round differently, so the test can tell them apart");
        assert_ne!(im2col[2], winograd[2]);
        let pick = |algo: ConvAlgo| if algo == ConvAlgo::Winograd { &winograd } else { &im2col };
        for forward in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
            for input_grad in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
                for weight_grad in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
                    let algos = ConvAlgos { forward, input_grad, weight_grad };
                    let mixed = run(algos);
                    let what = format!("{padding:?} {}", algos.describe());
                    assert!(mixed[0] == pick(forward)[0], "{what}: output");
                    assert!(mixed[1] == pick(input_grad)[1], "{what}: grad_input");
                    assert!(mixed[2] == pick(weight_grad)[2], "{what}: grad_weight");
                    assert!(mixed[3] == pick(weight_grad)[3], "{what}: grad_bias");
                }
            }
        }
    }
}

/// In f32 the SIMD bodies (AVX-512: blocks of 12 rows and 32/24/16/8 columns;
/// AVX2: 6 or 4 rows and 16/8 columns) compute every `C[r][j]` as one chain of
/// fused multiply-adds over `p` in order, so they equal that chain bit for bit,
/// whichever body this CPU runs; the portable body rounds the product first.
#[test]
fn point_gemm_in_f32_is_one_chain_of_multiply_adds_per_value_on_this_cpus_body() {
    use convnet::tensor::kernels::cpu::{isa, Isa};
    let fused = isa() != Isa::Portable;
    let mut rng = rng(47);
    for &(rows, n, depth) in
        &[(4, 8, 3), (12, 24, 32), (64, 24, 32), (20, 40, 9), (8, 32, 64), (16, 16, 5), (36, 56, 17)]
    {
        let (lda, ldb, ldc) = (depth + 1, n + 3, n + 5);
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let (a, b, start) = (
            to32(uniform(&mut rng, rows * lda)),
            to32(uniform(&mut rng, depth * ldb)),
            to32(uniform(&mut rng, rows * ldc)),
        );
        for accumulate in [false, true] {
            let mut c = start.clone();
            point_gemm(rows, n, depth, &a, lda, &b, ldb, &mut c, ldc, accumulate);
            for r in 0..rows {
                for j in 0..ldc {
                    let expected = if j < n {
                        let mut sum = if accumulate { start[r * ldc + j] } else { 0.0 };
                        for p in 0..depth {
                            let (x, y) = (a[r * lda + p], b[p * ldb + j]);
                            sum = if fused { x.mul_add(y, sum) } else { sum + x * y };
                        }
                        sum
                    } else {
                        start[r * ldc + j]
                    };
                    assert_eq!(
                        c[r * ldc + j].to_bits(),
                        expected.to_bits(),
                        "{rows}x{n}x{depth} at ({r}, {j}), {:?}",
                        isa()
                    );
                }
            }
        }
    }
}

#[test]
fn point_gemm_equals_a_plain_triple_loop_and_accumulates() {
    let mut rng = rng(44);
    for &(rows, n, depth) in &[(4, 8, 1), (8, 24, 5), (12, 40, 33), (4, 56, 64), (16, 32, 7)] {
        let (lda, ldb, ldc) = (depth + 3, n + 5, n + 2);
        let a = uniform(&mut rng, rows * lda);
        let b = uniform(&mut rng, depth * ldb);
        let start = uniform(&mut rng, rows * ldc);
        for accumulate in [false, true] {
            let mut c = start.clone();
            point_gemm(rows, n, depth, &a, lda, &b, ldb, &mut c, ldc, accumulate);
            for r in 0..rows {
                for j in 0..ldc {
                    let expected = if j < n {
                        let sum: f64 = (0..depth).map(|p| a[r * lda + p] * b[p * ldb + j]).sum();
                        sum + if accumulate { start[r * ldc + j] } else { 0.0 }
                    } else {
                        start[r * ldc + j] // outside the block: untouched
                    };
                    assert!((c[r * ldc + j] - expected).abs() < 1e-12, "{rows}x{n}x{depth} at ({r}, {j})");
                }
            }
        }
    }
}

#[test]
fn a_convolution_prepares_its_weights_again_after_every_change() {
    for algo in [ConvAlgo::Winograd, ConvAlgo::Im2col] {
        prepares_its_weights_again_after_every_change(algo);
    }
}

/// Inference transforms (Winograd) or packs (im2col) a layer's weights once per
/// version of them; any mutable borrow of the weights (params_mut: optimizers
/// and loaders; weight_mut; the initialisers' weight_and_bias_mut) is a new
/// version, and an input gradient in between (which uses the same buffer for
/// turned or transposed weights) must not be taken for the forward pass's.
fn prepares_its_weights_again_after_every_change(algo: ConvAlgo) {
    use convnet::tensor::ndarray::{ArrayD, IxDyn};
    use convnet::tensor::{Conv2d, Layer, Mode};
    let mut rng = rng(41);
    let (channels, out_channels, size) = (8, 16, 12);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let x = ArrayD::from_shape_vec(IxDyn(&[2, channels, size, size]), random(2 * channels * size * size)).unwrap();
    let fresh = |weight: &ArrayD<f32>| {
        let mut layer = Conv2d::<f32>::new(channels, out_channels, (3, 3), (1, 1), Padding::Same).unwrap();
        layer.set_algo(algo);
        layer.weight_mut().assign(weight);
        let mut y = ArrayD::zeros(IxDyn(&[2, out_channels, size, size]));
        layer.forward(x.view(), y.view_mut(), Mode::Eval);
        y.mapv(f32::to_bits)
    };
    let mut layer = Conv2d::<f32>::new(channels, out_channels, (3, 3), (1, 1), Padding::Same).unwrap();
    layer.set_algo(algo);
    let run = |layer: &mut Conv2d<f32>| {
        let mut y = ArrayD::zeros(IxDyn(&[2, out_channels, size, size]));
        layer.forward(x.view(), y.view_mut(), Mode::Eval);
        y
    };
    let bits = |y: &ArrayD<f32>| y.mapv(f32::to_bits);
    type Change = dyn Fn(&mut Conv2d<f32>, Vec<f32>);
    let changes: [&Change; 3] = [
        &|layer, values| layer.weight_mut().iter_mut().zip(values).for_each(|(w, v)| *w = v),
        &|layer, values| layer.params_mut()[0].value.iter_mut().zip(values).for_each(|(w, v)| *w = v),
        &|layer, values| layer.weight_and_bias_mut().0.iter_mut().zip(values).for_each(|(w, v)| *w = v),
    ];
    for change in changes {
        let before = bits(&run(&mut layer));
        change(&mut layer, random(out_channels * channels * 9));
        let y = run(&mut layer);
        assert_ne!(before, bits(&y), "the change must show");
        assert_eq!(bits(&y), fresh(layer.weight()), "the forward pass after a change reads the new weights");
        // an input gradient between two forward passes
        let dy = ArrayD::from_elem(IxDyn(&[2, out_channels, size, size]), 0.5f32);
        let mut dx = ArrayD::zeros(x.raw_dim());
        layer.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
        assert_eq!(bits(&run(&mut layer)), bits(&y), "after an input gradient");
    }
}
