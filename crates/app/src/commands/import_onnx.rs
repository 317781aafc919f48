//! `convnet import-onnx`: a CNN exported to ONNX (`torch.onnx.export`,
//! `tf2onnx`, the ONNX model zoo, convnet's own `export`) as a convnet model
//! file, to predict with or to fine-tune (see `convnet_io::onnx_import`).

use super::preprocess::PreprocessOptions;
use anyhow::Result;
use clap::Args;
use convnet_io::model_file::save_model;
use convnet_io::onnx_import::{import_onnx, OnnxImport};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ImportOnnxArgs {
    /// The ONNX model (weights kept as external data beside it are read too)
    #[arg(long)]
    pub onnx: PathBuf,
    /// The convnet model file to write
    #[arg(long)]
    pub out: PathBuf,
    /// The input size HxW, when the file leaves it symbolic
    #[arg(long, value_parser = crate::options::parse_size)]
    pub image_size: Option<[usize; 2]>,
    #[command(flatten)]
    pub preprocess: PreprocessOptions,
}

pub fn run(args: ImportOnnxArgs) -> Result<ExitCode> {
    let options = OnnxImport {
        class_names: args.preprocess.class_names()?,
        image_size: args.image_size,
        pixel_scale: args.preprocess.pixel_scale(),
        prepend: args.preprocess.normalize().into_iter().collect(),
    };
    let (model, mut meta) = import_onnx(&args.onnx, &options)?;
    args.preprocess.apply_resize(&mut meta.input)?;
    save_model(&args.out, &model, &meta)?;
    println!(
        "Imported {} ({} layers, {} parameters, {} classes; input: {}) -> {}",
        args.onnx.display(),
        model.layers().len(),
        model.params().iter().map(|p| p.value.len()).sum::<usize>(),
        meta.class_names.len(),
        meta.describe_input(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
