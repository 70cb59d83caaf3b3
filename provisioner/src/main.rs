use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = provisioner::cli::Cli::parse();
    provisioner::cli::run(cli)
}
