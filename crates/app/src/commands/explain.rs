//! `convnet explain`: Grad-CAM maps — where in each image the network looked
//! for the predicted class (or `--class`) — overlaid on the image.

use crate::charts::{label, label_width};
use crate::inputs::collect_images;
use crate::options::positive;
use crate::render::{blit_chw, png_bytes, BLACK, WHITE};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use convnet_data::decode::{decode_file, source_view, DecodeOptions};
use convnet_io::atomic::write_atomic;
use convnet_io::model_file::load_model_as;
use convnet_tensor::explain::{default_activation, grad_cam, upsample};
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use image::imageops::FilterType;
use image::RgbImage;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct ExplainArgs {
    /// Model file (.safetensors written by convnet)
    #[arg(long)]
    pub model: PathBuf,
    /// Image files and folders (searched recursively)
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// Where to write the pictures (one PNG per image)
    #[arg(long)]
    pub out: PathBuf,
    /// Explain this class instead of the predicted one
    #[arg(long)]
    pub class: Option<String>,
    /// The layer whose output to explain (default: the last convolution, after its ReLU)
    #[arg(long)]
    pub layer: Option<usize>,
    /// Print one JSON array with an object per image
    #[arg(long)]
    pub json: bool,
    /// Smallest side of the pictures, in pixels (small inputs are enlarged)
    #[arg(long, default_value_t = 224, value_parser = positive)]
    pub size: usize,
}

/// An RGB colour for `value` in [0, 1]: dark blue, cyan, yellow, red (a
/// "jet"-like ramp, readable over grey images).
fn heat(value: f64) -> [f64; 3] {
    let v = value.clamp(0.0, 1.0);
    let ramp = |centre: f64| (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// What a map is drawn on: the network's input enlarged `scale` times, or,
/// when the input is a window of the source image (`--crop content`, an
/// aspect or centre crop), the whole source with the map over that window.
struct Backdrop {
    /// `C x H x W` bytes, shown one to one.
    pixels: Vec<u8>,
    shape: [usize; 3],
    /// Where the input is, `[top, left, height, width]` in backdrop pixels.
    window: [usize; 4],
}

/// The [`Backdrop`] of `file`, whose decoded input is `input` (8-bit).
fn backdrop(file: &Path, decode: &DecodeOptions, input: &[u8], scale: usize) -> Result<Backdrop> {
    let format = &decode.format;
    let [channels, height, width] = format.input_shape();
    let (shown_h, shown_w) = (height * scale, width * scale);
    if !(format.crop_content || format.crop_to_aspect_ratio || format.resize_shorter.is_some()) {
        let mut canvas = RgbImage::new(shown_w as u32, shown_h as u32);
        blit_chw(&mut canvas, input, [channels, height, width], 0, 0, scale as u32);
        let pixels = (0..3).flat_map(|c| canvas.pixels().map(move |p| p[c]).collect::<Vec<_>>()).collect();
        return Ok(Backdrop { pixels, shape: [3, shown_h, shown_w], window: [0, 0, shown_h, shown_w] });
    }
    let (source, window) = source_view(file, decode)?;
    // the source at the scale the input window is shown at, at most 2048 px a side
    let (mut sy, mut sx) = (shown_h as f64 / window.height, shown_w as f64 / window.width);
    let shrink = (2048.0 / (source.height() as f64 * sy).max(source.width() as f64 * sx)).min(1.0);
    (sy, sx) = (sy * shrink, sx * shrink);
    let size = |pixels: u32, scale: f64| (pixels as f64 * scale).round().max(1.0) as u32;
    let resized = source.resize_exact(size(source.width(), sx), size(source.height(), sy), FilterType::Triangle);
    let rgb = resized.to_rgb8();
    let (h, w) = (rgb.height() as usize, rgb.width() as usize);
    let pixels = (0..3).flat_map(|c| rgb.pixels().map(move |p| p[c]).collect::<Vec<_>>()).collect();
    let at = |value: f64, limit: usize| (value.round().max(0.0) as usize).min(limit.saturating_sub(1));
    let (top, left) = (at(window.top * sy, h), at(window.left * sx, w));
    let (window_h, window_w) = (at(window.height * sy, h + 1).max(1), at(window.width * sx, w + 1).max(1));
    Ok(Backdrop { pixels, shape: [3, h, w], window: [top, left, window_h.min(h - top), window_w.min(w - left)] })
}

/// The picture of one map: the backdrop, the map `shown` (the window's size)
/// over its window (half transparent, relative to `peak_value`), and `title`
/// above.
fn overlay_picture(backdrop: &Backdrop, shown: &[f64], peak_value: f64, title: &str) -> Result<RgbImage> {
    let title_h = 24usize;
    let [_, height, width] = backdrop.shape;
    let [top, left, window_h, window_w] = backdrop.window;
    let mut picture = RgbImage::from_pixel(width.max(200) as u32, (height + title_h) as u32, WHITE);
    blit_chw(&mut picture, &backdrop.pixels, backdrop.shape, 0, title_h as i64, 1);
    for y in 0..window_h {
        for x in 0..window_w {
            let value = if peak_value > 0.0 { shown[y * window_w + x] / peak_value } else { 0.0 };
            let colour = heat(value);
            let pixel = picture.get_pixel_mut((left + x) as u32, (top + y + title_h) as u32);
            let alpha = 0.5 * value.sqrt();
            for c in 0..3 {
                pixel[c] = ((1.0 - alpha) * pixel[c] as f64 + alpha * 255.0 * colour[c]).round() as u8;
            }
        }
    }
    let x = (picture.width() as i32 - label_width(title, 15) as i32).max(0) / 2;
    label(&mut picture, x, 5, title, 15, BLACK)?;
    Ok(picture)
}

pub fn run(args: ExplainArgs) -> Result<ExitCode> {
    // Grad-CAM in f64: the gradient is checked against finite differences in f64
    let (mut model, meta) = load_model_as::<f64>(&args.model)?;
    let class =
        match &args.class {
            Some(name) => Some(meta.class_names.iter().position(|n| n == name).ok_or_else(|| {
                anyhow!("--class {name}: not a class of this model ({})", meta.class_names.join(", "))
            })?),
            None => None,
        };
    let activation = match args.layer {
        Some(layer) => layer.checked_add(1).ok_or_else(|| anyhow!("--layer {layer}: no such layer"))?,
        None => default_activation(&model).ok_or_else(|| anyhow!("the model has no convolution to explain"))?,
    };
    let layers = model.layers().len();
    if activation > layers {
        bail!("--layer {}: the model has {layers} layers (0 to {})", activation - 1, layers - 1);
    }
    if model.shapes()[activation].len() != 3 {
        let shape: Vec<String> = model.shapes()[activation].iter().map(|d| d.to_string()).collect();
        bail!(
            "--layer {} ({}) outputs ({}), not feature maps (channels, height, width); choose a convolution",
            activation - 1,
            model.layers()[activation - 1].kind(),
            shape.join(", ")
        );
    }
    let mut files = Vec::new();
    for path in &args.images {
        collect_images(path, &mut files)?;
    }
    if files.is_empty() {
        bail!(
            "no images found in {}",
            args.images.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let decode = meta.decode_options();
    let [channels, height, width] = meta.input_shape();
    let scale = args.size.div_ceil(height.min(width)).max(1);
    let mut records = Vec::new();
    let mut failures = 0;
    for file in &files {
        let mut bytes = vec![0u8; decode.image_len()];
        if let Err(error) = decode_file(file, &decode, &mut bytes) {
            eprintln!("{error}");
            failures += 1;
            continue;
        }
        let mut inputs = vec![0.0f32; channels * height * width];
        meta.input.to_inputs(&bytes, &mut inputs);
        let input = ArrayD::from_shape_fn(IxDyn(&[1, channels, height, width]), |i| {
            inputs[(i[1] * height + i[2]) * width + i[3]] as f64
        });
        let cam = grad_cam(&mut model, input.view(), class, activation)?;
        let predicted = convnet_tensor::loss::argmax(&cam.probabilities);
        let peak_value = cam.map.iter().copied().fold(0.0, f64::max);
        // the map at the input's resolution: its peak in input pixels
        let at_input = upsample(&cam.map, cam.map_shape, [height, width]);
        let peak = at_input.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        let display = meta.input.bit_depth.to_display(&bytes);
        let backdrop = backdrop(file, &decode, &display, scale)?;
        let shown = upsample(&cam.map, cam.map_shape, [backdrop.window[2], backdrop.window[3]]);
        let explained = cam.class;
        let title = if explained == predicted {
            format!("Pred: {} ({:.2})", meta.class_names[predicted], cam.probabilities[predicted])
        } else {
            format!(
                "{} ({:.2}), pred {}",
                meta.class_names[explained], cam.probabilities[explained], meta.class_names[predicted]
            )
        };
        let picture = overlay_picture(&backdrop, &shown, peak_value, &title)?;
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let out = args.out.join(format!("{stem}.gradcam.png"));
        write_atomic(&out, &png_bytes(&picture)?)?;
        if !args.json {
            println!("{}: {title} -> {}", file.display(), out.display());
        }
        records.push(json!({
            "file": file,
            "predicted": meta.class_names[predicted],
            "probability": cam.probabilities[predicted],
            "class": meta.class_names[explained],
            "class_probability": cam.probabilities[explained],
            "peak": [peak % width, peak / width],
            "map": out,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string(&records)?);
    }
    Ok(if failures > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
