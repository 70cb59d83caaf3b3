//! One run, end to end: load and validate everything, plan, walk, report through events.
//!
//! Nothing touches a host until the inventory, the playbook, its roles and every template
//! have been checked; all problems are returned together.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::diag::{Diagnostic, Diagnostics, Loc};
use crate::error::Error;
use crate::exec::events::{EventSink, RunEvent};
use crate::exec::redact::{Redacting, Redactor};
use crate::exec::runner::{RunConfig, Runner};
use crate::exec::walker::{walk, FailPolicy, WalkSummary};
use crate::exec::Mode;
use crate::model::inventory::Inventory;
use crate::model::play::{Playbook, Task, TaskKind};
use crate::plan::{Plan, PlayTarget};
use crate::resolve::playbook::{BuiltinCatalog, InlinePlay, Loader};
use crate::template::{self, Templar, Vars};
use crate::transport::Connector;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub inventory: Vec<PathBuf>,
    /// The playbook file; with `inline`, where that play is taken to be (its directory is the
    /// playbook directory).
    pub playbook: PathBuf,
    /// A play built in memory, run instead of the file.
    pub inline: Option<InlinePlay>,
    pub limit: Option<String>,
    pub mode: Mode,
    pub diff: bool,
    pub verbose: bool,
    pub forks: usize,
    pub extra_vars: Vars,
    pub roles_path: Vec<PathBuf>,
    pub command_timeout: Duration,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    /// Set for a run of the bundled stack (`apply` with no playbook, see `crate::stack`).
    pub stack: Option<StackRun>,
    /// Defaults from ansible.cfg and the environment (see `crate::config`).
    pub defaults: crate::config::RunDefaults,
}

/// What a run of the bundled stack adds to a playbook run.
#[derive(Clone, Debug, Default)]
pub struct StackRun {
    /// Variables at role-defaults precedence (`bundle`): above the roles' `defaults/`, below
    /// every inventory level, as `group_vars/all` would be for ansible-playbook.
    pub vars: Vars,
    /// Problems of the stack itself (its bundle), reported with every other problem.
    pub diags: Diagnostics,
    /// The member identities recorded in the state dir (`None`: nothing recorded yet).
    pub allocations: Option<cluster_core::allocations::Allocations>,
}

/// Everything validated and planned, ready to run.
pub struct Prepared {
    pub inventory: Arc<Inventory>,
    pub playbook: Playbook,
    pub play_hosts: Vec<Vec<String>>,
    pub warnings: Vec<String>,
    /// A stack run's variables at role-defaults precedence: `bundle` and the member
    /// identities (`provisioner_allocations`). Empty for a playbook run.
    pub stack_vars: Vars,
    /// A stack run's member identities, to record in the state dir.
    pub allocations: Option<cluster_core::allocations::Allocations>,
}

/// Load the inventory and playbook and check everything, returning all problems at once.
pub fn prepare(req: &RunRequest) -> Result<Prepared, Error> {
    let mut diags = Diagnostics::new();
    let mut allocations = None;
    let inventory = match crate::resolve::inventory::load_sources(&req.inventory) {
        Ok(mut inv) => {
            if let Some(stack) = &req.stack {
                // Default groups first (before group_vars and host selection), then the
                // topology rules of docs/stack.md, located at the (first) inventory source.
                let file = req
                    .inventory
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                allocations = crate::stack::prepare_inventory(
                    &mut inv,
                    &req.extra_vars,
                    &file,
                    &mut diags,
                    stack.allocations.as_ref(),
                    // An in-memory play (a probe, a day-2 step) never changes the membership.
                    req.inline.is_none(),
                )
                .allocations;
                diags.extend(stack.diags.clone());
            }
            let pb_dir = playbook_dir(&req.playbook);
            if let Err(d) = crate::resolve::inventory::load_playbook_vars(&mut inv, &pb_dir) {
                diags.extend(d);
            }
            Some(inv)
        }
        Err(d) => {
            diags.extend(d);
            None
        }
    };
    let loader = Loader::new(&BuiltinCatalog, req.roles_path.clone())
        .gather_facts_default(req.defaults.gather_facts);
    let loaded = match &req.inline {
        Some(play) => loader.load_inline(play, &req.playbook),
        None => loader.load_playbook(&req.playbook),
    };
    let playbook = match loaded {
        Ok(p) => Some(p),
        Err(d) => {
            diags.extend(d);
            None
        }
    };
    if let Some(pb) = &playbook {
        check_templates(pb, &mut diags);
        diags.extend(crate::resolve::expressions::check(
            pb,
            &playbook_dir(&req.playbook),
        ));
    }
    let (Some(inventory), Some(playbook)) = (inventory, playbook) else {
        return Err(Error::Invalid(diags.sorted()));
    };
    let mut warnings = Vec::new();
    let mut play_hosts = Vec::new();
    let connect = crate::config::connect::with_state_dir(&req.defaults.connect, &req.inventory);
    let mut host_keys = crate::config::connect::HostKeyLeniency::default();
    let templar = Templar::new(playbook_dir(&req.playbook));
    for play in &playbook.plays {
        let pattern = if template::is_possibly_template(&play.hosts) {
            match templar.render_string(&play.hosts, &req.extra_vars) {
                Ok(p) => p,
                Err(e) => {
                    diags.error(&play.loc, format!("hosts: {e}"));
                    String::new()
                }
            }
        } else {
            play.hosts.clone()
        };
        match inventory.select(&pattern, req.limit.as_deref()) {
            Ok(sel) => {
                for u in &sel.unmatched {
                    warnings.push(format!(
                        "Could not match supplied host pattern, ignoring: {u}"
                    ));
                }
                if sel.is_empty() {
                    warnings.push(format!(
                        "play `{}`: no hosts matched `{pattern}`",
                        play.name
                    ));
                }
                for h in &sel.hosts {
                    match inventory.connection(h) {
                        Err(d) => diags.extend(d),
                        Ok(c) => host_keys.check(&inventory, h, &connect, c, &mut diags),
                    }
                }
                play_hosts.push(sel.hosts);
            }
            Err(d) => {
                diags.push(d);
                play_hosts.push(Vec::new());
            }
        }
    }
    warnings.extend(host_keys.warning());
    let mut stack_vars = req
        .stack
        .as_ref()
        .map(|st| st.vars.clone())
        .unwrap_or_default();
    if let Some(a) = &allocations {
        stack_vars.insert(
            crate::stack::ALLOCATIONS_VAR.into(),
            serde_json::to_value(a).unwrap_or_default(),
        );
    }
    if diags.is_empty() {
        let stack_vars = &stack_vars;
        diags.extend(crate::resolve::undefined::check(
            &playbook,
            &crate::resolve::undefined::Context {
                inventory: &inventory,
                play_hosts: &play_hosts,
                extra_vars: &req.extra_vars,
                stack_vars,
            },
        ));
    }
    if !diags.is_empty() {
        return Err(Error::Invalid(diags.sorted()));
    }
    // A missing or wrong secrets key is bad input: say so before anything starts.
    if let Some(inv) = req.inventory.first() {
        crate::state::StateDir::for_inventory(inv).secrets()?;
    }
    Ok(Prepared {
        inventory: Arc::new(inventory),
        playbook,
        play_hosts,
        warnings,
        stack_vars,
        allocations,
    })
}

fn playbook_dir(p: &Path) -> PathBuf {
    let dir = p.parent().unwrap_or(Path::new(".")).to_path_buf();
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    }
}

/// Compile every template string and condition in the playbook (syntax only).
fn check_templates(pb: &Playbook, diags: &mut Diagnostics) {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if template::is_possibly_template(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    fn task(t: &Task, diags: &mut Diagnostics) {
        let mut s = Vec::new();
        if let TaskKind::Module { args, .. } = &t.kind {
            strings(&Value::Object(args.clone()), &mut s);
        }
        if let Some(l) = &t.loop_ {
            strings(l, &mut s);
        }
        strings(&Value::Object(t.vars.clone()), &mut s);
        for src in s {
            if let Err(d) = template::check_syntax(&src, &t.loc) {
                diags.push(d);
            }
        }
        for c in t
            .when
            .iter()
            .chain(&t.changed_when)
            .chain(&t.failed_when)
            .chain(&t.until)
        {
            if let Value::String(expr) = c {
                if let Err(d) = template::check_expr_syntax(expr, &t.loc) {
                    diags.push(d);
                }
            }
        }
        if let TaskKind::Block {
            block,
            rescue,
            always,
        } = &t.kind
        {
            for t in block.iter().chain(rescue).chain(always) {
                task(t, diags);
            }
        }
    }
    for p in &pb.plays {
        for t in p.tasks.iter().chain(&p.handlers) {
            task(t, diags);
        }
    }
}

/// What a run takes from the state dir (read before the walk, by the caller).
#[derive(Default)]
pub struct RunState {
    /// The inventory's secrets store (for the `password` and `provisioner_tls` lookups).
    pub secrets: Option<Arc<crate::secrets::SecretStore>>,
    /// Handlers an earlier run left pending, by host.
    pub pending: crate::state::Pending,
}

/// How a walk ended, and what the state dir should keep.
pub struct RunResult {
    pub summary: WalkSummary,
    /// Handlers still pending after an apply run (to save for the next one); `None` in check
    /// mode (nothing ran, the saved set stays as it is).
    pub pending: Option<crate::state::Pending>,
}

/// Run a prepared playbook. Host failures are in the summary and the events, not in `Err`.
/// No file work happens here: `state` was read before, and the result says what to keep.
pub async fn run(
    req: &RunRequest,
    prepared: Prepared,
    connector: Arc<dyn Connector>,
    sink: Arc<dyn EventSink>,
    cancel: watch::Receiver<bool>,
    state: RunState,
) -> Result<RunResult, Error> {
    let started = Instant::now();
    let RunState {
        secrets,
        pending: mut previous,
    } = state;
    let Prepared {
        inventory,
        playbook,
        play_hosts,
        warnings,
        stack_vars,
        allocations: _,
    } = prepared;
    // Every event of the run goes through the redactor, whoever emits it.
    let redactor = Arc::new(Redactor::from_inventory(&inventory, &req.extra_vars));
    let sink: Arc<dyn EventSink> = Arc::new(Redacting {
        inner: sink,
        redactor: redactor.clone(),
    });
    let mut all_hosts: Vec<String> = Vec::new();
    for hs in &play_hosts {
        for h in hs {
            if !all_hosts.contains(h) {
                all_hosts.push(h.clone());
            }
        }
    }
    sink.emit(RunEvent::RunStarted {
        check: req.mode == Mode::Check,
        hosts: all_hosts.clone(),
    });
    for w in warnings {
        sink.emit(RunEvent::Warning { message: w });
    }
    let targets: Vec<PlayTarget<'_>> = playbook
        .plays
        .iter()
        .zip(&play_hosts)
        .map(|(play, hosts)| PlayTarget {
            play,
            hosts: hosts.clone(),
        })
        .collect();
    let plan = Plan::build(&targets);
    if let Err(cycle) = plan.check_acyclic() {
        return Err(Error::Invalid(
            Diagnostic::new(
                Some(Loc::file(playbook.path.clone())),
                format!("the plan has a cycle: {}", cycle.join(" -> ")),
            )
            .into(),
        ));
    }
    let policies: Vec<FailPolicy> = playbook
        .plays
        .iter()
        .map(|p| FailPolicy {
            any_errors_fatal: p.any_errors_fatal,
            max_fail_percentage: p.max_fail_percentage,
        })
        .collect();
    let cfg = RunConfig {
        mode: req.mode,
        diff: req.diff,
        verbose: req.verbose,
        extra_vars: req.extra_vars.clone(),
        command_timeout: req.command_timeout,
        playbook_dir: playbook_dir(&req.playbook),
        tags: req.tags.clone(),
        skip_tags: req.skip_tags.clone(),
        stack_vars,
        read_only_commands: req.stack.is_some(),
        defaults: crate::config::RunDefaults {
            connect: crate::config::connect::with_state_dir(&req.defaults.connect, &req.inventory),
            ..req.defaults.clone()
        },
    };
    let mut runner = Runner::new(
        playbook.plays.clone(),
        play_hosts.clone(),
        inventory,
        connector,
        sink.clone(),
        redactor,
        cfg,
    );
    if let Some(store) = secrets {
        runner = runner.with_secrets(store);
    }
    let runner = Arc::new(runner);
    // Handlers an earlier failed run left pending fire in this run (Ansible forgets them).
    for (pi, play) in playbook.plays.iter().enumerate() {
        for h in &play_hosts[pi] {
            if let Some(names) = previous.get_mut(h) {
                let mine: Vec<String> = names
                    .iter()
                    .filter(|n| {
                        play.handlers.iter().any(|hd| {
                            hd.name.as_deref() == Some(n.as_str()) || hd.listen.contains(n)
                        })
                    })
                    .cloned()
                    .collect();
                names.retain(|n| !mine.contains(n));
                if !mine.is_empty() {
                    runner.restore_pending(h, pi, mine);
                }
            }
        }
    }
    // Each play's PlayStarted comes from the runner as the play begins.
    let summary = walk(&plan, runner.clone(), req.forks, &policies, cancel).await;
    runner.announce_trailing_empty_plays();
    runner.close().await;
    let pending = (req.mode == Mode::Apply).then(|| {
        let mut pending = runner.pending_handlers();
        for (h, names) in previous {
            if !names.is_empty() {
                pending.entry(h).or_default().extend(names);
            }
        }
        pending
    });
    sink.emit(RunEvent::RunFinished {
        duration_ms: started.elapsed().as_millis() as u64,
        cancelled: summary.cancelled,
    });
    Ok(RunResult { summary, pending })
}
