//! Loading a folder-per-class tree: scan, split, then decode every image once
//! into memory, into a cache file on disk, or only check it (streaming) —
//! whichever fits (see [`crate::cache`]).

use crate::cache::{cache_key, default_cache_dir, free_space, CacheEntry, Storage};
use crate::dataset::{DatasetOptions, ImageSet, LoadReport, Loaded, Pixels};
use crate::decode::{decode_file, DecodeOptions};
use crate::error::{DataError, Result};
use crate::scan::{scan, FileEntry, Scan};
use convnet_tensor::rng::rng_at;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Splits files deterministically: shuffle with the seed, keep the last
/// `round(fraction * n)` for validation. Both subsets keep file order. No file
/// is in both.
pub fn split_files(files: &[FileEntry], fraction: f64, seed: u64) -> (Vec<FileEntry>, Vec<FileEntry>) {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.shuffle(&mut rng_at(seed, 0x5B117));
    let validation_count = ((files.len() as f64) * fraction).round() as usize;
    let (train, validation) = order.split_at(files.len() - validation_count);
    let mut train = train.to_vec();
    let mut validation = validation.to_vec();
    train.sort_unstable();
    validation.sort_unstable();
    (train.iter().map(|&i| files[i].clone()).collect(), validation.iter().map(|&i| files[i].clone()).collect())
}

/// Decodes `files` in parallel into an [`ImageSet`]. Failures either stop the
/// load (the first failing file in file order is reported) or, with `skip_bad`,
/// are dropped and returned. Also returns how many files had several frames.
pub fn decode_files(
    files: &[FileEntry],
    class_names: &[String],
    options: &DecodeOptions,
    skip_bad: bool,
) -> Result<(ImageSet, Skipped, usize)> {
    let image_len = options.image_len();
    if image_len == 0 {
        return Err(DataError::Config("image size must be positive".into()));
    }
    let mut pixels = vec![0u8; files.len() * image_len];
    let results: Vec<Result<u32>> = pixels
        .par_chunks_mut(image_len)
        .zip(files.par_iter())
        .map(|(out, file)| decode_file(&file.path, options, out))
        .collect();
    let mut skipped = Vec::new();
    let mut keep = Vec::with_capacity(files.len());
    let mut multi_frame = 0;
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(frames) => {
                keep.push(index);
                multi_frame += usize::from(frames > 1);
            }
            Err(error) if skip_bad => {
                skipped.push((files[index].path.clone(), reason_without_path(&files[index].path, &error)))
            }
            Err(error) => return Err(error),
        }
    }
    if keep.len() < files.len() {
        // compact the buffer over the holes left by skipped files
        for (slot, &index) in keep.iter().enumerate() {
            pixels.copy_within(index * image_len..(index + 1) * image_len, slot * image_len);
        }
        pixels.truncate(keep.len() * image_len);
    }
    let labels = keep.iter().map(|&i| files[i].label).collect();
    let paths = keep.iter().map(|&i| files[i].path.clone()).collect();
    let [height, width] = options.format.image_size;
    let set = ImageSet::from_samples(
        class_names.to_vec(),
        ([options.format.color_mode.channels(), height, width], options.format.bit_depth),
        pixels,
        labels,
        paths,
    )?;
    Ok((set, skipped, multi_frame))
}

/// Files that could not be decoded and were skipped, with the reason.
pub type Skipped = Vec<(PathBuf, String)>;

/// An error's message without the leading `path: ` (the report prints the path once).
fn reason_without_path(path: &Path, error: &DataError) -> String {
    let message = error.to_string();
    let prefix = format!("{}: ", path.display());
    message.strip_prefix(&prefix).map(str::to_string).unwrap_or(message)
}

/// Bytes of decoded images per block when writing a cache or validating a
/// streamed set: large enough for every thread to have work, small enough
/// that memory stays bounded whatever the set's size (and at most an eighth
/// of the memory budget, when there is one).
fn block_bytes(memory_budget: Option<&(u64, String)>) -> usize {
    let cap = memory_budget.map_or(64 << 20, |(budget, _)| (*budget / 8) as usize);
    cap.clamp(4 << 20, 64 << 20)
}

/// Decodes `files` block by block in parallel, handing each block's bytes (its
/// images in order, a failed one's slot zero) to `sink`; returns the `(slot,
/// reason)` of the files that failed (or the first failure without `skip_bad`)
/// and how many files had several frames.
fn decode_in_blocks(
    files: &[FileEntry],
    options: &DecodeOptions,
    skip_bad: bool,
    block_bytes: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<(Vec<(usize, String)>, usize)> {
    let image_len = options.image_len();
    let per_block = (block_bytes / image_len.max(1)).max(1);
    let mut buffer = Vec::new();
    let mut skipped = Vec::new();
    let mut multi_frame = 0;
    for (block, chunk) in files.chunks(per_block).enumerate() {
        buffer.clear();
        buffer.resize(chunk.len() * image_len, 0u8);
        let results: Vec<Result<u32>> = buffer
            .par_chunks_mut(image_len)
            .zip(chunk.par_iter())
            .map(|(out, file)| decode_file(&file.path, options, out).inspect_err(|_| out.fill(0)))
            .collect();
        for (offset, result) in results.into_iter().enumerate() {
            match result {
                Ok(frames) => multi_frame += usize::from(frames > 1),
                Err(error) if skip_bad => {
                    let file = &chunk[offset];
                    skipped.push((block * per_block + offset, reason_without_path(&file.path, &error)));
                }
                Err(error) => return Err(error),
            }
        }
        sink(&buffer)?;
    }
    Ok((skipped, multi_frame))
}

/// The set of `files` minus the `skipped` slots, its pixels in `pixels`.
fn kept_set(
    files: &[FileEntry],
    class_names: &[String],
    options: &DecodeOptions,
    skipped: &[(usize, String)],
    pixels: impl FnOnce(Vec<usize>) -> Pixels,
) -> (ImageSet, Vec<(PathBuf, String)>) {
    let bad: std::collections::HashSet<usize> = skipped.iter().map(|(slot, _)| *slot).collect();
    let kept: Vec<usize> = (0..files.len()).filter(|slot| !bad.contains(slot)).collect();
    let [height, width] = options.format.image_size;
    let set = ImageSet {
        class_names: class_names.to_vec(),
        shape: [options.format.color_mode.channels(), height, width],
        depth: options.format.bit_depth,
        labels: kept.iter().map(|&i| files[i].label).collect(),
        paths: kept.iter().map(|&i| files[i].path.clone()).collect(),
        pixels: pixels(kept),
    };
    (set, skipped.iter().map(|(slot, reason)| (files[*slot].path.clone(), reason.clone())).collect())
}

/// Decodes `files` once into the cache file of `dir` (or reuses a valid one)
/// and maps it. Returns the set, the skipped files, the number of multi-frame
/// files and whether the cache was reused.
pub fn cache_files(
    files: &[FileEntry],
    class_names: &[String],
    options: &DecodeOptions,
    skip_bad: bool,
    dir: &Path,
    block_bytes: usize,
    larger_than_memory: bool,
) -> Result<(ImageSet, Skipped, usize, bool)> {
    let image_len = options.image_len();
    let entry = CacheEntry::new(dir, &cache_key(files, options)?);
    let (info, reused) = match entry.read_valid(files.len(), image_len) {
        Some(info) => (info, true),
        None => {
            let info = entry
                .write(image_len, files.len(), |sink| decode_in_blocks(files, options, skip_bad, block_bytes, sink))?;
            (info, false)
        }
    };
    if !skip_bad && !info.skipped.is_empty() {
        // a cache written with --skip-bad, read without it: fail as a fresh decode would
        let (slot, reason) = &info.skipped[0];
        return Err(DataError::Decode { path: files[*slot].path.clone(), reason: reason.clone() });
    }
    let file = Arc::new(entry.open(image_len, larger_than_memory)?);
    let (set, skipped) = kept_set(files, class_names, options, &info.skipped, |slots| Pixels::Disk { file, slots });
    Ok((set, skipped, info.multi_frame, reused))
}

/// A set decoded on use: every file is decoded once now (block by block, in
/// bounded memory) so unreadable ones are found, and skipped with `skip_bad`,
/// before training starts; nothing is kept.
pub fn stream_files(
    files: &[FileEntry],
    class_names: &[String],
    options: &DecodeOptions,
    skip_bad: bool,
    block_bytes: usize,
) -> Result<(ImageSet, Skipped, usize)> {
    let (skipped, multi_frame) = decode_in_blocks(files, options, skip_bad, block_bytes, &mut |_| Ok(()))?;
    let (set, skipped) =
        kept_set(files, class_names, options, &skipped, |_| Pixels::Stream { options: options.clone() });
    Ok((set, skipped, multi_frame))
}

/// How [`load`] keeps a set's pixels.
enum Chosen {
    Memory,
    /// The cache directory, and whether the set is larger than the memory budget.
    Disk {
        dir: PathBuf,
        larger_than_memory: bool,
    },
    Stream,
}

/// Decides where `needed` bytes of decoded images go (see [`crate::cache`]),
/// refusing before anything is decoded when neither memory nor disk can take them.
fn choose_storage(root: &Path, options: &DatasetOptions, subsets: &[&[FileEntry]], images: usize) -> Result<Chosen> {
    let decode = &options.decode;
    let needed = (images as u64).saturating_mul(decode.image_len() as u64);
    let fits_memory = options.memory_budget.as_ref().is_none_or(|(budget, _)| needed <= *budget);
    let too_big_for_memory = || {
        let (budget, source) = options.memory_budget.clone().expect("over a budget");
        DataError::TooBigForMemory {
            root: root.to_path_buf(),
            images,
            height: decode.format.image_size[0],
            width: decode.format.image_size[1],
            channels: decode.format.color_mode.channels(),
            needed,
            budget,
            budget_source: source,
        }
    };
    let disk = || -> Result<std::result::Result<PathBuf, (PathBuf, u64)>> {
        let dir = options.cache_dir.clone().unwrap_or_else(default_cache_dir);
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        // a valid cache of every subset needs no space at all
        let mut missing = 0u64;
        for files in subsets {
            let entry = CacheEntry::new(&dir, &cache_key(files, decode)?);
            if entry.read_valid(files.len(), decode.image_len()).is_none() {
                missing += files.len() as u64 * decode.image_len() as u64;
            }
        }
        let free = free_space(&dir).unwrap_or(u64::MAX);
        // keep 5% of the need (and 64 MB) spare for everything else on that disk
        let margin = (missing / 20).max(64 << 20);
        Ok(if missing == 0 || missing.saturating_add(margin) <= free { Ok(dir) } else { Err((dir, free)) })
    };
    let too_big_for_disk = |dir: PathBuf, free: u64| {
        DataError::TooBigForDisk(Box::new(crate::error::TooBig {
            root: root.to_path_buf(),
            images,
            height: decode.format.image_size[0],
            width: decode.format.image_size[1],
            channels: decode.format.color_mode.channels(),
            needed,
            memory: options.memory_budget.clone(),
            cache_dir: dir,
            free,
        }))
    };
    match options.storage {
        Storage::Stream => Ok(Chosen::Stream),
        Storage::Memory if fits_memory => Ok(Chosen::Memory),
        Storage::Memory => Err(too_big_for_memory()),
        Storage::Auto if fits_memory => Ok(Chosen::Memory),
        Storage::Auto | Storage::Disk => match disk()? {
            Ok(dir) => Ok(Chosen::Disk { dir, larger_than_memory: !fits_memory }),
            Err((dir, free)) => Err(too_big_for_disk(dir, free)),
        },
    }
}

/// Scans, splits and decodes a folder-per-class tree (see the module docs).
pub fn load(root: &Path, options: &DatasetOptions) -> Result<Loaded> {
    let [height, width] = options.decode.format.image_size;
    if height == 0 || width == 0 {
        return Err(DataError::Config(format!("image size must be positive, got {height}x{width}")));
    }
    let scan: Scan = scan(root, &options.class_names, options.follow_links)?;
    let mut report = LoadReport {
        root: root.to_path_buf(),
        files: scan.files.len(),
        class_names: scan.class_names.clone(),
        class_counts: scan.class_counts(),
        ignored: scan.ignored,
        missing_classes: scan.missing_classes.clone(),
        skipped: Vec::new(),
        split: None,
        storage: None,
        multi_frame: 0,
    };
    let (train_files, validation_files) = match options.validation_split {
        None => (scan.files.clone(), None),
        Some(fraction) => {
            if !(fraction > 0.0 && fraction < 1.0) {
                return Err(DataError::Config(format!("validation split must be between 0 and 1, got {fraction}")));
            }
            let (train, validation) = split_files(&scan.files, fraction, options.seed);
            if train.is_empty() || validation.is_empty() {
                return Err(DataError::Config(format!(
                    "{}: a validation split of {fraction} of {} files leaves an empty subset",
                    root.display(),
                    scan.files.len()
                )));
            }
            (train, Some(validation))
        }
    };
    let images = train_files.len() + validation_files.as_ref().map_or(0, Vec::len);
    let mut subsets: Vec<&[FileEntry]> = vec![&train_files];
    subsets.extend(validation_files.as_deref());
    let chosen = choose_storage(root, options, &subsets, images)?;
    let decoded_bytes = (images as u64) * options.decode.image_len() as u64;
    let (options_decode, skip_bad, names) = (&options.decode, options.skip_bad, &scan.class_names);
    let mut reused_all = true;
    let block = block_bytes(options.memory_budget.as_ref());
    let mut materialize = |files: &[FileEntry]| -> Result<(ImageSet, Skipped, usize)> {
        match &chosen {
            Chosen::Memory => decode_files(files, names, options_decode, skip_bad),
            Chosen::Disk { dir, larger_than_memory } => {
                let (set, skipped, multi_frame, reused) =
                    cache_files(files, names, options_decode, skip_bad, dir, block, *larger_than_memory)?;
                reused_all &= reused;
                Ok((set, skipped, multi_frame))
            }
            Chosen::Stream => stream_files(files, names, options_decode, skip_bad, block),
        }
    };
    let (training, mut skipped, mut multi_frame) = materialize(&train_files)?;
    let validation = match &validation_files {
        Some(files) => {
            let (set, more, more_multi_frame) = materialize(files)?;
            skipped.extend(more);
            multi_frame += more_multi_frame;
            Some(set)
        }
        None => None,
    };
    report.storage = match &chosen {
        Chosen::Memory => None,
        Chosen::Disk { dir, .. } => Some(format!(
            "Decoded cache: {} on disk at {} (read as needed{})",
            crate::error::human_bytes(decoded_bytes),
            dir.display(),
            if reused_all { ", reused" } else { "" }
        )),
        Chosen::Stream => Some(format!(
            "No cache: the {images} images are decoded again every epoch ({} decoded)",
            crate::error::human_bytes(decoded_bytes)
        )),
    };
    if training.is_empty() {
        return Err(DataError::Config(format!("{}: no readable images", root.display())));
    }
    report.skipped = skipped;
    report.multi_frame = multi_frame;
    if let Some(validation) = &validation {
        report.split = Some((training.len(), validation.len()));
    }
    Ok(Loaded { training, validation, report })
}
