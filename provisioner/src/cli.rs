//! Command-line interface (clap). Parses arguments and dispatches to the pipeline; the only
//! output goes through `report`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, ExitCode};
use crate::exec::session::{self, RunRequest};
use crate::ops::Mode;
use crate::report::human::HumanOptions;
use crate::report::terminal::{self, Output};
use crate::report::{eprint_line, print_line};

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
    /// Check the inventory, playbook, roles and templates; touch no host.
    Validate(RunArgs),
    /// Show what would change on each host (check mode, with diffs); change nothing.
    Plan(PlanArgs),
    /// Converge every host to the declared state.
    Apply(RunArgs),
    /// Run an Ansible playbook written in the supported subset.
    Play(RunArgs),
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
    },
}

fn tls_command(args: TlsArgs) -> std::process::ExitCode {
    match args.command {
        TlsCommand::Rotate { inventory, ca } => {
            if !inventory.exists() {
                return fail(&Error::Usage(format!(
                    "inventory {} does not exist",
                    inventory.display()
                )));
            }
            let store = match crate::secrets::SecretStore::for_inventory(&inventory) {
                Ok(s) => s,
                Err(e) => return fail(&e.into()),
            };
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
    /// The playbook to run.
    pub playbook: Option<PathBuf>,
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

fn request(args: &RunArgs, mode: Mode) -> Result<RunRequest, Error> {
    let playbook = args.playbook.clone().ok_or_else(|| {
        Error::Usage(
            "give a playbook to run (the bundled Mesos stack is not available in this build yet)"
                .into(),
        )
    })?;
    Ok(RunRequest {
        inventory: args.inventory.clone(),
        playbook,
        limit: args.limit.clone(),
        mode,
        diff: args.diff,
        verbose: args.verbose,
        forks: args.forks.max(1),
        extra_vars: parse_extra_vars(&args.extra_vars)?,
        roles_path: args.roles_path.clone(),
        command_timeout: Duration::from_secs(args.timeout.max(1)),
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
    })
}

fn exit(code: ExitCode) -> std::process::ExitCode {
    std::process::ExitCode::from(code as u8)
}

fn fail(e: &Error) -> std::process::ExitCode {
    eprint_line(&format!("error: {e}"));
    exit(e.exit_code())
}

/// Validate, then run with the SSH transport, rendering events; returns the exit code.
fn run_playbook(args: &RunArgs, mode: Mode, drift_exit: bool) -> std::process::ExitCode {
    let req = match request(args, mode) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let prepared = match session::prepare(&req) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(&Error::Environment(format!(
                "cannot start the runtime: {e}"
            )))
        }
    };
    let output = args.output;
    let opts = HumanOptions {
        diff: args.diff || mode == Mode::Check,
        verbose: args.verbose,
        color: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = cancel_tx.send(true);
            }
        });
        let render = tokio::spawn(terminal::render(rx, output, opts));
        let connector: Arc<dyn crate::transport::Connector> = Arc::new(
            crate::transport::SshConnector::new(crate::transport::SshOptions::default()),
        );
        let sink: Arc<dyn crate::exec::events::EventSink> = Arc::new(tx);
        let result = session::run(&req, prepared, connector, sink.clone(), cancel_rx).await;
        drop(sink);
        let recap = render.await.unwrap_or_default();
        match result {
            Err(e) => fail(&e),
            Ok(summary) if summary.cancelled => {
                eprint_line(
                    "cancelled: running steps were allowed to finish; nothing new was started",
                );
                exit(ExitCode::HostsFailed)
            }
            Ok(_) => exit(recap.exit_code(drift_exit)),
        }
    })
}

pub fn run(cli: Cli) -> std::process::ExitCode {
    match cli.command {
        Command::Version => {
            print_line(&format!("provisioner {}", env!("CARGO_PKG_VERSION")));
            std::process::ExitCode::SUCCESS
        }
        Command::Validate(args) => {
            let req = match request(&args, Mode::Check) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match session::prepare(&req) {
                Ok(p) => {
                    for w in &p.warnings {
                        eprint_line(&format!("[WARNING]: {w}"));
                    }
                    let tasks: usize = p.playbook.plays.iter().map(|pl| pl.tasks.len()).sum();
                    let hosts: std::collections::BTreeSet<&String> =
                        p.play_hosts.iter().flatten().collect();
                    print_line(&format!(
                        "ok: {} play(s), {tasks} task(s), {} host(s); nothing was run",
                        p.playbook.plays.len(),
                        hosts.len()
                    ));
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Plan(args) => run_playbook(&args.run, Mode::Check, args.exit_code),
        Command::Apply(args) | Command::Play(args) => run_playbook(&args, Mode::Apply, false),
        Command::Lab(args) => crate::lab::cli::run(args),
        Command::Tls(args) => tls_command(args),
    }
}
