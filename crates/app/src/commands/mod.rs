//! One file per subcommand: its flags (`XArgs`, parsed by clap) and `run`.

pub mod bench;
pub mod calibrate;
pub mod cv;
pub mod doctor;
pub mod evaluate;
pub mod explain;
pub mod export;
pub mod gradcheck;
pub mod import_idx;
pub mod import_keras;
pub mod import_onnx;
pub mod import_torch;
pub mod inspect;
pub mod predict;
pub mod preprocess;
pub mod show;
pub mod summary;
pub mod train;
