//! Statistics of a whole batch when several processes share it: what a
//! synchronised BatchNorm needs. In training BatchNorm normalises with the
//! mean and variance of the *whole* `--batch-size` batch; a process holding
//! images 8..16 of it must see the other processes' images' sums too.
//!
//! Every sum a BatchNorm takes is first a per-image partial (one number per
//! image and channel, summed in pixel order); the partials of all images are
//! then added in batch order. A [`BatchSync`] gathers the partials of every
//! process's images, in batch order, so each process adds exactly what one
//! process holding the whole batch adds: the same bits on 1, 2 or 4 processes.
//! One process needs no [`BatchSync`]: its partials are the batch's.

/// Gathers per-image values from every process sharing a batch.
pub trait BatchSync: Send + Sync {
    /// Every image's `per_image` values of the current batch, in batch order,
    /// given this process's `local` images' values (`local.len()` is its
    /// image count times `per_image`).
    fn gather_images(&self, local: &[f64], per_image: usize) -> Vec<f64>;
}
