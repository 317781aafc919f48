//! The window the pooling layers share ([`crate::MaxPool2d`],
//! [`crate::layers::AvgPool2d`]): its size, stride, padding and ceil mode,
//! checked once, and the geometry, output shape and work it gives an input.
//! A pooling window is a one-channel convolution window applied to every
//! channel plane on its own.

use crate::error::{Result, TensorError};
use crate::geometry::{Padding, WindowGeometry};
use crate::layer::expect_rank;

/// A pooling window; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    /// Window `(rows, columns)`.
    pub pool: (usize, usize),
    /// Stride `(rows, columns)`.
    pub stride: (usize, usize),
    /// Border handling.
    pub padding: Padding,
    /// PyTorch's `ceil_mode`: round the output size up ([`WindowGeometry::with_ceil_mode`]).
    pub ceil_mode: bool,
}

impl PoolWindow {
    /// A window for the layer named `what` (`"max-pooling"`), ceil mode off.
    /// Refuses zero sizes, and explicit padding over half the window (a
    /// window could then hold only padding).
    pub fn new(what: &str, pool: (usize, usize), stride: (usize, usize), padding: Padding) -> Result<Self> {
        if pool.0 == 0 || pool.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            return Err(TensorError::Config(format!(
                "{what} needs positive sizes, got pool {pool:?}, stride {stride:?}"
            )));
        }
        if let Padding::Explicit(rows, columns) = padding {
            if 2 * rows > pool.0 || 2 * columns > pool.1 {
                return Err(TensorError::Config(format!(
                    "{what} padding {rows}x{columns} is more than half the {}x{} pool (a window could hold only padding)",
                    pool.0, pool.1
                )));
            }
        }
        Ok(PoolWindow { pool, stride, padding, ceil_mode: false })
    }

    /// The geometry of one `(H, W)` plane of a `(.., H, W)` input, or `None` if
    /// the input is too small.
    pub fn geometry(&self, shape: &[usize]) -> Option<WindowGeometry> {
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let geom = WindowGeometry::new(1, h, w, self.pool, self.stride, self.padding)?;
        Some(if self.ceil_mode { geom.with_ceil_mode() } else { geom })
    }

    /// `(C, OH, OW)` for a `(C, H, W)` input; `too_small` ends the message
    /// for an input smaller than the window.
    pub fn output_shape(&self, input_shape: &[usize], too_small: &str) -> std::result::Result<Vec<usize>, String> {
        expect_rank(input_shape, 3, "a (C, H, W)")?;
        let geom = self.geometry(input_shape).ok_or_else(|| {
            format!(
                "a {}x{} input is smaller than the {}x{} pool{too_small}",
                input_shape[1], input_shape[2], self.pool.0, self.pool.1
            )
        })?;
        Ok(vec![input_shape[0], geom.out_h, geom.out_w])
    }

    /// Window elements visited per sample: one op each.
    pub fn window_ops(&self, input_shape: &[usize]) -> u64 {
        self.geometry(input_shape)
            .map(|geom| (input_shape[0] * geom.out_pixels() * self.pool.0 * self.pool.1) as u64)
            .unwrap_or(0)
    }

    /// `"3x3, stride 2, pad 1"`, with `", ceil"` in ceil mode.
    pub fn describe(&self) -> String {
        let ceil = if self.ceil_mode { ", ceil" } else { "" };
        format!("{}x{}, stride {}, {}{ceil}", self.pool.0, self.pool.1, self.stride.0, self.padding.describe())
    }
}
