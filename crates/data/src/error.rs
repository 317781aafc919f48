//! Typed errors of the data crate. Every variant names the path involved.

use std::path::PathBuf;
use thiserror::Error;

/// What can go wrong while finding, decoding or importing images.
#[derive(Debug, Error)]
pub enum DataError {
    /// The dataset directory does not exist.
    #[error("{0}: no such directory (expected a folder with one sub-folder per class)")]
    NotFound(PathBuf),
    /// The path exists but is not a directory.
    #[error("{0}: not a directory (expected a folder with one sub-folder per class)")]
    NotADirectory(PathBuf),
    /// The directory has no sub-folders.
    #[error("{0}: no class folders found (expected one sub-folder per class, e.g. {0}/cats/*.png)")]
    NoClassFolders(PathBuf),
    /// A class folder holds no image files.
    #[error("{0}: class folder contains no images (supported: png, jpg, jpeg, bmp, gif, tif, tiff, webp)")]
    EmptyClass(PathBuf),
    /// An explicit class list names a class that has no folder.
    #[error("{path}: class `{class}` has no folder here")]
    MissingClass {
        /// The dataset directory.
        path: PathBuf,
        /// The class without a folder.
        class: String,
    },
    /// A folder is not one of the expected classes (e.g. a test set with a
    /// class the model was not trained on).
    #[error("{path}: folder `{class}` is not one of the known classes ({known})")]
    UnknownClass {
        /// The dataset directory.
        path: PathBuf,
        /// The unexpected folder name.
        class: String,
        /// The known class names, comma-separated.
        known: String,
    },
    /// An image could not be decoded (corrupt, truncated, empty, unsupported).
    #[error("{path}: cannot decode image: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        reason: String,
    },
    /// An image declares more pixels than allowed (a decompression bomb, or a
    /// scan far larger than any network input).
    #[error("{path}: image is {width}x{height}, above the limit of {limit} pixels")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The pixel limit.
        limit: u64,
    },
    /// A file could not be read or written.
    #[error("{}: {}", path.display(), describe_io(error))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error. (Part of the message rather than the error's `source()`,
        /// so that a context chain printed on one line names it once.)
        error: std::io::Error,
    },
    /// A malformed IDX file.
    #[error("{path}: {reason}")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An invalid option (zero image size, split outside (0, 1), ...).
    #[error("{0}")]
    Config(String),
    /// The decoded images fit neither the memory budget nor the cache disk;
    /// nothing was decoded.
    #[error("{0}")]
    TooBigForDisk(Box<TooBig>),
    /// The decoded images would not fit in the memory budget the caller gave
    /// ([`crate::DatasetOptions::memory_budget`]); nothing was decoded.
    #[error(
        "{}: the {images} images decoded at {height}x{width}x{channels} need {}, more than {} available for them ({budget_source}); use a smaller --image-size or fewer images",
        root.display(), human_bytes(*needed), human_bytes(*budget)
    )]
    TooBigForMemory {
        /// The folder.
        root: PathBuf,
        /// Images that would be decoded.
        images: usize,
        /// Decoded height.
        height: usize,
        /// Decoded width.
        width: usize,
        /// Decoded channels.
        channels: usize,
        /// Bytes they need.
        needed: u64,
        /// Bytes the caller allows.
        budget: u64,
        /// Where the budget comes from, e.g. "75% of the 3.0 GB cgroup memory limit".
        budget_source: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), error: source }
    }
}

/// The sizes behind [`DataError::TooBigForDisk`].
#[derive(Debug)]
pub struct TooBig {
    /// The folder.
    pub root: PathBuf,
    /// Images that would be decoded.
    pub images: usize,
    /// Decoded height.
    pub height: usize,
    /// Decoded width.
    pub width: usize,
    /// Decoded channels.
    pub channels: usize,
    /// Bytes they need.
    pub needed: u64,
    /// The memory budget and its source, if any.
    pub memory: Option<(u64, String)>,
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Bytes free there.
    pub free: u64,
}

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the {} images decoded at {}x{}x{} need {}: more than {} and the {} free on the disk at {}; use a smaller --image-size, --cache-dir on a larger disk, or --no-cache to decode them again every epoch",
            self.root.display(),
            self.images,
            self.height,
            self.width,
            self.channels,
            human_bytes(self.needed),
            memory_text(&self.memory),
            human_bytes(self.free),
            self.cache_dir.display()
        )
    }
}

fn memory_text(memory: &Option<(u64, String)>) -> String {
    match memory {
        Some((budget, source)) => format!("the {} available in memory ({source})", human_bytes(*budget)),
        None => "memory allows (--cache disk)".into(),
    }
}

/// An I/O error in words, naming a full disk as such.
/// Whether an I/O error means the disk (or a quota) is full.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    // ENOSPC (28) and EDQUOT (122) on Linux
    matches!(error.raw_os_error(), Some(28) | Some(122)) || error.kind() == std::io::ErrorKind::StorageFull
}

fn describe_io(error: &std::io::Error) -> String {
    if is_disk_full(error) {
        format!("the disk is full ({error}); free some space, or use --cache-dir on another disk")
    } else {
        error.to_string()
    }
}

/// `1.5 GB`, `320.0 MB`, `12.0 KB`: decimal units, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    let bytes = bytes as f64;
    if bytes >= 1e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else if bytes >= 1e6 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.1} KB", bytes / 1e3)
    }
}

/// Result alias for the data crate.
pub type Result<T> = std::result::Result<T, DataError>;
