//! `convnet export`: a trained model as an ONNX file (see `convnet_io::onnx`).

use anyhow::{Context, Result};
use clap::Args;
use convnet_io::atomic::write_atomic;
use convnet_io::model_file::load_model;
use convnet_io::onnx::{export, IR_VERSION, OPSET};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ExportArgs {
    /// Model file (.safetensors written by convnet)
    #[arg(long)]
    pub model: PathBuf,
    /// The ONNX file to write
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let (model, meta) = load_model(&args.model)?;
    let bytes = export(&model, &meta).with_context(|| format!("{}", args.model.display()))?;
    write_atomic(&args.out, &bytes)?;
    let [c, h, w] = [meta.input_shape()[0], meta.input.image_size[0], meta.input.image_size[1]];
    println!(
        "Wrote {} ({:.1} MB, ONNX IR {IR_VERSION}, opset {OPSET}): input \"input\" float (N, {c}, {h}, {w}), pixels x {}; \
         outputs \"probabilities\" and \"logits\" (N, {})",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        meta.input.pixel_scale.factor(),
        meta.class_names.len()
    );
    Ok(ExitCode::SUCCESS)
}
