//! End-to-end runs of the real `convnet` binary on small generated image trees.

mod common;

use common::*;
use image::Rgb;
use std::path::Path;

#[test]
fn train_evaluate_predict_show_inspect_summary_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, out) = (dir.path().join("train"), dir.path().join("test"), dir.path().join("run"));
    colour_tree(&train, 12, 16, 0);
    colour_tree(&test, 4, 16, 1);
    let (train_s, test_s, out_s) = (train.to_str().unwrap(), test.to_str().unwrap(), out.to_str().unwrap());
    let log = ok(&[
        "train",
        "--train",
        train_s,
        "--val",
        test_s,
        "--test",
        test_s,
        "--model",
        "small",
        "--image-size",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--out",
        out_s,
        "--seed",
        "3",
    ]);
    assert!(log.contains("Found 36 files belonging to 3 classes."), "{log}");
    assert!(log.contains("Total params:"), "{log}");
    assert!(log.contains("Epoch 1/2") && log.contains("Epoch 2/2") && log.contains("val_accuracy"), "{log}");
    assert!(log.contains("Test (") && log.contains("accuracy"), "{log}");
    for file in [
        "model.safetensors",
        "best.safetensors",
        "checkpoint.safetensors",
        "history.csv",
        "curves.png",
        "config.toml",
        "grid.png",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines[0], "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds");
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with("2,"));
    let curves = image::open(out.join("curves.png")).unwrap();
    assert_eq!((curves.width(), curves.height()), (1120, 400), "two 560x400 panels");

    let model = out.join("model.safetensors");
    let model_s = model.to_str().unwrap();
    let json = ok(&["evaluate", "--model", model_s, "--data", test_s, "--json"]);
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    for key in ["loss", "accuracy", "confusion", "per_class", "kappa"] {
        assert!(report.get(key).is_some(), "{key} missing in {json}");
    }
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    let confusion = report["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 3);
    let total: u64 = confusion.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 12);
    assert!(out.join("confusion.png").exists());
    // ROC AUC per class and its macro average; roc.png beside the confusion matrix
    for class in report["per_class"].as_array().unwrap() {
        let auc = class["roc_auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{class}");
    }
    assert!(report["macro_avg"]["roc_auc"].as_f64().is_some(), "{json}");
    assert!(report.get("binary").is_none(), "three classes and no --positive: no binary question");
    let roc = image::open(out.join("roc.png")).unwrap();
    assert!(roc.width() > 400 && roc.height() > 400);
    // a binary question: red against the other two
    let json = ok(&["evaluate", "--model", model_s, "--data", test_s, "--json", "--positive", "red"]);
    let binary: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(binary["binary"]["positive"], serde_json::json!(["red"]), "{json}");
    assert_eq!(binary["binary"]["positives"].as_u64(), Some(4));
    assert_eq!(binary["binary"]["negatives"].as_u64(), Some(8));
    for key in ["roc_auc", "sensitivity", "specificity"] {
        assert!(binary["binary"][key].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{key}: {json}");
    }
    fails_with(
        &["evaluate", "--model", model_s, "--data", test_s, "--positive", "purple"],
        "--positive purple: not a class of this model (blue, green, red)",
    );
    let text = ok(&["evaluate", "--model", model_s, "--data", test_s]);
    assert!(
        text.contains("Confusion matrix") && text.contains("precision") && text.contains("Cohen's kappa"),
        "{text}"
    );

    let csv = dir.path().join("predictions.csv");
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let output = run(&[
        "predict",
        "--model",
        model_s,
        "--images",
        test.join("red").to_str().unwrap(),
        bad.to_str().unwrap(),
        "--top-k",
        "2",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(!output.status.success(), "one unreadable file: non-zero exit");
    let rows = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows[0], "file,predicted,confidence,top1_class,top1_prob,top2_class,top2_prob,error");
    assert_eq!(rows.len(), 1 + 4 + 1, "4 red images and the broken one");
    assert!(rows.iter().any(|r| r.contains("broken.png") && r.contains("cannot decode")));
    let good_row = rows.iter().find(|r| r.contains("red/000.png")).unwrap();
    let prob: &str = good_row.split(',').nth(2).unwrap();
    assert_eq!(prob.split('.').nth(1).unwrap().len(), 6, "six decimals: {good_row}");

    let grid = dir.path().join("grid.png");
    ok(&["show", "--model", model_s, "--data", test_s, "--rows", "2", "--cols", "3", "--out", grid.to_str().unwrap()]);
    let picture = image::open(&grid).unwrap();
    // 16 px images are drawn at 14x (224 px); a cell is at least 224 + 16 wide and 224 + 38 high (the title)
    assert_eq!(picture.height(), 2 * (16 * 14 + 38));
    assert!(picture.width() >= 3 * (16 * 14 + 16));

    let inspect = dir.path().join("inspect");
    let log = ok(&[
        "inspect",
        "--model",
        model_s,
        "--image",
        test.join("red/000.png").to_str().unwrap(),
        "--out",
        inspect.to_str().unwrap(),
    ]);
    assert!(log.contains("predicted"));
    assert!(
        inspect.join("filters_layer0.png").exists()
            && inspect.join("features_layer0.png").exists()
            && inspect.join("features_layer3.png").exists()
    );

    let summary = ok(&["summary", "--model", model_s]);
    assert!(summary.contains("(N, 3)") && summary.contains("Total params: "), "{summary}");
}

#[test]
fn user_mistakes_get_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    colour_tree(&train, 3, 8, 0);
    let train_s = train.to_str().unwrap();
    fails_with(&["train", "--train", "/no/such/folder", "--epochs", "1"], "/no/such/folder: no such directory");
    fails_with(
        &["train", "--train", train_s, "--model", "baseline", "--image-size", "16", "--epochs", "1"],
        "layer 8 (conv2d): a 1x1 input is smaller than the 3x3 kernel",
    );
    fails_with(&["train", "--train", train_s, "--model", "nosuchmodel", "--epochs", "1"], "not a preset");
    fails_with(
        &["train", "--train", train_s, "--model", "small", "--image-size", "8", "--lr=-1"],
        "--lr must be a positive number",
    );
    fails_with(
        &[
            "train",
            "--train",
            train_s,
            "--model",
            "small",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            "/proc/forbidden/run",
        ],
        "/proc/forbidden/run",
    );
    fails_with(
        &["train", "--train", train_s, "--model", "small", "--image-size", "8", "--epochs", "1", "--batch-size", "64"],
        "--batch-size 64 is larger than the 9 training images",
    );

    // clap's own errors: usage on stderr, exit code 2, never a panic
    let output = run(&["train", "--train", train_s, "--batch-size", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("must be at least 1"));

    // a model for 3 classes used on a folder with another class
    let out = dir.path().join("run");
    ok(&[
        "train",
        "--train",
        train_s,
        "--model",
        "small",
        "--image-size",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let other = dir.path().join("other");
    colour_tree(&other, 1, 8, 0);
    std::fs::create_dir_all(other.join("zebra")).unwrap();
    image::RgbImage::new(8, 8).save(other.join("zebra/z.png")).unwrap();
    let model = out.join("model.safetensors");
    fails_with(
        &["evaluate", "--model", model.to_str().unwrap(), "--data", other.to_str().unwrap()],
        "folder `zebra` is not one of the known classes",
    );

    // hostile model files
    let hostile = dir.path().join("hostile.safetensors");
    for (bytes, needle) in [
        (Vec::new(), "not a safetensors file"),
        (b"random bytes that are not a model at all".to_vec(), "not a safetensors file"),
        (std::fs::read(&model).unwrap()[..200].to_vec(), "not a safetensors file"),
    ] {
        std::fs::write(&hostile, bytes).unwrap();
        fails_with(&["evaluate", "--model", hostile.to_str().unwrap(), "--data", train_s], needle);
    }
    // a header declaring a 100 GB tensor in a tiny file
    let header = br#"{"0.weight":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&hostile, bytes).unwrap();
    fails_with(&["evaluate", "--model", hostile.to_str().unwrap(), "--data", train_s], "not a safetensors file");
    fails_with(&["predict", "--model", "/no/model.safetensors", "--images", train_s], "/no/model.safetensors");
    fails_with(
        &["show", "--model", model.to_str().unwrap(), "--data", train_s, "--rows", "100000"],
        "--rows and --cols must be at most 20",
    );
    fails_with(
        &["bench", "--model", "baseline", "--batch-size", "100000000", "--steps", "1"],
        "use a smaller --batch-size or --image-size",
    );
    fails_with(&["bench", "--model", "baseline", "--image-size", "100000"], "at most 268435456 elements");
    fails_with(
        &["predict", "--model", model.to_str().unwrap(), "--images", "/no/images"],
        "/no/images: no such file or directory",
    );
}

#[test]
fn architecture_toml_files_work_and_bad_ones_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    colour_tree(&train, 4, 12, 0);
    let arch = dir.path().join("tiny.toml");
    std::fs::write(
        &arch,
        "[[layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\npadding = \"same\"\n\n[[layers]]\ntype = \"relu\"\n\n\
         [[layers]]\ntype = \"maxpool2d\"\npool = 2\n\n[[layers]]\ntype = \"flatten\"\n\n[[layers]]\ntype = \"dense\"\n",
    )
    .unwrap();
    let summary = ok(&["summary", "--model", arch.to_str().unwrap(), "--image-size", "12", "--classes", "3"]);
    assert!(summary.contains("(N, 4, 6, 6)") && summary.contains("(N, 3)"), "{summary}");
    let out = dir.path().join("run");
    ok(&[
        "train",
        "--train",
        train.to_str().unwrap(),
        "--model",
        arch.to_str().unwrap(),
        "--image-size",
        "12",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    std::fs::write(&arch, "[[layers]]\ntype = \"conv2d\"\nfilters = 4\n").unwrap();
    fails_with(&["summary", "--model", arch.to_str().unwrap()], "missing field `kernel`");
    std::fs::write(&arch, "[[layers]]\ntype = \"conv2d\"\nfilters = 0\nkernel = 3\n").unwrap();
    fails_with(&["summary", "--model", arch.to_str().unwrap()], "conv2d needs positive sizes");
}

#[test]
fn gradcheck_and_bench_commands() {
    let log =
        ok(&["gradcheck", "--model", "small", "--image-size", "12", "--color-mode", "grayscale", "--classes", "3"]);
    assert!(log.contains("All gradient checks passed."), "{log}");
    assert!(log.contains("layer 0 (conv2d): pass") && log.contains("whole model"), "{log}");
    let json = ok(&[
        "bench",
        "--model",
        "small",
        "--image-size",
        "28",
        "--channels",
        "1",
        "--classes",
        "10",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--json",
        "--per-layer",
    ]);
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(value["images_per_sec"].as_f64().unwrap() > 0.0);
    assert!(value["gflops"].as_f64().unwrap() > 0.0);
    assert_eq!(value["per_layer"].as_array().unwrap().len(), 11);
    let json = ok(&[
        "bench",
        "--model",
        "small",
        "--image-size",
        "28",
        "--channels",
        "1",
        "--classes",
        "10",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--json",
        "--inference",
    ]);
    assert!(json.contains("\"mode\":\"inference\""));
}

#[test]
fn conv_algo_is_chosen_per_layer_printed_and_selectable() {
    // auto: conv1 (3 input channels) by im2col, conv2-conv4 by Winograd
    let summary = ok(&["summary", "--model", "baseline"]);
    let conv_lines: Vec<&str> = summary.lines().filter(|line| line.contains(" conv2d ")).collect();
    assert_eq!(conv_lines.len(), 4, "{summary}");
    assert!(conv_lines[0].contains("valid, im2col"), "{summary}");
    assert!(conv_lines[1..].iter().all(|line| line.contains("valid, winograd")), "{summary}");
    // the small network's 14-wide conv2 stays on im2col under auto
    let summary = ok(&["summary", "--model", "small", "--image-size", "28", "--color-mode", "grayscale"]);
    assert_eq!(summary.matches("im2col").count(), 2, "{summary}");
    // bench reports the algorithm of each convolution
    let bench = |algo: &str| {
        let json = ok(&[
            "bench",
            "--model",
            "baseline",
            "--image-size",
            "40",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--json",
            "--per-layer",
            "--conv-algo",
            algo,
        ]);
        let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        value["per_layer"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|layer| layer["algo"].as_str().map(String::from))
            .collect::<Vec<_>>()
    };
    assert_eq!(bench("im2col"), ["im2col"; 4]);
    assert_eq!(bench("winograd"), ["winograd"; 4]);
    // per pass and per layer
    assert_eq!(bench("winograd,dx=im2col"), ["fwd winograd, dx im2col, dw winograd"; 4]);
    let rules = "winograd,weight-grad=im2col,6=im2col,0.fwd=im2col";
    let summary = ok(&["summary", "--model", "baseline", "--conv-algo", rules]);
    let conv_lines: Vec<&str> = summary.lines().filter(|line| line.contains(" conv2d ")).collect();
    assert!(conv_lines[0].contains("valid, fwd im2col, dx winograd, dw im2col"), "{summary}");
    assert!(conv_lines[1].contains("valid, fwd winograd, dx winograd, dw im2col"), "{summary}");
    assert!(conv_lines[2].contains("valid, im2col"), "{summary}");
    fails_with(&["bench", "--conv-algo", "fft"], "invalid value 'fft' for '--conv-algo");
    fails_with(&["summary", "--conv-algo", "2.dz=im2col"], "unknown pass `dz`");
    fails_with(&["summary", "--conv-algo", "3=winograd"], "layer 3 is relu, not a convolution");
    fails_with(&["summary", "--conv-algo", "20.dw=winograd"], "there is no layer 20 (the model has 20)");
}

/// Writes an IDX file of unsigned bytes.
fn idx(path: &Path, dims: &[u32], data: &[u8], gzip: bool) {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gzip {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&bytes).unwrap();
        bytes = encoder.finish().unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn import_idx_round_trip_and_malformed_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (dir.path().join("images.gz"), dir.path().join("labels"));
    let pixels: Vec<u8> = (0..6 * 4 * 5).map(|i| (i * 3) as u8).collect();
    idx(&images, &[6, 4, 5], &pixels, true);
    idx(&labels, &[6], &[0, 1, 2, 1, 0, 1], false);
    let out = dir.path().join("tree");
    let log = ok(&[
        "import-idx",
        "--images",
        images.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--class-names",
        "zero,one,two",
    ]);
    assert!(log.contains("Wrote 6 PNG files in 3 class folders"), "{log}");
    let third = image::open(out.join("one/3.png")).unwrap().to_luma8();
    assert_eq!((third.width(), third.height()), (5, 4));
    assert_eq!(third.as_raw().as_slice(), &pixels[3 * 20..4 * 20]);
    assert_eq!(std::fs::read_dir(out.join("one")).unwrap().count(), 3);
    // a limited, seeded subset
    let limited = dir.path().join("limited");
    ok(&[
        "import-idx",
        "--images",
        images.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--out",
        limited.to_str().unwrap(),
        "--limit-per-class",
        "1",
    ]);
    assert_eq!(std::fs::read_dir(limited.join("1")).unwrap().count(), 1);

    let bad = dir.path().join("bad");
    let labels_s = labels.to_str().unwrap();
    idx(&bad, &[6, 4, 5], &pixels[..50], false);
    fails_with(
        &["import-idx", "--images", bad.to_str().unwrap(), "--labels", labels_s, "--out", "/tmp/x"],
        "truncated",
    );
    std::fs::write(&bad, [1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    fails_with(
        &["import-idx", "--images", bad.to_str().unwrap(), "--labels", labels_s, "--out", "/tmp/x"],
        "bad magic number",
    );
    idx(&bad, &[5, 4, 5], &pixels[..100], false);
    fails_with(
        &["import-idx", "--images", bad.to_str().unwrap(), "--labels", labels_s, "--out", "/tmp/x"],
        "6 labels for 5 images",
    );
    idx(&bad, &[6, 4, 5], &[pixels.clone(), vec![9]].concat(), false);
    fails_with(
        &["import-idx", "--images", bad.to_str().unwrap(), "--labels", labels_s, "--out", "/tmp/x"],
        "longer than its dimensions",
    );
}

/// The Quick start's first command, with fewer epochs: it must clearly learn.
#[test]
fn quickstart_on_the_bundled_data_learns() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo_data();
    let out = dir.path().join("quickstart");
    let log = ok(&[
        "train",
        "--train",
        data.join("train").to_str().unwrap(),
        "--test",
        data.join("test").to_str().unwrap(),
        "--model",
        "small",
        "--image-size",
        "28",
        "--color-mode",
        "grayscale",
        "--epochs",
        "2",
        "--validation-split",
        "0.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(log.contains("Found 5000 files belonging to 10 classes."), "{log}");
    let line = log.lines().find(|l| l.starts_with("Test (")).expect("a test line");
    let accuracy: f64 = line.split("accuracy ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(accuracy > 0.6, "after 2 epochs the test accuracy should be far above chance (0.1): {line}");
    assert!(log.contains("Prediction grid:"), "{log}");
}

#[test]
fn doctor_reports_leakage_and_passes_the_sanity_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train"), dir.path().join("test"));
    colour_tree(&train, 10, 12, 0);
    colour_tree(&test, 2, 12, 5);
    std::fs::copy(train.join("red/000.png"), test.join("red/copied.png")).unwrap();
    std::fs::write(train.join("red/fake.png"), b"GIF89a not really").unwrap();
    let output = run(&[
        "doctor",
        "--train",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--model",
        "small",
        "--image-size",
        "12",
    ]);
    let log = stdout(&output);
    assert!(log.contains("LEAKAGE: 1 test files are exact copies"), "{log}");
    assert!(log.contains("copied.png"), "{log}");
    assert!(log.contains("fake.png (extension says Png, content is Gif)"), "{log}");
    assert!(log.contains("Skipped 1 unreadable images"), "{log}");
    assert!(log.contains("expected about ln(3) = 1.0986: ok"), "{log}");
    assert!(log.contains("reached 100% training accuracy"), "{log}");
    assert!(!output.status.success(), "problems were found");
}

#[test]
fn training_options_class_weights_plateau_early_stopping_and_optimizers() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = (dir.path().join("train"), dir.path().join("val"));
    colour_tree(&train, 6, 8, 0);
    // imbalance: one more red image
    image::RgbImage::from_pixel(8, 8, Rgb([200, 10, 10])).save(train.join("red/extra.png")).unwrap();
    colour_tree(&val, 2, 8, 1);
    let out = dir.path().join("run");
    // lr 1e-30 leaves the weights unchanged, so val_loss never improves after epoch 1
    let log = ok(&[
        "train",
        "--train",
        train.to_str().unwrap(),
        "--val",
        val.to_str().unwrap(),
        "--model",
        "small",
        "--image-size",
        "8",
        "--epochs",
        "10",
        "--batch-size",
        "4",
        "--lr",
        "1e-30",
        "--class-weight",
        "balanced",
        "--reduce-lr-on-plateau",
        "1",
        "--early-stopping",
        "2",
        "--augment",
        "--skip-bad",
        "--no-shuffle",
        "--out",
        out.to_str().unwrap(),
    ]);
    // 19 images, 3 classes: 19 / (3 * 6) = 1.056 for blue and green, 19 / (3 * 7) = 0.905 for red
    assert!(log.contains("Class weights (balanced): blue: 1.056, green: 1.056, red: 0.905"), "{log}");
    assert!(log.contains("learning rate 1.00e-30 -> 1.00e-31"), "{log}");
    assert!(log.contains("Early stopping: val_loss has not improved for 2 epochs."), "{log}");
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 1 + 3, "stopped after epoch 3:\n{history}");
    for optimizer in ["sgd", "adamw"] {
        let out = dir.path().join(optimizer);
        let log = ok(&[
            "train",
            "--train",
            train.to_str().unwrap(),
            "--model",
            "small",
            "--image-size",
            "8",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--optimizer",
            optimizer,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(log.contains("Epoch 2/2"), "{log}");
    }
    fails_with(
        &["train", "--train", train.to_str().unwrap(), "--optimizer", "rmsprop"],
        "invalid value 'rmsprop' for '--optimizer <OPTIMIZER>' [possible values: adam, adamw, sgd]",
    );
}

/// A run that does not learn (a learning rate that moves nothing) is told so
/// once, after two epochs at chance level, with advice that fits; a run that
/// learns is not; history.csv is the same either way.
#[test]
fn a_run_stuck_at_chance_gets_one_warning_line() {
    let dir = tempfile::tempdir().unwrap();
    let train = repo_data().join("test"); // 1,000 images, 10 classes
    let run_with = |lr: &str, epochs: &str, out: &str| {
        ok(&[
            "train",
            "--train",
            train.to_str().unwrap(),
            "--model",
            "small",
            "--image-size",
            "28",
            "--color-mode",
            "grayscale",
            "--epochs",
            epochs,
            "--lr",
            lr,
            "--out",
            dir.path().join(out).to_str().unwrap(),
        ])
    };
    let stuck = run_with("1e-7", "3", "stuck");
    let warnings: Vec<&str> = stuck.lines().filter(|l| l.starts_with("Warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stuck}");
    assert!(
        warnings[0].starts_with("Warning: the training loss has stayed at ln(10) = 2.303, chance level, for 2 epochs")
            && warnings[0].contains("a larger --lr (it is 1e-7)"),
        "{}",
        warnings[0]
    );
    // after epoch 2, not before
    let epoch2 = stuck.find("Epoch 2/3").unwrap();
    let epoch3 = stuck.find("Epoch 3/3").unwrap();
    let warned = stuck.find("Warning: the training loss").unwrap();
    assert!(epoch2 < warned && warned < epoch3, "{stuck}");
    let history = std::fs::read_to_string(dir.path().join("stuck/history.csv")).unwrap();
    assert!(!history.contains("Warning") && history.lines().count() == 4, "{history}");
    let learning = run_with("1e-3", "2", "learning");
    assert!(!learning.contains("Warning"), "{learning}");
}

#[test]
fn crop_content_is_stored_in_the_model_and_applied_by_predict() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("colours"), dir.path().join("run"));
    colour_tree(&data, 8, 24, 6);
    let flags = "--model small --image-size 16 --epochs 1 --batch-size 8 --crop content";
    let mut args = vec!["train", "--train", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(flags.split(' '));
    ok(&args);
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("crop = \"content\""), "{config}");
    let model = out.join("model.safetensors");
    let log = ok(&["predict", "--model", model.to_str().unwrap(), "--images", data.join("red").to_str().unwrap()]);
    assert!(log.starts_with("Input: RGB, cropped to its content, resized to 16x16"), "{log}");
}
