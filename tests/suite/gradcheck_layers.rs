//! Numerical gradient checks of every layer (f64, production kernels) over a
//! matrix of shapes, and of the whole reference models.

use crate::common::{random_tensor, rng};
use convnet::tensor::gradcheck::{check_layer, check_model, GradCheckConfig, GradCheckReport};
use convnet::tensor::ndarray::ArrayD;
use convnet::tensor::{
    init, Conv2d, ConvAlgo, ConvAlgos, Dense, Dropout, Flatten, Layer, MaxPool2d, ModelSpec, Padding, Relu, Softmax,
};

/// Asserts a report passed, is not vacuous, and that every tensor was actually
/// checked; prints the table (visible with --nocapture) with the element counts.
fn assert_passed(what: &str, report: &GradCheckReport) {
    println!("{what}\n{report}");
    assert!(report.passed(), "gradient check failed for {what}:\n{report}");
    for tensor in &report.tensors {
        assert!(tensor.checked > 0, "{what}: nothing of {} was checked", tensor.name);
        assert!(
            tensor.max_abs_analytic > 1e-6 && tensor.max_abs_numeric > 1e-6,
            "{what}: gradients of {} are all ~zero, the check would be vacuous",
            tensor.name
        );
    }
}

#[test]
fn conv2d_over_a_matrix_of_shapes() {
    let mut rng = rng(1);
    let mut cases = 0;
    for batch in [1, 3] {
        for channels in [1, 3] {
            for kernel in [1, 3, 5] {
                for stride in [1, 2] {
                    for padding in [Padding::Valid, Padding::Same] {
                        // 3x3 stride 1 also by Winograd F(4x4, 3x3) (a 6x7 input: partial tiles)
                        let algos: &[ConvAlgo] = if kernel == 3 && stride == 1 {
                            &[ConvAlgo::Im2col, ConvAlgo::Winograd]
                        } else {
                            &[ConvAlgo::Im2col]
                        };
                        for &algo in algos {
                            // non-square input, large enough for a 5x5 valid kernel
                            let (h, w) = (6, 7);
                            let mut conv =
                                Conv2d::<f64>::new(channels, 2, (kernel, kernel), (stride, stride), padding).unwrap();
                            conv.set_algo(algo);
                            assert_eq!(conv.resolved_algos(), ConvAlgos::all(algo));
                            init::glorot_uniform(conv.weight_mut(), 3, 0);
                            conv.bias_mut().iter_mut().for_each(|b| *b = 0.1);
                            let input = random_tensor(&mut rng, &[batch, channels, h, w]);
                            let what = format!(
                                "conv2d batch {batch}, {channels} ch, {h}x{w}, kernel {kernel}, stride {stride}, {padding:?}, {}",
                                algo.as_str()
                            );
                            let report = check_layer(&mut conv, input.view(), &GradCheckConfig::default()).unwrap();
                            assert_passed(&what, &report);
                            assert_eq!(report.tensor("bias").unwrap().checked, 2, "every bias element is checked");
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 48 + 8, "48 shapes, 8 of them also by Winograd");
}

#[test]
fn conv2d_with_rectangular_kernel_and_stride() {
    let mut rng = rng(2);
    let mut conv = Conv2d::<f64>::new(2, 3, (2, 3), (2, 1), Padding::Same).unwrap();
    init::glorot_uniform(conv.weight_mut(), 4, 0);
    let input = random_tensor(&mut rng, &[2, 2, 5, 6]);
    let report = check_layer(&mut conv, input.view(), &GradCheckConfig::default()).unwrap();
    assert_passed("conv2d 2x3 kernel, stride (2,1), same", &report);
}

#[test]
fn maxpool_over_a_matrix_of_shapes() {
    let mut rng = rng(3);
    for batch in [1, 3] {
        for channels in [1, 3] {
            for (pool, stride) in [(2, 2), (3, 1), (3, 2), (2, 1)] {
                for padding in [Padding::Valid, Padding::Same] {
                    let mut layer = MaxPool2d::new((pool, pool), (stride, stride), padding).unwrap();
                    let input = random_tensor(&mut rng, &[batch, channels, 5, 7]);
                    let what =
                        format!("maxpool batch {batch}, {channels} ch, pool {pool}, stride {stride}, {padding:?}");
                    let report = check_layer(&mut layer, input.view(), &GradCheckConfig::default()).unwrap();
                    assert_passed(&what, &report);
                }
            }
        }
    }
}

#[test]
fn dense_over_shapes_including_wide_layers() {
    let mut rng = rng(4);
    // tiny-dnn's check once failed for layers wider than 100 units: check 150.
    for (batch, fan_in, fan_out) in [(1, 1, 1), (3, 5, 4), (2, 150, 7), (3, 10, 150)] {
        let mut dense = Dense::<f64>::new(fan_in, fan_out).unwrap();
        init::glorot_uniform(dense.weight_mut(), 5, 0);
        dense.bias_mut().iter_mut().for_each(|b| *b = -0.05);
        let input = random_tensor(&mut rng, &[batch, fan_in]);
        let report = check_layer(&mut dense, input.view(), &GradCheckConfig::default()).unwrap();
        assert_passed(&format!("dense {fan_in} -> {fan_out}, batch {batch}"), &report);
    }
}

#[test]
fn relu_flatten_softmax_dropout() {
    let mut rng = rng(5);
    for batch in [1, 3] {
        let input = random_tensor(&mut rng, &[batch, 3, 4, 5]);
        let report = check_layer(&mut Relu, input.view(), &GradCheckConfig::default()).unwrap();
        assert_passed("relu", &report);
        let report = check_layer(&mut Flatten, input.view(), &GradCheckConfig::default()).unwrap();
        assert_passed("flatten", &report);
        let mut dropout = Dropout::<f64>::new(0.5).unwrap();
        let report = check_layer(&mut dropout, input.view(), &GradCheckConfig::default()).unwrap();
        assert_passed("dropout (training mode, fixed mask)", &report);
        let logits = random_tensor(&mut rng, &[batch, 6]).mapv(|v| v * 3.0);
        let report = check_layer(&mut Softmax, logits.view(), &GradCheckConfig::default()).unwrap();
        assert_passed("softmax", &report);
    }
}

#[test]
fn relu_near_zero_skips_kinks_instead_of_failing() {
    // Inputs within h of the kink: the central difference straddles it.
    let input = ArrayD::from_shape_vec(vec![1, 4], vec![5e-7, -5e-7, 0.3, -0.2]).unwrap();
    let report = check_layer(&mut Relu, input.view(), &GradCheckConfig::default()).unwrap();
    let tensor = report.tensor("input").unwrap();
    assert_eq!(tensor.skipped_kinks, 2, "{report}");
    assert_eq!(tensor.checked, 2);
    assert!(report.passed(), "{report}");
}

#[test]
fn maxpool_ties_skip_instead_of_failing() {
    // A 2x2 window with a tie: perturbing either tied element changes the winner.
    let input = ArrayD::from_shape_vec(vec![1, 1, 2, 2], vec![1.0, 1.0, 0.5, -0.5]).unwrap();
    let mut pool = MaxPool2d::new((2, 2), (2, 2), Padding::Valid).unwrap();
    let report = check_layer(&mut pool, input.view(), &GradCheckConfig::default()).unwrap();
    let tensor = report.tensor("input").unwrap();
    assert_eq!(tensor.skipped_kinks, 2, "{report}");
    assert_eq!(tensor.checked, 2);
    // the two losers have zero gradient both ways: the only checked elements are zero
    assert!(!report.passed(), "a tensor whose checked gradients are all zero must not pass:\n{report}");
}

fn model_config() -> GradCheckConfig {
    GradCheckConfig { max_elements_per_tensor: 40, ..GradCheckConfig::default() }
}

#[test]
fn whole_small_model() {
    let mut rng = rng(6);
    let mut model = ModelSpec::small().build::<f64>(&[1, 12, 10], 4, 11).unwrap();
    let input = random_tensor(&mut rng, &[3, 1, 12, 10]);
    let report = check_model(&mut model, input.view(), &[0, 3, 1], &model_config()).unwrap();
    assert_passed("small model", &report);
    assert_eq!(report.tensors.len(), 1 + 8, "input + 4 weight/bias pairs");
}

#[test]
fn whole_baseline_model_at_small_input_by_im2col_and_by_winograd() {
    for algo in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
        let mut rng = rng(7);
        // 28x28 is the smallest input the baseline takes: flatten = 64 * 1 * 1.
        let mut model = ModelSpec::baseline().build::<f64>(&[3, 28, 28], 8, 12).unwrap();
        model.set_conv_algo(algo);
        assert_eq!(model.shapes()[12], vec![64]);
        let input = random_tensor(&mut rng, &[2, 3, 28, 28]);
        let report = check_model(&mut model, input.view(), &[5, 2], &model_config()).unwrap();
        assert_passed(&format!("baseline model at 28x28, {}", algo.as_str()), &report);
        assert_eq!(report.tensors.len(), 1 + 16, "input + 8 weight/bias pairs");
    }
}

/// Every mix of methods across the three passes, on the production kernels in
/// f64: the mixed backward (one gradient by im2col, the other by Winograd) is
/// proven, not only the two pure ones.
#[test]
fn conv2d_by_every_mix_of_methods_per_pass() {
    let mut rng = rng(9);
    let mut cases = 0;
    for padding in [Padding::Valid, Padding::Same] {
        for forward in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
            for input_grad in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
                for weight_grad in [ConvAlgo::Im2col, ConvAlgo::Winograd] {
                    let algos = ConvAlgos { forward, input_grad, weight_grad };
                    let mut conv = Conv2d::<f64>::new(2, 3, (3, 3), (1, 1), padding).unwrap();
                    conv.set_algos(algos);
                    assert_eq!(conv.resolved_algos(), algos);
                    init::glorot_uniform(conv.weight_mut(), 5, 0);
                    conv.bias_mut().iter_mut().for_each(|b| *b = -0.2);
                    let input = random_tensor(&mut rng, &[2, 2, 7, 6]);
                    let report = check_layer(&mut conv, input.view(), &GradCheckConfig::default()).unwrap();
                    assert_passed(&format!("conv2d {padding:?}, {}", algos.describe()), &report);
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 16);
}

#[test]
fn baseline_model_at_larger_input_with_bigger_flatten_by_auto() {
    let mut rng = rng(8);
    let mut model = ModelSpec::baseline().build::<f64>(&[3, 36, 44], 3, 13).unwrap();
    // the default: conv1 (3 input channels) by im2col, conv2 (32x40 outputs) by Winograd,
    // conv3 and conv4 (8x10 and 6x8, narrower than a chunk of 8 tiles) by im2col
    let algos: Vec<_> = model
        .layers()
        .iter()
        .filter_map(|layer| layer.as_any().and_then(|any| any.downcast_ref::<Conv2d<f64>>()))
        .map(|conv| conv.resolved_algos())
        .collect();
    let (im2col, winograd) = (ConvAlgos::all(ConvAlgo::Im2col), ConvAlgos::all(ConvAlgo::Winograd));
    assert_eq!(algos, [im2col, winograd, im2col, im2col]);
    let input = random_tensor(&mut rng, &[1, 3, 36, 44]);
    let report = check_model(&mut model, input.view(), &[1], &model_config()).unwrap();
    assert_passed("baseline model at 36x44", &report);
}

#[test]
fn custom_layer_through_the_public_trait() {
    use convnet::tensor::ndarray::{ArrayViewD, ArrayViewMutD};
    use convnet::tensor::Mode;
    /// y = x^3: a user's own layer.
    struct Cube;
    impl Layer<f64> for Cube {
        fn kind(&self) -> &'static str {
            "cube"
        }
        fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
            Ok(input_shape.to_vec())
        }
        fn forward(&mut self, input: ArrayViewD<'_, f64>, mut output: ArrayViewMutD<'_, f64>, _mode: Mode) {
            output.zip_mut_with(&input, |y, &x| *y = x * x * x);
        }
        fn backward(
            &mut self,
            input: ArrayViewD<'_, f64>,
            _output: ArrayViewD<'_, f64>,
            grad_output: ArrayViewD<'_, f64>,
            grad_input: Option<ArrayViewMutD<'_, f64>>,
        ) {
            if let Some(mut dx) = grad_input {
                dx.assign(&(&grad_output * &input.mapv(|x| 3.0 * x * x)));
            }
        }
    }
    let input = random_tensor(&mut rng(9), &[2, 5]);
    let report = check_layer(&mut Cube, input.view(), &GradCheckConfig::default()).unwrap();
    assert_passed("user layer y = x^3", &report);
}
