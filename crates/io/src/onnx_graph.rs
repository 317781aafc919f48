//! The graph of an ONNX file, sorted for [`crate::onnx_import`]: the nodes
//! that compute on the image (in file order, which ONNX requires to be
//! topological), who consumes each of their tensors, and the constants —
//! initializers, `Constant` nodes and their `Identity` copies, read from the
//! file or from external data beside it. Nodes that only compute shapes
//! (`Shape`, `Gather`, `Unsqueeze`, `Concat` of those, ...) are set aside: their
//! values are not needed, only that they are not image data.

use crate::onnx_proto::{ModelProto, NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The operators [`crate::onnx_import::import_onnx`] reads.
pub const SUPPORTED: &str = "Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, ReduceMean, \
    Flatten, Reshape, Gemm, MatMul, Add, Concat, Dropout, Softmax, Identity, Constant and shape arithmetic";

/// A constant: its dimensions and values.
#[derive(Clone, Debug)]
pub(crate) struct Const {
    pub(crate) dims: Vec<usize>,
    pub(crate) values: Vec<f64>,
}

/// The graph's data-flow part: nodes that compute on the image.
pub(crate) struct Graph<'a> {
    pub(crate) nodes: Vec<&'a NodeProto>,
    /// Data tensor -> its consumers (node indices), in node order.
    pub(crate) consumers: HashMap<String, Vec<usize>>,
    /// Data tensor -> the node that writes it.
    pub(crate) producer: HashMap<String, usize>,
    /// Constant tensors (initializers, Constant nodes, their Identity copies).
    pub(crate) consts: HashMap<String, Const>,
    /// Tensor names that are aliases (Identity) of another.
    pub(crate) aliases: HashMap<String, String>,
    /// Tensors computed from shapes or constants only, whose values are not evaluated.
    pub(crate) shape_values: HashSet<String>,
}

impl<'a> Graph<'a> {
    /// Sorts the nodes into data nodes and constant arithmetic.
    /// ONNX requires the nodes in topological order; a node that reads a
    /// tensor no earlier node wrote (nor the graph's input) is refused, so the
    /// walk over the graph always moves forward and ends.
    pub(crate) fn new(model: &'a ModelProto, folder: &Path) -> std::result::Result<Self, String> {
        let mut graph = Graph {
            nodes: Vec::new(),
            consumers: HashMap::new(),
            producer: HashMap::new(),
            consts: HashMap::new(),
            aliases: HashMap::new(),
            shape_values: HashSet::new(),
        };
        let inputs_of_graph: HashSet<&str> = model.graph.inputs.iter().map(|input| input.name.as_str()).collect();
        for tensor in &model.graph.initializers {
            graph.consts.insert(tensor.name.clone(), load_const(tensor, folder)?);
        }
        for node in &model.graph.nodes {
            if !(node.domain.is_empty() || node.domain == "ai.onnx") {
                return Err(format!(
                    "node {} uses operator {}::{}; {}",
                    node.name,
                    node.domain,
                    node.op_type,
                    supported()
                ));
            }
            let inputs: Vec<String> =
                node.inputs.iter().filter(|name| !name.is_empty()).map(|name| graph.resolve(name)).collect();
            let data: Vec<String> = inputs
                .iter()
                .filter(|name| !graph.consts.contains_key(*name) && !graph.shape_values.contains(*name))
                .cloned()
                .collect();
            let data_inputs = data.len();
            match node.op_type.as_str() {
                "Constant" => {
                    let value = constant_value(node, folder)?;
                    graph.consts.insert(output(node)?.to_string(), value);
                }
                "Identity" => {
                    let source = inputs.first().ok_or_else(|| format!("Identity node {} has no input", node.name))?;
                    graph.aliases.insert(output(node)?.to_string(), source.clone());
                }
                "Shape" => {
                    graph.shape_values.insert(output(node)?.to_string());
                }
                _ if data_inputs == 0 => {
                    for name in node.outputs.iter() {
                        graph.shape_values.insert(name.clone());
                    }
                }
                _ => {
                    if let Some(name) = data
                        .iter()
                        .find(|name| !graph.producer.contains_key(*name) && !inputs_of_graph.contains(name.as_str()))
                    {
                        return Err(format!("node {} reads tensor {name} before any node writes it: the graph is not in topological order", node.name));
                    }
                    if let Some(name) = node.outputs.iter().find(|name| graph.producer.contains_key(*name)) {
                        return Err(format!("tensor {name} is written by two nodes (the second: {})", node.name));
                    }
                    graph.add_data_node(node, &data)
                }
            }
        }
        Ok(graph)
    }

    fn add_data_node(&mut self, node: &'a NodeProto, data_inputs: &[String]) {
        let index = self.nodes.len();
        for name in data_inputs {
            let list = self.consumers.entry(name.clone()).or_default();
            if !list.contains(&index) {
                list.push(index);
            }
        }
        if let Some(out) = node.outputs.first() {
            self.producer.insert(out.clone(), index);
        }
        self.nodes.push(node);
    }

    /// The tensor `name` stands for, through Identity nodes.
    pub(crate) fn resolve(&self, name: &str) -> String {
        let mut name = name.to_string();
        let mut steps = 0;
        while let Some(source) = self.aliases.get(&name) {
            name = source.clone();
            steps += 1;
            if steps > self.aliases.len() {
                break;
            }
        }
        name
    }

    /// Input `index` of `node`, resolved.
    pub(crate) fn input(&self, node: &NodeProto, index: usize) -> Option<String> {
        node.inputs.get(index).filter(|name| !name.is_empty()).map(|name| self.resolve(name))
    }

    /// Input `index` of `node` as a constant.
    pub(crate) fn const_input(&self, node: &NodeProto, index: usize) -> Option<&Const> {
        self.input(node, index).and_then(|name| self.consts.get(&name))
    }

    /// The data inputs of `node`, in order.
    pub(crate) fn data_inputs(&self, node: &NodeProto) -> Vec<String> {
        node.inputs
            .iter()
            .filter(|name| !name.is_empty())
            .map(|name| self.resolve(name))
            .filter(|name| self.producer.contains_key(name) || self.consumers.contains_key(name))
            .filter(|name| !self.consts.contains_key(name) && !self.shape_values.contains(name))
            .collect()
    }

    /// The consumers of the data tensor `name` among the nodes of `region`, in node order.
    pub(crate) fn consumers_in(&self, name: &str, region: &HashSet<usize>) -> Vec<usize> {
        self.consumers.get(name).into_iter().flatten().copied().filter(|n| region.contains(n)).collect()
    }

    /// Every node reachable from `start` (itself included).
    pub(crate) fn descendants(&self, start: usize) -> HashSet<usize> {
        let mut seen = HashSet::new();
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            if seen.insert(node) {
                for out in &self.nodes[node].outputs {
                    stack.extend(self.consumers.get(out).into_iter().flatten().copied());
                }
            }
        }
        seen
    }

    /// Every node `target` depends on (its producer included).
    pub(crate) fn ancestors(&self, target: &str) -> HashSet<usize> {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = self.producer.get(target).copied().into_iter().collect();
        while let Some(node) = stack.pop() {
            if seen.insert(node) {
                for name in self.data_inputs(self.nodes[node]) {
                    stack.extend(self.producer.get(&name).copied());
                }
            }
        }
        seen
    }
}

pub(crate) fn supported() -> String {
    format!("convnet imports {SUPPORTED}")
}

pub(crate) fn output(node: &NodeProto) -> std::result::Result<&str, String> {
    node.outputs
        .first()
        .map(String::as_str)
        .ok_or_else(|| format!("node {} ({}) has no output", node.name, node.op_type))
}

/// An initializer's values, from the file or from its external data file.
fn load_const(tensor: &TensorProto, folder: &Path) -> std::result::Result<Const, String> {
    let dims = tensor.dims.iter().map(|&d| d as usize).collect();
    let values = if tensor.is_external() {
        let bytes = read_external(tensor, folder)?;
        tensor.values(Some(&bytes))?
    } else {
        tensor.values(None)?
    };
    Ok(Const { dims, values })
}

/// The bytes of an external tensor: `location` relative to the model's
/// folder (never outside it), from `offset`, `length` bytes (or to the end).
fn read_external(tensor: &TensorProto, folder: &Path) -> std::result::Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let location = tensor
        .external
        .get("location")
        .ok_or_else(|| format!("tensor {} is external but names no file", tensor.name))?;
    let relative = Path::new(location);
    if relative.is_absolute() || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(format!(
            "tensor {}'s external data {location:?} is not a file inside the model's folder",
            tensor.name
        ));
    }
    let number = |key: &str| -> std::result::Result<Option<u64>, String> {
        tensor
            .external
            .get(key)
            .map(|v| v.parse().map_err(|_| format!("tensor {}: external {key} {v:?} is not a number", tensor.name)))
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let path = folder.join(relative);
    let mut file = std::fs::File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let size = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "tensor {}: {length} bytes at {offset} lie past the end of {}",
            tensor.name,
            path.display()
        ));
    }
    let expected = tensor.element_count()?.saturating_mul(if matches!(tensor.data_type, 7 | 11) { 8 } else { 4 });
    if length as usize != expected {
        return Err(format!("tensor {}: {length} external bytes for {expected} expected", tensor.name));
    }
    let mut bytes = vec![0; length as usize];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(bytes)
}

/// A Constant node's value.
fn constant_value(node: &NodeProto, folder: &Path) -> std::result::Result<Const, String> {
    let attributes = &node.attributes;
    if let Some(tensor) = attributes.get("value").and_then(|a| a.tensor.as_ref()) {
        return load_const(tensor, folder);
    }
    if let Some(value) = attributes.get("value_float").and_then(|a| a.float) {
        return Ok(Const { dims: vec![], values: vec![value as f64] });
    }
    if let Some(value) = attributes.get("value_int").and_then(|a| a.int) {
        return Ok(Const { dims: vec![], values: vec![value as f64] });
    }
    if let Some(values) = attributes.get("value_floats") {
        return Ok(Const {
            dims: vec![values.floats.len()],
            values: values.floats.iter().map(|&v| v as f64).collect(),
        });
    }
    if let Some(values) = attributes.get("value_ints") {
        return Ok(Const { dims: vec![values.ints.len()], values: values.ints.iter().map(|&v| v as f64).collect() });
    }
    Err(format!("Constant node {} has no value convnet reads", node.name))
}
