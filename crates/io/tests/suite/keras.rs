//! Keras import against Keras itself: the fixtures of `tests/fixtures/keras`
//! (written by `make_fixtures.py` with TensorFlow 2.21 / Keras 3.15) hold the
//! seed script's network saved both ways and Keras' probabilities on a few
//! images; the imported models must give them within 1e-5.

use convnet_data::decode::decode_file;
use convnet_io::keras::import_keras;
use convnet_io::model_file::ModelMeta;
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::LayerSpec;
use convnet_tensor::{Mode, Sequential};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras").join(name)
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|k| format!("class{k}")).collect()
}

/// The largest difference between our probabilities and Keras' for the model's images.
fn max_difference(model: &mut Sequential<f32>, meta: &ModelMeta, which: &str) -> f64 {
    let file = if which == "batchnorm" { "batchnorm_predictions.json" } else { "predictions.json" };
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(file)).unwrap()).unwrap();
    let options = meta.decode_options();
    let mut worst = 0f64;
    let cases = expected[which].as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (file, probabilities) in cases {
        let mut bytes = vec![0u8; options.image_len()];
        decode_file(&fixture("images").join(file), &options, &mut bytes).unwrap();
        let shape: Vec<usize> = std::iter::once(1).chain(meta.input_shape()).collect();
        let input = ArrayD::from_shape_vec(
            IxDyn(&shape),
            bytes.iter().map(|&b| b as f32 * meta.input.pixel_scale.factor()).collect(),
        )
        .unwrap();
        let logits = model.forward(input.view(), Mode::Eval).unwrap().to_owned();
        let logits: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|v| (v - max).exp()).sum();
        for (ours, theirs) in logits.iter().zip(probabilities.as_array().unwrap()) {
            worst = worst.max(((ours - max).exp() / sum - theirs.as_f64().unwrap()).abs());
        }
    }
    worst
}

#[test]
fn the_seed_network_from_keras_3_and_legacy_h5_predicts_as_keras() {
    for file in ["seed.keras", "seed.h5"] {
        let (mut model, meta) = import_keras(&fixture(file), &names(8)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.input.image_size, [48, 48]);
        assert_eq!(meta.input.pixel_scale, convnet_data::PixelScale::Raw, "no Rescaling: raw 0-255 as the seed script");
        let difference = max_difference(&mut model, &meta, "seed");
        eprintln!("{file}: max |convnet - Keras| = {difference:.2e}");
        assert!(difference <= 1e-5, "{file}: probabilities differ from Keras' by {difference}");
    }
}

#[test]
fn batchnorm_and_global_average_pooling_import_from_keras_3_and_legacy_h5() {
    for file in ["batchnorm.keras", "batchnorm.h5"] {
        let (mut model, meta) = import_keras(&fixture(file), &names(3)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let kinds: Vec<&str> = meta.architecture.layers.iter().map(|l| l.kind()).collect();
        assert_eq!(
            kinds,
            ["conv2d", "batchnorm", "relu", "maxpool2d", "conv2d", "batchnorm", "relu", "global_avgpool2d", "dense"]
        );
        assert!(
            matches!(meta.architecture.layers[1], LayerSpec::Batchnorm { eps, .. } if eps == 1e-3),
            "Keras' epsilon"
        );
        let difference = max_difference(&mut model, &meta, "batchnorm");
        eprintln!("{file}: max |convnet - Keras| = {difference:.2e}");
        assert!(difference <= 1e-5, "{file}: probabilities differ from Keras' by {difference}");
        // the check can fail: the moving means left at zero miss by far more
        for (name, buffer) in model.buffers_mut() {
            if name.ends_with("running_mean") {
                buffer.fill(0.0);
            }
        }
        let wrong = max_difference(&mut model, &meta, "batchnorm");
        assert!(wrong > 1e-3, "{file}: zeroed moving means went unnoticed ({wrong:e})");
    }
}

#[test]
fn rescaling_same_padding_and_activation_layers_import() {
    let (mut model, meta) = import_keras(&fixture("rescaled.keras"), &names(3)).unwrap();
    assert_eq!(meta.input.pixel_scale, convnet_data::PixelScale::Unit, "Rescaling(1/255)");
    assert_eq!(meta.input.color_mode, convnet_data::ColorMode::Grayscale);
    let difference = max_difference(&mut model, &meta, "rescaled");
    eprintln!("rescaled.keras: max |convnet - Keras| = {difference:.2e}");
    assert!(difference <= 1e-5, "probabilities differ from Keras' by {difference}");
}

#[test]
fn the_flatten_permutation_is_what_makes_it_agree() {
    // the same weights with the first dense layer's inputs left in Keras' (H, W, C) order
    let (mut model, meta) = import_keras(&fixture("seed.keras"), &names(8)).unwrap();
    let flatten_input = {
        let shapes = model.shapes();
        let at = model.layers().iter().position(|l| l.kind() == "flatten").unwrap();
        shapes[at].clone()
    };
    let (c, h, w) = (flatten_input[0], flatten_input[1], flatten_input[2]);
    let dense = model.params_mut().into_iter().nth(8).unwrap(); // conv x4 (weight, bias), then the first dense
    let inputs = c * h * w;
    let original = dense.value.clone();
    for o in 0..dense.value.shape()[0] {
        for ours in 0..inputs {
            // undo the import's permutation: put column (c, h, w) where Keras had it
            let (ci, spatial) = (ours / (h * w), ours % (h * w));
            dense.value[[o, spatial * c + ci]] = original[[o, ours]];
        }
    }
    let difference = max_difference(&mut model, &meta, "seed");
    eprintln!("seed.keras with Keras' flatten order: max difference {difference:.2e}");
    assert!(difference > 1e-3, "a wrong flatten order must show: {difference}");
}

#[test]
fn unsupported_layers_and_broken_files_are_refused_in_words() {
    // a LayerNormalization layer (not imported) in the configuration
    let bytes = std::fs::read(fixture("seed.keras")).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
    let mut config = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("config.json").unwrap(), &mut config).unwrap();
    let mut weights = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_name("model.weights.h5").unwrap(), &mut weights).unwrap();
    let config = config.replacen(
        r#"{"module": "keras.layers", "class_name": "Flatten""#,
        r#"{"module": "keras.layers", "class_name": "LayerNormalization", "config": {"name": "layer_norm_9"}}, {"module": "keras.layers", "class_name": "Flatten""#,
        1,
    );
    assert!(config.contains("LayerNormalization"), "the fixture's config has a Flatten entry to insert before");
    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("edited.keras");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&edited).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    writer.start_file("config.json", options).unwrap();
    std::io::Write::write_all(&mut writer, config.as_bytes()).unwrap();
    writer.start_file("model.weights.h5", options).unwrap();
    std::io::Write::write_all(&mut writer, &weights).unwrap();
    writer.finish().unwrap();
    let error = import_keras(&edited, &names(8)).unwrap_err().to_string();
    assert!(error.contains("layer layer_norm_9 (LayerNormalization): this layer type cannot be imported"), "{error}");
    // the wrong number of class names
    let error = import_keras(&fixture("seed.keras"), &names(3)).unwrap_err().to_string();
    assert!(error.contains("the model has 8 outputs but 3 class names were given"), "{error}");
    // truncated and garbage files: one line, no panic
    for (name, bytes) in [
        ("half.keras", bytes[..bytes.len() / 2].to_vec()),
        ("half.h5", std::fs::read(fixture("seed.h5")).unwrap()[..300_000].to_vec()),
        ("head.h5", std::fs::read(fixture("seed.h5")).unwrap()[..2000].to_vec()),
        (
            "garbage.h5",
            b"\x89HDF\r\n\x1a\n".iter().copied().chain((0..5000u32).map(|i| (i * 7919 % 251) as u8)).collect(),
        ),
        ("text.keras", b"not a model".to_vec()),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, &bytes).unwrap();
        let error = import_keras(&file, &names(8)).unwrap_err().to_string();
        assert_eq!(error.lines().count(), 1, "{name}: {error}");
        assert!(error.contains(name), "{name}: {error}");
    }
}
