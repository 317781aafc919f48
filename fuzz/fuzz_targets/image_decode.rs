//! Image decoding through the data crate's decoder (format sniffing, size
//! limits, conversion, resizing), as the loader runs it on every file.
#![no_main]
use convnet_data::decode::{decode_into, DecodeOptions};
use convnet_data::ColorMode;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let options = DecodeOptions { image_size: (16, 16), color_mode: ColorMode::Rgb, max_pixels: 1 << 22, ..DecodeOptions::default() };
    let mut out = vec![0u8; options.image_len()];
    let _ = decode_into(Path::new("fuzz"), data, &options, &mut out);
});
