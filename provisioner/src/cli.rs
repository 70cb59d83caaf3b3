//! Command-line interface (clap). Parses arguments and dispatches to the pipeline; the only output
//! goes through `report`.

use clap::{Parser, Subcommand};

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
    /// Print the version and exit.
    Version,
    /// Local test clusters of real systemd hosts (systemd-nspawn + debootstrap).
    Lab(crate::lab::LabArgs),
}

pub fn run(cli: Cli) -> std::process::ExitCode {
    match cli.command {
        Command::Version => {
            crate::report::print_line(&format!("provisioner {}", env!("CARGO_PKG_VERSION")));
            std::process::ExitCode::SUCCESS
        }
        Command::Lab(args) => crate::lab::cli::run(args),
    }
}
