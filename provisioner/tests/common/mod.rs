//! Helpers shared by the end-to-end suites (each suite is its own crate: `mod common;`; a
//! suite uses some of them).
#![allow(dead_code, clippy::print_stderr, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A 10.N.0.0/24 with N from `range` (first match in the order given) that no interface of
/// this machine uses: a lab a test brings up beside the shared one gets its own subnet.
pub fn free_subnet(range: impl IntoIterator<Item = u8>) -> String {
    let addrs = String::from_utf8(
        Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .expect("run ip")
            .stdout,
    )
    .expect("ip prints text");
    range
        .into_iter()
        .map(|n| format!("10.{n}."))
        .find(|p| !addrs.contains(&format!(" inet {p}")))
        .map(|p| format!("{p}0.0/24"))
        .expect("a free 10.N.0.0/24")
}

pub fn inventory(inv: &Path) -> provisioner::model::inventory::Inventory {
    provisioner::resolve::inventory::load(inv).expect("lab inventory loads")
}

pub fn group(inv: &Path, g: &str) -> Vec<String> {
    let i = inventory(inv);
    let hosts: Vec<String> = i.group_hosts(g).into_iter().map(str::to_string).collect();
    match (g, hosts.is_empty()) {
        ("zookeeper", true) => group(inv, "masters"),
        ("monitoring", true) => group(inv, "masters").into_iter().take(1).collect(),
        _ => hosts,
    }
}

/// `ssh` with `input` on the remote command's stdin (secrets stay off command lines).
pub fn ssh_input(inv: &Path, name: &str, cmd: &str, input: &[u8]) -> Output {
    let mut child = ssh_command(inv, name, cmd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ssh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("ssh output")
}

/// The system ssh client (strict host keys, the lab's key and known_hosts) running `cmd` as
/// root on lab host `name`.
pub fn ssh_command(inv: &Path, name: &str, cmd: &str) -> Command {
    let h = lab::host(inv, name);
    let mut c = Command::new("ssh");
    c.args([
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("UserKnownHostsFile={}", h.known_hosts),
        "-i",
        &h.key,
        &format!("{}@{}", h.user, h.address),
        &format!("sudo sh -c {}", provisioner::shell::quote(cmd)),
    ]);
    c
}

/// A plain HTTP/1.0 GET from the control machine over the lab bridge: (status, body).
pub fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// ZooKeeper's `srvr` four-letter word, from the control machine: the `Mode:` it reports,
/// `looking` when the member answers but is not serving (during an election), `None` when it
/// does not answer at all (down).
pub fn zk_mode(addr: &str) -> Option<String> {
    let port = cluster_core::bundle::Bundle::builtin()
        .ok()?
        .component("zookeeper")?
        .ports["client"]
        .value;
    let sa = (addr, port).to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"srvr").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: ").map(|m| m.trim().to_string()))
            .unwrap_or_else(|| "looking".to_string()),
    )
}

/// A ZooKeeper sampler's record (each sample: every member's [`zk_mode`]) kept the quorum: in
/// every sample a majority of members running and at most one down. Serving (leader or follower)
/// may dip below quorum only while the ensemble elects a new leader after the old one restarted
/// (ZooKeeper cannot avoid that window): at most about 10 s in all, samples `period_ms` apart.
/// Returns the samples without a serving quorum.
pub fn assert_quorum_held(samples: &[Vec<Option<String>>], period_ms: usize) -> usize {
    let mut below = 0usize;
    for (n, s) in samples.iter().enumerate() {
        let members = s.len();
        let quorum = members / 2 + 1;
        let running = s.iter().filter(|m| m.is_some()).count();
        assert!(
            running >= quorum && members - running <= 1,
            "sample {n}: {running} of {members} members running: {s:?}"
        );
        let serving = s
            .iter()
            .filter(|m| matches!(m.as_deref(), Some("leader" | "follower")))
            .count();
        if serving < quorum {
            below += 1;
        }
    }
    assert!(
        below * period_ms <= 10_000,
        "the ensemble served without quorum for {below} samples"
    );
    below
}

pub mod lab;

// Not every suite uses them.
#[allow(unused_imports)]
pub use lab::{lab_inventory, provisioner, ssh, ssh_ok};
