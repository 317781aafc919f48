//! What commands read besides their flags: architecture names and files,
//! model files, labelled folders.

use crate::options::CacheOptions;
use anyhow::{bail, Context, Result};
use convnet_data::scan::is_image;
use convnet_data::ImageSet;
use convnet_io::model_file::{self, ModelMeta};
use convnet_tensor::ModelSpec;
use std::path::{Path, PathBuf};

/// Resolves a preset ([`convnet_tensor::model::presets::PRESETS`]) or a TOML file into an architecture.
pub fn resolve_architecture(model: &str) -> Result<ModelSpec> {
    if let Some(spec) = ModelSpec::preset(model) {
        return Ok(spec);
    }
    let path = Path::new(model);
    if !path.exists() {
        let presets = convnet_tensor::model::presets::PRESETS.join(", ");
        bail!("--model {model}: not a preset ({presets}) and no such file");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {model}"))?;
    parse_architecture(&text).with_context(|| format!("{model}: invalid architecture file"))
}

/// Parses an architecture TOML document ([`ModelSpec::from_toml`]).
pub fn parse_architecture(text: &str) -> Result<ModelSpec> {
    Ok(ModelSpec::from_toml(text)?)
}

/// A model for `summary`/`gradcheck`/`bench`: a preset, a TOML file, or a
/// model file. Returns the architecture, the input shape and class count (the
/// file's own for a model file, else the ones given) and the file to load
/// weights from.
pub fn model_for(
    name: &str,
    input: [usize; 3],
    classes: usize,
) -> Result<(ModelSpec, [usize; 3], usize, Option<PathBuf>)> {
    let path = Path::new(name);
    if path.extension().is_some_and(|e| e == "safetensors") {
        let file = model_file::read_tensor_file(path)?;
        let meta = model_file::parse_meta(&file.metadata)
            .with_context(|| format!("{}: not a convnet model file", path.display()))?;
        return Ok((meta.architecture.clone(), meta.input_shape(), meta.class_names.len(), Some(path.to_path_buf())));
    }
    Ok((resolve_architecture(name)?, input, classes, None))
}

/// Loads a labelled folder with the model's classes (mapped by name) and input
/// format, reporting skipped files and classes without a folder on stderr.
pub fn load_labelled(dir: &Path, meta: &ModelMeta, skip_bad: bool, cache: &CacheOptions) -> Result<ImageSet> {
    let loaded = convnet_data::load(dir, &cache.apply(meta.dataset_options(skip_bad)))?;
    if !loaded.report.missing_classes.is_empty() || !loaded.report.skipped.is_empty() {
        eprint!("{}", loaded.report);
    } else if let Some(storage) = &loaded.report.storage {
        eprintln!("{storage}");
    }
    Ok(loaded.training)
}

/// The image files of `path`: the file itself, or a folder searched
/// recursively in sorted order (files with an image extension, and DICOM
/// files without an extension).
pub fn collect_images(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                collect_images(&entry, out)?;
            } else if is_image(&entry) {
                out.push(entry);
            }
        }
    } else if path.exists() {
        out.push(path.to_path_buf());
    } else {
        bail!("{}: no such file or directory", path.display());
    }
    Ok(())
}
