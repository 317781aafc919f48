//! Checks of the machine before work starts: will it fit in memory?
//!
//! "Memory available" is the smaller of the machine's available physical
//! memory (`MemAvailable`) and what the process's memory cgroup still allows
//! (its limit, or any ancestor's, minus its usage; cgroup v1
//! `memory.limit_in_bytes` or v2 `memory.max`), as a container or a shared
//! server sets it.

use anyhow::{anyhow, bail, Result};
use convnet_data::error::human_bytes;
use convnet_tensor::Sequential;
use std::path::{Path, PathBuf};

/// Share of the available memory the decoded images may take; the rest is for
/// the model's buffers, the batches in flight and everything else.
pub const IMAGES_SHARE: f64 = 0.75;

/// Memory this process can still use, and what limits it.
#[derive(Clone, Debug, PartialEq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// "available physical memory" or "the cgroup memory limit of 3.0 GB".
    pub source: String,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The tightest cgroup limit on this process, minus what its cgroup uses.
fn cgroup_available() -> Option<Available> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<Available> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let relative = path.trim_start_matches('/');
        // (directory of the process's cgroup, limit file, usage file)
        let candidates: Vec<(PathBuf, &str, &str)> = if controllers.split(',').any(|c| c == "memory") {
            vec![(Path::new("/sys/fs/cgroup/memory").join(relative), "memory.limit_in_bytes", "memory.usage_in_bytes")]
        } else if controllers.is_empty() {
            vec![
                (Path::new("/sys/fs/cgroup").join(relative), "memory.max", "memory.current"),
                (Path::new("/sys/fs/cgroup/unified").join(relative), "memory.max", "memory.current"),
            ]
        } else {
            continue;
        };
        for (dir, limit_file, usage_file) in candidates {
            // file pages (the page cache: files read or written, the decoded-
            // image cache) are reclaimable: what the cgroup really holds is the rest
            let reclaimable = std::fs::read_to_string(dir.join("memory.stat"))
                .map(|stat| {
                    stat.lines()
                        .filter_map(|line| line.split_once(' '))
                        .filter(|(key, _)| {
                            matches!(
                                *key,
                                "total_inactive_file" | "total_active_file" | "inactive_file" | "active_file"
                            )
                        })
                        .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
                        .sum::<u64>()
                })
                .unwrap_or(0);
            let usage = read_u64(&dir.join(usage_file)).unwrap_or(0).saturating_sub(reclaimable);
            // the effective limit is the smallest on the way up to the root
            let mut level = Some(dir.as_path());
            while let Some(current) = level {
                if let Some(limit) = read_u64(&current.join(limit_file)).filter(|&l| l < 1 << 60) {
                    let free = limit.saturating_sub(usage);
                    if best.as_ref().is_none_or(|b| free < b.bytes) {
                        let source = format!("the cgroup memory limit of {}", human_bytes(limit));
                        best = Some(Available { bytes: free, source });
                    }
                }
                level = current.parent().filter(|p| p.starts_with("/sys/fs/cgroup") && p.components().count() > 4);
            }
        }
    }
    best
}

/// Memory this process can still use (see the module docs); `None` where
/// neither `/proc/meminfo` nor a cgroup says.
pub fn available_memory() -> Option<Available> {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(Available { bytes: kb * 1024, source: "available physical memory".into() })
    });
    match (physical, cgroup_available()) {
        (Some(p), Some(c)) => Some(if c.bytes < p.bytes { c } else { p }),
        (p, c) => p.or(c),
    }
}

/// The budget for decoded images handed to the data loader:
/// [`IMAGES_SHARE`] of the available memory, minus `already` (bytes of sets
/// loaded before).
pub fn images_budget(already: u64) -> Option<(u64, String)> {
    let available = available_memory()?;
    let budget = ((available.bytes as f64 * IMAGES_SHARE) as u64).saturating_sub(already);
    Some((budget, format!("{:.0}% of {}", IMAGES_SHARE * 100.0, available.source)))
}

/// Refuses a batch whose activations (plus the two gradient buffers) cannot
/// fit in this machine's memory, before anything is allocated.
pub fn check_memory(model: &Sequential<f32>, batch_size: usize) -> Result<()> {
    let needed = model.buffer_bytes(batch_size);
    if let Some(available) = available_memory() {
        if needed > available.bytes {
            bail!(
                "a batch of {batch_size} needs about {} for activations and gradients, more than the {} left ({}): use a smaller --batch-size or --image-size",
                human_bytes(needed),
                human_bytes(available.bytes),
                available.source
            );
        }
    }
    Ok(())
}

/// Share of the available memory a training pass may plan on: the rest is for
/// the loader's batches in flight, the kernels' scratch tiles, the system and
/// whatever else the machine runs. Smaller passes cost little: ResNet-18 at
/// 1024x512 trained faster in passes of 4 than in whole batches of 32.
pub const PASS_SHARE: f64 = 0.5;

/// The micro-batch a run trains with (`None`: the whole share of `share`
/// images in one pass). `asked` (`--micro-batch`) is taken as it is, if it
/// fits in the memory available. Without it, a share whose pass needs more
/// than [`PASS_SHARE`] of the available memory is run in micro-batches: the
/// largest divisor of the share that fits in that share (else passes of one
/// image, if they fit at all), said in one line.
pub fn micro_batch(model: &Sequential<f32>, share: usize, asked: Option<usize>) -> Result<Option<usize>> {
    // weights, their gradients and two optimizer moments; in micro-batches also
    // the passes' gradients kept for the tree (at most 4 subtrees and a leaf)
    let parameters = (model.num_params() * std::mem::size_of::<f32>()) as u64;
    let needed = |images: usize| {
        let kept = if images < share { 5 * parameters } else { 0 };
        model.buffer_bytes(images) + 4 * parameters + kept
    };
    let Some(available) = available_memory() else { return Ok(asked) };
    let too_big = |images: usize| {
        anyhow!(
            "a pass of {images} image(s) needs about {} for activations, gradients and optimizer state, more than the {} left ({}): use a smaller --micro-batch, --image-size or model",
            human_bytes(needed(images)),
            human_bytes(available.bytes),
            available.source
        )
    };
    if let Some(asked) = asked {
        return if needed(asked.min(share)) <= available.bytes { Ok(Some(asked)) } else { Err(too_big(asked)) };
    }
    let budget = (available.bytes as f64 * PASS_SHARE) as u64;
    if needed(share) <= budget {
        return Ok(None);
    }
    let fits = (1..share).rev().filter(|m| share.is_multiple_of(*m)).find(|&m| needed(m) <= budget);
    let micro = fits.unwrap_or(1);
    if needed(micro) > available.bytes {
        return Err(too_big(micro));
    }
    println!(
        "A batch of {share} needs about {} for activations, gradients and optimizer state, more than {:.0}% of the {} left ({}): \
         training in micro-batches of {micro} (about {} each; --micro-batch overrides)",
        human_bytes(needed(share)),
        PASS_SHARE * 100.0,
        human_bytes(available.bytes),
        available.source,
        human_bytes(needed(micro))
    );
    Ok(Some(micro))
}
