//! `convnet calibrate`: temperature scaling (see `convnet_io::calibration`)
//! fitted on a labelled validation folder and stored in the model file, so
//! that `predict`, `evaluate` and `show` give calibrated probabilities. The
//! predicted classes do not change.

use crate::inputs::load_labelled;
use crate::options::{positive, set_threads, CacheOptions};
use anyhow::Result;
use clap::Args;
use convnet_io::calibration::{expected_calibration_error, fit_temperature, nll_at_temperature};
use convnet_io::metrics::predict_set;
use convnet_io::model_file::{load_model, save_model};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct CalibrateArgs {
    /// The model file to calibrate
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled validation images, one sub-folder per class (not the test set)
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the calibrated model (default: the model file itself)
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch_size: usize,
    #[arg(long)]
    pub skip_bad: bool,
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub cache: CacheOptions,
}

pub fn run(args: CalibrateArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let (mut model, mut meta) = load_model(&args.model)?;
    let set = load_labelled(&args.data, &meta, args.skip_bad, &args.cache)?;
    // the uncalibrated probabilities (a temperature already stored is fitted again)
    let predictions = predict_set(&mut model, &set, args.batch_size, meta.input.pixel_scale)?;
    let (probabilities, labels, classes) = (&predictions.probabilities, set.labels(), meta.class_names.len());
    let temperature = fit_temperature(probabilities, labels, classes);
    let mut scaled = probabilities.clone();
    convnet_io::calibration::apply_temperature(&mut scaled, classes, temperature);
    println!(
        "Temperature {temperature:.4} on {} images of {}: NLL {:.4} -> {:.4}, ECE {:.4} -> {:.4} (the predicted classes do not change)",
        labels.len(),
        args.data.display(),
        nll_at_temperature(probabilities, labels, classes, 1.0),
        nll_at_temperature(probabilities, labels, classes, temperature),
        expected_calibration_error(probabilities, labels, classes),
        expected_calibration_error(&scaled, labels, classes),
    );
    meta.temperature = Some(temperature);
    let out = args.out.unwrap_or(args.model);
    save_model(&out, &model, &meta)?;
    println!("Calibrated model written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
