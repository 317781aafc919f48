//! Faults a real user meets, on the real binary: a kill in the middle of
//! training, Ctrl-C and SIGTERM, two runs into one directory, a loss that
//! explodes, and the promise that the same run writes the same bytes.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// `convnet` with SIGINT and SIGTERM at their default dispositions, as in a
/// user's terminal (a background job of a non-interactive shell inherits
/// SIGINT ignored).
fn convnet_default_signals() -> Command {
    let mut command = convnet();
    // SAFETY: between fork and exec the closure only calls signal(2), which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    command
}

/// Training on the bundled Fashion-MNIST subset: `small`, batches of 8 (about
/// 560 steps an epoch, so a signal lands inside an epoch), 10% validation.
fn fmnist_args(out: &Path, epochs: usize, extra: &[&str]) -> Vec<String> {
    let data = repo_data().join("train");
    let mut args: Vec<String> = [
        "train",
        "--train",
        data.to_str().unwrap(),
        "--model",
        "small",
        "--image-size",
        "28",
        "--color-mode",
        "grayscale",
        "--validation-split",
        "0.1",
        "--batch-size",
        "8",
        "--epochs",
        &epochs.to_string(),
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts `args` and returns the child once its stdout has printed a line
/// starting with `line` and the end-of-epoch checkpoint and curves after it
/// are written (the rest of stdout is drained in the background). The caller
/// waits for it.
#[allow(clippy::zombie_processes)]
fn spawn_until(args: &[String], line: &str) -> std::process::Child {
    let mut child = convnet_default_signals().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for text in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(text);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the line never came");
        if text.starts_with(line) {
            let out = PathBuf::from(&args[args.iter().position(|a| a == "--out").unwrap() + 1]);
            let epoch: u64 = line.trim_start_matches("Epoch ").split('/').next().unwrap().parse().unwrap();
            while !out.join("checkpoint.safetensors").exists()
                || training_state(&out.join("checkpoint.safetensors"))["epochs_done"].as_u64() < Some(epoch)
            {
                assert!(Instant::now() < deadline, "the checkpoint of epoch {epoch} never came");
                std::thread::sleep(Duration::from_millis(1));
            }
            // and the epoch's last file, curves.png, drawn after the checkpoint: then the
            // run is past the epoch's end (drawing takes a while in an unoptimised build)
            let modified = |name: &str| std::fs::metadata(out.join(name)).and_then(|m| m.modified()).ok();
            let checkpoint_time = modified("checkpoint.safetensors");
            while modified("curves.png").is_none() || modified("curves.png") < checkpoint_time {
                assert!(Instant::now() < deadline, "the curves of epoch {epoch} never came");
                std::thread::sleep(Duration::from_millis(1));
            }
            return child;
        }
    }
}

fn signal(child: &std::process::Child, number: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, number) }, 0);
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["model.safetensors", "best.safetensors", "checkpoint.safetensors"]
        .iter()
        .map(|name| (name.to_string(), std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))))
        .collect()
}

fn assert_same_files(left: &Path, right: &Path, what: &str) {
    for ((name, a), (_, b)) in file_bytes(left).into_iter().zip(file_bytes(right)) {
        assert!(a == b, "{what}: {name} differs ({} vs {} bytes)", a.len(), b.len());
    }
}

#[test]
fn ctrl_c_and_sigterm_stop_with_a_checkpoint_and_resume_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    ok(&fmnist_args(&reference, 3, &[]).iter().map(String::as_str).collect::<Vec<_>>());

    for (number, code, name) in [(libc::SIGINT, 130, "SIGINT"), (libc::SIGTERM, 143, "SIGTERM")] {
        let out = dir.path().join(name);
        let child = spawn_until(&fmnist_args(&out, 3, &[]), "Epoch 1/3");
        std::thread::sleep(Duration::from_millis(100)); // inside epoch 2
        signal(&child, number);
        let output = child.wait_with_output().unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{name}: {err}");
        let line = err.lines().last().unwrap_or_default();
        let expected_start = "Interrupted at epoch 2, batch ";
        assert!(line.starts_with(expected_start), "{name}: {err}");
        assert!(line.ends_with(&format!("; continue with: convnet train --resume {}", out.display())), "{line}");
        let position: Vec<usize> =
            line[expected_start.len()..].split(';').next().unwrap().split(" of ").map(|n| n.parse().unwrap()).collect();
        assert!(position[0] > 0 && position[0] < position[1], "inside the epoch: {line}");
        let state = training_state(&out.join("checkpoint.safetensors"));
        assert_eq!(state["batches_done"].as_u64(), Some(position[0] as u64), "the checkpoint records the position");
        assert_eq!(state["epochs_done"].as_u64(), Some(1));
        // resume (on one thread this time: the result must not care)
        let log = ok(&["train", "--resume", out.to_str().unwrap(), "--threads", "1"]);
        assert!(
            log.contains(&format!("Resuming {} at epoch 2 of 3, batch {}", out.display(), position[0] + 1)),
            "{log}"
        );
        assert_same_files(&out, &reference, &format!("resumed after {name}"));
    }

    // two Ctrl-C in a row: the second exits at once; the last checkpoint stays valid
    let out = dir.path().join("twice");
    let child = spawn_until(&fmnist_args(&out, 3, &[]), "Epoch 1/3");
    signal(&child, libc::SIGINT);
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    ok(&["train", "--resume", out.to_str().unwrap()]);
    assert_same_files(&out, &reference, "resumed after two Ctrl-C");
    let leftovers = temporary_files(&out);
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn the_same_run_writes_the_same_bytes_on_any_thread_count_and_from_any_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<PathBuf> = ["a", "b", "one-thread"].iter().map(|n| dir.path().join(n)).collect();
    for (run, threads) in runs.iter().zip(["2", "2", "1"]) {
        ok(&fmnist_args(run, 2, &["--threads", threads]).iter().map(String::as_str).collect::<Vec<_>>());
    }
    assert_same_files(&runs[0], &runs[1], "two runs");
    assert_same_files(&runs[0], &runs[2], "1 vs 2 threads");

    // a checkpoint every 40 steps, and kill -9 inside epoch 2 after one was written
    let out = dir.path().join("killed");
    kill_in_epoch_2_after_a_checkpoint(&fmnist_args(&out, 2, &["--checkpoint-every", "40"]), &out);
    ok(&["train", "--resume", out.to_str().unwrap()]);
    assert_same_files(&out, &runs[0], "resumed from a mid-epoch checkpoint");
}

/// Runs `args` (2 epochs into `out`, a checkpoint every 40 steps) and kills it
/// with SIGKILL inside epoch 2, once a mid-epoch checkpoint is written.
fn kill_in_epoch_2_after_a_checkpoint(args: &[String], out: &Path) {
    let mut child = spawn_until(args, "Epoch 1/2");
    let checkpoint = out.join("checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(60);
    while training_state(&checkpoint)["batches_done"].as_u64() == Some(0) {
        assert!(Instant::now() < deadline, "no mid-epoch checkpoint was written");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let state = training_state(&checkpoint);
    let batches_done = state["batches_done"].as_u64().unwrap();
    assert!(batches_done > 0 && batches_done.is_multiple_of(40), "a scheduled mid-epoch checkpoint: {state}");
}

/// A warm-up epoch then a cosine: the history logs the schedule's rates (the
/// warm-up ends at --lr, the run at the cosine's last step), and a run killed
/// inside the cosine resumes to the bytes of the uninterrupted run (the rate is
/// a function of the step, which the checkpoint holds).
#[test]
fn a_cosine_schedule_after_a_warm_up_logs_its_rates_and_resumes_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = ["--lr-schedule", "cosine", "--warmup-epochs", "1", "--lr", "0.002", "--checkpoint-every", "40"];
    let reference = dir.path().join("reference");
    ok(&fmnist_args(&reference, 2, &schedule).iter().map(String::as_str).collect::<Vec<_>>());
    let history = std::fs::read_to_string(reference.join("history.csv")).unwrap();
    let rates: Vec<f64> =
        history.lines().skip(1).map(|line| line.split(',').nth(5).unwrap().parse().unwrap()).collect();
    // 4,500 training images in batches of 8: 563 steps an epoch, the cosine over the second
    let batches = 4500usize.div_ceil(8) as f64;
    let last = 0.002 * 0.5 * (1.0 + (std::f64::consts::PI * (batches - 1.0) / batches).cos());
    assert_eq!(rates, [0.002, last], "{history}");

    let out = dir.path().join("killed");
    kill_in_epoch_2_after_a_checkpoint(&fmnist_args(&out, 2, &schedule), &out);
    ok(&["train", "--resume", out.to_str().unwrap()]);
    assert_same_files(&out, &reference, "a cosine schedule resumed from a mid-epoch checkpoint");

    // a schedule and reduce-on-plateau both want the rate: refused in one line
    let refused =
        run(&fmnist_args(&dir.path().join("both"), 2, &["--lr-schedule", "cosine", "--reduce-lr-on-plateau"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("cannot be combined with --lr-schedule cosine"), "{}", stderr(&refused));
}

#[test]
fn a_second_run_into_the_same_directory_is_refused_and_a_dead_runs_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut first = spawn_until(&fmnist_args(&out, 30, &[]), "Epoch 1/30");
    let second = run(&fmnist_args(&out, 1, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let expected = format!("error: {} is in use by another convnet run (pid {} on host ", out.display(), first.id());
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.trim_end().ends_with("wait for it to finish, or choose another --out"), "{err}");
    // --resume takes the lock too
    let resumed = run(&["train", "--resume", out.to_str().unwrap()]);
    assert!(stderr(&resumed).contains("is in use by another convnet run"), "{}", stderr(&resumed));

    // the owner dies without cleaning up: the next run takes the lock over, and says so
    let dead_pid = first.id();
    first.kill().unwrap();
    first.wait().unwrap();
    let output = run(&fmnist_args(&out, 1, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("from a run that is no longer running (pid {dead_pid} on host ")),
        "{}",
        stderr(&output)
    );
    // a run that ended normally leaves nothing to take over
    let again = run(&fmnist_args(&out, 1, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(again.status.success() && !stderr(&again).contains("taking over"), "{}", stderr(&again));
}

#[test]
fn fine_tuning_keeps_frozen_layers_byte_identical_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // a pretrained resnet-small (batchnorm in its stem) on the ten Fashion-MNIST classes
    let (pretrained, colours) = (dir.path().join("pretrained"), dir.path().join("colours"));
    let ten_classes = repo_data().join("test");
    let size = ["--model", "resnet-small", "--image-size", "16", "--color-mode", "rgb", "--batch-size", "8"];
    let mut args = vec!["train", "--train", ten_classes.to_str().unwrap(), "--epochs", "1"];
    args.extend(size);
    args.extend(["--out", pretrained.to_str().unwrap()]);
    ok(&args);
    let weights = pretrained.join("model.safetensors");
    // fine-tuned on three classes, the stem (conv, batchnorm, ReLU) and the first block frozen
    colour_tree(&colours, 20, 16, 4);
    let tune = |out: &Path| -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "--train",
            colours.to_str().unwrap(),
            "--epochs",
            "3",
            "--seed",
            "9",
            "--validation-split",
            "0.2",
        ]
        .into_iter()
        .chain(size)
        .map(String::from)
        .collect();
        let init = ["--init-weights", weights.to_str().unwrap(), "--new-head", "--freeze", "4", "--out"];
        args.extend(init.into_iter().map(String::from));
        args.push(out.to_str().unwrap().to_string());
        args
    };
    let reference = dir.path().join("reference");
    let log = ok(&tune(&reference).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(log.contains("Frozen: layers 0-3"), "{log}");
    assert!(log.contains("batchnorm (frozen)") && log.contains("Trainable params: "), "{log}");
    let (before, after) = (tensors(&weights), tensors(&reference.join("model.safetensors")));
    let find = |all: &[(String, Vec<u32>)], name: &str| all.iter().find(|(n, _)| n == name).unwrap().1.clone();
    for name in ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "3.body.1.running_var"] {
        assert_eq!(find(&before, name), find(&after, name), "frozen {name} changed");
    }
    for name in ["5.body.0.weight", "7.body.1.running_mean"] {
        assert_ne!(find(&before, name), find(&after, name), "trainable {name} did not train");
    }
    // the new head has the data's three classes
    assert_eq!((find(&before, "10.weight").len(), find(&after, "10.weight").len()), (64 * 10, 64 * 3));

    // interrupted after the first epoch and resumed: the same files as the uninterrupted run
    let out = dir.path().join("interrupted");
    let child = spawn_until(&tune(&out), "Epoch 1/3");
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert!(matches!(output.status.code(), Some(130) | Some(0)), "{}", stderr(&output));
    ok(&["train", "--resume", out.to_str().unwrap()]);
    assert_same_files(&out, &reference, "a resumed fine-tuning run");
}

#[test]
fn cv_interrupted_by_ctrl_c_and_run_again_ends_with_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo_data().join("test");
    let cv = |out: &Path| -> Vec<String> {
        let flags = "--folds 3 --model small --image-size 16 --color-mode grayscale --epochs 2 --batch-size 8";
        let mut args = vec!["cv".to_string(), "--train".into(), data.to_string_lossy().into_owned()];
        args.extend(flags.split(' ').map(String::from));
        args.extend(["--out".to_string(), out.to_string_lossy().into_owned()]);
        args
    };
    let reference = dir.path().join("reference");
    ok(&cv(&reference).iter().map(String::as_str).collect::<Vec<_>>());

    // Ctrl-C during fold 2's first epoch (its first checkpoint written), then the same command again
    let out = dir.path().join("interrupted");
    let mut child =
        convnet_default_signals().args(cv(&out)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let checkpoint = out.join("fold-2/checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "fold 2 never wrote a checkpoint");
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    // stopped inside fold 2, or (a fast machine) just after it: either way the rerun must finish the same
    assert!(matches!(status.code(), Some(130) | Some(0)), "{status:?}: {err}");
    if status.code() == Some(130) {
        assert!(err.contains("cv: run the same cv command again to continue"), "{err}");
        assert!(!out.join("cv.json").exists(), "an interrupted cv has no summary yet");
    }
    ok(&cv(&out).iter().map(String::as_str).collect::<Vec<_>>());
    for fold in 1..=3 {
        let (a, b) = (out.join(format!("fold-{fold}")), reference.join(format!("fold-{fold}")));
        assert_same_files(&a, &b, &format!("fold {fold} after the interruption"));
    }
    let summary = |root: &Path| -> serde_json::Value {
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("cv.json")).unwrap()).unwrap();
        // the runs' paths differ by the output folder (the validation files do not)
        for fold in value["folds"].as_array_mut().unwrap() {
            fold["run"] = serde_json::Value::Null;
        }
        value
    };
    assert_eq!(summary(&out), summary(&reference));
}

#[test]
fn micro_batches_stopped_by_ctrl_c_resume_to_the_bytes_of_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    ok(&fmnist_args(&reference, 2, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    // batches of 8 are 4 leaves of 2 images: passes of 2 are whole leaves
    let out = dir.path().join("micro");
    let child = spawn_until(&fmnist_args(&out, 2, &["--micro-batch", "2"]), "Epoch 1/2");
    std::thread::sleep(Duration::from_millis(100)); // inside epoch 2
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(training_state(&out.join("checkpoint.safetensors"))["batches_done"].as_u64() > Some(0));
    // the resumed run takes --micro-batch from config.toml
    let log = ok(&["train", "--resume", out.to_str().unwrap()]);
    assert!(log.contains("Resuming"), "{log}");
    assert_same_files(&out, &reference, "micro-batches, resumed after Ctrl-C");
}
