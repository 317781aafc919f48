//! Mutation self-tests: a gradient check must FAIL on a deliberately broken
//! backward, for every layer. (A check that cannot fail proves nothing.)

use crate::common::{random_tensor, rng};
use convnet::tensor::gradcheck::{check_layer, GradCheckConfig, Mutant, Mutation};
use convnet::tensor::ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};
use convnet::tensor::{
    init, Conv2d, ConvAlgo, Dense, Dropout, Flatten, Layer, MaxPool2d, Mode, Normalize, Padding, Relu, Softmax,
};

/// Checks `layer` with `mutation` and requires failure; also requires the
/// unmutated layer to pass on the same input (so the failure is the mutation's).
fn assert_caught<L: Layer<f64>>(what: &str, make: impl Fn() -> L, input: &ArrayD<f64>, mutation: Mutation) {
    let config = GradCheckConfig::default();
    let mut healthy = make();
    let report = check_layer(&mut healthy, input.view(), &config).unwrap();
    assert!(report.passed(), "{what}: the healthy layer must pass first:\n{report}");
    let mut mutant = Mutant::new(make(), mutation);
    let report = check_layer(&mut mutant, input.view(), &config).unwrap();
    println!("{what} with {mutation:?}:\n{report}");
    assert!(!report.passed(), "{what}: gradcheck did not catch {mutation:?}:\n{report}");
}

fn conv() -> Conv2d<f64> {
    let mut conv = Conv2d::new(2, 3, (3, 3), (1, 1), Padding::Same).unwrap();
    init::glorot_uniform(conv.weight_mut(), 1, 0);
    conv.bias_mut().iter_mut().for_each(|b| *b = 0.2);
    conv
}

#[test]
fn conv2d_mutants_are_caught() {
    let input = random_tensor(&mut rng(1), &[2, 2, 5, 4]);
    for mutation in [
        Mutation::FlipInputGradSign,
        Mutation::DropParamGrad(1), // bias gradient dropped
        Mutation::DropParamGrad(0),
        Mutation::ScaleParamGrad(0), // weight gradient 1% off
        Mutation::ShiftInputGrad,    // an off-by-one in col2im
    ] {
        assert_caught("conv2d", conv, &input, mutation);
        let winograd = || {
            let mut conv = conv();
            conv.set_algo(ConvAlgo::Winograd);
            conv
        };
        assert_caught("conv2d by Winograd", winograd, &input, mutation);
    }
}

fn dense() -> Dense<f64> {
    let mut dense = Dense::new(6, 4).unwrap();
    init::glorot_uniform(dense.weight_mut(), 2, 0);
    dense
}

#[test]
fn dense_mutants_are_caught() {
    let input = random_tensor(&mut rng(2), &[3, 6]);
    for mutation in [
        Mutation::FlipInputGradSign,
        Mutation::DropParamGrad(1),
        Mutation::ScaleParamGrad(0),
        Mutation::ScaleParamGrad(1),
        Mutation::ShiftInputGrad,
    ] {
        assert_caught("dense", dense, &input, mutation);
    }
}

fn pool() -> MaxPool2d {
    MaxPool2d::new((2, 2), (2, 2), Padding::Valid).unwrap()
}

#[test]
fn maxpool_mutants_are_caught() {
    let input = random_tensor(&mut rng(3), &[2, 2, 4, 6]);
    for mutation in [Mutation::FlipInputGradSign, Mutation::ShiftInputGrad, Mutation::DuplicateInputGrad] {
        assert_caught("maxpool2d", pool, &input, mutation);
    }
}

/// Max-pooling whose backward spreads each gradient evenly over its 2x2 window
/// (1/4 each) instead of routing it to the arg-max: the gradient of *average*
/// pooling, and the bug candle 0.11.1 shipped.
struct AverageRoutedMaxPool(MaxPool2d);

impl Layer<f64> for AverageRoutedMaxPool {
    fn kind(&self) -> &'static str {
        "maxpool2d"
    }
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        Layer::<f64>::output_shape(&self.0, input_shape)
    }
    fn forward(&mut self, input: ArrayViewD<'_, f64>, output: ArrayViewMutD<'_, f64>, mode: Mode) {
        self.0.forward(input, output, mode)
    }
    fn backward(
        &mut self,
        input: ArrayViewD<'_, f64>,
        _output: ArrayViewD<'_, f64>,
        grad_output: ArrayViewD<'_, f64>,
        grad_input: Option<ArrayViewMutD<'_, f64>>,
    ) {
        let mut dx = grad_input.unwrap();
        let s = input.shape();
        for n in 0..s[0] {
            for c in 0..s[1] {
                for i in 0..s[2] {
                    for j in 0..s[3] {
                        dx[[n, c, i, j]] = grad_output[[n, c, i / 2, j / 2]] / 4.0;
                    }
                }
            }
        }
    }
    fn record_kinks(&self, input: ArrayViewD<'_, f64>, recorder: &mut convnet::tensor::KinkRecorder) {
        Layer::<f64>::record_kinks(&self.0, input, recorder)
    }
}

#[test]
fn maxpool_with_average_routing_is_caught() {
    let input = random_tensor(&mut rng(4), &[1, 1, 4, 4]);
    let mut layer = AverageRoutedMaxPool(pool());
    let report = check_layer(&mut layer, input.view(), &GradCheckConfig::default()).unwrap();
    println!("{report}");
    assert!(!report.passed());
    let worst = report.tensor("input").unwrap().worst.as_ref().unwrap();
    assert!(worst.rel_error > 0.5, "a 1/4-vs-1 routing error is large: {worst:?}");
}

#[test]
fn elementwise_and_reshaping_mutants_are_caught() {
    let input = random_tensor(&mut rng(5), &[2, 3, 2, 3]);
    for mutation in [Mutation::FlipInputGradSign, Mutation::ShiftInputGrad, Mutation::DuplicateInputGrad] {
        assert_caught("relu", || Relu, &input, mutation);
        assert_caught("flatten", || Flatten, &input, mutation);
        assert_caught("dropout", || Dropout::<f64>::new(0.3).unwrap(), &input, mutation);
        let normalize = || Normalize::new(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]).unwrap();
        assert_caught("normalize", normalize, &input, mutation);
    }
    let logits = random_tensor(&mut rng(6), &[3, 5]);
    for mutation in [Mutation::FlipInputGradSign, Mutation::ShiftInputGrad] {
        assert_caught("softmax", || Softmax, &logits, mutation);
    }
}

#[test]
fn missing_and_all_zero_gradients_fail() {
    // A backward that never writes the weight gradient: the analytic gradient is
    // zero, the numeric one is not, so the check fails on a mismatch.
    let input = random_tensor(&mut rng(7), &[2, 6]);
    let mut mutant = Mutant::new(dense(), Mutation::DropParamGrad(0));
    let report = check_layer(&mut mutant, input.view(), &GradCheckConfig::default()).unwrap();
    assert!(!report.passed());
    assert!(report.tensor("weight").unwrap().failures > 0);
    // A zero input makes the weight gradient dY^T X exactly zero on both sides:
    // every comparison would succeed, so the tensor fails as vacuous instead.
    let zeros = ArrayD::zeros(input.raw_dim());
    let report = check_layer(&mut dense(), zeros.view(), &GradCheckConfig::default()).unwrap();
    let weight = report.tensor("weight").unwrap();
    assert!(weight.vacuous() && !weight.passed(), "{report}");
    assert!(!report.passed());
}
