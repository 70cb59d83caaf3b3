//! `provisioner operate`: keep the stack converged. A thin layer over the run API, `status`'s
//! probes and cluster-core's quorum rules (no engine of its own):
//!
//! each cycle
//! 1. peeks at the run lock: while another run holds it, the cycle only reports who holds it
//!    (and counts a lock wait) and the next cycle tries again;
//! 2. runs the stack's `plan` (check mode) through the run API, recorded in the history as
//!    command `operate`; drift is the (host, task) pairs that would change (a task that fails
//!    in check mode counts as drift of its host; an unreachable host is reported, not drifted);
//! 3. probes the cluster's health (`day2::status`), for the quorum gates and the metrics;
//! 4. decides who to remediate ([`decide::decide`], pure): drifted hosts only, at most one
//!    quorum member, agents within the budget, backed-off hosts skipped, `safe` keeping away
//!    from quorum members while a gate is red;
//! 5. remediates them with one `apply` of the stack limited to those hosts (the run API takes
//!    the run lock; held by someone else: reported, retried next cycle), recorded as
//!    `operate remediate` under the cycle's plan run.
//!
//! The inventory (and `--stack-dir`'s roles) are read again at every cycle, so edits take
//! effect at the next cycle. A stop signal lets the running step (a plan or a remediation)
//! finish, then the operator exits 0. Progress goes out as [`OperateEvent`]s to the caller's
//! callback; nothing here prints.

pub mod decide;
pub mod election;
pub mod install;
pub mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cluster_core::health::{self, Severity};
use serde::Serialize;
use tokio::sync::watch;

use crate::day2::status;
use crate::error::{Error, ExitCode};
use crate::exec::events::{Event, RunEvent, Sink, TaskStatus};
use crate::exec::Mode;
use crate::run::{RunIo, RunSpec, Target};
use crate::state::lock::LockError;
use crate::state::StateDir;

pub use decide::{Backoff, Budget, Decision, Remediate, Skip};

/// What the operator was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub inventory: Vec<PathBuf>,
    pub stack_dir: Option<PathBuf>,
    /// One cycle, then return.
    pub once: bool,
    pub interval: Duration,
    pub remediate: Remediate,
    pub budget: Budget,
    /// The longest one remote command may run (plan and remediation).
    pub command_timeout: Duration,
    /// `--elect`: contend for the active role through the stack's ZooKeeper, with this session
    /// timeout; `None`: this instance is always active.
    pub elect: Option<Duration>,
}

/// One line of the operator's progress.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OperateEvent {
    Started {
        interval_secs: u64,
        remediate: Remediate,
        agents_per_cycle: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
    },
    /// A cycle begins (its plan runs next).
    CycleStarted { cycle: u64 },
    /// `--elect`: another instance is active; this one skips the cycle.
    Standby {
        cycle: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        problem: Option<String>,
    },
    /// `--elect`: this instance became the active one.
    Active { cycle: u64 },
    /// Another run holds the run lock: this cycle does nothing more.
    LockHeld { cycle: u64, holder: String },
    Planned {
        cycle: u64,
        run: String,
        duration_ms: u64,
        /// host → drifted tasks.
        drift: BTreeMap<String, Vec<String>>,
        unreachable: Vec<String>,
    },
    /// The quorum gates are red (what `safe` waits for).
    HealthRed { cycle: u64, reasons: Vec<String> },
    Decided {
        cycle: u64,
        remediate: Vec<String>,
        skipped: BTreeMap<String, Skip>,
    },
    Remediated {
        cycle: u64,
        run: String,
        host: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    CycleEnded {
        cycle: u64,
        result: CycleResult,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_in_secs: Option<u64>,
    },
    /// A problem that ends a cycle, not the operator (the next cycle tries again).
    Error { cycle: u64, message: String },
    /// A stop signal: the running step finished, the operator ends.
    Stopping { signal: String },
}

/// How a cycle ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleResult {
    /// No drift, or every drifted host was remediated.
    Converged,
    /// Drift remains (reported only, skipped, or the lock was held for the remediation).
    Drift,
    /// A remediation failed.
    Failed,
    /// Another run held the run lock.
    Locked,
    /// The plan or the health probe could not run.
    Error,
    /// A stop signal came before the cycle's remediation.
    Stopped,
    /// `--elect`: another instance is active.
    Standby,
}

impl CycleResult {
    fn label(self) -> &'static str {
        match self {
            CycleResult::Converged => "converged",
            CycleResult::Drift => "drift",
            CycleResult::Failed => "failed",
            CycleResult::Locked => "locked",
            CycleResult::Error => "error",
            CycleResult::Stopped => "stopped",
            CycleResult::Standby => "standby",
        }
    }

    /// `operate --once`'s exit code: 0 converged, 4 drift left (also with `--remediate off`),
    /// 1 a remediation failed, 5 the lock was held, 2 the cycle could not run.
    pub fn exit_code(self) -> ExitCode {
        match self {
            CycleResult::Converged | CycleResult::Stopped | CycleResult::Standby => ExitCode::Ok,
            CycleResult::Drift => ExitCode::ChangesPending,
            CycleResult::Failed => ExitCode::HostsFailed,
            CycleResult::Locked => ExitCode::Locked,
            CycleResult::Error => ExitCode::BadInput,
        }
    }
}

impl OperateEvent {
    /// The event as one line for people.
    pub fn text(&self) -> String {
        let list = |v: &[String]| v.join(", ");
        match self {
            OperateEvent::Started {
                interval_secs,
                remediate,
                agents_per_cycle,
                listen,
            } => format!(
                "operate: every {interval_secs}s (with jitter), remediate {}, agents per cycle {agents_per_cycle}{}",
                serde_json::to_value(remediate)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                listen
                    .as_ref()
                    .map(|l| format!(", metrics on http://{l}/metrics"))
                    .unwrap_or_default()
            ),
            OperateEvent::CycleStarted { cycle } => format!("cycle {cycle}: started"),
            OperateEvent::Standby { cycle, problem } => format!(
                "cycle {cycle}: standby (another operator is active){}",
                problem
                    .as_ref()
                    .map(|p| format!("; {p}"))
                    .unwrap_or_default()
            ),
            OperateEvent::Active { cycle } => {
                format!("cycle {cycle}: this operator is now the active one")
            }
            OperateEvent::LockHeld { cycle, holder } => {
                format!("cycle {cycle}: waiting for the run lock held by {holder}; trying again next cycle")
            }
            OperateEvent::Planned {
                cycle,
                run,
                duration_ms,
                drift,
                unreachable,
            } => {
                let mut s = format!(
                    "cycle {cycle}: plan {:.1}s (run {run}): ",
                    *duration_ms as f64 / 1000.0
                );
                if drift.is_empty() {
                    s.push_str("no drift");
                } else {
                    let hosts: Vec<String> = drift
                        .iter()
                        .map(|(h, t)| format!("{h} [{}]", t.join("; ")))
                        .collect();
                    s.push_str(&format!(
                        "drift on {} host(s): {}",
                        drift.len(),
                        hosts.join(", ")
                    ));
                }
                if !unreachable.is_empty() {
                    s.push_str(&format!("; unreachable: {}", list(unreachable)));
                }
                s
            }
            OperateEvent::HealthRed { cycle, reasons } => {
                format!("cycle {cycle}: quorum gates red: {}", reasons.join("; "))
            }
            OperateEvent::Decided {
                cycle,
                remediate,
                skipped,
            } => {
                let mut s = format!("cycle {cycle}: ");
                if remediate.is_empty() {
                    s.push_str("remediating nothing");
                } else {
                    s.push_str(&format!("remediating {}", list(remediate)));
                }
                for (h, why) in skipped {
                    s.push_str(&format!("; skipped {h} ({why})"));
                }
                s
            }
            OperateEvent::Remediated {
                cycle,
                run,
                host,
                ok,
                error,
            } => match (ok, error) {
                (true, _) => format!("cycle {cycle}: remediated {host} (run {run})"),
                (false, e) => format!(
                    "cycle {cycle}: remediation of {host} failed (run {run}): {}",
                    e.as_deref().unwrap_or("failed")
                ),
            },
            OperateEvent::CycleEnded {
                cycle,
                result,
                next_in_secs,
            } => format!(
                "cycle {cycle}: {}{}",
                result.label(),
                next_in_secs
                    .map(|s| format!(", next in {s}s"))
                    .unwrap_or_default()
            ),
            OperateEvent::Error { cycle, message } => format!("cycle {cycle}: error: {message}"),
            OperateEvent::Stopping { signal } => {
                format!("operate: {signal} received, the running step finished; stopping")
            }
        }
    }
}

/// Collects a plan's drift from its events.
#[derive(Clone, Default)]
struct DriftSink(Arc<Mutex<PlanFindings>>);

#[derive(Clone, Debug, Default)]
struct PlanFindings {
    /// host → [(component, task)].
    drift: BTreeMap<String, Vec<(String, String)>>,
    unreachable: BTreeSet<String>,
}

/// The role a task belongs to (`role : name`), else `play`.
fn component_of(task: &str) -> String {
    task.split_once(" : ")
        .map(|(r, _)| r.trim().to_string())
        .unwrap_or_else(|| "play".into())
}

impl Sink for DriftSink {
    fn event(&mut self, e: &Event) -> Result<(), String> {
        if let RunEvent::TaskFinished(r) = &e.body {
            if r.item.is_some() {
                return Ok(());
            }
            let mut f = self.0.lock().map_err(|_| "drift poisoned".to_string())?;
            let task = match r.status {
                TaskStatus::Changed => r.task.clone(),
                TaskStatus::Failed => format!("{} (fails in check mode)", r.task),
                TaskStatus::Unreachable => {
                    f.unreachable.insert(r.host.clone());
                    return Ok(());
                }
                _ => return Ok(()),
            };
            let entry = (component_of(&r.task), task);
            let tasks = f.drift.entry(r.host.clone()).or_default();
            if !tasks.contains(&entry) {
                tasks.push(entry);
            }
        }
        Ok(())
    }
}

/// What the operator keeps between cycles.
pub struct Operator {
    opts: Options,
    metrics: metrics::Metrics,
    backoff: Backoff,
    started: Instant,
    cycle: u64,
    election: Option<election::Election>,
    was_active: bool,
    /// Runs get this: it never fires, so a stop signal lets the running step finish.
    _hold: watch::Sender<bool>,
    run_cancel: watch::Receiver<bool>,
}

fn now_secs(started: Instant) -> u64 {
    started.elapsed().as_secs()
}

impl Operator {
    pub fn new(opts: Options, metrics: metrics::Metrics) -> Result<Operator, Error> {
        if opts.inventory.is_empty() {
            return Err(Error::Usage("operate needs an inventory (-i)".into()));
        }
        // Fail fast on an inventory that cannot be read at all; later cycles report and retry.
        crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
        let election = match opts.elect {
            Some(timeout) => {
                let e = start_election(&opts.inventory, timeout)?;
                // Give the election its session timeout to settle before the first cycle.
                let until = Instant::now() + timeout;
                while !e.active() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(e)
            }
            None => None,
        };
        metrics.active.set(i64::from(election.is_none()));
        let (hold, run_cancel) = watch::channel(false);
        Ok(Operator {
            opts,
            metrics,
            backoff: Backoff::default(),
            started: Instant::now(),
            cycle: 0,
            was_active: election.is_none(),
            election,
            _hold: hold,
            run_cancel,
        })
    }

    fn spec(&self, command: &str, mode: Mode) -> RunSpec {
        let mut spec = RunSpec::new(
            command,
            self.opts.inventory.clone(),
            Target::Stack {
                dir: self.opts.stack_dir.clone(),
                play: None,
            },
            mode,
        );
        spec.command_timeout = self.opts.command_timeout;
        spec
    }

    /// Active: no election, or this instance leads it now.
    fn active(&self) -> bool {
        self.election.as_ref().is_none_or(|e| e.active())
    }

    /// Who holds the run lock, when another run does.
    fn lock_holder(&self) -> Result<Option<String>, Error> {
        let st = StateDir::for_inventory(&self.opts.inventory[0]);
        match st.lock("operate", None) {
            Ok(lock) => {
                drop(lock);
                Ok(None)
            }
            Err(LockError::Held { holder, .. }) | Err(LockError::Timeout { holder, .. }) => {
                Ok(Some(
                    holder
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| "an unknown holder".into()),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The quorum gates and roles, from one health probe.
    fn health(&self) -> Result<(decide::Health, decide::Roles), Error> {
        let inv = crate::resolve::inventory::load_sources(&self.opts.inventory)
            .map_err(Error::Invalid)?;
        let g = status::groups(&inv);
        let report = status::observe(
            &self.opts.inventory,
            self.opts.stack_dir.clone(),
            Some(self.run_cancel.clone()),
        )?;
        let critical: Vec<&health::Flag> = report
            .flags
            .iter()
            .filter(|f| f.severity == Severity::Critical)
            .collect();
        let mut components: Vec<String> = ["zookeeper", "mesos_master", "mesos_agent"]
            .into_iter()
            .map(String::from)
            .collect();
        for f in &critical {
            if !components.contains(&f.component) {
                components.push(f.component.clone());
            }
        }
        let red_components: Vec<String> = critical.iter().map(|f| f.component.clone()).collect();
        self.metrics.set_health(&components, &red_components);
        let members: Vec<&String> = g.zookeeper.iter().chain(&g.masters).collect();
        let red = critical
            .iter()
            .filter(|f| f.component == "zookeeper" || f.component == "mesos_master")
            .map(|f| decide::RedGate {
                member: members
                    .iter()
                    .find(|m| f.reason.starts_with(&format!("{m}: ")))
                    .map(|m| m.to_string()),
                reason: format!("{}: {}", f.component, f.reason),
            })
            .collect();
        let mut may_not_stop = BTreeMap::new();
        for (component, members) in [("zookeeper", &g.zookeeper), ("mesos_master", &g.masters)] {
            for m in members {
                if let Err(why) = health::may_stop(component, m, &report.view) {
                    may_not_stop.entry(m.clone()).or_insert(why);
                }
            }
        }
        let mut quorum = health::rollout_order("zookeeper", &g.zookeeper, &report.view);
        for m in health::rollout_order("mesos_master", &g.masters, &report.view) {
            if !quorum.contains(&m) {
                quorum.push(m);
            }
        }
        Ok((
            decide::Health { red, may_not_stop },
            decide::Roles {
                quorum,
                agents: g.agents,
            },
        ))
    }

    /// One cycle. `stop`: true once a stop signal came (checked between steps).
    pub fn cycle(&mut self, stop: &dyn Fn() -> bool, say: &dyn Fn(&OperateEvent)) -> CycleResult {
        self.cycle += 1;
        let cycle = self.cycle;
        say(&OperateEvent::CycleStarted { cycle });
        let active = self.active();
        self.metrics.active.set(i64::from(active));
        if !active {
            self.was_active = false;
            say(&OperateEvent::Standby {
                cycle,
                problem: self.election.as_ref().and_then(|e| e.problem()),
            });
            self.metrics.cycle(CycleResult::Standby.label());
            return CycleResult::Standby;
        }
        if !self.was_active {
            self.was_active = true;
            say(&OperateEvent::Active { cycle });
        }
        let r = self.cycle_inner(cycle, stop, say);
        let result = match r {
            Ok(r) => r,
            Err(e) => {
                say(&OperateEvent::Error {
                    cycle,
                    message: e.to_string(),
                });
                if matches!(e, Error::Locked(_)) {
                    CycleResult::Locked
                } else {
                    CycleResult::Error
                }
            }
        };
        self.metrics.cycle(result.label());
        result
    }

    fn cycle_inner(
        &mut self,
        cycle: u64,
        stop: &dyn Fn() -> bool,
        say: &dyn Fn(&OperateEvent),
    ) -> Result<CycleResult, Error> {
        if let Some(holder) = self.lock_holder()? {
            self.metrics.lock_waits.inc();
            say(&OperateEvent::LockHeld { cycle, holder });
            return Ok(CycleResult::Locked);
        }
        // 1. plan
        let mut spec = self.spec("operate", Mode::Check);
        spec.diff = false;
        let found = DriftSink::default();
        let io = RunIo {
            sinks: vec![Box::new(found.clone())],
            cancel: Some(self.run_cancel.clone()),
            ..Default::default()
        };
        let t = Instant::now();
        let outcome = crate::run::run(&spec, io)?;
        let elapsed = t.elapsed();
        self.metrics.plan_duration.set(elapsed.as_secs_f64());
        self.metrics.plan_timestamp.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        );
        let findings = found.0.lock().map(|f| f.clone()).unwrap_or_default();
        self.metrics.set_drift(&findings.drift);
        say(&OperateEvent::Planned {
            cycle,
            run: outcome.run_id.clone(),
            duration_ms: elapsed.as_millis() as u64,
            drift: findings
                .drift
                .iter()
                .map(|(h, t)| (h.clone(), t.iter().map(|(_, t)| t.clone()).collect()))
                .collect(),
            unreachable: findings.unreachable.iter().cloned().collect(),
        });
        if stop() {
            return Ok(CycleResult::Stopped);
        }
        // 2. health (also for the metrics when there is no drift)
        let (health, roles) = self.health()?;
        if !health.red.is_empty() {
            say(&OperateEvent::HealthRed {
                cycle,
                reasons: health.red.iter().map(|g| g.reason.clone()).collect(),
            });
        }
        if findings.drift.is_empty() {
            return Ok(CycleResult::Converged);
        }
        // 3. decide
        let drifted: BTreeSet<String> = findings.drift.keys().cloned().collect();
        let now = now_secs(self.started);
        let d = decide::decide(
            &drifted,
            &roles,
            &health,
            &self.backoff,
            now,
            self.opts.remediate,
            self.opts.budget,
        );
        for s in d.skipped.values() {
            self.metrics.skip(skip_label(s));
        }
        say(&OperateEvent::Decided {
            cycle,
            remediate: d.remediate.clone(),
            skipped: d.skipped.clone(),
        });
        if d.remediate.is_empty() {
            return Ok(CycleResult::Drift);
        }
        if stop() {
            return Ok(CycleResult::Stopped);
        }
        if !self.active() {
            // The lead was lost during the plan: the new active instance repairs.
            self.metrics.active.set(0);
            return Ok(CycleResult::Standby);
        }
        // 4. remediate: one apply limited to the chosen hosts, under the run lock
        let mut spec = self.spec("operate remediate", Mode::Apply);
        spec.limit = Some(d.remediate.join(":"));
        spec.history.parent = Some(outcome.run_id.clone());
        let io = RunIo {
            cancel: Some(self.run_cancel.clone()),
            ..Default::default()
        };
        let fixed = match crate::run::run(&spec, io) {
            Err(Error::Locked(holder)) => {
                self.metrics.lock_waits.inc();
                say(&OperateEvent::LockHeld { cycle, holder });
                return Ok(CycleResult::Locked);
            }
            Err(e) => return Err(e),
            Ok(o) => o,
        };
        let mut failed = false;
        let mut remaining = findings.drift.clone();
        for host in &d.remediate {
            let errors: Vec<String> = fixed
                .recap
                .failures
                .iter()
                .filter(|f| &f.host == host)
                .map(|f| format!("{}: {}", f.task, f.msg.trim()))
                .collect();
            let bad = fixed
                .recap
                .hosts
                .get(host)
                .is_none_or(|r| r.failed > 0 || r.unreachable > 0)
                || !errors.is_empty();
            let ok = !bad && !fixed.cancelled;
            self.backoff.record(
                host,
                ok,
                now_secs(self.started),
                self.opts.interval.as_secs(),
            );
            self.metrics.remediation(if ok { "ok" } else { "failed" });
            if ok {
                remaining.remove(host);
            } else {
                failed = true;
            }
            say(&OperateEvent::Remediated {
                cycle,
                run: fixed.run_id.clone(),
                host: host.clone(),
                ok,
                error: (!ok).then(|| {
                    if errors.is_empty() {
                        "the host did not complete the run".to_string()
                    } else {
                        errors.join("; ")
                    }
                }),
            });
        }
        // The drift gauges show what is left after the remediation.
        self.metrics.set_drift(&remaining);
        Ok(if failed {
            CycleResult::Failed
        } else if remaining.is_empty() {
            CycleResult::Converged
        } else {
            CycleResult::Drift
        })
    }

    /// The wait before the next cycle: the interval ± 10 %.
    fn next_wait(&self) -> Duration {
        let base = self.opts.interval.as_millis() as u64;
        let spread = base / 10;
        let jitter = if spread == 0 {
            0
        } else {
            rand::random_range(0..=2 * spread)
        };
        Duration::from_millis(base - spread + jitter)
    }
}

/// `--elect`: the ensemble from the inventory's ZooKeeper members (their `ansible_host`) and the
/// bundle's client port; the password from the inventory's secrets store.
fn start_election(
    inventory: &[PathBuf],
    session_timeout: Duration,
) -> Result<election::Election, Error> {
    let inv = crate::resolve::inventory::load_sources(inventory).map_err(Error::Invalid)?;
    let g = status::groups(&inv);
    let port = crate::stack::builtin_bundle()?
        .port("zookeeper", "client")
        .unwrap_or(2181);
    let ensemble: Vec<String> = g
        .zookeeper
        .iter()
        .map(|h| {
            let addr = inv
                .host_vars(h)
                .get("ansible_host")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(h)
                .to_string();
            format!("{addr}:{port}")
        })
        .collect();
    if ensemble.is_empty() {
        return Err(Error::Usage(
            "--elect: the inventory has no ZooKeeper members to elect through".into(),
        ));
    }
    let store = StateDir::for_inventory(&inventory[0]).secrets()?;
    let kw = |k: &str, v: &str| (k.to_string(), v.to_string());
    let password = store
        .password(
            election::SECRET,
            &[kw("length", "32"), kw("chars", "ascii_letters,digits")],
        )
        .map_err(|e| Error::Environment(format!("--elect: the election's password: {e}")))?;
    let me = format!(
        "{} pid {}",
        crate::state::lock::machine(),
        std::process::id()
    );
    election::Election::start(ensemble.join(","), password, session_timeout, me)
        .map_err(Error::Environment)
}

fn skip_label(s: &Skip) -> &'static str {
    match s {
        Skip::ReportOnly => "report_only",
        Skip::QuorumOnePerCycle { .. } => "quorum_one_per_cycle",
        Skip::HealthRed { .. } => "health_red",
        Skip::Budget { .. } => "budget",
        Skip::BackedOff { .. } => "backed_off",
    }
}

/// Run the operator: cycles until a stop signal (or one cycle with `once`). Returns the last
/// cycle's result (`Stopped` after a signal in the loop).
pub fn operate(
    opts: Options,
    metrics: metrics::Metrics,
    stop: watch::Receiver<bool>,
    say: &dyn Fn(&OperateEvent),
) -> Result<CycleResult, Error> {
    let mut op = Operator::new(opts, metrics)?;
    let stopped = || *stop.borrow();
    let signal_name = || match crate::run::signals::received() {
        Some(crate::run::signals::SIGTERM) => "SIGTERM".to_string(),
        _ => "SIGINT".to_string(),
    };
    let leave = |op: &Operator| {
        if let Some(e) = &op.election {
            e.stop();
        }
    };
    loop {
        let result = op.cycle(&stopped, say);
        if op.opts.once {
            leave(&op);
            say(&OperateEvent::CycleEnded {
                cycle: op.cycle,
                result,
                next_in_secs: None,
            });
            if stopped() {
                say(&OperateEvent::Stopping {
                    signal: signal_name(),
                });
            }
            return Ok(result);
        }
        let wait = op.next_wait();
        say(&OperateEvent::CycleEnded {
            cycle: op.cycle,
            result,
            next_in_secs: (!stopped()).then_some(wait.as_secs()),
        });
        let until = Instant::now() + wait;
        while Instant::now() < until && !stopped() {
            std::thread::sleep(Duration::from_millis(200).min(until - Instant::now()));
        }
        if stopped() {
            leave(&op);
            say(&OperateEvent::Stopping {
                signal: signal_name(),
            });
            return Ok(CycleResult::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_come_from_the_role_part_of_a_task_name() {
        assert_eq!(component_of("mesos_agent : write flags"), "mesos_agent");
        assert_eq!(component_of("gather"), "play");
    }

    #[test]
    fn once_exit_codes_say_what_is_left() {
        assert_eq!(CycleResult::Converged.exit_code(), ExitCode::Ok);
        assert_eq!(CycleResult::Drift.exit_code(), ExitCode::ChangesPending);
        assert_eq!(CycleResult::Failed.exit_code(), ExitCode::HostsFailed);
        assert_eq!(CycleResult::Locked.exit_code(), ExitCode::Locked);
    }

    #[test]
    fn the_drift_sink_keeps_changed_and_failing_tasks_and_notes_unreachable_hosts() {
        use crate::exec::events::TaskReport;
        let report = |host: &str, task: &str, status| TaskReport {
            host: host.into(),
            play: 0,
            task: task.into(),
            loc: String::new(),
            status,
            changed: status == TaskStatus::Changed,
            item: None,
            msg: None,
            output: false,
            diffs: vec![],
            handler: false,
            duration_ms: 0,
        };
        let mut s = DriftSink::default();
        for (h, t, st) in [
            ("a1", "mesos_agent : flags", TaskStatus::Changed),
            ("a1", "mesos_agent : flags", TaskStatus::Changed),
            ("a1", "docker : ok", TaskStatus::Ok),
            ("m2", "dnsmasq : check", TaskStatus::Failed),
            ("a2", "common : x", TaskStatus::Unreachable),
        ] {
            let e = Event {
                version: 1,
                run: "r".into(),
                seq: 0,
                time: SystemTime::now(),
                body: RunEvent::TaskFinished(report(h, t, st)),
            };
            s.event(&e).unwrap();
        }
        let f = s.0.lock().unwrap().clone();
        assert_eq!(
            f.drift["a1"],
            [("mesos_agent".to_string(), "mesos_agent : flags".to_string())]
        );
        assert_eq!(f.drift["m2"][0].1, "dnsmasq : check (fails in check mode)");
        assert!(f.unreachable.contains("a2") && !f.drift.contains_key("a2"));
    }
}
