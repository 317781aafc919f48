//! TensorBoard event files, written in-tree: `tensorboard --logdir runs`
//! shows a run's curves and pictures.
//!
//! ```text
//! file    = record*
//! record  = length: u64 LE | masked_crc32c(length bytes): u32 LE | data | masked_crc32c(data): u32 LE
//! masked  = ((crc >> 15) | (crc << 17)) + 0xa282ead8        (wrapping, 32-bit)
//! data    = an Event protobuf:
//!   Event   1 wall_time (double)  2 step (int64)  3 file_version ("brain.Event:2", the first event)  5 summary
//!   Summary 1 value (repeated)
//!   Value   1 tag  2 simple_value (float)  4 image
//!   Image   1 height  2 width  3 colorspace (3 = RGB)  4 encoded_image_string (PNG bytes)
//! ```
//!
//! CRC-32C is the Castagnoli polynomial (reflected `0x82f63b78`), computed
//! here with a 256-entry table.
//!
//! ```
//! use convnet_io::tensorboard::crc32c;
//! assert_eq!(crc32c(b"123456789"), 0xe306_9283); // the standard check value
//! ```

use crate::protobuf::Message;

/// CRC-32C (Castagnoli) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let crc = bytes.iter().fold(!0u32, |crc, &byte| (crc >> 8) ^ TABLE[((crc ^ byte as u32) & 0xff) as usize]);
    !crc
}

/// TensorFlow's masked CRC of a record's parts.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One framed record around `data`.
fn record(data: &[u8], out: &mut Vec<u8>) {
    let length = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// What one event holds.
pub enum Value<'a> {
    /// A number on a curve.
    Scalar(f32),
    /// A picture: PNG bytes, width, height.
    Png(&'a [u8], u32, u32),
}

/// The bytes of an event file, built in memory (written atomically by the caller).
pub struct EventFile {
    bytes: Vec<u8>,
}

impl EventFile {
    /// A file starting with the version event, at `wall_time` (UNIX seconds).
    pub fn new(wall_time: f64) -> Self {
        let mut event = Message::default();
        event.float64(1, wall_time).string(3, "brain.Event:2");
        let mut bytes = Vec::new();
        record(&event.into_bytes(), &mut bytes);
        EventFile { bytes }
    }

    /// A file that continues `bytes` (an event file read back).
    pub fn continuing(bytes: Vec<u8>) -> Self {
        EventFile { bytes }
    }

    /// Appends `tag` at `step` and `wall_time`.
    pub fn add(&mut self, tag: &str, step: i64, wall_time: f64, value: Value<'_>) {
        let mut entry = Message::default();
        entry.string(1, tag);
        match value {
            Value::Scalar(number) => {
                entry.float32(2, number);
            }
            Value::Png(png, width, height) => {
                let mut image = Message::default();
                image.int(1, height as i64).int(2, width as i64).int(3, 3).bytes(4, png);
                entry.message(4, image);
            }
        }
        let mut summary = Message::default();
        summary.message(1, entry);
        let mut event = Message::default();
        event.float64(1, wall_time).int(2, step).message(5, summary);
        record(&event.into_bytes(), &mut self.bytes);
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The records of an event file, each checked against its CRCs (for tests
/// and for reading a file back).
pub fn read_records(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 12 {
            return Err("a record header runs past the end".into());
        }
        let (header, rest) = bytes.split_at(12);
        let length = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        if masked_crc(&header[..8]) != u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) {
            return Err("a record length fails its CRC".into());
        }
        let length = usize::try_from(length).ok().filter(|&l| l.checked_add(4).is_some_and(|n| n <= rest.len()));
        let length = length.ok_or("a record runs past the end")?;
        let (data, rest) = rest.split_at(length);
        if masked_crc(data) != u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) {
            return Err("a record's data fails its CRC".into());
        }
        records.push(data.to_vec());
        bytes = &rest[4..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_frame_and_check_their_events() {
        let mut file = EventFile::new(1.5);
        file.add("loss", 3, 2.0, Value::Scalar(0.25));
        file.add("curves", 3, 2.0, Value::Png(&[1, 2, 3], 4, 5));
        let records = read_records(file.bytes()).unwrap();
        assert_eq!(records.len(), 3);
        // the scalar event: wall_time 2.0, step 3, summary { value { tag "loss", simple_value 0.25 } }
        let mut expected = Message::default();
        let mut value = Message::default();
        value.string(1, "loss").float32(2, 0.25);
        let mut summary = Message::default();
        summary.message(1, value);
        expected.float64(1, 2.0).int(2, 3).message(5, summary);
        assert_eq!(records[1], expected.into_bytes());
        // a flipped bit is caught
        let mut broken = file.bytes().to_vec();
        let last = broken.len() - 6;
        broken[last] ^= 1;
        assert!(read_records(&broken).unwrap_err().contains("CRC"));
    }
}
