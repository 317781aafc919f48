//! Helpers of the Winograd tests: random cases, the fast path on a thread
//! count, the direct convolution in f64, and the error measure.
#![allow(dead_code)]

use crate::common::with_threads;
use convnet::tensor::kernels::winograd::passes::{
    conv2d_backward_winograd, conv2d_forward_winograd, conv2d_forward_winograd_relu_maxpool, WinogradWorkspace,
};
use convnet::tensor::layers::conv2d::{conv2d_backward_naive, conv2d_forward_naive};
use convnet::tensor::{Element, Padding, WindowGeometry};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub fn uniform(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

pub fn to<T: Element>(values: &[f64]) -> Vec<T> {
    values.iter().map(|&v| T::from_f64(v)).collect()
}

/// max |a - b| / max |b|: the error relative to the largest value.
pub fn error(a: &[impl Element], b: &[f64]) -> f64 {
    let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (Element::to_f64(*x) - y).abs()).fold(0.0, f64::max) / scale
}

pub struct Case {
    pub batch: usize,
    pub out_channels: usize,
    pub geom: WindowGeometry,
}

/// Everything the fast path computes for one case, in `T`, on `threads` threads.
pub struct Results<T> {
    pub output: Vec<T>,
    pub grad_input: Vec<T>,
    pub grad_weight: Vec<T>,
    pub grad_bias: Vec<T>,
}

pub fn run<T: Element>(case: &Case, values: &Values, relu: bool, threads: usize) -> Results<T> {
    with_threads(threads, || {
        let geom = &case.geom;
        let mut workspace = WinogradWorkspace::<T>::default();
        let (input, weight, bias, grad_output) =
            (to::<T>(&values.input), to::<T>(&values.weight), to::<T>(&values.bias), to::<T>(&values.grad_output));
        let mut output = vec![T::from_f64(7.0); grad_output.len()];
        conv2d_forward_winograd(geom, &weight, &bias, &input, &mut output, relu, &mut workspace, None);
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

pub struct Values {
    pub input: Vec<f64>,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
    pub grad_output: Vec<f64>,
}

pub fn values(rng: &mut ChaCha8Rng, case: &Case) -> Values {
    let geom = &case.geom;
    Values {
        input: uniform(rng, case.batch * geom.in_len()),
        weight: uniform(rng, case.out_channels * geom.in_channels * 9),
        bias: uniform(rng, case.out_channels),
        grad_output: uniform(rng, case.batch * case.out_channels * geom.out_pixels()),
    }
}

/// The direct convolution in f64: output (with the ReLU if asked), dX, dW, db.
pub fn direct(case: &Case, values: &Values, relu: bool) -> Results<f64> {
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

pub fn random_case(rng: &mut ChaCha8Rng) -> Case {
    let padding = if rng.random_bool(0.5) { Padding::Valid } else { Padding::Same };
    // heights and widths from 3 (one partial tile) to past two tile blocks of 32 tiles (> 128 + 2)
    let wide = rng.random_bool(0.2);
    let (h, w) = (rng.random_range(3..=14), if wide { rng.random_range(129..=142) } else { rng.random_range(3..=17) });
    let channels = rng.random_range(1..=10);
    let geom = WindowGeometry::new(channels, h, w, (3, 3), (1, 1), padding).unwrap();
    Case { batch: rng.random_range(1..=3), out_channels: rng.random_range(1..=11), geom }
}

pub fn describe(case: &Case) -> String {
    let g = &case.geom;
    format!(
        "N{} C{} K{} {}x{} pad ({}, {})",
        case.batch, g.in_channels, case.out_channels, g.in_h, g.in_w, g.pad_top, g.pad_left
    )
}

/// Every result of `ours` within `budget` of `reference` (max |error| / max |value|).
pub fn assert_within<T: Element>(ours: &Results<T>, reference: &Results<f64>, budget: f64, what: &str) {
    for (name, fast, slow) in [
        ("output", &ours.output, &reference.output),
        ("grad_input", &ours.grad_input, &reference.grad_input),
        ("grad_weight", &ours.grad_weight, &reference.grad_weight),
        ("grad_bias", &ours.grad_bias, &reference.grad_bias),
    ] {
        let err = error(fast, slow);
        assert!(err < budget, "{name} differs by {err:e} (budget {budget:e}) for {what}");
    }
}

/// The bit patterns of f32 values, to compare results exactly.
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

/// Inference's fused pass: convolution, ReLU and `pool x pool` max-pool in one
/// ([`conv2d_forward_winograd_relu_maxpool`]), on `threads` threads.
pub fn fused_maxpool<T: Element>(case: &Case, values: &Values, pool: usize, threads: usize) -> Vec<T> {
    with_threads(threads, || {
        let geom = &case.geom;
        let (input, weight, bias) = (to::<T>(&values.input), to::<T>(&values.weight), to::<T>(&values.bias));
        let pooled_len = case.batch * case.out_channels * (geom.out_h / pool) * (geom.out_w / pool);
        let mut pooled = vec![T::from_f64(7.0); pooled_len];
        let mut workspace = WinogradWorkspace::<T>::default();
        conv2d_forward_winograd_relu_maxpool(geom, &weight, &bias, &input, &mut pooled, pool, &mut workspace);
        pooled
    })
}

/// The same three layers one by one: the Winograd forward with its ReLU, then a
/// plain `pool x pool` max-pool at stride `pool` (whole windows only).
pub fn unfused_maxpool<T: Element>(case: &Case, values: &Values, pool: usize) -> Vec<T> {
    let output = run::<T>(case, values, true, 1).output;
    let (oh, ow) = (case.geom.out_h, case.geom.out_w);
    let (ph, pw) = (oh / pool, ow / pool);
    let mut pooled = Vec::with_capacity(case.batch * case.out_channels * ph * pw);
    for plane in output.chunks_exact(oh * ow) {
        for y in 0..ph {
            for x in 0..pw {
                let mut best = plane[y * pool * ow + x * pool];
                for r in 0..pool {
                    for c in 0..pool {
                        let v = plane[(y * pool + r) * ow + x * pool + c];
                        if v > best {
                            best = v;
                        }
                    }
                }
                pooled.push(best);
            }
        }
    }
    pooled
}

/// Bit patterns of any element type (f64 through its f64 bits).
pub fn bits_of<T: Element>(values: &[T]) -> Vec<u64> {
    values.iter().map(|x| Element::to_f64(*x).to_bits()).collect()
}
