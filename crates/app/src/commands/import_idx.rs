//! `convnet import-idx`: an IDX image/label pair (MNIST, Fashion-MNIST, ...)
//! into a folder-per-class PNG tree.

use crate::options::positive;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ImportIdxArgs {
    /// IDX images file (optionally .gz)
    #[arg(long)]
    pub images: PathBuf,
    /// IDX labels file (optionally .gz)
    #[arg(long)]
    pub labels: PathBuf,
    /// Output directory (one sub-folder per class)
    #[arg(long)]
    pub out: PathBuf,
    /// Comma-separated class names by label, or `fashion-mnist` / `mnist`
    #[arg(long)]
    pub class_names: Option<String>,
    /// Write at most N images per class, chosen with --seed
    #[arg(long, value_parser = positive)]
    pub limit_per_class: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST: [&str; 10] =
    ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"];

pub fn run(args: ImportIdxArgs) -> Result<ExitCode> {
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
