//! The layers: one file each, read top to bottom — the math and shapes, the
//! plain reference functions, then the [`crate::Layer`] implementation, whose
//! backward quotes the forward line it differentiates.
//!
//! | file | layer | forward | fast path in [`crate::kernels`] |
//! |---|---|---|---|
//! | [`conv2d`] | [`Conv2d`] | `y = W * im2col(x) + b` | `conv_tiled`, `im2col`, the GEMMs; `winograd/` ([`conv_algo`]: which, pass by pass) |
//! | [`maxpool2d`] | [`MaxPool2d`] | `y = max over each window` | `pool2x2` |
//! | [`relu`] | [`Relu`] | `y = max(x, 0)` | |
//! | [`dense`] | [`Dense`] | `y = x W^T + b` | `gemm`, `gemm_nt` |
//! | [`dropout`] | [`Dropout`] | `y = x * mask / (1 - p)` in training | |
//! | [`flatten`] | [`Flatten`] | `(N, C, H, W) -> (N, C*H*W)` | |
//! | [`softmax`] | [`Softmax`] | `y = exp(x) / sum(exp(x))` | |
//! | [`batchnorm`] | [`BatchNorm`] | `y = gamma (x - mean) / sqrt(var + eps) + beta` per channel | |
//! | [`global_avgpool`] | [`GlobalAvgPool2d`] | `y[n, c] = mean of x[n, c, :, :]` | |
//! | [`avgpool2d`] | [`AvgPool2d`] | `y = mean over each window` (PyTorch's divisor) | |
//! | [`normalize`] | [`Normalize`] | `y = (x - mean[c]) / std[c]` (a pretrained network's preprocessing) | |
//!
//! Blocks with branches (a residual add, a channel concatenation) hold small
//! models of their own, so they live with the model: [`crate::model::residual`]
//! and [`crate::model::concat`].
//!
//! The loss, softmax cross-entropy, is in [`crate::loss`].

pub mod avgpool2d;
pub mod batchnorm;
pub mod conv2d;
pub mod conv_algo;
pub mod dense;
pub mod dropout;
pub mod flatten;
pub mod global_avgpool;
pub mod maxpool2d;
pub mod normalize;
pub mod pool_window;
pub mod relu;
pub mod softmax;

pub use avgpool2d::AvgPool2d;
pub use batchnorm::BatchNorm;
pub use conv2d::Conv2d;
pub use conv_algo::{winograd_pays, ConvAlgo, ConvAlgoRule, ConvAlgoSpec, ConvAlgos, ConvPass};
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use global_avgpool::GlobalAvgPool2d;
pub use maxpool2d::MaxPool2d;
pub use normalize::Normalize;
pub use relu::Relu;
pub use softmax::Softmax;
