//! # convnet-io: what a trained model leaves behind
//!
//! - [`model_file`]: model files — safetensors with the architecture, class
//!   names and input format in the metadata, loadable by PyTorch as they are,
//!   the same bytes for the same weights, written atomically.
//! - [`atomic`]: the atomic write every output file goes through (temporary
//!   file, fsync, rename; a full disk named as such).
//! - [`metrics`]: predictions over a data set (inference in batches) and the
//!   classification report (confusion matrix, precision, recall, F1, Cohen's
//!   kappa, ROC AUC).
//! - [`scoring`]: probabilities at prediction time: ensembles, test-time
//!   augmentation, the calibrated temperature.
//! - [`tensorboard`]: TensorBoard event files (record framing, CRC-32C, events).
//! - [`protobuf`]: the protobuf encoder behind the ONNX export and the event files.
//! - [`calibration`]: expected calibration error, Brier score, temperature scaling.
//! - [`onnx`]: export to ONNX (a hand-written protobuf encoder).
//! - [`onnx_import`]: import of ONNX CNNs (`torch.onnx.export`, `tf2onnx`, the
//!   model zoo), on a hand-written protobuf reader ([`onnx_proto`]), the
//!   graph's sorting ([`onnx_graph`]) and the window operators' geometry
//!   ([`onnx_window`]).
//! - [`keras`]: import of the seed's Keras models (`.keras` and legacy `.h5`).
//! - [`torchvision`]: torchvision ResNet tensor names, for `--init-weights`.
//!
//! ```
//! use convnet_io::model_file::{load_model, save_model, ModelMeta};
//! use convnet_tensor::ModelSpec;
//! let meta = ModelMeta::new(ModelSpec::small(), vec!["cat".into(), "dog".into()], [28, 28], convnet_data::ColorMode::Grayscale);
//! let model = meta.architecture.build::<f32>(&meta.input_shape(), 2, 7).unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("model.safetensors");
//! save_model(&path, &model, &meta).unwrap();
//! let (loaded, loaded_meta) = load_model(&path).unwrap();
//! assert_eq!(loaded_meta, meta);
//! assert_eq!(loaded.params()[0].value, model.params()[0].value);
//! ```

pub mod atomic;
pub mod calibration;
pub mod error;
pub mod keras;
pub mod metrics;
pub mod model_file;
pub mod onnx;
pub mod onnx_graph;
pub mod onnx_import;
pub mod onnx_proto;
pub mod onnx_window;
pub mod protobuf;
pub mod scoring;
pub mod tensorboard;
pub mod torchvision;

pub use error::{IoError, Result};
