//! Model files: `.safetensors` with the architecture in the metadata.
//!
//! Tensors are named `{i}.weight` / `{i}.bias`, `i` being the layer's index in
//! the flat layer list (ReLU, pooling, flatten and dropout count), stored as
//! little-endian f32 in the engine's layouts (NCHW, `[out, in, kh, kw]`,
//! `[out, in]`): exactly the `state_dict` of the equivalent `torch.nn.Sequential`.
//! The metadata key `convnet` holds a JSON [`ModelMeta`]: the architecture,
//! class names, input size, colour mode and pixel scaling, so a model file is
//! all that `evaluate`, `predict` and `show` need.
//!
//! ## Byte-for-byte reproducible
//!
//! [`serialize`] writes the safetensors layout itself (8-byte header length,
//! JSON header, data) with the metadata keys and the tensors in sorted order
//! and nothing that varies (no time, no path, no hash-map order): the same
//! weights and metadata give the same bytes, so `sha256sum` can compare runs.
//! Reading goes through the `safetensors` crate, which validates every offset
//! against the file's length before anything is allocated.
//!
//! Files are written with [`crate::atomic::write_atomic`].

use crate::atomic::write_atomic;
use crate::error::{IoError, Result};
use convnet_data::{ClassNames, ColorMode, DatasetOptions, DecodeOptions, InputFormat};
use convnet_tensor::ndarray::ArrayD;
use convnet_tensor::{Element, ModelSpec, Sequential};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Everything about a model besides its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// File format version.
    pub format_version: u32,
    /// The layers.
    pub architecture: ModelSpec,
    /// Class names; output `k` is `class_names[k]`.
    pub class_names: Vec<String>,
    /// How an image file becomes this model's input (in the JSON, its fields
    /// sit beside the others, as they did before it was one type).
    #[serde(flatten)]
    pub input: InputFormat,
    /// Temperature scaling fitted by `convnet calibrate`: the probabilities
    /// are `softmax(logits / temperature)` (see [`crate::calibration`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

impl ModelMeta {
    /// Metadata with the default input pipeline (0-1 pixels, bilinear resizing, no crop).
    pub fn new(
        architecture: ModelSpec,
        class_names: Vec<String>,
        image_size: [usize; 2],
        color_mode: ColorMode,
    ) -> Self {
        ModelMeta {
            format_version: FORMAT_VERSION,
            architecture,
            class_names,
            input: InputFormat::new(image_size, color_mode),
            temperature: None,
        }
    }

    /// Per-sample input shape `(C, H, W)`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input.input_shape()
    }

    /// Decoding options that reproduce the training inputs.
    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions::new(self.input)
    }

    /// Options to load a labelled folder for this model: its input format, and
    /// its classes mapped by folder name (a class without a folder is allowed).
    pub fn dataset_options(&self, skip_bad: bool) -> DatasetOptions {
        DatasetOptions {
            decode: self.decode_options(),
            class_names: ClassNames::Explicit { names: self.class_names.clone(), allow_missing: true },
            skip_bad,
            ..DatasetOptions::default()
        }
    }

    /// How an image becomes this model's input, in words: size, colours,
    /// resize, pixel scale, and the normalisation its first layer applies.
    pub fn describe_input(&self) -> String {
        let [height, width] = self.input.image_size;
        let colours = match self.input.color_mode {
            ColorMode::Grayscale => "grayscale",
            ColorMode::Rgb => "RGB",
            ColorMode::Rgba => "RGBA",
        };
        let colours = match self.input.crop_content {
            true => format!("{colours}, cropped to its content"),
            false => colours.to_string(),
        };
        let mut text = match self.input.resize_shorter {
            Some(shorter) => format!("{colours}, shorter side resized to {shorter}, centre {height}x{width} crop"),
            None if self.input.crop_to_aspect_ratio => {
                format!("{colours}, cropped to the aspect ratio, resized to {height}x{width}")
            }
            None => format!("{colours}, resized to {height}x{width}"),
        };
        text += match self.input.pixel_scale {
            convnet_data::PixelScale::Unit => ", pixels / 255",
            convnet_data::PixelScale::Raw => ", pixels 0-255",
        };
        if let Some(convnet_tensor::LayerSpec::Normalize { mean, std }) = self.architecture.layers.first() {
            text += &format!(", normalised by mean {mean:?} and std {std:?}");
        }
        text
    }

    /// Builds the (zero-seeded) model this metadata describes.
    pub fn build(&self) -> Result<Sequential<f32>> {
        Ok(self.architecture.build::<f32>(&self.input_shape(), self.class_names.len(), 0)?)
    }
}

/// The metadata key that holds the JSON [`ModelMeta`].
pub const META_KEY: &str = "convnet";
/// The version of [`ModelMeta`] this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}

/// A named f32 tensor ready to write: `(name, shape, little-endian bytes)`.
pub type NamedTensor = (String, Vec<usize>, Vec<u8>);

/// Serializes named f32 tensors plus string metadata into safetensors bytes:
/// `u64` header length (little-endian), the JSON header padded with spaces to
/// a multiple of 8 bytes, then the tensors' data. Metadata keys and tensors
/// are in sorted order, so equal inputs give equal bytes.
pub fn serialize(tensors: &[NamedTensor], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let json = |text: &str| serde_json::to_string(text).expect("strings serialize");
    let mut sorted: Vec<&NamedTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(sorted.len() + 1);
    if !metadata.is_empty() {
        let fields: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", json(k), json(v))).collect();
        entries.push(format!("\"__metadata__\":{{{}}}", fields.join(",")));
    }
    let mut offset = 0usize;
    for (name, shape, bytes) in &sorted {
        let elements: usize = shape.iter().product();
        if bytes.len() != 4 * elements {
            return Err(IoError::Format(format!("tensor {name}: {} bytes for shape {shape:?}", bytes.len())));
        }
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            json(name),
            dims.join(","),
            offset,
            offset + bytes.len()
        ));
        offset += bytes.len();
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    while (8 + header.len()) % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, bytes) in sorted {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// The model's parameters as (name, shape, bytes).
pub fn model_tensors(model: &Sequential<f32>) -> Vec<NamedTensor> {
    model
        .param_names()
        .into_iter()
        .zip(model.params())
        .map(|(name, param)| (name, param.value.shape().to_vec(), f32_bytes(param.value.iter().copied())))
        .chain(model.buffers().into_iter().map(|(name, b)| (name, b.shape().to_vec(), f32_bytes(b.iter().copied()))))
        .collect()
}

/// The metadata of a model file: [`META_KEY`] and `format: pt` (what
/// PyTorch-side tools expect).
pub fn model_metadata(meta: &ModelMeta) -> BTreeMap<String, String> {
    BTreeMap::from([
        (META_KEY.to_string(), serde_json::to_string(meta).expect("the metadata serializes")),
        ("format".to_string(), "pt".to_string()),
    ])
}

/// Saves a model with its metadata (atomically).
pub fn save_model(path: &Path, model: &Sequential<f32>, meta: &ModelMeta) -> Result<()> {
    write_atomic(path, &serialize(&model_tensors(model), &model_metadata(meta))?)
}

/// A parsed safetensors file: metadata and f32 tensors.
#[derive(Debug)]
pub struct TensorFile {
    /// The header's `__metadata__`.
    pub metadata: HashMap<String, String>,
    /// Every tensor: name -> (shape, values).
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Reads and validates a safetensors file of f32 tensors.
pub fn read_tensor_file(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|error| IoError::Read { path: path.to_path_buf(), error })?;
    parse_tensor_file(&bytes).map_err(|e| invalid(path, "not a valid convnet model file", e))
}

/// `{path}: {what}: {reason}` for an error about a file's content.
fn invalid(path: &Path, what: &str, error: IoError) -> IoError {
    IoError::Invalid { path: path.to_path_buf(), reason: format!("{what}: {error}") }
}

/// Parses safetensors bytes (validated by the `safetensors` crate: the header's
/// offsets must lie inside the buffer, so a hostile header cannot make us
/// allocate more than the file holds).
pub fn parse_tensor_file(bytes: &[u8]) -> Result<TensorFile> {
    let not_safetensors = |e: safetensors::SafeTensorError| IoError::Format(format!("not a safetensors file ({e})"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(IoError::Format(format!("tensor {name} has type {:?}; only F32 is supported", view.dtype())));
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(TensorFile { metadata, tensors })
}

/// Parses the `convnet` metadata of a tensor file.
pub fn parse_meta(metadata: &HashMap<String, String>) -> Result<ModelMeta> {
    let format = |message: String| IoError::Format(message);
    let json = metadata
        .get(META_KEY)
        .ok_or_else(|| format(format!("the file has no `{META_KEY}` metadata (architecture, classes)")))?;
    let meta: ModelMeta =
        serde_json::from_str(json).map_err(|e| format(format!("malformed `{META_KEY}` metadata: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(format(format!(
            "model format version {} is not supported (this convnet reads version {FORMAT_VERSION})",
            meta.format_version
        )));
    }
    if meta.class_names.is_empty() || meta.input.image_size.contains(&0) {
        return Err(format("metadata declares no classes or a zero image size".into()));
    }
    if meta.input.image_size.iter().any(|&s| s > 16384) || meta.class_names.len() > 100_000 {
        return Err(format(format!(
            "metadata declares an implausible image size {:?} or class count",
            meta.input.image_size
        )));
    }
    Ok(meta)
}

/// Copies tensors named like the model's parameters and buffers (running
/// statistics) into it, checking that every one is present with the right shape.
/// The model may be f32 (training) or f64 (gradient checks of a saved model).
pub fn assign_params<T: Element>(
    model: &mut Sequential<T>,
    tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let names = model.param_names();
    for (name, param) in names.iter().zip(model.params_mut()) {
        copy_tensor(name, param.value, tensors)?;
    }
    for (name, buffer) in model.buffers_mut() {
        copy_tensor(&name, buffer, tensors)?;
    }
    Ok(())
}

/// Copies the tensor `name` of `tensors` into `target`, checking its shape.
fn copy_tensor<T: Element>(
    name: &str,
    target: &mut ArrayD<T>,
    tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let (shape, values) = tensors.get(name).ok_or_else(|| IoError::Format(format!("tensor {name} is missing")))?;
    if shape.as_slice() != target.shape() {
        return Err(IoError::Format(format!(
            "tensor {name} has shape {shape:?}, but the architecture needs {:?}",
            target.shape()
        )));
    }
    for (dst, &src) in target.iter_mut().zip(values) {
        *dst = T::from_f64(src as f64);
    }
    Ok(())
}

/// Loads a model file: metadata, architecture, weights.
pub fn load_model(path: &Path) -> Result<(Sequential<f32>, ModelMeta)> {
    load_model_as::<f32>(path)
}

/// [`load_model`] into a model of element type `T` (f64 for gradient checks
/// and Grad-CAM: the stored f32 weights convert exactly).
pub fn load_model_as<T: Element>(path: &Path) -> Result<(Sequential<T>, ModelMeta)> {
    let file = read_tensor_file(path)?;
    let meta = parse_meta(&file.metadata).map_err(|e| invalid(path, "not a valid convnet model file", e))?;
    let mut model = meta
        .architecture
        .build::<T>(&meta.input_shape(), meta.class_names.len(), 0)
        .map_err(|e| invalid(path, "invalid architecture", e.into()))?;
    assign_params(&mut model, &file.tensors).map_err(|e| invalid(path, "weights do not fit the architecture", e))?;
    Ok((model, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_validated() {
        let mut metadata = HashMap::new();
        assert!(parse_meta(&metadata).unwrap_err().to_string().contains("no `convnet` metadata"));
        metadata.insert(META_KEY.to_string(), "{not json".to_string());
        assert!(parse_meta(&metadata).unwrap_err().to_string().contains("malformed `convnet` metadata"));
        let meta = ModelMeta::new(ModelSpec::small(), vec!["a".into(), "b".into()], [28, 28], ColorMode::Grayscale);
        let json = serde_json::to_string(&meta).unwrap();
        metadata.insert(META_KEY.to_string(), json.replace("\"stride\":1", "\"stride\":-1"));
        assert!(parse_meta(&metadata).unwrap_err().to_string().contains("malformed"), "negative stride");
        metadata.insert(META_KEY.to_string(), json.replace("\"filters\":16", "\"filters\":0"));
        let zero = parse_meta(&metadata).unwrap();
        assert!(zero.build().unwrap_err().to_string().contains("conv2d needs positive sizes"));
        metadata.insert(META_KEY.to_string(), json.replace("[28,28]", "[100000,100000]"));
        assert!(parse_meta(&metadata).unwrap_err().to_string().contains("implausible image size"));
        metadata.insert(META_KEY.to_string(), json);
        let mut model = parse_meta(&metadata).unwrap().build().unwrap();
        let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
        assert!(assign_params(&mut model, &tensors).unwrap_err().to_string().contains("tensor 0.weight is missing"));
        tensors.insert("0.weight".into(), (vec![16, 1, 5, 5], vec![0.0; 400]));
        let error = assign_params(&mut model, &tensors).unwrap_err().to_string();
        assert_eq!(error, "tensor 0.weight has shape [16, 1, 5, 5], but the architecture needs [16, 1, 3, 3]");
    }

    #[test]
    fn the_same_model_gives_the_same_bytes_and_the_safetensors_crate_reads_them() {
        let meta = ModelMeta::new(ModelSpec::small(), vec!["a".into(), "b".into()], [28, 28], ColorMode::Grayscale);
        let model = meta.architecture.build::<f32>(&meta.input_shape(), 2, 3).unwrap();
        let first = serialize(&model_tensors(&model), &model_metadata(&meta)).unwrap();
        // another model object with the same weights, metadata built anew (a new hash map each time)
        let again = meta.architecture.build::<f32>(&meta.input_shape(), 2, 3).unwrap();
        for _ in 0..5 {
            assert_eq!(serialize(&model_tensors(&again), &model_metadata(&meta)).unwrap(), first);
        }
        assert_eq!(first.len() % 8, (8 + u64::from_le_bytes(first[..8].try_into().unwrap()) as usize) % 8);
        let file = parse_tensor_file(&first).unwrap();
        assert_eq!(parse_meta(&file.metadata).unwrap(), meta);
        assert_eq!(file.tensors.len(), model.params().len());
        let (shape, values) = &file.tensors["0.weight"];
        assert_eq!(shape.as_slice(), model.params()[0].value.shape());
        assert_eq!(values.as_slice(), model.params()[0].value.as_slice().unwrap());
        // a different weight changes the bytes
        let other = meta.architecture.build::<f32>(&meta.input_shape(), 2, 4).unwrap();
        assert_ne!(serialize(&model_tensors(&other), &model_metadata(&meta)).unwrap(), first);
    }
}
