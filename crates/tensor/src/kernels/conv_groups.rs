//! Small convolution outputs: several images' columns side by side in one
//! GEMM, forward and for the input gradient, and the bias epilogue the tiled
//! forward pass shares with them ([`crate::kernels::conv_tiled`] dispatches here).
//!
//! The AVX-512 kernel of [`gemm_packed`] runs 48 columns at a time: image by
//! image, ResNet's 7x7 outputs (49 columns: a block of 48 and one of 1, which
//! costs as much) waste half of its work; eight images side by side make 392
//! columns (8 blocks of 48 and one of 8). Every value is the same sum in the
//! same order whatever the group (the kernel's order over the depth does not
//! depend on the column block), so grouping changes no bit.

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::cpu::simd_variant;
use crate::kernels::gemm_packed::{gemm_packed, PackedA};
use crate::kernels::im2col::{col2im_strided, im2col_strided};
use crate::kernels::scratch::Scratch;
use rayon::prelude::*;

/// [`conv2d_forward_tiled`](crate::kernels::conv_tiled::conv2d_forward_tiled)
/// for small outputs: `group` images' columns side by side in one column
/// matrix `(C*KH*KW, group * OH*OW)`, one GEMM for all of them, then each
/// image's planes into place with the epilogue `finish` (bias, ReLU or
/// batchnorm) while they are in cache.
pub(crate) fn forward_in_groups<T: Element>(
    geom: &WindowGeometry,
    packed_weight: &PackedA<T>,
    finish: &Finish<'_, T>,
    group: usize,
    input: &[T],
    output: &mut [T],
    col_scratch: &Scratch<T>,
) {
    let (col_rows, out_pixels, out_channels) = (geom.col_rows(), geom.out_pixels(), finish.bias.len());
    let (in_len, out_len) = (geom.in_len(), out_channels * out_pixels);
    let columns = group * out_pixels;
    input.par_chunks(group * in_len).zip(output.par_chunks_mut(group * out_len)).for_each(|(images, images_out)| {
        col_scratch.with((col_rows + out_channels) * columns, |buf| {
            let (col, products) = buf.split_at_mut(col_rows * columns);
            for (g, image) in images.chunks_exact(in_len).enumerate() {
                im2col_strided(geom, image, 0, geom.out_h, &mut col[g * out_pixels..], columns);
            }
            // Y (OC, count * OH*OW) = W (OC, C*KH*KW) * col (C*KH*KW, count * OH*OW)
            let count = images.len() / in_len;
            gemm_packed(packed_weight, count * out_pixels, col, columns, T::zero(), products, columns);
            for (g, image_out) in images_out.chunks_exact_mut(out_len).enumerate() {
                for (o, plane) in image_out.chunks_exact_mut(out_pixels).enumerate() {
                    plane.copy_from_slice(&products[o * columns + g * out_pixels..][..out_pixels]);
                    finish.apply(o, plane);
                }
            }
        });
    });
}

/// Columns of one GEMM the forward pass aims for when outputs are small: the
/// AVX-512 kernel runs 48 columns at a time, so ResNet's 7x7 outputs (49
/// columns: a block of 48 and one of 1, which costs as much) waste half its
/// work image by image; eight images side by side make 392 columns (8 blocks
/// of 48 and one of 8). ResNet-18 inference, batch 32: +8% (BENCHMARKS.md).
const GROUP_COLUMNS: usize = 384;

/// Images per GEMM of the forward pass: several when an image's output is
/// smaller than [`GROUP_COLUMNS`] pixels, at most `most` (the images per
/// thread). Each value is the same sum over `C*KH*KW` in order whatever the
/// group, so the bits do not depend on it.
pub(crate) fn image_group(out_pixels: usize, most: usize) -> usize {
    match out_pixels {
        0 => 1,
        _ => GROUP_COLUMNS.div_ceil(out_pixels).min(most).max(1),
    }
}

/// The input gradient of the tiled backward pass for small outputs, as
/// [`forward_in_groups`] runs the forward pass: `group` images' `dY` side by
/// side `(OC, group * OH*OW)`, one GEMM `dcol = W^T dY` for all of them, then
/// col2im image by image into `grad_input` `(N, C, H, W)`. Each value of `dcol`
/// is the same sum over `OC` in order as image by image: the same bits.
pub(crate) fn input_grad_in_groups<T: Element>(
    geom: &WindowGeometry,
    packed_weight_t: &PackedA<T>,
    group: usize,
    grad_output: &[T],
    grad_input: &mut [T],
    col_scratch: &Scratch<T>,
) {
    let (col_rows, out_pixels, out_channels) = (geom.col_rows(), geom.out_pixels(), packed_weight_t.depth());
    let (in_len, out_len) = (geom.in_len(), out_channels * out_pixels);
    let columns = group * out_pixels;
    let groups = grad_output.par_chunks(group * out_len).zip(grad_input.par_chunks_mut(group * in_len));
    groups.for_each(|(dys, dxs)| {
        col_scratch.with((out_channels + col_rows) * columns, |buf| {
            let (dy_group, dcol) = buf.split_at_mut(out_channels * columns);
            for (g, dy) in dys.chunks_exact(out_len).enumerate() {
                for (o, plane) in dy.chunks_exact(out_pixels).enumerate() {
                    dy_group[o * columns + g * out_pixels..][..out_pixels].copy_from_slice(plane);
                }
            }
            // dcol (C*KH*KW, count * OH*OW) = W^T (C*KH*KW, OC) * dY (OC, count * OH*OW)
            let count = dys.len() / out_len;
            gemm_packed(packed_weight_t, count * out_pixels, dy_group, columns, T::zero(), dcol, columns);
            // in the forward pass this was `col = im2col(x)`, so now `dx = col2im(dcol)`
            for (g, dx) in dxs.chunks_exact_mut(in_len).enumerate() {
                dx.fill(T::zero());
                col2im_strided(geom, &dcol[g * out_pixels..], columns, 0, geom.out_h, dx);
            }
        });
    });
}

/// Work a convolution's forward pass does on each image's output `(OC, OH*OW)`
/// right after computing it, while it is in cache (the Winograd path's
/// batchnorm, [`batchnorm_epilogue`]).
pub(crate) type ImageEpilogue<'a, T> = &'a (dyn Fn(&mut [T]) + Sync);

/// A batchnorm in evaluation mode after a convolution (inference fuses them):
/// `y = y * a_c + b_c` with `affine[c] = (a_c, b_c)`
/// ([`crate::BatchNorm::eval_affine`]), then `max(y, 0)` with `relu` (a ReLU
/// after the batchnorm).
#[derive(Clone, Copy, Debug)]
pub struct BatchnormAffine<'a, T> {
    /// `(a_c, b_c)` per output channel.
    pub affine: &'a [(T, T)],
    /// Whether a ReLU follows the batchnorm.
    pub relu: bool,
}

/// The epilogue of the im2col forward pass: what happens to each value `y` of
/// output channel `o` right after the GEMM, tile by tile while the tile is in
/// cache: `y + bias[o]`, then either `max(y, 0)` (`relu`, a ReLU fused into the
/// convolution) or the `batchnorm` (and its ReLU). Each operation rounded on
/// its own, as the layers one by one compute them: the same bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finish<'a, T> {
    pub(crate) bias: &'a [T],
    pub(crate) relu: bool,
    pub(crate) batchnorm: Option<BatchnormAffine<'a, T>>,
}

impl<'a, T: Element> Finish<'a, T> {
    /// `+ bias`, then with `batchnorm` its affine map and ReLU, or else with
    /// `relu` a ReLU (the plan never fuses both: the batchnorm comes right
    /// after the convolution).
    pub(crate) fn new(bias: &'a [T], relu: bool, batchnorm: Option<BatchnormAffine<'a, T>>) -> Self {
        assert!(!(relu && batchnorm.is_some()), "a convolution fuses a ReLU or a batchnorm, not both");
        if let Some(batchnorm) = batchnorm {
            assert_eq!(batchnorm.affine.len(), bias.len(), "one batchnorm scale and shift per output channel");
        }
        Finish { bias, relu, batchnorm }
    }

    /// The epilogue on `values`, a run of output channel `o`.
    #[inline]
    pub(crate) fn apply(&self, o: usize, values: &mut [T]) {
        match self.batchnorm {
            None => add_bias(values, self.bias[o], self.relu),
            Some(BatchnormAffine { affine, relu }) => {
                let (scale, shift) = affine[o];
                bias_scale_shift(values, self.bias[o], scale, shift, relu)
            }
        }
    }
}

/// The [`ImageEpilogue`] of a batchnorm in evaluation mode (and a ReLU, with
/// `relu`): [`scale_shift`] on each channel's plane of an image's output,
/// `affine[c] = (a_c, b_c)`.
pub(crate) fn batchnorm_epilogue<T: Element>(affine: &[(T, T)], relu: bool) -> impl Fn(&mut [T]) + Sync + '_ {
    move |image_out: &mut [T]| {
        let plane = image_out.len() / affine.len();
        for (values, &(scale, shift)) in image_out.chunks_exact_mut(plane).zip(affine) {
            scale_shift(values, scale, shift, relu);
        }
    }
}

simd_variant! {
    /// The conv + batchnorm epilogue on a run of one channel: `y = (y + bias) * a + b`,
    /// then `y = max(y, 0)` if a ReLU follows: [`add_bias`] then [`scale_shift`]
    /// in one pass, each operation rounded apart as there, so the same bits
    /// (with AVX2: 8 floats wide).
    pub(crate) fn bias_scale_shift = bias_scale_shift_body, "avx2", avx2;
    (values: &mut [T], bias: T, scale: T, shift: T, relu: bool)
}

#[inline(always)]
fn bias_scale_shift_body<T: Element>(values: &mut [T], bias: T, scale: T, shift: T, relu: bool) {
    for value in values {
        let y = (*value + bias) * scale + shift;
        *value = if !relu || y > T::zero() { y } else { T::zero() };
    }
}

simd_variant! {
    /// A batchnorm in evaluation mode on one plane: `y = y * a + b`, then
    /// `y = max(y, 0)` if a ReLU follows: the multiply and the add rounded
    /// apart, as [`crate::BatchNorm`]'s forward computes them, so the same bits
    /// (with AVX2: 8 floats wide).
    pub(crate) fn scale_shift = scale_shift_body, "avx2", avx2;
    (plane: &mut [T], scale: T, shift: T, relu: bool)
}

#[inline(always)]
fn scale_shift_body<T: Element>(plane: &mut [T], scale: T, shift: T, relu: bool) {
    for value in plane {
        let y = *value * scale + shift;
        *value = if !relu || y > T::zero() { y } else { T::zero() };
    }
}

simd_variant! {
    /// The forward epilogue on one row of a tile: `y += b`, then `y = max(y, 0)`
    /// if a ReLU is fused (with AVX2: 8 floats wide, the same results).
    pub(crate) fn add_bias = add_bias_body, "avx2", avx2;
    (row: &mut [T], bias: T, relu: bool)
}

#[inline(always)]
fn add_bias_body<T: Element>(row: &mut [T], bias: T, relu: bool) {
    if relu {
        for value in row {
            let biased = *value + bias;
            *value = if biased > T::zero() { biased } else { T::zero() };
        }
    } else {
        for value in row {
            *value += bias;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_body_of_the_bias_epilogue_matches_its_definition() {
        let mut row = [-2.0, -0.5, 0.0, 0.5, 2.0];
        add_bias_body(&mut row, 1.0, true);
        assert_eq!(row, [0.0, 0.5, 1.0, 1.5, 3.0]);
        add_bias_body(&mut row, -1.0, false);
        assert_eq!(row, [-1.0, -0.5, 0.0, 0.5, 2.0]);
    }

    /// The conv + batchnorm epilogue gives the bits of the bias pass and then
    /// the batchnorm pass, with and without the ReLU, `-0.0` included.
    #[test]
    fn the_batchnorm_epilogue_in_one_pass_gives_the_bits_of_two() {
        let values: Vec<f32> = (0..40).map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0).chain([-0.0, 0.0]).collect();
        for (bias, scale, shift, relu) in
            [(0.3f32, 1.7f32, -0.2f32, true), (0.0, -0.9, 0.0, false), (-1.0, 0.1, 0.5, false)]
        {
            let (mut one_pass, mut two_passes) = (values.clone(), values.clone());
            bias_scale_shift(&mut one_pass, bias, scale, shift, relu);
            add_bias(&mut two_passes, bias, false);
            scale_shift(&mut two_passes, scale, shift, relu);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one_pass), bits(&two_passes), "bias {bias} scale {scale} shift {shift} relu {relu}");
            assert_eq!(one_pass[0], ((values[0] + bias) * scale + shift).max(if relu { 0.0 } else { f32::MIN }));
        }
    }
}
