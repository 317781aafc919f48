//! `convnet summary`: a Keras-style table of layers, output shapes and
//! parameters, plus FLOPs per image and activation memory per batch.

use convnet_data::error::human_bytes;
use convnet_tensor::{Concat, Residual, Sequential};
use std::fmt::Write;

fn shape_text(batch: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = std::iter::once(batch.to_string()).chain(shape.iter().map(|d| d.to_string())).collect();
    format!("({})", dims.join(", "))
}

/// One row of the table: a layer's number (its path inside blocks), kind,
/// options, output shape, parameters and forward FLOPs.
struct Row {
    number: String,
    kind: String,
    options: String,
    output: Vec<usize>,
    params: usize,
    flops: u64,
}

/// The rows of `model`, numbered `"{prefix}{index}"`; a block's own row is
/// followed by the rows of its branches (`3.body.0`, `3.shortcut.1`,
/// `5.branches.1.0`), indented by `depth`.
/// Layers of a frozen block, or the model's first `model.frozen()`, are
/// marked `(frozen)`.
fn rows(model: &Sequential<f32>, prefix: &str, depth: usize, frozen_block: bool, out: &mut Vec<Row>) {
    for (i, layer) in model.layers().iter().enumerate() {
        let number = format!("{prefix}{i}");
        let frozen = frozen_block || i < model.frozen();
        out.push(Row {
            number: format!("{}{number}", "  ".repeat(depth)),
            kind: if frozen { format!("{} (frozen)", layer.kind()) } else { layer.kind().to_string() },
            options: layer.describe(),
            output: model.shapes()[i + 1].clone(),
            params: layer.params().iter().map(|p| p.value.len()).sum(),
            flops: layer.forward_flops(&model.shapes()[i]),
        });
        let any = layer.as_any();
        if let Some(residual) = any.and_then(|a| a.downcast_ref::<Residual<f32>>()) {
            rows(residual.body(), &format!("{number}.body."), depth + 1, frozen, out);
            if let Some(shortcut) = residual.shortcut() {
                rows(shortcut, &format!("{number}.shortcut."), depth + 1, frozen, out);
            }
        } else if let Some(concat) = any.and_then(|a| a.downcast_ref::<Concat<f32>>()) {
            for (b, branch) in concat.branches().iter().enumerate() {
                rows(branch, &format!("{number}.branches.{b}."), depth + 1, frozen, out);
            }
        }
    }
}

/// The table, for a batch of `batch_size` run in passes of `micro_batch`
/// images (`None`: one pass): every layer, and inside each block its
/// branches' layers (indented; the block's row holds their totals).
pub fn summary_table(model: &Sequential<f32>, batch_size: usize, micro_batch: Option<usize>) -> String {
    let mut out = String::new();
    let mut table = Vec::new();
    rows(model, "", 0, false, &mut table);
    let options_width = table.iter().map(|row| row.options.len()).max().unwrap_or(0).max(44);
    let kind_width = table.iter().map(|row| row.kind.len()).max().unwrap_or(0).max(11);
    let number_width = table.iter().map(|row| row.number.len()).max().unwrap_or(0).max(5);
    let rule = "-".repeat(44 + number_width + kind_width + options_width);
    let _ = writeln!(out, "Model: {} layers, input {}", model.layers().len(), shape_text("N", model.input_shape()));
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "{:<number_width$} {:<kind_width$} {:<options_width$} {:<22} {:>10} {:>8}",
        "#", "Layer", "Options", "Output shape", "Param #", "MFLOPs"
    );
    let _ = writeln!(out, "{rule}");
    let mut total_flops = 0u64;
    for row in &table {
        if !row.number.starts_with(' ') {
            total_flops += row.flops;
        }
        let _ = writeln!(
            out,
            "{:<number_width$} {:<kind_width$} {:<options_width$} {:<22} {:>10} {:>8.1}",
            row.number,
            row.kind,
            row.options,
            shape_text("N", &row.output),
            row.params,
            row.flops as f64 / 1e6
        );
    }
    let _ = writeln!(out, "{rule}");
    let params = model.num_params();
    let _ = writeln!(out, "Total params: {params} ({})", human_bytes(params as u64 * 4));
    if model.frozen() > 0 {
        let trainable: usize = model.trainable_params().iter().map(|p| p.value.len()).sum();
        let _ = writeln!(
            out,
            "Trainable params: {trainable}; frozen: {} (layers 0-{}: no gradients, batchnorm in evaluation mode)",
            params - trainable,
            model.frozen() - 1
        );
    }
    let _ = writeln!(
        out,
        "Forward: {:.3} GFLOP per image; a training step (forward + backward) is {:.3} GFLOP per image",
        total_flops as f64 / 1e9,
        model.layer_flops().iter().map(|(forward, backward)| forward + backward).sum::<u64>() as f64 / 1e9
    );
    let per_pass = match micro_batch {
        Some(micro) if micro < batch_size => {
            format!("per micro-batch of {micro} (a batch of {batch_size} in {} passes)", batch_size.div_ceil(micro))
        }
        _ => format!("per batch of {batch_size}"),
    };
    let pass = micro_batch.unwrap_or(batch_size).min(batch_size);
    let _ = writeln!(
        out,
        "Activations and gradients: {} {per_pass} (f32, buffers shared where layers run in place)",
        human_bytes(model.buffer_bytes(pass))
    );
    let _ = writeln!(out, "{rule}");
    out
}
