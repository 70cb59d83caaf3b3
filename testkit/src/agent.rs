//! `mesos-standin agent`: finds the leading master in ZooKeeper, registers with it
//! (`POST /standin/register`), re-registers every few seconds and at once when the leader
//! changes, and serves the agent's `/health`, `/state` and `/metrics/snapshot`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::election;
use crate::flags::{flags_json, AgentConfig};
use crate::http::{self, Request, Response};
use crate::master::{now_secs, VERSION};

pub const REREGISTER_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct AgentState {
    pub cfg: AgentConfig,
    pub id: Option<String>,
    pub pid: String,
    pub ip: std::net::Ipv4Addr,
    pub start: Instant,
    pub start_time: f64,
    pub master: Option<Value>,
    pub registered: bool,
}

impl AgentState {
    pub fn registration(&self) -> Value {
        json!({
            "id": self.id.clone().unwrap_or_default(),
            "hostname": self.cfg.hostname,
            "ip": self.ip.to_string(),
            "port": self.cfg.port,
            "pid": self.pid,
            "attributes": self.cfg.attributes,
            "resources": self.cfg.resources,
            "version": VERSION,
        })
    }

    pub fn state_json(&self) -> Value {
        json!({
            "version": VERSION,
            "standin": true,
            "id": self.id.clone().unwrap_or_default(),
            "pid": self.pid,
            "hostname": self.cfg.hostname,
            "start_time": self.start_time,
            "attributes": self.cfg.attributes,
            "resources": self.cfg.resources,
            "flags": flags_json(&self.cfg.flags),
            "master_hostname": self.master.as_ref().and_then(|m| m.get("hostname")).cloned().unwrap_or(Value::Null),
            "frameworks": [],
            "completed_frameworks": [],
        })
    }
}

pub type Shared = Arc<Mutex<AgentState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, AgentState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn handle(state: Shared, req: Request) -> Response {
    let st = lock(&state);
    let get = req.method == "GET" || req.method == "HEAD";
    match req.path.trim_end_matches('/') {
        "/health" | "/slave(1)/health" if get => Response::text(200, ""),
        "/state" | "/state.json" | "/slave(1)/state" | "/slave(1)/state.json" if get => {
            Response::json(200, &st.state_json())
        }
        "/metrics/snapshot" if get => Response::json(
            200,
            &json!({
                "slave/registered": if st.registered { 1.0 } else { 0.0 },
                "slave/uptime_secs": st.start.elapsed().as_secs_f64(),
                "slave/cpus_total": st.cfg.resources.get("cpus").cloned().unwrap_or(json!(0.0)),
                "slave/mem_total": st.cfg.resources.get("mem").cloned().unwrap_or(json!(0.0)),
                "slave/disk_total": st.cfg.resources.get("disk").cloned().unwrap_or(json!(0.0)),
            }),
        ),
        _ => Response::text(404, "not found"),
    }
}

fn id_file(cfg: &AgentConfig) -> std::path::PathBuf {
    cfg.work_dir.join("standin").join("agent_id")
}

pub async fn run(cfg: AgentConfig) -> Result<(), String> {
    let idf = id_file(&cfg);
    if let Some(parent) = idf.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let id = std::fs::read_to_string(&idf)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let ip = match cfg.flags.get("advertise_ip").and_then(|s| s.parse().ok()) {
        Some(ip) => ip,
        None if !cfg.ip.is_unspecified() => cfg.ip,
        None => {
            let (h, p) = &cfg.master.servers[0];
            election::local_ip_towards(h, *p).unwrap_or(std::net::Ipv4Addr::LOCALHOST)
        }
    };
    let listener = http::bind(cfg.ip, cfg.port).await?;
    let zk_url = cfg.master.clone();
    let state: Shared = Arc::new(Mutex::new(AgentState {
        pid: format!("slave(1)@{ip}:{}", cfg.port),
        cfg,
        id,
        ip,
        start: Instant::now(),
        start_time: now_secs(),
        master: None,
        registered: false,
    }));
    {
        let s = state.clone();
        tokio::spawn(http::serve(listener, move |req| handle(s.clone(), req)));
    }
    tracing::info!(%ip, "agent stand-in up; looking for the leader in {}", zk_url.connect_string());
    let mut client: Option<zookeeper_client::Client> = None;
    let mut last_leader: Option<String> = None;
    let mut last_registration: Option<Instant> = None;
    loop {
        if client.as_ref().is_some_and(|c| c.state().is_terminated()) {
            client = None;
        }
        if client.is_none() {
            match election::connect(&zk_url, Duration::from_secs(10)).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::warn!("{e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
        }
        let leader = match client.as_ref() {
            Some(c) => election::contenders(c, &zk_url)
                .await
                .map(|c| c.leader().map(|(_, v)| v.clone())),
            None => Ok(None),
        };
        match leader {
            Err(e) => tracing::warn!("{e}"),
            Ok(None) => {
                if last_leader.take().is_some() {
                    tracing::warn!("no master in ZooKeeper");
                }
                let mut st = lock(&state);
                st.master = None;
                st.registered = false;
            }
            Ok(Some(info)) => {
                let pid = info["pid"].as_str().unwrap_or_default().to_string();
                let changed = last_leader.as_deref() != Some(pid.as_str());
                if changed {
                    tracing::info!(leader = pid, "new leading master detected");
                }
                let due = last_registration.is_none_or(|t| t.elapsed() >= REREGISTER_EVERY);
                if changed || due {
                    let body = lock(&state).registration().to_string();
                    let ok = match election::info_addr(&info) {
                        Some((h, p)) => register(&format!("{h}:{p}"), &body).await,
                        None => Err("leader's MasterInfo has no address".into()),
                    };
                    let mut st = lock(&state);
                    match ok {
                        Ok(id) => {
                            if st.id.as_deref() != Some(id.as_str()) {
                                tracing::info!(id, "registered with {pid}");
                                if let Err(e) = std::fs::write(&idf, &id) {
                                    tracing::warn!("cannot write {}: {e}", idf.display());
                                }
                                st.id = Some(id);
                            }
                            st.registered = true;
                            last_registration = Some(Instant::now());
                            last_leader = Some(pid);
                        }
                        Err(e) => {
                            tracing::warn!("registration with {pid} failed: {e}");
                            st.registered = false;
                        }
                    }
                    st.master = Some(info);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn register(addr: &str, body: &str) -> Result<String, String> {
    let (status, _, resp) = http::request(
        addr,
        "POST",
        "/standin/register",
        Some(body.as_bytes()),
        Duration::from_secs(5),
    )
    .await?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&resp)));
    }
    let v: Value = serde_json::from_slice(&resp).map_err(|e| e.to_string())?;
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no id in the answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags;

    #[test]
    fn state_shape() {
        let d = tempfile::tempdir().unwrap();
        let f: flags::Flags = [
            ("master", "zk://u:p@a:2181/mesos"),
            ("work_dir", d.path().to_str().unwrap()),
            ("hostname", "agent1"),
            ("attributes", "rack:r1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cfg = flags::agent_config(f, None).unwrap();
        let st = AgentState {
            pid: "slave(1)@10.0.0.21:5051".into(),
            cfg,
            id: Some("m-S0".into()),
            ip: "10.0.0.21".parse().unwrap(),
            start: Instant::now(),
            start_time: 1.0,
            master: Some(json!({"hostname": "master1"})),
            registered: true,
        };
        let s = st.state_json();
        assert_eq!(s["id"], "m-S0");
        assert_eq!(s["hostname"], "agent1");
        assert_eq!(s["master_hostname"], "master1");
        assert_eq!(s["attributes"]["rack"], "r1");
        assert_eq!(s["resources"]["ports"], "[31000-32000]");
        assert_eq!(s["flags"]["master"], "zk://u:********@a:2181/mesos");
        let r = st.registration();
        assert_eq!(r["ip"], "10.0.0.21");
        assert_eq!(r["port"], 5051);
    }
}
