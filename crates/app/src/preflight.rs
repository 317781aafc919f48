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

/// Bytes of f32 activations and gradients one training batch needs: every
/// activation plus the two gradient buffers (each as large as the largest
/// activation). The same estimate `summary` prints.
pub fn batch_memory(model: &Sequential<f32>, batch_size: usize) -> u64 {
    let elements: Vec<usize> = model.shapes().iter().map(|s| s.iter().product::<usize>()).collect();
    let per_sample = elements.iter().sum::<usize>() + 2 * elements.iter().max().copied().unwrap_or(0);
    (batch_size as u64).saturating_mul(per_sample as u64).saturating_mul(4)
}

/// Refuses a batch whose activations (plus the two gradient buffers) cannot
/// fit in this machine's memory, before anything is allocated.
pub fn check_memory(model: &Sequential<f32>, batch_size: usize) -> Result<()> {
    let needed = batch_memory(model, batch_size);
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
