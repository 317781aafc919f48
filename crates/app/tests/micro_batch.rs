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

/// The weights of a model file as f32 values, tensor by tensor.
fn weights(path: &Path) -> Vec<f32> {
    tensors(path).into_iter().flat_map(|(_, bits)| bits.into_iter().map(f32::from_bits)).collect()
}

#[test]
fn micro_batches_of_whole_leaves_end_byte_identical_and_smaller_ones_equal_up_to_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    colour_tree(&data, 24, 64, 1);
    let whole = dir.path().join("whole");
    let log = train(&data, &whole, &[]);
    assert!(log.contains("per batch of 16"), "{log}");
    // a batch of 16 is 4 gradient leaves of 4 images: passes of 8 or 4 are subtrees
    // of its gradient tree, the last batch of 6 (2 leaves of 3) runs as 2 passes of 3
    for micro in ["8", "4"] {
        let out = dir.path().join(format!("micro{micro}"));
        let log = train(&data, &out, &["--micro-batch", micro]);
        assert!(log.contains(&format!("per micro-batch of {micro} (a batch of 16 in ")), "{log}");
        for name in ["model.safetensors", "best.safetensors", "checkpoint.safetensors"] {
            assert!(file(&out, name) == file(&whole, name), "--micro-batch {micro}: {name} differs");
        }
        let config = String::from_utf8(file(&out, "config.toml")).unwrap();
        assert!(config.contains(&format!("micro_batch = {micro}")), "{config}");
    }
    // passes of 2 cut every leaf in two: the same gradient up to rounding, not the same bits
    let out = dir.path().join("micro2");
    train(&data, &out, &["--micro-batch", "2"]);
    let (expected, got) = (weights(&whole.join("model.safetensors")), weights(&out.join("model.safetensors")));
    let worst = expected.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "--micro-batch 2 moved a weight by {worst}");
    // and it is reproducible: the same bits on one thread
    let again = dir.path().join("micro2-one-thread");
    train(&data, &again, &["--micro-batch", "2", "--threads", "1"]);
    assert!(file(&again, "model.safetensors") == file(&out, "model.safetensors"), "1 vs 2 threads");
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
