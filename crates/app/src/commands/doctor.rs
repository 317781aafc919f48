//! `convnet doctor`: the checks worth running before a long training run.
//!
//! 1. Dataset report: per-class counts and the weights `--class-weight balanced`
//!    would use, unreadable files, files whose content is not what their
//!    extension says, and exact duplicates shared by the training and test
//!    folders (leakage).
//! 2. Initial loss: with the default initialisation the network's predictions
//!    are close to uniform, so the loss should be close to `ln(classes)`.
//! 3. Overfitting a tiny subset: a correct model, loss and optimizer can drive
//!    20 images to 100% training accuracy; if it cannot, something is broken.
//! 4. Update/weight ratios and activation statistics after a few steps: the
//!    usual healthy update ratio is about 1e-3 per step; far below means the
//!    layer barely learns, far above that it is unstable.

use crate::inputs::resolve_architecture;
use crate::options::{set_threads, CacheOptions, ImageOptions};
use crate::training::balanced_class_weights;
use anyhow::{Context, Result};
use clap::Args;
use convnet_data::scan::{scan, ClassNames, Scan};
use convnet_data::{DatasetOptions, DecodeOptions, ImageSet, InputFormat, Loaded, PixelScale};
use convnet_optim::{Adam, Optimizer};
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::{Mode, Sequential, SoftmaxCrossEntropy};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct DoctorArgs {
    /// Training images, one sub-folder per class
    #[arg(long)]
    train: PathBuf,
    /// Test images, checked for duplicates of training images
    #[arg(long)]
    test: Option<PathBuf>,
    /// Architecture: a preset (baseline, small, resnet-small, resnet18, resnet34, squeezenet1_1) or a TOML file
    #[arg(long, default_value = "baseline")]
    model: String,
    #[command(flatten)]
    image: ImageOptions,
    #[command(flatten)]
    cache: CacheOptions,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long)]
    threads: Option<usize>,
}

fn format_of_content(path: &Path) -> Option<image::ImageFormat> {
    let mut head = [0u8; 64];
    let mut file = std::fs::File::open(path).ok()?;
    let read = std::io::Read::read(&mut file, &mut head).ok()?;
    image::guess_format(&head[..read]).ok()
}

fn file_hash(path: &Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some((hasher.finish(), bytes.len() as u64))
}

fn batch_of(set: &ImageSet, indices: &[usize]) -> Result<(ArrayD<f32>, Vec<usize>)> {
    let [c, h, w] = set.image_shape();
    let mut images = ArrayD::zeros(IxDyn(&[indices.len(), c, h, w]));
    let mut labels = Vec::new();
    set.fill_batch(indices, PixelScale::Unit, images.as_slice_mut().expect("contiguous"), &mut labels)?;
    Ok((images, labels))
}

fn norm(values: impl Iterator<Item = f32>) -> f64 {
    values.map(|v| (v as f64) * (v as f64)).sum::<f64>().sqrt()
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    println!("== 1. Dataset report ==");
    let (loaded, mut problems) = dataset_report(&args)?;
    let set = &loaded.training;
    let classes = set.class_names().len();
    let spec = resolve_architecture(&args.model)?;
    let input = [args.image.color_mode.channels(), args.image.image_size[0], args.image.image_size[1]];
    let build = || {
        spec.build::<f32>(&input, classes, args.seed)
            .with_context(|| format!("{} cannot take {}x{} inputs", args.model, input[1], input[2]))
    };
    println!("\n== 2. Initial loss ==");
    problems += initial_loss(set, build()?)?;
    println!("\n== 3. Overfitting 20 images ==");
    problems += overfit_tiny_subset(set, build()?, args.lr)?;
    println!("\n== 4. Update/weight ratios and activations after 5 steps (batch 32, lr {:e}) ==", args.lr);
    problems += update_ratios_and_activations(set, build()?, args.lr)?;
    println!(
        "\n{}",
        if problems == 0 {
            "doctor: no problems found".to_string()
        } else {
            format!("doctor: {problems} problems found (see above)")
        }
    );
    Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Section 1: the load report, the balanced class weights, files whose content
/// is not their extension's, and test files that are copies of training files.
/// Returns the loaded set and the problems found.
fn dataset_report(args: &DoctorArgs) -> Result<(Loaded, usize)> {
    let mut problems = 0;
    let train_scan = scan(&args.train, &ClassNames::Infer, false)?;
    let options = DatasetOptions {
        decode: DecodeOptions::new(InputFormat::new(args.image.image_size, args.image.color_mode)),
        skip_bad: true,
        ..DatasetOptions::default()
    };
    let options = args.cache.apply(options);
    let loaded = convnet_data::load(&args.train, &options)?;
    print!("{}", loaded.report);
    let weights = balanced_class_weights(&loaded.training.class_counts());
    let shown: Vec<String> =
        loaded.training.class_names().iter().zip(&weights).map(|(n, w)| format!("{n} {w:.3}")).collect();
    println!("--class-weight balanced would use: {}", shown.join(", "));
    problems += loaded.report.skipped.len();
    let test_scan = match &args.test {
        Some(dir) => Some(scan(dir, &ClassNames::Infer, false)?),
        None => None,
    };
    let mut scans = vec![&train_scan];
    scans.extend(test_scan.as_ref());
    report_mismatched_extensions(&scans);
    report_possible_groups(&train_scan);
    if let Some(test_scan) = &test_scan {
        problems += report_leakage(&args.train, &train_scan, test_scan);
    }
    Ok((loaded, problems))
}

/// Warns when file names suggest groups (several images of one patient or
/// study): many names that share their part before the last `_` or `-`
/// (`P_00001_LEFT_CC` and `P_00001_LEFT_MLO`). A plain split could put one
/// patient in training and validation; `convnet cv --group-by` keeps them together.
fn report_possible_groups(train_scan: &Scan) {
    let mut prefixes: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for file in &train_scan.files {
        let stem = file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(at) = stem.rfind(['_', '-']) {
            *prefixes.entry(stem[..at].to_string()).or_default() += 1;
        }
    }
    let shared: usize = prefixes.values().filter(|&&n| n > 1).sum();
    if shared * 10 >= train_scan.files.len() && shared > 0 {
        let (example, count) =
            prefixes.iter().max_by_key(|(name, &n)| (n, std::cmp::Reverse((*name).clone()))).expect("shared");
        println!(
            "Warning: file names suggest groups: {shared} of {} files share a name prefix with another (e.g. {example:?}: {count} files). \
             If these are one patient's or study's images, a plain split puts them on both sides: use convnet cv --group-by REGEX.",
            train_scan.files.len()
        );
    }
}

/// Prints the files whose content is not what their extension says.
fn report_mismatched_extensions(scans: &[&Scan]) {
    let mut mismatched = Vec::new();
    for file in scans.iter().flat_map(|s| s.files.iter()) {
        let by_extension = image::ImageFormat::from_path(&file.path).ok();
        if let (Some(content), Some(extension)) = (format_of_content(&file.path), by_extension) {
            if content != extension {
                mismatched
                    .push(format!("{} (extension says {extension:?}, content is {content:?})", file.path.display()));
            }
        }
    }
    if mismatched.is_empty() {
        println!("Every readable file's content matches its extension.");
    } else {
        println!("{} files whose content is not what their extension says:", mismatched.len());
        for line in &mismatched {
            println!("  {line}");
        }
    }
}

/// Prints the test files that are exact copies of training files; returns how many.
fn report_leakage(train: &Path, train_scan: &Scan, test_scan: &Scan) -> usize {
    let mut seen: HashMap<(u64, u64), &Path> = HashMap::new();
    for file in &train_scan.files {
        if let Some(hash) = file_hash(&file.path) {
            seen.entry(hash).or_insert(&file.path);
        }
    }
    let mut leaks = Vec::new();
    for file in &test_scan.files {
        if let Some(original) = file_hash(&file.path).and_then(|h| seen.get(&h)) {
            if std::fs::read(original).ok() == std::fs::read(&file.path).ok() {
                leaks.push(format!("{} = {}", file.path.display(), original.display()));
            }
        }
    }
    if leaks.is_empty() {
        println!("No exact duplicates between {} and {}.", train.display(), test_scan.root.display());
    } else {
        println!("LEAKAGE: {} test files are exact copies of training files:", leaks.len());
        for line in leaks.iter().take(20) {
            println!("  {line}");
        }
    }
    leaks.len()
}

/// Section 2: the loss of the untrained network, which should be near
/// `ln(classes)`; returns 1 if it is not.
fn initial_loss(set: &ImageSet, mut model: Sequential<f32>) -> Result<usize> {
    let classes = set.class_names().len();
    let mut loss_fn = SoftmaxCrossEntropy::new();
    let sample: Vec<usize> = (0..set.len()).step_by((set.len() / 256).max(1)).take(256).collect();
    let (images, labels) = batch_of(set, &sample)?;
    let logits = model.forward(images.view(), Mode::Eval)?;
    let initial = loss_fn.forward(logits, &labels)? as f64;
    let expected = (classes as f64).ln();
    let ok = (initial - expected).abs() < 0.25 * expected.max(1.0);
    println!(
        "initial loss {initial:.4} on {} images; expected about ln({classes}) = {expected:.4}: {}",
        sample.len(),
        if ok { "ok" } else { "SUSPICIOUS" }
    );
    Ok(usize::from(!ok))
}

/// Section 3: training on 20 images must reach 100% accuracy; returns 1 if not.
fn overfit_tiny_subset(set: &ImageSet, mut model: Sequential<f32>, lr: f64) -> Result<usize> {
    let classes = set.class_names().len();
    let mut loss_fn = SoftmaxCrossEntropy::new();
    let mut tiny: Vec<usize> = Vec::new();
    for class in 0..classes {
        tiny.extend(
            set.labels()
                .iter()
                .enumerate()
                .filter(|(_, &l)| l == class)
                .map(|(i, _)| i)
                .take(20usize.div_ceil(classes)),
        );
    }
    tiny.truncate(20);
    let (images, labels) = batch_of(set, &tiny)?;
    let mut adam = Adam::new(lr);
    let max_steps = 300;
    let mut reached = None;
    for step in 0..max_steps {
        let logits = model.forward(images.view(), Mode::train(step))?;
        loss_fn.forward(logits, &labels)?;
        model.backward(loss_fn.grad_logits().view())?;
        adam.step(&mut model.params_mut())?;
        if step % 10 == 9 {
            let logits = model.forward(images.view(), Mode::Eval)?;
            let loss = loss_fn.forward(logits, &labels)?;
            let accuracy = loss_fn.correct(&labels) as f64 / labels.len() as f64;
            if accuracy == 1.0 {
                reached = Some((step + 1, loss));
                break;
            }
        }
    }
    match reached {
        Some((steps, loss)) => {
            println!(
                "reached 100% training accuracy on {} images after {steps} steps (loss {loss:.4}): passed",
                tiny.len()
            );
            Ok(0)
        }
        None => {
            println!("did NOT reach 100% training accuracy on {} images within {max_steps} steps: FAILED", tiny.len());
            Ok(1)
        }
    }
}

/// Section 4: each parameter's update/weight ratio after 5 steps and each
/// layer's activation statistics; returns the ratios out of the usual range.
fn update_ratios_and_activations(set: &ImageSet, mut model: Sequential<f32>, lr: f64) -> Result<usize> {
    let mut problems = 0;
    let mut loss_fn = SoftmaxCrossEntropy::new();
    let mut adam = Adam::new(lr);
    let mut ratios = vec![0.0f64; model.params().len()];
    for step in 0..5u64 {
        let indices: Vec<usize> = (0..32).map(|i| (step as usize * 32 + i * 7919) % set.len()).collect();
        let (images, labels) = batch_of(set, &indices)?;
        let logits = model.forward(images.view(), Mode::train(step))?;
        loss_fn.forward(logits, &labels)?;
        model.backward(loss_fn.grad_logits().view())?;
        let before: Vec<Vec<f32>> = model.params().iter().map(|p| p.value.iter().copied().collect()).collect();
        adam.step(&mut model.params_mut())?;
        for ((ratio, old), param) in ratios.iter_mut().zip(&before).zip(model.params()) {
            let update = norm(param.value.iter().zip(old).map(|(new, old)| new - old));
            *ratio = update / norm(old.iter().copied()).max(1e-12);
        }
    }
    println!("  {:<10} {:>10} {:>10} {:>12}  verdict", "parameter", "|w|", "|grad|", "update/|w|");
    let names = model.param_names();
    for ((name, param), ratio) in names.iter().zip(model.params()).zip(&ratios) {
        let verdict = if name.ends_with(".bias") {
            "not judged (biases start at 0)"
        } else if *ratio < 1e-4 {
            problems += 1;
            "LOW (barely learning)"
        } else if *ratio > 1e-1 {
            problems += 1;
            "HIGH (unstable?)"
        } else {
            "ok (usual ~1e-3)"
        };
        println!(
            "  {:<10} {:>10.3e} {:>10.3e} {:>12.2e}  {verdict}",
            name,
            norm(param.value.iter().copied()),
            norm(param.grad.iter().copied()),
            ratio
        );
    }
    println!("\n  {:<4} {:<10} {:>10} {:>10} {:>8}", "#", "layer", "mean", "std", "zeros");
    for (i, layer) in model.layers().iter().enumerate() {
        let output = model.layer_output(i).expect("layer exists");
        let n = output.len() as f64;
        let mean = output.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (output.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let zeros = output.iter().filter(|&&v| v == 0.0).count() as f64 / n;
        let mut flag = if layer.kind() == "relu" && zeros > 0.9 { "  <- mostly dead ReLUs" } else { "" };
        if model.layers().get(i + 1).is_some_and(|next| next.kind() == "relu") {
            flag = "  (after the ReLU, which runs in place)";
        }
        println!("  {:<4} {:<10} {:>10.4} {:>10.4} {:>7.1}%{flag}", i, layer.kind(), mean, std, 100.0 * zeros);
    }
    Ok(problems)
}
