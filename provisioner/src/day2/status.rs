//! `provisioner status`: the cluster's health, read-only, without the run lock.
//!
//! A thin layer: cluster-core writes each host's probe script and reads the answers
//! (`cluster_core::health`); the run API runs them, one round trip per host, as a play built in
//! memory (role `cluster_probe`, check mode). Nothing here knows what a healthy ZooKeeper or
//! Mesos looks like.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cluster_core::health::{self, ClusterView, Flag, ProbeSpec, Severity};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::Error;
use crate::exec::events::{Event, RunEvent, Sink};
use crate::exec::Mode;
use crate::model::inventory::Inventory;
use crate::run::{InlinePlay, RunIo, RunSpec, Target};

/// A certificate that expires within this many days is flagged.
pub const CERT_WARN_DAYS: i64 = 30;

/// What `status` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// No critical flag.
    pub healthy: bool,
    pub flags: Vec<Flag>,
    pub view: ClusterView,
    /// Hosts that did not answer the probe (unreachable, or the probe failed).
    pub silent: Vec<String>,
    /// The address each host's Mesos listens on (what the probe saw).
    pub addresses: BTreeMap<String, String>,
    pub elapsed_ms: u64,
}

/// The inventory's stack groups, with the stack's defaults
/// (`cluster_core::topology::default_groups`).
pub struct Groups {
    pub zookeeper: Vec<String>,
    pub masters: Vec<String>,
    pub agents: Vec<String>,
    pub monitoring: Vec<String>,
}

pub fn groups(inv: &Inventory) -> Groups {
    let mut all: cluster_core::topology::Groups = ["masters", "agents", "zookeeper", "monitoring"]
        .into_iter()
        .filter(|g| inv.groups.contains_key(*g))
        .map(|g| {
            let hosts = inv.group_hosts(g).into_iter().map(str::to_string).collect();
            (g.to_string(), hosts)
        })
        .collect();
    all.extend(cluster_core::topology::default_groups(&all));
    let mut take = |g: &str| all.shift_remove(g).unwrap_or_default();
    Groups {
        zookeeper: take("zookeeper"),
        masters: take("masters"),
        agents: take("agents"),
        monitoring: take("monitoring"),
    }
}

/// The CA file Mesos's HTTPS is verified with on a host (`None`: `mesos_tls` is off).
pub fn ca_file(vars: &crate::template::Vars) -> Option<String> {
    let tls = vars
        .get("mesos_tls")
        .is_none_or(|v| crate::model::inventory::ansible_bool(v).unwrap_or(true));
    let tls_dir = vars
        .get("tls_dir")
        .and_then(Value::as_str)
        .unwrap_or("/etc/provisioner/tls");
    tls.then(|| format!("{tls_dir}/ca.crt"))
}

/// Each host's probe script, from its groups, its variables and the bundle's ports.
fn scripts(
    inv: &Inventory,
    g: &Groups,
    bundle: &cluster_core::bundle::Bundle,
) -> BTreeMap<String, String> {
    let port = |c: &str, p: &str| bundle.port(c, p);
    let mut out = BTreeMap::new();
    for host in inv.group_hosts("all") {
        let vars = inv.host_vars(host);
        let s = |k: &str, d: &str| vars.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
        let tls_dir = s("tls_dir", "/etc/provisioner/tls");
        let has = |list: &[String]| list.iter().any(|h| h == host);
        let mut units = vec!["dnsmasq".to_string()];
        if has(&g.zookeeper) {
            units.push("zookeeper".into());
        }
        if has(&g.masters) {
            units.extend(["mesos-master".into(), "mesos-dns".into()]);
        }
        if has(&g.agents) {
            units.extend(["mesos-agent".into(), "docker".into()]);
        }
        let spec = ProbeSpec {
            zookeeper: has(&g.zookeeper)
                .then(|| port("zookeeper", "client"))
                .flatten(),
            master: has(&g.masters)
                .then(|| port("mesos_master", "http"))
                .flatten(),
            agent: has(&g.agents)
                .then(|| port("mesos_agent", "http"))
                .flatten(),
            ca_file: ca_file(&vars),
            cert_file: Some(format!("{tls_dir}/host.crt")),
            units,
            resolve: has(&g.masters).then(|| format!("leader.{}", s("dns_domain", "mesos"))),
            monitoring: has(&g.monitoring)
                .then(|| Some((port("prometheus", "http")?, port("alertmanager", "http")?)))
                .flatten(),
        };
        out.insert(host.to_string(), health::probe_script(&spec));
    }
    out
}

/// Keeps each host's probe answers (the `answers` task's message) and who was unreachable.
#[derive(Clone, Default)]
struct Answers(Arc<Mutex<BTreeMap<String, String>>>);

impl Sink for Answers {
    fn event(&mut self, e: &Event) -> Result<(), String> {
        if let RunEvent::TaskFinished(r) = &e.body {
            if r.task.ends_with("answers") {
                if let Some(m) = &r.msg {
                    self.0
                        .lock()
                        .map_err(|_| "answers poisoned".to_string())?
                        .insert(r.host.clone(), m.clone());
                }
            }
        }
        Ok(())
    }
}

/// Run one cluster-core script on each of `scripts`' hosts, once, in one round trip per host (an
/// in-memory play of role `cluster_probe`; `mode` Check takes no lock and changes nothing else).
/// Returns each host's output; a host that did not answer is missing.
/// `record`: the run is recorded in the history (runs that change hosts are; probes and calls
/// to a master are not: the operation that asked for them records its steps).
pub fn run_scripts(
    inventory: &[PathBuf],
    stack_dir: Option<PathBuf>,
    command: &str,
    scripts: &BTreeMap<String, String>,
    mode: Mode,
    cancel: Option<tokio::sync::watch::Receiver<bool>>,
    record: bool,
) -> Result<BTreeMap<String, String>, Error> {
    let hosts: Vec<&str> = scripts.keys().map(String::as_str).collect();
    let mut spec = RunSpec::new(
        command,
        inventory.to_vec(),
        Target::Stack {
            dir: stack_dir,
            play: Some(InlinePlay::role(command, &hosts.join(":"), "cluster_probe")),
        },
        mode,
    );
    spec.extra_vars
        .insert("cluster_probe_scripts".into(), json!(scripts));
    spec.command_timeout = Duration::from_secs(60);
    spec.history.record = record;
    let answers = Answers::default();
    let io = RunIo {
        sinks: vec![Box::new(answers.clone())],
        cancel,
        ..Default::default()
    };
    crate::run::run(&spec, io)?;
    let got = answers.0.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(got)
}

/// Run each host's script of `scripts` once (changing the hosts: recorded in the history as
/// `command`); every host must answer `done` as its last line. `Err` names those that did not,
/// with what they said.
pub fn run_to_done(
    inventory: &[PathBuf],
    stack_dir: Option<PathBuf>,
    command: &str,
    scripts: &BTreeMap<String, String>,
) -> Result<(), String> {
    if scripts.is_empty() {
        return Ok(());
    }
    let got = run_scripts(
        inventory,
        stack_dir,
        command,
        scripts,
        Mode::Apply,
        None,
        true,
    )
    .map_err(|e| e.to_string())?;
    let bad: Vec<String> = scripts
        .keys()
        .filter_map(|h| {
            let out = got.get(h).map(|o| o.trim()).unwrap_or_default();
            (out.lines().last() != Some("done")).then(|| {
                if out.is_empty() {
                    h.clone()
                } else {
                    format!("{h} (it said: {out})")
                }
            })
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("it did not finish on {}", bad.join(", ")))
    }
}

/// One call to a master's HTTP API, made on that master's host (cluster-core's
/// `master_call_script`, one round trip): `(HTTP status, body)`; status `000` when nothing
/// answered.
#[allow(clippy::too_many_arguments)]
pub fn master_call(
    inventory: &[PathBuf],
    stack_dir: Option<PathBuf>,
    command: &str,
    master: &str,
    (port, ca_file): (u16, Option<&str>),
    path: &str,
    body: Option<&str>,
    cancel: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<(String, String), String> {
    let script = health::master_call_script(port, ca_file, path, body);
    let scripts: BTreeMap<String, String> = [(master.to_string(), script)].into();
    let got = run_scripts(
        inventory,
        stack_dir,
        command,
        &scripts,
        Mode::Check,
        cancel,
        false,
    )
    .map_err(|e| e.to_string())?;
    let out = got
        .get(master)
        .ok_or_else(|| format!("{master} did not answer"))?;
    let a = health::read_probe(out);
    Ok((
        a.get("status").cloned().unwrap_or_default(),
        a.get("body").cloned().unwrap_or_default(),
    ))
}

/// Probe every host once and evaluate. `stack_dir`: the stack's roles from disk. Not recorded
/// in the history (day-2 operations probe often; they record their steps).
pub fn status(inventory: &[PathBuf], stack_dir: Option<PathBuf>) -> Result<Report, Error> {
    probe(inventory, stack_dir, None)
}

/// [`status`] as the `status` command runs it: the probe run is recorded in the history.
pub fn check(inventory: &[PathBuf], stack_dir: Option<PathBuf>) -> Result<Report, Error> {
    probe_as(inventory, stack_dir, None, true, None)
}

/// [`status`] for a long-running caller (the operator): runs with its `cancel` (so no signal
/// listener is started per probe), not recorded in the history.
pub fn observe(
    inventory: &[PathBuf],
    stack_dir: Option<PathBuf>,
    cancel: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<Report, Error> {
    probe_as(inventory, stack_dir, None, false, cancel)
}

/// [`status`] asking only the hosts `only` (e.g. the masters, without a host known to be dead);
/// the others count as silent only when asked.
pub fn probe(
    inventory: &[PathBuf],
    stack_dir: Option<PathBuf>,
    only: Option<&[String]>,
) -> Result<Report, Error> {
    probe_as(inventory, stack_dir, only, false, None)
}

fn probe_as(
    inventory: &[PathBuf],
    stack_dir: Option<PathBuf>,
    only: Option<&[String]>,
    record: bool,
    cancel: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<Report, Error> {
    let started = std::time::Instant::now();
    if inventory.is_empty() {
        return Err(Error::Usage("status needs an inventory (-i)".into()));
    }
    let inv = crate::resolve::inventory::load_sources(inventory).map_err(Error::Invalid)?;
    let g = groups(&inv);
    let bundle = crate::stack::builtin_bundle()?;
    let mut scripts = scripts(&inv, &g, &bundle);
    if let Some(only) = only {
        scripts.retain(|h, _| only.contains(h));
    }
    let got = run_scripts(
        inventory,
        stack_dir,
        "status",
        &scripts,
        Mode::Check,
        cancel,
        record,
    )?;
    let mut parsed: BTreeMap<String, Option<BTreeMap<String, String>>> = BTreeMap::new();
    let mut silent = Vec::new();
    let mut addresses = BTreeMap::new();
    for host in inv.group_hosts("all") {
        if !scripts.contains_key(host) {
            parsed.insert(host.to_string(), None);
            continue;
        }
        match got.get(host) {
            Some(text) => {
                let answers = health::read_probe(text);
                if let Some(a) = answers.get("host.addr").filter(|a| !a.is_empty()) {
                    addresses.insert(host.to_string(), a.clone());
                }
                parsed.insert(host.to_string(), Some(answers));
            }
            None => {
                silent.push(host.to_string());
                parsed.insert(host.to_string(), None);
            }
        }
    }
    let view = health::view_from_probes(&g.zookeeper, &g.masters, &g.agents, &parsed);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mut flags = health::evaluate(&view);
    flags.extend(health::other_flags(&view, &parsed, now, CERT_WARN_DAYS));
    for h in &silent {
        flags.push(Flag {
            severity: Severity::Critical,
            component: "host".into(),
            reason: format!("{h}: did not answer the probe (unreachable?)"),
        });
    }
    flags.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.cmp(b)));
    Ok(Report {
        healthy: !flags.iter().any(|f| f.severity == Severity::Critical),
        flags,
        view,
        silent,
        addresses,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// The report for humans: one line per member, then the flags.
pub fn render(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    out.push("ZooKeeper".to_string());
    for m in &r.view.zookeeper {
        out.push(format!(
            "  {:<12} {:<11} zxid {}{}",
            m.host,
            m.mode
                .map(|x| format!("{x:?}").to_lowercase())
                .unwrap_or_else(|| "down".into()),
            m.zxid
                .map(|z| format!("{z:#x}"))
                .unwrap_or_else(|| "-".into()),
            m.synced_followers
                .map(|s| format!(", {s} synced followers"))
                .unwrap_or_default()
        ));
    }
    out.push("Mesos masters".to_string());
    for m in &r.view.masters {
        out.push(format!(
            "  {:<12} {:<8} {:<13} ensemble {:<3} {}",
            m.host,
            if !m.answered {
                "down"
            } else if m.elected {
                "LEADER"
            } else {
                "standby"
            },
            if m.recovered {
                "recovered"
            } else {
                "not recovered"
            },
            m.ensemble_size
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into()),
            m.version.as_deref().unwrap_or("-")
        ));
    }
    out.push("Mesos agents".to_string());
    for a in &r.view.expected_agents {
        let v = r.view.agents.iter().find(|x| &x.hostname == a);
        let state = match v {
            None if r.view.in_maintenance.contains(a) => "maintenance".to_string(),
            None => "not registered".to_string(),
            Some(v) if v.draining => "draining".to_string(),
            Some(v) if v.active => "active".to_string(),
            Some(_) => "deactivated".to_string(),
        };
        out.push(format!(
            "  {:<12} {:<14} {} {}",
            a,
            state,
            v.and_then(|v| v.version.as_deref()).unwrap_or("-"),
            v.map(|v| v.id.as_str()).unwrap_or("")
        ));
    }
    if r.flags.is_empty() {
        out.push(format!("healthy ({} ms)", r.elapsed_ms));
    } else {
        out.push(format!(
            "{} ({} ms):",
            if r.healthy {
                "healthy, with warnings"
            } else {
                "DEGRADED"
            },
            r.elapsed_ms
        ));
        for f in &r.flags {
            let sev = match f.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "warning",
            };
            out.push(format!("  {sev:<8} {:<13} {}", f.component, f.reason));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn inventory(text: &str) -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts.ini");
        std::fs::write(&p, text).unwrap();
        crate::resolve::inventory::load(&p).unwrap()
    }

    #[test]
    fn groups_take_the_stacks_defaults_when_the_inventory_has_none() {
        let g = groups(&inventory("[masters]\nm1\nm2\nm3\n[agents]\na1\n"));
        assert_eq!(g.zookeeper, ["m1", "m2", "m3"]);
        assert_eq!(g.monitoring, ["m1"]);
        assert_eq!(g.agents, ["a1"]);
        let g = groups(&inventory(
            "[masters]\nm1\n[agents]\na1\n[zookeeper]\nz1\n[monitoring]\nmon\n",
        ));
        assert_eq!(
            (g.zookeeper, g.monitoring),
            (vec!["z1".to_string()], vec!["mon".to_string()])
        );
    }

    #[test]
    fn each_host_is_asked_what_it_serves() {
        let inv = inventory("[masters]\nm1\n[agents]\na1\n");
        let b = crate::stack::builtin_bundle().unwrap();
        let s = scripts(&inv, &groups(&inv), &b);
        assert!(s["m1"].contains("zk.srvr") && s["m1"].contains("master.metrics"));
        assert!(
            s["m1"].contains("prometheus.targets"),
            "m1 is the default monitoring host"
        );
        assert!(s["a1"].contains("agent.health") && !s["a1"].contains("zk.srvr"));
        assert!(s["a1"].contains("unit.mesos-agent"));
    }
}
