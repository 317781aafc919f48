//! The fast path: the kernels the layers run, slices in and slices out.
//!
//! Every kernel here has a plain twin it must equal, and a test that holds it
//! to that twin (in the kernel's own file, or in `tests/suite/kernels.rs` when the
//! twin is a layer's reference in [`crate::layers`]). Read the layer first for
//! the math; come here for why it runs at 90% of the machine's GEMM rate.
//!
//! | file | what | its twin |
//! |---|---|---|
//! | [`gemm`] | `C := alpha op(A) op(B) + beta C` through `matrixmultiply` | [`gemm::gemm_naive`] |
//! | [`gemm_nt`] | `C := A B^T + beta C` as blocks of dot products (AVX-512/AVX2) | [`gemm_nt::gemm_nt_naive`] |
//! | [`gemm_packed`] | `C := A B + beta C` with `A` packed once, AVX-512 micro-kernel | [`gemm::gemm_naive`] |
//! | [`im2col`] | the convolution's gather and its adjoint, col2im | [`im2col::im2col_naive`], [`im2col::col2im_naive`] |
//! | [`conv_tiled`] | the whole convolution, tiled, fused with bias and ReLU | `conv2d_forward_im2col`, `conv2d_forward_naive` in [`crate::layers::conv2d`] |
//! | [`conv_chain`] | inference: a convolution feeding a Winograd one band of rows at a time (+ ReLU, max-pool) | the layers one by one |
//! | [`conv_leaves`] | small maps: the weight gradient leaf by leaf, no per-image copies of `dW` | the per-image partials of [`conv_tiled`], bit for bit |
//! | [`conv_groups`] | small outputs: several images per GEMM (forward, input gradient); the bias and batchnorm epilogue | the same as [`conv_tiled`] |
//! | [`pool2x2`] | the 2x2 stride-2 max-pool body | `maxpool_naive` in [`crate::layers::maxpool2d`] |
//! | [`pool_separable`] | max-pooling of any window, stride and padding, rows then columns | `maxpool_naive` in [`crate::layers::maxpool2d`] |
//! | [`reduce`] | sums in a fixed order (reproducibility), the gradient tree of leaves | plain sums |
//! | [`winograd`] | F(4x4, 3x3): the arithmetic, plain (`mod.rs`), then the fast passes, tiles, plane transforms, point GEMM and AVX2 bodies, one file each | `conv2d_forward_naive`, `conv2d_backward_naive` |
//! | [`scratch`] | per-thread buffers reused across batches | |
//! | [`cpu`] | the one seam for instruction sets: features detected once, the `simd_variant!` dispatch pattern | |
//! | `x86_gemm_nt`, `x86_gemm_packed`, `winograd/x86` | the SIMD bodies, raw pointers, one per (ISA, type) | the generic kernels above |

pub mod conv_chain;
pub mod conv_groups;
pub mod conv_leaves;
pub(crate) mod conv_rows;
pub mod conv_tiled;
pub mod cpu;
pub mod gemm;
pub mod gemm_nt;
pub mod gemm_packed;
pub mod im2col;
pub(crate) mod parts;
pub mod pool2x2;
pub mod pool_separable;
pub mod reduce;
pub mod scratch;
#[cfg(test)]
pub(crate) mod testing;
pub mod winograd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_gemm_nt;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_gemm_packed;
