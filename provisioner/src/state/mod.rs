//! The state dir: `<inventory dir>/.<inventory stem>.state/`, everything the engine keeps for
//! one inventory between runs. One type owns it:
//!
//! | path | what |
//! |---|---|
//! | `secrets/` | the encrypted secrets store (`crate::secrets`) |
//! | `pending-handlers.json` | handlers a failed run left pending, by host; they fire next run |
//! | `allocations.json` | stable member identities (ZooKeeper ids, CNI subnets), docs/stack.md |
//! | `run.lock` | the run lock of mutating runs ([`lock`]) |
//! | `history.db` (+ `-wal`, `-shm`) | the run history, SQLite, mode 0600 (`crate::history`) |
//!
//! Everything here is plain, blocking file work: callers run it before or after a run's walk,
//! never on the async workers.

pub mod lock;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cluster_core::allocations::Allocations;
pub use lock::{Holder, LockError, RunLock};

/// `<inventory dir>/.<inventory stem>.state`.
pub fn state_dir(inventory: &Path) -> PathBuf {
    let dir = inventory
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = inventory
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "inventory".into());
    dir.join(format!(".{stem}.state"))
}

/// Handlers left pending, by host.
pub type Pending = HashMap<String, Vec<String>>;

/// The state dir of one inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
    /// The inventory's file stem: the cluster's name (TLS subjects).
    cluster: String,
}

impl StateDir {
    pub fn for_inventory(inventory: &Path) -> StateDir {
        StateDir {
            dir: state_dir(inventory),
            cluster: inventory
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The encrypted secrets store, with the default key file.
    pub fn secrets(&self) -> Result<crate::secrets::SecretStore, crate::secrets::SecretsError> {
        crate::secrets::SecretStore::open_for_cluster(
            self.dir.join("secrets"),
            crate::secrets::default_key_file(),
            &self.cluster,
        )
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join("pending-handlers.json")
    }

    /// Handlers an earlier run left pending (none when the file is missing or unreadable).
    pub fn load_pending(&self) -> Pending {
        std::fs::read(self.pending_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Keep `pending` for the next run (removes the file when there are none).
    pub fn save_pending(&self, pending: &Pending) -> std::io::Result<()> {
        let path = self.pending_path();
        if pending.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(pending).unwrap_or_default(),
        )
    }

    fn allocations_path(&self) -> PathBuf {
        self.dir.join("allocations.json")
    }

    /// The recorded member identities (`None`: none recorded yet). A file that is not an
    /// allocations file is an error naming it (it is never silently replaced).
    pub fn load_allocations(&self) -> Result<Option<Allocations>, String> {
        let path = self.allocations_path();
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                format!(
                    "{} is not an allocations file ({e}); fix it or restore it from version control",
                    path.display()
                )
            }),
        }
    }

    /// Record `a` (pretty JSON, one key per line, so it diffs well in version control).
    pub fn save_allocations(&self, a: &Allocations) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(a).unwrap_or_default();
        text.push(b'\n');
        write_atomic(&self.allocations_path(), &text)
    }

    /// The run lock, for a run of `command`: at once, or waiting up to `wait`. A lock its
    /// holder left behind is taken over; the returned lock says whose it was
    /// ([`RunLock::taken_over`]).
    pub fn lock(&self, command: &str, wait: Option<Duration>) -> Result<RunLock, LockError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| LockError::Io {
            path: self.dir.clone(),
            detail: e.to_string(),
        })?;
        lock::acquire(&self.dir.join("run.lock"), Holder::me(command), wait)
    }
}

/// Temp file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_is_next_to_the_inventory() {
        assert_eq!(
            state_dir(Path::new("/ops/inventories/prod.yml")),
            PathBuf::from("/ops/inventories/.prod.state")
        );
        assert_eq!(
            state_dir(Path::new("prod.ini")),
            PathBuf::from("./.prod.state")
        );
    }

    #[test]
    fn pending_handlers_round_trip_and_an_empty_set_removes_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::for_inventory(&tmp.path().join("prod.yml"));
        assert!(s.load_pending().is_empty());
        let mut p = Pending::new();
        p.insert("h1".into(), vec!["restart app".into()]);
        s.save_pending(&p).unwrap();
        assert_eq!(s.load_pending(), p);
        s.save_pending(&Pending::new()).unwrap();
        assert!(!s.dir().join("pending-handlers.json").exists());
    }

    #[test]
    fn allocations_round_trip_and_a_broken_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::for_inventory(&tmp.path().join("prod.yml"));
        assert_eq!(s.load_allocations(), Ok(None));
        let a = cluster_core::allocations::allocate(
            None,
            &["m1".to_string()],
            &["a1".to_string()],
            "10.200.0.0/16",
        )
        .unwrap();
        s.save_allocations(&a).unwrap();
        assert_eq!(s.load_allocations(), Ok(Some(a)));
        std::fs::write(s.dir().join("allocations.json"), "{").unwrap();
        assert!(s
            .load_allocations()
            .unwrap_err()
            .contains("allocations.json"));
    }
}
