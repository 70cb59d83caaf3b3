//! The run API: one entry point for every command that runs something on hosts.
//!
//! The CLI (`plan`, `apply`, `play`), `lab up`, and later the day-2 commands and the operator
//! build a [`RunSpec`] and call [`run`]; nothing below the CLI imports the CLI.
//!
//! Events flow one way: producers (session, runner, secrets) → the run's [`bus::Bus`] (which
//! folds the recap) → a reporting thread → every [`Sink`] (terminal, JSON lines, collectors,
//! and the history recorder the run adds for an inventory: `crate::history`).
//! The exit code is computed from the events the bus saw, never from a sink; a run whose
//! reporting failed (a sink panicked or returned an error) exits non-zero.

pub mod bus;
pub mod signals;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, ExitCode};
use crate::exec::events::Sink;
use crate::exec::session::{self, RunRequest, RunResult, RunState, StackRun};
use crate::exec::Mode;
use crate::report::recap::Recap;
use crate::state::StateDir;
use crate::template::Vars;
use crate::transport::Connector;

pub use crate::resolve::playbook::InlinePlay;

/// What a run runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The bundled stack (`dir`: a `roles/`-shaped directory instead of the built-in copy):
    /// its `site.yml`, or one play built in memory from its roles (day-2: "role X, tasks file
    /// Y, on hosts Z"), with the stack's variables and topology checks either way.
    Stack {
        dir: Option<PathBuf>,
        play: Option<InlinePlay>,
    },
    /// A playbook file in the supported Ansible subset.
    Playbook(PathBuf),
}

/// Everything that decides what a run does.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The command, as the lock and the history name it (`apply`, `lab up`, ...).
    pub command: String,
    /// Inventory files or directories; the first one's state dir is the run's.
    pub inventory: Vec<PathBuf>,
    pub target: Target,
    pub mode: Mode,
    /// A host pattern (`--limit`).
    pub limit: Option<String>,
    /// Highest-precedence variables (`-e`).
    pub extra_vars: Vars,
    pub forks: usize,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    /// Report diffs (`--diff`); check mode reports them anyway.
    pub diff: bool,
    /// Report remote commands (`-v`).
    pub verbose: bool,
    /// The longest one remote command may run.
    pub command_timeout: Duration,
    /// More directories to search for roles.
    pub roles_path: Vec<PathBuf>,
    /// Pending changes make the exit code 4 (`plan --exit-code`).
    pub changes_are_drift: bool,
    /// An apply run takes the inventory's run lock: `None` refuses at once when another run
    /// holds it (exit 5), `Some(d)` waits up to `d` (`--wait-lock`).
    pub lock_wait: Option<Duration>,
    /// Defaults from ansible.cfg and the environment (host-key policy, remote user, become,
    /// fact gathering; see `crate::config`).
    pub defaults: crate::config::RunDefaults,
    /// Whether and how the run is recorded in the history (`history.db` in the state dir).
    pub history: HistoryLink,
}

/// How a run appears in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLink {
    /// Recorded at all (day-2 read-only probes are not: their operation records its steps).
    pub record: bool,
    /// The run of the day-2 operation this run is a step of (`history show` lists it there).
    pub parent: Option<String>,
}

impl Default for HistoryLink {
    fn default() -> Self {
        HistoryLink {
            record: true,
            parent: None,
        }
    }
}

impl RunSpec {
    /// A spec with the CLI's defaults: 16 forks, 1800 s per command, no limit, no tags.
    pub fn new(command: &str, inventory: Vec<PathBuf>, target: Target, mode: Mode) -> Self {
        RunSpec {
            command: command.to_string(),
            inventory,
            target,
            mode,
            limit: None,
            extra_vars: Vars::new(),
            forks: 16,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            diff: false,
            verbose: false,
            command_timeout: Duration::from_secs(1800),
            roles_path: Vec::new(),
            changes_are_drift: false,
            lock_wait: None,
            defaults: crate::config::RunDefaults::default(),
            history: HistoryLink::default(),
        }
    }
}

/// Where a run's events go and how it reaches hosts.
#[derive(Default)]
pub struct RunIo {
    pub sinks: Vec<Box<dyn Sink>>,
    /// `None`: SSH with the default options.
    pub connector: Option<Arc<dyn Connector>>,
    /// `None`: Ctrl-C cancels (running steps finish, nothing new starts).
    pub cancel: Option<watch::Receiver<bool>>,
}

/// How a run ended. Host failures are here, not in `Err`.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The run's id, as in every event's envelope.
    pub run_id: String,
    /// Per-host counters, folded from the run's events.
    pub recap: Recap,
    pub exit: ExitCode,
    pub cancelled: bool,
    /// Sinks that failed (their messages); not empty means the exit code is not 0.
    pub reporting_errors: Vec<String>,
    /// What the state dir could not keep after the run; not empty means the exit code is not 0.
    pub state_errors: Vec<String>,
    /// What failed without failing the run (the history could not be recorded): shown as
    /// warnings; the exit code does not depend on them.
    pub warnings: Vec<String>,
}

/// What `validate` found: the sizes of what would run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// The hosts of each play, in order.
    pub play_hosts: Vec<Vec<String>>,
    pub plays: usize,
    pub tasks: usize,
    pub hosts: usize,
    pub warnings: Vec<String>,
}

/// The engine's request for a spec: the stack loaded (or the playbook named), with the member
/// identities recorded in the state dir.
fn request(spec: &RunSpec) -> Result<RunRequest, Error> {
    let mut roles_path = spec.roles_path.clone();
    let (playbook, inline, stack) = match &spec.target {
        Target::Playbook(p) => (p.clone(), None, None),
        Target::Stack { dir, play } => {
            let st = crate::stack::load(dir.as_deref(), &crate::stack::default_cache_root())?;
            roles_path.insert(0, st.dir.clone());
            let allocations = match spec.inventory.first() {
                Some(i) => StateDir::for_inventory(i)
                    .load_allocations()
                    .map_err(Error::Usage)?,
                None => None,
            };
            let run = StackRun {
                vars: st.vars(),
                diags: st.diags.clone(),
                allocations,
            };
            let playbook = match play {
                None => st.playbook,
                Some(p) => st.dir.join(format!("{}.play.yml", p.role)),
            };
            (playbook, play.clone(), Some(run))
        }
    };
    Ok(RunRequest {
        inventory: spec.inventory.clone(),
        playbook,
        inline,
        stack,
        limit: spec.limit.clone(),
        mode: spec.mode,
        diff: spec.diff,
        verbose: spec.verbose,
        forks: spec.forks.max(1),
        extra_vars: spec.extra_vars.clone(),
        roles_path,
        command_timeout: spec.command_timeout.max(Duration::from_secs(1)),
        tags: spec.tags.clone(),
        skip_tags: spec.skip_tags.clone(),
        defaults: spec.defaults.clone(),
    })
}

/// Check the inventory, the playbook (or stack), roles and templates; touch no host.
pub fn validate(spec: &RunSpec) -> Result<Validated, Error> {
    let p = session::prepare(&request(spec)?)?;
    let hosts: std::collections::BTreeSet<&String> = p.play_hosts.iter().flatten().collect();
    Ok(Validated {
        play_hosts: p.play_hosts.clone(),
        plays: p.playbook.plays.len(),
        tasks: p.playbook.plays.iter().map(|pl| pl.tasks.len()).sum(),
        hosts: hosts.len(),
        warnings: p.warnings.clone(),
    })
}

/// Validate, plan and run `spec`, sending its events to `io.sinks`. Blocks until the run and
/// its reporting are done. `Err` is for the tool (bad input, environment); failed hosts are
/// in the [`Outcome`].
pub fn run(spec: &RunSpec, io: RunIo) -> Result<Outcome, Error> {
    let req = request(spec)?;
    let state = spec.inventory.first().map(|i| StateDir::for_inventory(i));
    // A mutating run holds the inventory's run lock until it has saved what it keeps.
    let lock = match (&state, spec.mode) {
        (Some(st), Mode::Apply) => Some(st.lock(&spec.command, spec.lock_wait)?),
        _ => None,
    };
    let mut prepared = session::prepare(&req)?;
    if let Some(w) = lock.as_ref().and_then(|l| l.takeover_warning()) {
        prepared.warnings.insert(0, w);
    }
    // Identities are recorded before any host is touched, so the ids a run hands out are kept
    // even when it fails halfway.
    if let (Some(st), Some(a), Mode::Apply) = (&state, &prepared.allocations, spec.mode) {
        let recorded = match &req.stack {
            Some(s) => s.allocations.as_ref(),
            None => None,
        };
        if recorded != Some(a) {
            st.save_allocations(a).map_err(|e| {
                Error::Environment(format!(
                    "cannot record the member identities in {}: {e}",
                    st.dir().display()
                ))
            })?;
        }
    }
    // State dir reads happen here, before the walk, off the async workers.
    let run_state = match &state {
        Some(st) => {
            let store = st.secrets()?;
            store.preload();
            RunState {
                secrets: Some(Arc::new(store)),
                pending: st.load_pending(),
            }
        }
        None => RunState::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Environment(format!("cannot start the runtime: {e}")))?;
    let run_id = bus::new_run_id();
    let recorder = match &state {
        Some(st) if spec.history.record => Some(crate::history::recorder::Recorder::start(
            &crate::history::db_path(st.dir()),
            history_meta(spec, &req, &run_id),
            Default::default(),
        )),
        _ => None,
    };
    let mut sinks = io.sinks;
    // After the caller's sinks, behind the same redactor: it sees what they see.
    sinks.extend(recorder.as_ref().map(|r| r.sink()));
    let (bus, reporter) = bus::start_as(run_id, sinks)?;
    let connector = io.connector.unwrap_or_else(|| {
        Arc::new(crate::transport::SshConnector::new(
            crate::transport::SshOptions::default(),
        ))
    });
    let result = rt.block_on(async {
        let cancel = io.cancel.unwrap_or_else(signals::listen);
        let sink: Arc<dyn crate::exec::events::EventSink> = bus.clone();
        session::run(&req, prepared, connector, sink, cancel, run_state).await
    });
    drop(rt);
    let recap = bus.close();
    let run_id = bus.run_id().to_string();
    let reporting_errors = reporter.join();
    let RunResult { summary, pending } = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(r) = recorder {
                r.finish(Some(e.exit_code() as i32));
            }
            return Err(e);
        }
    };
    let mut state_errors = Vec::new();
    if let (Some(st), Some(p)) = (&state, &pending) {
        if let Err(e) = st.save_pending(p) {
            state_errors.push(format!(
                "cannot keep the pending handlers in {}: {e}",
                st.dir().display()
            ));
        }
    }
    drop(lock);
    let mut exit = if summary.cancelled {
        signals::exit_code()
    } else {
        recap.exit_code(spec.changes_are_drift)
    };
    if !(reporting_errors.is_empty() && state_errors.is_empty()) && exit == ExitCode::Ok {
        exit = ExitCode::HostsFailed;
    }
    let warnings = recorder
        .and_then(|r| r.finish(Some(exit as i32)))
        .into_iter()
        .collect();
    Ok(Outcome {
        run_id,
        recap,
        exit,
        cancelled: summary.cancelled,
        reporting_errors,
        state_errors,
        warnings,
    })
}

/// What the history records about `spec` when it starts.
fn history_meta(spec: &RunSpec, req: &RunRequest, run_id: &str) -> crate::history::RunMeta {
    let inventory = spec.inventory.first().cloned().unwrap_or_default();
    let mode = match spec.mode {
        Mode::Check => "check",
        Mode::Apply => "apply",
    };
    let mut m = crate::history::RunMeta::new(run_id, &spec.command, mode, &inventory);
    m.parent = spec.history.parent.clone();
    m.limit = spec.limit.clone();
    m.bundle_versions = req
        .stack
        .as_ref()
        .and_then(|s| s.vars.get("bundle"))
        .map(crate::history::versions_of);
    m
}
