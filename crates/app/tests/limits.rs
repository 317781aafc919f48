//! Real limits of the machine, not simulated ones: a disk that fills up (a
//! small tmpfs) and a memory cgroup smaller than the decoded data set.
//!
//! Both need root (to mount a tmpfs, to create a cgroup), as every machine of
//! this project and its CI is; without it they fail and say why, they do not
//! skip.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `bytes` mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs failed: this test needs root (CI runs as root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn train_args(train: &Path, out: &Path, epochs: &str) -> Vec<String> {
    [
        "train",
        "--train",
        train.to_str().unwrap(),
        "--validation-split",
        "0.25",
        "--model",
        "small",
        "--image-size",
        "28",
        "--epochs",
        epochs,
        "--batch-size",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_full_disk_stops_training_with_one_line_naming_the_file_and_keeps_the_previous_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let train = data.path().join("train");
    colour_tree(&train, 12, 28, 3);
    // sizes on a normal disk first
    let sized = data.path().join("sized");
    let args = train_args(&train, &sized, "1");
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let size = |name: &str| std::fs::metadata(sized.join(name)).unwrap().len();
    let (checkpoint, best) = (size("checkpoint.safetensors"), size("best.safetensors"));
    let small_files = size("config.toml") + size("history.csv") + size("curves.png") + 64 * 1024;
    // epoch 1 fits (best + checkpoint); the second checkpoint's temporary copy does not
    let disk = SmallDisk::new(best + checkpoint + checkpoint / 2 + small_files);
    let out = disk.path().join("run");
    let output = run(&train_args(&train, &out, "3").iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&output);
    assert!(!output.status.success(), "the run should fail: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let expected = format!("error: cannot write {}: the disk is full (", out.join("checkpoint.safetensors").display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.trim_end().ends_with("; free some space and run again"), "{err}");
    // the previous version is intact, and no temporary file is left
    let state = training_state(&out.join("checkpoint.safetensors"));
    assert_eq!(state["epochs_done"].as_u64(), Some(1), "{state}");
    let leftovers = temporary_files(&out);
    assert!(leftovers.is_empty(), "{leftovers:?}");
    ok(&[
        "evaluate",
        "--model",
        out.join("checkpoint.safetensors").to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
    ]);
}

/// A memory cgroup of `bytes` (v1 or v2, whichever this machine mounts);
/// removed on drop.
struct MemoryCgroup {
    dir: PathBuf,
    usage_file: &'static str,
}

impl MemoryCgroup {
    fn new(bytes: u64) -> MemoryCgroup {
        let name = format!("convnet-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, limit_file, usage_file) = if v1.is_dir() {
            (v1.join(&name), "memory.limit_in_bytes", "memory.max_usage_in_bytes")
        } else {
            (Path::new("/sys/fs/cgroup").join(&name), "memory.max", "memory.peak")
        };
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating {}: {e} (this test needs root and a memory cgroup)", dir.display()));
        std::fs::write(dir.join(limit_file), bytes.to_string()).unwrap();
        MemoryCgroup { dir, usage_file }
    }

    /// `convnet ARGS` started inside the cgroup.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.dir)
            .arg(env!("CARGO_BIN_EXE_convnet"))
            .args(args);
        command
    }

    fn peak(&self) -> u64 {
        std::fs::read_to_string(self.dir.join(self.usage_file)).unwrap().trim().parse().unwrap()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_set_too_big_for_memory_and_disk_is_refused_before_anything_is_decoded() {
    let data = tempfile::tempdir().unwrap();
    let train = data.path().join("train");
    colour_tree(&train, 20, 16, 1);
    let cgroup = MemoryCgroup::new(96 * 1024 * 1024);
    let disk = SmallDisk::new(16_000_000);
    // 60 images decoded at 1024x1024x3 are 189 MB: twice the 96 MB limit, ten times the 16 MB disk
    let out = data.path().join("run");
    let args = [
        "train",
        "--train",
        train.to_str().unwrap(),
        "--image-size",
        "1024",
        "--cache-dir",
        disk.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let output = cgroup.command(&args).output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let expected_start =
        format!("error: {}: the 60 images decoded at 1024x1024x3 need 188.7 MB: more than the ", train.display());
    assert!(err.starts_with(&expected_start), "{err}");
    // (what is available in memory depends on what the process already uses)
    let expected_end = format!(
        " available in memory (75% of the cgroup memory limit of 100.7 MB) and the 16.0 MB free on the disk at {}; use a smaller --image-size, --cache-dir on a larger disk, or --no-cache to decode them again every epoch",
        disk.path().display()
    );
    assert!(err.trim_end().ends_with(&expected_end), "{err}");
    // refused before decoding: nothing written, and memory never near the decoded size
    assert_eq!(std::fs::read_dir(disk.path()).unwrap().count(), 0);
    assert!(cgroup.peak() < 40 * 1024 * 1024, "peak {} bytes: something was decoded", cgroup.peak());
}

/// A model small enough that the data path dominates: one strided convolution,
/// a pool and the classifier.
const TINY_MODEL: &str = "[[layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 4\nstride = 4\n\n[[layers]]\ntype = \"relu\"\n\n[[layers]]\ntype = \"maxpool2d\"\npool = 4\n\n[[layers]]\ntype = \"flatten\"\n\n[[layers]]\ntype = \"dense\"\n";

#[test]
fn a_set_three_times_the_memory_limit_trains_from_the_disk_cache_to_the_same_weights() {
    let data = tempfile::tempdir().unwrap();
    let train = data.path().join("train");
    colour_tree(&train, 500, 16, 2);
    let model = data.path().join("tiny.toml");
    std::fs::write(&model, TINY_MODEL).unwrap();
    let args = |out: &Path, cache: &Path| -> Vec<String> {
        [
            "train",
            "--train",
            train.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--image-size",
            "256",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--validation-split",
            "0.1",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    // the reference: in memory, outside any limit (1500 images at 256x256x3 = 295 MB)
    let cache = data.path().join("cache");
    let in_memory = data.path().join("in-memory");
    let mut reference = args(&in_memory, &cache);
    reference.extend(["--cache".to_string(), "memory".to_string()]);
    ok(&reference.iter().map(String::as_str).collect::<Vec<_>>());

    // inside a 96 MB cgroup, three times smaller than the decoded set: the disk cache
    let cgroup = MemoryCgroup::new(96 * 1024 * 1024);
    let limited = data.path().join("limited");
    let limited_args = args(&limited, &cache);
    let output = cgroup.command(&limited_args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    let log = stdout(&output);
    assert!(output.status.success(), "{log}\n{}", stderr(&output));
    assert!(log.contains(&format!("Decoded cache: 294.9 MB on disk at {} (read as needed)", cache.display())), "{log}");
    assert!(log.contains("Epoch 2/2"), "{log}");
    for name in ["model.safetensors", "checkpoint.safetensors", "best.safetensors"] {
        let (a, b) = (std::fs::read(in_memory.join(name)).unwrap(), std::fs::read(limited.join(name)).unwrap());
        assert!(a == b, "{name}: the disk-cache run differs from the in-memory one");
    }
    assert!(cgroup.peak() <= 96 * 1024 * 1024, "peak {}", cgroup.peak());
}

#[test]
fn a_batch_too_big_for_the_memory_limit_trains_in_micro_batches_to_the_same_weights() {
    let data = tempfile::tempdir().unwrap();
    let train = data.path().join("train");
    colour_tree(&train, 16, 128, 3);
    let args = |out: &Path| -> Vec<String> {
        let flags = "--model baseline --image-size 128 --color-mode grayscale --epochs 1 --validation-split 0.25";
        let mut args = vec!["train".to_string(), "--train".into(), train.to_string_lossy().into_owned()];
        args.extend(flags.split(' ').map(String::from));
        args.extend(["--out".to_string(), out.to_string_lossy().into_owned()]);
        args
    };
    // the reference, outside any limit: a batch of 32 needs about 526 MB in one pass
    let whole = data.path().join("whole");
    let log = ok(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(log.contains("per batch of 32"), "{log}");

    // inside a 400 MB cgroup that batch does not fit: passes of 8 (whole gradient leaves) do
    let cgroup = MemoryCgroup::new(400 * 1024 * 1024);
    let limited = data.path().join("limited");
    let output = cgroup.command(&args(&limited).iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    let log = stdout(&output);
    assert!(output.status.success(), "{log}\n{}", stderr(&output));
    assert!(log.contains("training in micro-batches of 8 (about "), "{log}");
    assert!(log.contains("per micro-batch of 8 (a batch of 32 in 4 passes)"), "{log}");
    for name in ["model.safetensors", "checkpoint.safetensors"] {
        let (a, b) = (std::fs::read(whole.join(name)).unwrap(), std::fs::read(limited.join(name)).unwrap());
        assert!(a == b, "{name}: the micro-batched run differs from the whole-batch one");
    }
    assert!(cgroup.peak() <= 400 * 1024 * 1024, "peak {}", cgroup.peak());
    // asking for whole batches there is refused in one line, before anything is allocated
    let mut asked = args(&data.path().join("asked"));
    asked.extend(["--micro-batch".to_string(), "32".to_string()]);
    let output = cgroup.command(&asked.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    let err = stderr(&output);
    assert!(!output.status.success() && err.lines().count() == 1, "{err}");
    assert!(
        err.contains("a pass of 32 image(s) needs about 525.7 MB") && err.contains("use a smaller --micro-batch"),
        "{err}"
    );
}
