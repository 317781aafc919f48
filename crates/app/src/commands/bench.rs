//! `convnet bench`: training-step and inference throughput on synthetic data.
//!
//! FLOPs are counted as 2 per multiply-add: a layer's forward is `F`; its
//! backward is `F` for the weight gradient plus `F` for the input gradient
//! (skipped for the first layer, whose input gradient nobody needs). A
//! Winograd convolution is credited with the FLOPs of the direct convolution
//! it replaces, so its GFLOP/s are "effective" and comparable across methods.
//! A layer whose pass also does the forward work of fused layers after it is
//! credited with theirs too, as its time includes it.

use crate::inputs::model_for;
use crate::options::{parse_size, set_threads};
use anyhow::{Context, Result};
use clap::Args;
use convnet_optim::{Adam, Optimizer};
use convnet_tensor::ndarray::{ArrayD, ArrayViewD, IxDyn};
use convnet_tensor::{Mode, Sequential, SoftmaxCrossEntropy};
use rand::Rng;
use serde_json::json;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// a preset (baseline, small, resnet-small, resnet18, resnet34, squeezenet1_1), an architecture TOML file, or a model file
    #[arg(long, default_value = "baseline")]
    model: String,
    #[arg(long, default_value = "224", value_parser = parse_size)]
    image_size: [usize; 2],
    #[arg(long, default_value_t = 3)]
    channels: usize,
    #[arg(long, default_value_t = 8)]
    classes: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Timed steps after one warm-up step
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Report time and GFLOP/s per layer
    #[arg(long)]
    per_layer: bool,
    /// Inference only (evaluation-mode forward passes)
    #[arg(long)]
    inference: bool,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub conv: crate::options::ConvAlgoOptions,
}

/// Runs one warm-up step and `args.steps` timed ones (training or inference):
/// each step's time and each layer's summed forward and backward times.
fn time_steps(
    model: &mut Sequential<f32>,
    args: &BenchArgs,
    images: ArrayViewD<'_, f32>,
    labels: &[usize],
) -> Result<(Vec<Duration>, Vec<[Duration; 2]>)> {
    let mut loss_fn = SoftmaxCrossEntropy::new();
    let mut adam = Adam::new(1e-3);
    model.set_profiling(true);
    let layers = model.layers().len();
    let mut totals = vec![[Duration::ZERO; 2]; layers];
    let mut step_times = Vec::new();
    for step in 0..=args.steps {
        let started = Instant::now();
        if args.inference {
            model.predict(images.clone())?;
        } else {
            let logits = model.forward(images.clone(), Mode::train(step as u64))?;
            loss_fn.forward(logits, labels)?;
            model.backward(loss_fn.grad_logits().view())?;
            adam.step(&mut model.params_mut())?;
        }
        let elapsed = started.elapsed();
        if step > 0 {
            step_times.push(elapsed);
            for (total, timing) in totals.iter_mut().zip(model.layer_timings().expect("profiling on")) {
                total[0] += timing[0];
                total[1] += timing[1];
            }
        }
    }
    Ok((step_times, totals))
}

/// The `--per-layer` table.
fn print_per_layer(per_layer: &[serde_json::Value]) {
    // as wide as "fwd winograd, dx im2col, dw winograd" when the passes differ
    let algo_width = per_layer.iter().filter_map(|entry| entry["algo"].as_str()).map(str::len).max().unwrap_or(0);
    let algo_width = algo_width.max("algorithm".len());
    println!(
        "\n  {:<4} {:<17} {:<algo_width$} {:>11} {:>12} {:>9} {:>7}",
        "#", "layer", "algorithm", "forward ms", "backward ms", "GFLOP/s", "share"
    );
    for entry in per_layer {
        // a fused layer: its forward is part of a layer before it (a ReLU, and in
        // inference the max-pools after a convolution), a ReLU's backward (before a
        // max-pool) part of the layer after it
        let fused = if entry["fused"].as_bool().unwrap_or(false) { " (fused)" } else { "" };
        println!(
            "  {:<4} {:<17} {:<algo_width$} {:>11.2} {:>12.2} {:>9.1} {:>6.1}%",
            entry["index"].as_u64().unwrap_or(0),
            format!("{}{fused}", entry["kind"].as_str().unwrap_or("")),
            entry["algo"].as_str().unwrap_or(""),
            entry["forward_ms"].as_f64().unwrap_or(0.0),
            entry["backward_ms"].as_f64().unwrap_or(0.0),
            entry["gflops"].as_f64().unwrap_or(0.0),
            100.0 * entry["share"].as_f64().unwrap_or(0.0)
        );
    }
}

/// Per layer: its kind and algorithm, forward and backward ms per step, GFLOP/s
/// and its share of the `mean` step, from `totals` (summed over the steps).
fn per_layer_report(
    model: &Sequential<f32>,
    flops: &[(u64, u64)],
    totals: &[[Duration; 2]],
    args: &BenchArgs,
    mean: f64,
) -> Vec<serde_json::Value> {
    let steps = args.steps as f64;
    model
        .layers()
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let (fwd, bwd) = (totals[i][0].as_secs_f64() / steps, totals[i][1].as_secs_f64() / steps);
            // with the forward work of the layers fused into this one's pass (conv1 of `baseline` in
            // inference does conv2's, in bands)
            let fused_after: u64 = (i + 1..flops.len()).take_while(|&j| model.is_fused(j)).map(|j| flops[j].0).sum();
            let own = flops[i].0 + fused_after + if args.inference { 0 } else { flops[i].1 };
            let layer_flops = own * args.batch_size as u64;
            let seconds = fwd + if args.inference { 0.0 } else { bwd };
            let algo = layer
                .as_any()
                .and_then(|any| any.downcast_ref::<convnet_tensor::Conv2d<f32>>())
                .map(|conv| conv.resolved_algos().describe());
            // a fused layer's work, and time, are its neighbour's: no rate of its own
            let fused = model.is_fused(i) || model.is_backward_absorbed(i);
            json!({
                "index": i, "kind": layer.kind(), "algo": algo, "fused": fused,
                "forward_ms": fwd * 1e3, "backward_ms": bwd * 1e3,
                "gflops": if seconds > 0.0 && !model.is_fused(i) { layer_flops as f64 / seconds / 1e9 } else { 0.0 },
                "share": seconds / mean,
            })
        })
        .collect()
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.batch_size > 0 && args.steps > 0 && args.channels > 0 && args.classes > 0,
        "--batch-size, --steps, --channels and --classes must be positive"
    );
    set_threads(args.threads)?;
    let input = [args.channels, args.image_size[0], args.image_size[1]];
    let (spec, input, classes, _) = model_for(&args.model, input, args.classes)?;
    let mut model = spec
        .build::<f32>(&input, classes, 1)
        .with_context(|| format!("{} cannot take {}x{}x{} inputs", args.model, input[1], input[2], input[0]))?;
    args.conv.apply(&mut model)?;
    crate::preflight::check_memory(&model, args.batch_size)?;
    // the gradient sums as `convnet train` takes them (a fixed tree of leaves, see convnet_tensor::gradient_tree)
    model.set_gradient_leaves(convnet_tensor::gradient_tree::gradient_leaves(args.batch_size));
    let mut rng = convnet_tensor::rng::rng_at(7, 7);
    let shape: Vec<usize> = std::iter::once(args.batch_size).chain(input).collect();
    let images = ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random_range(0.0f32..1.0));
    let labels: Vec<usize> = (0..args.batch_size).map(|_| rng.random_range(0..classes)).collect();
    let flops = model.layer_flops();
    let (forward_flops, backward_flops): (u64, u64) = flops.iter().fold((0, 0), |(f, b), &(lf, lb)| (f + lf, b + lb));
    let step_flops =
        if args.inference { forward_flops } else { forward_flops + backward_flops } * args.batch_size as u64;
    let (step_times, totals) = time_steps(&mut model, &args, images.view(), &labels)?;
    let mut sorted = step_times.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2].as_secs_f64();
    let mean = step_times.iter().map(Duration::as_secs_f64).sum::<f64>() / step_times.len() as f64;
    let images_per_sec = args.batch_size as f64 / median;
    let gflops = step_flops as f64 / median / 1e9;
    let threads = rayon::current_num_threads();
    let steps = args.steps as f64;
    let forward_ms: f64 = totals.iter().map(|t| t[0].as_secs_f64()).sum::<f64>() / steps * 1e3;
    let backward_ms: f64 = totals.iter().map(|t| t[1].as_secs_f64()).sum::<f64>() / steps * 1e3;
    let per_layer = per_layer_report(&model, &flops, &totals, &args, mean);
    if args.json {
        let mut object = json!({
            "model": args.model, "mode": if args.inference { "inference" } else { "training" },
            "image_size": args.image_size, "channels": input[0], "batch_size": args.batch_size,
            "threads": threads, "steps": args.steps,
            "images_per_sec": images_per_sec, "gflops": gflops,
            "step_ms_median": median * 1e3, "step_ms_mean": mean * 1e3,
            "forward_ms": forward_ms, "backward_ms": backward_ms,
            "gflop_per_image": step_flops as f64 / args.batch_size as f64 / 1e9,
        });
        if args.per_layer {
            object["per_layer"] = serde_json::Value::Array(per_layer);
        }
        println!("{object}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {} at {}x{}x{}, batch {}, {} threads, {} steps after 1 warm-up",
        args.model,
        if args.inference { "inference" } else { "training" },
        input[1],
        input[2],
        input[0],
        args.batch_size,
        threads,
        args.steps
    );
    println!(
        "  {images_per_sec:.2} images/s, {gflops:.1} GFLOP/s ({:.3} GFLOP per image)",
        step_flops as f64 / args.batch_size as f64 / 1e9
    );
    println!(
        "  step: median {:.1} ms, mean {:.1} ms; forward {forward_ms:.1} ms, backward {backward_ms:.1} ms",
        median * 1e3,
        mean * 1e3
    );
    if args.per_layer {
        print_per_layer(&per_layer);
    }
    Ok(ExitCode::SUCCESS)
}
