//! Decoding and resizing one image into the network's input layout.
//!
//! Every image becomes `channels x height x width` bytes in CHW order (the
//! engine's layout), whatever its file format:
//!
//! - the format is detected from the content, not the extension;
//! - with [`BitDepth::Eight`] 16-bit images are scaled to 0-255 like 8-bit
//!   ones; with [`BitDepth::Sixteen`] (mammograms are often 12-16-bit) every
//!   sample keeps 16 bits through the crop and the resize, two bytes
//!   little-endian, and 8-bit sources are widened exactly (`v * 257`);
//!   palette, grey+alpha, CMYK JPEG and the rest are converted;
//! - GIFs contribute their first frame;
//! - DICOM files (`DICM` after the 128-byte preamble, whatever their name) go
//!   through the radiology pixel pipeline of [`crate::dicom`] and contribute
//!   their first frame;
//! - images declaring more than [`DecodeOptions::max_pixels`] pixels are
//!   refused before any pixel is decoded (a 60000x60000 "decompression bomb"
//!   would need 10 GB), and the decoder's allocations are capped as well.

use crate::content_crop::content_box;
use crate::dicom::{decode_dicom, is_dicom};
use crate::error::{DataError, Result};
pub use crate::format::{BitDepth, ColorMode, InputFormat, Interpolation};
use crate::resample::resize_shorter_and_crop;
use image::{imageops::FilterType, DynamicImage, ImageReader, Limits};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::Path;

/// How to turn a file into network input: the input format (only its size,
/// colour mode, filter and crop matter here) and the decoder's safety limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeOptions {
    /// Size, channels, filter, crop (and the pixel scale the batches apply later).
    pub format: InputFormat,
    /// Largest accepted `width * height` of a source image.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions::new(InputFormat::default())
    }
}

impl DecodeOptions {
    /// Decoding to `format`, with the default pixel limit.
    pub fn new(format: InputFormat) -> Self {
        DecodeOptions { format, max_pixels: 1 << 28 } // 268 Mpx: 16384 x 16384
    }

    /// Bytes of one decoded image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.format.image_len()
    }
}

/// Decodes the bytes of one image file (`path` is for messages) into `out`,
/// `channels x height x width` bytes in CHW order. Returns the number of
/// frames of a DICOM file (only the first is used), 1 for other images.
pub fn decode_into(path: &Path, bytes: &[u8], options: &DecodeOptions, out: &mut [u8]) -> Result<u32> {
    let (image, frames) = open_image(path, bytes, options)?;
    convert_into(image, options, out);
    Ok(frames)
}

/// The part of a source image the network's input shows, in the source's
/// pixels: the content crop, then the aspect-ratio crop or the centre crop
/// after `--resize-shorter` (whole pixels, except the last one's fraction).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputWindow {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// A file's whole picture as decoded for display (8-bit DICOM display
/// values; other files as stored) and the [`InputWindow`] of the network's
/// input in it, for drawing maps on the original (`explain`).
pub fn source_view(path: &Path, options: &DecodeOptions) -> Result<(DynamicImage, InputWindow)> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let mut eight = options.clone();
    eight.format.bit_depth = BitDepth::Eight;
    let (image, _) = open_image(path, &bytes, &eight)?;
    let (mut left, mut top, mut width, mut height) = (0, 0, image.width(), image.height());
    if options.format.crop_content {
        (left, top, width, height) = content_crop(&image);
    }
    let [target_h, target_w] = options.format.image_size;
    let mut window = InputWindow { left: left as f64, top: top as f64, width: width as f64, height: height as f64 };
    if let Some(shorter) = options.format.resize_shorter {
        let scale = shorter as f64 / window.width.min(window.height);
        let (shown_w, shown_h) = (target_w as f64 / scale, target_h as f64 / scale);
        window.left += (window.width - shown_w) / 2.0;
        window.top += (window.height - shown_h) / 2.0;
        (window.width, window.height) = (shown_w, shown_h);
    } else if options.format.crop_to_aspect_ratio {
        let (x, y, w, h) = aspect_crop(width, height, [target_h, target_w]);
        window = InputWindow { left: (left + x) as f64, top: (top + y) as f64, width: w as f64, height: h as f64 };
    }
    Ok((image, window))
}

/// The bounding box of an image's content ([`content_box`]): `(left, top, width, height)`.
fn content_crop(image: &DynamicImage) -> (u32, u32, u32, u32) {
    let luma = image.to_luma8();
    let (left, top, width, height) = content_box(luma.as_raw(), luma.width() as usize, luma.height() as usize);
    (left as u32, top as u32, width as u32, height as u32)
}

/// The largest centred window of a `width x height` image with the aspect
/// `target_w : target_h`: `(left, top, width, height)`.
fn aspect_crop(width: u32, height: u32, [target_h, target_w]: [usize; 2]) -> (u32, u32, u32, u32) {
    let (w, h) = (width as u64, height as u64);
    let (crop_w, crop_h) = if w * target_h as u64 > h * target_w as u64 {
        ((h * target_w as u64 / target_h as u64).max(1), h)
    } else {
        (w, (w * target_h as u64 / target_w as u64).max(1))
    };
    (((w - crop_w) / 2) as u32, ((h - crop_h) / 2) as u32, crop_w as u32, crop_h as u32)
}

/// Decodes a file's bytes into an image (a DICOM file's first frame through
/// its pixel pipeline) and the file's frame count, after the size checks.
fn open_image(path: &Path, bytes: &[u8], options: &DecodeOptions) -> Result<(DynamicImage, u32)> {
    let decode_error = |reason: String| DataError::Decode { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(decode_error("the file is empty".into()));
    }
    if is_dicom(bytes) {
        let sixteen = options.format.bit_depth == BitDepth::Sixteen;
        let picture = decode_dicom(path, bytes, options.max_pixels, sixteen)?;
        return Ok((picture.image, picture.frames));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| decode_error(e.to_string()))?;
    if reader.format().is_none() {
        return Err(decode_error("unrecognised image format".into()));
    }
    let mut reader = reader;
    let (width, height) = reader.into_dimensions().map_err(|e| decode_error(e.to_string()))?;
    if width as u64 * height as u64 > options.max_pixels {
        return Err(DataError::TooLarge { path: path.to_path_buf(), width, height, limit: options.max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(decode_error(format!("image has no pixels ({width}x{height})")));
    }
    reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| decode_error(e.to_string()))?;
    let mut limits = Limits::default();
    // 8 bytes per pixel covers RGBA16; anything more is not a sane image
    limits.max_alloc = Some(options.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let image = reader.decode().map_err(|e| decode_error(e.to_string()))?;
    Ok((image, 1))
}

/// The bit depth `paths` need: [`BitDepth::Sixteen`] when any of them holds
/// more than 8 bits per sample (a 16-bit PNG or TIFF, a grey DICOM file
/// storing more than 8 bits), else [`BitDepth::Eight`]. Reads headers only
/// (a DICOM file's attributes before its pixel data); a file that cannot be
/// read counts as 8-bit (the load reports it).
pub fn source_bit_depth(paths: &[&Path]) -> BitDepth {
    let wide = |path: &&Path| -> bool {
        let Ok(bytes) = std::fs::read(path) else { return false };
        if let Some(wide) = crate::dicom::more_than_8_bits(&bytes) {
            return wide;
        }
        let reader = ImageReader::new(Cursor::new(&bytes[..])).with_guessed_format();
        let Ok(Ok(decoder)) = reader.map(|r| r.into_decoder()) else { return false };
        let color = image::ImageDecoder::color_type(&decoder);
        color.bytes_per_pixel() > color.channel_count()
    };
    if paths.iter().any(wide) {
        BitDepth::Sixteen
    } else {
        BitDepth::Eight
    }
}

/// Reads and decodes one file; see [`decode_into`].
pub fn decode_file(path: &Path, options: &DecodeOptions, out: &mut [u8]) -> Result<u32> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_into(path, &bytes, options, out)
}

/// Crops, resizes and converts a decoded image into CHW bytes.
fn convert_into(mut image: DynamicImage, options: &DecodeOptions, out: &mut [u8]) {
    let [target_h, target_w] = options.format.image_size;
    let sixteen = options.format.bit_depth == BitDepth::Sixteen;
    if sixteen && image.color().bytes_per_pixel() / image.color().channel_count() == 1 {
        image = widen(image); // resized at 16 bits from the start, as a 16-bit source is
    }
    let plane = target_h * target_w;
    if options.format.crop_content {
        let (left, top, width, height) = content_crop(&image);
        image = image.crop_imm(left, top, width, height);
    }
    if let Some(shorter) = options.format.resize_shorter {
        // torchvision's order: the colours first, then Resize(shorter) and CenterCrop on the 8-bit image
        let (width, height) = (image.width() as usize, image.height() as usize);
        let (pixels, channels) = match options.format.color_mode {
            ColorMode::Grayscale => (image.to_luma8().into_raw(), 1),
            ColorMode::Rgb => (image.to_rgb8().into_raw(), 3),
            ColorMode::Rgba => (image.to_rgba8().into_raw(), 4),
        };
        let cropped = resize_shorter_and_crop(&pixels, [width, height, channels], shorter, [target_h, target_w]);
        return interleaved_to_planar(&cropped, channels, plane, out);
    }
    if options.format.crop_to_aspect_ratio {
        let (left, top, width, height) = aspect_crop(image.width(), image.height(), [target_h, target_w]);
        image = image.crop_imm(left, top, width, height);
    }
    let (target_w32, target_h32) = (target_w as u32, target_h as u32);
    if image.width() != target_w32 || image.height() != target_h32 {
        image = match options.format.interpolation {
            Interpolation::Bilinear => image.resize_exact(target_w32, target_h32, FilterType::Triangle),
            Interpolation::Nearest => image.resize_exact(target_w32, target_h32, FilterType::Nearest),
            Interpolation::Lanczos3 => image.resize_exact(target_w32, target_h32, FilterType::Lanczos3),
            Interpolation::Area if sixteen => {
                let to_sample = |v: f64| v.round().clamp(0.0, 65535.0) as u16;
                DynamicImage::ImageRgba16(area_resize(&image.to_rgba16(), target_w32, target_h32, to_sample))
            }
            Interpolation::Area => {
                let to_sample = |v: f64| v.round().clamp(0.0, 255.0) as u8;
                DynamicImage::ImageRgba8(area_resize(&image.to_rgba8(), target_w32, target_h32, to_sample))
            }
        };
    }
    match (options.format.color_mode, sixteen) {
        (ColorMode::Grayscale, false) => out[..plane].copy_from_slice(image.to_luma8().as_raw()),
        (ColorMode::Rgb, false) => interleaved_to_planar(image.to_rgb8().as_raw(), 3, plane, out),
        (ColorMode::Rgba, false) => interleaved_to_planar(image.to_rgba8().as_raw(), 4, plane, out),
        (ColorMode::Grayscale, true) => interleaved_to_planar_16(image.to_luma16().as_raw(), 1, plane, out),
        (ColorMode::Rgb, true) => interleaved_to_planar_16(image.to_rgb16().as_raw(), 3, plane, out),
        (ColorMode::Rgba, true) => interleaved_to_planar_16(image.to_rgba16().as_raw(), 4, plane, out),
    }
}

/// An 8-bit image as 16 bits (`v * 257`: 0 -> 0, 255 -> 65535), same colours.
fn widen(image: DynamicImage) -> DynamicImage {
    match image.color().channel_count() {
        1 => DynamicImage::ImageLuma16(image.to_luma16()),
        2 => DynamicImage::ImageLumaA16(image.to_luma_alpha16()),
        3 => DynamicImage::ImageRgb16(image.to_rgb16()),
        _ => DynamicImage::ImageRgba16(image.to_rgba16()),
    }
}

/// `HWC` interleaved pixels to `CHW` planes.
fn interleaved_to_planar(pixels: &[u8], channels: usize, plane: usize, out: &mut [u8]) {
    for (p, pixel) in pixels.chunks_exact(channels).enumerate() {
        for (c, &value) in pixel.iter().enumerate() {
            out[c * plane + p] = value;
        }
    }
}

/// `HWC` interleaved 16-bit pixels to `CHW` planes of little-endian pairs.
fn interleaved_to_planar_16(pixels: &[u16], channels: usize, plane: usize, out: &mut [u8]) {
    for (p, pixel) in pixels.chunks_exact(channels).enumerate() {
        for (c, &value) in pixel.iter().enumerate() {
            let at = 2 * (c * plane + p);
            out[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// Area (box) resampling: each output pixel is the mean of the source pixels
/// its footprint covers, weighted by overlap, made a sample by `to_sample`.
fn area_resize<P: image::Pixel>(
    source: &image::ImageBuffer<P, Vec<P::Subpixel>>,
    width: u32,
    height: u32,
    to_sample: impl Fn(f64) -> P::Subpixel,
) -> image::ImageBuffer<P, Vec<P::Subpixel>>
where
    P::Subpixel: Into<f64>,
{
    let (src_w, src_h) = (source.width() as f64, source.height() as f64);
    let (scale_x, scale_y) = (src_w / width as f64, src_h / height as f64);
    let mut out = image::ImageBuffer::new(width, height);
    for y in 0..height {
        let (y0, y1) = (y as f64 * scale_y, (y + 1) as f64 * scale_y);
        for x in 0..width {
            let (x0, x1) = (x as f64 * scale_x, (x + 1) as f64 * scale_x);
            let mut sum = [0.0f64; 4];
            let mut total = 0.0;
            let mut sy = y0.floor();
            while sy < y1 {
                let wy = (sy + 1.0).min(y1) - sy.max(y0);
                let mut sx = x0.floor();
                while sx < x1 {
                    let wx = (sx + 1.0).min(x1) - sx.max(x0);
                    let px =
                        source.get_pixel((sx as u32).min(source.width() - 1), (sy as u32).min(source.height() - 1));
                    for (total, &sample) in sum.iter_mut().zip(px.channels()) {
                        *total += sample.into() * wx * wy;
                    }
                    total += wx * wy;
                    sx += 1.0;
                }
                sy += 1.0;
            }
            let samples = sum.map(|s| to_sample(s / total));
            out.put_pixel(x, y, *P::from_slice(&samples[..P::CHANNEL_COUNT as usize]));
        }
    }
    out
}
