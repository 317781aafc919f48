//! Dense (fully connected) layer.
//!
//! ## Math and shapes
//!
//! ```text
//! y = x W^T + b        x: (N, in)   W: (out, in)   b: (out,)   y: (N, out)
//! y[n, o] = b[o] + sum_i W[o, i] * x[n, i]
//! ```
//!
//! The weight layout `(out, in)` is PyTorch's `nn.Linear` (Keras stores the
//! transpose, `(in, out)`).
//!
//! ## Backward
//!
//! In the forward pass this was `y[n, o] += W[o, i] * x[n, i]`, so
//!
//! - `dW[o, i] += dy[n, o] * x[n, i]`, i.e. `dW = dY^T X` `(out, in)`,
//! - `dx[n, i] += dy[n, o] * W[o, i]`, i.e. `dX = dY W` `(N, in)`,
//! - `db[o] += dy[n, o]`, summed over the batch.
//!
//! Each is a GEMM over the whole batch, split across threads in blocks of
//! output rows: the forward `X W^T` through `gemm_nt`'s dot-product kernel
//! (rows of `X` and of `W` both lie contiguous along `in`), `dW` and `dX`
//! through `gemm` (`matrixmultiply`). A block split only decides which thread
//! computes an element, never the order of the sum over `n` or `i` that makes
//! it, so the result is independent of the thread count. The plain twins are
//! [`dense_forward_naive`] and [`dense_backward_naive`] at the end of this file.
//!
//! ```
//! use convnet_tensor::{Dense, Layer, Mode};
//! use convnet_tensor::ndarray::{array, Array2};
//! let mut dense = Dense::<f64>::new(2, 2).unwrap();
//! dense.weight_mut().assign(&array![[1.0, 2.0], [3.0, 4.0]].into_dyn());
//! dense.bias_mut().assign(&array![0.5, -0.5].into_dyn());
//! let x = array![[1.0, 1.0]].into_dyn();
//! let mut y = Array2::<f64>::zeros((1, 2)).into_dyn();
//! dense.forward(x.view(), y.view_mut(), Mode::Eval);
//! assert_eq!(y, array![[3.5, 6.5]].into_dyn()); // [1+2+0.5, 3+4-0.5]
//! ```

use crate::element::Element;
use crate::gradient_tree::{effective_leaves, tree_sum, LeafPart};
use crate::kernels::gemm::{gemm, gemm_naive, Trans};
use crate::kernels::gemm_nt::gemm_nt;
use crate::layer::{expect_rank, slice, slice_mut, Layer, Mode, Param, ParamMut, WeightAndBias};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;

/// Rows of `y` (samples) per parallel task in the forward GEMM. (The backward
/// GEMMs take one block per thread, so each packs its shared operand once.)
const ROWS_PER_TASK: usize = 8;

/// Plain twin of the dense forward: `y = x W^T + b` by direct loops.
pub fn dense_forward_naive<T: Element>(
    batch: usize,
    fan_in: usize,
    fan_out: usize,
    x: &[T],
    w: &[T],
    b: &[T],
    y: &mut [T],
) {
    for n in 0..batch {
        for o in 0..fan_out {
            let mut sum = b[o];
            for i in 0..fan_in {
                sum += w[o * fan_in + i] * x[n * fan_in + i];
            }
            y[n * fan_out + o] = sum;
        }
    }
}

/// Plain twin of the dense backward.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward_naive<T: Element>(
    batch: usize,
    fan_in: usize,
    fan_out: usize,
    x: &[T],
    w: &[T],
    dy: &[T],
    dw: &mut [T],
    db: &mut [T],
    dx: &mut [T],
) {
    // The naive GEMM twin spelled as the three products of the module docs.
    gemm_naive(Trans::Yes, Trans::No, fan_out, fan_in, batch, T::one(), dy, fan_out, x, fan_in, T::zero(), dw, fan_in);
    gemm_naive(Trans::No, Trans::No, batch, fan_in, fan_out, T::one(), dy, fan_out, w, fan_in, T::zero(), dx, fan_in);
    db.fill(T::zero());
    for n in 0..batch {
        for o in 0..fan_out {
            db[o] += dy[n * fan_out + o];
        }
    }
}

/// A fully connected layer `y = x W^T + b`.
#[derive(Debug)]
pub struct Dense<T: Element> {
    in_features: usize,
    out_features: usize,
    /// Weight `(out, in)`, bias `(out,)` and their gradients.
    tensors: WeightAndBias<T>,
    /// Leaves of the batch's gradient sum ([`crate::kernels::reduce`]).
    gradient_leaves: usize,
    /// Weight gradients of leaves 1.. `(leaves - 1, out, in)`, reused.
    leaf_grads: Vec<T>,
    /// Which part of a gradient leaf the next backward pass is (micro-batches).
    leaf_part: LeafPart,
    /// The inputs `(rows, in)` and output gradients `(rows, out)` of the
    /// leaf's parts so far (reused from leaf to leaf).
    leaf_rows: (Vec<T>, Vec<T>),
}

impl<T: Element> Dense<T> {
    /// A dense layer with zero weights.
    pub fn new(in_features: usize, out_features: usize) -> crate::error::Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(crate::error::TensorError::Config(format!(
                "dense needs positive sizes, got {in_features} -> {out_features}"
            )));
        }
        Ok(Dense {
            in_features,
            out_features,
            tensors: WeightAndBias::zeros(&[out_features, in_features], out_features),
            gradient_leaves: 1,
            leaf_grads: Vec::new(),
            leaf_part: LeafPart::WHOLE,
            leaf_rows: (Vec::new(), Vec::new()),
        })
    }

    /// The same layer without a bias (PyTorch's `bias=False`): see
    /// [`WeightAndBias::has_bias`].
    pub fn without_bias(mut self) -> Self {
        self.tensors.has_bias = false;
        self
    }

    /// Mutable weights and, if the layer has one, bias (see
    /// [`WeightAndBias::parameters_mut`]).
    pub fn weight_and_bias_mut(&mut self) -> (&mut ArrayD<T>, Option<&mut ArrayD<T>>) {
        self.tensors.parameters_mut()
    }

    /// Mutable weights `(out, in)`.
    pub fn weight_mut(&mut self) -> &mut ArrayD<T> {
        &mut self.tensors.weight
    }

    /// Mutable bias `(out,)`.
    pub fn bias_mut(&mut self) -> &mut ArrayD<T> {
        &mut self.tensors.bias
    }
}

/// Dense's weight and bias gradients.
impl<T: Element> Dense<T> {
    /// `dW := dY^T X`, `db := sum_n dY[n]` over `batch` rows of `input`
    /// `(batch, in)` and `dy` `(batch, out)`, as the gradient tree's leaves.
    fn weight_and_bias_grads(&mut self, input: &[T], dy: &[T], batch: usize) {
        let (fan_in, fan_out) = (self.in_features, self.out_features);
        // dW (out, in) = dY^T (out, N) * X (N, in): one GEMM per leaf of the batch
        // (leaf l: images l*B/L .. (l+1)*B/L, summed in order inside the GEMM), the
        // leaves then added as a balanced tree (kernels::reduce), so processes that
        // split the batch reproduce these bits; one leaf is the plain product
        let leaves = effective_leaves(batch, self.gradient_leaves);
        let per_leaf = batch / leaves;
        let weight_len = fan_out * fan_in;
        self.leaf_grads.resize((leaves - 1) * weight_len, T::zero());
        let grad_weight = self.tensors.grad_weight.as_slice_mut().expect("contiguous");
        let mut leaf_targets: Vec<&mut [T]> =
            std::iter::once(grad_weight).chain(self.leaf_grads.chunks_mut(weight_len.max(1))).collect();
        for (leaf, target) in leaf_targets.iter_mut().enumerate() {
            let (dy_leaf, x_leaf) = (&dy[leaf * per_leaf * fan_out..], &input[leaf * per_leaf * fan_in..]);
            // split across threads in blocks of rows of dW (each element is summed
            // over the leaf the same way in any block, so the split changes no
            // result); one block per thread: each block packs the leaf's X once
            let rows_per_task = fan_out.div_ceil(rayon::current_num_threads()).max(1);
            target.par_chunks_mut(rows_per_task * fan_in).enumerate().for_each(|(block, grad_weight_rows)| {
                let rows = grad_weight_rows.len() / fan_in;
                gemm(
                    Trans::Yes,
                    Trans::No,
                    rows,
                    fan_in,
                    per_leaf,
                    T::one(),
                    &dy_leaf[block * rows_per_task..],
                    fan_out,
                    x_leaf,
                    fan_in,
                    T::zero(),
                    grad_weight_rows,
                    fan_in,
                );
            });
        }
        tree_sum(&mut leaf_targets);
        // db[o] = sum_n dy[n, o]: in order inside each leaf, leaves as a tree
        let mut bias_leaves = vec![T::zero(); leaves * fan_out];
        for (leaf, sums) in bias_leaves.chunks_mut(fan_out).enumerate() {
            for row in dy[leaf * per_leaf * fan_out..(leaf + 1) * per_leaf * fan_out].chunks(fan_out) {
                for (db, &value) in sums.iter_mut().zip(row) {
                    *db += value;
                }
            }
        }
        let mut bias_items: Vec<&mut [T]> = bias_leaves.chunks_mut(fan_out).collect();
        tree_sum(&mut bias_items);
        self.tensors.grad_bias.as_slice_mut().expect("contiguous").copy_from_slice(&bias_leaves[..fan_out]);
    }
}

impl<T: Element> Layer<T> for Dense<T> {
    fn kind(&self) -> &'static str {
        "dense"
    }

    fn describe(&self) -> String {
        format!("{} units{}", self.out_features, if self.tensors.has_bias { "" } else { ", no bias" })
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        expect_rank(input_shape, 1, "a flat (features,)")
            .map_err(|message| format!("{message}; put a flatten layer before it"))?;
        if input_shape[0] != self.in_features {
            return Err(format!("expects {} input features, got {}", self.in_features, input_shape[0]));
        }
        Ok(vec![self.out_features])
    }

    fn forward_flops(&self, _input_shape: &[usize]) -> u64 {
        2 * (self.in_features * self.out_features) as u64
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        let (fan_in, fan_out) = (self.in_features, self.out_features);
        let output = slice_mut(&mut output);
        let weight = self.tensors.weight.as_slice().expect("contiguous");
        // y (N, out) = x (N, in) * W^T (in, out). Rows of x and of W are both
        // contiguous along `in`, the long reduction: gemm_nt's dot-product kernel
        // reads them as they lie (a packed GEMM would gather W^T with a stride of
        // `in`). The batch is split across threads in blocks of rows of y; one
        // image (a `predict` of one) in blocks of its outputs. Each value is the
        // same dot product either way, so the bits do not depend on the split.
        let input = slice(&input);
        if input.len() == fan_in {
            let columns = fan_out.div_ceil(rayon::current_num_threads()).max(1);
            output.par_chunks_mut(columns).zip(weight.par_chunks(columns * fan_in)).for_each(
                |(outputs, weight_rows)| {
                    gemm_nt(1, outputs.len(), fan_in, input, fan_in, weight_rows, fan_in, T::zero(), outputs, fan_out);
                },
            );
        } else {
            output.par_chunks_mut(ROWS_PER_TASK * fan_out).zip(input.par_chunks(ROWS_PER_TASK * fan_in)).for_each(
                |(output_rows, input_rows)| {
                    let rows = output_rows.len() / fan_out;
                    gemm_nt(rows, fan_out, fan_in, input_rows, fan_in, weight, fan_in, T::zero(), output_rows, fan_out);
                },
            );
        }
        let bias = self.tensors.bias.as_slice().expect("contiguous");
        for row in output.chunks_mut(fan_out) {
            for (value, &b) in row.iter_mut().zip(bias) {
                *value += b;
            }
        }
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let batch = input.shape()[0];
        let (fan_in, fan_out) = (self.in_features, self.out_features);
        let dy = slice(&grad_output);
        let x = slice(&input);
        match self.leaf_part {
            // a whole batch (or a whole subtree of leaves): its gradients now
            LeafPart { first: true, last: true } => self.weight_and_bias_grads(x, dy, batch),
            // part of a leaf (micro-batches): keep its rows until the leaf's last
            // part, then sum the whole leaf as one GEMM, as a whole batch would
            LeafPart { first, last } => {
                let (mut x_leaf, mut dy_leaf) = std::mem::take(&mut self.leaf_rows);
                if first {
                    x_leaf.clear();
                    dy_leaf.clear();
                }
                x_leaf.extend_from_slice(x);
                dy_leaf.extend_from_slice(dy);
                if last {
                    self.weight_and_bias_grads(&x_leaf, &dy_leaf, x_leaf.len() / fan_in);
                }
                self.leaf_rows = (x_leaf, dy_leaf);
            }
        }
        if let Some(mut grad_input) = grad_input {
            // dX (N, in) = dY (N, out) * W (out, in), in blocks of rows of dX (one per
            // thread: each packs all of W once)
            let weight = self.tensors.weight.as_slice().expect("contiguous");
            let rows_per_task = batch.div_ceil(rayon::current_num_threads()).max(1);
            slice_mut(&mut grad_input)
                .par_chunks_mut(rows_per_task * fan_in)
                .zip(dy.par_chunks(rows_per_task * fan_out))
                .for_each(|(grad_input_rows, dy_rows)| {
                    let rows = grad_input_rows.len() / fan_in;
                    gemm(
                        Trans::No,
                        Trans::No,
                        rows,
                        fan_in,
                        fan_out,
                        T::one(),
                        dy_rows,
                        fan_out,
                        weight,
                        fan_in,
                        T::zero(),
                        grad_input_rows,
                        fan_in,
                    );
                });
        }
    }

    fn params(&self) -> Vec<Param<'_, T>> {
        self.tensors.params()
    }

    fn set_gradient_leaves(&mut self, leaves: usize) {
        self.gradient_leaves = leaves.max(1);
    }

    fn continues_leaves(&self) -> bool {
        true
    }

    fn set_leaf_part(&mut self, part: LeafPart) {
        self.leaf_part = part;
    }

    fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        self.tensors.params_mut()
    }
}
