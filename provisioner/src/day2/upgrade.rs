//! `provisioner upgrade`: roll what runs to the versions the bundle (or the inventory) asks for,
//! one member or batch at a time, behind cluster-core's gates.
//!
//! A thin layer with no engine of its own: it probes the cluster (`status`'s probes), asks
//! `cluster_core::upgrade` for the plan and for each gate, and changes hosts only through the
//! run API, with in-memory plays of the stack's own roles:
//! - a quorum component (ZooKeeper, masters) is staged on every member at once (the roles
//!   install the new build beside the running one and leave a restart marker on a serving
//!   member), then each member's `rolling_restart` phase runs alone, the leader last;
//! - agents, in batches, are put in a maintenance window, their roles install and restart
//!   them (the handler), and the window ends once each is back with its old id.
//!
//! Every step is a [`StepEvent`] on the upgrade's own bus. A red gate, a failed run, Ctrl-C or
//! a gate that does not turn green in time halts it before the next member; what is done stays
//! done (the hosts' versions are the record), so running it again resumes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cluster_core::upgrade::{self as core, Plan, Stage};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::status::{self, Report};
use crate::error::{Error, ExitCode};
use crate::exec::events::{EventSink, RunEvent, Sink, StepEvent, StepStatus};
use crate::exec::Mode;
use crate::model::inventory::Inventory;
use crate::run::{InlinePlay, RunIo, RunSpec, Target};

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub inventory: Vec<PathBuf>,
    pub stack_dir: Option<PathBuf>,
    /// Only this component (`zookeeper`, `mesos_master`, `mesos_agent`).
    pub component: Option<String>,
    /// Print the plan, change nothing.
    pub plan_only: bool,
    /// Agents restarted together.
    pub max_unavailable: usize,
    pub allow_downgrade: bool,
    /// How long a gate may stay red after a restart before the upgrade halts.
    pub gate_timeout: Duration,
}

/// How an upgrade ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Everything already runs the desired versions.
    NothingToDo,
    /// `--plan`: shown, nothing changed.
    Planned,
    /// Refused before touching anything; the reasons were reported.
    Refused,
    Done,
    /// Stopped at a safe point; the reason was reported.
    Halted(String),
}

impl Ended {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Ended::NothingToDo | Ended::Planned | Ended::Done => ExitCode::Ok,
            Ended::Refused | Ended::Halted(_) => ExitCode::HostsFailed,
        }
    }
}

/// The versions the inventory asks for: component → host → version. Mesos follows the roles'
/// `mesos_version` (an inventory variable, else the bundle's); ZooKeeper the bundle's.
pub fn desired_versions(
    inv: &Inventory,
    g: &status::Groups,
    bundle: &cluster_core::bundle::Bundle,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let bundled = |c: &str| {
        bundle
            .components
            .get(c)
            .map(|x| x.value.version.value.clone())
    };
    let mesos = |host: &str| {
        inv.host_vars(host)
            .get("mesos_version")
            .and_then(Value::as_str)
            .filter(|v| !v.contains("{{"))
            .map(str::to_string)
            .or_else(|| bundled("mesos_master"))
    };
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if let Some(v) = bundled("zookeeper") {
        out.insert(
            "zookeeper".into(),
            g.zookeeper.iter().map(|h| (h.clone(), v.clone())).collect(),
        );
    }
    for (c, hosts) in [("mesos_master", &g.masters), ("mesos_agent", &g.agents)] {
        out.insert(
            c.into(),
            hosts
                .iter()
                .filter_map(|h| Some((h.clone(), mesos(h)?)))
                .collect(),
        );
    }
    out
}

/// The plan as lines for the operator.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = Vec::new();
    if plan.stages.is_empty() {
        out.push("every member already runs the desired version".to_string());
    }
    for s in &plan.stages {
        out.push(format!(
            "{} (upgrade_order {}), {} host(s), {}:",
            s.component,
            s.order,
            s.changes.len(),
            if s.component == "mesos_agent" {
                "in batches".to_string()
            } else {
                "one at a time, the leader last".to_string()
            }
        ));
        for (i, b) in s.batches.iter().enumerate() {
            let line: Vec<String> = b
                .iter()
                .map(|h| {
                    let c = s.changes.iter().find(|c| &c.host == h);
                    format!(
                        "{h} {} -> {}",
                        c.and_then(|c| c.from.as_deref()).unwrap_or("?"),
                        c.map(|c| c.to.as_str()).unwrap_or("?")
                    )
                })
                .collect();
            out.push(format!("  {}. {}", i + 1, line.join(", ")));
        }
        if !s.drain.is_empty() {
            out.push(format!(
                "  drain path: {} (attributes or resources change: drained and marked gone, their tasks end, each registers as a new agent)",
                s.drain.join(", ")
            ));
        }
        out.push(format!("  before each: {}", s.gates_before.join("; ")));
        out.push(format!("  after each: {}", s.gates_after.join("; ")));
    }
    out.join("\n")
}

struct Upgrade<'a> {
    opts: &'a Options,
    bus: Arc<crate::run::bus::Bus>,
    cancel: watch::Receiver<bool>,
    /// The CA file and the master port for calls to the leader.
    ca_file: Option<String>,
    master_port: u16,
}

/// The roles an agent's stage runs before `mesos_agent` (as site.yml's agents play).
const AGENT_ROLES: [&str; 4] = ["cluster_facts", "docker", "cni", "mesos_install"];

/// The task of role `mesos_agent` that says the agent's identity changes (it notifies `mesos-agent
/// info changed`).
const AGENT_INFO_TASK: &str = "the agent's attributes or resources changed";

/// Keeps the hosts on which a task whose name ends with `.0` reports `changed`.
#[derive(Clone)]
struct ChangedOn(
    &'static str,
    Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
);

impl Sink for ChangedOn {
    fn event(&mut self, e: &crate::exec::events::Event) -> Result<(), String> {
        if let RunEvent::TaskFinished(r) = &e.body {
            if r.task.ends_with(self.0)
                && r.status == crate::exec::events::TaskStatus::Changed
                && r.item.is_none()
            {
                if let Ok(mut s) = self.1.lock() {
                    s.insert(r.host.clone());
                }
            }
        }
        Ok(())
    }
}

/// Why a step stopped the upgrade.
type Halt = String;

impl Upgrade<'_> {
    fn step(
        &self,
        phase: &str,
        component: Option<&str>,
        hosts: &[String],
        status: StepStatus,
        message: impl Into<String>,
    ) {
        self.bus.emit(RunEvent::Step(StepEvent {
            operation: "upgrade".into(),
            phase: phase.into(),
            component: component.map(str::to_string),
            hosts: hosts.to_vec(),
            status,
            message: message.into(),
        }));
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn probe(&self) -> Result<Report, Halt> {
        status::status(&self.opts.inventory, self.opts.stack_dir.clone())
            .map_err(|e| format!("the cluster could not be probed: {e}"))
    }

    /// Run `role` (after `before`) on `hosts`, applying; `Err` names the failed tasks.
    fn run_role(
        &self,
        hosts: &[String],
        before: &[&str],
        role: &str,
        params: serde_json::Map<String, Value>,
    ) -> Result<u32, Halt> {
        self.run_role_in(Mode::Apply, hosts, before, role, params, Vec::new())
    }

    /// The agents whose roles, in check mode, say their identity changes (drain path).
    fn incompatible_agents(
        &self,
        hosts: &[String],
    ) -> Result<std::collections::BTreeSet<String>, Halt> {
        let seen = ChangedOn(AGENT_INFO_TASK, Default::default());
        self.run_role_in(
            Mode::Check,
            hosts,
            &AGENT_ROLES,
            "mesos_agent",
            serde_json::Map::new(),
            vec![Box::new(seen.clone())],
        )
        .map_err(|e| format!("checking the agents' new configuration: {e}"))?;
        let out = seen.1.lock().map(|s| s.clone()).unwrap_or_default();
        Ok(out)
    }

    fn run_role_in(
        &self,
        mode: Mode,
        hosts: &[String],
        before: &[&str],
        role: &str,
        params: serde_json::Map<String, Value>,
        sinks: Vec<Box<dyn Sink>>,
    ) -> Result<u32, Halt> {
        let play = InlinePlay {
            before: before.iter().map(|r| r.to_string()).collect(),
            params,
            ..InlinePlay::role(&format!("upgrade {role}"), &hosts.join(":"), role)
        };
        let mut spec = RunSpec::new(
            "upgrade",
            self.opts.inventory.clone(),
            Target::Stack {
                dir: self.opts.stack_dir.clone(),
                play: Some(play),
            },
            mode,
        );
        spec.history.parent = Some(self.bus.run_id().to_string());
        let io = RunIo {
            sinks,
            cancel: Some(self.cancel.clone()),
            ..Default::default()
        };
        let outcome = crate::run::run(&spec, io).map_err(|e| e.to_string())?;
        if outcome.cancelled {
            return Err("interrupted (Ctrl-C) while the role ran; running steps finished".into());
        }
        if outcome.exit != ExitCode::Ok {
            return Err(format!(
                "role {role} failed on {}",
                super::failures_text(&outcome)
            ));
        }
        Ok(outcome.recap.total_changed())
    }

    /// Probe until `settled` holds, or the gate timeout passes.
    fn wait_settled(
        &self,
        component: &str,
        batch: &[String],
        to: &str,
        before: &core::Before,
    ) -> Result<Report, Halt> {
        let started = Instant::now();
        self.step(
            "gate",
            Some(component),
            batch,
            StepStatus::Started,
            "waiting for the gates after the restart",
        );
        loop {
            let r = self.probe()?;
            match core::settled(component, batch, to, before, &r.view) {
                Ok(()) => {
                    self.step(
                        "gate",
                        Some(component),
                        batch,
                        StepStatus::Ok,
                        format!("green after {:.1} s", started.elapsed().as_secs_f64()),
                    );
                    return Ok(r);
                }
                Err(why) if started.elapsed() >= self.opts.gate_timeout => {
                    return Err(format!(
                        "the gate after {} stayed red for {} s: {why}",
                        batch.join(", "),
                        self.opts.gate_timeout.as_secs()
                    ));
                }
                Err(_) if self.cancelled() => {
                    return Err("interrupted (Ctrl-C) while waiting for a gate".into())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Red gates before a batch, with the quorum rule.
    fn check_before(&self, component: &str, batch: &[String]) -> Result<Report, Halt> {
        if self.cancelled() {
            return Err("interrupted (Ctrl-C)".into());
        }
        let r = self.probe()?;
        core::may_begin(component, batch, &r.view, &r.flags)
            .map_err(|why| format!("gate red: {why}"))?;
        Ok(r)
    }

    fn quorum_stage(&self, s: &Stage) -> Result<(), Halt> {
        let c = s.component.as_str();
        let (role, before_roles, phase_var): (&str, &[&str], &str) = match c {
            // `gate`: the roles' restart gates (a cluster provisioned before them lacks it).
            "zookeeper" => ("zookeeper", &["cluster_facts", "gate"], "zookeeper_phase"),
            _ => (
                "mesos_master",
                &["cluster_facts", "gate", "mesos_install"],
                "mesos_master_phase",
            ),
        };
        let hosts: Vec<String> = s.changes.iter().map(|ch| ch.host.clone()).collect();
        self.step(
            "stage",
            Some(c),
            &hosts,
            StepStatus::Started,
            "installing the new build beside the running one (serving members are marked, not restarted)",
        );
        let changed = self.run_role(&hosts, before_roles, role, serde_json::Map::new())?;
        self.step(
            "stage",
            Some(c),
            &hosts,
            StepStatus::Ok,
            format!("{changed} change(s)"),
        );
        let mut remaining = hosts;
        while !remaining.is_empty() {
            let r = self.check_before(c, &remaining).map_err(|e| {
                format!(
                    "before the next member ({} left: {}): {e}",
                    remaining.len(),
                    remaining.join(", ")
                )
            })?;
            let Some(next) = core::next_member(c, &remaining, &r.view) else {
                break;
            };
            let batch = vec![next.clone()];
            let to = s
                .changes
                .iter()
                .find(|ch| ch.host == next)
                .map(|ch| ch.to.clone())
                .unwrap_or_default();
            let before = core::before(c, &batch, &r.view);
            self.step(
                "restart",
                Some(c),
                &batch,
                StepStatus::Started,
                format!(
                    "restarting {next}{}",
                    if before.had_leader {
                        " (the leader, last)"
                    } else {
                        ""
                    }
                ),
            );
            let mut params = serde_json::Map::new();
            params.insert(phase_var.into(), json!("rolling_restart"));
            self.run_role(&batch, &["cluster_facts"], role, params)
                .map_err(|e| format!("restarting {next}: {e}"))?;
            self.step("restart", Some(c), &batch, StepStatus::Ok, "restarted");
            self.wait_settled(c, &batch, &to, &before)?;
            remaining.retain(|h| h != &next);
        }
        Ok(())
    }

    /// One call to the leader's HTTP API; `Ok((status, body))`.
    fn leader_call(
        &self,
        leader: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(String, String), Halt> {
        status::master_call(
            &self.opts.inventory,
            self.opts.stack_dir.clone(),
            "upgrade",
            leader,
            (self.master_port, self.ca_file.as_deref()),
            path,
            body,
            Some(self.cancel.clone()),
        )
    }

    /// Put `batch` in a maintenance window (`add`) or take it out.
    fn maintenance(&self, r: &Report, batch: &[String], add: bool) -> Result<(), Halt> {
        let leader = leader_of(r, "schedule maintenance")?;
        let (code, body) = self.leader_call(&leader, "/master/maintenance/schedule", None)?;
        if code != "200" {
            return Err(format!(
                "reading the maintenance schedule: HTTP {code}: {body}"
            ));
        }
        let current: Value = serde_json::from_str(&body).unwrap_or_else(|_| json!({}));
        let next = if add {
            let mut machines = Vec::new();
            for h in batch {
                let ip = r.addresses.get(h).cloned().ok_or_else(|| {
                    format!("{h}: its address is unknown (the probe did not say)")
                })?;
                machines.push((h.clone(), ip));
            }
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or_default();
            core::schedule_with(&current, &machines, now, 3600 * 1_000_000_000)
        } else {
            core::schedule_without(&current, batch)
        };
        if next == current {
            return Ok(());
        }
        let (code, body) = self.leader_call(
            &leader,
            "/master/maintenance/schedule",
            Some(&next.to_string()),
        )?;
        if code != "200" {
            return Err(format!(
                "updating the maintenance schedule: HTTP {code}: {body}"
            ));
        }
        Ok(())
    }

    /// The drain path: `DRAIN_AGENT` with `mark_gone` for each agent (every master on one
    /// version), then wait until the leader no longer lists it as active.
    fn drain(&self, agents: &[String], before: &core::Before) -> Result<(), Halt> {
        let c = "mesos_agent";
        let r = self.probe()?;
        core::may_drain(&r.view)?;
        let leader = leader_of(&r, "drain")?;
        self.step(
            "drain",
            Some(c),
            agents,
            StepStatus::Started,
            "draining (its attributes or resources change: its tasks end, then it is marked gone)",
        );
        for a in agents {
            let id = before
                .agent_ids
                .get(a)
                .ok_or_else(|| format!("{a}: not registered, nothing to drain"))?;
            let (code, body) =
                self.leader_call(&leader, "/api/v1", Some(&core::drain_call(id).to_string()))?;
            if !code.starts_with('2') {
                return Err(format!("DRAIN_AGENT {a} ({id}): HTTP {code}: {body}"));
            }
        }
        let started = Instant::now();
        loop {
            let r = self.probe()?;
            let left: Vec<&String> = agents
                .iter()
                .filter(|a| {
                    r.view
                        .agents
                        .iter()
                        .any(|v| &v.hostname == *a && Some(&v.id) == before.agent_ids.get(*a))
                })
                .collect();
            if left.is_empty() {
                break;
            }
            if started.elapsed() >= self.opts.gate_timeout {
                return Err(format!(
                    "{:?} still registered under the old id {} s after DRAIN_AGENT (tasks that do not end?)",
                    left,
                    self.opts.gate_timeout.as_secs()
                ));
            }
            if self.cancelled() {
                return Err("interrupted (Ctrl-C) while draining".into());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        self.step("drain", Some(c), agents, StepStatus::Ok, "drained and gone");
        Ok(())
    }

    fn agent_stage(&self, s: &Stage) -> Result<(), Halt> {
        let c = "mesos_agent";
        for batch in &s.batches {
            let r = self
                .check_before(c, batch)
                .map_err(|e| format!("before agents {}: {e}", batch.join(", ")))?;
            let mut before = core::before(c, batch, &r.view);
            let drain: Vec<String> = batch
                .iter()
                .filter(|h| s.drain.contains(h))
                .cloned()
                .collect();
            before.new_ids.extend(drain.iter().cloned());
            self.step(
                "maintenance",
                Some(c),
                batch,
                StepStatus::Started,
                "scheduling a maintenance window (frameworks are told; nothing is drained)",
            );
            self.maintenance(&r, batch, true)?;
            self.step("maintenance", Some(c), batch, StepStatus::Ok, "in a window");
            if !drain.is_empty() {
                self.drain(&drain, &before)?;
            }
            self.step(
                "restart",
                Some(c),
                batch,
                StepStatus::Started,
                "installing the new build, then restarting (tasks keep running; the agent recovers them)",
            );
            self.run_role(batch, &AGENT_ROLES, "mesos_agent", serde_json::Map::new())
                .map_err(|e| {
                    format!(
                        "{e} (the maintenance window for {} stays until a rerun finishes them)",
                        batch.join(", ")
                    )
                })?;
            self.step("restart", Some(c), batch, StepStatus::Ok, "restarted");
            let to = s
                .changes
                .iter()
                .find(|ch| batch.contains(&ch.host))
                .map(|ch| ch.to.clone())
                .unwrap_or_default();
            let r = self.wait_settled(c, batch, &to, &before)?;
            self.maintenance(&r, batch, false)?;
            self.step(
                "maintenance",
                Some(c),
                batch,
                StepStatus::Ok,
                "window ended",
            );
        }
        Ok(())
    }
}

/// The elected master, to call its API (`Err`: none, so nothing can be done `for`).
fn leader_of(r: &Report, what: &str) -> Result<String, Halt> {
    r.view
        .leader()
        .map(str::to_string)
        .ok_or_else(|| format!("no elected master to {what} with"))
}

/// Plan, and unless `plan_only`, roll. Every step goes to `sinks` as an event. The operation
/// is one run in the history (its steps; the role runs it starts are recorded as its
/// children); the second value holds the warnings to show (the history could not record it).
pub fn upgrade(
    opts: &Options,
    mut sinks: Vec<Box<dyn Sink>>,
    cancel: watch::Receiver<bool>,
) -> Result<(Ended, Vec<String>), Error> {
    if opts.inventory.is_empty() {
        return Err(Error::Usage("upgrade needs an inventory (-i)".into()));
    }
    let inv = crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
    let g = status::groups(&inv);
    let bundle = crate::stack::builtin_bundle()?;
    let desired = desired_versions(&inv, &g, &bundle);
    let order: BTreeMap<String, u32> = bundle
        .components
        .iter()
        .map(|(k, c)| (k.clone(), c.value.upgrade_order.value))
        .collect();
    let master_port = bundle.port("mesos_master", "http").unwrap_or(5050);
    let ca_file = g
        .masters
        .first()
        .and_then(|m| status::ca_file(&inv.host_vars(m)));
    let run_id = crate::run::bus::new_run_id();
    let recorder = opts.inventory.first().map(|i| {
        let meta = crate::history::RunMeta {
            bundle_versions: Some(
                bundle
                    .components
                    .iter()
                    .map(|(k, c)| (k.clone(), c.value.version.value.clone()))
                    .collect(),
            ),
            ..crate::history::RunMeta::new(
                &run_id,
                "upgrade",
                if opts.plan_only { "plan" } else { "apply" },
                i,
            )
        };
        let dir = crate::state::StateDir::for_inventory(i);
        crate::history::recorder::Recorder::start(
            &crate::history::db_path(dir.dir()),
            meta,
            Default::default(),
        )
    });
    sinks.extend(recorder.as_ref().map(|r| r.sink()));
    let (bus, reporter) = crate::run::bus::start_as(run_id, sinks)?;
    let up = Upgrade {
        opts,
        bus: bus.clone(),
        cancel,
        ca_file,
        master_port,
    };
    let ended = run_upgrade(&up, &desired, &order);
    drop(up);
    bus.close();
    let errors = reporter.join();
    let warnings = recorder
        .and_then(|r| r.finish(Some(ended.exit_code() as i32)))
        .into_iter()
        .collect();
    if let Some(e) = errors.first() {
        return Err(Error::Usage(format!("reporting failed: {e}")));
    }
    Ok((ended, warnings))
}

fn run_upgrade(
    up: &Upgrade,
    desired: &BTreeMap<String, BTreeMap<String, String>>,
    order: &BTreeMap<String, u32>,
) -> Ended {
    let opts = up.opts;
    let r = match up.probe() {
        Ok(r) => r,
        Err(e) => {
            up.step("refused", None, &[], StepStatus::Failed, e);
            return Ended::Refused;
        }
    };
    let none = std::collections::BTreeSet::new();
    let request = |incompatible| core::Request {
        view: &r.view,
        flags: &r.flags,
        desired,
        upgrade_order: order,
        only: opts.component.as_deref(),
        max_unavailable: opts.max_unavailable,
        allow_downgrade: opts.allow_downgrade,
        incompatible,
    };
    let mut plan = core::plan(&request(&none));
    // Agents to roll: would their roles change their identity? (check mode, nothing changes)
    let agents: Vec<String> = plan
        .stages
        .iter()
        .filter(|s| s.component == "mesos_agent")
        .flat_map(|s| s.changes.iter().map(|c| c.host.clone()))
        .collect();
    if plan.refusals.is_empty() && !agents.is_empty() {
        match up.incompatible_agents(&agents) {
            Ok(inc) if !inc.is_empty() => plan = core::plan(&request(&inc)),
            Ok(_) => {}
            Err(e) => plan.refusals.push(e),
        }
    }
    up.step("plan", None, &[], StepStatus::Ok, render_plan(&plan));
    if !plan.refusals.is_empty() {
        up.step(
            "refused",
            None,
            &[],
            StepStatus::Failed,
            format!(
                "nothing was changed:\n{}",
                plan.refusals
                    .iter()
                    .map(|r| format!("- {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        );
        return Ended::Refused;
    }
    if plan.is_noop() {
        up.step("done", None, &[], StepStatus::Ok, "nothing to do");
        return Ended::NothingToDo;
    }
    if opts.plan_only {
        return Ended::Planned;
    }
    let started = Instant::now();
    for s in &plan.stages {
        let res = match s.component.as_str() {
            "mesos_agent" => up.agent_stage(s),
            _ => up.quorum_stage(s),
        };
        if let Err(why) = res {
            let msg = format!(
                "halted in {}: {why}\nNothing after that was restarted. Fix the cause, then run `provisioner upgrade` again: members already at the new version are skipped.",
                s.component
            );
            up.step("halted", Some(&s.component), &[], StepStatus::Failed, msg);
            return Ended::Halted(why);
        }
    }
    up.step(
        "done",
        None,
        &[],
        StepStatus::Ok,
        format!(
            "every planned member upgraded in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    Ended::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::day2::status::tests::inventory;

    #[test]
    fn desired_versions_follow_the_inventory_then_the_bundle() {
        let b = crate::stack::builtin_bundle().unwrap();
        let bundled = b.components["mesos_master"].value.version.value.clone();
        let inv = inventory(
            "[masters]\nm1\nm2 mesos_version=1.10.0\nm3\n[agents]\na1\n[all:vars]\nx=1\n",
        );
        let d = desired_versions(&inv, &status::groups(&inv), &b);
        assert_eq!(d["mesos_master"]["m1"], bundled);
        assert_eq!(d["mesos_master"]["m2"], "1.10.0");
        assert_eq!(d["mesos_agent"]["a1"], bundled);
        assert_eq!(
            d["zookeeper"].keys().collect::<Vec<_>>(),
            ["m1", "m2", "m3"],
            "ZooKeeper defaults to the masters"
        );
    }

    #[test]
    fn the_plan_says_what_changes_and_behind_which_gates() {
        let plan = Plan {
            stages: vec![Stage {
                component: "mesos_master".into(),
                order: 4,
                changes: vec![core::Change {
                    host: "m1".into(),
                    from: Some("1.10.0".into()),
                    to: "1.11.0".into(),
                }],
                batches: vec![vec!["m1".into()]],
                gates_before: vec!["no critical flag".into()],
                gates_after: vec!["recovered".into()],
                drain: vec![],
            }],
            refusals: vec![],
        };
        let text = render_plan(&plan);
        assert!(text.contains("m1 1.10.0 -> 1.11.0"), "{text}");
        assert!(text.contains("before each: no critical flag"), "{text}");
        assert!(render_plan(&Plan::default()).contains("already runs"));
    }
}
