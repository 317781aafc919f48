//! Data-parallel training: the step protocol of `mpirun -n N convnet train ...`.
//!
//! The collective operations come from a [`Transport`]
//! ([`super::transport`]: one process alone, or `mpi_transport` (feature `mpi`)).
//! A single-process run meets none of this inside a step: it computes its
//! own loss ([`super::epoch`]); [`Cluster::finish_step`] runs only with
//! several ranks.
//!
//! Every process (rank) holds the whole model and the whole data set, draws
//! the same epoch order, and trains on its contiguous part of every batch
//! ([`Shard`]). After its backward pass each rank has the gradient of its part
//! as one subtree of the batch's gradient tree ([`convnet_tensor::gradient_tree`]);
//! the ranks exchange these subtrees and every rank finishes the tree in the
//! same order, so every rank applies the same update and holds the same bits:
//!
//! ```text
//! step:  forward + backward of my part   -> grad_part (P floats)      P = parameters
//!        all-gather grad_part             -> N x P floats, rank order
//!        tree_sum over the N parts        -> the batch's gradient, same bits on every rank
//!        all-gather per-image losses, correct counts, "stop" flags
//!        optimizer step (identical everywhere)
//! ```
//!
//! With N = 1, 2 or 4 (dividing the batch's 4 gradient leaves) the tree is the
//! one a single process builds, so the weights are bit-identical to
//! `convnet train` without MPI. Open MPI's own `MPI_Allreduce` is not used: its
//! result depends on the algorithm it picks for the message size and rank count.
//!
//! Only rank 0 writes files and prints; the other ranks' standard output goes
//! to /dev/null (their errors still reach the terminal). An error on any rank
//! aborts the whole job (`MPI_Abort`), so no rank is left waiting in a
//! collective; a rank that dies is noticed by `mpirun`, which ends the job.

use super::transport::{Alone, Transport};
use anyhow::{bail, Result};
use convnet_data::batch::Shard;
use convnet_data::{ImageSet, PixelScale};
use convnet_io::metrics::{predict_probabilities, Predictions};
use convnet_tensor::batch_sync::BatchSync;
use convnet_tensor::gradient_tree::tree_sum;
use convnet_tensor::{Sequential, SoftmaxCrossEntropy};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ranks' BatchNorm gather: every rank's images' per-image sums of the
/// current batch, in batch order (rank `r` holds [`Shard::part_of`]`(r)`).
struct RanksBatchSync {
    transport: Arc<dyn Transport>,
    shard: Shard,
    batch_total: Arc<AtomicUsize>,
}

impl BatchSync for RanksBatchSync {
    fn gather_images(&self, local: &[f64], per_image: usize) -> Vec<f64> {
        let batch = self.batch_total.load(Ordering::Relaxed);
        let counts: Vec<usize> =
            (0..self.shard.ranks).map(|rank| self.shard.part_of(rank, batch).0.len() * per_image).collect();
        let mut out = vec![0.0; counts.iter().sum()];
        self.transport.all_gather_f64(local, &counts, &mut out);
        out
    }
}

/// The processes of one training run (just this one, or an MPI world) and
/// the step protocol they follow.
pub struct Cluster {
    transport: Arc<dyn Transport>,
    /// Images in the batch being trained (for the BatchNorm gathers).
    batch_total: Arc<AtomicUsize>,
    /// Time spent exchanging data, since the last [`Cluster::take_communication`].
    communication: Cell<Duration>,
    /// The gradient of this rank's part, flattened (reused).
    gradient: RefCell<Vec<f32>>,
    /// Every rank's part, `N x P`, or a partner's segment (reused).
    gathered: RefCell<Vec<f32>>,
}

/// What the ranks agree on after a step.
#[derive(Clone, Copy, Debug)]
pub struct StepTotals {
    /// The batch's mean loss (the bits one process would compute).
    pub loss: f32,
    /// Images of the batch whose arg-max was right.
    pub correct: usize,
    /// Some rank was asked to stop (Ctrl-C / SIGTERM), with this signal.
    pub stop: Option<i32>,
}

/// Whether this process was started by an MPI launcher, and as which of how many.
fn launched_by_mpirun() -> Option<(usize, usize)> {
    let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok()?.parse::<usize>().ok());
    let size = var(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"])?;
    let rank = var(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]).unwrap_or(0);
    Some((rank, size))
}

impl Cluster {
    /// This process alone.
    pub fn single() -> Cluster {
        Cluster::over(Arc::new(Alone))
    }

    fn over(transport: Arc<dyn Transport>) -> Cluster {
        Cluster {
            transport,
            batch_total: Arc::new(AtomicUsize::new(0)),
            communication: Cell::new(Duration::ZERO),
            gradient: RefCell::new(Vec::new()),
            gathered: RefCell::new(Vec::new()),
        }
    }

    /// The MPI world when started by `mpirun` (a binary built with the `mpi`
    /// feature), else this process alone.
    pub fn join() -> Result<Cluster> {
        let Some((_, size)) = launched_by_mpirun() else { return Ok(Cluster::single()) };
        #[cfg(feature = "mpi")]
        {
            let _ = size;
            Ok(Cluster::over(Arc::new(super::mpi_transport::MpiTransport::init()?)))
        }
        #[cfg(not(feature = "mpi"))]
        {
            if size > 1 {
                bail!(
                    "started by mpirun with {size} processes, but this convnet was built without MPI: \
                     build it with `cargo build --release -p convnet-app --features mpi`"
                );
            }
            Ok(Cluster::single())
        }
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.transport.rank()
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.transport.size()
    }

    /// Rank 0: the one that writes files and prints.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// The part of every batch this rank trains on.
    pub fn shard(&self) -> Shard {
        Shard { rank: self.rank(), ranks: self.size() }
    }

    /// Says which batch is trained next (its size, for the BatchNorm gathers).
    pub fn begin_batch(&self, batch_total: usize) {
        self.batch_total.store(batch_total, Ordering::Relaxed);
    }

    /// With several ranks: the gather a synchronised BatchNorm needs (see
    /// [`convnet_tensor::batch_sync`]); `None` for one process.
    pub fn batch_sync(&self) -> Option<Arc<dyn BatchSync>> {
        (self.size() > 1).then(|| {
            let sync = RanksBatchSync {
                transport: self.transport.clone(),
                shard: self.shard(),
                batch_total: self.batch_total.clone(),
            };
            Arc::new(sync) as Arc<dyn BatchSync>
        })
    }

    /// Ends the whole job with `code` (after an error on this rank).
    pub fn abort(&self, code: i32) -> ! {
        self.transport.abort(code)
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        self.transport.barrier();
    }

    /// Communication time since the last call.
    pub fn take_communication(&self) -> Duration {
        self.communication.replace(Duration::ZERO)
    }

    /// Runs `exchange`, counting its time as communication.
    fn timed<R>(&self, exchange: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let result = exchange();
        self.communication.set(self.communication.get() + started.elapsed());
        result
    }

    /// Every rank's `local` (of `counts[r]` values on rank `r`), concatenated in rank order.
    fn gather_f32(&self, local: &[f32], counts: &[usize], out: &mut Vec<f32>) {
        out.clear();
        out.resize(counts.iter().sum(), 0.0);
        self.timed(|| self.transport.all_gather_f32(local, counts, out));
    }

    /// Every rank's `local` (the same count on each), concatenated in rank order.
    fn gather_u64(&self, local: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; local.len() * self.size()];
        self.transport.all_gather_u64(local, &mut out);
        out
    }

    /// After this rank's forward and backward of its part of a batch of
    /// `batch_total` images: makes every rank's model gradient the batch's
    /// (the top of the gradient tree, see the module docs), and agrees on the
    /// loss, the correct count and whether to stop.
    pub fn finish_step(
        &self,
        model: &mut Sequential<f32>,
        sample_losses: &[f32],
        batch_total: usize,
        correct: usize,
        stop: Option<i32>,
    ) -> StepTotals {
        let shard = self.shard();
        let counts: Vec<usize> = (0..self.size()).map(|r| shard.part_of(r, batch_total).0.len()).collect();
        let mut losses = Vec::new();
        self.gather_f32(sample_losses, &counts, &mut losses);
        let loss = SoftmaxCrossEntropy::sum_in_order(&losses) * (1.0 / batch_total.max(1) as f32);
        let flags = self.gather_u64(&[correct as u64, stop.map_or(0, |s| s as u64 + 1)]);
        let correct = flags.chunks(2).map(|f| f[0] as usize).sum();
        let stop = flags.chunks(2).find_map(|f| f[1].checked_sub(1).map(|s| s as i32));
        if self.size() > 1 {
            let mut gradient = self.gradient.borrow_mut();
            gradient.clear();
            for param in model.trainable_params() {
                gradient.extend(param.grad.iter());
            }
            if self.size().is_power_of_two() {
                self.tree_allreduce(&mut gradient);
            } else {
                // any other rank count: every rank gathers every part and adds them as the tree
                let parameters = gradient.len();
                let mut gathered = self.gathered.borrow_mut();
                self.gather_f32(&gradient, &vec![parameters; self.size()], &mut gathered);
                self.timed(|| {
                    let mut parts: Vec<&mut [f32]> = gathered.chunks_mut(parameters.max(1)).collect();
                    tree_sum(&mut parts);
                });
                gradient.copy_from_slice(&gathered[..parameters]);
            }
            let mut offset = 0;
            for param in model.trainable_params_mut() {
                let len = param.grad.len();
                param.grad.as_slice_mut().expect("contiguous").copy_from_slice(&gradient[offset..offset + len]);
                offset += len;
            }
        }
        StepTotals { loss, correct, stop }
    }

    /// `data := sum over ranks of data`, for a power-of-two number of ranks,
    /// added as the balanced tree over the ranks in rank order — the bits of
    /// [`tree_sum`] over the ranks' vectors — while each rank sends and
    /// receives only `2 (N-1)/N` of the vector (an all-gather would move
    /// `N - 1` times it):
    ///
    /// ```text
    /// reduce-scatter, k = 0, 1, ...: partner = rank xor 2^k; split my segment in
    ///     halves, keep the lower half if bit k of my rank is 0 (else the upper),
    ///     send the other half, add the partner's copy of mine: after step k my
    ///     segment holds the sum over a block of 2^(k+1) ranks, a whole subtree
    /// all-gather, k = ..., 1, 0: swap segments with the same partners, in reverse
    /// ```
    fn tree_allreduce(&self, data: &mut [f32]) {
        let (rank, size) = (self.rank(), self.size());
        if size == 1 {
            return; // one process: its vector is the sum
        }
        let mut received = self.gathered.borrow_mut();
        self.timed(|| {
            let (mut lo, mut hi) = (0usize, data.len());
            let mut segments = Vec::new();
            let mut bit = 1usize;
            while bit < size {
                let mid = lo + (hi - lo) / 2;
                let (keep, give) = if rank & bit == 0 { ((lo, mid), (mid, hi)) } else { ((mid, hi), (lo, mid)) };
                received.clear();
                received.resize(keep.1 - keep.0, 0.0);
                self.transport.exchange(rank ^ bit, &data[give.0..give.1], &mut received[..]);
                for (mine, &theirs) in data[keep.0..keep.1].iter_mut().zip(received.iter()) {
                    *mine += theirs; // two operands: the same bits in either order
                }
                segments.push((keep, give));
                (lo, hi) = keep;
                bit <<= 1;
            }
            for ((keep, give), bit) in segments.into_iter().rev().zip((0..).map(|k| size >> (k + 1))) {
                received.clear();
                received.resize(give.1 - give.0, 0.0);
                self.transport.exchange(rank ^ bit, &data[keep.0..keep.1], &mut received[..]);
                data[give.0..give.1].copy_from_slice(&received);
            }
        });
    }

    /// Predictions for `set`, each rank computing a contiguous share of it.
    pub fn predict(
        &self,
        model: &mut Sequential<f32>,
        set: &ImageSet,
        batch_size: usize,
        scale: PixelScale,
    ) -> Result<Predictions> {
        let classes = model.output_shape()[0];
        let share = |rank: usize| rank * set.len() / self.size()..(rank + 1) * set.len() / self.size();
        let (probabilities, losses) = predict_probabilities(model, set, share(self.rank()), batch_size, scale)?;
        if self.size() == 1 {
            return Ok(Predictions::from_parts(probabilities, &losses, classes));
        }
        let counts: Vec<usize> = (0..self.size()).map(|r| share(r).len()).collect();
        let (mut all_losses, mut all_probabilities) = (Vec::new(), Vec::new());
        self.gather_f32(&losses, &counts, &mut all_losses);
        let probability_counts: Vec<usize> = counts.iter().map(|c| c * classes).collect();
        self.gather_f32(&probabilities, &probability_counts, &mut all_probabilities);
        Ok(Predictions::from_parts(all_probabilities, &all_losses, classes))
    }

    /// Whether any rank was asked to stop, and by which signal.
    pub fn any_stop(&self, stop: Option<i32>) -> Option<i32> {
        let flags = self.gather_u64(&[stop.map_or(0, |s| s as u64 + 1)]);
        flags.iter().find_map(|f| f.checked_sub(1).map(|s| s as i32))
    }

    /// Fails unless every rank holds bit-identical weights (checked at the end
    /// of every epoch: a difference would be a bug, and is an error).
    pub fn check_same_weights(&self, model: &Sequential<f32>, when: &str) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let mut hash = 0xcbf2_9ce4_8422_2325u64; // FNV-1a over the weights' bits
        for param in model.params() {
            for value in param.value.iter() {
                for byte in value.to_bits().to_le_bytes() {
                    hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        let hashes = self.gather_u64(&[hash]);
        if hashes.iter().any(|&h| h != hashes[0]) {
            let listed: Vec<String> = hashes.iter().enumerate().map(|(r, h)| format!("rank {r} {h:016x}")).collect();
            bail!("the ranks' weights differ {when} ({}): this is a bug, please report it", listed.join(", "));
        }
        Ok(())
    }
}
