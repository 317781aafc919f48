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
use crate::dataset::ImageSet;
use crate::format::PixelScale;
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
    /// Position of this part's first image in the whole batch (0 unless the
    /// batch is shared between processes, see [`Shard`]).
    pub first_image: usize,
    /// Images in the whole batch (this part has `labels.len()` of them).
    pub batch_total: usize,
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
    /// This process's part of every batch (the whole batch by default).
    pub shard: Shard,
}

/// The part of each batch one of `ranks` processes trains on, in data-parallel
/// training: every process draws the same epoch order and takes a contiguous
/// run of each batch.
///
/// When `ranks` divides the batch's gradient leaves
/// ([`convnet_tensor::gradient_tree::gradient_leaves`]: 4 for a batch of 32),
/// each process takes a whole block of leaves and reduces it as one subtree, so
/// the summed gradient has the bits of one process doing the whole batch.
/// Otherwise the parts are as equal as possible, each reduced image by image:
/// every process still ends with the same bits as the others, but not those of
/// a single process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This process, `0..ranks`.
    pub rank: usize,
    /// Processes sharing each batch.
    pub ranks: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { rank: 0, ranks: 1 }
    }
}

impl Shard {
    /// The positions in a batch of `batch` images that `rank` takes, and the
    /// gradient leaves it reduces them as.
    pub fn part(&self, batch: usize) -> (std::ops::Range<usize>, usize) {
        self.part_of(self.rank, batch)
    }

    /// [`Self::part`] for any rank (every process knows every part's size).
    pub fn part_of(&self, rank: usize, batch: usize) -> (std::ops::Range<usize>, usize) {
        let leaves = convnet_tensor::gradient_tree::gradient_leaves(batch);
        if self.ranks <= leaves && leaves.is_multiple_of(self.ranks) {
            let per_rank = batch / self.ranks;
            (rank * per_rank..(rank + 1) * per_rank, leaves / self.ranks)
        } else {
            (rank * batch / self.ranks..(rank + 1) * batch / self.ranks, 1)
        }
    }
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
    let whole = &order[start..(start + config.batch_size).min(order.len())];
    let (part, _) = config.shard.part(whole.len());
    let indices = &whole[part.clone()];
    batch.first_image = part.start;
    batch.batch_total = whole.len();
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
                let whole = &order[start.min(order.len())..(start + config.batch_size).min(order.len())];
                &whole[config.shard.part(whole.len()).0]
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
                    first_image: 0,
                    batch_total: 0,
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
    visit: impl FnMut(&Batch),
) -> crate::error::Result<()> {
    for_each_batch_in(set, 0..set.len(), batch_size, scale, visit)
}

/// [`for_each_batch`] over the images `range` of the set only (a process's
/// share of a validation set).
pub fn for_each_batch_in(
    set: &ImageSet,
    range: std::ops::Range<usize>,
    batch_size: usize,
    scale: PixelScale,
    mut visit: impl FnMut(&Batch),
) -> crate::error::Result<()> {
    let config = BatchConfig {
        batch_size,
        shuffle: false,
        seed: 0,
        epoch: 0,
        scale,
        augment: None,
        first_batch: 0,
        shard: Shard::default(),
    };
    let order: Vec<usize> = range.collect();
    let mut batch = Batch {
        images: ArrayD::zeros(IxDyn(&[0])),
        labels: Vec::new(),
        indices: Vec::new(),
        number: 0,
        first_image: 0,
        batch_total: 0,
        error: None,
    };
    let mut scratch = Vec::new();
    for number in 0..batches_per_epoch(order.len(), batch_size) {
        assemble(set, &order, &config, number, &mut batch, &mut scratch);
        if let Some(error) = batch.error.take() {
            return Err(error);
        }
        visit(&batch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn parts_cover_the_batch_in_order_and_align_with_leaves() {
        for ranks in 1..=5 {
            for batch in [1, 3, 7, 20, 32, 33] {
                let shard = Shard { rank: 0, ranks };
                let parts: Vec<_> = (0..ranks).map(|r| shard.part_of(r, batch)).collect();
                // contiguous, in rank order, covering 0..batch
                assert_eq!(parts[0].0.start, 0);
                assert_eq!(parts[ranks - 1].0.end, batch);
                assert!(parts.windows(2).all(|w| w[0].0.end == w[1].0.start));
                let leaves = convnet_tensor::gradient_tree::gradient_leaves(batch);
                if leaves.is_multiple_of(ranks) {
                    // whole blocks of leaves: the same tree as one process
                    assert!(parts.iter().all(|(range, l)| range.len() == batch / ranks && *l == leaves / ranks));
                } else {
                    assert!(parts.iter().all(|(_, l)| *l == 1), "ranks {ranks} batch {batch}");
                }
            }
        }
        assert_eq!(Shard { rank: 1, ranks: 2 }.part(32), (16..32, 2));
        assert_eq!(Shard { rank: 2, ranks: 3 }.part(32), (21..32, 1));
    }
}
