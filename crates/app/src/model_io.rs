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
//! Files are written atomically: to a temporary file in the same directory,
//! flushed to disk, then renamed over the target, so a crash or a kill leaves
//! either the old file or the new one, never a torn one.

use anyhow::{anyhow, bail, Context, Result};
use convnet_data::{ColorMode, DecodeOptions, Interpolation, PixelScale};
use convnet_tensor::{Element, ModelSpec, Sequential};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
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
    /// Input `[height, width]`.
    pub image_size: [usize; 2],
    /// Input channels as decoded.
    pub color_mode: ColorMode,
    /// Byte-to-float scaling of the input.
    pub pixel_scale: PixelScale,
    /// Resize filter used in training.
    pub interpolation: Interpolation,
    /// Centre crop before resizing.
    pub crop_to_aspect_ratio: bool,
}

impl ModelMeta {
    /// Per-sample input shape `(C, H, W)`.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.color_mode.channels(), self.image_size[0], self.image_size[1]]
    }

    /// Decoding options that reproduce the training inputs.
    pub fn decode_options(&self) -> DecodeOptions {
        decode_options(self.image_size, self.color_mode, self.interpolation, self.crop_to_aspect_ratio)
    }

    /// Builds the (zero-seeded) model this metadata describes.
    pub fn build(&self) -> Result<Sequential<f32>> {
        Ok(self.architecture.build::<f32>(&self.input_shape(), self.class_names.len(), 0)?)
    }
}

/// Decoding options for an input format (default size limits).
pub fn decode_options(
    image_size: [usize; 2],
    color_mode: ColorMode,
    interpolation: Interpolation,
    crop_to_aspect_ratio: bool,
) -> DecodeOptions {
    DecodeOptions {
        image_size: (image_size[0], image_size[1]),
        color_mode,
        interpolation,
        crop_to_aspect_ratio,
        ..DecodeOptions::default()
    }
}

pub const META_KEY: &str = "convnet";
pub const FORMAT_VERSION: u32 = 1;

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}

/// Serializes named f32 tensors plus string metadata into safetensors bytes.
pub fn serialize(tensors: &[(String, Vec<usize>, Vec<u8>)], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| anyhow!("tensor {name}: {e}"))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| anyhow!("cannot serialize: {e}"))
}

/// The model's parameters as (name, shape, bytes).
pub fn model_tensors(model: &Sequential<f32>) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    model
        .param_names()
        .into_iter()
        .zip(model.params())
        .map(|(name, param)| (name, param.value.shape().to_vec(), f32_bytes(param.value.iter().copied())))
        .collect()
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("cannot write {}: {error}", path.display()));
    }
    Ok(())
}

/// Saves a model with its metadata (atomically).
pub fn save_model(path: &Path, model: &Sequential<f32>, meta: &ModelMeta) -> Result<()> {
    let mut metadata = HashMap::new();
    metadata.insert(META_KEY.to_string(), serde_json::to_string(meta)?);
    metadata.insert("format".to_string(), "pt".to_string());
    write_atomic(path, &serialize(&model_tensors(model), metadata)?)
}

/// A parsed safetensors file: metadata and f32 tensors.
pub struct TensorFile {
    pub metadata: HashMap<String, String>,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Reads and validates a safetensors file of f32 tensors.
pub fn read_tensor_file(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_tensor_file(&bytes).with_context(|| format!("{}: not a valid convnet model file", path.display()))
}

/// Parses safetensors bytes (validated by the `safetensors` crate: the header's
/// offsets must lie inside the buffer, so a hostile header cannot make us
/// allocate more than the file holds).
pub fn parse_tensor_file(bytes: &[u8]) -> Result<TensorFile> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a safetensors file ({e})"))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a safetensors file ({e})"))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("tensor {name} has type {:?}; only F32 is supported", view.dtype());
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Ok(TensorFile { metadata, tensors })
}

/// Parses the `convnet` metadata of a tensor file.
pub fn parse_meta(metadata: &HashMap<String, String>) -> Result<ModelMeta> {
    let json = metadata
        .get(META_KEY)
        .ok_or_else(|| anyhow!("the file has no `{META_KEY}` metadata (architecture, classes)"))?;
    let meta: ModelMeta = serde_json::from_str(json).map_err(|e| anyhow!("malformed `{META_KEY}` metadata: {e}"))?;
    if meta.format_version != FORMAT_VERSION {
        bail!(
            "model format version {} is not supported (this convnet reads version {FORMAT_VERSION})",
            meta.format_version
        );
    }
    if meta.class_names.is_empty() || meta.image_size.contains(&0) {
        bail!("metadata declares no classes or a zero image size");
    }
    if meta.image_size.iter().any(|&s| s > 16384) || meta.class_names.len() > 100_000 {
        bail!("metadata declares an implausible image size {:?} or class count", meta.image_size);
    }
    Ok(meta)
}

/// Copies tensors named like the model's parameters into it, checking that
/// every parameter is present with the right shape.
/// The model may be f32 (training) or f64 (gradient checks of a saved model).
pub fn assign_params<T: Element>(
    model: &mut Sequential<T>,
    tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let names = model.param_names();
    for (name, param) in names.iter().zip(model.params_mut()) {
        let (shape, values) = tensors.get(name).ok_or_else(|| anyhow!("tensor {name} is missing"))?;
        if shape.as_slice() != param.value.shape() {
            bail!("tensor {name} has shape {shape:?}, but the architecture needs {:?}", param.value.shape());
        }
        for (dst, &src) in param.value.iter_mut().zip(values) {
            *dst = T::from_f64(src as f64);
        }
    }
    Ok(())
}

/// Loads a model file: metadata, architecture, weights.
pub fn load_model(path: &Path) -> Result<(Sequential<f32>, ModelMeta)> {
    let file = read_tensor_file(path)?;
    let meta =
        parse_meta(&file.metadata).with_context(|| format!("{}: not a valid convnet model file", path.display()))?;
    let mut model = meta.build().with_context(|| format!("{}: invalid architecture", path.display()))?;
    assign_params(&mut model, &file.tensors)
        .with_context(|| format!("{}: weights do not fit the architecture", path.display()))?;
    Ok((model, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_the_previous_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        write_atomic(&path, b"version 1").unwrap();
        // make the temporary file impossible to create: a directory sits at its path
        let blocker = dir.path().join(format!(".checkpoint.safetensors.tmp-{}", std::process::id()));
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("inside"), b"x").unwrap();
        let error = write_atomic(&path, b"version 2").unwrap_err();
        assert!(error.to_string().starts_with(&format!("cannot write {}", path.display())), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"version 1");
        std::fs::remove_dir_all(&blocker).unwrap();
        write_atomic(&path, b"version 2").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"version 2");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind: {leftovers:?}");
    }

    #[test]
    fn metadata_is_validated() {
        let mut metadata = HashMap::new();
        assert!(parse_meta(&metadata).unwrap_err().to_string().contains("no `convnet` metadata"));
        metadata.insert(META_KEY.to_string(), "{not json".to_string());
        assert!(parse_meta(&metadata).unwrap_err().to_string().contains("malformed `convnet` metadata"));
        let meta = ModelMeta {
            format_version: FORMAT_VERSION,
            architecture: ModelSpec::small(),
            class_names: vec!["a".into(), "b".into()],
            image_size: [28, 28],
            color_mode: ColorMode::Grayscale,
            pixel_scale: PixelScale::Unit,
            interpolation: Interpolation::Bilinear,
            crop_to_aspect_ratio: false,
        };
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
}
