//! The transport of data-parallel training: the few collective operations the
//! step protocol ([`super::distributed`]) needs from the processes of a run,
//! and their one-process form. The MPI form is `mpi_transport` (feature `mpi`),
//! compiled with the `mpi` feature; nothing else in the program names MPI.

/// The processes of a run, as the step protocol sees them. `Send + Sync` so
/// that a model's BatchNorms can hold the gather they call
/// (`distributed::RanksBatchSync`): every call still comes from the thread
/// running the training loop.
pub trait Transport: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;

    /// Number of processes.
    fn size(&self) -> usize;

    /// `out := every rank's local, concatenated in rank order`, rank `r`
    /// contributing `counts[r]` values (`out` holds their sum).
    fn all_gather_f32(&self, local: &[f32], counts: &[usize], out: &mut [f32]);

    /// `out := every rank's local` (the same count on each), in rank order.
    fn all_gather_u64(&self, local: &[u64], out: &mut [u64]);

    /// [`Transport::all_gather_f32`] for f64 values (BatchNorm's per-image sums).
    fn all_gather_f64(&self, local: &[f64], counts: &[usize], out: &mut [f64]);

    /// Sends `send` to rank `partner` and receives `receive.len()` values from
    /// it, in one step (both ranks call this with each other as partner).
    fn exchange(&self, partner: usize, send: &[f32], receive: &mut [f32]);

    /// Waits for every rank.
    fn barrier(&self);

    /// Ends the whole job with `code` (after an error on this rank).
    fn abort(&self, code: i32) -> !;
}

/// This process alone: rank 0 of 1; a gather is a copy.
pub struct Alone;

impl Transport for Alone {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_gather_f32(&self, local: &[f32], _counts: &[usize], out: &mut [f32]) {
        out.copy_from_slice(local);
    }

    fn all_gather_u64(&self, local: &[u64], out: &mut [u64]) {
        out.copy_from_slice(local);
    }

    fn all_gather_f64(&self, local: &[f64], _counts: &[usize], out: &mut [f64]) {
        out.copy_from_slice(local);
    }

    fn exchange(&self, partner: usize, _send: &[f32], _receive: &mut [f32]) {
        unreachable!("one process has no partner {partner}")
    }

    fn barrier(&self) {}

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
