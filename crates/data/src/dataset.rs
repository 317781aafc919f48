//! A decoded image set, its options and its load report.
//!
//! [`crate::load::load`] scans the tree ([`crate::scan`](mod@crate::scan)), splits it if asked, then decodes
//! and resizes every image in parallel (rayon) into one contiguous `u8` buffer,
//! `N x C x H x W`. Epochs after the first read only this cache: nothing is
//! decoded twice. A 5,000-image 224x224 RGB set takes 750 MB as bytes (3 GB as
//! f32, which is why the cache stays `u8` and batches are converted on the fly).

use crate::cache::{CacheFile, Storage};
use crate::decode::{decode_file, DecodeOptions};
use crate::error::{DataError, Result};
use crate::format::BitDepth;
pub use crate::format::PixelScale;
use crate::scan::ClassNames;
use rayon::prelude::*;
use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything [`crate::load::load`] needs to know.
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
    /// The disk cache's directory; `None`: [`crate::cache::default_cache_dir`].
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
pub(crate) enum Pixels {
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
    pub(crate) class_names: Vec<String>,
    pub(crate) shape: [usize; 3],
    /// Bytes per sample: 1, or 2 for a 16-bit set.
    pub(crate) depth: BitDepth,
    pub(crate) pixels: Pixels,
    pub(crate) labels: Vec<usize>,
    pub(crate) paths: Vec<PathBuf>,
}

impl ImageSet {
    /// Builds a set from raw parts (`pixels` is `N x C x H x W` bytes).
    pub fn from_parts(
        class_names: Vec<String>,
        shape: [usize; 3],
        pixels: Vec<u8>,
        labels: Vec<usize>,
        paths: Vec<PathBuf>,
    ) -> Result<Self> {
        Self::from_samples(class_names, (shape, BitDepth::Eight), pixels, labels, paths)
    }

    /// Builds a set from raw parts: `pixels` holds `N x C x H x W` samples of
    /// `depth` (16-bit ones as little-endian pairs).
    pub fn from_samples(
        class_names: Vec<String>,
        (shape, depth): ([usize; 3], BitDepth),
        pixels: Vec<u8>,
        labels: Vec<usize>,
        paths: Vec<PathBuf>,
    ) -> Result<Self> {
        let image_len = shape.iter().product::<usize>() * depth.bytes();
        if image_len == 0 || pixels.len() != labels.len() * image_len || paths.len() != labels.len() {
            return Err(DataError::Config(format!(
                "inconsistent image set: {} bytes, {} labels, {} paths, image shape {shape:?} of {depth:?}",
                pixels.len(),
                labels.len(),
                paths.len()
            )));
        }
        if let Some(&label) = labels.iter().find(|&&l| l >= class_names.len()) {
            return Err(DataError::Config(format!("label {label} but only {} classes", class_names.len())));
        }
        Ok(ImageSet { class_names, shape, depth, pixels: Pixels::Memory(pixels), labels, paths })
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

    /// Bits per sample of the decoded images.
    pub fn depth(&self) -> BitDepth {
        self.depth
    }

    /// Bytes of one decoded image.
    fn image_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.depth.bytes()
    }

    /// The bytes of image `index`, `C x H x W` samples of [`ImageSet::depth`]
    /// (decoded now for a streamed set, which is where an error can come from).
    pub fn image(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        let len = self.image_bytes();
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
        labels.clear();
        labels.extend(indices.iter().map(|&index| self.labels[index]));
        let convert = |dst: &mut [f32], src: &[u8]| self.depth.to_inputs(scale, src, dst);
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
                let mut bytes = vec![0u8; self.image_bytes()];
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
    /// Files with several frames (DICOM), of which the first is used.
    pub multi_frame: usize,
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
        if self.multi_frame > 0 {
            let files = if self.multi_frame == 1 { "file has" } else { "files have" };
            writeln!(f, "{} DICOM {files} several frames: the first frame of each is used.", self.multi_frame)?;
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
