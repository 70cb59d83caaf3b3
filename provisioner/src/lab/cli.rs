//! The `lab` subcommand's arguments and its rendering (CLI layer: the only lab code that writes
//! to the terminal, through `crate::report`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};

use super::{LabEvent, UpOptions};
use crate::error::Error;
use crate::report::{eprint_line, print_line};

#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab's name (several labs with different names and subnets can run side by side).
    #[arg(
        long,
        global = true,
        default_value = "lab",
        env = "PROVISIONER_LAB_NAME"
    )]
    pub name: String,
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create (or start) the lab's hosts and write its inventory. Idempotent.
    Up {
        /// Number of masters (default 3; an existing lab keeps its own).
        #[arg(long, env = "PROVISIONER_LAB_MASTERS")]
        masters: Option<usize>,
        /// Number of agents (default 2).
        #[arg(long, env = "PROVISIONER_LAB_AGENTS")]
        agents: Option<usize>,
        /// Number of extra hosts (default 0; they are the stack's storage hosts).
        #[arg(long, env = "PROVISIONER_LAB_EXTRA")]
        extra: Option<usize>,
        /// The lab's subnet, in 10.0.0.0/8 (default 10.250.0.0/24).
        #[arg(long, env = "PROVISIONER_LAB_SUBNET")]
        subnet: Option<String>,
        /// Where to write the inventory (default inventories/<name>.yml).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Install missing packages first (apt-get update + install).
        #[arg(long)]
        install_deps: bool,
        /// Only the hosts: do not apply the bundled stack. Recorded: a later `lab up` of this
        /// lab stays bare.
        #[arg(long, conflicts_with = "stack")]
        bare: bool,
        /// Apply the bundled stack (the default for a new lab; takes a bare lab to the stack).
        #[arg(long)]
        stack: bool,
        /// Apply the stack from this directory (shaped like `roles/`) instead of the built-in one.
        #[arg(long = "stack-dir", conflicts_with = "bare")]
        stack_dir: Option<PathBuf>,
        /// A Mesos build tarball on this machine (e.g. mesos-1.11.0-debian12-amd64.tar.gz): the
        /// stack installs it (`mesos_source: local`), with the Mesos-DNS test stand-in. Recorded:
        /// later `lab up`s keep it. Without one, Mesos comes from AVENTER's repository.
        #[arg(
            long = "mesos-artifact",
            env = "PROVISIONER_MESOS_ARTIFACT",
            value_name = "TARBALL"
        )]
        mesos_artifact: Option<PathBuf>,
    },
    /// Show each host's address and state.
    Status,
    /// Open an SSH session (or run a command) on a host as `ops`.
    Ssh {
        host: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Power off every host and the apt proxy; keep the disks.
    Down,
    /// Remove everything of the lab: machines, bridge, proxy state, key, inventory.
    Destroy,
    /// Power one host off.
    Stop { host: String },
    /// Power one host on.
    Start { host: String },
    /// Cut one host from the network (partition).
    Cut { host: String },
    /// Put a cut host back on the network, at full speed (undoes `cut` and `throttle`).
    Heal { host: String },
    /// Slow the link towards one host to RATE (tc's units: 40mbit, 512kbit), to rehearse
    /// slow links and cut a transfer half-way. `heal` restores the full speed.
    Throttle {
        host: String,
        #[arg(long)]
        rate: String,
    },
    /// Add a host to the lab: its own next free address, a fresh disk, booted, in known_hosts
    /// and the inventory. The stack is not applied (`provisioner node add` or `apply` does it).
    Add {
        host: String,
        /// masters, agents or extra (storage).
        #[arg(long)]
        group: String,
    },
    /// Remove a host: power it off, delete its disk, take it out of known_hosts and the inventory.
    Remove { host: String },
    /// Rebuild a host as a replaced machine: same name and address, fresh disk, new host keys.
    /// known_hosts keeps the old keys, so `apply` refuses the host until its new key is accepted.
    Rebuild { host: String },
    /// Build the cached base image (debootstrap, once) and print its root filesystem. With
    /// --docker, also import it into Docker (DOCKER_HOST) for Vagrant's docker provider.
    Image {
        /// Import the image into Docker as this tag (Vagrant's docker provider: vagrant/).
        #[arg(long, value_name = "TAG", num_args = 0..=1, default_missing_value = super::docker::DEFAULT_TAG)]
        docker: Option<String>,
    },
    /// Join (or with --stop, leave) the labs' apt proxy, for hosts that are not a lab's (the
    /// Vagrant docker provider's machines): the machine's one apt-cacher-ng, on
    /// http://10.255.255.254:3142, with one Debian backend, this machine's mirror. It runs
    /// while a lab or a DIR uses it.
    Proxy {
        /// The directory that names this user (Vagrant's state dir); the proxy forgets a user
        /// whose directory is gone.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        stop: bool,
    },
}

fn fail(e: &Error) -> ExitCode {
    eprint_line(&format!("error: {e}"));
    ExitCode::from(e.exit_code() as u8)
}

fn print_up(name: &str, r: &super::UpReport, secs: f64) {
    if r.changed_nothing() {
        print_line(&format!(
            "lab {name}: already up, nothing changed ({} hosts running: {}); inventory {}",
            r.already_running.len(),
            r.already_running.join(" "),
            r.inventory.display()
        ));
    } else {
        print_line(&format!(
            "lab {name} is up in {secs:.1}s: created [{}], booted [{}], already running [{}]",
            r.created.join(" "),
            r.booted.join(" "),
            r.already_running.join(" ")
        ));
        print_line(&format!("inventory: {}", r.inventory.display()));
        print_line(&format!("try: provisioner lab ssh --name {name} master1"));
    }
}

pub fn run(args: LabArgs) -> ExitCode {
    let start = Instant::now();
    let spinner = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    });
    let line = |s: &str| format!("[{:>6.1}s] {s}", start.elapsed().as_secs_f64());
    let sink = |ev: LabEvent| {
        let text = match &ev {
            LabEvent::Step(s) => line(&format!("{s} ...")),
            LabEvent::Done(s) => line(s),
            LabEvent::Note(s) => line(s),
        };
        match (&spinner, &ev) {
            (Some(pb), LabEvent::Step(s)) => pb.set_message(s.clone()),
            (Some(pb), _) => pb.println(text),
            (None, _) => eprint_line(&text),
        }
    };
    let name = args.name.clone();
    let result: Result<(), Error> = match args.command {
        LabCommand::Up {
            masters,
            agents,
            extra,
            subnet,
            inventory,
            install_deps,
            bare,
            stack,
            stack_dir,
            mesos_artifact,
        } => {
            let asked = match (bare, stack || stack_dir.is_some()) {
                (true, _) => Some(false),
                (false, true) => Some(true),
                (false, false) => None,
            };
            let stack = match super::stack_wanted(&name, asked) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            // Where Mesos comes from, settled before any host is made.
            let mesos = match super::mesos_from(&name, mesos_artifact.as_deref(), stack, &sink) {
                Ok(m) => m,
                Err(e) => return fail(&e),
            };
            let opts = UpOptions {
                name: name.clone(),
                masters,
                agents,
                extra,
                subnet,
                inventory,
                install_deps,
                mesos,
                stack,
            };
            let up = super::up(&opts, &sink);
            if let Some(pb) = &spinner {
                pb.finish_and_clear();
            }
            let report = match up {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            print_up(&name, &report, start.elapsed().as_secs_f64());
            if !stack {
                if report.created.is_empty() {
                    print_line(&format!(
                    "lab {name} is bare (made with --bare): the stack is not applied; `provisioner lab up --name {name} --stack` applies it"
                    ));
                }
                return ExitCode::SUCCESS;
            }
            print_line(&format!(
                "applying the stack to lab {name} (a re-run changes nothing when it is converged)"
            ));
            let spec = crate::run::RunSpec::new(
                "lab up",
                vec![report.inventory.clone()],
                crate::run::Target::Stack {
                    dir: stack_dir,
                    play: None,
                },
                crate::exec::Mode::Apply,
            );
            let io = crate::run::RunIo {
                sinks: vec![crate::report::terminal::sink(
                    crate::report::terminal::Output::Human,
                    crate::report::human::HumanOptions {
                        color: std::io::stdout().is_terminal(),
                        ..Default::default()
                    },
                )],
                ..Default::default()
            };
            let code = match crate::run::run(&spec, io) {
                Ok(outcome) => {
                    crate::report::terminal::print_outcome(&outcome);
                    ExitCode::from(outcome.exit as u8)
                }
                Err(e) => fail(&e),
            };
            if code != ExitCode::SUCCESS {
                eprint_line(&format!(
                    "error: lab {name} is up, but applying the stack failed (above); fix it and re-run `provisioner lab up --name {name}`, or `provisioner apply -i {}`",
                    report.inventory.display()
                ));
                return code;
            }
            match crate::stack::builtin_bundle() {
                Ok(b) => {
                    print_line("endpoints:");
                    for (what, at) in super::endpoints(&report.hosts, &b) {
                        print_line(&format!("  {what:<22} {at}"));
                    }
                    print_line(&format!(
                        "  {:<22} provisioner tls ca -i {}  (Mesos speaks TLS: curl --cacert)",
                        "cluster CA",
                        report.inventory.display()
                    ));
                }
                Err(e) => return fail(&e),
            }
            Ok(())
        }
        LabCommand::Status => super::status(&name).map(|s| {
            print_line(&format!(
                "lab {}  subnet {}  bridge {} ({})  apt proxy {}  inventory {}",
                s.name,
                s.subnet,
                s.bridge,
                if s.bridge_present {
                    "present"
                } else {
                    "absent"
                },
                if s.proxy_running {
                    format!(
                        "{} running (users: {})",
                        super::proxy::url(),
                        s.proxy_users.join(" ")
                    )
                } else {
                    "stopped".to_string()
                },
                s.inventory.display()
            ));
            print_line(&format!(
                "{:<10} {:<15} {:<18} STATE",
                "HOST", "IP", "MACHINE"
            ));
            for h in &s.hosts {
                print_line(&format!(
                    "{:<10} {:<15} {:<18} {}",
                    h.name, h.ip, h.machine, h.run
                ));
            }
        }),
        LabCommand::Ssh { host, command } => match super::ssh_command(&name, &host, &command) {
            Ok(mut c) => {
                use std::os::unix::process::CommandExt;
                let e = c.exec();
                Err(Error::Environment(format!("cannot run ssh: {e}")))
            }
            Err(e) => Err(e),
        },
        LabCommand::Down => super::down(&name, &sink),
        LabCommand::Destroy => super::destroy(&name, &sink).map(|existed| {
            if !existed {
                print_line(&format!("no lab named {name}; nothing to destroy"));
            }
        }),
        LabCommand::Stop { host } => super::stop_host(&name, &host, &sink),
        LabCommand::Start { host } => super::start_host(&name, &host, &sink),
        LabCommand::Cut { host } => super::cut(&name, &host, &sink),
        LabCommand::Heal { host } => super::heal(&name, &host, &sink),
        LabCommand::Throttle { host, rate } => super::throttle(&name, &host, &rate, &sink),
        LabCommand::Add { host, group } => super::add_host(&name, &host, &group, &sink).map(|r| {
            print_line(&format!(
                "{host} is up in lab {name}; inventory {}",
                r.inventory.display()
            ));
        }),
        LabCommand::Remove { host } => super::remove_host(&name, &host, &sink),
        LabCommand::Image { docker } => match docker {
            Some(tag) => super::docker::ensure_image(&tag, &sink).map(|_| ()),
            None => super::image_path(&sink).map(|p| print_line(&p.display().to_string())),
        },
        LabCommand::Proxy { dir, stop } => {
            if stop {
                super::docker::proxy_stop(&dir, &sink)
            } else {
                super::docker::proxy_start(&dir, &sink)
            }
        }
        LabCommand::Rebuild { host } => super::rebuild_host(&name, &host, &sink).map(|keys| {
            print_line(&format!(
                "{host}'s new host keys (known_hosts still has the old ones; `lab up --name {name}` accepts these):"
            ));
            for k in keys {
                print_line(&format!("  {k}"));
            }
        }),
    };
    if let Some(pb) = &spinner {
        pb.finish_and_clear();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}
