//! DICOM input: the fixtures of `tests/fixtures/dicom` (written by
//! `make_fixtures.py` with pydicom, see its docstring) store one picture in many
//! ways; each must decode to exactly that picture. Hostile variants are made
//! here from the valid files and must be refused with a one-line error.

use convnet_data::decode::{decode_into, DecodeOptions};
use convnet_data::{load, ColorMode, DataError, DatasetOptions, InputFormat};
use std::path::{Path, PathBuf};

const ROWS: usize = 24;
const COLS: usize = 32;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap()
}

/// The expected picture, `channels x ROWS x COLS` in CHW order.
fn expected(name: &str) -> Vec<u8> {
    let image = image::open(dir().join(name)).unwrap();
    match image.color() {
        image::ColorType::L8 => image.to_luma8().into_raw(),
        _ => {
            let rgb = image.to_rgb8();
            (0..3).flat_map(|c| rgb.pixels().map(move |p| p[c]).collect::<Vec<_>>()).collect()
        }
    }
}

fn options(color_mode: ColorMode) -> DecodeOptions {
    DecodeOptions::new(InputFormat::new([ROWS, COLS], color_mode))
}

fn decode(name: &str, bytes: &[u8], color_mode: ColorMode) -> Result<(Vec<u8>, u32), DataError> {
    let options = options(color_mode);
    let mut out = vec![0u8; options.image_len()];
    decode_into(Path::new(name), bytes, &options, &mut out).map(|frames| (out, frames))
}

#[test]
fn every_grey_encoding_decodes_to_the_same_picture() {
    let picture = expected("expected.png");
    assert_eq!(picture.len(), ROWS * COLS);
    assert_eq!((picture.iter().min(), picture.iter().max()), (Some(&0), Some(&255)), "the fixture spans 0..255");
    for name in [
        "mono2_8bit.dcm",
        "mono1_8bit.dcm",
        "mono2_12bit.dcm",
        "mono2_12bit_junk.dcm",
        "mono2_12bit_signed.dcm",
        "mono2_16bit_signed_rescale.dcm",
        "mono2_window.dcm",
        "mono1_window.dcm",
        "mono2_voi_lut.dcm",
        "mono2_rle.dcm",
        "mono2_deflate.dcm",
        "multiframe.dcm",
        "IM000001",
    ] {
        let (out, _) = decode(name, &read(name), ColorMode::Grayscale).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wrong = out.iter().zip(&picture).filter(|(a, b)| a != b).count();
        assert_eq!(wrong, 0, "{name}: {wrong} of {} pixels differ", picture.len());
    }
}

#[test]
fn colour_files_decode_to_the_same_picture() {
    let picture = expected("expected_rgb.png");
    for name in ["rgb.dcm", "rgb_planar.dcm", "rgb_rle.dcm"] {
        let (out, _) = decode(name, &read(name), ColorMode::Rgb).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out == picture, "{name} differs from expected_rgb.png");
    }
}

/// The pipeline must be able to fail: the same bytes with the photometric
/// interpretation flipped, or the window dropped, give another picture.
#[test]
fn a_wrong_step_changes_the_picture() {
    let picture = expected("expected.png");
    let mono1 = read("mono1_8bit.dcm");
    let as_mono2 = replace(&mono1, b"MONOCHROME1", b"MONOCHROME2");
    let (out, _) = decode("flipped", &as_mono2, ColorMode::Grayscale).unwrap();
    assert!(out.iter().zip(&picture).all(|(a, b)| *a == 255 - *b), "read as MONOCHROME2 it is the negative");
    // the window's centre moved by 100: a different picture
    let window = read("mono1_window.dcm");
    let moved = replace(&window, b"155.5", b"255.5");
    let (out, _) = decode("moved", &moved, ColorMode::Grayscale).unwrap();
    assert!(out.iter().zip(&picture).filter(|(a, b)| a != b).count() > ROWS * COLS / 2);
}

#[test]
fn multi_frame_files_give_their_first_frame_and_say_so() {
    let (_, frames) = decode("multiframe.dcm", &read("multiframe.dcm"), ColorMode::Grayscale).unwrap();
    assert_eq!(frames, 2);
    let (_, frames) = decode("mono2_8bit.dcm", &read("mono2_8bit.dcm"), ColorMode::Grayscale).unwrap();
    assert_eq!(frames, 1);
    // through the loader: .dcm, .dicom and extensionless files are found, the summary says it once
    let tree = tempfile::tempdir().unwrap();
    let class = tree.path().join("scan");
    std::fs::create_dir_all(&class).unwrap();
    std::fs::write(class.join("a.dcm"), read("multiframe.dcm")).unwrap();
    std::fs::write(class.join("b.DICOM"), read("mono2_8bit.dcm")).unwrap();
    std::fs::write(class.join("IM000001"), read("IM000001")).unwrap();
    std::fs::write(class.join("README"), b"not an image").unwrap();
    let options = DatasetOptions { decode: options(ColorMode::Grayscale), ..DatasetOptions::default() };
    let loaded = load(tree.path(), &options).unwrap();
    assert_eq!(loaded.training.len(), 3);
    assert_eq!(loaded.report.ignored, 1);
    assert_eq!(loaded.report.multi_frame, 1);
    let text = loaded.report.to_string();
    assert!(text.contains("1 DICOM file has several frames: the first frame of each is used."), "{text}");
}

#[test]
fn a_transfer_syntax_without_a_decoder_is_named() {
    let error = decode("jpegls.dcm", &read("jpegls.dcm"), ColorMode::Grayscale).unwrap_err().to_string();
    assert_eq!(error.lines().count(), 1);
    assert!(error.contains("jpegls.dcm") && error.contains("unsupported transfer syntax JPEG-LS Lossless"), "{error}");
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

/// The offset of the value of the (explicit VR, 2-byte length) element `tag`.
fn us_value_offset(bytes: &[u8], group: u16, element: u16) -> usize {
    let mut pattern = Vec::new();
    pattern.extend(group.to_le_bytes());
    pattern.extend(element.to_le_bytes());
    pattern.extend(b"US");
    bytes.windows(6).position(|w| w == pattern.as_slice()).expect("tag present") + 8
}

fn one_line_error(name: &str, bytes: &[u8]) -> String {
    let error = decode(name, bytes, ColorMode::Grayscale).expect_err(name).to_string();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains(name), "{error}");
    error
}

#[test]
fn hostile_files_are_refused_in_one_line() {
    let valid = read("mono2_8bit.dcm");
    // truncated anywhere: in the preamble, the meta group, the data set, the pixel data
    for cut in [131, 140, 200, 400, valid.len() - 300, valid.len() - 1] {
        one_line_error("truncated.dcm", &valid[..cut]);
    }
    // absurd Rows/Columns: refused from the header, before any allocation
    let mut huge = valid.clone();
    for (group, element) in [(0x0028u16, 0x0010u16), (0x0028, 0x0011)] {
        let at = us_value_offset(&huge, group, element);
        huge[at..at + 2].copy_from_slice(&65535u16.to_le_bytes());
    }
    match decode("huge.dcm", &huge, ColorMode::Grayscale) {
        Err(DataError::TooLarge { width: 65535, height: 65535, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // more rows than the pixel data holds
    let mut long = valid.clone();
    let at = us_value_offset(&long, 0x0028, 0x0010);
    long[at..at + 2].copy_from_slice(&48u16.to_le_bytes());
    let error = one_line_error("short.dcm", &long);
    assert!(error.contains("pixel data holds 768 bytes"), "{error}");
    // an element declaring far more bytes than the file holds (dicom-rs would
    // allocate and zero the declared 4 GB before reading; found by fuzzing)
    let mut bomb = valid.clone();
    let pixel_data = bomb.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).expect("pixel data tag");
    bomb[pixel_data + 8..pixel_data + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let error = one_line_error("bomb.dcm", &bomb);
    assert!(error.contains("declares 4294967280 bytes but 768 remain"), "{error}");
    // (0002,0001) OB, the meta group's second element, declaring 2 GB
    let mut meta_bomb = valid.clone();
    assert_eq!(&meta_bomb[144..150], &[2, 0, 1, 0, b'O', b'B']);
    meta_bomb[152..156].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    let error = one_line_error("meta_bomb.dcm", &meta_bomb);
    assert!(error.contains("a file meta element declares 2147483647 bytes"), "{error}");
    // fuzz finds, stored as the bytes after the preamble and DICM: an RLE
    // segment that decodes 4 bytes short (dicom-rs indexed past it)
    let mut file = valid[..132].to_vec();
    file.extend(read("fuzz_rle_short_segment.body"));
    let error = one_line_error("rle.dcm", &file);
    assert!(error.contains("corrupt RLE pixel data: a segment decodes to 764 bytes, 768 needed"), "{error}");
    // a meta element with an unknown VR, read with a 4-byte length of 4 GB
    let mut file = valid[..132].to_vec();
    file.extend(read("fuzz_meta_unknown_vr.body"));
    let error = one_line_error("vr.dcm", &file);
    assert!(error.contains("a file meta element declares 4294901760 bytes"), "{error}");
    // a meta element whose tag is not in group 2, inside the group length
    let mut file = valid[..132].to_vec();
    file.extend(read("fuzz_meta_odd_tag.body"));
    let error = one_line_error("tag.dcm", &file);
    assert!(error.contains("a file meta element declares 1634489195 bytes"), "{error}");
    // a meta group whose elements end past its group length, then a 2 GB element:
    // the data set is checked from where dicom-rs' meta reader stops
    let mut file = valid[..132].to_vec();
    file.extend(read("fuzz_body_after_meta.body"));
    let error = one_line_error("body.dcm", &file);
    assert!(error.contains("an element declares 2164130047 bytes"), "{error}");
    // garbage after the preamble
    let mut garbage = valid[..132].to_vec();
    garbage.extend((0..2000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    one_line_error("garbage.dcm", &garbage);
    // Rows = 0, BitsAllocated = 7, BitsStored > BitsAllocated
    for (element, value, name) in [(0x0010u16, 0u16, "empty.dcm"), (0x0100, 7, "bits7.dcm"), (0x0101, 9, "stored9.dcm")]
    {
        let mut bytes = valid.clone();
        let at = us_value_offset(&bytes, 0x0028, element);
        bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
        one_line_error(name, &bytes);
    }
}
