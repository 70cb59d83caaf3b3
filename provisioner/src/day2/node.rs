//! `provisioner node add|remove`: agents join and leave the cluster, behind cluster-core's
//! gates. A thin layer: the stack's own roles (the whole site, limited to the new hosts) install
//! an agent; the master's operator API (`DRAIN_AGENT`, `MARK_AGENT_GONE`) takes one out; the
//! probes of `status` say when each step is done.
//!
//! Masters and ZooKeeper members (`add` grows them, `remove` shrinks them, `replace` takes a
//! rebuilt machine) follow the steps of `cluster_core::membership`, one quorum step at a time
//! (`--quorum` cannot change online): this module only runs each step (the site limited to its
//! hosts, or a script through `cluster_probe`) and its gate, and records the new membership
//! once the last gate is green.

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
    /// `add`: join hosts the identity guard refuses (their address is a live ZooKeeper member
    /// or log replica).
    pub force: bool,
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

/// The hosts' roles, checked (when none is a master or ZooKeeper member): every host is an
/// inventory agent. `Err` says why not.
fn agents_only(opts: &Options, g: &status::Groups, verb: &str) -> Result<(), String> {
    if opts.hosts.is_empty() {
        return Err(format!("node {verb} needs at least one host"));
    }
    for h in &opts.hosts {
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
    if is_quorum_change(opts, &g) {
        return add_members(opts, &inv, &g, say);
    }
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
    if let Err(why) = guard_identities(opts, &inv, &g, &r, say) {
        return Ok(Ended::Refused(why));
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
    if let Err(why) = site_on(opts, &opts.hosts, &[], say) {
        return Ok(Ended::Failed(format!(
            "installing failed: {why}; fix it and run `node add` again"
        )));
    }
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
    if is_quorum_change(opts, &g) {
        return remove_members(opts, &g, say);
    }
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
    let [host] = opts.hosts.as_slice() else {
        return Ok(Ended::Refused(
            "node replace takes one host at a time".into(),
        ));
    };
    let member = is_quorum_change(opts, &g);
    if !member {
        if let Err(why) = agents_only(opts, &g, "replace") {
            return Ok(Ended::Refused(why));
        }
    }
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
    if member {
        return replace_member(opts, &g, host, &sc, &fps, say);
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
    accept_keys(&sc, say)?;
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

/// Rewrite the host's known_hosts lines: the old ones go, the scanned keys are appended.
fn accept_keys(sc: &Scanned, say: Say<'_>) -> Result<(), Error> {
    use crate::transport::known_hosts;
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
    Ok(())
}

/// Any of the hosts is a master or a ZooKeeper member.
fn is_quorum_change(opts: &Options, g: &status::Groups) -> bool {
    opts.hosts
        .iter()
        .any(|h| g.masters.contains(h) || g.zookeeper.contains(h))
}

/// The masters and ZooKeeper members, in inventory order, without `except`.
fn quorum_hosts(g: &status::Groups, except: &[String]) -> Vec<String> {
    cluster_core::membership::quorum_hosts(&g.zookeeper, &g.masters, except)
}

/// `view` without `hosts` (members not running yet): the running cluster alone.
fn without(
    view: &cluster_core::health::ClusterView,
    hosts: &[String],
) -> cluster_core::health::ClusterView {
    let mut v = view.clone();
    v.zookeeper.retain(|m| !hosts.contains(&m.host));
    v.masters.retain(|m| !hosts.contains(&m.host));
    v
}

/// The identity guard (cluster_core::membership::identity_guard): from the elected master's
/// host, ask each new host's address whether it serves as a ZooKeeper member or as a master
/// with a recovered replica. `--force` turns a refusal into a warning on stderr.
fn guard_identities(
    opts: &Options,
    inv: &crate::model::inventory::Inventory,
    g: &status::Groups,
    r: &Report,
    say: Say<'_>,
) -> Result<(), String> {
    let l = leader(r)?;
    let bundle = crate::stack::builtin_bundle().map_err(|e| e.to_string())?;
    let zk_port = bundle.port("zookeeper", "client").unwrap_or(2181);
    let master_port = bundle.port("mesos_master", "http").unwrap_or(5050);
    let ca = status::ca_file(&inv.host_vars(&l));
    let scheme = if ca.is_some() { "https" } else { "http" };
    let running_zk = g
        .zookeeper
        .iter()
        .filter(|h| !opts.hosts.contains(h))
        .count()
        .max(1);
    let mut addresses = BTreeMap::new();
    let roles = super::backup::roles_dir(opts.stack_dir.as_deref()).map_err(|e| e.to_string())?;
    let gate = super::backup::role_var(inv, &roles, &l, "cluster_facts", "provisioner_gate")?;
    let mut script = format!("G={}\n", crate::shell::quote(&gate));
    for h in &opts.hosts {
        let a = connect_target(&opts.inventory, inv, h)?.address;
        let q = crate::shell::quote(&a);
        script.push_str(&format!(
            "if $G zk-serves {zk_port} {running_zk} {q} >/dev/null 2>&1; then echo \"{h} zk\"; fi\n\
             if $G mesos-master-ready {scheme}://{q}:{master_port} {} >/dev/null 2>&1; then echo \"{h} replica\"; fi\n",
            crate::shell::quote(ca.as_deref().unwrap_or("-")),
        ));
        addresses.insert(h.clone(), a);
    }
    script.push_str("echo checked\n");
    let scripts: BTreeMap<String, String> = [(l.clone(), script)].into();
    let got = status::run_scripts(
        &opts.inventory,
        opts.stack_dir.clone(),
        "node",
        &scripts,
        Mode::Check,
        None,
        false,
    )
    .map_err(|e| e.to_string())?;
    let out = got.get(&l).cloned().unwrap_or_default();
    if !out.lines().any(|x| x.trim() == "checked") {
        return Err(format!("the identity guard could not ask from {l}: {out}"));
    }
    let mut refused = Vec::new();
    for (h, a) in &addresses {
        let zk = out.lines().any(|x| x.trim() == format!("{h} zk"));
        let replica = out.lines().any(|x| x.trim() == format!("{h} replica"));
        if let Err(why) = cluster_core::membership::identity_guard(h, a, zk, replica) {
            refused.push(why);
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    if opts.force {
        for why in &refused {
            say(&format!("[WARNING]: --force: {why}"));
        }
        return Ok(());
    }
    Err(refused.join("; "))
}

/// Run the site limited to `hosts`, with `vars` as extra vars. `Err` says what failed.
fn site_on(
    opts: &Options,
    hosts: &[String],
    vars: &[(&str, serde_json::Value)],
    say: Say<'_>,
) -> Result<(), String> {
    let mut spec = RunSpec::new(
        "node",
        opts.inventory.clone(),
        Target::Stack {
            dir: opts.stack_dir.clone(),
            play: None,
        },
        Mode::Apply,
    );
    spec.limit = Some(hosts.join(":"));
    for (k, v) in vars {
        spec.extra_vars.insert((*k).into(), v.clone());
    }
    let outcome = crate::run::run(&spec, RunIo::default()).map_err(|e| e.to_string())?;
    for w in &outcome.warnings {
        say(&format!("[WARNING]: {w}"));
    }
    if outcome.exit != ExitCode::Ok {
        return Err(super::failures_text(&outcome));
    }
    let changed: BTreeMap<&String, u32> = outcome
        .recap
        .hosts
        .iter()
        .map(|(h, c)| (h, c.changed))
        .collect();
    say(&format!("  done: changed per host {changed:?}"));
    Ok(())
}

/// Run membership `steps` in order, each announced; the first that fails ends it, naming the
/// step and what to do.
/// `members`: the quorum membership to record once the last step is green (`None`: it does
/// not change).
fn run_steps(
    opts: &Options,
    steps: &[cluster_core::membership::Step],
    quorum: &[String],
    members: Option<&[String]>,
    say: Say<'_>,
) -> Result<Ended, Error> {
    use cluster_core::membership::Step;
    // Its runs neither check nor record the membership: this command records it at the end.
    let change = (crate::stack::MEMBERSHIP_CHANGE_VAR, json!(true));
    for (i, step) in steps.iter().enumerate() {
        let started = Instant::now();
        say(&format!("step {}: {}", i + 1, step.describe()));
        let r = match step {
            Step::Install {
                hosts,
                hold_masters,
            } => site_on(
                opts,
                hosts,
                &[change.clone(), ("mesos_master_hold", json!(*hold_masters))],
                say,
            ),
            Step::Roll { hosts, leaving } => site_on(
                opts,
                hosts,
                &[change.clone(), (crate::stack::LEAVING_VAR, json!(leaving))],
                say,
            ),
            Step::StartMasters { hosts } => {
                site_on(opts, hosts, std::slice::from_ref(&change), say)
            }
            Step::LeaderAmong { staying } => leader_among(opts, quorum, staying, say),
            Step::RetireMasters { hosts } => retire(opts, hosts, "mesos_master", say),
            Step::RetireZookeeper { hosts } => retire(opts, hosts, "zookeeper", say),
            Step::Whole { without: left } => wait(
                opts.gate_timeout,
                || {
                    status::probe(&opts.inventory, opts.stack_dir.clone(), Some(quorum))
                        .map_err(|e| e.to_string())
                },
                |r| cluster_core::membership::whole(&without(&r.view, left)),
            )
            .map(|_| ()),
        };
        if let Err(why) = r {
            return Ok(Ended::Failed(format!(
                "step {} failed: {why}. Nothing after it ran; fix the cause and run the same command again (each step converges, a finished one changes nothing)",
                i + 1
            )));
        }
        say(&format!(
            "  step {} green in {:.1} s",
            i + 1,
            started.elapsed().as_secs_f64()
        ));
    }
    if let Some(m) = members {
        let state = crate::state::StateDir::for_inventory(&opts.inventory[0]);
        let mut a = state
            .load_allocations()
            .map_err(Error::Usage)?
            .unwrap_or_default();
        a.members = m.iter().cloned().collect();
        state.save_allocations(&a).map_err(|e| {
            Error::Environment(format!(
                "the change is done, but recording the membership in {} failed: {e}",
                state.dir().display()
            ))
        })?;
        say(&format!("membership recorded: {}", m.join(", ")));
    }
    Ok(Ended::Done)
}

/// Stop `component` (`mesos_master` or `zookeeper`) on `hosts` for good: disabled, its data
/// moved aside under a `.removed-<time>` name (never deleted).
fn retire(opts: &Options, hosts: &[String], component: &str, say: Say<'_>) -> Result<(), String> {
    let inv =
        crate::resolve::inventory::load_sources(&opts.inventory).map_err(|d| d.to_string())?;
    let roles = super::backup::roles_dir(opts.stack_dir.as_deref()).map_err(|e| e.to_string())?;
    let (role, unit_var, dir_var) = match component {
        "mesos_master" => (
            "mesos_master",
            "mesos_master_service",
            "mesos_master_work_dir",
        ),
        _ => ("zookeeper", "zookeeper_service", "zookeeper_data_dir"),
    };
    // One run for all of them; each host's own unit and directory.
    let mut scripts = BTreeMap::new();
    let mut said = Vec::new();
    for h in hosts {
        let unit = super::backup::role_var(&inv, &roles, h, role, unit_var)?;
        let dir = super::backup::role_var(&inv, &roles, h, role, dir_var)?;
        let d = crate::shell::quote(&dir);
        let script = format!(
            // Stop, then disable: `disable --now` stops nothing for a SysV-generated unit
            // (Debian's zookeeper).
            "set -e\nsystemctl stop {u}\nsystemctl disable {u} >/dev/null 2>&1\nif systemctl is-active --quiet {u}; then echo \"{u} still runs\"; exit 1; fi\nif [ -e {d} ]; then mv {d} {d}.removed-$(date -u +%Y%m%dT%H%M%SZ); fi\necho done",
            u = crate::shell::quote(&unit),
        );
        scripts.insert(h.clone(), script);
        said.push(format!(
            "  {h}: {unit} stopped and disabled, {dir} moved aside"
        ));
    }
    status::run_to_done(&opts.inventory, opts.stack_dir.clone(), "node", &scripts)?;
    for line in &said {
        say(line);
    }
    Ok(())
}

/// [`cluster_core::membership::Step::LeaderAmong`]: stop leaving leaders' ZooKeeper until a
/// staying member leads, then start them again and wait until every member serves.
fn leader_among(
    opts: &Options,
    quorum: &[String],
    staying: &[String],
    say: Say<'_>,
) -> Result<(), String> {
    use cluster_core::membership::{leader_move, LeaderMove};
    let inv =
        crate::resolve::inventory::load_sources(&opts.inventory).map_err(|d| d.to_string())?;
    let roles = super::backup::roles_dir(opts.stack_dir.as_deref()).map_err(|e| e.to_string())?;
    // `systemctl VERB` of each host's own ZooKeeper unit, in one run.
    let each = |hosts: &[String], verb: &str| -> Result<(), String> {
        let scripts = hosts
            .iter()
            .map(|h| {
                let u = super::backup::role_var(&inv, &roles, h, "zookeeper", "zookeeper_service")?;
                Ok((
                    h.clone(),
                    format!("systemctl {verb} {} && echo done", crate::shell::quote(&u)),
                ))
            })
            .collect::<Result<BTreeMap<String, String>, String>>()?;
        status::run_to_done(&opts.inventory, opts.stack_dir.clone(), "node", &scripts)
    };
    let probe = || {
        status::probe(&opts.inventory, opts.stack_dir.clone(), Some(quorum))
            .map_err(|e| e.to_string())
    };
    let mut stopped: Vec<String> = Vec::new();
    let started = Instant::now();
    // Right after a leader stops, the others are still electing: a refusal is final only once
    // it has lasted the gate's timeout. On failure the stopped members start again.
    let moved: Result<(), String> = loop {
        let r = match probe() {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        match leader_move(&r.view, staying) {
            LeaderMove::Done => break Ok(()),
            LeaderMove::Wait | LeaderMove::Refuse(_) if started.elapsed() < opts.gate_timeout => {
                std::thread::sleep(Duration::from_millis(500))
            }
            LeaderMove::Wait => break Err("ZooKeeper elected no leader".into()),
            LeaderMove::Refuse(why) => break Err(why),
            LeaderMove::Stop(h) => {
                say(&format!(
                    "  ZooKeeper's leader {h} is leaving: stopping its ZooKeeper"
                ));
                if let Err(e) = each(std::slice::from_ref(&h), "stop") {
                    break Err(e);
                }
                stopped.push(h);
            }
        }
    };
    if let Err(why) = moved {
        if !stopped.is_empty() {
            let again = each(&stopped, "start");
            say(&format!(
                "  started ZooKeeper again on {}: {}",
                stopped.join(", "),
                again.err().unwrap_or_else(|| "ok".into())
            ));
        }
        return Err(why);
    }
    if stopped.is_empty() {
        say("  ZooKeeper's leader is already a staying member");
        return Ok(());
    }
    each(&stopped, "start")?;
    say(&format!(
        "  started ZooKeeper again on {}",
        stopped.join(", ")
    ));
    wait(opts.gate_timeout, probe, |r| {
        cluster_core::membership::zookeeper_whole(&r.view)?;
        match leader_move(&r.view, staying) {
            LeaderMove::Done => Ok(()),
            other => Err(format!("leadership moved again: {other:?}")),
        }
    })
    .map(|_| ())
}

/// `node remove` of masters and ZooKeeper members: cluster_core::membership::shrink.
fn remove_members(opts: &Options, g: &status::Groups, say: Say<'_>) -> Result<Ended, Error> {
    use cluster_core::membership;
    if opts.unreachable {
        return Ok(Ended::Refused(
            "--unreachable is for agents: a dead master or ZooKeeper member is replaced (`node replace`), or removed once it answers".into(),
        ));
    }
    if let Some(h) = opts
        .hosts
        .iter()
        .find(|h| !(g.masters.contains(h) || g.zookeeper.contains(h)))
    {
        return Ok(Ended::Refused(format!(
            "{h} is not a master or ZooKeeper member: remove masters and agents in separate commands"
        )));
    }
    let leaving_masters: Vec<String> = g
        .masters
        .iter()
        .filter(|h| opts.hosts.contains(h))
        .cloned()
        .collect();
    let leaving_zk: Vec<String> = g
        .zookeeper
        .iter()
        .filter(|h| opts.hosts.contains(h))
        .cloned()
        .collect();
    let (n_m, n_z) = (g.masters.len(), g.zookeeper.len());
    if let Err(why) = membership::check_master_count(n_m, n_m - leaving_masters.len())
        .and_then(|_| membership::check_zookeeper_count(n_z, n_z - leaving_zk.len()))
    {
        return Ok(Ended::Refused(why));
    }
    let all = quorum_hosts(g, &[]);
    let r = status::probe(&opts.inventory, opts.stack_dir.clone(), Some(&all))?;
    if let Err(why) = membership::whole(&r.view) {
        return Ok(Ended::Refused(format!(
            "the cluster is not whole: {why}; a membership change starts only from a healthy quorum"
        )));
    }
    let staying = quorum_hosts(g, &opts.hosts);
    let steps = membership::shrink(&staying, &leaving_masters, &leaving_zk);
    let mut plan: Vec<String> = vec![format!(
        "masters {} -> {} (--quorum {} -> {}), ZooKeeper {} -> {}",
        n_m,
        n_m - leaving_masters.len(),
        cluster_core::health::majority(n_m),
        cluster_core::health::majority(n_m - leaving_masters.len()),
        n_z,
        n_z - leaving_zk.len()
    )];
    plan.extend(steps.iter().map(|s| s.describe()));
    plan.push(format!(
        "then delete {} from the inventory and run `provisioner apply`: the agents' ZooKeeper list, /etc/hosts, DNS and the Prometheus targets",
        opts.hosts.join(", ")
    ));
    if !confirm(opts, say, &plan) {
        return Ok(Ended::Planned);
    }
    run_steps(opts, &steps, &all, Some(&staying), say)
}

/// `node add` of masters (and ZooKeeper members): cluster_core::membership::grow.
fn add_members(
    opts: &Options,
    inv: &crate::model::inventory::Inventory,
    g: &status::Groups,
    say: Say<'_>,
) -> Result<Ended, Error> {
    use cluster_core::membership;
    if let Some(h) = opts
        .hosts
        .iter()
        .find(|h| !(g.masters.contains(h) || g.zookeeper.contains(h)))
    {
        return Ok(Ended::Refused(format!(
            "{h} is not a master or ZooKeeper member: add masters and agents in separate commands"
        )));
    }
    let running_masters = g.masters.iter().filter(|h| !opts.hosts.contains(h)).count();
    let running_zk = g
        .zookeeper
        .iter()
        .filter(|h| !opts.hosts.contains(h))
        .count();
    if running_masters == 0 || running_zk == 0 {
        return Ok(Ended::Refused(
            "no running master or ZooKeeper member is left in the inventory: a new cluster is made with `apply`".into(),
        ));
    }
    if let Err(why) = membership::check_master_count(running_masters, g.masters.len())
        .and_then(|_| membership::check_zookeeper_count(running_zk, g.zookeeper.len()))
    {
        return Ok(Ended::Refused(why));
    }
    let running = quorum_hosts(g, &opts.hosts);
    let r = status::probe(&opts.inventory, opts.stack_dir.clone(), Some(&running))?;
    // Every other member of the groups runs already: one command adds all the new ones, so
    // the count it checks is the count that will run.
    let silent: Vec<&String> = running
        .iter()
        .filter(|h| {
            !r.view.masters.iter().any(|m| &m.host == *h && m.answered)
                && !r
                    .view
                    .zookeeper
                    .iter()
                    .any(|m| &m.host == *h && m.mode.is_some())
        })
        .collect();
    if !silent.is_empty() {
        return Ok(Ended::Refused(format!(
            "{silent:?} in the inventory's masters or zookeeper group run(s) neither a master nor ZooKeeper: name every new member in one `node add` (`node replace` for a rebuilt one)"
        )));
    }
    if let Err(why) = membership::whole(&without(&r.view, &opts.hosts)) {
        return Ok(Ended::Refused(format!(
            "the running cluster is not whole: {why}; a membership change starts only from a healthy quorum"
        )));
    }
    if let Some(m) = r
        .view
        .masters
        .iter()
        .find(|m| opts.hosts.contains(&m.host) && m.answered)
    {
        return Ok(Ended::Refused(format!(
            "{} already runs a master: use `apply` to converge it",
            m.host
        )));
    }
    if let Err(why) = guard_identities(opts, inv, g, &r, say) {
        return Ok(Ended::Refused(why));
    }
    let steps = membership::grow(&running, &opts.hosts);
    let mut plan: Vec<String> = vec![format!(
        "masters {} -> {} (--quorum {} -> {}), ZooKeeper {} -> {}",
        running_masters,
        g.masters.len(),
        cluster_core::health::majority(running_masters),
        cluster_core::health::majority(g.masters.len()),
        running_zk,
        g.zookeeper.len()
    )];
    plan.extend(steps.iter().map(|s| s.describe()));
    plan.push("then run `provisioner apply`: the agents' ZooKeeper list, /etc/hosts, DNS and the Prometheus targets".into());
    if !confirm(opts, say, &plan) {
        return Ok(Ended::Planned);
    }
    let all = quorum_hosts(g, &[]);
    run_steps(opts, &steps, &all, Some(&all), say)
}

/// `node replace` of a master or ZooKeeper member (cluster_core::membership::replace): its old
/// ZooKeeper id is retired and it takes a new one.
fn replace_member(
    opts: &Options,
    g: &status::Groups,
    host: &str,
    sc: &Scanned,
    fps: &[String],
    say: Say<'_>,
) -> Result<Ended, Error> {
    use cluster_core::membership;
    let others = quorum_hosts(g, &[host.to_string()]);
    let r = status::probe(&opts.inventory, opts.stack_dir.clone(), Some(&others))?;
    for component in ["zookeeper", "mesos_master"] {
        let member = match component {
            "zookeeper" => g.zookeeper.iter().any(|h| h == host),
            _ => g.masters.iter().any(|h| h == host),
        };
        if member {
            if let Err(why) = cluster_core::health::may_stop(component, host, &r.view) {
                return Ok(Ended::Refused(format!(
                    "{why}: the others must keep their quorum while {host} is replaced"
                )));
            }
        }
    }
    if !g
        .masters
        .iter()
        .any(|h| h != host && r.view.masters.iter().any(|m| &m.host == h && m.elected))
    {
        return Ok(Ended::Refused(format!(
            "no master other than {host} is elected: the replacement catches up from a running leader"
        )));
    }
    let state = crate::state::StateDir::for_inventory(&opts.inventory[0]);
    let mut alloc = match state.load_allocations().map_err(Error::Usage)? {
        Some(a) => a,
        None => {
            return Ok(Ended::Refused(
                "no member identities are recorded in the state dir: run `provisioner apply` once first".into(),
            ))
        }
    };
    let steps = membership::replace(host, &others);
    let mut plan = vec![format!(
        "accept {host}'s new host keys in {}: {}",
        sc.known_hosts.display(),
        fps.join(", ")
    )];
    if let Some(id) = alloc.zookeeper.get(host) {
        plan.push(format!(
            "retire its ZooKeeper id {id} (never given again); it joins under the lowest free id"
        ));
    }
    plan.extend(steps.iter().map(|s| s.describe()));
    if !confirm(opts, say, &plan) {
        return Ok(Ended::Planned);
    }
    accept_keys(sc, say)?;
    if let Some(id) = alloc.retire_zookeeper(host) {
        state.save_allocations(&alloc).map_err(|e| {
            Error::Environment(format!(
                "cannot record the retired id in {}: {e}",
                state.dir().display()
            ))
        })?;
        say(&format!("ZooKeeper id {id} of {host}: retired"));
    }
    let all = quorum_hosts(g, &[]);
    run_steps(opts, &steps, &all, None, say)
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
            force: false,
        }
    }

    #[test]
    fn only_inventory_agents_join_or_leave() {
        let inv =
            inventory("[masters]\nm1\nm2\nm3\n[agents]\na1\na2\n[zookeeper]\nm1\nm2\nm3\nz4\n");
        let g = status::groups(&inv);
        assert_eq!(agents_only(&opts(&["a2"]), &g, "add"), Ok(()));
        assert!(!is_quorum_change(&opts(&["a2"]), &g));
        assert!(is_quorum_change(&opts(&["a1", "m2"]), &g));
        assert!(is_quorum_change(&opts(&["z4"]), &g));
        assert_eq!(quorum_hosts(&g, &["m2".into()]), ["m1", "m3", "z4"]);
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
