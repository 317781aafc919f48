//! Where decoded images live: in memory, in a cache file on disk read as
//! batches need it, or nowhere (decoded again every epoch).
//!
//! ## Choosing
//!
//! [`Storage::Auto`] (the default) keeps a set in memory when its decoded size
//! fits the memory budget the caller gives ([`crate::DatasetOptions::memory_budget`]),
//! and otherwise writes it once to a cache file and reads each batch's images
//! from it (positioned reads in parallel, asked for a few batches ahead): the
//! kernel's page cache keeps what fits and drops it under memory pressure, so
//! resident memory stays bounded whatever the number of images. (A memory map
//! was tried first: under a tight cgroup limit its page faults on shuffled
//! images fell back to 4 KB reads, 50-70 MB/s; positioned reads of whole
//! images do not.) When
//! neither memory nor the cache disk can take the set, loading refuses before
//! decoding anything.
//!
//! ## The cache file
//!
//! `DIR/<key>.pixels` holds the decoded images back to back (`C x H x W` bytes
//! each, in file order, a skipped file's slot left zero), `DIR/<key>.json` what
//! is needed to trust it: the number of files, the image size, the files
//! skipped and why. The key is a 64-bit FNV-1a hash of the format version, the
//! decode options and every file's path, size, modification time and label: a
//! changed, added or removed file, or other decode options, give another key,
//! and so a fresh cache. The pixel file is renamed into place only when
//! complete, and the JSON written after it, so a run killed while writing
//! leaves no cache that looks valid.

use crate::decode::DecodeOptions;
use crate::error::{DataError, Result};
use crate::scan::FileEntry;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the cache format, part of every key.
const FORMAT: u32 = 1;

/// Where a data set's decoded images are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Memory if the set fits the memory budget, else a disk cache.
    #[default]
    Auto,
    /// In memory (refused if over the budget).
    Memory,
    /// A cache file on disk, read as batches need it.
    Disk,
    /// Nothing kept: every image decoded again each time it is used.
    Stream,
}

impl Storage {
    /// `auto`, `memory`, `disk` or `stream` (also `none`).
    pub fn parse(text: &str) -> Option<Storage> {
        match text {
            "auto" => Some(Storage::Auto),
            "memory" => Some(Storage::Memory),
            "disk" => Some(Storage::Disk),
            "stream" | "none" => Some(Storage::Stream),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn as_str(&self) -> &'static str {
        match self {
            Storage::Auto => "auto",
            Storage::Memory => "memory",
            Storage::Disk => "disk",
            Storage::Stream => "stream",
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/convnet`, else
/// `~/.cache/convnet`, else the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("convnet");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("convnet");
    }
    std::env::temp_dir().join("convnet-cache")
}

/// Bytes free for an unprivileged user on the file system holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a properly
    // sized, writable statvfs that the call fills in.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }
}

/// 64-bit FNV-1a: a stable hash (the same on every machine and Rust version).
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for &byte in bytes {
        *hash ^= byte as u64;
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

/// The cache key of `files` decoded with `options` (see the module docs).
pub fn cache_key(files: &[FileEntry], options: &DecodeOptions) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    fnv1a(&mut hash, &FORMAT.to_le_bytes());
    // what decoding depends on (not the pixel scale, applied to batches later)
    let format = &options.format;
    let decoding = (
        format.image_size,
        format.color_mode,
        format.interpolation,
        format.crop_to_aspect_ratio,
        format.resize_shorter,
        format.crop_content,
        format.bit_depth,
    );
    fnv1a(&mut hash, format!("{decoding:?} {}", options.max_pixels).as_bytes());
    for file in files {
        let metadata = std::fs::metadata(&file.path).map_err(|e| DataError::io(&file.path, e))?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        fnv1a(&mut hash, file.path.as_os_str().as_bytes());
        fnv1a(&mut hash, &[0]);
        fnv1a(&mut hash, &metadata.len().to_le_bytes());
        fnv1a(&mut hash, &modified.to_le_bytes());
        fnv1a(&mut hash, &(file.label as u64).to_le_bytes());
    }
    Ok(format!("{hash:016x}"))
}

/// What `<key>.json` says about `<key>.pixels`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheInfo {
    /// Cache format version.
    pub format: u32,
    /// Files (slots) in the pixel file.
    pub files: usize,
    /// Bytes per image.
    pub image_len: usize,
    /// `(slot, reason)` of the files that could not be decoded.
    pub skipped: Vec<(usize, String)>,
    /// Files with several frames (DICOM), of which the first was used.
    #[serde(default)]
    pub multi_frame: usize,
}

/// The two files of one cache entry.
#[derive(Clone, Debug)]
pub struct CacheEntry {
    /// `DIR/<key>.pixels`.
    pub pixels: PathBuf,
    /// `DIR/<key>.json`.
    pub info: PathBuf,
}

impl CacheEntry {
    /// The entry of `key` in `dir`.
    pub fn new(dir: &Path, key: &str) -> CacheEntry {
        CacheEntry { pixels: dir.join(format!("{key}.pixels")), info: dir.join(format!("{key}.json")) }
    }

    /// The entry's description if it is complete and matches `files` x `image_len`.
    pub fn read_valid(&self, files: usize, image_len: usize) -> Option<CacheInfo> {
        let info: CacheInfo = serde_json::from_str(&std::fs::read_to_string(&self.info).ok()?).ok()?;
        let length = std::fs::metadata(&self.pixels).ok()?.len();
        let valid = info.format == FORMAT
            && info.files == files
            && info.image_len == image_len
            && length == (files as u64) * (image_len as u64);
        valid.then_some(info)
    }

    /// Writes the pixel file from `blocks` (each a run of whole images, in slot
    /// order), then the description: atomically, so an interrupted write leaves
    /// no valid-looking entry.
    pub fn write(
        &self,
        image_len: usize,
        files: usize,
        mut blocks: impl FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<(Vec<(usize, String)>, usize)>,
    ) -> Result<CacheInfo> {
        let dir = self.pixels.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let tmp = self.pixels.with_extension(format!("pixels.tmp-{}", std::process::id()));
        let result = (|| -> Result<CacheInfo> {
            let mut file = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&tmp).map_err(|e| DataError::io(&self.pixels, e))?,
            );
            let mut written = 0u64;
            let (skipped, multi_frame) = blocks(&mut |bytes: &[u8]| {
                written += bytes.len() as u64;
                file.write_all(bytes).map_err(|e| DataError::io(&self.pixels, e))
            })?;
            if written != (files as u64) * (image_len as u64) {
                return Err(DataError::Config(format!("cache: wrote {written} bytes for {files} images")));
            }
            let file = file.into_inner().map_err(|e| DataError::io(&self.pixels, e.into_error()))?;
            file.sync_all().map_err(|e| DataError::io(&self.pixels, e))?;
            std::fs::rename(&tmp, &self.pixels).map_err(|e| DataError::io(&self.pixels, e))?;
            let info = CacheInfo { format: FORMAT, files, image_len, skipped, multi_frame };
            let text = serde_json::to_string(&info).expect("the description serializes");
            let info_tmp = self.info.with_extension(format!("json.tmp-{}", std::process::id()));
            std::fs::write(&info_tmp, text).map_err(|e| DataError::io(&self.info, e))?;
            std::fs::rename(&info_tmp, &self.info).map_err(|e| DataError::io(&self.info, e))?;
            Ok(info)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(self.info.with_extension(format!("json.tmp-{}", std::process::id())));
        }
        result
    }

    /// Opens the pixel file for reading images of `image_len` bytes. With
    /// `drop_after_read` (a cache larger than the memory available), each
    /// image's pages are dropped from the page cache once read: they could not
    /// all stay anyway, and dropping them at once costs less than the kernel
    /// reclaiming them under memory pressure.
    pub fn open(&self, image_len: usize, drop_after_read: bool) -> Result<CacheFile> {
        let file = std::fs::File::open(&self.pixels).map_err(|e| DataError::io(&self.pixels, e))?;
        // Batches read images in a shuffled order: the kernel's read-ahead
        // (read_ahead_kb, often megabytes) would pull in far more than the
        // image asked for and evict what the next batches need. Random access
        // turns it off; the loader asks for each batch's images ahead of time
        // instead (CacheFile::will_need).
        advise(&file, 0, 0, libc::POSIX_FADV_RANDOM);
        Ok(CacheFile { file, path: self.pixels.clone(), image_len, drop_after_read })
    }
}

/// `posix_fadvise` on `file`; advice only, so a failure changes nothing.
fn advise(file: &std::fs::File, offset: u64, len: u64, advice: libc::c_int) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid open file descriptor; posix_fadvise reads no memory of ours.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset as libc::off_t, len as libc::off_t, advice);
    }
}

/// An open cache file: images read with positioned reads, so any number of
/// threads can read at once, and memory holds only what the kernel caches
/// (reclaimable, and bounded by a cgroup's limit).
#[derive(Debug)]
pub struct CacheFile {
    file: std::fs::File,
    path: PathBuf,
    image_len: usize,
    drop_after_read: bool,
}

impl CacheFile {
    /// Reads the image in `slot` into `out` (`image_len` bytes).
    pub fn read_slot(&self, slot: usize, out: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let offset = (slot * self.image_len) as u64;
        self.file.read_exact_at(out, offset).map_err(|e| DataError::io(&self.path, e))?;
        if self.drop_after_read {
            advise(&self.file, offset, self.image_len as u64, libc::POSIX_FADV_DONTNEED);
        }
        Ok(())
    }

    /// Asks the kernel to start reading the image in `slot` (see
    /// [`crate::ImageSet::prefetch`]).
    pub fn will_need(&self, slot: usize) {
        advise(&self.file, (slot * self.image_len) as u64, self.image_len as u64, libc::POSIX_FADV_WILLNEED);
    }
}
