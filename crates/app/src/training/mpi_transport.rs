//! [`Transport`] over MPI (Open MPI or MPICH), for `mpirun -n N convnet train`:
//! the whole of the program's MPI code. Gathers are `MPI_Allgather(v)` (they
//! move data, they add nothing, so their bits do not depend on MPI's choice of
//! algorithm); the only sums are the step protocol's own, in a fixed order.

use super::transport::Transport;
use anyhow::{bail, Result};
use mpi::datatype::PartitionMut;
use mpi::point_to_point::send_receive_into;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};

/// The MPI world of this job.
pub struct MpiTransport {
    /// Finalises MPI when dropped.
    _universe: mpi::environment::Universe,
    world: SimpleCommunicator,
}

// SAFETY: an MPI communicator is a handle that MPI, initialised with threads
// funnelled, lets only the thread that initialised it use. convnet makes every
// MPI call from that one thread, the one running the training loop: the step
// protocol, and BatchNorm's gathers, which the layers' forward and backward
// make outside any parallel region (the rayon workers never reach them). The
// bounds let a model holding the gather stay `Send + Sync`, as every layer
// must be; they do not let MPI be called from another thread.
unsafe impl Send for MpiTransport {}
// SAFETY: as for `Send` above: only the training loop's thread calls MPI.
unsafe impl Sync for MpiTransport {}

impl MpiTransport {
    /// Initialises MPI (threads funnelled: only the main thread calls MPI);
    /// ranks other than 0 send their standard output to /dev/null.
    pub fn init() -> Result<MpiTransport> {
        let Some((universe, _threading)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
            bail!("MPI was already initialised");
        };
        let world = universe.world();
        if world.rank() != 0 {
            silence_stdout();
        }
        Ok(MpiTransport { _universe: universe, world })
    }
}

impl MpiTransport {
    /// `MPI_Allgather` when every rank sends as many values, else `MPI_Allgatherv`.
    fn all_gather_counts<V: mpi::datatype::Equivalence>(&self, local: &[V], counts: &[usize], out: &mut [V]) {
        if counts.iter().all(|&c| c == local.len()) {
            self.world.all_gather_into(local, out);
        } else {
            let count: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
            let displacements: Vec<i32> =
                counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c as i32))).collect();
            let mut partition = PartitionMut::new(out, count, displacements);
            self.world.all_gather_varcount_into(local, &mut partition);
        }
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_gather_f32(&self, local: &[f32], counts: &[usize], out: &mut [f32]) {
        self.all_gather_counts(local, counts, out);
    }

    fn all_gather_f64(&self, local: &[f64], counts: &[usize], out: &mut [f64]) {
        self.all_gather_counts(local, counts, out);
    }

    fn all_gather_u64(&self, local: &[u64], out: &mut [u64]) {
        self.world.all_gather_into(local, out);
    }

    fn exchange(&self, partner: usize, send: &[f32], receive: &mut [f32]) {
        let partner = self.world.process_at_rank(partner as i32);
        send_receive_into(send, &partner, receive, &partner);
    }

    fn barrier(&self) {
        self.world.barrier();
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// Sends this process's standard output to /dev/null (ranks other than 0).
fn silence_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 on two valid descriptors; descriptor 1 is replaced atomically
        // and `null` is closed when dropped (descriptor 1 keeps its own reference).
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}
