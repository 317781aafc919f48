//! Loading a folder-per-class tree into memory, once.
//!
//! [`load`] scans the tree ([`crate::scan`](mod@crate::scan)), splits it if asked, then decodes
//! and resizes every image in parallel (rayon) into one contiguous `u8` buffer,
//! `N x C x H x W`. Epochs after the first read only this cache: nothing is
//! decoded twice. A 5,000-image 224x224 RGB set takes 750 MB as bytes (3 GB as
//! f32, which is why the cache stays `u8` and batches are converted on the fly).

use crate::cache::{cache_key, default_cache_dir, free_space, CacheEntry, CacheFile, Storage};
use crate::decode::{decode_file, DecodeOptions};
use crate::error::{DataError, Result};
use crate::scan::{scan, ClassNames, FileEntry, Scan};
use convnet_tensor::rng::rng_at;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How pixel bytes become network inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelScale {
    /// `x / 255`, in `[0, 1]` (the default; Keras' `Rescaling(1/255)`).
    #[default]
    Unit,
    /// The raw values `0..=255` (what the original Keras script fed its model).
    Raw,
}

impl PixelScale {
    /// The factor that multiplies a byte.
    pub fn factor(self) -> f32 {
        match self {
            PixelScale::Unit => 1.0 / 255.0,
            PixelScale::Raw => 1.0,
        }
    }
}

/// Everything [`load`] needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetOptions {
    /// Size, channels, filter, crop.
    pub decode: DecodeOptions,
    /// Inferred from folders, or an explicit list.
    pub class_names: ClassNames,
    /// Follow symbolic links.
    pub follow_links: bool,
    /// Skip (and list) unreadable images instead of failing.
    pub skip_bad: bool,
    /// Fraction of the files held out for validation, if any.
    pub validation_split: Option<f64>,
    /// Seed of the split.
    pub seed: u64,
    /// The most bytes the decoded images may take, and where that figure comes
    /// from (for the message): checked after scanning, before anything is
    /// decoded ([`DataError::TooBigForMemory`]). `None`: no limit.
    pub memory_budget: Option<(u64, String)>,
    /// Where decoded images are kept ([`Storage::Auto`]: memory if they fit
    /// the budget, else a disk cache).
    pub storage: Storage,
    /// The disk cache's directory; `None`: [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            decode: DecodeOptions::default(),
            class_names: ClassNames::Infer,
            follow_links: false,
            skip_bad: false,
            validation_split: None,
            seed: 42,
            memory_budget: None,
            storage: Storage::Auto,
            cache_dir: None,
        }
    }
}

/// Where an [`ImageSet`]'s decoded pixels are (see [`crate::cache`]).
#[derive(Clone, Debug)]
enum Pixels {
    /// `N x C x H x W` bytes in memory.
    Memory(Vec<u8>),
    /// A cache file on disk, read as batches need it; image `i` is at slot `slots[i]`.
    Disk { file: Arc<CacheFile>, slots: Vec<usize> },
    /// Nowhere: each image is decoded from its file when used.
    Stream { options: DecodeOptions },
}

/// Decoded images, `C x H x W` bytes each, with their labels and paths: in
/// memory, in a cache file on disk, or decoded on use.
#[derive(Clone, Debug)]
pub struct ImageSet {
    class_names: Vec<String>,
    shape: [usize; 3],
    pixels: Pixels,
    labels: Vec<usize>,
    paths: Vec<PathBuf>,
}

impl ImageSet {
    /// Builds a set from raw parts (`pixels` is `N x C x H x W`).
    pub fn from_parts(
        class_names: Vec<String>,
        shape: [usize; 3],
        pixels: Vec<u8>,
        labels: Vec<usize>,
        paths: Vec<PathBuf>,
    ) -> Result<Self> {
        let image_len: usize = shape.iter().product();
        if image_len == 0 || pixels.len() != labels.len() * image_len || paths.len() != labels.len() {
            return Err(DataError::Config(format!(
                "inconsistent image set: {} bytes, {} labels, {} paths, image shape {shape:?}",
                pixels.len(),
                labels.len(),
                paths.len()
            )));
        }
        if let Some(&label) = labels.iter().find(|&&l| l >= class_names.len()) {
            return Err(DataError::Config(format!("label {label} but only {} classes", class_names.len())));
        }
        Ok(ImageSet { class_names, shape, pixels: Pixels::Memory(pixels), labels, paths })
    }

    /// Bytes of decoded pixels held in this process's memory (a mapped or
    /// streamed set holds none of its own).
    pub fn resident_bytes(&self) -> u64 {
        match &self.pixels {
            Pixels::Memory(pixels) => pixels.len() as u64,
            Pixels::Disk { .. } | Pixels::Stream { .. } => 0,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Class names; labels index them.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// `[channels, height, width]` of every image.
    pub fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Labels, one per image.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Source paths, one per image.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The bytes of image `index`, `C x H x W` (decoded now for a streamed
    /// set, which is where an error can come from).
    pub fn image(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        let len = self.shape.iter().product::<usize>();
        Ok(match &self.pixels {
            Pixels::Memory(pixels) => Cow::Borrowed(&pixels[index * len..(index + 1) * len]),
            Pixels::Disk { file, slots } => {
                let mut bytes = vec![0u8; len];
                file.read_slot(slots[index], &mut bytes)?;
                Cow::Owned(bytes)
            }
            Pixels::Stream { options } => {
                let mut bytes = vec![0u8; len];
                decode_file(&self.paths[index], options, &mut bytes)?;
                Cow::Owned(bytes)
            }
        })
    }

    /// Asks the kernel to start reading the images `indices` of a set on disk
    /// now, without waiting (`posix_fadvise(WILLNEED)`), so they are in memory
    /// when a batch is assembled from them; a no-op for the other storages.
    pub fn prefetch(&self, indices: &[usize]) {
        if let Pixels::Disk { file, slots } = &self.pixels {
            for &index in indices {
                file.will_need(slots[index]);
            }
        }
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }

    /// Writes the images `indices` into `out` (`len x C x H x W` floats, scaled)
    /// and their labels into `labels` (cleared first). Only a streamed set,
    /// which decodes here, can fail.
    pub fn fill_batch(
        &self,
        indices: &[usize],
        scale: PixelScale,
        out: &mut [f32],
        labels: &mut Vec<usize>,
    ) -> Result<()> {
        let len = self.shape.iter().product::<usize>();
        let factor = scale.factor();
        labels.clear();
        labels.extend(indices.iter().map(|&index| self.labels[index]));
        let convert = |dst: &mut [f32], src: &[u8]| {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as f32 * factor;
            }
        };
        match &self.pixels {
            Pixels::Stream { .. } => {
                // decode the batch's files in parallel, each into its own slot
                out[..indices.len() * len].par_chunks_mut(len).zip(indices.par_iter()).try_for_each(|(dst, &index)| {
                    convert(dst, &self.image(index)?);
                    Ok(())
                })
            }
            Pixels::Disk { file, slots } => {
                // one reused buffer, read on the loader thread: the disk already
                // works ahead (prefetch), and the training threads keep the cores
                let mut bytes = vec![0u8; len];
                for (slot, &index) in indices.iter().enumerate() {
                    file.read_slot(slots[index], &mut bytes)?;
                    convert(&mut out[slot * len..(slot + 1) * len], &bytes);
                }
                Ok(())
            }
            _ => {
                for (slot, &index) in indices.iter().enumerate() {
                    let image = self.image(index)?;
                    convert(&mut out[slot * len..(slot + 1) * len], &image);
                }
                Ok(())
            }
        }
    }
}

/// What a load found, for the Keras-style summary.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// The directory.
    pub root: PathBuf,
    /// Image files found.
    pub files: usize,
    /// Class names.
    pub class_names: Vec<String>,
    /// Files per class (before skipping bad ones).
    pub class_counts: Vec<usize>,
    /// Files ignored because of their extension.
    pub ignored: usize,
    /// Classes of an explicit list without a folder.
    pub missing_classes: Vec<String>,
    /// Files that could not be decoded and were skipped, with the reason
    /// (the reason does not repeat the path).
    pub skipped: Vec<(PathBuf, String)>,
    /// Images used for training and for validation (when split), after
    /// skipping unreadable ones.
    pub split: Option<(usize, usize)>,
    /// Where the decoded images are, when not simply in memory, e.g.
    /// "Decoded cache: 6.0 GB on disk at DIR (read as needed)".
    pub storage: Option<String>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped.is_empty() {
            writeln!(f, "Found {} files belonging to {} classes.", self.files, self.class_names.len())?;
        } else {
            writeln!(
                f,
                "Found {} files belonging to {} classes; {} unreadable skipped, {} used.",
                self.files,
                self.class_names.len(),
                self.skipped.len(),
                self.files - self.skipped.len()
            )?;
        }
        if let Some((training, validation)) = self.split {
            writeln!(f, "Using {training} files for training and {validation} for validation.")?;
        }
        let width = self.class_names.iter().map(|n| n.len()).max().unwrap_or(0);
        for (name, count) in self.class_names.iter().zip(&self.class_counts) {
            let share = 100.0 * *count as f64 / self.files.max(1) as f64;
            writeln!(f, "  {name:<width$} {count:>7} ({share:5.1}%)")?;
        }
        if self.ignored > 0 {
            writeln!(f, "Ignored {} files that are not images (by extension).", self.ignored)?;
        }
        if let Some(storage) = &self.storage {
            writeln!(f, "{storage}")?;
        }
        for class in &self.missing_classes {
            writeln!(f, "Warning: class `{class}` has no folder in {}.", self.root.display())?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "Skipped {} unreadable images:", self.skipped.len())?;
            for (path, reason) in &self.skipped {
                writeln!(f, "  {}: {reason}", path.display())?;
            }
            writeln!(f, "Per class after skipping: {}", self.used_counts_text())?;
        }
        Ok(())
    }
}

impl LoadReport {
    /// `name count, ...` of the images used per class.
    fn used_counts_text(&self) -> String {
        let mut counts = self.class_counts.clone();
        for (path, _) in &self.skipped {
            // the class of a skipped file is its folder under the root
            let class = path.strip_prefix(&self.root).ok().and_then(|p| p.iter().next()).map(|c| c.to_string_lossy());
            if let Some(index) = class.and_then(|c| self.class_names.iter().position(|n| *n == c)) {
                counts[index] = counts[index].saturating_sub(1);
            }
        }
        let parts: Vec<String> = self.class_names.iter().zip(&counts).map(|(n, c)| format!("{n} {c}")).collect();
        parts.join(", ")
    }
}

/// A loaded dataset: training images, validation images if split, and the report.
#[derive(Debug)]
pub struct Loaded {
    /// All images, or the training subset when split.
    pub training: ImageSet,
    /// The validation subset, when `validation_split` was set.
    pub validation: Option<ImageSet>,
    /// What was found.
    pub report: LoadReport,
}

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
/// are dropped and returned.
pub fn decode_files(
    files: &[FileEntry],
    class_names: &[String],
    options: &DecodeOptions,
    skip_bad: bool,
) -> Result<(ImageSet, Vec<(PathBuf, String)>)> {
    let image_len = options.image_len();
    if image_len == 0 {
        return Err(DataError::Config("image size must be positive".into()));
    }
    let mut pixels = vec![0u8; files.len() * image_len];
    let results: Vec<Result<()>> = pixels
        .par_chunks_mut(image_len)
        .zip(files.par_iter())
        .map(|(out, file)| decode_file(&file.path, options, out))
        .collect();
    let mut skipped = Vec::new();
    let mut keep = Vec::with_capacity(files.len());
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => keep.push(index),
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
    let (height, width) = options.image_size;
    let set = ImageSet::from_parts(
        class_names.to_vec(),
        [options.color_mode.channels(), height, width],
        pixels,
        labels,
        paths,
    )?;
    Ok((set, skipped))
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
/// reason)` of the files that failed, or the first failure without `skip_bad`.
fn decode_in_blocks(
    files: &[FileEntry],
    options: &DecodeOptions,
    skip_bad: bool,
    block_bytes: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Vec<(usize, String)>> {
    let image_len = options.image_len();
    let per_block = (block_bytes / image_len.max(1)).max(1);
    let mut buffer = Vec::new();
    let mut skipped = Vec::new();
    for (block, chunk) in files.chunks(per_block).enumerate() {
        buffer.clear();
        buffer.resize(chunk.len() * image_len, 0u8);
        let results: Vec<Result<()>> = buffer
            .par_chunks_mut(image_len)
            .zip(chunk.par_iter())
            .map(|(out, file)| decode_file(&file.path, options, out).inspect_err(|_| out.fill(0)))
            .collect();
        for (offset, result) in results.into_iter().enumerate() {
            match result {
                Ok(()) => {}
                Err(error) if skip_bad => {
                    let file = &chunk[offset];
                    skipped.push((block * per_block + offset, reason_without_path(&file.path, &error)));
                }
                Err(error) => return Err(error),
            }
        }
        sink(&buffer)?;
    }
    Ok(skipped)
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
    let (height, width) = options.image_size;
    let set = ImageSet {
        class_names: class_names.to_vec(),
        shape: [options.color_mode.channels(), height, width],
        labels: kept.iter().map(|&i| files[i].label).collect(),
        paths: kept.iter().map(|&i| files[i].path.clone()).collect(),
        pixels: pixels(kept),
    };
    (set, skipped.iter().map(|(slot, reason)| (files[*slot].path.clone(), reason.clone())).collect())
}

/// Decodes `files` once into the cache file of `dir` (or reuses a valid one)
/// and maps it. Returns the set, the skipped files and whether the cache was reused.
pub fn cache_files(
    files: &[FileEntry],
    class_names: &[String],
    options: &DecodeOptions,
    skip_bad: bool,
    dir: &Path,
    block_bytes: usize,
    larger_than_memory: bool,
) -> Result<(ImageSet, Skipped, bool)> {
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
    Ok((set, skipped, reused))
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
) -> Result<(ImageSet, Vec<(PathBuf, String)>)> {
    let skipped = decode_in_blocks(files, options, skip_bad, block_bytes, &mut |_| Ok(()))?;
    Ok(kept_set(files, class_names, options, &skipped, |_| Pixels::Stream { options: options.clone() }))
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
            height: decode.image_size.0,
            width: decode.image_size.1,
            channels: decode.color_mode.channels(),
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
            height: decode.image_size.0,
            width: decode.image_size.1,
            channels: decode.color_mode.channels(),
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
    let (height, width) = options.decode.image_size;
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
    let mut materialize = |files: &[FileEntry]| -> Result<(ImageSet, Vec<(PathBuf, String)>)> {
        match &chosen {
            Chosen::Memory => decode_files(files, names, options_decode, skip_bad),
            Chosen::Disk { dir, larger_than_memory } => {
                let (set, skipped, reused) =
                    cache_files(files, names, options_decode, skip_bad, dir, block, *larger_than_memory)?;
                reused_all &= reused;
                Ok((set, skipped))
            }
            Chosen::Stream => stream_files(files, names, options_decode, skip_bad, block),
        }
    };
    let (training, mut skipped) = materialize(&train_files)?;
    let validation = match &validation_files {
        Some(files) => {
            let (set, more) = materialize(files)?;
            skipped.extend(more);
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
    if let Some(validation) = &validation {
        report.split = Some((training.len(), validation.len()));
    }
    Ok(Loaded { training, validation, report })
}
