//! Atomic file writes: to a temporary file in the same directory, flushed to
//! disk, then renamed over the target, so a crash, a kill or a full disk
//! leaves either the old file or the new one, never a torn one, and no
//! temporary file behind.

use crate::error::{IoError, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
///
/// On failure the previous version of `path` is untouched, the temporary file
/// is removed, and the error names `path` (and says so when the disk is full).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let write_error = |error| IoError::Write { path: path.to_path_buf(), error };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| write_error(std::io::Error::other("not a file path")))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_error(error));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_the_previous_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        write_atomic(&path, b"version 1").unwrap();
        // make the temporary file impossible to create: a directory sits at its path
        let blocker = dir.path().join(format!(".checkpoint.safetensors.tmp-{}", std::process::id()));
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("inside"), b"x").unwrap();
        let error = write_atomic(&path, b"version 2").unwrap_err();
        assert!(error.to_string().starts_with(&format!("cannot write {}", path.display())), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"version 1");
        std::fs::remove_dir_all(&blocker).unwrap();
        write_atomic(&path, b"version 2").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"version 2");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind: {leftovers:?}");
    }

    #[test]
    fn a_full_disk_is_named() {
        let error = IoError::Write { path: "m.safetensors".into(), error: std::io::Error::from_raw_os_error(28) };
        assert!(error.to_string().starts_with("cannot write m.safetensors: the disk is full"), "{error}");
    }
}
