//! `mesos-standin`: a TEST STAND-IN for Mesos-DNS only (lab and CI). Not Mesos-DNS.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use testkit::{dns, tls};

#[derive(Parser)]
#[command(
    name = "mesos-standin",
    version = testkit::VERSION,
    about = "TEST-ONLY STAND-IN for Mesos-DNS (lab and CI only; this is not Mesos-DNS). Mesos itself is real in the lab."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// TEST-ONLY Mesos-DNS stand-in: config.json, A records for the leader, masters and agents
    /// read from the real masters.
    Dns {
        #[arg(long, default_value = "/etc/mesos-dns/config.json")]
        config: PathBuf,
        /// Validate the config and exit.
        #[arg(long)]
        check: bool,
    },
}

async fn run(cmd: Cmd) -> Result<(), Vec<String>> {
    match cmd {
        Cmd::Dns { config, check } => {
            let cfg = dns::load_config(&config)?;
            if let Some(t) = dns::client_tls(&cfg).map_err(|e| vec![e])? {
                tls::install(t);
            }
            if check {
                tracing::info!("mesos-dns config is valid");
                return Ok(());
            }
            dns::run(cfg).await.map_err(|e| vec![e])
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(errs) => {
            for e in errs {
                tracing::error!("{e}");
            }
            ExitCode::from(1)
        }
    }
}
