//! `convnet import-onnx` against onnxruntime, on fixtures made by
//! `tests/fixtures/onnx/make_fixtures.py` (a pip torch and onnxruntime;
//! `cargo test` needs no Python): each imported model's evaluation logits
//! agree with onnxruntime's on the same input within 1e-4, relative to the
//! largest logit. torchvision's ResNet-18 comes at opsets 13 and 17 with its
//! weights as ONNX external data, written here from each tensor's name.

use super::torch_parity::pattern;
use convnet::io::model_file::read_tensor_file;
use convnet::io::onnx_import::{import_onnx, OnnxImport};
use convnet::io::onnx_proto::decode_model;
use convnet::tensor::ndarray::{ArrayD, IxDyn};
use convnet::tensor::{LayerSpec, Mode, ModelSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn expected() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    read_tensor_file(&fixtures().join("expected.safetensors")).unwrap().tensors
}

/// Largest |ours - theirs| relative to the largest |theirs|.
fn relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

/// Imports `path` and returns its evaluation logits on the fixture's `<name>.input`
/// and onnxruntime's, with the model's architecture.
fn logits(path: &Path, name: &str) -> (Vec<f32>, Vec<f32>, Vec<LayerSpec>) {
    let tensors = expected();
    let (mut model, meta) = import_onnx(path, &OnnxImport::default()).unwrap();
    let (shape, values) = &tensors[&format!("{name}.input")];
    let input = ArrayD::from_shape_vec(IxDyn(shape), values.clone()).unwrap();
    let ours = model.forward(input.view(), Mode::Eval).unwrap().iter().copied().collect();
    (ours, tensors[&format!("{name}.logits")].1.clone(), meta.architecture.layers)
}

/// Copies the ResNet-18 graph of `opset` into a temporary folder and writes
/// its external weights there, each tensor its `pattern()` (plus `bump` on
/// `fc.bias`, for the negative control).
fn resnet18_with_weights(opset: u32, bump: f32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("resnet18_opset{opset}.onnx");
    let bytes = std::fs::read(fixtures().join(&name)).unwrap();
    let model = decode_model(&bytes).unwrap();
    let mut weights = Vec::new();
    for tensor in &model.graph.initializers {
        assert_eq!(tensor.external["location"], "resnet18.weights");
        let offset: usize = tensor.external["offset"].parse().unwrap();
        let dims: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
        let mut values = pattern(&tensor.name, &dims);
        if tensor.name == "fc.bias" {
            values.iter_mut().for_each(|v| *v += bump);
        }
        weights.resize(weights.len().max(offset), 0u8);
        weights.truncate(offset);
        weights.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(dir.path().join("resnet18.weights"), weights).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn torchvision_resnet18_at_opsets_13_and_17_equals_onnxruntime() {
    for opset in [13, 17] {
        let (_dir, path) = resnet18_with_weights(opset, 0.0);
        let (ours, theirs, layers) = logits(&path, &format!("resnet18_opset{opset}"));
        let error = relative_error(&ours, &theirs);
        println!("resnet18 opset {opset}: relative error {error:.2e}");
        assert!(error < TOLERANCE, "opset {opset}: differs from onnxruntime by {error:e}");
        // torchvision's layout: stem, 8 basic blocks each followed by a ReLU, pooling, classifier
        let blocks = layers.iter().filter(|l| matches!(l, LayerSpec::Residual { .. })).count();
        let batchnorms =
            |specs: &[LayerSpec]| specs.iter().filter(|l| matches!(l, LayerSpec::Batchnorm { .. })).count();
        assert_eq!((layers.len(), blocks, batchnorms(&layers)), (22, 8, 1));
    }
    // the check can fail: one wrong weight (the classifier's bias moved by 0.05) is seen
    let (_dir, path) = resnet18_with_weights(13, 0.05);
    let (ours, theirs, _) = logits(&path, "resnet18_opset13");
    let error = relative_error(&ours, &theirs);
    assert!(error > 10.0 * TOLERANCE, "a wrong bias went unnoticed ({error:e})");
}

#[test]
fn folded_dynamo_and_concatenating_exports_equal_onnxruntime() {
    for name in ["resnet_small_folded", "resnet_small_dynamo", "squeeze_fire"] {
        let (ours, theirs, layers) = logits(&fixtures().join(format!("{name}.onnx")), name);
        let error = relative_error(&ours, &theirs);
        println!("{name}: relative error {error:.2e}");
        assert!(error < TOLERANCE, "{name}: differs from onnxruntime by {error:e}");
        let blocks = layers.iter().filter(|l| matches!(l, LayerSpec::Residual { .. } | LayerSpec::Concat { .. }));
        assert_eq!(blocks.count(), 3, "{name}: three residual or fire blocks");
    }
}

#[test]
fn an_unsupported_operator_is_one_line_naming_it() {
    let error = import_onnx(&fixtures().join("unsupported.onnx"), &OnnxImport::default()).unwrap_err().to_string();
    assert!(error.contains("LeakyRelu") && error.contains("convnet imports Conv"), "{error}");
    assert!(!error.contains('\n'), "{error}");
    let error = import_onnx(&fixtures().join("resnet18_opset13.onnx"), &OnnxImport::default()).unwrap_err();
    assert!(error.to_string().contains("resnet18.weights"), "{error}");
}

#[test]
fn convnets_own_export_imports_back_to_the_same_model() {
    use convnet::data::ColorMode;
    use convnet::io::model_file::ModelMeta;
    use convnet::io::onnx::export;
    use convnet::io::onnx_import::import_model;
    let mut spec = ModelSpec::preset("resnet-small").unwrap();
    spec.layers.insert(0, LayerSpec::Normalize { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.3] });
    let names: Vec<String> = ["ant", "bee", "cat"].map(String::from).to_vec();
    let mut meta = ModelMeta::new(spec, names.clone(), [12, 12], ColorMode::Rgb);
    meta.temperature = Some(1.5); // as `convnet calibrate` stores it: exported as a Div before the softmax
    let mut model = meta.architecture.build::<f32>(&meta.input_shape(), 3, 11).unwrap();
    // running statistics away from 0 and 1, so that evaluation mode matters
    let batch = ArrayD::from_shape_fn(IxDyn(&[4, 3, 12, 12]), |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 11) as f32 / 10.0);
    model.forward(batch.view(), Mode::train(1)).unwrap();
    let bytes = export(&model, &meta).unwrap();
    let (mut imported, imported_meta) =
        import_model(&decode_model(&bytes).unwrap(), Path::new("."), &OnnxImport::default()).unwrap();
    assert_eq!(imported_meta.class_names, names);
    assert_eq!(imported_meta.temperature, Some(1.5));
    assert_eq!(imported_meta.architecture.layers.len(), meta.architecture.layers.len());
    assert!(matches!(&imported_meta.architecture.layers[0], LayerSpec::Normalize { mean, .. } if mean.len() == 3));
    let ours = model.forward(batch.view(), Mode::Eval).unwrap().to_owned();
    let back = imported.forward(batch.view(), Mode::Eval).unwrap().to_owned();
    let error = relative_error(back.as_slice().unwrap(), ours.as_slice().unwrap());
    assert!(error < 1e-6, "the imported export differs by {error:e}");
}
