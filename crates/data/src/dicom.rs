//! DICOM images: from a file's bytes to the 8-bit picture a radiology viewer shows.
//!
//! Reading the object and decompressing its pixel data (RLE Lossless, deflate,
//! JPEG baseline/lossless, JPEG 2000, all in pure Rust) is done by the dicom-rs
//! crates. Turning the stored sample values into display values is done here,
//! step by step as PS3.3 C.11 defines it, so that each step can be read and
//! tested:
//!
//! ```text
//! stored sample   raw bits of BitsAllocated, of which the low BitsStored count,
//!                 two's complement when PixelRepresentation = 1
//!   -> modality   x = raw * RescaleSlope + RescaleIntercept        (e.g. Hounsfield units)
//!   -> VOI        the first window (WindowCenter c, WindowWidth w):
//!                   LINEAR:  x <= c - 0.5 - (w-1)/2       -> 0
//!                            x >  c - 0.5 + (w-1)/2       -> 255
//!                            else ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
//!                   LINEAR_EXACT: the same with c and w in place of c - 0.5 and w - 1
//!                   SIGMOID: 255 / (1 + exp(-4 (x - c) / w))
//!                 or else the first VOI LUT table: entry[clamp(x - first, 0, n-1)] / (2^bits - 1) * 255
//!                 or else the full range of the image's modality values: (x - min) / (max - min) * 255
//!   -> MONOCHROME1  y -> 255 - y (0 is white in MONOCHROME1)
//!   -> round to 0..255
//! ```
//!
//! Colour images (RGB, and YBR_FULL / YBR_FULL_422 converted to RGB as in
//! PS3.3 C.7.6.3.1.2) keep their samples, scaled from BitsStored to 8 bits.
//! Multi-frame objects contribute their first frame. Rows x Columns is checked
//! against the decoder's pixel limit before any pixel data is decoded, and the
//! native pixel data's length against what the header promises.

use crate::error::{DataError, Result};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{PhotometricInterpretation, PixelDecoder, PixelRepresentation, VoiLutFunction};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use image::{DynamicImage, GrayImage, ImageBuffer, RgbImage};
use std::path::Path;

/// Whether `bytes` are a DICOM file (Part 10): `DICM` at bytes 128..132, after the preamble.
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

/// A decoded DICOM picture: its display values and how many frames the file had.
#[derive(Debug)]
pub struct DicomPicture {
    /// Grey (`Luma8`, or `Luma16` when asked) or colour (`Rgb8`) display
    /// values of the first frame.
    pub image: DynamicImage,
    /// Frames in the file (only the first is used).
    pub frames: u32,
}

/// Decodes a DICOM file's bytes (`path` is for messages); refuses pictures of
/// more than `max_pixels` pixels before decoding them.
///
/// With `sixteen`, a grey picture's display values keep 16 bits (`Luma16`,
/// the window's output times 257 rounded) instead of being rounded to 8.
pub fn decode_dicom(path: &Path, bytes: &[u8], max_pixels: u64, sixteen: bool) -> Result<DicomPicture> {
    let fail = |reason: String| DataError::Decode { path: path.to_path_buf(), reason };
    if !is_dicom(bytes) {
        return Err(fail("not a DICOM file (no DICM after the 128-byte preamble)".into()));
    }
    check_declared_lengths(bytes, max_pixels).map_err(fail)?;
    let object = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&bytes[128..])
        .map_err(|e| fail(format!("invalid DICOM: {}", first_line(&e))))?;
    let header = Header::read(&object).map_err(fail)?;
    if header.rows as u64 * header.columns as u64 > max_pixels {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            width: header.columns,
            height: header.rows,
            limit: max_pixels,
        });
    }
    check_pixel_data(&object, &header).map_err(fail)?;
    let decoded =
        object.decode_pixel_data_frame(0).map_err(|e| fail(format!("cannot decode pixel data: {}", first_line(&e))))?;
    if decoded.rows() != header.rows || decoded.columns() != header.columns {
        return Err(fail("decoded pixel data does not match Rows x Columns".into()));
    }
    let samples = decoded.frame_data(0).map_err(|e| fail(format!("pixel data too short: {}", first_line(&e))))?;
    let layout = SampleLayout {
        bits_allocated: decoded.bits_allocated(),
        bits_stored: decoded.bits_stored(),
        high_bit: decoded.high_bit(),
        signed: decoded.pixel_representation() == PixelRepresentation::Signed,
    };
    layout.check().map_err(fail)?;
    let (rows, columns) = (header.rows, header.columns);
    let pixels = rows as usize * columns as usize;
    let image = match (decoded.samples_per_pixel(), decoded.photometric_interpretation()) {
        (1, photometric @ (PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2)) => {
            let raw = layout.values(samples, pixels);
            let rescale = decoded.rescale().ok().and_then(|r| r.first().copied());
            let (slope, intercept) = rescale.map_or((1.0, 0.0), |r| (r.slope, r.intercept));
            let modality: Vec<f64> = raw.iter().map(|&v| v as f64 * slope + intercept).collect();
            let voi = choose_voi(&decoded);
            let invert = *photometric == PhotometricInterpretation::Monochrome1;
            let display = grey_display(&modality, &voi, invert);
            if sixteen {
                let wide: Vec<u16> = display.iter().map(|&y| (y * 257.0).round() as u16).collect();
                let picture = ImageBuffer::from_raw(columns, rows, wide).expect("rows x columns samples");
                DynamicImage::ImageLuma16(picture)
            } else {
                let narrow: Vec<u8> = display.iter().map(|&y| y.round() as u8).collect();
                DynamicImage::ImageLuma8(GrayImage::from_raw(columns, rows, narrow).expect("rows x columns bytes"))
            }
        }
        (3, photometric) => {
            let ybr = match photometric {
                PhotometricInterpretation::Rgb => false,
                PhotometricInterpretation::YbrFull | PhotometricInterpretation::YbrFull422 => true,
                other => return Err(fail(format!("unsupported photometric interpretation {other}"))),
            };
            let raw = layout.values(samples, pixels * 3);
            let planar = decoded.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst;
            let shift = layout.bits_stored.saturating_sub(8) as u32;
            let sample = |p: usize, c: usize| -> f64 {
                let value = if planar { raw[c * pixels + p] } else { raw[p * 3 + c] };
                (value.max(0) >> shift) as f64
            };
            let mut rgb = Vec::with_capacity(pixels * 3);
            for p in 0..pixels {
                let (a, b, c) = (sample(p, 0), sample(p, 1), sample(p, 2));
                let [r, g, bl] = if ybr { ybr_full_to_rgb(a, b, c) } else { [a, b, c] };
                rgb.extend([r, g, bl].map(|v| v.round().clamp(0.0, 255.0) as u8));
            }
            DynamicImage::ImageRgb8(RgbImage::from_raw(columns, rows, rgb).expect("rows x columns x 3 bytes"))
        }
        (samples_per_pixel, photometric) => {
            return Err(fail(format!(
                "unsupported photometric interpretation {photometric} with {samples_per_pixel} samples per pixel"
            )))
        }
    };
    Ok(DicomPicture { image, frames: header.frames })
}

/// Refuses, by a reason, pixel data that cannot be decoded or is shorter than
/// the header says: an unsupported transfer syntax, native pixel data short of
/// `Rows x Columns x samples`, or a corrupt RLE frame.
fn check_pixel_data(object: &DefaultDicomObject, header: &Header) -> std::result::Result<(), String> {
    let uid = object.meta().transfer_syntax();
    let syntax = TransferSyntaxRegistry.get(uid);
    match syntax {
        Some(syntax) if syntax.can_decode_all() => {}
        Some(syntax) => return Err(format!("unsupported transfer syntax {} ({uid})", syntax.name())),
        None => return Err(format!("unsupported transfer syntax {uid}")),
    }
    if !syntax.is_some_and(|s| s.is_encapsulated_pixel_data()) {
        // native pixel data: the header promises its length; a short buffer is refused by name
        let stored = object
            .element(tags::PIXEL_DATA)
            .ok()
            .and_then(|e| e.value().to_bytes().ok().map(|b| b.len()))
            .ok_or("no pixel data".to_string())?;
        let needed = header.frame_bytes();
        if (stored as u64) < needed {
            return Err(format!(
                "pixel data holds {stored} bytes, but {} x {} x {} samples of {} bits need {needed}",
                header.rows, header.columns, header.samples_per_pixel, header.bits_allocated
            ));
        }
    }
    if uid == "1.2.840.10008.1.2.5" {
        let fragment = object
            .element(tags::PIXEL_DATA)
            .ok()
            .and_then(|e| e.value().fragments().and_then(|f| f.first().cloned()))
            .ok_or("RLE Lossless without pixel data fragments".to_string())?;
        check_rle_frame(&fragment, header).map_err(|reason| format!("corrupt RLE pixel data: {reason}"))?;
    }
    Ok(())
}

/// Refuses a file any of whose elements declares more bytes than the file
/// holds, before dicom-rs reads it: dicom-rs allocates and zeroes a value's
/// declared length before reading it, so a 2 KB file declaring a 4 GB element
/// would take 4 GB (found by the `dicom_decode` fuzz target). The meta group
/// (always explicit VR little endian) is walked here; the data set through
/// dicom-rs' token reader, checking each header before its value is read. A
/// deflated data set is inflated first, at most to the size any image within
/// `max_pixels` could need.
fn check_declared_lengths(bytes: &[u8], max_pixels: u64) -> std::result::Result<(), String> {
    use dicom_parser::dataset::read::DataSetReader;
    use dicom_parser::dataset::DataToken;
    use std::io::Read;
    let truncated = |what: &str, declared: u64, left: u64| {
        format!("truncated or corrupt: {what} declares {declared} bytes but {left} remain")
    };
    // the meta group: (0002,0000) UL group length, then elements `tag VR length value`
    // up to that many bytes, whatever their tags (as dicom-rs reads it)
    if bytes.len() < 144 || bytes[132..138] != [2, 0, 0, 0, b'U', b'L'] {
        return Err("the file meta information does not start with its group length".into());
    }
    let group_length = u32::from_le_bytes(bytes[140..144].try_into().expect("4 bytes")) as usize;
    let meta_end = 144usize.saturating_add(group_length);
    if meta_end > bytes.len() {
        return Err(truncated("the file meta information", group_length as u64, (bytes.len() - 144) as u64));
    }
    let mut position = 144usize;
    while position < meta_end {
        if position + 8 > meta_end {
            return Err("truncated file meta information".into());
        }
        let vr = &bytes[position + 4..position + 6];
        // VRs with a 2-byte length; every other (and an unknown one, as dicom-rs reads it) has 4
        let short = [
            b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
            b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
        ];
        let (header, declared) = if !short.iter().any(|v| v[..] == *vr) {
            if position + 12 > meta_end {
                return Err("truncated file meta information".into());
            }
            (12, u32::from_le_bytes(bytes[position + 8..position + 12].try_into().expect("4 bytes")) as u64)
        } else {
            (8, u16::from_le_bytes([bytes[position + 6], bytes[position + 7]]) as u64)
        };
        let left = (meta_end - position - header) as u64;
        if declared > left {
            return Err(truncated("a file meta element", declared, left));
        }
        position += header + declared as usize;
    }
    // the data set starts where dicom-rs' meta reader stops (which need not be
    // where the group length says), so read the meta group as it does
    let meta_read = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let meta = dicom_object::meta::FileMetaTable::from_reader(CountingReader {
        bytes: &bytes[128..],
        consumed: meta_read.clone(),
    })
    .map_err(|e| format!("invalid DICOM file meta information: {}", first_line(&e)))?;
    let position = 128 + meta_read.get();
    let uid = meta.transfer_syntax();
    let Some(syntax) = TransferSyntaxRegistry.get(uid) else {
        return Err(format!("unsupported transfer syntax {uid}"));
    };
    let inflated;
    let (body, syntax) = if uid == "1.2.840.10008.1.2.1.99" {
        // deflated explicit VR little endian: inflate, with a cap
        let cap = max_pixels.saturating_mul(8).saturating_add(64 << 20);
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&bytes[position..])
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("corrupt deflated data set: {e}"))?;
        if out.len() as u64 > cap {
            return Err(format!("the deflated data set inflates to more than {cap} bytes"));
        }
        inflated = out;
        let explicit = TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").expect("explicit VR little endian");
        (&inflated[..], explicit)
    } else {
        (&bytes[position..], syntax)
    };
    let consumed = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let source = CountingReader { bytes: body, consumed: consumed.clone() };
    let Ok(mut reader) = DataSetReader::new_with_ts(source, syntax) else { return Ok(()) };
    loop {
        let declared = match reader.next() {
            None | Some(Err(_)) => return Ok(()), // the end, or an error dicom-object will report
            Some(Ok(DataToken::ElementHeader(header))) => header.len.get(),
            Some(Ok(DataToken::SequenceStart { len, .. } | DataToken::ItemStart { len })) => len.get(),
            Some(Ok(_)) => None,
        };
        let left = (body.len() - consumed.get()) as u64;
        if let Some(declared) = declared.filter(|&d| d as u64 > left) {
            return Err(truncated("an element", declared as u64, left));
        }
    }
}

/// Checks an RLE Lossless frame (PS3.5 annex G) before dicom-rs decodes it:
/// dicom-rs indexes past a segment that decodes short and unwraps read errors
/// (found by the `dicom_decode` fuzz target), so every segment must be there
/// and decode (PackBits) to at least `Rows x Columns` bytes.
fn check_rle_frame(fragment: &[u8], header: &Header) -> std::result::Result<(), String> {
    let word =
        |at: usize| fragment.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let segments = word(0).ok_or("no RLE header")?;
    let expected = header.samples_per_pixel as usize * header.bits_allocated.div_ceil(8) as usize;
    if segments != expected || segments > 15 || fragment.len() < 64 {
        return Err(format!("{segments} segments, expected {expected} in a 64-byte header"));
    }
    let mut offsets: Vec<usize> = (0..segments).map(|i| word(4 + 4 * i).expect("within the header")).collect();
    offsets.push(fragment.len());
    let needed = header.rows as usize * header.columns as usize;
    for pair in offsets.windows(2) {
        let segment = fragment.get(pair[0]..pair[1]).ok_or("segment offsets out of order or past the end")?;
        // PackBits: n in 0..=127 copies n + 1 bytes, n in 129..=255 repeats the next byte 257 - n times
        let (mut at, mut produced) = (0usize, 0usize);
        while at < segment.len() && produced < needed {
            let n = segment[at] as usize;
            at += 1;
            match n {
                0..=127 => {
                    if at + n + 1 > segment.len() {
                        return Err("a literal run past the end of its segment".into());
                    }
                    (at, produced) = (at + n + 1, produced + n + 1);
                }
                128 => {}
                _ => {
                    if at >= segment.len() {
                        return Err("a repeat run past the end of its segment".into());
                    }
                    (at, produced) = (at + 1, produced + 257 - n);
                }
            }
        }
        if produced < needed {
            return Err(format!("a segment decodes to {produced} bytes, {needed} needed"));
        }
    }
    Ok(())
}

/// A byte slice as a reader that shares how much of it was read.
struct CountingReader<'a> {
    bytes: &'a [u8],
    consumed: std::rc::Rc<std::cell::Cell<usize>>,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = self.consumed.get();
        let n = buf.len().min(self.bytes.len() - start);
        buf[..n].copy_from_slice(&self.bytes[start..start + n]);
        self.consumed.set(start + n);
        Ok(n)
    }
}

/// Whether a DICOM file's grey samples hold more than 8 bits (BitsStored,
/// else BitsAllocated, above 8, one sample per pixel): what a 16-bit decode
/// keeps. `None` when the bytes are not a readable DICOM image.
pub fn more_than_8_bits(bytes: &[u8]) -> Option<bool> {
    if !is_dicom(bytes) {
        return None;
    }
    let object = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(&bytes[128..])
        .ok()?;
    let header = Header::read(&object).ok()?;
    let stored = object.element_opt(tags::BITS_STORED).ok().flatten().and_then(|e| e.to_int::<u32>().ok());
    Some(header.samples_per_pixel == 1 && stored.unwrap_or(header.bits_allocated) > 8)
}

/// The attributes read before any pixel is decoded.
struct Header {
    rows: u32,
    columns: u32,
    samples_per_pixel: u32,
    bits_allocated: u32,
    frames: u32,
}

impl Header {
    fn read(object: &DefaultDicomObject) -> std::result::Result<Header, String> {
        let int = |tag, name: &str, default: Option<u32>| -> std::result::Result<u32, String> {
            match object.element_opt(tag).ok().flatten() {
                Some(element) => element.to_int::<u32>().map_err(|_| format!("{name} is not a number")),
                None => default.ok_or_else(|| format!("no {name}: not an image")),
            }
        };
        let header = Header {
            rows: int(tags::ROWS, "Rows", None)?,
            columns: int(tags::COLUMNS, "Columns", None)?,
            samples_per_pixel: int(tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", Some(1))?,
            bits_allocated: int(tags::BITS_ALLOCATED, "BitsAllocated", None)?,
            frames: int(tags::NUMBER_OF_FRAMES, "NumberOfFrames", Some(1))?.max(1),
        };
        if header.rows == 0 || header.columns == 0 {
            return Err(format!("image has no pixels ({}x{})", header.columns, header.rows));
        }
        if !matches!(header.samples_per_pixel, 1 | 3) {
            return Err(format!("unsupported SamplesPerPixel {}", header.samples_per_pixel));
        }
        Ok(header)
    }

    /// Bytes of one native frame.
    fn frame_bytes(&self) -> u64 {
        self.rows as u64 * self.columns as u64 * self.samples_per_pixel as u64 * self.bits_allocated.div_ceil(8) as u64
    }
}

/// How a stored sample sits in its `bits_allocated`-bit word.
#[derive(Clone, Copy, Debug)]
struct SampleLayout {
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
}

impl SampleLayout {
    fn check(&self) -> std::result::Result<(), String> {
        let SampleLayout { bits_allocated, bits_stored, high_bit, .. } = *self;
        if !matches!(bits_allocated, 8 | 16 | 32) {
            return Err(format!("unsupported BitsAllocated {bits_allocated}"));
        }
        if bits_stored == 0 || bits_stored > bits_allocated || high_bit >= bits_allocated || high_bit + 1 < bits_stored
        {
            return Err(format!(
                "inconsistent BitsStored {bits_stored} / HighBit {high_bit} for BitsAllocated {bits_allocated}"
            ));
        }
        Ok(())
    }

    /// The first `count` sample values: the `bits_stored` bits ending at
    /// `high_bit` of each little-endian word (other bits, e.g. old overlay
    /// planes, ignored), sign-extended when signed.
    fn values(&self, bytes: &[u8], count: usize) -> Vec<i64> {
        let word = (self.bits_allocated / 8) as usize;
        let shift = (self.high_bit + 1 - self.bits_stored) as u32;
        let mask = (1u64 << self.bits_stored) - 1;
        let sign = 1u64 << (self.bits_stored - 1);
        bytes
            .chunks_exact(word)
            .take(count)
            .map(|w| {
                let mut le = [0u8; 8];
                le[..word].copy_from_slice(w);
                let value = (u64::from_le_bytes(le) >> shift) & mask;
                if self.signed && value & sign != 0 {
                    value as i64 - (mask as i64 + 1)
                } else {
                    value as i64
                }
            })
            .collect()
    }
}

/// The VOI step chosen for an image.
#[derive(Clone, Debug, PartialEq)]
enum Voi {
    /// A window (centre, width) and its function.
    Window { center: f64, width: f64, function: VoiLutFunction },
    /// A lookup table: `first` is the modality value of entry 0.
    Table { first: f64, bits: u8, entries: Vec<u16> },
    /// No window and no table: the image's own range.
    FullRange,
}

fn choose_voi(decoded: &dicom_pixeldata::DecodedPixelData<'_>) -> Voi {
    let function =
        decoded.voi_lut_function().ok().flatten().and_then(|f| f.first().copied()).unwrap_or(VoiLutFunction::Linear);
    if let Some(window) = decoded.window().ok().flatten().and_then(|w| w.first().copied()) {
        let usable = match function {
            VoiLutFunction::LinearExact => window.width > 0.0,
            _ => window.width >= 1.0,
        };
        if usable && window.center.is_finite() && window.width.is_finite() {
            return Voi::Window { center: window.center, width: window.width, function };
        }
    }
    if let Some(table) = decoded.voi_lut_sequence().ok().flatten().and_then(|t| t.first()) {
        if !table.data.is_empty() && (1..=16).contains(&table.bits_stored) {
            return Voi::Table {
                first: table.min_pixel_value as f64,
                bits: table.bits_stored,
                entries: table.data.clone(),
            };
        }
    }
    Voi::FullRange
}

/// Modality values -> 8-bit display values (the VOI step, then MONOCHROME1's inversion).
fn grey_display(modality: &[f64], voi: &Voi, invert: bool) -> Vec<f64> {
    let (low, high) = modality.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let to_display = |x: f64| -> f64 {
        match voi {
            Voi::Window { center, width, function: VoiLutFunction::Linear } => {
                let (c, w) = (center - 0.5, width - 1.0);
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    255.0
                } else {
                    ((x - c) / w + 0.5) * 255.0
                }
            }
            Voi::Window { center, width, function: VoiLutFunction::LinearExact } => {
                if x <= center - width / 2.0 {
                    0.0
                } else if x > center + width / 2.0 {
                    255.0
                } else {
                    ((x - center) / width + 0.5) * 255.0
                }
            }
            Voi::Window { center, width, function: VoiLutFunction::Sigmoid } => {
                255.0 / (1.0 + (-4.0 * (x - center) / width).exp())
            }
            Voi::Table { first, bits, entries } => {
                let index = (x - first).round().clamp(0.0, (entries.len() - 1) as f64) as usize;
                entries[index] as f64 / ((1u32 << bits) - 1) as f64 * 255.0
            }
            Voi::FullRange if high > low => (x - low) / (high - low) * 255.0,
            Voi::FullRange => 0.0,
        }
    };
    modality
        .iter()
        .map(|&x| {
            let y = to_display(x).clamp(0.0, 255.0);
            if invert {
                255.0 - y
            } else {
                y
            }
        })
        .collect()
}

/// YBR_FULL to RGB (PS3.3 C.7.6.3.1.2, the inverse of the JPEG/JFIF transform).
fn ybr_full_to_rgb(y: f64, cb: f64, cr: f64) -> [f64; 3] {
    [y + 1.402 * (cr - 128.0), y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0), y + 1.772 * (cb - 128.0)]
}

/// The first line of an error's message (dicom-rs messages can be long).
fn first_line(error: &dyn std::fmt::Display) -> String {
    error.to_string().lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bits_are_masked_and_sign_extended() {
        // 12 bits stored, high bit 11, in 16-bit words, with junk in the top 4 bits
        let layout = SampleLayout { bits_allocated: 16, bits_stored: 12, high_bit: 11, signed: true };
        let words: Vec<u8> = [0xA7FFu16, 0x5800, 0xF001].iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(layout.values(&words, 3), vec![2047, -2048, 1]);
        let unsigned = SampleLayout { signed: false, ..layout };
        assert_eq!(unsigned.values(&words, 3), vec![2047, 2048, 1]);
        // bits stored not starting at bit 0: high bit 13 of 16, 12 stored -> shift by 2
        let shifted = SampleLayout { bits_allocated: 16, bits_stored: 12, high_bit: 13, signed: false };
        assert_eq!(shifted.values(&(0x0FFFu16 << 2).to_le_bytes(), 1), vec![4095]);
    }

    /// The display values rounded to 8 bits, as an 8-bit decode stores them.
    fn grey8(modality: &[f64], voi: &Voi, invert: bool) -> Vec<u8> {
        grey_display(modality, voi, invert).iter().map(|y| y.round() as u8).collect()
    }

    #[test]
    fn linear_window_follows_the_standard() {
        // c = 40, w = 400 (a CT soft-tissue window): below -160 black, above 239.5 white
        let voi = Voi::Window { center: 40.0, width: 400.0, function: VoiLutFunction::Linear };
        let out = grey8(&[-1000.0, -160.0, 39.5, 240.0, 3000.0], &voi, false);
        assert_eq!(out, vec![0, 0, 128, 255, 255]);
        assert_eq!(grey8(&[-1000.0, 39.5, 3000.0], &voi, true), vec![255, 128, 0]);
    }

    #[test]
    fn full_range_and_table() {
        assert_eq!(grey8(&[-100.0, 0.0, 100.0], &Voi::FullRange, false), vec![0, 128, 255]);
        assert_eq!(grey8(&[5.0, 5.0], &Voi::FullRange, false), vec![0, 0]);
        let table = Voi::Table { first: 10.0, bits: 8, entries: vec![0, 51, 255] };
        assert_eq!(grey8(&[0.0, 10.0, 11.0, 12.0, 99.0], &table, false), vec![0, 0, 51, 255, 255]);
    }
}
