//! ONNX import: a CNN from `torch.onnx.export`, `tf2onnx` or the ONNX model
//! zoo as a convnet model (`convnet import-onnx`).
//!
//! ```text
//! ONNX                                    convnet
//! Conv (group 1, dilation 1)              Conv2d     W (OC, C, KH, KW) unchanged, pads -> padding
//! BatchNormalization (inference form)     Batchnorm  scale, B, mean, var; momentum 1 - ONNX's
//! Relu                                    Relu
//! MaxPool / AveragePool (ceil_mode)       Maxpool2d / Avgpool2d
//! GlobalAveragePool, ReduceMean over H,W  GlobalAvgpool2d (and the Flatten or Reshape after it is dropped)
//! Flatten, Reshape to (N, -1)             Flatten
//! Gemm, MatMul (+ Add of a constant)      Dense      W as (out, in): transposed when the file stores (in, out)
//! Dropout                                 Dropout
//! Add of two computed tensors             Residual   the longer path is the body, the other the shortcut
//! Concat along channels                   Concat     one branch per input, in order
//! Identity, Softmax at the end            (nothing)
//! Constant, Shape, Gather, ... computing a shape or a weight: evaluated away
//! ```
//!
//! The graph must be a chain of these layers whose forks meet again: from
//! each tensor several consumers may start branches, which must all end at
//! the same Add or Concat (a residual or a concatenating block, nested as
//! deep as the file has them). The parameters are named as convnet names
//! them (`4.body.0.weight`), and the last layer with weights becomes the
//! classifier, sized by the classes. Anything else — another operator, a
//! grouped or dilated convolution, a graph that does not nest — is refused in
//! one line naming the operator and the node.
//!
//! Weights may sit in the file (`raw_data` or typed fields) or, for files
//! saved with external data, in files beside it named by a relative
//! `location` inside the model's folder.

use crate::error::{IoError, Result};
use crate::model_file::ModelMeta;
use crate::onnx_graph::{output, supported, Const, Graph};
use crate::onnx_proto::{decode_model, ModelProto, NodeProto};
use crate::onnx_window::{int_attr, ints_attr, no_dilation, pool, size2, window_padding, Flow};
use convnet_data::{ColorMode, InputFormat, PixelScale};
use convnet_tensor::model::spec::BranchSpec;
use convnet_tensor::{LayerSpec, ModelSpec, Sequential};
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub use crate::onnx_graph::SUPPORTED;

/// How to read the file.
#[derive(Clone, Debug, Default)]
pub struct OnnxImport {
    /// The class names in the order of the outputs; empty: the file's
    /// `class_names` metadata (as convnet's export writes it) or `0`, `1`, ...
    pub class_names: Vec<String>,
    /// The input size when the file leaves height and width symbolic.
    pub image_size: Option<[usize; 2]>,
    /// The pixels' scale before the graph.
    pub pixel_scale: PixelScale,
    /// Layers to put before the graph's (the preprocessing's normalisation).
    pub prepend: Vec<LayerSpec>,
}

/// How deep blocks may nest inside each other's branches (a ResNet nests 1,
/// an Inception-style network 2): a bound on the walk's recursion.
const MAX_NESTING: usize = 16;

/// A named tensor for the model file: shape and values.
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads the ONNX file at `path` as a convnet model and its metadata.
pub fn import_onnx(path: &Path, options: &OnnxImport) -> Result<(Sequential<f32>, ModelMeta)> {
    let bad = |reason: String| IoError::Invalid { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|error| IoError::Read { path: path.to_path_buf(), error })?;
    let model = decode_model(&bytes).map_err(|e| bad(format!("not a readable ONNX model: {e}")))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    import_model(&model, folder, options).map_err(bad)
}

/// [`import_onnx`] of decoded bytes; external data is read from `folder`.
pub fn import_model(
    model: &ModelProto,
    folder: &Path,
    options: &OnnxImport,
) -> std::result::Result<(Sequential<f32>, ModelMeta), String> {
    let graph = Graph::new(model, folder)?;
    let (input, input_shape) = data_input(model, &graph, options)?;
    let (output, temperature) = data_output(model, &graph)?;
    let mut tensors = Tensors::new();
    let mut converter = Converter { graph: &graph, channels: input_shape[0], tensors: &mut tensors };
    let mut layers = options.prepend.clone();
    let everything: HashSet<usize> = (0..converter.graph.nodes.len()).collect();
    let mut flow = Flow { spatial: true, hw: [input_shape[1], input_shape[2]] };
    converter.chain(&input, &output, &everything, "", &mut layers, &mut flow)?;
    let classes = make_classifier(&mut layers)?;
    let class_names = class_names(model, options, classes)?;
    let [channels, height, width] = input_shape;
    let color_mode = match channels {
        1 => ColorMode::Grayscale,
        3 => ColorMode::Rgb,
        other => return Err(format!("the input has {other} channels; convnet reads 1 (grayscale) or 3 (RGB)")),
    };
    let mut meta = ModelMeta::new(ModelSpec::new(layers), class_names, [height, width], color_mode);
    meta.input = InputFormat { pixel_scale: options.pixel_scale, ..meta.input };
    meta.temperature = temperature.filter(|t| *t > 0.0 && *t != 1.0);
    let mut built = meta.build().map_err(|e| format!("the graph maps onto an invalid convnet model: {e}"))?;
    crate::model_file::assign_params(&mut built, &tensors).map_err(|e| format!("weights: {e}"))?;
    Ok((built, meta))
}

/// The last layer with weights outputs the classes: its size is left to the
/// class count (so `--new-head` can resize it), and the count is returned.
fn make_classifier(layers: &mut [LayerSpec]) -> std::result::Result<usize, String> {
    let last = layers.iter_mut().rev().find(|layer| {
        matches!(
            layer,
            LayerSpec::Dense { .. } | LayerSpec::Conv2d { .. } | LayerSpec::Residual { .. } | LayerSpec::Concat { .. }
        )
    });
    match last {
        Some(LayerSpec::Dense { units, .. }) => Ok(units.take().expect("imported dense layers have units")),
        Some(LayerSpec::Conv2d { filters, .. }) => Ok(filters.take().expect("imported convolutions have filters")),
        _ => Err("the graph does not end with a Gemm, MatMul or Conv computing the classes".into()),
    }
}

fn class_names(model: &ModelProto, options: &OnnxImport, classes: usize) -> std::result::Result<Vec<String>, String> {
    let names = if !options.class_names.is_empty() {
        options.class_names.clone()
    } else if let Some(text) = model.metadata.get("class_names") {
        serde_json::from_str(text).map_err(|e| format!("metadata class_names is not a JSON list of strings: {e}"))?
    } else {
        (0..classes).map(|k| k.to_string()).collect()
    };
    if names.len() != classes {
        return Err(format!("the model has {classes} outputs but {} class names were given", names.len()));
    }
    Ok(names)
}

/// The one image input and its `(C, H, W)`.
fn data_input(
    model: &ModelProto,
    graph: &Graph,
    options: &OnnxImport,
) -> std::result::Result<(String, [usize; 3]), String> {
    let inputs: Vec<_> = model.graph.inputs.iter().filter(|input| !graph.consts.contains_key(&input.name)).collect();
    let [input] = inputs.as_slice() else {
        return Err(format!(
            "the graph has {} inputs besides its weights; convnet reads one image input",
            inputs.len()
        ));
    };
    let dims = &input.dims;
    if dims.len() != 4 {
        return Err(format!("input {} has rank {}; convnet reads images as (N, C, H, W)", input.name, dims.len()));
    }
    let channels = dims[1].filter(|&c| c > 0).ok_or("the input's channel count is not fixed")? as usize;
    let size = match (dims[2], dims[3], options.image_size) {
        (_, _, Some(size)) => size,
        (Some(h), Some(w), None) if h > 0 && w > 0 => [h as usize, w as usize],
        _ => return Err("the input's height and width are symbolic: give --image-size".into()),
    };
    Ok((input.name.clone(), [channels, size[0], size[1]]))
}

/// The tensor holding the logits: the graph's output, before a final Softmax
/// (and a division by a constant before it: a temperature, returned).
fn data_output(model: &ModelProto, graph: &Graph) -> std::result::Result<(String, Option<f64>), String> {
    let mut ends = HashSet::new();
    let mut temperature = None;
    for output in &model.graph.outputs {
        let mut name = graph.resolve(&output.name);
        if let Some(&node) = graph.producer.get(&name) {
            if graph.nodes[node].op_type == "Softmax" {
                name = graph.resolve(&graph.nodes[node].inputs[0]);
                let divided = graph.producer.get(&name).map(|&n| graph.nodes[n]).filter(|n| n.op_type == "Div");
                let scalar = divided.and_then(|n| graph.const_input(n, 1)).filter(|c| c.values.len() == 1);
                if let (Some(divide), Some(scalar)) = (divided, scalar) {
                    temperature = Some(scalar.values[0]);
                    name = graph.resolve(&divide.inputs[0]);
                }
            }
        }
        ends.insert(name);
    }
    match ends.len() {
        1 => Ok((ends.into_iter().next().expect("one"), temperature)),
        n => Err(format!("the graph has {n} different outputs; convnet reads one (logits, or their softmax)")),
    }
}

/// Walks the graph into convnet layers, collecting their weights.
struct Converter<'g, 'a> {
    graph: &'g Graph<'a>,
    /// The input's channels (what a per-channel constant must have).
    channels: usize,
    tensors: &'g mut Tensors,
}

impl Converter<'_, '_> {
    /// Appends to `layers` the layers computing `to` from `from`, using only
    /// nodes of `region`; `prefix` names their parameters (`"4.body."`) and
    /// `flow` is the tensor's form at `from` (and, after, at `to`).
    fn chain(
        &mut self,
        from: &str,
        to: &str,
        region: &HashSet<usize>,
        prefix: &str,
        layers: &mut Vec<LayerSpec>,
        flow: &mut Flow,
    ) -> std::result::Result<(), String> {
        let mut current = from.to_string();
        while current != to {
            let consumers = self.graph.consumers_in(&current, region);
            match consumers.as_slice() {
                [] => return Err(format!("tensor {current} does not lead to the output {to}")),
                [single] if self.graph.data_inputs(self.graph.nodes[*single]).len() == 1 => {
                    let node = self.graph.nodes[*single];
                    let path = format!("{prefix}{}", layers.len());
                    let (next, layer) = self.layer(node, &path, region, flow)?;
                    match (layers.last_mut(), layer) {
                        (
                            Some(LayerSpec::Normalize { mean, std }),
                            Some(LayerSpec::Normalize { mean: m2, std: s2 }),
                        ) => {
                            // (((x - m1) / s1) - m2) / s2 = (x - (m1 + m2 s1)) / (s1 s2)
                            for c in 0..mean.len() {
                                mean[c] += m2[c] * std[c];
                                std[c] *= s2[c];
                            }
                        }
                        (_, layer) => layers.extend(layer),
                    }
                    current = next;
                }
                _ => current = self.block(&current, &consumers, region, prefix, layers, flow)?,
            }
        }
        Ok(())
    }

    /// A fork at `from`: the branches up to the Add or Concat where they meet,
    /// as one block; returns the block's output tensor.
    fn block(
        &mut self,
        from: &str,
        consumers: &[usize],
        region: &HashSet<usize>,
        prefix: &str,
        layers: &mut Vec<LayerSpec>,
        flow: &mut Flow,
    ) -> std::result::Result<String, String> {
        let graph = self.graph;
        if prefix.matches('#').count() >= MAX_NESTING {
            return Err(format!("blocks nest more than {MAX_NESTING} deep at tensor {from}"));
        }
        let reach: Vec<HashSet<usize>> = consumers.iter().map(|&c| graph.descendants(c)).collect();
        let join = reach[0].iter().copied().filter(|n| reach.iter().all(|r| r.contains(n)) && region.contains(n)).min();
        let join = join.ok_or_else(|| format!("the branches from tensor {from} never meet again; convnet reads blocks whose branches end in one Add or Concat"))?;
        let node = graph.nodes[join];
        let inputs = graph.data_inputs(node);
        let index = layers.len();
        let (mut branches, mut flows) = (Vec::new(), Vec::new());
        for (k, input) in inputs.iter().enumerate() {
            // the branch's nodes: those between the fork and this input of the join
            let inside: HashSet<usize> = graph
                .ancestors(input)
                .into_iter()
                .filter(|n| region.contains(n) && reach.iter().any(|r| r.contains(n)))
                .collect();
            let sub_prefix = format!("{prefix}{index}.#{k}.");
            let mut branch = Vec::new();
            let mut branch_flow = *flow;
            self.chain(from, input, &inside, &sub_prefix, &mut branch, &mut branch_flow)?;
            branches.push(branch);
            flows.push(branch_flow);
        }
        let node = self.graph.nodes[join];
        let block = match node.op_type.as_str() {
            "Add" if branches.len() == 2 => {
                let body_first = branches[0].len() >= branches[1].len();
                let (body, shortcut) = if body_first { (0, 1) } else { (1, 0) };
                self.rename_branch(&format!("{prefix}{index}.#{body}."), &format!("{prefix}{index}.body."));
                self.rename_branch(&format!("{prefix}{index}.#{shortcut}."), &format!("{prefix}{index}.shortcut."));
                let mut branches = branches;
                let shortcut_layers = std::mem::take(&mut branches[shortcut]);
                LayerSpec::Residual { body: std::mem::take(&mut branches[body]), shortcut: shortcut_layers }
            }
            "Concat" => {
                let axis = node.attributes.get("axis").and_then(|a| a.int).unwrap_or(1);
                if !flow.spatial || !(axis == 1 || axis == -3) {
                    return Err(format!("Concat node {} joins along axis {axis}; convnet concatenates channels (axis 1) of (N, C, H, W) tensors", node.name));
                }
                for k in 0..branches.len() {
                    self.rename_branch(&format!("{prefix}{index}.#{k}."), &format!("{prefix}{index}.branches.{k}."));
                }
                LayerSpec::Concat { branches: branches.into_iter().map(|layers| BranchSpec { layers }).collect() }
            }
            other => {
                return Err(format!(
                    "branches from tensor {from} meet at node {} ({other}); convnet joins branches with Add (two) or Concat",
                    node.name
                ))
            }
        };
        layers.push(block);
        *flow = flows[0];
        output(node).map(str::to_string)
    }

    /// Renames the collected tensors under `from` to `to` (a branch's final name).
    fn rename_branch(&mut self, from: &str, to: &str) {
        let names: Vec<String> = self.tensors.keys().filter(|name| name.starts_with(from)).cloned().collect();
        for name in names {
            let tensor = self.tensors.remove(&name).expect("listed");
            self.tensors.insert(format!("{to}{}", &name[from.len()..]), tensor);
        }
    }
}

impl Converter<'_, '_> {
    /// Stores a weight under `{path}.{name}`, as f32.
    fn store(&mut self, path: &str, name: &str, dims: Vec<usize>, values: impl Iterator<Item = f64>) {
        self.tensors.insert(format!("{path}.{name}"), (dims, values.map(|v| v as f32).collect()));
    }

    /// A constant input of `node`, required.
    fn weight(&self, node: &NodeProto, index: usize, what: &str) -> std::result::Result<Const, String> {
        self.graph.const_input(node, index).cloned().ok_or_else(|| {
            format!(
                "node {} ({}): its {what} is computed, not a constant; convnet imports fixed weights",
                node.name, node.op_type
            )
        })
    }

    /// An optional constant input of `node` (absent, or a constant).
    fn optional_weight(
        &self,
        node: &NodeProto,
        index: usize,
        what: &str,
    ) -> std::result::Result<Option<Const>, String> {
        self.graph.input(node, index).map(|_| self.weight(node, index, what)).transpose()
    }

    /// One single-input node as a layer (or none): the tensor after it and the layer.
    fn layer(
        &mut self,
        node: &NodeProto,
        path: &str,
        region: &HashSet<usize>,
        flow: &mut Flow,
    ) -> std::result::Result<(String, Option<LayerSpec>), String> {
        let out = output(node)?.to_string();
        let layer = match node.op_type.as_str() {
            "Conv" => Some(self.conv(node, path, flow)?),
            "BatchNormalization" => Some(self.batchnorm(node, path)?),
            "Relu" => Some(LayerSpec::Relu),
            "MaxPool" | "AveragePool" => Some(pool(node, flow)?),
            "GlobalAveragePool" => {
                flow.spatial = false;
                Some(LayerSpec::GlobalAvgpool2d)
            }
            "ReduceMean" => {
                let axes = match self.graph.const_input(node, 1) {
                    Some(axes) => axes.values.iter().map(|&v| v as i64).collect(),
                    None => ints_attr(node, "axes", &[]),
                };
                let mut axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
                axes.sort_unstable();
                if !flow.spatial || axes != [2, 3] {
                    return Err(format!("node {} (ReduceMean) averages over axes {axes:?}; convnet reads it as global average pooling over (H, W) only", node.name));
                }
                flow.spatial = false;
                Some(LayerSpec::GlobalAvgpool2d)
            }
            "Flatten" | "Reshape" => self.flatten(node, flow)?,
            "Gemm" => Some(self.gemm(node, path, flow)?),
            "MatMul" => return self.matmul(node, path, region, flow),
            "Dropout" => {
                let rate = match self.graph.const_input(node, 1) {
                    Some(ratio) => ratio.values.first().copied().unwrap_or(0.5),
                    None => node.attributes.get("ratio").and_then(|a| a.float).map_or(0.5, f64::from),
                };
                Some(LayerSpec::Dropout { rate })
            }
            "Softmax" => {
                return Err(format!(
                    "node {} (Softmax) is inside the graph; convnet reads a softmax only at the end",
                    node.name
                ))
            }
            "Add" | "Sub" | "Mul" | "Div" => Some(self.affine(node, flow)?),
            other => {
                return Err(format!(
                    "node {} uses operator {other}, which convnet does not import; {}",
                    node.name,
                    supported()
                ))
            }
        };
        Ok((out, layer))
    }

    /// Add, Sub, Mul or Div of a per-channel constant to an (N, C, H, W)
    /// tensor: a [`LayerSpec::Normalize`] (consecutive ones are merged).
    fn affine(&self, node: &NodeProto, flow: &Flow) -> std::result::Result<LayerSpec, String> {
        let refuse = || {
            format!(
                "node {} ({}) combines a computed tensor with something other than a per-channel constant; convnet \
                 reads such arithmetic as the input's normalisation, or a constant Add as a MatMul's bias",
                node.name, node.op_type
            )
        };
        let first_is_data = self.graph.const_input(node, 0).is_none();
        let constant = self.graph.const_input(node, if first_is_data { 1 } else { 0 }).ok_or_else(refuse)?;
        let per_channel = constant.dims.iter().filter(|&&d| d != 1).count() <= 1 && constant.dims.len() <= 4;
        let channels = self.channels;
        let values: Vec<f64> = match constant.values.len() {
            1 => vec![constant.values[0]; channels],
            n if n == channels && per_channel => constant.values.clone(),
            _ => return Err(refuse()),
        };
        if !flow.spatial || !(first_is_data || matches!(node.op_type.as_str(), "Add" | "Mul")) {
            return Err(refuse());
        }
        let (mean, std) = match node.op_type.as_str() {
            "Sub" => (values, vec![1.0; channels]),
            "Add" => (values.iter().map(|v| -v).collect(), vec![1.0; channels]),
            "Div" => (vec![0.0; channels], values),
            _ => (vec![0.0; channels], values.iter().map(|v| 1.0 / v).collect()),
        };
        Ok(LayerSpec::Normalize { mean, std })
    }

    fn conv(&mut self, node: &NodeProto, path: &str, flow: &mut Flow) -> std::result::Result<LayerSpec, String> {
        if int_attr(node, "group", 1) != 1 {
            return Err(format!(
                "node {} (Conv) is grouped (group {}); convnet convolves all channels (group 1)",
                node.name,
                int_attr(node, "group", 1)
            ));
        }
        no_dilation(node)?;
        let weight = self.weight(node, 1, "weight")?;
        let [filters, _, kh, kw] = weight.dims[..] else {
            return Err(format!(
                "node {} (Conv) has a weight of shape {:?}; convnet convolves 2-d images",
                node.name, weight.dims
            ));
        };
        let kernel = size2(&ints_attr(node, "kernel_shape", &[kh as i64, kw as i64]), node, "kernel_shape")?;
        let stride = size2(&ints_attr(node, "strides", &[1, 1]), node, "strides")?;
        let padding = window_padding(node, flow, kernel, stride, false)?;
        let bias = self.optional_weight(node, 2, "bias")?;
        self.store(path, "weight", weight.dims.clone(), weight.values.into_iter());
        if let Some(bias) = &bias {
            self.store(path, "bias", vec![filters], bias.values.iter().copied());
        }
        Ok(LayerSpec::Conv2d { filters: Some(filters), kernel, stride, padding, bias: bias.is_some() })
    }

    fn batchnorm(&mut self, node: &NodeProto, path: &str) -> std::result::Result<LayerSpec, String> {
        if node.outputs.iter().skip(1).any(|name| !name.is_empty()) {
            return Err(format!(
                "node {} (BatchNormalization) is in training form; convnet imports its inference form",
                node.name
            ));
        }
        for (index, name) in [(1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var")] {
            let tensor = self.weight(node, index, name)?;
            let channels = tensor.values.len();
            self.store(path, name, vec![channels], tensor.values.into_iter());
        }
        let eps = node.attributes.get("epsilon").and_then(|a| a.float).map_or(1e-5, f64::from);
        // ONNX keeps `momentum` of the old statistics (0.9), PyTorch and convnet of the new batch's (0.1)
        let momentum = node.attributes.get("momentum").and_then(|a| a.float).map_or(0.1, |m| 1.0 - f64::from(m));
        Ok(LayerSpec::Batchnorm { eps, momentum: (momentum * 1e6).round() / 1e6 })
    }

    /// Flatten or a Reshape to `(N, -1)`: convnet's Flatten, or nothing after
    /// global pooling (convnet's pooling already gives `(N, C)`).
    fn flatten(&mut self, node: &NodeProto, flow: &mut Flow) -> std::result::Result<Option<LayerSpec>, String> {
        if node.op_type == "Flatten" && int_attr(node, "axis", 1) != 1 {
            return Err(format!(
                "node {} (Flatten) flattens from axis {}; convnet flattens from axis 1",
                node.name,
                int_attr(node, "axis", 1)
            ));
        }
        if node.op_type == "Reshape" {
            if let Some(shape) = self.graph.const_input(node, 1) {
                let flat = shape.values.len() == 2 && (shape.values[1] == -1.0 || shape.values[0] <= 1.0);
                if !flat {
                    return Err(format!(
                        "node {} (Reshape) reshapes to {:?}; convnet reads a Reshape only as a flatten to (N, -1)",
                        node.name, shape.values
                    ));
                }
            }
        }
        let layer = if flow.spatial { Some(LayerSpec::Flatten) } else { None };
        flow.spatial = false;
        Ok(layer)
    }

    fn gemm(&mut self, node: &NodeProto, path: &str, flow: &mut Flow) -> std::result::Result<LayerSpec, String> {
        if flow.spatial {
            return Err(format!("node {} (Gemm) takes an (N, C, H, W) tensor; flatten it first", node.name));
        }
        if int_attr(node, "transA", 0) != 0 {
            return Err(format!("node {} (Gemm) transposes its input (transA = 1)", node.name));
        }
        let alpha = node.attributes.get("alpha").and_then(|a| a.float).map_or(1.0, f64::from);
        let beta = node.attributes.get("beta").and_then(|a| a.float).map_or(1.0, f64::from);
        let weight = self.weight(node, 1, "weight")?;
        let weight = if int_attr(node, "transB", 0) == 1 { weight } else { transpose(&weight, node)? };
        let bias = self.optional_weight(node, 2, "bias")?;
        self.dense(node, path, weight, alpha, bias.map(|b| (b, beta)))
    }

    /// A dense layer from a weight laid out `(out, in)`.
    fn dense(
        &mut self,
        node: &NodeProto,
        path: &str,
        weight: Const,
        alpha: f64,
        bias: Option<(Const, f64)>,
    ) -> std::result::Result<LayerSpec, String> {
        let [units, _] = weight.dims[..] else {
            return Err(format!("node {} ({}) has a weight of shape {:?}", node.name, node.op_type, weight.dims));
        };
        self.store(path, "weight", weight.dims.clone(), weight.values.iter().map(|&v| v * alpha));
        if let Some((bias, beta)) = &bias {
            if bias.values.len() != units {
                return Err(format!(
                    "node {} ({}): a bias of {} values for {units} outputs",
                    node.name,
                    node.op_type,
                    bias.values.len()
                ));
            }
            self.store(path, "bias", vec![units], bias.values.iter().map(|&v| v * beta));
        }
        Ok(LayerSpec::Dense { units: Some(units), bias: bias.is_some() })
    }

    /// MatMul by a constant `(in, out)`, and the Add of a constant after it (its bias).
    fn matmul(
        &mut self,
        node: &NodeProto,
        path: &str,
        region: &HashSet<usize>,
        flow: &mut Flow,
    ) -> std::result::Result<(String, Option<LayerSpec>), String> {
        if flow.spatial {
            return Err(format!("node {} (MatMul) takes an (N, C, H, W) tensor; flatten it first", node.name));
        }
        let weight = transpose(&self.weight(node, 1, "weight")?, node)?;
        let mut out = output(node)?.to_string();
        let consumers = self.graph.consumers_in(&out, region);
        let mut bias = None;
        if let [next] = consumers[..] {
            let add = self.graph.nodes[next];
            let constant = (0..2).find_map(|i| self.graph.const_input(add, i).cloned());
            if add.op_type == "Add" && self.graph.data_inputs(add).len() == 1 {
                if let Some(constant) = constant {
                    bias = Some((constant, 1.0));
                    out = output(add)?.to_string();
                }
            }
        }
        Ok((out, Some(self.dense(node, path, weight, 1.0, bias)?)))
    }
}

/// A 2-d constant `(in, out)` as `(out, in)`.
fn transpose(weight: &Const, node: &NodeProto) -> std::result::Result<Const, String> {
    let [rows, cols] = weight.dims[..] else {
        return Err(format!(
            "node {} ({}) has a weight of shape {:?}; convnet reads 2-d weights",
            node.name, node.op_type, weight.dims
        ));
    };
    let values = (0..cols).flat_map(|c| (0..rows).map(move |r| weight.values[r * cols + c])).collect();
    Ok(Const { dims: vec![cols, rows], values })
}
