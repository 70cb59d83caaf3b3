//! Three master stand-ins, one agent and the DNS stand-in against a real, local, standalone
//! ZooKeeper (Debian's `zookeeper` package). Behind the `zk` feature so `cargo test` stays
//! hermetic; it fails (never skips) when ZooKeeper is not installed:
//!
//!     apt-get install -y zookeeper
//!     cargo test -p testkit --features zk --test zk_cluster -- --nocapture

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a test crate: panics and eprintln are the point

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{dns, election, http, zkurl::ZkUrl};

const ZK_SERVER: &str = "/usr/share/zookeeper/bin/zkServer.sh";
const BIN: &str = env!("CARGO_BIN_EXE_mesos-standin");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_flags(dir: &Path, flags: &[(&str, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, v) in flags {
        std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
    }
}

fn spawn(args: &[&str], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap(),
    )
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn get(rt: &tokio::runtime::Runtime, port: u16, path: &str) -> Option<Value> {
    rt.block_on(http::get_json(&format!("127.0.0.1:{port}"), path))
        .ok()
}

/// (index of the elected master, its state) when exactly one master says elected and every
/// live master names it as leader.
fn one_leader(rt: &tokio::runtime::Runtime, ports: &[Option<u16>]) -> Option<(usize, Value)> {
    let mut elected = Vec::new();
    let mut leaders = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let Some(p) = p else { continue };
        let m = get(rt, *p, "/metrics/snapshot")?;
        let s = get(rt, *p, "/master/state")?;
        if m["master/elected"] == 1.0 {
            elected.push((i, s.clone()));
        }
        leaders.push(s.get("leader")?.as_str()?.to_string());
    }
    leaders.dedup();
    if elected.len() == 1 && leaders.len() == 1 {
        elected.pop()
    } else {
        None
    }
}

#[test]
fn three_masters_one_agent_dns_and_failover() {
    assert!(
        Path::new(ZK_SERVER).exists(),
        "{ZK_SERVER} is missing: apt-get install -y zookeeper (this test needs a real ZooKeeper)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root: PathBuf = tmp.path().to_path_buf();
    let zk_port = free_port();
    let cfg = root.join("zoo.cfg");
    std::fs::create_dir_all(root.join("zkdata")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "tickTime=500\ndataDir={}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxSessionTimeout=60000\nminSessionTimeout=1000\n",
            root.join("zkdata").display()
        ),
    )
    .unwrap();
    let _zk = Proc(
        Command::new(ZK_SERVER)
            .arg("start-foreground")
            .arg(&cfg)
            .env("ZOO_LOG_DIR", &root)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("zk.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("ZooKeeper to listen", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", zk_port)).ok()
    });

    // Three "masters" on one host: the zk string names three servers (the same one, three times)
    // so that quorum 2 is a valid majority, as on a real 3-master cluster.
    let zk = format!(
        "zk://standin:s3cret@127.0.0.1:{zk_port},127.0.0.1:{zk_port},127.0.0.1:{zk_port}/mesos"
    );
    std::fs::write(root.join("zk"), &zk).unwrap();
    let zk_file = root.join("zk");
    let mut ports: Vec<Option<u16>> = Vec::new();
    let mut masters: Vec<Option<Proc>> = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let dir = root.join(format!("master{i}"));
        write_flags(
            &dir,
            &[
                ("quorum", "2".into()),
                (
                    "work_dir",
                    root.join(format!("mwork{i}")).display().to_string(),
                ),
                ("ip", "127.0.0.1".into()),
                ("port", port.to_string()),
                ("hostname", format!("master{i}")),
                ("cluster", "standin-test".into()),
                ("zk_session_timeout", "3secs".into()),
            ],
        );
        masters.push(Some(spawn(
            &[
                "master",
                "--flags-dir",
                dir.to_str().unwrap(),
                "--zk-file",
                zk_file.to_str().unwrap(),
            ],
            &root.join(format!("master{i}.log")),
        )));
        ports.push(Some(port));
    }
    let agent_port = free_port();
    let adir = root.join("agent");
    write_flags(
        &adir,
        &[
            ("work_dir", root.join("awork").display().to_string()),
            ("ip", "127.0.0.1".into()),
            ("port", agent_port.to_string()),
            ("hostname", "agent1".into()),
            ("containerizers", "mesos".into()),
            ("attributes", "rack:r1;zone:a".into()),
            (
                "resources",
                "ports:[31000-32000];cpus:2;mem:1024;disk:2048".into(),
            ),
        ],
    );
    let _agent = spawn(
        &[
            "agent",
            "--flags-dir",
            adir.to_str().unwrap(),
            "--zk-file",
            zk_file.to_str().unwrap(),
        ],
        &root.join("agent.log"),
    );
    let dns_port = free_udp_port();
    let dns_cfg = root.join("dns.json");
    std::fs::write(
        &dns_cfg,
        format!(
            r#"{{"zk": "zk://127.0.0.1:{zk_port}/mesos", "masters": [], "domain": "mesos", "port": {dns_port},
                "listener": "127.0.0.1", "resolvers": ["127.0.0.1"], "refreshSeconds": 1, "httpon": false}}"#
        ),
    )
    .unwrap();
    let _dns = spawn(
        &["dns", "--config", dns_cfg.to_str().unwrap()],
        &root.join("dns.log"),
    );

    let rt = rt();
    let show_logs = |root: &Path| {
        for f in [
            "master0.log",
            "master1.log",
            "master2.log",
            "agent.log",
            "dns.log",
        ] {
            eprintln!(
                "== {f}\n{}",
                std::fs::read_to_string(root.join(f)).unwrap_or_default()
            );
        }
    };
    let (leader, state) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "one elected master with the agent registered",
            Duration::from_secs(60),
            || {
                let (i, s) = one_leader(&rt, &ports)?;
                let slaves = s["slaves"].as_array()?;
                (slaves.len() == 1 && slaves[0]["active"] == true).then_some((i, s))
            },
        )
    })) {
        Ok(v) => v,
        Err(e) => {
            show_logs(&root);
            std::panic::resume_unwind(e)
        }
    };
    assert_eq!(state["cluster"], "standin-test");
    assert_eq!(state["activated_slaves"], 1);
    let agent = &state["slaves"][0];
    assert_eq!(agent["hostname"], "agent1");
    assert_eq!(agent["attributes"]["rack"], "r1");
    assert_eq!(agent["resources"]["ports"], "[31000-32000]");
    let agent_id = agent["id"].as_str().unwrap().to_string();
    let astate = get(&rt, agent_port, "/state").unwrap();
    assert_eq!(astate["id"], agent_id.as_str());
    assert_eq!(astate["master_hostname"], format!("master{leader}"));

    // The candidate znodes are Mesos's, with Mesos's ACL: a session without the credentials can
    // read them but cannot delete them.
    let url = ZkUrl::parse(&format!("zk://127.0.0.1:{zk_port}/mesos")).unwrap();
    rt.block_on(async {
        let anon = election::connect(&url, Duration::from_secs(5))
            .await
            .unwrap();
        let c = election::contenders(&anon, &url).await.unwrap();
        assert_eq!(c.list.len(), 3);
        let (name, info) = c.leader().unwrap();
        assert!(name.starts_with("json.info_"));
        assert_eq!(info["hostname"], format!("master{leader}"));
        let err = anon.delete(&url.child(name), None).await.unwrap_err();
        assert!(matches!(err, zookeeper_client::Error::NoAuth), "{err:?}");
    });

    // DNS: leader, all masters, the agent.
    let ask = |name: &str| -> (u8, Vec<Ipv4Addr>) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(
            &dns::build_query(7, name, dns::TYPE_A),
            ("127.0.0.1", dns_port),
        )
        .unwrap();
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).unwrap();
        let (_, rcode, ips) = dns::parse_answer(&buf[..n]).unwrap();
        (rcode, ips)
    };
    wait_until("DNS records", Duration::from_secs(30), || {
        let (_, agent_ips) = ask("agent1.agent.mesos");
        let (_, leader_ips) = ask("leader.mesos");
        (agent_ips == vec![Ipv4Addr::LOCALHOST] && leader_ips == vec![Ipv4Addr::LOCALHOST])
            .then_some(())
    });
    assert_eq!(ask("master.mesos").1, vec![Ipv4Addr::LOCALHOST]); // three masters, one address
    assert_eq!(ask("nope.mesos").0, dns::RCODE_NXDOMAIN);

    // Kill the leader: another master takes over after the session times out, and the agent
    // re-registers with it under the same id.
    masters[leader] = None;
    ports[leader] = None;
    let (new_leader, state) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "a new leader with the agent",
            Duration::from_secs(60),
            || {
                let (i, s) = one_leader(&rt, &ports)?;
                let slaves = s["slaves"].as_array()?;
                (slaves.len() == 1).then_some((i, s))
            },
        )
    })) {
        Ok(v) => v,
        Err(e) => {
            show_logs(&root);
            std::panic::resume_unwind(e)
        }
    };
    assert_ne!(new_leader, leader);
    assert_eq!(state["slaves"][0]["id"], agent_id.as_str());
    wait_until(
        "the agent to follow the new leader",
        Duration::from_secs(30),
        || {
            let s = get(&rt, agent_port, "/state")?;
            (s["master_hostname"] == format!("master{new_leader}")).then_some(())
        },
    );

    // Kill a second master: 1 of 3 left is below the quorum, so nobody leads.
    let other = (0..3).find(|i| *i != leader && *i != new_leader).unwrap();
    masters[new_leader] = None;
    ports[new_leader] = None;
    wait_until(
        "no leader without a quorum",
        Duration::from_secs(60),
        || {
            let s = get(&rt, ports[other]?, "/master/state")?;
            let m = get(&rt, ports[other]?, "/metrics/snapshot")?;
            (s.get("leader").is_none() && m["master/elected"] == 0.0).then_some(())
        },
    );
}
