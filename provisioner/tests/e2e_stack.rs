//! End-to-end proofs of the bundled stack on a `provisioner lab` with the stack applied
//! (`lab up` without `--bare`; `.ci/test` with `CI_LAB_STACK=1`). `PROVISIONER_LAB_INVENTORY`
//! names the lab's inventory; without it every test fails (never skips).
//!
//! Written against docs/stack.md. Tests that change the cluster (attributes, a ZooKeeper
//! setting) put it back before they end. Run with `--test-threads=1`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn apply(inv: &Path, extra: &[&str]) -> Output {
    let i = inv.display().to_string();
    let mut args = vec!["apply", "-i", i.as_str(), "--output", "json"];
    args.extend_from_slice(extra);
    let out = provisioner(&args);
    assert_eq!(out.status.code(), Some(0), "apply failed");
    out
}

/// JSON events of a run, one per line.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn changed_tasks(out: &Output) -> Vec<String> {
    events(out)
        .iter()
        .filter(|e| e["event"] == "task_finished" && e["status"] == "changed")
        .map(|e| format!("{} on {}", e["task"], e["host"]))
        .collect()
}

/// A `host_vars/<host>.yml` next to the inventory for the duration of a test.
struct HostVars {
    path: PathBuf,
    created_dir: Option<PathBuf>,
}

impl HostVars {
    fn new(inv: &Path, host: &str, yaml: &str) -> HostVars {
        let dir = inv.parent().unwrap_or(Path::new(".")).join("host_vars");
        let created_dir = (!dir.exists()).then(|| dir.clone());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{host}.yml"));
        assert!(
            !path.exists(),
            "{} exists; not overwriting it",
            path.display()
        );
        std::fs::write(&path, yaml).unwrap();
        HostVars { path, created_dir }
    }
}

impl Drop for HostVars {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.created_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A DNS A query to 127.0.0.1:53 on the host (python3 is in every lab host): the addresses.
fn resolve_on(inv: &Path, host: &str, name: &str) -> Vec<String> {
    let script = r#"
import socket, struct, sys, random
name = sys.argv[1]
q = struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, ("127.0.0.1", 53)); r, _ = s.recvfrom(4096)
an = struct.unpack(">H", r[6:8])[0]; i = len(q)
for _ in range(an):
    if r[i] & 0xC0 == 0xC0: i += 2
    else:
        while r[i]: i += r[i] + 1
        i += 1
    t, c, ttl, l = struct.unpack(">HHIH", r[i:i+10]); i += 10
    if t == 1: print(".".join(str(b) for b in r[i:i+4]))
    i += l
"#;
    let cmd = format!(
        "python3 -c {} {}",
        provisioner::shell::quote(script),
        provisioner::shell::quote(name)
    );
    let o = ssh(inv, host, &cmd);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn dns_domain(inv: &Path) -> String {
    let m = group(inv, "masters");
    var(inv, &m[0], "dns_domain")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "mesos".into())
}

// ---------------------------------------------------------------- ZooKeeper

#[test]
fn zookeeper_has_one_leader_the_rest_follow_and_clients_must_authenticate() {
    let inv = lab_inventory();
    let zk = group(&inv, "zookeeper");
    let modes: Vec<String> = zk
        .iter()
        .map(|h| zk_mode(&address(&inv, h)).unwrap_or_else(|| format!("{h}: no answer")))
        .collect();
    assert_eq!(
        modes.iter().filter(|m| *m == "leader").count(),
        1,
        "modes: {modes:?}"
    );
    assert_eq!(
        modes.iter().filter(|m| *m == "follower").count(),
        zk.len() - 1,
        "modes: {modes:?}"
    );
    // SASL: a client without credentials cannot list the tree.
    let o = ssh(
        &inv,
        &zk[0],
        "JVMFLAGS= CLIENT_JVMFLAGS= timeout 60 /usr/share/zookeeper/bin/zkCli.sh -server 127.0.0.1:2181 ls / 2>&1",
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains("zookeeper]"),
        "an unauthenticated client listed the tree:\n{text}"
    );
    // ... and it was refused for the right reason: it reached the server, which closed its
    // session for not authenticating (not a client that failed to start or connect).
    assert!(
        text.contains("SyncConnected") && text.contains("failed to authenticate"),
        "the unauthenticated client was not refused by SASL:\n{text}"
    );
    // With the operator's SASL credentials (the role's root-only client JAAS file) it can.
    let o = ssh(
        &inv,
        &zk[0],
        "CLIENT_JVMFLAGS=-Djava.security.auth.login.config=/etc/zookeeper/conf/client-jaas.conf \
         timeout 60 /usr/share/zookeeper/bin/zkCli.sh -server 127.0.0.1:2181 ls / 2>&1",
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("zookeeper"),
        "an authenticated client could not list the tree:\n{text}"
    );
}

// ---------------------------------------------------------------- Mesos (real Apache Mesos)

/// The ZooKeeper URL Mesos uses, with its digest credentials (root-only on the masters).
fn mesos_zk_url(inv: &Path) -> String {
    ssh_ok(inv, &group(inv, "masters")[0], "cat /etc/mesos/zk")
        .trim()
        .to_string()
}

/// The test framework's options: every master, the cluster CA, the framework principal and
/// its secret as the masters hold it.
fn framework_options(inv: &Path) -> testkit::framework::Options {
    let masters = group(inv, "masters");
    let creds: Value = serde_json::from_str(&ssh_ok(
        inv,
        &masters[0],
        "cat /etc/mesos/secrets/master-credentials.json",
    ))
    .unwrap();
    let principal = var(inv, &masters[0], "mesos_framework_principal")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "marathon".into());
    let secret = creds["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["principal"] == principal.as_str())
        .and_then(|c| c["secret"].as_str())
        .expect("the framework principal's credential on the masters")
        .to_string();
    let p = port("mesos_master", "http");
    let mut o = testkit::framework::Options::new(
        masters
            .iter()
            .map(|m| format!("{}:{p}", address(inv, m)))
            .collect(),
        &principal,
        &secret,
    );
    o.tls = Some(cluster_ca(inv));
    o.name = "e2e-stack".into();
    o
}

/// Runs `cmd` as a command task on `agent` through the v1 scheduler API; its final status.
fn run_task(fw: &testkit::framework::Framework, agent: &str, cmd: &str) -> String {
    let t = fw
        .launch(Some(agent), cmd, 0.1, 32.0)
        .unwrap_or_else(|e| panic!("launch on {agent}: {e}\n{}", fw.events_text()));
    let st = fw
        .wait_terminal(&t, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("task on {agent}: {e}\n{}", fw.events_text()));
    assert_eq!(
        st.state,
        "TASK_FINISHED",
        "task on {agent}: {st:?}\n{}",
        fw.events_text()
    );
    st.agent_id.unwrap_or_default()
}

#[test]
fn one_master_is_elected_through_zookeeper_and_every_replica_has_recovered() {
    let inv = lab_inventory();
    let masters = group(&inv, "masters");
    let version = bundle()
        .component("mesos_master")
        .unwrap()
        .version
        .value
        .clone();
    let l = leader(&inv, Duration::from_secs(120));
    // /health answers 200 whatever the registry does: the registrar's metrics are the gate.
    let (_, metrics) = elected(&inv);
    assert_eq!(metrics.len(), masters.len(), "a master does not answer");
    for (m, v) in &metrics {
        assert_eq!(metric(v, "registrar/log/recovered"), 1.0, "{m}: {v}");
        assert_eq!(
            metric(v, "registrar/log/ensemble_size"),
            masters.len() as f64,
            "{m}: {v}"
        );
    }
    let st = leader_state(&inv);
    assert_eq!(st["version"], version.as_str(), "the leader's version");
    assert!(
        st.get("standin").is_none(),
        "a stand-in answered, not Mesos"
    );
    // ZooKeeper, through a session authenticated with the digest credentials Mesos uses: the
    // lowest json.info_ znode is the elected master, and Mesos gave its znode an ACL (world
    // read, the mesos user all).
    let snap = testkit::election::snapshot(&mesos_zk_url(&inv), Duration::from_secs(10))
        .expect("read ZooKeeper with Mesos's credentials");
    let (_, info) = snap.contenders.leader().expect("a contender in ZooKeeper");
    assert_eq!(
        info["address"]["ip"].as_str(),
        Some(address(&inv, &l).as_str()),
        "ZooKeeper's leader is not the elected master {l}: {info}"
    );
    assert_eq!(
        snap.contenders.list.len(),
        masters.len(),
        "{:?}",
        snap.contenders
    );
    assert!(
        snap.leader_acl
            .iter()
            .any(|a| a.starts_with("digest:mesos:")),
        "the leader's znode ACL: {:?}",
        snap.leader_acl
    );
    assert!(
        !snap
            .leader_acl
            .iter()
            .any(|a| a.starts_with("world:anyone:") && a.contains("All")),
        "the leader's znode is writable by anyone: {:?}",
        snap.leader_acl
    );
}

#[test]
fn every_agent_is_registered_authenticated_and_runs_a_task() {
    let inv = lab_inventory();
    let version = bundle()
        .component("mesos_agent")
        .unwrap()
        .version
        .value
        .clone();
    let ids = active_agents(&inv, Duration::from_secs(180));
    let st = leader_state(&inv);
    let agents = agents_of(&st);
    for a in ids.keys() {
        assert_eq!(agents[a].2, version, "{a}'s version");
    }
    // The masters require authentication from agents and HTTP frameworks.
    let l = leader(&inv, Duration::from_secs(60));
    let flags = mesos_json(
        &inv,
        &address(&inv, &l),
        port("mesos_master", "http"),
        "/master/flags",
    );
    for f in ["authenticate_agents", "authenticate_http_frameworks"] {
        assert_eq!(flags["flags"][f], "true", "{f}: {}", flags["flags"]);
    }
    // A framework with a wrong secret is refused.
    let mut bad = framework_options(&inv);
    bad.secret = "not-the-secret".into();
    let err = testkit::framework::Framework::subscribe(&bad)
        .err()
        .expect("a wrong secret subscribed");
    assert!(err.contains("401"), "{err}");
    // The real framework runs a command task to TASK_FINISHED on each agent.
    let fw = testkit::framework::Framework::subscribe(&framework_options(&inv)).unwrap();
    for (a, id) in &ids {
        let ran_on = run_task(
            &fw,
            a,
            "test -d \"$MESOS_SANDBOX\" && echo ran on $(hostname)",
        );
        assert_eq!(&ran_on, id, "the task ran on another agent than {a}");
    }
}

#[test]
fn the_leader_fails_over_and_agents_keep_their_ids() {
    let inv = lab_inventory();
    let masters = group(&inv, "masters");
    let before = active_agents(&inv, Duration::from_secs(180));
    let old = leader(&inv, Duration::from_secs(60));
    ssh_ok(&inv, &old, "systemctl stop mesos-master");
    let stopped = Instant::now();
    let new = poll("a new leader", Duration::from_secs(120), || {
        let (l, _) = elected(&inv);
        (l.len() == 1 && l[0] != old).then(|| l[0].clone())
    });
    let elected_after = stopped.elapsed();
    let after = active_agents(&inv, Duration::from_secs(180));
    let reregistered_after = stopped.elapsed();
    eprintln!(
        "failover: {new} elected {:.1} s after {old} stopped; every agent re-registered after {:.1} s",
        elected_after.as_secs_f64(),
        reregistered_after.as_secs_f64()
    );
    assert_eq!(after, before, "agent ids changed across the failover");
    // Mesos-DNS follows the leader.
    let domain = dns_domain(&inv);
    poll(
        "leader.mesos to follow the new leader",
        Duration::from_secs(90),
        || {
            (resolve_on(&inv, &masters[0], &format!("leader.{domain}")) == [address(&inv, &new)])
                .then_some(())
        },
    );
    // The old leader comes back as a follower, and every replica is back in the ensemble.
    ssh_ok(&inv, &old, "systemctl start mesos-master");
    poll(
        "the old leader back, recovered, as a follower",
        Duration::from_secs(180),
        || {
            let (l, all) = elected(&inv);
            (l == [new.clone()]
                && all.len() == masters.len()
                && all.values().all(|v| {
                    metric(v, "registrar/log/recovered") == 1.0
                        && metric(v, "registrar/log/ensemble_size") == masters.len() as f64
                }))
            .then_some(())
        },
    );
    // An agent restarted on its work dir recovers with its id.
    let a = group(&inv, "agents")[0].clone();
    ssh_ok(&inv, &a, "systemctl restart mesos-agent");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        active_agents(&inv, Duration::from_secs(180)),
        before,
        "{a} came back with another id"
    );
}

#[test]
fn mesos_speaks_tls_from_the_cluster_ca_and_refuses_plain_http() {
    // Masters and agents serve HTTPS with their host certificate (curl checks it against the
    // cluster CA and the IP SAN); plain HTTP gets no answer. So the agents' registration (next
    // test) and Mesos-DNS's state reads (the dnsmasq test) went over TLS too.
    let inv = lab_inventory();
    let hosts: Vec<(String, u16, &str)> = group(&inv, "masters")
        .into_iter()
        .map(|h| (h, port("mesos_master", "http"), "mesos-master"))
        .chain(
            group(&inv, "agents")
                .into_iter()
                .map(|h| (h, port("mesos_agent", "http"), "mesos-agent")),
        )
        .collect();
    for (h, p, unit) in &hosts {
        let a = address(&inv, h);
        let (status, _) = poll(
            &format!("{h} answering over TLS"),
            Duration::from_secs(60),
            || mesos_get(&inv, &a, *p, "/health"),
        );
        assert_eq!(status, 200, "{h} /health over TLS");
        let plain = http_get(&a, *p, "/health");
        assert!(
            !matches!(plain, Some((200, _))),
            "{h}:{p} answered plain HTTP: {plain:?}"
        );
        let env = ssh_ok(&inv, h, &format!("systemctl show -p Environment {unit}"));
        assert!(
            env.contains("LIBPROCESS_SSL_ENABLED=true")
                && env.contains("LIBPROCESS_SSL_CA_FILE=/etc/provisioner/tls/ca.crt"),
            "{h}: {env}"
        );
    }
}

// ---------------------------------------------------------------- DNS

#[test]
fn dnsmasq_on_every_host_resolves_every_host_and_forwards_the_mesos_domain() {
    let inv = lab_inventory();
    let all = group(&inv, "all");
    let masters: BTreeSet<String> = group(&inv, "masters")
        .iter()
        .map(|m| address(&inv, m))
        .collect();
    let domain = dns_domain(&inv);
    for h in &all {
        let active = ssh_ok(&inv, h, "systemctl is-active dnsmasq");
        assert_eq!(active.trim(), "active", "{h}");
        for other in &all {
            assert_eq!(
                resolve_on(&inv, h, other),
                [address(&inv, other)],
                "{h} resolving {other}"
            );
        }
        // Mesos-DNS learns the leader on its first refresh after start: allow it that long.
        let leader = poll("leader.mesos to resolve", Duration::from_secs(90), || {
            let l = resolve_on(&inv, h, &format!("leader.{domain}"));
            (!l.is_empty()).then_some(l)
        });
        assert!(
            leader.len() == 1 && masters.contains(&leader[0]),
            "{h}: leader.{domain} -> {leader:?}, masters {masters:?}"
        );
        let elected = address(&inv, &self::leader(&inv, Duration::from_secs(60)));
        assert_eq!(
            leader,
            [elected],
            "{h}: leader.{domain} is not the elected master"
        );
    }
}

// ---------------------------------------------------------------- Docker and CNI

#[test]
fn docker_runs_on_agents_with_our_daemon_json() {
    let inv = lab_inventory();
    for a in group(&inv, "agents") {
        assert_eq!(
            ssh_ok(&inv, &a, "systemctl is-active docker").trim(),
            "active",
            "{a}"
        );
        let text = ssh_ok(&inv, &a, "cat /etc/docker/daemon.json");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{a}: daemon.json is not JSON ({e}): {text}"));
        assert!(json.is_object(), "{a}: {text}");
        let info = ssh_ok(&inv, &a, "docker info");
        assert!(info.contains("Server Version: 20.10"), "{a}: {info}");
        // Ours, and in effect: every setting the role writes is what the daemon runs with.
        let s = |k: &str| {
            json[k]
                .as_str()
                .unwrap_or_else(|| panic!("{a}: no {k}: {text}"))
        };
        let cgroup = json["exec-opts"][0]
            .as_str()
            .and_then(|o| o.strip_prefix("native.cgroupdriver="))
            .unwrap_or_else(|| panic!("{a}: no cgroup driver: {text}"));
        let live = json["live-restore"]
            .as_bool()
            .unwrap_or_else(|| panic!("{a}: no live-restore: {text}"));
        for (label, want) in [
            ("Logging Driver", s("log-driver")),
            ("Storage Driver", s("storage-driver")),
            ("Cgroup Driver", cgroup),
            ("Live Restore Enabled", if live { "true" } else { "false" }),
        ] {
            assert!(
                info.lines().any(|l| l.trim() == format!("{label}: {want}")),
                "{a}: daemon.json says {label} {want}; docker info:\n{info}"
            );
        }
        assert!(
            json["log-opts"]["max-size"].is_string() && json["log-opts"]["max-file"].is_string(),
            "{a}: log rotation missing: {text}"
        );
        if let Some(reg) =
            var(&inv, &a, "docker_registry").and_then(|v| v.as_str().map(str::to_string))
        {
            assert!(
                text.contains(&reg),
                "{a}: docker_registry {reg} not in daemon.json"
            );
        }
    }
}

#[test]
fn cni_configs_are_valid_with_the_derived_disjoint_subnets() {
    let inv = lab_inventory();
    let agents = group(&inv, "agents");
    let supernet = var(&inv, &agents[0], "cni_supernet")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "10.200.0.0/16".into());
    let derived = cluster_core::derive::cni_subnets(&supernet, agents.len()).unwrap();
    let mut seen = BTreeSet::new();
    for (i, a) in agents.iter().enumerate() {
        let files = ssh_ok(
            &inv,
            a,
            "ls /etc/cni/net.d/*.conf /etc/cni/net.d/*.conflist 2>/dev/null || true",
        );
        let files: Vec<&str> = files.lines().filter(|l| !l.is_empty()).collect();
        assert!(!files.is_empty(), "{a}: no CNI config in /etc/cni/net.d");
        let mut subnets = Vec::new();
        for f in files {
            let text = ssh_ok(&inv, a, &format!("cat {f}"));
            let conf: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{a}:{f}: not JSON ({e})"));
            assert!(
                conf["cniVersion"].is_string() && conf["name"].is_string(),
                "{a}:{f}"
            );
            let plugins: Vec<Value> = match conf["plugins"].as_array() {
                Some(p) => p.clone(),
                None => vec![conf.clone()],
            };
            for p in plugins {
                let ty = p["type"].as_str().unwrap_or_default().to_string();
                assert!(!ty.is_empty(), "{a}:{f}: plugin without type");
                ssh_ok(&inv, a, &format!("test -x /usr/lib/cni/{ty}"));
                let ipam = &p["ipam"];
                if let Some(s) = ipam["subnet"].as_str() {
                    subnets.push(s.to_string());
                }
                for r in ipam["ranges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                {
                    if let Some(s) = r["subnet"].as_str() {
                        subnets.push(s.to_string());
                    }
                }
            }
        }
        assert!(
            subnets.contains(&derived[i].to_string()),
            "{a}: subnets {subnets:?}, derived {}",
            derived[i]
        );
        for s in subnets {
            assert!(
                seen.insert(s.clone()),
                "{a}: subnet {s} is used by another agent"
            );
        }
    }
}

// ---------------------------------------------------------------- monitoring

#[test]
fn prometheus_reports_every_node_exporter_up() {
    let inv = lab_inventory();
    let mon = address(&inv, &group(&inv, "monitoring")[0]);
    let ne = port("node_exporter", "http");
    let want: BTreeSet<String> = group(&inv, "all")
        .iter()
        .map(|h| format!("{}:{ne}", address(&inv, h)))
        .collect();
    poll(
        "every node_exporter target up",
        Duration::from_secs(180),
        || {
            let t = http_json(&mon, port("prometheus", "http"), "/api/v1/targets");
            let up: BTreeSet<String> = t["data"]["activeTargets"]
                .as_array()?
                .iter()
                .filter(|x| x["health"] == "up")
                .filter_map(|x| x["labels"]["instance"].as_str().map(str::to_string))
                .collect();
            // Instances may be named by address, by host name and port, or by host name.
            let by_name: BTreeSet<String> = group(&inv, "all")
                .iter()
                .map(|h| format!("{h}:{ne}"))
                .collect();
            let bare: BTreeSet<String> = group(&inv, "all").into_iter().collect();
            (want.is_subset(&up) || by_name.is_subset(&up) || bare.is_subset(&up)).then_some(())
        },
    );
    let (status, _) =
        http_get(&mon, port("alertmanager", "http"), "/-/healthy").expect("alertmanager");
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------- storage

#[test]
fn a_file_written_to_shared_storage_on_one_agent_is_read_on_another() {
    let inv = lab_inventory();
    let agents = group(&inv, "agents");
    assert!(
        agents.len() >= 2,
        "this proof needs two agents, the lab has {agents:?}"
    );
    let token = format!("e2e-{}", std::process::id());
    let path = format!("/mnt/shared/{token}");
    ssh_ok(&inv, &agents[0], &format!("echo {token} > {path} && sync"));
    let got = poll(
        "the file on the other agent",
        Duration::from_secs(30),
        || {
            let o = ssh(&inv, &agents[1], &format!("cat {path}"));
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        },
    );
    ssh_ok(&inv, &agents[1], &format!("rm -f {path}"));
    assert_eq!(got, token);
}

// ---------------------------------------------------------------- TLS and secrets

#[test]
fn certificates_verify_against_the_ca_with_the_right_sans() {
    let inv = lab_inventory();
    let domain = dns_domain(&inv);
    for h in group(&inv, "all") {
        ssh_ok(
            &inv,
            &h,
            "openssl verify -CAfile /etc/provisioner/tls/ca.crt /etc/provisioner/tls/host.crt",
        );
        let sans = ssh_ok(
            &inv,
            &h,
            "openssl x509 -noout -ext subjectAltName -in /etc/provisioner/tls/host.crt",
        );
        for want in [
            format!("DNS:{h}"),
            format!("DNS:{h}.{domain}"),
            format!("IP Address:{}", address(&inv, &h)),
        ] {
            assert!(sans.contains(&want), "{h}: {want} not in {sans}");
        }
        let mode = ssh_ok(&inv, &h, "stat -c %a /etc/provisioner/tls/host.key");
        assert_eq!(mode.trim(), "600", "{h}: host.key mode");
    }
}

/// The ZooKeeper SASL passwords as the hosts hold them (JAAS `password="..."`).
fn zookeeper_secrets(inv: &Path) -> Vec<String> {
    let zk = group(inv, "zookeeper");
    let out = ssh_ok(
        inv,
        &zk[0],
        "grep -rhoE 'password=\"[^\"]+\"' /etc/zookeeper /etc/mesos /etc/mesos-master 2>/dev/null || true",
    );
    out.lines()
        .filter_map(|l| l.strip_prefix("password=\"")?.strip_suffix('"'))
        .map(str::to_string)
        .collect()
}

/// Every secret the stack put on the hosts: the ZooKeeper SASL passwords, the Mesos
/// credentials' secrets, and the lines of every host's TLS private key.
fn all_secrets(inv: &Path) -> Vec<String> {
    let mut secrets = zookeeper_secrets(inv);
    let masters = group(inv, "masters");
    let creds: Value = serde_json::from_str(&ssh_ok(
        inv,
        &masters[0],
        "cat /etc/mesos/secrets/master-credentials.json",
    ))
    .expect("master credentials are JSON");
    let before = secrets.len();
    for c in creds["credentials"].as_array().into_iter().flatten() {
        secrets.extend(c["secret"].as_str().map(str::to_string));
    }
    assert!(secrets.len() > before, "no Mesos credential secret found");
    for h in group(inv, "all") {
        let key = ssh_ok(inv, &h, "cat /etc/provisioner/tls/host.key");
        // An EC key's PKCS#8 ends with its public key, which the certificate holds too: a key
        // line found in the host's own certificate is public, not a secret.
        let cert = ssh_ok(inv, &h, "cat /etc/provisioner/tls/host.crt").replace('\n', "");
        let lines: Vec<String> = key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 40 && !cert.contains(*l))
            .map(str::to_string)
            .collect();
        assert!(!lines.is_empty(), "{h}: no TLS key lines");
        secrets.extend(lines);
    }
    secrets.sort();
    secrets.dedup();
    secrets
}

/// Where `secrets` occur in `bytes` (their indexes in `secrets`).
fn found_in(bytes: &[u8], secrets: &[String]) -> Vec<usize> {
    (0..secrets.len())
        .filter(|&k| {
            let s = secrets[k].as_bytes();
            bytes.windows(s.len()).any(|w| w == s)
        })
        .collect()
}

/// Issue 15, item 3: collect every secret a lab run produced and look for each in every
/// output (human, -v, diffs, JSON events, status, history), in every file of the state dir
/// but the encrypted store (the history database included), and in every world-readable file
/// of every host. A hit names where, never the secret.
#[test]
fn no_secret_reaches_output_history_state_or_world_readable_files() {
    let inv = lab_inventory();
    let secrets = all_secrets(&inv);
    let i = inv.display().to_string();
    let mut hits: Vec<String> = Vec::new();
    let runs: [&[&str]; 7] = [
        &["apply", "-i", &i, "-v", "-D"],
        &["apply", "-i", &i, "--output", "json", "-v"],
        &["plan", "-i", &i, "-v", "-D"],
        &["status", "-i", &i, "--output", "json"],
        &["history", "list", "-i", &i, "--output", "json"],
        &["history", "show", "last", "-i", &i, "--output", "json"],
        // an error: a run that fails validation prints its diagnostics
        &["plan", "-i", &i, "--limit", "no-such-host-anywhere"],
    ];
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(args)
            .output()
            .expect("run provisioner");
        let mut all = out.stdout.clone();
        all.extend_from_slice(&out.stderr);
        assert!(
            !all.is_empty(),
            "`provisioner {}` printed nothing",
            args.join(" ")
        );
        for k in found_in(&all, &secrets) {
            hits.push(format!(
                "output of `provisioner {}`: secret #{k}",
                args.join(" ")
            ));
        }
    }

    // The state dir in clear: every file but the encrypted store.
    let state = inv.parent().unwrap().join(format!(
        ".{}.state",
        inv.file_stem().unwrap().to_string_lossy()
    ));
    let mut files = 0;
    let mut stack = vec![state.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "secrets") {
                    stack.push(p);
                }
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&p).unwrap();
            for k in found_in(&bytes, &secrets) {
                hits.push(format!("{}: secret #{k}", p.display()));
            }
        }
    }
    assert!(
        state.join("history.db").exists(),
        "no history.db in {}",
        state.display()
    );

    // The hosts' world-readable files.
    let patterns = secrets.join("\n") + "\n";
    for h in group(&inv, "all") {
        let o = ssh_input(
            &inv,
            &h,
            "umask 077; p=$(mktemp); cat > \"$p\"; \
             find /etc /var/lib /var/log /var/cache/provisioner /opt /usr/local /home /root /srv /tmp /run \
               -xdev -type f -perm -0004 -size -8M -print0 2>/dev/null | \
             xargs -0 -r sh -c 'grep -lF -f \"$0\" -- \"$@\"; [ $? -le 1 ]' \"$p\"; rc=$?; \
             rm -f \"$p\"; exit $rc",
            patterns.as_bytes(),
        );
        assert!(
            o.status.success(),
            "{h}: the search failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for f in String::from_utf8_lossy(&o.stdout).lines() {
            hits.push(format!("{h}:{f} (world-readable)"));
        }
    }
    eprintln!(
        "leak check: {} secrets, {} outputs, {files} state files, {} hosts: {} found",
        secrets.len(),
        runs.len(),
        group(&inv, "all").len(),
        hits.len()
    );
    assert!(hits.is_empty(), "secrets found:\n{}", hits.join("\n"));
}

// ---------------------------------------------------------------- convergence

#[test]
fn a_second_apply_changes_nothing() {
    let inv = lab_inventory();
    apply(&inv, &[]);
    let out = apply(&inv, &[]);
    assert_eq!(changed_tasks(&out), Vec::<String>::new());
    // Nothing moved, so no rolling gate waits: each quorum member's gate tasks are skipped
    // (the gates run once anything about the member moved: e2e_members and the upgrade).
    let gates: Vec<(String, String, String)> = events(&out)
        .iter()
        .filter(|e| e["event"] == "task_finished")
        .filter(|e| {
            let t = e["task"].as_str().unwrap_or_default();
            t.contains("this member serves")
                || t.contains("the ensemble has a quorum")
                || t.contains("follows an elected leader")
        })
        .map(|e| {
            (
                e["host"].as_str().unwrap_or_default().to_string(),
                e["task"].as_str().unwrap_or_default().to_string(),
                e["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(!gates.is_empty(), "no gate task reported");
    assert!(
        gates.iter().all(|(_, _, status)| status == "skipped"),
        "a gate ran on an unchanged cluster: {gates:#?}"
    );
    let i = inv.display().to_string();
    let plan = provisioner(&["plan", "-i", &i, "--exit-code"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "plan after apply wants changes"
    );
}

/// Mesos cannot recover an agent whose attributes changed ("Incompatible agent info"): the role
/// starts it over as a new agent. Only that agent restarts, and it comes back active under a
/// new id with the new attribute; every other agent keeps its id.
#[test]
fn changing_one_agents_attributes_makes_it_a_new_agent_and_touches_no_other_host() {
    let inv = lab_inventory();
    let agents = group(&inv, "agents");
    let masters = group(&inv, "masters");
    apply(&inv, &[]);
    let ids_before = active_agents(&inv, Duration::from_secs(180));
    let pids = |inv: &Path| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for a in &agents {
            m.insert(a.clone(), main_pid(inv, a, "mesos-agent"));
        }
        for h in &masters {
            m.insert(h.clone(), main_pid(inv, h, "mesos-master"));
        }
        m
    };
    let before = pids(&inv);
    let rack = format!("r{}", std::process::id());
    {
        let _hv = HostVars::new(
            &inv,
            &agents[0],
            &format!("mesos_attributes:\n  e2e_rack: {rack}\n"),
        );
        apply(&inv, &[]);
        let after = pids(&inv);
        for (h, pid) in &before {
            if h == &agents[0] {
                assert_ne!(&after[h], pid, "{h}: mesos-agent was not restarted");
            } else {
                assert_eq!(
                    &after[h], pid,
                    "{h}: restarted, but only {} changed",
                    agents[0]
                );
            }
        }
        let ids = poll("the new agent registered", Duration::from_secs(180), || {
            let ids = active_agents(&inv, Duration::from_secs(180));
            (ids[&agents[0]] != ids_before[&agents[0]]).then_some(ids)
        });
        for a in &agents[1..] {
            assert_eq!(ids[a], ids_before[a], "{a}'s id changed");
        }
        let st = leader_state(&inv);
        let me = st["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == ids[&agents[0]].as_str())
            .unwrap()
            .clone();
        assert_eq!(me["attributes"]["e2e_rack"], rack.as_str(), "{me}");
    }
    // Back to the inventory's own attributes: a new agent again, and active.
    apply(&inv, &[]);
    active_agents(&inv, Duration::from_secs(180));
}

#[test]
fn changing_a_zookeeper_setting_rolls_one_member_at_a_time_and_quorum_holds() {
    let inv = lab_inventory();
    let zk = group(&inv, "zookeeper");
    let addrs: Vec<String> = zk.iter().map(|h| address(&inv, h)).collect();
    apply(&inv, &[]);
    let before: Vec<String> = zk.iter().map(|h| main_pid(&inv, h, "zookeeper")).collect();

    // Watch the ensemble while the change rolls (the day-2 sampler: every member asked at
    // once, every 200 ms): every sample must show a quorum serving and at most one member
    // down.
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(inv.clone(), stop.clone());
    let extra = format!(
        r#"{{"zookeeper_extra_config": {{"maxClientCnxns": "{}"}}}}"#,
        100 + std::process::id() % 100
    );
    let out = apply(&inv, &["-e", &extra]);
    stop.store(true, Ordering::SeqCst);
    let record = sampling.join().unwrap();
    let samples: Vec<Vec<Option<String>>> = record.iter().map(|s| s.zk.clone()).collect();
    let (median, max) = sample_periods(&record);
    eprintln!(
        "zookeeper roll: {} samples, period median {median} ms, max {max} ms",
        record.len()
    );
    let after: Vec<String> = zk.iter().map(|h| main_pid(&inv, h, "zookeeper")).collect();
    for (i, h) in zk.iter().enumerate() {
        assert_ne!(before[i], after[i], "{h}: zookeeper was not restarted");
    }
    assert!(samples.len() > 3, "too few samples of the ensemble");
    // Samples are about 200 ms apart.
    common::assert_quorum_held(&samples, 200);
    // Every member's restart shows in the run's events, dated by their timestamps.
    let mut order: Vec<(std::time::SystemTime, String)> = events(&out)
        .iter()
        .filter(|e| e["event"] == "task_finished" && e["status"] == "changed")
        .filter(|e| {
            e["task"].as_str().is_some_and(|t| {
                let t = t.to_lowercase();
                t.contains("restart") && t.contains("zookeeper")
            })
        })
        .map(|e| {
            (
                rfc3339(e["time"].as_str().unwrap()),
                e["host"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let restarted: BTreeSet<String> = order.iter().map(|(_, h)| h.clone()).collect();
    assert_eq!(
        restarted,
        zk.iter().cloned().collect::<BTreeSet<_>>(),
        "every member restarted"
    );
    // In order: followers first, the member that led before the roll last.
    order.sort();
    let leader_before = samples
        .first()
        .and_then(|s| s.iter().position(|m| m.as_deref() == Some("leader")))
        .map(|i| zk[i].clone())
        .expect("a leader before the roll");
    assert_eq!(
        order.last().map(|(_, h)| h),
        Some(&leader_before),
        "the leader before the roll restarts last: {order:?}"
    );
    // Put the setting back (another roll) and check the ensemble is whole again.
    apply(&inv, &[]);
    poll("the ensemble whole again", Duration::from_secs(120), || {
        let modes: Vec<Option<String>> = addrs.iter().map(|a| zk_mode(a)).collect();
        modes.iter().all(|m| m.is_some()).then_some(())
    });
}

// ---------------------------------------------------------------- status

fn status_json(inv: &Path) -> (Option<i32>, Value) {
    let i = inv.display().to_string();
    let out = provisioner(&["status", "-i", &i, "--output", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --output json is not JSON ({e})"));
    (out.status.code(), v)
}

fn flag_reasons(v: &Value) -> Vec<String> {
    v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["severity"].as_str().unwrap(),
                f["reason"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn status_is_healthy_then_flags_a_stopped_master_with_exit_1() {
    let inv = lab_inventory();
    let masters = group(&inv, "masters");
    active_agents(&inv, Duration::from_secs(180));
    let (code, v) = poll("status healthy", Duration::from_secs(120), || {
        let (code, v) = status_json(&inv);
        (code == Some(0)).then_some((code, v))
    });
    assert_eq!(code, Some(0));
    assert_eq!(v["healthy"], true, "{:?}", flag_reasons(&v));
    assert!(v["silent"].as_array().unwrap().is_empty());
    assert_eq!(
        v["view"]["masters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["elected"] == true)
            .count(),
        1
    );
    eprintln!("status on a healthy lab took {} ms", v["elapsed_ms"]);
    // A stopped standby master: degraded, and the flag says which.
    let old = leader(&inv, Duration::from_secs(60));
    let standby = masters.iter().find(|m| **m != old).unwrap().clone();
    ssh_ok(&inv, &standby, "systemctl stop mesos-master");
    let (code, v) = status_json(&inv);
    ssh_ok(&inv, &standby, "systemctl start mesos-master");
    assert_eq!(code, Some(1), "{:?}", flag_reasons(&v));
    assert_eq!(v["healthy"], false);
    let flags = flag_reasons(&v);
    assert!(
        flags.contains(&format!("critical {standby}: does not answer")),
        "{flags:?}"
    );
    assert!(
        flags
            .iter()
            .any(|f| f.contains(&format!("{standby}: mesos-master is"))),
        "{flags:?}"
    );
    // Back to healthy once it has recovered.
    poll("status healthy again", Duration::from_secs(180), || {
        (status_json(&inv).0 == Some(0)).then_some(())
    });
}

// ---------------------------------------------------------------- upgrade 1.10.0 -> 1.11.0

/// A lab of its own for the upgrade (3 masters, 2 agents, Mesos 1.10.0), destroyed on drop.
struct UpgradeLab {
    name: String,
    inventory: PathBuf,
}

impl Drop for UpgradeLab {
    fn drop(&mut self) {
        provisioner(&["lab", "destroy", "--name", &self.name]);
    }
}

fn mesos_artifact(version: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../shared/mesos/mesos-{version}-debian12-amd64.tar.gz"
    ));
    assert!(p.exists(), "no Mesos {version} artifact at {}", p.display());
    p.canonicalize().unwrap()
}

fn rfc3339(t: &str) -> std::time::SystemTime {
    // `2026-01-31T12:00:00.123Z` (the event envelope's format).
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2];
    std::time::UNIX_EPOCH
        + Duration::from_secs(secs as u64)
        + Duration::from_millis(ms.parse().unwrap())
}

/// Runs `provisioner upgrade ... --output json`, calling `on_event` for each step as it comes.
fn upgrade_run(args: &[String], on_event: impl FnMut(&Value)) -> (Option<i32>, Vec<Value>) {
    upgrade_run_pid(args, on_event, |_, _| {})
}

/// [`upgrade_run`], also handing each event and the child's pid to `with_pid` (to signal it).
fn upgrade_run_pid(
    args: &[String],
    mut on_event: impl FnMut(&Value),
    mut with_pid: impl FnMut(&Value, u32),
) -> (Option<i32>, Vec<Value>) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("upgrade")
        .args(args)
        .args(["--output", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run provisioner upgrade");
    let pid = child.id();
    let mut events = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            eprintln!("{line}");
            continue;
        };
        eprintln!(
            "[{}] {} {} {} {}: {}",
            v["time"].as_str().unwrap_or(""),
            v["phase"].as_str().unwrap_or(""),
            v["status"].as_str().unwrap_or(""),
            v["component"].as_str().unwrap_or(""),
            v["hosts"],
            v["message"].as_str().unwrap_or("")
        );
        on_event(&v);
        with_pid(&v, pid);
        events.push(v);
    }
    (child.wait().unwrap().code(), events)
}

fn steps<'a>(events: &'a [Value], phase: &str, status: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["phase"] == phase && e["status"] == status)
        .collect()
}

fn versions(inv: &Path) -> (BTreeMap<String, String>, BTreeMap<String, (String, String)>) {
    let masters = group(inv, "masters")
        .into_iter()
        .map(|m| {
            let v = master_json(inv, &m, "/version").unwrap_or_default();
            (m, v["version"].as_str().unwrap_or("?").to_string())
        })
        .collect();
    let agents = agents_of(&leader_state(inv))
        .into_iter()
        .map(|(h, (id, _, v))| (h, (id, v)))
        .collect();
    (masters, agents)
}

#[test]
fn upgrade_rolls_mesos_1_10_to_1_11_behind_gates_and_resumes_after_a_fault() {
    // The shared lab runs 1.11.0; this one starts on 1.10.0.
    let subnet = common::free_subnet(220..232);
    let dir = tempfile::tempdir().unwrap();
    let lab = UpgradeLab {
        name: "e2e-upgrade".into(),
        inventory: dir.path().join("upgrade.yml"),
    };
    let inv = lab.inventory.clone();
    let i = inv.display().to_string();
    let old = mesos_artifact("1.10.0");
    let new = mesos_artifact("1.11.0");
    let t = Instant::now();
    let up = provisioner(&[
        "lab",
        "up",
        "--name",
        &lab.name,
        "--masters",
        "3",
        "--agents",
        "2",
        "--extra",
        "0",
        "--subnet",
        &subnet,
        "--inventory",
        &i,
        "--mesos-artifact",
        &old.display().to_string(),
    ]);
    assert_eq!(up.status.code(), Some(0), "lab up on Mesos 1.10.0");
    eprintln!(
        "lab up (5 hosts, Mesos 1.10.0): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let ids_before = active_agents(&inv, Duration::from_secs(180));
    let (mv, av) = versions(&inv);
    assert!(mv.values().all(|v| v == "1.10.0"), "{mv:?}");
    assert!(av.values().all(|(_, v)| v == "1.10.0"), "{av:?}");

    // The bundle's desired state, pointed at 1.11.0 (a second inventory source wins).
    let target = dir.path().join("to-1.11.yml");
    std::fs::write(
        &target,
        format!(
            "all:\n  vars:\n    mesos_version: \"1.11.0\"\n    mesos_local_artifact: \"{}\"\n",
            new.display()
        ),
    )
    .unwrap();
    let args: Vec<String> = vec![
        "-i".into(),
        i.clone(),
        "-i".into(),
        target.display().to_string(),
    ];

    // Refusals change nothing: a downgrade, and a red gate (a stopped master).
    let down = dir.path().join("to-1.9.yml");
    std::fs::write(&down, "all:\n  vars:\n    mesos_version: \"1.9.0\"\n").unwrap();
    let masters = group(&inv, "masters");
    let pids = |inv: &Path| -> Vec<String> {
        masters
            .iter()
            .map(|m| main_pid(inv, m, "mesos-master"))
            .collect()
    };
    let pids0 = pids(&inv);
    let (code, ev) = upgrade_run(
        &[
            "-i".into(),
            i.clone(),
            "-i".into(),
            down.display().to_string(),
        ],
        |_| {},
    );
    assert_eq!(code, Some(1));
    let refused = steps(&ev, "refused", "failed");
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains("downgrade"),
        "{refused:?}"
    );
    let standby = masters
        .iter()
        .find(|m| **m != leader(&inv, Duration::from_secs(60)))
        .unwrap()
        .clone();
    ssh_ok(&inv, &standby, "systemctl stop mesos-master");
    let (code, ev) = upgrade_run(&args, |_| {});
    ssh_ok(&inv, &standby, "systemctl start mesos-master");
    assert_eq!(code, Some(1));
    let msg = steps(&ev, "refused", "failed")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(&format!("{standby}: does not answer")),
        "{msg}"
    );
    assert!(steps(&ev, "restart", "started").is_empty());
    let mut after_refusals = pids(&inv);
    let standby_ix = masters.iter().position(|m| *m == standby).unwrap();
    after_refusals[standby_ix] = pids0[standby_ix].clone(); // the test restarted that one
    assert_eq!(
        after_refusals, pids0,
        "a refused upgrade restarted a master"
    );
    poll(
        "status healthy after the refusals",
        Duration::from_secs(180),
        || {
            let o = provisioner(&["status", "-i", &i]);
            (o.status.code() == Some(0)).then_some(())
        },
    );

    // Long-running tasks, checkpointed, one on each agent; each writes its pid.
    let mut fo = framework_options(&inv);
    fo.checkpoint = true;
    fo.failover_timeout = Duration::from_secs(3600);
    fo.name = "e2e-upgrade".into();
    let fw = testkit::framework::Framework::subscribe(&fo).expect("subscribe");
    let mut tasks = BTreeMap::new();
    for a in group(&inv, "agents") {
        let t = fw
            .launch(
                Some(&a),
                "echo $$ > /tmp/e2e-upgrade-task.pid; exec sleep 3600",
                0.1,
                32.0,
            )
            .unwrap_or_else(|e| panic!("launch on {a}: {e}\n{}", fw.events_text()));
        let pid = poll("the task wrote its pid", Duration::from_secs(60), || {
            let o = ssh(&inv, &a, "cat /tmp/e2e-upgrade-task.pid");
            let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
            (!p.is_empty()).then_some(p)
        });
        tasks.insert(a.clone(), (t, pid));
    }

    // The plan: masters one at a time (leader last), then agents; nothing changes.
    let mut plan_args = args.clone();
    plan_args.push("--plan".into());
    let (code, ev) = upgrade_run(&plan_args, |_| {});
    assert_eq!(code, Some(0));
    let plan = steps(&ev, "plan", "ok")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        plan.contains("mesos_master") && plan.contains("mesos_agent"),
        "{plan}"
    );
    assert!(plan.contains("1.10.0 -> 1.11.0"), "{plan}");
    assert!(steps(&ev, "restart", "started").is_empty());

    // Sample the whole time from here.
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(inv.clone(), stop.clone());
    let t_upgrade = Instant::now();

    // First run: a ZooKeeper follower stops while the first master restarts. The upgrade halts
    // before the next quorum member, and restarts nothing else.
    let zk_hosts = group(&inv, "zookeeper");
    let mut stopped_zk: Option<String> = None;
    let mut first_restarted: Option<String> = None;
    let (code, ev1) = upgrade_run(&args, |e| {
        if e["phase"] == "restart"
            && e["status"] == "started"
            && e["component"] == "mesos_master"
            && first_restarted.is_none()
        {
            let h = e["hosts"][0].as_str().unwrap().to_string();
            let follower = zk_hosts
                .iter()
                .find(|z| **z != h && zk_mode(&address(&inv, z)).as_deref() == Some("follower"))
                .expect("a ZooKeeper follower besides the restarting master")
                .clone();
            ssh_ok(&inv, &follower, "systemctl stop zookeeper");
            stopped_zk = Some(follower);
            first_restarted = Some(h);
        }
    });
    let stopped_zk = stopped_zk.expect("the upgrade restarted a master");
    let first = first_restarted.unwrap();
    assert_eq!(code, Some(1), "the upgrade halts");
    let halted = steps(&ev1, "halted", "failed");
    let why = halted[0]["message"].as_str().unwrap();
    assert!(why.contains(&format!("zookeeper: {stopped_zk}")), "{why}");
    let restarted: Vec<&str> = steps(&ev1, "restart", "started")
        .iter()
        .map(|e| e["hosts"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        restarted,
        [first.as_str()],
        "nothing after the fault restarts"
    );
    let (mv, _) = versions(&inv);
    assert_eq!(mv.values().filter(|v| *v == "1.11.0").count(), 1, "{mv:?}");
    ssh_ok(&inv, &stopped_zk, "systemctl start zookeeper");
    poll("ZooKeeper serving again", Duration::from_secs(120), || {
        (zk_mode(&address(&inv, &stopped_zk)).as_deref() == Some("follower")
            || zk_mode(&address(&inv, &stopped_zk)).as_deref() == Some("leader"))
        .then_some(())
    });

    // Second run resumes; Ctrl-C while the first agent restarts stops it at a safe point.
    let mut interrupted = false;
    let (code, ev2) = upgrade_run_pid(
        &args,
        |_| {},
        |e, pid| {
            if e["phase"] == "restart"
                && e["status"] == "started"
                && e["component"] == "mesos_agent"
                && !interrupted
            {
                interrupted = true;
                Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status()
                    .unwrap();
            }
        },
    );
    assert!(interrupted, "the resumed run reached the agents");
    assert_eq!(code, Some(1), "Ctrl-C halts the upgrade");
    let why = steps(&ev2, "halted", "failed")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("interrupted"), "{why}");
    assert_eq!(
        steps(&ev2, "restart", "started")
            .iter()
            .filter(|e| e["component"] == "mesos_agent")
            .count(),
        1,
        "nothing starts after Ctrl-C"
    );
    // Third run finishes the agents.
    let (code, ev2b) = upgrade_run(&args, |_| {});
    assert_eq!(code, Some(0), "the upgrade completes after Ctrl-C");
    assert!(steps(&ev2b, "restart", "started")
        .iter()
        .all(|e| e["component"] == "mesos_agent"));
    let upgrade_secs = t_upgrade.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let samples = sampling.join().unwrap();
    let restarted2: Vec<&str> = steps(&ev2, "restart", "started")
        .iter()
        .flat_map(|e| {
            e["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap())
        })
        .collect();
    assert!(
        !restarted2.contains(&first.as_str()),
        "{first} was done already: {restarted2:?}"
    );

    // What the sampler saw.
    assert!(samples.len() > 50, "{} samples", samples.len());
    let (median, max) = sample_periods(&samples);
    eprintln!(
        "sampler: {} samples, period median {median} ms, max {max} ms",
        samples.len(),
    );
    for s in &samples {
        let serving =
            s.zk.iter()
                .filter(|m| matches!(m.as_deref(), Some("leader" | "follower")))
                .count();
        assert!(
            serving >= 2,
            "ZooKeeper quorum lost at {:?}: {:?}",
            s.at,
            s.zk
        );
        let down = s.masters.iter().filter(|(answered, _)| !answered).count();
        assert!(
            down <= 1,
            "{down} masters down at once at {:?}: {:?}",
            s.at,
            s.masters
        );
    }
    // Windows without a leader: consecutive samples with no master elected, from the first
    // one's answers (`end`: it saw no leader by then) to the next leader's question (`at`).
    let mut windows: Vec<(std::time::SystemTime, std::time::SystemTime)> = Vec::new();
    let mut open: Option<std::time::SystemTime> = None;
    for s in &samples {
        let led = s.masters.iter().any(|(_, e)| *e);
        match (led, open) {
            (false, None) => open = Some(s.end),
            (true, Some(o)) => {
                windows.push((o, s.at));
                open = None;
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "no leader at the end");
    // One failover: every leaderless moment lies within the leader's restart, as the upgrade's
    // own events date it (a new leader may blink once more for a sample while it recovers the
    // registry, seen once in 4 runs: 0.15 s, 6.7 s after the election, still inside the restart).
    let leader_restart = steps(&ev2, "restart", "started")
        .into_iter()
        .find(|e| e["message"].as_str().unwrap().contains("the leader"))
        .expect("the leader restarted, last");
    let gate_after = ev2
        .iter()
        .find(|e| {
            e["phase"] == "gate"
                && e["status"] == "ok"
                && e["component"] == "mesos_master"
                && e["hosts"] == leader_restart["hosts"]
        })
        .unwrap();
    let (from, to) = (
        rfc3339(leader_restart["time"].as_str().unwrap()),
        rfc3339(gate_after["time"].as_str().unwrap()),
    );
    for (a, b) in &windows {
        assert!(
            *a >= from && *b <= to + Duration::from_secs(1),
            "leaderless {a:?}..{b:?} outside the leader's restart {from:?}..{to:?}; samples around it: {:#?}",
            samples
                .iter()
                .filter(|s| s.end + Duration::from_secs(3) >= *a && s.at <= *b + Duration::from_secs(1))
                .collect::<Vec<_>>()
        );
        eprintln!(
            "failover window: {:.1} s",
            b.duration_since(*a).unwrap_or_default().as_secs_f64()
        );
    }

    // The end state: 1.11.0 everywhere, the same agent ids, the tasks still running.
    let (mv, av) = versions(&inv);
    assert!(mv.values().all(|v| v == "1.11.0"), "{mv:?}");
    for (h, id) in &ids_before {
        assert_eq!(av[h], (id.clone(), "1.11.0".to_string()), "{h}");
    }
    let st = leader_state(&inv);
    let running: BTreeSet<String> = st["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["state"] == "TASK_RUNNING")
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect();
    for (a, (task, pid)) in &tasks {
        assert!(
            running.contains(task.as_str()),
            "task {task:?} on {a} is not running: {running:?}"
        );
        ssh_ok(&inv, a, &format!("kill -0 {pid}"));
    }
    let t = Instant::now();
    let o = provisioner(&["status", "-i", &i]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "status is healthy after the upgrade"
    );
    eprintln!("status after the upgrade: {} ms", t.elapsed().as_millis());
    let (code, ev3) = upgrade_run(&args, |_| {});
    assert_eq!(code, Some(0));
    assert!(
        steps(&ev3, "restart", "started").is_empty(),
        "a second upgrade does nothing"
    );
    assert_eq!(steps(&ev3, "done", "ok")[0]["message"], "nothing to do");
    for (t, _) in tasks.values() {
        let _ = fw.kill(t);
    }
    let _ = fw.teardown();
    eprintln!(
        "upgrade 1.10.0 -> 1.11.0 (halted run, fault repaired, resumed run): {upgrade_secs:.0} s, {} samples",
        samples.len()
    );

    // ---- node add / remove on the same lab (now on 1.11.0: `args` holds the override).
    let node = |extra: &[&str]| -> Output {
        let mut a: Vec<&str> = vec!["node"];
        a.extend_from_slice(extra);
        a.extend(args.iter().map(String::as_str));
        a.push("--yes");
        provisioner(&a)
    };
    let cni = |inv: &Path, a: &str| ssh_ok(inv, a, "cat /etc/cni/net.d/*.conf* 2>/dev/null");
    let cni_before: Vec<String> = ["agent1", "agent2"].iter().map(|a| cni(&inv, a)).collect();
    let t = Instant::now();
    let o = provisioner(&[
        "lab", "add", "agent3", "--group", "agents", "--name", &lab.name,
    ]);
    assert_eq!(o.status.code(), Some(0), "lab add agent3");
    let o = node(&["add", "agent3"]);
    assert_eq!(o.status.code(), Some(0), "node add agent3");
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        said.contains("changed per host {\"agent3\":"),
        "only agent3 ran: {said}"
    );
    eprintln!(
        "lab add + node add agent3: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let ids = active_agents(&inv, Duration::from_secs(60));
    assert!(ids.contains_key("agent3"), "{ids:?}");
    // A task on it, running while it leaves.
    let fw2 = testkit::framework::Framework::subscribe(&fo).expect("subscribe again");
    let t3 = fw2
        .launch(Some("agent3"), "exec sleep 3600", 0.1, 32.0)
        .unwrap_or_else(|e| panic!("launch on agent3: {e}\n{}", fw2.events_text()));
    fw2.wait(&t3, Duration::from_secs(60), |s| s.state == "TASK_RUNNING")
        .unwrap_or_else(|e| panic!("task on agent3: {e}\n{}", fw2.events_text()));
    let t = Instant::now();
    let o = node(&["remove", "agent3"]);
    assert_eq!(o.status.code(), Some(0), "node remove agent3");
    let end = fw2
        .wait_terminal(&t3, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the task on agent3 did not end: {e}\n{}", fw2.events_text()));
    eprintln!(
        "node remove agent3: {:.0} s; its task ended {}",
        t.elapsed().as_secs_f64(),
        end.state
    );
    let st = leader_state(&inv);
    assert!(
        !agents_of(&st).contains_key("agent3"),
        "agent3 still registered"
    );
    assert!(
        ssh(&inv, "agent3", "systemctl is-active mesos-agent")
            .stdout
            .starts_with(b"inactive"),
        "the agent is stopped"
    );
    let cni_after: Vec<String> = ["agent1", "agent2"].iter().map(|a| cni(&inv, a)).collect();
    assert_eq!(
        cni_before, cni_after,
        "agent1's and agent2's CNI configs changed"
    );
    // A dead agent: no SSH to it, the master marks it gone.
    let o = provisioner(&["lab", "stop", "agent2", "--name", &lab.name]);
    assert_eq!(o.status.code(), Some(0));
    let t = Instant::now();
    let o = node(&["remove", "agent2", "--unreachable"]);
    assert_eq!(o.status.code(), Some(0), "node remove agent2 --unreachable");
    eprintln!(
        "node remove agent2 --unreachable: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let st = leader_state(&inv);
    assert!(
        !agents_of(&st).contains_key("agent2"),
        "agent2 still registered"
    );
    let _ = fw2.teardown();
    // A replaced machine: `lab rebuild agent1` (same name and address, new disk and keys). A
    // plain run refuses it with both fingerprints and points at `node replace`, which accepts
    // the new key and brings it back as a new agent.
    let old_id = agents_of(&leader_state(&inv))["agent1"].0.clone();
    let o = provisioner(&["lab", "rebuild", "agent1", "--name", &lab.name]);
    assert_eq!(o.status.code(), Some(0), "lab rebuild agent1");
    let mut apply_args: Vec<&str> = vec!["apply", "--limit", "agent1"];
    apply_args.extend(args.iter().map(String::as_str));
    let o = provisioner(&apply_args);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("host key changed") && out.contains("node replace agent1"),
        "{out}"
    );
    let o = node(&["replace", "agent1", "--expect-fingerprint", "SHA256:not-it"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a wrong pinned fingerprint is refused"
    );
    let t = Instant::now();
    let o = node(&["replace", "agent1"]);
    assert_eq!(o.status.code(), Some(0), "node replace agent1");
    eprintln!(
        "node replace agent1 (rebuilt): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let now = agents_of(&leader_state(&inv));
    assert!(now["agent1"].1, "agent1 is active");
    assert_ne!(now["agent1"].0, old_id, "agent1 came back under a new id");
    let o = node(&["replace", "agent1"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a host that answers with its accepted key was not replaced"
    );
}
