//! The fast Winograd convolution (`kernels/conv_winograd.rs`) against the
//! direct loops and the plain F(4x4, 3x3) reference: random shapes (odd sizes,
//! partial tiles, several tile blocks per row, valid and same), f64 and f32,
//! 1 to 3 threads bit for bit; and its f32 error on a conv2-like layer, the
//! figure BENCHMARKS.md quotes.

mod common;

use common::{rng, with_threads};
use convnet::tensor::kernels::conv_winograd::{
    conv2d_backward_winograd, conv2d_forward_winograd, point_gemm, WinogradWorkspace,
};
use convnet::tensor::layers::conv2d::{conv2d_backward_naive, conv2d_forward_naive};
use convnet::tensor::{ConvGeometry, Element, Padding};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

fn uniform(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn to<T: Element>(values: &[f64]) -> Vec<T> {
    values.iter().map(|&v| T::from_f64(v)).collect()
}

/// max |a - b| / max |b|: the error relative to the largest value.
fn error(a: &[impl Element], b: &[f64]) -> f64 {
    let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (Element::to_f64(*x) - y).abs()).fold(0.0, f64::max) / scale
}

struct Case {
    batch: usize,
    out_channels: usize,
    geom: ConvGeometry,
}

/// Everything the fast path computes for one case, in `T`, on `threads` threads.
struct Results<T> {
    output: Vec<T>,
    grad_input: Vec<T>,
    grad_weight: Vec<T>,
    grad_bias: Vec<T>,
}

fn run<T: Element>(case: &Case, values: &Values, relu: bool, threads: usize) -> Results<T> {
    with_threads(threads, || {
        let geom = &case.geom;
        let mut workspace = WinogradWorkspace::<T>::default();
        let (input, weight, bias, grad_output) =
            (to::<T>(&values.input), to::<T>(&values.weight), to::<T>(&values.bias), to::<T>(&values.grad_output));
        let mut output = vec![T::from_f64(7.0); grad_output.len()];
        conv2d_forward_winograd(geom, &weight, &bias, &input, &mut output, relu, &mut workspace);
        let mut grad_input = vec![T::from_f64(9.0); input.len()];
        let (mut grad_weight, mut grad_bias) = (vec![T::zero(); weight.len()], vec![T::zero(); bias.len()]);
        conv2d_backward_winograd(
            geom,
            &weight,
            &input,
            &grad_output,
            &mut grad_weight,
            &mut grad_bias,
            Some(&mut grad_input),
            &mut workspace,
        );
        Results { output, grad_input, grad_weight, grad_bias }
    })
}

struct Values {
    input: Vec<f64>,
    weight: Vec<f64>,
    bias: Vec<f64>,
    grad_output: Vec<f64>,
}

fn values(rng: &mut ChaCha8Rng, case: &Case) -> Values {
    let geom = &case.geom;
    Values {
        input: uniform(rng, case.batch * geom.in_len()),
        weight: uniform(rng, case.out_channels * geom.in_channels * 9),
        bias: uniform(rng, case.out_channels),
        grad_output: uniform(rng, case.batch * case.out_channels * geom.out_pixels()),
    }
}

/// The direct convolution in f64: output (with the ReLU if asked), dX, dW, db.
fn direct(case: &Case, values: &Values, relu: bool) -> Results<f64> {
    let geom = &case.geom;
    let mut output = vec![0.0; values.grad_output.len()];
    conv2d_forward_naive(geom, case.batch, case.out_channels, &values.input, &values.weight, &values.bias, &mut output);
    if relu {
        output.iter_mut().for_each(|y| *y = y.max(0.0));
    }
    let (mut grad_weight, mut grad_bias, mut grad_input) =
        (vec![0.0; values.weight.len()], vec![0.0; case.out_channels], vec![0.0; values.input.len()]);
    conv2d_backward_naive(
        geom,
        case.batch,
        case.out_channels,
        &values.input,
        &values.weight,
        &values.grad_output,
        &mut grad_weight,
        &mut grad_bias,
        &mut grad_input,
    );
    Results { output, grad_input, grad_weight, grad_bias }
}

fn random_case(rng: &mut ChaCha8Rng) -> Case {
    let padding = if rng.random_bool(0.5) { Padding::Valid } else { Padding::Same };
    // heights and widths from 3 (one partial tile) to past two tile blocks of 24 tiles (> 96 + 2)
    let wide = rng.random_bool(0.2);
    let (h, w) = (rng.random_range(3..=14), if wide { rng.random_range(97..=110) } else { rng.random_range(3..=17) });
    let channels = rng.random_range(1..=10);
    let geom = ConvGeometry::new(channels, h, w, (3, 3), (1, 1), padding).unwrap();
    Case { batch: rng.random_range(1..=3), out_channels: rng.random_range(1..=11), geom }
}

fn describe(case: &Case) -> String {
    let g = &case.geom;
    format!(
        "N{} C{} K{} {}x{} pad ({}, {})",
        case.batch, g.in_channels, case.out_channels, g.in_h, g.in_w, g.pad_top, g.pad_left
    )
}

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
