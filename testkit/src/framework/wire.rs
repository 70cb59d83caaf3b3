//! The pure parts of the v1 scheduler API client: RecordIO framing of the event stream, the
//! JSON calls, offer matching and task statuses. No I/O here.

use serde_json::{json, Value};

/// Splits a RecordIO stream (`<decimal length>\n<that many bytes>`, repeated) fed in pieces of
/// any size into records.
#[derive(Debug, Default)]
pub struct RecordIo {
    buf: Vec<u8>,
    /// The length of the record being read, once its header line is complete.
    want: Option<usize>,
}

/// Larger records than this are refused (a state of the whole cluster is far smaller).
pub const MAX_RECORD: usize = 64 << 20;

impl RecordIo {
    pub fn new() -> RecordIo {
        RecordIo::default()
    }

    /// The records completed by `input`, in order.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::new();
        loop {
            let want = match self.want {
                Some(n) => n,
                None => {
                    let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
                        if self.buf.len() > 20 {
                            return Err("RecordIO length line too long".into());
                        }
                        return Ok(out);
                    };
                    let line = String::from_utf8_lossy(&self.buf[..nl]).to_string();
                    let n = line
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| format!("bad RecordIO length '{line}'"))?;
                    if n > MAX_RECORD {
                        return Err(format!("RecordIO record of {n} bytes is too large"));
                    }
                    self.buf.drain(..=nl);
                    self.want = Some(n);
                    n
                }
            };
            if self.buf.len() < want {
                return Ok(out);
            }
            out.push(self.buf.drain(..want).collect());
            self.want = None;
        }
    }

    /// Bytes of an unfinished record are pending.
    pub fn pending(&self) -> bool {
        self.want.is_some() || !self.buf.is_empty()
    }
}

/// One record in RecordIO framing (for tests and fakes).
pub fn record(json: &Value) -> Vec<u8> {
    let body = json.to_string();
    let mut out = format!("{}\n", body.len()).into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// What the framework says about itself in SUBSCRIBE.
#[derive(Debug, Clone)]
pub struct FrameworkInfo {
    pub name: String,
    pub user: String,
    pub principal: String,
    pub role: String,
    pub failover_timeout_secs: f64,
    /// The agents checkpoint this framework's tasks: they survive an agent restart.
    pub checkpoint: bool,
}

pub fn subscribe(info: &FrameworkInfo) -> Value {
    json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": info.user,
        "name": info.name,
        "principal": info.principal,
        "roles": [info.role],
        "failover_timeout": info.failover_timeout_secs,
        "checkpoint": info.checkpoint,
        "capabilities": [{"type": "MULTI_ROLE"}],
    }}})
}

/// A command task (`shell=true`: `sh -c COMMAND`) with `cpus` and `mem` (MB).
pub fn task_info(
    name: &str,
    task_id: &str,
    agent_id: &Value,
    command: &str,
    cpus: f64,
    mem: f64,
) -> Value {
    json!({
        "name": name,
        "task_id": {"value": task_id},
        "agent_id": agent_id,
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
        ],
        "command": {"value": command, "shell": true},
    })
}

/// ACCEPT of one offer with a LAUNCH of `task`.
pub fn accept_launch(framework_id: &Value, offer_id: &Value, task: Value) -> Value {
    json!({"type": "ACCEPT", "framework_id": framework_id, "accept": {
        "offer_ids": [offer_id],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
    }})
}

/// DECLINE of offers; the master holds these resources back for `refuse_seconds`.
pub fn decline(framework_id: &Value, offer_ids: &[Value], refuse_seconds: f64) -> Value {
    json!({"type": "DECLINE", "framework_id": framework_id, "decline": {
        "offer_ids": offer_ids,
        "filters": {"refuse_seconds": refuse_seconds},
    }})
}

pub fn acknowledge(framework_id: &Value, status: &Value) -> Option<Value> {
    let uuid = status.get("uuid")?;
    Some(
        json!({"type": "ACKNOWLEDGE", "framework_id": framework_id, "acknowledge": {
            "agent_id": status.get("agent_id")?,
            "task_id": status.get("task_id")?,
            "uuid": uuid,
        }}),
    )
}

pub fn kill(framework_id: &Value, task_id: &str, agent_id: Option<&Value>) -> Value {
    let mut kill = json!({"task_id": {"value": task_id}});
    if let Some(a) = agent_id {
        kill["agent_id"] = a.clone();
    }
    json!({"type": "KILL", "framework_id": framework_id, "kill": kill})
}

pub fn revive(framework_id: &Value) -> Value {
    json!({"type": "REVIVE", "framework_id": framework_id})
}

pub fn teardown(framework_id: &Value) -> Value {
    json!({"type": "TEARDOWN", "framework_id": framework_id})
}

/// The sum of an offer's unreserved-or-not scalar resource `name`.
pub fn scalar(offer: &Value, name: &str) -> f64 {
    offer["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"] == name)
        .filter_map(|r| r.pointer("/scalar/value").and_then(Value::as_f64))
        .sum()
}

/// Whether `offer` comes from `hostname` (any agent when `None`) and has `cpus` and `mem`.
pub fn offer_fits(offer: &Value, hostname: Option<&str>, cpus: f64, mem: f64) -> bool {
    let host_ok = hostname.is_none_or(|h| {
        offer["hostname"]
            .as_str()
            .is_some_and(|o| o.eq_ignore_ascii_case(h))
    });
    host_ok && scalar(offer, "cpus") >= cpus && scalar(offer, "mem") >= mem
}

pub const TERMINAL: &[&str] = &[
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

/// One task status update, as the scheduler received it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: String,
    pub agent_id: Option<String>,
    pub message: Option<String>,
    /// `SOURCE_MASTER`, `SOURCE_AGENT` or `SOURCE_EXECUTOR`.
    pub source: Option<String>,
    pub reason: Option<String>,
    /// The whole `TaskStatus` JSON.
    pub raw: Value,
}

impl TaskStatus {
    pub fn from_json(s: &Value) -> Option<TaskStatus> {
        let text = |p: &str| s.pointer(p).and_then(Value::as_str).map(str::to_string);
        Some(TaskStatus {
            task_id: text("/task_id/value")?,
            state: text("/state")?,
            agent_id: text("/agent_id/value"),
            message: text("/message"),
            source: text("/source"),
            reason: text("/reason"),
            raw: s.clone(),
        })
    }

    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.state.as_str())
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.task_id, self.state)?;
        for (k, v) in [
            ("source", &self.source),
            ("reason", &self.reason),
            ("agent", &self.agent_id),
        ] {
            if let Some(v) = v {
                write!(f, " {k}={v}")?;
            }
        }
        if let Some(m) = &self.message {
            write!(f, " message={m:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordio_across_any_boundary() {
        let events = [
            json!({"type": "SUBSCRIBED", "subscribed": {"framework_id": {"value": "f-1"}, "heartbeat_interval_seconds": 15.0}}),
            json!({"type": "HEARTBEAT"}),
            json!({"type": "UPDATE", "update": {"status": {"message": "ünïcode\n{}"}}}),
        ];
        let wire: Vec<u8> = events.iter().flat_map(record).collect();
        for step in 1..=wire.len() {
            let mut r = RecordIo::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                got.extend(r.feed(piece).unwrap());
            }
            let got: Vec<Value> = got
                .iter()
                .map(|b| serde_json::from_slice(b).unwrap())
                .collect();
            assert_eq!(got, events, "step {step}");
            assert!(!r.pending());
        }
        // A fixture as Mesos writes it (length counts bytes, not characters).
        let mut r = RecordIo::new();
        assert_eq!(r.feed(b"20\n{\"type\":\"HEARTBEAT\"}2").unwrap().len(), 1);
        assert!(r.pending());
        assert_eq!(r.feed(b"\n{}").unwrap(), vec![b"{}".to_vec()]);
    }

    #[test]
    fn recordio_garbage() {
        assert!(RecordIo::new().feed(b"x\n{}").is_err());
        assert!(RecordIo::new().feed(&[b'1'; 30]).is_err());
        assert!(RecordIo::new().feed(b"99999999999\n").is_err());
    }

    fn offer() -> Value {
        // Shape of a real 1.11 offer (trimmed).
        json!({
            "id": {"value": "o-1"}, "framework_id": {"value": "f-1"},
            "agent_id": {"value": "a-S0"}, "hostname": "Agent1",
            "allocation_info": {"role": "*"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*", "allocation_info": {"role": "*"}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 1000.0}, "role": "*", "allocation_info": {"role": "*"}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 24.0}, "role": "*", "allocation_info": {"role": "*"}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 32000}]}}
            ]
        })
    }

    #[test]
    fn offers_match_by_host_and_size() {
        let o = offer();
        assert_eq!(scalar(&o, "mem"), 1024.0);
        assert!(offer_fits(&o, None, 0.1, 32.0));
        assert!(offer_fits(&o, Some("agent1"), 2.0, 1024.0));
        assert!(!offer_fits(&o, Some("agent2"), 0.1, 32.0));
        assert!(!offer_fits(&o, None, 2.5, 32.0));
        assert!(!offer_fits(&o, None, 0.1, 2048.0));
    }

    #[test]
    fn calls() {
        let fid = json!({"value": "f-1"});
        let info = FrameworkInfo {
            name: "t".into(),
            user: "root".into(),
            principal: "fw".into(),
            role: "*".into(),
            failover_timeout_secs: 60.0,
            checkpoint: false,
        };
        let s = subscribe(&info);
        assert_eq!(s["subscribe"]["framework_info"]["roles"], json!(["*"]));
        assert_eq!(s["subscribe"]["framework_info"]["principal"], "fw");
        let o = offer();
        let t = task_info("n", "t-1", &o["agent_id"], "echo hi", 0.1, 32.0);
        let a = accept_launch(&fid, &o["id"], t);
        assert_eq!(a["accept"]["offer_ids"][0]["value"], "o-1");
        let op = &a["accept"]["operations"][0];
        assert_eq!(op["type"], "LAUNCH");
        let task = &op["launch"]["task_infos"][0];
        assert_eq!(task["command"], json!({"value": "echo hi", "shell": true}));
        assert_eq!(task["agent_id"]["value"], "a-S0");
        assert_eq!(task["resources"][1]["scalar"]["value"], 32.0);
        let d = decline(&fid, &[o["id"].clone()], 5.0);
        assert_eq!(d["decline"]["filters"]["refuse_seconds"], 5.0);
        let st = json!({"task_id": {"value": "t-1"}, "agent_id": {"value": "a-S0"}, "state": "TASK_RUNNING", "uuid": "AAEC"});
        let ack = acknowledge(&fid, &st).unwrap();
        assert_eq!(ack["acknowledge"]["uuid"], "AAEC");
        let mut no_uuid = st.clone();
        no_uuid.as_object_mut().unwrap().remove("uuid");
        assert!(acknowledge(&fid, &no_uuid).is_none());
        assert_eq!(
            kill(&fid, "t-1", Some(&o["agent_id"]))["kill"]["agent_id"]["value"],
            "a-S0"
        );
        assert!(kill(&fid, "t-1", None)["kill"].get("agent_id").is_none());
        assert_eq!(teardown(&fid)["type"], "TEARDOWN");
        assert_eq!(revive(&fid)["type"], "REVIVE");
    }

    #[test]
    fn task_status() {
        let s = TaskStatus::from_json(&json!({
            "task_id": {"value": "t-1"}, "state": "TASK_FAILED", "agent_id": {"value": "a"},
            "source": "SOURCE_EXECUTOR", "reason": "REASON_COMMAND_EXECUTOR_FAILED",
            "message": "Command exited with status 3"
        }))
        .unwrap();
        assert!(s.is_terminal());
        assert_eq!(
            s.to_string(),
            "t-1 TASK_FAILED source=SOURCE_EXECUTOR reason=REASON_COMMAND_EXECUTOR_FAILED agent=a message=\"Command exited with status 3\""
        );
        assert!(TaskStatus::from_json(&json!({"state": "TASK_RUNNING"})).is_none());
    }
}
