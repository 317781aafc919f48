//! `convnet explain` on images whose class is where a bright blob is: the
//! Grad-CAM peak must land on the blob.

mod common;

use common::*;
use image::{GrayImage, Luma};
use std::path::Path;

/// A 32x32 grey image, dark with noise, with a bright 6x6 blob whose top-left
/// corner is (x, y).
fn blob_image(path: &Path, x: u32, y: u32, seed: u32) {
    let image = GrayImage::from_fn(32, 32, |px, py| {
        let noise = ((px * 37 + py * 91 + seed * 53) % 23) as u8;
        let inside = (x..x + 6).contains(&px) && (y..y + 6).contains(&py);
        Luma([if inside { 220 + noise } else { 20 + noise }])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save(path).unwrap();
}

/// Blob positions: class "left" in columns 2..10, "right" in 20..26; any row.
fn position(class: &str, i: u32) -> (u32, u32) {
    let x = if class == "left" { 2 + (i * 3) % 8 } else { 20 + (i * 5) % 7 };
    (x, 2 + (i * 7) % 24)
}

#[test]
fn the_grad_cam_peak_lands_on_the_blob_that_decides_the_class() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train"), dir.path().join("test"));
    for class in ["left", "right"] {
        for i in 0..60 {
            let (x, y) = position(class, i);
            blob_image(&train.join(class).join(format!("{i:02}.png")), x, y, i);
        }
    }
    let mut probes = Vec::new();
    for (class, i) in [("left", 100), ("left", 101), ("left", 102), ("right", 103), ("right", 104), ("right", 105)] {
        let (x, y) = position(class, i);
        let path = test.join(format!("{class}-{i}.png"));
        blob_image(&path, x, y, i);
        probes.push((path, class, x, y));
    }
    let out = dir.path().join("run");
    let log = ok(&[
        "train",
        "--train",
        train.to_str().unwrap(),
        "--model",
        "small",
        "--image-size",
        "32",
        "--color-mode",
        "grayscale",
        "--epochs",
        "6",
        "--batch-size",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(log.contains("Epoch 6/6"), "{log}");
    let pictures = dir.path().join("explained");
    let json = ok(&[
        "explain",
        "--model",
        out.join("model.safetensors").to_str().unwrap(),
        "--images",
        test.to_str().unwrap(),
        "--out",
        pictures.to_str().unwrap(),
        "--json",
    ]);
    let records: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(records.len(), probes.len());
    for record in &records {
        let file = record["file"].as_str().unwrap();
        let (_, class, x, y) = probes.iter().find(|(p, ..)| p.to_str().unwrap() == file).unwrap();
        assert_eq!(record["predicted"], *class, "{record}");
        let peak: Vec<u32> = record["peak"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        // on the blob, give or take the feature maps' 4-pixel cells
        let near = |p: u32, start: u32| p + 4 >= start && p <= start + 6 + 4;
        assert!(near(peak[0], *x) && near(peak[1], *y), "{file}: peak {peak:?}, blob at ({x}, {y})");
        let picture = image::open(record["map"].as_str().unwrap()).unwrap();
        assert!(picture.width() >= 224, "pictures are enlarged to be readable");
    }
    fails_with(
        &[
            "explain",
            "--model",
            out.join("model.safetensors").to_str().unwrap(),
            "--images",
            test.to_str().unwrap(),
            "--out",
            pictures.to_str().unwrap(),
            "--class",
            "middle",
        ],
        "--class middle: not a class of this model (left, right)",
    );
}
