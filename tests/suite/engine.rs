//! Forward passes against hand-computed cases, optimizers against their closed
//! forms, a tiny model that learns, and bit-for-bit reproducibility across
//! thread counts.

use crate::common::{random_tensor, rng, with_threads};
use convnet::optim::{Adam, Optimizer, Sgd};
use convnet::tensor::ndarray::{array, ArrayD, IxDyn};
use convnet::tensor::{Conv2d, Dense, Layer, MaxPool2d, Mode, ModelSpec, Padding, Sequential, SoftmaxCrossEntropy};

#[test]
fn conv_4x4_input_through_a_known_2x2_kernel() {
    let mut conv = Conv2d::<f64>::new(1, 1, (2, 2), (1, 1), Padding::Valid).unwrap();
    conv.weight_mut().assign(&array![[[[1.0, 2.0], [3.0, 4.0]]]].into_dyn());
    conv.bias_mut().fill(1.0);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 4, 4]), (1..=16).map(f64::from).collect()).unwrap();
    let mut y = ArrayD::zeros(IxDyn(&[1, 1, 3, 3]));
    conv.forward(x.view(), y.view_mut(), Mode::Eval);
    // y[i][j] = 1 + x[i][j] + 2 x[i][j+1] + 3 x[i+1][j] + 4 x[i+1][j+1]
    // top-left: 1 + 1 + 4 + 15 + 24 = 45; each step right adds 10, each step down 40
    let expected = [45.0, 55.0, 65.0, 85.0, 95.0, 105.0, 125.0, 135.0, 145.0];
    assert_eq!(y.as_slice().unwrap(), &expected);
}

#[test]
fn conv_same_padding_puts_the_odd_extra_at_the_end() {
    // 4 wide, kernel 2, stride 1, same: total padding 1, all of it on the right.
    let mut conv = Conv2d::<f64>::new(1, 1, (1, 2), (1, 1), Padding::Same).unwrap();
    conv.weight_mut().assign(&array![[[[1.0, 10.0]]]].into_dyn());
    let x = array![[[[1.0, 2.0, 3.0, 4.0]]]].into_dyn();
    let mut y = ArrayD::zeros(IxDyn(&[1, 1, 1, 4]));
    conv.forward(x.view(), y.view_mut(), Mode::Eval);
    // y[j] = x[j] + 10 x[j+1], with x[4] = 0 (padding on the right, as in Keras)
    assert_eq!(y.as_slice().unwrap(), &[21.0, 32.0, 43.0, 4.0]);
}

#[test]
fn strided_conv_reads_every_other_pixel() {
    let mut conv = Conv2d::<f64>::new(1, 1, (1, 1), (2, 2), Padding::Valid).unwrap();
    conv.weight_mut().fill(1.0);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 3, 3]), (0..9).map(f64::from).collect()).unwrap();
    let mut y = ArrayD::zeros(IxDyn(&[1, 1, 2, 2]));
    conv.forward(x.view(), y.view_mut(), Mode::Eval);
    assert_eq!(y.as_slice().unwrap(), &[0.0, 2.0, 6.0, 8.0]);
}

#[test]
fn a_relu_after_a_conv_is_fused_and_changes_no_result() {
    // the same conv -> relu, once as a model (fused) and once layer by layer
    let mut conv = Conv2d::<f64>::new(1, 1, (2, 2), (1, 1), Padding::Valid).unwrap();
    conv.weight_mut().assign(&array![[[[1.0, -2.0], [3.0, -4.0]]]].into_dyn());
    conv.bias_mut().fill(0.5);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 3, 3]), vec![1.0, -1.0, 2.0, 0.0, 3.0, -2.0, 1.0, 1.0, 0.5]).unwrap();
    let mut unfused = ArrayD::zeros(IxDyn(&[1, 1, 2, 2]));
    conv.forward(x.view(), unfused.view_mut(), Mode::Eval);
    // y[i][j] = 0.5 + x[i][j] - 2 x[i][j+1] + 3 x[i+1][j] - 4 x[i+1][j+1]:
    // [0.5+1+2+0-12, 0.5-1-4+9+8, 0.5+0-6+3-4, 0.5+3+4+3-2]
    assert_eq!(unfused.as_slice().unwrap(), &[-8.5, 12.5, -6.5, 8.5]);
    let mut model = Sequential::<f64>::new(vec![1, 3, 3]).unwrap();
    let mut fused_conv = Conv2d::<f64>::new(1, 1, (2, 2), (1, 1), Padding::Valid).unwrap();
    fused_conv.weight_mut().assign(conv.weight());
    fused_conv.bias_mut().fill(0.5);
    model.push(Box::new(fused_conv)).unwrap();
    model.push(Box::new(convnet::tensor::Relu)).unwrap();
    assert!(model.is_fused(1) && !model.is_fused(0));
    let output = model.forward(x.view(), Mode::Eval).unwrap();
    assert_eq!(output.as_slice().unwrap(), &[0.0, 12.5, 0.0, 8.5]);
    // backward: the ReLU's mask still applies to the gradient
    let input_grad = model.backward_with_input_grad(ArrayD::from_elem(IxDyn(&[1, 1, 2, 2]), 1.0).view()).unwrap();
    // only outputs (0,1) and (1,1) pass: dx = w placed at (0,1) plus w placed at (1,1)
    assert_eq!(input_grad.as_slice().unwrap(), &[0.0, 1.0, -2.0, 0.0, 4.0, -6.0, 0.0, 3.0, -4.0]);
}

#[test]
fn conv_relu_maxpool_with_fusions_equals_the_layers_run_one_by_one() {
    // In a model the ReLU's forward runs inside the conv and its backward inside
    // the max-pool; layer by layer, nothing is fused. Results must be identical.
    let mut rng = rng(5);
    let build = || {
        let mut conv = Conv2d::<f64>::new(2, 3, (3, 3), (1, 1), Padding::Same).unwrap();
        convnet::tensor::init::glorot_uniform(conv.weight_mut(), 9, 0);
        conv.bias_mut().fill(-0.05);
        conv
    };
    let x = random_tensor(&mut rng, &[2, 2, 6, 7]);
    let dy = random_tensor(&mut rng, &[2, 3, 3, 3]);
    let mut model = Sequential::<f64>::new(vec![2, 6, 7]).unwrap();
    model.push(Box::new(build())).unwrap();
    model.push(Box::new(convnet::tensor::Relu)).unwrap();
    model.push(Box::new(MaxPool2d::new((2, 2), (2, 2), Padding::Valid).unwrap())).unwrap();
    assert!(model.is_fused(1) && model.is_backward_absorbed(1));
    let fused_output = model.forward(x.view(), Mode::Eval).unwrap().to_owned();
    let fused_grad_input = model.backward_with_input_grad(dy.view()).unwrap();
    let fused_grads: Vec<ArrayD<f64>> = model.params().iter().map(|p| p.grad.clone()).collect();

    // the same layers, every one alone through its plain forward and backward
    model.set_fused(false);
    assert!(!model.is_fused(1) && !model.is_backward_absorbed(1));
    let pool_out = model.forward(x.view(), Mode::Eval).unwrap().to_owned();
    let relu_out = model.layer_output(1).unwrap().to_owned();
    let dx = model.backward_with_input_grad(dy.view()).unwrap();
    let grads: Vec<ArrayD<f64>> = model.params().iter().map(|p| p.grad.clone()).collect();

    assert!(relu_out.iter().any(|&v| v == 0.0) && relu_out.iter().any(|&v| v > 0.0), "the ReLU must matter");
    assert!(pool_out.iter().any(|&v| v == 0.0), "some window must be all non-positive, or the mask is untested");
    assert_eq!(fused_output, pool_out);
    assert_eq!(fused_grad_input, dx);
    assert_eq!(fused_grads, grads);
}

#[test]
fn predict_fuses_conv_relu_and_maxpools_and_gives_the_bits_of_forward() {
    // `baseline` at 70x70: conv2 (32 -> 64, 66x66 outputs: a partial tile row and
    // column) runs by Winograd, and its ReLU and two 2x2 pools become one pass,
    // fed by conv1 in bands of rows (17 tile rows: bands of 4, 4, 4, 4 and 1);
    // a 2x2 pool after a Winograd convolution alone (pool 2) in a small stack.
    let mut rng = rng(8);
    let mut baseline = ModelSpec::preset("baseline").unwrap().build::<f32>(&[3, 70, 70], 8, 3).unwrap();
    let x = random_tensor(&mut rng, &[3, 3, 70, 70]).mapv(|v| v as f32);
    let forward = baseline.forward(x.view(), Mode::Eval).unwrap().to_owned();
    let predicted = baseline.predict(x.view()).unwrap().to_owned();
    assert!(baseline.is_fused(4) && baseline.is_fused(5), "predict must fuse conv2's two max-pools");
    assert!(baseline.is_fused(2), "predict must feed conv1's rows to conv2 in bands");
    assert_eq!(predicted.mapv(f32::to_bits), forward.mapv(f32::to_bits));
    // conv1's and conv2's full-size outputs were neither written nor kept; the pooled one was
    assert!(baseline.layer_output(0).is_none() && baseline.layer_output(2).is_none());
    assert!(baseline.layer_output(5).is_some());
    baseline.forward(x.view(), Mode::Eval).unwrap();
    assert!(!baseline.is_fused(4), "forward keeps every activation");
    assert!(baseline.layer_output(0).is_some() && baseline.layer_output(2).is_some());

    let mut model = Sequential::<f32>::new(vec![4, 41, 37]).unwrap();
    let mut conv = Conv2d::<f32>::new(4, 9, (3, 3), (1, 1), Padding::Same).unwrap();
    convnet::tensor::init::glorot_uniform(conv.weight_mut(), 36, 1);
    conv.set_algos(convnet::tensor::ConvAlgos::all(convnet::tensor::ConvAlgo::Winograd));
    model.push(Box::new(conv)).unwrap();
    model.push(Box::new(convnet::tensor::Relu)).unwrap();
    model.push(Box::new(MaxPool2d::new((2, 2), (2, 2), Padding::Valid).unwrap())).unwrap();
    model.push(Box::new(convnet::tensor::Flatten)).unwrap();
    let x = random_tensor(&mut rng, &[2, 4, 41, 37]).mapv(|v| v as f32);
    let forward = model.forward(x.view(), Mode::Eval).unwrap().to_owned();
    let predicted = model.predict(x.view()).unwrap().to_owned();
    assert!(model.is_fused(2));
    assert!(forward.iter().any(|&v| v == 0.0) && forward.iter().any(|&v| v > 0.0));
    assert_eq!(predicted, forward);
}

#[test]
fn a_convolution_feeds_a_winograd_one_with_one_pool_in_bands_with_the_bits_of_forward() {
    // conv (im2col, 5 -> 12) + ReLU into conv (Winograd, 12 -> 16) + ReLU + one 2x2 pool, at 47x41:
    // 45x39 then 43x37 outputs (11 tile rows: bands of 4, 4 and 3; a partial last tile row and
    // column; an odd pooled size), batches of 1 and 3 on 1, 2 and 4 threads
    let mut rng = rng(11);
    let mut model = Sequential::<f32>::new(vec![5, 47, 41]).unwrap();
    for (c, k, seed) in [(5, 12, 40), (12, 16, 41)] {
        let mut conv = Conv2d::<f32>::new(c, k, (3, 3), (1, 1), Padding::Valid).unwrap();
        convnet::tensor::init::glorot_uniform(conv.weight_mut(), seed, 0);
        conv.bias_mut().fill(0.05);
        let algo = if k == 16 { convnet::tensor::ConvAlgo::Winograd } else { convnet::tensor::ConvAlgo::Im2col };
        conv.set_algos(convnet::tensor::ConvAlgos::all(algo));
        model.push(Box::new(conv)).unwrap();
        model.push(Box::new(convnet::tensor::Relu)).unwrap();
    }
    model.push(Box::new(MaxPool2d::new((2, 2), (2, 2), Padding::Valid).unwrap())).unwrap();
    for batch in [1, 3] {
        let x = random_tensor(&mut rng, &[batch, 5, 47, 41]).mapv(|v| v as f32);
        let forward = with_threads(1, || model.forward(x.view(), Mode::Eval).unwrap().to_owned());
        for threads in [1, 2, 4] {
            let predicted = with_threads(threads, || model.predict(x.view()).unwrap().to_owned());
            assert!(model.is_fused(2) && model.is_fused(4), "conv1 must feed conv2 and its pool in bands");
            assert_eq!(predicted.mapv(f32::to_bits), forward.mapv(f32::to_bits), "batch {batch}, {threads} threads");
        }
        assert!(forward.iter().any(|&v| v == 0.0) && forward.iter().any(|&v| v > 0.0));
    }
}

#[test]
fn predict_pools_without_winners_and_gives_the_bits_of_forward() {
    // ResNet's padded 3x3 stride-2 stem pool and SqueezeNet's ceil-mode pools
    // take the values-only path in predict; the outputs keep forward's bits
    let mut rng = rng(9);
    for (preset, size) in [("resnet18", 45), ("squeezenet1_1", 51)] {
        let mut model = ModelSpec::preset(preset).unwrap().build::<f32>(&[3, size, size], 5, 4).unwrap();
        let x = random_tensor(&mut rng, &[2, 3, size, size]).mapv(|v| v as f32);
        let forward = model.forward(x.view(), Mode::Eval).unwrap().to_owned();
        let predicted = with_threads(2, || model.predict(x.view()).unwrap().to_owned());
        assert_eq!(predicted.mapv(f32::to_bits), forward.mapv(f32::to_bits), "{preset}");
        let pools = model.layers().iter().filter_map(|layer| layer.as_any()?.downcast_ref::<MaxPool2d>());
        assert!(pools.clone().all(|pool| pool.argmax().is_empty()) && pools.count() > 0, "{preset}: values only");
    }
}

#[test]
fn one_image_is_cut_into_parts_across_threads_with_the_bits_of_one_thread() {
    // With fewer images than threads, the convolutions (im2col and Winograd, with
    // and without the fused pools) split each image's rows and dense its outputs.
    let mut rng = rng(9);
    for algo in [convnet::tensor::ConvAlgo::Auto, convnet::tensor::ConvAlgo::Im2col] {
        let mut model = ModelSpec::preset("baseline").unwrap().build::<f32>(&[3, 70, 70], 8, 4).unwrap();
        model.set_conv_algo(algo);
        for batch in [1, 2] {
            let x = random_tensor(&mut rng, &[batch, 3, 70, 70]).mapv(|v| v as f32);
            let one = with_threads(1, || model.predict(x.view()).unwrap().to_owned());
            let forward = with_threads(1, || model.forward(x.view(), Mode::Eval).unwrap().to_owned());
            assert_eq!(one, forward, "{algo:?}, batch {batch}");
            if batch == 2 {
                // each image alone (one image: parts and dense by outputs) as in the batch
                for image in 0..2 {
                    let alone = x.slice(convnet::tensor::ndarray::s![image..image + 1, .., .., ..]).into_dyn();
                    let alone = with_threads(2, || model.predict(alone).unwrap().to_owned());
                    assert_eq!(alone.as_slice().unwrap(), &one.as_slice().unwrap()[image * 8..][..8], "{algo:?}");
                }
            }
            for threads in [2, 3] {
                let many = with_threads(threads, || model.predict(x.view()).unwrap().to_owned());
                assert_eq!(many, one, "{algo:?}, batch {batch}, {threads} threads");
                let many = with_threads(threads, || model.forward(x.view(), Mode::Eval).unwrap().to_owned());
                assert_eq!(many, one, "{algo:?}, batch {batch}, {threads} threads, forward");
            }
        }
    }
}

#[test]
fn small_outputs_in_groups_of_images_give_each_image_its_own_bits() {
    // 7x7 outputs: the forward pass puts up to eight images' columns in one GEMM
    // (groups of 5 on one thread, of 3 and 2 on two); each image alone must match.
    let mut rng = rng(10);
    let mut conv = Conv2d::<f32>::new(40, 24, (3, 3), (1, 1), Padding::Explicit(1, 1)).unwrap();
    convnet::tensor::init::glorot_uniform(conv.weight_mut(), 360, 2);
    conv.bias_mut().fill(0.1);
    let mut model = Sequential::<f32>::new(vec![40, 7, 7]).unwrap();
    model.push(Box::new(conv)).unwrap();
    model.push(Box::new(convnet::tensor::Relu)).unwrap();
    let x = random_tensor(&mut rng, &[5, 40, 7, 7]).mapv(|v| v as f32);
    let one = with_threads(1, || model.predict(x.view()).unwrap().to_owned());
    assert_eq!(with_threads(2, || model.predict(x.view()).unwrap().to_owned()), one);
    let plane = 24 * 49;
    for image in 0..5 {
        let alone = x.slice(convnet::tensor::ndarray::s![image..image + 1, .., .., ..]).into_dyn();
        let alone = with_threads(1, || model.predict(alone).unwrap().to_owned());
        assert_eq!(alone.as_slice().unwrap(), &one.as_slice().unwrap()[image * plane..][..plane], "image {image}");
    }
    assert!(one.iter().any(|&v| v == 0.0) && one.iter().any(|&v| v > 0.0));
}

#[test]
fn maxpool_same_padding_never_picks_the_padding() {
    // all-negative input: if padding (0) could win, the output would be 0
    let mut pool = MaxPool2d::new((2, 2), (2, 2), Padding::Same).unwrap();
    let x = array![[[[-1.0, -2.0, -3.0]]]].into_dyn();
    let mut y = ArrayD::zeros(IxDyn(&[1, 1, 1, 2]));
    Layer::<f64>::forward(&mut pool, x.view(), y.view_mut(), Mode::Eval);
    assert_eq!(y.as_slice().unwrap(), &[-1.0, -3.0]);
}

#[test]
fn softmax_cross_entropy_of_huge_logits_is_finite() {
    let mut loss_fn = SoftmaxCrossEntropy::<f32>::new();
    let logits = array![[1e4f32, 0.0, -1e4], [0.0, 1e4, 1e4]].into_dyn();
    let loss = loss_fn.forward(logits.view(), &[1, 2]).unwrap();
    // sample 0: logsumexp = 1e4, minus z[1] = 0 -> 1e4; sample 1: ln 2 -> mean (1e4 + ln 2)/2
    assert!((loss - (1e4 + 2f32.ln()) / 2.0).abs() < 1e-2, "{loss}");
    assert!(loss_fn.grad_logits().iter().all(|g| g.is_finite()));
    assert!(loss_fn.forward(logits.view(), &[3, 0]).is_err(), "label 3 of 3 classes is rejected");
}

#[test]
fn baseline_preset_matches_the_keras_parameter_count_and_shapes() {
    let model = ModelSpec::baseline().build::<f32>(&[3, 224, 224], 8, 0).unwrap();
    assert_eq!(model.num_params(), 4_877_300);
    assert_eq!(model.shapes()[12], vec![25 * 25 * 64]);
    let error = ModelSpec::baseline().build::<f32>(&[3, 20, 20], 8, 0).unwrap_err();
    // 20 -> 18 -> 16 -> 8 -> 4 -> 2: the fourth convolution (layer 8) gets 2x2
    assert_eq!(error.to_string(), "layer 8 (conv2d): a 2x2 input is smaller than the 3x3 kernel (valid padding)");
}

#[test]
fn same_seed_same_model_different_seed_different_model() {
    let a = ModelSpec::small().build::<f32>(&[1, 28, 28], 10, 5).unwrap();
    let b = ModelSpec::small().build::<f32>(&[1, 28, 28], 10, 5).unwrap();
    let c = ModelSpec::small().build::<f32>(&[1, 28, 28], 10, 6).unwrap();
    let weights = |m: &Sequential<f32>| m.params().iter().flat_map(|p| p.value.iter().copied()).collect::<Vec<_>>();
    assert_eq!(weights(&a), weights(&b));
    assert_ne!(weights(&a), weights(&c));
    // Glorot-uniform bound of the first conv: sqrt(6 / (9 + 16*9))
    let limit = (6.0f32 / (9.0 + 144.0)).sqrt();
    let first = a.params()[0].value.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(first <= limit && first > 0.9 * limit);
    assert!(a.params()[1].value.iter().all(|&b| b == 0.0), "biases start at zero");
}

/// One parameter, one fixed gradient sequence: Adam's update equals the
/// closed-form formula at every step.
#[test]
fn adam_follows_the_keras_formula_step_by_step() {
    let mut dense = Dense::<f64>::new(1, 1).unwrap();
    dense.weight_mut().fill(0.5);
    let mut adam = Adam::<f64>::new(0.01);
    let (beta1, beta2, epsilon, lr) = (0.9f64, 0.999f64, 1e-7f64, 0.01f64);
    let (mut p, mut m, mut v) = (0.5f64, 0.0f64, 0.0f64);
    for t in 1..=20 {
        let g = (t as f64 * 0.7).sin(); // any fixed sequence
        dense.params_mut()[0].grad.fill(g);
        dense.params_mut()[1].grad.fill(0.0);
        adam.step(&mut dense.params_mut()).unwrap();
        m = beta1 * m + (1.0 - beta1) * g;
        v = beta2 * v + (1.0 - beta2) * g * g;
        let alpha = lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t));
        p -= alpha * m / (v.sqrt() + epsilon);
        let got = dense.params()[0].value[[0, 0]];
        assert!((got - p).abs() < 1e-14, "step {t}: {got} vs {p}");
    }
}

#[test]
fn adamw_decays_weights_before_the_adam_step() {
    let mut dense = Dense::<f64>::new(1, 1).unwrap();
    dense.weight_mut().fill(2.0);
    let mut adamw = Adam::<f64>::adamw(0.1, 0.5);
    dense.params_mut()[0].grad.fill(0.0); // zero gradient: only the decay acts
    dense.params_mut()[1].grad.fill(0.0);
    adamw.step(&mut dense.params_mut()).unwrap();
    assert!((dense.params()[0].value[[0, 0]] - 2.0 * (1.0 - 0.1 * 0.5)).abs() < 1e-15);
}

#[test]
fn sgd_momentum_and_nesterov_follow_their_formulas() {
    for nesterov in [false, true] {
        let mut dense = Dense::<f64>::new(1, 1).unwrap();
        dense.weight_mut().fill(1.0);
        let mut sgd = Sgd::<f64>::with_momentum(0.1, 0.9, nesterov).unwrap();
        let (mut p, mut velocity) = (1.0f64, 0.0f64);
        for t in 1..=10 {
            let g = 1.0 / t as f64;
            dense.params_mut()[0].grad.fill(g);
            dense.params_mut()[1].grad.fill(0.0);
            sgd.step(&mut dense.params_mut()).unwrap();
            velocity = 0.9 * velocity - 0.1 * g;
            p += if nesterov { 0.9 * velocity - 0.1 * g } else { velocity };
            assert!((dense.params()[0].value[[0, 0]] - p).abs() < 1e-14);
        }
    }
}

#[test]
fn optimizer_state_round_trips_and_rejects_a_foreign_model() {
    let mut model = ModelSpec::small().build::<f32>(&[1, 8, 8], 3, 1).unwrap();
    let mut adam = Adam::<f32>::new(1e-3);
    adam.step(&mut model.params_mut()).unwrap();
    let state = adam.state();
    let mut restored = Adam::<f32>::new(1e-3);
    restored.load_state(state.clone()).unwrap();
    assert_eq!(restored.state(), state);
    let mut other = ModelSpec::baseline().build::<f32>(&[3, 28, 28], 3, 1).unwrap();
    assert!(restored.step(&mut other.params_mut()).is_err());
}

/// Synthetic problem: 4 classes of 8x8 images, each class a bright quadrant.
fn quadrant_batch(seed: u64, batch: usize) -> (ArrayD<f32>, Vec<usize>) {
    let mut rng = rng(seed);
    let noise = random_tensor(&mut rng, &[batch, 1, 8, 8]);
    let labels: Vec<usize> = (0..batch).map(|n| (n * 7 + seed as usize) % 4).collect();
    let images = ArrayD::from_shape_fn(IxDyn(&[batch, 1, 8, 8]), |d| {
        let quadrant = (d[2] / 4) * 2 + d[3] / 4;
        let signal = if quadrant == labels[d[0]] { 1.0 } else { 0.0 };
        (signal + 0.3 * noise[[d[0], 0, d[2], d[3]]]) as f32
    });
    (images, labels)
}

/// Trains `small` for `steps` steps and returns the final weights and loss history.
fn train_small(steps: u64, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut model = ModelSpec::small().build::<f32>(&[1, 8, 8], 4, seed).unwrap();
    let mut adam = Adam::new(3e-3);
    let mut loss_fn = SoftmaxCrossEntropy::new();
    let mut losses = Vec::new();
    for step in 0..steps {
        let (images, labels) = quadrant_batch(step, 16);
        let logits = model.forward(images.view(), Mode::train(seed ^ step)).unwrap();
        losses.push(loss_fn.forward(logits, &labels).unwrap());
        model.backward(loss_fn.grad_logits().view()).unwrap();
        adam.step(&mut model.params_mut()).unwrap();
    }
    let weights = model.params().iter().flat_map(|p| p.value.iter().copied()).collect();
    (weights, losses)
}

#[test]
fn a_tiny_model_learns_a_tiny_problem() {
    let (_, losses) = train_small(60, 3);
    let first = losses[..5].iter().sum::<f32>() / 5.0;
    let last = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!((first - 4f32.ln()).abs() < 0.3, "initial loss {first} should be near ln 4");
    assert!(last < 0.2, "loss fell only from {first} to {last}");
}

#[test]
fn training_is_bitwise_identical_on_1_2_and_3_threads() {
    let one = with_threads(1, || train_small(8, 9));
    let two = with_threads(2, || train_small(8, 9));
    let three = with_threads(3, || train_small(8, 9));
    let bits = |w: &[f32]| w.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&one.0), bits(&two.0), "1 vs 2 threads");
    assert_eq!(bits(&one.0), bits(&three.0), "1 vs 3 threads");
    assert_eq!(one.1, two.1);
}

#[test]
fn baseline_step_is_bitwise_identical_on_1_and_2_threads() {
    // the reference model, with dropout, at a size where every layer splits work
    let run = || {
        let mut model = ModelSpec::baseline().build::<f32>(&[3, 40, 40], 8, 21).unwrap();
        let mut adam = Adam::new(1e-3);
        let mut loss_fn = SoftmaxCrossEntropy::new();
        let images = random_tensor(&mut rng(1), &[6, 3, 40, 40]).mapv(|v| v as f32);
        let labels = [0, 1, 2, 3, 4, 5];
        for step in 0..3 {
            let logits = model.forward(images.view(), Mode::train(step)).unwrap();
            loss_fn.forward(logits, &labels).unwrap();
            model.backward(loss_fn.grad_logits().view()).unwrap();
            adam.step(&mut model.params_mut()).unwrap();
        }
        model.params().iter().flat_map(|p| p.value.iter().map(|v| v.to_bits())).collect::<Vec<_>>()
    };
    assert_eq!(with_threads(1, run), with_threads(2, run));
}

/// The container runs ReLU in place over the convolution's output; the result
/// must equal running every layer out of place, one buffer each.
#[test]
fn in_place_relu_inside_a_model_equals_layer_by_layer_execution() {
    let mut model = ModelSpec::baseline().build::<f64>(&[3, 30, 30], 4, 5).unwrap();
    let images = random_tensor(&mut rng(3), &[2, 3, 30, 30]);
    let labels = [1, 3];
    let logits = model.forward(images.view(), Mode::train(8)).unwrap().to_owned();
    let mut loss_fn = SoftmaxCrossEntropy::new();
    loss_fn.forward(logits.view(), &labels).unwrap();
    let grad_input = model.backward_with_input_grad(loss_fn.grad_logits().view()).unwrap();
    let model_grads: Vec<ArrayD<f64>> = model.params().iter().map(|p| p.grad.clone()).collect();

    // the same with every layer alone, out of place, one buffer each
    model.set_fused(false);
    assert_eq!(model.plan().buffers, model.layers().len() + 1);
    let unfused_logits = model.forward(images.view(), Mode::train(8)).unwrap().to_owned();
    assert_eq!(unfused_logits, logits);
    let grad = model.backward_with_input_grad(loss_fn.grad_logits().view()).unwrap();
    assert_eq!(grad, grad_input);
    let manual_grads: Vec<ArrayD<f64>> = model.params().iter().map(|p| p.grad.clone()).collect();
    assert_eq!(manual_grads, model_grads);
}

#[test]
fn absurd_layer_sizes_are_refused_before_allocating() {
    use convnet::tensor::model::spec::Size2;
    use convnet::tensor::LayerSpec;
    let huge_conv = ModelSpec {
        init: Default::default(),
        layers: vec![
            LayerSpec::Conv2d {
                filters: Some(1 << 40),
                kernel: Size2::Square(3),
                stride: Size2::Square(1),
                padding: Padding::Same,
                bias: true,
            },
            LayerSpec::Flatten,
            LayerSpec::Dense { units: None, bias: true },
        ],
    };
    let error = huge_conv.build::<f32>(&[3, 8, 8], 2, 0).unwrap_err();
    assert_eq!(error.to_string(), "layer 0 (conv2d): would have more than 268435456 parameters");
    let huge_dense = ModelSpec {
        init: Default::default(),
        layers: vec![
            LayerSpec::Flatten,
            LayerSpec::Dense { units: Some(usize::MAX), bias: true },
            LayerSpec::Dense { units: None, bias: true },
        ],
    };
    assert!(huge_dense
        .build::<f32>(&[3, 8, 8], 2, 0)
        .unwrap_err()
        .to_string()
        .contains("layer 1 (dense): would have more than"));
    // many filters over a large image: few weights, but an enormous activation
    let wide = ModelSpec {
        init: Default::default(),
        layers: vec![
            LayerSpec::Conv2d {
                filters: Some(100_000),
                kernel: Size2::Square(1),
                stride: Size2::Square(1),
                padding: Padding::Same,
                bias: true,
            },
            LayerSpec::Flatten,
            LayerSpec::Dense { units: None, bias: true },
        ],
    };
    assert!(wide.build::<f32>(&[1, 4096, 4096], 2, 0).unwrap_err().to_string().contains("elements"));
    assert!(Sequential::<f32>::new(vec![3, 1 << 20, 1 << 20]).is_err());
}

#[test]
fn baseline_fuses_every_conv_relu_and_relu_pool_pair() {
    let model = ModelSpec::baseline().build::<f32>(&[3, 64, 64], 8, 1).unwrap();
    let plan = convnet::tensor::Plan::fused(model.layers());
    use convnet::tensor::model::plan::{BackwardStep as B, ForwardStep as F};
    // conv relu conv relu pool pool conv relu conv relu pool flatten dense relu ...
    assert_eq!(&plan.forward[..5], &[F::ConvThenRelu, F::DoneByPrevious, F::ConvThenRelu, F::DoneByPrevious, F::Plain]);
    assert_eq!(&plan.backward[..5], &[B::Plain, B::ReluInPlace, B::Plain, B::DoneByNext, B::PoolThroughRelu]);
    // a dense layer reads no output in backward: the ReLU after it runs in place
    assert_eq!(plan.forward[13], F::ReluInPlace);
    assert!(plan.buffers < model.layers().len() + 1);
    let unfused = convnet::tensor::Plan::unfused(model.layers());
    assert!(unfused.forward.iter().all(|&s| s == F::Plain) && unfused.buffers == model.layers().len() + 1);
}

#[test]
fn predict_applies_each_batchnorm_inside_the_convolution_before_it_with_the_bits_of_forward() {
    // ResNet's convolution + batchnorm (+ ReLU), in the stem (with its max-pool:
    // `Conv2d::forward_batchnorm_maxpool`) and inside every block's branches, are one
    // pass in predict (`Conv2d::forward_batchnorm`), and so are each
    // block's addition and the ReLU after it (`Layer::predict_relu`): the bits of the
    // layers one by one, for batches smaller and larger than the thread count. Random
    // running statistics and affine parameters keep each batchnorm far from the identity.
    use convnet::tensor::Residual;
    use rand::Rng;
    let mut rng = rng(12);
    for (preset, size) in [("resnet-small", 28), ("resnet18", 45)] {
        let mut model = ModelSpec::preset(preset).unwrap().build::<f32>(&[3, size, size], 5, 4).unwrap();
        for param in model.params_mut() {
            param.value.mapv_inplace(|v| v + rng.random_range(-0.2..0.2));
        }
        for (name, buffer) in model.buffers_mut() {
            let floor = if name.ends_with("running_var") { 0.5 } else { -0.3 };
            buffer.mapv_inplace(|_| floor + rng.random_range(0.0..0.6));
        }
        for (batch, threads) in [(1, 1), (1, 2), (3, 2), (3, 3), (4, 1)] {
            let x = random_tensor(&mut rng, &[batch, 3, size, size]).mapv(|v| v as f32);
            let forward = with_threads(threads, || model.forward(x.view(), Mode::Eval).unwrap().to_owned());
            let predicted = with_threads(threads, || model.predict(x.view()).unwrap().to_owned());
            let what = format!("{preset}, batch {batch}, {threads} threads");
            assert_eq!(predicted.mapv(f32::to_bits), forward.mapv(f32::to_bits), "{what}");
            // predict reads a contiguous batch in place, and copies any other view
            let reversed = x.slice(convnet::tensor::ndarray::s![..;-1, .., .., ..]).into_dyn();
            let forward = with_threads(threads, || model.forward(reversed.view(), Mode::Eval).unwrap().to_owned());
            let predicted = with_threads(threads, || model.predict(reversed.view()).unwrap().to_owned());
            assert_eq!(predicted.mapv(f32::to_bits), forward.mapv(f32::to_bits), "{what}, a reversed view");
        }
        assert!(model.is_fused(1) && model.is_fused(2), "{preset}: the stem's batchnorm and ReLU");
        // resnet18's 7x7 stem runs by im2col: its max-pool too, image by image (resnet-small has none)
        assert_eq!(model.is_fused(3), preset == "resnet18", "{preset}: the stem's max-pool");
        // the ReLU after each block is done in the block's addition (Layer::predict_relu)
        let kinds: Vec<&str> = model.layers().iter().map(|layer| layer.kind()).collect();
        let after_blocks: Vec<usize> = (1..kinds.len()).filter(|&i| kinds[i - 1] == "residual").collect();
        assert!(!after_blocks.is_empty() && after_blocks.iter().all(|&i| kinds[i] == "relu" && model.is_fused(i)));
        let blocks = model.layers().iter().filter_map(|layer| layer.as_any()?.downcast_ref::<Residual<f32>>());
        for block in blocks {
            assert!(block.body().is_fused(1) && block.body().is_fused(2) && block.body().is_fused(4), "{preset}");
            assert!(block.shortcut().is_none_or(|shortcut| shortcut.is_fused(1)), "{preset}: the projection's");
        }
    }
}

#[test]
fn a_model_without_layers_predicts_its_input() {
    // predict reads a batch in place only when a first layer reads it: with none, the
    // output is the input's own buffer, which must hold it
    let mut empty = Sequential::<f32>::new(vec![2, 3]).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), vec![1.0, -2.0, 3.0, 4.0, 5.0, -6.0]).unwrap();
    assert_eq!(empty.predict(x.view()).unwrap(), x.view());
    assert_eq!(empty.forward(x.view(), Mode::Eval).unwrap(), x.view());
}
