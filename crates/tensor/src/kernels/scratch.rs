//! Per-thread scratch buffers, reused across calls so the hot loops never
//! allocate after the first batch.

use std::sync::Mutex;

/// One growable buffer per rayon worker thread (plus one for callers outside a
/// pool). A task takes the buffer of the thread it runs on; the lock is never
/// contended because a thread runs one task at a time.
#[derive(Debug, Default)]
pub struct Scratch<T> {
    buffers: Vec<Mutex<Vec<T>>>,
}

impl<T: Copy + Default> Scratch<T> {
    /// Makes sure there is one buffer per thread of the current rayon pool.
    pub fn ensure_threads(&mut self) {
        let wanted = rayon::current_num_threads() + 1;
        while self.buffers.len() < wanted {
            self.buffers.push(Mutex::new(Vec::new()));
        }
    }

    /// Runs `work` with this thread's buffer, grown to at least `len` elements.
    /// The buffer's contents are whatever the last user left: callers overwrite.
    pub fn with<R>(&self, len: usize, work: impl FnOnce(&mut [T]) -> R) -> R {
        let slot =
            rayon::current_thread_index().map(|index| index + 1).filter(|&slot| slot < self.buffers.len()).unwrap_or(0);
        let mut buffer = match self.buffers[slot].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buffer.len() < len {
            buffer.resize(len, T::default());
        }
        work(&mut buffer[..len])
    }
}
