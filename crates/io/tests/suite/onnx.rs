//! The ONNX file read back with a minimal protobuf decoder: the graph's
//! nodes, attributes, initializers, inputs, outputs and metadata are what
//! `onnx.rs` promises. (`.ci/onnx_parity.py` runs the files in onnxruntime.)

use convnet_data::ColorMode;
use convnet_io::model_file::ModelMeta;
use convnet_io::onnx::export;
use convnet_tensor::model::spec::Size2;
use convnet_tensor::{LayerSpec, ModelSpec, Padding};
use std::collections::BTreeMap;

/// One protobuf field: a varint or a length-delimited payload.
#[derive(Clone, Debug)]
enum Field {
    Int(u64),
    Bytes(Vec<u8>),
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

/// The fields of a message, by number, in order.
fn fields(bytes: &[u8]) -> BTreeMap<u64, Vec<Field>> {
    let mut out: BTreeMap<u64, Vec<Field>> = BTreeMap::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let field = match key & 7 {
            0 => Field::Int(varint(bytes, &mut at)),
            2 => {
                let len = varint(bytes, &mut at) as usize;
                at += len;
                Field::Bytes(bytes[at - len..at].to_vec())
            }
            wire => panic!("unexpected wire type {wire}"),
        };
        out.entry(key >> 3).or_default().push(field);
    }
    out
}

fn bytes(field: &Field) -> &[u8] {
    match field {
        Field::Bytes(b) => b,
        Field::Int(_) => panic!("expected a length-delimited field"),
    }
}

fn int(field: &Field) -> u64 {
    match field {
        Field::Int(v) => *v,
        Field::Bytes(_) => panic!("expected a varint"),
    }
}

fn string(field: &Field) -> String {
    String::from_utf8(bytes(field).to_vec()).unwrap()
}

fn strings(message: &BTreeMap<u64, Vec<Field>>, number: u64) -> Vec<String> {
    message.get(&number).map_or(Vec::new(), |f| f.iter().map(string).collect())
}

/// A network with every exportable layer: same and valid convolutions, a
/// pool over an odd size (Keras' extra pad at the end), dropout, two dense layers.
fn network() -> ModelSpec {
    ModelSpec {
        init: Default::default(),
        layers: vec![
            LayerSpec::Conv2d {
                filters: Some(4),
                kernel: Size2::Square(3),
                stride: Size2::Square(1),
                padding: Padding::Same,
                bias: true,
            },
            LayerSpec::Relu,
            LayerSpec::Maxpool2d { pool: Size2::Square(2), stride: None, padding: Padding::Same, ceil_mode: false },
            LayerSpec::Conv2d {
                filters: Some(6),
                kernel: Size2::Square(3),
                stride: Size2::Square(2),
                padding: Padding::Valid,
                bias: true,
            },
            LayerSpec::Relu,
            LayerSpec::Flatten,
            LayerSpec::Dense { units: Some(5), bias: true },
            LayerSpec::Relu,
            LayerSpec::Dropout { rate: 0.5 },
            LayerSpec::Dense { units: None, bias: true },
        ],
    }
}

#[test]
fn the_exported_graph_is_the_network() {
    let spec = network();
    let model = spec.build::<f32>(&[3, 11, 13], 3, 7).unwrap();
    let meta = ModelMeta::new(spec, vec!["a".into(), "b".into(), "c".into()], [11, 13], ColorMode::Rgb);
    let onnx = export(&model, &meta).unwrap();
    let model_proto = fields(&onnx);
    assert_eq!(int(&model_proto[&1][0]), 8, "IR version");
    let opset = fields(bytes(&model_proto[&8][0]));
    assert_eq!((string(&opset[&1][0]), int(&opset[&2][0])), (String::new(), 13));
    let metadata: BTreeMap<String, String> = model_proto[&14]
        .iter()
        .map(|entry| {
            let entry = fields(bytes(entry));
            (string(&entry[&1][0]), string(&entry[&2][0]))
        })
        .collect();
    assert_eq!(metadata["class_names"], r#"["a","b","c"]"#);
    assert_eq!(metadata["image_size"], "11x13");
    assert_eq!(metadata["color_mode"], "rgb");
    assert_eq!(metadata["pixel_scale"], "unit");

    let graph = fields(bytes(&model_proto[&7][0]));
    let nodes: Vec<_> = graph[&1].iter().map(|n| fields(bytes(n))).collect();
    let ops: Vec<String> = nodes.iter().map(|n| string(&n[&4][0])).collect();
    // dropout is gone; logits, then their softmax
    assert_eq!(
        ops,
        ["Conv", "Relu", "MaxPool", "Conv", "Relu", "Flatten", "Gemm", "Relu", "Gemm", "Identity", "Softmax"]
    );
    // each node reads the previous one's output
    for pair in nodes.windows(2) {
        assert_eq!(strings(&pair[1], 1)[0], strings(&pair[0], 2)[0]);
    }
    assert_eq!(strings(&nodes[0], 1)[0], "input");
    let attributes = |node: &BTreeMap<u64, Vec<Field>>| -> BTreeMap<String, Vec<u64>> {
        node.get(&5)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|a| {
                let a = fields(bytes(a));
                let values = a.get(&8).or(a.get(&3)).unwrap().iter().map(int).collect();
                (string(&a[&1][0]), values)
            })
            .collect()
    };
    // conv 3x3 same on 11x13: one pad on every side
    assert_eq!(attributes(&nodes[0])["pads"], [1, 1, 1, 1]);
    // pool 2x2 same on 11x13 -> 6x7: the odd pad at the bottom and right, as Keras
    assert_eq!(attributes(&nodes[2])["pads"], [0, 0, 1, 1]);
    assert_eq!(attributes(&nodes[2])["kernel_shape"], [2, 2]);
    // conv 3x3 stride 2 valid
    assert_eq!(attributes(&nodes[3])["strides"], [2, 2]);
    assert_eq!(attributes(&nodes[3])["pads"], [0, 0, 0, 0]);
    assert_eq!(attributes(&nodes[5])["axis"], [1]);
    assert_eq!(attributes(&nodes[6])["transB"], [1]);
    assert_eq!(attributes(&nodes[10])["axis"], [u64::MAX], "axis -1 as an int64 varint");

    // initializers: conv [OC, C, KH, KW], dense [out, in], values as in the model
    let initializers: BTreeMap<String, (Vec<u64>, Vec<f32>)> = graph[&5]
        .iter()
        .map(|t| {
            let t = fields(bytes(t));
            assert_eq!(int(&t[&2][0]), 1, "FLOAT");
            let dims = t[&1].iter().map(int).collect();
            let values = bytes(&t[&9][0]).chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (string(&t[&8][0]), (dims, values))
        })
        .collect();
    assert_eq!(initializers["0_conv2d.weight"].0, [4, 3, 3, 3]);
    assert_eq!(initializers["3_conv2d.weight"].0, [6, 4, 3, 3]);
    // 11x13 -> pool 6x7 -> conv stride 2 valid 2x3: 6 * 2 * 3 = 36 features
    assert_eq!(initializers["6_dense.weight"].0, [5, 36]);
    assert_eq!(initializers["9_dense.weight"].0, [3, 5]);
    let params = model.params();
    assert_eq!(initializers["0_conv2d.weight"].1, params[0].value.iter().copied().collect::<Vec<_>>());
    assert_eq!(initializers["9_dense.bias"].1, params[7].value.iter().copied().collect::<Vec<_>>());

    // input (N, 3, 11, 13) with a symbolic batch; outputs probabilities then logits
    let input = fields(bytes(&graph[&11][0]));
    assert_eq!(string(&input[&1][0]), "input");
    let tensor_type = fields(bytes(&fields(bytes(&input[&2][0]))[&1][0]));
    let dims: Vec<String> = fields(bytes(&tensor_type[&2][0]))[&1]
        .iter()
        .map(|d| {
            let d = fields(bytes(d));
            d.get(&1).map_or_else(|| string(&d[&2][0]), |v| int(&v[0]).to_string())
        })
        .collect();
    assert_eq!(dims, ["N", "3", "11", "13"]);
    let outputs: Vec<String> = graph[&12].iter().map(|o| string(&fields(bytes(o))[&1][0])).collect();
    assert_eq!(outputs, ["probabilities", "logits"]);
}

#[test]
fn a_model_ending_in_softmax_is_refused_in_words() {
    let mut spec = network();
    spec.layers.push(LayerSpec::Softmax);
    let model = spec.build::<f32>(&[3, 11, 13], 3, 7).unwrap();
    let meta = ModelMeta::new(spec, vec!["a".into(), "b".into(), "c".into()], [11, 13], ColorMode::Rgb);
    let error = export(&model, &meta).unwrap_err().to_string();
    assert!(error.contains("cannot export to ONNX: layer 10 is a softmax"), "{error}");
}
