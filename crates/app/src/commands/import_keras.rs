//! `convnet import-keras`: a model trained with Keras (the seed script's
//! `.keras` or `.h5`) as a convnet model file, without retraining (see
//! `convnet_io::keras`).

use anyhow::{bail, Result};
use clap::Args;
use convnet_io::keras::import_keras;
use convnet_io::model_file::save_model;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ImportKerasArgs {
    /// The Keras model: a Keras 3 `.keras` file or a legacy `.h5` file
    #[arg(long)]
    pub keras: PathBuf,
    /// The class names in the order of the model's outputs (Keras' folder order: sorted)
    #[arg(long, value_delimiter = ',', required = true)]
    pub class_names: Vec<String>,
    /// The convnet model file to write
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ImportKerasArgs) -> Result<ExitCode> {
    if args.class_names.iter().any(|name| name.trim().is_empty()) {
        bail!("--class-names: a class name is empty");
    }
    let (model, meta) = import_keras(&args.keras, &args.class_names)?;
    save_model(&args.out, &model, &meta)?;
    let [c, h, w] = [meta.input_shape()[0], meta.input.image_size[0], meta.input.image_size[1]];
    println!(
        "Imported {} ({} layers, {} parameters, input {h}x{w}x{c}, pixels {}) -> {}",
        args.keras.display(),
        model.layers().len(),
        model.params().iter().map(|p| p.value.len()).sum::<usize>(),
        match meta.input.pixel_scale {
            convnet_data::PixelScale::Unit => "0-1 (Rescaling 1/255)",
            convnet_data::PixelScale::Raw => "0-255 (no Rescaling)",
        },
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
