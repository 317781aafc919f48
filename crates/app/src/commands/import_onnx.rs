//! `convnet import-onnx`: a CNN exported to ONNX (`torch.onnx.export`,
//! `tf2onnx`, the ONNX model zoo, convnet's own `export`) as a convnet model
//! file, to predict with or to fine-tune (see `convnet_io::onnx_import`).

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use convnet_data::PixelScale;
use convnet_io::model_file::save_model;
use convnet_io::onnx_import::{import_onnx, OnnxImport};
use convnet_tensor::layers::normalize::{IMAGENET_MEAN, IMAGENET_STD};
use convnet_tensor::LayerSpec;
use std::path::PathBuf;
use std::process::ExitCode;

/// What the network expects of its input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preprocess {
    /// Pixels scaled to 0-1, then normalised by ImageNet's mean and standard
    /// deviation (torchvision's pretrained networks)
    Imagenet,
    /// Pixels scaled to 0-1 (convnet's default)
    Unit,
    /// Pixels as 0-255
    Raw,
}

#[derive(Args)]
pub struct ImportOnnxArgs {
    /// The ONNX model (an external-data file beside it is read too)
    #[arg(long)]
    pub onnx: PathBuf,
    /// The convnet model file to write
    #[arg(long)]
    pub out: PathBuf,
    /// The class names in the order of the outputs (default: the file's own, or 0, 1, 2, ...)
    #[arg(long, value_delimiter = ',')]
    pub class_names: Vec<String>,
    /// A text file with one class name per line, in the order of the outputs
    #[arg(long, conflicts_with = "class_names")]
    pub class_names_file: Option<PathBuf>,
    /// The input size HxW, when the file leaves it symbolic
    #[arg(long, value_parser = crate::options::parse_size)]
    pub image_size: Option<[usize; 2]>,
    /// The preprocessing the network was trained with; stored in the model file, so that
    /// train, evaluate, predict, explain, show and export apply it
    #[arg(long, value_enum, default_value = "unit")]
    pub preprocess: Preprocess,
    /// Per-channel means to subtract after the pixel scaling (overrides --preprocess's)
    #[arg(long, value_delimiter = ',', requires = "std")]
    pub mean: Vec<f64>,
    /// Per-channel standard deviations to divide by (overrides --preprocess's)
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Vec<f64>,
}

pub fn run(args: ImportOnnxArgs) -> Result<ExitCode> {
    let class_names = match &args.class_names_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            .lines()
            .map(|line| line.trim().to_string())
            .filter(|line| !line.is_empty())
            .collect(),
        None => args.class_names.clone(),
    };
    if class_names.iter().any(|name| name.trim().is_empty()) {
        bail!("--class-names: a class name is empty");
    }
    let mut prepend = Vec::new();
    let (mean, std) = match (args.preprocess, args.mean.is_empty()) {
        (_, false) => (args.mean.clone(), args.std.clone()),
        (Preprocess::Imagenet, true) => (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()),
        _ => (Vec::new(), Vec::new()),
    };
    if !mean.is_empty() {
        prepend.push(LayerSpec::Normalize { mean, std });
    }
    let options = OnnxImport {
        class_names,
        image_size: args.image_size,
        pixel_scale: if args.preprocess == Preprocess::Raw { PixelScale::Raw } else { PixelScale::Unit },
        prepend,
    };
    let (model, meta) = import_onnx(&args.onnx, &options)?;
    save_model(&args.out, &model, &meta)?;
    let [c, h, w] = meta.input_shape();
    println!(
        "Imported {} ({} layers, {} parameters, {} classes, input {h}x{w}x{c}, pixels {}{}) -> {}",
        args.onnx.display(),
        model.layers().len(),
        model.params().iter().map(|p| p.value.len()).sum::<usize>(),
        meta.class_names.len(),
        match meta.input.pixel_scale {
            PixelScale::Unit => "0-1",
            PixelScale::Raw => "0-255",
        },
        match meta.architecture.layers.first() {
            Some(LayerSpec::Normalize { mean, std }) => format!(", normalised by mean {mean:?} std {std:?}"),
            _ => String::new(),
        },
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
