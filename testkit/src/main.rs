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

/// Installed as `mesos-dns` (the roles' `mesos_dns_source: local`), the stand-in takes
/// Mesos-DNS's own command line, `mesos-dns -config=FILE` (or `-config FILE`), as `dns --config
/// FILE`.
fn mesos_dns_args(args: Vec<String>) -> Vec<String> {
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if invoked_as != "mesos-dns" {
        return args;
    }
    let mut out = vec![args[0].clone(), "dns".to_string()];
    let mut rest = args.into_iter().skip(1);
    while let Some(a) = rest.next() {
        match a
            .strip_prefix("-config")
            .or_else(|| a.strip_prefix("--config"))
        {
            Some(v) if v.starts_with('=') => {
                out.extend(["--config".to_string(), v[1..].to_string()]);
            }
            Some("") => {
                out.push("--config".to_string());
                out.extend(rest.next());
            }
            _ => out.push(a),
        }
    }
    out
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse_from(mesos_dns_args(std::env::args().collect()));
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

#[cfg(test)]
mod tests {
    use super::mesos_dns_args;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn installed_as_mesos_dns_it_takes_mesos_dns_flags() {
        for given in [
            v(&["/usr/local/sbin/mesos-dns", "-config=/etc/c.json"]),
            v(&["mesos-dns", "-config", "/etc/c.json"]),
            v(&["mesos-dns", "--config=/etc/c.json"]),
        ] {
            assert_eq!(
                &mesos_dns_args(given)[1..],
                v(&["dns", "--config", "/etc/c.json"])
            );
        }
        let other = v(&["mesos-standin", "dns", "--config", "/x"]);
        assert_eq!(mesos_dns_args(other.clone()), other);
    }
}
