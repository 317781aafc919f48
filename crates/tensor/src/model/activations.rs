//! The activation buffers of a [`crate::Sequential`] as the forward and
//! backward loops see them: views of a batch in a buffer, two buffers lent
//! at once, a buffer grown for the batch, and the built-in layer behind a
//! step of the plan.

use crate::element::Element;
use crate::layer::Layer;
use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};

/// The built-in layer the plan says layer `layer` is.
///
/// # Panics
/// If it is not: the plan only names a step for a type it recognised.
pub(crate) fn downcast<L: 'static, T: Element>(layer: &mut Box<dyn Layer<T>>) -> &mut L {
    layer.as_any_mut().and_then(|any| any.downcast_mut::<L>()).expect("the plan recognised this layer's type")
}

/// View of the first `N * prod(shape)` elements of `buffer` as `(N, ...shape)`.
pub(crate) fn view<'a, T>(buffer: &'a [T], batch: usize, shape: &[usize]) -> ArrayViewD<'a, T> {
    let dims: Vec<usize> = std::iter::once(batch).chain(shape.iter().copied()).collect();
    let len = dims.iter().product();
    ArrayViewD::from_shape(IxDyn(&dims), &buffer[..len]).expect("buffer sized by the model")
}

/// Mutable [`view`].
pub(crate) fn view_mut<'a, T>(buffer: &'a mut [T], batch: usize, shape: &[usize]) -> ArrayViewMutD<'a, T> {
    let dims: Vec<usize> = std::iter::once(batch).chain(shape.iter().copied()).collect();
    let len = dims.iter().product();
    ArrayViewMutD::from_shape(IxDyn(&dims), &mut buffer[..len]).expect("buffer sized by the model")
}

/// A shared borrow of `buffers[source]` and a unique one of `buffers[target]`
/// (`source != target`).
pub(crate) fn two_buffers<T>(buffers: &mut [Vec<T>], source: usize, target: usize) -> (&[T], &mut [T]) {
    assert_ne!(source, target);
    if source < target {
        let (low, high) = buffers.split_at_mut(target);
        (&low[source], &mut high[0])
    } else {
        let (low, high) = buffers.split_at_mut(source);
        (&high[0], &mut low[target])
    }
}

/// Grows `buffer` to at least `len` elements (never shrinks: reuse).
pub(crate) fn ensure_len<T: Element>(buffer: &mut Vec<T>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, T::zero());
    }
}

/// [`two_buffers`], or with `external` the caller's input in place of
/// `buffers[source]` (inference reading the batch where it lies instead of a
/// copy of it).
pub(crate) fn lend<'a, T>(
    buffers: &'a mut [Vec<T>],
    source: usize,
    target: usize,
    external: Option<&'a [T]>,
) -> (&'a [T], &'a mut [T]) {
    match external {
        Some(input) => (input, &mut buffers[target]),
        None => two_buffers(buffers, source, target),
    }
}
