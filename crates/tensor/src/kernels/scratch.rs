//! Per-thread scratch buffers, reused across calls so the hot loops never
//! allocate after the first batch.

use std::sync::Mutex;

/// One value per rayon worker thread (plus one for callers outside a pool),
/// kept from call to call. A task takes the value of the thread it runs on;
/// the lock is never contended because a thread runs one task at a time.
#[derive(Debug, Default)]
pub struct PerThread<V> {
    slots: Vec<Mutex<V>>,
}

impl<V: Default> PerThread<V> {
    /// Makes sure there is one value per thread of the current rayon pool.
    pub fn ensure_threads(&mut self) {
        let wanted = rayon::current_num_threads() + 1;
        while self.slots.len() < wanted {
            self.slots.push(Mutex::new(V::default()));
        }
    }

    /// Runs `work` with this thread's value (as the last user left it).
    pub fn with<R>(&self, work: impl FnOnce(&mut V) -> R) -> R {
        let slot =
            rayon::current_thread_index().map(|index| index + 1).filter(|&slot| slot < self.slots.len()).unwrap_or(0);
        let mut value = match self.slots[slot].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        work(&mut value)
    }
}

/// One growable buffer per rayon worker thread ([`PerThread`]).
#[derive(Debug, Default)]
pub struct Scratch<T> {
    buffers: PerThread<Vec<T>>,
}

impl<T: Copy + Default> Scratch<T> {
    /// Makes sure there is one buffer per thread of the current rayon pool.
    pub fn ensure_threads(&mut self) {
        self.buffers.ensure_threads();
    }

    /// Runs `work` with this thread's buffer, grown to at least `len` elements.
    /// The buffer's contents are whatever the last user left: callers overwrite.
    pub fn with<R>(&self, len: usize, work: impl FnOnce(&mut [T]) -> R) -> R {
        self.buffers.with(|buffer| {
            if buffer.len() < len {
                buffer.resize(len, T::default());
            }
            work(&mut buffer[..len])
        })
    }
}
