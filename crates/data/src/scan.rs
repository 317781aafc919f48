//! Finding the images of a folder-per-class tree, as Keras'
//! `image_dataset_from_directory` does.
//!
//! ```text
//! train/
//!   Density1Benign/   a.png  b.png  sub/c.png     <- nested files belong to the class
//!   Density1Malignant/ ...
//! ```
//!
//! Class names are the sub-folder names sorted by their bytes (alphanumerically,
//! as Keras sorts them), and labels are their positions in that order. Files are
//! kept by extension (case-insensitive): png, jpg, jpeg, bmp, gif, tif, tiff,
//! webp, dcm, dicom, and files without an extension that are DICOM (`DICM` at
//! byte 128, as PACS exports name them `IM000001`); everything else (`.DS_Store`, `Thumbs.db`, `notes.txt`) is ignored and
//! counted. Symbolic links are followed only when asked; a link that leads back
//! into a folder already visited is not entered again, so a loop cannot hang the
//! scan.

use crate::error::{DataError, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Extensions of the image files a scan keeps.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "dcm", "dicom"];

/// Which classes to expect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClassNames {
    /// From the sub-folder names, sorted.
    #[default]
    Infer,
    /// Exactly these classes, in this order (labels are their positions). Every
    /// sub-folder must be one of them. With `allow_missing`, a class may lack a
    /// folder (a test set without examples of it); otherwise that is an error.
    Explicit {
        /// The class names.
        names: Vec<String>,
        /// Accept classes that have no folder.
        allow_missing: bool,
    },
}

/// One image file and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path of the file.
    pub path: PathBuf,
    /// Index into the class names.
    pub label: usize,
}

/// The result of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The dataset directory.
    pub root: PathBuf,
    /// Class names; labels index this list.
    pub class_names: Vec<String>,
    /// Image files, sorted by class then path.
    pub files: Vec<FileEntry>,
    /// Files skipped because of their extension.
    pub ignored: usize,
    /// Classes of an explicit list that had no folder.
    pub missing_classes: Vec<String>,
}

impl Scan {
    /// Number of files of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for file in &self.files {
            counts[file.label] += 1;
        }
        counts
    }
}

/// Whether a scan keeps `path`: an image extension, or no extension and a
/// DICOM header (the first 132 bytes are read).
pub fn is_image(path: &Path) -> bool {
    match path.extension() {
        Some(extension) => {
            extension.to_str().is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(e)))
        }
        None => {
            let mut head = [0u8; 132];
            std::fs::File::open(path)
                .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut head))
                .is_ok_and(|()| crate::dicom::is_dicom(&head))
        }
    }
}

fn is_dir(path: &Path, follow_links: bool) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => follow_links && path.is_dir(),
        Ok(meta) => meta.is_dir(),
        Err(_) => false,
    }
}

/// Collects image files under `dir` (recursively) into `files`.
fn walk(
    dir: &Path,
    follow_links: bool,
    visited: &mut HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
    ignored: &mut usize,
) -> Result<()> {
    let canonical = std::fs::canonicalize(dir).map_err(|e| DataError::io(dir, e))?;
    if !visited.insert(canonical) {
        return Ok(()); // a symlink loop or a second link to the same folder
    }
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| DataError::io(&path, e))?;
        if meta.file_type().is_symlink() && !follow_links {
            *ignored += 1;
            continue;
        }
        if path.is_dir() {
            walk(&path, follow_links, visited, files, ignored)?;
        } else if is_image(&path) {
            files.push(path);
        } else {
            *ignored += 1;
        }
    }
    Ok(())
}

/// Scans a folder-per-class tree; see the module docs.
pub fn scan(root: &Path, classes: &ClassNames, follow_links: bool) -> Result<Scan> {
    if !root.exists() {
        return Err(DataError::NotFound(root.to_path_buf()));
    }
    if !root.is_dir() {
        return Err(DataError::NotADirectory(root.to_path_buf()));
    }
    let entries = std::fs::read_dir(root).map_err(|e| DataError::io(root, e))?;
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    let mut ignored = 0;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(root, e))?;
        let path = entry.path();
        if is_dir(&path, follow_links) {
            // a folder name that is not UTF-8 still gets a (lossy) class name
            folders.push((entry.file_name().to_string_lossy().into_owned(), path));
        } else {
            ignored += 1;
        }
    }
    if folders.is_empty() {
        return Err(DataError::NoClassFolders(root.to_path_buf()));
    }
    folders.sort();
    let (class_names, missing_classes) = match classes {
        ClassNames::Infer => (folders.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(), Vec::new()),
        ClassNames::Explicit { names, allow_missing } => {
            if let Some((name, _)) = folders.iter().find(|(name, _)| !names.contains(name)) {
                return Err(DataError::UnknownClass {
                    path: root.to_path_buf(),
                    class: name.clone(),
                    known: names.join(", "),
                });
            }
            let missing: Vec<String> =
                names.iter().filter(|name| !folders.iter().any(|(folder, _)| folder == *name)).cloned().collect();
            if let (Some(class), false) = (missing.first(), allow_missing) {
                return Err(DataError::MissingClass { path: root.to_path_buf(), class: class.clone() });
            }
            (names.clone(), missing)
        }
    };
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    for (name, folder) in &folders {
        let label = class_names.iter().position(|c| c == name).expect("folder checked against the class list");
        let mut class_files = Vec::new();
        walk(folder, follow_links, &mut visited, &mut class_files, &mut ignored)?;
        if class_files.is_empty() {
            return Err(DataError::EmptyClass(folder.clone()));
        }
        files.extend(class_files.into_iter().map(|path| FileEntry { path, label }));
    }
    files.sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
    Ok(Scan { root: root.to_path_buf(), class_names, files, ignored, missing_classes })
}
