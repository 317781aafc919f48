//! The buffers a Winograd layer keeps between passes, and the weights'
//! transform `U = G g G^T` they hold ([`super::passes`], read it first).

use super::tiles::POINTS;
use super::ALPHA;
use crate::element::Element;
use crate::kernels::scratch::Scratch;
use rayon::prelude::*;

/// The buffers of the Winograd path a layer keeps between passes.
#[derive(Debug, Default)]
pub struct WinogradWorkspace<T> {
    /// `U = G g G^T` as `(36, K4, C)` (`K4`: output channels rounded up to
    /// [`super::tiles::ROW_BLOCK`], zero rows past K); for the input gradient the weights
    /// turned 180 degrees with their channel axes swapped.
    pub(crate) transformed_weight: Vec<T>,
    /// The version of the weights ([`WinogradWorkspace::weight_version`])
    /// whose forward transform `transformed_weight` holds; `None`: anything
    /// else (the input gradient's turned weights, or nothing yet).
    pub(super) transformed_version: Option<u64>,
    /// The version of the weights the next forward pass reads, kept by a layer
    /// that counts every change to its weights (a [`crate::Conv2d`] counts each
    /// time it lends them out mutably, from the first): while it stays the same,
    /// inference transforms the weights once instead of every batch. `None`
    /// (the default, a layer never lent out): every pass transforms them.
    pub weight_version: Option<u64>,
    /// The weights of the input gradient, `(C, K, 3, 3)` (built each backward pass).
    pub(super) turned_weight: Vec<T>,
    /// Per-thread block buffers.
    pub(crate) scratch: Scratch<T>,
    /// Per-image weight and bias gradients, summed as a tree afterwards.
    pub(super) per_image_grads: Vec<T>,
    /// Leaves of the batch's gradient sum ([`crate::kernels::reduce`]).
    pub gradient_leaves: usize,
    /// The pass continues a gradient leaf's sum from the gradients the layer
    /// holds (a micro-batch after the leaf's first, see [`crate::gradient_tree::LeafPart`]).
    pub continue_leaf: bool,
}

impl<T: Element> WinogradWorkspace<T> {
    /// The layer lends its weights out mutably, so they may change: a new
    /// [`Self::weight_version`] (the first one, 0, where there was none).
    pub(crate) fn weights_lent(&mut self) {
        self.weight_version = Some(self.weight_version.map_or(0, |v| v.wrapping_add(1)));
    }

    /// `U` of the forward pass for `weight` `(K, C, 3, 3)`, transformed unless
    /// `transformed_weight` already holds it for this [`Self::weight_version`].
    pub(crate) fn forward_weights(&mut self, weight: &[T], k: usize, channels: usize, k_padded: usize) {
        if self.weight_version.is_none() || self.transformed_version != self.weight_version {
            transform_weights(weight, k, channels, k_padded, &mut self.transformed_weight);
            self.transformed_version = self.weight_version;
        }
    }
}

/// `out(r, s) = (L X R)[r][s]` for the small matrices of the transforms:
/// `L` `(rows, n)`, `X` `(n, m)`, `R` `(m, cols)`, every sum in index order
/// (as in the plain reference's `two_sided`). `G g G^T` and `G^T Acc G` are both this.
#[inline(always)]
pub(super) fn triple_product<T: Element>(
    (rows, n, m, cols): (usize, usize, usize, usize),
    left: impl Fn(usize, usize) -> f64,
    x: impl Fn(usize, usize) -> T,
    right: impl Fn(usize, usize) -> f64,
    mut out: impl FnMut(usize, usize, T),
) {
    // L X: rows x m
    let mut lx = [T::zero(); ALPHA * ALPHA];
    for r in 0..rows {
        for j in 0..m {
            let mut sum = T::zero();
            for i in 0..n {
                sum += T::from_f64(left(r, i)) * x(i, j);
            }
            lx[r * m + j] = sum;
        }
    }
    // (L X) R: rows x cols
    for r in 0..rows {
        for s in 0..cols {
            let mut sum = T::zero();
            for j in 0..m {
                sum += lx[r * m + j] * T::from_f64(right(j, s));
            }
            out(r, s, sum);
        }
    }
}

/// `U[p][k][c] = (G g[k, c] G^T)[p]` for `weight` `(K, C, 3, 3)`, K padded to
/// `k_padded` with zero rows. Once per pass: K*C small transforms, each the
/// sums of [`triple_product`] in its order (so the same bits). The six rows
/// `r` of `G g G^T` run as six tasks: row `r` needs only `(G g)[r]` and fills
/// points `6r..6r + 6`, one contiguous sixth of `U` (a training step
/// transforms every Winograd layer's weights twice, ResNet-18's 7x7 stage
/// 2.4M weights each, too many for one thread).
pub(crate) fn transform_weights<T: Element>(
    weight: &[T],
    out_channels: usize,
    channels: usize,
    k_padded: usize,
    u: &mut Vec<T>,
) {
    let point_len = k_padded * channels;
    // every value is written below (the rows past K as zeros), so a kept buffer is not cleared
    u.resize(POINTS * point_len, T::zero());
    let g_mat = super::G;
    let at = |r: usize, i: usize| T::from_f64(g_mat[r][i]);
    u.par_chunks_mut(ALPHA * point_len).enumerate().for_each(|(r, u_row)| {
        for point in u_row.chunks_exact_mut(point_len) {
            point[out_channels * channels..].fill(T::zero());
        }
        for k in 0..out_channels {
            for c in 0..channels {
                let g = &weight[(k * channels + c) * 9..][..9];
                // (G g)[r] (3): the first product's row r, summed over i in order
                let mut g_row = [T::zero(); 3];
                for (j, value) in g_row.iter_mut().enumerate() {
                    for i in 0..3 {
                        *value += at(r, i) * g[i * 3 + j];
                    }
                }
                // (G g G^T)[r][s] = sum_j (G g)[r][j] G[s][j]
                for s in 0..ALPHA {
                    let mut sum = T::zero();
                    for (j, value) in g_row.iter().enumerate() {
                        sum += *value * at(s, j);
                    }
                    u_row[(s * k_padded + k) * channels + c] = sum;
                }
            }
        }
    });
}
