//! Batches: epoch order, augmentation, and a loader thread that prepares the
//! next batch while the current one trains.
//!
//! ```text
//! epoch e:  order = shuffle(0..N) with a generator seeded by (seed, e)
//!           batch b = images order[b*B .. (b+1)*B] as f32 (B, C, H, W), labels (B,)
//! ```
//!
//! [`BatchStream`] runs the assembly (byte-to-float conversion and augmentation)
//! on a background thread, one batch ahead, and recycles the batch buffers that
//! the consumer hands back with [`BatchStream::recycle`], so steady-state
//! training allocates nothing for data.

use crate::augment::Augmentation;
use crate::dataset::{ImageSet, PixelScale};
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::rng::{derive, rng_at};
use rand::seq::SliceRandom;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Order of the images in epoch `epoch`: a permutation seeded by
/// `(seed, epoch)` when shuffling, `0..n` otherwise.
pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut rng_at(seed, 0xE90C ^ epoch.wrapping_mul(0x100_0000_01B3)));
    }
    order
}

/// One batch.
#[derive(Debug)]
pub struct Batch {
    /// `(B, C, H, W)` scaled images.
    pub images: ArrayD<f32>,
    /// `(B,)` labels.
    pub labels: Vec<usize>,
    /// Positions of the images in the [`ImageSet`].
    pub indices: Vec<usize>,
    /// Index of the batch within its epoch.
    pub number: usize,
    /// Why the batch could not be assembled (an image of a streamed set that
    /// no longer decodes); the consumer must stop with it.
    pub error: Option<crate::error::DataError>,
}

/// How to cut an epoch into batches.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Images per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Shuffle every epoch.
    pub shuffle: bool,
    /// Seed of the order and the augmentation.
    pub seed: u64,
    /// The epoch (0-based).
    pub epoch: u64,
    /// Byte-to-float scaling.
    pub scale: PixelScale,
    /// Augmentation for training batches.
    pub augment: Option<Augmentation>,
    /// Start at this batch (to resume mid-epoch).
    pub first_batch: usize,
}

/// Assembles batch `number` of `order` into `batch`, resizing its buffers only
/// when the batch size changes.
fn assemble(
    set: &ImageSet,
    order: &[usize],
    config: &BatchConfig,
    number: usize,
    batch: &mut Batch,
    scratch: &mut Vec<f32>,
) {
    let start = number * config.batch_size;
    let indices = &order[start..(start + config.batch_size).min(order.len())];
    let [c, h, w] = set.image_shape();
    let shape = [indices.len(), c, h, w];
    if batch.images.shape() != shape {
        batch.images = ArrayD::zeros(IxDyn(&shape));
    }
    batch.indices.clear();
    batch.indices.extend_from_slice(indices);
    batch.number = number;
    let out = batch.images.as_slice_mut().expect("contiguous");
    batch.error = set.fill_batch(indices, config.scale, out, &mut batch.labels).err();
    if let Some(augment) = &config.augment {
        let len = c * h * w;
        scratch.resize(len, 0.0);
        let range = 255.0 * config.scale.factor();
        let epoch_seed = derive(config.seed, config.epoch);
        for (slot, &index) in indices.iter().enumerate() {
            let mut rng = rng_at(epoch_seed, index as u64);
            augment.apply(&mut out[slot * len..(slot + 1) * len], scratch, [c, h, w], range, &mut rng);
        }
    }
}

/// How many batches ahead the loader asks a disk-cached set's images from
/// the disk ([`ImageSet::prefetch`]): enough requests in flight to keep an SSD
/// busy, few enough that they stay in memory until used.
const READ_AHEAD_BATCHES: usize = 4;

/// Number of batches in an epoch of `n` images.
pub fn batches_per_epoch(n: usize, batch_size: usize) -> usize {
    n.div_ceil(batch_size.max(1))
}

/// Batches of one epoch, assembled one ahead on a background thread.
pub struct BatchStream {
    ready: Option<Receiver<Batch>>,
    returned: Option<SyncSender<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl BatchStream {
    /// Starts the loader thread for one epoch of `set`.
    pub fn new(set: Arc<ImageSet>, config: BatchConfig) -> Self {
        let (ready_tx, ready_rx) = sync_channel::<Batch>(1);
        let (returned_tx, returned_rx) = sync_channel::<Batch>(2);
        let worker = std::thread::spawn(move || {
            let order = epoch_order(set.len(), config.shuffle, config.seed, config.epoch);
            let total = batches_per_epoch(set.len(), config.batch_size);
            let mut scratch = Vec::new();
            // a disk-cached set: ask the disk for the next batches' images ahead
            let batch_indices = |number: usize| {
                let start = number * config.batch_size;
                &order[start.min(order.len())..(start + config.batch_size).min(order.len())]
            };
            for ahead in config.first_batch..(config.first_batch + READ_AHEAD_BATCHES).min(total) {
                set.prefetch(batch_indices(ahead));
            }
            for number in config.first_batch..total {
                if number + READ_AHEAD_BATCHES < total {
                    set.prefetch(batch_indices(number + READ_AHEAD_BATCHES));
                }
                let mut batch = returned_rx.try_recv().unwrap_or_else(|_| Batch {
                    images: ArrayD::zeros(IxDyn(&[0])),
                    labels: Vec::new(),
                    indices: Vec::new(),
                    number,
                    error: None,
                });
                assemble(&set, &order, &config, number, &mut batch, &mut scratch);
                if ready_tx.send(batch).is_err() {
                    return; // the consumer stopped early
                }
            }
        });
        BatchStream { ready: Some(ready_rx), returned: Some(returned_tx), worker: Some(worker) }
    }

    /// The next batch, or `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<Batch> {
        self.ready.as_ref()?.recv().ok()
    }

    /// Hands a used batch back so its buffers are reused.
    pub fn recycle(&mut self, batch: Batch) {
        if let Some(returned) = &self.returned {
            let _ = returned.try_send(batch);
        }
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.ready.take();
        self.returned.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Assembles every batch of an epoch in order on the calling thread (for
/// evaluation, where there is nothing to overlap with). Calls `visit` with each.
pub fn for_each_batch(
    set: &ImageSet,
    batch_size: usize,
    scale: PixelScale,
    mut visit: impl FnMut(&Batch),
) -> crate::error::Result<()> {
    let config = BatchConfig { batch_size, shuffle: false, seed: 0, epoch: 0, scale, augment: None, first_batch: 0 };
    let order: Vec<usize> = (0..set.len()).collect();
    let mut batch =
        Batch { images: ArrayD::zeros(IxDyn(&[0])), labels: Vec::new(), indices: Vec::new(), number: 0, error: None };
    let mut scratch = Vec::new();
    for number in 0..batches_per_epoch(set.len(), batch_size) {
        assemble(set, &order, &config, number, &mut batch, &mut scratch);
        if let Some(error) = batch.error.take() {
            return Err(error);
        }
        visit(&batch);
    }
    Ok(())
}
