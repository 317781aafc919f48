//! `convnet summary`: a Keras-style table of layers, output shapes and
//! parameters, plus FLOPs per image and activation memory per batch.

use convnet_data::error::human_bytes;
use convnet_tensor::Sequential;
use std::fmt::Write;

fn shape_text(batch: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = std::iter::once(batch.to_string()).chain(shape.iter().map(|d| d.to_string())).collect();
    format!("({})", dims.join(", "))
}

/// The table, for a batch of `batch_size`.
pub fn summary_table(model: &Sequential<f32>, batch_size: usize) -> String {
    let mut out = String::new();
    // 44 wide, wider when a convolution's passes run by different methods
    let options_width = model.layers().iter().map(|layer| layer.describe().len()).max().unwrap_or(0).max(44);
    // 11 wide, wider for a longer kind (global_avgpool2d)
    let kind_width = model.layers().iter().map(|layer| layer.kind().len()).max().unwrap_or(0).max(11);
    let rule = "-".repeat(49 + kind_width + options_width);
    let _ = writeln!(out, "Model: {} layers, input {}", model.layers().len(), shape_text("N", model.input_shape()));
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "{:<5} {:<kind_width$} {:<options_width$} {:<22} {:>10} {:>8}",
        "#", "Layer", "Options", "Output shape", "Param #", "MFLOPs"
    );
    let _ = writeln!(out, "{rule}");
    let mut total_flops = 0u64;
    for (i, layer) in model.layers().iter().enumerate() {
        let params: usize = layer.params().iter().map(|p| p.value.len()).sum();
        let flops = layer.forward_flops(&model.shapes()[i]);
        total_flops += flops;
        let _ = writeln!(
            out,
            "{:<5} {:<kind_width$} {:<options_width$} {:<22} {:>10} {:>8.1}",
            i,
            layer.kind(),
            layer.describe(),
            shape_text("N", &model.shapes()[i + 1]),
            params,
            flops as f64 / 1e6
        );
    }
    let _ = writeln!(out, "{rule}");
    let params = model.num_params();
    let _ = writeln!(out, "Total params: {params} ({})", human_bytes(params as u64 * 4));
    let _ = writeln!(
        out,
        "Forward: {:.3} GFLOP per image; a training step (forward + backward) is {:.3} GFLOP per image",
        total_flops as f64 / 1e9,
        model.layer_flops().iter().map(|(forward, backward)| forward + backward).sum::<u64>() as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "Activations and gradients: {} per batch of {batch_size} (f32, buffers shared where layers run in place)",
        human_bytes(model.buffer_bytes(batch_size))
    );
    let _ = writeln!(out, "{rule}");
    out
}
