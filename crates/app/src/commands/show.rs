//! `convnet show`: the Keras script's picture, a grid of test images titled
//! "Pred: X | Real: Y".

use crate::inputs::load_labelled;
use crate::options::positive;
use crate::options::CacheOptions;
use crate::render::draw_grid;
use anyhow::{bail, Result};
use clap::Args;
use convnet_io::model_file::load_model;
use convnet_io::scoring::{Scorer, Tta};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ShowArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled images, one sub-folder per class
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 3, value_parser = positive)]
    pub rows: usize,
    #[arg(long, default_value_t = 3, value_parser = positive)]
    pub cols: usize,
    #[arg(long, default_value = "grid.png")]
    pub out: PathBuf,
    /// Seed of the random choice of images
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub cache: CacheOptions,
}

pub fn run(args: ShowArgs) -> Result<ExitCode> {
    if args.rows > 20 || args.cols > 20 {
        bail!("--rows and --cols must be at most 20, got {}x{}", args.rows, args.cols);
    }
    let (scorer, meta) = Scorer::new(vec![load_model(&args.model)?], Tta::None)?;
    let mut scorer = scorer;
    let set = load_labelled(&args.data, &meta, true, &args.cache)?;
    let predictions = scorer.predict_set(&set, 32, meta.input.pixel_scale)?;
    draw_grid(&set, &predictions.predicted, args.rows, args.cols, args.seed, &args.out)?;
    let correct = predictions.predicted.iter().zip(set.labels()).filter(|(p, l)| p == l).count();
    println!(
        "Wrote {} ({}x{} grid; accuracy on all {} images: {:.4})",
        args.out.display(),
        args.rows,
        args.cols,
        set.len(),
        correct as f64 / set.len() as f64
    );
    Ok(ExitCode::SUCCESS)
}
