//! Command-line interface (clap). Parses arguments and dispatches to the pipeline; the only
//! output goes through `report`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::ansible_cfg::AnsibleConfig;
use crate::error::{Error, ExitCode};
use crate::exec::Mode;
use crate::report::human::HumanOptions;
use crate::report::terminal::{self, Output};
use crate::report::{eprint_line, print_line};
use crate::run::{RunIo, RunSpec, Target};

#[derive(Debug, Parser)]
#[command(
    name = "provisioner",
    version,
    about = "Install and converge an Apache Mesos stack over SSH"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the inventory, playbook (default: the bundled stack), roles and templates; touch no host.
    Validate(RunArgs),
    /// Show what would change on each host (check mode, with diffs); change nothing.
    Plan(PlanArgs),
    /// Converge every host: the bundled Mesos stack, or the playbook given.
    Apply(RunArgs),
    /// Run an Ansible playbook written in the supported subset (a playbook is required).
    Play(RunArgs),
    /// The bundled stack's components (cluster-core/bundle.yaml).
    Bundle(BundleArgs),
    /// Print the version and exit.
    Version,
    /// Local test clusters of real systemd hosts (systemd-nspawn + debootstrap).
    Lab(crate::lab::LabArgs),
    /// The cluster's TLS material (CA and host certificates, kept encrypted in the state dir).
    Tls(TlsArgs),
    /// Print a shell completion script (e.g. `provisioner completions bash > /etc/bash_completion.d/provisioner`).
    Completions {
        #[arg(value_enum)]
        shell: crate::manual::Shell,
    },
    /// Print the man page (roff): `provisioner man | man -l -`; `provisioner man lab up` for a subcommand's.
    Man {
        /// A subcommand path (`apply`, `lab up`); none for the main page.
        command: Vec<String>,
    },
    /// The cluster's health: ZooKeeper, Mesos masters and agents, DNS, services, alerts,
    /// certificates. Read-only, no lock; exit 0 healthy, 1 degraded (a critical flag).
    Status(StatusArgs),
    /// Roll Mesos (and ZooKeeper) to the versions the bundle or the inventory asks for: every
    /// gate green first, masters one at a time with the leader last, then agents in batches in
    /// maintenance windows. Halts at a safe point on a red gate, a failure or Ctrl-C; run it
    /// again to resume.
    Upgrade(UpgradeArgs),
    /// Agents join or leave the cluster (masters and ZooKeeper members: refused for now; see
    /// the README's Day 2 section).
    Node(NodeArgs),
    /// Keep the stack converged: every interval, plan; remediate drifted hosts within bounds
    /// (one quorum member per cycle, an agent budget, never a quorum member while its gates are
    /// red under `safe`); serve metrics with --listen. SIGTERM/SIGINT: the running step
    /// finishes, exit 0.
    Operate(OperateArgs),
    /// One archive of what the cluster cannot rebuild from its inventory: ZooKeeper's data
    /// (the member with the highest zxid), the leading master's replicated log (frozen for the
    /// copy), each component's config and the state dir (secrets stay encrypted). `--verify
    /// FILE` checks an archive offline.
    Backup(BackupArgs),
    /// Put a backup back: verify every checksum first, stop the cluster (with --stop-cluster),
    /// move the current data aside (never deleted), restore the same ZooKeeper data on every
    /// member and the same replicated log on every master, start with log auto-initialization
    /// off, and gate: one leader, every master recovered, agents re-registered.
    Restore(RestoreArgs),
    /// The run history of an inventory (`history.db` in its state dir): every apply, plan,
    /// play and day-2 command, with per-host task results.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct OperateArgs {
    #[arg(short = 'i', long = "inventory", required = true)]
    pub inventory: Vec<PathBuf>,
    /// One cycle, then exit: 0 converged (no drift, or all remediated), 4 drift left (also
    /// under --remediate off), 1 a remediation failed, 5 another run held the lock.
    #[arg(long)]
    pub once: bool,
    /// Set this operator up on HOST (a host of the inventory) as the systemd unit
    /// provisioner-operate, running with the other flags given here: a system user
    /// `provisioner`, this binary, the inventory, state dir, secrets key and SSH keys copied
    /// (readable by that user alone). Prints the plan; --yes does it.
    #[arg(long, value_name = "HOST", conflicts_with_all = ["once", "uninstall"])]
    pub install: Option<String>,
    /// Stop and remove what --install set up on HOST (the unit, the copied files and secrets,
    /// the binary, the user). Prints the plan; --yes does it.
    #[arg(long, value_name = "HOST", conflicts_with = "once")]
    pub uninstall: Option<String>,
    /// With --install/--uninstall: do it (without: only the plan is shown).
    #[arg(long)]
    pub yes: bool,
    /// Time between cycles (`90s`, `5m`, `1h`; ± 10 % jitter).
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    pub interval: Duration,
    /// `off`: report only; `safe`: remediate, but no quorum member while a quorum gate is red;
    /// `all`: remediate whatever the gates say. Always at most one quorum member per cycle.
    #[arg(long, value_enum, default_value = "safe")]
    pub remediate: crate::operate::Remediate,
    /// Agents remediated per cycle: a count or a percentage of the agents (at least 1).
    #[arg(long = "max-agents-per-cycle", default_value = "10%", value_parser = crate::operate::Budget::parse)]
    pub max_agents_per_cycle: crate::operate::Budget,
    /// Serve `/metrics` (Prometheus) and `/healthz` on ADDR (`127.0.0.1:9465`, `0.0.0.0:9465`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The longest one remote command may run, in seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    pub timeout: u64,
    /// Several operators: elect one active instance through the stack's ZooKeeper (an
    /// ephemeral znode under /provisioner/operate); the others stand by.
    #[arg(long)]
    pub elect: bool,
    /// --elect: the ZooKeeper session timeout; a standby takes over this long after the active
    /// instance dies (the ensemble bounds it: 4 s to 40 s with its default tickTime).
    #[arg(
        long = "elect-session-timeout",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub elect_session_timeout: u64,
    /// `human` (default) or `json` (one event per line).
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
    /// The stack's roles from this directory instead of the built-in copy (read again at each
    /// cycle).
    #[arg(long = "stack-dir")]
    pub stack_dir: Option<PathBuf>,
}

/// `--interval`: `90s`, `5m`, `1h`, or plain seconds; at least 1 s.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: give a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("`{s}`: give a duration like 30s, 5m or 1h")),
    };
    if secs == 0 {
        return Err(format!("`{s}`: at least 1s"));
    }
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: HistoryCommand,
}

/// What every `history` subcommand takes.
#[derive(Debug, Args)]
pub struct HistoryOpts {
    /// The inventory whose state dir holds the history.
    #[arg(short = 'i', long = "inventory", required = true)]
    pub inventory: PathBuf,
    /// `human` (default) or `json` (one JSON document).
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// The runs, newest first: id, command, start, duration, exit code, hosts changed.
    List {
        #[command(flatten)]
        opts: HistoryOpts,
        /// At most N runs.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
    /// One run: who ran what where, its steps, and each host's task results.
    Show {
        #[command(flatten)]
        opts: HistoryOpts,
        /// A run id, a unique prefix of one, or `last`.
        run: String,
    },
    /// The tasks whose status, changed flag or diff differ between two runs.
    Diff {
        #[command(flatten)]
        opts: HistoryOpts,
        /// A run id, a unique prefix of one, or `last`.
        run1: String,
        /// A run id, a unique prefix of one, or `last`.
        run2: String,
    },
    /// What would change (plan, check runs, operate cycles) or changed (apply runs), per host
    /// and task, newest first.
    Drift {
        #[command(flatten)]
        opts: HistoryOpts,
        /// Only since then: a duration back from now (`90s`, `30m`, `24h`, `7d`) or a UTC time
        /// (`2026-01-31`, `2026-01-31T12:00:00Z`).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Install the stack on hosts new in the inventory. Agents: no other host is touched, then
    /// wait until each is an active agent. Masters (and ZooKeeper members): the running masters
    /// restart with the new quorum and server list one at a time first, then the new masters
    /// start together; the count must stay odd. A host whose address is still a live ZooKeeper
    /// member or log replica is refused.
    Add {
        #[command(flatten)]
        opts: NodeOpts,
        /// Join hosts even when their address still serves as a ZooKeeper member or a master's
        /// log replica. This risks two members with one identity: a split ensemble or a log
        /// that loses writes. Only for a machine you know is being retired.
        #[arg(long)]
        force: bool,
    },
    /// Take hosts out. Agents: drain them (their tasks end) and mark them gone, stop the agent
    /// and wipe its work dir; with --unreachable (a dead host): mark them gone through the
    /// master, with no SSH to them. Masters and ZooKeeper members: ZooKeeper's leader moved to a
    /// staying member, the leaving masters stopped for good, the staying members rolled to the
    /// new quorum and server list, the leaving ZooKeeper members stopped; the count must stay odd.
    Remove {
        #[command(flatten)]
        opts: NodeOpts,
        /// The hosts are dead: only the master is used, the hosts are never contacted (their
        /// tasks are lost).
        #[arg(long)]
        unreachable: bool,
    },
    /// A machine was rebuilt (same name and address, new disk and host keys): accept its new
    /// host key (shown; refused while it still answers with the old one). An agent: retire its
    /// old agent id, install it, wait until it is active under a new id. A master or ZooKeeper
    /// member: retire its ZooKeeper id, install it under a new one, roll the others' server
    /// lists (leader last), wait until every member serves and every master has recovered.
    Replace {
        #[command(flatten)]
        opts: NodeOpts,
        /// Accept the new key only if it has this fingerprint (`SHA256:...`, from the machine's
        /// console or its installer).
        #[arg(long = "expect-fingerprint", value_name = "SHA256")]
        expect_fingerprint: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct NodeOpts {
    /// The hosts (inventory names).
    #[arg(required = true)]
    pub hosts: Vec<String>,
    #[arg(short = 'i', long = "inventory", required = true)]
    pub inventory: Vec<PathBuf>,
    /// Do it: without --yes the plan is shown and nothing changes.
    #[arg(long)]
    pub yes: bool,
    /// How long each gate may stay red.
    #[arg(long = "gate-timeout", default_value_t = 300, value_name = "SECONDS")]
    pub gate_timeout: u64,
    /// The stack's roles from this directory instead of the built-in copy.
    #[arg(long = "stack-dir")]
    pub stack_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The inventory of the cluster to back up.
    #[arg(short = 'i', long = "inventory", required_unless_present = "verify")]
    pub inventory: Vec<PathBuf>,
    /// The archive to write (default: `.<inventory>.backups/backup-<UTC time>.tar.gz` beside
    /// the inventory's state dir).
    #[arg(short = 'o', long = "output", conflicts_with = "verify")]
    pub output: Option<PathBuf>,
    /// Keep the newest N `backup-*.tar.gz` in the archive's directory (0: keep all).
    #[arg(long, default_value_t = crate::day2::backup::DEFAULT_KEEP, value_name = "N")]
    pub keep: usize,
    /// Progress as `human` (default) or `json` (one event per line); `-o` names the archive.
    #[arg(long = "format", value_enum, default_value = "human")]
    pub format: Output,
    /// Check FILE offline (every file's size and sha256 against its manifest) and exit: 0 when
    /// it is whole, 1 with the first problem otherwise.
    #[arg(long, value_name = "FILE")]
    pub verify: Option<PathBuf>,
    /// The stack's roles from this directory instead of the built-in copy.
    #[arg(long = "stack-dir")]
    pub stack_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The inventory of the cluster to restore.
    #[arg(short = 'i', long = "inventory", required = true)]
    pub inventory: Vec<PathBuf>,
    /// The archive (`provisioner backup`).
    pub file: PathBuf,
    /// Stop a running cluster first (agents, masters, then ZooKeeper). Without it a serving
    /// ZooKeeper quorum or an elected master refuses the restore.
    #[arg(long = "stop-cluster")]
    pub stop_cluster: bool,
    /// Do it: without --yes the plan is shown and nothing changes.
    #[arg(long)]
    pub yes: bool,
    /// How long each gate may stay red.
    #[arg(long = "gate-timeout", default_value_t = 300, value_name = "SECONDS")]
    pub gate_timeout: u64,
    /// `human` (default) or `json` (one event per line).
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
    /// The stack's roles from this directory instead of the built-in copy.
    #[arg(long = "stack-dir")]
    pub stack_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[arg(short = 'i', long = "inventory", required = true)]
    pub inventory: Vec<PathBuf>,
    /// Only this component: zookeeper, mesos_master or mesos_agent.
    #[arg(long)]
    pub component: Option<String>,
    /// Show the plan (components, hosts, order, gates) and change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Agents restarted at the same time.
    #[arg(long = "max-unavailable", default_value_t = 1, value_name = "N")]
    pub max_unavailable: usize,
    /// Allow a member to go to an older version than it runs.
    #[arg(long = "allow-downgrade")]
    pub allow_downgrade: bool,
    /// How long a gate may stay red after a restart before the upgrade halts.
    #[arg(long = "gate-timeout", default_value_t = 300, value_name = "SECONDS")]
    pub gate_timeout: u64,
    /// `human` (default) or `json` (one event per line).
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
    /// The stack's roles from this directory instead of the built-in copy.
    #[arg(long = "stack-dir")]
    pub stack_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(short = 'i', long = "inventory", required = true)]
    pub inventory: Vec<PathBuf>,
    /// `human` (default) or `json` (one JSON object per check).
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
    /// Check again every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
    /// The stack's roles from this directory instead of the built-in copy.
    #[arg(long = "stack-dir")]
    pub stack_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    pub command: TlsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Re-issue every host certificate (and the CA with --ca); the next apply distributes them.
    Rotate {
        /// The inventory whose state dir holds the certificates.
        #[arg(short = 'i', long = "inventory", required = true)]
        inventory: PathBuf,
        /// Also replace the CA (every host certificate is then signed by the new one).
        #[arg(long)]
        ca: bool,
        /// Wait up to SECONDS for another run's lock on the inventory instead of refusing.
        #[arg(long = "wait-lock", value_name = "SECONDS")]
        wait_lock: Option<u64>,
    },
    /// Print the cluster CA certificate (PEM, public) for clients: `curl --cacert`, browsers.
    Ca {
        /// The inventory whose state dir holds the CA.
        #[arg(short = 'i', long = "inventory", required = true)]
        inventory: PathBuf,
    },
}

fn tls_store(inventory: &std::path::Path) -> Result<crate::secrets::SecretStore, Error> {
    if !inventory.exists() {
        return Err(Error::Usage(format!(
            "inventory {} does not exist",
            inventory.display()
        )));
    }
    Ok(crate::secrets::SecretStore::for_inventory(inventory)?)
}

fn tls_command(args: TlsArgs) -> std::process::ExitCode {
    match args.command {
        TlsCommand::Ca { inventory } => {
            let store = match tls_store(&inventory) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            match store.existing_tls_ca() {
                Ok(Some(pem)) => {
                    print_line(pem.trim_end());
                    std::process::ExitCode::SUCCESS
                }
                Ok(None) => fail(&Error::Usage(format!(
                    "no cluster CA in {} yet: the first apply creates it",
                    store.dir().display()
                ))),
                Err(e) => fail(&e.into()),
            }
        }
        TlsCommand::Rotate {
            inventory,
            ca,
            wait_lock,
        } => {
            let store = match tls_store(&inventory) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            // Rotating changes what an apply distributes: not while one runs.
            let lock = match crate::state::StateDir::for_inventory(&inventory)
                .lock("tls rotate", wait_lock.map(Duration::from_secs))
            {
                Ok(l) => l,
                Err(e) => return fail(&e.into()),
            };
            if let Some(w) = lock.takeover_warning() {
                eprint_line(&format!("[WARNING]: {w}"));
            }
            let report = match store.rotate_tls(ca) {
                Ok(r) => r,
                Err(e) => return fail(&e.into()),
            };
            for n in store.take_notices() {
                eprint_line(&format!("[NOTICE]: {n}"));
            }
            if report.ca {
                print_line("rotated: CA");
            }
            for h in &report.hosts {
                print_line(&format!("rotated: {h}"));
            }
            print_line(&format!(
                "{} host certificate(s) re-issued in {}; run apply to distribute them",
                report.hosts.len(),
                store.dir().display()
            ));
            std::process::ExitCode::SUCCESS
        }
    }
}

/// Options shared by validate, plan, apply and play.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Inventory file or directory (Ansible INI or YAML). Repeatable. Default: `inventory`
    /// of ansible.cfg.
    #[arg(short = 'i', long = "inventory")]
    pub inventory: Vec<PathBuf>,
    /// The playbook to run. Without one, validate/plan/apply run the bundled Mesos stack.
    pub playbook: Option<PathBuf>,
    /// Run the stack from this directory (shaped like the repository's `roles/`: `site.yml`,
    /// the roles, optionally `bundle.yaml`) instead of the copy built into the binary.
    #[arg(long = "stack-dir", conflicts_with = "playbook")]
    pub stack_dir: Option<PathBuf>,
    /// Restrict to hosts matching this pattern (Ansible syntax: groups, globs, `!`, `&`).
    #[arg(short = 'l', long)]
    pub limit: Option<String>,
    /// Show unified diffs of changed files.
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// Show remote commands.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// How many hosts work at once [default: `forks` of ansible.cfg, else 16].
    #[arg(short = 'f', long)]
    pub forks: Option<usize>,
    /// Extra variables, `key=value` or a JSON object (highest precedence). Repeatable.
    #[arg(short = 'e', long = "extra-vars")]
    pub extra_vars: Vec<String>,
    /// Additional directories to search for roles (before `roles_path` of ansible.cfg).
    #[arg(long = "roles-path")]
    pub roles_path: Vec<PathBuf>,
    /// The longest one remote command may run, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Only run tasks with these tags (comma-separated; `always`, `never`, `tagged`,
    /// `untagged`, `all` as in Ansible).
    #[arg(short = 't', long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip tasks with these tags (comma-separated).
    #[arg(long = "skip-tags", value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Changing runs (apply, play) take the inventory's run lock: wait up to SECONDS for
    /// another run's lock instead of refusing at once (exit 5).
    #[arg(long = "wait-lock", value_name = "SECONDS")]
    pub wait_lock: Option<u64>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Exit with code 4 when any host would change.
    #[arg(long)]
    pub exit_code: bool,
}

fn parse_extra_vars(items: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let mut vars = serde_json::Map::new();
    for item in items {
        let t = item.trim();
        if t.starts_with('{') {
            match serde_json::from_str::<serde_json::Value>(t) {
                Ok(serde_json::Value::Object(m)) => vars.extend(m),
                _ => {
                    return Err(Error::Usage(format!(
                        "--extra-vars: `{item}` is not a JSON object"
                    )))
                }
            }
        } else {
            let parsed = crate::raw::kv::parse_kv(t, false)
                .map_err(|e| Error::Usage(format!("--extra-vars: {e}")))?;
            vars.extend(parsed);
        }
    }
    Ok(vars)
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(subcommand)]
    pub command: BundleCommand,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// A table of the components: version, groups, source kinds, ports, restart, upgrade order.
    Show {
        /// Show the bundle.yaml of this stack directory instead of the built-in one.
        #[arg(long = "stack-dir")]
        stack_dir: Option<PathBuf>,
    },
    /// Print the `bundle` variable as YAML, for ansible-playbook:
    /// `provisioner bundle vars > group_vars/all/bundle.yml`.
    Vars {
        #[arg(long = "stack-dir")]
        stack_dir: Option<PathBuf>,
    },
}

/// What a command runs: the playbook given, or (when allowed) the bundled stack. `cfg` is
/// ansible.cfg; the command-line flags win over it.
fn spec(
    command: &str,
    args: &RunArgs,
    mode: Mode,
    stack_allowed: bool,
    cfg: &AnsibleConfig,
) -> Result<RunSpec, Error> {
    let inventory = if args.inventory.is_empty() {
        cfg.inventory.clone()
    } else {
        args.inventory.clone()
    };
    if inventory.is_empty() {
        return Err(Error::Usage(
            "no inventory: give -i INVENTORY, or set `inventory` in ansible.cfg".into(),
        ));
    }
    let target = match (&args.playbook, stack_allowed) {
        (Some(p), _) => Target::Playbook(p.clone()),
        (None, false) => {
            return Err(Error::Usage(
                "`play` runs a playbook: give one (`provisioner apply -i INVENTORY` without a playbook runs the bundled stack)".into(),
            ))
        }
        (None, true) => Target::Stack {
            dir: args.stack_dir.clone(),
            play: None,
        },
    };
    let mut spec = RunSpec::new(command, inventory, target, mode);
    spec.limit = args.limit.clone();
    spec.diff = args.diff;
    spec.verbose = args.verbose;
    spec.forks = args.forks.or(cfg.forks).unwrap_or(16).max(1);
    spec.extra_vars = parse_extra_vars(&args.extra_vars)?;
    spec.roles_path = args.roles_path.clone();
    spec.roles_path.extend(cfg.roles_path.iter().cloned());
    spec.command_timeout = Duration::from_secs(args.timeout.max(1));
    spec.tags = args.tags.clone();
    spec.skip_tags = args.skip_tags.clone();
    spec.lock_wait = args.wait_lock.map(Duration::from_secs);
    spec.defaults = crate::config::RunDefaults::from_config(cfg);
    Ok(spec)
}

/// ansible.cfg for a run (`ANSIBLE_CONFIG`, `./ansible.cfg`, `~/.ansible.cfg`); under `-v`,
/// which file and the keys it ignores.
fn ansible_config(args: &RunArgs) -> Result<AnsibleConfig, Error> {
    let env = crate::config::ansible_cfg::Env::current();
    let cfg = crate::config::ansible_cfg::discover(&env).map_err(Error::Invalid)?;
    if args.verbose {
        for n in &cfg.notes {
            eprint_line(n);
        }
        for line in crate::config::ansible_cfg::ignored_entries(&cfg) {
            eprint_line(&line);
        }
    }
    Ok(cfg)
}

/// `become_ask_pass`: ask once on the terminal, without echo (as `ansible-playbook -K`).
fn ask_become_password() -> Result<crate::secret::Secret, Error> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "become_ask_pass = True (ansible.cfg) needs a terminal to ask on; set \
             ansible_become_password in the inventory instead (it is kept out of every output)"
                .into(),
        ));
    }
    crate::report::eprint_prompt("BECOME password: ");
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .status()
            .is_ok_and(|s| s.success())
    };
    let hidden = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if hidden {
        stty("echo");
    }
    eprint_line("");
    read.map_err(|e| Error::Usage(format!("cannot read the become password: {e}")))?;
    Ok(crate::secret::Secret::new(
        line.trim_end_matches(['\n', '\r']).to_string(),
    ))
}

fn exit(code: ExitCode) -> std::process::ExitCode {
    std::process::ExitCode::from(code as u8)
}

fn fail(e: &Error) -> std::process::ExitCode {
    eprint_line(&format!("error: {e}"));
    exit(e.exit_code())
}

/// Run `spec` through the run API with the terminal as its sink; print what the outcome says
/// beyond the events; return the exit code.
fn run_with_terminal(spec: &RunSpec, output: Output) -> std::process::ExitCode {
    let opts = HumanOptions {
        diff: spec.diff || spec.mode == Mode::Check,
        verbose: spec.verbose,
        color: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let io = RunIo {
        sinks: vec![terminal::sink(output, opts)],
        ..Default::default()
    };
    match crate::run::run(spec, io) {
        Err(e) => fail(&e),
        Ok(outcome) => {
            terminal::print_outcome(&outcome);
            exit(outcome.exit)
        }
    }
}

fn run_playbook(
    command: &str,
    args: &RunArgs,
    mode: Mode,
    drift_exit: bool,
    stack_allowed: bool,
    cfg: &AnsibleConfig,
) -> std::process::ExitCode {
    let mut spec = match spec(command, args, mode, stack_allowed, cfg) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if cfg.become_ask_pass {
        match ask_become_password() {
            Ok(p) => spec.defaults.connect.become_password = Some(p),
            Err(e) => return fail(&e),
        }
    }
    spec.changes_are_drift = drift_exit;
    run_with_terminal(&spec, args.output)
}

pub fn run(cli: Cli) -> std::process::ExitCode {
    match cli.command {
        Command::Version => {
            print_line(&format!("provisioner {}", env!("CARGO_PKG_VERSION")));
            std::process::ExitCode::SUCCESS
        }
        Command::Validate(args) => {
            let v = ansible_config(&args)
                .and_then(|c| spec("validate", &args, Mode::Check, true, &c))
                .and_then(|s| crate::run::validate(&s));
            match v {
                Ok(v) => {
                    for w in &v.warnings {
                        eprint_line(&format!("[WARNING]: {w}"));
                    }
                    print_line(&format!(
                        "ok: {} play(s), {} task(s), {} host(s); nothing was run",
                        v.plays, v.tasks, v.hosts
                    ));
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Plan(args) => match ansible_config(&args.run) {
            Ok(cfg) => run_playbook("plan", &args.run, Mode::Check, args.exit_code, true, &cfg),
            Err(e) => fail(&e),
        },
        Command::Apply(args) => match ansible_config(&args) {
            Ok(cfg) => run_playbook("apply", &args, Mode::Apply, false, true, &cfg),
            Err(e) => fail(&e),
        },
        Command::Play(args) => match ansible_config(&args) {
            Ok(cfg) => run_playbook("play", &args, Mode::Apply, false, false, &cfg),
            Err(e) => fail(&e),
        },
        Command::Bundle(args) => bundle(args),
        Command::Lab(args) => crate::lab::cli::run(args),
        Command::Tls(args) => tls_command(args),
        Command::Status(args) => status_command(args),
        Command::Upgrade(args) => upgrade_command(args),
        Command::Node(args) => node_command(args),
        Command::Backup(args) => backup_command(args),
        Command::Restore(args) => restore_command(args),
        Command::History(args) => history_command(args),
        Command::Operate(args) => operate_command(args),
        Command::Completions { shell } => {
            crate::report::print_raw(&crate::manual::completions(shell));
            std::process::ExitCode::SUCCESS
        }
        Command::Man { command } => match crate::manual::man_page(&command) {
            Ok(page) => {
                crate::report::print_raw(&page);
                std::process::ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn bundle_of(stack_dir: Option<&std::path::Path>) -> Result<cluster_core::bundle::Bundle, Error> {
    match stack_dir {
        None => crate::stack::builtin_bundle(),
        Some(d) => {
            let f = d.join(crate::stack::BUNDLE_FILE);
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", f.display())))?;
            crate::stack::parse_bundle(&text, &f.display().to_string()).map_err(Error::Invalid)
        }
    }
}

fn bundle(args: BundleArgs) -> std::process::ExitCode {
    match args.command {
        BundleCommand::Show { stack_dir } => match bundle_of(stack_dir.as_deref()) {
            Ok(b) => {
                let rows = crate::stack::rows(&b);
                let head = crate::stack::ComponentRow {
                    order: 0,
                    name: "COMPONENT".into(),
                    version: "VERSION".into(),
                    groups: "GROUPS".into(),
                    sources: "SOURCES".into(),
                    ports: "PORTS".into(),
                    restart: "RESTART".into(),
                    after: "AFTER".into(),
                };
                let w = |f: fn(&crate::stack::ComponentRow) -> &str| {
                    rows.iter()
                        .chain(std::iter::once(&head))
                        .map(|r| f(r).len())
                        .max()
                        .unwrap_or(0)
                };
                let (wn, wv, wg, ws, wp, wr) = (
                    w(|r| &r.name),
                    w(|r| &r.version),
                    w(|r| &r.groups),
                    w(|r| &r.sources),
                    w(|r| &r.ports),
                    w(|r| &r.restart),
                );
                let line = |order: &str, r: &crate::stack::ComponentRow| {
                    format!(
                        "{order:<5} {:<wn$} {:<wv$} {:<wg$} {:<ws$} {:<wp$} {:<wr$} {}",
                        r.name, r.version, r.groups, r.sources, r.ports, r.restart, r.after
                    )
                    .trim_end()
                    .to_string()
                };
                print_line(&line("ORDER", &head));
                for r in &rows {
                    print_line(&line(&r.order.to_string(), r));
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        BundleCommand::Vars { stack_dir } => {
            match bundle_of(stack_dir.as_deref()).and_then(|b| crate::stack::bundle_vars_yaml(&b)) {
                Ok(y) => {
                    crate::report::print_raw(&y);
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn node_command(args: NodeArgs) -> std::process::ExitCode {
    use crate::day2::node;
    let (o, unreachable, force, verb, expect) = match args.command {
        NodeCommand::Add { opts, force } => (opts, false, force, "add", None),
        NodeCommand::Remove { opts, unreachable } => (opts, unreachable, false, "remove", None),
        NodeCommand::Replace {
            opts,
            expect_fingerprint,
        } => (opts, false, false, "replace", expect_fingerprint),
    };
    let opts = node::Options {
        inventory: o.inventory,
        stack_dir: o.stack_dir,
        hosts: o.hosts,
        yes: o.yes,
        unreachable,
        gate_timeout: Duration::from_secs(o.gate_timeout.max(1)),
        force,
    };
    let say = |s: &str| print_line(s);
    let r = match verb {
        "add" => node::add(&opts, &say),
        "remove" => node::remove(&opts, &say),
        _ => node::replace(&opts, expect.as_deref(), &say),
    };
    day2_ended(r)
}

/// How a day-2 command that returns an `Ended` exits: a refusal or failure said on stderr.
fn day2_ended(r: Result<crate::day2::node::Ended, Error>) -> std::process::ExitCode {
    use crate::day2::node::Ended;
    match r {
        Ok(ended) => {
            match &ended {
                Ended::Refused(why) => eprint_line(&format!("refused, nothing was changed: {why}")),
                Ended::Failed(why) => eprint_line(&format!("error: {why}")),
                _ => {}
            }
            exit(ended.exit_code())
        }
        Err(e) => fail(&e),
    }
}

fn backup_command(args: BackupArgs) -> std::process::ExitCode {
    use crate::day2::backup;
    if let Some(file) = args.verify {
        return match backup::verify(&file) {
            Ok(m) => {
                print_line(&format!(
                    "{}: OK, {} files match the manifest (made {}, leader {}, ZooKeeper zxid {} from {})",
                    file.display(),
                    m.files.len(),
                    m.created,
                    m.mesos_leader,
                    m.zookeeper_zxid,
                    m.zookeeper_member
                ));
                exit(ExitCode::Ok)
            }
            Err(why) => {
                eprint_line(&format!("error: verification failed: {why}"));
                exit(ExitCode::HostsFailed)
            }
        };
    }
    let opts = backup::Options {
        inventory: args.inventory,
        stack_dir: args.stack_dir,
        output: args.output,
        keep: args.keep,
    };
    match backup::backup(&opts, vec![day2_sink(args.format)]) {
        Ok((made, warnings)) => {
            for w in &warnings {
                eprint_line(&format!("[WARNING]: {w}"));
            }
            match made {
                Ok(made) => {
                    for p in &made.removed {
                        print_line(&format!("retention: removed {}", p.display()));
                    }
                    exit(ExitCode::Ok)
                }
                Err(e) => fail(&e),
            }
        }
        Err(e) => fail(&e),
    }
}

/// The terminal sink of a day-2 operation's step events.
fn day2_sink(output: Output) -> Box<dyn crate::exec::events::Sink> {
    terminal::sink(
        output,
        HumanOptions {
            color: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            ..Default::default()
        },
    )
}

fn restore_command(args: RestoreArgs) -> std::process::ExitCode {
    use crate::day2::restore::{self, Ended};
    let opts = restore::Options {
        inventory: args.inventory,
        stack_dir: args.stack_dir,
        file: args.file,
        stop_cluster: args.stop_cluster,
        yes: args.yes,
        gate_timeout: Duration::from_secs(args.gate_timeout.max(1)),
    };
    match restore::restore(&opts, vec![day2_sink(args.output)]) {
        Ok((ended, warnings)) => {
            for w in &warnings {
                eprint_line(&format!("[WARNING]: {w}"));
            }
            match &ended {
                Ended::Refused(why) => eprint_line(&format!("refused, nothing was changed: {why}")),
                Ended::Failed(why) => eprint_line(&format!("error: {why}")),
                _ => {}
            }
            exit(ended.exit_code())
        }
        Err(e) => fail(&e),
    }
}

fn upgrade_command(args: UpgradeArgs) -> std::process::ExitCode {
    if args.max_unavailable == 0 {
        return fail(&Error::Usage("--max-unavailable must be at least 1".into()));
    }
    let opts = crate::day2::upgrade::Options {
        inventory: args.inventory,
        stack_dir: args.stack_dir,
        component: args.component,
        plan_only: args.plan,
        max_unavailable: args.max_unavailable,
        allow_downgrade: args.allow_downgrade,
        gate_timeout: Duration::from_secs(args.gate_timeout.max(1)),
    };
    let sink = terminal::sink(
        args.output,
        HumanOptions {
            color: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            ..Default::default()
        },
    );
    match crate::day2::upgrade::upgrade(&opts, vec![sink], crate::run::signals::listen()) {
        Ok((ended, warnings)) => {
            for w in &warnings {
                eprint_line(&format!("[WARNING]: {w}"));
            }
            exit(ended.exit_code())
        }
        Err(e) => fail(&e),
    }
}

fn status_command(args: StatusArgs) -> std::process::ExitCode {
    loop {
        // A single check is recorded in the history; `--watch`'s repeated checks are not.
        let r = if args.watch.is_none() {
            crate::day2::status::check(&args.inventory, args.stack_dir.clone())
        } else {
            crate::day2::status::status(&args.inventory, args.stack_dir.clone())
        };
        let r = match r {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        match args.output {
            Output::Json => print_line(
                &serde_json::to_string(&r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
            ),
            _ => {
                if args.watch.is_some() {
                    print_line(&format!(
                        "--- {}",
                        crate::exec::events::utc_text(std::time::SystemTime::now())
                    ));
                }
                for line in crate::day2::status::render(&r) {
                    print_line(&line);
                }
            }
        }
        match args.watch {
            Some(secs) => std::thread::sleep(Duration::from_secs(secs.max(1))),
            None => {
                return exit(if r.healthy {
                    ExitCode::Ok
                } else {
                    ExitCode::HostsFailed
                })
            }
        }
    }
}

fn history_command(args: HistoryArgs) -> std::process::ExitCode {
    use crate::history::{self, render};
    let opts = match &args.command {
        HistoryCommand::List { opts, .. }
        | HistoryCommand::Show { opts, .. }
        | HistoryCommand::Diff { opts, .. }
        | HistoryCommand::Drift { opts, .. } => opts,
    };
    let path = history::db_path(crate::state::StateDir::for_inventory(&opts.inventory).dir());
    let out = |lines: Vec<String>, json: Result<String, serde_json::Error>| {
        match opts.output {
            Output::Json => print_line(&json.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))),
            Output::Human => lines.iter().for_each(|l| print_line(l)),
        }
        std::process::ExitCode::SUCCESS
    };
    let r = history::open_read(&path).and_then(|c| match &args.command {
        HistoryCommand::List { limit, .. } => {
            let runs = history::list(&c, Some(*limit))?;
            Ok(out(render::list(&runs), serde_json::to_string(&runs)))
        }
        HistoryCommand::Show { run, .. } => {
            let d = history::show(&c, &history::resolve(&c, run)?)?;
            Ok(out(render::show(&d), serde_json::to_string(&d)))
        }
        HistoryCommand::Diff { run1, run2, .. } => {
            let (a, b) = (history::resolve(&c, run1)?, history::resolve(&c, run2)?);
            let d = history::diff(&c, &a, &b)?;
            Ok(out(render::diff(&d), serde_json::to_string(&d)))
        }
        HistoryCommand::Drift { since, .. } => {
            let since = match since {
                Some(s) => Some(history::parse_since(s, std::time::SystemTime::now())?),
                None => None,
            };
            let rows = history::drift(&c, since)?;
            Ok(out(render::drift(&rows), serde_json::to_string(&rows)))
        }
    });
    match r {
        Ok(code) => code,
        Err(e) => fail(&Error::Usage(e)),
    }
}

/// `operate --install HOST` / `--uninstall HOST`.
fn operate_install_command(args: OperateArgs) -> std::process::ExitCode {
    use crate::operate::install;
    let (host, installing) = match (&args.install, &args.uninstall) {
        (Some(h), _) => (h.clone(), true),
        (None, Some(h)) => (h.clone(), false),
        (None, None) => {
            return fail(&Error::Usage(
                "--yes goes with --install or --uninstall".into(),
            ))
        }
    };
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => return fail(&Error::Environment(format!("cannot find this binary: {e}"))),
    };
    let opts = install::Options {
        inventory: args.inventory,
        host,
        yes: args.yes,
        forward: install::Forward {
            interval: args.interval,
            remediate: args.remediate,
            budget: args.max_agents_per_cycle,
            listen: args.listen,
            timeout: args.timeout.max(1),
            elect: args.elect.then_some(args.elect_session_timeout.max(1)),
            json: matches!(args.output, Output::Json),
            stack_dir: args.stack_dir,
        },
        key_file: crate::secrets::default_key_file(),
        binary,
    };
    let say = |line: &str| print_line(line);
    let r = if installing {
        install::install(&opts, &say)
    } else {
        install::uninstall(&opts, &say)
    };
    day2_ended(r)
}

fn operate_command(args: OperateArgs) -> std::process::ExitCode {
    use crate::operate::{self, metrics::Metrics, OperateEvent};
    if args.install.is_some() || args.uninstall.is_some() || args.yes {
        return operate_install_command(args);
    }
    // Listen first: signals then never kill the process mid-step.
    let stop = crate::run::signals::listen();
    let metrics = Metrics::new();
    let listen = match &args.listen {
        Some(addr) => match operate::metrics::serve(addr, metrics.clone()) {
            Ok(a) => Some(a.to_string()),
            Err(e) => return fail(&Error::Usage(e)),
        },
        None => None,
    };
    let output = args.output;
    let say = move |e: &OperateEvent| match output {
        Output::Json => {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert(
                    "time".into(),
                    crate::exec::events::utc_text(std::time::SystemTime::now()).into(),
                );
            }
            print_line(&v.to_string())
        }
        Output::Human => print_line(&format!(
            "[{}] {}",
            crate::exec::events::utc_text(std::time::SystemTime::now()),
            e.text()
        )),
    };
    let opts = operate::Options {
        inventory: args.inventory,
        stack_dir: args.stack_dir,
        once: args.once,
        interval: args.interval,
        remediate: args.remediate,
        budget: args.max_agents_per_cycle,
        command_timeout: Duration::from_secs(args.timeout.max(1)),
        elect: args
            .elect
            .then(|| Duration::from_secs(args.elect_session_timeout.max(1))),
    };
    say(&OperateEvent::Started {
        interval_secs: opts.interval.as_secs(),
        remediate: opts.remediate,
        agents_per_cycle: match opts.budget {
            operate::Budget::Count(n) => n.to_string(),
            operate::Budget::Percent(p) => format!("{p}%"),
        },
        listen,
    });
    match operate::operate(opts, metrics, stop, &say) {
        Ok(result) if args.once => exit(result.exit_code()),
        Ok(_) => exit(ExitCode::Ok),
        Err(e) => fail(&e),
    }
}
