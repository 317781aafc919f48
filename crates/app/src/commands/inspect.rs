//! `convnet inspect`: what the network sees. Writes the first convolution's
//! filters and every convolution's feature maps for one image as PNG grids.

use crate::render::{blit_chw, draw_text, png_bytes, BLACK, WHITE};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use convnet_data::decode::decode_file;
use convnet_io::atomic::write_atomic;
use convnet_io::model_file::load_model;
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::Mode;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InspectArgs {
    /// Model file (.safetensors written by convnet)
    #[arg(long)]
    model: PathBuf,
    /// The image to look at
    #[arg(long)]
    image: PathBuf,
    /// Output directory for the PNG grids
    #[arg(long)]
    out: PathBuf,
}

/// Scales values to 0..=255 bytes (min-max over the slice).
fn normalize(values: &[f32]) -> Vec<u8> {
    let (low, high) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let range = (high - low).max(1e-12);
    values.iter().map(|&v| (255.0 * (v - low) / range).round() as u8).collect()
}

/// A grid of `tiles` (each `C x H x W` bytes) with a title.
fn grid(title: &str, tiles: &[Vec<u8>], shape: [usize; 3], scale: u32) -> image::RgbImage {
    let cols = (tiles.len() as f64).sqrt().ceil().max(1.0) as usize;
    let rows = tiles.len().div_ceil(cols);
    let (tile_w, tile_h) = (shape[2] * scale as usize + 4, shape[1] * scale as usize + 4);
    let width = (cols * tile_w).max(8 * title.len() + 8);
    let mut canvas = image::RgbImage::from_pixel(width as u32, (rows * tile_h + 20) as u32, WHITE);
    draw_text(&mut canvas, 4, 4, title, 1, BLACK);
    for (i, tile) in tiles.iter().enumerate() {
        blit_chw(&mut canvas, tile, shape, ((i % cols) * tile_w + 2) as i64, ((i / cols) * tile_h + 22) as i64, scale);
    }
    canvas
}

fn save(path: &std::path::Path, image: &image::RgbImage) -> Result<()> {
    Ok(write_atomic(path, &png_bytes(image)?)?)
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let (mut model, meta) = load_model(&args.model)?;
    let decode = meta.decode_options();
    let mut bytes = vec![0u8; decode.image_len()];
    decode_file(&args.image, &decode, &mut bytes)?;
    let [c, h, w] = meta.input_shape();
    let mut inputs = vec![0.0f32; c * h * w];
    meta.input.to_inputs(&bytes, &mut inputs);
    let input = ArrayD::from_shape_vec(IxDyn(&[1, c, h, w]), inputs).map_err(|e| anyhow!("{e}"))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let logits = model.forward(input.view(), Mode::Eval)?.to_owned();
    let mut written = Vec::new();
    // first convolution's filters: (OC, C, KH, KW); RGB when C = 3, one tile per channel otherwise
    if let Some((index, layer)) = model.layers().iter().enumerate().find(|(_, l)| l.kind() == "conv2d") {
        let params = layer.params();
        let weight = params[0].value;
        let [out_channels, in_channels, kh, kw] =
            [weight.shape()[0], weight.shape()[1], weight.shape()[2], weight.shape()[3]];
        let per_filter = in_channels * kh * kw;
        let values = weight.as_slice().expect("contiguous");
        let (tiles, shape): (Vec<Vec<u8>>, [usize; 3]) = if in_channels == 3 {
            (values.chunks(per_filter).map(normalize).collect(), [3, kh, kw])
        } else {
            (values.chunks(kh * kw).map(normalize).collect(), [1, kh, kw])
        };
        let scale = (48 / kh.max(kw)).max(1) as u32;
        let path = args.out.join(format!("filters_layer{index}.png"));
        save(
            &path,
            &grid(&format!("layer {index}: {out_channels} filters {kh}x{kw}x{in_channels}"), &tiles, shape, scale),
        )?;
        written.push(path);
    }
    // feature maps after each convolution or block (a residual or concat block:
    // its output is the sum or stack of its branches), after its ReLU when one follows
    for index in 0..model.layers().len() {
        if !matches!(model.layers()[index].kind(), "conv2d" | "residual" | "concat") {
            continue;
        }
        let shown = if model.layers().get(index + 1).is_some_and(|l| l.kind() == "relu") { index + 1 } else { index };
        let maps = model.layer_output(shown).expect("layer exists");
        let (channels, mh, mw) = (maps.shape()[1], maps.shape()[2], maps.shape()[3]);
        let values = maps.as_slice().expect("contiguous");
        let tiles: Vec<Vec<u8>> = values.chunks(mh * mw).map(normalize).collect();
        let scale = (96 / mh.max(mw)).max(1) as u32;
        let path = args.out.join(format!("features_layer{index}.png"));
        let title = format!("layer {index} feature maps: {channels} x {mh}x{mw}");
        save(&path, &grid(&title, &tiles, [1, mh, mw], scale))?;
        written.push(path);
    }
    let row = logits.as_slice().expect("contiguous");
    let mut probs = vec![0.0; row.len()];
    convnet_tensor::layers::softmax::softmax_row(row, &mut probs);
    let best = convnet_tensor::loss::argmax(&probs);
    println!("{}: predicted {} ({:.3})", args.image.display(), meta.class_names[best], probs[best]);
    for path in written {
        println!("Wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
