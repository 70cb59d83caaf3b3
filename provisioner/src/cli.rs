//! Command-line interface (clap). Parses arguments and dispatches to the pipeline; the only
//! output goes through `report`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Inventory file or directory (Ansible INI or YAML). Repeatable.
    #[arg(short = 'i', long = "inventory", required = true)]
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
    /// How many hosts work at once.
    #[arg(short = 'f', long, default_value_t = 16)]
    pub forks: usize,
    /// Extra variables, `key=value` or a JSON object (highest precedence). Repeatable.
    #[arg(short = 'e', long = "extra-vars")]
    pub extra_vars: Vec<String>,
    /// Additional directories to search for roles.
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

/// What a command runs: the playbook given, or (when allowed) the bundled stack.
fn spec(command: &str, args: &RunArgs, mode: Mode, stack_allowed: bool) -> Result<RunSpec, Error> {
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
    let mut spec = RunSpec::new(command, args.inventory.clone(), target, mode);
    spec.limit = args.limit.clone();
    spec.diff = args.diff;
    spec.verbose = args.verbose;
    spec.forks = args.forks.max(1);
    spec.extra_vars = parse_extra_vars(&args.extra_vars)?;
    spec.roles_path = args.roles_path.clone();
    spec.command_timeout = Duration::from_secs(args.timeout.max(1));
    spec.tags = args.tags.clone();
    spec.skip_tags = args.skip_tags.clone();
    spec.lock_wait = args.wait_lock.map(Duration::from_secs);
    Ok(spec)
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
) -> std::process::ExitCode {
    let mut spec = match spec(command, args, mode, stack_allowed) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
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
            let v =
                spec("validate", &args, Mode::Check, true).and_then(|s| crate::run::validate(&s));
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
        Command::Plan(args) => run_playbook("plan", &args.run, Mode::Check, args.exit_code, true),
        Command::Apply(args) => run_playbook("apply", &args, Mode::Apply, false, true),
        Command::Play(args) => run_playbook("play", &args, Mode::Apply, false, false),
        Command::Bundle(args) => bundle(args),
        Command::Lab(args) => crate::lab::cli::run(args),
        Command::Tls(args) => tls_command(args),
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
