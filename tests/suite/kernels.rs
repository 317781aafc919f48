//! Fast kernels held to their plain `_naive` twins on random shapes, strides,
//! paddings and batch sizes, in f32 and f64, on 1 and 3 threads; and the adjoint
//! test of im2col / col2im.

use crate::common::{max_rel_diff, random_tensor, rng, with_threads};
use convnet::tensor::kernels::im2col::{col2im, col2im_naive, im2col, im2col_naive};
use convnet::tensor::kernels::winograd::{winograd_forward, winograd_input_grad, winograd_weight_grad};
use convnet::tensor::layers::conv2d::{
    conv2d_backward_im2col, conv2d_backward_naive, conv2d_forward_im2col, conv2d_forward_naive,
};
use convnet::tensor::layers::dense::{dense_backward_naive, dense_forward_naive};
use convnet::tensor::layers::maxpool2d::maxpool_naive;
use convnet::tensor::loss::softmax_cross_entropy_naive;
use convnet::tensor::ndarray::{ArrayD, IxDyn};
use convnet::tensor::WindowGeometry;
use convnet::tensor::{init, Conv2d, Dense, Element, Layer, MaxPool2d, Mode, Padding, SoftmaxCrossEntropy};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A random convolution case that the geometry accepts.
struct ConvCase {
    batch: usize,
    out_channels: usize,
    geom: WindowGeometry,
    padding: Padding,
}

fn random_conv_case(rng: &mut ChaCha8Rng) -> ConvCase {
    loop {
        let padding = if rng.random_bool(0.5) { Padding::Valid } else { Padding::Same };
        let kernel = (rng.random_range(1..=5), rng.random_range(1..=5));
        let stride = (rng.random_range(1..=3), rng.random_range(1..=3));
        let (channels, h, w) = (rng.random_range(1..=4), rng.random_range(1..=11), rng.random_range(1..=11));
        if let Some(geom) = WindowGeometry::new(channels, h, w, kernel, stride, padding) {
            return ConvCase { batch: rng.random_range(1..=4), out_channels: rng.random_range(1..=5), geom, padding };
        }
    }
}

fn to<T: Element>(values: &ArrayD<f64>) -> ArrayD<T> {
    values.mapv(T::from_f64)
}

fn to_f64<T: Element>(values: &[T]) -> Vec<f64> {
    values.iter().map(|&v| Element::to_f64(v)).collect()
}

/// Conv2d forward and backward (the tiled, fused kernel) against the plain
/// untiled im2col + GEMM reference and the direct loops: all three agree.
fn conv_matches_naive<T: Element>(seed: u64, tolerance: f64) {
    let mut rng = rng(seed);
    for _ in 0..60 {
        let ConvCase { batch, out_channels, geom, padding } = random_conv_case(&mut rng);
        let mut conv = Conv2d::<T>::new(
            geom.in_channels,
            out_channels,
            (geom.kernel_h, geom.kernel_w),
            (geom.stride_h, geom.stride_w),
            padding,
        )
        .unwrap();
        init::glorot_uniform(conv.weight_mut(), seed, 1);
        conv.bias_mut().iter_mut().enumerate().for_each(|(i, b)| *b = T::from_f64(0.1 * i as f64));
        // half the cases with a ReLU fused into the forward pass: output = max(conv, 0)
        let fused_relu = rng.random_bool(0.5);
        let input = to::<T>(&random_tensor(&mut rng, &[batch, geom.in_channels, geom.in_h, geom.in_w]));
        let out_shape = [batch, out_channels, geom.out_h, geom.out_w];
        let grad_output = to::<T>(&random_tensor(&mut rng, &out_shape));
        let mut output = ArrayD::<T>::zeros(IxDyn(&out_shape));
        let mut grad_input = ArrayD::<T>::from_elem(input.raw_dim(), T::from_f64(99.0));
        if fused_relu {
            conv.forward_fused_relu(input.view(), output.view_mut(), true);
        } else {
            conv.forward(input.view(), output.view_mut(), Mode::Eval);
        }
        conv.backward(input.view(), output.view(), grad_output.view(), Some(grad_input.view_mut()));

        let weight = conv.weight().as_slice().unwrap().to_vec();
        let bias: Vec<T> = (0..out_channels).map(|i| T::from_f64(0.1 * i as f64)).collect();
        let mut naive_output = vec![T::zero(); output.len()];
        conv2d_forward_naive(&geom, batch, out_channels, input.as_slice().unwrap(), &weight, &bias, &mut naive_output);
        if fused_relu {
            naive_output.iter_mut().for_each(|y| *y = y.max(T::zero()));
        }
        let (mut grad_weight, mut grad_bias, mut naive_grad_input) =
            (vec![T::zero(); weight.len()], vec![T::zero(); out_channels], vec![T::zero(); input.len()]);
        conv2d_backward_naive(
            &geom,
            batch,
            out_channels,
            input.as_slice().unwrap(),
            &weight,
            grad_output.as_slice().unwrap(),
            &mut grad_weight,
            &mut grad_bias,
            &mut naive_grad_input,
        );
        // the plain im2col + GEMM of the layer's docs
        let mut im2col_output = vec![T::zero(); output.len()];
        conv2d_forward_im2col(&geom, input.as_slice().unwrap(), &weight, &bias, &mut im2col_output);
        if fused_relu {
            im2col_output.iter_mut().for_each(|y| *y = y.max(T::zero()));
        }
        let (mut im2col_grad_weight, mut im2col_grad_bias, mut im2col_grad_input) =
            (vec![T::zero(); weight.len()], vec![T::zero(); out_channels], vec![T::zero(); input.len()]);
        conv2d_backward_im2col(
            &geom,
            input.as_slice().unwrap(),
            &weight,
            grad_output.as_slice().unwrap(),
            &mut im2col_grad_weight,
            &mut im2col_grad_bias,
            &mut im2col_grad_input,
        );
        let params = conv.params();
        let case = format!("{geom:?} batch {batch} out {out_channels} fused ReLU {fused_relu}");
        for (name, fast, slow) in [
            ("output", to_f64(output.as_slice().unwrap()), to_f64(&naive_output)),
            ("grad_input", to_f64(grad_input.as_slice().unwrap()), to_f64(&naive_grad_input)),
            ("grad_weight", to_f64(params[0].grad.as_slice().unwrap()), to_f64(&grad_weight)),
            ("grad_bias", to_f64(params[1].grad.as_slice().unwrap()), to_f64(&grad_bias)),
            ("im2col output", to_f64(&im2col_output), to_f64(&naive_output)),
            ("im2col grad_input", to_f64(&im2col_grad_input), to_f64(&naive_grad_input)),
            ("im2col grad_weight", to_f64(&im2col_grad_weight), to_f64(&grad_weight)),
            ("im2col grad_bias", to_f64(&im2col_grad_bias), to_f64(&grad_bias)),
        ] {
            let diff = max_rel_diff(&fast, &slow);
            assert!(diff < tolerance, "{} {name} differs by {diff:e} for {case}", T::NAME);
        }
    }
}

#[test]
fn conv2d_matches_naive_f64_single_and_multi_threaded() {
    with_threads(1, || conv_matches_naive::<f64>(10, 1e-12));
    with_threads(3, || conv_matches_naive::<f64>(11, 1e-12));
}

#[test]
fn conv2d_matches_naive_f32_single_and_multi_threaded() {
    with_threads(1, || conv_matches_naive::<f32>(12, 1e-5));
    with_threads(3, || conv_matches_naive::<f32>(13, 1e-5));
}

#[test]
fn conv2d_matches_naive_on_a_tall_image_with_many_tiles() {
    // 3 x 200 x 500 with 3x3 kernel: col_rows * out_w = 13,500, so forward tiles of
    // 19 rows and backward tiles of 77 rows, each with a ragged last tile, exercise
    // the tiling of both passes.
    let mut rng = rng(14);
    let geom = WindowGeometry::new(3, 200, 500, (3, 3), (1, 1), Padding::Same).unwrap();
    let mut conv = Conv2d::<f64>::new(3, 4, (3, 3), (1, 1), Padding::Same).unwrap();
    init::glorot_uniform(conv.weight_mut(), 1, 1);
    let input = random_tensor(&mut rng, &[2, 3, 200, 500]);
    let grad_output = random_tensor(&mut rng, &[2, 4, 200, 500]);
    let mut output = ArrayD::zeros(IxDyn(&[2, 4, 200, 500]));
    let mut grad_input = ArrayD::zeros(input.raw_dim());
    conv.forward(input.view(), output.view_mut(), Mode::Eval);
    conv.backward(input.view(), output.view(), grad_output.view(), Some(grad_input.view_mut()));
    let weight = conv.weight().as_slice().unwrap().to_vec();
    let mut naive = vec![0.0; output.len()];
    conv2d_forward_naive(&geom, 2, 4, input.as_slice().unwrap(), &weight, &[0.0; 4], &mut naive);
    assert!(max_rel_diff(output.as_slice().unwrap(), &naive) < 1e-12);
    let (mut gw, mut gb, mut gi) = (vec![0.0; weight.len()], vec![0.0; 4], vec![0.0; input.len()]);
    conv2d_backward_naive(
        &geom,
        2,
        4,
        input.as_slice().unwrap(),
        &weight,
        grad_output.as_slice().unwrap(),
        &mut gw,
        &mut gb,
        &mut gi,
    );
    assert!(max_rel_diff(grad_input.as_slice().unwrap(), &gi) < 1e-12);
    assert!(max_rel_diff(conv.params()[0].grad.as_slice().unwrap(), &gw) < 1e-12);
}

#[test]
fn im2col_and_col2im_match_naive_on_random_shapes_and_row_ranges() {
    let mut rng = rng(15);
    for _ in 0..200 {
        let ConvCase { geom, .. } = random_conv_case(&mut rng);
        let row_start = rng.random_range(0..geom.out_h);
        let row_end = rng.random_range(row_start + 1..=geom.out_h);
        let image = random_tensor(&mut rng, &[geom.in_len()]);
        let cols = geom.col_rows() * (row_end - row_start) * geom.out_w;
        let (mut fast, mut slow) = (vec![f64::NAN; cols], vec![f64::NAN; cols]);
        im2col(&geom, image.as_slice().unwrap(), row_start, row_end, &mut fast);
        im2col_naive(&geom, image.as_slice().unwrap(), row_start, row_end, &mut slow);
        assert_eq!(fast, slow, "{geom:?} rows {row_start}..{row_end}");
        let col = random_tensor(&mut rng, &[cols]);
        let (mut fast, mut slow) = (vec![0.5; geom.in_len()], vec![0.5; geom.in_len()]);
        col2im(&geom, col.as_slice().unwrap(), row_start, row_end, &mut fast);
        col2im_naive(&geom, col.as_slice().unwrap(), row_start, row_end, &mut slow);
        assert!(max_rel_diff(&fast, &slow) < 1e-14, "{geom:?}");
    }
}

#[test]
fn im2col_and_col2im_are_adjoint() {
    // <im2col(x), c> = <x, col2im(c)> for random x, c: col2im is exactly the
    // transpose of the linear map im2col, which is what backprop needs.
    let mut rng = rng(16);
    for _ in 0..200 {
        let ConvCase { geom, .. } = random_conv_case(&mut rng);
        let cols = geom.col_rows() * geom.out_pixels();
        let x = random_tensor(&mut rng, &[geom.in_len()]);
        let c = random_tensor(&mut rng, &[cols]);
        let mut col_of_x = vec![0.0; cols];
        im2col(&geom, x.as_slice().unwrap(), 0, geom.out_h, &mut col_of_x);
        let mut im_of_c = vec![0.0; geom.in_len()];
        col2im(&geom, c.as_slice().unwrap(), 0, geom.out_h, &mut im_of_c);
        let left: f64 = col_of_x.iter().zip(c.iter()).map(|(a, b)| a * b).sum();
        let right: f64 = x.iter().zip(&im_of_c).map(|(a, b)| a * b).sum();
        assert!((left - right).abs() <= 1e-12 * left.abs().max(1.0), "{geom:?}: {left} vs {right}");
    }
}

#[test]
fn adjoint_test_catches_an_off_by_one_col2im() {
    // The adjoint test is only worth something if it fails on a broken col2im.
    let geom = WindowGeometry::new(2, 6, 5, (3, 3), (1, 1), Padding::Same).unwrap();
    let mut rng = rng(17);
    let cols = geom.col_rows() * geom.out_pixels();
    let x = random_tensor(&mut rng, &[geom.in_len()]);
    let c = random_tensor(&mut rng, &[cols]);
    let mut col_of_x = vec![0.0; cols];
    im2col(&geom, x.as_slice().unwrap(), 0, geom.out_h, &mut col_of_x);
    let mut im_of_c = vec![0.0; geom.in_len()];
    col2im(&geom, c.as_slice().unwrap(), 0, geom.out_h, &mut im_of_c);
    im_of_c.rotate_right(1); // off by one pixel
    let left: f64 = col_of_x.iter().zip(c.iter()).map(|(a, b)| a * b).sum();
    let right: f64 = x.iter().zip(&im_of_c).map(|(a, b)| a * b).sum();
    assert!((left - right).abs() > 1e-3, "an off-by-one col2im must break the adjoint identity");
}

fn maxpool_matches_naive<T: Element>(seed: u64) {
    let mut rng = rng(seed);
    for _ in 0..100 {
        let (pool, stride) = if rng.random_bool(0.3) {
            ((2, 2), (2, 2)) // the fast path of the common case
        } else {
            ((rng.random_range(1..=3), rng.random_range(1..=3)), (rng.random_range(1..=3), rng.random_range(1..=3)))
        };
        // valid, same, or PyTorch's numbers (at most half the window, as PyTorch allows)
        let padding = match rng.random_range(0..3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit(rng.random_range(0..=pool.0 / 2), rng.random_range(0..=pool.1 / 2)),
        };
        // rows past 9 reach the vectorised middles of the values-only path
        let w = if rng.random_bool(0.3) { rng.random_range(10..=40) } else { rng.random_range(1..=9) };
        let (batch, channels, h) = (rng.random_range(1..=3), rng.random_range(1..=3), rng.random_range(1..=9));
        let Some(geom) = WindowGeometry::new(1, h, w, pool, stride, padding) else { continue };
        // round to a coarse grid so that ties actually happen
        let input = to::<T>(&random_tensor(&mut rng, &[batch, channels, h, w]).mapv(|v| (v * 4.0).round() / 4.0));
        let out_shape = [batch, channels, geom.out_h, geom.out_w];
        let grad_output = to::<T>(&random_tensor(&mut rng, &out_shape));
        let mut layer = MaxPool2d::new(pool, stride, padding).unwrap();
        let mut output = ArrayD::<T>::zeros(IxDyn(&out_shape));
        let mut grad_input = ArrayD::<T>::zeros(input.raw_dim());
        Layer::<T>::forward(&mut layer, input.view(), output.view_mut(), Mode::Eval);
        Layer::<T>::backward(&mut layer, input.view(), output.view(), grad_output.view(), Some(grad_input.view_mut()));
        let (naive_output, naive_grad_input) =
            maxpool_naive(&geom, batch * channels, input.as_slice().unwrap(), grad_output.as_slice().unwrap());
        assert_eq!(output.as_slice().unwrap(), &naive_output[..], "{geom:?}");
        assert_eq!(grad_input.as_slice().unwrap(), &naive_grad_input[..], "{geom:?}");
        // inference's values-only path: the same bits (signed zeros and all)
        let mut values = ArrayD::<T>::from_elem(IxDyn(&out_shape), T::from_f64(9.0));
        layer.forward_values(input.view(), values.view_mut());
        let bits = |v: &[T]| v.iter().map(|&x| Element::to_f64(x).to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(values.as_slice().unwrap()), bits(&naive_output), "{geom:?}");
    }
}

#[test]
fn maxpool_matches_naive_with_ties_in_f32_and_f64() {
    with_threads(1, || maxpool_matches_naive::<f64>(18));
    with_threads(3, || maxpool_matches_naive::<f32>(19));
}

fn dense_matches_naive<T: Element>(seed: u64, tolerance: f64) {
    let mut rng = rng(seed);
    for _ in 0..40 {
        let (batch, fan_in, fan_out) = (rng.random_range(1..=9), rng.random_range(1..=70), rng.random_range(1..=40));
        let mut dense = Dense::<T>::new(fan_in, fan_out).unwrap();
        init::glorot_uniform(dense.weight_mut(), seed, 2);
        dense.bias_mut().iter_mut().for_each(|b| *b = T::from_f64(0.3));
        let x = to::<T>(&random_tensor(&mut rng, &[batch, fan_in]));
        let dy = to::<T>(&random_tensor(&mut rng, &[batch, fan_out]));
        let mut y = ArrayD::<T>::zeros(IxDyn(&[batch, fan_out]));
        let mut dx = ArrayD::<T>::zeros(x.raw_dim());
        dense.forward(x.view(), y.view_mut(), Mode::Eval);
        dense.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
        let params = dense.params();
        let w = params[0].value.as_slice().unwrap();
        let b = params[1].value.as_slice().unwrap();
        let mut naive_y = vec![T::zero(); y.len()];
        dense_forward_naive(batch, fan_in, fan_out, x.as_slice().unwrap(), w, b, &mut naive_y);
        let (mut dw, mut db, mut naive_dx) =
            (vec![T::zero(); w.len()], vec![T::zero(); b.len()], vec![T::zero(); x.len()]);
        dense_backward_naive(
            batch,
            fan_in,
            fan_out,
            x.as_slice().unwrap(),
            w,
            dy.as_slice().unwrap(),
            &mut dw,
            &mut db,
            &mut naive_dx,
        );
        for (name, fast, slow) in [
            ("y", to_f64(y.as_slice().unwrap()), to_f64(&naive_y)),
            ("dx", to_f64(dx.as_slice().unwrap()), to_f64(&naive_dx)),
            ("dw", to_f64(params[0].grad.as_slice().unwrap()), to_f64(&dw)),
            ("db", to_f64(params[1].grad.as_slice().unwrap()), to_f64(&db)),
        ] {
            let diff = max_rel_diff(&fast, &slow);
            assert!(diff < tolerance, "{} dense {name}: {diff:e}", T::NAME);
        }
    }
}

#[test]
fn dense_matches_naive_in_f32_and_f64() {
    with_threads(1, || dense_matches_naive::<f64>(20, 1e-12));
    with_threads(3, || dense_matches_naive::<f32>(21, 1e-5));
}

#[test]
fn softmax_cross_entropy_matches_naive() {
    let mut rng = rng(22);
    for _ in 0..50 {
        let (batch, classes) = (rng.random_range(1..=8), rng.random_range(2..=12));
        let logits = random_tensor(&mut rng, &[batch, classes]).mapv(|v| v * 5.0);
        let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
        let mut loss_fn = SoftmaxCrossEntropy::<f64>::new();
        let loss = loss_fn.forward(logits.view(), &labels).unwrap();
        let (naive_loss, naive_grad) = softmax_cross_entropy_naive(logits.as_slice().unwrap(), &labels, classes);
        assert!((loss - naive_loss).abs() < 1e-12 * naive_loss.abs().max(1.0));
        assert!(max_rel_diff(loss_fn.grad_logits().as_slice().unwrap(), &naive_grad) < 1e-12);
    }
}

/// Uniform values in [-1, 1).
fn uniform(rng: &mut rand_chacha::ChaCha8Rng, len: usize) -> Vec<f64> {
    use rand::Rng;
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn close(a: &[f64], b: &[f64], what: &str) {
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst <= 1e-10 * scale, "{what}: max difference {worst:e} (largest value {scale:e})");
}

#[test]
fn winograd_f4x4_3x3_all_three_passes_equal_the_direct_convolution_in_f64() {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
    // odd sizes, partial tiles, both paddings, one and several channels and images
    for &(batch, channels, out_channels, h, w, padding) in &[
        (1, 1, 1, 6, 6, Padding::Valid),
        (2, 3, 4, 9, 11, Padding::Valid),
        (1, 2, 3, 7, 5, Padding::Same),
        (3, 4, 2, 13, 10, Padding::Same),
        (1, 1, 2, 3, 3, Padding::Valid),
    ] {
        let geom = WindowGeometry::new(channels, h, w, (3, 3), (1, 1), padding).unwrap();
        let what = format!("N{batch} C{channels} K{out_channels} {h}x{w} {padding:?}");
        let input = uniform(&mut rng, batch * channels * h * w);
        let weight = uniform(&mut rng, out_channels * channels * 9);
        let bias = uniform(&mut rng, out_channels);
        let out_len = batch * out_channels * geom.out_h * geom.out_w;
        let (mut ours, mut direct) = (vec![0.0; out_len], vec![0.0; out_len]);
        winograd_forward(&geom, &weight, &bias, &input, &mut ours);
        conv2d_forward_naive(&geom, batch, out_channels, &input, &weight, &bias, &mut direct);
        close(&ours, &direct, &format!("forward {what}"));

        let grad_output = uniform(&mut rng, out_len);
        let (mut gw, mut gb, mut gx) = (vec![0.0; weight.len()], vec![0.0; out_channels], vec![0.0; input.len()]);
        conv2d_backward_naive(&geom, batch, out_channels, &input, &weight, &grad_output, &mut gw, &mut gb, &mut gx);
        let mut ours_gx = vec![0.0; input.len()];
        winograd_input_grad(&geom, &weight, &grad_output, &mut ours_gx);
        close(&ours_gx, &gx, &format!("input gradient {what}"));
        let (mut ours_gw, mut ours_gb) = (vec![0.0; weight.len()], vec![0.0; out_channels]);
        winograd_weight_grad(&geom, &input, &grad_output, &mut ours_gw, &mut ours_gb);
        close(&ours_gw, &gw, &format!("weight gradient {what}"));
        close(&ours_gb, &gb, &format!("bias gradient {what}"));
    }
}

#[test]
fn small_outputs_give_the_same_bits_in_groups_of_images_as_image_by_image() {
    // 7x7 outputs (ResNet's last stage): on one thread the input gradient of the 8
    // images runs as one GEMM (and, with AVX-512, each image's weight gradient as an
    // outer product); on 8 threads image by image. Both must give the same bits.
    use convnet::tensor::kernels::conv_tiled::{conv2d_backward_tiled, ConvWorkspace};
    let mut rng = rng(31);
    for (padding, stride, size) in [(Padding::Explicit(1, 1), 1, 7), (Padding::Explicit(1, 1), 2, 14)] {
        let geom = WindowGeometry::new(16, size, size, (3, 3), (stride, stride), padding).unwrap();
        let (batch, out_channels) = (8, 24);
        let input: Vec<f32> = random_tensor(&mut rng, &[batch * geom.in_len()]).iter().map(|&v| v as f32).collect();
        let weight: Vec<f32> =
            random_tensor(&mut rng, &[out_channels * geom.col_rows()]).iter().map(|&v| v as f32).collect();
        let dy: Vec<f32> =
            random_tensor(&mut rng, &[batch * out_channels * geom.out_pixels()]).iter().map(|&v| v as f32).collect();
        let run = |threads: usize| {
            with_threads(threads, || {
                let (mut dw, mut db) = (vec![0f32; weight.len()], vec![0f32; out_channels]);
                let mut dx = vec![f32::NAN; input.len()];
                let mut workspace = ConvWorkspace::default();
                // twice: the second batch finds the first one's partials in the workspace
                for _ in 0..2 {
                    conv2d_backward_tiled(&geom, &weight, &input, &dy, &mut dw, &mut db, Some(&mut dx), &mut workspace);
                }
                [dw, db, dx].map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            })
        };
        assert_eq!(run(1), run(8), "{geom:?}");
        let [dw, _, dx] = run(1);
        let (mut naive_dw, mut naive_db, mut naive_dx) =
            (vec![0f32; weight.len()], vec![0f32; out_channels], vec![0f32; input.len()]);
        let naive_grads = (&mut naive_dw, &mut naive_db, &mut naive_dx);
        conv2d_backward_naive(
            &geom,
            batch,
            out_channels,
            &input,
            &weight,
            &dy,
            naive_grads.0,
            naive_grads.1,
            naive_grads.2,
        );
        let to_f64 = |bits: &[u32]| bits.iter().map(|&b| f32::from_bits(b) as f64).collect::<Vec<_>>();
        let as_f64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        assert!(max_rel_diff(&to_f64(&dw), &as_f64(&naive_dw)) < 1e-4, "{geom:?}");
        assert!(max_rel_diff(&to_f64(&dx), &as_f64(&naive_dx)) < 1e-4, "{geom:?}");
    }
}

#[test]
fn small_maps_sum_the_weight_gradient_leaf_by_leaf_with_the_bits_of_per_image_partials() {
    // ResNet's small maps take dW leaf by leaf (`kernels/conv_leaves.rs`): it must give
    // the bits of per-image partials P_n (each a chain of multiply-adds from zero)
    // summed in the gradient tree, on any thread count, and the bits of one pass when a
    // leaf is cut into micro-batches. 20 input channels: a block of 16 and one of 4.
    use convnet::tensor::kernels::conv_tiled::{conv2d_backward_tiled, ConvWorkspace};
    use convnet::tensor::kernels::cpu;
    use convnet::tensor::kernels::reduce::{reduce_in_order, reduce_tree, sum_in_lanes};
    let mut rng = rng(32);
    let cases = [
        ((3, 3), 1, 7, Padding::Explicit(1, 1)),
        ((3, 3), 2, 14, Padding::Explicit(1, 1)),
        ((1, 1), 2, 14, Padding::Valid),
    ];
    for (kernel, stride, size, padding) in cases {
        let geom = WindowGeometry::new(20, size, size, kernel, (stride, stride), padding).unwrap();
        let (batch, out_channels, pixels) = (8, 24, geom.out_pixels());
        let values = |rng: &mut ChaCha8Rng, len: usize| -> Vec<f32> {
            random_tensor(rng, &[len]).iter().map(|&v| v as f32).collect()
        };
        let (input, weight) =
            (values(&mut rng, batch * geom.in_len()), values(&mut rng, out_channels * geom.col_rows()));
        let dy = values(&mut rng, batch * out_channels * pixels);
        // P_n = (dW_n, db_n), laid out (N, OC*C*KH*KW + OC) as the tiled pass keeps them
        let per_image = out_channels * geom.col_rows() + out_channels;
        let mut partials = vec![0f32; batch * per_image];
        let mut col = vec![0f32; geom.col_rows() * pixels];
        for (n, partial) in partials.chunks_mut(per_image).enumerate() {
            im2col(&geom, &input[n * geom.in_len()..][..geom.in_len()], 0, geom.out_h, &mut col);
            let dy_n = &dy[n * out_channels * pixels..][..out_channels * pixels];
            for o in 0..out_channels {
                for j in 0..geom.col_rows() {
                    let chain = (0..pixels).fold(0f32, |sum, p| dy_n[o * pixels + p].mul_add(col[j * pixels + p], sum));
                    partial[o * geom.col_rows() + j] = chain;
                }
                partial[out_channels * geom.col_rows() + o] = 0.0 + sum_in_lanes(&dy_n[o * pixels..][..pixels]);
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let expected = |leaves: usize| {
            let mut sum = vec![0f32; per_image];
            match leaves {
                1 => reduce_in_order(&partials, per_image, 0, &mut sum),
                _ => reduce_tree(&partials, per_image, 0, &mut sum, leaves),
            }
            sum
        };
        // a pass over images `range`, continuing the leaf held in `grads` or not
        let pass = |range: std::ops::Range<usize>, leaves: usize, continue_leaf: bool, grads: &mut Vec<f32>| {
            let (dw, db) = grads.split_at_mut(out_channels * geom.col_rows());
            let mut workspace = ConvWorkspace::default();
            (workspace.gradient_leaves, workspace.continue_leaf) = (leaves, continue_leaf);
            let input = &input[range.start * geom.in_len()..range.end * geom.in_len()];
            let dy = &dy[range.start * out_channels * pixels..range.end * out_channels * pixels];
            conv2d_backward_tiled(&geom, &weight, input, dy, dw, db, None, &mut workspace);
        };
        for (leaves, threads) in [(4, 1), (4, 3), (2, 2), (1, 3)] {
            let ours = with_threads(threads, || {
                let mut grads = vec![f32::NAN; per_image];
                pass(0..batch, leaves, false, &mut grads);
                grads
            });
            let reference = expected(leaves);
            if cpu::features().avx512f {
                assert_eq!(bits(&ours), bits(&reference), "{geom:?}, {leaves} leaves, {threads} threads");
            } else {
                let as_f64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
                assert!(max_rel_diff(&as_f64(&ours), &as_f64(&reference)) < 1e-4, "{geom:?}");
            }
        }
        // one leaf in two micro-batches, the second continuing the first: the bits of one pass
        let mut micro = vec![f32::NAN; per_image];
        pass(0..3, 1, false, &mut micro);
        pass(3..batch, 1, true, &mut micro);
        let mut whole = vec![f32::NAN; per_image];
        pass(0..batch, 1, false, &mut whole);
        assert_eq!(bits(&micro), bits(&whole), "{geom:?} in micro-batches");
    }
}
