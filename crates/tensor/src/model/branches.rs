//! What the blocks with branches ([`crate::model::residual`],
//! [`crate::model::concat`]) share: each branch is a small [`Sequential`],
//! and these helpers pass the model's settings into them and name what is
//! inside.

use crate::element::Element;
use crate::layer::{Layer, Mode};
use crate::model::sequential::Sequential;
use ndarray::ArrayD;
use rayon::prelude::*;

/// The mode for branch `branch` of a block: in training, the block's seed
/// mixed with the branch number, so two branches never draw the same masks.
pub(crate) fn branch_mode(mode: Mode, branch: usize) -> Mode {
    match mode {
        Mode::Train { seed, first_image } => Mode::Train { seed: crate::rng::derive(seed, branch as u64), first_image },
        Mode::Eval => Mode::Eval,
    }
}

/// `target += addend`, element by element (in parallel: each element is one
/// addition, so the result does not depend on the thread count).
pub(crate) fn add_into<T: Element>(target: &mut [T], addend: &[T]) {
    const CHUNK: usize = 1 << 14;
    target.par_chunks_mut(CHUNK).zip(addend.par_chunks(CHUNK)).for_each(|(target, addend)| {
        for (t, &a) in target.iter_mut().zip(addend) {
            *t += a;
        }
    });
}

/// `target = a + b`, element by element (in parallel: each element is one
/// addition, so the result does not depend on the thread count). The same
/// bits as copying `a` into `target` and then [`add_into`] `b`, in one pass.
pub(crate) fn add_pair<T: Element>(target: &mut [T], a: &[T], b: &[T]) {
    add_pair_then(target, a, b, false);
}

/// [`add_pair`], then with `relu` `max(., 0)` (the ReLU after a residual
/// block, in inference): `y > 0 ? y : 0` as [`crate::Relu`] computes it, in
/// the same pass.
pub(crate) fn add_pair_then<T: Element>(target: &mut [T], a: &[T], b: &[T], relu: bool) {
    const CHUNK: usize = 1 << 14;
    let sources = a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK));
    target.par_chunks_mut(CHUNK).zip(sources).for_each(|(target, (a, b))| {
        let pairs = target.iter_mut().zip(a).zip(b);
        match relu {
            false => pairs.for_each(|((t, &a), &b)| *t = a + b),
            true => pairs.for_each(|((t, &a), &b)| {
                let sum = a + b;
                *t = if sum > T::zero() { sum } else { T::zero() };
            }),
        }
    });
}

/// The parameter names of named branches, `"{branch}.{name}"`, in order.
pub(crate) fn nested_param_names<'a, T: Element>(
    branches: impl Iterator<Item = (String, &'a Sequential<T>)>,
) -> Vec<String> {
    branches
        .flat_map(|(branch, model)| model.param_names().into_iter().map(move |name| format!("{branch}.{name}")))
        .collect()
}

/// The buffers of named branches, `"{branch}.{name}"`, in order.
pub(crate) fn nested_buffers<'a, T: Element>(
    branches: impl Iterator<Item = (String, &'a Sequential<T>)>,
) -> Vec<(String, &'a ArrayD<T>)> {
    branches
        .flat_map(|(branch, model)| model.buffers().into_iter().map(move |(n, b)| (format!("{branch}.{n}"), b)))
        .collect()
}

/// Mutable [`nested_buffers`].
pub(crate) fn nested_buffers_mut<'a, T: Element>(
    branches: impl Iterator<Item = (String, &'a mut Sequential<T>)>,
) -> Vec<(String, &'a mut ArrayD<T>)> {
    branches
        .flat_map(|(branch, model)| model.buffers_mut().into_iter().map(move |(n, b)| (format!("{branch}.{n}"), b)))
        .collect()
}

/// Every layer of `models`, each followed by the layers inside it.
pub(crate) fn sublayers_of<'a, T: Element>(models: impl Iterator<Item = &'a Sequential<T>>) -> Vec<&'a dyn Layer<T>> {
    let mut all = Vec::new();
    for model in models {
        for layer in model.layers() {
            all.push(layer.as_ref());
            all.extend(layer.sublayers());
        }
    }
    all
}

/// Mutable [`sublayers_of`]: the plain layers first, then the blocks' insides
/// (a layer and its insides cannot be lent out at once).
pub(crate) fn sublayers_of_mut<'a, T: Element>(
    models: impl Iterator<Item = &'a mut Sequential<T>>,
) -> Vec<&'a mut dyn Layer<T>> {
    let mut all: Vec<&'a mut dyn Layer<T>> = Vec::new();
    for model in models {
        for layer in model.layers_mut() {
            if layer.sublayers().is_empty() {
                all.push(&mut **layer);
            } else {
                all.extend(layer.sublayers_mut());
            }
        }
    }
    all
}

/// [`Sequential::set_fused`] on every branch.
pub(crate) fn set_fused_all<'a, T: Element>(models: impl Iterator<Item = &'a mut Sequential<T>>, fuse: bool) {
    for model in models {
        model.set_fused(fuse);
    }
}
