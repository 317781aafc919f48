//! ONNX export: a trained model as an ONNX graph any ONNX runtime can run.
//!
//! ```text
//! input  "input"          float (N, C, H, W), pixels in the model's scale (0-1 or 0-255)
//!   Conv2d    -> Conv     W (OC, C, KH, KW), B (OC,), strides, pads = [top, left, bottom, right]
//!   Relu      -> Relu
//!   MaxPool2d -> MaxPool  kernel_shape, strides, pads
//!   Flatten   -> Flatten  axis 1: C, H, W order, ours and ONNX's (Keras' is H, W, C)
//!   Dense     -> Gemm     B (out, in) with transB = 1: y = x W^T + b
//!   Dropout   -> (nothing: the identity at inference)
//!   BatchNorm -> BatchNormalization  scale, B, running mean and variance, epsilon
//!   AvgPool2d -> AveragePool         kernel_shape, strides, pads, count_include_pad, ceil_mode
//!   GlobalAvgPool2d -> GlobalAveragePool + Flatten
//!   Normalize -> Sub (mean), Div (std)  constants (C, 1, 1)
//!   Residual  -> the body's nodes, the shortcut's (or the input), Add
//!   Concat    -> each branch's nodes, Concat(axis 1)
//! output "logits"         (N, classes)
//!        "probabilities"  Softmax(axis -1) of the logits (divided by the temperature of
//!                         `convnet calibrate`, when there is one), the first output
//! ```
//!
//! The batch dimension is symbolic (`N`). Keras-style `same` padding puts the
//! odd extra row or column at the bottom or right, which ONNX's `auto_pad`
//! cannot say portably, so the pads are written explicitly. Resizing, colour
//! conversion and pixel scaling happen before the graph; they are recorded in
//! `metadata_props` (`class_names`, `image_size`, `color_mode`,
//! `pixel_scale`, `interpolation`, and `resize_shorter` for torchvision's
//! resize-then-centre-crop).
//!
//! The file is protobuf (`onnx.proto`, IR version 8, opset 13) written with
//! the small encoder of [`crate::protobuf`]: the few messages a CNN needs, no
//! dependency. Field numbers are those of `onnx.proto`.

use crate::error::{IoError, Result};
use crate::model_file::ModelMeta;
use crate::protobuf::Message;
use convnet_tensor::{Concat, Layer, LayerSpec, Padding, Residual, Sequential, WindowGeometry};

/// ONNX IR version written (ONNX 1.10+ reads it).
pub const IR_VERSION: u64 = 8;
/// Operator set version written: the first where Dropout's ratio is an input,
/// and every operator used here has its current meaning.
pub const OPSET: u64 = 13;

/// AttributeProto: name 1, i 3, ints 8, type 20 (INT 2, INTS 7).
fn attribute_ints(name: &str, values: &[usize]) -> Message {
    let mut attribute = Message::default();
    attribute.string(1, name);
    for &value in values {
        attribute.int(8, value as i64);
    }
    attribute.int(20, 7);
    attribute
}

/// AttributeProto of type FLOAT (1): name 1, f 2.
fn attribute_float(name: &str, value: f32) -> Message {
    let mut attribute = Message::default();
    attribute.string(1, name).float32(2, value).int(20, 1);
    attribute
}

fn attribute_int(name: &str, value: i64) -> Message {
    let mut attribute = Message::default();
    attribute.string(1, name).int(3, value).int(20, 2);
    attribute
}

/// NodeProto: input 1, output 2, name 3, op_type 4, attribute 5.
fn node(op_type: &str, name: &str, inputs: &[&str], output: &str, attributes: Vec<Message>) -> Message {
    let mut node = Message::default();
    for input in inputs {
        node.string(1, input);
    }
    node.string(2, output).string(3, name).string(4, op_type);
    for attribute in attributes {
        node.message(5, attribute);
    }
    node
}

/// TensorProto (float): dims 1, data_type 2 (FLOAT = 1), name 8, raw_data 9 (little-endian).
fn initializer(name: &str, dims: &[usize], values: impl Iterator<Item = f32>) -> Message {
    let mut tensor = Message::default();
    for &dim in dims {
        tensor.int(1, dim as i64);
    }
    tensor.int(2, 1).string(8, name);
    let raw: Vec<u8> = values.flat_map(f32::to_le_bytes).collect();
    tensor.bytes(9, &raw);
    tensor
}

/// ValueInfoProto of a float tensor: name 1, type 2 -> TypeProto.tensor_type 1 ->
/// elem_type 1, shape 2 -> dim 1 -> dim_value 1 | dim_param 2. `None` dims are the batch `N`.
fn value_info(name: &str, dims: &[Option<usize>]) -> Message {
    let mut shape = Message::default();
    for dim in dims {
        let mut dimension = Message::default();
        match dim {
            Some(size) => dimension.int(1, *size as i64),
            None => dimension.string(2, "N"),
        };
        shape.message(1, dimension);
    }
    let mut tensor_type = Message::default();
    tensor_type.int(1, 1).message(2, shape);
    let mut type_proto = Message::default();
    type_proto.message(1, tensor_type);
    let mut info = Message::default();
    info.string(1, name).message(2, type_proto);
    info
}

/// The ONNX bytes of `model` (see the module docs).
pub fn export(model: &Sequential<f32>, meta: &ModelMeta) -> Result<Vec<u8>> {
    let mut graph = Message::default();
    let last = emit_sequence(&mut graph, &meta.architecture.layers, model, "", "input".to_string())?;
    let shape = model.output_shape();
    if shape.len() != 1 {
        return Err(unsupported(format!("the last layer's output {shape:?} is not (classes,)")));
    }
    let classes = shape[0];
    graph.message(1, node("Identity", "logits", &[&last], "logits", Vec::new()));
    let scores = match meta.temperature {
        // calibrated (`convnet calibrate`): probabilities = softmax(logits / T)
        Some(t) => {
            graph.message(5, initializer("temperature", &[], std::iter::once(t as f32)));
            graph.message(1, node("Div", "calibrated", &["logits", "temperature"], "calibrated", Vec::new()));
            "calibrated"
        }
        None => "logits",
    };
    graph.message(1, node("Softmax", "probabilities", &[scores], "probabilities", vec![attribute_int("axis", -1)]));
    graph.string(2, "convnet");
    let input_dims: Vec<Option<usize>> =
        std::iter::once(None).chain(model.input_shape().iter().map(|&d| Some(d))).collect();
    graph.message(11, value_info("input", &input_dims));
    graph.message(12, value_info("probabilities", &[None, Some(classes)]));
    graph.message(12, value_info("logits", &[None, Some(classes)]));

    Ok(model_proto(graph, meta).into_bytes())
}

fn unsupported(what: String) -> IoError {
    IoError::Format(format!("cannot export to ONNX: {what}"))
}

/// Emits the nodes of `specs` (built as `model`) reading the tensor `input`,
/// naming each `"{prefix}{index}_{kind}"`; returns the name of the last output.
fn emit_sequence(
    graph: &mut Message,
    specs: &[LayerSpec],
    model: &Sequential<f32>,
    prefix: &str,
    input: String,
) -> Result<String> {
    if specs.len() != model.layers().len() {
        return Err(unsupported("the architecture does not match the model's layers".into()));
    }
    let mut current = input;
    // per-sample shapes: shapes()[i] is layer i's input, shapes()[i + 1] its output
    for (index, (spec, layer)) in specs.iter().zip(model.layers()).enumerate() {
        let name = format!("{prefix}{index}_{}", layer.kind());
        current = emit_layer(graph, spec, layer.as_ref(), &model.shapes()[index], &name, current)?;
    }
    Ok(current)
}

/// Emits one layer (a block: its branches and the Add or Concat) reading
/// `current`; returns the name of its output.
fn emit_layer(
    graph: &mut Message,
    spec: &LayerSpec,
    layer: &dyn Layer<f32>,
    shape: &[usize],
    name: &str,
    current: String,
) -> Result<String> {
    let output = format!("{name}_out");
    // a block's parameters are its inner layers', written by their own nodes
    let is_block = matches!(spec, LayerSpec::Residual { .. } | LayerSpec::Concat { .. });
    let params = if is_block { Vec::new() } else { layer.params() };
    let mut initializers = Vec::new();
    for param in &params {
        let tensor_name = format!("{name}.{}", param.name);
        graph.message(5, initializer(&tensor_name, param.value.shape(), param.value.iter().copied()));
        initializers.push(tensor_name);
    }
    let inputs: Vec<&str> = std::iter::once(current.as_str()).chain(initializers.iter().map(String::as_str)).collect();
    let window = |kernel: (usize, usize), stride: (usize, usize), padding: Padding, ceil_mode: bool| {
        let geom = geometry(shape, kernel, stride, padding)
            .ok_or_else(|| unsupported(format!("{name}: window geometry of {shape:?}")))?;
        // with ceil_mode ONNX rounds up itself, from the configured padding
        let pads = if ceil_mode { [geom.pad_top, geom.pad_left, geom.pad_top, geom.pad_left] } else { pads(&geom) };
        let mut attributes = vec![
            attribute_ints("kernel_shape", &[geom.kernel_h, geom.kernel_w]),
            attribute_ints("strides", &[geom.stride_h, geom.stride_w]),
            attribute_ints("pads", &pads),
        ];
        if ceil_mode {
            attributes.push(attribute_int("ceil_mode", 1));
        }
        Ok::<_, IoError>(attributes)
    };
    let mut plain = |op: &str, attributes: Vec<Message>| {
        graph.message(1, node(op, name, &inputs, &output, attributes));
        Ok(output.clone())
    };
    match spec {
        LayerSpec::Conv2d { kernel, stride, padding, .. } => {
            plain("Conv", window(kernel.pair(), stride.pair(), *padding, false)?)
        }
        LayerSpec::Maxpool2d { pool, stride, padding, ceil_mode } => {
            plain("MaxPool", window(pool.pair(), stride.unwrap_or(*pool).pair(), *padding, *ceil_mode)?)
        }
        LayerSpec::Avgpool2d { pool, stride, padding, ceil_mode, count_include_pad } => {
            let mut attributes = window(pool.pair(), stride.unwrap_or(*pool).pair(), *padding, *ceil_mode)?;
            attributes.push(attribute_int("count_include_pad", *count_include_pad as i64));
            plain("AveragePool", attributes)
        }
        LayerSpec::Relu => plain("Relu", Vec::new()),
        LayerSpec::Flatten => plain("Flatten", vec![attribute_int("axis", 1)]),
        LayerSpec::Dense { .. } => plain("Gemm", vec![attribute_int("transB", 1)]),
        LayerSpec::Batchnorm { eps, .. } => {
            batchnorm_node(graph, layer, name, [&current, &output], *eps, &initializers)?;
            Ok(output)
        }
        LayerSpec::GlobalAvgpool2d => {
            // (N, C, H, W) -> (N, C, 1, 1) -> (N, C)
            let pooled = format!("{name}_pooled");
            graph.message(1, node("GlobalAveragePool", name, &[&current], &pooled, Vec::new()));
            let flatten = format!("{name}_flatten");
            graph.message(1, node("Flatten", &flatten, &[&pooled], &output, vec![attribute_int("axis", 1)]));
            Ok(output)
        }
        LayerSpec::Normalize { mean, std } => {
            normalize_nodes(graph, name, [&current, &output], mean, std);
            Ok(output)
        }
        // the identity at inference: no node, the next layer reads this one's input
        LayerSpec::Dropout { .. } => Ok(current),
        LayerSpec::Softmax => {
            let layer = name.trim_end_matches("_softmax");
            Err(unsupported(format!("layer {layer} is a softmax; the export adds its own after the logits")))
        }
        LayerSpec::Residual { body, shortcut } => {
            let block = layer.as_any().and_then(|any| any.downcast_ref::<Residual<f32>>());
            let block = block.ok_or_else(|| unsupported(format!("{name} is not a residual block")))?;
            let body_out = emit_sequence(graph, body, block.body(), &format!("{name}.body."), current.clone())?;
            let shortcut_out = match block.shortcut() {
                Some(model) => emit_sequence(graph, shortcut, model, &format!("{name}.shortcut."), current)?,
                None => current,
            };
            graph.message(1, node("Add", name, &[&body_out, &shortcut_out], &output, Vec::new()));
            Ok(output)
        }
        LayerSpec::Concat { branches } => {
            let block = layer.as_any().and_then(|any| any.downcast_ref::<Concat<f32>>());
            let block = block.ok_or_else(|| unsupported(format!("{name} is not a concat block")))?;
            let mut outputs = Vec::new();
            for (b, (spec, model)) in branches.iter().zip(block.branches()).enumerate() {
                let prefix = format!("{name}.branches.{b}.");
                outputs.push(emit_sequence(graph, &spec.layers, model, &prefix, current.clone())?);
            }
            let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
            graph.message(1, node("Concat", name, &outputs, &output, vec![attribute_int("axis", 1)]));
            Ok(output)
        }
    }
}

/// `y = (x - mean[c]) / std[c]` as a Sub then a Div by `(C, 1, 1)`
/// constants, broadcast over `(N, C, H, W)`.
fn normalize_nodes(graph: &mut Message, name: &str, [input, output]: [&str; 2], mean: &[f64], std: &[f64]) {
    let shape = [mean.len(), 1, 1];
    let [mean_name, std_name, centred] = [".mean", ".std", "_centred"].map(|suffix| format!("{name}{suffix}"));
    graph.message(5, initializer(&mean_name, &shape, mean.iter().map(|&v| v as f32)));
    graph.message(5, initializer(&std_name, &shape, std.iter().map(|&v| v as f32)));
    graph.message(1, node("Sub", &centred, &[input, &mean_name], &centred, Vec::new()));
    graph.message(1, node("Div", name, &[&centred, &std_name], output, Vec::new()));
}

/// A BatchNormalization node (inference form: the running statistics, the
/// layer's buffers) reading `current` into `output`; `initializers` are the
/// names of its scale and shift, already written.
fn batchnorm_node(
    graph: &mut Message,
    layer: &dyn Layer<f32>,
    name: &str,
    [current, output]: [&str; 2],
    eps: f64,
    initializers: &[String],
) -> Result<()> {
    let mut inputs = vec![current.to_string()];
    inputs.extend(initializers.iter().cloned());
    for (what, tensor) in layer.buffers() {
        let tensor_name = format!("{name}.{what}");
        graph.message(5, initializer(&tensor_name, tensor.shape(), tensor.iter().copied()));
        inputs.push(tensor_name);
    }
    if inputs.len() != 5 {
        return Err(unsupported(format!("{name}: a batchnorm needs scale, shift, mean and variance")));
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let attributes = vec![attribute_float("epsilon", eps as f32)];
    graph.message(1, node("BatchNormalization", name, &inputs, output, attributes));
    Ok(())
}

/// The ModelProto around `graph`: versions, the opset and the preprocessing
/// `meta` describes as metadata properties.
fn model_proto(graph: Message, meta: &ModelMeta) -> Message {
    // ModelProto: ir_version 1, producer_name 2, producer_version 3, graph 7,
    // opset_import 8 (domain 1, version 2), metadata_props 14 (key 1, value 2)
    let mut model_proto = Message::default();
    model_proto.int(1, IR_VERSION as i64).string(2, "convnet").string(3, env!("CARGO_PKG_VERSION"));
    model_proto.message(7, graph);
    let mut opset = Message::default();
    opset.string(1, "").int(2, OPSET as i64);
    model_proto.message(8, opset);
    let mut metadata = vec![
        ("class_names", serde_json::to_string(&meta.class_names).expect("strings serialize")),
        ("image_size", format!("{}x{}", meta.input.image_size[0], meta.input.image_size[1])),
        ("color_mode", format!("{:?}", meta.input.color_mode).to_lowercase()),
        ("pixel_scale", format!("{:?}", meta.input.pixel_scale).to_lowercase()),
        ("pixel_factor", format!("{}", meta.input.pixel_scale.factor())),
        ("interpolation", format!("{:?}", meta.input.interpolation).to_lowercase()),
        ("crop_to_aspect_ratio", meta.input.crop_to_aspect_ratio.to_string()),
        ("input_layout", "NCHW float32: bytes 0-255 times pixel_factor".to_string()),
    ];
    if meta.input.crop_content {
        // cropped to the content (Otsu's threshold, a 2% margin) before the resize
        metadata.push(("crop_content", "true".to_string()));
    }
    if let Some(shorter) = meta.input.resize_shorter {
        // torchvision's Resize(shorter) + CenterCrop(image_size), with Pillow's bilinear filter
        metadata.push(("resize_shorter", shorter.to_string()));
    }
    for (key, value) in metadata {
        let mut entry = Message::default();
        entry.string(1, key).string(2, &value);
        model_proto.message(14, entry);
    }
    model_proto
}

fn geometry(
    shape: &[usize],
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
) -> Option<WindowGeometry> {
    match shape {
        [channels, height, width] => WindowGeometry::new(*channels, *height, *width, kernel, stride, padding),
        _ => None,
    }
}

/// `[top, left, bottom, right]`: the padding before, then the padding after,
/// which is what the windows reach past the input (zero for valid).
fn pads(geom: &WindowGeometry) -> [usize; 4] {
    let bottom = ((geom.out_h - 1) * geom.stride_h + geom.kernel_h).saturating_sub(geom.in_h + geom.pad_top);
    let right = ((geom.out_w - 1) * geom.stride_w + geom.kernel_w).saturating_sub(geom.in_w + geom.pad_left);
    [geom.pad_top, geom.pad_left, bottom, right]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pad_at_the_end() {
        // 3x3 stride 1 same on 5 wide: 1 and 1; 2x2 stride 2 same on 5: 0 and 1 (Keras)
        let geom = WindowGeometry::new(1, 5, 5, (3, 3), (1, 1), Padding::Same).unwrap();
        assert_eq!(pads(&geom), [1, 1, 1, 1]);
        let geom = WindowGeometry::new(1, 5, 5, (2, 2), (2, 2), Padding::Same).unwrap();
        assert_eq!(pads(&geom), [0, 0, 1, 1]);
        let geom = WindowGeometry::new(1, 5, 6, (4, 4), (1, 1), Padding::Same).unwrap();
        assert_eq!(pads(&geom), [1, 1, 2, 2]);
        let geom = WindowGeometry::new(1, 7, 7, (3, 3), (2, 2), Padding::Valid).unwrap();
        assert_eq!(pads(&geom), [0, 0, 0, 0]);
    }
}
