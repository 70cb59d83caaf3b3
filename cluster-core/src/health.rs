//! What the stack's live signals mean: the one place that knows how to read ZooKeeper's
//! `srvr`/`mntr`, a Mesos master's `/metrics/snapshot` and `/master/state`, and what makes the
//! cluster healthy, degraded or unsafe to touch. Pure: `status`, `upgrade` and the roles' gates
//! gather the signals (over SSH, one round trip per host) and ask this module.
//!
//! Facts it builds on (Mesos and ZooKeeper docs):
//! - `/master/health` answers 200 whenever the process serves HTTP. The registry's health is in
//!   each master's `/metrics/snapshot`: `master/elected` (exactly one master), and
//!   `registrar/log/recovered` = 1 and `registrar/log/ensemble_size` = the master count on
//!   every master.
//! - `/master/state` is served by the leader only; it has `version` for the master and each
//!   agent.
//! - ZooKeeper's `srvr` gives the mode and the zxid; `mntr` on the leader gives
//!   `zk_synced_followers`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

/// The majority of `n` voting members: floor(n/2)+1.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// A ZooKeeper member's mode as `srvr` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZkMode {
    Leader,
    Follower,
    Observer,
    Standalone,
    /// It answers but reports no mode: it is not serving (electing, or cut off from a quorum).
    NotServing,
}

impl ZkMode {
    pub fn serving(self) -> bool {
        matches!(self, ZkMode::Leader | ZkMode::Follower | ZkMode::Standalone)
    }
}

/// `srvr`'s answer: the mode and the last zxid (`Zxid: 0x...`).
pub fn parse_srvr(text: &str) -> (ZkMode, Option<u64>) {
    let mut mode = ZkMode::NotServing;
    let mut zxid = None;
    for line in text.lines() {
        if let Some(m) = line.strip_prefix("Mode:") {
            mode = match m.trim() {
                "leader" => ZkMode::Leader,
                "follower" => ZkMode::Follower,
                "observer" => ZkMode::Observer,
                "standalone" => ZkMode::Standalone,
                _ => ZkMode::NotServing,
            };
        } else if let Some(z) = line.strip_prefix("Zxid:") {
            let z = z.trim();
            zxid = u64::from_str_radix(z.trim_start_matches("0x"), 16).ok();
        }
    }
    (mode, zxid)
}

/// The version in `srvr`'s first line (`Zookeeper version: 3.8.0-…, built on …`): its
/// leading `major.minor.patch`.
pub fn srvr_version(text: &str) -> Option<String> {
    let rest = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Zookeeper version:"))?
        .trim();
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.');
    (!v.is_empty()).then(|| v.to_string())
}

/// `mntr`'s answer: `key<TAB>value` lines.
pub fn parse_mntr(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// One ZooKeeper member as seen now. `mode: None`: it did not answer (down or unreachable).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ZkMember {
    pub host: String,
    pub mode: Option<ZkMode>,
    pub zxid: Option<u64>,
    /// The leader's `zk_synced_followers`.
    pub synced_followers: Option<u64>,
    /// The version it runs (`srvr`).
    pub version: Option<String>,
}

/// One Mesos master as seen now. `answered: false`: no `/metrics/snapshot`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MasterView {
    pub host: String,
    pub answered: bool,
    pub elected: bool,
    pub recovered: bool,
    pub ensemble_size: Option<u64>,
    pub uptime_secs: Option<f64>,
    pub version: Option<String>,
}

impl MasterView {
    /// From a master's `/metrics/snapshot` (a flat JSON object of numbers) and `/version`.
    pub fn from_metrics(host: &str, metrics: Option<&Value>, version: Option<&Value>) -> Self {
        let num = |k: &str| metrics.and_then(|m| m.get(k)).and_then(Value::as_f64);
        MasterView {
            host: host.to_string(),
            answered: metrics.is_some(),
            elected: num("master/elected") == Some(1.0),
            recovered: num("registrar/log/recovered") == Some(1.0),
            ensemble_size: num("registrar/log/ensemble_size").map(|f| f as u64),
            uptime_secs: num("master/uptime_secs"),
            version: version
                .and_then(|v| v.get("version"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

/// One agent as the leader's `/master/state` (and maintenance status) shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgentView {
    pub hostname: String,
    pub id: String,
    pub active: bool,
    pub deactivated: bool,
    pub draining: bool,
    pub version: Option<String>,
}

/// The agents in a leader's `/master/state`.
pub fn agents_from_state(state: &Value) -> Vec<AgentView> {
    state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| AgentView {
            hostname: s["hostname"].as_str().unwrap_or_default().to_string(),
            id: s["id"].as_str().unwrap_or_default().to_string(),
            active: s["active"].as_bool().unwrap_or(false),
            deactivated: s["deactivated"].as_bool().unwrap_or(false),
            draining: s.get("drain_info").is_some_and(|d| !d.is_null()),
            version: s["version"].as_str().map(str::to_string),
        })
        .collect()
}

/// What the cluster looks like now: the inputs of [`evaluate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterView {
    pub zookeeper: Vec<ZkMember>,
    pub masters: Vec<MasterView>,
    /// The inventory's agents (by inventory name, which the roles make the Mesos hostname).
    pub expected_agents: Vec<String>,
    /// The agents the leader knows; empty without a leader.
    pub agents: Vec<AgentView>,
    /// Agents in a maintenance window (`/master/maintenance/status`).
    pub in_maintenance: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something to look at; the cluster works.
    Warning,
    /// The cluster or a quorum is impaired: changes must wait.
    Critical,
}

/// A problem `evaluate` found, with its reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Flag {
    pub severity: Severity,
    pub component: String,
    pub reason: String,
}

fn flag(out: &mut Vec<Flag>, severity: Severity, component: &str, reason: String) {
    out.push(Flag {
        severity,
        component: component.to_string(),
        reason,
    });
}

/// A master that restarted less than this long ago is flagged (it may still be catching up).
pub const RECENT_RESTART_SECS: f64 = 60.0;

impl ClusterView {
    /// The elected master (the first, if several say they lead; `evaluate` flags that).
    pub fn leader(&self) -> Option<&str> {
        self.masters
            .iter()
            .find(|m| m.elected)
            .map(|m| m.host.as_str())
    }
}

/// Every problem in `view`, most severe first.
pub fn evaluate(view: &ClusterView) -> Vec<Flag> {
    let mut out = Vec::new();
    zookeeper_flags(&view.zookeeper, &mut out);
    master_flags(&view.masters, &mut out);
    agent_flags(view, &mut out);
    version_flags(view, &mut out);
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.cmp(b)));
    out
}

fn zookeeper_flags(zk: &[ZkMember], out: &mut Vec<Flag>) {
    if zk.is_empty() {
        return;
    }
    let c = "zookeeper";
    let n = zk.len();
    let leaders: Vec<&ZkMember> = zk
        .iter()
        .filter(|m| m.mode == Some(ZkMode::Leader))
        .collect();
    let serving = zk
        .iter()
        .filter(|m| m.mode.is_some_and(ZkMode::serving))
        .count();
    if serving < majority(n) {
        flag(
            out,
            Severity::Critical,
            c,
            format!(
                "quorum lost: {serving} of {n} members serving, {} needed",
                majority(n)
            ),
        );
    }
    match leaders.len() {
        0 if n > 1 => flag(out, Severity::Critical, c, "no leader".into()),
        0 | 1 => {}
        k => flag(
            out,
            Severity::Critical,
            c,
            format!(
                "{k} leaders: {}",
                leaders
                    .iter()
                    .map(|m| m.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    for m in zk {
        match m.mode {
            None => flag(
                out,
                Severity::Critical,
                c,
                format!("{}: does not answer", m.host),
            ),
            Some(ZkMode::NotServing) => flag(
                out,
                Severity::Critical,
                c,
                format!("{}: answers but is not serving", m.host),
            ),
            _ => {}
        }
    }
    if let [l] = leaders.as_slice() {
        if let Some(s) = l.synced_followers {
            if s < (n - 1) as u64 {
                flag(
                    out,
                    Severity::Warning,
                    c,
                    format!(
                        "the leader {} has {s} of {} followers synced",
                        l.host,
                        n - 1
                    ),
                );
            }
        }
    }
}

fn master_flags(masters: &[MasterView], out: &mut Vec<Flag>) {
    if masters.is_empty() {
        return;
    }
    let c = "mesos_master";
    let n = masters.len();
    if n.is_multiple_of(2) {
        flag(
            out,
            Severity::Warning,
            c,
            format!(
                "{n} masters: an even count tolerates no more failures than {}",
                n - 1
            ),
        );
    }
    let elected: Vec<&MasterView> = masters.iter().filter(|m| m.elected).collect();
    match elected.len() {
        1 => {}
        0 => flag(out, Severity::Critical, c, "no leader elected".into()),
        k => flag(
            out,
            Severity::Critical,
            c,
            format!(
                "{k} masters say they lead: {}",
                elected
                    .iter()
                    .map(|m| m.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    let quorum = majority(n) as u64;
    for m in masters {
        if !m.answered {
            flag(
                out,
                Severity::Critical,
                c,
                format!("{}: does not answer", m.host),
            );
            continue;
        }
        if !m.recovered {
            flag(
                out,
                Severity::Critical,
                c,
                format!(
                    "{}: its replica of the registry's log has not recovered",
                    m.host
                ),
            );
        }
        match m.ensemble_size {
            Some(e) if e != n as u64 => flag(
                out,
                Severity::Critical,
                c,
                format!("{}: log ensemble of {e}, but {n} masters", m.host),
            ),
            _ => {}
        }
        if m.ensemble_size.is_some_and(|e| e >= 2 * quorum) {
            flag(
                out,
                Severity::Critical,
                c,
                format!(
                    "{}: ensemble_size {} is at least twice the quorum {quorum}: two halves could each elect a leader",
                    m.host,
                    m.ensemble_size.unwrap_or_default()
                ),
            );
        }
        if m.uptime_secs.is_some_and(|u| u < RECENT_RESTART_SECS) {
            flag(
                out,
                Severity::Warning,
                c,
                format!(
                    "{}: restarted {:.0} s ago",
                    m.host,
                    m.uptime_secs.unwrap_or_default()
                ),
            );
        }
    }
}

fn agent_flags(view: &ClusterView, out: &mut Vec<Flag>) {
    let c = "mesos_agent";
    if !view.masters.iter().any(|m| m.elected) {
        return; // no leader: the master flags say it; the agents cannot be known
    }
    let known: BTreeMap<&str, &AgentView> = view
        .agents
        .iter()
        .filter(|a| a.active || a.deactivated || a.draining)
        .map(|a| (a.hostname.as_str(), a))
        .collect();
    for a in &view.expected_agents {
        match known.get(a.as_str()) {
            None if view.in_maintenance.contains(a) => flag(
                out,
                Severity::Warning,
                c,
                format!("{a}: down for maintenance"),
            ),
            None => flag(
                out,
                Severity::Critical,
                c,
                format!("{a}: not registered with the leader (agent down?)"),
            ),
            Some(v) if v.draining => flag(out, Severity::Warning, c, format!("{a}: draining")),
            Some(v) if v.deactivated || !v.active => {
                flag(out, Severity::Warning, c, format!("{a}: deactivated"))
            }
            Some(_) => {}
        }
    }
}

fn version_flags(view: &ClusterView, out: &mut Vec<Flag>) {
    let versions: BTreeSet<&str> = view
        .masters
        .iter()
        .filter_map(|m| m.version.as_deref())
        .chain(view.agents.iter().filter_map(|a| a.version.as_deref()))
        .collect();
    if versions.len() > 1 {
        flag(
            out,
            Severity::Warning,
            "mesos",
            format!(
                "mixed versions: {}",
                versions.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }
}

/// The quorum rule: may `member` of a quorum component (`zookeeper` or `mesos_master`) stop now
/// without the others losing their majority? `Err` says why not.
pub fn may_stop(component: &str, member: &str, view: &ClusterView) -> Result<(), String> {
    match component {
        "zookeeper" => {
            let n = view.zookeeper.len();
            let others_serving = view
                .zookeeper
                .iter()
                .filter(|m| m.host != member && m.mode.is_some_and(ZkMode::serving))
                .count();
            if others_serving < majority(n) {
                return Err(format!(
                    "ZooKeeper: without {member}, {others_serving} of {n} members would serve; {} are needed",
                    majority(n)
                ));
            }
            Ok(())
        }
        "mesos_master" => {
            let n = view.masters.len();
            let others = view
                .masters
                .iter()
                .filter(|m| m.host != member && m.answered && m.recovered)
                .count();
            if others < majority(n) {
                return Err(format!(
                    "Mesos masters: without {member}, {others} of {n} replicas would be recovered; {} are needed",
                    majority(n)
                ));
            }
            Ok(())
        }
        other => Err(format!("{other} is not a quorum component")),
    }
}

/// The order to restart a quorum component's members in: followers first, the leader last (one
/// leader change, not several). Members keep their given order otherwise.
pub fn rollout_order(component: &str, members: &[String], view: &ClusterView) -> Vec<String> {
    let leader: Option<&str> = match component {
        "zookeeper" => view
            .zookeeper
            .iter()
            .find(|m| m.mode == Some(ZkMode::Leader))
            .map(|m| m.host.as_str()),
        "mesos_master" => view.leader(),
        _ => None,
    };
    let mut out: Vec<String> = members
        .iter()
        .filter(|m| Some(m.as_str()) != leader)
        .cloned()
        .collect();
    out.extend(
        members
            .iter()
            .filter(|m| Some(m.as_str()) == leader)
            .cloned(),
    );
    out
}

/// What one host's probe asks, from its groups and the bundle's ports: `status` and `upgrade`
/// run [`probe_script`] on each host in one round trip and read it back with [`read_probe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeSpec {
    /// ZooKeeper's client port when the host is a member.
    pub zookeeper: Option<u16>,
    /// The master's HTTP port when the host is a master.
    pub master: Option<u16>,
    /// The agent's HTTP port when the host is an agent.
    pub agent: Option<u16>,
    /// HTTPS verified against this CA file (libprocess TLS); plain HTTP when `None`.
    pub ca_file: Option<String>,
    /// The host certificate whose expiry is reported.
    pub cert_file: Option<String>,
    /// systemd units whose state is reported.
    pub units: Vec<String>,
    /// A name to resolve through the host's own resolver (`leader.<domain>`, on masters).
    pub resolve: Option<String>,
    /// Prometheus's and Alertmanager's ports on the monitoring host.
    pub monitoring: Option<(u16, u16)>,
}

/// A section header in the probe's output: `@@ name`.
const SECTION: &str = "@@ ";

/// One shell script (POSIX sh + bash's /dev/tcp for ZooKeeper, curl) that prints every answer
/// the spec asks for, each after an `@@ name` line. It changes nothing and never fails.
pub fn probe_script(spec: &ProbeSpec) -> String {
    let mut s = String::from("exec 2>/dev/null\n");
    let section = |s: &mut String, name: &str, cmd: &str| {
        s.push_str(&format!("echo '{SECTION}{name}'\n{cmd}\necho\n"));
    };
    let (scheme, ca) = match &spec.ca_file {
        Some(f) => ("https", format!(" --cacert '{f}'")),
        None => ("http", String::new()),
    };
    let get =
        |port: u16, path: &str| format!("curl -sS -m 5{ca} \"{scheme}://$ADDR:{port}{path}\"");
    // The address Mesos listens on: the `ip` flag the roles write, else the first address.
    s.push_str(
        "ADDR=$(cat /etc/mesos-master/ip /etc/mesos-agent/ip 2>/dev/null | head -n1)\n\
         [ -n \"$ADDR\" ] || ADDR=$(hostname -I | cut -d' ' -f1)\n",
    );
    if let Some(p) = spec.zookeeper {
        for w in ["srvr", "mntr"] {
            section(
                &mut s,
                &format!("zk.{w}"),
                &format!(
                    "printf {w} | timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{p}; cat >&3; cat <&3'"
                ),
            );
        }
    }
    if let Some(p) = spec.master {
        section(&mut s, "master.metrics", &get(p, "/metrics/snapshot"));
        section(&mut s, "master.version", &get(p, "/version"));
        // Only the leader answers these (the others: 307, no body).
        section(&mut s, "master.state", &get(p, "/master/state"));
        section(
            &mut s,
            "master.maintenance",
            &get(p, "/master/maintenance/status"),
        );
    }
    if let Some(p) = spec.agent {
        section(
            &mut s,
            "agent.health",
            &format!("{} -o /dev/null -w '%{{http_code}}'", get(p, "/health")),
        );
    }
    section(&mut s, "host.addr", "echo \"$ADDR\"");
    if let Some(name) = &spec.resolve {
        section(
            &mut s,
            "dns.resolve",
            &format!("dig +short +time=2 +tries=1 '{name}' @127.0.0.1"),
        );
    }
    if let Some((prom, am)) = spec.monitoring {
        section(
            &mut s,
            "prometheus.targets",
            &format!("curl -sS -m 5 'http://127.0.0.1:{prom}/api/v1/targets?state=active'"),
        );
        section(
            &mut s,
            "alertmanager.alerts",
            &format!("curl -sS -m 5 'http://127.0.0.1:{am}/api/v2/alerts?active=true&silenced=false&inhibited=false'"),
        );
    }
    for u in &spec.units {
        section(
            &mut s,
            &format!("unit.{u}"),
            &format!("systemctl is-active '{u}'"),
        );
    }
    if let Some(c) = &spec.cert_file {
        // openssl comes with ca-certificates.
        section(
            &mut s,
            "cert.enddate",
            &format!("openssl x509 -enddate -noout -in '{c}'"),
        );
    }
    s.push_str("exit 0\n");
    s
}

/// A script for a master's host that calls one of its HTTP endpoints (the address as
/// [`probe_script`] finds it), with an optional JSON body to POST. Its output, read with
/// [`read_probe`], has `body` and `status` (the HTTP code; `000` when nothing answered).
pub fn master_call_script(
    port: u16,
    ca_file: Option<&str>,
    path: &str,
    body: Option<&str>,
) -> String {
    let (scheme, ca) = match ca_file {
        Some(f) => ("https", format!(" --cacert '{f}'")),
        None => ("http", String::new()),
    };
    let mut s = String::from(
        "ADDR=$(cat /etc/mesos-master/ip 2>/dev/null | head -n1)\n\
         [ -n \"$ADDR\" ] || ADDR=$(hostname -I | cut -d' ' -f1)\n",
    );
    s.push_str(&format!("echo '{SECTION}body'\n"));
    let url = format!("\"{scheme}://$ADDR:{port}{path}\"");
    match body {
        Some(b) => s.push_str(&format!(
            "curl -sS -m 10{ca} -X POST -H 'Content-Type: application/json' --data-binary @- -w '\\n{SECTION}status\\n%{{http_code}}\\n' {url} <<'PROVISIONER_BODY'\n{b}\nPROVISIONER_BODY\n"
        )),
        None => s.push_str(&format!(
            "curl -sS -m 10{ca} -w '\\n{SECTION}status\\n%{{http_code}}\\n' {url}\n"
        )),
    }
    s.push_str("exit 0\n");
    s
}

/// The probe's output as `section -> text` (trimmed).
pub fn read_probe(out: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut cur: Option<(String, String)> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix(SECTION) {
            if let Some((k, v)) = cur.take() {
                m.insert(k, v.trim().to_string());
            }
            cur = Some((name.trim().to_string(), String::new()));
        } else if let Some((_, v)) = cur.as_mut() {
            v.push_str(line);
            v.push('\n');
        }
    }
    if let Some((k, v)) = cur {
        m.insert(k, v.trim().to_string());
    }
    m
}

/// Builds the cluster's view from each host's probe answers (`None`: the host did not answer at
/// all). `zookeeper`, `masters` and `agents` are the inventory's groups.
pub fn view_from_probes(
    zookeeper: &[String],
    masters: &[String],
    agents: &[String],
    answers: &BTreeMap<String, Option<BTreeMap<String, String>>>,
) -> ClusterView {
    let get = |h: &str, k: &str| -> Option<&str> {
        answers
            .get(h)
            .and_then(Option::as_ref)
            .and_then(|a| a.get(k))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let json = |h: &str, k: &str| get(h, k).and_then(|t| serde_json::from_str::<Value>(t).ok());
    let zk = zookeeper
        .iter()
        .map(|h| {
            let srvr = get(h, "zk.srvr");
            let (mode, zxid) = match srvr {
                Some(t) => {
                    let (m, z) = parse_srvr(t);
                    (Some(m), z)
                }
                None => (None, None),
            };
            let synced = get(h, "zk.mntr")
                .map(parse_mntr)
                .and_then(|m| m.get("zk_synced_followers").and_then(|v| v.parse().ok()));
            ZkMember {
                host: h.clone(),
                mode,
                zxid,
                synced_followers: synced,
                version: srvr.and_then(srvr_version),
            }
        })
        .collect();
    let masters_v: Vec<MasterView> = masters
        .iter()
        .map(|h| {
            MasterView::from_metrics(
                h,
                json(h, "master.metrics").as_ref(),
                json(h, "master.version").as_ref(),
            )
        })
        .collect();
    let leader = masters_v.iter().find(|m| m.elected).map(|m| m.host.clone());
    let state = leader.as_deref().and_then(|l| json(l, "master.state"));
    let maintenance = leader
        .as_deref()
        .and_then(|l| json(l, "master.maintenance"));
    let in_maintenance = maintenance
        .iter()
        .flat_map(|m| {
            ["draining_machines", "down_machines"]
                .into_iter()
                .flat_map(|k| m[k].as_array().cloned().unwrap_or_default())
        })
        .filter_map(|d| {
            let id = d.get("id").unwrap_or(&d);
            id["hostname"].as_str().map(str::to_string)
        })
        .collect();
    ClusterView {
        zookeeper: zk,
        masters: masters_v,
        expected_agents: agents.to_vec(),
        agents: state.as_ref().map(agents_from_state).unwrap_or_default(),
        in_maintenance,
    }
}

/// Problems outside the quorum systems, from each host's probe answers: units that are not
/// active, Mesos-DNS not resolving to the elected master, Prometheus targets down, alerts
/// firing, certificates that expire within `cert_days` days (`now`: seconds since the epoch).
pub fn other_flags(
    view: &ClusterView,
    answers: &BTreeMap<String, Option<BTreeMap<String, String>>>,
    now: i64,
    cert_days: i64,
) -> Vec<Flag> {
    let mut out = Vec::new();
    let leader_addr = view
        .masters
        .iter()
        .find(|m| m.elected)
        .and_then(|m| answers.get(&m.host)?.as_ref()?.get("host.addr").cloned());
    for (host, a) in answers {
        let Some(a) = a else { continue };
        for (k, v) in a {
            if let Some(unit) = k.strip_prefix("unit.") {
                if v != "active" {
                    flag(
                        &mut out,
                        Severity::Critical,
                        unit,
                        format!(
                            "{host}: {unit} is {}",
                            if v.is_empty() { "unknown" } else { v }
                        ),
                    );
                }
            }
        }
        if let (Some(got), Some(want)) = (a.get("dns.resolve"), leader_addr.as_ref()) {
            let got: Vec<&str> = got
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if got != [want.as_str()] {
                flag(
                    &mut out,
                    Severity::Warning,
                    "mesos_dns",
                    format!("{host}: the leader's name resolves to {got:?}, the elected master is {want}"),
                );
            }
        }
        if let Some(t) = a.get("prometheus.targets") {
            match serde_json::from_str::<Value>(t) {
                Ok(v) => {
                    for target in v["data"]["activeTargets"].as_array().into_iter().flatten() {
                        if target["health"] != "up" {
                            let inst = target["labels"]["instance"].as_str().unwrap_or("?");
                            let job = target["labels"]["job"].as_str().unwrap_or("?");
                            flag(
                                &mut out,
                                Severity::Warning,
                                "prometheus",
                                format!(
                                    "target {job}/{inst} is {}",
                                    target["health"].as_str().unwrap_or("unknown")
                                ),
                            );
                        }
                    }
                }
                Err(_) => flag(
                    &mut out,
                    Severity::Warning,
                    "prometheus",
                    format!("{host}: Prometheus does not answer"),
                ),
            }
        }
        if let Some(t) = a.get("alertmanager.alerts") {
            match serde_json::from_str::<Value>(t) {
                Ok(v) => {
                    for alert in v.as_array().into_iter().flatten() {
                        let name = alert["labels"]["alertname"].as_str().unwrap_or("?");
                        let inst = alert["labels"]["instance"].as_str().unwrap_or("");
                        flag(
                            &mut out,
                            Severity::Warning,
                            "alertmanager",
                            format!("alert firing: {name} {inst}").trim().to_string(),
                        );
                    }
                }
                Err(_) => flag(
                    &mut out,
                    Severity::Warning,
                    "alertmanager",
                    format!("{host}: Alertmanager does not answer"),
                ),
            }
        }
        if let Some(end) = a
            .get("cert.enddate")
            .and_then(|t| t.strip_prefix("notAfter="))
        {
            match parse_openssl_date(end.trim()) {
                Some(t) if t - now < cert_days * 86_400 => flag(
                    &mut out,
                    if t <= now {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    "tls",
                    format!(
                        "{host}: its certificate expires {end} ({} days)",
                        (t - now) / 86_400
                    ),
                ),
                Some(_) => {}
                None => flag(
                    &mut out,
                    Severity::Warning,
                    "tls",
                    format!("{host}: cannot read its certificate's expiry ({end})"),
                ),
            }
        }
    }
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.cmp(b)));
    out
}

/// `openssl x509 -enddate`'s date (`Dec  5 21:08:58 2027 GMT`) as seconds since the epoch.
pub fn parse_openssl_date(s: &str) -> Option<i64> {
    let mut it = s.split_whitespace();
    let name = it.next()?;
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == name)? as i64
        + 1;
    let day: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (hms.next()??, hms.next()??, hms.next()??);
    let year: i64 = it.next()?.parse().ok()?;
    // A hostile or broken host may send anything: out-of-range fields are no date (and the
    // arithmetic below cannot overflow within these ranges).
    if !(1..=31).contains(&day)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&se)
        || !(1..=9999).contains(&year)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mon <= 2 {
        (year - 1, mon + 9)
    } else {
        (year, mon - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zk(host: &str, mode: Option<ZkMode>) -> ZkMember {
        ZkMember {
            host: host.into(),
            mode,
            zxid: Some(1),
            synced_followers: (mode == Some(ZkMode::Leader)).then_some(2),
            version: Some("3.8.0".into()),
        }
    }

    #[test]
    fn srvr_version_is_the_leading_release() {
        let t = "Zookeeper version: 3.8.0-${mvngit.commit.id}, built on 2023-01-01\nLatency min/avg/max: 0/0.0/0\nMode: follower\n";
        assert_eq!(srvr_version(t).as_deref(), Some("3.8.0"));
        assert_eq!(srvr_version("Mode: leader\n"), None);
    }

    fn master(host: &str, elected: bool) -> MasterView {
        MasterView::from_metrics(
            host,
            Some(&json!({"master/elected": if elected {1.0} else {0.0},
                "registrar/log/recovered": 1.0, "registrar/log/ensemble_size": 3.0,
                "master/uptime_secs": 3600.0})),
            Some(&json!({"version": "1.11.0"})),
        )
    }

    fn agent(h: &str) -> AgentView {
        AgentView {
            hostname: h.into(),
            id: format!("id-{h}"),
            active: true,
            version: Some("1.11.0".into()),
            ..Default::default()
        }
    }

    fn healthy() -> ClusterView {
        ClusterView {
            zookeeper: vec![
                zk("m1", Some(ZkMode::Follower)),
                zk("m2", Some(ZkMode::Leader)),
                zk("m3", Some(ZkMode::Follower)),
            ],
            masters: vec![master("m1", false), master("m2", false), master("m3", true)],
            expected_agents: vec!["a1".into(), "a2".into()],
            agents: vec![agent("a1"), agent("a2")],
            in_maintenance: BTreeSet::new(),
        }
    }

    fn reasons(v: &ClusterView) -> Vec<String> {
        evaluate(v).into_iter().map(|f| f.reason).collect()
    }

    #[test]
    fn srvr_and_mntr_parse() {
        let srvr = "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.5/3\nZxid: 0x20000001a\nMode: follower\nNode count: 12\n";
        assert_eq!(parse_srvr(srvr), (ZkMode::Follower, Some(0x2_0000_001a)));
        assert_eq!(
            parse_srvr("This ZooKeeper instance is not currently serving requests\n").0,
            ZkMode::NotServing
        );
        let m = parse_mntr("zk_version\t3.8.0\nzk_synced_followers\t2\nzk_server_state\tleader\n");
        assert_eq!(m["zk_synced_followers"], "2");
    }

    #[test]
    fn a_healthy_cluster_has_no_flags() {
        assert_eq!(reasons(&healthy()), Vec::<String>::new());
    }

    #[test]
    fn each_problem_is_flagged_with_its_reason() {
        let mut v = healthy();
        v.masters[2].elected = false;
        assert_eq!(reasons(&v), ["no leader elected"]);

        let mut v = healthy();
        v.masters[0].elected = true;
        assert!(reasons(&v)[0].starts_with("2 masters say they lead"));

        let mut v = healthy();
        v.masters[1].recovered = false;
        assert_eq!(
            reasons(&v),
            ["m2: its replica of the registry's log has not recovered"]
        );

        let mut v = healthy();
        v.masters.push(master("m4", false));
        let r = reasons(&v);
        assert!(
            r.iter().any(|x| x.contains("4 masters: an even count")),
            "{r:?}"
        );
        assert!(
            r.iter()
                .any(|x| x.contains("log ensemble of 3, but 4 masters")),
            "{r:?}"
        );

        let mut v = healthy();
        for m in &mut v.masters {
            m.ensemble_size = Some(4);
        }
        v.masters.truncate(3);
        assert!(reasons(&v)
            .iter()
            .any(|x| x.contains("at least twice the quorum 2")));

        let mut v = healthy();
        v.masters[0].version = Some("1.10.0".into());
        assert_eq!(reasons(&v), ["mixed versions: 1.10.0, 1.11.0"]);

        let mut v = healthy();
        v.masters[0].uptime_secs = Some(12.0);
        assert_eq!(reasons(&v), ["m1: restarted 12 s ago"]);

        let mut v = healthy();
        v.agents.remove(1);
        assert_eq!(
            reasons(&v),
            ["a2: not registered with the leader (agent down?)"]
        );
        v.in_maintenance.insert("a2".into());
        assert_eq!(reasons(&v), ["a2: down for maintenance"]);

        let mut v = healthy();
        v.zookeeper[1].mode = None;
        let f = evaluate(&v);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f.iter().any(|x| x.reason == "no leader"), "{f:?}");
        assert!(f.iter().any(|x| x.reason == "m2: does not answer"), "{f:?}");

        let mut v = healthy();
        v.zookeeper[0].mode = None;
        v.zookeeper[2].mode = Some(ZkMode::NotServing);
        let r = reasons(&v);
        assert!(
            r.contains(&"quorum lost: 1 of 3 members serving, 2 needed".to_string()),
            "{r:?}"
        );
    }

    #[test]
    fn the_quorum_rule_allows_one_member_down_of_three_not_two() {
        let mut v = healthy();
        assert!(may_stop("zookeeper", "m1", &v).is_ok());
        assert!(may_stop("mesos_master", "m3", &v).is_ok());
        v.zookeeper[2].mode = None;
        let e = may_stop("zookeeper", "m1", &v).unwrap_err();
        assert!(
            e.contains("1 of 3 members would serve; 2 are needed"),
            "{e}"
        );
        // Stopping the one already down is fine.
        assert!(may_stop("zookeeper", "m3", &v).is_ok());
        v.masters[0].answered = false;
        assert!(may_stop("mesos_master", "m2", &v).is_err());
        assert!(may_stop("docker", "a1", &v).is_err());
    }

    #[test]
    fn rollout_puts_the_leader_last() {
        let v = healthy();
        let m: Vec<String> = ["m1", "m2", "m3"].map(String::from).to_vec();
        assert_eq!(rollout_order("zookeeper", &m, &v), ["m1", "m3", "m2"]);
        assert_eq!(rollout_order("mesos_master", &m, &v), ["m1", "m2", "m3"]);
    }

    #[test]
    fn agents_come_from_the_leaders_state() {
        let st = json!({"slaves": [
            {"id": "S0", "hostname": "a1", "active": true, "version": "1.11.0"},
            {"id": "S1", "hostname": "a2", "active": false, "deactivated": true,
             "drain_info": {"state": "DRAINING"}}
        ]});
        let a = agents_from_state(&st);
        assert_eq!(a[0].id, "S0");
        assert!(a[1].deactivated && a[1].draining && !a[1].active);
    }

    #[test]
    fn the_probe_script_asks_what_the_host_serves_and_its_answers_read_back() {
        let spec = ProbeSpec {
            zookeeper: Some(2181),
            master: Some(5050),
            agent: None,
            ca_file: Some("/etc/provisioner/tls/ca.crt".into()),
            cert_file: None,
            units: vec!["dnsmasq".into()],
            resolve: None,
            monitoring: None,
        };
        let s = probe_script(&spec);
        assert!(s.contains("/dev/tcp/127.0.0.1/2181"), "{s}");
        assert!(
            s.contains(
                "--cacert '/etc/provisioner/tls/ca.crt' \"https://$ADDR:5050/metrics/snapshot\""
            ),
            "{s}"
        );
        assert!(!s.contains("agent.health"), "{s}");
        let out = "@@ zk.srvr\nZxid: 0x10\nMode: leader\n\n@@ zk.mntr\nzk_synced_followers\t2\n\n\
                   @@ master.metrics\n{\"master/elected\": 1.0, \"registrar/log/recovered\": 1.0, \"registrar/log/ensemble_size\": 3.0}\n\
                   @@ master.version\n{\"version\": \"1.11.0\"}\n\
                   @@ master.state\n{\"slaves\": [{\"id\": \"S1\", \"hostname\": \"a1\", \"active\": true, \"version\": \"1.11.0\"}]}\n\
                   @@ master.maintenance\n{\"draining_machines\": [{\"id\": {\"hostname\": \"a2\"}}]}\n\
                   @@ unit.dnsmasq\nactive\n";
        let a = read_probe(out);
        assert_eq!(a["unit.dnsmasq"], "active");
        let mut answers = BTreeMap::new();
        answers.insert("m1".to_string(), Some(a));
        answers.insert("m2".to_string(), None);
        let v = view_from_probes(
            &["m1".into(), "m2".into()],
            &["m1".into(), "m2".into()],
            &["a1".into(), "a2".into()],
            &answers,
        );
        assert_eq!(v.zookeeper[0].mode, Some(ZkMode::Leader));
        assert_eq!(v.zookeeper[0].synced_followers, Some(2));
        assert_eq!(v.zookeeper[1].mode, None);
        assert!(v.masters[0].elected && v.masters[0].recovered && !v.masters[1].answered);
        assert_eq!(v.masters[0].version.as_deref(), Some("1.11.0"));
        assert_eq!(v.agents[0].id, "S1");
        assert!(v.in_maintenance.contains("a2"));
        let r = reasons(&v);
        assert!(r.contains(&"a2: down for maintenance".to_string()), "{r:?}");
        assert!(r.contains(&"m2: does not answer".to_string()), "{r:?}");
    }

    #[test]
    fn other_problems_come_from_the_probe_answers() {
        assert_eq!(parse_openssl_date("Jan  1 00:00:00 1970 GMT"), Some(0));
        assert_eq!(
            parse_openssl_date("Dec  5 21:08:58 2026 GMT"),
            Some(1_796_504_938)
        );
        let v = healthy();
        let mut m1 = BTreeMap::new();
        m1.insert("unit.dnsmasq".to_string(), "inactive".to_string());
        m1.insert("dns.resolve".to_string(), "10.0.0.9".to_string());
        m1.insert(
            "cert.enddate".to_string(),
            "notAfter=Jan 10 00:00:00 1970 GMT".to_string(),
        );
        m1.insert(
            "prometheus.targets".to_string(),
            r#"{"data": {"activeTargets": [{"health": "down", "labels": {"job": "node", "instance": "a1:9100"}}, {"health": "up", "labels": {}}]}}"#.to_string(),
        );
        m1.insert(
            "alertmanager.alerts".to_string(),
            r#"[{"labels": {"alertname": "AgentLost", "instance": "a2"}}]"#.to_string(),
        );
        let mut m3 = BTreeMap::new();
        m3.insert("host.addr".to_string(), "10.0.0.3".to_string());
        let mut answers = BTreeMap::new();
        answers.insert("m1".to_string(), Some(m1));
        answers.insert("m3".to_string(), Some(m3));
        let r: Vec<String> = other_flags(&v, &answers, 0, 30)
            .into_iter()
            .map(|f| f.reason)
            .collect();
        assert_eq!(
            r,
            [
                "m1: dnsmasq is inactive",
                "alert firing: AgentLost a2",
                "m1: the leader's name resolves to [\"10.0.0.9\"], the elected master is 10.0.0.3",
                "target node/a1:9100 is down",
                "m1: its certificate expires Jan 10 00:00:00 1970 GMT (9 days)",
            ]
        );
    }
}
