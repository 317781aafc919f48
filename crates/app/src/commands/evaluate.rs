//! `convnet evaluate`: loss, accuracy, confusion matrix, per-class metrics and
//! Cohen's kappa of a model on a labelled folder.

use crate::inputs::load_labelled;
use crate::options::CacheOptions;
use crate::options::{positive, set_threads};
use crate::render::{confusion_png, png_bytes};
use anyhow::Result;
use clap::Args;
use convnet_io::atomic::write_atomic;
use convnet_io::metrics::{predict_set, report};
use convnet_io::model_file::load_model;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct EvaluateArgs {
    /// Model file (.safetensors written by convnet)
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled images, one sub-folder per class
    #[arg(long)]
    pub data: PathBuf,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch_size: usize,
    /// Where to write the confusion matrix picture (default: confusion.png beside the model)
    #[arg(long)]
    pub confusion_png: Option<PathBuf>,
    #[arg(long)]
    pub skip_bad: bool,
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub cache: CacheOptions,
}

pub fn run(args: EvaluateArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let (mut model, meta) = load_model(&args.model)?;
    let set = load_labelled(&args.data, &meta, args.skip_bad, &args.cache)?;
    let predictions = predict_set(&mut model, &set, args.batch_size, meta.pixel_scale)?;
    let result = report(predictions.loss, set.labels(), &predictions.predicted, &meta.class_names);
    let png = args.confusion_png.clone().unwrap_or_else(|| args.model.with_file_name("confusion.png"));
    write_atomic(&png, &png_bytes(&confusion_png(&result))?)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", result.to_text());
        println!("\nConfusion matrix picture: {}", png.display());
    }
    Ok(ExitCode::SUCCESS)
}
