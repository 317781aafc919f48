//! `convnet import-torch`: a torchvision `state_dict` saved as safetensors
//! (a ResNet or a SqueezeNet, under torchvision's own tensor names) as a
//! convnet model file of the matching preset, with the preprocessing the
//! network expects (see `convnet_io::torchvision`).

use super::preprocess::PreprocessOptions;
use anyhow::{bail, Context, Result};
use clap::Args;
use convnet_data::InputFormat;
use convnet_io::model_file::{assign_params, read_tensor_file, save_model, ModelMeta};
use convnet_io::torchvision::{has_torchvision_names, to_convnet_names};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ImportTorchArgs {
    /// The state_dict, saved with `safetensors.torch.save_file` under torchvision's names
    #[arg(long)]
    pub state_dict: PathBuf,
    /// The architecture: resnet18, resnet34, squeezenet1_1, resnet-small, or a TOML file of the same layout
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub image: crate::options::ImageOptions,
    /// The convnet model file to write
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub preprocess: PreprocessOptions,
}

pub fn run(args: ImportTorchArgs) -> Result<ExitCode> {
    let file = read_tensor_file(&args.state_dict)?;
    if !has_torchvision_names(&file.tensors) {
        bail!(
            "{}: not a torchvision ResNet or SqueezeNet state_dict (no conv1.weight and layer1.*, nor features.0.weight and classifier.*)",
            args.state_dict.display()
        );
    }
    let head = ["fc.weight", "classifier.1.weight"].iter().find_map(|name| file.tensors.get(*name));
    let classes = head.map(|(shape, _)| shape[0]).context("the state_dict has no fc.weight or classifier.1.weight")?;
    let mut class_names = args.preprocess.class_names()?;
    if class_names.is_empty() {
        class_names = (0..classes).map(|k| k.to_string()).collect();
    }
    if class_names.len() != classes {
        bail!("the state_dict's classifier has {classes} outputs but {} class names were given", class_names.len());
    }
    let mut architecture = crate::inputs::resolve_architecture(&args.model)?;
    architecture.layers.splice(0..0, args.preprocess.normalize());
    let mut meta = ModelMeta::new(architecture, class_names, args.image.image_size, args.image.color_mode);
    meta.input = InputFormat { pixel_scale: args.preprocess.pixel_scale(), ..meta.input };
    args.preprocess.apply_resize(&mut meta.input)?;
    let mut model = meta.build().with_context(|| format!("--model {} cannot take this input", args.model))?;
    let tensors = to_convnet_names(&model, file.tensors);
    assign_params(&mut model, &tensors)
        .with_context(|| format!("{}: does not fit --model {}", args.state_dict.display(), args.model))?;
    save_model(&args.out, &model, &meta)?;
    println!(
        "Imported {} as {} ({} parameters, {classes} classes; input: {}) -> {}",
        args.state_dict.display(),
        args.model,
        model.params().iter().map(|p| p.value.len()).sum::<usize>(),
        meta.describe_input(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
