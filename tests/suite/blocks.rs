//! Issue 26, second part: numeric padding, ceil-mode max-pooling, average
//! pooling, bias-free layers, and the blocks with branches (residual add,
//! channel concatenation) — held to plain twins, to f64 numerical gradients
//! on the production code, to mutations the check must catch, and to the
//! torchvision presets' parameter counts.

use crate::common::{random_tensor, rng, with_threads};
use convnet::io::model_file::{model_tensors, save_model, ModelMeta};
use convnet::tensor::gradcheck::{check_layer, check_model, GradCheckConfig};
use convnet::tensor::layers::avgpool2d::avgpool_naive;
use convnet::tensor::layers::maxpool2d::maxpool_naive;
use convnet::tensor::ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use convnet::tensor::{
    AvgPool2d, Layer, LayerSpec, MaxPool2d, Mode, ModelSpec, Padding, Param, ParamMut, Sequential, WindowGeometry,
};

fn forward<L: Layer<f64> + ?Sized>(layer: &mut L, x: &ArrayD<f64>, mode: Mode) -> ArrayD<f64> {
    let shape = std::iter::once(x.shape()[0]).chain(layer.output_shape(&x.shape()[1..]).unwrap()).collect::<Vec<_>>();
    let mut y = ArrayD::zeros(IxDyn(&shape));
    layer.forward(x.view(), y.view_mut(), mode);
    y
}

/// A part of a network from TOML `[[layers]]` (no classifier required).
fn part(toml: &str, input: &[usize], seed: u64) -> Sequential<f64> {
    ModelSpec::from_toml(toml).unwrap().build_sequence(input, 3, seed).unwrap()
}

/// The first layer of a part, taken out of it (a block to check on its own).
fn block(toml: &str, input: &[usize], seed: u64) -> Box<dyn Layer<f64>> {
    part(toml, input, seed).into_layers().remove(0)
}

const BASIC_IDENTITY: &str = r#"
[[layers]]
type = "residual"
[[layers.body]]
type = "conv2d"
filters = 3
kernel = 3
padding = 1
bias = false
[[layers.body]]
type = "batchnorm"
[[layers.body]]
type = "relu"
[[layers.body]]
type = "conv2d"
filters = 3
kernel = 3
padding = 1
"#;

const BASIC_PROJECTION: &str = r#"
[[layers]]
type = "residual"
[[layers.body]]
type = "conv2d"
filters = 4
kernel = 3
stride = 2
padding = 1
bias = false
[[layers.body]]
type = "batchnorm"
[[layers.body]]
type = "relu"
[[layers.body]]
type = "conv2d"
filters = 4
kernel = 3
padding = 1
[[layers.shortcut]]
type = "conv2d"
filters = 4
kernel = 1
stride = 2
bias = false
[[layers.shortcut]]
type = "batchnorm"
"#;

const FIRE: &str = r#"
[[layers]]
type = "concat"
[[layers.branches]]
layers = [{ type = "conv2d", filters = 2, kernel = 1 }, { type = "relu" }]
[[layers.branches]]
layers = [{ type = "conv2d", filters = 3, kernel = 3, padding = 1 }, { type = "relu" }]
[[layers.branches]]
layers = []
"#;

#[test]
fn numeric_padding_is_symmetric_and_matches_pytorch_sizes() {
    // ResNet's stem: 224 -> 112 with 7x7, stride 2, padding 3 (PyTorch); `same` would pad 2 before
    let stem = WindowGeometry::new(3, 224, 224, (7, 7), (2, 2), Padding::Explicit(3, 3)).unwrap();
    assert_eq!((stem.out_h, stem.pad_top), (112, 3));
    let same = WindowGeometry::new(3, 224, 224, (7, 7), (2, 2), Padding::Same).unwrap();
    assert_eq!((same.out_h, same.pad_top), (112, 2));
    // its max-pool: 112 -> 56 with 3x3, stride 2, padding 1
    let pool = WindowGeometry::new(1, 112, 112, (3, 3), (2, 2), Padding::Explicit(1, 1)).unwrap();
    assert_eq!(pool.out_h, 56);
    let rect = WindowGeometry::new(1, 10, 10, (3, 3), (1, 1), Padding::Explicit(0, 2)).unwrap();
    assert_eq!((rect.out_h, rect.out_w, rect.pad_left), (8, 12, 2));
    // written as a number or [rows, columns]; "valid"/"same" unchanged
    let spec = ModelSpec::from_toml(
        "[[layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel = 3\npadding = [1, 2]\n\n[[layers]]\ntype = \"flatten\"\n\n[[layers]]\ntype = \"dense\"\n",
    )
    .unwrap();
    assert!(matches!(spec.layers[0], LayerSpec::Conv2d { padding: Padding::Explicit(1, 2), .. }));
    let err = ModelSpec::from_toml("[[layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel = 3\npadding = \"full\"\n");
    assert!(err.unwrap_err().to_string().contains("unknown padding \"full\""));
    let err = ModelSpec::from_toml("[[layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel = 3\npadding = -1\n");
    assert!(err.unwrap_err().to_string().contains("padding must be \"valid\", \"same\", a number"));
}

#[test]
fn ceil_mode_max_pooling_equals_its_twin_and_passes_the_gradient_check() {
    let mut rng = rng(80);
    // 6 -> ceil((6 - 3) / 2) + 1 = 3 (floor would give 2): the last window hangs over
    for (shape, pool, stride, padding) in [
        ([2, 3, 6, 7], (3, 3), (2, 2), Padding::Valid),
        ([1, 2, 5, 5], (2, 2), (2, 2), Padding::Valid),
        ([1, 2, 8, 6], (3, 3), (2, 2), Padding::Explicit(1, 1)),
    ] {
        let x = random_tensor(&mut rng, &shape);
        let mut layer = MaxPool2d::new(pool, stride, padding).unwrap().with_ceil_mode(true);
        let y = forward(&mut layer, &x, Mode::Eval);
        let geom = WindowGeometry::new(1, shape[2], shape[3], pool, stride, padding).unwrap().with_ceil_mode();
        assert_eq!(&y.shape()[2..], &[geom.out_h, geom.out_w]);
        let dy = random_tensor(&mut rng, y.shape());
        let (expected, expected_dx) =
            maxpool_naive(&geom, shape[0] * shape[1], x.as_slice().unwrap(), dy.as_slice().unwrap());
        assert_eq!(y.as_slice().unwrap(), expected.as_slice());
        let mut dx = ArrayD::zeros(IxDyn(&shape));
        layer.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
        assert_eq!(dx.as_slice().unwrap(), expected_dx.as_slice());
        let report = check_layer(&mut layer, x.view(), &GradCheckConfig::default()).unwrap();
        assert!(report.passed(), "ceil-mode max-pool {shape:?}:\n{report}");
    }
    // SqueezeNet's pools: 111 -> 55 -> 27 -> 13
    let geom = |size| WindowGeometry::new(1, size, size, (3, 3), (2, 2), Padding::Valid).unwrap().with_ceil_mode();
    assert_eq!([geom(111).out_h, geom(55).out_h, geom(27).out_h], [55, 27, 13]);
}

#[test]
fn average_pooling_equals_its_twin_and_passes_the_gradient_check() {
    let mut rng = rng(81);
    for (shape, pool, stride, padding, ceil, include) in [
        ([2, 3, 6, 7], (2, 2), (2, 2), Padding::Valid, false, true),
        ([1, 2, 5, 5], (3, 3), (2, 2), Padding::Explicit(1, 1), false, true),
        ([1, 2, 5, 5], (3, 3), (2, 2), Padding::Explicit(1, 1), false, false),
        ([1, 2, 6, 6], (3, 3), (2, 2), Padding::Explicit(1, 1), true, true),
        ([2, 1, 4, 4], (3, 3), (1, 1), Padding::Same, false, false),
    ] {
        let x = random_tensor(&mut rng, &shape);
        let mut layer =
            AvgPool2d::new(pool, stride, padding).unwrap().with_ceil_mode(ceil).with_count_include_pad(include);
        let y = forward(&mut layer, &x, Mode::Eval);
        let mut geom = WindowGeometry::new(1, shape[2], shape[3], pool, stride, padding).unwrap();
        if ceil {
            geom = geom.with_ceil_mode();
        }
        let dy = random_tensor(&mut rng, y.shape());
        let (expected, expected_dx) =
            avgpool_naive(&geom, include, shape[0] * shape[1], x.as_slice().unwrap(), dy.as_slice().unwrap());
        let mut dx = ArrayD::zeros(IxDyn(&shape));
        layer.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
        for (a, b) in y.iter().chain(dx.iter()).zip(expected.iter().chain(&expected_dx)) {
            assert!((a - b).abs() < 1e-14, "{shape:?} {padding:?}: {a} vs {b}");
        }
        let report = check_layer(&mut layer, x.view(), &GradCheckConfig::default()).unwrap();
        assert!(report.passed(), "average pooling {shape:?} {padding:?}:\n{report}");
    }
    // PyTorch's divisor: padding counts (3x3 window at a corner with padding 1: 4 pixels / 9)
    let x = ArrayD::from_elem(IxDyn(&[1, 1, 3, 3]), 9.0);
    let mut counted = AvgPool2d::new((3, 3), (1, 1), Padding::Explicit(1, 1)).unwrap();
    assert_eq!(forward(&mut counted, &x, Mode::Eval)[[0, 0, 0, 0]], 4.0);
    let mut not_counted = counted.clone().with_count_include_pad(false);
    assert_eq!(forward(&mut not_counted, &x, Mode::Eval)[[0, 0, 0, 0]], 9.0);
}

#[test]
fn a_bias_free_convolution_has_no_bias_parameter_and_passes_the_gradient_check() {
    let toml = "[[layers]]\ntype = \"conv2d\"\nfilters = 3\nkernel = 3\nstride = 2\npadding = 1\nbias = false\n";
    let mut conv = block(toml, &[2, 7, 7], 82);
    assert_eq!(conv.param_names(), ["weight"]);
    assert!(conv.describe().contains("pad 1, no bias"), "{}", conv.describe());
    let x = random_tensor(&mut rng(83), &[2, 2, 7, 7]);
    let y = forward(conv.as_mut(), &x, Mode::Eval);
    assert_eq!(y.shape(), &[2, 3, 4, 4]);
    let report = check_layer(conv.as_mut(), x.view(), &GradCheckConfig::default()).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.tensors.len(), 2, "input and weight only");
}

#[test]
fn residual_blocks_pass_the_gradient_check_with_identity_and_projection_shortcuts() {
    let mut rng = rng(84);
    for (toml, input, names) in [
        (
            BASIC_IDENTITY,
            [3, 5, 5],
            vec!["body.0.weight", "body.1.weight", "body.1.bias", "body.3.weight", "body.3.bias"],
        ),
        (
            BASIC_PROJECTION,
            [2, 6, 6],
            vec![
                "body.0.weight",
                "body.1.weight",
                "body.1.bias",
                "body.3.weight",
                "body.3.bias",
                "shortcut.0.weight",
                "shortcut.1.weight",
                "shortcut.1.bias",
            ],
        ),
    ] {
        let mut residual = block(toml, &input, 85);
        assert_eq!(residual.param_names(), names);
        let x = random_tensor(&mut rng, &[3, input[0], input[1], input[2]]);
        for eval_mode in [false, true] {
            let config = GradCheckConfig { eval_mode, ..GradCheckConfig::default() };
            let report = check_layer(residual.as_mut(), x.view(), &config).unwrap();
            assert!(report.passed(), "{toml}\neval {eval_mode}:\n{report}");
            assert!(report.tensors.iter().all(|t| t.checked > 0));
        }
    }
}

/// The mutation: a residual add whose backward forgets the identity
/// shortcut's gradient (`dL/dx = body'(x)^T dy`, without `+ dy`).
struct DropsTheShortcut(Box<dyn Layer<f64>>);

impl Layer<f64> for DropsTheShortcut {
    fn kind(&self) -> &'static str {
        "residual"
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
        self.0.backward(input, output, grad_output.view(), grad_input.as_mut().map(|g| g.view_mut()));
        if let Some(mut grad_input) = grad_input {
            grad_input -= &grad_output; // takes the shortcut's + dy away again
        }
    }
    fn params(&self) -> Vec<Param<'_, f64>> {
        self.0.params()
    }
    fn params_mut(&mut self) -> Vec<ParamMut<'_, f64>> {
        self.0.params_mut()
    }
    fn record_kinks(&self, input: ArrayViewD<'_, f64>, recorder: &mut convnet::tensor::KinkRecorder) {
        self.0.record_kinks(input, recorder)
    }
}

#[test]
fn a_residual_add_that_drops_the_shortcut_gradient_is_caught() {
    let x = random_tensor(&mut rng(86), &[2, 3, 5, 5]);
    let mut mutant = DropsTheShortcut(block(BASIC_IDENTITY, &[3, 5, 5], 87));
    let report = check_layer(&mut mutant, x.view(), &GradCheckConfig::default()).unwrap();
    assert!(!report.passed(), "the mutation went unnoticed:\n{report}");
    assert!(!report.tensors.iter().find(|t| t.name == "input").unwrap().passed(), "{report}");
    // and the same block unmutated passes on the same input
    let report = check_layer(block(BASIC_IDENTITY, &[3, 5, 5], 87).as_mut(), x.view(), &GradCheckConfig::default());
    assert!(report.unwrap().passed());
}

#[test]
fn a_concatenating_block_stacks_channels_and_passes_the_gradient_check() {
    let mut concat = block(FIRE, &[2, 4, 4], 88);
    assert_eq!(concat.output_shape(&[2, 4, 4]).unwrap(), [2 + 3 + 2, 4, 4]);
    let x = random_tensor(&mut rng(89), &[2, 2, 4, 4]);
    let y = forward(concat.as_mut(), &x, Mode::Eval);
    // the third branch is the input itself: channels 5..7 of every image
    for n in 0..2 {
        for c in 0..2 {
            let got = y.slice(convnet::tensor::ndarray::s![n, 5 + c, .., ..]);
            assert_eq!(got, x.slice(convnet::tensor::ndarray::s![n, c, .., ..]));
        }
    }
    let report = check_layer(concat.as_mut(), x.view(), &GradCheckConfig::default()).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.tensors.len(), 5, "input and two convolutions' weights and biases");
}

#[test]
fn resnet_small_passes_the_whole_model_check() {
    let mut model = ModelSpec::preset("resnet-small").unwrap().build::<f64>(&[1, 8, 8], 3, 9).unwrap();
    let input = random_tensor(&mut rng(90), &[4, 1, 8, 8]);
    let config = GradCheckConfig { max_elements_per_tensor: 12, ..GradCheckConfig::default() };
    let report = check_model(&mut model, input.view(), &[0, 2, 1, 1], &config).unwrap();
    assert!(report.passed(), "{report}");
    assert!(report.tensors.iter().any(|t| t.name == "5.shortcut.0.weight"), "{report}");
}

#[test]
fn blocks_run_the_same_fused_and_unfused_and_on_any_thread_count() {
    let spec = ModelSpec::preset("resnet-small").unwrap();
    let x: ArrayD<f32> = random_tensor(&mut rng(91), &[3, 1, 12, 12]).mapv(|v| v as f32);
    let run = |threads: usize, fused: bool| {
        with_threads(threads, || {
            let mut model = spec.build::<f32>(&[1, 12, 12], 4, 3).unwrap();
            model.set_fused(fused);
            let logits = model.forward(x.view(), Mode::train(5)).unwrap().to_owned();
            let dy = logits.mapv(|v| v * 0.5 - 0.1);
            let dx = model.backward_with_input_grad(dy.view()).unwrap();
            let grads: Vec<f32> =
                model.params().iter().flat_map(|p| p.grad.iter().copied().collect::<Vec<_>>()).collect();
            (logits.into_raw_vec_and_offset().0, dx.into_raw_vec_and_offset().0, grads)
        })
    };
    let one = run(1, true);
    let bits = |v: &(Vec<f32>, Vec<f32>, Vec<f32>)| {
        [&v.0, &v.1, &v.2].map(|values| values.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
    };
    assert_eq!(bits(&one), bits(&run(2, true)), "thread count changed the bits");
    let unfused = run(1, false);
    for (a, b) in [(&one.0, &unfused.0), (&one.1, &unfused.1), (&one.2, &unfused.2)] {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "fused {x} vs unfused {y}");
        }
    }
}

#[test]
fn presets_have_torchvisions_parameter_counts() {
    let count = |name: &str, classes| {
        ModelSpec::preset(name).unwrap().build::<f32>(&[3, 224, 224], classes, 0).unwrap().num_params()
    };
    assert_eq!(count("resnet18", 1000), 11_689_512);
    assert_eq!(count("resnet34", 1000), 21_797_672);
    assert_eq!(count("squeezenet1_1", 1000), 1_235_496);
    // the stem: 224 -> 112 -> 56, then 56, 28, 14, 7 by stage; squeezenet ends 13x13
    let resnet18 = ModelSpec::preset("resnet18").unwrap().build::<f32>(&[3, 224, 224], 8, 0).unwrap();
    let spatial: Vec<usize> = resnet18.shapes().iter().filter(|s| s.len() == 3).map(|s| s[1]).collect();
    assert_eq!(spatial, [224, 112, 112, 112, 56, 56, 56, 56, 56, 28, 28, 28, 28, 14, 14, 14, 14, 7, 7, 7, 7]);
}

#[test]
fn models_with_blocks_save_every_parameter_and_running_statistic_by_its_path() {
    let spec = ModelSpec::preset("resnet-small").unwrap();
    let mut model = spec.build::<f32>(&[1, 8, 8], 3, 5).unwrap();
    let x: ArrayD<f32> = random_tensor(&mut rng(92), &[4, 1, 8, 8]).mapv(|v| v as f32);
    model.forward(x.view(), Mode::train(1)).unwrap();
    let names: Vec<String> = model_tensors(&model).into_iter().map(|(name, _, _)| name).collect();
    for expected in
        ["0.weight", "3.body.0.weight", "5.body.1.running_var", "5.shortcut.0.weight", "5.shortcut.1.running_mean"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    let dir = std::env::temp_dir().join(format!("convnet-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let meta =
        ModelMeta::new(spec, vec!["a".into(), "b".into(), "c".into()], [8, 8], convnet::data::ColorMode::Grayscale);
    save_model(&path, &model, &meta).unwrap();
    let (loaded, _) = convnet::io::model_file::load_model(&path).unwrap();
    let mut loaded = loaded;
    let ours = model.forward(x.view(), Mode::Eval).unwrap().to_owned();
    let theirs = loaded.forward(x.view(), Mode::Eval).unwrap().to_owned();
    assert_eq!(ours, theirs, "the loaded model predicts differently");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pointwise_convolution_reads_its_input_in_place_and_equals_the_direct_loops() {
    use convnet::tensor::layers::conv2d::conv2d_forward_naive;
    use convnet::tensor::Conv2d;
    let mut rng = rng(93);
    // 1x1, stride 1, no padding: the column matrix is the input itself (1024 channels at 40x40:
    // two tiles of output rows forward and backward)
    for (channels, out_channels, size) in [(3, 4, 5), (1024, 4, 40), (1, 2, 1)] {
        let geom = WindowGeometry::new(channels, size, size, (1, 1), (1, 1), Padding::Valid).unwrap();
        assert!(geom.is_pointwise());
        let mut conv = Conv2d::<f64>::new(channels, out_channels, (1, 1), (1, 1), Padding::Valid).unwrap();
        let weight = random_tensor(&mut rng, &[out_channels, channels, 1, 1]);
        conv.weight_mut().assign(&weight);
        conv.bias_mut().assign(&random_tensor(&mut rng, &[out_channels]));
        let x = random_tensor(&mut rng, &[2, channels, size, size]);
        let y = forward(&mut conv, &x, Mode::Eval);
        let bias: Vec<f64> = conv.bias_mut().iter().copied().collect();
        let mut expected = vec![0.0; y.len()];
        let (x_values, w_values) = (x.as_slice().unwrap(), weight.as_slice().unwrap());
        conv2d_forward_naive(&geom, 2, out_channels, x_values, w_values, &bias, &mut expected);
        for (a, b) in y.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let report =
            check_layer(&mut conv, x.view(), &GradCheckConfig { max_elements_per_tensor: 40, ..Default::default() });
        assert!(report.unwrap().passed(), "1x1 convolution {channels} -> {out_channels} at {size}x{size}");
    }
    // stride 2 or padding: not pointwise, im2col as before
    assert!(!WindowGeometry::new(4, 8, 8, (1, 1), (2, 2), Padding::Valid).unwrap().is_pointwise());
    assert!(!WindowGeometry::new(4, 8, 8, (1, 1), (1, 1), Padding::Explicit(1, 1)).unwrap().is_pointwise());
}

#[test]
fn grad_cam_reads_a_resnets_last_block_and_squeezenets_last_convolution_by_default() {
    use convnet::tensor::explain::default_activation;
    let build = |name: &str| ModelSpec::preset(name).unwrap().build::<f32>(&[3, 64, 64], 4, 0).unwrap();
    // resnet18: ... 18 residual, 19 relu, 20 global_avgpool2d: the ReLU after the last block
    let resnet = build("resnet18");
    assert_eq!(default_activation(&resnet), Some(20));
    assert_eq!(resnet.layers()[18].kind(), "residual");
    assert_eq!(resnet.shapes()[20], [512, 2, 2]);
    // squeezenet1_1: the classifier convolution (30) and its ReLU (31)
    let squeezenet = build("squeezenet1_1");
    assert_eq!(default_activation(&squeezenet), Some(32));
    assert_eq!(squeezenet.layers()[30].kind(), "conv2d");
}
