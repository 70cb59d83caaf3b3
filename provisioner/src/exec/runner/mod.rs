//! The host runner: what one plan node does on one host.
//!
//! For a task: build the host's variables in Ansible's precedence order, evaluate `when`,
//! expand the loop, then per item: template the arguments, ask the module which facts it needs,
//! answer all its probes in one remote round trip, let the module plan, and only in apply mode
//! send its actions. Then `changed_when`/`failed_when`/`until`, `register`, `notify`.
//! Engine modules (`debug`, `set_fact`, `fail`, `assert`, `meta`) never touch the host.
//!
//! Rooms: `vars` (precedence, magic vars, become, hostvars), `control` (blocks, run_once,
//! loops, conditions, retries, results), `call` (the module call, probes and their cache,
//! engine modules), `files` (control-node files), `remote` (sessions, commands, facts),
//! `handlers`, `secrets` (the templates' secrets provider). This file: the `Runner`, its
//! per-host state, and the walker's entry points.

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

mod call;
mod control;
mod files;
mod handlers;
mod remote;
mod secrets;
mod vars;

use secrets::RunSecrets;
use vars::HostVarsView;

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
    /// ansible.cfg's connection and become defaults (see `crate::config`).
    pub defaults: crate::config::RunDefaults,
    /// The bundled stack's convention (docs/stack.md): a `command` or `shell` task whose
    /// `changed_when` is the literal `false` only reads the host, so it keeps the probe answers
    /// gathered before it. Off for playbooks, where `changed_when: false` often hides a change
    /// (`apt-get update`).
    pub read_only_commands: bool,
}

/// Per-host state that lives across steps.
#[derive(Default)]
struct HostState {
    /// Shared with the tasks reading them (copy on write): building a task's variables
    /// clones no map.
    facts: Arc<Vars>,
    /// `set_fact` and registered results (precedence level 19).
    set_facts: Arc<Vars>,
    /// The names in `set_facts` whose values are unsafe (template::UNSAFE_VARS): registered
    /// results, and `set_fact` values that read unsafe data.
    unsafe_facts: BTreeSet<String>,
    /// `include_vars` results (precedence level 18), for the rest of the run.
    include_vars: Arc<Vars>,
    /// Handler names (or `listen` topics) notified and not yet run, per play.
    notified: HashMap<usize, Vec<String>>,
    /// Probe answers gathered up front for the rest of the run, by become user. Valid until an
    /// action drops them; then the play's next tasks probe live, and a later play gathers
    /// what it misses in one round trip.
    probe_cache: HashMap<(Option<String>, facts::Probe), facts::ProbeResult>,
    /// `facts` were gathered in this run and no task has changed the host since: a later
    /// play reuses them instead of gathering again (Ansible's `gathering = smart` reuses them
    /// even then).
    facts_current: bool,
    /// Plays whose probes were gathered up front on this host (the run's first prefetch also
    /// gathers the later plays' probes; each play then asks only for what is missing).
    prefetched: BTreeSet<usize>,
    /// An action of the running task dropped probe answers (`perform`).
    probes_dropped: bool,
    /// How many actions dropped answers so far in the run.
    drops: u64,
    /// Later plays whose every task a prefetch rendered, with `drops` at that time: while
    /// nothing was dropped since, the play asks for nothing more when it starts.
    covered: HashMap<usize, u64>,
    /// A task dropped answers but changed nothing (a read-only command such as a preflight
    /// check): the next task that misses the cache gathers the rest of the play's probes
    /// again, in one round trip, instead of each task probing on its own.
    prefetch_again: bool,
    /// The running top-level task of the play (where a new prefetch starts).
    current_task: usize,
    /// Probed paths that are, or lie under, a symlink (from every probe answer of the run).
    via_link: HashSet<String>,
}

impl HostState {
    /// Store a `set_fact` value or a registered result (precedence level 19). `from_host`:
    /// the value is (or was made from) what a host sent, so it is never templated again.
    fn set_fact(&mut self, name: String, value: Value, from_host: bool) {
        if from_host {
            self.unsafe_facts.insert(name.clone());
        } else {
            self.unsafe_facts.remove(&name);
        }
        Arc::make_mut(&mut self.set_facts).insert(name, value);
    }

    /// This host's own levels of the variable stack (facts, `include_vars`, `set_fact` and
    /// registered results), and the names among them that hold host data.
    fn levels(&self) -> HostLevels {
        HostLevels {
            facts: self.facts.clone(),
            include_vars: self.include_vars.clone(),
            set_facts: self.set_facts.clone(),
            unsafe_facts: self.unsafe_facts.clone(),
        }
    }
}

/// A host's own levels, taken from its state under the lock (cheap: shared maps).
struct HostLevels {
    facts: Arc<Vars>,
    include_vars: Arc<Vars>,
    set_facts: Arc<Vars>,
    unsafe_facts: BTreeSet<String>,
}

impl HostLevels {
    /// The same levels: the same shared maps. A host's maps change only through
    /// `Arc::make_mut` or a new `Arc`, and a `HostLevels` holds its maps, so a change always
    /// makes a new pointer (never a reused one).
    fn same_as(&self, other: &HostLevels) -> bool {
        Arc::ptr_eq(&self.facts, &other.facts)
            && Arc::ptr_eq(&self.include_vars, &other.include_vars)
            && Arc::ptr_eq(&self.set_facts, &other.set_facts)
            && self.unsafe_facts == other.unsafe_facts
    }
}

/// What a task's variables depend on besides the host's own levels and the stopped hosts:
/// the play, the task's own vars (by address: 0 when it has none) and its role.
#[derive(PartialEq, Eq, Hash)]
struct VarsKey {
    host: String,
    play: usize,
    task_vars: usize,
    role: Option<(String, String)>,
}

/// A resolved variable map and what it was resolved from.
struct CachedVars {
    own: HostLevels,
    stopped: BTreeSet<String>,
    vars: Arc<Vars>,
}

/// What every task of a play sees the same on every host: its roles' defaults merged (under
/// the stack's `bundle` vars) and its roles' vars merged. Built once per run.
struct PlayStatic {
    defaults: Vars,
    role_vars: Vars,
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
    /// Per play: the variable levels every host shares.
    play_static: Vec<PlayStatic>,
    /// Per host: its inventory levels (the inventory does not change during a run).
    inventory_stacks: Arc<Mutex<HashMap<String, Arc<VarStack>>>>,
    /// Resolved task variables, shared by the tasks that see the same (`task_vars`).
    vars_cache: Mutex<HashMap<VarsKey, CachedVars>>,
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
        let inventory_stacks: Arc<Mutex<HashMap<String, Arc<VarStack>>>> = Arc::default();
        let templar =
            Templar::new(cfg.playbook_dir.clone()).with_hostvars(Arc::new(HostVarsView {
                inventory: inventory.clone(),
                hosts: hosts.clone(),
                stacks: inventory_stacks.clone(),
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
        let play_static = plays
            .iter()
            .map(|play| {
                let mut defaults = Vars::new();
                for (_, d) in &play.role_defaults {
                    defaults.extend(d.clone());
                }
                defaults.extend(cfg.stack_vars.clone());
                let mut role_vars = Vars::new();
                for (_, v) in &play.role_vars {
                    role_vars.extend(v.clone());
                }
                PlayStatic {
                    defaults,
                    role_vars,
                }
            })
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
            play_static,
            inventory_stacks,
            vars_cache: Mutex::new(HashMap::new()),
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

    fn stopped_hosts(&self) -> BTreeSet<String> {
        match self.stopped.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
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
                    self.with_state(&host, |s| s.current_task = task);
                    self.prefetch(&host, play, task, false).await;
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
