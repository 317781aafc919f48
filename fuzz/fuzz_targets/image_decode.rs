//! Image decoding through the data crate's decoder (format sniffing, size
//! limits, conversion, resizing), as the loader runs it on every file.
#![no_main]
use convnet_data::decode::{decode_into, DecodeOptions};
use convnet_data::ColorMode;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let options = DecodeOptions { max_pixels: 1 << 22, ..DecodeOptions::new(convnet_data::InputFormat::new([16, 16], ColorMode::Rgb)) };
    let mut out = vec![0u8; options.image_len()];
    let _ = decode_into(Path::new("fuzz"), data, &options, &mut out);
});
