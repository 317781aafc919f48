//! The model: [`Sequential`] (layers in order and the buffers between them),
//! its execution [`plan`] (which layers fuse and share buffers), and the
//! architecture [`spec`] that builds one from a preset or a TOML file.

pub mod plan;
pub mod sequential;
pub mod spec;

pub use plan::Plan;
pub use sequential::Sequential;
pub use spec::{LayerSpec, ModelSpec};
