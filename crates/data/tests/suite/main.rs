//! The data crate's integration tests, one binary (each a module below).

mod cache;
mod depth;
mod dicom;
mod hostile;
mod loading;
