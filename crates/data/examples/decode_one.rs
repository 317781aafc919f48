//! Decodes one file as the loader does and prints the result or the error
//! (for trying hostile files, e.g. fuzz artifacts, by hand):
//! `cargo run --release -p convnet-data --example decode_one -- FILE [--dicom-body]`.
use convnet_data::decode::{decode_into, DecodeOptions};
use convnet_data::{ColorMode, InputFormat};
use std::path::Path;

fn main() {
    let path = std::env::args().nth(1).expect("usage: decode_one FILE [--dicom-body]");
    let mut bytes = std::fs::read(&path).expect("readable file");
    if std::env::args().any(|a| a == "--dicom-body") {
        // an artifact of the dicom_decode fuzz target: the bytes after the preamble and DICM
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend_from_slice(&bytes);
        bytes = file;
    }
    let options =
        DecodeOptions { max_pixels: 1 << 22, ..DecodeOptions::new(InputFormat::new([16, 16], ColorMode::Grayscale)) };
    let mut out = vec![0u8; options.image_len()];
    match decode_into(Path::new(&path), &bytes, &options, &mut out) {
        Ok(frames) => println!("decoded ({frames} frames)"),
        Err(error) => println!("{error}"),
    }
}
