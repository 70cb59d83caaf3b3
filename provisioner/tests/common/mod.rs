//! Helpers shared by the end-to-end suites (each suite is its own crate: `mod common;`, and
//! uses only some of these): the lab inventory, ssh to lab hosts, the masters' and ZooKeeper's
//! answers, and the 200 ms sampler.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

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

pub fn var(inv: &Path, host: &str, k: &str) -> Option<Value> {
    inventory(inv).host_vars(host).get(k).cloned()
}

pub fn address(inv: &Path, host: &str) -> String {
    var(inv, host, "ansible_host")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| host.to_string())
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

pub fn bundle() -> cluster_core::bundle::Bundle {
    cluster_core::bundle::Bundle::builtin().unwrap()
}

pub fn port(component: &str, name: &str) -> u16 {
    bundle().component(component).unwrap().ports[name].value
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

/// The cluster CA of the lab `inv` (`provisioner tls ca`), written once per lab to a file for
/// curl.
pub fn cluster_ca(inv: &Path) -> PathBuf {
    static CA: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut known = CA.lock().unwrap();
    if let Some(p) = known.get(inv) {
        return p.clone();
    }
    let i = inv.display().to_string();
    let out = provisioner(&["tls", "ca", "-i", &i]);
    assert!(out.status.success(), "provisioner tls ca failed");
    let p = std::env::temp_dir().join(format!(
        "e2e-stack-ca-{}-{}.crt",
        std::process::id(),
        known.len()
    ));
    std::fs::write(&p, &out.stdout).unwrap();
    known.insert(inv.to_path_buf(), p.clone());
    p
}

/// GET https://host:port/path from the control machine with curl, verifying the server's
/// certificate against the cluster CA (and its IP SAN): Mesos speaks libprocess TLS.
pub fn mesos_get(inv: &Path, host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let ca = cluster_ca(inv);
    let o = Command::new("curl")
        .args(["-sS", "-m", "10", "--cacert"])
        .arg(&ca)
        .args([
            "-w",
            "\n%{http_code}",
            &format!("https://{host}:{port}{path}"),
        ])
        .output()
        .expect("run curl");
    if !o.status.success() {
        eprintln!(
            "curl https://{host}:{port}{path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

pub fn mesos_json(inv: &Path, host: &str, port: u16, path: &str) -> Value {
    let (status, body) = mesos_get(inv, host, port, path)
        .unwrap_or_else(|| panic!("GET https://{host}:{port}{path}: no answer"));
    assert_eq!(status, 200, "GET https://{host}:{port}{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

pub fn http_json(host: &str, port: u16, path: &str) -> Value {
    let (status, body) = http_get(host, port, path)
        .unwrap_or_else(|| panic!("GET http://{host}:{port}{path}: no answer"));
    assert_eq!(status, 200, "GET http://{host}:{port}{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

/// ZooKeeper's `srvr` four-letter word, from the control machine: the `Mode:` it reports,
/// `looking` when the member answers but is not serving (during an election), `None` when it
/// does not answer at all (down).
pub fn zk_mode(addr: &str) -> Option<String> {
    let sa = (addr, port("zookeeper", "client"))
        .to_socket_addrs()
        .ok()?
        .next()?;
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

/// Changes every time `unit` (re)starts: systemd's InvocationID. (A MainPID would do for native
/// units, but Debian's ZooKeeper is a sysv script whose MainPID systemd reports as 0.)
pub fn main_pid(inv: &Path, host: &str, unit: &str) -> String {
    ssh_ok(
        inv,
        host,
        &format!("systemctl show -p InvocationID --value {unit}"),
    )
    .trim()
    .to_string()
}

/// A master's JSON endpoint when it answers 200 (`None` while it is down or answers otherwise).
pub fn master_json(inv: &Path, master: &str, path: &str) -> Option<Value> {
    let (status, body) = mesos_get(
        inv,
        &address(inv, master),
        port("mesos_master", "http"),
        path,
    )?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// One master's `/metrics/snapshot` (any master answers it, leader or not).
pub fn master_metrics(inv: &Path, master: &str) -> Option<Value> {
    master_json(inv, master, "/metrics/snapshot")
}

pub fn metric(m: &Value, k: &str) -> f64 {
    m[k].as_f64().unwrap_or(-1.0)
}

/// The masters whose `master/elected` is 1, with every master's metrics (a master that does
/// not answer has none).
pub fn elected(inv: &Path) -> (Vec<String>, BTreeMap<String, Value>) {
    let mut all = BTreeMap::new();
    let mut leaders = Vec::new();
    for m in group(inv, "masters") {
        if let Some(v) = master_metrics(inv, &m) {
            if metric(&v, "master/elected") == 1.0 {
                leaders.push(m.clone());
            }
            all.insert(m, v);
        }
    }
    (leaders, all)
}

/// The one elected master, once there is exactly one.
pub fn leader(inv: &Path, timeout: Duration) -> String {
    poll("exactly one elected master", timeout, || {
        let (l, _) = elected(inv);
        (l.len() == 1).then(|| l[0].clone())
    })
}

/// `/master/state` from the leader (the others answer 307 to it).
pub fn leader_state(inv: &Path) -> Value {
    let l = leader(inv, Duration::from_secs(120));
    mesos_json(
        inv,
        &address(inv, &l),
        port("mesos_master", "http"),
        "/master/state",
    )
}

/// hostname → (agent id, active, version) of the agents the leader knows.
pub fn agents_of(state: &Value) -> BTreeMap<String, (String, bool, String)> {
    state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["hostname"].as_str().unwrap_or_default().to_string(),
                (
                    s["id"].as_str().unwrap_or_default().to_string(),
                    s["active"].as_bool().unwrap_or(false),
                    s["version"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// Every agent of the inventory registered and active: hostname → agent id.
pub fn active_agents(inv: &Path, timeout: Duration) -> BTreeMap<String, String> {
    let want = group(inv, "agents");
    poll("every agent registered and active", timeout, || {
        let (l, _) = elected(inv);
        let [l] = l.as_slice() else { return None };
        let st = master_json(inv, l, "/master/state")?;
        let agents = agents_of(&st);
        want.iter()
            .map(|a| match agents.get(a) {
                Some((id, true, _)) => Some((a.clone(), id.clone())),
                _ => None,
            })
            .collect()
    })
}

/// One 200 ms sample: when the masters were asked (`at`) and when the last answered (`end`),
/// each ZooKeeper member's mode, each master's (answered, elected).
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: std::time::SystemTime,
    pub end: std::time::SystemTime,
    pub zk: Vec<Option<String>>,
    pub masters: Vec<(bool, bool)>,
}

/// The sampler's period: median and max, in ms (reported, never asserted).
pub fn sample_periods(samples: &[Sample]) -> (u128, u128) {
    let mut gaps: Vec<u128> = samples
        .windows(2)
        .map(|w| {
            w[1].at
                .duration_since(w[0].at)
                .unwrap_or_default()
                .as_millis()
        })
        .collect();
    gaps.sort_unstable();
    (
        gaps.get(gaps.len() / 2).copied().unwrap_or(0),
        gaps.last().copied().unwrap_or(0),
    )
}

/// Samples the cluster every 200 ms from the control machine until `stop` is set.
pub fn sampler(inv: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let masters: Vec<String> = group(&inv, "masters")
            .iter()
            .map(|m| address(&inv, m))
            .collect();
        let zk: Vec<String> = group(&inv, "zookeeper")
            .iter()
            .map(|m| address(&inv, m))
            .collect();
        let p = port("mesos_master", "http");
        // In-process HTTPS (no curl per request). A master counts as elected when it answers the
        // gates' elected endpoint itself (`cluster_core::gates::ELECTED_ENDPOINT`), which Mesos
        // redirects (307, or 503 with no leader) unless the master is elected. `/master/redirect`
        // cannot tell: a master restarted at the address of a stopped leader whose contender
        // lingers in ZooKeeper (until its session expires; a restore brings back the backed-up
        // leader's) redirects to itself too. `/metrics/snapshot` would tell, but a busy master
        // takes ~150 ms to compute it.
        let tls = Arc::new(testkit::tls::client_config(&cluster_ca(&inv), None).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let t0 = Instant::now();
            // ZooKeeper and the masters at once, so a sample is one moment (give or take one
            // request).
            let at = std::time::SystemTime::now();
            let zk_asks: Vec<_> = zk
                .iter()
                .map(|a| {
                    let a = a.clone();
                    std::thread::spawn(move || zk_mode(&a))
                })
                .collect();
            let ms: Vec<(bool, bool)> = rt.block_on(async {
                let asks = masters.iter().map(|a| {
                    let ep = testkit::http::Endpoint {
                        host: a.clone(),
                        port: p,
                        tls: Some(tls.clone()),
                    };
                    async move {
                        match testkit::http::request_to(
                            &ep,
                            "GET",
                            cluster_core::gates::ELECTED_ENDPOINT,
                            &[],
                            None,
                            Duration::from_secs(2),
                        )
                        .await
                        {
                            Ok((status, _, _)) => {
                                (true, status == cluster_core::gates::ELECTED_STATUS)
                            }
                            Err(_) => (false, false),
                        }
                    }
                });
                let mut got = Vec::new();
                for f in asks.collect::<Vec<_>>() {
                    got.push(tokio::spawn(f));
                }
                let mut res = Vec::new();
                for g in got {
                    res.push(g.await.unwrap_or((false, false)));
                }
                res
            });
            let zk_modes = zk_asks
                .into_iter()
                .map(|h| h.join().unwrap_or(None))
                .collect();
            let end = std::time::SystemTime::now();
            out.push(Sample {
                at,
                end,
                zk: zk_modes,
                masters: ms,
            });
            if let Some(rest) = Duration::from_millis(200).checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        out
    })
}
