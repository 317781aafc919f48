//! The element type: one small trait carries `f32` (training) and `f64` (gradient
//! checks) through the same kernels, so the checks exercise production code.
//!
//! A ground module: it imports nothing of the crate. What differs by type in
//! the kernels (which SIMD body or `matrixmultiply` routine runs) is decided
//! in [`crate::kernels`], which views a generic slice as `f32` or `f64` through
//! [`Element::as_f32`] and [`Element::as_f64`]: safe, exact, and no `TypeId`.

use ndarray::{NdFloat, ScalarOperand};
use std::fmt::{Debug, Display};

mod sealed {
    /// Only `f32` and `f64` are elements: the kernels' SIMD bodies exist for them alone.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element the kernels can run on: `f32` or `f64` (sealed).
///
/// ```
/// use convnet_tensor::Element;
/// assert_eq!(f32::from_f64(0.1).to_f64(), 0.10000000149011612);
/// assert_eq!(f32::as_f32(&[1.0f32, 2.0]), Some(&[1.0f32, 2.0][..]));
/// assert_eq!(f64::as_f32(&[1.0f64]), None);
/// ```
pub trait Element:
    NdFloat + ScalarOperand + Default + Debug + Display + Send + Sync + 'static + sealed::Sealed
{
    /// `"f32"` or `"f64"`, for messages.
    const NAME: &'static str;

    /// Converts from `f64` (rounding to nearest for `f32`).
    fn from_f64(value: f64) -> Self;

    /// Converts to `f64` (exactly).
    fn to_f64(self) -> f64;

    /// `values` as `&[f32]` when `Self` is `f32` (for the f32 SIMD bodies), else `None`.
    fn as_f32(values: &[Self]) -> Option<&[f32]>;

    /// `values` as `&mut [f32]` when `Self` is `f32`, else `None`.
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]>;

    /// `values` as `&[f64]` when `Self` is `f64`, else `None`.
    fn as_f64(values: &[Self]) -> Option<&[f64]>;

    /// `values` as `&mut [f64]` when `Self` is `f64`, else `None`.
    fn as_f64_mut(values: &mut [Self]) -> Option<&mut [f64]>;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn as_f32(values: &[Self]) -> Option<&[f32]> {
        Some(values)
    }
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]> {
        Some(values)
    }
    fn as_f64(_: &[Self]) -> Option<&[f64]> {
        None
    }
    fn as_f64_mut(_: &mut [Self]) -> Option<&mut [f64]> {
        None
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(value: f64) -> Self {
        value
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn as_f64(values: &[Self]) -> Option<&[f64]> {
        Some(values)
    }
    fn as_f64_mut(values: &mut [Self]) -> Option<&mut [f64]> {
        Some(values)
    }
}
