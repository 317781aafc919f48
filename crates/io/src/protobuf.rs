//! Protobuf's wire format, written: the encoder of one message, for the
//! ONNX export ([`crate::onnx`]) and the TensorBoard event files
//! ([`crate::tensorboard`]). (Reading ONNX is [`crate::onnx_proto`].)
//!
//! ```text
//! field key = (field number << 3) | wire type     as a varint (7 bits a byte, low first, high bit = more)
//! wire type 0  varint       ints, bools, enums
//!           1  8 bytes LE   double
//!           2  length + bytes   strings, bytes, embedded messages, packed repeated fields
//!           5  4 bytes LE   float
//! ```
//!
//! ```
//! use convnet_io::protobuf::Message;
//! let mut m = Message::default();
//! m.int(1, 150).string(2, "hi");
//! assert_eq!(m.into_bytes(), vec![0x08, 0x96, 0x01, 0x12, 2, b'h', b'i']);
//! ```

/// The encoder of one message: fields appended in the order written.
#[derive(Default, Debug, Clone)]
pub struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    /// `field` as a varint (wire type 0).
    pub fn int(&mut self, field: u32, value: i64) -> &mut Self {
        self.varint((field as u64) << 3);
        self.varint(value as u64);
        self
    }

    /// `field` length-delimited (wire type 2): bytes, a string or a message.
    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        self.varint(((field as u64) << 3) | 2);
        self.varint(value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    /// `field` as a 32-bit float (wire type 5).
    pub fn float32(&mut self, field: u32, value: f32) -> &mut Self {
        self.varint(((field as u64) << 3) | 5);
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `field` as a 64-bit float (wire type 1).
    pub fn float64(&mut self, field: u32, value: f64) -> &mut Self {
        self.varint(((field as u64) << 3) | 1);
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `field` as a UTF-8 string (wire type 2).
    pub fn string(&mut self, field: u32, value: &str) -> &mut Self {
        self.bytes(field, value.as_bytes())
    }

    /// `field` as an embedded message (wire type 2).
    pub fn message(&mut self, field: u32, value: Message) -> &mut Self {
        self.bytes(field, &value.0)
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_follow_the_wire_format() {
        let mut message = Message::default();
        message.int(1, 150); // the protobuf documentation's example: 08 96 01
        assert_eq!(message.clone().into_bytes(), [0x08, 0x96, 0x01]);
        let mut message = Message::default();
        message.string(2, "testing"); // 12 07 74 65 73 74 69 6e 67
        assert_eq!(message.clone().into_bytes(), [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
        let mut message = Message::default();
        message.int(3, -1); // negative int64: ten bytes
        assert_eq!(message.clone().into_bytes().len(), 11);
    }
}
