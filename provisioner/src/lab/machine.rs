//! One lab host: its root filesystem (a full copy of the base image), its identity (hostname,
//! address, machine-id, SSH host keys), and its systemd-nspawn process.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::image::SUITE;
use super::mirror::Mirrors;
use super::spec::{HostSpec, Subnet};
use super::sys::{self, cmd};
use crate::error::{Error, Result};

/// What a host's files are made from.
pub struct HostConfig<'a> {
    pub host: &'a HostSpec,
    pub all: &'a [HostSpec],
    pub subnet: &'a Subnet,
    pub mirrors: &'a Mirrors,
    /// The lab's public key, authorised for `ops`.
    pub pubkey: &'a str,
}

pub fn network_file(host: &HostSpec, subnet: &Subnet) -> String {
    format!(
        "[Match]\nName=eth0\n\n[Network]\nAddress={}/{}\nGateway={}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\nIgnoreCarrierLoss=yes\n",
        host.ip,
        subnet.prefix(),
        subnet.bridge_ip()
    )
}

pub fn hosts_file(host: &HostSpec, all: &[HostSpec]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n\n# provisioner lab hosts\n",
    );
    for h in all {
        s.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    if !all.iter().any(|h| h.name == host.name) {
        s.push_str(&format!("{}\t{}\n", host.ip, host.name));
    }
    s
}

/// apt on lab hosts goes through the machine's one apt-cacher-ng ([`super::proxy`]). A request the proxy stalls gives up
/// after 30 s (apt's default is 120 s) and is retried, three times, rather than failing the task.
/// No HTTP pipelining: an `apt-get update` hung for good (until our 300 s bound) when
/// apt-cacher-ng closed a connection that still had a pipelined request unanswered (seen: the
/// http method idle with its socket in CLOSE-WAIT, 2 of 3 InRelease files received); the
/// timeout never fires there, since the method no longer reads the socket. One request at a
/// time, a closed connection is an error apt retries.
pub fn apt_proxy_file() -> String {
    format!(
        "Acquire::http::Proxy \"{}\";\nAcquire::http::Timeout \"30\";\nAcquire::Retries \"3\";\nAcquire::http::Pipeline-Depth \"0\";\n",
        super::proxy::url()
    )
}

/// The index files (InRelease) the hosts' sources ask for, as the proxy is asked for them.
pub fn index_urls(m: &Mirrors) -> Vec<String> {
    let base = |u: &str| u.trim_end_matches('/').to_string();
    vec![
        format!("{}/dists/{SUITE}/InRelease", base(&m.debian)),
        format!("{}/dists/{SUITE}-updates/InRelease", base(&m.debian)),
        format!("{}/dists/{SUITE}-security/InRelease", base(&m.security)),
    ]
}

pub fn sources_file(m: &Mirrors) -> String {
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    format!(
        "Types: deb\nURIs: {}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\nSigned-By: {keyring}\n\nTypes: deb\nURIs: {}\nSuites: {SUITE}-security\nComponents: main\nSigned-By: {keyring}\n",
        m.debian, m.security
    )
}

fn new_machine_id() -> Result<String> {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map_err(|e| Error::Environment(format!("cannot read a random uuid: {e}")))?;
    Ok(uuid.trim().replace('-', "") + "\n")
}

/// uid and gid of a user in a root filesystem's /etc/passwd.
fn user_ids(root: &Path, user: &str) -> Result<(u32, u32)> {
    let passwd = root.join("etc/passwd");
    let text =
        std::fs::read_to_string(&passwd).map_err(|e| sys::io_err("cannot read", &passwd, e))?;
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user))
                .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .ok_or_else(|| Error::Environment(format!("no user {user} in {}", passwd.display())))
}

/// Create the host's root filesystem from the image unless it exists. Returns true if created.
pub fn create(image_rootfs: &Path, dir: &Path, cfg: &HostConfig<'_>) -> Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    let tmp = dir.with_extension("creating");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| sys::io_err("cannot remove", &tmp, e))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| sys::io_err("cannot create", parent, e))?;
    }
    // A full copy, not an overlay: docker's overlay2 and GlusterFS bricks need a real filesystem.
    sys::run(&mut cmd(
        "cp",
        &[
            "-a",
            "--reflink=auto",
            &image_rootfs.display().to_string(),
            &tmp.display().to_string(),
        ],
    ))?;
    customise(&tmp, cfg)?;
    std::fs::rename(&tmp, dir).map_err(|e| sys::io_err("cannot rename", &tmp, e))?;
    Ok(true)
}

/// The apt proxy setting; also written at each boot, so a disk made by an older provisioner
/// (which pointed at a proxy per lab) finds the shared one.
pub fn write_apt_proxy(root: &Path) -> Result<()> {
    let path = root.join("etc/apt/apt.conf.d/01proxy");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(apt_proxy_file().as_str()) {
        return Ok(());
    }
    sys::write(&path, &apt_proxy_file())
}

fn customise(root: &Path, cfg: &HostConfig<'_>) -> Result<()> {
    let h = cfg.host;
    sys::write(&root.join("etc/hostname"), &format!("{}\n", h.name))?;
    sys::write(&root.join("etc/hosts"), &hosts_file(h, cfg.all))?;
    sys::write(&root.join("etc/machine-id"), &new_machine_id()?)?;
    sys::write(
        &root.join("etc/systemd/network/10-eth0.network"),
        &network_file(h, cfg.subnet),
    )?;
    write_apt_proxy(root)?;
    sys::write(
        &root.join("etc/apt/sources.list.d/debian.sources"),
        &sources_file(cfg.mirrors),
    )?;
    // This kernel has no NFS client (sunrpc): the rpc_pipefs mount that NFS packages (pulled in
    // by GlusterFS) enable can only fail here. Mask it, as the lab adapts hosts to its kernel.
    let mask = root.join("etc/systemd/system/run-rpc_pipefs.mount");
    if std::fs::symlink_metadata(&mask).is_err() {
        std::os::unix::fs::symlink("/dev/null", &mask)
            .map_err(|e| sys::io_err("cannot mask rpc_pipefs in", root, e))?;
    }
    let (uid, gid) = user_ids(root, "ops")?;
    let ssh_dir = root.join("home/ops/.ssh");
    let keys = ssh_dir.join("authorized_keys");
    sys::write(&keys, &format!("{}\n", cfg.pubkey.trim()))?;
    sys::set_mode(&ssh_dir, 0o700)?;
    sys::set_mode(&keys, 0o600)?;
    for p in [&ssh_dir, &keys] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .map_err(|e| sys::io_err("cannot chown", p, e))?;
    }
    // Fresh SSH host keys for this host; their public halves go to the lab's known_hosts.
    sys::run(&mut cmd(
        "ssh-keygen",
        &["-A", "-f", &root.display().to_string()],
    ))?;
    Ok(())
}

/// known_hosts lines (address and hostname) for a host's public host keys.
pub fn known_host_lines(root: &Path, host: &HostSpec) -> Result<Vec<String>> {
    let dir = root.join("etc/ssh");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| sys::io_err("cannot read", &dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("ssh_host_") && n.ends_with("_key.pub")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| sys::io_err("cannot read", &f, e))?;
        let mut w = text.split_whitespace();
        if let (Some(kind), Some(key)) = (w.next(), w.next()) {
            out.push(format!("{},{} {kind} {key}", host.ip, host.name));
        }
    }
    if out.is_empty() {
        return Err(Error::Environment(format!(
            "no SSH host keys in {}",
            dir.display()
        )));
    }
    Ok(out)
}

/// The cgroup directories each machine's nspawn runs in. Without systemd on the control
/// machine, nspawn (--keep-unit) splits *its own* cgroup into supervisor/ and payload/, so two
/// machines started from one cgroup would share a tree: each gets its own.
fn cgroup_dirs(machine: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut roots = Vec::new();
    if base.join("unified/cgroup.procs").exists() {
        roots.push(base.join("unified"));
        if base.join("systemd/cgroup.procs").exists() {
            roots.push(base.join("systemd"));
        }
    } else if base.join("cgroup.controllers").exists() {
        roots.push(base.to_path_buf());
    } else if base.join("systemd/cgroup.procs").exists() {
        roots.push(base.join("systemd"));
    }
    roots
        .into_iter()
        .map(|r| r.join("provisioner").join(machine))
        .collect()
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

pub fn cleanup_cgroups(machine: &str) {
    for d in cgroup_dirs(machine) {
        remove_cgroup_tree(&d);
    }
}

pub struct Launch<'a> {
    pub machine: &'a str,
    pub hostname: &'a str,
    pub rootfs: &'a Path,
    pub bridge: &'a str,
    pub log: &'a Path,
}

pub fn nspawn_args(l: &Launch<'_>) -> Vec<String> {
    vec![
        "-D".into(),
        l.rootfs.display().to_string(),
        "--boot".into(),
        format!("--machine={}", l.machine),
        format!("--hostname={}", l.hostname),
        // No systemd on the control machine: no machined registration, no scope unit.
        "--register=no".into(),
        "--keep-unit".into(),
        format!("--network-bridge={}", l.bridge),
        "--bind=/dev/fuse".into(),
        "--resolv-conf=off".into(),
        "--timezone=off".into(),
        "--link-journal=no".into(),
        "--console=read-only".into(),
    ]
}

/// Start the machine detached (own session, stdin from /dev/null, output to its log) so it
/// outlives this process. Returns the nspawn PID.
pub fn launch(l: &Launch<'_>) -> Result<u32> {
    cleanup_cgroups(l.machine);
    let dirs = cgroup_dirs(l.machine);
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| sys::io_err("cannot create cgroup", d, e))?;
    }
    if let Some(parent) = l.log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| sys::io_err("cannot create", parent, e))?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.log)
        .map_err(|e| sys::io_err("cannot open", l.log, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| sys::io_err("cannot open", l.log, e))?;
    let cgroups: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    // The shell moves itself into the machine's cgroups, then execs (same PID) setsid, which
    // execs nspawn in a new session.
    let script = "for g in $PROVISIONER_CGROUPS; do echo $$ > \"$g/cgroup.procs\" || exit 1; done; exec setsid systemd-nspawn \"$@\"";
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(nspawn_args(l))
        .env("PROVISIONER_CGROUPS", cgroups.join(" "))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| Error::Environment(format!("cannot start systemd-nspawn: {e}")))?;
    Ok(child.id())
}

/// Is this PID the nspawn of this machine?
pub fn is_ours(pid: u32, machine: &str) -> bool {
    sys::alive_with_arg(pid, &format!("--machine={machine}"))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `systemctl is-system-running` inside the machine.
pub fn system_state(init: u32) -> Option<String> {
    let out = Command::new("nsenter")
        .args([
            "-t",
            &init.to_string(),
            "-a",
            "systemctl",
            "is-system-running",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Wait until the machine's systemd has finished booting and sshd answers on its address.
pub fn wait_booted(
    pid: u32,
    machine: &str,
    host: &HostSpec,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let died = || {
        Error::Environment(format!(
            "machine {machine} stopped while booting; last lines of {}:\n{}",
            log.display(),
            log_tail(log)
        ))
    };
    let init = sys::wait_for(timeout, Duration::from_millis(100), || {
        // The PID was ours at launch; while it lives (it may be mid-exec), it still is.
        if !sys::is_alive(pid) {
            return Some(None);
        }
        sys::container_init(pid).map(Some)
    })
    .flatten()
    .ok_or_else(died)?;
    let state = sys::wait_for(timeout, Duration::from_millis(250), || {
        // The PID was ours at launch; while it lives (it may be mid-exec), it still is.
        if !sys::is_alive(pid) {
            return Some(None);
        }
        match system_state(init).as_deref() {
            Some(s @ ("running" | "degraded")) => Some(Some(s.to_string())),
            _ => None,
        }
    });
    match state {
        Some(Some(_)) => {}
        Some(None) => return Err(died()),
        None => {
            return Err(Error::Environment(format!(
                "machine {machine} did not finish booting within {}s; see {}",
                timeout.as_secs(),
                log.display()
            )))
        }
    }
    let addr = SocketAddr::from((host.ip, 22));
    sys::wait_for(timeout, Duration::from_millis(200), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .ok()
            .map(|_| ())
    })
    .ok_or_else(|| {
        Error::Unreachable(format!(
            "{} booted but SSH on {addr} does not answer",
            host.name
        ))
    })
}

/// Power the machine off: SIGTERM to nspawn makes it shut the container down cleanly; SIGKILL
/// after `timeout`.
pub fn stop(pid: u32, machine: &str, timeout: Duration) {
    if is_ours(pid, machine) {
        sys::signal(pid, "TERM");
        let gone = sys::wait_for(timeout, Duration::from_millis(200), || {
            (!is_ours(pid, machine)).then_some(())
        });
        if gone.is_none() {
            sys::signal(pid, "KILL");
            sys::wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
                (!is_ours(pid, machine)).then_some(())
            });
        }
    }
    cleanup_cgroups(machine);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn host() -> HostSpec {
        HostSpec {
            name: "agent1".into(),
            role: super::super::spec::Role::Agent,
            ip: Ipv4Addr::new(10, 250, 0, 14),
        }
    }

    #[test]
    fn network_file_sets_static_address_and_gateway_on_eth0() {
        let s: Subnet = "10.250.0.0/24".parse().unwrap();
        let n = network_file(&host(), &s);
        assert!(n.contains("Name=eth0\n"));
        assert!(n.contains("Address=10.250.0.14/24\n"));
        assert!(n.contains("Gateway=10.250.0.1\n"));
        assert_eq!(
            apt_proxy_file(),
            "Acquire::http::Proxy \"http://10.255.255.254:3142\";\nAcquire::http::Timeout \"30\";\nAcquire::Retries \"3\";\nAcquire::http::Pipeline-Depth \"0\";\n"
        );
    }

    #[test]
    fn sources_use_the_control_machines_mirror() {
        let m = Mirrors {
            debian: "http://m.example/debian".into(),
            security: "http://m.example/debian-security".into(),
        };
        let s = sources_file(&m);
        assert!(s.contains("URIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n"));
        assert!(s.contains("URIs: http://m.example/debian-security\nSuites: bookworm-security\n"));
    }

    #[test]
    fn hosts_file_lists_every_lab_host() {
        let h = host();
        let text = hosts_file(&h, std::slice::from_ref(&h));
        assert!(text.contains("10.250.0.14\tagent1\n"));
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn known_hosts_lines_name_address_and_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/ssh")).unwrap();
        std::fs::write(
            dir.path().join("etc/ssh/ssh_host_ed25519_key.pub"),
            "ssh-ed25519 AAAAC3Nz root@x\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        let lines = known_host_lines(dir.path(), &host()).unwrap();
        assert_eq!(lines, ["10.250.0.14,agent1 ssh-ed25519 AAAAC3Nz"]);
    }

    #[test]
    fn nspawn_is_detached_from_machined_and_passes_fuse() {
        let args = nspawn_args(&Launch {
            machine: "lab-agent1",
            hostname: "agent1",
            rootfs: Path::new("/r"),
            bridge: "pl-lab",
            log: Path::new("/l"),
        });
        for a in [
            "--register=no",
            "--keep-unit",
            "--bind=/dev/fuse",
            "--network-bridge=pl-lab",
            "--machine=lab-agent1",
        ] {
            assert!(args.iter().any(|x| x == a), "{a}");
        }
    }
}
