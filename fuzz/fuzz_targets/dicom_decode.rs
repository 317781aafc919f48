//! DICOM decoding as the loader runs it on every file: object parsing
//! (dicom-rs), the header checks, pixel-data decompression (RLE, deflate,
//! JPEG, JPEG 2000) and the pixel pipeline (modality LUT, VOI LUT,
//! MONOCHROME1), then conversion and resizing. The input is put behind a
//! 128-byte preamble and `DICM` so that every run reaches the DICOM path.
#![no_main]
use convnet_data::decode::{decode_into, DecodeOptions};
use convnet_data::ColorMode;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    file.extend_from_slice(data.strip_prefix(&file[..]).unwrap_or(data));
    let options =
        DecodeOptions { max_pixels: 1 << 22, ..DecodeOptions::new(convnet_data::InputFormat::new([16, 16], ColorMode::Grayscale)) };
    let mut out = vec![0u8; options.image_len()];
    let _ = decode_into(Path::new("fuzz.dcm"), &file, &options, &mut out);
});
