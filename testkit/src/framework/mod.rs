//! TEST-ONLY: a small Mesos v1 scheduler (HTTP API) with a blocking API, for tests that prove a
//! real cluster runs work: subscribe (HTTP Basic auth, HTTPS verified against a CA, following a
//! non-leading master's 307 to the leader), launch one command task on an agent picked by host
//! name, wait for its status updates, kill, tear down.
//!
//! A background thread with its own single-threaded tokio runtime reads the event stream
//! (chunked HTTP/1.1 carrying RecordIO), records every event, acknowledges every update that has
//! a `uuid`, declines the offers no launch asked for, and sends the calls (one POST to
//! `/api/v1/scheduler` each, answered 202). The public methods block the calling thread; they
//! may be called from any thread, also from inside an async runtime (they never start one).
//! Reconnection is not supported: when the stream ends, every later wait fails.
//!
//! A redirect names the leader by its `--hostname` (`Location: //master2:5050/api/v1/scheduler`,
//! or the IP with `--hostname_lookup=false`): the name is resolved by the system resolver and
//! the leader's certificate is checked against the resolved address (lab certificates carry IP
//! SANs). When it does not resolve, the next listed master is tried.

pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::http::{self, Endpoint, Head, Io};
pub use wire::{TaskStatus, TERMINAL};

const PATH: &str = "/api/v1/scheduler";
/// Declined offers come back after this (a launch also REVIVEs, clearing the filter).
const REFUSE_SECONDS: f64 = 5.0;
const MAX_REDIRECTS: usize = 4;

/// How to reach and authenticate with the masters.
#[derive(Clone)]
pub struct Options {
    /// `ip:port` of each master, tried in order; a non-leading master redirects to the leader.
    pub masters: Vec<String>,
    /// HTTPS, verifying the masters against this CA (PEM). IP addresses are checked against the
    /// certificate's IP SANs. `None`: plain HTTP.
    pub tls: Option<PathBuf>,
    /// HTTP Basic credentials (`--http_framework_authenticators=basic`); also the framework's
    /// principal.
    pub principal: String,
    pub secret: String,
    pub name: String,
    /// The user tasks run as on the agent.
    pub user: String,
    pub role: String,
    pub failover_timeout: Duration,
    /// Ask agents to checkpoint the tasks (they then survive an agent restart).
    pub checkpoint: bool,
    /// Upper bound on connecting, subscribing and on each call.
    pub timeout: Duration,
    /// Upper bound on waiting for a fitting offer in [`Framework::launch`].
    pub offer_timeout: Duration,
}

impl Options {
    pub fn new(masters: Vec<String>, principal: &str, secret: &str) -> Options {
        Options {
            masters,
            tls: None,
            principal: principal.into(),
            secret: secret.into(),
            name: "provisioner-testframework".into(),
            user: "root".into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(60),
            checkpoint: false,
            timeout: Duration::from_secs(30),
            offer_timeout: Duration::from_secs(60),
        }
    }

    fn auth_header(&self) -> String {
        let raw = format!("{}:{}", self.principal, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The secret is never printed.
impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("masters", &self.masters)
            .field("tls", &self.tls)
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("role", &self.role)
            .field("failover_timeout", &self.failover_timeout)
            .finish_non_exhaustive()
    }
}

/// A task this framework launched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId(pub String);

impl TaskId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Pending {
    task_id: String,
    hostname: Option<String>,
    command: String,
    cpus: f64,
    mem: f64,
    /// An offer was accepted for it; the ACCEPT call is under way.
    taken: bool,
    /// The agent id (JSON) once the ACCEPT was answered, or why it failed.
    result: Option<Result<Value, String>>,
}

#[derive(Default)]
struct State {
    events: Vec<Value>,
    statuses: Vec<TaskStatus>,
    pending: Vec<Pending>,
    /// task id → agent id (JSON) of launched tasks.
    agents: Vec<(String, Value)>,
    /// Why the event stream ended.
    closed: Option<String>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn note(&self, v: Value) {
        self.lock().events.push(v);
        self.changed.notify_all();
    }
}

/// Sends calls for the stream: the leader, the stream id, the credentials.
struct Conn {
    ep: Endpoint,
    auth: String,
    stream_id: String,
    timeout: Duration,
}

impl Conn {
    async fn call(&self, body: &Value) -> Result<(), String> {
        let ty = body["type"].as_str().unwrap_or("call").to_string();
        let text = body.to_string();
        let (status, _, resp) = http::request_to(
            &self.ep,
            "POST",
            PATH,
            &[
                ("Authorization", &self.auth),
                ("Mesos-Stream-Id", &self.stream_id),
                ("Accept", "application/json"),
            ],
            Some(text.as_bytes()),
            self.timeout,
        )
        .await
        .map_err(|e| format!("{ty}: {e}"))?;
        if status == 202 || status == 200 {
            Ok(())
        } else {
            Err(format!(
                "{ty}: HTTP {status}: {}",
                String::from_utf8_lossy(&resp).trim()
            ))
        }
    }
}

enum Cmd {
    Call(Value, std::sync::mpsc::Sender<Result<(), String>>),
}

struct Subscribed {
    framework_id: Value,
    leader: String,
}

/// A subscribed framework. Dropping it tears it down (best effort).
pub struct Framework {
    framework_id: Value,
    leader: String,
    shared: Arc<Shared>,
    cmds: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    timeout: Duration,
    offer_timeout: Duration,
    name: String,
    next: AtomicU64,
}

impl Framework {
    /// Connects to the first master that answers (following a redirect to the leader), sends
    /// SUBSCRIBE and waits for SUBSCRIBED. A 401 (bad principal or secret) fails at once.
    pub fn subscribe(opts: &Options) -> Result<Framework, String> {
        if opts.masters.is_empty() {
            return Err("no master given".into());
        }
        let tls = match &opts.tls {
            Some(ca) => Some(Arc::new(crate::tls::client_config(ca, None)?)),
            None => None,
        };
        let shared = Arc::new(Shared::default());
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (opts, shared) = (opts.clone(), shared.clone());
            std::thread::Builder::new()
                .name("mesos-framework".into())
                .spawn(move || background(opts, tls, shared, cmd_rx, ready_tx))
                .map_err(|e| format!("cannot start the framework thread: {e}"))?
        };
        // Connecting and subscribing is bounded by the per-master timeouts; this only guards
        // against a thread that died.
        let bound = opts.timeout * (opts.masters.len() as u32 * (MAX_REDIRECTS as u32 + 1) + 1);
        let sub = match ready_rx.recv_timeout(bound) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                drop(cmd_tx);
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                drop(cmd_tx);
                return Err("subscribing did not finish".into());
            }
        };
        Ok(Framework {
            framework_id: sub.framework_id,
            leader: sub.leader,
            shared,
            cmds: Mutex::new(Some(cmd_tx)),
            thread: Mutex::new(Some(thread)),
            timeout: opts.timeout,
            offer_timeout: opts.offer_timeout,
            name: opts.name.clone(),
            next: AtomicU64::new(1),
        })
    }

    /// The id the master gave this framework.
    pub fn framework_id(&self) -> &str {
        self.framework_id["value"].as_str().unwrap_or_default()
    }

    /// `host:port` of the master serving the event stream (the leader).
    pub fn leader(&self) -> &str {
        &self.leader
    }

    /// Sends one call through the background thread and waits for the master's answer.
    fn call(&self, body: Value) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let cmds = self.cmds.lock().unwrap_or_else(|p| p.into_inner());
            let Some(c) = cmds.as_ref() else {
                return Err("the framework was torn down".into());
            };
            c.send(Cmd::Call(body, tx))
                .map_err(|_| self.closed_reason())?;
        }
        rx.recv_timeout(self.timeout + Duration::from_secs(5))
            .map_err(|_| self.closed_reason())?
    }

    fn closed_reason(&self) -> String {
        let st = self.shared.lock();
        format!(
            "the event stream ended: {}",
            st.closed.as_deref().unwrap_or("unknown reason")
        )
    }

    /// Waits for an offer from the agent named `agent_hostname` (the offer's `hostname`; any
    /// agent when `None`) with `cpus` and `mem` (MB), and launches `command` there as a command
    /// task (`sh -c`). Other offers are declined.
    pub fn launch(
        &self,
        agent_hostname: Option<&str>,
        command: &str,
        cpus: f64,
        mem: f64,
    ) -> Result<TaskId, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let task_id = format!("{}-{n}-{nanos:08x}", self.name);
        self.shared.lock().pending.push(Pending {
            task_id: task_id.clone(),
            hostname: agent_hostname.map(str::to_string),
            command: command.to_string(),
            cpus,
            mem,
            taken: false,
            result: None,
        });
        // Offers declined earlier are filtered for a while: ask for them again.
        if let Err(e) = self.call(wire::revive(&self.framework_id)) {
            self.shared.lock().pending.retain(|p| p.task_id != task_id);
            return Err(e);
        }
        let deadline = Instant::now() + self.offer_timeout;
        let mut st = self.shared.lock();
        loop {
            let i = st.pending.iter().position(|p| p.task_id == task_id);
            let Some(i) = i else {
                return Err("internal: the launch disappeared".into());
            };
            if let Some(r) = st.pending[i].result.take() {
                st.pending.remove(i);
                return match r {
                    Ok(agent) => {
                        st.agents.push((task_id.clone(), agent));
                        Ok(TaskId(task_id))
                    }
                    Err(e) => Err(format!("launching {task_id}: {e}")),
                };
            }
            if let Some(c) = &st.closed {
                return Err(format!("the event stream ended: {c}"));
            }
            let now = Instant::now();
            // Once an offer is taken, the ACCEPT call gets its own time.
            let until = if st.pending[i].taken {
                deadline.max(now) + self.timeout
            } else {
                deadline
            };
            if now >= until {
                st.pending.remove(i);
                let hosts = offered_hosts(&st.events);
                return Err(format!(
                    "no offer from {} with cpus {cpus} and mem {mem} within {:?} (offers came from: {})",
                    agent_hostname.unwrap_or("any agent"),
                    self.offer_timeout,
                    if hosts.is_empty() { "none".into() } else { hosts.join(", ") }
                ));
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until an update for `task` satisfies `until` (updates received before the call
    /// count too, the first match wins) and returns it. Fails at `timeout` or when the stream
    /// ends.
    pub fn wait(
        &self,
        task: &TaskId,
        timeout: Duration,
        until: impl Fn(&TaskStatus) -> bool,
    ) -> Result<TaskStatus, String> {
        self.wait_on(task, timeout, |mine| mine.into_iter().find(|s| until(s)))
    }

    /// Waits for the update number `index` (from 0) of `task`, to follow the updates one by one.
    pub fn next_status(
        &self,
        task: &TaskId,
        index: usize,
        timeout: Duration,
    ) -> Result<TaskStatus, String> {
        self.wait_on(task, timeout, |mine| mine.into_iter().nth(index))
    }

    fn wait_on(
        &self,
        task: &TaskId,
        timeout: Duration,
        pick: impl Fn(Vec<&TaskStatus>) -> Option<&TaskStatus>,
    ) -> Result<TaskStatus, String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            let mine: Vec<&TaskStatus> =
                st.statuses.iter().filter(|s| s.task_id == task.0).collect();
            if let Some(s) = pick(mine.clone()) {
                return Ok(s.clone());
            }
            let last = mine
                .last()
                .map_or("no update".to_string(), |s| format!("last update: {s}"));
            if let Some(c) = &st.closed {
                return Err(format!("{task}: the event stream ended ({c}); {last}"));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("{task}: not reached within {timeout:?}; {last}"));
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for one of `states` (e.g. `["TASK_RUNNING"]`).
    pub fn wait_for_states(
        &self,
        task: &TaskId,
        states: &[&str],
        timeout: Duration,
    ) -> Result<TaskStatus, String> {
        self.wait(task, timeout, |s| states.contains(&s.state.as_str()))
    }

    /// Waits for a terminal state ([`TERMINAL`]), whichever it is.
    pub fn wait_terminal(&self, task: &TaskId, timeout: Duration) -> Result<TaskStatus, String> {
        self.wait(task, timeout, TaskStatus::is_terminal)
    }

    /// Every update received for `task`, in order.
    pub fn statuses(&self, task: &TaskId) -> Vec<TaskStatus> {
        let st = self.shared.lock();
        st.statuses
            .iter()
            .filter(|s| s.task_id == task.0)
            .cloned()
            .collect()
    }

    /// Asks the master to kill `task` (the updates follow through [`Framework::wait`]).
    pub fn kill(&self, task: &TaskId) -> Result<(), String> {
        let agent = {
            let st = self.shared.lock();
            st.agents
                .iter()
                .find(|(t, _)| *t == task.0)
                .map(|(_, a)| a.clone())
        };
        self.call(wire::kill(&self.framework_id, &task.0, agent.as_ref()))
    }

    /// TEARDOWN: the master kills the framework's tasks and forgets it. Then the stream is
    /// closed. Later calls fail; calling it again is a no-op.
    pub fn teardown(&self) -> Result<(), String> {
        let open = self
            .cmds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let res = if open {
            self.call(wire::teardown(&self.framework_id))
        } else {
            Ok(())
        };
        self.cmds.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        res
    }

    /// Every event received (and a `{"client_error": ...}` for each call that failed in the
    /// background), in order.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// [`Framework::events`], one JSON per line, for a failing test to print.
    pub fn events_text(&self) -> String {
        self.events()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Framework {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

fn offered_hosts(events: &[Value]) -> Vec<String> {
    let mut hosts: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "OFFERS")
        .flat_map(|e| {
            e["offers"]["offers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|o| o["hostname"].as_str().map(str::to_string))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The framework thread: subscribe, then run the event loop until the stream ends or the
/// framework closes it.
fn background(
    opts: Options,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    shared: Arc<Shared>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    ready: std::sync::mpsc::Sender<Result<Subscribed, String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start a runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let auth = opts.auth_header();
        let info = wire::FrameworkInfo {
            name: opts.name.clone(),
            user: opts.user.clone(),
            principal: opts.principal.clone(),
            role: opts.role.clone(),
            failover_timeout_secs: opts.failover_timeout.as_secs_f64(),
            checkpoint: opts.checkpoint,
        };
        let body = wire::subscribe(&info).to_string();
        match open_stream(&opts, tls, &auth, &body).await {
            Err(e) => {
                let _ = ready.send(Err(e));
            }
            Ok((ep, io, head, rest)) => {
                let stream_id = head.header("Mesos-Stream-Id").unwrap_or_default();
                let conn = Arc::new(Conn {
                    ep,
                    auth,
                    stream_id: stream_id.to_string(),
                    timeout: opts.timeout,
                });
                event_loop(io, &head, rest, conn, shared, cmds, ready).await;
            }
        }
    });
}

/// POSTs SUBSCRIBE to each master in turn, following redirects, until one answers 200.
async fn open_stream(
    opts: &Options,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    auth: &str,
    body: &str,
) -> Result<(Endpoint, Box<dyn Io>, Head, Vec<u8>), String> {
    let mut errors = Vec::new();
    for m in &opts.masters {
        let (host, port) = http::split_host_port(m)?;
        let mut ep = Endpoint {
            host,
            port,
            tls: tls.clone(),
        };
        let mut path = PATH.to_string();
        for _hop in 0..=MAX_REDIRECTS {
            let attempt = async {
                let mut io = http::connect(&ep).await?;
                http::write_request(
                    &mut io,
                    &ep,
                    "POST",
                    &path,
                    &[
                        ("Authorization", auth),
                        ("Content-Type", "application/json"),
                        ("Accept", "application/json"),
                    ],
                    body.as_bytes(),
                )
                .await?;
                let (head, rest) = http::read_head(&mut io).await?;
                Ok::<_, String>((io, head, rest))
            };
            let (mut io, head, rest) = match tokio::time::timeout(opts.timeout, attempt).await {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    errors.push(format!("{}: {e}", ep.authority()));
                    break;
                }
                Err(_) => {
                    errors.push(format!(
                        "{}: no answer within {:?}",
                        ep.authority(),
                        opts.timeout
                    ));
                    break;
                }
            };
            match head.status {
                200 => return Ok((ep, io, head, rest)),
                301 | 302 | 303 | 307 | 308 => {
                    // The leader by its --hostname: if that does not resolve here, the next
                    // listed master (one of them leads) is tried instead.
                    let loc = head.header("Location").unwrap_or_default().to_string();
                    let next = http::resolve_location(&loc, (&ep.host, ep.port), ep.tls.is_some());
                    let next = match next {
                        Ok((host, port, p)) => Endpoint {
                            host,
                            port,
                            tls: tls.clone(),
                        }
                        .resolved()
                        .await
                        .map(|e| (e, p)),
                        Err(e) => Err(e),
                    };
                    let (next, new_path) = match next {
                        Ok(x) => x,
                        Err(e) => {
                            errors.push(format!("{}: redirect to '{loc}': {e}", ep.authority()));
                            break;
                        }
                    };
                    ep = next;
                    // A bare `//leader:port` means the same request there.
                    if new_path != "/" {
                        path = new_path;
                    }
                }
                status => {
                    let body = tokio::time::timeout(
                        Duration::from_secs(5),
                        http::read_body(&mut io, &head, rest),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                    let body = String::from_utf8_lossy(&body).trim().to_string();
                    if status == 401 || status == 403 {
                        return Err(format!(
                            "master {} refused principal '{}': HTTP {status} {}{}",
                            ep.authority(),
                            opts.principal,
                            if status == 401 {
                                "Unauthorized (wrong principal or secret?)"
                            } else {
                                "Forbidden"
                            },
                            if body.is_empty() {
                                String::new()
                            } else {
                                format!(": {body}")
                            }
                        ));
                    }
                    errors.push(format!(
                        "{}: SUBSCRIBE: HTTP {status}: {body}",
                        ep.authority()
                    ));
                    break;
                }
            }
        }
    }
    Err(format!("cannot subscribe: {}", errors.join("; ")))
}

async fn event_loop(
    mut io: Box<dyn Io>,
    head: &Head,
    mut input: Vec<u8>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    ready: std::sync::mpsc::Sender<Result<Subscribed, String>>,
) {
    let mut chunked = head.chunked().then(http::ChunkedDecoder::new);
    let mut records = wire::RecordIo::new();
    let mut ready = Some(ready);
    let mut fid: Option<Value> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let end: String = 'stream: loop {
        if !input.is_empty() {
            let data = match &mut chunked {
                Some(d) => {
                    let mut out = Vec::new();
                    if let Err(e) = d.feed(&input, &mut out) {
                        break format!("event stream: {e}");
                    }
                    out
                }
                None => std::mem::take(&mut input),
            };
            input.clear();
            let recs = match records.feed(&data) {
                Ok(r) => r,
                Err(e) => break format!("event stream: {e}"),
            };
            for rec in recs {
                let ev: Value = match serde_json::from_slice(&rec) {
                    Ok(v) => v,
                    Err(e) => break 'stream format!("event stream: an event is not JSON: {e}"),
                };
                shared.note(ev.clone());
                match ev["type"].as_str().unwrap_or_default() {
                    "SUBSCRIBED" => {
                        let id = ev["subscribed"]["framework_id"].clone();
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(Subscribed {
                                framework_id: id.clone(),
                                leader: conn.ep.authority(),
                            }));
                        }
                        fid = Some(id);
                    }
                    "ERROR" => {
                        break 'stream format!(
                            "ERROR event: {}",
                            ev["error"]["message"].as_str().unwrap_or_default()
                        )
                    }
                    "OFFERS" => {
                        if let Some(fid) = &fid {
                            offers(&ev, fid, &conn, &shared);
                        }
                    }
                    "UPDATE" => {
                        let status = &ev["update"]["status"];
                        if let Some(s) = TaskStatus::from_json(status) {
                            shared.lock().statuses.push(s);
                            shared.changed.notify_all();
                        }
                        if let Some(ack) = fid.as_ref().and_then(|f| wire::acknowledge(f, status)) {
                            spawn_call(&conn, &shared, ack);
                        }
                    }
                    _ => {}
                }
            }
            if chunked.as_ref().is_some_and(http::ChunkedDecoder::is_done) {
                break "the master ended the event stream".into();
            }
        }
        tokio::select! {
            n = io.read(&mut buf) => match n {
                Ok(0) => break "the master closed the event stream".into(),
                Ok(n) => input = buf[..n].to_vec(),
                Err(e) => break format!("event stream: {e}"),
            },
            c = cmds.recv() => match c {
                None => break "closed by the framework".into(),
                Some(Cmd::Call(body, reply)) => {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(conn.call(&body).await);
                    });
                }
            },
        }
    };
    shared.lock().closed.get_or_insert(end.clone());
    shared.changed.notify_all();
    if let Some(r) = ready.take() {
        let _ = r.send(Err(format!("subscribing: {end}")));
    }
    // Calls still get the master's answer (the master ends the stream when it processes a
    // TEARDOWN, possibly before its 202 arrives), until the framework closes the channel.
    while let Some(Cmd::Call(body, reply)) = cmds.recv().await {
        let conn = conn.clone();
        tokio::spawn(async move {
            let _ = reply.send(conn.call(&body).await);
        });
    }
}

/// A call nobody waits for (ACKNOWLEDGE, DECLINE): a failure is recorded with the events.
fn spawn_call(conn: &Arc<Conn>, shared: &Arc<Shared>, body: Value) {
    let (conn, shared) = (conn.clone(), shared.clone());
    tokio::spawn(async move {
        if let Err(e) = conn.call(&body).await {
            shared.note(json!({"client_error": e}));
        }
    });
}

/// Gives each offer to the first waiting launch it fits; declines the rest.
fn offers(ev: &Value, fid: &Value, conn: &Arc<Conn>, shared: &Arc<Shared>) {
    let mut declined = Vec::new();
    let mut accepts = Vec::new();
    {
        let mut st = shared.lock();
        for o in ev["offers"]["offers"].as_array().into_iter().flatten() {
            let fit = st
                .pending
                .iter_mut()
                .find(|p| !p.taken && wire::offer_fits(o, p.hostname.as_deref(), p.cpus, p.mem));
            match fit {
                Some(p) => {
                    p.taken = true;
                    let task = wire::task_info(
                        &p.task_id,
                        &p.task_id,
                        &o["agent_id"],
                        &p.command,
                        p.cpus,
                        p.mem,
                    );
                    accepts.push((
                        p.task_id.clone(),
                        o["agent_id"].clone(),
                        wire::accept_launch(fid, &o["id"], task),
                    ));
                }
                None => declined.push(o["id"].clone()),
            }
        }
    }
    if !declined.is_empty() {
        spawn_call(conn, shared, wire::decline(fid, &declined, REFUSE_SECONDS));
    }
    for (task_id, agent, body) in accepts {
        let (conn, shared) = (conn.clone(), shared.clone());
        tokio::spawn(async move {
            let r = conn.call(&body).await.map(|()| agent);
            if let Some(p) = shared
                .lock()
                .pending
                .iter_mut()
                .find(|p| p.task_id == task_id)
            {
                p.result = Some(r);
            }
            shared.changed.notify_all();
        });
    }
}
