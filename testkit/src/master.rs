//! `mesos-standin master`: contends for leadership in ZooKeeper and serves the master's HTTP
//! surface. A leader is effective only while at least `quorum` masters contend (real Mesos
//! cannot recover its replicated registry without a quorum of masters).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::election;
use crate::flags::{flags_json, MasterConfig};
use crate::http::{self, Request, Response};

pub const VERSION: &str = "0.0.0-standin";
/// Agents re-register every few seconds; after this long without one an agent is inactive.
pub const AGENT_INACTIVE_AFTER: Duration = Duration::from_secs(15);
/// ... and after this long it is unreachable and leaves `slaves` (Mesos: 5 pings × 15 s).
pub const AGENT_UNREACHABLE_AFTER: Duration = Duration::from_secs(75);

#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub info: Value,
    pub registered_time: f64,
    pub last_seen: Instant,
}

#[derive(Debug)]
pub struct MasterState {
    pub id: String,
    pub info: Value,
    pub cfg: MasterConfig,
    pub start: Instant,
    pub start_time: f64,
    pub my_znode: Option<String>,
    pub contenders: election::Contenders,
    pub elected_time: Option<f64>,
    pub agents: BTreeMap<String, AgentRecord>,
    pub next_agent: u64,
    /// The maintenance schedule as posted (`{"windows": [...]}`).
    pub schedule: Value,
    /// Machines marked down: (hostname, ip).
    pub down: Vec<Machine>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Machine {
    pub hostname: Option<String>,
    pub ip: Option<String>,
}

impl Machine {
    fn from_json(v: &Value) -> Result<Machine, String> {
        let m = Machine {
            hostname: v
                .get("hostname")
                .and_then(Value::as_str)
                .map(str::to_string),
            ip: v.get("ip").and_then(Value::as_str).map(str::to_string),
        };
        if m.hostname.is_none() && m.ip.is_none() {
            return Err(format!("machine id {v} needs a 'hostname' or an 'ip'"));
        }
        if let Some(ip) = &m.ip {
            if ip.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(format!("machine id {v}: invalid ip '{ip}'"));
            }
        }
        Ok(m)
    }
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(h) = &self.hostname {
            m.insert("hostname".into(), json!(h));
        }
        if let Some(i) = &self.ip {
            m.insert("ip".into(), json!(i));
        }
        Value::Object(m)
    }
    /// Does an agent at (hostname, ip) live on this machine?
    fn holds(&self, hostname: &str, ip: &str) -> bool {
        self.hostname.as_deref().is_none_or(|h| h == hostname)
            && self.ip.as_deref().is_none_or(|i| i == ip)
    }
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl MasterState {
    pub fn new(cfg: MasterConfig, id: String, info: Value) -> MasterState {
        MasterState {
            id,
            info,
            cfg,
            start: Instant::now(),
            start_time: now_secs(),
            my_znode: None,
            contenders: election::Contenders::default(),
            elected_time: None,
            agents: BTreeMap::new(),
            next_agent: 0,
            schedule: json!({"windows": []}),
            down: Vec::new(),
        }
    }

    /// The effective leader's MasterInfo: the lowest znode, once a quorum of masters contends.
    pub fn leader(&self) -> Option<&Value> {
        if self.contenders.list.len() < self.cfg.quorum {
            return None;
        }
        self.contenders.leader().map(|(_, v)| v)
    }

    pub fn is_leader(&self) -> bool {
        self.leader()
            .and_then(|l| l.get("id"))
            .and_then(Value::as_str)
            == Some(self.id.as_str())
    }

    fn agent_active(&self, a: &AgentRecord, now: Instant) -> bool {
        let host = a
            .info
            .get("hostname")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ip = a.info.get("ip").and_then(Value::as_str).unwrap_or_default();
        now.duration_since(a.last_seen) < AGENT_INACTIVE_AFTER
            && !self.down.iter().any(|m| m.holds(host, ip))
    }

    /// (active, inactive, unreachable) counts.
    fn agent_counts(&self, now: Instant) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for a in self.agents.values() {
            if now.duration_since(a.last_seen) >= AGENT_UNREACHABLE_AFTER {
                c.2 += 1;
            } else if self.agent_active(a, now) {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        c
    }

    pub fn state_json(&self) -> Value {
        let now = Instant::now();
        let (active, inactive, unreachable) = self.agent_counts(now);
        let mut slaves = Vec::new();
        if self.is_leader() {
            for (id, a) in &self.agents {
                if now.duration_since(a.last_seen) >= AGENT_UNREACHABLE_AFTER {
                    continue;
                }
                let mut s = a.info.as_object().cloned().unwrap_or_default();
                s.insert("id".into(), json!(id));
                s.insert("active".into(), json!(self.agent_active(a, now)));
                s.insert("registered_time".into(), json!(a.registered_time));
                slaves.push(Value::Object(s));
            }
        }
        let mut m = Map::new();
        m.insert("version".into(), json!(VERSION));
        m.insert("standin".into(), json!(true));
        m.insert("id".into(), json!(self.id));
        m.insert("pid".into(), self.info["pid"].clone());
        m.insert("hostname".into(), json!(self.cfg.hostname));
        m.insert("start_time".into(), json!(self.start_time));
        if let Some(t) = self.elected_time {
            m.insert("elected_time".into(), json!(t));
        }
        if let Some(c) = &self.cfg.cluster {
            m.insert("cluster".into(), json!(c));
        }
        if let Some(l) = self.leader() {
            m.insert("leader".into(), l["pid"].clone());
            m.insert("leader_info".into(), l.clone());
        }
        let leading = self.is_leader();
        m.insert(
            "activated_slaves".into(),
            json!(if leading { active } else { 0 }),
        );
        m.insert(
            "deactivated_slaves".into(),
            json!(if leading { inactive } else { 0 }),
        );
        m.insert(
            "unreachable_slaves".into(),
            json!(if leading { unreachable } else { 0 }),
        );
        m.insert("flags".into(), flags_json(&self.cfg.flags));
        m.insert("slaves".into(), Value::Array(slaves));
        for k in [
            "frameworks",
            "completed_frameworks",
            "orphan_tasks",
            "unregistered_frameworks",
        ] {
            m.insert(k.into(), json!([]));
        }
        Value::Object(m)
    }

    pub fn metrics_json(&self) -> Value {
        let now = Instant::now();
        let leading = self.is_leader();
        let (active, inactive, unreachable) = if leading {
            self.agent_counts(now)
        } else {
            (0, 0, 0)
        };
        let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
        if leading {
            for a in self.agents.values().filter(|a| self.agent_active(a, now)) {
                for r in ["cpus", "mem", "disk", "gpus"] {
                    *totals.entry(r).or_default() += a.info["resources"][r].as_f64().unwrap_or(0.0);
                }
            }
        }
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        json!({
            "master/elected": b(leading),
            "master/uptime_secs": self.start.elapsed().as_secs_f64(),
            "master/slaves_active": active as f64,
            "master/slaves_inactive": inactive as f64,
            "master/slaves_connected": active as f64,
            "master/slaves_disconnected": inactive as f64,
            "master/slaves_unreachable": unreachable as f64,
            "master/frameworks_active": 0.0,
            "master/tasks_running": 0.0,
            "master/cpus_total": totals.get("cpus").copied().unwrap_or(0.0),
            "master/mem_total": totals.get("mem").copied().unwrap_or(0.0),
            "master/disk_total": totals.get("disk").copied().unwrap_or(0.0),
            "master/gpus_total": totals.get("gpus").copied().unwrap_or(0.0),
            "registrar/log/recovered": b(leading),
            "standin/contenders": self.contenders.list.len() as f64,
        })
    }

    /// Scheduled machines in the current schedule.
    fn scheduled(&self) -> Vec<Machine> {
        let mut out = Vec::new();
        for w in self.schedule["windows"].as_array().into_iter().flatten() {
            for m in w["machine_ids"].as_array().into_iter().flatten() {
                if let Ok(m) = Machine::from_json(m) {
                    out.push(m);
                }
            }
        }
        out
    }

    pub fn maintenance_status(&self) -> Value {
        let draining: Vec<Value> = self
            .scheduled()
            .into_iter()
            .filter(|m| !self.down.contains(m))
            .map(|m| json!({"id": m.to_json(), "statuses": []}))
            .collect();
        let down: Vec<Value> = self.down.iter().map(Machine::to_json).collect();
        json!({"draining_machines": draining, "down_machines": down})
    }

    /// Validates and installs a schedule, as Mesos does: every window has machines and an
    /// unavailability start; a machine appears once; a down machine cannot leave the schedule.
    pub fn set_schedule(&mut self, body: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("Failed to parse body into JSON: {e}"))?;
        let windows = v
            .get("windows")
            .and_then(Value::as_array)
            .ok_or("schedule needs a 'windows' array")?;
        let mut seen: Vec<Machine> = Vec::new();
        for w in windows {
            let ids = w
                .get("machine_ids")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or("each window needs a non-empty 'machine_ids' list")?;
            for id in ids {
                let m = Machine::from_json(id)?;
                if seen.contains(&m) {
                    return Err(format!(
                        "machine {id} appears more than once in the schedule"
                    ));
                }
                seen.push(m);
            }
            let start = w
                .pointer("/unavailability/start/nanoseconds")
                .ok_or("each window needs 'unavailability.start.nanoseconds'")?;
            if !start.is_i64() {
                return Err("'unavailability.start.nanoseconds' must be an integer".into());
            }
            if let Some(d) = w.pointer("/unavailability/duration/nanoseconds") {
                if d.as_i64().is_none_or(|d| d < 0) {
                    return Err(
                        "'unavailability.duration.nanoseconds' must be a non-negative integer"
                            .into(),
                    );
                }
            }
        }
        for d in &self.down {
            if !seen.contains(d) {
                return Err(format!(
                    "machine {} is down; bring it up (/master/machine/up) before removing it from the schedule",
                    d.to_json()
                ));
            }
        }
        self.schedule = v;
        Ok(())
    }

    pub fn machines_down(&mut self, body: &[u8]) -> Result<(), String> {
        let list = parse_machines(body)?;
        let scheduled = self.scheduled();
        for m in &list {
            if !scheduled.contains(m) {
                return Err(format!(
                    "machine {} is not part of a maintenance schedule",
                    m.to_json()
                ));
            }
            if self.down.contains(m) {
                return Err(format!("machine {} is already down", m.to_json()));
            }
        }
        self.down.extend(list);
        Ok(())
    }

    pub fn machines_up(&mut self, body: &[u8]) -> Result<(), String> {
        let list = parse_machines(body)?;
        for m in &list {
            if !self.down.contains(m) {
                return Err(format!("machine {} is not down", m.to_json()));
            }
        }
        self.down.retain(|d| !list.contains(d));
        // Mesos drops machines that come back up from the schedule.
        if let Some(ws) = self.schedule["windows"].as_array_mut() {
            for w in ws.iter_mut() {
                if let Some(ids) = w["machine_ids"].as_array_mut() {
                    ids.retain(|id| {
                        Machine::from_json(id)
                            .map(|m| !list.contains(&m))
                            .unwrap_or(true)
                    });
                }
            }
            ws.retain(|w| w["machine_ids"].as_array().is_some_and(|a| !a.is_empty()));
        }
        Ok(())
    }

    /// An agent (re-)registers; returns its id.
    pub fn register(&mut self, body: &[u8]) -> Result<String, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("bad registration: {e}"))?;
        let hostname = v
            .get("hostname")
            .and_then(Value::as_str)
            .ok_or("registration needs 'hostname'")?;
        let ip = v.get("ip").and_then(Value::as_str).unwrap_or_default();
        if self.down.iter().any(|m| m.holds(hostname, ip)) {
            return Err(format!(
                "agent {hostname} is on a machine that is down for maintenance"
            ));
        }
        let id = match v
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(id) => id.to_string(),
            None => {
                // A restarted agent without an id on the same host replaces its old record.
                let old: Vec<String> = self
                    .agents
                    .iter()
                    .filter(|(_, a)| a.info["hostname"] == hostname && a.info["port"] == v["port"])
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in old {
                    self.agents.remove(&k);
                }
                let id = format!("{}-S{}", self.id, self.next_agent);
                self.next_agent += 1;
                id
            }
        };
        let mut info = v.as_object().cloned().unwrap_or_default();
        info.remove("id");
        let registered_time = self
            .agents
            .get(&id)
            .map(|a| a.registered_time)
            .unwrap_or_else(now_secs);
        self.agents.insert(
            id.clone(),
            AgentRecord {
                info: Value::Object(info),
                registered_time,
                last_seen: Instant::now(),
            },
        );
        Ok(id)
    }
}

fn parse_machines(body: &[u8]) -> Result<Vec<Machine>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("Failed to parse body into JSON: {e}"))?;
    let list = v.as_array().ok_or("expected a JSON array of machine ids")?;
    if list.is_empty() {
        return Err("no machines given".into());
    }
    list.iter().map(Machine::from_json).collect()
}

pub type Shared = Arc<Mutex<MasterState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, MasterState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// `//host:port` of the leader, as Mesos's redirects give it.
fn leader_location(st: &MasterState, path: &str) -> Option<String> {
    let l = st.leader()?;
    let (_, port) = election::info_addr(l)?;
    let host = l["hostname"].as_str()?;
    Some(format!("//{host}:{port}{path}"))
}

pub async fn handle(state: Shared, req: Request) -> Response {
    let mut st = lock(&state);
    let path = req.path.trim_end_matches('/');
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    let leader_only = |st: &MasterState| -> Option<Response> {
        if st.is_leader() {
            None
        } else {
            Some(match leader_location(st, &req.path) {
                Some(loc) => Response::redirect(&loc),
                None => Response::text(503, "No leader elected"),
            })
        }
    };
    match path {
        "/health" | "/master/health" if get => Response::text(200, ""),
        "/master/state" | "/state" | "/master/state.json" | "/state.json" if get => {
            Response::json(200, &st.state_json())
        }
        "/metrics/snapshot" if get => Response::json(200, &st.metrics_json()),
        "/master/redirect" | "/redirect" if get => match leader_location(&st, "") {
            Some(loc) => Response::redirect(&loc),
            None => Response::text(503, "No leader elected"),
        },
        "/master/maintenance/schedule" | "/maintenance/schedule" => {
            if let Some(r) = leader_only(&st) {
                return r;
            }
            if get {
                Response::json(200, &st.schedule)
            } else if post {
                match st.set_schedule(&req.body) {
                    Ok(()) => Response::text(200, ""),
                    Err(e) => Response::text(400, &e),
                }
            } else {
                Response::text(405, "GET or POST")
            }
        }
        "/master/maintenance/status" | "/maintenance/status" if get => {
            leader_only(&st).unwrap_or_else(|| Response::json(200, &st.maintenance_status()))
        }
        "/master/machine/down" | "/machine/down" | "/master/machine/up" | "/machine/up" => {
            if let Some(r) = leader_only(&st) {
                return r;
            }
            if !post {
                return Response::text(405, "POST");
            }
            let res = if path.ends_with("down") {
                st.machines_down(&req.body)
            } else {
                st.machines_up(&req.body)
            };
            match res {
                Ok(()) => Response::text(200, ""),
                Err(e) => Response::text(400, &e),
            }
        }
        "/standin/register" if post => {
            if let Some(r) = leader_only(&st) {
                return r;
            }
            match st.register(&req.body) {
                Ok(id) => Response::json(200, &json!({"id": id})),
                Err(e) => Response::text(409, &e),
            }
        }
        _ => Response::text(404, "not found"),
    }
}

/// Runs a master until its ZooKeeper session is lost or it loses leadership (then it exits
/// non-zero, as Mesos masters do, and systemd restarts it).
pub async fn run(cfg: MasterConfig) -> Result<(), String> {
    let id = election::new_id();
    let ip = match cfg.flags.get("advertise_ip").and_then(|s| s.parse().ok()) {
        Some(ip) => ip,
        None if !cfg.ip.is_unspecified() => cfg.ip,
        None => {
            let (h, p) = &cfg.zk.servers[0];
            election::local_ip_towards(h, *p).unwrap_or(std::net::Ipv4Addr::LOCALHOST)
        }
    };
    let port = cfg
        .flags
        .get("advertise_port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(cfg.port);
    let info = election::master_info(&id, &cfg.hostname, ip, port, VERSION);
    let listener = http::bind(cfg.ip, cfg.port).await?;
    let session_timeout = cfg
        .flags
        .get("zk_session_timeout")
        .and_then(|d| crate::flags::parse_duration(d))
        .unwrap_or(Duration::from_secs(10));
    let zk_url = cfg.zk.clone();
    let state: Shared = Arc::new(Mutex::new(MasterState::new(cfg, id.clone(), info.clone())));
    {
        let s = state.clone();
        tokio::spawn(http::serve(listener, move |req| handle(s.clone(), req)));
    }
    tracing::info!(id, %ip, port, "master stand-in listening; contending in {}", zk_url.connect_string());
    let client = election::connect(&zk_url, session_timeout).await?;
    let znode = election::contend(&client, &zk_url, &info).await?;
    tracing::info!(znode, "created candidate znode");
    lock(&state).my_znode = Some(znode.clone());
    let lost = election::session_lost(&client);
    tokio::pin!(lost);
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut was_leader = false;
    loop {
        tokio::select! {
            s = &mut lost => return Err(format!("ZooKeeper session lost ({s:?}); exiting")),
            _ = &mut stop => {
                // Withdraw at once so the others elect a new leader now, not after the session
                // timeout (real Mesos leaves its znode to expire; a stand-in may be kinder).
                tracing::info!("stopping: removing {znode}");
                let _ = client.delete(&zk_url.child(&znode), None).await;
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let contenders = match election::contenders(&client, &zk_url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let mut st = lock(&state);
        if !contenders.list.iter().any(|(n, _)| *n == znode) {
            return Err(format!("our candidate znode {znode} is gone; exiting"));
        }
        let old_leader = st
            .leader()
            .and_then(|l| l["id"].as_str())
            .map(str::to_string);
        st.contenders = contenders;
        let new_leader = st
            .leader()
            .and_then(|l| l["id"].as_str())
            .map(str::to_string);
        if old_leader != new_leader {
            match &new_leader {
                Some(l) => tracing::info!(
                    leader = l,
                    "leader is now {}",
                    st.leader()
                        .map(|l| l["pid"].to_string())
                        .unwrap_or_default()
                ),
                None => tracing::warn!(
                    contenders = st.contenders.list.len(),
                    quorum = st.cfg.quorum,
                    "no leader: fewer masters than the quorum"
                ),
            }
        }
        let leading = st.is_leader();
        if leading && !was_leader {
            st.elected_time = Some(now_secs());
            tracing::info!("elected as the leading master");
        }
        if was_leader && !leading {
            return Err("lost leadership; exiting (as Mesos does)".into());
        }
        was_leader = leading;
    }
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags;

    fn state(quorum: &str) -> MasterState {
        let f: flags::Flags = [
            ("quorum", quorum),
            ("work_dir", "/w"),
            ("cluster", "c1"),
            ("hostname", "m1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let zk = if quorum == "1" {
            "zk://u:p@a:2181/mesos"
        } else {
            "zk://u:p@a:2181,b:2181,c:2181/mesos"
        };
        let cfg = flags::master_config(f, Some(zk.into())).unwrap();
        let info = election::master_info("me", "m1", "10.0.0.1".parse().unwrap(), 5050, VERSION);
        MasterState::new(cfg, "me".into(), info)
    }

    fn with_contenders(st: &mut MasterState, ids: &[&str]) {
        st.contenders.list = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let info = election::master_info(
                    id,
                    id,
                    format!("10.0.0.{}", i + 1).parse().unwrap(),
                    5050,
                    VERSION,
                );
                (format!("json.info_{i:010}"), info)
            })
            .collect();
    }

    #[test]
    fn leader_needs_quorum() {
        let mut st = state("2");
        with_contenders(&mut st, &["me"]);
        assert!(!st.is_leader());
        assert!(st.state_json().get("leader").is_none());
        with_contenders(&mut st, &["me", "m2"]);
        assert!(st.is_leader());
        let s = st.state_json();
        assert_eq!(s["leader"], "master@10.0.0.1:5050");
        assert_eq!(s["leader_info"]["id"], "me");
        assert_eq!(s["cluster"], "c1");
        assert_eq!(
            s["flags"]["zk"],
            "zk://u:********@a:2181,b:2181,c:2181/mesos"
        );
        assert_eq!(st.metrics_json()["master/elected"], 1.0);
    }

    #[test]
    fn follower_points_elsewhere() {
        let mut st = state("2");
        with_contenders(&mut st, &["m0", "me", "m2"]);
        assert!(!st.is_leader());
        let s = st.state_json();
        assert_eq!(s["leader"], "master@10.0.0.1:5050");
        assert_eq!(s["leader_info"]["hostname"], "m0");
        assert_eq!(s["hostname"], "m1");
        assert_eq!(st.metrics_json()["master/elected"], 0.0);
        assert_eq!(leader_location(&st, "/x").as_deref(), Some("//m0:5050/x"));
    }

    #[test]
    fn registration_and_state_shape() {
        let mut st = state("1");
        with_contenders(&mut st, &["me"]);
        let body = json!({"hostname": "agent1", "ip": "10.0.0.21", "port": 5051,
            "pid": "slave(1)@10.0.0.21:5051", "attributes": {"rack": "r1"},
            "resources": {"cpus": 2.0, "mem": 1024.0, "disk": 100.0, "ports": "[31000-32000]"}});
        let id = st.register(body.to_string().as_bytes()).unwrap();
        assert_eq!(id, "me-S0");
        // Re-registration with the id keeps it.
        let mut again = body.clone();
        again["id"] = json!(id);
        assert_eq!(st.register(again.to_string().as_bytes()).unwrap(), "me-S0");
        let s = st.state_json();
        assert_eq!(s["activated_slaves"], 1);
        let a = &s["slaves"][0];
        assert_eq!(a["id"], "me-S0");
        assert_eq!(a["hostname"], "agent1");
        assert_eq!(a["attributes"]["rack"], "r1");
        assert_eq!(a["resources"]["ports"], "[31000-32000]");
        assert_eq!(a["active"], true);
        let m = st.metrics_json();
        assert_eq!(m["master/slaves_active"], 1.0);
        assert_eq!(m["master/cpus_total"], 2.0);
    }

    #[test]
    fn maintenance_flow() {
        let mut st = state("1");
        with_contenders(&mut st, &["me"]);
        st.register(
            json!({"hostname": "agent1", "ip": "10.0.0.21", "port": 5051})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let m = r#"[{"hostname":"agent1","ip":"10.0.0.21"}]"#;
        assert!(st
            .machines_down(m.as_bytes())
            .unwrap_err()
            .contains("not part of a maintenance schedule"));
        assert!(st
            .set_schedule(br#"{"windows":[{"machine_ids":[]}]}"#)
            .is_err());
        assert!(st
            .set_schedule(br#"{"windows":[{"machine_ids":[{"hostname":"agent1"}]}]}"#)
            .is_err());
        let sched = r#"{"windows":[{"machine_ids":[{"hostname":"agent1","ip":"10.0.0.21"}],
            "unavailability":{"start":{"nanoseconds":1},"duration":{"nanoseconds":3600000000000}}}]}"#;
        st.set_schedule(sched.as_bytes()).unwrap();
        let s = st.maintenance_status();
        assert_eq!(s["draining_machines"][0]["id"]["hostname"], "agent1");
        st.machines_down(m.as_bytes()).unwrap();
        let s = st.maintenance_status();
        assert_eq!(s["down_machines"][0]["ip"], "10.0.0.21");
        assert_eq!(s["draining_machines"].as_array().unwrap().len(), 0);
        assert_eq!(st.state_json()["activated_slaves"], 0);
        assert!(st
            .register(
                json!({"hostname": "agent1", "ip": "10.0.0.21"})
                    .to_string()
                    .as_bytes()
            )
            .is_err());
        assert!(st
            .set_schedule(br#"{"windows":[]}"#)
            .unwrap_err()
            .contains("is down"));
        st.machines_up(m.as_bytes()).unwrap();
        assert_eq!(st.schedule["windows"].as_array().unwrap().len(), 0);
        assert!(st.machines_up(m.as_bytes()).is_err());
    }

    #[tokio::test]
    async fn http_routes() {
        let mut st = state("2");
        with_contenders(&mut st, &["m0", "me"]);
        let shared: Shared = Arc::new(Mutex::new(st));
        let req = |m: &str, p: &str| Request {
            method: m.into(),
            path: p.into(),
            query: String::new(),
            body: vec![],
        };
        assert_eq!(
            handle(shared.clone(), req("GET", "/health")).await.status,
            200
        );
        let r = handle(shared.clone(), req("GET", "/master/maintenance/schedule")).await;
        assert_eq!(r.status, 307);
        assert_eq!(r.headers[0].1, "//m0:5050/master/maintenance/schedule");
        let r = handle(shared.clone(), req("GET", "/master/redirect")).await;
        assert_eq!(r.headers[0].1, "//m0:5050");
        assert_eq!(
            handle(shared.clone(), req("GET", "/nope")).await.status,
            404
        );
        with_contenders(&mut lock(&shared), &["me"]);
        assert_eq!(
            handle(shared.clone(), req("GET", "/master/redirect"))
                .await
                .status,
            503
        );
    }
}
