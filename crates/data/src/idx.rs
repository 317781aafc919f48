//! The IDX format of the MNIST family (MNIST, Fashion-MNIST, KMNIST, EMNIST),
//! and its export as a folder-per-class PNG tree.
//!
//! An IDX file is: two zero bytes, a type byte (`0x08` = unsigned byte, the
//! only type these data sets use), a byte with the number of dimensions `d`,
//! then `d` big-endian `u32` sizes, then the values in row-major order. Images
//! are `(count, rows, cols)`, labels `(count,)`. Files may be gzip-compressed
//! (detected from the content, not the name).

use crate::error::{DataError, Result};
use convnet_tensor::rng::rng_at;
use flate2::read::GzDecoder;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// A decoded IDX array of bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of the dimensions.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

fn idx_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Idx { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads an IDX file of unsigned bytes (gzip-compressed or not).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 4];
    let header_read = reader.read(&mut magic[..2]).map_err(|e| DataError::io(path, e))?;
    let mut reader: Box<dyn Read> = if header_read == 2 && magic[..2] == [0x1f, 0x8b] {
        let rest = std::io::Cursor::new(magic[..2].to_vec()).chain(reader);
        Box::new(GzDecoder::new(rest))
    } else {
        Box::new(std::io::Cursor::new(magic[..header_read].to_vec()).chain(reader))
    };
    let mut read_exact = |buf: &mut [u8], what: &str| {
        reader.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => idx_error(path, format!("truncated: the file ends inside the {what}")),
            _ => idx_error(path, format!("cannot read the {what}: {e}")),
        })
    };
    read_exact(&mut magic, "header")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(idx_error(path, "not an IDX file (bad magic number)"));
    }
    if magic[2] != 0x08 {
        return Err(idx_error(
            path,
            format!("IDX element type 0x{:02x} is not supported (only 0x08, unsigned byte)", magic[2]),
        ));
    }
    let rank = magic[3] as usize;
    if rank == 0 {
        return Err(idx_error(path, "IDX file declares zero dimensions"));
    }
    let mut dims = Vec::with_capacity(rank);
    for _ in 0..rank {
        let mut size = [0u8; 4];
        read_exact(&mut size, "dimension sizes")?;
        dims.push(u32::from_be_bytes(size) as usize);
    }
    let declared = dims.iter().try_fold(1usize, |total, &d| total.checked_mul(d));
    let declared = match declared {
        Some(n) if n <= 1 << 34 => n,
        _ => return Err(idx_error(path, format!("dimensions {dims:?} are implausibly large"))),
    };
    // Read no more than declared, without trusting the header for allocation.
    let mut data = Vec::with_capacity(declared.min(1 << 26));
    let got = reader
        .by_ref()
        .take(declared as u64)
        .read_to_end(&mut data)
        .map_err(|e| idx_error(path, format!("cannot read the data: {e}")))?;
    if got < declared {
        return Err(idx_error(path, format!("truncated: dimensions {dims:?} need {declared} bytes, found {got}")));
    }
    let mut extra = [0u8; 1];
    if reader.read(&mut extra).map_err(|e| idx_error(path, e.to_string()))? > 0 {
        return Err(idx_error(path, format!("longer than its dimensions {dims:?} say")));
    }
    Ok(IdxArray { dims, data })
}

/// Images and labels read from a matching IDX pair.
#[derive(Clone, Debug)]
pub struct IdxPair {
    /// Number of images.
    pub count: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// `count x rows x cols` bytes.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
}

/// Reads and cross-checks an images file `(count, rows, cols)` and a labels file
/// `(count,)`.
pub fn read_pair(images: &Path, labels: &Path) -> Result<IdxPair> {
    let image_array = read_idx(images)?;
    let label_array = read_idx(labels)?;
    if image_array.dims.len() != 3 {
        return Err(idx_error(
            images,
            format!("expected 3 dimensions (count, rows, cols), found {:?}", image_array.dims),
        ));
    }
    if label_array.dims.len() != 1 {
        return Err(idx_error(labels, format!("expected 1 dimension (count), found {:?}", label_array.dims)));
    }
    let (count, rows, cols) = (image_array.dims[0], image_array.dims[1], image_array.dims[2]);
    if label_array.dims[0] != count {
        return Err(idx_error(
            labels,
            format!("{} labels for {count} images in {}", label_array.dims[0], images.display()),
        ));
    }
    if rows == 0 || cols == 0 {
        return Err(idx_error(images, "images have zero size"));
    }
    Ok(IdxPair { count, rows, cols, pixels: image_array.data, labels: label_array.data })
}

/// What [`export_png_tree`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// Class folder names, by label.
    pub class_names: Vec<String>,
    /// Images written per class.
    pub written: Vec<usize>,
}

/// Writes `pair` as `out/<class>/<index>.png` (index = position in the IDX
/// file, zero-padded). `class_names[label]` names the folders (default: the
/// label number). With `limit_per_class`, a seeded random subset of each class
/// is written.
pub fn export_png_tree(
    pair: &IdxPair,
    out: &Path,
    class_names: Option<&[String]>,
    limit_per_class: Option<usize>,
    seed: u64,
) -> Result<ExportReport> {
    let classes = pair.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let names: Vec<String> = match class_names {
        Some(names) => {
            if names.len() < classes {
                return Err(DataError::Config(format!(
                    "{} class names given, but the labels go up to {}",
                    names.len(),
                    classes - 1
                )));
            }
            if let Some(bad) = names.iter().find(|n| n.is_empty() || n.contains(['/', '\\']) || *n == "." || *n == "..")
            {
                return Err(DataError::Config(format!("`{bad}` cannot be a folder name")));
            }
            names.to_vec()
        }
        None => (0..classes).map(|c| c.to_string()).collect(),
    };
    let mut chosen: Vec<usize> = Vec::new();
    for class in 0..names.len() {
        let mut members: Vec<usize> = (0..pair.count).filter(|&i| pair.labels[i] as usize == class).collect();
        if let Some(limit) = limit_per_class {
            members.shuffle(&mut rng_at(seed, class as u64));
            members.truncate(limit);
            members.sort_unstable();
        }
        chosen.extend(members);
    }
    for name in &names {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    }
    let digits = pair.count.max(1).to_string().len();
    let image_len = pair.rows * pair.cols;
    chosen.par_iter().try_for_each(|&index| {
        let path: PathBuf = out.join(&names[pair.labels[index] as usize]).join(format!("{index:0digits$}.png"));
        let pixels = &pair.pixels[index * image_len..(index + 1) * image_len];
        image::save_buffer(&path, pixels, pair.cols as u32, pair.rows as u32, image::ExtendedColorType::L8)
            .map_err(|e| DataError::Decode { path: path.clone(), reason: format!("cannot write PNG: {e}") })
    })?;
    let mut written = vec![0; names.len()];
    for &index in &chosen {
        written[pair.labels[index] as usize] += 1;
    }
    Ok(ExportReport { class_names: names, written })
}
