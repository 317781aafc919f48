//! Checks of the machine before work starts: will it fit in memory?

use anyhow::{bail, Result};
use convnet_tensor::Sequential;

/// Bytes of RAM on this machine, from /proc/meminfo (None elsewhere).
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses a batch whose activations (plus the two gradient buffers) cannot
/// fit in this machine's memory, before anything is allocated.
pub fn check_memory(model: &Sequential<f32>, batch_size: usize) -> Result<()> {
    let needed = model.buffer_bytes(batch_size);
    if let Some(total) = total_memory() {
        if needed > total {
            bail!(
                "a batch of {batch_size} needs about {:.1} GB for activations and gradients, more than this machine's {:.1} GB: use a smaller --batch-size or --image-size",
                needed as f64 / 1e9,
                total as f64 / 1e9
            );
        }
    }
    Ok(())
}
