//! The three ways of keeping decoded images (memory, a disk
//! cache, decoding on use) give the same pixels; the cache is reused only
//! while nothing it was made from has changed; and a set too big for memory
//! and disk is refused before anything is decoded.

use convnet_data::{
    load, ColorMode, DataError, DatasetOptions, DecodeOptions, ImageSet, InputFormat, PixelScale, Storage,
};
use image::{ImageBuffer, Rgb};
use std::path::Path;

fn tree(root: &Path, per_class: u32) {
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..per_class {
            let image =
                ImageBuffer::from_fn(9, 7, |x, y| Rgb([(x * 20 + i) as u8, (y * 30) as u8, class.as_bytes()[0]]));
            image.save(root.join(class).join(format!("{i:02}.png"))).unwrap();
        }
    }
}

fn options(storage: Storage, cache: &Path) -> DatasetOptions {
    DatasetOptions {
        decode: DecodeOptions::new(InputFormat::new([12, 10], ColorMode::Rgb)),
        storage,
        cache_dir: Some(cache.to_path_buf()),
        validation_split: Some(0.25),
        skip_bad: true,
        ..Default::default()
    }
}

/// Every image of a set, as floats through `fill_batch` (the path training uses).
fn all_pixels(set: &ImageSet) -> Vec<f32> {
    let [c, h, w] = set.image_shape();
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut out = vec![0.0; set.len() * c * h * w];
    let mut labels = Vec::new();
    set.fill_batch(&indices, PixelScale::Raw, &mut out, &mut labels).unwrap();
    assert_eq!(labels, set.labels());
    out
}

#[test]
fn memory_disk_and_stream_give_the_same_images_and_the_cache_is_reused_until_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("data"), dir.path().join("cache"));
    tree(&root, 8);
    std::fs::write(root.join("b/broken.png"), b"not a png").unwrap();
    let memory = load(&root, &options(Storage::Memory, &cache)).unwrap();
    assert_eq!(memory.report.storage, None);
    assert!(!cache.exists(), "the memory path writes no cache");
    let disk = load(&root, &options(Storage::Disk, &cache)).unwrap();
    let summary = disk.report.to_string();
    assert!(summary.contains(&format!("on disk at {} (read as needed)", cache.display())), "{summary}");
    let stream = load(&root, &options(Storage::Stream, &cache)).unwrap();
    assert!(stream.report.to_string().contains("decoded again every epoch"), "{}", stream.report);
    for other in [&disk, &stream] {
        assert!(all_pixels(&other.training) == all_pixels(&memory.training));
        let (a, b) = (other.validation.as_ref().unwrap(), memory.validation.as_ref().unwrap());
        assert!(all_pixels(a) == all_pixels(b));
        assert_eq!(a.paths(), b.paths());
        assert_eq!(other.report.skipped, memory.report.skipped, "the broken file is skipped the same way");
        assert_eq!(other.report.split, memory.report.split);
        assert_eq!(other.training.image(3).unwrap(), memory.training.image(3).unwrap());
    }
    assert_eq!(disk.training.resident_bytes(), 0, "a mapped set holds no pixels of its own");

    // a second load reuses the cache
    let again = load(&root, &options(Storage::Disk, &cache)).unwrap();
    assert!(again.report.to_string().contains("(read as needed, reused)"), "{}", again.report);
    assert!(all_pixels(&again.training) == all_pixels(&memory.training));
    let entries = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
    let before = entries(&cache);
    assert_eq!(before, 4, "pixels and description for the training and the validation subset");

    // a changed file gives a new key: a fresh cache, with the new pixels
    std::thread::sleep(std::time::Duration::from_millis(20));
    let changed = root.join("a/00.png");
    ImageBuffer::from_fn(9, 7, |_, _| Rgb([1u8, 2, 3])).save(&changed).unwrap();
    let fresh = load(&root, &options(Storage::Disk, &cache)).unwrap();
    assert!(!fresh.report.to_string().contains("reused"), "{}", fresh.report);
    let memory_now = load(&root, &options(Storage::Memory, &cache)).unwrap();
    assert!(all_pixels(&fresh.training) == all_pixels(&memory_now.training));
    assert!(all_pixels(&fresh.training) != all_pixels(&memory.training));

    // other decode options: another key too
    let mut other_size = options(Storage::Disk, &cache);
    other_size.decode.format.image_size = [5, 5];
    let resized = load(&root, &other_size).unwrap();
    assert!(!resized.report.to_string().contains("reused"));
    assert_eq!(resized.training.image_shape(), [3, 5, 5]);
    // the content crop and the bit depth change the pixels: their own keys
    for (name, change) in [
        ("crop", (|o: &mut DatasetOptions| o.decode.format.crop_content = true) as fn(&mut DatasetOptions)),
        ("16-bit", |o: &mut DatasetOptions| o.decode.format.bit_depth = convnet_data::BitDepth::Sixteen),
    ] {
        let mut changed = options(Storage::Disk, &cache);
        change(&mut changed);
        let loaded = load(&root, &changed).unwrap();
        assert!(!loaded.report.to_string().contains("reused"), "{name}: {}", loaded.report);
    }
}

#[test]
fn a_cache_cut_short_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("data"), dir.path().join("cache"));
    tree(&root, 4);
    let first = all_pixels(&load(&root, &options(Storage::Disk, &cache)).unwrap().training);
    // truncate every pixel file, as a crash in the middle of a copy would
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pixels") {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(file.metadata().unwrap().len() / 2).unwrap();
        }
    }
    let second = load(&root, &options(Storage::Disk, &cache)).unwrap();
    assert!(!second.report.to_string().contains("reused"), "{}", second.report);
    assert!(all_pixels(&second.training) == first, "the pixels are decoded again");
}

#[test]
fn a_set_too_big_for_memory_and_disk_is_refused_with_the_sizes_and_what_helps() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("data"), dir.path().join("cache"));
    tree(&root, 4);
    let mut opts = options(Storage::Auto, &cache);
    opts.validation_split = None;
    opts.decode.format.image_size = [60_000, 60_000]; // 10.8 GB per image decoded: no disk has 130 GB spare here
    opts.decode.max_pixels = u64::MAX;
    opts.memory_budget = Some((1 << 30, "75% of the test's budget".into()));
    let error = load(&root, &opts).unwrap_err();
    assert!(matches!(error, DataError::TooBigForDisk(_)), "{error}");
    let message = error.to_string();
    let expected_start = format!(
        "{}: the 12 images decoded at 60000x60000x3 need 129.6 GB: more than the 1.1 GB available in memory (75% of the test's budget) and the ",
        root.display()
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert!(
        message.ends_with(&format!(
            " free on the disk at {}; use a smaller --image-size, --cache-dir on a larger disk, or --no-cache to decode them again every epoch",
            cache.display()
        )),
        "{message}"
    );
    let written: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert!(written.is_empty(), "nothing decoded, nothing written: {written:?}");
}

#[test]
fn a_full_disk_while_writing_the_cache_is_named_as_such() {
    let error = DataError::Io { path: "/cache/x.pixels".into(), error: std::io::Error::from_raw_os_error(28) };
    assert!(error.to_string().starts_with("/cache/x.pixels: the disk is full (No space left on device"), "{error}");
    let other = DataError::Io { path: "/cache/x.pixels".into(), error: std::io::Error::from_raw_os_error(13) };
    assert_eq!(other.to_string(), "/cache/x.pixels: Permission denied (os error 13)");
}
