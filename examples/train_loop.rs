//! A minimal hand-written training loop on the library crates: load a folder
//! of images, build a model, then forward, loss, backward and an Adam step per
//! batch. Run it with
//!
//!     cargo run --release --example train_loop -- data/fashion-mnist/train
//!
//! and it writes `train_loop.safetensors`, a model file `convnet evaluate`,
//! `predict` and PyTorch's `load_state_dict` read as they are.
use convnet::data::batch::{BatchConfig, BatchStream};
use convnet::data::{load, ColorMode, DatasetOptions, DecodeOptions, InputFormat, PixelScale};
use convnet::io::model_file::{save_model, ModelMeta};
use convnet::optim::{Adam, Optimizer};
use convnet::tensor::{Mode, ModelSpec, SoftmaxCrossEntropy};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "data/fashion-mnist/train".into());
    // 1. Images: a folder per class, decoded once into memory as 28x28 greyscale.
    let options = DatasetOptions {
        decode: DecodeOptions::new(InputFormat::new([28, 28], ColorMode::Grayscale)),
        ..Default::default()
    };
    let loaded = load(dir.as_ref(), &options)?;
    print!("{}", loaded.report);
    let images = Arc::new(loaded.training);
    let classes = images.class_names().len();

    // 2. The model: the `small` preset, Glorot-initialised from seed 42.
    let mut model = ModelSpec::small().build::<f32>(&[1, 28, 28], classes, 42)?;
    let mut loss_fn = SoftmaxCrossEntropy::new();
    let mut adam = Adam::new(1e-3);

    // 3. The loop: batches of 32, reshuffled every epoch.
    let mut step = 0u64;
    for epoch in 0..3 {
        let config = BatchConfig {
            batch_size: 32,
            shuffle: true,
            seed: 42,
            epoch,
            scale: PixelScale::Unit,
            augment: None,
            first_batch: 0,
            shard: Default::default(), // the whole batch (see Shard for data-parallel parts)
        };
        let mut batches = BatchStream::new(images.clone(), config);
        let (mut total_loss, mut correct, mut seen) = (0.0, 0, 0);
        while let Some(batch) = batches.next_batch() {
            // forward: logits (N, classes)
            let logits = model.forward(batch.images.view(), Mode::train(step))?;
            // loss: softmax cross-entropy; its gradient (p - onehot) / N
            let loss = loss_fn.forward(logits, &batch.labels)?;
            // backward: every layer's parameter gradients
            model.backward(loss_fn.grad_logits().view())?;
            // update: one Adam step on every parameter
            adam.step(&mut model.params_mut())?;

            total_loss += loss as f64 * batch.labels.len() as f64;
            correct += loss_fn.correct(&batch.labels);
            seen += batch.labels.len();
            step += 1;
            batches.recycle(batch);
        }
        println!(
            "epoch {}: loss {:.4}, accuracy {:.4}",
            epoch + 1,
            total_loss / seen as f64,
            correct as f64 / seen as f64
        );
    }

    // 4. Save: the weights and all a model file needs to be used again.
    let meta = ModelMeta::new(ModelSpec::small(), images.class_names().to_vec(), [28, 28], ColorMode::Grayscale);
    save_model("train_loop.safetensors".as_ref(), &model, &meta)?;
    println!("Model written to train_loop.safetensors");
    Ok(())
}
