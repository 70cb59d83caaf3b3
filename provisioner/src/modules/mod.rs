//! Modules: one per supported Ansible module (the `Module` trait). Pure functions, pyinfra's split:
//!
//! ```text
//! probes(args)              -> which facts the op needs          (no I/O)
//! plan(args, facts, check)  -> NoChange | Change{actions, diff}  (no I/O)
//! finish(args, outputs)     -> the module result (register)      (no I/O)
//! ```
//!
//! The executor runs the probes in one round trip, calls `plan`, and only in `Mode::Apply` sends
//! the actions. So check mode cannot change a host: it never receives an action.

use crate::facts::{Facts, Probe};
use serde_json::{Map, Value};

/// Module arguments after templating, as Ansible passes them to a module.
pub type Args = Map<String, Value>;

/// The run mode modules plan for (owned by `exec`).
pub use crate::exec::Mode;

/// One mutation on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run a shell script (as `/bin/sh -c`), optionally fed `stdin`.
    Exec {
        script: String,
        stdin: Option<Vec<u8>>,
    },
    /// Write a file atomically: temp file in the same directory, fsync, mode and owner, rename.
    WriteFile {
        path: String,
        content: Vec<u8>,
        mode: Option<u32>,
        owner: Option<String>,
        group: Option<String>,
    },
}

/// A before/after view of one changed thing, shown by `--diff`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// What is being compared (usually a path).
    pub label: String,
    pub before: String,
    pub after: String,
}

/// The decision of `plan`.
#[derive(Clone, Debug, PartialEq)]
pub enum Planned {
    /// The host is already as declared.
    NoChange {
        /// Fields for `register` (e.g. `stat` for the stat module).
        result: Map<String, Value>,
    },
    /// These actions bring the host to the declared state.
    Change {
        actions: Vec<Action>,
        diffs: Vec<Diff>,
        /// Fields for `register` known before running (e.g. `dest`, `checksum`).
        result: Map<String, Value>,
    },
}

/// What one action returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionOutput {
    pub rc: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The module's result, as `register` stores it (`changed`, `failed`, `msg`, `rc`, ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModuleResult {
    pub changed: bool,
    pub failed: bool,
    pub skipped: bool,
    pub msg: Option<String>,
    pub data: Map<String, Value>,
}

/// A module refused its arguments or met a state it cannot handle. Shown with the task's location.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

/// The message of [`OpError::needs_content`].
const NEEDS_CONTENT: &str = "the content of the local file must be sent (internal)";

impl OpError {
    pub fn new(msg: impl Into<String>) -> Self {
        OpError(msg.into())
    }

    /// A plan made from a control-node file's checksum alone (`copy`'s `_content_sha1`) found
    /// that the content must be written: the engine plans again with the content.
    pub fn needs_content() -> Self {
        OpError(NEEDS_CONTENT.into())
    }

    pub fn is_needs_content(&self) -> bool {
        self.0 == NEEDS_CONTENT
    }
}

/// Static description of a module's parameters, checked at validation before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub required: bool,
}

/// One Ansible module.
pub trait Module: Send + Sync {
    /// The module name, as written in a task (`lineinfile`), and its FQCN aliases.
    fn names(&self) -> &'static [&'static str];
    /// Known parameters. Unknown parameter names are rejected at validation.
    fn params(&self) -> &'static [ParamSpec];
    /// Whether the module accepts free-form text (`command: echo hi`, `shell: ...`).
    fn free_form(&self) -> bool {
        false
    }
    /// Whether this task's actions only read host state (wait_for; uri with GET/HEAD), so the
    /// executor also runs them in `Mode::Check` (Ansible runs such modules in check mode).
    /// Check mode still never receives an action from a module that answers `false`.
    fn read_only(&self, _args: &Args) -> bool {
        false
    }
    /// When this task's actions change nothing but files at, under or above these absolute
    /// paths, the paths: the executor then keeps the host-state answers gathered before that
    /// the change cannot affect. Default `None`: anything may change.
    fn confined_to(&self, _args: &Args) -> Option<Vec<String>> {
        None
    }
    /// Facts needed to decide. Default: none.
    fn probes(&self, _args: &Args) -> Result<Vec<Probe>, OpError> {
        Ok(Vec::new())
    }
    /// Decide, from the declared args and the current facts, what to do.
    fn plan(&self, args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError>;
    /// Build the module result from the planned decision and the actions' outputs (in order).
    /// The default: changed when there were actions, failed when one exited non-zero.
    fn finish(&self, _args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        default_finish(planned, outputs)
    }
    /// The result in check mode, where no action runs: `finish` with no outputs. Modules whose
    /// result depends on running (`command`, `shell`) read an empty `outputs` as "did not run".
    fn check_result(&self, args: &Args, planned: &Planned) -> ModuleResult {
        self.finish(args, planned, &[])
    }
}

/// The usual result: changed if there were actions; failed with stderr if one exited non-zero.
pub fn default_finish(planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
    match planned {
        Planned::NoChange { result } => ModuleResult {
            data: result.clone(),
            ..Default::default()
        },
        Planned::Change { result, .. } => {
            let failed = outputs.iter().find(|o| o.rc != 0);
            ModuleResult {
                changed: true,
                failed: failed.is_some(),
                msg: failed.map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string()),
                data: result.clone(),
                skipped: false,
            }
        }
    }
}

pub mod files;
pub mod system;

/// The module called `name` (short name or FQCN such as `ansible.builtin.copy`).
pub fn lookup(name: &str) -> Option<&'static dyn Module> {
    files::modules()
        .into_iter()
        .chain(system::modules())
        .find(|m| m.names().contains(&name))
}
