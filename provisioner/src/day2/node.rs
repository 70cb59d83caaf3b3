//! `provisioner node add|remove`: agents join and leave the cluster, behind cluster-core's
//! gates. A thin layer: the stack's own roles (the whole site, limited to the new hosts) install
//! an agent; the master's operator API (`DRAIN_AGENT`, `MARK_AGENT_GONE`) takes one out; the
//! probes of `status` say when each step is done.
//!
//! Masters and ZooKeeper members are not handled here yet: growing or shrinking them needs the
//! documented one-quorum-step-at-a-time procedure (`--quorum` cannot change online), which this
//! command refuses rather than half-does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use super::status::{self, Report};
use crate::error::{Error, ExitCode};
use crate::exec::Mode;
use crate::run::{RunIo, RunSpec, Target};

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub inventory: Vec<PathBuf>,
    pub stack_dir: Option<PathBuf>,
    pub hosts: Vec<String>,
    /// The plan was confirmed (`--yes`).
    pub yes: bool,
    /// `remove`: the hosts are dead; use the master only, never SSH to them.
    pub unreachable: bool,
    /// How long each gate may stay red.
    pub gate_timeout: Duration,
}

/// One line of progress or of the plan (the CLI prints them).
pub type Say<'a> = &'a dyn Fn(&str);

/// How a node command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The plan was shown; `--yes` was not given.
    Planned,
    Refused(String),
    Done,
    Failed(String),
}

impl Ended {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Ended::Planned | Ended::Done => ExitCode::Ok,
            Ended::Refused(_) => ExitCode::BadInput,
            Ended::Failed(_) => ExitCode::HostsFailed,
        }
    }
}

/// The hosts' roles, checked: every host is an inventory agent and none is a master or a
/// ZooKeeper member (those need the quorum procedure). `Err` says why not.
fn agents_only(opts: &Options, g: &status::Groups, verb: &str) -> Result<(), String> {
    if opts.hosts.is_empty() {
        return Err(format!("node {verb} needs at least one host"));
    }
    for h in &opts.hosts {
        if g.masters.contains(h) || g.zookeeper.contains(h) {
            return Err(format!(
                "{h} is a master or ZooKeeper member: `node {verb}` handles agents only for now; a quorum member changes with the documented procedure (README, Day 2)"
            ));
        }
        if !g.agents.contains(h) {
            return Err(format!(
                "{h} is not in the inventory's agents group{}",
                if verb == "add" {
                    ": add it there first (the inventory is the desired state)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

fn leader(r: &Report) -> Result<String, String> {
    r.view
        .leader()
        .map(str::to_string)
        .ok_or_else(|| "no elected master".to_string())
}

/// Poll `probe` until `done` says yes (`Ok`), or the timeout passes (`Err(last reason)`).
pub(super) fn wait(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Report, String>,
    done: impl Fn(&Report) -> Result<(), String>,
) -> Result<Report, String> {
    let started = Instant::now();
    loop {
        let r = probe()?;
        match done(&r) {
            Ok(()) => return Ok(r),
            Err(why) if started.elapsed() >= timeout => {
                return Err(format!("after {} s: {why}", timeout.as_secs()))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

fn master_call(
    opts: &Options,
    r: &Report,
    inv: &crate::model::inventory::Inventory,
    path: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let l = leader(r)?;
    let bundle = crate::stack::builtin_bundle().map_err(|e| e.to_string())?;
    let (code, answer) = status::master_call(
        &opts.inventory,
        opts.stack_dir.clone(),
        "node",
        &l,
        (
            bundle.port("mesos_master", "http").unwrap_or(5050),
            status::ca_file(&inv.host_vars(&l)).as_deref(),
        ),
        path,
        Some(&body.to_string()),
        None,
    )?;
    if !code.starts_with('2') {
        return Err(format!("{path} on {l}: HTTP {code}: {answer}"));
    }
    Ok(())
}

fn confirm(opts: &Options, say: Say<'_>, plan: &[String]) -> bool {
    show_plan(opts.yes, say, plan)
}

/// Print the numbered plan; without `yes`, say that nothing changed. Returns `yes`.
pub(crate) fn show_plan(yes: bool, say: Say<'_>, plan: &[String]) -> bool {
    say("plan:");
    for (i, p) in plan.iter().enumerate() {
        say(&format!("  {}. {p}", i + 1));
    }
    if !yes {
        say("nothing was changed; run again with --yes to do it");
    }
    yes
}

/// `node add`: install the stack on new agents (the site, limited to them: no other host is
/// touched) and wait until each is an active agent.
pub fn add(opts: &Options, say: Say<'_>) -> Result<Ended, Error> {
    let inv = crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
    let g = status::groups(&inv);
    if let Err(why) = agents_only(opts, &g, "add") {
        return Ok(Ended::Refused(why));
    }
    let r = status::status(&opts.inventory, opts.stack_dir.clone())?;
    // The cluster must be healthy apart from the new hosts (which are not registered yet).
    let red: Vec<String> = r
        .flags
        .iter()
        .filter(|f| f.severity == cluster_core::health::Severity::Critical)
        .filter(|f| {
            !opts
                .hosts
                .iter()
                .any(|h| f.reason.starts_with(&format!("{h}:")))
        })
        .map(|f| format!("{}: {}", f.component, f.reason))
        .collect();
    if !red.is_empty() {
        return Ok(Ended::Refused(format!("gate red: {}", red.join("; "))));
    }
    let members: Vec<&String> = opts
        .hosts
        .iter()
        .filter(|h| r.view.agents.iter().any(|a| &a.hostname == *h && a.active))
        .collect();
    if !members.is_empty() {
        return Ok(Ended::Refused(format!(
            "{members:?} already registered as active agents (use `apply` to converge them, `node replace` for a rebuilt machine)"
        )));
    }
    let plan = vec![
        format!(
            "preflight and install the stack on {} only (the site, --limit; no other host changes)",
            opts.hosts.join(", ")
        ),
        "gate: each is an active agent in the leader's /master/state".to_string(),
        "then run `provisioner apply` to add them to every host's /etc/hosts, DNS and Prometheus targets".to_string(),
    ];
    if !confirm(opts, say, &plan) {
        return Ok(Ended::Planned);
    }
    install(opts, say, &BTreeMap::new())
}

/// Install the stack on `opts.hosts` (the site, limited to them) and wait until each is an
/// active agent, under a new id where `old_ids` names its previous one.
fn install(
    opts: &Options,
    say: Say<'_>,
    old_ids: &BTreeMap<String, String>,
) -> Result<Ended, Error> {
    say(&format!("installing {}", opts.hosts.join(", ")));
    let mut spec = RunSpec::new(
        "node add",
        opts.inventory.clone(),
        Target::Stack {
            dir: opts.stack_dir.clone(),
            play: None,
        },
        Mode::Apply,
    );
    spec.limit = Some(opts.hosts.join(":"));
    let outcome = crate::run::run(&spec, RunIo::default())?;
    for w in &outcome.warnings {
        say(&format!("[WARNING]: {w}"));
    }
    if outcome.exit != ExitCode::Ok {
        return Ok(Ended::Failed(format!(
            "installing failed: {}; fix it and run `node add` again",
            super::failures_text(&outcome)
        )));
    }
    let changed: BTreeMap<&String, u32> = outcome
        .recap
        .hosts
        .iter()
        .map(|(h, c)| (h, c.changed))
        .collect();
    say(&format!("installed: changed per host {changed:?}"));
    let hosts = opts.hosts.clone();
    match wait(
        opts.gate_timeout,
        || status::status(&opts.inventory, opts.stack_dir.clone()).map_err(|e| e.to_string()),
        |r| {
            for h in &hosts {
                let now = r.view.agents.iter().find(|a| &a.hostname == h && a.active);
                match now {
                    None => return Err(format!("{h} is not an active agent yet")),
                    Some(a) if old_ids.get(h) == Some(&a.id) => {
                        return Err(format!("{h} is still registered under its old id {}", a.id))
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        },
    ) {
        Ok(_) => {
            say(&format!("gate green: {} active", opts.hosts.join(", ")));
            Ok(Ended::Done)
        }
        Err(why) => Ok(Ended::Failed(format!("gate after the install: {why}"))),
    }
}

/// `node remove`: take agents out. Reachable: `DRAIN_AGENT` (marked gone once drained: its tasks
/// end), then stop the agent and wipe its work dir. `--unreachable`: `MARK_AGENT_GONE` through
/// the master, with no SSH to the host.
pub fn remove(opts: &Options, say: Say<'_>) -> Result<Ended, Error> {
    let inv = crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
    let g = status::groups(&inv);
    if let Err(why) = agents_only(opts, &g, "remove") {
        return Ok(Ended::Refused(why));
    }
    // Only the masters are asked: a dead host is never contacted.
    let probe = || {
        status::probe(&opts.inventory, opts.stack_dir.clone(), Some(&g.masters))
            .map_err(|e| e.to_string())
    };
    let r = probe().map_err(Error::Usage)?;
    if let Err(why) = leader(&r) {
        return Ok(Ended::Refused(format!(
            "{why}: the master does the removal"
        )));
    }
    let mut ids = BTreeMap::new();
    for h in &opts.hosts {
        match r.view.agents.iter().find(|a| &a.hostname == h) {
            Some(a) => {
                ids.insert(h.clone(), a.id.clone());
            }
            None => {
                return Ok(Ended::Refused(format!(
                    "{h} is not registered with the leader (already gone?)"
                )))
            }
        }
    }
    if !opts.unreachable {
        if let Err(why) = cluster_core::upgrade::may_drain(&r.view) {
            return Ok(Ended::Refused(why));
        }
    }
    let plan: Vec<String> = if opts.unreachable {
        vec![
            format!(
                "MARK_AGENT_GONE {} through the leader (no SSH to them; their tasks are lost)",
                ids.iter()
                    .map(|(h, id)| format!("{h} ({id})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "gate: none of them is registered with the leader".into(),
        ]
    } else {
        vec![
            format!(
                "DRAIN_AGENT (mark_gone) {}: their tasks are killed and end, then the master marks them gone",
                opts.hosts.join(", ")
            ),
            "gate: none of them is registered with the leader".into(),
            "stop and disable mesos-agent on them, and wipe its work dir".into(),
        ]
    };
    let mut plan = plan;
    plan.push(format!(
        "then delete {} from the inventory and run `provisioner apply`: that takes them out of /etc/hosts, DNS and the Prometheus targets",
        opts.hosts.join(", ")
    ));
    if !confirm(opts, say, &plan) {
        return Ok(Ended::Planned);
    }
    for (h, id) in &ids {
        let body = if opts.unreachable {
            json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": id}}})
        } else {
            cluster_core::upgrade::drain_call(id)
        };
        if let Err(e) = master_call(opts, &r, &inv, "/api/v1", &body) {
            return Ok(Ended::Failed(format!("{h}: {e}")));
        }
        say(&format!(
            "{h}: {}",
            if opts.unreachable {
                "marked gone"
            } else {
                "draining"
            }
        ));
    }
    let gone = wait(opts.gate_timeout, probe, |r| {
        for (h, id) in &ids {
            if r.view
                .agents
                .iter()
                .any(|a| &a.id == id && (a.active || a.draining))
            {
                return Err(format!("{h} ({id}) is still registered"));
            }
        }
        Ok(())
    });
    if let Err(why) = gone {
        return Ok(Ended::Failed(format!("gate: {why}")));
    }
    say(&format!("gate green: {} gone", opts.hosts.join(", ")));
    if !opts.unreachable {
        let work_dir = inv
            .host_vars(&opts.hosts[0])
            .get("mesos_agent_work_dir")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "/var/lib/mesos/agent".into());
        let script = format!(
            "systemctl disable --now mesos-agent >/dev/null 2>&1; rm -rf '{work_dir}'; echo stopped"
        );
        let scripts = opts
            .hosts
            .iter()
            .map(|h| (h.clone(), script.clone()))
            .collect();
        let got = status::run_scripts(
            &opts.inventory,
            opts.stack_dir.clone(),
            "node remove",
            &scripts,
            Mode::Apply,
            None,
            true,
        )?;
        for h in &opts.hosts {
            if got.get(h).map(|o| o.trim()) != Some("stopped") {
                return Ok(Ended::Failed(format!(
                    "{h}: stopping the agent and wiping {work_dir} did not finish; it is gone from the cluster"
                )));
            }
        }
        say(&format!("stopped mesos-agent and wiped {work_dir}"));
    }
    say(&format!(
        "done: delete {} from the inventory, then run `provisioner apply`",
        opts.hosts.join(", ")
    ));
    Ok(Ended::Done)
}

/// A replaced machine's new host keys, read with `ssh-keyscan` from the address the inventory
/// gives, and where its known_hosts entry lives.
struct Scanned {
    known_hosts: PathBuf,
    address: String,
    port: u16,
    keys: Vec<russh::keys::PublicKey>,
}

/// How a run connects to `host`: its inventory vars and ssh args over ansible.cfg's defaults,
/// with the state dir's known_hosts where the inventory says `UserKnownHostsFile=/dev/null`.
pub(crate) fn connect_target(
    inventory: &[PathBuf],
    inv: &crate::model::inventory::Inventory,
    host: &str,
) -> Result<crate::transport::ConnectTarget, String> {
    let conn = inv.connection(host).map_err(|d| d.to_string())?;
    let env = crate::config::ansible_cfg::Env::current();
    let cfg = crate::config::ansible_cfg::discover(&env).map_err(|d| d.to_string())?;
    let defaults = crate::config::RunDefaults::from_config(&cfg);
    let connect = crate::config::connect::with_state_dir(&defaults.connect, inventory);
    Ok(connect.build(conn.target, &conn.ssh_args)?.target)
}

fn scan(
    opts: &Options,
    inv: &crate::model::inventory::Inventory,
    host: &str,
) -> Result<Scanned, String> {
    let target = connect_target(&opts.inventory, inv, host)?;
    let known_hosts = match target.known_hosts.clone() {
        Some(p) => p,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".ssh/known_hosts"),
    };
    let port = target.port.unwrap_or(22);
    let out = std::process::Command::new("ssh-keyscan")
        .args(["-T", "5", "-p", &port.to_string(), &target.address])
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keyscan: {e}"))?;
    let keys: Vec<russh::keys::PublicKey> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(1);
            let (_kind, b64) = (w.next()?, w.next()?);
            russh::keys::parse_public_key_base64(b64).ok()
        })
        .collect();
    if keys.is_empty() {
        return Err(format!(
            "{host} ({}:{port}) offers no SSH host key: is it up?",
            target.address
        ));
    }
    Ok(Scanned {
        known_hosts,
        address: target.address,
        port,
        keys,
    })
}

/// `node replace HOST`: an agent's machine was rebuilt (same name and address, empty disk, new
/// host keys). The old machine must be gone: a host still answering with a key known_hosts
/// holds is refused. Shows the new keys' fingerprints; `--expect-fingerprint` pins one. Then its
/// known_hosts entry is rewritten, its old agent id marked gone, the stack installed on it
/// alone, and the gate waits for it to be active under a new id.
pub fn replace(opts: &Options, expect: Option<&str>, say: Say<'_>) -> Result<Ended, Error> {
    use crate::transport::known_hosts::{self, HostKeyStatus};
    let inv = crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
    let g = status::groups(&inv);
    if let Err(why) = agents_only(opts, &g, "replace") {
        return Ok(Ended::Refused(why));
    }
    let [host] = opts.hosts.as_slice() else {
        return Ok(Ended::Refused(
            "node replace takes one host at a time".into(),
        ));
    };
    let sc = match scan(opts, &inv, host) {
        Ok(s) => s,
        Err(why) => return Ok(Ended::Refused(why)),
    };
    let mut fps = Vec::new();
    for k in &sc.keys {
        let fp = known_hosts::fingerprint(k);
        if known_hosts::check(&sc.known_hosts, &sc.address, sc.port, k).ok()
            == Some(HostKeyStatus::Known)
        {
            return Ok(Ended::Refused(format!(
                "{host} still answers with a host key {} holds ({fp}): the machine was not replaced (for a reinstall of the same machine, use `apply`)",
                sc.known_hosts.display()
            )));
        }
        fps.push(fp);
    }
    if let Some(want) = expect {
        if !fps.iter().any(|f| f == want) {
            return Ok(Ended::Refused(format!(
                "{host} offers {}, not the expected {want}",
                fps.join(", ")
            )));
        }
    }
    let r = status::probe(&opts.inventory, opts.stack_dir.clone(), Some(&g.masters))
        .map_err(|e| Error::Usage(e.to_string()))?;
    if let Err(why) = leader(&r) {
        return Ok(Ended::Refused(format!(
            "{why}: the replacement needs the master"
        )));
    }
    let old: BTreeMap<String, String> = r
        .view
        .agents
        .iter()
        .filter(|a| &a.hostname == host)
        .map(|a| (host.clone(), a.id.clone()))
        .collect();
    let plan = vec![
        format!(
            "accept {host}'s new host keys in {}: {}",
            sc.known_hosts.display(),
            fps.join(", ")
        ),
        match old.get(host) {
            Some(id) => format!("mark its old agent id {id} gone (MARK_AGENT_GONE)"),
            None => "it has no registered agent id to retire".into(),
        },
        format!("install the stack on {host} only (the site, --limit)"),
        "gate: an active agent under a new id".into(),
    ];
    if !confirm(opts, say, &plan) {
        return Ok(Ended::Planned);
    }
    let io = |e: std::io::Error| Error::Environment(format!("{}: {e}", sc.known_hosts.display()));
    let gone = known_hosts::forget(&sc.known_hosts, &sc.address, sc.port).map_err(io)?;
    for k in &sc.keys {
        known_hosts::append(&sc.known_hosts, &sc.address, sc.port, k).map_err(io)?;
    }
    say(&format!(
        "{}: {gone} old line(s) for {} replaced by {} new key(s)",
        sc.known_hosts.display(),
        sc.address,
        sc.keys.len()
    ));
    if let Some(id) = old.get(host) {
        let body =
            json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": id}}});
        if let Err(e) = master_call(opts, &r, &inv, "/api/v1", &body) {
            return Ok(Ended::Failed(format!("marking {id} gone: {e}")));
        }
        say(&format!("{host}'s old agent id {id}: marked gone"));
    }
    install(opts, say, &old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::day2::status::tests::inventory;

    fn opts(hosts: &[&str]) -> Options {
        Options {
            inventory: vec![],
            stack_dir: None,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            yes: false,
            unreachable: false,
            gate_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn only_inventory_agents_join_or_leave() {
        let inv =
            inventory("[masters]\nm1\nm2\nm3\n[agents]\na1\na2\n[zookeeper]\nm1\nm2\nm3\nz4\n");
        let g = status::groups(&inv);
        assert_eq!(agents_only(&opts(&["a2"]), &g, "add"), Ok(()));
        assert!(agents_only(&opts(&["m2"]), &g, "remove")
            .unwrap_err()
            .contains("agents only"));
        assert!(agents_only(&opts(&["z4"]), &g, "add")
            .unwrap_err()
            .contains("ZooKeeper"));
        assert!(agents_only(&opts(&["a9"]), &g, "add")
            .unwrap_err()
            .contains("add it there first"));
        assert!(agents_only(&opts(&[]), &g, "add").is_err());
    }

    #[test]
    fn without_yes_the_plan_is_shown_and_nothing_runs() {
        let said = std::cell::RefCell::new(Vec::new());
        let say = |s: &str| said.borrow_mut().push(s.to_string());
        assert!(!confirm(&opts(&["a1"]), &say, &["one".into()]));
        let said = said.into_inner();
        assert_eq!(said[1], "  1. one");
        assert!(said[2].contains("--yes"));
    }
}
