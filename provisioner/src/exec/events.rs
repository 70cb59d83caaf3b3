//! `RunEvent`: everything a run reports. Core code emits these; `report` renders them.
//!
//! Producers emit bare [`RunEvent`]s into an [`EventSink`]; the run API redacts them (see
//! [`crate::exec::redact::Redacting`]) and wraps each in an [`Event`] envelope (run id,
//! gap-free sequence number, UTC time) before any [`Sink`] sees it. The JSON form is documented
//! in docs/events.md. Values from `no_log` tasks are censored before an event is built.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

/// The version of the JSON event schema (docs/events.md). Adding a field keeps it; renaming
/// or removing one, or changing a meaning, bumps it.
pub const EVENTS_VERSION: u32 = 1;

/// One event as sinks see it: the envelope and the event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub version: u32,
    /// The run's id (unique per run; sortable by start time).
    #[serde(serialize_with = "text")]
    pub run: Arc<str>,
    /// 0, 1, 2, ... in emission order, without gaps, per run.
    pub seq: u64,
    /// When it was emitted, UTC (`2026-01-31T12:00:00.123Z`).
    #[serde(serialize_with = "utc")]
    pub time: SystemTime,
    #[serde(flatten)]
    pub body: RunEvent,
}

/// RFC 3339 UTC with milliseconds.
pub fn utc_text(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.millisecond()
    )
}

fn text<S: Serializer>(t: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t)
}

fn utc<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&utc_text(*t))
}

/// Why a host runs no more steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// One of its tasks failed.
    Failed,
    Unreachable,
    /// Another host's failure ended the play (`any_errors_fatal` or `max_fail_percentage`).
    Aborted,
    Cancelled,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Failed => "a task failed",
            StopReason::Unreachable => "unreachable",
            StopReason::Aborted => "another host's failure ended the play",
            StopReason::Cancelled => "the run was cancelled",
        })
    }
}

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
    /// `msg` is what the task is for (`debug`'s message): shown without `-v`, as Ansible does.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diffs: Vec<DiffText>,
    /// Set by handlers so the report can title them.
    pub handler: bool,
    /// How long the task (or this loop item) took on this host.
    pub duration_ms: u64,
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
    /// A task (or a handler) begins on a host.
    TaskStarted {
        host: String,
        play: usize,
        task: String,
        handler: bool,
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
        reason: StopReason,
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
        duration_ms: u64,
        cancelled: bool,
    },
    /// A step of a day-2 operation (`upgrade`): it runs many runs and gates between them; each
    /// of its steps is one event on the operation's own bus, so history and metrics can record
    /// it and a sampler can line its timestamps up with what it saw.
    Step(StepEvent),
}

/// One step of a day-2 operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepEvent {
    /// `upgrade`.
    pub operation: String,
    /// `plan`, `refused`, `stage`, `gate`, `restart`, `maintenance`, `halted`, `done`.
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    pub status: StepStatus,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Started,
    Ok,
    Failed,
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

/// A consumer of a run's events: the terminal, JSON lines, the history (`crate::history`),
/// later metrics. The run API calls every sink from its reporting thread, one event at a
/// time, in order. A sink that fails (an `Err`, or a panic) is dropped and the run's outcome
/// says reporting failed; the exit code never depends on a sink.
pub trait Sink: Send {
    fn event(&mut self, e: &Event) -> Result<(), String>;
    /// After the last event.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// A sink that keeps every event (tests, and callers that inspect a run afterwards).
#[derive(Clone, Default)]
pub struct Collector(pub Arc<std::sync::Mutex<Vec<Event>>>);

impl Collector {
    /// The events with their envelopes.
    pub fn envelopes(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The events alone.
    pub fn events(&self) -> Vec<RunEvent> {
        self.0
            .lock()
            .map(|v| v.iter().map(|e| e.body.clone()).collect())
            .unwrap_or_default()
    }
}

impl Sink for Collector {
    fn event(&mut self, e: &Event) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|_| "collector poisoned".to_string())?
            .push(e.clone());
        Ok(())
    }
}
