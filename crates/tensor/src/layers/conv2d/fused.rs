//! Inference's fused passes of [`Conv2d`]: the convolution with the layers
//! after it (a batchnorm, a ReLU, a max-pool, a second convolution) in one
//! pass, each giving the values of the layers one by one, bit for bit. The
//! model's plan ([`crate::model::plan`]) chooses them; training never runs
//! them (its backward pass reads the activations they skip).

use super::Conv2d;
use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::conv_chain::conv_into_winograd_relu_maxpool;
use crate::kernels::conv_groups::BatchnormAffine;
use crate::kernels::conv_tiled::conv2d_forward_tiled_pooled;
use crate::kernels::pool_separable::pool_plane_values;
use crate::kernels::winograd::passes::conv2d_forward_winograd_relu_maxpool;
use crate::layer::{slice, slice_mut};
use crate::layers::conv_algo::ConvAlgo;
use ndarray::{ArrayViewD, ArrayViewMutD};

impl<T: Element> Conv2d<T> {
    /// Inference's convolution, the [`crate::BatchNorm`] after it and (`relu`) a
    /// ReLU in one pass: the batchnorm's `affine` ([`crate::BatchNorm::eval_affine`])
    /// applied while in cache (by im2col to each tile with its bias, by Winograd
    /// to each image's output), not in passes of their own over the batch: the
    /// values of the layers one by one, bit for bit.
    pub fn forward_batchnorm(
        &mut self,
        input: ArrayViewD<'_, T>,
        output: ArrayViewMutD<'_, T>,
        affine: &[(T, T)],
        relu: bool,
    ) {
        assert_eq!(affine.len(), self.out_channels, "conv2d: one batchnorm scale and shift per output channel");
        self.forward_then(input, output, false, Some(BatchnormAffine { affine, relu }));
    }

    /// Whether this layer's forward pass runs by im2col on `input_shape`
    /// `(N, C, H, W)`: what [`Conv2d::forward_batchnorm_maxpool`] needs.
    pub fn forward_is_im2col(&self, input_shape: &[usize]) -> bool {
        self.geometry(input_shape).is_some_and(|geom| self.resolve(Some(&geom)).forward == ConvAlgo::Im2col)
    }

    /// Inference's convolution, the batchnorm after it (`affine`, and with
    /// `relu` a ReLU) and a max-pool (`pool`: its geometry on one of this
    /// layer's output planes) in one pass, image by image: each image's output
    /// is pooled while in cache (`conv_tiled::conv2d_forward_tiled_pooled`), never
    /// written whole (ResNet's stem: 103 MB a batch of 32). `pooled`
    /// `(N, OC, PH, PW)`. Needs [`Conv2d::forward_is_im2col`].
    pub fn forward_batchnorm_maxpool(
        &mut self,
        input: ArrayViewD<'_, T>,
        mut pooled: ArrayViewMutD<'_, T>,
        batchnorm: (&[(T, T)], bool),
        pool: &WindowGeometry,
    ) {
        assert!(self.forward_is_im2col(input.shape()), "conv2d: forward_batchnorm_maxpool needs im2col");
        let (affine, relu) = batchnorm;
        assert_eq!(affine.len(), self.out_channels, "conv2d: one batchnorm scale and shift per output channel");
        let geom = self.geometry(input.shape()).expect("conv2d: input shape was not validated");
        assert_eq!((pool.in_h, pool.in_w), (geom.out_h, geom.out_w), "conv2d: the pool reads this layer's planes");
        let weight = self.tensors.weight.as_slice().expect("weights are contiguous");
        let bias = self.tensors.bias.as_slice().expect("bias is contiguous");
        let pool_plane =
            |plane: &[T], out: &mut [T], row_max: &mut Vec<T>| pool_plane_values(pool, plane, out, row_max);
        let pooled = (slice_mut(&mut pooled), pool.out_pixels());
        let batchnorm = BatchnormAffine { affine, relu };
        conv2d_forward_tiled_pooled(
            &geom,
            weight,
            bias,
            batchnorm,
            slice(&input),
            pooled,
            &pool_plane,
            &mut self.workspace,
        );
    }

    /// Whether this layer can run [`Conv2d::forward_relu_maxpool`] on `input_shape`
    /// `(N, C, H, W)`: its forward pass is Winograd there (the pooling is done
    /// inside the Winograd output transform).
    pub fn can_fuse_maxpool(&self, input_shape: &[usize]) -> bool {
        self.geometry(input_shape).is_some_and(|geom| self.resolve(Some(&geom)).forward == ConvAlgo::Winograd)
    }

    /// Inference's convolution, ReLU and `pool x pool` max-pool (stride `pool`,
    /// 2 or 4) in one pass, `pooled` `(N, OC, OH / pool, OW / pool)`: the
    /// values of the three layers one by one, bit for bit, without the
    /// full-size output ([`conv2d_forward_winograd_relu_maxpool`]). Needs
    /// [`Conv2d::can_fuse_maxpool`].
    pub fn forward_relu_maxpool(&mut self, input: ArrayViewD<'_, T>, mut pooled: ArrayViewMutD<'_, T>, pool: usize) {
        assert!(self.can_fuse_maxpool(input.shape()), "conv2d: forward_relu_maxpool without Winograd");
        let geom = self.geometry(input.shape()).expect("conv2d: input shape was not validated");
        let weight = self.tensors.weight.as_slice().expect("weights are contiguous");
        let bias = self.tensors.bias.as_slice().expect("bias is contiguous");
        conv2d_forward_winograd_relu_maxpool(
            &geom,
            weight,
            bias,
            slice(&input),
            slice_mut(&mut pooled),
            pool,
            &mut self.winograd,
        );
    }

    /// Whether [`Conv2d::forward_into_relu_maxpool`] can run this layer (on
    /// `input_shape` `(N, C, H, W)`, its ReLU fused) into `next`: this layer is
    /// tiled there, `next` is Winograd with its max-pool
    /// ([`Conv2d::can_fuse_maxpool`]) and unpadded.
    pub fn can_chain_into(&self, input_shape: &[usize], next: &Conv2d<T>) -> bool {
        let Some(geom) = self.geometry(input_shape) else { return false };
        let next_shape = [input_shape[0], self.out_channels, geom.out_h, geom.out_w];
        self.resolve(Some(&geom)).forward != ConvAlgo::Winograd
            && next.can_fuse_maxpool(&next_shape)
            && next.geometry(&next_shape).is_some_and(|g| g.pad_top == 0 && g.pad_left == 0 && g.out_h + 2 == g.in_h)
    }

    /// Inference's `relu(self(input))` fed to `next`'s
    /// [`Conv2d::forward_relu_maxpool`] a band of rows at a time, so this layer's
    /// output is never held whole ([`conv_into_winograd_relu_maxpool`]): the
    /// values of the layers one by one, bit for bit. `pooled`
    /// `(N, next's OC, OH / pool, OW / pool)` of `next`'s output. Needs
    /// [`Conv2d::can_chain_into`].
    pub fn forward_into_relu_maxpool(
        &mut self,
        next: &mut Conv2d<T>,
        input: ArrayViewD<'_, T>,
        mut pooled: ArrayViewMutD<'_, T>,
        pool: usize,
    ) {
        assert!(self.can_chain_into(input.shape(), next), "conv2d: forward_into_relu_maxpool cannot chain");
        let geom = self.geometry(input.shape()).expect("conv2d: input shape was not validated");
        let next_shape = [input.shape()[0], self.out_channels, geom.out_h, geom.out_w];
        let next_geom = next.geometry(&next_shape).expect("checked by can_chain_into");
        let first = (
            &geom,
            self.tensors.weight.as_slice().expect("weights are contiguous"),
            self.tensors.bias.as_slice().expect("bias is contiguous"),
            &mut self.workspace,
        );
        let second = (
            &next_geom,
            next.tensors.weight.as_slice().expect("weights are contiguous"),
            next.tensors.bias.as_slice().expect("bias is contiguous"),
            &mut next.winograd,
        );
        conv_into_winograd_relu_maxpool(first, second, pool, slice(&input), slice_mut(&mut pooled));
    }
}
