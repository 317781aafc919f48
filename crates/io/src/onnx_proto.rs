//! Reading ONNX files: a protobuf decoder for the few messages of
//! `onnx.proto` a CNN uses (the reading twin of [`crate::onnx`]'s encoder).
//!
//! ```text
//! ModelProto      1 ir_version   7 graph   8 opset_import {1 domain, 2 version}   14 metadata_props {1 key, 2 value}
//! GraphProto      1 node   2 name   5 initializer   11 input   12 output
//! NodeProto       1 input  2 output  3 name  4 op_type  5 attribute  7 domain
//! AttributeProto  1 name   2 f   3 i   4 s   5 t   7 floats   8 ints
//! TensorProto     1 dims   2 data_type   4 float_data   5 int32_data   7 int64_data   8 name   9 raw_data
//!                 10 double_data   13 external_data {1 key, 2 value}   14 data_location
//! ValueInfoProto  1 name   2 type {1 tensor_type {1 elem_type, 2 shape {1 dim {1 dim_value, 2 dim_param}}}}
//! ```
//!
//! The file is untrusted. Every length is checked against the bytes that are
//! left before it is used, so a message can never claim more than the file
//! holds; repeated fields grow one element per element read; a tensor's values
//! are decoded only after its dimensions' product has been checked against the
//! bytes it comes with. Nothing here allocates more than a small multiple of
//! the file's size. Unknown fields are skipped, as protobuf requires.

use std::collections::HashMap;

/// A reason the bytes are not a readable ONNX model.
pub type DecodeError = String;
type Decoded<T> = Result<T, DecodeError>;

/// One field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn varint(&mut self) -> Decoded<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos).ok_or("a number runs past the end of its message")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is longer than 10 bytes".into())
    }

    fn take(&mut self, len: usize) -> Decoded<&'a [u8]> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("a field declares {len} bytes, past the end of its message"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The next field's number and value, or `None` at the end.
    fn field(&mut self) -> Decoded<Option<(u64, Wire<'a>)>> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "a length does not fit in memory")?;
                Wire::Bytes(self.take(len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn bytes<'a>(wire: Wire<'a>, what: &str) -> Decoded<&'a [u8]> {
    match wire {
        Wire::Bytes(bytes) => Ok(bytes),
        _ => Err(format!("{what} is not a length-delimited field")),
    }
}

fn string(wire: Wire, what: &str) -> Decoded<String> {
    Ok(String::from_utf8_lossy(bytes(wire, what)?).into_owned())
}

fn int(wire: Wire, what: &str) -> Decoded<i64> {
    match wire {
        Wire::Varint(value) => Ok(value as i64),
        _ => Err(format!("{what} is not an integer field")),
    }
}

/// Appends a repeated integer field, packed or not.
fn push_ints(wire: Wire, out: &mut Vec<i64>, what: &str) -> Decoded<()> {
    match wire {
        Wire::Varint(value) => out.push(value as i64),
        Wire::Bytes(packed) => {
            let mut reader = Reader::new(packed);
            while reader.pos < packed.len() {
                out.push(reader.varint()? as i64);
            }
        }
        _ => return Err(format!("{what} is not a repeated integer field")),
    }
    Ok(())
}

/// Appends a repeated float field, packed or not.
fn push_floats(wire: Wire, out: &mut Vec<f32>, what: &str) -> Decoded<()> {
    match wire {
        Wire::Fixed32(bits) => out.push(f32::from_bits(bits)),
        Wire::Bytes(packed) if packed.len() % 4 == 0 => {
            out.extend(packed.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
        _ => return Err(format!("{what} is not a repeated float field")),
    }
    Ok(())
}

/// An ONNX model: the parts a CNN importer needs.
#[derive(Debug, Default)]
pub struct ModelProto {
    /// The default domain's operator set version (0 if none is declared).
    pub opset: i64,
    /// The graph.
    pub graph: GraphProto,
    /// `metadata_props`.
    pub metadata: HashMap<String, String>,
}

/// The graph: nodes in topological order, weights, inputs and outputs.
#[derive(Debug, Default)]
pub struct GraphProto {
    /// The nodes.
    pub nodes: Vec<NodeProto>,
    /// The initializers (weights and constants).
    pub initializers: Vec<TensorProto>,
    /// The inputs (older files list the initializers here too).
    pub inputs: Vec<ValueInfo>,
    /// The outputs.
    pub outputs: Vec<ValueInfo>,
}

/// One operator application.
#[derive(Debug, Default)]
pub struct NodeProto {
    /// Input tensor names (an empty name is an omitted optional input).
    pub inputs: Vec<String>,
    /// Output tensor names.
    pub outputs: Vec<String>,
    /// The node's name (may be empty).
    pub name: String,
    /// The operator.
    pub op_type: String,
    /// The operator's domain ("" or "ai.onnx" is the standard one).
    pub domain: String,
    /// The attributes by name.
    pub attributes: HashMap<String, Attribute>,
}

/// An attribute's value.
#[derive(Debug, Default)]
pub struct Attribute {
    /// `f`.
    pub float: Option<f32>,
    /// `i`.
    pub int: Option<i64>,
    /// `s`.
    pub string: Option<String>,
    /// `t`.
    pub tensor: Option<TensorProto>,
    /// `floats`.
    pub floats: Vec<f32>,
    /// `ints`.
    pub ints: Vec<i64>,
}

/// A tensor as stored: its values are decoded by [`TensorProto::values`].
#[derive(Debug, Default)]
pub struct TensorProto {
    /// The name.
    pub name: String,
    /// The dimensions.
    pub dims: Vec<i64>,
    /// ONNX's element type: 1 float, 6 int32, 7 int64, 11 double.
    pub data_type: i64,
    float_data: Vec<f32>,
    int_data: Vec<i64>,
    double_data: Vec<f64>,
    raw_data: Vec<u8>,
    /// `external_data`: `location`, `offset`, `length` (values kept in another file).
    pub external: HashMap<String, String>,
}

/// A graph input or output.
#[derive(Debug, Default)]
pub struct ValueInfo {
    /// The tensor's name.
    pub name: String,
    /// Each dimension: a size, or `None` for a symbolic one.
    pub dims: Vec<Option<i64>>,
}

/// Decodes an ONNX model.
pub fn decode_model(bytes: &[u8]) -> Decoded<ModelProto> {
    let mut model = ModelProto::default();
    let mut reader = Reader::new(bytes);
    let mut graph = None;
    while let Some((field, wire)) = reader.field()? {
        match field {
            7 => graph = Some(decode_graph(bytes_field(wire, "graph")?)?),
            8 => {
                let (mut domain, mut version) = (String::new(), 0);
                let mut set = Reader::new(bytes_field(wire, "opset_import")?);
                while let Some((field, wire)) = set.field()? {
                    match field {
                        1 => domain = string(wire, "opset domain")?,
                        2 => version = int(wire, "opset version")?,
                        _ => {}
                    }
                }
                if domain.is_empty() || domain == "ai.onnx" {
                    model.opset = version;
                }
            }
            14 => {
                let (key, value) = decode_entry(bytes_field(wire, "metadata_props")?)?;
                model.metadata.insert(key, value);
            }
            _ => {}
        }
    }
    model.graph = graph.ok_or("no graph: not an ONNX model")?;
    Ok(model)
}

fn bytes_field<'a>(wire: Wire<'a>, what: &str) -> Decoded<&'a [u8]> {
    bytes(wire, what)
}

fn decode_entry(message: &[u8]) -> Decoded<(String, String)> {
    let (mut key, mut value) = (String::new(), String::new());
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.field()? {
        match field {
            1 => key = string(wire, "key")?,
            2 => value = string(wire, "value")?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn decode_graph(message: &[u8]) -> Decoded<GraphProto> {
    let mut graph = GraphProto::default();
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.field()? {
        match field {
            1 => graph.nodes.push(decode_node(bytes(wire, "node")?)?),
            5 => graph.initializers.push(decode_tensor(bytes(wire, "initializer")?)?),
            11 => graph.inputs.push(decode_value_info(bytes(wire, "input")?)?),
            12 => graph.outputs.push(decode_value_info(bytes(wire, "output")?)?),
            _ => {}
        }
    }
    Ok(graph)
}

fn decode_node(message: &[u8]) -> Decoded<NodeProto> {
    let mut node = NodeProto::default();
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.field()? {
        match field {
            1 => node.inputs.push(string(wire, "node input")?),
            2 => node.outputs.push(string(wire, "node output")?),
            3 => node.name = string(wire, "node name")?,
            4 => node.op_type = string(wire, "op_type")?,
            5 => {
                let (name, attribute) = decode_attribute(bytes(wire, "attribute")?)?;
                node.attributes.insert(name, attribute);
            }
            7 => node.domain = string(wire, "node domain")?,
            _ => {}
        }
    }
    Ok(node)
}

fn decode_attribute(message: &[u8]) -> Decoded<(String, Attribute)> {
    let (mut name, mut attribute) = (String::new(), Attribute::default());
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.field()? {
        match field {
            1 => name = string(wire, "attribute name")?,
            2 => match wire {
                Wire::Fixed32(bits) => attribute.float = Some(f32::from_bits(bits)),
                _ => return Err("attribute f is not a float".into()),
            },
            3 => attribute.int = Some(int(wire, "attribute i")?),
            4 => attribute.string = Some(string(wire, "attribute s")?),
            5 => attribute.tensor = Some(decode_tensor(bytes(wire, "attribute t")?)?),
            7 => push_floats(wire, &mut attribute.floats, "attribute floats")?,
            8 => push_ints(wire, &mut attribute.ints, "attribute ints")?,
            _ => {}
        }
    }
    Ok((name, attribute))
}

fn decode_tensor(message: &[u8]) -> Decoded<TensorProto> {
    let mut tensor = TensorProto::default();
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.field()? {
        match field {
            1 => push_ints(wire, &mut tensor.dims, "dims")?,
            2 => tensor.data_type = int(wire, "data_type")?,
            4 => push_floats(wire, &mut tensor.float_data, "float_data")?,
            5 | 7 => push_ints(wire, &mut tensor.int_data, "int_data")?,
            8 => tensor.name = string(wire, "tensor name")?,
            9 => tensor.raw_data = bytes(wire, "raw_data")?.to_vec(),
            10 => match wire {
                Wire::Fixed64(bits) => tensor.double_data.push(f64::from_bits(bits)),
                Wire::Bytes(packed) if packed.len() % 8 == 0 => tensor
                    .double_data
                    .extend(packed.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))),
                _ => return Err("double_data is not a repeated double field".into()),
            },
            13 => {
                let (key, value) = decode_entry(bytes(wire, "external_data")?)?;
                tensor.external.insert(key, value);
            }
            _ => {}
        }
    }
    Ok(tensor)
}

fn decode_value_info(message: &[u8]) -> Decoded<ValueInfo> {
    let mut info = ValueInfo::default();
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.field()? {
        match field {
            1 => info.name = string(wire, "value name")?,
            2 => info.dims = decode_type_dims(bytes(wire, "type")?)?,
            _ => {}
        }
    }
    Ok(info)
}

/// `TypeProto.tensor_type.shape.dim[*]`.
fn decode_type_dims(message: &[u8]) -> Decoded<Vec<Option<i64>>> {
    let mut dims = Vec::new();
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.field()? {
        if field != 1 {
            continue;
        }
        let mut tensor_type = Reader::new(bytes(wire, "tensor_type")?);
        while let Some((field, wire)) = tensor_type.field()? {
            if field != 2 {
                continue;
            }
            let mut shape = Reader::new(bytes(wire, "shape")?);
            while let Some((field, wire)) = shape.field()? {
                if field != 1 {
                    continue;
                }
                let mut dim = Reader::new(bytes(wire, "dim")?);
                let mut value = None;
                while let Some((field, wire)) = dim.field()? {
                    if field == 1 {
                        value = Some(int(wire, "dim_value")?);
                    }
                }
                dims.push(value);
            }
        }
    }
    Ok(dims)
}

impl TensorProto {
    /// The number of elements its dimensions declare, if they are valid.
    pub fn element_count(&self) -> Decoded<usize> {
        self.dims.iter().try_fold(1usize, |count, &dim| {
            usize::try_from(dim)
                .ok()
                .and_then(|dim| count.checked_mul(dim))
                .ok_or_else(|| format!("tensor {} has invalid dimensions {:?}", self.name, self.dims))
        })
    }

    /// Whether the values live in another file (`data_location = EXTERNAL`).
    pub fn is_external(&self) -> bool {
        !self.external.is_empty()
    }

    /// The values as f64 (floats, doubles and integers), checked against the
    /// dimensions. `external` holds the bytes of an external tensor's file
    /// segment, already cut to its `offset` and `length`.
    pub fn values(&self, external: Option<&[u8]>) -> Decoded<Vec<f64>> {
        let count = self.element_count()?;
        let raw = external.unwrap_or(&self.raw_data);
        let width = match self.data_type {
            1 | 6 => 4,
            7 | 11 => 8,
            other => {
                return Err(format!(
                    "tensor {} has ONNX element type {other}; only float, double, int32 and int64 are read",
                    self.name
                ))
            }
        };
        let values: Vec<f64> = if !raw.is_empty() || self.is_external() {
            if raw.len() != count.saturating_mul(width) {
                return Err(format!("tensor {} declares {count} elements but holds {} bytes", self.name, raw.len()));
            }
            match self.data_type {
                1 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4")) as f64).collect(),
                6 => raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4")) as f64).collect(),
                7 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f64).collect(),
                _ => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8"))).collect(),
            }
        } else {
            match self.data_type {
                1 => self.float_data.iter().map(|&v| v as f64).collect(),
                11 => self.double_data.clone(),
                _ => self.int_data.iter().map(|&v| v as f64).collect(),
            }
        };
        if values.len() != count {
            return Err(format!("tensor {} declares {count} elements but holds {}", self.name, values.len()));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_are_refused() {
        // field 7 (graph), length 200, but only 2 bytes follow
        let error = decode_model(&[0x3a, 200, 1, 0x0a]).unwrap_err();
        assert!(error.contains("past the end"), "{error}");
        assert!(decode_model(&[0x08, 0xff, 0xff]).unwrap_err().contains("past the end"));
        assert!(decode_model(&[]).unwrap_err().contains("no graph"));
    }

    #[test]
    fn tensor_values_are_checked_against_their_dimensions() {
        let tensor = TensorProto {
            name: "w".into(),
            dims: vec![2, 3],
            data_type: 1,
            raw_data: vec![0; 20],
            ..TensorProto::default()
        };
        assert!(tensor.values(None).unwrap_err().contains("declares 6 elements but holds 20 bytes"));
        let huge = TensorProto { dims: vec![1 << 40, 1 << 40], data_type: 1, ..TensorProto::default() };
        assert!(huge.values(None).unwrap_err().contains("invalid dimensions"));
        let ok = TensorProto { dims: vec![2], data_type: 1, float_data: vec![1.5, -2.0], ..TensorProto::default() };
        assert_eq!(ok.values(None).unwrap(), vec![1.5, -2.0]);
    }
}
