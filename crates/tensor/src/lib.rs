//! # convnet-tensor: the engine
//!
//! Tensors (on [`ndarray`]), layers with hand-written forward and backward
//! kernels, a loss, the [`Sequential`] model container and numerical gradient
//! checking ([`gradcheck`]).
//!
//! ## Memory layout, used everywhere
//!
//! The same conventions as PyTorch, so weights move between the two unchanged:
//!
//! | tensor | shape | meaning |
//! |---|---|---|
//! | image activations | `(N, C, H, W)` | batch, channels, rows, columns; row-major ("NCHW") |
//! | flat activations | `(N, F)` | after [`Flatten`], `F = C*H*W` in C, H, W order |
//! | conv weight | `(out_channels, in_channels, kh, kw)` | |
//! | conv bias | `(out_channels,)` | |
//! | dense weight | `(out_features, in_features)` | `y = x W^T + b` |
//! | dense bias | `(out_features,)` | |
//! | logits / probabilities | `(N, classes)` | |
//!
//! Every buffer is contiguous and row-major, so a kernel can walk it as a flat
//! slice: element `(n, c, h, w)` of an `(N, C, H, W)` tensor is at
//! `((n * C + c) * H + h) * W + w`.
//!
//! ## Element types
//!
//! Every kernel is generic over [`Element`], implemented for `f32` (training) and
//! `f64` (gradient checks), so the checks run the very code that trains.
//!
//! ## Parallelism and reproducibility
//!
//! Layers split the batch across `rayon`'s threads, one image per task. Nothing
//! is ever summed in an order that depends on the number of threads: per-image
//! weight gradients are reduced in image order, and random numbers (dropout) are
//! drawn from a generator seeded by (step, layer, image). A seed therefore fixes a
//! run bit for bit on 1 or 64 threads.

pub mod conv;
pub mod dense;
pub mod dropout;
pub mod element;
pub mod error;
pub mod flatten;
pub mod gemm;
pub mod gemm_nt;
pub mod gemm_packed;
pub mod gradcheck;
pub mod init;
pub mod layer;
pub mod loss;
pub mod maxpool;
pub mod model;
pub mod padding;
pub mod relu;
pub mod rng;
pub mod scratch;
pub mod softmax;
pub mod spec;

pub use conv::Conv2d;
pub use dense::Dense;
pub use dropout::Dropout;
pub use element::Element;
pub use error::{Result, TensorError};
pub use flatten::Flatten;
pub use layer::{KinkRecorder, Layer, Mode, Param, ParamMut};
pub use loss::SoftmaxCrossEntropy;
pub use maxpool::MaxPool2d;
pub use model::Sequential;
pub use padding::Padding;
pub use relu::Relu;
pub use softmax::Softmax;
pub use spec::{LayerSpec, ModelSpec};

pub use ndarray;
