//! The model: [`Sequential`] (layers in order and the buffers between them),
//! its execution [`plan`] (which layers fuse and share buffers), the blocks
//! with branches ([`residual`]: added, [`mod@concat`]: concatenated along
//! channels; each branch a small [`Sequential`]), and the architecture
//! [`spec`] that builds one from a preset or a TOML file.

mod activations;
mod branches;
pub mod concat;
pub mod plan;
pub mod presets;
pub mod residual;
pub mod sequential;
pub mod spec;

pub use concat::Concat;
pub use plan::Plan;
pub use residual::Residual;
pub use sequential::Sequential;
pub use spec::{LayerSpec, ModelSpec};
