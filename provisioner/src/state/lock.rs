//! The run lock: one mutating run per inventory at a time.
//!
//! `run.lock` in the state dir is held with an advisory lock (`flock`: the kernel drops it when
//! the holder's process ends, however it ends) and names its holder in one line of JSON:
//! `{"pid":4242,"machine":"ctl1","command":"apply","started":"2026-01-31T12:00:00.123Z"}`.
//! A clean release empties the file. So a lock we can take whose file still names a holder was
//! left by a process that died: it is taken over, and the caller warns.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// Who holds (or held) the lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// The host name of the machine the run is on.
    pub machine: String,
    /// The command (`apply`, `play`, `tls rotate`, `lab up`).
    pub command: String,
    /// When it took the lock, UTC.
    pub started: String,
}

impl Holder {
    /// This process, running `command`, now.
    pub fn me(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            machine: machine(),
            command: command.to_string(),
            started: crate::exec::events::utc_text(SystemTime::now()),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {}, `{}`, started {}",
            self.pid, self.machine, self.command, self.started
        )
    }
}

/// This machine's host name.
pub fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another run holds the lock of this inventory ({path}): {}; nothing was run. Wait for it, or pass --wait-lock SECONDS", holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "holder unknown".into()))]
    Held {
        path: PathBuf,
        holder: Option<Holder>,
    },
    #[error("another run held the lock of this inventory ({path}) for all of {waited:?}: {}; nothing was run", holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "holder unknown".into()))]
    Timeout {
        path: PathBuf,
        holder: Option<Holder>,
        waited: Duration,
    },
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

impl From<LockError> for crate::error::Error {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Io { .. } => crate::error::Error::Environment(e.to_string()),
            _ => crate::error::Error::Locked(e.to_string()),
        }
    }
}

/// A held run lock; released (file emptied, lock dropped) when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    taken_over: Option<Holder>,
}

impl RunLock {
    /// The holder of a lock left behind by a process that died, which this lock replaced.
    pub fn taken_over(&self) -> Option<&Holder> {
        self.taken_over.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A warning to show when this lock was taken over, naming the old holder.
    pub fn takeover_warning(&self) -> Option<String> {
        self.taken_over.as_ref().map(|h| {
            format!(
                "took over the run lock {} left by {h}, which is no longer running",
                self.path.display()
            )
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Empty first: a lock released cleanly names no holder.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
        let _ = self.file.unlock();
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |e| LockError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The holder named in `path` (a fresh read: the file is rewritten by each holder).
fn holder_of(path: &Path) -> Option<Holder> {
    let mut f = File::open(path).ok()?;
    // The holder writes right after locking: give a just-started one a moment.
    read_holder(&mut f).or_else(|| {
        std::thread::sleep(Duration::from_millis(50));
        read_holder(&mut f)
    })
}

/// Take the lock at `path` for `me`: at once (`wait` `None`), or retrying until `wait` ends.
pub fn acquire(path: &Path, me: Holder, wait: Option<Duration>) -> Result<RunLock, LockError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io(path))?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => match wait {
                Some(w) if start.elapsed() < w => {
                    std::thread::sleep(Duration::from_millis(200).min(w))
                }
                Some(w) => {
                    return Err(LockError::Timeout {
                        path: path.to_path_buf(),
                        holder: holder_of(path),
                        waited: w,
                    })
                }
                None => {
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        holder: holder_of(path),
                    })
                }
            },
            Err(TryLockError::Error(e)) => return Err(io(path)(e)),
        }
    }
    let taken_over = read_holder(&mut file);
    let line = serde_json::to_string(&me).unwrap_or_default();
    file.set_len(0).map_err(io(path))?;
    file.rewind().map_err(io(path))?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(RunLock {
        file,
        path: path.to_path_buf(),
        taken_over,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(command: &str) -> Holder {
        Holder::me(command)
    }

    #[test]
    fn a_held_lock_refuses_a_second_run_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run.lock");
        let held = acquire(&path, holder("apply"), None).unwrap();
        assert!(held.taken_over().is_none());
        let on_disk: Holder =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(on_disk.pid, std::process::id());
        assert_eq!(on_disk.command, "apply");
        let err = acquire(&path, holder("play"), None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {} on {}", std::process::id(), machine())),
            "{msg}"
        );
        assert!(
            msg.contains("`apply`") && msg.contains("started 20"),
            "{msg}"
        );
        assert!(msg.contains("--wait-lock"), "{msg}");
        assert_eq!(
            crate::error::Error::from(err).exit_code(),
            crate::error::ExitCode::Locked
        );
        // Released: the file names no one, and the next run takes it without a warning.
        drop(held);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let next = acquire(&path, holder("apply"), None).unwrap();
        assert!(next.taken_over().is_none());
    }

    #[test]
    fn a_waiting_run_gets_the_lock_when_it_is_released() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run.lock");
        let held = acquire(&path, holder("apply"), None).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let t = Instant::now();
        let got = acquire(&path, holder("apply"), Some(Duration::from_secs(10))).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(250));
        assert!(got.taken_over().is_none());
        releaser.join().unwrap();
        // And a wait that ends first fails, naming the holder.
        let err = acquire(&path, holder("play"), Some(Duration::from_millis(300))).unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("`apply`"), "{err}");
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run.lock");
        // What a killed run leaves: its line, and no lock held (the kernel dropped it).
        let dead = Holder {
            pid: 999_999_999,
            machine: machine(),
            command: "apply".into(),
            started: "2026-01-31T12:00:00.000Z".into(),
        };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let got = acquire(&path, holder("apply"), None).unwrap();
        assert_eq!(got.taken_over(), Some(&dead));
        let w = got.takeover_warning().unwrap();
        assert!(
            w.contains("pid 999999999") && w.contains("no longer running"),
            "{w}"
        );
        let on_disk: Holder =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(on_disk.pid, std::process::id());
    }
}
