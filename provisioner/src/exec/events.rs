//! `RunEvent`: everything a run reports. Core code emits these; `report` renders them.
//!
//! Values from `no_log` tasks are censored before an event is built, so no sink can leak them.

use serde::Serialize;

/// How one task ended on one host (one loop item, or the whole task).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Ok,
    Changed,
    Skipped,
    Failed,
    /// Failed, with `ignore_errors`.
    Ignored,
    /// Failed inside a block whose `rescue` ran.
    Rescued,
    Unreachable,
}

/// A before/after pair shown by `--diff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffText {
    pub label: String,
    pub before: String,
    pub after: String,
}

/// The result of one task on one host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskReport {
    pub host: String,
    pub play: usize,
    /// The task's display name (`role : name`).
    pub task: String,
    /// `file:line:col` of the task.
    pub loc: String,
    pub status: TaskStatus,
    /// The module's own `changed` (also set on some failed tasks, e.g. a command that ran and
    /// exited non-zero, as Ansible reports it).
    pub changed: bool,
    /// The loop item's label, for per-item results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diffs: Vec<DiffText>,
    /// Set by handlers so the report can title them.
    pub handler: bool,
}

/// Everything a run reports, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    RunStarted {
        check: bool,
        hosts: Vec<String>,
    },
    PlayStarted {
        play: usize,
        name: String,
        hosts: Vec<String>,
    },
    TaskStarted {
        host: String,
        play: usize,
        task: String,
    },
    TaskFinished(TaskReport),
    /// A `meta` task (flush_handlers, noop) began: ansible-playbook shows its header and no
    /// host result. Once per task and serial batch.
    MetaTask {
        play: usize,
        task: String,
    },
    /// A remote command, shown with `-v`. Censored for `no_log` tasks.
    Command {
        host: String,
        command: String,
    },
    /// The host runs no more steps.
    HostStopped {
        host: String,
        reason: String,
    },
    /// A warning that does not fail anything (e.g. a pattern matched no host).
    Warning {
        message: String,
    },
    /// Something the operator should know that is not a problem (e.g. a key was generated).
    Notice {
        message: String,
    },
    RunFinished {
        elapsed_ms: u64,
        cancelled: bool,
    },
}

/// Where producers send events (the runner, the session, the secrets store's notices).
/// Implemented by the run's event bus (see `crate::run`) and, in tests, by collectors.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: RunEvent);
}

impl EventSink for tokio::sync::mpsc::UnboundedSender<RunEvent> {
    fn emit(&self, event: RunEvent) {
        // The receiver only goes away when the process is ending.
        let _ = self.send(event);
    }
}

impl EventSink for std::sync::Mutex<Vec<RunEvent>> {
    fn emit(&self, event: RunEvent) {
        if let Ok(mut v) = self.lock() {
            v.push(event);
        }
    }
}

/// A consumer of a run's events: the terminal, JSON lines, later history and metrics. The run
/// API calls every sink from its reporting thread, one event at a time, in order. A sink that
/// fails (an `Err`, or a panic) is dropped and the run's outcome says reporting failed; the
/// exit code never depends on a sink.
pub trait Sink: Send {
    fn event(&mut self, e: &RunEvent) -> Result<(), String>;
    /// After the last event.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// A sink that keeps every event (tests, and callers that inspect a run afterwards).
#[derive(Clone, Default)]
pub struct Collector(pub std::sync::Arc<std::sync::Mutex<Vec<RunEvent>>>);

impl Collector {
    pub fn events(&self) -> Vec<RunEvent> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Sink for Collector {
    fn event(&mut self, e: &RunEvent) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|_| "collector poisoned".to_string())?
            .push(e.clone());
        Ok(())
    }
}
