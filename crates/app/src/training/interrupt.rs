//! Ctrl-C and SIGTERM during training: the first one asks the training loop
//! to stop after the current step (it writes a checkpoint that records the
//! position inside the epoch, says how to continue, and exits with 130 or
//! 143); a second one exits at once, leaving the last checkpoint as it was.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The signal handlers of a training run, removed on drop.
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
    ids: Vec<SigId>,
}

impl Interrupt {
    /// Installs the handlers for SIGINT and SIGTERM.
    pub fn install() -> std::io::Result<Interrupt> {
        let signal = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for (number, code) in [(SIGINT, 130), (SIGTERM, 143)] {
            // handlers run in this order: the first signal finds `seen` false
            // and only sets it; a second one finds it true and exits at once
            ids.push(signal_hook::flag::register_conditional_shutdown(number, code, seen.clone())?);
            ids.push(signal_hook::flag::register(number, seen.clone())?);
            ids.push(signal_hook::flag::register_usize(number, signal.clone(), number as usize)?);
        }
        Ok(Interrupt { signal, ids })
    }

    /// The signal received so far, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            number => Some(number as i32),
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Training stopped by a signal after writing a checkpoint; the command prints
/// `message` and exits with [`Interrupted::exit_code`].
#[derive(Debug)]
pub struct Interrupted {
    /// The signal (SIGINT or SIGTERM).
    pub signal: i32,
    /// "Interrupted at epoch 3, batch 41 of 157; continue with: convnet train --resume DIR".
    pub message: String,
}

impl Interrupted {
    /// 128 + the signal: 130 for SIGINT, 143 for SIGTERM, as shells report them.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal) as u8
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}
