//! One run per output directory: a lock file, `DIR/.convnet.lock`, held with
//! an exclusive `flock` for as long as the run lives and holding the owner's
//! pid, host and start time for the message a second run gets.
//!
//! The kernel releases a `flock` when its process ends, however it ends
//! (`kill -9`, out of memory, a reboot), so a lock whose owner is gone is
//! simply free again: the next run takes it, and says so when the file still
//! names the previous owner (a run that ended normally empties it).

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock of a run directory; released (and emptied) on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

/// `pid 1234 on host NAME, started 2026-11-24 12:00:00 UTC`, from the lock file's text.
fn describe_owner(text: &str) -> String {
    let field = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string())).unwrap_or_else(|| "?".into())
    };
    format!("pid {} on host {}, started {}", field("pid="), field("host="), field("started="))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (for people).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86400, secs % 86400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

impl RunLock {
    /// Takes the lock of `dir` (which must exist), or refuses in one line
    /// naming the run that holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(".convnet.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        let mut previous = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let _ = file.read_to_string(&mut previous);
                bail!(
                    "{} is in use by another convnet run ({}); wait for it to finish, or choose another --out",
                    dir.display(),
                    describe_owner(&previous)
                );
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let _ = file.read_to_string(&mut previous);
        if !previous.trim().is_empty() {
            eprintln!(
                "note: taking over {} from a run that is no longer running ({})",
                path.display(),
                describe_owner(&previous)
            );
        }
        let owner = format!("pid={}\nhost={}\nstarted={}\n", std::process::id(), host_name(), utc_now());
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(owner.as_bytes())?;
            file.sync_all()
        };
        write(&mut file).map_err(|error| convnet_io::IoError::Write { path: path.clone(), error })?;
        // temporary files of atomic writes cut short (a second Ctrl-C, kill -9)
        // can only be a previous run's now: nobody else writes here
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(RunLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // empty it (a clean end: the next run has nothing to take over), then
        // unlock; the file stays, so nobody can lock a deleted one
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert!(text.contains(&format!("pid={}", std::process::id())), "{text}");
        // flock locks belong to the open file: a second open in this process conflicts too
        let error = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is in use by another convnet run (pid "), "{error}");
        drop(first);
        assert_eq!(std::fs::read_to_string(dir.path().join(".convnet.lock")).unwrap(), "");
        let again = RunLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn dates_are_civil_utc() {
        let now = utc_now();
        assert_eq!(now.len(), "2026-11-24 12:00:00 UTC".len(), "{now}");
        assert!(now.starts_with("20"), "{now}");
    }
}
