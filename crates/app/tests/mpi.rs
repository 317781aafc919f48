//! `mpirun -n N convnet train`: the same weights for any number of ranks, a
//! resume with another rank count, and a killed rank that ends the job.
//!
//! Compiled only with the `mpi` feature, which needs Open MPI
//! (`apt-get install openmpi-bin libopenmpi-dev libclang-dev`):
//! `cargo test -p convnet-app --features mpi --test mpi`. `.ci/run` installs
//! Open MPI and runs them; without `mpirun` they fail, they do not skip.
#![cfg(feature = "mpi")]

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_convnet");

fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", &ranks.to_string(), BINARY])
        .args(args);
    command
}

/// `small` on the bundled Fashion-MNIST training set, with a validation split.
fn training_args<'a>(out: &'a str, cache: &'a str, epochs: &'a str) -> Vec<&'a str> {
    let train = Box::leak(repo_data().join("train").to_string_lossy().into_owned().into_boxed_str());
    vec![
        "train",
        "--train",
        train,
        "--model",
        "small",
        "--image-size",
        "28",
        "--color-mode",
        "grayscale",
        "--validation-split",
        "0.1",
        "--epochs",
        epochs,
        "--threads",
        "1",
        "--cache-dir",
        cache,
        "--out",
        out,
    ]
}

fn run_ok(mut command: Command) -> String {
    let output = command.output().expect("mpirun runs (is Open MPI installed?)");
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// history.csv without its seconds column (wall time differs run to run).
fn history_without_times(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("history.csv")).unwrap();
    text.lines().map(|line| line.rsplit_once(',').map_or(line, |(rest, _)| rest).to_string()).collect()
}

#[test]
fn weights_after_two_epochs_are_bit_identical_for_1_2_and_4_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let plain = dir.path().join("plain");
    let output = run(&training_args(plain.to_str().unwrap(), cache, "2"));
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = std::fs::read(plain.join("model.safetensors")).unwrap();
    for ranks in [1, 2, 4] {
        let out = dir.path().join(format!("ranks{ranks}"));
        let log = run_ok(mpirun(ranks, &training_args(out.to_str().unwrap(), cache, "2")));
        let model = std::fs::read(out.join("model.safetensors")).unwrap();
        assert!(model == expected, "{ranks} ranks: model.safetensors differs from one process\n{log}");
        assert_eq!(history_without_times(&out), history_without_times(&plain), "{ranks} ranks: history");
        if ranks > 1 {
            // rank 0 alone prints: one summary, one line per epoch
            assert_eq!(log.matches("Epoch 2/2").count(), 1, "{log}");
            assert!(log.contains(&format!("{ranks} ranks")) && log.contains("communication"), "{log}");
        }
    }
    // 3 ranks do not divide the 4 gradient leaves: the parts are summed as another
    // tree, but every rank must hold the same bits (compared after every epoch,
    // a difference fails the run)
    let out = dir.path().join("ranks3");
    let log = run_ok(mpirun(3, &training_args(out.to_str().unwrap(), cache, "2")));
    assert!(log.contains("Epoch 2/2") && log.contains("3 ranks"), "{log}");
}

/// Sends SIGTERM to every rank once the run has written its first checkpoint
/// (as a cluster scheduler stopping a job does) and waits for mpirun.
fn stop_after_first_checkpoint(mut job: Child, out: &Path) -> std::process::ExitStatus {
    let started = Instant::now();
    while !out.join("checkpoint.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        assert!(job.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ranks = Command::new("pgrep").args(["-P", &job.id().to_string()]).output().unwrap();
    for pid in String::from_utf8_lossy(&ranks.stdout).split_whitespace() {
        // SAFETY: kill(2) with a pid read from pgrep and a valid signal number.
        unsafe {
            libc::kill(pid.parse().unwrap(), libc::SIGTERM);
        }
    }
    job.wait().unwrap()
}

#[test]
fn a_run_stopped_on_2_ranks_resumes_on_4_to_the_weights_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let plain = dir.path().join("plain");
    let mut args = training_args(plain.to_str().unwrap(), cache, "4");
    args.extend(["--checkpoint-every", "25"]);
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = dir.path().join("stopped");
    let mut args = training_args(out.to_str().unwrap(), cache, "4");
    args.extend(["--checkpoint-every", "25"]);
    let job = mpirun(2, &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let status = stop_after_first_checkpoint(job, &out);
    assert!(!status.success(), "stopped by SIGTERM, the job should not report success");
    assert!(!out.join("model.safetensors").exists(), "stopped before the end: no final model yet");
    let log = run_ok(mpirun(4, &["train", "--resume", out.to_str().unwrap()]));
    assert!(log.contains("Resuming"), "{log}");
    let resumed = std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(resumed == std::fs::read(plain.join("model.safetensors")).unwrap(), "resumed on 4 ranks differs:\n{log}");
}

#[test]
fn a_killed_rank_ends_the_job_with_an_error_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("run");
    let args = training_args(out.to_str().unwrap(), cache.to_str().unwrap(), "200");
    let mut job = mpirun(2, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // wait until training runs (the first epoch's checkpoint), then kill rank 1 outright
    let started = Instant::now();
    while !out.join("checkpoint.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ranks = Command::new("pgrep").args(["-P", &job.id().to_string()]).output().unwrap();
    let pids: Vec<i32> =
        String::from_utf8_lossy(&ranks.stdout).split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "two ranks under mpirun");
    let killed = Instant::now();
    // SAFETY: kill(2) with a pid read from pgrep and a valid signal number.
    unsafe {
        libc::kill(pids[1], libc::SIGKILL);
    }
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = job.kill();
            panic!("the job still ran 60 s after a rank was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a killed rank must fail the job");
    eprintln!("the job ended {:.1} s after rank 1 was killed, status {status}", killed.elapsed().as_secs_f64());
}

/// `resnet-small` (batchnorm, residual blocks) for one epoch on the bundled
/// test images (900 for training: 28 batches of 32 and a last one of 4), with
/// `threads` threads and `batch` images per batch.
fn resnet_args(out: &str, cache: &str, threads: &'static str, batch: &'static str) -> Vec<String> {
    let images = repo_data().join("test").to_string_lossy().into_owned();
    let args = ["train", "--train", &images, "--model", "resnet-small", "--image-size", "16", "--color-mode"];
    let rest = ["grayscale", "--validation-split", "0.1", "--epochs", "1", "--batch-size", batch, "--threads", threads];
    args.iter().chain(&rest).chain(&["--cache-dir", cache, "--out", out]).map(|a| a.to_string()).collect()
}

#[test]
fn batchnorm_is_synchronised_bit_identical_for_1_2_and_4_ranks_and_1_and_2_threads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let plain = path("threads1");
    let output = run(&resnet_args(&plain, cache, "1", "32").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = std::fs::read(Path::new(&plain).join("model.safetensors")).unwrap();
    let two_threads = path("threads2");
    let output = run(&resnet_args(&two_threads, cache, "2", "32").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(output.status.success(), "{}", stderr(&output));
    let model = std::fs::read(Path::new(&two_threads).join("model.safetensors")).unwrap();
    assert!(model == expected, "2 threads: model.safetensors differs from 1 thread");
    for ranks in [1, 2, 4] {
        let out = path(&format!("ranks{ranks}"));
        let args = resnet_args(&out, cache, "1", "32");
        let log = run_ok(mpirun(ranks, &args.iter().map(String::as_str).collect::<Vec<_>>()));
        let model = std::fs::read(Path::new(&out).join("model.safetensors")).unwrap();
        assert!(model == expected, "{ranks} ranks: model.safetensors differs from one process\n{log}");
        assert_eq!(history_without_times(Path::new(&out)), history_without_times(Path::new(&plain)), "{ranks} ranks");
    }
}

#[test]
fn batchnorm_on_ranks_without_an_image_in_some_batch_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("run"), dir.path().join("cache"));
    // 900 training images in batches of 31: the last batch holds 1 image, too few for 2 ranks
    let args = resnet_args(out.to_str().unwrap(), cache.to_str().unwrap(), "1", "31");
    let output = mpirun(2, &args.iter().map(String::as_str).collect::<Vec<_>>()).output().expect("mpirun runs");
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!output.status.success(), "a rank without images would have hung the batchnorm gathers:\n{text}");
    assert!(text.contains("needs at least 2 images in every batch"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn fine_tuning_with_frozen_layers_is_bit_identical_for_1_and_2_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let pretrained = path("pretrained");
    let output = run(&resnet_args(&pretrained, cache, "2", "32").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(output.status.success(), "{}", stderr(&output));
    let weights = format!("{pretrained}/model.safetensors");
    // the stem and the first block frozen: the ranks gather only the trainable layers' gradients
    let tune = |out: &str| {
        let mut args = resnet_args(out, cache, "1", "32");
        args.extend(["--init-weights", &weights, "--freeze", "4", "--seed", "3"].map(String::from));
        args
    };
    let plain = path("plain");
    let output = run(&tune(&plain).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = std::fs::read(Path::new(&plain).join("model.safetensors")).unwrap();
    let out = path("ranks2");
    let log = run_ok(mpirun(2, &tune(&out).iter().map(String::as_str).collect::<Vec<_>>()));
    let model = std::fs::read(Path::new(&out).join("model.safetensors")).unwrap();
    assert!(model == expected, "2 ranks: the fine-tuned model differs from one process\n{log}");
}

#[test]
fn micro_batches_are_bit_identical_to_whole_batches_for_1_2_and_4_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let plain = dir.path().join("plain");
    ok(&training_args(plain.to_str().unwrap(), cache, "1"));
    let expected = std::fs::read(plain.join("model.safetensors")).unwrap();
    // `small` (no batchnorm), batches of 32 (4 leaves of 8): passes of 8 images per rank
    // are whole leaves, passes of 4 halves of one (the layers continue its sums)
    for (ranks, micro) in [(1, "8"), (2, "8"), (4, "8"), (1, "4"), (2, "4"), (4, "4")] {
        let out = dir.path().join(format!("ranks{ranks}-micro{micro}"));
        let mut args = training_args(out.to_str().unwrap(), cache, "1");
        args.extend(["--micro-batch", micro]);
        let log = run_ok(mpirun(ranks, &args));
        let model = std::fs::read(out.join("model.safetensors")).unwrap();
        assert!(model == expected, "{ranks} ranks, --micro-batch {micro}: differs from one process\n{log}");
        assert_eq!(history_without_times(&out), history_without_times(&plain), "{ranks} ranks, {micro}");
    }

    // batchnorm's running statistics would follow each rank's passes alone: refused
    let out = dir.path().join("resnet");
    let mut args = resnet_args(out.to_str().unwrap(), cache, "1", "32");
    args.extend(["--micro-batch".to_string(), "4".to_string()]);
    let output = mpirun(2, &args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("cannot train in micro-batches"), "{}", stderr(&output));
}
