//! # convnet-tensor: the engine
//!
//! Tensors (on [`ndarray`]), layers with hand-written forward and backward
//! kernels, a loss, the [`Sequential`] model container and numerical gradient
//! checking ([`gradcheck`]).
//!
//! ## Where to read
//!
//! | to learn | read |
//! |---|---|
//! | what a layer computes, forward and backward, with every shape | [`layers`] — one file per layer: math, plain reference functions, then the [`Layer`] impl |
//! | the contract every layer (yours too) implements | [`layer`] |
//! | the loss and its famous gradient `softmax(z) - onehot(y)` | [`loss`] |
//! | how a model runs a batch through its layers and back | [`model::sequential`] |
//! | which layers fuse and share buffers, and why | [`model::plan`] |
//! | skip connections and branches: the gradient of an add and of a concatenation | [`model::residual`], [`model::concat`] |
//! | how presets and TOML files become a model; ResNet and SqueezeNet as data | [`model::spec`], [`model::presets`] |
//! | how processes sharing a batch get the whole batch's BatchNorm statistics | [`batch_sync`] |
//! | how a gradient is proven, not trusted | [`gradcheck`] |
//! | the one order a batch's gradient is summed in (same bits on any thread or process count) | [`gradient_tree`] |
//! | where the network looked (Grad-CAM) | [`explain`] |
//! | why it is fast: tiled im2col, Winograd F(4x4, 3x3), packed and dot-product GEMMs, 2x2 pooling | [`kernels`] — each kernel beside the reference it must equal |
//! | window sizes and padding, shared by convolution and pooling | [`geometry`] |
//! | one element type for f32 training and f64 checks | [`element`] |
//!
//! The math is in `layers/`, the speed in `kernels/`: a learner can read the
//! first without the second, and every kernel is tested equal to its plain twin.
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

#![deny(unsafe_op_in_unsafe_fn)]

pub mod batch_sync;
pub mod element;
pub mod error;
pub mod explain;
pub mod geometry;
pub mod gradcheck;
pub mod gradient_tree;
pub mod init;
pub mod kernels;
pub mod layer;
pub mod layers;
pub mod loss;
pub mod model;
pub mod rng;

pub use element::Element;
pub use error::{Result, TensorError};
pub use geometry::{Padding, WindowGeometry};
pub use layer::{KinkRecorder, Layer, Mode, Param, ParamMut, WeightAndBias};
pub use layers::{
    winograd_pays, AvgPool2d, BatchNorm, Conv2d, ConvAlgo, ConvAlgoRule, ConvAlgoSpec, ConvAlgos, ConvPass, Dense,
    Dropout, Flatten, GlobalAvgPool2d, MaxPool2d, Normalize, Relu, Softmax,
};
pub use loss::SoftmaxCrossEntropy;
pub use model::{Concat, LayerSpec, ModelSpec, Plan, Residual, Sequential};

pub use ndarray;
