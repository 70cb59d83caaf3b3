//! `provisioner operate --install HOST` and `--uninstall HOST`: an operate instance as a systemd
//! unit on a host of the inventory. A thin layer over the run API: one in-memory play of the
//! stack's role `operate_host` (tasks `main` or `uninstall`) on HOST, with every path computed
//! here and passed as extra vars.
//!
//! Layout on HOST: a system user `provisioner` (no login shell) whose home,
//! [`HOME`] (0700), holds the secrets key; every other control-node file the instance reads
//! (the inventory and the `group_vars/`/`host_vars/` beside it, the state dir without its history
//! and locks, each host's SSH private key and known_hosts file, the local artifacts the inventory
//! names) goes to the same absolute path, owned by that user, 0600 (its directories 0700), so the
//! inventory needs no rewriting. The binary goes to [`BINARY`], the unit to [`UNIT_FILE`].
//!
//! Before anything changes, a read-only check on HOST refuses paths that belong to someone else
//! or that the user could not reach; the play stops there, so a refused install changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Budget, Remediate};
use crate::day2::node::{show_plan, Ended, Say};
use crate::error::{Error, ExitCode};
use crate::exec::events::{Event, RunEvent, Sink, TaskStatus};
use crate::exec::Mode;
use crate::run::{InlinePlay, RunIo, RunSpec, Target};
use crate::shell::quote;

/// The system user the instance runs as.
pub const USER: &str = "provisioner";
/// Its home: the secrets key, the role cache, the install manifest.
pub const HOME: &str = "/var/lib/provisioner-operate";
/// The unit's name and file.
pub const UNIT: &str = "provisioner-operate";
pub const UNIT_FILE: &str = "/etc/systemd/system/provisioner-operate.service";
/// Where the binary goes.
pub const BINARY: &str = "/usr/local/bin/provisioner";
/// The stack's role that does the work.
const ROLE: &str = "operate_host";
/// State dir entries the instance keeps for itself: the history and the locks.
const NOT_COPIED: &[&str] = &[
    "run.lock",
    "history.db",
    "history.db-wal",
    "history.db-shm",
    "history.db-journal",
    "pending-handlers.json",
    ".lock",
];

/// The operate flags the installed instance runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub interval: Duration,
    pub remediate: Remediate,
    pub budget: Budget,
    pub listen: Option<String>,
    /// `--timeout`, seconds.
    pub timeout: u64,
    /// `--elect` with its session timeout (seconds).
    pub elect: Option<u64>,
    pub json: bool,
    /// `--stack-dir`, absolute (its files are copied to the same path).
    pub stack_dir: Option<PathBuf>,
}

impl Forward {
    /// The flags, spelled out (every value explicit, so the unit says what it runs).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--interval".to_string(),
            format!("{}s", self.interval.as_secs()),
            "--remediate".into(),
            match self.remediate {
                Remediate::Off => "off",
                Remediate::Safe => "safe",
                Remediate::All => "all",
            }
            .into(),
            "--max-agents-per-cycle".into(),
            match self.budget {
                Budget::Count(n) => n.to_string(),
                Budget::Percent(p) => format!("{p}%"),
            },
            "--timeout".into(),
            self.timeout.to_string(),
        ];
        if let Some(l) = &self.listen {
            a.extend(["--listen".into(), l.clone()]);
        }
        if let Some(s) = self.elect {
            a.extend([
                "--elect".into(),
                "--elect-session-timeout".into(),
                s.to_string(),
            ]);
        }
        if self.json {
            a.extend(["--output".into(), "json".into()]);
        }
        if let Some(d) = &self.stack_dir {
            a.extend(["--stack-dir".into(), d.display().to_string()]);
        }
        a
    }
}

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub inventory: Vec<PathBuf>,
    pub host: String,
    /// The plan was confirmed (`--yes`).
    pub yes: bool,
    pub forward: Forward,
    /// The secrets key on this machine.
    pub key_file: PathBuf,
    /// This binary.
    pub binary: PathBuf,
}

/// Why a file goes to HOST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Inventory,
    State,
    Key,
    Ssh,
    Artifact,
    Stack,
}

impl Kind {
    fn text(self) -> &'static str {
        match self {
            Kind::Inventory => "inventory",
            Kind::State => "state dir",
            Kind::Key => "secrets key",
            Kind::Ssh => "ssh",
            Kind::Artifact => "artifact",
            Kind::Stack => "stack dir",
        }
    }
}

/// One control-node file and where it goes on HOST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub kind: Kind,
}

/// Everything `--install` puts on HOST besides the binary and the unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The inventory sources, absolute: the unit's `-i`s.
    pub inventory: Vec<PathBuf>,
    /// By destination.
    pub files: Vec<Placed>,
    /// Directories the user owns (0700), parents first.
    pub dirs: Vec<PathBuf>,
    /// Parents of those that are not its own: created (root, 0755) only when missing.
    pub parents: Vec<PathBuf>,
}

/// The files one host's connection reads on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshFiles {
    pub host: String,
    pub keys: Vec<PathBuf>,
    /// `None`: the default, `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
}

/// What the layout is computed from.
pub struct Sources<'a> {
    /// Absolute inventory sources.
    pub inventory: &'a [PathBuf],
    pub stack_dir: Option<&'a Path>,
    pub key_file: &'a Path,
    pub ssh: &'a [SshFiles],
    /// This user's `~/.ssh/known_hosts`, for hosts that use the default.
    pub default_known_hosts: Option<&'a Path>,
    /// Control-node files the inventory's variables name (`*_local_artifact`).
    pub artifacts: &'a [PathBuf],
}

fn walk(
    dir: &Path,
    skip: &dyn Fn(&str) -> bool,
    out: &mut Layout,
    kind: Kind,
) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    out.dirs.push(dir.to_path_buf());
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if skip(&name) {
            continue;
        }
        if p.is_dir() {
            walk(&p, skip, out, kind)?;
        } else if p.is_file() {
            out.files.push(Placed {
                src: p.clone(),
                dest: p,
                kind,
            });
        }
    }
    Ok(())
}

/// Where every file goes. Reads directories on this machine; touches nothing.
pub fn layout(s: &Sources<'_>) -> Result<Layout, String> {
    let mut out = Layout {
        inventory: s.inventory.to_vec(),
        ..Default::default()
    };
    let Some(first) = s.inventory.first() else {
        return Err("no inventory".into());
    };
    let hidden = |n: &str| n.starts_with('.');
    for src in s.inventory {
        if src.is_dir() {
            walk(src, &hidden, &mut out, Kind::Inventory)?;
            continue;
        }
        out.files.push(Placed {
            src: src.clone(),
            dest: src.clone(),
            kind: Kind::Inventory,
        });
        let beside = src.parent().unwrap_or(Path::new("/"));
        for vars in ["group_vars", "host_vars"] {
            let d = beside.join(vars);
            if d.is_dir() {
                walk(&d, &hidden, &mut out, Kind::Inventory)?;
            }
        }
    }
    let state = crate::state::state_dir(first);
    if !state.is_dir() {
        return Err(format!(
            "{} does not exist: run `provisioner apply` first (the instance needs the state dir's secrets)",
            state.display()
        ));
    }
    walk(&state, &|n| NOT_COPIED.contains(&n), &mut out, Kind::State)?;
    if let Some(d) = s.stack_dir {
        walk(d, &hidden, &mut out, Kind::Stack)?;
    }
    if !s.key_file.is_file() {
        return Err(format!(
            "the secrets key {} does not exist: run `provisioner apply` first, or point PROVISIONER_KEY_FILE at it",
            s.key_file.display()
        ));
    }
    out.files.push(Placed {
        src: s.key_file.to_path_buf(),
        dest: Path::new(HOME).join("key"),
        kind: Kind::Key,
    });
    let home_ssh = Path::new(HOME).join(".ssh");
    for h in s.ssh {
        if h.keys.is_empty() {
            return Err(format!(
                "{}: the inventory names no private key (ansible_ssh_private_key_file): an installed instance has no ssh-agent and no ~/.ssh/config, so name the key in the inventory",
                h.host
            ));
        }
        for k in &h.keys {
            out.files.push(Placed {
                src: k.clone(),
                dest: k.clone(),
                kind: Kind::Ssh,
            });
        }
        match &h.known_hosts {
            Some(k) if k == Path::new("/dev/null") => {}
            Some(k) => out.files.push(Placed {
                src: k.clone(),
                dest: k.clone(),
                kind: Kind::Ssh,
            }),
            None => {
                let Some(k) = s.default_known_hosts else {
                    return Err(format!(
                        "{}: its host key is checked against ~/.ssh/known_hosts, which this machine does not have",
                        h.host
                    ));
                };
                out.dirs.push(home_ssh.clone());
                out.files.push(Placed {
                    src: k.to_path_buf(),
                    dest: home_ssh.join("known_hosts"),
                    kind: Kind::Ssh,
                });
            }
        }
    }
    for a in s.artifacts {
        out.files.push(Placed {
            src: a.clone(),
            dest: a.clone(),
            kind: Kind::Artifact,
        });
    }
    // One entry per destination; every file must be readable here.
    let mut by_dest: BTreeMap<PathBuf, Placed> = BTreeMap::new();
    for f in out.files.drain(..) {
        if !f.dest.is_absolute() {
            return Err(format!("{}: not an absolute path", f.dest.display()));
        }
        if let Err(e) = std::fs::File::open(&f.src) {
            return Err(format!(
                "cannot read {} ({}): {e}",
                f.src.display(),
                f.kind.text()
            ));
        }
        by_dest.entry(f.dest.clone()).or_insert(f);
    }
    out.files = by_dest.into_values().collect();
    let dirs: BTreeSet<PathBuf> = out.dirs.drain(..).collect();
    out.dirs = dirs.iter().cloned().collect();
    let home = Path::new(HOME);
    let mut parents = BTreeSet::new();
    for p in out
        .files
        .iter()
        .map(|f| f.dest.as_path())
        .chain(dirs.iter().map(PathBuf::as_path))
    {
        for a in p.ancestors().skip(1) {
            if a == Path::new("/") || a == home || dirs.contains(a) {
                continue;
            }
            parents.insert(a.to_path_buf());
        }
    }
    out.parents = parents.into_iter().collect();
    Ok(out)
}

/// A word of a unit's `ExecStart=` (systemd's quoting: `"` with `\` escapes, `%` and `$`
/// doubled).
fn unit_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=%,@+".contains(c));
    let w = w.replace('%', "%%").replace('$', "$$");
    if plain {
        return w;
    }
    format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The unit file.
pub fn unit_text(inventory: &[PathBuf], forward: &Forward) -> String {
    let mut exec = vec![BINARY.to_string(), "operate".into()];
    for i in inventory {
        exec.extend(["-i".into(), i.display().to_string()]);
    }
    exec.extend(forward.args());
    let exec: Vec<String> = exec.iter().map(|w| unit_word(w)).collect();
    format!(
        "# Written by `provisioner operate --install`; `provisioner operate --uninstall` removes it.\n\
[Unit]\n\
Description=provisioner operate (keeps the Mesos stack converged)\n\
After=network-online.target\n\
Wants=network-online.target\n\
\n\
[Service]\n\
User={USER}\n\
Group={USER}\n\
Environment=HOME={HOME}\n\
Environment=PROVISIONER_KEY_FILE={HOME}/key\n\
WorkingDirectory={HOME}\n\
UMask=0077\n\
ExecStart={}\n\
# SIGTERM lets the running plan or remediation finish.\n\
KillSignal=SIGTERM\n\
TimeoutStopSec=30min\n\
Restart=always\n\
RestartSec=10s\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        exec.join(" ")
    )
}

/// The read-only check before anything changes on HOST: no path it writes belongs to someone
/// else, and every existing parent lets other users through. Prints one line per problem (the
/// role's next task fails with them) and exits 1.
pub fn precheck_script(l: &Layout) -> String {
    let mut s = String::from(
        "bad=0\n\
own() { if [ -e \"$1\" ] || [ -L \"$1\" ]; then o=$(stat -c %U \"$1\"); if [ \"$o\" != provisioner ]; then echo \"$1 exists and belongs to $o, not provisioner: move it away or install elsewhere\"; bad=1; fi; fi; }\n\
reach() { if [ -e \"$1\" ]; then if [ ! -d \"$1\" ]; then echo \"$1 is not a directory\"; bad=1; else m=$(stat -c %a \"$1\"); case $m in *[1357]) ;; *) echo \"$1 (mode $m) does not let other users through: the provisioner user could not read the files under it\"; bad=1;; esac; fi; fi; }\n",
    );
    for p in l.files.iter().map(|f| &f.dest).chain(&l.dirs) {
        if !p.starts_with(HOME) {
            s.push_str(&format!("own {}\n", quote(&p.display().to_string())));
        }
    }
    for p in &l.parents {
        s.push_str(&format!("reach {}\n", quote(&p.display().to_string())));
    }
    s.push_str("exit $bad\n");
    s
}

/// What `--install` leaves for `--uninstall` to remove: one path a line.
pub fn manifest(l: &Layout) -> String {
    let mut paths: BTreeSet<String> = l
        .files
        .iter()
        .map(|f| f.dest.display().to_string())
        .collect();
    paths.extend(l.dirs.iter().map(|d| d.display().to_string()));
    paths.into_iter().map(|p| p + "\n").collect()
}

/// `--uninstall`: remove every path of the manifest left on HOST and of `l`, deepest first,
/// where the provisioner user owns it; then its home. Prints `removed PATH` per path.
pub fn remove_script(l: Option<&Layout>) -> String {
    let extra = l.map(manifest).unwrap_or_default();
    let mut s = format!(
        "list=$( {{ cat {home}/manifest 2>/dev/null; printf '%s' {extra}; }} | grep '^/' | sort -ru )\n",
        home = HOME,
        extra = quote(&extra)
    );
    s.push_str(&format!(
        "printf '%s\\n' \"$list\" {home} | while IFS= read -r p; do\n\
  [ -n \"$p\" ] || continue\n\
  if [ -e \"$p\" ] && [ \"$(stat -c %U \"$p\")\" = provisioner ]; then rm -rf -- \"$p\" && echo \"removed $p\"; fi\n\
done\n",
        home = HOME
    ));
    s
}

/// The extra vars of the install play.
fn install_vars(l: &Layout, binary: &Path, forward: &Forward) -> serde_json::Map<String, Value> {
    let mut v = serde_json::Map::new();
    v.insert("operate_host_home".into(), json!(HOME));
    v.insert("operate_host_precheck".into(), json!(precheck_script(l)));
    v.insert("operate_host_parents".into(), json!(l.parents));
    v.insert("operate_host_dirs".into(), json!(l.dirs));
    v.insert(
        "operate_host_files".into(),
        json!(l
            .files
            .iter()
            .map(|f| json!({"src": f.src, "dest": f.dest}))
            .collect::<Vec<_>>()),
    );
    v.insert("operate_host_binary".into(), json!(binary));
    v.insert(
        "operate_host_unit".into(),
        json!(unit_text(&l.inventory, forward)),
    );
    v.insert("operate_host_manifest".into(), json!(manifest(l)));
    v
}

/// Refuse bad input before anything: HOST in the inventory, a `--listen` address that parses.
pub fn check_input(inv: &crate::model::inventory::Inventory, opts: &Options) -> Result<(), String> {
    if !inv.hosts.contains_key(&opts.host) {
        return Err(format!(
            "{} is not a host of the inventory: add it (e.g. to a group `operators`) first",
            opts.host
        ));
    }
    if let Some(l) = &opts.forward.listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "--listen {l}: give an address and port, like 0.0.0.0:9465"
            ));
        }
    }
    Ok(())
}

/// `--elect`: every instance must authenticate to ZooKeeper with the same password, so it must
/// be in the store before it is copied (an instance that generated its own could not join).
fn elect_secret_ready(inventory: &Path, forward: &Forward) -> Result<(), String> {
    let f = crate::state::state_dir(inventory)
        .join("secrets/password")
        .join(format!("{}.enc", super::election::SECRET));
    if forward.elect.is_some() && !f.is_file() {
        return Err(format!(
            "--elect: the operators' ZooKeeper password is not generated yet ({} is missing); run `provisioner operate -i {} --elect --once` here first, so that every instance gets the same one",
            f.display(),
            inventory.display()
        ));
    }
    Ok(())
}

/// Absolute inventory sources (the unit runs elsewhere, in another directory).
fn absolute(inventory: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    inventory
        .iter()
        .map(|p| std::fs::canonicalize(p).map_err(|e| format!("inventory {}: {e}", p.display())))
        .collect()
}

/// Each host's SSH files, as its connection reads them (ansible vars, ssh args, ansible.cfg).
fn ssh_files(
    inventory: &[PathBuf],
    inv: &crate::model::inventory::Inventory,
) -> Result<Vec<SshFiles>, String> {
    inv.hosts
        .keys()
        .map(|h| {
            let t = crate::day2::node::connect_target(inventory, inv, h)?;
            Ok(SshFiles {
                host: h.clone(),
                keys: t.identity_files,
                known_hosts: t.known_hosts,
            })
        })
        .collect()
}

/// The control-node files the inventory's variables name for the stack's local-artifact path
/// (`mesos_local_artifact`, `mesos_dns_local_artifact`, ...).
fn artifacts(inv: &crate::model::inventory::Inventory) -> Vec<PathBuf> {
    let mut out = BTreeSet::new();
    for h in inv.hosts.keys() {
        for (k, v) in inv.host_vars(h).iter() {
            if let (true, Some(p)) = (k.ends_with("_local_artifact"), v.as_str()) {
                let p = PathBuf::from(p);
                if p.is_absolute() && p.is_file() {
                    out.insert(p);
                }
            }
        }
    }
    out.into_iter().collect()
}

fn home_known_hosts() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME")?).join(".ssh/known_hosts");
    p.is_file().then_some(p)
}

/// A task that changed, with its loop item.
type Change = (String, Option<String>);

/// Collects which tasks changed.
#[derive(Clone, Default)]
struct Changes(Arc<Mutex<Vec<Change>>>);

impl Sink for Changes {
    fn event(&mut self, e: &Event) -> Result<(), String> {
        if let RunEvent::TaskFinished(r) = &e.body {
            // The uninstall's list of removed paths (a `debug` task: never changed).
            if r.task.ends_with("operate_host | removed") {
                let mut c = self.0.lock().map_err(|_| "poisoned")?;
                for line in r.msg.as_deref().unwrap_or_default().lines() {
                    c.push((line.trim().to_string(), None));
                }
            } else if r.changed && r.status != TaskStatus::Failed {
                self.0
                    .lock()
                    .map_err(|_| "poisoned")?
                    .push((r.task.clone(), r.item.clone()));
            }
        }
        Ok(())
    }
}

/// One line per change: a loop's items, without the loop's own summary result.
fn change_lines(changes: &[Change]) -> Vec<String> {
    let looped: BTreeSet<&String> = changes
        .iter()
        .filter(|(_, i)| i.is_some())
        .map(|(t, _)| t)
        .collect();
    changes
        .iter()
        .filter_map(|(t, i)| match i {
            Some(i) => Some(format!("{t} ({i})")),
            None if looped.contains(t) => None,
            None => Some(t.clone()),
        })
        .collect()
}

fn run_role(
    opts: &Options,
    command: &str,
    tasks_from: Option<&str>,
    vars: serde_json::Map<String, Value>,
) -> Result<(crate::run::Outcome, Vec<String>), Error> {
    let play = InlinePlay {
        tasks_from: tasks_from.map(str::to_string),
        ..InlinePlay::role(command, &opts.host, ROLE)
    };
    let mut spec = RunSpec::new(
        command,
        opts.inventory.clone(),
        // The role is the tool's, not the stack's: always the built-in copy.
        Target::Stack {
            dir: None,
            play: Some(play),
        },
        Mode::Apply,
    );
    spec.extra_vars.extend(vars);
    spec.limit = Some(opts.host.clone());
    let changes = Changes::default();
    let io = RunIo {
        sinks: vec![Box::new(changes.clone())],
        ..Default::default()
    };
    let outcome = crate::run::run(&spec, io)?;
    let changed = changes
        .0
        .lock()
        .map(|c| change_lines(&c))
        .unwrap_or_default();
    Ok((outcome, changed))
}

fn load(opts: &Options) -> Result<crate::model::inventory::Inventory, Error> {
    crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)
}

/// `--install HOST`: print the plan; with `--yes`, set the instance up.
pub fn install(opts: &Options, say: Say<'_>) -> Result<Ended, Error> {
    let inv = load(opts)?;
    if let Err(why) = check_input(&inv, opts) {
        return Ok(Ended::Refused(why));
    }
    let sources = match absolute(&opts.inventory) {
        Ok(s) => s,
        Err(why) => return Ok(Ended::Refused(why)),
    };
    let ssh = match ssh_files(&opts.inventory, &inv) {
        Ok(s) => s,
        Err(why) => return Ok(Ended::Refused(why)),
    };
    let stack_dir = match &opts.forward.stack_dir {
        Some(d) => match std::fs::canonicalize(d) {
            Ok(d) => Some(d),
            Err(e) => return Ok(Ended::Refused(format!("--stack-dir {}: {e}", d.display()))),
        },
        None => None,
    };
    let known = home_known_hosts();
    let arts = artifacts(&inv);
    let layout = match layout(&Sources {
        inventory: &sources,
        stack_dir: stack_dir.as_deref(),
        key_file: &opts.key_file,
        ssh: &ssh,
        default_known_hosts: known.as_deref(),
        artifacts: &arts,
    }) {
        Ok(l) => l,
        Err(why) => return Ok(Ended::Refused(why)),
    };
    if let Err(why) = elect_secret_ready(&sources[0], &opts.forward) {
        return Ok(Ended::Refused(why));
    }
    let forward = Forward {
        stack_dir: stack_dir.clone(),
        ..opts.forward.clone()
    };
    let mut command = vec![BINARY.to_string(), "operate".into()];
    for i in &layout.inventory {
        command.extend(["-i".into(), i.display().to_string()]);
    }
    command.extend(forward.args());
    let files: String = layout
        .files
        .iter()
        .map(|f| format!("\n       {} [{}]", f.dest.display(), f.kind.text()))
        .collect();
    let plan = vec![
        format!(
            "on {}: a system user `{USER}` without a login shell, its home {HOME} (0700)",
            opts.host
        ),
        format!(
            "copy this binary ({}) to {BINARY} (0755)",
            opts.binary.display()
        ),
        format!(
            "copy {} file(s) to the same paths, owned by {USER}, 0600 (their directories 0700), the secrets key to {HOME}/key:{files}",
            layout.files.len()
        ),
        format!(
            "write {UNIT_FILE} (User={USER}, Restart=always), enable and start it: {}",
            command.join(" ")
        ),
    ];
    if !show_plan(opts.yes, say, &plan) {
        return Ok(Ended::Planned);
    }
    let vars = install_vars(&layout, &opts.binary, &forward);
    let (outcome, changed) = run_role(opts, "operate install", None, vars)?;
    for w in &outcome.warnings {
        say(&format!("[WARNING]: {w}"));
    }
    if outcome.exit != ExitCode::Ok {
        // The pre-check's refusal: nothing was changed.
        if let Some(f) = outcome
            .recap
            .failures
            .iter()
            .find(|f| f.task.ends_with("operate_host | refused"))
        {
            return Ok(Ended::Refused(format!("{}: {}", opts.host, f.msg.trim())));
        }
        for c in &changed {
            say(&format!("changed: {c}"));
        }
        return Ok(Ended::Failed(format!(
            "installing on {} failed: {}; {}",
            opts.host,
            crate::day2::failures_text(&outcome),
            if changed.is_empty() {
                "nothing was changed there".to_string()
            } else {
                format!(
                    "what it changed is listed above: run it again, or `operate --uninstall {}` to remove it",
                    opts.host
                )
            }
        )));
    }
    if changed.is_empty() {
        say(&format!(
            "{}: already installed, nothing changed",
            opts.host
        ));
    } else {
        for c in &changed {
            say(&format!("changed: {c}"));
        }
    }
    say(&format!(
        "{UNIT} runs on {} (journalctl -u {UNIT} there)",
        opts.host
    ));
    if let Some(l) = &forward.listen {
        let port = l.rsplit(':').next().unwrap_or("9465");
        let addr = inv
            .host_vars(&opts.host)
            .get("ansible_host")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| opts.host.clone());
        say(&format!(
            "for the stack's Prometheus, add \"{addr}:{port}\" to monitoring_operate_targets in the inventory, then `provisioner apply`"
        ));
    }
    Ok(Ended::Done)
}

/// `--uninstall HOST`: print the plan; with `--yes`, stop and remove the unit, the copied files
/// (secrets included), the binary and the user.
pub fn uninstall(opts: &Options, say: Say<'_>) -> Result<Ended, Error> {
    let inv = load(opts)?;
    if let Err(why) = check_input(&inv, opts) {
        return Ok(Ended::Refused(why));
    }
    // The paths of an install from this inventory, when it can be computed here; the manifest
    // on HOST lists what was really placed.
    let known = home_known_hosts();
    let arts = artifacts(&inv);
    let computed = match (absolute(&opts.inventory), ssh_files(&opts.inventory, &inv)) {
        (Ok(sources), Ok(ssh)) => layout(&Sources {
            inventory: &sources,
            stack_dir: None,
            key_file: &opts.key_file,
            ssh: &ssh,
            default_known_hosts: known.as_deref(),
            artifacts: &arts,
        })
        .ok(),
        _ => None,
    };
    let plan = vec![
        format!("on {}: stop and disable {UNIT}, remove {UNIT_FILE}", opts.host),
        format!(
            "remove every file and directory listed in {HOME}/manifest (and of this inventory's layout) that the user `{USER}` owns: the inventory, the state dir and the secrets key, SSH keys; then {HOME}"
        ),
        format!("remove {BINARY} and the user `{USER}`"),
    ];
    if !show_plan(opts.yes, say, &plan) {
        return Ok(Ended::Planned);
    }
    let mut vars = serde_json::Map::new();
    vars.insert(
        "operate_host_remove".into(),
        json!(remove_script(computed.as_ref())),
    );
    let (outcome, changed) = run_role(opts, "operate uninstall", Some("uninstall"), vars)?;
    for w in &outcome.warnings {
        say(&format!("[WARNING]: {w}"));
    }
    if outcome.exit != ExitCode::Ok {
        return Ok(Ended::Failed(format!(
            "uninstalling from {} failed: {}; run it again",
            opts.host,
            crate::day2::failures_text(&outcome)
        )));
    }
    if changed.is_empty() {
        say(&format!("{}: nothing was installed", opts.host));
    } else {
        for c in &changed {
            if c.starts_with("removed ") {
                say(c);
            } else {
                say(&format!("changed: {c}"));
            }
        }
    }
    Ok(Ended::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> Forward {
        Forward {
            interval: Duration::from_secs(10),
            remediate: Remediate::Safe,
            budget: Budget::Percent(10),
            listen: Some("0.0.0.0:9466".into()),
            timeout: 1800,
            elect: None,
            json: false,
            stack_dir: None,
        }
    }

    #[test]
    fn every_flag_is_forwarded_explicitly() {
        assert_eq!(
            forward().args().join(" "),
            "--interval 10s --remediate safe --max-agents-per-cycle 10% --timeout 1800 --listen 0.0.0.0:9466"
        );
        let f = Forward {
            remediate: Remediate::Off,
            budget: Budget::Count(2),
            listen: None,
            elect: Some(6),
            json: true,
            interval: Duration::from_secs(300),
            stack_dir: Some("/srv/roles".into()),
            ..forward()
        };
        assert_eq!(
            f.args().join(" "),
            "--interval 300s --remediate off --max-agents-per-cycle 2 --timeout 1800 --elect --elect-session-timeout 6 --output json --stack-dir /srv/roles"
        );
    }

    #[test]
    fn the_unit_runs_as_the_user_with_the_key_in_its_home() {
        let u = unit_text(&[PathBuf::from("/srv/my cluster/prod.yml")], &forward());
        assert!(u.contains("\nUser=provisioner\n"), "{u}");
        assert!(u.contains("\nRestart=always\n"), "{u}");
        assert!(
            u.contains("\nEnvironment=PROVISIONER_KEY_FILE=/var/lib/provisioner-operate/key\n"),
            "{u}"
        );
        assert!(
            u.contains("\nExecStart=/usr/local/bin/provisioner operate -i \"/srv/my cluster/prod.yml\" --interval 10s --remediate safe --max-agents-per-cycle 10%% --timeout 1800 --listen 0.0.0.0:9466\n"),
            "{u}"
        );
    }

    #[test]
    fn elect_is_refused_until_the_shared_zookeeper_password_exists() {
        let t = Tree::new();
        let inv = t.p("inv/prod.yml");
        let elect = Forward {
            elect: Some(10),
            ..forward()
        };
        assert_eq!(elect_secret_ready(&inv, &forward()), Ok(()));
        assert!(elect_secret_ready(&inv, &elect)
            .unwrap_err()
            .contains("--elect --once"));
        std::fs::write(
            t.p("inv/.prod.state/secrets/password/zookeeper_operate.enc"),
            "e",
        )
        .unwrap();
        assert_eq!(elect_secret_ready(&inv, &elect), Ok(()));
    }

    #[test]
    fn a_loop_reports_its_items_not_its_summary() {
        let c = |t: &str, i: Option<&str>| (t.to_string(), i.map(str::to_string));
        assert_eq!(
            change_lines(&[c("dirs", Some("/a")), c("dirs", None), c("unit", None)]),
            ["dirs (/a)", "unit"]
        );
    }

    #[test]
    fn unit_words_are_quoted_the_systemd_way() {
        assert_eq!(unit_word("plain/path.yml"), "plain/path.yml");
        assert_eq!(unit_word("a b"), "\"a b\"");
        assert_eq!(unit_word("10%"), "10%%");
        assert_eq!(unit_word("$HOME\"x"), "\"$$HOME\\\"x\"");
        assert_eq!(unit_word(""), "\"\"");
    }

    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Tree {
            let t = Tree(tempfile::tempdir().unwrap());
            for (p, c) in [
                ("inv/prod.yml", "all: {}\n"),
                ("inv/group_vars/all.yml", "x: 1\n"),
                ("inv/host_vars/m1/conn.yml", "y: 2\n"),
                ("inv/.prod.state/allocations.json", "{}"),
                ("inv/.prod.state/secrets/.keycheck", "k"),
                ("inv/.prod.state/secrets/.lock", ""),
                ("inv/.prod.state/secrets/password/zk.enc", "e"),
                ("inv/.prod.state/history.db", "h"),
                ("inv/.prod.state/history.db-wal", "h"),
                ("inv/.prod.state/run.lock", "l"),
                ("inv/.prod.state/pending-handlers.json", "{}"),
                ("inv/other.txt", "not mine"),
                ("home/.config/provisioner/key", "KEY"),
                ("keys/id", "PRIVATE"),
                ("keys/known_hosts", "kh"),
                ("home/.ssh/known_hosts", "kh2"),
                ("art/mesos.tar.gz", "tar"),
            ] {
                let f = t.0.path().join(p);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                std::fs::write(f, c).unwrap();
            }
            t
        }
        fn p(&self, rel: &str) -> PathBuf {
            self.0.path().join(rel)
        }
    }

    fn sources_layout(t: &Tree, ssh: &[SshFiles]) -> Result<Layout, String> {
        layout(&Sources {
            inventory: &[t.p("inv/prod.yml")],
            stack_dir: None,
            key_file: &t.p("home/.config/provisioner/key"),
            ssh,
            default_known_hosts: Some(&t.p("home/.ssh/known_hosts")),
            artifacts: &[t.p("art/mesos.tar.gz")],
        })
    }

    fn ssh(t: &Tree, known: Option<&str>) -> Vec<SshFiles> {
        vec![SshFiles {
            host: "m1".into(),
            keys: vec![t.p("keys/id")],
            known_hosts: known.map(|k| t.p(k)),
        }]
    }

    #[test]
    fn the_layout_copies_what_the_instance_reads_and_never_the_history_or_locks() {
        let t = Tree::new();
        let l = sources_layout(&t, &ssh(&t, Some("keys/known_hosts"))).unwrap();
        let dests: Vec<String> = l
            .files
            .iter()
            .map(|f| {
                f.dest
                    .strip_prefix(t.0.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| f.dest.display().to_string())
            })
            .collect();
        let mut dests = dests;
        dests.sort();
        assert_eq!(
            dests,
            [
                "/var/lib/provisioner-operate/key",
                "art/mesos.tar.gz",
                "inv/.prod.state/allocations.json",
                "inv/.prod.state/secrets/.keycheck",
                "inv/.prod.state/secrets/password/zk.enc",
                "inv/group_vars/all.yml",
                "inv/host_vars/m1/conn.yml",
                "inv/prod.yml",
                "keys/id",
                "keys/known_hosts",
            ]
        );
        let key = l.files.iter().find(|f| f.kind == Kind::Key).unwrap();
        assert_eq!(key.dest, PathBuf::from("/var/lib/provisioner-operate/key"));
        assert_eq!(key.src, t.p("home/.config/provisioner/key"));
        assert_eq!(key.kind, Kind::Key);
        // Its own directories, 0700; the parents above them are only created when missing.
        for d in [
            "inv/.prod.state",
            "inv/.prod.state/secrets/password",
            "inv/group_vars",
            "inv/host_vars/m1",
        ] {
            assert!(l.dirs.contains(&t.p(d)), "{d} in {:?}", l.dirs);
        }
        assert!(!l.dirs.contains(&t.p("inv")));
        assert!(l.parents.contains(&t.p("inv")));
        assert!(l.parents.contains(&t.p("keys")));
        assert!(!l.parents.iter().any(|p| l.dirs.contains(p)));
        assert!(!l.parents.contains(&PathBuf::from("/")));
        assert_eq!(l.inventory, vec![t.p("inv/prod.yml")]);
    }

    #[test]
    fn the_default_known_hosts_goes_to_the_users_home() {
        let t = Tree::new();
        let l = sources_layout(&t, &ssh(&t, None)).unwrap();
        let f = l
            .files
            .iter()
            .find(|f| f.src == t.p("home/.ssh/known_hosts"))
            .unwrap();
        assert_eq!(
            f.dest,
            PathBuf::from("/var/lib/provisioner-operate/.ssh/known_hosts")
        );
        assert!(l
            .dirs
            .contains(&PathBuf::from("/var/lib/provisioner-operate/.ssh")));
    }

    #[test]
    fn what_the_instance_could_not_use_is_refused_before_anything() {
        let t = Tree::new();
        let no_key = vec![SshFiles {
            host: "m1".into(),
            keys: vec![],
            known_hosts: None,
        }];
        assert!(sources_layout(&t, &no_key)
            .unwrap_err()
            .contains("names no private key"));
        let missing = vec![SshFiles {
            host: "m1".into(),
            keys: vec![t.p("keys/nope")],
            known_hosts: None,
        }];
        assert!(sources_layout(&t, &missing)
            .unwrap_err()
            .contains("keys/nope"));
        std::fs::remove_file(t.p("home/.config/provisioner/key")).unwrap();
        assert!(sources_layout(&t, &ssh(&t, None))
            .unwrap_err()
            .contains("secrets key"));
        std::fs::remove_dir_all(t.p("inv/.prod.state")).unwrap();
        assert!(sources_layout(&t, &ssh(&t, None))
            .unwrap_err()
            .contains("run `provisioner apply` first"));
    }

    #[test]
    fn the_precheck_guards_every_path_outside_the_users_home() {
        let t = Tree::new();
        let l = sources_layout(&t, &ssh(&t, None)).unwrap();
        let s = precheck_script(&l);
        let inv = t.p("inv/prod.yml").display().to_string();
        assert!(s.contains(&format!("own {inv}\n")), "{s}");
        assert!(
            s.contains(&format!("reach {}\n", t.p("inv").display())),
            "{s}"
        );
        assert!(!s.contains("own /var/lib/provisioner-operate"), "{s}");
        assert!(s.ends_with("exit $bad\n"));
    }

    /// The pre-check on this machine: a file that belongs to someone else stops it.
    #[test]
    fn the_precheck_refuses_a_path_that_belongs_to_someone_else() {
        let t = Tree::new();
        let l = sources_layout(&t, &ssh(&t, None)).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &precheck_script(&l)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "{} exists and belongs to",
                t.p("inv/prod.yml").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn the_manifest_lists_files_and_directories_once() {
        let t = Tree::new();
        let l = sources_layout(&t, &ssh(&t, None)).unwrap();
        let m = manifest(&l);
        assert!(m.contains("/var/lib/provisioner-operate/key\n"));
        assert!(m.contains(&format!("{}\n", t.p("inv/.prod.state").display())));
        let lines: Vec<&str> = m.lines().collect();
        let set: BTreeSet<&str> = lines.iter().copied().collect();
        assert_eq!(lines.len(), set.len());
    }

    /// The removal on this machine: only paths the provisioner user owns go (here none does).
    #[test]
    fn uninstall_removes_only_what_the_user_owns() {
        let t = Tree::new();
        let l = sources_layout(&t, &ssh(&t, None)).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &remove_script(Some(&l))])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        assert!(t.p("inv/prod.yml").exists());
        assert!(t.p("inv/.prod.state/secrets/password/zk.enc").exists());
    }

    #[test]
    fn a_host_outside_the_inventory_or_a_bad_listen_is_refused() {
        let inv = crate::day2::status::tests::inventory("[masters]\nm1\n[extra]\nx1\n");
        let mut o = Options {
            inventory: vec![],
            host: "x9".into(),
            yes: false,
            forward: forward(),
            key_file: PathBuf::new(),
            binary: PathBuf::new(),
        };
        assert!(check_input(&inv, &o)
            .unwrap_err()
            .contains("x9 is not a host of the inventory"));
        o.host = "x1".into();
        assert_eq!(check_input(&inv, &o), Ok(()));
        o.forward.listen = Some("9466".into());
        assert!(check_input(&inv, &o).unwrap_err().contains("--listen 9466"));
    }
}
