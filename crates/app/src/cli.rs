//! Command-line definitions (clap) and the small subcommands.

use crate::metrics::{predict_set, report};
use crate::model_io::{self, load_model, write_atomic, ModelMeta};
use crate::train::{self, TrainConfig};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use convnet_data::{ClassNames, ColorMode, DatasetOptions, ImageSet, Interpolation, PixelScale};
use convnet_tensor::gradcheck::{check_layer, check_model, GradCheckConfig};
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::{Mode, ModelSpec, Sequential};
use rand::Rng;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "convnet",
    version,
    about = "Train and run convolutional image classifiers on the CPU",
    long_about = "Train and run convolutional image classifiers on the CPU, with hand-written kernels.\n\n\
        Images live in a folder per class (train/cats/*.png, train/dogs/*.png ...).",
    after_help = "Examples:\n  \
        convnet train --train data/fashion-mnist/train --test data/fashion-mnist/test --model small --image-size 28 --color-mode grayscale --epochs 12\n  \
        convnet evaluate --model runs/quickstart/model.safetensors --data data/fashion-mnist/test\n  \
        convnet predict --model runs/quickstart/model.safetensors --images new_images/\n  \
        convnet summary --model baseline --image-size 224 --classes 8"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on a folder-per-class image tree
    #[command(after_help = "Examples:\n  \
        convnet train --train mammo/train --val mammo/test --epochs 15\n  \
        convnet train --train data/fashion-mnist/train --test data/fashion-mnist/test --model small --image-size 28 --color-mode grayscale --epochs 12 --validation-split 0.1\n  \
        convnet train --resume runs/mammo")]
    Train(Box<TrainArgs>),
    /// Evaluate a model on a labelled folder: loss, accuracy, confusion matrix, per-class metrics, kappa
    #[command(
        after_help = "Example:\n  convnet evaluate --model runs/mammo/best.safetensors --data mammo/test --json"
    )]
    Evaluate(EvaluateArgs),
    /// Predict the class of images (files or folders)
    #[command(
        after_help = "Example:\n  convnet predict --model runs/mammo/model.safetensors --images new/ extra.png --top-k 3 --csv predictions.csv"
    )]
    Predict(crate::predict::PredictArgs),
    /// Draw a grid of images titled "Pred: X | Real: Y" (green when right, red when wrong)
    #[command(
        after_help = "Example:\n  convnet show --model runs/mammo/model.safetensors --data mammo/test --rows 3 --cols 3 --out grid.png"
    )]
    Show(ShowArgs),
    /// Print a model's layers, output shapes, parameters, FLOPs and activation memory
    #[command(
        after_help = "Examples:\n  convnet summary --model baseline --image-size 224 --classes 8\n  convnet summary --model runs/mammo/model.safetensors"
    )]
    Summary(SummaryArgs),
    /// Check every layer's gradients numerically (f64 central differences)
    #[command(after_help = "Example:\n  convnet gradcheck --model baseline --image-size 32")]
    Gradcheck(GradcheckArgs),
    /// Write PNG grids of the first layer's filters and of each conv layer's feature maps
    #[command(
        after_help = "Example:\n  convnet inspect --model runs/quickstart/model.safetensors --image data/fashion-mnist/test/Bag/00078.png --out inspect/"
    )]
    Inspect(crate::inspect::InspectArgs),
    /// Measure training and inference throughput on synthetic data
    #[command(
        after_help = "Examples:\n  convnet bench --model baseline --image-size 224 --batch-size 32 --steps 5\n  convnet bench --per-layer --json\n  convnet bench --inference"
    )]
    Bench(crate::bench::BenchArgs),
    /// Convert an IDX image/label pair (MNIST, Fashion-MNIST, ...) into a folder-per-class PNG tree
    #[command(
        after_help = "Example:\n  convnet import-idx --images /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \\\n    --labels /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz --out fmnist/train --class-names fashion-mnist"
    )]
    ImportIdx(ImportIdxArgs),
    /// Sanity checks before a long run: dataset report, initial loss, overfitting a tiny subset, update ratios
    #[command(
        after_help = "Example:\n  convnet doctor --train data/fashion-mnist/train --test data/fashion-mnist/test --model small --image-size 28 --color-mode grayscale"
    )]
    Doctor(crate::doctor::DoctorArgs),
}

/// Options shared by every command that reads images for a new model.
#[derive(Args, Clone, Debug)]
pub struct ImageOptions {
    /// Image size: one number (square) or HEIGHTxWIDTH
    #[arg(long, default_value = "224", value_parser = parse_size)]
    pub image_size: [usize; 2],
    /// Colour mode of the network input
    #[arg(long, default_value = "rgb", value_parser = parse_color_mode)]
    pub color_mode: ColorMode,
}

pub fn parse_size(text: &str) -> Result<[usize; 2], String> {
    let parse =
        |s: &str| s.trim().parse::<usize>().map_err(|_| format!("`{text}` is not a size (e.g. 224 or 224x160)"));
    let size = match text.split_once(['x', 'X']) {
        Some((h, w)) => [parse(h)?, parse(w)?],
        None => [parse(text)?; 2],
    };
    if size.contains(&0) {
        return Err(format!("image size must be positive, got {text}"));
    }
    Ok(size)
}

fn parse_color_mode(text: &str) -> Result<ColorMode, String> {
    ColorMode::parse(text).ok_or_else(|| format!("`{text}`: expected rgb, grayscale or rgba"))
}

fn parse_interpolation(text: &str) -> Result<Interpolation, String> {
    Interpolation::parse(text).ok_or_else(|| format!("`{text}`: expected bilinear, nearest, area or lanczos3"))
}

fn parse_scale(text: &str) -> Result<PixelScale, String> {
    match text {
        "unit" | "0-1" => Ok(PixelScale::Unit),
        "raw" | "0-255" => Ok(PixelScale::Raw),
        _ => Err(format!("`{text}`: expected unit (0-1) or raw (0-255)")),
    }
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a positive whole number")),
    }
}

#[derive(Args)]
struct TrainArgs {
    /// Training images, one sub-folder per class
    #[arg(long, required_unless_present = "resume")]
    train: Option<PathBuf>,
    /// Validation images (same classes); or use --validation-split
    #[arg(long)]
    val: Option<PathBuf>,
    /// Hold out this fraction of --train for validation (deterministic from --seed)
    #[arg(long)]
    validation_split: Option<f64>,
    /// After training, evaluate on this folder, print the test accuracy and draw grid.png
    #[arg(long)]
    test: Option<PathBuf>,
    /// Architecture: baseline, small, or an architecture TOML file
    #[arg(long, default_value = "baseline")]
    model: String,
    #[arg(long, default_value_t = 15, value_parser = positive)]
    epochs: usize,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    batch_size: usize,
    #[command(flatten)]
    image: ImageOptions,
    /// Learning rate
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// adam (Keras defaults), adamw or sgd
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Decoupled weight decay for adamw
    #[arg(long, default_value_t = 0.004)]
    weight_decay: f64,
    /// Momentum for sgd
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Seed of initialisation, split, shuffling, augmentation and dropout
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Worker threads (default: all cores); results do not depend on it
    #[arg(long, value_parser = positive)]
    threads: Option<usize>,
    /// Output directory (default: runs/<model>-<seed>)
    #[arg(long)]
    out: Option<PathBuf>,
    /// `balanced`: weight each class by total / (classes * count)
    #[arg(long)]
    class_weight: Option<String>,
    /// Stop when val_loss has not improved for this many epochs
    #[arg(long, value_parser = positive)]
    early_stopping: Option<usize>,
    /// Multiply the learning rate by --lr-factor when val_loss has not improved for PATIENCE epochs
    #[arg(long, value_name = "PATIENCE", num_args = 0..=1, default_missing_value = "3", value_parser = positive)]
    reduce_lr_on_plateau: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    lr_factor: f64,
    /// Random flips, rotation, zoom, shift, brightness and contrast on training images
    #[arg(long)]
    augment: bool,
    /// Skip unreadable images (they are listed) instead of stopping
    #[arg(long)]
    skip_bad: bool,
    /// Keep the file order (no shuffling)
    #[arg(long)]
    no_shuffle: bool,
    /// Start from the weights of an earlier model file (fine-tuning)
    #[arg(long)]
    init_weights: Option<PathBuf>,
    /// Pixel scaling: unit (0-1, default) or raw (0-255, as the original Keras script)
    #[arg(long, default_value = "unit", value_parser = parse_scale)]
    pixel_scale: PixelScale,
    /// Resize filter: bilinear, nearest, area, lanczos3
    #[arg(long, default_value = "bilinear", value_parser = parse_interpolation)]
    interpolation: Interpolation,
    /// Centre-crop to the target aspect ratio before resizing
    #[arg(long)]
    crop_to_aspect_ratio: bool,
    /// Continue an interrupted run from its output directory (its saved configuration is used)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["train", "val", "validation_split", "model", "epochs", "out"])]
    resume: Option<PathBuf>,
}

#[derive(Args)]
struct EvaluateArgs {
    /// Model file (.safetensors written by convnet)
    #[arg(long)]
    model: PathBuf,
    /// Labelled images, one sub-folder per class
    #[arg(long)]
    data: PathBuf,
    /// Print one JSON object instead of tables
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    batch_size: usize,
    /// Where to write the confusion matrix picture (default: confusion.png beside the model)
    #[arg(long)]
    confusion_png: Option<PathBuf>,
    #[arg(long)]
    skip_bad: bool,
    #[arg(long, value_parser = positive)]
    threads: Option<usize>,
}

#[derive(Args)]
struct ShowArgs {
    #[arg(long)]
    model: PathBuf,
    /// Labelled images, one sub-folder per class
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 3, value_parser = positive)]
    rows: usize,
    #[arg(long, default_value_t = 3, value_parser = positive)]
    cols: usize,
    #[arg(long, default_value = "grid.png")]
    out: PathBuf,
    /// Seed of the random choice of images
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct SummaryArgs {
    /// baseline, small, an architecture TOML file, or a model file
    #[arg(long, default_value = "baseline")]
    model: String,
    #[command(flatten)]
    image: ImageOptions,
    #[arg(long, default_value_t = 8, value_parser = positive)]
    classes: usize,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    batch_size: usize,
}

#[derive(Args)]
struct GradcheckArgs {
    /// baseline, small, an architecture TOML file, or a model file
    #[arg(long, default_value = "baseline")]
    model: String,
    #[arg(long, default_value = "32", value_parser = parse_size)]
    image_size: [usize; 2],
    #[arg(long, default_value = "rgb", value_parser = parse_color_mode)]
    color_mode: ColorMode,
    #[arg(long, default_value_t = 8, value_parser = positive)]
    classes: usize,
    #[arg(long, default_value_t = 2, value_parser = positive)]
    batch_size: usize,
    /// Check at most this many elements per tensor (seeded sample of larger ones)
    #[arg(long, default_value_t = 24, value_parser = positive)]
    max_elements: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct ImportIdxArgs {
    /// IDX images file (optionally .gz)
    #[arg(long)]
    images: PathBuf,
    /// IDX labels file (optionally .gz)
    #[arg(long)]
    labels: PathBuf,
    /// Output directory (one sub-folder per class)
    #[arg(long)]
    out: PathBuf,
    /// Comma-separated class names by label, or `fashion-mnist` / `mnist`
    #[arg(long)]
    class_names: Option<String>,
    /// Write at most N images per class, chosen with --seed
    #[arg(long, value_parser = positive)]
    limit_per_class: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Bytes of RAM on this machine, from /proc/meminfo (None elsewhere).
fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses a batch whose activations (plus the two gradient buffers) cannot
/// fit in this machine's memory, before anything is allocated.
pub fn check_memory(model: &Sequential<f32>, batch_size: usize) -> Result<()> {
    let elements: Vec<usize> = model.shapes().iter().map(|s| s.iter().product::<usize>()).collect();
    let per_sample = elements.iter().sum::<usize>() + 2 * elements.iter().max().copied().unwrap_or(0);
    let needed = (batch_size as u64).saturating_mul(per_sample as u64).saturating_mul(4);
    if let Some(total) = total_memory() {
        if needed > total {
            bail!(
                "a batch of {batch_size} needs about {:.1} GB for activations and gradients, more than this machine's {:.1} GB: use a smaller --batch-size or --image-size",
                needed as f64 / 1e9,
                total as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// Sizes the global thread pool.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| anyhow!("cannot start {threads} threads: {e}"))?;
    }
    Ok(())
}

pub fn run() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return Ok(ExitCode::from(code));
        }
    };
    match cli.command {
        Command::Train(args) => run_train(*args),
        Command::Evaluate(args) => run_evaluate(args),
        Command::Predict(args) => crate::predict::run(args),
        Command::Show(args) => run_show(args),
        Command::Summary(args) => run_summary(args),
        Command::Gradcheck(args) => run_gradcheck(args),
        Command::Inspect(args) => crate::inspect::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::ImportIdx(args) => run_import_idx(args),
        Command::Doctor(args) => crate::doctor::run(args),
    }
}

fn run_train(args: TrainArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let (config, resume) = match &args.resume {
        Some(dir) => (train::read_config(dir)?, true),
        None => {
            let train_dir = args.train.clone().expect("clap requires --train without --resume");
            let out = args.out.clone().unwrap_or_else(|| {
                let stem = Path::new(&args.model)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into());
                PathBuf::from("runs").join(format!("{stem}-{}", args.seed))
            });
            let config = TrainConfig {
                train: train_dir,
                val: args.val.clone(),
                validation_split: args.validation_split,
                test: args.test.clone(),
                model: args.model.clone(),
                epochs: args.epochs,
                batch_size: args.batch_size,
                image_size: args.image.image_size,
                lr: args.lr,
                optimizer: args.optimizer.clone(),
                weight_decay: args.weight_decay,
                momentum: args.momentum,
                seed: args.seed,
                out,
                class_weight: args.class_weight.clone(),
                early_stopping: args.early_stopping,
                reduce_lr_on_plateau: args.reduce_lr_on_plateau,
                lr_factor: args.lr_factor,
                augment: args.augment,
                skip_bad: args.skip_bad,
                color_mode: args.image.color_mode,
                shuffle: !args.no_shuffle,
                init_weights: args.init_weights.clone(),
                pixel_scale: args.pixel_scale,
                interpolation: args.interpolation,
                crop_to_aspect_ratio: args.crop_to_aspect_ratio,
                architecture: None,
            };
            (config, false)
        }
    };
    let outcome = train::train(&config, resume)?;
    let files = &outcome.files;
    println!("\nModel written to {}", files.model().display());
    if files.best().exists() {
        println!("Best validation model: {}", files.best().display());
    }
    println!(
        "History: {}  Curves: {}  Checkpoint: {}",
        files.history().display(),
        files.curves().display(),
        files.checkpoint().display()
    );
    if let Some(test_dir) = &config.test {
        let mut model = outcome.model;
        let set = load_labelled(test_dir, &outcome.meta, false)?;
        let predictions = predict_set(&mut model, &set, config.batch_size, outcome.meta.pixel_scale)?;
        let result = report(predictions.loss, set.labels(), &predictions.predicted, set.class_names());
        println!(
            "\nTest ({}): loss {:.4} - accuracy {:.4} ({:.1}% of {} images)",
            test_dir.display(),
            result.loss,
            result.accuracy,
            100.0 * result.accuracy,
            set.len()
        );
        let grid = files.dir.join("grid.png");
        draw_grid(&set, &predictions.predicted, 3, 3, config.seed, &grid)?;
        println!("Prediction grid: {}", grid.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a labelled folder with the model's classes (mapped by name) and input format.
pub fn load_labelled(dir: &Path, meta: &ModelMeta, skip_bad: bool) -> Result<ImageSet> {
    let options = DatasetOptions {
        decode: meta.decode_options(),
        class_names: ClassNames::Explicit { names: meta.class_names.clone(), allow_missing: true },
        skip_bad,
        ..DatasetOptions::default()
    };
    let loaded = convnet_data::load(dir, &options)?;
    if !loaded.report.missing_classes.is_empty() || !loaded.report.skipped.is_empty() {
        eprint!("{}", loaded.report);
    }
    Ok(loaded.training)
}

fn run_evaluate(args: EvaluateArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let (mut model, meta) = load_model(&args.model)?;
    let set = load_labelled(&args.data, &meta, args.skip_bad)?;
    let predictions = predict_set(&mut model, &set, args.batch_size, meta.pixel_scale)?;
    let result = report(predictions.loss, set.labels(), &predictions.predicted, &meta.class_names);
    let png = args.confusion_png.clone().unwrap_or_else(|| args.model.with_file_name("confusion.png"));
    let mut bytes = Vec::new();
    result
        .confusion_png()
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| anyhow!("cannot encode the confusion matrix: {e}"))?;
    write_atomic(&png, &bytes)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", result.to_text());
        println!("\nConfusion matrix picture: {}", png.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws the "Pred: X | Real: Y" grid for a random choice of images.
pub fn draw_grid(set: &ImageSet, predicted: &[usize], rows: usize, cols: usize, seed: u64, out: &Path) -> Result<()> {
    use crate::render::{blit_chw, draw_rect, draw_text, text_width, GREEN, RED, WHITE};
    let count = (rows * cols).min(set.len());
    let mut chosen: Vec<usize> = (0..set.len()).collect();
    rand::seq::SliceRandom::shuffle(chosen.as_mut_slice(), &mut convnet_tensor::rng::rng_at(seed, 0x5A0));
    chosen.truncate(count);
    let [channels, height, width] = set.image_shape();
    let scale = (224 / height.max(width)).max(1) as u32;
    let names = set.class_names();
    let titles: Vec<String> =
        chosen.iter().map(|&i| format!("Pred: {} | Real: {}", names[predicted[i]], names[set.labels()[i]])).collect();
    let title_w = titles.iter().map(|t| text_width(t, 1)).max().unwrap_or(0) as usize;
    let cell_w = (width * scale as usize).max(title_w) + 16;
    let cell_h = height * scale as usize + 32;
    let mut canvas = image::RgbImage::from_pixel((cell_w * cols) as u32, (cell_h * rows) as u32, WHITE);
    for (slot, (&index, title)) in chosen.iter().zip(&titles).enumerate() {
        let (x, y) = ((slot % cols * cell_w) as i64, (slot / cols * cell_h) as i64);
        let color = if predicted[index] == set.labels()[index] { GREEN } else { RED };
        draw_text(&mut canvas, x + (cell_w as i64 - text_width(title, 1) as i64) / 2, y + 8, title, 1, color);
        let image_x = x + (cell_w - width * scale as usize) as i64 / 2;
        blit_chw(&mut canvas, set.image(index), [channels, height, width], image_x, y + 24, scale);
        draw_rect(
            &mut canvas,
            image_x - 2,
            y + 22,
            (width * scale as usize) as i64 + 4,
            (height * scale as usize) as i64 + 4,
            2,
            color,
        );
    }
    let mut bytes = Vec::new();
    canvas
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| anyhow!("cannot encode the grid: {e}"))?;
    write_atomic(out, &bytes)
}

fn run_show(args: ShowArgs) -> Result<ExitCode> {
    if args.rows > 20 || args.cols > 20 {
        bail!("--rows and --cols must be at most 20, got {}x{}", args.rows, args.cols);
    }
    let (mut model, meta) = load_model(&args.model)?;
    let set = load_labelled(&args.data, &meta, true)?;
    let predictions = predict_set(&mut model, &set, 32, meta.pixel_scale)?;
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

/// A model for `summary`/`gradcheck`/`bench`: a preset, a TOML file, or a model file.
pub fn model_for(
    name: &str,
    input: [usize; 3],
    classes: usize,
) -> Result<(ModelSpec, [usize; 3], usize, Option<PathBuf>)> {
    let path = Path::new(name);
    if path.extension().is_some_and(|e| e == "safetensors") {
        let file = model_io::read_tensor_file(path)?;
        let meta = model_io::parse_meta(&file.metadata)
            .with_context(|| format!("{}: not a convnet model file", path.display()))?;
        return Ok((meta.architecture.clone(), meta.input_shape(), meta.class_names.len(), Some(path.to_path_buf())));
    }
    Ok((train::resolve_architecture(name)?, input, classes, None))
}

fn run_summary(args: SummaryArgs) -> Result<ExitCode> {
    let input = [args.image.color_mode.channels(), args.image.image_size[0], args.image.image_size[1]];
    let (spec, input, classes, _) = model_for(&args.model, input, args.classes)?;
    let model = spec
        .build::<f32>(&input, classes, 0)
        .with_context(|| format!("{} cannot take {}x{}x{} inputs", args.model, input[1], input[2], input[0]))?;
    print!("{}", crate::summary::summary_table(&model, args.batch_size));
    Ok(ExitCode::SUCCESS)
}

fn run_gradcheck(args: GradcheckArgs) -> Result<ExitCode> {
    let input = [args.color_mode.channels(), args.image_size[0], args.image_size[1]];
    let (spec, input, classes, weights) = model_for(&args.model, input, args.classes)?;
    let mut model = spec
        .build::<f64>(&input, classes, args.seed)
        .with_context(|| format!("{} cannot take {}x{}x{} inputs", args.model, input[1], input[2], input[0]))?;
    if let Some(path) = &weights {
        let file = model_io::read_tensor_file(path)?;
        model_io::assign_params(&mut model, &file.tensors)
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
    // Each layer's real input, computed layer by layer out of place (inside the
    // model a ReLU overwrites its input, which would leave only its output).
    let mut inputs = vec![images.clone()];
    for (i, layer) in model.layers_mut().iter_mut().enumerate() {
        let shape: Vec<usize> = std::iter::once(args.batch_size)
            .chain(layer.output_shape(&inputs[i].shape()[1..]).map_err(|e| anyhow!(e))?)
            .collect();
        let mut output = ArrayD::zeros(IxDyn(&shape));
        layer.forward(inputs[i].view(), output.view_mut(), Mode::Train { seed: args.seed });
        inputs.push(output);
    }
    inputs.pop();
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

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST: [&str; 10] =
    ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"];

fn run_import_idx(args: ImportIdxArgs) -> Result<ExitCode> {
    let names: Option<Vec<String>> = args.class_names.as_deref().map(|text| match text {
        "fashion-mnist" => FASHION_MNIST.iter().map(|s| s.to_string()).collect(),
        "mnist" => (0..10).map(|d| d.to_string()).collect(),
        _ => text.split(',').map(|s| s.trim().to_string()).collect(),
    });
    let pair = convnet_data::idx::read_pair(&args.images, &args.labels)?;
    let export =
        convnet_data::idx::export_png_tree(&pair, &args.out, names.as_deref(), args.limit_per_class, args.seed)?;
    let total: usize = export.written.iter().sum();
    println!("Read {} images of {}x{} from {}", pair.count, pair.rows, pair.cols, args.images.display());
    println!("Wrote {total} PNG files in {} class folders under {}:", export.class_names.len(), args.out.display());
    for (name, count) in export.class_names.iter().zip(&export.written) {
        println!("  {name:<14} {count}");
    }
    Ok(ExitCode::SUCCESS)
}
