//! Save a model, load it back, and get the same predictions: the model file
//! carries the architecture, the class names and the input format.
//!
//!     cargo run --example save_and_load
use convnet::data::ColorMode;
use convnet::io::model_file::{load_model, save_model, ModelMeta};
use convnet::tensor::ndarray::{ArrayD, IxDyn};
use convnet::tensor::{Mode, ModelSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let classes = vec!["cat".to_string(), "dog".to_string(), "bird".to_string()];
    let meta = ModelMeta::new(ModelSpec::small(), classes, [28, 28], ColorMode::Grayscale);
    // a model with seeded (Glorot) weights stands in for a trained one
    let mut model = meta.architecture.build::<f32>(&meta.input_shape(), meta.class_names.len(), 7)?;
    let images = ArrayD::from_shape_fn(IxDyn(&[2, 1, 28, 28]), |i| ((i[0] * 5 + i[2] * 28 + i[3]) % 17) as f32 / 17.0);
    let before = model.forward(images.view(), Mode::Eval)?.to_owned();

    let path = std::env::temp_dir().join(format!("convnet-save-and-load-{}.safetensors", std::process::id()));
    save_model(&path, &model, &meta)?;
    println!("saved {} ({} bytes)", path.display(), std::fs::metadata(&path)?.len());

    let (mut loaded, loaded_meta) = load_model(&path)?;
    let after = loaded.forward(images.view(), Mode::Eval)?.to_owned();
    println!("classes: {:?}, input {:?}", loaded_meta.class_names, loaded_meta.input_shape());
    println!("logits before saving: {before:?}\nlogits after loading:  {after:?}");
    assert_eq!(before, after, "the same weights give the same logits, bit for bit");
    std::fs::remove_file(&path)?;
    Ok(())
}
