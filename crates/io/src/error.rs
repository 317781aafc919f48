//! The one error type of this crate. Each message is complete on its own
//! line (the binary prints it as it is); none repeats a path another already
//! names.

use std::path::PathBuf;
use thiserror::Error;

/// What can go wrong reading or writing a model file or a report.
#[derive(Debug, Error)]
pub enum IoError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file could not be written; the previous version, if any, is intact.
    #[error("cannot write {}: {}", path.display(), describe_write_error(error))]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file was read but is not what it should be.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes or metadata that are not a valid model (no file named yet).
    #[error("{0}")]
    Format(String),
    /// The engine refused the architecture or an input.
    #[error(transparent)]
    Tensor(#[from] convnet_tensor::TensorError),
    /// The data set could not be read.
    #[error(transparent)]
    Data(#[from] convnet_data::DataError),
}

fn describe_write_error(error: &std::io::Error) -> String {
    if convnet_data::error::is_disk_full(error) {
        format!("the disk is full ({error}); free some space and run again")
    } else {
        error.to_string()
    }
}

/// The result of this crate's functions.
pub type Result<T, E = IoError> = std::result::Result<T, E>;
