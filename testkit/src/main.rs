//! `mesos-standin`: a TEST STAND-IN for Mesos (master, agent) and Mesos-DNS. Not Mesos.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use testkit::{agent, dns, flags, master, tls};

#[derive(Parser)]
#[command(
    name = "mesos-standin",
    version = master::VERSION,
    about = "TEST STAND-IN for Mesos master/agent and Mesos-DNS (lab and CI only; this is not Mesos)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A Mesos master: flag files, ZooKeeper leader election, master HTTP endpoints.
    Master {
        #[arg(long, default_value = "/etc/mesos-master")]
        flags_dir: PathBuf,
        #[arg(long, default_value = "/etc/mesos/zk")]
        zk_file: PathBuf,
        /// Validate the flags and exit.
        #[arg(long)]
        check: bool,
    },
    /// A Mesos agent: flag files, leader detection, registration, agent HTTP endpoints.
    Agent {
        #[arg(long, default_value = "/etc/mesos-agent")]
        flags_dir: PathBuf,
        #[arg(long, default_value = "/etc/mesos/zk")]
        zk_file: PathBuf,
        #[arg(long)]
        check: bool,
    },
    /// Mesos-DNS: config.json, A records for the leader, masters and agents.
    Dns {
        #[arg(long, default_value = "/etc/mesos-dns/config.json")]
        config: PathBuf,
        #[arg(long)]
        check: bool,
    },
}

fn zk_file(p: &std::path::Path) -> Result<Option<String>, Vec<String>> {
    if p.exists() {
        flags::read_zk_file(p).map(Some).map_err(|e| vec![e])
    } else {
        Ok(None)
    }
}

/// libprocess TLS from this process's `LIBPROCESS_SSL_*` environment: checked (a master or
/// agent refuses to start on settings libprocess refuses) and, unless `check`, installed.
fn libprocess_tls(check: bool) -> Result<(), Vec<String>> {
    let env = tls::parse_env(&|k| std::env::var(k).ok())?;
    let built = tls::build(&env).map_err(|e| vec![e])?;
    if let Some(t) = built {
        tracing::info!(
            "libprocess TLS on (client certificates {})",
            if env.require_client_cert {
                "required"
            } else {
                "optional"
            }
        );
        if !check {
            tls::install(t);
        }
    }
    Ok(())
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

async fn run(cmd: Cmd) -> Result<(), Vec<String>> {
    match cmd {
        Cmd::Master {
            flags_dir,
            zk_file: zf,
            check,
        } => {
            let f = flags::read_flags_dir(&flags_dir).map_err(|e| vec![e])?;
            let cfg = flags::master_config(f, zk_file(&zf)?)?;
            libprocess_tls(check)?;
            if check {
                tracing::info!("master flags are valid");
                return Ok(());
            }
            master::run(cfg).await.map_err(|e| vec![e])
        }
        Cmd::Agent {
            flags_dir,
            zk_file: zf,
            check,
        } => {
            let f = flags::read_flags_dir(&flags_dir).map_err(|e| vec![e])?;
            let cfg = flags::agent_config(f, zk_file(&zf)?)?;
            libprocess_tls(check)?;
            if check {
                tracing::info!("agent flags are valid");
                return Ok(());
            }
            agent::run(cfg).await.map_err(|e| vec![e])
        }
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
