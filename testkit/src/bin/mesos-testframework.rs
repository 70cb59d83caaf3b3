//! `mesos-testframework`: TEST-ONLY. Runs one command task on a real Mesos cluster through the
//! v1 scheduler HTTP API and exits 0 only when it reaches TASK_FINISHED.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use testkit::framework::{Framework, Options};

#[derive(Parser)]
#[command(
    name = "mesos-testframework",
    about = "TEST-ONLY Mesos scheduler: runs one command task (sh -c) to a terminal state; exit 0 only on TASK_FINISHED"
)]
struct Cli {
    /// A master, `IP:PORT` (repeat for several; a non-leader redirects to the leader).
    #[arg(long = "master", required = true)]
    masters: Vec<String>,
    /// Use HTTPS, verifying the masters against this CA certificate (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// HTTP Basic principal.
    #[arg(long)]
    principal: String,
    /// File holding the principal's secret (trailing newline ignored).
    #[arg(long)]
    secret_file: PathBuf,
    /// Run on the agent whose offers carry this hostname (default: any agent).
    #[arg(long)]
    agent: Option<String>,
    /// Seconds to wait for an offer, and then for a terminal state.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// MB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// The command (run with `sh -c`).
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

fn run(cli: Cli) -> Result<bool, String> {
    let secret = std::fs::read_to_string(&cli.secret_file)
        .map_err(|e| format!("cannot read {}: {e}", cli.secret_file.display()))?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let mut opts = Options::new(cli.masters, &cli.principal, secret);
    opts.tls = cli.ca;
    opts.offer_timeout = timeout;
    let fw = Framework::subscribe(&opts)?;
    println!(
        "SUBSCRIBED framework {} at {}",
        fw.framework_id(),
        fw.leader()
    );
    let command = cli.command.join(" ");
    let task = fw.launch(cli.agent.as_deref(), &command, cli.cpus, cli.mem)?;
    println!("LAUNCHED {task}");
    let deadline = std::time::Instant::now() + timeout;
    let mut index = 0;
    let end = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let s = fw.next_status(&task, index, left).inspect_err(|_| {
            eprintln!("events received:\n{}", fw.events_text());
        })?;
        println!("UPDATE {s}");
        index += 1;
        if s.is_terminal() {
            break s;
        }
    };
    let _ = fw.teardown();
    Ok(end.state == "TASK_FINISHED")
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mesos-testframework: {e}");
            ExitCode::from(2)
        }
    }
}
