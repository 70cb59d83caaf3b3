//! Facts: what we know about a host's current state. Gathering is one remote round trip; parsing
//! is pure.
//!
//! Two kinds:
//! - host facts (`ansible_*` names and shapes) gathered once per host per run (`host.rs`);
//! - probes: the per-task state an op needs before deciding (`probe.rs`), e.g. a file's
//!   stat and content, a package's installed version, a unit's state. Every probe of one task
//!   is answered by a single script.

pub mod host;
pub mod probe;

/// One question about a host's current state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// `lstat` of a path (follow symlinks when `follow`), with sha1 checksum for regular files.
    Stat { path: String, follow: bool },
    /// The bytes of a regular file, when it exists (bounded by `max_bytes`).
    Read { path: String, max_bytes: u64 },
    /// Installed state and version of Debian packages (dpkg-query).
    Dpkg { packages: Vec<String> },
    /// Properties of a systemd unit (LoadState, ActiveState, SubState, UnitFileState).
    Unit { name: String },
    /// A command whose output the op interprets (rc, stdout, stderr). Must not change anything.
    Command { script: String },
}

/// A file's metadata, in the shape Ansible's `stat` module reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStat {
    pub exists: bool,
    /// "file", "directory", "link", "other"
    pub kind: String,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub owner: String,
    pub group: String,
    pub size: u64,
    pub mtime: i64,
    /// Target of a symlink (for `kind == "link"`).
    pub link_target: Option<String>,
    /// sha1 hex of a regular file's content (Ansible's default checksum).
    pub checksum_sha1: Option<String>,
}

/// State of one package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageState {
    pub name: String,
    /// The installed version, `None` when not installed.
    pub version: Option<String>,
}

/// Properties of a systemd unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitState {
    pub name: String,
    /// "loaded", "not-found", "masked", ...
    pub load_state: String,
    /// "active", "inactive", "failed", ...
    pub active_state: String,
    pub sub_state: String,
    /// "enabled", "disabled", "static", "masked", "" ...
    pub unit_file_state: String,
}

/// Output of a read-only command probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The answer to one [`Probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Stat(FileStat),
    /// `None` when the file does not exist.
    Read(Option<Vec<u8>>),
    Dpkg(Vec<PackageState>),
    Unit(UnitState),
    Command(CommandOutput),
}

impl Probe {
    /// The path a `Stat` or `Read` probe looks at.
    pub fn path(&self) -> Option<&str> {
        match self {
            Probe::Stat { path, .. } | Probe::Read { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Probe answers, in the order of the probes asked. Ops look them up by probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub answers: Vec<(Probe, ProbeResult)>,
    /// Paths of `Stat`/`Read` probes that are, or lie under, a symlink: a change to another
    /// path may change what they show.
    pub via_link: Vec<String>,
}

impl Facts {
    pub fn get(&self, probe: &Probe) -> Option<&ProbeResult> {
        self.answers
            .iter()
            .find(|(p, _)| p == probe)
            .map(|(_, r)| r)
    }

    pub fn stat(&self, path: &str, follow: bool) -> Option<&FileStat> {
        match self.get(&Probe::Stat {
            path: path.to_string(),
            follow,
        }) {
            Some(ProbeResult::Stat(s)) => Some(s),
            _ => None,
        }
    }

    pub fn read(&self, path: &str) -> Option<Option<&[u8]>> {
        self.answers.iter().find_map(|(p, r)| match (p, r) {
            (Probe::Read { path: p, .. }, ProbeResult::Read(c)) if p == path => Some(c.as_deref()),
            _ => None,
        })
    }
}
