//! The bundled cluster core: pure knowledge about the Mesos stack.
//!
//! No I/O happens here beyond parsing embedded files. The engine (`provisioner`)
//! consumes these types to validate topology and order rollouts.
//!
//! - [`bundle`]: `bundle.yaml` (components, versions, sources, ports, probes, upgrade order),
//!   typed, with every problem of the file reported with its line.
//! - [`derive`]: values derived from the inventory, never typed by hand (quorum, myid, the
//!   ZooKeeper connect string, per-agent CNI subnets).
//! - [`topology`]: the inventory rules of docs/stack.md, checked before anything runs.
//! - [`allocations`]: stable member identities (ZooKeeper ids, CNI subnets), allocated once.

pub mod allocations;
pub mod bundle;
pub mod derive;
pub mod health;
pub mod topology;

use std::fmt;

/// The bundle shipped with this build (`cluster-core/bundle.yaml`).
pub const BUNDLE_YAML: &str = include_str!("../bundle.yaml");

/// One problem found by a check, with the 1-based line and column it points at (0 when it is
/// about the input as a whole; the caller then names the file).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl Problem {
    pub fn new(line: u32, col: u32, message: impl Into<String>) -> Self {
        Problem {
            line,
            col,
            message: message.into(),
        }
    }

    /// A problem about the input as a whole (no line).
    pub fn whole(message: impl Into<String>) -> Self {
        Problem::new(0, 0, message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (0, _) => f.write_str(&self.message),
            (l, 0) => write!(f, "{l}: {}", self.message),
            (l, c) => write!(f, "{l}:{c}: {}", self.message),
        }
    }
}
