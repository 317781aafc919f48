//! 16-bit samples (`BitDepth::Sixteen`): kept through decoding, resizing, the
//! cache and the batches, where an 8-bit decode rounds them to 256 levels.

use convnet_data::decode::{decode_file, source_bit_depth, DecodeOptions};
use convnet_data::{load, BitDepth, ColorMode, DatasetOptions, InputFormat, PixelScale, Storage};
use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use std::path::Path;

/// A 16x16 16-bit grey picture: a gentle ramp from `level` to `level + 60`.
fn ramp16(level: u16) -> DynamicImage {
    DynamicImage::ImageLuma16(ImageBuffer::from_fn(16, 16, |x, y| Luma([level + ((x + y) % 4) as u16 * 20])))
}

fn options(depth: BitDepth) -> DatasetOptions {
    let mut format = InputFormat::new([8, 8], ColorMode::Grayscale);
    format.bit_depth = depth;
    DatasetOptions { decode: DecodeOptions::new(format), ..DatasetOptions::default() }
}

fn save(path: &Path, image: DynamicImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.save(path).unwrap();
}

/// Two classes whose 16-bit images differ by 100 / 65535, all inside the
/// values that round to the 8-bit level 128 (32768..=33024).
fn two_classes(root: &Path) {
    for i in 0..3 {
        save(&root.join(format!("low/{i}.png")), ramp16(32_800));
        save(&root.join(format!("high/{i}.png")), ramp16(32_900));
    }
}

#[test]
fn classes_apart_by_less_than_an_8_bit_step_stay_apart_at_16_bits() {
    let dir = tempfile::tempdir().unwrap();
    two_classes(dir.path());
    let (high, low) = (dir.path().join("high/0.png"), dir.path().join("low/0.png"));
    // 8 bits: both classes decode (and resize, 16 -> 8 px) to the same bytes
    let eight = options(BitDepth::Eight).decode;
    let decode = |options: &DecodeOptions, path: &Path| {
        let mut out = vec![0u8; options.image_len()];
        decode_file(path, options, &mut out).unwrap();
        out
    };
    assert_eq!(decode(&eight, &high), decode(&eight, &low), "8 bits merge the classes");
    // 16 bits: two bytes a sample, and the classes differ after the resize, by about 100
    let sixteen = options(BitDepth::Sixteen).decode;
    let (a, b) = (decode(&sixteen, &high), decode(&sixteen, &low));
    assert_eq!(a.len(), 2 * 64);
    let samples = |bytes: &[u8]| -> Vec<u16> { bytes.chunks(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect() };
    let gaps: Vec<i32> = samples(&a).iter().zip(samples(&b)).map(|(&x, y)| x as i32 - y as i32).collect();
    assert!(gaps.iter().all(|&gap| (95..=105).contains(&gap)), "{gaps:?}");
    // the area filter keeps them apart too
    let mut area = sixteen.clone();
    area.format.interpolation = convnet_data::Interpolation::Area;
    assert_ne!(decode(&area, &high), decode(&area, &low));

    // through the loader (a cache on disk) and into the network's inputs
    let cache = tempfile::tempdir().unwrap();
    for (depth, apart) in [(BitDepth::Eight, false), (BitDepth::Sixteen, true)] {
        let mut opts = options(depth);
        opts.storage = Storage::Disk;
        opts.cache_dir = Some(cache.path().to_path_buf());
        let set = load(dir.path(), &opts).unwrap().training;
        assert_eq!(set.depth(), depth);
        assert_eq!(set.image(0).unwrap().len(), 64 * depth.bytes());
        let mut inputs = vec![0.0f32; 2 * 64];
        let mut labels = Vec::new();
        let (first_high, first_low) = (0, 3); // classes sorted: high, low
        set.fill_batch(&[first_high, first_low], PixelScale::Unit, &mut inputs, &mut labels).unwrap();
        let (x, y) = inputs.split_at(64);
        let gap = x.iter().zip(y).map(|(p, q)| p - q).fold(f32::INFINITY, f32::min);
        if apart {
            // 100 / 257 of one 8-bit level, on the 0-1 scale
            assert!((gap - 100.0 / 257.0 / 255.0).abs() < 2e-5, "gap {gap}");
        } else {
            assert_eq!(x, y);
        }
    }
}

#[test]
fn an_8_bit_source_widens_exactly_and_the_depth_is_told_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let narrow = dir.path().join("narrow.png");
    save(
        &narrow,
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 255]))),
    );
    let wide = dir.path().join("wide.png");
    save(&wide, ramp16(1000));
    // an 8-bit file at 16 bits: v * 257, every sample (no resize: 8x8 already)
    let mut format = InputFormat::new([8, 8], ColorMode::Rgb);
    let mut eight = vec![0u8; format.image_len()];
    decode_file(&narrow, &DecodeOptions::new(format), &mut eight).unwrap();
    format.bit_depth = BitDepth::Sixteen;
    let mut sixteen = vec![0u8; format.image_len()];
    decode_file(&narrow, &DecodeOptions::new(format), &mut sixteen).unwrap();
    let widened: Vec<u8> = eight.iter().flat_map(|&v| (v as u16 * 257).to_le_bytes()).collect();
    assert_eq!(sixteen, widened);

    assert_eq!(source_bit_depth(&[narrow.as_path()]), BitDepth::Eight);
    assert_eq!(source_bit_depth(&[narrow.as_path(), wide.as_path()]), BitDepth::Sixteen);
    let dicom = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom");
    assert_eq!(source_bit_depth(&[dicom.join("mono2_12bit.dcm").as_path()]), BitDepth::Sixteen);
    assert_eq!(source_bit_depth(&[dicom.join("mono2_8bit.dcm").as_path()]), BitDepth::Eight);
}

#[test]
fn a_12_bit_dicom_keeps_its_display_values_at_16_bits() {
    // the 12-bit fixture with its 24x32 pixel data (the file's last 1536 bytes,
    // 16 bits allocated) replaced by a ramp over all 4096 stored values
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/mono2_12bit.dcm");
    let mut bytes = std::fs::read(fixture).unwrap();
    let start = bytes.len() - 24 * 32 * 2;
    for (i, sample) in bytes[start..].chunks_mut(2).enumerate() {
        sample.copy_from_slice(&((i * 4095 / 767) as u16).to_le_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let dicom = dir.path().join("ramp.dcm");
    std::fs::write(&dicom, &bytes).unwrap();
    let mut format = InputFormat::new([24, 32], ColorMode::Grayscale);
    let mut eight = vec![0u8; format.image_len()];
    decode_file(&dicom, &DecodeOptions::new(format), &mut eight).unwrap();
    format.bit_depth = BitDepth::Sixteen;
    let mut sixteen = vec![0u8; format.image_len()];
    decode_file(&dicom, &DecodeOptions::new(format), &mut sixteen).unwrap();
    let wide: Vec<u16> = sixteen.chunks(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect();
    // rounded back to 8 bits it is the 8-bit picture, to the level
    let rounded: Vec<u8> = wide.iter().map(|&v| ((v as u32 + 128) / 257) as u8).collect();
    assert_eq!(rounded, eight);
    // and it keeps what 8 bits round away: several 16-bit values per 8-bit level
    let mut distinct = wide.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 700, "{} distinct 16-bit values", distinct.len());
    let mut levels = eight.clone();
    levels.sort_unstable();
    levels.dedup();
    assert_eq!(levels.len(), 256);
}
