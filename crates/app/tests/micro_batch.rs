//! `convnet train --micro-batch M`: a batch run as passes of M images with one
//! update, on the real binary. Interruption and resume with micro-batches are
//! in `faults.rs`, several MPI ranks in `mpi.rs`, the automatic choice inside
//! a memory cgroup in `limits.rs`.

mod common;

use common::*;
use std::path::Path;

/// `baseline` at 64 px on 54 training images of three colours (batches of
/// 16, 16, 16 and a last one of 6), two epochs, with `extra` flags.
fn baseline_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let args = ["train", "--train", data.to_str().unwrap(), "--model", "baseline", "--image-size", "64"];
    let rest = ["--validation-split", "0.25", "--batch-size", "16", "--epochs", "2", "--seed", "3"];
    let out = ["--out", out.to_str().unwrap()];
    args.iter().chain(&rest).chain(&out).chain(extra).map(|s| s.to_string()).collect()
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> String {
    ok(&baseline_args(data, out, extra).iter().map(String::as_str).collect::<Vec<_>>())
}

fn file(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

#[test]
fn micro_batches_end_byte_identical_to_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    colour_tree(&data, 24, 64, 1);
    let whole = dir.path().join("whole");
    let log = train(&data, &whole, &[]);
    assert!(log.contains("per batch of 16"), "{log}");
    // a batch of 16 is 4 gradient leaves of 4 images: passes of 8 or 4 are subtrees
    // of its gradient tree, passes of 2 or 1 cut every leaf (the layers continue its
    // sums); the last batch of 6 (2 leaves of 3) runs as passes of 3, 2 + 1 or 1
    for micro in ["8", "4", "2", "1"] {
        let out = dir.path().join(format!("micro{micro}"));
        let log = train(&data, &out, &["--micro-batch", micro]);
        assert!(log.contains(&format!("per micro-batch of {micro} (a batch of 16 in ")), "{log}");
        for name in ["model.safetensors", "best.safetensors", "checkpoint.safetensors"] {
            assert!(file(&out, name) == file(&whole, name), "--micro-batch {micro}: {name} differs");
        }
        let config = String::from_utf8(file(&out, "config.toml")).unwrap();
        assert!(config.contains(&format!("micro_batch = {micro}")), "{config}");
    }
}

#[test]
fn with_batchnorm_micro_batches_are_reproducible_and_normalise_each_pass() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    colour_tree(&data, 24, 32, 2);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = baseline_args(&data, &out, extra);
        let model = args.iter().position(|a| a == "baseline").unwrap();
        args[model] = "resnet-small".into();
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        file(&out, "model.safetensors")
    };
    // batchnorm adds each pass's gradients in order (it does not continue leaves):
    // the same bits on 1 and 2 threads, other bits than whole batches
    let two = run("micro2", &["--micro-batch", "2"]);
    assert!(run("micro2-one-thread", &["--micro-batch", "2", "--threads", "1"]) == two, "1 vs 2 threads");
    assert!(run("whole", &[]) != two, "passes of 2 images normalise with their own statistics");
}

#[test]
fn a_micro_batch_that_does_not_divide_the_batch_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    colour_tree(&data, 4, 16, 1);
    let out = dir.path().join("out");
    let args = baseline_args(&data, &out, &["--micro-batch", "5"]);
    fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), "--micro-batch 5 must divide --batch-size 16");
    let summary = ok(&["summary", "--model", "resnet18", "--image-size", "64", "--micro-batch", "4"]);
    assert!(summary.contains("per micro-batch of 4 (a batch of 32 in 8 passes)"), "{summary}");
}
