//! The fast Winograd convolution (`kernels/conv_winograd.rs`) against the
//! direct loops and the plain F(4x4, 3x3) reference: random shapes (odd sizes,
//! partial tiles, several tile blocks per row, valid and same), f64 and f32,
//! 1 to 3 threads bit for bit; and its f32 error on a conv2-like layer, the
//! figure BENCHMARKS.md quotes.

mod common;
mod winograd_support;

use common::rng;
use convnet::tensor::kernels::conv_winograd::point_gemm;
use convnet::tensor::{ConvGeometry, Padding};
use rand::Rng;
use winograd_support::*;

#[test]
fn fast_winograd_equals_the_direct_convolution_in_f64_on_random_shapes() {
    let mut rng = rng(41);
    for _ in 0..40 {
        let case = random_case(&mut rng);
        let values = values(&mut rng, &case);
        let relu = rng.random_bool(0.5);
        let ours = run::<f64>(&case, &values, relu, 1);
        let reference = direct(&case, &values, relu);
        for (what, fast, slow) in [
            ("output", &ours.output, &reference.output),
            ("grad_input", &ours.grad_input, &reference.grad_input),
            ("grad_weight", &ours.grad_weight, &reference.grad_weight),
            ("grad_bias", &ours.grad_bias, &reference.grad_bias),
        ] {
            let err = error(fast, slow);
            assert!(err < 1e-12, "{what} differs by {err:e} for {}", describe(&case));
        }
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
        for (what, fast, slow) in [
            ("output", &one.output, &reference.output),
            ("grad_input", &one.grad_input, &reference.grad_input),
            ("grad_weight", &one.grad_weight, &reference.grad_weight),
            ("grad_bias", &one.grad_bias, &reference.grad_bias),
        ] {
            let err = error(fast, slow);
            assert!(err < 2e-5, "f32 {what} differs by {err:e} for {}", describe(&case));
        }
        for threads in [2, 3] {
            let many = run::<f32>(&case, &values, relu, threads);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&many.output), bits(&one.output), "{threads} threads, output, {}", describe(&case));
            assert_eq!(bits(&many.grad_input), bits(&one.grad_input), "{threads} threads, grad_input");
            assert_eq!(bits(&many.grad_weight), bits(&one.grad_weight), "{threads} threads, grad_weight");
            assert_eq!(bits(&many.grad_bias), bits(&one.grad_bias), "{threads} threads, grad_bias");
        }
    }
}

/// The error table of BENCHMARKS.md: a conv2-like layer (32 -> 64 channels,
/// 48x48 outputs), f32 Winograd and f32 im2col against f64 direct.
#[test]
fn f32_error_of_winograd_on_a_conv2_like_layer_is_reported_and_within_2e_5() {
    use convnet::tensor::ndarray::{ArrayD, IxDyn};
    use convnet::tensor::{Conv2d, ConvAlgo, Layer, Mode};
    let mut rng = rng(43);
    let geom = ConvGeometry::new(32, 50, 50, (3, 3), (1, 1), Padding::Valid).unwrap();
    let case = Case { batch: 2, out_channels: 64, geom };
    let mut values = values(&mut rng, &case);
    // weights at Glorot scale, as in training
    let limit = (6.0 / ((32 + 64) * 9) as f64).sqrt();
    values.weight.iter_mut().for_each(|w| *w *= limit);
    let reference = direct(&case, &values, false);
    let mut report = Vec::new();
    for algo in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
        let mut conv = Conv2d::<f32>::new(32, 64, (3, 3), (1, 1), Padding::Valid).unwrap();
        conv.set_algo(algo);
        conv.weight_mut().iter_mut().zip(&values.weight).for_each(|(w, &v)| *w = v as f32);
        conv.bias_mut().iter_mut().zip(&values.bias).for_each(|(b, &v)| *b = v as f32);
        let input = ArrayD::from_shape_vec(IxDyn(&[2, 32, 50, 50]), to::<f32>(&values.input)).unwrap();
        let grad_output = ArrayD::from_shape_vec(IxDyn(&[2, 64, 48, 48]), to::<f32>(&values.grad_output)).unwrap();
        let mut output = ArrayD::<f32>::zeros(IxDyn(&[2, 64, 48, 48]));
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
            "{:>8}: forward {:.1e}, input gradient {:.1e}, weight gradient {:.1e}",
            algo.as_str(),
            errors[0],
            errors[1],
            errors[2]
        ));
        assert!(errors.iter().all(|&e| e < 2e-5), "{} error {errors:?}", algo.as_str());
        if algo == ConvAlgo::Winograd {
            // it did run Winograd: its forward error differs from im2col's
            assert_eq!(conv.resolved_algo(), ConvAlgo::Winograd);
        }
    }
    println!("f32 error against f64 direct, max |error| / max |value|:\n{}", report.join("\n"));
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
