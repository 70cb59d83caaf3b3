//! `provisioner lab`: local test clusters of real systemd hosts (systemd-nspawn + debootstrap).
//!
//! Sync code over std::process and threads. Functions report progress through a [`Sink`] of
//! [`LabEvent`]s and return data; the CLI layer (`lab::cli`) renders them.
//!
//! What a lab is, on the control machine:
//! - the base image, built once: `/var/cache/provisioner/images/bookworm-<recipe hash>/rootfs`;
//! - the shared apt cache: `/var/cache/provisioner/apt`, served by the labs' one apt proxy
//!   (`/var/lib/provisioner/apt-proxy/`, see [`proxy`]);
//! - the lab's state dir `/var/lib/provisioner/labs/<name>/`: `state.json`, the SSH key pair
//!   `id_ed25519`, `known_hosts`, `machines/<host>/` (each host's root filesystem, a full copy of
//!   the image), `logs/<host>.log` (console);
//! - a bridge `pl-<name>` with `.1` of the subnet, one nspawn process per running host;
//! - the inventory (`inventories/<name>.yml` by default).

pub mod cli;
pub mod docker;
pub mod image;
pub mod inventory;
pub mod machine;
pub mod mirror;
pub mod net;
pub mod prereq;
pub mod proxy;
pub mod spec;
pub mod state;
pub mod sys;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

pub use cli::LabArgs;
use spec::{machine_name, HostSpec, LabSpec, Role, Subnet};
use state::{HostState, LabState, STATE_VERSION};
use sys::cmd;

use crate::error::{Error, Result};

pub const STATE_ROOT: &str = "/var/lib/provisioner/labs";
pub const CACHE_ROOT: &str = "/var/cache/provisioner";
pub const DEFAULT_SUBNET: &str = "10.250.0.0/24";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Progress of a lab operation, for the CLI to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabEvent {
    /// A long step begins.
    Step(String),
    /// A step (or one host's part of it) is done.
    Done(String),
    /// Something worth telling that changes nothing.
    Note(String),
}

pub type Sink<'a> = &'a (dyn Fn(LabEvent) + Sync);

/// Where one lab keeps its things.
#[derive(Clone, Debug)]
pub struct LabPaths {
    pub root: PathBuf,
}

impl LabPaths {
    pub fn new(name: &str) -> Self {
        LabPaths {
            root: Path::new(STATE_ROOT).join(name),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }
    pub fn machine(&self, host: &str) -> PathBuf {
        self.root.join("machines").join(host)
    }
    pub fn log(&self, host: &str) -> PathBuf {
        self.root.join("logs").join(format!("{host}.log"))
    }
    /// This lab as a user of the apt proxy.
    pub fn proxy_user(&self) -> proxy::User {
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        proxy::User::lab(&name, &self.root)
    }
}

/// What `lab up` was asked for. `None` means: the existing lab's value, or the default.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    pub name: String,
    pub masters: Option<usize>,
    pub agents: Option<usize>,
    pub extra: Option<usize>,
    pub subnet: Option<String>,
    pub inventory: Option<PathBuf>,
    pub install_deps: bool,
    /// Where the stack's Mesos comes from (see [`mesos_from`]); written to the inventory.
    pub mesos: MesosFrom,
    /// Whether the caller applies the stack after `up` (recorded in the lab's state; see
    /// [`stack_wanted`]).
    pub stack: bool,
}

/// What `lab up` did.
#[derive(Clone, Debug, Default)]
pub struct UpReport {
    pub image_built: bool,
    pub created: Vec<String>,
    pub booted: Vec<String>,
    pub already_running: Vec<String>,
    pub inventory: PathBuf,
    pub inventory_written: bool,
    /// Every host of the lab (for the endpoints printed after the stack is applied).
    pub hosts: Vec<HostSpec>,
}

impl UpReport {
    pub fn changed_nothing(&self) -> bool {
        !self.image_built
            && self.created.is_empty()
            && self.booted.is_empty()
            && !self.inventory_written
    }
}

/// A host's power and network state, seen live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRun {
    /// Running; `systemctl is-system-running` inside (running, degraded, starting, ...).
    Running(String),
    /// Running, but its link to the bridge is down (`lab cut`).
    Cut,
    Stopped,
}

impl std::fmt::Display for HostRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostRun::Running(s) => write!(f, "running ({s})"),
            HostRun::Cut => f.write_str("cut (network down)"),
            HostRun::Stopped => f.write_str("stopped"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct HostStatus {
    pub name: String,
    pub ip: String,
    pub machine: String,
    pub run: HostRun,
}

#[derive(Clone, Debug)]
pub struct LabStatus {
    pub name: String,
    pub subnet: String,
    pub bridge: String,
    pub bridge_present: bool,
    pub proxy_running: bool,
    /// Who keeps the shared apt proxy running (`lab-<name>`, Vagrant's `dir…`).
    pub proxy_users: Vec<String>,
    pub inventory: PathBuf,
    pub hosts: Vec<HostStatus>,
}

fn load(name: &str) -> Result<(LabPaths, LabState)> {
    spec::validate_name(name)?;
    let paths = LabPaths::new(name);
    let st = LabState::load(&paths.state())?.ok_or_else(|| {
        Error::Usage(format!(
            "no lab named {name:?} (no {}); create it with `provisioner lab up --name {name}`",
            paths.state().display()
        ))
    })?;
    Ok((paths, st))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Environment(format!("cannot read the current directory: {e}")))?;
    Ok(cwd.join(p))
}

/// The init PID of a running host, if its nspawn is alive.
fn running_init(h: &HostState) -> Option<u32> {
    let pid = h.pid?;
    if !machine::is_ours(pid, &h.machine) {
        return None;
    }
    sys::container_init(pid)
}

fn host_run(h: &HostState) -> HostRun {
    match running_init(h) {
        None => HostRun::Stopped,
        Some(init) => {
            if let Ok(veth) = net::host_veth(init) {
                if !net::link_is_up(&veth) {
                    return HostRun::Cut;
                }
            }
            HostRun::Running(machine::system_state(init).unwrap_or_else(|| "unknown".into()))
        }
    }
}

/// Resolve the lab's shape from the options and any existing state.
fn resolve_spec(opts: &UpOptions, existing: Option<&LabState>) -> Result<LabSpec> {
    let Some(st) = existing else {
        let spec = LabSpec {
            name: opts.name.clone(),
            subnet: opts.subnet.as_deref().unwrap_or(DEFAULT_SUBNET).parse()?,
            masters: opts.masters.unwrap_or(3),
            agents: opts.agents.unwrap_or(2),
            extra: opts.extra.unwrap_or(0),
        };
        spec.validate()?;
        return Ok(spec);
    };
    let have = st.spec()?;
    let mut diffs = Vec::new();
    let mut cmp = |what: &str, asked: Option<usize>, has: usize| {
        if asked.is_some_and(|a| a != has) {
            diffs.push(format!("{what} {has}"));
        }
    };
    cmp("masters", opts.masters, have.masters);
    cmp("agents", opts.agents, have.agents);
    cmp("extra", opts.extra, have.extra);
    if let Some(s) = &opts.subnet {
        if s.parse::<Subnet>()? != have.subnet {
            diffs.push(format!("subnet {}", have.subnet));
        }
    }
    if let Some(inv) = &opts.inventory {
        if absolute(inv)? != st.inventory {
            diffs.push(format!("inventory {}", st.inventory.display()));
        }
    }
    if !diffs.is_empty() {
        return Err(Error::Usage(format!(
            "lab {} already exists with {}; destroy it first (`provisioner lab destroy --name {}`) to change its shape",
            st.name,
            diffs.join(", "),
            st.name
        )));
    }
    Ok(have)
}

/// Whether `lab up` applies the bundled stack. `asked` is `--stack` (Some(true)), `--bare`
/// (Some(false)) or neither. Without a flag, a new lab gets the stack and an existing lab keeps
/// what it was made with. A bare lab can take the stack later (`--stack`); the stack cannot be
/// taken off a lab (`--bare` on it is refused).
pub fn stack_wanted(name: &str, asked: Option<bool>) -> Result<bool> {
    spec::validate_name(name)?;
    prereq::check_root()?;
    let recorded = LabState::load(&LabPaths::new(name).state())?.map(|st| st.stack);
    decide_stack(name, recorded, asked)
}

fn decide_stack(name: &str, recorded: Option<bool>, asked: Option<bool>) -> Result<bool> {
    match (recorded, asked) {
        (Some(true), Some(false)) => Err(Error::Usage(format!(
            "lab {name} has the stack applied; `--bare` cannot take it off. Run `provisioner lab up --name {name}` without it, or destroy the lab first (`provisioner lab destroy --name {name}`)"
        ))),
        (_, Some(a)) => Ok(a),
        (Some(r), None) => Ok(r),
        (None, None) => Ok(true),
    }
}

/// Bring a lab up: build/reuse the image, create missing hosts, start stopped ones. A second
/// call on a running lab changes nothing.
pub fn up(opts: &UpOptions, sink: Sink<'_>) -> Result<UpReport> {
    spec::validate_name(&opts.name)?;
    // Missing host packages are installed after one notice (a fresh machine's first `lab up`
    // needs no other step); `--install-deps` asks for the same.
    prereq::check_root()?;
    let missing = prereq::missing();
    if !missing.is_empty() || opts.install_deps {
        if !missing.is_empty() {
            sink(LabEvent::Note(format!(
                "installing the packages the lab needs: {}",
                missing.join(" ")
            )));
        }
        let installed = prereq::install()?;
        if !installed.is_empty() {
            sink(LabEvent::Done(format!("installed {}", installed.join(" "))));
        }
    }
    prereq::check()?;
    let paths = LabPaths::new(&opts.name);
    let existing = LabState::load(&paths.state())?;
    let spec = resolve_spec(opts, existing.as_ref())?;
    let bridge = spec.bridge_name();
    net::check_subnet_free(&bridge, &spec.subnet)?;
    let mirrors = mirror::detect()?;
    let mut report = UpReport::default();

    // 1. The base image (cached).
    let cache = Path::new(CACHE_ROOT);
    report.image_built = ensure_image(&mirrors, sink)?;

    // 2. The lab's key pair.
    std::fs::create_dir_all(&paths.root)
        .map_err(|e| sys::io_err("cannot create", &paths.root, e))?;
    sys::set_mode(&paths.root, 0o700)?;
    let key = paths.key();
    if !key.is_file() {
        sys::run(&mut cmd(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                &format!("provisioner-lab-{}", spec.name),
                "-f",
                &key.display().to_string(),
            ],
        ))?;
    }
    let pub_path = key.with_extension("pub");
    let pubkey =
        std::fs::read_to_string(&pub_path).map_err(|e| sys::io_err("cannot read", &pub_path, e))?;

    // 3. Kernel limits, bridge and apt proxy.
    for (knob, was, now) in raise_inotify_limits()? {
        sink(LabEvent::Done(format!(
            "raised {knob} from {was} to {now} (every host's systemd needs inotify instances)"
        )));
    }
    if net::ensure_bridge(&bridge, &spec.subnet)? {
        sink(LabEvent::Done(format!(
            "bridge {bridge} {}/{}",
            spec.subnet.bridge_ip(),
            spec.subnet.prefix()
        )));
    }
    let proxy = proxy::Proxy::shared();
    if proxy.acquire(&paths.proxy_user(), &mirrors)? {
        sink(LabEvent::Done(format!(
            "apt proxy on {} (backend {}), shared by every lab on this machine",
            proxy::url(),
            mirrors.debian
        )));
    }
    for problem in proxy.warm(&machine::index_urls(&mirrors)) {
        sink(LabEvent::Done(format!(
            "apt proxy: could not pre-fetch {problem} (hosts will fetch it themselves)"
        )));
    }

    // 4. State, before any machine runs, so `destroy` can always find what exists. An existing
    // lab's hosts are its recorded ones (`lab add` / `lab remove` change them).
    let hosts = match &existing {
        Some(st) => st.host_specs(),
        None => spec.hosts(),
    };
    let inventory_path = match (&existing, &opts.inventory) {
        (Some(st), _) => st.inventory.clone(),
        (None, Some(p)) => absolute(p)?,
        (None, None) => absolute(&Path::new("inventories").join(format!("{}.yml", spec.name)))?,
    };
    let mut st = existing.unwrap_or_else(|| LabState {
        version: STATE_VERSION,
        name: spec.name.clone(),
        subnet: spec.subnet.to_string(),
        masters: spec.masters,
        agents: spec.agents,
        extra: spec.extra,
        bridge: bridge.clone(),
        image: image::rootfs(cache),
        mirror: mirrors.debian.clone(),
        security_mirror: mirrors.security.clone(),
        inventory: inventory_path.clone(),
        stack: opts.stack,
        mesos_artifact: None,
        hosts: hosts
            .iter()
            .map(|h| HostState {
                name: h.name.clone(),
                role: h.role,
                ip: h.ip.to_string(),
                machine: machine_name(&spec.name, &h.name),
                pid: None,
            })
            .collect(),
    });
    st.stack = opts.stack;
    st.mesos_artifact = opts.mesos.artifact.clone();
    st.save(&paths.state())?;
    let image_rootfs = st.image.clone();
    let missing_disk = hosts.iter().any(|h| !paths.machine(&h.name).is_dir());
    if missing_disk && !image_rootfs.is_dir() {
        return Err(Error::Environment(format!(
            "the image this lab was made from ({}) is gone; destroy the lab and bring it up again",
            image_rootfs.display()
        )));
    }
    let state = Mutex::new(st);

    // 5. Hosts, in parallel: create if missing, boot if stopped.
    let results: Vec<(String, Result<(bool, bool)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let (paths, state, hosts, mirrors, pubkey) =
                    (&paths, &state, &hosts, &mirrors, &pubkey);
                let (image_rootfs, bridge, subnet) = (&image_rootfs, &bridge, &spec.subnet);
                s.spawn(move || {
                    let cfg = machine::HostConfig {
                        host: h,
                        all: hosts,
                        subnet,
                        mirrors,
                        pubkey,
                    };
                    let r = bring_up_host(paths, state, image_rootfs, bridge, &cfg, sink);
                    (h.name.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(&hosts)
            .map(|(hd, h)| {
                hd.join().unwrap_or_else(|_| {
                    (
                        h.name.clone(),
                        Err(Error::Environment("a host thread panicked".into())),
                    )
                })
            })
            .collect()
    });
    let st = state
        .into_inner()
        .map_err(|_| Error::Environment("lab state lock poisoned".into()))?;
    st.save(&paths.state())?;

    // 6. known_hosts from every host's keys, then the inventory.
    write_known_hosts(&paths, &hosts)?;
    let mut first_err = None;
    for (name, r) in results {
        match r {
            Ok((created, booted)) => {
                if created {
                    report.created.push(name.clone());
                }
                if booted {
                    report.booted.push(name);
                } else {
                    report.already_running.push(name);
                }
            }
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(Error::Environment(format!("{name}: {e}")));
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let text = inventory::render(
        &spec.name,
        &hosts,
        &paths.key(),
        &paths.known_hosts(),
        &mirrors.debian,
        &opts.mesos,
    );
    if std::fs::read_to_string(&inventory_path).ok().as_deref() != Some(text.as_str()) {
        sys::write(&inventory_path, &text)?;
        report.inventory_written = true;
    }
    report.inventory = inventory_path;
    report.hosts = hosts;
    Ok(report)
}

/// The cached base image's root filesystem, built first when missing (`lab image`).
pub fn image_path(sink: Sink<'_>) -> Result<PathBuf> {
    prereq::check()?;
    ensure_image(&mirror::detect()?, sink)?;
    Ok(image::rootfs(Path::new(CACHE_ROOT)))
}

/// Build the base image unless it is cached; true when it was built.
fn ensure_image(mirrors: &mirror::Mirrors, sink: Sink<'_>) -> Result<bool> {
    let cache = Path::new(CACHE_ROOT);
    if !image::is_ready(cache) {
        sink(LabEvent::Step(format!(
            "building the base image (debootstrap {}, about a minute) from {}",
            image::SUITE,
            mirrors.debian
        )));
    }
    let built = image::ensure(cache, &mirrors.debian)?;
    if built {
        sink(LabEvent::Done(format!(
            "base image {}",
            image::image_dir(cache).display()
        )));
    }
    Ok(built)
}

/// Where a lab's Mesos comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MesosFrom {
    /// A Mesos build tarball on this machine (`mesos_source: local`, `mesos_local_artifact`);
    /// `None`: AVENTER's repository, as in production.
    pub artifact: Option<PathBuf>,
    /// The Mesos-DNS binary pushed with it (`mesos_dns_source: local`): testkit's TEST
    /// STAND-IN, since Mesos-DNS has no build a lab can obtain.
    pub dns: Option<PathBuf>,
}

/// Where `lab up` gets Mesos: the artifact given (`--mesos-artifact`,
/// `PROVISIONER_MESOS_ARTIFACT`), else the one this lab recorded, else AVENTER's repository,
/// which must then be reachable from this machine. With an artifact, Mesos-DNS is the test
/// stand-in, built from this clone when it is missing. `stack: false` (a bare lab) checks and
/// builds nothing, and records the artifact given.
pub fn mesos_from(
    name: &str,
    given: Option<&Path>,
    stack: bool,
    sink: Sink<'_>,
) -> Result<MesosFrom> {
    let recorded = LabState::load(&LabPaths::new(name).state())?.and_then(|st| st.mesos_artifact);
    // Canonical, so the same file named another way does not rewrite the inventory.
    let artifact = match given {
        Some(p) => Some(std::fs::canonicalize(p).or_else(|_| absolute(p))?),
        None => recorded,
    };
    let Some(artifact) = artifact else {
        if stack {
            let url = aventer_url()?;
            sink(LabEvent::Note(format!(
                "no Mesos artifact given (--mesos-artifact or PROVISIONER_MESOS_ARTIFACT): Mesos and Mesos-DNS come from AVENTER's repository ({url}), as in production"
            )));
            reachable(&url).map_err(|e| {
                Error::Environment(format!(
                    "AVENTER's repository ({url}) cannot be reached from this machine ({e}), and no Mesos artifact was given: set PROVISIONER_MESOS_ARTIFACT (or --mesos-artifact) to a Mesos build tarball, e.g. mesos-1.11.0-debian12-amd64.tar.gz"
                ))
            })?;
        }
        return Ok(MesosFrom::default());
    };
    if !stack {
        return Ok(MesosFrom {
            artifact: Some(artifact),
            dns: None,
        });
    }
    if !artifact.is_file() {
        return Err(Error::Usage(format!(
            "the Mesos artifact {} is not a file (--mesos-artifact or PROVISIONER_MESOS_ARTIFACT: a Mesos build tarball)",
            artifact.display()
        )));
    }
    let dns = standin_path()?;
    if !dns.is_file() {
        build_standin(&dns, sink)?;
    }
    Ok(MesosFrom {
        artifact: Some(artifact),
        dns: Some(dns),
    })
}

/// The bundle's AVENTER repository URL (the Mesos master's apt source).
fn aventer_url() -> Result<String> {
    let bundle = cluster_core::bundle::Bundle::builtin()
        .map_err(|e| Error::Environment(format!("the built-in bundle: {e:?}")))?;
    bundle
        .component("mesos_master")
        .and_then(|c| c.sources.get("Debian"))
        .and_then(|s| s.value.apt_repo.as_ref())
        .map(|r| r.url.value.clone())
        .ok_or_else(|| Error::Environment("the bundle names no AVENTER repository".into()))
}

/// A TCP connection to an http(s) URL's host can be made within 5 s.
fn reachable(url: &str) -> std::result::Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let mut last = format!("{authority} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// Where `lab up` looks for the Mesos-DNS stand-in: next to the running binary (the same cargo
/// target directory, where `cargo build -p testkit` puts it).
pub fn standin_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Environment(format!("cannot find the running binary: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    Ok(dir.join(STANDIN_BINARY))
}

/// Builds the stand-in with cargo, into the target directory this binary runs from and in its
/// profile, when the clone this binary was built from is still there (`cargo run -- lab up`
/// from a fresh clone needs no other step).
fn build_standin(want: &Path, sink: Sink<'_>) -> Result<()> {
    let dir = want.parent().unwrap_or(Path::new("."));
    let profile = dir.file_name().and_then(|s| s.to_str()).unwrap_or_default();
    let target = dir.parent();
    let clone = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    let missing = || {
        Error::Usage(format!(
            "the Mesos-DNS test stand-in is not built ({} is missing), and the clone this provisioner was built from is not here to build it: run `cargo build -p testkit` (same profile as this provisioner) in the clone",
            want.display()
        ))
    };
    let (Some(clone), Some(target)) = (clone, target) else {
        return Err(missing());
    };
    if !clone.join("testkit/Cargo.toml").is_file() || !matches!(profile, "debug" | "release") {
        return Err(missing());
    }
    sink(LabEvent::Step(
        "building the Mesos-DNS test stand-in (cargo build -p testkit)".into(),
    ));
    let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    cmd.current_dir(clone)
        .args(["build", "-q", "-p", "testkit", "--target-dir"])
        .arg(target);
    if profile == "release" {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| Error::Environment(format!("cannot run cargo to build the stand-in: {e}")))?;
    if !out.status.success() || !want.is_file() {
        return Err(Error::Environment(format!(
            "building the Mesos-DNS test stand-in failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    sink(LabEvent::Done("built the Mesos-DNS test stand-in".into()));
    Ok(())
}

/// The file name of the Mesos-DNS stand-in (crate `testkit`).
pub const STANDIN_BINARY: &str = "mesos-standin";

/// The inotify limits a lab of many hosts needs on this machine (each host's systemd and
/// journald take inotify instances; Debian's default of 128 instances per user stops the
/// 21st or so host with "Too many open files"). Raised, never lowered; returns what changed.
const INOTIFY_FLOORS: &[(&str, u64)] = &[
    ("fs.inotify.max_user_instances", 8192),
    ("fs.inotify.max_user_watches", 524_288),
];

fn raise_inotify_limits() -> Result<Vec<(&'static str, u64, u64)>> {
    let mut changed = Vec::new();
    for (knob, floor) in INOTIFY_FLOORS {
        let path = std::path::PathBuf::from("/proc/sys").join(knob.replace('.', "/"));
        let was: u64 = std::fs::read_to_string(&path)
            .map_err(|e| sys::io_err("cannot read", &path, e))?
            .trim()
            .parse()
            .unwrap_or(0);
        if was < *floor {
            std::fs::write(&path, floor.to_string())
                .map_err(|e| sys::io_err("cannot raise", &path, e))?;
            changed.push((*knob, was, *floor));
        }
    }
    Ok(changed)
}

/// The stack's endpoints on a lab, for humans: (what, where).
pub fn endpoints(
    hosts: &[HostSpec],
    bundle: &cluster_core::bundle::Bundle,
) -> Vec<(String, String)> {
    let port = |c: &str, p: &str| bundle.port(c, p);
    let masters: Vec<&HostSpec> = hosts
        .iter()
        .filter(|h| h.role == spec::Role::Master)
        .collect();
    let mut out = Vec::new();
    if let Some(p) = port("mesos_master", "http") {
        for m in &masters {
            out.push((
                format!("Mesos master {}", m.name),
                // libprocess TLS is on by default (roles: mesos_tls).
                format!("https://{}:{p}/", m.ip),
            ));
        }
    }
    if let Some(mon) = masters.first() {
        if let Some(p) = port("prometheus", "http") {
            out.push(("Prometheus".into(), format!("http://{}:{p}/", mon.ip)));
        }
        if let Some(p) = port("alertmanager", "http") {
            out.push(("Alertmanager".into(), format!("http://{}:{p}/", mon.ip)));
        }
    }
    if let Some(p) = port("zookeeper", "client") {
        let zk: Vec<String> = masters.iter().map(|m| format!("{}:{p}", m.ip)).collect();
        out.push(("ZooKeeper".into(), zk.join(",")));
    }
    out
}

/// One host's part of `up`: (created, booted).
fn bring_up_host(
    paths: &LabPaths,
    state: &Mutex<LabState>,
    image_rootfs: &Path,
    bridge: &str,
    cfg: &machine::HostConfig<'_>,
    sink: Sink<'_>,
) -> Result<(bool, bool)> {
    let h = cfg.host;
    let dir = paths.machine(&h.name);
    let created = machine::create(image_rootfs, &dir, cfg)?;
    if created {
        sink(LabEvent::Done(format!("{}: created", h.name)));
    }
    let current = state
        .lock()
        .map_err(|_| Error::Environment("lab state lock poisoned".into()))?
        .host(&h.name)?
        .clone();
    if running_init(&current).is_some() {
        return Ok((created, false));
    }
    boot(paths, state, &current, h, &dir, bridge)?;
    sink(LabEvent::Done(format!("{}: booted ({})", h.name, h.ip)));
    Ok((created, true))
}

fn boot(
    paths: &LabPaths,
    state: &Mutex<LabState>,
    hs: &HostState,
    h: &HostSpec,
    dir: &Path,
    bridge: &str,
) -> Result<()> {
    let log = paths.log(&h.name);
    machine::write_apt_proxy(dir)?;
    let pid = machine::launch(&machine::Launch {
        machine: &hs.machine,
        hostname: &h.name,
        rootfs: dir,
        bridge,
        log: &log,
    })?;
    {
        let mut st = state
            .lock()
            .map_err(|_| Error::Environment("lab state lock poisoned".into()))?;
        if let Some(x) = st.host_mut(&h.name) {
            x.pid = Some(pid);
        }
        st.save(&paths.state())?;
    }
    machine::wait_booted(pid, &hs.machine, h, &log, BOOT_TIMEOUT)
}

fn write_known_hosts(paths: &LabPaths, hosts: &[HostSpec]) -> Result<()> {
    let mut lines = Vec::new();
    for h in hosts {
        let root = paths.machine(&h.name);
        if root.is_dir() {
            lines.extend(machine::known_host_lines(&root, h)?);
        }
    }
    sys::write(&paths.known_hosts(), &(lines.join("\n") + "\n"))
}

pub fn status(name: &str) -> Result<LabStatus> {
    let (_, st) = load(name)?;
    let proxy = proxy::Proxy::shared();
    Ok(LabStatus {
        name: st.name.clone(),
        subnet: st.subnet.clone(),
        bridge: st.bridge.clone(),
        bridge_present: net::bridge_exists(&st.bridge),
        proxy_running: proxy.pid().is_some(),
        proxy_users: proxy.user_names(),
        inventory: st.inventory.clone(),
        hosts: st
            .hosts
            .iter()
            .map(|h| HostStatus {
                name: h.name.clone(),
                ip: h.ip.clone(),
                machine: h.machine.clone(),
                run: host_run(h),
            })
            .collect(),
    })
}

/// nspawn processes running a root filesystem under this lab's dir (found even without state).
fn lab_nspawns(paths: &LabPaths) -> Vec<(u32, String)> {
    let prefix = paths.root.join("machines").display().to_string();
    sys::processes()
        .into_iter()
        .filter(|(_, _, comm)| comm == "systemd-nspawn")
        .filter_map(|(pid, _, _)| {
            let words = sys::cmdline(pid)?;
            words.iter().any(|w| w.starts_with(&prefix)).then_some(())?;
            let machine = words
                .iter()
                .find_map(|w| w.strip_prefix("--machine="))?
                .to_string();
            Some((pid, machine))
        })
        .collect()
}

fn stop_all(paths: &LabPaths, st: Option<&mut LabState>, sink: Sink<'_>) {
    let mut targets = lab_nspawns(paths);
    if let Some(st) = &st {
        for h in &st.hosts {
            if let Some(pid) = h.pid {
                if machine::is_ours(pid, &h.machine) && !targets.iter().any(|(p, _)| *p == pid) {
                    targets.push((pid, h.machine.clone()));
                }
            }
        }
    }
    std::thread::scope(|s| {
        for (pid, m) in &targets {
            s.spawn(move || {
                machine::stop(*pid, m, STOP_TIMEOUT);
                sink(LabEvent::Done(format!("{m}: powered off")));
            });
        }
    });
    if let Some(st) = st {
        for h in &mut st.hosts {
            h.pid = None;
        }
    }
}

/// This lab leaves the apt proxy; the last lab (or Vagrant cluster) to leave stops it.
fn release_proxy(paths: &LabPaths, sink: Sink<'_>) {
    match proxy::Proxy::shared().release(&paths.proxy_user().name) {
        Ok(true) => sink(LabEvent::Done(format!(
            "apt proxy on {} stopped (no lab uses it any more)",
            proxy::url()
        ))),
        Ok(false) => {}
        Err(e) => sink(LabEvent::Note(format!("apt proxy: {e}"))),
    }
}

/// Power off every host and leave the apt proxy; keep the disks, the key and the bridge.
pub fn down(name: &str, sink: Sink<'_>) -> Result<()> {
    let (paths, mut st) = load(name)?;
    sink(LabEvent::Step(format!("powering off lab {name}")));
    stop_all(&paths, Some(&mut st), sink);
    release_proxy(&paths, sink);
    st.save(&paths.state())
}

/// Remove everything of this lab: machines, bridge, proxy state, key, its inventory.
/// Returns false when there was no such lab.
pub fn destroy(name: &str, sink: Sink<'_>) -> Result<bool> {
    spec::validate_name(name)?;
    let paths = LabPaths::new(name);
    let mut st = LabState::load(&paths.state()).ok().flatten();
    let bridge = st
        .as_ref()
        .map(|s| s.bridge.clone())
        .unwrap_or_else(|| spec::bridge_name(name));
    if st.is_none() && !paths.root.exists() && !net::bridge_exists(&bridge) {
        return Ok(false);
    }
    sink(LabEvent::Step(format!("destroying lab {name}")));
    stop_all(&paths, st.as_mut(), sink);
    release_proxy(&paths, sink);
    // A lab brought up by an older provisioner ran an apt-cacher-ng of its own.
    let dir = paths.root.join("acng");
    if let Ok(pid) = std::fs::read_to_string(dir.join("apt-cacher-ng.pid")) {
        if let Ok(pid) = pid.trim().parse::<u32>() {
            if sys::alive_with_arg(pid, &dir.display().to_string()) {
                sys::signal(pid, "TERM");
            }
        }
    }
    net::delete_bridge(&bridge)?;
    if let Some(st) = &st {
        for h in &st.hosts {
            machine::cleanup_cgroups(&h.machine);
        }
        // Remove the inventory only if it is the one we generated.
        if let Ok(text) = std::fs::read_to_string(&st.inventory) {
            if text.starts_with("# Generated by `provisioner lab up") {
                let _ = std::fs::remove_file(&st.inventory);
            }
        }
    }
    // Machine disks first, in parallel (deleting is slow on some filesystems).
    if let Ok(rd) = std::fs::read_dir(paths.root.join("machines")) {
        let dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        std::thread::scope(|s| {
            for d in &dirs {
                s.spawn(move || std::fs::remove_dir_all(d));
            }
        });
    }
    if paths.root.exists() {
        std::fs::remove_dir_all(&paths.root)
            .map_err(|e| sys::io_err("cannot remove", &paths.root, e))?;
    }
    sink(LabEvent::Done(format!("lab {name} destroyed")));
    Ok(true)
}

/// Power one host off.
pub fn stop_host(name: &str, host: &str, sink: Sink<'_>) -> Result<()> {
    let (paths, mut st) = load(name)?;
    let h = st.host(host)?.clone();
    match h.pid {
        Some(pid) if machine::is_ours(pid, &h.machine) => {
            machine::stop(pid, &h.machine, STOP_TIMEOUT);
            sink(LabEvent::Done(format!("{host}: powered off")));
        }
        _ => sink(LabEvent::Note(format!("{host} is already stopped"))),
    }
    if let Some(x) = st.host_mut(host) {
        x.pid = None;
    }
    st.save(&paths.state())
}

/// Power one host on (bridge and proxy too, if they are gone).
pub fn start_host(name: &str, host: &str, sink: Sink<'_>) -> Result<()> {
    prereq::check()?;
    let (paths, st) = load(name)?;
    let h = st.host(host)?.clone();
    if running_init(&h).is_some() {
        sink(LabEvent::Note(format!("{host} is already running")));
        return Ok(());
    }
    let spec = st.spec()?;
    net::ensure_bridge(&st.bridge, &spec.subnet)?;
    let mirrors = mirror::Mirrors {
        debian: st.mirror.clone(),
        security: st.security_mirror.clone(),
    };
    proxy::Proxy::shared().acquire(&paths.proxy_user(), &mirrors)?;
    let hs = st
        .host_specs()
        .into_iter()
        .find(|x| x.name == host)
        .ok_or_else(|| Error::Usage(format!("no host {host}")))?;
    let dir = paths.machine(host);
    if !dir.is_dir() {
        return Err(Error::Environment(format!(
            "{host} has no disk ({}); run `provisioner lab up --name {name}`",
            dir.display()
        )));
    }
    let bridge = st.bridge.clone();
    let state = Mutex::new(st);
    boot(&paths, &state, &h, &hs, &dir, &bridge)?;
    sink(LabEvent::Done(format!("{host}: booted ({})", hs.ip)));
    Ok(())
}

/// The role of a host that joins group `group` (`lab add --group`).
pub fn role_of_group(group: &str) -> Result<Role> {
    match group {
        "masters" | "master" => Ok(Role::Master),
        "agents" | "agent" => Ok(Role::Agent),
        "extra" | "storage" => Ok(Role::Extra),
        other => Err(Error::Usage(format!(
            "lab hosts join group masters, agents or extra (storage), not {other:?}"
        ))),
    }
}

/// The first host address of `subnet` no host of `st` has.
fn free_ip(st: &LabState) -> Result<String> {
    let subnet = st.spec()?.subnet;
    let used: Vec<&str> = st.hosts.iter().map(|h| h.ip.as_str()).collect();
    (0..)
        .map_while(|i| subnet.host_ip(i))
        .map(|ip| ip.to_string())
        .find(|ip| !used.contains(&ip.as_str()))
        .ok_or_else(|| Error::Usage(format!("lab {}'s subnet {subnet} is full", st.name)))
}

fn count_mut(st: &mut LabState, role: Role) -> &mut usize {
    match role {
        Role::Master => &mut st.masters,
        Role::Agent => &mut st.agents,
        Role::Extra => &mut st.extra,
    }
}

/// `lab add HOST --group G`: a new host in the lab (its own next free address, a fresh disk and
/// host keys), booted, in known_hosts and the inventory's group. The stack is not applied: that
/// is `provisioner node add`'s (or `apply`'s) job.
pub fn add_host(name: &str, host: &str, group: &str, sink: Sink<'_>) -> Result<UpReport> {
    let (paths, mut st) = load(name)?;
    spec::validate_name(host).map_err(|_| {
        Error::Usage(format!(
            "bad host name {host:?}: use 1 to {} characters a-z, 0-9 and '-', starting with a letter",
            spec::MAX_NAME_LEN
        ))
    })?;
    if st.hosts.iter().any(|h| h.name == host) {
        return Err(Error::Usage(format!(
            "lab {name} already has a host {host}"
        )));
    }
    let role = role_of_group(group)?;
    let ip = free_ip(&st)?;
    st.hosts.push(HostState {
        name: host.to_string(),
        role,
        ip,
        machine: machine_name(name, host),
        pid: None,
    });
    *count_mut(&mut st, role) += 1;
    st.save(&paths.state())?;
    let mesos = mesos_from(name, None, st.stack, sink)?;
    up(
        &UpOptions {
            name: name.to_string(),
            masters: None,
            agents: None,
            extra: None,
            subnet: None,
            inventory: None,
            install_deps: false,
            mesos,
            stack: st.stack,
        },
        sink,
    )
}

/// Rewrite known_hosts (from every host's disk) and the inventory from the lab's state.
fn refresh_files(paths: &LabPaths, st: &LabState, sink: Sink<'_>) -> Result<()> {
    let hosts = st.host_specs();
    write_known_hosts(paths, &hosts)?;
    let mesos = mesos_from(&st.name, None, st.stack, sink)?;
    let text = inventory::render(
        &st.name,
        &hosts,
        &paths.key(),
        &paths.known_hosts(),
        &st.mirror,
        &mesos,
    );
    sys::write(&st.inventory, &text)
}

/// `lab remove HOST`: power it off, delete its disk, and take it out of the lab's state,
/// known_hosts and inventory. The lab keeps at least one master and one agent.
pub fn remove_host(name: &str, host: &str, sink: Sink<'_>) -> Result<()> {
    let (paths, st) = load(name)?;
    let h = st.host(host)?.clone();
    let left = st.hosts.iter().filter(|x| x.role == h.role).count();
    if left == 1 && h.role != Role::Extra {
        return Err(Error::Usage(format!(
            "{host} is the lab's last {}; a lab keeps one",
            h.role.prefix()
        )));
    }
    stop_host(name, host, sink)?;
    let dir = paths.machine(host);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| sys::io_err("cannot remove", &dir, e))?;
    }
    let (_, mut st) = load(name)?;
    st.hosts.retain(|x| x.name != host);
    *count_mut(&mut st, h.role) -= 1;
    st.save(&paths.state())?;
    refresh_files(&paths, &st, sink)?;
    sink(LabEvent::Done(format!(
        "{host}: removed (disk deleted; out of known_hosts and {})",
        st.inventory.display()
    )));
    Ok(())
}

/// `lab rebuild HOST`: a replaced machine. The same name and address, a fresh disk from the
/// base image and new host keys. known_hosts keeps the OLD keys, as an operator's would: a plain
/// `apply` then refuses the host (its key changed) until the new key is accepted (`lab up`
/// re-reads every host's key from its disk; operators use `ssh-keygen -R`).
pub fn rebuild_host(name: &str, host: &str, sink: Sink<'_>) -> Result<Vec<String>> {
    prereq::check()?;
    let (paths, st) = load(name)?;
    let hs = st
        .host_specs()
        .into_iter()
        .find(|x| x.name == host)
        .ok_or_else(|| Error::Usage(format!("lab {name} has no host {host}")))?;
    stop_host(name, host, sink)?;
    let dir = paths.machine(host);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| sys::io_err("cannot remove", &dir, e))?;
    }
    let (_, st) = load(name)?;
    let spec = st.spec()?;
    let mirrors = mirror::Mirrors {
        debian: st.mirror.clone(),
        security: st.security_mirror.clone(),
    };
    let pub_path = paths.key().with_extension("pub");
    let pubkey =
        std::fs::read_to_string(&pub_path).map_err(|e| sys::io_err("cannot read", &pub_path, e))?;
    let all = st.host_specs();
    let cfg = machine::HostConfig {
        host: &hs,
        all: &all,
        subnet: &spec.subnet,
        mirrors: &mirrors,
        pubkey: &pubkey,
    };
    if !st.image.is_dir() {
        return Err(Error::Environment(format!(
            "the image this lab was made from ({}) is gone",
            st.image.display()
        )));
    }
    machine::create(&st.image, &dir, &cfg)?;
    sink(LabEvent::Done(format!("{host}: fresh disk, new host keys")));
    // The new keys' fingerprints (what an operator compares out of band).
    let new_keys: Vec<String> = machine::known_host_lines(&dir, &hs)?
        .iter()
        .filter_map(|line| {
            let mut w = line.split_whitespace().skip(1);
            let (kind, b64) = (w.next()?, w.next()?);
            let key = russh::keys::parse_public_key_base64(b64).ok()?;
            Some(format!(
                "{} ({kind})",
                crate::transport::known_hosts::fingerprint(&key)
            ))
        })
        .collect();
    let bridge = st.bridge.clone();
    net::ensure_bridge(&bridge, &spec.subnet)?;
    proxy::Proxy::shared().acquire(&paths.proxy_user(), &mirrors)?;
    let current = st.host(host)?.clone();
    let state = Mutex::new(st);
    boot(&paths, &state, &current, &hs, &dir, &bridge)?;
    sink(LabEvent::Done(format!(
        "{host}: booted ({}); known_hosts still holds its old keys",
        hs.ip
    )));
    Ok(new_keys)
}

fn veth_of(name: &str, host: &str) -> Result<String> {
    let (_, st) = load(name)?;
    let h = st.host(host)?;
    let init = running_init(h).ok_or_else(|| {
        Error::Usage(format!(
            "{host} is not running; start it with `provisioner lab start {host}`"
        ))
    })?;
    net::host_veth(init)
}

/// Partition one host from the network: its bridge port goes down.
pub fn cut(name: &str, host: &str, sink: Sink<'_>) -> Result<()> {
    let veth = veth_of(name, host)?;
    net::set_link(&veth, false)?;
    sink(LabEvent::Done(format!(
        "{host}: cut from the network ({veth} down)"
    )));
    Ok(())
}

/// Undo `cut` and `throttle`.
pub fn heal(name: &str, host: &str, sink: Sink<'_>) -> Result<()> {
    let veth = veth_of(name, host)?;
    net::set_rate(&veth, None)?;
    net::set_link(&veth, true)?;
    sink(LabEvent::Done(format!(
        "{host}: back on the network ({veth} up)"
    )));
    Ok(())
}

/// Slow what the bridge sends to one host (its host-side veth's egress) to `rate`.
pub fn throttle(name: &str, host: &str, rate: &str, sink: Sink<'_>) -> Result<()> {
    let veth = veth_of(name, host)?;
    net::set_rate(&veth, Some(rate))?;
    sink(LabEvent::Done(format!(
        "{host}: its link is throttled to {rate} ({veth})"
    )));
    Ok(())
}

/// The system ssh client, set up for a lab host (strict host-key checking, the lab's key).
pub fn ssh_command(name: &str, host: &str, command: &[String]) -> Result<Command> {
    let (paths, st) = load(name)?;
    let h = st.host(host)?;
    let mut c = Command::new("ssh");
    c.args(ssh_args(&paths, &h.ip));
    if !command.is_empty() {
        c.arg("--").args(command);
    }
    Ok(c)
}

pub fn ssh_args(paths: &LabPaths, ip: &str) -> Vec<String> {
    vec![
        "-i".into(),
        paths.key().display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", paths.known_hosts().display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        format!("ops@{ip}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an artifact the lab needs AVENTER's repository; an unreachable one is one clear
    /// error before any host is made (here: a closed port on loopback).
    #[test]
    fn an_unreachable_repository_is_refused_with_a_reason() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = reachable(&format!("http://127.0.0.1:{port}/Debian")).unwrap_err();
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(reachable("not a url").is_err());
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/Debian", open.local_addr().unwrap());
        assert_eq!(reachable(&url), Ok(()));
        assert!(
            aventer_url().unwrap().starts_with("http"),
            "the bundle names AVENTER's URL"
        );
    }

    fn opts() -> UpOptions {
        UpOptions {
            name: "lab".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_lab_keeps_its_bare_or_stack_choice_and_the_stack_is_never_taken_off() {
        // New labs: the stack unless --bare.
        assert!(decide_stack("l", None, None).unwrap());
        assert!(!decide_stack("l", None, Some(false)).unwrap());
        // Existing labs keep what they were made with...
        assert!(!decide_stack("l", Some(false), None).unwrap());
        assert!(decide_stack("l", Some(true), None).unwrap());
        // ...a bare lab can take the stack; the stack cannot be taken off.
        assert!(decide_stack("l", Some(false), Some(true)).unwrap());
        let err = decide_stack("l", Some(true), Some(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--bare") && err.contains("destroy"), "{err}");
    }

    #[test]
    fn an_added_host_gets_the_first_free_address_and_its_groups_role() {
        let mut st = LabState {
            version: STATE_VERSION,
            name: "lab".into(),
            subnet: "10.250.0.0/24".into(),
            masters: 1,
            agents: 2,
            extra: 0,
            bridge: "pl-lab".into(),
            image: "/img".into(),
            mirror: "m".into(),
            security_mirror: "s".into(),
            inventory: "/inv.yml".into(),
            stack: true,
            mesos_artifact: None,
            hosts: Vec::new(),
        };
        for (n, ip) in [("master1", "10.250.0.11"), ("agent2", "10.250.0.13")] {
            st.hosts.push(HostState {
                name: n.into(),
                role: Role::Agent,
                ip: ip.into(),
                machine: format!("lab-{n}"),
                pid: None,
            });
        }
        assert_eq!(
            free_ip(&st).unwrap(),
            "10.250.0.12",
            "a removed host's address is reused"
        );
        assert_eq!(role_of_group("agents").unwrap(), Role::Agent);
        assert_eq!(role_of_group("storage").unwrap(), Role::Extra);
        assert!(role_of_group("zookeeper")
            .unwrap_err()
            .to_string()
            .contains("masters, agents"));
    }

    #[test]
    fn defaults_are_three_masters_two_agents() {
        let s = resolve_spec(&opts(), None).unwrap();
        assert_eq!((s.masters, s.agents, s.extra), (3, 2, 0));
        assert_eq!(s.subnet.to_string(), DEFAULT_SUBNET);
    }

    #[test]
    fn an_existing_lab_keeps_its_shape_and_refuses_another() {
        let spec = resolve_spec(&opts(), None).unwrap();
        let st = LabState {
            version: STATE_VERSION,
            name: "lab".into(),
            subnet: spec.subnet.to_string(),
            masters: 1,
            agents: 1,
            extra: 0,
            bridge: "pl-lab".into(),
            image: "/i".into(),
            mirror: String::new(),
            security_mirror: String::new(),
            inventory: "/inv/lab.yml".into(),
            stack: true,
            mesos_artifact: None,
            hosts: vec![],
        };
        let same = resolve_spec(&opts(), Some(&st)).unwrap();
        assert_eq!((same.masters, same.agents), (1, 1));
        let mut o = opts();
        o.masters = Some(3);
        let err = resolve_spec(&o, Some(&st)).unwrap_err().to_string();
        assert!(err.contains("already exists with masters 1"), "{err}");
    }

    #[test]
    fn endpoints_name_masters_monitoring_and_zookeeper() {
        let spec = LabSpec {
            name: "lab".into(),
            subnet: "10.240.0.0/24".parse().unwrap(),
            masters: 3,
            agents: 1,
            extra: 0,
        };
        let b = cluster_core::bundle::Bundle::builtin().unwrap();
        let e = endpoints(&spec.hosts(), &b);
        let text: Vec<String> = e.iter().map(|(a, b)| format!("{a} {b}")).collect();
        assert_eq!(
            text,
            [
                "Mesos master master1 https://10.240.0.11:5050/",
                "Mesos master master2 https://10.240.0.12:5050/",
                "Mesos master master3 https://10.240.0.13:5050/",
                "Prometheus http://10.240.0.11:9090/",
                "Alertmanager http://10.240.0.11:9093/",
                "ZooKeeper 10.240.0.11:2181,10.240.0.12:2181,10.240.0.13:2181",
            ]
        );
    }

    #[test]
    fn ssh_is_strict_and_uses_the_lab_key() {
        let p = LabPaths::new("ci");
        let a = ssh_args(&p, "10.251.0.11").join(" ");
        assert!(a.contains("-i /var/lib/provisioner/labs/ci/id_ed25519"));
        assert!(a.contains("StrictHostKeyChecking=yes"));
        assert!(a.contains("UserKnownHostsFile=/var/lib/provisioner/labs/ci/known_hosts"));
        assert!(a.ends_with("ops@10.251.0.11"));
    }
}
