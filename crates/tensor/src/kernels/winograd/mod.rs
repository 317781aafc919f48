//! Winograd convolution F(4x4, 3x3) for 3x3 stride-1 layers. This file is the
//! arithmetic, written plainly (f64 inside, dense matrices): the reference the
//! fast path is held to. [`crate::layers::Conv2d`] runs the fast path for the
//! passes [`crate::layers::conv_algo`] gives to Winograd.
//!
//! ## The room, in reading order
//!
//! | file | one concern |
//! |---|---|
//! | this file | the math, plain: [`winograd_forward`], [`winograd_input_grad`], [`winograd_weight_grad`], and [`applies`], the one answer to "can Winograd run this convolution?" |
//! | [`passes`] | the fast passes the layer calls (forward, input gradient, weight gradient) and why they are fast |
//! | [`tiles`] | how outputs are cut into tiles and tiles into blocks; the scratch layout of a block |
//! | [`planes`] | one channel's transforms for one block (`B^T d B`, `A^T M A` with bias and ReLU, `A dY A^T`) |
//! | [`transforms`] | the plain transform bodies along tiles, the block transpose, and how generic code reaches the f32 bodies |
//! | [`point_gemm`] | the 36 point products, one register-blocked kernel |
//! | `x86` | the AVX2 + FMA f32 bodies (raw pointers, intrinsics) |
//!
//! ## Math (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks")
//!
//! A 4x4 block of outputs of a 3x3 correlation needs a 6x6 block of input `d`
//! (`α = 4 + 3 - 1 = 6`). With the constant matrices `B^T` (6x6), `G` (6x3) and
//! `A^T` (4x6) below:
//!
//! ```text
//! U[k, c] = G g[k, c] G^T                        6x6, once per pass (the filter transform)
//! V[c, t] = B^T d[c, t] B                        6x6 per input channel and tile
//! M[k, t] = sum_c U[k, c] ⊙ V[c, t]              36 independent sums over channels (36 GEMMs)
//! Y[k, t] = A^T M[k, t] A                        4x4 outputs
//! ```
//!
//! 36 multiplications per 16 outputs instead of 144: 4x fewer (2.25 per output,
//! against 9), paid for with the transforms.
//!
//! - **Input gradient**: `dX` is the full correlation of `dY` with the kernel
//!   turned 180 degrees and its channel axes swapped, i.e. the same forward
//!   pass with `W'[c, k, i, j] = W[k, c, 2 - i, 2 - j]` and padding `2 - pad`.
//! - **Weight gradient**: the roles of output and filter swap: F(3x3, 4x4)
//!   takes 4x4 tiles of `dY` as the filter and 6x6 tiles of `X` as the data,
//!   `dW[k, c] = G^T [ sum over tiles of (A dY A^T) ⊙ (B^T X B) ] G` (the same
//!   `B`, with `A` and `G` trading places), accumulated in the transformed
//!   domain and transformed back once per `(k, c)`, as Nervana neon does.

pub(crate) mod correlate;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gathered;
pub mod passes;
pub mod planes;
pub mod point_gemm;
pub mod tiles;
pub mod transforms;
mod workspace;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;

use crate::element::Element;
use crate::geometry::WindowGeometry;

/// Output tile side `m` of F(m x m, 3 x 3).
pub const TILE: usize = 4;
/// Input tile side `α = m + 3 - 1`.
pub const ALPHA: usize = TILE + 2;

/// `B^T`, 6x6: the data transform.
const BT: [[f64; ALPHA]; ALPHA] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// `G`, 6x3: the filter transform.
pub(crate) const G: [[f64; 3]; ALPHA] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// `A^T`, 4x6: the output transform.
const AT: [[f64; ALPHA]; TILE] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// The two-sided transform `L X L^T` for `L` (rows x n) given by `left(r, j)`
/// and `X` n x n row-major.
fn two_sided(left: impl Fn(usize, usize) -> f64, rows: usize, n: usize, x: &[f64]) -> Vec<f64> {
    // L X: rows x n
    let mut lx = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            lx[r * n + j] = (0..n).map(|i| left(r, i) * x[i * n + j]).sum();
        }
    }
    // (L X) L^T: rows x rows
    let mut out = vec![0.0; rows * rows];
    for r in 0..rows {
        for s in 0..rows {
            out[r * rows + s] = (0..n).map(|j| lx[r * n + j] * left(s, j)).sum();
        }
    }
    out
}

/// Whether this convolution can run as F(4x4, 3x3): a 3x3 kernel at stride 1
/// with at most 2 zeros of padding before the image (the input gradient reads
/// `dY` with `2 - pad`). Every caller asks this one function.
pub fn applies(geom: &WindowGeometry) -> bool {
    geom.kernel_h == 3
        && geom.kernel_w == 3
        && geom.stride_h == 1
        && geom.stride_w == 1
        && geom.pad_top <= 2
        && geom.pad_left <= 2
}

/// The 6x6 input tile whose top-left is `(y0, x0)` (may be outside: zeros).
fn input_tile<T: Element>(plane: &[T], (h, w): (usize, usize), y0: isize, x0: isize) -> Vec<f64> {
    let mut tile = vec![0.0; ALPHA * ALPHA];
    for i in 0..ALPHA {
        for j in 0..ALPHA {
            let (y, x) = (y0 + i as isize, x0 + j as isize);
            if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                tile[i * ALPHA + j] = Element::to_f64(plane[y as usize * w + x as usize]);
            }
        }
    }
    tile
}

/// `output := W ⋆ input + b` for a 3x3 stride-1 convolution with explicit
/// padding `(pad_top, pad_left)` and output size `(out_h, out_w)`:
/// `input` `(N, C, H, W)`, `weight` `(K, C, 3, 3)`, `bias` `(K,)`, `output` `(N, K, OH, OW)`.
#[allow(clippy::too_many_arguments)]
fn forward_padded<T: Element>(
    (channels, height, width): (usize, usize, usize),
    (pad_top, pad_left): (usize, usize),
    (out_h, out_w): (usize, usize),
    weight: &[T],
    bias: Option<&[T]>,
    input: &[T],
    out_channels: usize,
    output: &mut [T],
) {
    let plane = height * width;
    let batch = input.len() / (channels * plane).max(1);
    // U[k, c] = G g G^T
    let transformed: Vec<Vec<f64>> = (0..out_channels * channels)
        .map(|kc| {
            let g: Vec<f64> = weight[kc * 9..kc * 9 + 9].iter().map(|&v| Element::to_f64(v)).collect();
            // G g: 6x3, then (G g) G^T: 6x6
            let mut gg = [0.0; ALPHA * 3];
            for r in 0..ALPHA {
                for j in 0..3 {
                    gg[r * 3 + j] = (0..3).map(|i| G[r][i] * g[i * 3 + j]).sum();
                }
            }
            let mut u = vec![0.0; ALPHA * ALPHA];
            for r in 0..ALPHA {
                for s in 0..ALPHA {
                    u[r * ALPHA + s] = (0..3).map(|j| gg[r * 3 + j] * G[s][j]).sum();
                }
            }
            u
        })
        .collect();
    let (tiles_y, tiles_x) = (out_h.div_ceil(TILE), out_w.div_ceil(TILE));
    for n in 0..batch {
        for ty in 0..tiles_y {
            for tx in 0..tiles_x {
                let (y0, x0) = ((ty * TILE) as isize - pad_top as isize, (tx * TILE) as isize - pad_left as isize);
                // V[c] = B^T d B
                let v: Vec<Vec<f64>> = (0..channels)
                    .map(|c| {
                        let d = input_tile(&input[(n * channels + c) * plane..][..plane], (height, width), y0, x0);
                        two_sided(|r, i| BT[r][i], ALPHA, ALPHA, &d)
                    })
                    .collect();
                for k in 0..out_channels {
                    // M = sum_c U[k, c] ⊙ V[c]
                    let mut m = vec![0.0; ALPHA * ALPHA];
                    for (c, vc) in v.iter().enumerate() {
                        for ((acc, &u), &x) in m.iter_mut().zip(&transformed[k * channels + c]).zip(vc) {
                            *acc += u * x;
                        }
                    }
                    // Y = A^T M A
                    let y = two_sided(|r, i| AT[r][i], TILE, ALPHA, &m);
                    let b = bias.map_or(0.0, |b| Element::to_f64(b[k]));
                    for i in 0..TILE.min(out_h - ty * TILE) {
                        for j in 0..TILE.min(out_w - tx * TILE) {
                            let at = ((n * out_channels + k) * out_h + ty * TILE + i) * out_w + tx * TILE + j;
                            output[at] = T::from_f64(y[i * TILE + j] + b);
                        }
                    }
                }
            }
        }
    }
}

/// The forward pass of a 3x3 stride-1 convolution ([`applies`]):
/// `input` `(N, C, H, W)`, `weight` `(K, C, 3, 3)`, `bias` `(K,)`, `output` `(N, K, OH, OW)`.
pub fn winograd_forward<T: Element>(geom: &WindowGeometry, weight: &[T], bias: &[T], input: &[T], output: &mut [T]) {
    assert!(applies(geom), "winograd_forward: 3x3 stride 1 only");
    forward_padded(
        (geom.in_channels, geom.in_h, geom.in_w),
        (geom.pad_top, geom.pad_left),
        (geom.out_h, geom.out_w),
        weight,
        Some(bias),
        input,
        bias.len(),
        output,
    );
}

/// `W'[c, k, i, j] = W[k, c, 2 - i, 2 - j]` into `turned`: the kernel of the
/// input gradient, `weight` `(K, C, 3, 3)` turned 180 degrees with its channel
/// axes swapped, `(C, K, 3, 3)`.
pub fn turn_weights<T: Element>(weight: &[T], out_channels: usize, channels: usize, turned: &mut Vec<T>) {
    turned.clear();
    turned.resize(weight.len(), T::zero());
    for k in 0..out_channels {
        for c in 0..channels {
            for i in 0..3 {
                for j in 0..3 {
                    turned[((c * out_channels + k) * 3 + i) * 3 + j] =
                        weight[((k * channels + c) * 3 + 2 - i) * 3 + 2 - j];
                }
            }
        }
    }
}

/// The input gradient: the forward pass of `dY` with the kernel turned 180
/// degrees and its channel axes swapped, padded by `2 - pad` (module docs).
pub fn winograd_input_grad<T: Element>(geom: &WindowGeometry, weight: &[T], grad_output: &[T], grad_input: &mut [T]) {
    assert!(applies(geom), "winograd_input_grad: 3x3 stride 1 only");
    let (channels, out_channels) = (geom.in_channels, weight.len() / (9 * geom.in_channels));
    let mut turned = Vec::new();
    turn_weights(weight, out_channels, channels, &mut turned);
    // dY (N, K, OH, OW) padded by 2 - pad gives back (H, W): dX[y] = sum dY[y + pad - i] W[i]
    forward_padded(
        (out_channels, geom.out_h, geom.out_w),
        (2 - geom.pad_top, 2 - geom.pad_left),
        (geom.in_h, geom.in_w),
        &turned,
        None,
        grad_output,
        channels,
        grad_input,
    );
}

/// The weight and bias gradients by F(3x3, 4x4): 4x4 tiles of `dY` are the
/// filter, 6x6 tiles of `X` the data, accumulated over tiles and images in the
/// transformed domain (module docs). `input` `(N, C, H, W)`, `grad_output`
/// `(N, K, OH, OW)`, `grad_weight` `(K, C, 3, 3)`, `grad_bias` `(K,)`.
pub fn winograd_weight_grad<T: Element>(
    geom: &WindowGeometry,
    input: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    grad_bias: &mut [T],
) {
    assert!(applies(geom), "winograd_weight_grad: 3x3 stride 1 only");
    let (channels, out_channels) = (geom.in_channels, grad_bias.len());
    let (plane, out_plane) = (geom.in_h * geom.in_w, geom.out_h * geom.out_w);
    let batch = input.len() / (channels * plane).max(1);
    let mut accumulated = vec![vec![0.0f64; ALPHA * ALPHA]; out_channels * channels];
    let (tiles_y, tiles_x) = (geom.out_h.div_ceil(TILE), geom.out_w.div_ceil(TILE));
    for n in 0..batch {
        for ty in 0..tiles_y {
            for tx in 0..tiles_x {
                let (y0, x0) =
                    ((ty * TILE) as isize - geom.pad_top as isize, (tx * TILE) as isize - geom.pad_left as isize);
                let data: Vec<Vec<f64>> = (0..channels)
                    .map(|c| {
                        let d =
                            input_tile(&input[(n * channels + c) * plane..][..plane], (geom.in_h, geom.in_w), y0, x0);
                        two_sided(|r, i| BT[r][i], ALPHA, ALPHA, &d)
                    })
                    .collect();
                for k in 0..out_channels {
                    // the 4x4 tile of dY (zeros past the edge), transformed: A dY A^T
                    let mut dy = vec![0.0; TILE * TILE];
                    for i in 0..TILE.min(geom.out_h - ty * TILE) {
                        for j in 0..TILE.min(geom.out_w - tx * TILE) {
                            dy[i * TILE + j] = Element::to_f64(
                                grad_output
                                    [(n * out_channels + k) * out_plane + (ty * TILE + i) * geom.out_w + tx * TILE + j],
                            );
                        }
                    }
                    let filter = two_sided(|r, i| AT[i][r], ALPHA, TILE, &dy);
                    for (c, data_c) in data.iter().enumerate() {
                        for ((acc, &f), &x) in accumulated[k * channels + c].iter_mut().zip(&filter).zip(data_c) {
                            *acc += f * x;
                        }
                    }
                }
            }
        }
    }
    // dW[k, c] = G^T Acc G
    for (kc, acc) in accumulated.iter().enumerate() {
        let dw = two_sided(|r, i| G[i][r], 3, ALPHA, acc);
        for (dst, &v) in grad_weight[kc * 9..kc * 9 + 9].iter_mut().zip(&dw) {
            *dst = T::from_f64(v);
        }
    }
    // db[k] = sum dY[k]
    for (k, db) in grad_bias.iter_mut().enumerate() {
        let total: f64 = (0..batch)
            .flat_map(|n| grad_output[(n * out_channels + k) * out_plane..][..out_plane].iter())
            .map(|&v| Element::to_f64(v))
            .sum();
        *db = T::from_f64(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Padding;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand_chacha::ChaCha8Rng, len: usize) -> Vec<f64> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The direct 3x3 valid correlation of a 6x6 plane: a 4x4 output.
    fn direct(input: &[f64], weight: &[f64]) -> Vec<f64> {
        (0..16).map(|o| (0..9).map(|t| weight[t] * input[(o / 4 + t / 3) * 6 + o % 4 + t % 3]).sum()).collect()
    }

    #[test]
    fn a_wrong_matrix_entry_is_caught() {
        // the check can fail: the forward with one B^T entry changed differs from direct
        let geom = WindowGeometry::new(1, 6, 6, (3, 3), (1, 1), Padding::Valid).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (input, weight) = (random(&mut rng, 36), random(&mut rng, 9));
        let expected = direct(&input, &weight);
        let mut output = vec![0.0; 16];
        winograd_forward(&geom, &weight, &[0.0], &input, &mut output);
        assert!(output.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-12), "the right matrices agree");
        let d = input_tile(&input, (6, 6), 0, 0);
        let mut bad = BT;
        bad[1][2] = -3.0;
        let v = two_sided(|r, i| bad[r][i], ALPHA, ALPHA, &d);
        let mut u = vec![0.0; 36];
        let g = &weight;
        for r in 0..ALPHA {
            for s in 0..ALPHA {
                u[r * ALPHA + s] = (0..3).map(|j| (0..3).map(|i| G[r][i] * g[i * 3 + j]).sum::<f64>() * G[s][j]).sum();
            }
        }
        let m: Vec<f64> = u.iter().zip(&v).map(|(a, b)| a * b).collect();
        let y = two_sided(|r, i| AT[r][i], TILE, ALPHA, &m);
        assert!(y.iter().zip(&expected).any(|(a, b)| (a - b).abs() > 1e-6));
    }
}
