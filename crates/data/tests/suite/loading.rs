//! The data crate on image trees built on the fly: formats, bit depths, labels,
//! splits, shuffling, and every bad-input case with its exact outcome.

use convnet_data::batch::{epoch_order, BatchConfig, BatchStream};
use convnet_data::{load, ClassNames, ColorMode, DataError, DatasetOptions, DecodeOptions, InputFormat, PixelScale};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
use std::path::Path;
use std::sync::Arc;

fn write(path: &Path, image: DynamicImage, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save_with_format(path, format).unwrap();
}

fn rgb(value: u8) -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_pixel(10, 6, Rgb([value, value / 2, 255 - value])))
}

/// A tree with three classes, several formats and bit depths, a nested file and
/// two non-image files.
fn mixed_tree(root: &Path) {
    write(&root.join("cat/a.png"), rgb(200), ImageFormat::Png);
    write(&root.join("cat/nested/deeper/b.jpg"), rgb(100), ImageFormat::Jpeg);
    let grey16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(8, 8, Luma([65535u16]));
    write(&root.join("dog/c16.png"), DynamicImage::ImageLuma16(grey16), ImageFormat::Png);
    write(&root.join("dog/d.bmp"), rgb(10), ImageFormat::Bmp);
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_pixel(5, 5, Rgba([1, 2, 3, 128]));
    write(&root.join("eel/e.png"), DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
    write(&root.join("eel/f.gif"), rgb(50), ImageFormat::Gif);
    write(&root.join("eel/g.tiff"), rgb(60), ImageFormat::Tiff);
    std::fs::write(root.join("cat/.DS_Store"), b"junk").unwrap();
    std::fs::write(root.join("dog/notes.txt"), b"not an image").unwrap();
}

fn options(size: usize) -> DatasetOptions {
    DatasetOptions {
        decode: DecodeOptions::new(InputFormat::new([size, size], ColorMode::Rgb)),
        ..DatasetOptions::default()
    }
}

#[test]
fn mixed_formats_load_with_the_right_labels_sizes_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    mixed_tree(dir.path());
    let loaded = load(dir.path(), &options(4)).unwrap();
    let set = &loaded.training;
    assert_eq!(set.class_names(), ["cat", "dog", "eel"]);
    assert_eq!(set.len(), 7);
    assert_eq!(set.labels(), [0, 0, 1, 1, 2, 2, 2]);
    assert_eq!(set.image_shape(), [3, 4, 4]);
    assert_eq!(loaded.report.ignored, 2, "the .DS_Store and the .txt");
    let summary = loaded.report.to_string();
    assert!(summary.starts_with("Found 7 files belonging to 3 classes.\n"), "{summary}");
    assert!(summary.contains("Ignored 2 files"), "{summary}");
    // the 16-bit white image is 255 in 8 bits, in every RGB channel
    let index = set.paths().iter().position(|p| p.ends_with("c16.png")).unwrap();
    assert!(set.image(index).unwrap().iter().all(|&v| v == 255));
    // a flat PNG keeps its exact colour after resizing
    let a = set.paths().iter().position(|p| p.ends_with("a.png")).unwrap();
    assert_eq!(&set.image(a).unwrap()[..16], &[200; 16]);
    assert_eq!(&set.image(a).unwrap()[16..32], &[100; 16]);
    // f32 batches are scaled to [0, 1] by default, raw on request
    let mut out = vec![0.0f32; 48];
    let mut labels = Vec::new();
    set.fill_batch(&[a], PixelScale::Unit, &mut out, &mut labels).unwrap();
    assert_eq!(out[0], 200.0 * (1.0f32 / 255.0));
    assert_eq!(labels, [0]);
    set.fill_batch(&[a], PixelScale::Raw, &mut out, &mut labels).unwrap();
    assert_eq!(out[0], 200.0);
}

#[test]
fn grayscale_and_rgba_color_modes() {
    let dir = tempfile::tempdir().unwrap();
    mixed_tree(dir.path());
    let mut opts = options(3);
    opts.decode.format.color_mode = ColorMode::Grayscale;
    let set = load(dir.path(), &opts).unwrap().training;
    assert_eq!(set.image_shape(), [1, 3, 3]);
    opts.decode.format.color_mode = ColorMode::Rgba;
    let set = load(dir.path(), &opts).unwrap().training;
    let e = set.paths().iter().position(|p| p.ends_with("e.png")).unwrap();
    assert_eq!(set.image(e).unwrap()[27], 128, "alpha plane kept");
}

#[test]
fn validation_split_is_reproducible_and_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(&dir.path().join(format!("{}/{i}.png", ["a", "b"][i % 2])), rgb(i as u8), ImageFormat::Png);
    }
    let mut opts = options(2);
    opts.validation_split = Some(0.25);
    let first = load(dir.path(), &opts).unwrap();
    let second = load(dir.path(), &opts).unwrap();
    let validation = first.validation.as_ref().unwrap();
    assert_eq!(first.training.len(), 15);
    assert_eq!(validation.len(), 5);
    assert_eq!(first.training.paths(), second.training.paths());
    for path in validation.paths() {
        assert!(!first.training.paths().contains(path), "{} in both subsets", path.display());
    }
    opts.seed = 7;
    let other = load(dir.path(), &opts).unwrap();
    assert_ne!(other.validation.unwrap().paths(), validation.paths(), "another seed, another split");
    assert!(first.report.to_string().contains("Using 15 files for training and 5 for validation."));
}

#[test]
fn epochs_reshuffle_reproducibly_and_batches_cover_the_set() {
    assert_eq!(epoch_order(10, true, 1, 0), epoch_order(10, true, 1, 0));
    assert_ne!(epoch_order(10, true, 1, 0), epoch_order(10, true, 1, 1));
    assert_eq!(epoch_order(5, false, 1, 3), vec![0, 1, 2, 3, 4]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..7 {
        write(&dir.path().join(format!("c{}/{i}.png", i % 3)), rgb(i as u8 * 30), ImageFormat::Png);
    }
    let set = Arc::new(load(dir.path(), &options(2)).unwrap().training);
    let config = BatchConfig {
        batch_size: 3,
        shuffle: true,
        seed: 5,
        epoch: 2,
        scale: PixelScale::Unit,
        augment: None,
        first_batch: 0,
        shard: Default::default(),
    };
    let mut stream = BatchStream::new(set.clone(), config);
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    while let Some(batch) = stream.next_batch() {
        sizes.push(batch.images.shape()[0]);
        assert_eq!(batch.labels.len(), batch.images.shape()[0]);
        for (&index, &label) in batch.indices.iter().zip(&batch.labels) {
            assert_eq!(set.labels()[index], label);
        }
        seen.extend(batch.indices.iter().copied());
        stream.recycle(batch);
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, epoch_order(7, true, 5, 2));
}

#[test]
fn augmentation_is_seeded_and_stays_in_range() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        let image =
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(16, 16, |x, y| Rgb([(x * 16) as u8, (y * 16) as u8, 7])));
        write(&dir.path().join(format!("c/{i}.png")), image, ImageFormat::Png);
    }
    let set = Arc::new(load(dir.path(), &options(16)).unwrap().training);
    let run = |seed| {
        let config = BatchConfig {
            batch_size: 4,
            shuffle: false,
            seed,
            epoch: 0,
            scale: PixelScale::Unit,
            augment: Some(convnet_data::Augmentation::standard()),
            first_batch: 0,
            shard: Default::default(),
        };
        BatchStream::new(set.clone(), config).next_batch().unwrap().images
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.iter().all(|&v| (0.0..=1.0).contains(&v)));
    let mut plain = vec![0.0; 4 * 3 * 16 * 16];
    set.fill_batch(&[0, 1, 2, 3], PixelScale::Unit, &mut plain, &mut Vec::new()).unwrap();
    assert_ne!(a.as_slice().unwrap(), &plain[..], "augmentation changed something");
}

#[test]
fn missing_directory_names_the_path() {
    let error = load(Path::new("/nonexistent/train"), &options(4)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/nonexistent/train: no such directory (expected a folder with one sub-folder per class)"
    );
}

#[test]
fn directory_without_class_folders() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("loose.png"), rgb(1), ImageFormat::Png);
    let error = load(dir.path(), &options(4)).unwrap_err();
    assert!(matches!(error, DataError::NoClassFolders(_)), "{error}");
    assert!(error.to_string().contains("no class folders found"));
}

#[test]
fn class_folder_without_images() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a/x.png"), rgb(1), ImageFormat::Png);
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    std::fs::write(dir.path().join("b/readme.txt"), b"x").unwrap();
    let error = load(dir.path(), &options(4)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: class folder contains no images (supported: png, jpg, jpeg, bmp, gif, tif, tiff, webp)",
            dir.path().join("b").display()
        )
    );
}

#[test]
fn truncated_and_zero_byte_images_fail_by_default_and_are_listed_with_skip_bad() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a/good.png"), rgb(1), ImageFormat::Png);
    write(&dir.path().join("a/cut.png"), rgb(2), ImageFormat::Png);
    let cut = dir.path().join("a/cut.png");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.path().join("a/empty.jpg"), b"").unwrap();
    let error = load(dir.path(), &options(4)).unwrap_err();
    assert!(matches!(&error, DataError::Decode { path, .. } if path.ends_with("cut.png")), "{error}");
    let mut opts = options(4);
    opts.skip_bad = true;
    let loaded = load(dir.path(), &opts).unwrap();
    assert_eq!(loaded.training.len(), 1);
    let skipped: Vec<_> = loaded.report.skipped.iter().map(|(p, _)| p.file_name().unwrap().to_owned()).collect();
    assert_eq!(skipped, ["cut.png", "empty.jpg"]);
    assert!(loaded.report.skipped[1].1.contains("the file is empty"));
    let report = loaded.report.to_string();
    assert!(report.contains("Found 3 files belonging to 1 classes; 2 unreadable skipped, 1 used."), "{report}");
    assert!(report.contains("Skipped 2 unreadable images:"), "{report}");
    // each skipped file is listed once, with its reason, its path not repeated
    let cut_line = report.lines().find(|l| l.contains("cut.png")).unwrap();
    assert_eq!(cut_line.matches("cut.png").count(), 1, "{cut_line}");
    assert!(cut_line.trim_start().starts_with(&dir.path().join("a/cut.png").display().to_string()), "{cut_line}");
    assert!(report.contains("Per class after skipping: a 1"), "{report}");
}

#[test]
fn with_skip_bad_the_split_counts_are_the_images_actually_used() {
    // 38 files in 3 classes, 2 unreadable: 36 used, 27 for training and 9 for validation
    let dir = tempfile::tempdir().unwrap();
    for (class, count) in [("a", 13), ("b", 13), ("c", 12)] {
        for i in 0..count {
            write(&dir.path().join(format!("{class}/{i:02}.png")), rgb(i as u8), ImageFormat::Png);
        }
    }
    std::fs::write(dir.path().join("a/00.png"), b"").unwrap();
    std::fs::write(dir.path().join("c/05.png"), b"not a png").unwrap();
    let mut opts = options(4);
    opts.skip_bad = true;
    opts.validation_split = Some(0.25);
    let loaded = load(dir.path(), &opts).unwrap();
    let report = loaded.report.to_string();
    assert!(report.contains("Found 38 files belonging to 3 classes; 2 unreadable skipped, 36 used.\n"), "{report}");
    assert!(report.contains("Using 27 files for training and 9 for validation."), "{report}");
    assert_eq!(loaded.training.len() + loaded.validation.as_ref().unwrap().len(), 36);
    assert_eq!(loaded.report.split, Some((loaded.training.len(), loaded.validation.unwrap().len())));
    assert!(report.contains("Per class after skipping: a 12, b 13, c 11"), "{report}");
}

#[test]
fn a_file_whose_content_is_not_an_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/fake.png"), b"this is text, not a PNG").unwrap();
    let error = load(dir.path(), &options(4)).unwrap_err();
    assert!(error.to_string().contains("fake.png: cannot decode image"), "{error}");
}

/// A PNG that declares 60000x60000 pixels but holds almost nothing.
fn png_bomb() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |bytes: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        bytes.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        bytes.extend(kind);
        bytes.extend(data);
        bytes.extend(crc.sum().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(60000u32.to_be_bytes());
    ihdr.extend(60000u32.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit greyscale
    chunk(&mut bytes, b"IHDR", &ihdr);
    chunk(&mut bytes, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut bytes, b"IEND", &[]);
    bytes
}

#[test]
fn decompression_bomb_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/bomb.png"), png_bomb()).unwrap();
    let error = load(dir.path(), &options(4)).unwrap_err();
    assert!(matches!(error, DataError::TooLarge { width: 60000, height: 60000, .. }), "{error}");
    assert!(
        error.to_string().ends_with("bomb.png: image is 60000x60000, above the limit of 268435456 pixels"),
        "{error}"
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_followed_only_when_asked_and_loops_terminate() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a/x.png"), rgb(1), ImageFormat::Png);
    let elsewhere = tempfile::tempdir().unwrap();
    write(&elsewhere.path().join("y.png"), rgb(2), ImageFormat::Png);
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("a/linked")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("a/loop")).unwrap();
    let loaded = load(dir.path(), &options(4)).unwrap();
    assert_eq!(loaded.training.len(), 1, "links not followed by default");
    let mut opts = options(4);
    opts.follow_links = true;
    let loaded = load(dir.path(), &opts).unwrap();
    assert_eq!(loaded.training.len(), 2, "the linked folder counts once, the loop is not re-entered");
}

#[test]
fn test_sets_are_mapped_by_class_name_not_position() {
    let dir = tempfile::tempdir().unwrap();
    // the test set lacks class "b": positions would shift "c" onto label 1
    write(&dir.path().join("a/1.png"), rgb(1), ImageFormat::Png);
    write(&dir.path().join("c/2.png"), rgb(2), ImageFormat::Png);
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let mut opts = options(4);
    opts.class_names = ClassNames::Explicit { names: names.clone(), allow_missing: false };
    let error = load(dir.path(), &opts).unwrap_err();
    assert_eq!(error.to_string(), format!("{}: class `b` has no folder here", dir.path().display()));
    opts.class_names = ClassNames::Explicit { names, allow_missing: true };
    let loaded = load(dir.path(), &opts).unwrap();
    assert_eq!(loaded.training.labels(), [0, 2]);
    assert!(loaded.report.to_string().contains("Warning: class `b` has no folder"));
    // a folder the model does not know is an error
    write(&dir.path().join("zebra/3.png"), rgb(3), ImageFormat::Png);
    let error = load(dir.path(), &opts).unwrap_err();
    assert!(error.to_string().contains("folder `zebra` is not one of the known classes (a, b, c)"), "{error}");
}

#[test]
fn odd_sizes_and_crop_to_aspect_ratio() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a/one.png"), rgb(9), ImageFormat::Png);
    let tall = DynamicImage::ImageLuma8(ImageBuffer::from_fn(1, 400, |_, y| Luma([if y < 200 { 0 } else { 255 }])));
    write(&dir.path().join("a/tall.png"), tall, ImageFormat::Png);
    let dot = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(1, 1, Luma([77])));
    write(&dir.path().join("a/dot.png"), dot, ImageFormat::Png);
    let mut opts = options(6);
    opts.decode.format.color_mode = ColorMode::Grayscale;
    let set = load(dir.path(), &opts).unwrap().training;
    let dot = set.paths().iter().position(|p| p.ends_with("dot.png")).unwrap();
    assert!(set.image(dot).unwrap().iter().all(|&v| v == 77), "a 1x1 image is stretched");
    opts.decode.format.crop_to_aspect_ratio = true;
    let set = load(dir.path(), &opts).unwrap().training;
    let tall = set.paths().iter().position(|p| p.ends_with("tall.png")).unwrap();
    // the centre 1x1 window of a 1x400 image straddles the black/white edge
    assert_eq!(set.image(tall).unwrap().len(), 36);
}

#[test]
fn invalid_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a/1.png"), rgb(1), ImageFormat::Png);
    let mut opts = options(0);
    assert!(load(dir.path(), &opts).unwrap_err().to_string().contains("image size must be positive"));
    opts = options(4);
    opts.validation_split = Some(1.5);
    assert!(load(dir.path(), &opts).unwrap_err().to_string().contains("between 0 and 1"));
    opts.validation_split = Some(0.2);
    assert!(load(dir.path(), &opts).unwrap_err().to_string().contains("leaves an empty subset"));
}

#[test]
fn content_crop_keeps_the_bright_region_and_prediction_decodes_as_training_does() {
    let dir = tempfile::tempdir().unwrap();
    // 120x60 black frame (faint noise), a bright 40x30 region at x 70..110, y 10..40
    let framed = DynamicImage::ImageLuma8(ImageBuffer::from_fn(120, 60, |x, y| {
        let inside = (70..110).contains(&x) && (10..40).contains(&y);
        Luma([if inside { 150 + ((x + y) % 90) as u8 } else { ((x * 3 + y) % 15) as u8 }])
    }));
    let path = dir.path().join("a/framed.png");
    write(&path, framed, ImageFormat::Png);
    let mut opts = options(8);
    opts.decode.format.color_mode = ColorMode::Grayscale;
    opts.decode.format.crop_content = true;
    let set = load(dir.path(), &opts).unwrap().training;
    let trained = set.image(0).unwrap().into_owned();
    // cropped to the region (with its 2% margin: 3 columns, 2 rows of black): inside its border row and column,
    // every pixel of the 8x8 input is bright, where the whole frame would make the left half black
    assert!(trained.chunks(8).skip(1).take(6).all(|row| row[1..7].iter().all(|&v| v > 100)), "{trained:?}");
    // `predict` decodes a file alone (decode_file): the same bytes as training's loader
    let mut alone = vec![0u8; 64];
    convnet_data::decode::decode_file(&path, &opts.decode, &mut alone).unwrap();
    assert_eq!(alone, trained);
    // and without the crop the left half is the black frame
    opts.decode.format.crop_content = false;
    let whole = load(dir.path(), &opts).unwrap().training.image(0).unwrap().into_owned();
    assert!(whole.chunks(8).all(|row| row[0..3].iter().all(|&v| v < 20)), "{whole:?}");
}
