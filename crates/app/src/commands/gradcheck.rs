//! `convnet gradcheck`: every layer of a model, then the whole model under its
//! loss, checked in f64 by central differences on the production kernels.

use crate::inputs::model_for;
use crate::options::{parse_color_mode, parse_size, positive};
use anyhow::{Context, Result};
use clap::Args;
use convnet_data::ColorMode;
use convnet_io::model_file;
use convnet_tensor::gradcheck::{check_layer, check_model, GradCheckConfig};
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::Mode;
use rand::Rng;
use std::process::ExitCode;

#[derive(Args)]
pub struct GradcheckArgs {
    /// a preset (baseline, small, resnet-small, resnet18, resnet34, squeezenet1_1), an architecture TOML file, or a model file
    #[arg(long, default_value = "baseline")]
    pub model: String,
    #[arg(long, default_value = "32", value_parser = parse_size)]
    pub image_size: [usize; 2],
    #[arg(long, default_value = "rgb", value_parser = parse_color_mode)]
    pub color_mode: ColorMode,
    #[arg(long, default_value_t = 8, value_parser = positive)]
    pub classes: usize,
    #[arg(long, default_value_t = 2, value_parser = positive)]
    pub batch_size: usize,
    /// Check at most this many elements per tensor (seeded sample of larger ones)
    #[arg(long, default_value_t = 24, value_parser = positive)]
    pub max_elements: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: GradcheckArgs) -> Result<ExitCode> {
    let input = [args.color_mode.channels(), args.image_size[0], args.image_size[1]];
    let (spec, input, classes, weights) = model_for(&args.model, input, args.classes)?;
    let mut model = spec
        .build::<f64>(&input, classes, args.seed)
        .with_context(|| format!("{} cannot take {}x{}x{} inputs", args.model, input[1], input[2], input[0]))?;
    if let Some(path) = &weights {
        let file = model_file::read_tensor_file(path)?;
        model_file::assign_params(&mut model, &file.tensors)
            .with_context(|| format!("{}: does not fit", path.display()))?;
    }
    let mut rng = convnet_tensor::rng::rng_at(args.seed, 1);
    let batch_shape: Vec<usize> = std::iter::once(args.batch_size).chain(input).collect();
    let images = ArrayD::from_shape_simple_fn(IxDyn(&batch_shape), || rng.random_range(0.0..1.0));
    let labels: Vec<usize> = (0..args.batch_size).map(|_| rng.random_range(0..classes)).collect();
    let config =
        GradCheckConfig { max_elements_per_tensor: args.max_elements, seed: args.seed, ..GradCheckConfig::default() };
    println!(
        "Gradient check of {} at {}x{}x{}, batch {}, f64 central differences (h = {:e}, pass: |a - n| <= {:e} + {:e} |n|), up to {} elements per tensor\n",
        args.model, input[1], input[2], input[0], args.batch_size, config.eps, config.atol, config.rtol, config.max_elements_per_tensor
    );
    // Each layer's real input: run the model unfused, so every activation has a
    // buffer of its own (fused, a ReLU overwrites its input), then fused again
    // for the whole-model check of the production path.
    model.set_fused(false);
    model.forward(images.view(), Mode::train(args.seed))?;
    let inputs: Vec<ArrayD<f64>> = std::iter::once(images.clone())
        .chain((0..model.layers().len() - 1).map(|i| model.layer_output(i).expect("a layer").to_owned()))
        .collect();
    model.set_fused(true);
    let mut all_passed = true;
    for (i, layer_input) in inputs.iter().enumerate() {
        let layer = model.layers_mut()[i].as_mut();
        let kind = layer.kind();
        let result = check_layer(layer, layer_input.view(), &config)?;
        let passed = result.passed();
        all_passed &= passed;
        println!("layer {i} ({kind}): {}", if passed { "pass" } else { "FAIL" });
        for line in result.to_string().lines() {
            println!("  {line}");
        }
    }
    let result = check_model(&mut model, images.view(), &labels, &config)?;
    all_passed &= result.passed();
    println!("whole model (softmax cross-entropy loss): {}", if result.passed() { "pass" } else { "FAIL" });
    for line in result.to_string().lines() {
        println!("  {line}");
    }
    println!("\n{}", if all_passed { "All gradient checks passed." } else { "Some gradient checks FAILED." });
    Ok(if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
