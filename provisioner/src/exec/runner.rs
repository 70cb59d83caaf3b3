//! The host runner: what one plan node does on one host.
//!
//! For a task: build the host's variables in Ansible's precedence order, evaluate `when`,
//! expand the loop, then per item: template the arguments, ask the module which facts it needs,
//! answer all its probes in one remote round trip, let the module plan, and only in apply mode
//! send its actions. Then `changed_when`/`failed_when`/`until`, `register`, `notify`.
//! Engine modules (`debug`, `set_fact`, `fail`, `assert`, `meta`) never touch the host.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::exec::events::{DiffText, EventSink, RunEvent, TaskReport, TaskStatus};
use crate::exec::redact::Redactor;
use crate::exec::walker::{StepOutcome, StepRunner, StopReason};
use crate::exec::Mode;
use crate::facts::{self, Facts};
use crate::model::inventory::Inventory;
use crate::model::play::{tags_selected, Play, Task, TaskKind};
use crate::model::vars::{VarLevel, VarStack};
use crate::modules::{self, Action, ActionOutput, ModuleResult, Planned};
use crate::plan::{Node, Step};
use crate::template::{self, HostVarsSource, Templar, Vars};
use crate::transport::{
    Become, BoxFuture, ConnectTarget, Connection, Connector, ExecOutput, ExecRequest,
    TransportError,
};

/// How a run behaves.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub mode: Mode,
    pub diff: bool,
    pub verbose: bool,
    pub extra_vars: Vars,
    /// The longest one remote command may take.
    pub command_timeout: Duration,
    /// The directory of the playbook (for `files/`, `templates/` and `playbook_dir`).
    pub playbook_dir: PathBuf,
    /// `--tags` and `--skip-tags`.
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    /// Stack runs: variables at role-defaults precedence (`bundle`), over the roles' own
    /// defaults. Empty for a playbook run.
    pub stack_vars: Vars,
}

/// Per-host state that lives across steps.
#[derive(Default)]
struct HostState {
    facts: Vars,
    /// `set_fact` and registered results (precedence level 19).
    set_facts: Vars,
    /// Handler names (or `listen` topics) notified and not yet run, per play.
    notified: HashMap<usize, Vec<String>>,
    /// Probe answers gathered up front for a play's tasks, by become user. Valid until the
    /// first action changes the host; then every task probes live again.
    probe_cache: HashMap<(Option<String>, facts::Probe), facts::ProbeResult>,
    /// Plays whose probes were gathered up front on this host.
    prefetched: BTreeSet<usize>,
    /// Probed paths that are, or lie under, a symlink (from every probe answer of the run).
    via_link: HashSet<String>,
}

/// Ansible's `MAX_FILE_SIZE_FOR_DIFF`: larger contents are not diffed.
const MAX_DIFF_BYTES: usize = 104_448;

/// One side of a diff as reported: binary (a NUL in its first 8 KiB, as Ansible checks) or
/// oversized contents are replaced by a one-line note, as Ansible skips those diffs.
fn diff_side(text: &str) -> String {
    let head = &text.as_bytes()[..text.len().min(8192)];
    if head.contains(&0) {
        "[diff skipped: binary content]\n".to_string()
    } else if text.len() > MAX_DIFF_BYTES {
        format!(
            "[diff skipped: {} bytes, more than {MAX_DIFF_BYTES}]\n",
            text.len()
        )
    } else {
        text.to_string()
    }
}

/// What the actions of one module call can change, to keep the probe answers gathered before
/// it that they cannot affect: `Some(paths)` when they only write at, under or above these
/// absolute paths (file writes, and commands of a module [`modules::Module::confined_to`] its
/// paths), `None` when anything may change (commands, packages, services, ...).
fn touched_paths(
    m: &dyn modules::Module,
    args: &modules::Args,
    actions: &[Action],
) -> Option<Vec<String>> {
    let mut paths: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteFile { path, .. } => Some(path.clone()),
            Action::Exec { .. } => None,
        })
        .collect();
    if paths.len() != actions.len() {
        paths.extend(m.confined_to(args)?);
    }
    paths.iter().all(|p| p.starts_with('/')).then(|| {
        paths
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect()
    })
}

/// Whether a probe answer survives a change confined to `touched` (see [`touched_paths`]):
/// stat/read of an unrelated path that is not, and is not under, a symlink (`via_link`: what
/// it shows may change with any other path) and package state do; commands and unit state do
/// not (a unit file may have been written).
fn still_valid(probe: &facts::Probe, touched: &[String], via_link: &HashSet<String>) -> bool {
    let related = |p: &str| {
        let p = p.trim_end_matches('/');
        touched.iter().any(|t| {
            p == t
                || p.strip_prefix(t.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                || t.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
                || p.is_empty()
                || t.is_empty()
        })
    };
    match probe.path() {
        Some(path) => !related(path) && !via_link.contains(path),
        None => matches!(probe, facts::Probe::Dpkg { .. }),
    }
}

/// The outcome of one module call on one host.
struct CallResult {
    result: Map<String, Value>,
    status: TaskStatus,
    diffs: Vec<DiffText>,
}

/// The shared outcome of a `run_once` task: the first host runs it, the others take its result.
type RunOnceCell = Arc<tokio::sync::OnceCell<(StepOutcome, Vars)>>;

/// Encoded control-node files by (path, size, modification time).
type LocalFiles = HashMap<(PathBuf, u64, Option<std::time::SystemTime>), Arc<str>>;

/// A host's session, opened on first use.
type ConnCell = Arc<tokio::sync::OnceCell<Arc<dyn Connection>>>;

/// A run_once task of one batch: (play, task, batch).
type RunOnceKey = (usize, usize, usize);

/// Where a result is reported: which host, play and task, and whether it is a handler.
#[derive(Clone, Copy)]
struct At<'a> {
    host: &'a str,
    play: usize,
    task: &'a Task,
    handler: bool,
    /// When the task (or the loop item) began on this host.
    started: std::time::Instant,
}

/// Runs plan nodes. Shared by every host task of a run.
pub struct Runner {
    plays: Vec<Play>,
    play_hosts: Vec<Vec<String>>,
    /// Each play's `serial` batches (fixed for the run; computed once, read by every task).
    play_batches: Vec<Vec<Vec<String>>>,
    inventory: Arc<Inventory>,
    connector: Arc<dyn Connector>,
    sink: Arc<dyn EventSink>,
    cfg: RunConfig,
    templar: Templar,
    hosts: Arc<Mutex<HashMap<String, HostState>>>,
    /// Each host's session, opened once: one cell per host, so one host's handshake never
    /// waits on another's (the map's lock is held only to find the cell).
    conns: Mutex<HashMap<String, ConnCell>>,
    run_once: Mutex<HashMap<RunOnceKey, RunOnceCell>>,
    /// Hosts the walker stopped (failed, unreachable, aborted).
    stopped: Mutex<BTreeSet<String>>,
    /// Control-node files already read and encoded in this run.
    local_files: Arc<Mutex<LocalFiles>>,
    /// sha1 of control-node files already read in this run (same key as `local_files`).
    local_digests: Arc<Mutex<LocalFiles>>,
    redactor: Arc<Redactor>,
    /// Tasks inside a block that has a `rescue` (at any depth): their failures are rescued.
    rescuable: HashSet<crate::diag::Loc>,
    /// Task titles with their templates rendered, by (play, task location).
    titles: Mutex<HashMap<(usize, crate::diag::Loc), String>>,
    /// How many plays have had their `PlayStarted` (in order, as each begins to run).
    announced: Mutex<usize>,
    /// `meta` tasks whose header was shown, by (play, task location, serial batch).
    meta_shown: Mutex<HashSet<(usize, crate::diag::Loc, usize)>>,
}

/// Serves `hostvars`: each host's inventory vars, facts and registered results.
struct HostVarsView {
    inventory: Arc<Inventory>,
    hosts: Arc<Mutex<HashMap<String, HostState>>>,
}

impl HostVarsSource for HostVarsView {
    fn hosts(&self) -> Vec<String> {
        self.inventory
            .host_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    fn vars(&self, host: &str) -> Option<Arc<Vars>> {
        self.inventory.host(host)?;
        let mut stack = self.inventory.var_stack(host);
        if let Ok(states) = self.hosts.lock() {
            if let Some(s) = states.get(host) {
                stack.set(VarLevel::Facts, s.facts.clone());
                stack.set(VarLevel::SetFacts, s.set_facts.clone());
            }
        }
        let mut vars = stack.resolve();
        vars.extend(self.inventory.magic_vars(host));
        Some(Arc::new(vars))
    }
}

impl Runner {
    pub fn new(
        plays: Vec<Play>,
        play_hosts: Vec<Vec<String>>,
        inventory: Arc<Inventory>,
        connector: Arc<dyn Connector>,
        sink: Arc<dyn EventSink>,
        redactor: Arc<Redactor>,
        cfg: RunConfig,
    ) -> Self {
        let hosts: Arc<Mutex<HashMap<String, HostState>>> = Arc::default();
        let templar =
            Templar::new(cfg.playbook_dir.clone()).with_hostvars(Arc::new(HostVarsView {
                inventory: inventory.clone(),
                hosts: hosts.clone(),
            }));
        let mut rescuable = HashSet::new();
        fn mark(tasks: &[Task], inside: bool, out: &mut HashSet<crate::diag::Loc>) {
            for t in tasks {
                if inside {
                    out.insert(t.loc.clone());
                }
                if let TaskKind::Block {
                    block,
                    rescue,
                    always,
                } = &t.kind
                {
                    mark(block, inside || !rescue.is_empty(), out);
                    mark(rescue, inside, out);
                    mark(always, inside, out);
                }
            }
        }
        for p in &plays {
            mark(&p.tasks, false, &mut rescuable);
            mark(&p.handlers, false, &mut rescuable);
        }
        let play_batches = plays
            .iter()
            .zip(&play_hosts)
            .map(|(p, hs)| crate::plan::batches(hs, &p.serial))
            .collect();
        Runner {
            plays,
            play_hosts,
            play_batches,
            inventory,
            connector,
            sink,
            cfg,
            templar,
            hosts,
            conns: Mutex::new(HashMap::new()),
            run_once: Mutex::new(HashMap::new()),
            stopped: Mutex::new(BTreeSet::new()),
            local_files: Arc::default(),
            local_digests: Arc::default(),
            redactor,
            rescuable,
            titles: Mutex::new(HashMap::new()),
            announced: Mutex::new(0),
            meta_shown: Mutex::new(HashSet::new()),
        }
    }

    /// Emit `PlayStarted` for every play up to `play` not announced yet, in order: a play's
    /// header comes when it begins to run (as ansible-playbook prints it), and a play with no
    /// hosts is announced when the run reaches it.
    fn announce_through(&self, play: usize) {
        let Ok(mut next) = self.announced.lock() else {
            return;
        };
        while *next <= play && *next < self.plays.len() {
            self.emit(RunEvent::PlayStarted {
                play: *next,
                name: self.plays[*next].name.clone(),
                hosts: self.play_hosts[*next].clone(),
            });
            *next += 1;
        }
    }

    /// After the walk: announce the plays without hosts that follow the last play that ran
    /// (a play with hosts that never began, because the run stopped, stays unannounced).
    pub fn announce_trailing_empty_plays(&self) {
        let next = self.announced.lock().map(|n| *n).unwrap_or(usize::MAX);
        if let Some(last) = (next..self.play_hosts.len())
            .take_while(|&i| self.play_hosts[i].is_empty())
            .last()
        {
            self.announce_through(last);
        }
    }

    /// Serve the `password` and `provisioner_tls` lookups from `store`; every value handed
    /// out is censored from this run's events.
    pub fn with_secrets(mut self, store: Arc<crate::secrets::SecretStore>) -> Self {
        let provider = RunSecrets {
            store,
            redactor: self.redactor.clone(),
            sink: self.sink.clone(),
        };
        self.templar = self.templar.with_secrets(Arc::new(provider));
        self
    }

    /// The task's title as Ansible's linear strategy shows it: a name with `{{ }}` is rendered
    /// with the variables of the first host that reaches the task (then kept for the others),
    /// and left as written when it cannot be rendered. `vars`: the host's task variables when
    /// the caller has them already.
    fn title(&self, play_idx: usize, task: &Task, host: &str, vars: Option<&Vars>) -> String {
        let raw = task.display_name();
        if !raw.contains("{{") {
            return raw;
        }
        let key = (play_idx, task.loc.clone());
        if let Ok(t) = self.titles.lock() {
            if let Some(v) = t.get(&key) {
                return v.clone();
            }
        }
        let rendered = match vars {
            Some(v) => self.templar.render_string(&raw, v),
            None => self
                .templar
                .render_string(&raw, &self.task_vars(host, play_idx, Some(task))),
        };
        let title = rendered.unwrap_or(raw);
        if let Ok(mut t) = self.titles.lock() {
            t.entry(key).or_insert(title).clone()
        } else {
            title
        }
    }

    /// The `serial` batch of `play` that `host` belongs to: (its index, its hosts).
    fn batch_of(&self, play: usize, host: &str) -> Option<(usize, &[String])> {
        self.play_batches
            .get(play)?
            .iter()
            .enumerate()
            .find(|(_, b)| b.iter().any(|h| h == host))
            .map(|(i, b)| (i, b.as_slice()))
    }

    /// `sink` redacts (see `exec::redact`): every event goes through it.
    fn emit(&self, e: RunEvent) {
        self.sink.emit(e);
    }

    fn with_state<T>(&self, host: &str, f: impl FnOnce(&mut HostState) -> T) -> T {
        let mut guard = match self.hosts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(guard.entry(host.to_string()).or_default())
    }

    /// The variables a task sees on `host`, lowest precedence first.
    fn task_vars(&self, host: &str, play_idx: usize, task: Option<&Task>) -> Vars {
        let play = &self.plays[play_idx];
        let mut stack: VarStack = self.inventory.var_stack(host);
        let mut defaults = Vars::new();
        for (_, d) in &play.role_defaults {
            defaults.extend(d.clone());
        }
        defaults.extend(self.cfg.stack_vars.clone());
        stack.set(VarLevel::RoleDefaults, defaults);
        let (facts, set_facts) = self.with_state(host, |s| (s.facts.clone(), s.set_facts.clone()));
        stack.set(VarLevel::Facts, facts);
        stack.set(VarLevel::PlayVars, play.vars.clone());
        let mut role_vars = Vars::new();
        for (_, v) in &play.role_vars {
            role_vars.extend(v.clone());
        }
        stack.set(VarLevel::RoleVars, role_vars);
        if let Some(t) = task {
            stack.set(VarLevel::TaskVars, t.vars.clone());
        }
        stack.set(VarLevel::SetFacts, set_facts);
        stack.set(VarLevel::ExtraVars, self.cfg.extra_vars.clone());
        let mut vars = stack.resolve();
        vars.extend(self.inventory.magic_vars(host));
        // As Ansible: `ansible_play_hosts_all` is every host of the play; `ansible_play_hosts`
        // leaves out hosts that failed or became unreachable (in this play or an earlier one);
        // `ansible_play_batch` (and its deprecated alias `play_hosts`) is the live part of
        // this host's `serial` batch.
        let all = self
            .play_hosts
            .get(play_idx)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let stopped = self.stopped_hosts();
        let live = |hs: &[String]| {
            hs.iter()
                .filter(|h| !stopped.contains(*h))
                .cloned()
                .collect::<Vec<_>>()
        };
        let batch = self.batch_of(play_idx, host).map_or(&[][..], |(_, b)| b);
        vars.insert("ansible_play_hosts".into(), json!(live(all)));
        vars.insert("ansible_play_batch".into(), json!(live(batch)));
        vars.insert("play_hosts".into(), json!(live(batch)));
        vars.insert("ansible_play_hosts_all".into(), json!(all));
        vars.insert("ansible_play_name".into(), json!(play.name));
        vars.insert(
            "ansible_check_mode".into(),
            json!(self.cfg.mode == Mode::Check),
        );
        vars.insert("ansible_diff_mode".into(), json!(self.cfg.diff));
        vars.insert(
            "playbook_dir".into(),
            json!(self.cfg.playbook_dir.display().to_string()),
        );
        if let Some(r) = task.and_then(|t| t.role.as_ref()) {
            vars.insert("role_name".into(), json!(r.name));
            vars.insert("role_path".into(), json!(r.dir));
        }
        vars
    }

    fn become_for(
        &self,
        host: &str,
        play: &Play,
        task: Option<&Task>,
        vars: &Vars,
    ) -> Option<Become> {
        let inv_become = vars
            .get("ansible_become")
            .and_then(crate::model::inventory::ansible_bool);
        let on = task
            .and_then(|t| t.become_)
            .or(play.become_)
            .or(inv_become)
            .unwrap_or(false);
        if !on {
            return None;
        }
        let user = task
            .and_then(|t| t.become_user.clone())
            .or_else(|| play.become_user.clone())
            .or_else(|| {
                vars.get("ansible_become_user")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "root".to_string());
        let _ = host;
        Some(Become { user })
    }

    /// The host's session, opened on first use.
    async fn connection(&self, host: &str) -> Result<Arc<dyn Connection>, TransportError> {
        let cell = {
            let mut conns = match self.conns.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            conns.entry(host.to_string()).or_default().clone()
        };
        // Steps of this host wait for its handshake; other hosts do not. A failed connect
        // leaves the cell empty: the next step tries again.
        cell.get_or_try_init(|| async {
            let target = self.connect_target(host)?;
            // Any failure to open the session (including a handshake timeout) means
            // unreachable.
            self.connector.connect(&target).await.map_err(|e| match e {
                TransportError::Timeout { host, what, after } => TransportError::Connect {
                    host,
                    address: target.address.clone(),
                    reason: format!("timed out after {after:?} while {what}"),
                },
                other => other,
            })
        })
        .await
        .cloned()
    }

    fn connect_target(&self, host: &str) -> Result<ConnectTarget, TransportError> {
        let bad = |reason: String| TransportError::Connect {
            host: host.to_string(),
            address: host.to_string(),
            reason,
        };
        let conn = self
            .inventory
            .connection(host)
            .map_err(|d| bad(d.to_string().trim().to_string()))?;
        let conn = if conn.templated.is_empty() {
            conn
        } else {
            let vars = self.task_vars(host, 0, None);
            let rendered = self
                .templar
                .render_value(&Value::Object(self.inventory.host_vars(host)), &vars)
                .map_err(|e| bad(e.to_string()))?;
            let Value::Object(rendered) = rendered else {
                return Err(bad("connection vars did not template to a mapping".into()));
            };
            let home = std::env::var_os("HOME").map(PathBuf::from);
            crate::model::inventory::HostConnection::from_vars(
                host,
                None,
                &rendered,
                home.as_deref(),
            )
            .map_err(|d| bad(d.to_string().trim().to_string()))?
        };
        let mut target = conn.target;
        for args in &conn.ssh_args {
            // Options we do not act on (e.g. ControlMaster) are ignored, as Ansible's ssh would.
            crate::transport::args::apply_ssh_args(&mut target, args).map_err(bad)?;
        }
        Ok(target)
    }

    async fn exec(
        &self,
        host: &str,
        script: String,
        stdin: Option<Vec<u8>>,
        become_: Option<Become>,
        no_log: bool,
    ) -> Result<ExecOutput, TransportError> {
        let conn = self.connection(host).await?;
        if self.cfg.verbose {
            let command = if no_log {
                "(output hidden: no_log)".to_string()
            } else {
                script.clone()
            };
            self.emit(RunEvent::Command {
                host: host.to_string(),
                command,
            });
        }
        conn.exec(ExecRequest {
            script,
            stdin,
            become_,
            timeout: self.cfg.command_timeout,
        })
        .await
    }

    fn report(
        &self,
        at: &At<'_>,
        status: TaskStatus,
        item: Option<String>,
        result: &Map<String, Value>,
        diffs: Vec<DiffText>,
    ) {
        let At {
            host,
            play,
            task,
            handler,
            started,
        } = *at;
        // A meta task that did its work has no host result (its header came first).
        if status == TaskStatus::Ok
            && matches!(&task.kind, TaskKind::Module { module, .. } if module == "meta")
        {
            return;
        }
        let msg = if task.no_log {
            (status != TaskStatus::Ok && status != TaskStatus::Skipped)
                .then(|| "the output has been hidden due to the fact that 'no_log: true' was specified for this result".to_string())
        } else {
            result.get("msg").map(|m| match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let diffs = if task.no_log { Vec::new() } else { diffs };
        let changed = status == TaskStatus::Changed || result.get("changed") == Some(&json!(true));
        let status = if status == TaskStatus::Failed && self.rescuable.contains(&task.loc) {
            TaskStatus::Rescued
        } else {
            status
        };
        self.emit(RunEvent::TaskFinished(TaskReport {
            host: host.to_string(),
            play,
            task: self.title(play, task, host, None),
            loc: task.loc.to_string(),
            status,
            changed,
            item,
            msg,
            diffs,
            handler,
            duration_ms: started.elapsed().as_millis() as u64,
        }));
    }

    /// Gather `ansible_*` facts.
    async fn gather_facts(&self, host: &str, play: usize) -> StepOutcome {
        let started = std::time::Instant::now();
        let out = self
            .exec(
                host,
                facts::host::gather_script().to_string(),
                None,
                None,
                false,
            )
            .await;
        let report = |status: TaskStatus, msg: Option<String>| {
            self.emit(RunEvent::TaskFinished(TaskReport {
                host: host.to_string(),
                play,
                task: "Gathering Facts".into(),
                loc: self.plays[play].loc.to_string(),
                status,
                changed: false,
                item: None,
                msg,
                diffs: vec![],
                handler: false,
                duration_ms: started.elapsed().as_millis() as u64,
            }))
        };
        match out {
            Err(e) => {
                report(TaskStatus::Unreachable, Some(e.to_string()));
                StepOutcome::Unreachable
            }
            Ok(o) if o.exit_status != 0 => {
                report(
                    TaskStatus::Failed,
                    Some(format!(
                        "fact gathering failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                );
                StepOutcome::Failed
            }
            Ok(o) => match facts::host::parse_host_facts(&String::from_utf8_lossy(&o.stdout)) {
                Ok(f) => {
                    self.with_state(host, |s| s.facts = f);
                    report(TaskStatus::Ok, None);
                    StepOutcome::Ok
                }
                Err(e) => {
                    report(TaskStatus::Failed, Some(format!("cannot parse facts: {e}")));
                    StepOutcome::Failed
                }
            },
        }
    }

    /// Run a list of tasks in order; stops at the first unhandled failure.
    fn run_tasks<'a>(
        &'a self,
        host: &'a str,
        play: usize,
        tasks: &'a [Task],
        handler: bool,
    ) -> BoxFuture<'a, StepOutcome> {
        Box::pin(async move {
            for t in tasks {
                let o = self.run_task(host, play, t, handler).await;
                if o != StepOutcome::Ok {
                    return o;
                }
            }
            StepOutcome::Ok
        })
    }

    /// One task (or block) on one host.
    fn run_task<'a>(
        &'a self,
        host: &'a str,
        play: usize,
        task: &'a Task,
        handler: bool,
    ) -> BoxFuture<'a, StepOutcome> {
        Box::pin(async move {
            if let TaskKind::Block {
                block,
                rescue,
                always,
            } = &task.kind
            {
                // The block's `when` was passed down to each of its tasks.
                let mut outcome = self.run_tasks(host, play, block, handler).await;
                if outcome == StepOutcome::Failed && !rescue.is_empty() {
                    outcome = self.run_tasks(host, play, rescue, handler).await;
                }
                if outcome == StepOutcome::Unreachable {
                    return outcome;
                }
                let after = self.run_tasks(host, play, always, handler).await;
                return if outcome != StepOutcome::Ok {
                    outcome
                } else {
                    after
                };
            }
            if task.run_once {
                // As Ansible: the task runs once per batch, on the batch's first host that is
                // still running; every host of the batch gets its registered result.
                let stopped = self.stopped_hosts();
                let (batch, runner_host) = self
                    .batch_of(play, host)
                    .and_then(|(i, b)| {
                        b.iter()
                            .find(|h| !stopped.contains(*h))
                            .map(|h| (i, h.clone()))
                    })
                    .unwrap_or_else(|| (0, host.to_string()));
                let cell = {
                    let mut map = match self.run_once.lock() {
                        Ok(m) => m,
                        Err(p) => p.into_inner(),
                    };
                    map.entry((play, task_key(task), batch))
                        .or_default()
                        .clone()
                };
                let designated = runner_host.as_str();
                let (outcome, registered) = cell
                    .get_or_init(|| async {
                        let o = self.run_module_task(designated, play, task, handler).await;
                        let reg = task
                            .register
                            .as_ref()
                            .and_then(|r| {
                                self.with_state(designated, |s| s.set_facts.get(r).cloned())
                            })
                            .map(|v| {
                                let mut m = Vars::new();
                                if let Some(r) = &task.register {
                                    m.insert(r.clone(), v);
                                }
                                m
                            })
                            .unwrap_or_default();
                        (o, reg)
                    })
                    .await
                    .clone();
                self.with_state(host, |s| s.set_facts.extend(registered));
                return outcome;
            }
            self.run_module_task(host, play, task, handler).await
        })
    }

    /// `changed_when`, then `failed_when`, as Ansible applies them: each sees the task's result
    /// under its `register` name as the previous one left it. Returns the variables `until`
    /// evaluates with.
    fn result_conditions(&self, task: &Task, call: &mut CallResult, vars: &Vars) -> Vars {
        let with_result = |call: &CallResult| {
            let mut v = vars.clone();
            if let Some(r) = &task.register {
                v.insert(r.clone(), Value::Object(call.result.clone()));
            }
            v
        };
        let mut v = with_result(call);
        if call.status == TaskStatus::Skipped {
            return v;
        }
        for (keyword, conds) in [
            ("changed_when", &task.changed_when),
            ("failed_when", &task.failed_when),
        ] {
            if conds.is_empty() {
                continue;
            }
            match self.eval_conditions(conds, &v) {
                Ok(yes) if keyword == "changed_when" => {
                    call.result.insert("changed".into(), json!(yes));
                    if call.status != TaskStatus::Failed {
                        call.status = Self::ok_or_changed(yes);
                    }
                }
                Ok(failed) => {
                    call.result
                        .insert("failed_when_result".into(), json!(failed));
                    call.result.insert("failed".into(), json!(failed));
                    if failed {
                        call.status = TaskStatus::Failed;
                    } else if call.status == TaskStatus::Failed {
                        call.status =
                            Self::ok_or_changed(call.result.get("changed") == Some(&json!(true)));
                    }
                }
                Err(e) => {
                    call.status = TaskStatus::Failed;
                    call.result
                        .insert("msg".into(), json!(format!("{keyword}: {e}")));
                }
            }
            v = with_result(call);
        }
        v
    }

    fn ok_or_changed(changed: bool) -> TaskStatus {
        if changed {
            TaskStatus::Changed
        } else {
            TaskStatus::Ok
        }
    }

    fn eval_conditions(&self, conds: &[Value], vars: &Vars) -> Result<bool, String> {
        if conds.is_empty() {
            return Ok(true);
        }
        let mut exprs = Vec::with_capacity(conds.len());
        for c in conds {
            match c {
                Value::Bool(b) => {
                    if !b {
                        return Ok(false);
                    }
                }
                Value::String(s) => exprs.push(s.clone()),
                other => exprs.push(other.to_string()),
            }
        }
        self.templar
            .eval_when(&exprs, vars)
            .map_err(|e| e.to_string())
    }

    async fn run_module_task(
        &self,
        host: &str,
        play_idx: usize,
        task: &Task,
        handler: bool,
    ) -> StepOutcome {
        let TaskKind::Module { module, args } = &task.kind else {
            return StepOutcome::Ok;
        };
        // Tasks left out by --tags/--skip-tags are not shown, as in Ansible. Handlers always run
        // when notified.
        if !handler && !tags_selected(&task.tags, &self.cfg.tags, &self.cfg.skip_tags) {
            return StepOutcome::Ok;
        }
        let play = &self.plays[play_idx];
        let at = At {
            host,
            play: play_idx,
            task,
            handler,
            started: std::time::Instant::now(),
        };
        let mut vars = self.task_vars(host, play_idx, Some(task));
        self.emit(RunEvent::TaskStarted {
            host: host.to_string(),
            play: play_idx,
            task: self.title(play_idx, task, host, Some(&vars)),
            handler,
        });
        // Loop items (or one pass without a loop).
        let items: Option<Vec<Value>> = match &task.loop_ {
            None => None,
            Some(l) => match self.templar.render_value(l, &vars) {
                Ok(Value::Array(a)) => Some(if task.loop_flatten {
                    a.into_iter()
                        .flat_map(|v| match v {
                            Value::Array(inner) => inner,
                            other => vec![other],
                        })
                        .collect()
                } else {
                    a
                }),
                Ok(other) => {
                    let m = msg_map(format!("Invalid data passed to 'loop', it requires a list, got this instead: {other}"));
                    self.report(&at, TaskStatus::Failed, None, &m, vec![]);
                    return StepOutcome::Failed;
                }
                Err(e) => {
                    // `when` is checked per item; an undefined loop under a false `when` is skipped.
                    if matches!(self.eval_conditions(&task.when, &vars), Ok(false)) {
                        self.report(&at, TaskStatus::Skipped, None, &Map::new(), vec![]);
                        return StepOutcome::Ok;
                    }
                    self.report(
                        &at,
                        TaskStatus::Failed,
                        None,
                        &msg_map(e.to_string()),
                        vec![],
                    );
                    return StepOutcome::Failed;
                }
            },
        };
        let become_ = self.become_for(host, play, Some(task), &vars);
        let check = task.check_mode.unwrap_or(self.cfg.mode == Mode::Check);

        let mut results: Vec<Value> = Vec::new();
        let mut any_changed = false;
        let mut any_failed = false;
        let mut all_skipped = true;
        let mut last: Option<CallResult> = None;
        let passes: Vec<Option<(usize, Value)>> = match &items {
            None => vec![None],
            Some(list) => list.iter().cloned().enumerate().map(Some).collect(),
        };
        for pass in passes {
            let item_at = At {
                started: std::time::Instant::now(),
                ..at
            };
            if let Some((i, item)) = &pass {
                vars.insert(task.loop_var.clone(), item.clone());
                vars.insert("ansible_loop_var".into(), json!(task.loop_var));
                if let Some(iv) = &task.index_var {
                    vars.insert(iv.clone(), json!(i));
                }
            }
            let label = pass.as_ref().map(|(_, item)| {
                let l = task
                    .loop_label
                    .as_ref()
                    .and_then(|l| self.templar.render_value(l, &vars).ok())
                    .unwrap_or_else(|| item.clone());
                match l {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            });
            let call = match self.eval_conditions(&task.when, &vars) {
                Ok(false) => CallResult {
                    result: json_map(
                        json!({"changed": false, "skipped": true, "skip_reason": "Conditional result was False"}),
                    ),
                    status: TaskStatus::Skipped,
                    diffs: vec![],
                },
                Err(e) => CallResult {
                    result: msg_map(format!("The conditional check failed: {e}")),
                    status: TaskStatus::Failed,
                    diffs: vec![],
                },
                Ok(true) => {
                    let c = self
                        .call_with_retries(
                            host,
                            play_idx,
                            task,
                            module,
                            args,
                            &vars,
                            become_.clone(),
                            check,
                        )
                        .await;
                    if c.status == TaskStatus::Unreachable {
                        self.report(&item_at, TaskStatus::Unreachable, label, &c.result, vec![]);
                        return StepOutcome::Unreachable;
                    }
                    c
                }
            };
            let mut result = call.result.clone();
            if call.status == TaskStatus::Changed {
                any_changed = true;
            }
            if call.status == TaskStatus::Failed {
                any_failed = true;
            }
            if call.status != TaskStatus::Skipped {
                all_skipped = false;
            }
            if let Some((_, item)) = &pass {
                result.insert(task.loop_var.clone(), item.clone());
                result.insert("ansible_loop_var".into(), json!(task.loop_var));
                self.report(&item_at, call.status, label, &result, call.diffs.clone());
            }
            results.push(Value::Object(result));
            last = Some(call);
        }

        // The registered value and the task's overall status.
        let (registered, status, diffs) = match (items.is_some(), last) {
            (false, Some(c)) => (Value::Object(c.result), c.status, c.diffs),
            (_, _) => {
                let status = if any_failed {
                    TaskStatus::Failed
                } else if all_skipped && !results.is_empty() {
                    TaskStatus::Skipped
                } else if any_changed {
                    TaskStatus::Changed
                } else if results.is_empty() {
                    TaskStatus::Skipped
                } else {
                    TaskStatus::Ok
                };
                let mut m = Map::new();
                m.insert("changed".into(), json!(any_changed));
                m.insert(
                    "msg".into(),
                    json!(if any_failed {
                        "One or more items failed"
                    } else {
                        "All items completed"
                    }),
                );
                if any_failed {
                    m.insert("failed".into(), json!(true));
                }
                if results.is_empty() {
                    m.insert("skipped".into(), json!(true));
                    m.insert("skipped_reason".into(), json!("No items in the list"));
                }
                m.insert("results".into(), Value::Array(results));
                (Value::Object(m), status, vec![])
            }
        };
        if let Some(r) = &task.register {
            let reg = registered.clone();
            self.with_state(host, |s| {
                s.set_facts.insert(r.clone(), reg);
            });
        }
        let ignored = status == TaskStatus::Failed && self.ignore_errors(task, &vars);
        let final_status = if ignored { TaskStatus::Ignored } else { status };
        let registered_map = match registered {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.report(
            &at,
            final_status,
            None,
            &registered_map,
            if items.is_some() { vec![] } else { diffs },
        );
        if status == TaskStatus::Changed && !task.notify.is_empty() {
            self.with_state(host, |s| {
                let pending = s.notified.entry(play_idx).or_default();
                for n in &task.notify {
                    if !pending.contains(n) {
                        pending.push(n.clone());
                    }
                }
            });
        }
        match final_status {
            TaskStatus::Failed => StepOutcome::Failed,
            _ => StepOutcome::Ok,
        }
    }

    fn ignore_errors(&self, task: &Task, vars: &Vars) -> bool {
        match &task.ignore_errors {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => self
                .templar
                .render_value(v, vars)
                .ok()
                .and_then(|r| crate::model::inventory::ansible_bool(&r))
                .unwrap_or(false),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_with_retries(
        &self,
        host: &str,
        play: usize,
        task: &Task,
        module: &str,
        args: &Map<String, Value>,
        vars: &Vars,
        become_: Option<Become>,
        check: bool,
    ) -> CallResult {
        let retries = task
            .retries
            .as_ref()
            .and_then(|r| self.templar.render_value(r, vars).ok())
            .and_then(|r| {
                r.as_u64()
                    .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(3);
        let delay = task
            .delay
            .as_ref()
            .and_then(|r| self.templar.render_value(r, vars).ok())
            .and_then(|r| {
                r.as_u64()
                    .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(5);
        let attempts = if task.until.is_empty() {
            1
        } else {
            retries.max(1)
        };
        let mut n = 0;
        loop {
            n += 1;
            let mut call = self
                .call(host, play, task, module, args, vars, become_.clone(), check)
                .await;
            if call.status == TaskStatus::Unreachable {
                return call;
            }
            let v = self.result_conditions(task, &mut call, vars);
            if task.until.is_empty() {
                return call;
            }
            let done = matches!(self.eval_conditions(&task.until, &v), Ok(true));
            call.result.insert("attempts".into(), json!(n));
            if done || n >= attempts {
                if !done {
                    call.status = TaskStatus::Failed;
                    call.result.insert("failed".into(), json!(true));
                    call.result.insert("msg".into(), json!("Retries exceeded"));
                }
                return call;
            }
            tokio::time::sleep(Duration::from_secs(delay)).await;
        }
    }

    /// One module call with templated arguments.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        host: &str,
        play: usize,
        task: &Task,
        module: &str,
        raw_args: &Map<String, Value>,
        vars: &Vars,
        become_: Option<Become>,
        check: bool,
    ) -> CallResult {
        let fail = |msg: String| CallResult {
            result: msg_map_failed(msg),
            status: TaskStatus::Failed,
            diffs: vec![],
        };
        let mut args = match self
            .templar
            .render_value(&Value::Object(raw_args.clone()), vars)
        {
            Ok(Value::Object(m)) => m,
            Ok(_) => return fail("module arguments did not template to a mapping".into()),
            Err(e) => return fail(e.to_string()),
        };
        template::strip_omitted(&mut args);
        match module {
            "debug" => return self.debug(&args, vars),
            "set_fact" => {
                args.remove("cacheable");
                let facts = args.clone();
                self.with_state(host, |s| s.set_facts.extend(facts.clone()));
                return CallResult {
                    result: json_map(json!({"changed": false, "ansible_facts": facts})),
                    status: TaskStatus::Ok,
                    diffs: vec![],
                };
            }
            "fail" => {
                let msg = args
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("Failed as requested from task");
                return fail(msg.to_string());
            }
            "assert" => return self.assert(&args, raw_args, vars),
            "meta" => {
                let what = args
                    .get("_raw_params")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                // The header once per task and batch, before any handler it runs.
                let batch = self.batch_of(play, host).map_or(0, |b| b.0);
                let first = self
                    .meta_shown
                    .lock()
                    .is_ok_and(|mut m| m.insert((play, task.loc.clone(), batch)));
                if first {
                    self.emit(RunEvent::MetaTask {
                        play,
                        task: self.title(play, task, host, Some(vars)),
                    });
                }
                return match what {
                    "flush_handlers" => {
                        let o = self.flush_handlers(host, play).await;
                        CallResult {
                            result: Map::new(),
                            status: if o == StepOutcome::Ok {
                                TaskStatus::Ok
                            } else {
                                TaskStatus::Failed
                            },
                            diffs: vec![],
                        }
                    }
                    "noop" => CallResult {
                        result: Map::new(),
                        status: TaskStatus::Ok,
                        diffs: vec![],
                    },
                    other => fail(format!(
                        "meta: `{other}` is not supported (flush_handlers and noop are)"
                    )),
                };
            }
            _ => {}
        }
        let Some(m) = modules::lookup(module) else {
            return fail(format!("module `{module}` is not available"));
        };
        // Control-node files become content before the module sees them.
        if let Err(e) = self.inline_local_files(module, task, &mut args, vars).await {
            return fail(e);
        }
        let probes = match m.probes(&args) {
            Ok(p) => p,
            Err(e) => return fail(e.to_string()),
        };
        // delegate_to: the module runs over the delegated host's connection, with this host's
        // variables (as in Ansible).
        let target = match self.delegate_target(task, vars) {
            Ok(Some(t)) => t,
            Ok(None) => host.to_string(),
            Err(e) => return fail(e),
        };
        let become_key = become_.as_ref().map(|b| b.user.clone());
        let cached: Option<Facts> = (!probes.is_empty())
            .then(|| {
                self.with_state(&target, |s| {
                    probes
                        .iter()
                        .map(|p| {
                            s.probe_cache
                                .get(&(become_key.clone(), p.clone()))
                                .map(|r| (p.clone(), r.clone()))
                        })
                        .collect::<Option<Vec<_>>>()
                })
            })
            .flatten()
            .map(|answers| Facts {
                answers,
                ..Default::default()
            });
        let facts = if probes.is_empty() {
            Facts::default()
        } else if let Some(f) = cached {
            f
        } else {
            let script = facts::probe::probe_script(&probes);
            // Probes only read: one retry after a dropped connection is safe.
            let first = self
                .exec(&target, script.clone(), None, become_.clone(), task.no_log)
                .await;
            let answer = match first {
                Err(TransportError::Disconnected { .. }) => {
                    self.exec(&target, script, None, become_.clone(), task.no_log)
                        .await
                }
                other => other,
            };
            match answer {
                Err(e) if e.is_unreachable() => {
                    return CallResult {
                        result: msg_map(e.to_string()),
                        status: TaskStatus::Unreachable,
                        diffs: vec![],
                    }
                }
                Err(e) => return fail(e.to_string()),
                Ok(o) if o.exit_status != 0 => {
                    return fail(format!(
                        "reading the host's state failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                }
                Ok(o) => match facts::probe::parse_probe_output(&probes, &o.stdout) {
                    Ok(f) => {
                        self.with_state(&target, |s| s.via_link.extend(f.via_link.clone()));
                        f
                    }
                    Err(e) => return fail(format!("cannot parse the host's state: {e}")),
                },
            }
        };
        let mode = if check { Mode::Check } else { Mode::Apply };
        let planned = match m.plan(&args, &facts, mode) {
            // Planned from the local file's checksum, and the content differs: send it.
            Err(e) if e.is_needs_content() => {
                if let Err(e) = self.inline_local_content(task, &mut args).await {
                    return fail(e);
                }
                m.plan(&args, &facts, mode)
            }
            other => other,
        };
        let planned = match planned {
            Ok(p) => p,
            Err(e) => return fail(e.to_string()),
        };
        let diffs: Vec<DiffText> = match &planned {
            Planned::Change { diffs, .. } => diffs
                .iter()
                .map(|d| DiffText {
                    label: d.label.clone(),
                    before: diff_side(&d.before),
                    after: diff_side(&d.after),
                })
                .collect(),
            Planned::NoChange { .. } => vec![],
        };
        // Read-only modules (wait_for, uri GET) also run in check mode, as in Ansible.
        let run_actions = !check || m.read_only(&args);
        let outputs = match (&planned, run_actions) {
            (Planned::Change { actions, .. }, true) => {
                let touched = touched_paths(m, &args, actions);
                match self
                    .perform(
                        &target,
                        actions,
                        touched.as_deref(),
                        become_.clone(),
                        task.no_log,
                    )
                    .await
                {
                    Ok(o) => o,
                    Err(e) if e.is_unreachable() => {
                        return CallResult {
                            result: msg_map(e.to_string()),
                            status: TaskStatus::Unreachable,
                            diffs,
                        }
                    }
                    Err(e) => return fail(e.to_string()),
                }
            }
            _ => Vec::new(),
        };
        let r: ModuleResult = if run_actions {
            m.finish(&args, &planned, &outputs)
        } else {
            m.check_result(&args, &planned)
        };
        let status = if r.failed {
            TaskStatus::Failed
        } else if r.skipped {
            TaskStatus::Skipped
        } else if r.changed {
            TaskStatus::Changed
        } else {
            TaskStatus::Ok
        };
        let mut result = r.data;
        result.insert("changed".into(), json!(r.changed));
        if r.failed {
            result.insert("failed".into(), json!(true));
        }
        if r.skipped {
            result.insert("skipped".into(), json!(true));
        }
        if let Some(msg) = r.msg {
            result.insert("msg".into(), json!(msg));
        }
        // Facts a module returns (package_facts) become host facts, under `ansible_facts` and
        // by their own names, as in Ansible.
        if let Some(Value::Object(new_facts)) = result.get("ansible_facts") {
            let new_facts = new_facts.clone();
            self.with_state(host, |s| {
                let af = s
                    .facts
                    .entry("ansible_facts".to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(af) = af {
                    af.extend(new_facts.clone());
                }
                s.facts.extend(new_facts);
            });
        }
        CallResult {
            result,
            status,
            diffs,
        }
    }

    /// The inventory host a task is delegated to, if any.
    fn delegate_target(&self, task: &Task, vars: &Vars) -> Result<Option<String>, String> {
        let Some(d) = &task.delegate_to else {
            return Ok(None);
        };
        let name = self
            .templar
            .render_string(d, vars)
            .map_err(|e| format!("delegate_to: {e}"))?;
        if self.inventory.host(&name).is_none() {
            return Err(format!(
                "delegate_to: `{name}` is not a host of the inventory (local execution is not supported)"
            ));
        }
        Ok(Some(name))
    }

    /// Gather, in one round trip per become user, the probes of every task of `play` whose
    /// arguments can already be rendered on `host`. Tasks whose arguments depend on results not
    /// known yet are left out; they probe when they run. Failures here are not errors: the
    /// tasks then probe live.
    async fn prefetch(&self, host: &str, play_idx: usize) {
        if !self.with_state(host, |s| s.prefetched.insert(play_idx)) {
            return;
        }
        let play = &self.plays[play_idx];
        let mut by_become: std::collections::BTreeMap<Option<String>, Vec<facts::Probe>> =
            Default::default();
        let mut stack: Vec<&Task> = play.tasks.iter().rev().collect();
        while let Some(task) = stack.pop() {
            let (module, raw_args) = match &task.kind {
                TaskKind::Block {
                    block,
                    rescue,
                    always,
                } => {
                    stack.extend(always.iter().rev());
                    stack.extend(rescue.iter().rev());
                    stack.extend(block.iter().rev());
                    continue;
                }
                TaskKind::Module { module, args } => (module, args),
            };
            let Some(m) = modules::lookup(module) else {
                continue;
            };
            let mut vars = self.task_vars(host, play_idx, Some(task));
            let items: Vec<Option<Value>> = match &task.loop_ {
                None => vec![None],
                Some(l) => match self.templar.render_value(l, &vars) {
                    Ok(Value::Array(a)) if !task.loop_flatten => a.into_iter().map(Some).collect(),
                    _ => continue,
                },
            };
            let become_ = self
                .become_for(host, play, Some(task), &vars)
                .map(|b| b.user);
            for item in items {
                if let Some(i) = item {
                    vars.insert(task.loop_var.clone(), i);
                }
                let Ok(Value::Object(mut args)) = self
                    .templar
                    .render_value(&Value::Object(raw_args.clone()), &vars)
                else {
                    continue;
                };
                template::strip_omitted(&mut args);
                if self
                    .inline_local_files(module, task, &mut args, &vars)
                    .await
                    .is_err()
                {
                    continue;
                }
                if let Ok(probes) = m.probes(&args) {
                    let list = by_become.entry(become_.clone()).or_default();
                    for p in probes {
                        if !list.contains(&p) {
                            list.push(p);
                        }
                    }
                }
            }
        }
        for (user, probes) in by_become {
            if probes.is_empty() {
                continue;
            }
            let script = facts::probe::probe_script(&probes);
            let become_ = user.clone().map(|user| Become { user });
            let Ok(out) = self.exec(host, script, None, become_, false).await else {
                return;
            };
            if out.exit_status != 0 {
                continue;
            }
            if let Ok(f) = facts::probe::parse_probe_output(&probes, &out.stdout) {
                self.with_state(host, |s| {
                    s.via_link.extend(f.via_link);
                    for (p, r) in f.answers {
                        s.probe_cache.insert((user.clone(), p), r);
                    }
                });
            }
        }
    }

    /// Send actions in order; stop at the first that fails.
    async fn perform(
        &self,
        host: &str,
        actions: &[Action],
        touched: Option<&[String]>,
        become_: Option<Become>,
        no_log: bool,
    ) -> Result<Vec<ActionOutput>, TransportError> {
        if !actions.is_empty() {
            // The host changes: answers gathered before that this change may affect are stale.
            self.with_state(host, |s| match touched {
                // A change through a symlink may land anywhere.
                Some(paths) if !paths.iter().any(|t| s.via_link.contains(t)) => {
                    let via_link = &s.via_link;
                    s.probe_cache
                        .retain(|(_, p), _| still_valid(p, paths, via_link));
                }
                _ => s.probe_cache.clear(),
            });
        }
        let mut outputs = Vec::with_capacity(actions.len());
        for a in actions {
            let (script, stdin) = match a {
                Action::Exec { script, stdin } => (script.clone(), stdin.clone()),
                Action::WriteFile {
                    path,
                    content,
                    mode,
                    owner,
                    group,
                } => (
                    crate::transport::files::atomic_write_script(
                        Path::new(path),
                        *mode,
                        owner.as_deref(),
                        group.as_deref(),
                    ),
                    Some(content.clone()),
                ),
            };
            let o = self
                .exec(host, script, stdin, become_.clone(), no_log)
                .await?;
            let failed = o.exit_status != 0;
            outputs.push(ActionOutput {
                rc: o.exit_status as i32,
                stdout: o.stdout,
                stderr: o.stderr,
            });
            if failed {
                break;
            }
        }
        Ok(outputs)
    }

    /// `template` renders `src` here; `copy` reads `src` here (unless `remote_src`).
    async fn inline_local_files(
        &self,
        module: &str,
        task: &Task,
        args: &mut Map<String, Value>,
        vars: &Vars,
    ) -> Result<(), String> {
        let remote = args
            .get("remote_src")
            .and_then(crate::model::inventory::ansible_bool)
            .unwrap_or(false);
        let Some(src) = args.get("src").and_then(Value::as_str).map(str::to_string) else {
            return Ok(());
        };
        match module {
            "template" => {
                let path = self.find_local(task, "templates", &src)?;
                let flag = |k: &str| args.get(k).and_then(crate::model::inventory::ansible_bool);
                let opts = template::FileOptions {
                    search_path: self.search_dirs(task, "templates"),
                    src_arg: Some(src.clone()),
                    dest: args.get("dest").and_then(Value::as_str).map(str::to_string),
                    lstrip_blocks: flag("lstrip_blocks").unwrap_or(false),
                    no_trim_blocks: flag("trim_blocks") == Some(false),
                };
                args.remove("lstrip_blocks");
                args.remove("trim_blocks");
                let text = self
                    .templar
                    .render_file_with(&path, &opts, vars)
                    .map_err(|e| e.to_string())?;
                args.insert("_content".into(), json!(text));
                Ok(())
            }
            // copy plans from the file's checksum first (an unchanged file is never encoded
            // or held per host); `inline_local_content` adds the content when it must be sent.
            "copy" if !remote => {
                let path = self.find_local(task, "files", &src)?;
                args.insert(
                    "_content_sha1".into(),
                    Value::String(self.local_sha1(&path).await?),
                );
                Ok(())
            }
            "unarchive" if !remote => {
                let path = self.find_local(task, "files", &src)?;
                args.insert(
                    "_content_b64".into(),
                    Value::String(self.local_b64(&path).await?),
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The content of a `copy` task's control-node `src`, for a plan that must write it.
    async fn inline_local_content(
        &self,
        task: &Task,
        args: &mut Map<String, Value>,
    ) -> Result<(), String> {
        let src = args
            .get("src")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or("copy: no src to read")?;
        let path = self.find_local(task, "files", &src)?;
        args.remove("_content_sha1");
        args.insert(
            "_content_b64".into(),
            Value::String(self.local_b64(&path).await?),
        );
        Ok(())
    }

    /// A control-node file's sha1 (hex), computed once per run.
    async fn local_sha1(&self, path: &Path) -> Result<String, String> {
        Self::cached_local(&self.local_digests, path, |bytes| {
            crate::modules::files::sha1::sha1_hex(&bytes)
        })
        .await
    }

    /// A control-node file as base64, read and encoded once per run (the same artifact is often
    /// copied to many hosts).
    async fn local_b64(&self, path: &Path) -> Result<String, String> {
        Self::cached_local(&self.local_files, path, |bytes| {
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
        })
        .await
    }

    /// `derive` of a control-node file's bytes, kept in `cache` by path, size and mtime. A hit
    /// costs one stat; a miss reads and derives on a blocking thread, off the async workers.
    async fn cached_local(
        cache: &Arc<Mutex<LocalFiles>>,
        path: &Path,
        derive: fn(Vec<u8>) -> String,
    ) -> Result<String, String> {
        let cant = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(cant)?;
        let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
        if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit.to_string());
        }
        let (cache, owned) = (cache.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&owned)
                .map_err(|e| format!("cannot read {}: {e}", owned.display()))?;
            let value: Arc<str> = Arc::from(derive(bytes));
            if let Ok(mut c) = cache.lock() {
                c.insert(key, value.clone());
            }
            Ok(value.to_string())
        })
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?
    }

    fn search_dirs(&self, task: &Task, sub: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(r) = &task.role {
            dirs.push(Path::new(&r.dir).join(sub));
            dirs.push(PathBuf::from(&r.dir));
        }
        dirs.push(self.cfg.playbook_dir.join(sub));
        dirs.push(self.cfg.playbook_dir.clone());
        dirs
    }

    fn find_local(&self, task: &Task, sub: &str, src: &str) -> Result<PathBuf, String> {
        let p = Path::new(src);
        if p.is_absolute() {
            return if p.is_file() {
                Ok(p.to_path_buf())
            } else {
                Err(format!("could not find `{src}`"))
            };
        }
        let dirs = self.search_dirs(task, sub);
        dirs.iter()
            .map(|d| d.join(src))
            .find(|c| c.is_file())
            .ok_or_else(|| {
                format!(
                    "could not find `{src}` in {}",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    fn debug(&self, args: &Map<String, Value>, vars: &Vars) -> CallResult {
        let mut result = Map::new();
        if let Some(var) = args.get("var").and_then(Value::as_str) {
            let v = self
                .templar
                .render_str(&format!("{{{{ {var} }}}}"), vars)
                .unwrap_or_else(|_| json!("VARIABLE IS NOT DEFINED!"));
            result.insert(var.to_string(), v.clone());
            result.insert("msg".into(), json!(format!("{var}: {}", display_value(&v))));
        } else {
            let msg = args
                .get("msg")
                .cloned()
                .unwrap_or_else(|| json!("Hello world!"));
            result.insert("msg".into(), json!(display_value(&msg)));
        }
        result.insert("changed".into(), json!(false));
        CallResult {
            result,
            status: TaskStatus::Ok,
            diffs: vec![],
        }
    }

    fn assert(
        &self,
        args: &Map<String, Value>,
        raw_args: &Map<String, Value>,
        vars: &Vars,
    ) -> CallResult {
        // `that` holds expressions: evaluate them as written, not templated first.
        let that: Vec<Value> = match raw_args.get("that") {
            Some(Value::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
            None => {
                return CallResult {
                    result: msg_map_failed("assert needs `that`".into()),
                    status: TaskStatus::Failed,
                    diffs: vec![],
                }
            }
        };
        for cond in &that {
            match self.eval_conditions(std::slice::from_ref(cond), vars) {
                Ok(true) => {}
                Ok(false) => {
                    let msg = args
                        .get("fail_msg")
                        .or_else(|| args.get("msg"))
                        .map(display_value)
                        .unwrap_or_else(|| "Assertion failed".to_string());
                    let mut r = msg_map_failed(msg);
                    r.insert("assertion".into(), cond.clone());
                    r.insert("evaluated_to".into(), json!(false));
                    return CallResult {
                        result: r,
                        status: TaskStatus::Failed,
                        diffs: vec![],
                    };
                }
                Err(e) => {
                    return CallResult {
                        result: msg_map_failed(e),
                        status: TaskStatus::Failed,
                        diffs: vec![],
                    }
                }
            }
        }
        let msg = args
            .get("success_msg")
            .map(display_value)
            .unwrap_or_else(|| "All assertions passed".into());
        CallResult {
            result: json_map(json!({"changed": false, "msg": msg})),
            status: TaskStatus::Ok,
            diffs: vec![],
        }
    }

    /// Run the host's notified handlers of `play`, in the order they are defined.
    async fn flush_handlers(&self, host: &str, play: usize) -> StepOutcome {
        let pending = self.with_state(host, |s| s.notified.remove(&play).unwrap_or_default());
        if pending.is_empty() {
            return StepOutcome::Ok;
        }
        let handlers = &self.plays[play].handlers;
        let mut ran = BTreeSet::new();
        for (i, h) in handlers.iter().enumerate() {
            let called = h.name.as_ref().is_some_and(|n| pending.contains(n))
                || h.listen.iter().any(|l| pending.contains(l));
            if called && ran.insert(i) {
                let o = self.run_task(host, play, h, true).await;
                if o != StepOutcome::Ok {
                    // Keep the rest pending so a later run still fires them.
                    let rest: Vec<String> = handlers[i + 1..]
                        .iter()
                        .filter_map(|h| h.name.clone())
                        .filter(|n| pending.contains(n))
                        .collect();
                    self.with_state(host, |s| s.notified.entry(play).or_default().extend(rest));
                    return o;
                }
            }
        }
        StepOutcome::Ok
    }

    fn stopped_hosts(&self) -> BTreeSet<String> {
        match self.stopped.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Handlers still pending on each host (for persistence after a failed run).
    pub fn pending_handlers(&self) -> HashMap<String, Vec<String>> {
        let states = match self.hosts.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        states
            .iter()
            .map(|(h, s)| {
                (
                    h.clone(),
                    s.notified.values().flatten().cloned().collect::<Vec<_>>(),
                )
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// Mark handlers as notified before the run starts (left pending by an earlier failed run).
    pub fn restore_pending(&self, host: &str, play: usize, names: Vec<String>) {
        self.with_state(host, |s| s.notified.entry(play).or_default().extend(names));
    }

    /// Close every session.
    pub async fn close(&self) {
        let conns: Vec<_> = match self.conns.lock() {
            Ok(mut c) => c.drain().filter_map(|(_, c)| c.get().cloned()).collect(),
            Err(p) => p
                .into_inner()
                .drain()
                .filter_map(|(_, c)| c.get().cloned())
                .collect(),
        };
        for c in conns {
            c.close().await;
        }
    }
}

impl StepRunner for Runner {
    fn run(self: Arc<Self>, node: Node) -> BoxFuture<'static, StepOutcome> {
        Box::pin(async move {
            let Some(host) = node.host.clone() else {
                return StepOutcome::Ok;
            };
            self.announce_through(node.step.play());
            match node.step {
                Step::Facts { play } => self.gather_facts(&host, play).await,
                Step::Task { play, task } => {
                    self.prefetch(&host, play).await;
                    let t = &self.plays[play].tasks[task];
                    self.run_task(&host, play, t, false).await
                }
                Step::Handlers { play } => self.flush_handlers(&host, play).await,
                Step::Barrier { .. } => StepOutcome::Ok,
            }
        })
    }

    fn host_stopped(&self, host: &str, reason: StopReason) {
        if let Ok(mut s) = self.stopped.lock() {
            s.insert(host.to_string());
        }
        self.emit(RunEvent::HostStopped {
            host: host.to_string(),
            reason,
        });
    }
}

fn task_key(t: &Task) -> usize {
    // Tasks are unique by source location within a play.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&t.loc, &mut h);
    std::hash::Hasher::finish(&h) as usize
}

fn json_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn msg_map(msg: impl Into<String>) -> Map<String, Value> {
    json_map(json!({"msg": msg.into()}))
}

fn msg_map_failed(msg: String) -> Map<String, Value> {
    json_map(json!({"msg": msg, "failed": true, "changed": false}))
}

/// How `debug` shows a value: strings bare, the rest as JSON.
fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The engine's secrets store as the templates' [`template::SecretProvider`]: every value it
/// hands out is learnt by the run's [`Redactor`] first, and the store's notices (a key was
/// generated) become events.
struct RunSecrets {
    store: Arc<crate::secrets::SecretStore>,
    redactor: Arc<Redactor>,
    sink: Arc<dyn EventSink>,
}

impl RunSecrets {
    fn notices(&self) {
        for message in self.store.take_notices() {
            self.sink.emit(RunEvent::Notice { message });
        }
    }
}

impl template::SecretProvider for RunSecrets {
    fn password(
        &self,
        term: &str,
        kwargs: &[(String, String)],
    ) -> Result<crate::secret::Secret, String> {
        let r = self.store.password(term, kwargs).map_err(|e| e.to_string());
        if let Ok(s) = &r {
            self.redactor.learn(s.expose());
        }
        self.notices();
        r
    }

    fn tls_ca(&self) -> Result<String, String> {
        let r = self.store.tls_ca().map_err(|e| e.to_string());
        self.notices();
        r
    }

    fn tls_host(
        &self,
        host: &crate::secrets::TlsHost,
    ) -> Result<(String, crate::secret::Secret), String> {
        let r = self.store.tls_host(host).map_err(|e| e.to_string());
        if let Ok((_, key)) = &r {
            self.redactor.learn(key.expose());
        }
        self.notices();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_oversized_diffs_are_skipped_like_ansible() {
        // Regression: the stand-in binary's bytes went into every JSON event of its copy task.
        assert_eq!(diff_side("a\nb\n"), "a\nb\n");
        assert_eq!(
            diff_side("ELF\0\u{1}\u{2}"),
            "[diff skipped: binary content]\n"
        );
        let big = "x".repeat(MAX_DIFF_BYTES + 1);
        assert!(diff_side(&big).starts_with("[diff skipped: 104449 bytes"));
    }

    #[test]
    fn a_file_change_keeps_the_answers_it_cannot_affect() {
        use facts::Probe;
        let module = |name: &str| modules::lookup(name).unwrap();
        let stat = |p: &str| Probe::Stat {
            path: p.into(),
            follow: false,
        };
        let touched = vec!["/etc/app".to_string()];
        let none = HashSet::new();
        assert!(!still_valid(&stat("/etc/app"), &touched, &none));
        assert!(
            !still_valid(&stat("/etc/app/conf.d/x"), &touched, &none),
            "under it"
        );
        assert!(!still_valid(&stat("/etc"), &touched, &none), "its parent");
        assert!(
            still_valid(&stat("/etc/apparmor"), &touched, &none),
            "a sibling with the same prefix"
        );
        assert!(still_valid(
            &Probe::Dpkg {
                packages: vec!["tree".into()]
            },
            &touched,
            &none
        ));
        assert!(!still_valid(
            &Probe::Command {
                script: "ls".into()
            },
            &touched,
            &none
        ));

        let mut args = modules::Args::new();
        args.insert("path".into(), json!("/etc/app/"));
        let exec = Action::Exec {
            script: "mkdir -p /etc/app".into(),
            stdin: None,
        };
        assert_eq!(
            touched_paths(module("file"), &args, std::slice::from_ref(&exec)),
            Some(vec!["/etc/app".to_string()])
        );
        assert_eq!(
            touched_paths(module("command"), &args, &[exec]),
            None,
            "a command may do anything"
        );
        args.insert("path".into(), json!("relative"));
        assert_eq!(
            touched_paths(
                module("file"),
                &args,
                &[Action::Exec {
                    script: "true".into(),
                    stdin: None
                }]
            ),
            None
        );
    }
}
