//! DICOM files through every command that reads images: a tree of `.dcm`,
//! `.DICOM` and extensionless DICOM files trains, evaluates, predicts, shows
//! and explains; a file in a transfer syntax without a decoder stops the run in
//! one line, or is skipped with `--skip-bad`.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/dicom").join(name)
}

/// Class "positive" holds the fixture picture stored many ways (8 files, one
/// with two frames, one without an extension); class "negative" 8 copies of the
/// 8-bit file with its pixels inverted and lightly perturbed.
fn dicom_tree(root: &Path) {
    let picture = [
        "mono2_8bit.dcm",
        "mono1_8bit.dcm",
        "mono2_12bit.dcm",
        "mono2_window.dcm",
        "mono2_rle.dcm",
        "mono2_deflate.dcm",
        "multiframe.dcm",
        "IM000001",
    ];
    let positive = root.join("positive");
    let negative = root.join("negative");
    std::fs::create_dir_all(&positive).unwrap();
    std::fs::create_dir_all(&negative).unwrap();
    let valid = std::fs::read(fixture("mono2_8bit.dcm")).unwrap();
    let pixels_at = valid.len() - 24 * 32;
    for (i, name) in picture.iter().enumerate() {
        let target = if name.contains('.') {
            format!("{i}.{}", if i % 2 == 0 { "dcm" } else { "DICOM" })
        } else {
            format!("IM{i:06}")
        };
        std::fs::copy(fixture(name), positive.join(target)).unwrap();
        let mut inverted = valid.clone();
        for (k, byte) in inverted[pixels_at..].iter_mut().enumerate() {
            *byte = (255 - *byte).wrapping_add((k % 3) as u8 * i as u8);
        }
        std::fs::write(negative.join(format!("{i}.dcm")), inverted).unwrap();
    }
}

#[test]
fn dicom_trees_train_evaluate_predict_show_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dicom_tree(&data);
    let out = dir.path().join("run");
    let (data_arg, out_arg) = (data.to_str().unwrap(), out.to_str().unwrap());
    let common = ["--model", "small", "--image-size", "24x32", "--color-mode", "grayscale", "--batch-size", "4"];
    let mut args = vec!["train", "--train", data_arg, "--test", data_arg, "--epochs", "8", "--out", out_arg];
    args.extend(common);
    let text = ok(&args);
    assert!(text.contains("Found 16 files belonging to 2 classes."), "{text}");
    assert!(text.contains("1 DICOM file has several frames: the first frame of each is used."), "{text}");
    assert!(text.contains("accuracy 1.0000"), "a picture and its negative are easy:\n{text}");
    let model = out.join("model.safetensors");
    let model_arg = model.to_str().unwrap();
    let evaluation = ok(&["evaluate", "--model", model_arg, "--data", data_arg]);
    assert!(evaluation.contains("ROC AUC"), "{evaluation}");
    let predictions = ok(&["predict", "--model", model_arg, "--images", data.join("positive").to_str().unwrap()]);
    assert_eq!(predictions.lines().filter(|l| l.contains("positive")).count(), 8, "{predictions}");
    assert!(predictions.contains("IM000007"), "the extensionless file is found:\n{predictions}");
    let grid = dir.path().join("grid.png");
    ok(&["show", "--model", model_arg, "--data", data_arg, "--out", grid.to_str().unwrap()]);
    assert!(grid.exists());
    let explained = dir.path().join("explained");
    let file = data.join("positive").join("0.dcm");
    ok(&["explain", "--model", model_arg, "--images", file.to_str().unwrap(), "--out", explained.to_str().unwrap()]);
    assert!(explained.join("0.gradcam.png").exists());
}

#[test]
fn an_unsupported_transfer_syntax_stops_the_run_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dicom_tree(&data);
    std::fs::copy(fixture("jpegls.dcm"), data.join("positive").join("jpegls.dcm")).unwrap();
    let out = dir.path().join("run");
    let (data_arg, out_arg) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "train",
        "--train",
        data_arg,
        "--epochs",
        "1",
        "--out",
        out_arg,
        "--model",
        "small",
        "--image-size",
        "24x32",
        "--color-mode",
        "grayscale",
        "--batch-size",
        "4",
    ];
    fails_with(&args, "jpegls.dcm: cannot decode image: unsupported transfer syntax JPEG-LS Lossless");
    let mut skipping = args.to_vec();
    skipping.push("--skip-bad");
    let text = ok(&skipping);
    assert!(text.contains("1 unreadable skipped, 16 used"), "{text}");
}
