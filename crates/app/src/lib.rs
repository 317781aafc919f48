//! The `convnet` command's implementation, as a library so that tests can
//! reach it. The binary (`main.rs`) only calls [`cli::run`].
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | the clap tree and the dispatch, nothing else |
//! | [`commands`] | one file per subcommand: its flags and `run` |
//! | [`training`] | the fit loop: configuration, checkpoints, history, resume |
//! | [`options`] | argument types and parsers shared by several commands |
//! | [`inputs`] | architectures, model files and labelled folders as commands read them |
//! | [`preflight`] | machine checks before work starts (memory) |
//! | [`charts`] | the charts: curves, confusion matrix, ROC (plotters), and text labels |
//! | [`render`] | the other pictures: the prediction grid and feature maps |
//! | [`model_summary`] | the Keras-style layer table |
//!
//! Model files, ONNX export, Keras import and metrics are in the library crate `convnet-io`, the engine in
//! `convnet-tensor`, the data pipeline in `convnet-data`.

pub mod charts;
pub mod cli;
pub mod commands;
pub mod inputs;
pub mod model_summary;
pub mod options;
pub mod preflight;
pub mod render;
pub mod training;
