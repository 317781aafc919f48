//! Faults a real user meets, on the real binary: a kill in the middle of
//! training, a loss that explodes.

mod common;

use common::*;
use std::path::Path;

#[test]
fn resume_after_kill_is_bitwise_identical_to_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    colour_tree(&train, 40, 32, 0);
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--train",
            train.to_str().unwrap(),
            "--validation-split",
            "0.25",
            "--model",
            "baseline",
            "--image-size",
            "32",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--seed",
            "9",
            "--augment",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let reference = dir.path().join("reference");
    let output = convnet().args(args(&reference)).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = tensors(&reference.join("model.safetensors"));
    assert!(!expected.is_empty());

    // kill -9 at three points after the first checkpoint: right away, and later in the run
    for (attempt, delay_ms) in [0u64, 150, 400].into_iter().enumerate() {
        let out = dir.path().join(format!("killed{attempt}"));
        let mut child = convnet().args(args(&out)).stdout(std::process::Stdio::null()).spawn().unwrap();
        let checkpoint = out.join("checkpoint.safetensors");
        let started = std::time::Instant::now();
        while !checkpoint.exists() && started.elapsed().as_secs() < 120 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let log = ok(&["train", "--resume", out.to_str().unwrap()]);
        assert!(log.contains("Resuming") || log.contains("Epoch"), "{log}");
        assert_eq!(tensors(&out.join("model.safetensors")), expected, "resume after a kill at +{delay_ms} ms differs");
    }
}
#[test]
fn an_exploding_loss_stops_with_the_epoch_and_batch_named_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    colour_tree(&train, 8, 8, 0);
    let (train_s, out) = (train.to_str().unwrap(), dir.path().join("run"));
    let out_s = out.to_str().unwrap();
    // a good epoch first
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
        out_s,
    ]);
    let checkpoint = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    std::fs::remove_file(out.join("model.safetensors")).unwrap();
    // then a learning rate of 1e6 from those weights, into the same directory
    let output = run(&[
        "train",
        "--train",
        train_s,
        "--model",
        "small",
        "--image-size",
        "8",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "1e6",
        "--init-weights",
        out.join("checkpoint.safetensors").to_str().unwrap(),
        "--out",
        out_s,
    ]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains("the loss became NaN at epoch 1, batch "), "{err}");
    assert!(err.contains("no checkpoint had been written yet") && err.contains("Try a smaller --lr"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.join("model.safetensors").exists(), "no final model from a diverged run");
    assert_eq!(
        std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
        checkpoint,
        "the earlier checkpoint is untouched"
    );
    ok(&["evaluate", "--model", out.join("checkpoint.safetensors").to_str().unwrap(), "--data", train_s]);
}
