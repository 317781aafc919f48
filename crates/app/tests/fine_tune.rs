//! Fine-tuning from the command line: a new head for other classes, an RGB
//! stem for grayscale data (freezing and its exact resume: `faults.rs`, and on
//! MPI ranks: `mpi.rs`).

mod common;

use common::*;
use std::path::Path;

#[test]
fn init_weights_with_a_new_head_fine_tunes_a_model_of_other_classes() {
    let dir = tempfile::tempdir().unwrap();
    let (pretrained, tuned, colours) = (dir.path().join("pre"), dir.path().join("tuned"), dir.path().join("colours"));
    let ten_classes = repo_data().join("test");
    let common = ["--model", "small", "--image-size", "16", "--color-mode", "rgb", "--epochs", "1"];
    let mut args = vec!["train", "--train", ten_classes.to_str().unwrap(), "--out", pretrained.to_str().unwrap()];
    args.extend(common);
    ok(&args);
    colour_tree(&colours, 12, 16, 3);
    let weights = pretrained.join("model.safetensors");
    let mut args = vec!["train", "--train", colours.to_str().unwrap(), "--out", tuned.to_str().unwrap()];
    args.extend(common);
    args.extend(["--init-weights", weights.to_str().unwrap(), "--lr", "1e-9"]);
    // ten classes into three: the classifier does not fit, and the error says what to do
    fails_with(&args, "add --new-head to replace its classifier");
    args.push("--new-head");
    let log = ok(&args);
    assert!(log.contains("(new head: layer 10, dense, from the seed)"), "{log}");
    let (before, after) = (tensors(&weights), tensors(&tuned.join("model.safetensors")));
    let values = |all: &[(String, Vec<u32>)], name: &str| -> Vec<f32> {
        all.iter().find(|(n, _)| n == name).unwrap().1.iter().map(|&b| f32::from_bits(b)).collect()
    };
    // the loaded layers moved by at most the tiny learning rate; the head is new, with 3 outputs
    let (first_before, first_after) = (values(&before, "0.weight"), values(&after, "0.weight"));
    let moved = first_before.iter().zip(&first_after).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(moved < 1e-6, "the first convolution was not loaded: moved by {moved}");
    assert_eq!(values(&before, "10.weight").len(), 64 * 10);
    assert_eq!(values(&after, "10.weight").len(), 64 * 3);
}

#[test]
fn an_rgb_pretrained_stem_is_summed_over_its_colours_for_grayscale_data() {
    let dir = tempfile::tempdir().unwrap();
    let (pretrained, tuned) = (dir.path().join("pre"), dir.path().join("grey"));
    let data = repo_data().join("test");
    let common = ["--model", "small", "--image-size", "16", "--epochs", "1", "--train", data.to_str().unwrap()];
    let mut args = vec!["train", "--color-mode", "rgb", "--out", pretrained.to_str().unwrap()];
    args.extend(common);
    ok(&args);
    let weights = pretrained.join("model.safetensors");
    let mut args = vec!["train", "--color-mode", "grayscale", "--out", tuned.to_str().unwrap(), "--lr", "1e-9"];
    args.extend(common);
    args.extend(["--init-weights", weights.to_str().unwrap(), "--freeze", "1"]);
    let log = ok(&args);
    assert!(log.contains("0.weight: the RGB-pretrained stem's weights summed over the colour channels"), "{log}");
    let values = |path: &Path| -> Vec<f32> {
        tensors(path).into_iter().find(|(n, _)| n == "0.weight").unwrap().1.into_iter().map(f32::from_bits).collect()
    };
    let (rgb, grey) = (values(&weights), values(&tuned.join("model.safetensors")));
    // (16, 3, 3, 3) -> (16, 1, 3, 3): each grey weight is the sum of its three colours' (and frozen)
    assert_eq!((rgb.len(), grey.len()), (16 * 27, 16 * 9));
    for (filter, (colours, sum)) in rgb.chunks(27).zip(grey.chunks(9)).enumerate() {
        for i in 0..9 {
            assert_eq!(sum[i], colours[i] + colours[9 + i] + colours[18 + i], "filter {filter}, tap {i}");
        }
    }
}
