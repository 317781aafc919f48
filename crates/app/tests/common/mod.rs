//! Helpers shared by the end-to-end tests: run the real binary, check its
//! one-line errors, make small image trees, read model files back.
#![allow(dead_code)] // each test file uses its own subset

use image::{ImageBuffer, Rgb};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn convnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convnet"))
}

pub fn run(args: &[&str]) -> Output {
    convnet().args(args).output().expect("run convnet")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(output.status.success(), "convnet {args:?} failed:\n{}\n{}", stdout(&output), stderr(&output));
    stdout(&output)
}

/// Asserts a clean failure: non-zero exit, exactly one line on stderr that
/// starts with `error:` and contains `needle`, and no panic.
pub fn fails_with(args: &[&str], needle: &str) {
    let output = run(args);
    let err = stderr(&output);
    assert!(!output.status.success(), "convnet {args:?} should fail");
    assert!(!err.contains("panicked") && !err.contains("internal error") && !err.contains("RUST_BACKTRACE"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    assert!(lines[0].starts_with("error:"), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
}

/// Three classes told apart by colour, with noise: red, green, blue squares.
pub fn colour_tree(root: &Path, per_class: usize, size: u32, seed: u32) {
    for (class, name) in ["blue", "green", "red"].iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class as u32 {
            let image = ImageBuffer::from_fn(size, size, |x, y| {
                let noise = ((x * 31 + y * 17 + i * 7 + seed * 13) % 60) as u8;
                let mut pixel = [noise; 3];
                pixel[2 - class] = 160 + noise;
                Rgb(pixel)
            });
            image.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

pub fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let bytes = std::fs::read(path).unwrap();
    let (header_len, rest) = bytes.split_at(8);
    let header_len = u64::from_le_bytes(header_len.try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&rest[..header_len]).unwrap();
    let data = &rest[header_len..];
    let mut out: Vec<(String, Vec<u32>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            let offsets = info["data_offsets"].as_array().unwrap();
            let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
            let bits = data[start..end].chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect();
            (name.clone(), bits)
        })
        .collect();
    out.sort();
    out
}

/// The repository root (for the bundled data).
pub fn repo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fashion-mnist")
}

/// The `training` metadata of a checkpoint.
pub fn training_state(checkpoint: &Path) -> serde_json::Value {
    let bytes = std::fs::read(checkpoint).unwrap();
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
    serde_json::from_str(header["__metadata__"]["training"].as_str().unwrap()).unwrap()
}

/// Temporary files of atomic writes left in `dir` (there must be none).
pub fn temporary_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect()
}
