//! The modern-CNN layers (issue 26, first part): BatchNorm in training and
//! evaluation mode and global average pooling, held to their plain twins, to
//! f64 numerical gradients on the production code, to thread-count
//! independence, and to a mutation that the gradient check must catch.

use crate::common::{random_tensor, rng, with_threads};
use convnet::io::model_file::{assign_params, model_tensors, read_tensor_file, save_model, ModelMeta};
use convnet::tensor::gradcheck::{check_layer, check_model, GradCheckConfig};
use convnet::tensor::layers::batchnorm::{batchnorm_train_naive, channel_statistics, DEFAULT_EPS};
use convnet::tensor::layers::global_avgpool::global_avgpool_naive;
use convnet::tensor::layers::normalize::normalize_naive;
use convnet::tensor::ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use convnet::tensor::{BatchNorm, GlobalAvgPool2d, Layer, Mode, ModelSpec, Normalize, Param, ParamMut};

const SMALL_BN: &str = include_str!("../../docs/architectures/small-bn.toml");

fn forward<L: Layer<f64>>(layer: &mut L, x: &ArrayD<f64>, mode: Mode) -> ArrayD<f64> {
    let shape = std::iter::once(x.shape()[0]).chain(layer.output_shape(&x.shape()[1..]).unwrap()).collect::<Vec<_>>();
    let mut y = ArrayD::zeros(IxDyn(&shape));
    layer.forward(x.view(), y.view_mut(), mode);
    y
}

/// A BatchNorm whose running statistics are no longer the initial 0 and 1,
/// with a non-trivial scale and shift, so evaluation mode is really exercised.
fn trained_batchnorm(channels: usize, sample: &[usize], seed: u64) -> BatchNorm<f64> {
    let mut rng = rng(seed);
    let mut bn = BatchNorm::new(channels).unwrap();
    for _ in 0..3 {
        let shape: Vec<usize> = std::iter::once(4).chain(sample.iter().copied()).collect();
        let x = random_tensor(&mut rng, &shape) * 2.0 + 0.5;
        forward(&mut bn, &x, Mode::train(0));
    }
    for param in bn.params_mut() {
        let values = random_tensor(&mut rng, &[channels]);
        param.value.assign(&(values + 1.0));
    }
    bn
}

#[test]
fn batchnorm_training_forward_equals_its_plain_twin() {
    let mut rng = rng(60);
    for shape in [[3, 4, 5, 6].as_slice(), &[5, 7], &[1, 2, 3, 3]] {
        let x = random_tensor(&mut rng, shape) * 3.0 + 1.0;
        let mut bn = trained_batchnorm(shape[1], &shape[1..], 61);
        let (gamma, beta): (Vec<f64>, Vec<f64>) = {
            let params = bn.params();
            (params[0].value.iter().copied().collect(), params[1].value.iter().copied().collect())
        };
        let y = forward(&mut bn, &x, Mode::train(0));
        let plane: usize = shape[2..].iter().product();
        let expected = batchnorm_train_naive(x.as_slice().unwrap(), shape[1], plane, &gamma, &beta, DEFAULT_EPS);
        for (a, b) in y.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{shape:?}: {a} vs {b}");
        }
    }
}

#[test]
fn batchnorm_evaluation_uses_the_running_statistics() {
    let mut bn = trained_batchnorm(3, &[3, 4, 4], 62);
    let x = random_tensor(&mut rng(63), &[2, 3, 4, 4]);
    let y = forward(&mut bn, &x, Mode::Eval);
    let (mean, var) = (bn.running_mean().clone(), bn.running_var().clone());
    let gamma: Vec<f64> = bn.params()[0].value.iter().copied().collect();
    let beta: Vec<f64> = bn.params()[1].value.iter().copied().collect();
    for (i, (&v, &out)) in x.iter().zip(y.iter()).enumerate() {
        let c = (i / 16) % 3;
        let expected = gamma[c] * (v - mean[c]) / (var[c] + DEFAULT_EPS).sqrt() + beta[c];
        assert!((out - expected).abs() < 1e-12, "{out} vs {expected}");
    }
    // and an evaluation pass leaves the statistics alone
    assert_eq!(bn.running_mean(), &mean);
}

#[test]
fn batchnorm_gradients_in_training_and_evaluation_mode() {
    let mut rng = rng(64);
    for shape in [[3, 4, 5, 6].as_slice(), &[5, 7], &[2, 3, 1, 4]] {
        let x = random_tensor(&mut rng, shape) * 2.0 + 0.3;
        for eval_mode in [false, true] {
            let mut bn = trained_batchnorm(shape[1], &shape[1..], 65);
            let config = GradCheckConfig { eval_mode, ..GradCheckConfig::default() };
            let report = check_layer(&mut bn, x.view(), &config).unwrap();
            assert!(report.passed(), "batchnorm {shape:?}, eval {eval_mode}:\n{report}");
            assert_eq!(report.tensors.len(), 3, "input, weight, bias");
            assert!(report.tensors.iter().all(|t| t.checked > 0));
        }
    }
}

/// The mutation: a BatchNorm backward that forgets the mean's term
/// (`- sum dy` in `dx = gamma inv / M (M dy - sum dy - xhat sum(dy xhat))`).
struct WithoutMeanTerm(BatchNorm<f64>);

impl Layer<f64> for WithoutMeanTerm {
    fn kind(&self) -> &'static str {
        "batchnorm"
    }
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        self.0.output_shape(input_shape)
    }
    fn forward(&mut self, input: ArrayViewD<'_, f64>, output: ArrayViewMutD<'_, f64>, mode: Mode) {
        self.0.forward(input, output, mode)
    }
    fn backward(
        &mut self,
        input: ArrayViewD<'_, f64>,
        output: ArrayViewD<'_, f64>,
        grad_output: ArrayViewD<'_, f64>,
        mut grad_input: Option<ArrayViewMutD<'_, f64>>,
    ) {
        self.0.backward(input.view(), output, grad_output.view(), grad_input.as_mut().map(|g| g.view_mut()));
        let (channels, plane) = (input.shape()[1], input.shape()[2..].iter().product::<usize>());
        let stats = channel_statistics(input.as_slice().unwrap(), channels, plane);
        let count = (input.len() / channels) as f64;
        let gamma = self.0.params()[0].value.clone();
        let dy = grad_output.as_slice().unwrap();
        let Some(grad_input) = grad_input else { return };
        let dx = grad_input.into_slice().unwrap();
        for c in 0..channels {
            let indices = (0..dy.len()).filter(|i| (i / plane) % channels == c).collect::<Vec<_>>();
            let sum_dy: f64 = indices.iter().map(|&i| dy[i]).sum();
            let inv = 1.0 / (stats[c].1 + DEFAULT_EPS).sqrt();
            for i in indices {
                dx[i] += gamma[c] * inv / count * sum_dy; // adds back what the mean's term took away
            }
        }
    }
    fn params(&self) -> Vec<Param<'_, f64>> {
        self.0.params()
    }
    fn params_mut(&mut self) -> Vec<ParamMut<'_, f64>> {
        self.0.params_mut()
    }
}

#[test]
fn a_batchnorm_backward_without_its_mean_term_is_caught() {
    let x = random_tensor(&mut rng(66), &[3, 2, 4, 4]) + 0.7;
    let report =
        check_layer(&mut WithoutMeanTerm(trained_batchnorm(2, &[2, 4, 4], 67)), x.view(), &GradCheckConfig::default())
            .unwrap();
    assert!(!report.passed(), "the mutation went unnoticed:\n{report}");
    let input = report.tensors.iter().find(|t| t.name == "input").unwrap();
    assert!(!input.passed(), "{report}");
}

#[test]
fn batchnorm_gives_the_same_bits_on_1_and_3_threads() {
    let x: ArrayD<f32> = random_tensor(&mut rng(68), &[4, 5, 6, 7]).mapv(|v| v as f32);
    let dy: ArrayD<f32> = random_tensor(&mut rng(69), &[4, 5, 6, 7]).mapv(|v| v as f32);
    let run = |threads| {
        with_threads(threads, || {
            let mut bn = BatchNorm::<f32>::new(5).unwrap();
            let mut y = ArrayD::zeros(IxDyn(&[4, 5, 6, 7]));
            let mut dx = ArrayD::zeros(IxDyn(&[4, 5, 6, 7]));
            bn.forward(x.view(), y.view_mut(), Mode::train(0));
            bn.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
            let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let grads: Vec<u32> = bn.params().iter().flat_map(|p| bits(p.grad)).collect();
            (bits(&y), bits(&dx), grads, bits(bn.running_var()))
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn global_average_pooling_equals_its_twin_and_passes_the_gradient_check() {
    let mut rng = rng(70);
    for shape in [[2, 3, 4, 5].as_slice(), &[1, 1, 1, 1], &[3, 2, 7, 1]] {
        let x = random_tensor(&mut rng, shape);
        let y = forward(&mut GlobalAvgPool2d, &x, Mode::Eval);
        let plane: usize = shape[2..].iter().product();
        for (a, b) in y.iter().zip(global_avgpool_naive(x.as_slice().unwrap(), plane)) {
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
        }
        let report = check_layer(&mut GlobalAvgPool2d, x.view(), &GradCheckConfig::default()).unwrap();
        assert!(report.passed(), "global average pooling {shape:?}:\n{report}");
    }
}

#[test]
fn normalize_equals_its_twin_and_passes_the_gradient_check() {
    let mut rng = rng(72);
    let (mean, std) = (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]);
    for shape in [[2, 3, 4, 5].as_slice(), &[1, 3, 1, 1], &[3, 3, 7, 2]] {
        let x = random_tensor(&mut rng, shape);
        let mut layer = Normalize::new(mean.clone(), std.clone()).unwrap();
        let y = forward(&mut layer, &x, Mode::Eval);
        let plane: usize = shape[2..].iter().product();
        for (a, b) in y.iter().zip(normalize_naive(x.as_slice().unwrap(), &mean, &std, plane)) {
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
        }
        let report = check_layer(&mut layer, x.view(), &GradCheckConfig::default()).unwrap();
        assert!(report.passed(), "normalize {shape:?}:\n{report}");
    }
    assert!(Normalize::new(vec![0.5], vec![0.0]).unwrap_err().contains("positive standard deviations"));
    assert!(Normalize::new(vec![0.5, 0.5], vec![1.0]).unwrap_err().contains("as many means"));
}

#[test]
fn a_model_with_batchnorm_and_global_pooling_passes_the_whole_model_check() {
    let spec = ModelSpec::from_toml(SMALL_BN).unwrap();
    let mut model = spec.build::<f64>(&[1, 8, 8], 3, 5).unwrap();
    let input = random_tensor(&mut rng(71), &[4, 1, 8, 8]);
    let config = GradCheckConfig { max_elements_per_tensor: 30, ..GradCheckConfig::default() };
    let report = check_model(&mut model, input.view(), &[0, 2, 1, 1], &config).unwrap();
    assert!(report.passed(), "{report}");
}

#[test]
fn running_statistics_are_saved_and_loaded_with_the_model() {
    let spec = ModelSpec::from_toml(SMALL_BN).unwrap();
    let mut model = spec.build::<f32>(&[1, 8, 8], 3, 5).unwrap();
    let x: ArrayD<f32> = random_tensor(&mut rng(72), &[4, 1, 8, 8]).mapv(|v| v as f32 * 2.0 + 1.0);
    model.forward(x.view(), Mode::train(1)).unwrap();
    let names: Vec<String> = model_tensors(&model).into_iter().map(|(name, _, _)| name).collect();
    assert!(
        names.contains(&"3.running_mean".to_string()) && names.contains(&"10.running_var".to_string()),
        "{names:?}"
    );
    let path = std::env::temp_dir().join(format!("convnet-bn-{}.safetensors", std::process::id()));
    let classes = vec!["a".into(), "b".into(), "c".into()];
    let meta = ModelMeta::new(spec.clone(), classes, [8, 8], convnet::data::ColorMode::Grayscale);
    save_model(&path, &model, &meta).unwrap();
    let mut loaded = spec.build::<f32>(&[1, 8, 8], 3, 99).unwrap();
    assign_params(&mut loaded, &read_tensor_file(&path).unwrap().tensors).unwrap();
    std::fs::remove_file(&path).unwrap();
    for ((name, a), (_, b)) in model.buffers().into_iter().zip(loaded.buffers()) {
        assert_eq!(a, b, "{name}");
        assert!(a.iter().any(|&v| v != 0.0 && v != 1.0), "{name} never moved: the test would prove nothing");
    }
    let (before, after) = (
        model.forward(x.view(), Mode::Eval).unwrap().to_owned(),
        loaded.forward(x.view(), Mode::Eval).unwrap().to_owned(),
    );
    assert_eq!(before, after, "the same evaluation outputs after a round trip");
}

/// `init` in an architecture: absent is Keras' Glorot-uniform (the same bits
/// as naming it), `pytorch` draws weights and biases within `1/sqrt(fan_in)`,
/// an unknown name is refused, and model metadata keeps it only when it is not
/// the default (so files of older architectures are unchanged).
#[test]
fn an_architecture_names_its_initialisation() {
    let layers = "[[layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\n\n[[layers]]\ntype = \"flatten\"\n\n[[layers]]\ntype = \"dense\"\n";
    let weights = |spec: &ModelSpec| {
        let model = spec.build::<f32>(&[2, 6, 6], 3, 11).unwrap();
        model.params().into_iter().map(|p| p.value.to_owned()).collect::<Vec<_>>()
    };
    let default = ModelSpec::from_toml(layers).unwrap();
    let glorot = ModelSpec::from_toml(&format!("init = \"glorot-uniform\"\n{layers}")).unwrap();
    let pytorch = ModelSpec::from_toml(&format!("init = \"pytorch\"\n{layers}")).unwrap();
    assert_eq!(weights(&default), weights(&glorot));
    let [conv_w, conv_b, dense_w, dense_b] = <[_; 4]>::try_from(weights(&pytorch)).unwrap();
    for (values, fan_in) in [(&conv_w, 18.0f32), (&conv_b, 18.0), (&dense_w, 64.0), (&dense_b, 64.0)] {
        let bound = 1.0 / fan_in.sqrt();
        assert!(values.iter().all(|w| w.abs() <= bound), "{values:?} exceeds {bound}");
        assert!(values.iter().all(|&w| w != 0.0));
    }
    // Glorot's conv bound sqrt(6 / (18 + 36)) = 0.33 > PyTorch's 0.24: the laws differ
    assert!(weights(&default)[0].iter().any(|w| w.abs() > 0.25));
    let err = ModelSpec::from_toml(&format!("init = \"he\"\n{layers}")).unwrap_err().to_string();
    assert!(err.contains("unknown variant `he`"), "{err}");
    let meta = |spec: &ModelSpec| serde_json::to_string(spec).unwrap();
    assert!(!meta(&default).contains("init"));
    let written = meta(&pytorch);
    assert!(written.contains("\"init\":\"pytorch\""), "{written}");
    assert_eq!(serde_json::from_str::<ModelSpec>(&written).unwrap(), pytorch);
}
