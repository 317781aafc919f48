//! `convnet summary`: a model's layers, output shapes, parameters, FLOPs and
//! activation memory.

use crate::inputs::model_for;
use crate::model_summary::summary_table;
use crate::options::{positive, ImageOptions};
use anyhow::{Context, Result};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct SummaryArgs {
    /// a preset (baseline, small, resnet-small, resnet18, resnet34, squeezenet1_1), an architecture TOML file, or a model file
    #[arg(long, default_value = "baseline")]
    pub model: String,
    #[command(flatten)]
    pub image: ImageOptions,
    #[arg(long, default_value_t = 8, value_parser = positive)]
    pub classes: usize,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch_size: usize,
    /// State the memory of passes of M images (as `train --micro-batch M`)
    #[arg(long, value_name = "M")]
    pub micro_batch: Option<usize>,
    #[command(flatten)]
    pub conv: crate::options::ConvAlgoOptions,
}

pub fn run(args: SummaryArgs) -> Result<ExitCode> {
    let input = args.image.input_shape();
    let (spec, input, classes, _) = model_for(&args.model, input, args.classes)?;
    let mut model = spec
        .build::<f32>(&input, classes, 0)
        .with_context(|| format!("{} cannot take {}x{}x{} inputs", args.model, input[1], input[2], input[0]))?;
    args.conv.apply(&mut model)?;
    crate::training::micro_batch::check(args.micro_batch, args.batch_size)?;
    print!("{}", summary_table(&model, args.batch_size, args.micro_batch));
    Ok(ExitCode::SUCCESS)
}
