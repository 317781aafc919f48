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

#[test]
fn with_a_content_crop_the_map_is_drawn_on_the_whole_original_over_the_cropped_window() {
    let dir = tempfile::tempdir().unwrap();
    // a faint 120x60 frame, a bright 40x30 region at x 70..110, y 10..40 (with a blob to the left or right in it)
    let framed = |path: &Path, class: usize, i: u32| {
        let image = GrayImage::from_fn(120, 60, |x, y| {
            let blob_x = if class == 0 { 74 } else { 96 };
            let region = (70..110).contains(&x) && (10..40).contains(&y);
            let blob = (blob_x..blob_x + 8).contains(&x) && (20..28).contains(&y);
            let noise = ((x * 7 + y * 3 + i) % 15) as u8;
            Luma([if blob {
                250
            } else if region {
                140 + noise
            } else {
                noise
            }])
        });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image.save(path).unwrap();
    };
    let train = dir.path().join("train");
    for (class, name) in ["left", "right"].iter().enumerate() {
        for i in 0..8 {
            framed(&train.join(name).join(format!("{i}.png")), class, i);
        }
    }
    let out = dir.path().join("run");
    let flags = "--model small --image-size 16 --color-mode grayscale --crop content --epochs 1 --batch-size 4";
    let mut args = vec!["train", "--train", train.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(flags.split(' '));
    ok(&args);
    let probe = dir.path().join("probe.png");
    framed(&probe, 0, 99);
    let pictures = dir.path().join("explained");
    let model = out.join("model.safetensors");
    let json = ok(&[
        "explain",
        "--model",
        model.to_str().unwrap(),
        "--images",
        probe.to_str().unwrap(),
        "--out",
        pictures.to_str().unwrap(),
        "--json",
    ]);
    let records: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    let picture = image::open(records[0]["map"].as_str().unwrap()).unwrap().to_rgb8();
    // the whole 120x60 source at the scale its 44x32 window is shown (224 px): about 610 x 420, plus the title
    let (width, height) = (picture.width(), picture.height() - 24);
    assert!((560..=660).contains(&width) && (380..=460).contains(&height), "{width}x{height}");
    assert!((width as f64 / height as f64 - 120.0 / 60.0 * 32.0 / 44.0).abs() < 0.1, "{width}x{height}");
    // the frame left of the window is shown untinted (grey, dark); the map colours the window
    let grey = |p: &image::Rgb<u8>| p[0] == p[1] && p[1] == p[2];
    let left_frame = (0..width / 3).flat_map(|x| (24..picture.height()).map(move |y| (x, y)));
    assert!(left_frame.clone().all(|(x, y)| grey(picture.get_pixel(x, y)) && picture.get_pixel(x, y)[0] < 40));
    let tinted = (width * 2 / 3..width).flat_map(|x| (24..picture.height()).map(move |y| (x, y)));
    assert!(tinted.filter(|&(x, y)| !grey(picture.get_pixel(x, y))).count() > 1000, "no map over the window");
}
