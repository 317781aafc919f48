//! Hostile and unusual image files through the loader: each is decoded
//! correctly or refused with a clear error, never a panic.

use convnet_data::{load, ColorMode, DataError, DatasetOptions, DecodeOptions, InputFormat};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb};
use std::path::Path;

fn options(size: usize, color_mode: ColorMode) -> DatasetOptions {
    DatasetOptions {
        decode: DecodeOptions::new(InputFormat::new([size, size], color_mode)),
        ..DatasetOptions::default()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

/// Loads a one-file tree and returns the decoded bytes or the error.
fn load_one(name: &str, bytes: &[u8], size: usize, color_mode: ColorMode) -> Result<Vec<u8>, DataError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("class")).unwrap();
    std::fs::write(dir.path().join("class").join(name), bytes).unwrap();
    load(dir.path(), &options(size, color_mode)).map(|loaded| loaded.training.image(0).unwrap().to_vec())
}

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
    bytes
}

#[test]
fn cmyk_jpeg_is_converted_to_rgb() {
    // a 6x4 JPEG in CMYK (0, 255, 255, 0): pure red, written by Pillow
    let pixels = load_one("cmyk.jpg", &fixture("cmyk_red.jpg"), 2, ColorMode::Rgb).unwrap();
    let (red, green, blue) = (pixels[0], pixels[4], pixels[8]);
    assert!(red > 200 && green < 60 && blue < 60, "expected red, got ({red}, {green}, {blue})");
}

#[test]
fn animated_gif_contributes_its_first_frame() {
    let pixels = load_one("anim.gif", &fixture("animated_red_then_blue.gif"), 2, ColorMode::Rgb).unwrap();
    assert_eq!((pixels[0], pixels[4], pixels[8]), (255, 0, 0), "the first frame is red");
}

#[test]
fn wrong_extension_is_decoded_by_content() {
    let png = encode(DynamicImage::ImageLuma8(ImageBuffer::from_pixel(3, 3, Luma([99]))), ImageFormat::Png);
    let pixels = load_one("actually_png.jpg", &png, 3, ColorMode::Grayscale).unwrap();
    assert!(pixels.iter().all(|&v| v == 99));
}

#[test]
fn one_by_one_and_extremely_elongated_images_resize() {
    let dot = encode(DynamicImage::ImageRgb8(ImageBuffer::from_pixel(1, 1, Rgb([1, 2, 3]))), ImageFormat::Png);
    let pixels = load_one("dot.png", &dot, 8, ColorMode::Rgb).unwrap();
    assert_eq!(pixels.len(), 3 * 64);
    assert!(pixels[..64].iter().all(|&v| v == 1) && pixels[128..].iter().all(|&v| v == 3));
    let line = encode(DynamicImage::ImageLuma8(ImageBuffer::from_pixel(1, 10000, Luma([200]))), ImageFormat::Png);
    let pixels = load_one("line.png", &line, 8, ColorMode::Grayscale).unwrap();
    assert!(pixels.iter().all(|&v| v == 200));
    let wide = encode(DynamicImage::ImageLuma8(ImageBuffer::from_pixel(10000, 1, Luma([7]))), ImageFormat::Png);
    assert!(load_one("wide.png", &wide, 8, ColorMode::Grayscale).unwrap().iter().all(|&v| v == 7));
}

#[test]
fn sixteen_bit_grey_values_scale_to_eight_bits() {
    let grey: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(2, 2, Luma([32896u16])); // 128.5 * 256
    let png = encode(DynamicImage::ImageLuma16(grey), ImageFormat::Png);
    let pixels = load_one("g16.png", &png, 2, ColorMode::Grayscale).unwrap();
    assert!(pixels.iter().all(|&v| v == 128), "{pixels:?}");
}

#[test]
fn zero_byte_truncated_and_garbage_files_are_refused_with_the_file_named() {
    let png = encode(DynamicImage::ImageRgb8(ImageBuffer::from_pixel(16, 16, Rgb([5, 5, 5]))), ImageFormat::Png);
    for (name, bytes, needle) in [
        ("empty.png", Vec::new(), "the file is empty"),
        ("cut.png", png[..png.len() / 3].to_vec(), "cannot decode image"),
        ("noise.png", (0..500u32).map(|i| (i * 7919 % 251) as u8).collect(), "cannot decode image"),
        ("header_only.png", png[..8].to_vec(), "cannot decode image"),
    ] {
        let error = load_one(name, &bytes, 4, ColorMode::Rgb).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(name) && text.contains(needle), "{name}: {text}");
    }
}

#[test]
fn a_huge_declared_jpeg_is_refused_by_its_header() {
    // a valid 8x8 JPEG whose SOF0 header is patched to claim 65000 x 65000 pixels
    let jpeg = encode(DynamicImage::ImageRgb8(ImageBuffer::from_pixel(8, 8, Rgb([9, 9, 9]))), ImageFormat::Jpeg);
    let mut bytes = jpeg.clone();
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    // SOF0: FF C0, length (2), precision (1), height (2), width (2)
    bytes[sof + 5..sof + 7].copy_from_slice(&65000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&65000u16.to_be_bytes());
    let error = load_one("bomb.jpg", &bytes, 4, ColorMode::Rgb).unwrap_err();
    assert!(matches!(error, DataError::TooLarge { width: 65000, height: 65000, .. }), "{error}");
}

#[cfg(unix)]
#[test]
fn non_utf8_file_names_load_and_are_reported_lossily() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("class")).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    let png = encode(DynamicImage::ImageLuma8(ImageBuffer::from_pixel(2, 2, Luma([50]))), ImageFormat::Png);
    std::fs::write(dir.path().join("class").join(name), &png).unwrap();
    std::fs::write(dir.path().join("class").join(std::ffi::OsStr::from_bytes(b"bad\xff.png")), b"junk").unwrap();
    let error = load(dir.path(), &options(2, ColorMode::Grayscale)).unwrap_err();
    assert!(error.to_string().contains("bad\u{FFFD}.png: cannot decode image"), "{error}");
    let mut opts = options(2, ColorMode::Grayscale);
    opts.skip_bad = true;
    let loaded = load(dir.path(), &opts).unwrap();
    assert_eq!(loaded.training.len(), 1);
}
