//! Keras import: a Sequential model saved by Keras 3 (`.keras`, a zip of
//! `config.json` and `model.weights.h5`) or in the legacy HDF5 format (`.h5`,
//! the configuration in the root attribute `model_config`), mapped onto our
//! layers without retraining.
//!
//! ```text
//! Keras                                  convnet
//! InputLayer (H, W, C)                   input (C, H, W)
//! Rescaling(1/255) | none                pixel scale unit | raw 0-255 (the seed script has none)
//! Conv2D kernel [KH, KW, C, OC]          Conv2d weight [OC, C, KH, KW]   (+ Relu for activation="relu")
//! MaxPooling2D                           MaxPool2d
//! Flatten  (H, W, C order)               Flatten (C, H, W order): the next Dense's input rows permuted
//! Dense kernel [in, out]                 Dense weight [out, in]          (+ Relu; a final softmax is ours)
//! Dropout, Activation(relu|softmax|linear)
//! BatchNormalization gamma, beta,        BatchNorm weight, bias, running_mean, running_var
//!   moving_mean, moving_variance           (eps as Keras'; momentum 1 - Keras')
//! GlobalAveragePooling2D                 GlobalAvgPool2d
//! ```
//!
//! Anything else is refused with the layer's name and type; functional models
//! (Add, Concatenate) are refused as such. The HDF5 files are
//! read by `hdf5-reader`, pure Rust; hostile or truncated files are errors, not
//! panics.

use crate::error::{IoError, Result};
use crate::model_file::ModelMeta;
use convnet_data::{ColorMode, PixelScale};
use convnet_tensor::model::spec::Size2;
use convnet_tensor::{LayerSpec, ModelSpec, Padding, Sequential};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// A weight tensor read from the file: Keras' shape and values.
struct KerasTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Where a layer's weights are in the file.
enum WeightFile {
    /// Keras 3: `layers/<class name in snake case>[_k]/vars/{0,1}`, by occurrence.
    Keras3(hdf5_reader::Hdf5File),
    /// Legacy: `model_weights/<layer name>/.../{kernel,bias}`.
    Legacy(hdf5_reader::Hdf5File),
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> IoError {
    IoError::Invalid { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Imports `path` as a convnet model whose outputs are `class_names`.
pub fn import_keras(path: &Path, class_names: &[String]) -> Result<(Sequential<f32>, ModelMeta)> {
    let bytes = std::fs::read(path).map_err(|error| IoError::Read { path: path.to_path_buf(), error })?;
    import_keras_bytes(path, bytes, class_names)
}

/// [`import_keras`] of a file's bytes (`path` names it in messages).
pub fn import_keras_bytes(path: &Path, bytes: Vec<u8>, class_names: &[String]) -> Result<(Sequential<f32>, ModelMeta)> {
    let (config, weights) = if bytes.starts_with(b"PK\x03\x04") {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes))
            .map_err(|e| bad(path, format!("not a readable .keras archive: {e}")))?;
        let mut read_entry = |name: &str, limit: u64| -> Result<Vec<u8>> {
            let entry = archive.by_name(name).map_err(|e| bad(path, format!("no {name} in the archive: {e}")))?;
            if entry.size() > limit {
                return Err(bad(path, format!("{name} declares {} bytes", entry.size())));
            }
            let mut out = Vec::new();
            entry.take(limit).read_to_end(&mut out).map_err(|e| bad(path, format!("cannot read {name}: {e}")))?;
            Ok(out)
        };
        let config = read_entry("config.json", 64 << 20)?;
        let weights = read_entry("model.weights.h5", 4 << 30)?;
        let config: Value =
            serde_json::from_slice(&config).map_err(|e| bad(path, format!("config.json is not JSON: {e}")))?;
        let file = hdf5_reader::Hdf5File::from_vec(weights)
            .map_err(|e| bad(path, format!("model.weights.h5 is not readable HDF5: {e}")))?;
        (config, WeightFile::Keras3(file))
    } else if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        let file = hdf5_reader::Hdf5File::from_vec(bytes).map_err(|e| bad(path, format!("not readable HDF5: {e}")))?;
        let text = file
            .root_group()
            .and_then(|root| root.attribute("model_config"))
            .and_then(|attribute| attribute.read_string())
            .map_err(|e| bad(path, format!("no model configuration (attribute model_config): {e}")))?;
        let config: Value =
            serde_json::from_str(&text).map_err(|e| bad(path, format!("model_config is not JSON: {e}")))?;
        (config, WeightFile::Legacy(file))
    } else {
        return Err(bad(path, "neither a Keras 3 .keras archive nor a legacy .h5 file"));
    };
    build(path, &config, &weights, class_names)
}

/// An integer pair from `[a, b]` or `a`.
fn pair(value: Option<&Value>) -> Option<(usize, usize)> {
    match value? {
        Value::Array(items) if items.len() == 2 => Some((items[0].as_u64()? as usize, items[1].as_u64()? as usize)),
        Value::Number(n) => Some((n.as_u64()? as usize, n.as_u64()? as usize)),
        _ => None,
    }
}

fn size2((h, w): (usize, usize)) -> Size2 {
    if h == w {
        Size2::Square(h)
    } else {
        Size2::Rect([h, w])
    }
}

/// Keras 3's name of the `k`-th layer of a class in the weights file: `conv2d`, `conv2d_1`, ...
fn snake_case(class: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = class.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        if c.is_uppercase() && i > 0 && (chars[i - 1].is_lowercase() || next_lower) {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn read_dataset(path: &Path, file: &hdf5_reader::Hdf5File, name: &str) -> Result<KerasTensor> {
    let dataset = file.dataset(name).map_err(|e| bad(path, format!("weights {name}: {e}")))?;
    let shape: Vec<usize> = dataset.shape().iter().map(|&d| d as usize).collect();
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= 1 << 28);
    let count = count.ok_or_else(|| bad(path, format!("weights {name} have an absurd shape {shape:?}")))?;
    let mut values = vec![0f32; count];
    dataset.read_into(&mut values).map_err(|e| bad(path, format!("weights {name}: {e}")))?;
    Ok(KerasTensor { shape, values })
}

/// The dataset paths under `group` (recursively) whose last component starts with `stem`.
fn find_datasets(group: &hdf5_reader::group::Group, prefix: &str, stem: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    if let Ok((groups, datasets)) = group.member_names() {
        for dataset in datasets {
            if dataset.starts_with(stem) {
                out.push(format!("{prefix}/{dataset}"));
            }
        }
        for name in groups {
            if let Ok(child) = group.group(&name) {
                find_datasets(&child, &format!("{prefix}/{name}"), stem, out, depth + 1);
            }
        }
    }
}

impl WeightFile {
    /// The kernel and bias (if any) of a layer: `name` as Keras 3 stores it by
    /// occurrence, `layer_name` as the legacy format does.
    fn kernel_and_bias(&self, path: &Path, name: &str, layer_name: &str) -> Result<(KerasTensor, Option<KerasTensor>)> {
        match self {
            WeightFile::Keras3(file) => {
                let kernel = read_dataset(path, file, &format!("layers/{name}/vars/0"))?;
                let bias = read_dataset(path, file, &format!("layers/{name}/vars/1")).ok();
                Ok((kernel, bias))
            }
            WeightFile::Legacy(file) => {
                let root = format!("model_weights/{layer_name}");
                let group =
                    file.group(&root).map_err(|e| bad(path, format!("no weights for layer {layer_name}: {e}")))?;
                let (mut kernels, mut biases) = (Vec::new(), Vec::new());
                find_datasets(&group, &root, "kernel", &mut kernels, 0);
                find_datasets(&group, &root, "bias", &mut biases, 0);
                let kernel = kernels.first().ok_or_else(|| bad(path, format!("no kernel for layer {layer_name}")))?;
                let kernel = read_dataset(path, file, kernel)?;
                let bias = biases.first().map(|b| read_dataset(path, file, b)).transpose()?;
                Ok((kernel, bias))
            }
        }
    }
}

impl WeightFile {
    /// A BatchNormalization's `[gamma, beta, moving_mean, moving_variance]`.
    fn batchnorm(&self, path: &Path, name: &str, layer_name: &str) -> Result<[KerasTensor; 4]> {
        let read = |k: usize, stem: &str| -> Result<KerasTensor> {
            match self {
                WeightFile::Keras3(file) => read_dataset(path, file, &format!("layers/{name}/vars/{k}")),
                WeightFile::Legacy(file) => {
                    let root = format!("model_weights/{layer_name}");
                    let group =
                        file.group(&root).map_err(|e| bad(path, format!("no weights for layer {layer_name}: {e}")))?;
                    let mut found = Vec::new();
                    find_datasets(&group, &root, stem, &mut found, 0);
                    let dataset =
                        found.first().ok_or_else(|| bad(path, format!("no {stem} for layer {layer_name}")))?;
                    read_dataset(path, file, dataset)
                }
            }
        };
        Ok([read(0, "gamma")?, read(1, "beta")?, read(2, "moving_mean")?, read(3, "moving_variance")?])
    }
}

/// A Keras BatchNormalization's configuration as our layer, or why not.
fn batchnorm_spec(cfg: &Value) -> std::result::Result<LayerSpec, String> {
    // channels last: the channel axis is the last one (-1, or 3 of (N, H, W, C))
    let axis = cfg["axis"].as_i64().or_else(|| cfg["axis"].get(0).and_then(Value::as_i64)).unwrap_or(-1);
    if !matches!(axis, -1 | 3) {
        return Err(format!("axis {axis}: only the channel axis (-1) is imported"));
    }
    if cfg["center"] == Value::Bool(false) || cfg["scale"] == Value::Bool(false) {
        return Err("center and scale must both be on".into());
    }
    // Keras' momentum weighs the old statistics, PyTorch's (ours) the batch's
    let eps = cfg["epsilon"].as_f64().unwrap_or(1e-3);
    let momentum = 1.0 - cfg["momentum"].as_f64().unwrap_or(0.99);
    Ok(LayerSpec::Batchnorm { eps, momentum })
}

/// What the configuration says, layer by layer, before any weight is read.
#[derive(Default)]
struct Parsed {
    /// The input (H, W, C): the InputLayer's batch_shape, or the first layer's batch_input_shape (Keras 2).
    input: Option<(usize, usize, usize)>,
    pixel_scale: PixelScale,
    specs: Vec<LayerSpec>,
    /// (our layer index, Keras 3 weights name, Keras layer name) of each layer with weights.
    weighted: Vec<(usize, String, String)>,
    /// How many layers of each kind were seen (Keras 3 names weights `conv2d`, `conv2d_1`, ...).
    occurrences: HashMap<String, usize>,
}

impl Parsed {
    /// Reads one Keras layer (`position` of `count`) into our layer specs.
    fn layer(&mut self, path: &Path, layer: &Value, position: usize, count: usize) -> Result<()> {
        let refuse = |name: &str, class: &str, why: &str| bad(path, format!("layer {name} ({class}): {why}"));
        let last = position == count - 1;
        let class = layer["class_name"].as_str().unwrap_or("?");
        let cfg = &layer["config"];
        let name = cfg["name"].as_str().unwrap_or("?").to_string();
        let snake = snake_case(class);
        let seen = self.occurrences.entry(snake.clone()).or_insert(0);
        let weights_name = if *seen == 0 { snake.clone() } else { format!("{snake}_{seen}") };
        if class != "InputLayer" {
            *seen += 1;
        }
        let shape = cfg.get("batch_shape").or(cfg.get("batch_input_shape"));
        if let Some(Value::Array(dims)) = shape {
            let dims: Vec<Option<u64>> = dims.iter().map(Value::as_u64).collect();
            match dims.as_slice() {
                [_, Some(h), Some(w), Some(c)] => self.input = Some((*h as usize, *w as usize, *c as usize)),
                _ => return Err(refuse(&name, class, "the input must be (height, width, channels)")),
            }
        }
        if cfg.get("data_format").and_then(Value::as_str).is_some_and(|f| f != "channels_last") {
            return Err(refuse(&name, class, "only channels_last models are imported"));
        }
        let activation = cfg.get("activation").and_then(Value::as_str).unwrap_or("linear");
        let add_activation = |specs: &mut Vec<LayerSpec>| match activation {
            "linear" => Ok(()),
            "relu" => {
                specs.push(LayerSpec::Relu);
                Ok(())
            }
            // a final softmax is what `predict` applies to our logits
            "softmax" if last => Ok(()),
            other => Err(refuse(&name, class, &format!("activation {other} is not supported"))),
        };
        match class {
            "InputLayer" => {}
            "Rescaling" => {
                let scale = cfg["scale"].as_f64().unwrap_or(f64::NAN);
                let offset = cfg["offset"].as_f64().unwrap_or(0.0);
                self.pixel_scale = if (scale - 1.0 / 255.0).abs() < 1e-9 && offset == 0.0 {
                    PixelScale::Unit
                } else if scale == 1.0 && offset == 0.0 {
                    PixelScale::Raw
                } else {
                    return Err(refuse(&name, class, &format!("scale {scale}, offset {offset}: only 1/255 or 1")));
                };
                if !self.specs.is_empty() {
                    return Err(refuse(&name, class, "rescaling is only supported as the first layer"));
                }
            }
            "Conv2D" => {
                let filters = cfg["filters"].as_u64().ok_or_else(|| refuse(&name, class, "no filters"))? as usize;
                let kernel = pair(cfg.get("kernel_size")).ok_or_else(|| refuse(&name, class, "no kernel_size"))?;
                let stride = pair(cfg.get("strides")).unwrap_or((1, 1));
                if pair(cfg.get("dilation_rate")).is_some_and(|d| d != (1, 1))
                    || cfg["groups"].as_u64().unwrap_or(1) != 1
                {
                    return Err(refuse(&name, class, "dilated or grouped convolutions are not supported"));
                }
                let padding = padding(cfg).ok_or_else(|| refuse(&name, class, "padding must be valid or same"))?;
                self.weighted.push((self.specs.len(), weights_name, name.clone()));
                // a Keras bias-free convolution keeps a zero bias here (its weights fill it with zeros)
                let (filters, kernel, stride) = (Some(filters), size2(kernel), size2(stride));
                self.specs.push(LayerSpec::Conv2d { filters, kernel, stride, padding, bias: true });
                add_activation(&mut self.specs)?;
            }
            "MaxPooling2D" | "MaxPool2D" => {
                let pool = pair(cfg.get("pool_size")).ok_or_else(|| refuse(&name, class, "no pool_size"))?;
                let stride = pair(cfg.get("strides")).unwrap_or(pool);
                let padding = padding(cfg).ok_or_else(|| refuse(&name, class, "padding must be valid or same"))?;
                let (pool, stride) = (size2(pool), Some(size2(stride)));
                self.specs.push(LayerSpec::Maxpool2d { pool, stride, padding, ceil_mode: false });
            }
            "Flatten" => self.specs.push(LayerSpec::Flatten),
            "Dense" => {
                let units = cfg["units"].as_u64().ok_or_else(|| refuse(&name, class, "no units"))? as usize;
                self.weighted.push((self.specs.len(), weights_name, name.clone()));
                self.specs.push(LayerSpec::Dense { units: Some(units), bias: true });
                add_activation(&mut self.specs)?;
            }
            "Dropout" => self.specs.push(LayerSpec::Dropout { rate: cfg["rate"].as_f64().unwrap_or(0.0) }),
            "BatchNormalization" => {
                let batchnorm = batchnorm_spec(cfg).map_err(|why| refuse(&name, class, &why))?;
                self.weighted.push((self.specs.len(), weights_name, name.clone()));
                self.specs.push(batchnorm);
            }
            "GlobalAveragePooling2D" => {
                if cfg["keepdims"] == Value::Bool(true) {
                    return Err(refuse(&name, class, "keepdims is not supported"));
                }
                self.specs.push(LayerSpec::GlobalAvgpool2d);
            }
            "Activation" => add_activation(&mut self.specs)?,
            other => return Err(refuse(&name, other, "this layer type cannot be imported")),
        }
        Ok(())
    }
}

/// Maps the configuration onto our layers (parse), then converts the weights (assign).
fn build(
    path: &Path,
    config: &Value,
    weights: &WeightFile,
    class_names: &[String],
) -> Result<(Sequential<f32>, ModelMeta)> {
    if config["class_name"] != "Sequential" {
        return Err(bad(
            path,
            format!(
                "only Sequential models are imported, this one is {} (a functional model, with Add or Concatenate \
                 blocks, cannot be read yet: write its architecture as a TOML file with residual/concat blocks)",
                config["class_name"]
            ),
        ));
    }
    let layers = config["config"]["layers"].as_array().ok_or_else(|| bad(path, "no layers in the configuration"))?;
    let mut parsed = Parsed { pixel_scale: PixelScale::Raw, ..Parsed::default() };
    for (position, layer) in layers.iter().enumerate() {
        parsed.layer(path, layer, position, layers.len())?;
    }
    let (height, width, channels) = parsed
        .input
        .or_else(|| {
            let dims = config["config"]["build_input_shape"].as_array()?;
            Some((dims.get(1)?.as_u64()? as usize, dims.get(2)?.as_u64()? as usize, dims.get(3)?.as_u64()? as usize))
        })
        .ok_or_else(|| bad(path, "the configuration does not say the input size"))?;
    let color_mode = match channels {
        1 => ColorMode::Grayscale,
        3 => ColorMode::Rgb,
        4 => ColorMode::Rgba,
        c => return Err(bad(path, format!("{c} input channels: only 1, 3 or 4"))),
    };
    let last_units = parsed.specs.iter().rev().find_map(|s| match s {
        LayerSpec::Dense { units, .. } => *units,
        _ => None,
    });
    if last_units.is_some_and(|units| units != class_names.len()) {
        return Err(bad(
            path,
            format!(
                "the model has {} outputs but {} class names were given",
                last_units.unwrap_or(0),
                class_names.len()
            ),
        ));
    }
    let spec = ModelSpec::new(parsed.specs);
    let model_input = [channels, height, width];
    let mut model = spec
        .build::<f32>(&model_input, class_names.len(), 0)
        .map_err(|e| bad(path, format!("the network does not fit convnet: {e}")))?;
    let outputs = model.output_shape().to_vec();
    if outputs != [class_names.len()] {
        return Err(bad(
            path,
            format!("the model has {outputs:?} outputs but {} class names were given", class_names.len()),
        ));
    }
    assign_weights(path, &spec, &mut model, weights, &parsed.weighted)?;
    let mut meta = ModelMeta::new(spec, class_names.to_vec(), [height, width], color_mode);
    meta.input.pixel_scale = parsed.pixel_scale;
    Ok((model, meta))
}

/// Writes each converted weight into the model's parameters (weight, bias per
/// convolution and dense layer, gamma and beta per batchnorm, in order) and
/// the batchnorms' moving mean and variance into its buffers.
fn assign_weights(
    path: &Path,
    spec: &ModelSpec,
    model: &mut Sequential<f32>,
    weights: &WeightFile,
    weighted: &[(usize, String, String)],
) -> Result<()> {
    // our parameters are weight, bias per conv/dense layer, in order
    let shapes = model.shapes().to_vec();
    let mut converted: Vec<Vec<f32>> = Vec::new();
    // batchnorms' running statistics, in order (the model's buffers)
    let mut statistics: Vec<Vec<f32>> = Vec::new();
    for (index, weights_name, layer_name) in weighted {
        if let LayerSpec::Batchnorm { .. } = spec.layers[*index] {
            let [gamma, beta, mean, variance] = weights.batchnorm(path, weights_name, layer_name)?;
            converted.extend([gamma.values, beta.values]);
            statistics.extend([mean.values, variance.values]);
            continue;
        }
        let (kernel, bias) = weights.kernel_and_bias(path, weights_name, layer_name)?;
        let layer_input = &shapes[*index];
        let after_flatten = *index > 0 && matches!(spec.layers[index - 1], LayerSpec::Flatten);
        let (weight, outputs) = match (&spec.layers[*index], kernel.shape.as_slice()) {
            (LayerSpec::Conv2d { .. }, &[kh, kw, c, oc]) => (conv_kernel_to_ours(&kernel.values, [kh, kw, c, oc]), oc),
            (LayerSpec::Dense { .. }, &[inputs, units]) => {
                let flattened = match (after_flatten, shapes.get(index - 1).map(Vec::as_slice)) {
                    (true, Some(&[c, h, w])) if c * h * w == inputs => Some((c, h, w)),
                    _ => None,
                };
                (dense_kernel_to_ours(&kernel.values, inputs, units, flattened), units)
            }
            (_, shape) => {
                return Err(bad(
                    path,
                    format!("layer {layer_name}: kernel of shape {shape:?} does not fit {layer_input:?}"),
                ))
            }
        };
        let bias = bias.map_or(vec![0f32; outputs], |b| b.values);
        converted.push(weight);
        converted.push(bias);
    }
    let mut params = model.params_mut();
    if params.len() != converted.len() {
        return Err(bad(path, "the weights do not match the layers"));
    }
    for (param, values) in params.iter_mut().zip(&converted) {
        if param.value.len() != values.len() {
            return Err(bad(
                path,
                format!("weights of {} values where {} are needed", values.len(), param.value.len()),
            ));
        }
        for (dst, &src) in param.value.iter_mut().zip(values) {
            *dst = src;
        }
    }
    let buffers = model.buffers_mut();
    if buffers.len() != statistics.len() {
        return Err(bad(path, "the batchnorm statistics do not match the layers"));
    }
    for ((name, buffer), values) in buffers.into_iter().zip(&statistics) {
        if buffer.len() != values.len() {
            return Err(bad(path, format!("{name}: {} values where {} are needed", values.len(), buffer.len())));
        }
        buffer.iter_mut().zip(values).for_each(|(dst, &src)| *dst = src);
    }
    Ok(())
}

/// A Keras convolution kernel `[KH, KW, C, OC]` in our order `[OC, C, KH, KW]`.
fn conv_kernel_to_ours(values: &[f32], [kh, kw, c, oc]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for (i, &v) in values.iter().enumerate() {
        let (o, rest) = (i % oc, i / oc);
        let (ci, rest) = (rest % c, rest / c);
        let (x, y) = (rest % kw, rest / kw);
        out[((o * c + ci) * kh + y) * kw + x] = v;
    }
    out
}

/// A Keras dense kernel `[in, out]` in our order `[out, in]`; after a Flatten of
/// `(C, H, W)`, Keras' input order is (H, W, C), ours (C, H, W).
fn dense_kernel_to_ours(
    values: &[f32],
    inputs: usize,
    units: usize,
    flattened: Option<(usize, usize, usize)>,
) -> Vec<f32> {
    let order: Vec<usize> = match flattened {
        Some((c, h, w)) => (0..inputs)
            .map(|ours| {
                let (ci, rest) = (ours / (h * w), ours % (h * w));
                (rest / w * w + rest % w) * c + ci
            })
            .collect(),
        None => (0..inputs).collect(),
    };
    let mut out = vec![0f32; values.len()];
    for o in 0..units {
        for (ours, &theirs) in order.iter().enumerate() {
            out[o * inputs + ours] = values[theirs * units + o];
        }
    }
    out
}

fn padding(cfg: &Value) -> Option<Padding> {
    match cfg.get("padding").and_then(Value::as_str).unwrap_or("valid") {
        "valid" => Some(Padding::Valid),
        "same" => Some(Padding::Same),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn keras_names_layers_by_class_in_snake_case() {
        assert_eq!(snake_case("Conv2D"), "conv2d");
        assert_eq!(snake_case("MaxPooling2D"), "max_pooling2d");
        assert_eq!(snake_case("Dense"), "dense");
        assert_eq!(snake_case("Rescaling"), "rescaling");
    }
}
