//! The tool's top-level error and exit codes.
//!
//! A failed host or task is *data* (a `RunEvent`), not an `Error`. `Error` is for the tool itself:
//! bad input, nothing reachable, an environment problem.

use crate::diag::Diagnostics;

/// Process exit codes, one meaning each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    HostsFailed = 1,
    BadInput = 2,
    Unreachable = 3,
    ChangesPending = 4,
    /// Another mutating run holds the inventory's run lock; nothing was run.
    Locked = 5,
    /// SIGINT (Ctrl-C) stopped the run at a task boundary (128 + 2, as shells report it).
    Interrupted = 130,
    /// SIGTERM stopped the run at a task boundary (128 + 15).
    Terminated = 143,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input files are invalid. Every problem is listed, with file:line:col.
    #[error("{n} problem(s) in the input; nothing was run:\n{0}", n = .0.len())]
    Invalid(Diagnostics),
    /// A usage or environment problem with one clear remedy.
    #[error("{0}")]
    Usage(String),
    /// No host could be reached.
    #[error("{0}")]
    Unreachable(String),
    /// Something on the control machine failed (a command, a file).
    #[error("{0}")]
    Environment(String),
    /// Another mutating run holds the inventory's run lock (the message names it).
    #[error("{0}")]
    Locked(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Invalid(_) | Error::Usage(_) => ExitCode::BadInput,
            Error::Unreachable(_) => ExitCode::Unreachable,
            Error::Environment(_) => ExitCode::HostsFailed,
            Error::Locked(_) => ExitCode::Locked,
        }
    }
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
