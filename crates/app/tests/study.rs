//! The study workflow from the command line: calibration (`evaluate`'s ECE,
//! Brier score and reliability diagram; `convnet calibrate`'s temperature).

mod common;

use common::*;

#[test]
fn calibrate_stores_a_temperature_that_lowers_the_nll_and_keeps_every_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let (run_dir, model) = (dir.path().join("run"), dir.path().join("run/model.safetensors"));
    let (train, validation) = (repo_data().join("train"), repo_data().join("test"));
    ok(&[
        "train",
        "--train",
        train.to_str().unwrap(),
        "--model",
        "small",
        "--image-size",
        "16",
        "--color-mode",
        "grayscale",
        "--epochs",
        "3",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    let evaluate = |model: &std::path::Path| -> serde_json::Value {
        let text =
            ok(&["evaluate", "--model", model.to_str().unwrap(), "--data", validation.to_str().unwrap(), "--json"]);
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let before = evaluate(&model);
    let (ece, brier) = (before["ece"].as_f64().unwrap(), before["brier"].as_f64().unwrap());
    assert!(ece > 0.0 && ece < 1.0 && brier > 0.0 && brier < 2.0, "{before}");
    assert!(before.get("temperature").is_none());
    assert!(run_dir.join("reliability.png").exists());

    let calibrated = dir.path().join("calibrated.safetensors");
    let log = ok(&[
        "calibrate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        validation.to_str().unwrap(),
        "--out",
        calibrated.to_str().unwrap(),
    ]);
    assert!(log.starts_with("Temperature ") && log.contains("the predicted classes do not change"), "{log}");
    let after = evaluate(&calibrated);
    let temperature = after["temperature"].as_f64().unwrap();
    assert!(temperature > 0.0 && temperature != 1.0, "{after}");
    // fitted on this very set: its NLL can only go down, and no prediction moves
    assert!(after["loss"].as_f64().unwrap() < before["loss"].as_f64().unwrap(), "{before}\n{after}");
    assert_eq!(after["confusion"], before["confusion"]);
    let predict = |model: &std::path::Path| {
        ok(&["predict", "--model", model.to_str().unwrap(), "--images", validation.join("Bag").to_str().unwrap()])
    };
    let (plain, scaled) = (predict(&model), predict(&calibrated));
    assert!(scaled.contains(&format!("Probabilities at temperature {temperature:.4}")), "{scaled}");
    let classes = |text: &str| -> Vec<String> {
        text.lines().filter(|l| l.contains(".png")).map(|l| l.split_whitespace().nth(1).unwrap().to_string()).collect()
    };
    assert_eq!(classes(&plain), classes(&scaled));
    assert!(!classes(&plain).is_empty());
}

#[test]
fn every_run_writes_a_tensorboard_log_of_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (train, test) = (repo_data().join("train"), repo_data().join("test"));
    let log = ok(&[
        "train",
        "--train",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--model",
        "small",
        "--image-size",
        "16",
        "--color-mode",
        "grayscale",
        "--validation-split",
        "0.1",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(log.contains(&format!("TensorBoard: tensorboard --logdir {}", out.display())), "{log}");
    let bytes = std::fs::read(out.join("tensorboard/events.out.tfevents.0.convnet")).unwrap();
    let records = convnet_io::tensorboard::read_records(&bytes).unwrap();
    // the version, 2 epochs x 7 scalars, a loss every 10 of the 2 x 141 steps, 3 pictures
    assert_eq!(records.len(), 1 + 2 * 7 + 28 + 3);
    assert!(records[0].windows(13).any(|w| w == b"brain.Event:2"));
    let tagged = |tag: &[u8]| records.iter().filter(|r| r.windows(tag.len()).any(|w| w == tag)).count();
    assert_eq!((tagged(b"val_accuracy"), tagged(b"step/loss"), tagged(b"pictures/confusion")), (2, 28, 1));
}

#[test]
fn cv_keeps_each_patient_in_one_fold_matches_evaluate_and_continues_where_it_stopped() {
    use image::{ImageBuffer, Rgb};
    let dir = tempfile::tempdir().unwrap();
    let (tree, out) = (dir.path().join("patients"), dir.path().join("cv"));
    // 30 patients of 1-5 images each, every patient's images in one class
    for patient in 0..30u32 {
        let class = ["benign", "malignant"][(patient % 2) as usize];
        std::fs::create_dir_all(tree.join(class)).unwrap();
        for i in 0..1 + patient % 5 {
            let image = ImageBuffer::from_fn(8, 8, |x, y| {
                let noise = ((x * 31 + y * 17 + i * 7 + patient * 13) % 60) as u8;
                Rgb(if class == "benign" { [150 + noise, noise, noise] } else { [noise, noise, 150 + noise] })
            });
            image.save(tree.join(class).join(format!("P{patient:02}_{i}.png"))).unwrap();
        }
    }
    // doctor sees the patients in the names
    let doctor = ok(&["doctor", "--train", tree.to_str().unwrap(), "--model", "small", "--image-size", "8"]);
    assert!(doctor.contains("Warning: file names suggest groups: "), "{doctor}");
    let flags = "--folds 3 --group-by ^[^/]+/(P[0-9]+)_ --model small --image-size 8 --epochs 2 --batch-size 4";
    let mut args = vec!["cv", "--train", tree.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(flags.split(' '));
    let log = ok(&args);
    assert!(log.contains("mean ± sd: loss "), "{log}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("cv.json")).unwrap()).unwrap();
    let folds = summary["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 3);
    let mut fold_of_patient = std::collections::HashMap::new();
    let mut files = 0;
    for fold in folds {
        for file in fold["validation_files"].as_array().unwrap() {
            let name = std::path::Path::new(file.as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            let patient = name.split('_').next().unwrap().to_string();
            let number = fold["fold"].as_u64().unwrap();
            assert_eq!(
                *fold_of_patient.entry(patient.clone()).or_insert(number),
                number,
                "{patient} split across folds"
            );
            files += 1;
        }
        // the fold's numbers are evaluate's on the fold's validation part
        let run = std::path::Path::new(fold["run"].as_str().unwrap());
        let text = ok(&[
            "evaluate",
            "--model",
            run.join("model.safetensors").to_str().unwrap(),
            "--data",
            run.join("data/val").to_str().unwrap(),
            "--json",
        ]);
        let evaluated: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(evaluated["accuracy"], fold["accuracy"]);
        assert_eq!(evaluated["loss"], fold["loss"]);
        assert_eq!(evaluated["macro_avg"]["f1"], fold["macro_f1"]);
    }
    assert_eq!((fold_of_patient.len(), files), (30, (0..30).map(|p| 1 + p % 5).sum::<usize>()));
    // the same command again: finished folds are kept; a fold whose final model is gone resumes from its
    // checkpoint to the same bytes; the summary is the same
    let model = out.join("fold-2/model.safetensors");
    let before = std::fs::read(&model).unwrap();
    std::fs::remove_file(&model).unwrap();
    let again = ok(&args);
    assert!(again.contains(&format!("Resuming {}", out.join("fold-2").display())), "{again}");
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let summary_again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("cv.json")).unwrap()).unwrap();
    assert_eq!(summary_again, summary);
}
