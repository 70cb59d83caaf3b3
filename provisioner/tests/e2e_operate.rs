//! End-to-end proofs of `provisioner operate` on the shared lab (the stack applied, real Mesos):
//! `PROVISIONER_LAB_INVENTORY` names its inventory; without it every test fails (never skips).
//!
//! The suite runs after the others in `.ci/test`. Its tests inject drift on the hosts and leave
//! them converged (the operator repairs what they broke, and each test checks it did). They run
//! one at a time (a lock here too, for runs without `--test-threads=1`).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{group, http_get, lab_inventory, poll, provisioner, ssh_ok};
use serde_json::Value;

/// The operator's cycle in these tests (the issue's `--interval 10s`).
const INTERVAL: &str = "10s";
/// How long a wait may take before the test fails: generous, a plan is 10-25 s on the lab.
const PATIENCE: Duration = Duration::from_secs(600);

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `provisioner operate --output json`, its events collected as they come.
struct Operator {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    port: u16,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Operator {
    fn start(inv: &Path, extra: &[&str]) -> Operator {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(["operate", "-i", inv.to_str().unwrap(), "--output", "json"])
            .args([
                "--interval",
                INTERVAL,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start provisioner operate");
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("operate: {line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Operator {
            child,
            events,
            port,
            reader: Some(reader),
        }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Poll the events until `f` finds what it wants.
    fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&[Value]) -> Option<T>) -> T {
        poll(what, PATIENCE, || f(&self.events()))
    }

    fn metrics(&self) -> String {
        let (status, body) =
            http_get("127.0.0.1", self.port, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        body
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGTERM, then wait for the exit: its code and every event.
    fn stop(mut self) -> (Option<i32>, Vec<Value>) {
        self.signal("TERM");
        let code = poll("the operator to exit after SIGTERM", PATIENCE, || {
            self.child.try_wait().unwrap().map(|s| s.code())
        });
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (code, self.events())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the sample `name` (with its labels, as printed) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn cycle(e: &Value) -> u64 {
    e["cycle"].as_u64().unwrap()
}

/// The last converged cycle's number, once there is one (a cycle that found drift on the shared
/// lab repairs it first).
fn converged_cycle(events: &[Value]) -> Option<u64> {
    of_kind(events, "cycle_ended")
        .into_iter()
        .rev()
        .find(|e| e["result"] == "converged")
        .map(cycle)
}

/// The controller's clock, as the history writes it (UTC, ms).
fn now_utc() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%3NZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn history(inv: &Path, args: &[&str]) -> Value {
    let i = inv.to_str().unwrap();
    let mut a = vec!["history"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-i", i, "--output", "json"]);
    let out = provisioner(&a);
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The drift rows (`history drift --since`) for `host` by `command`.
fn drift_rows(rows: &Value, command: &str, host: &str) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == command && r["host"] == host)
        .map(|r| format!("{} {}", r["time"].as_str().unwrap(), r["task"]))
        .collect()
}

/// The three drifts of the issue, and how to see each one repaired.
struct Drift {
    agent1: String,
    master2: String,
    agent2: String,
    flag_before: String,
}

const FLAG: &str = "/etc/mesos-agent/docker_stop_timeout";
const CRON: &str = "/etc/cron.d/docker-cleanup";

fn hosts(inv: &Path) -> (String, String, String) {
    let (masters, agents) = (group(inv, "masters"), group(inv, "agents"));
    (agents[0].clone(), masters[1].clone(), agents[1].clone())
}

/// Edit a flag file of agent1's Mesos agent, stop dnsmasq on master2, delete agent2's Docker
/// cleanup cron.
fn inject(inv: &Path) -> Drift {
    let (agent1, master2, agent2) = hosts(inv);
    let flag_before = ssh_ok(inv, &agent1, &format!("cat {FLAG}"));
    ssh_ok(inv, &agent1, &format!("echo 42secs > {FLAG}"));
    ssh_ok(inv, &master2, "systemctl stop dnsmasq");
    ssh_ok(inv, &agent2, &format!("rm {CRON}"));
    Drift {
        agent1,
        master2,
        agent2,
        flag_before,
    }
}

fn repaired(inv: &Path, d: &Drift) -> Vec<&'static str> {
    let mut broken = Vec::new();
    if ssh_ok(inv, &d.agent1, &format!("cat {FLAG}")) != d.flag_before {
        broken.push("agent1's flag file");
    }
    if common::ssh(inv, &d.master2, "systemctl is-active --quiet dnsmasq")
        .status
        .code()
        != Some(0)
    {
        broken.push("master2's dnsmasq");
    }
    if common::ssh(inv, &d.agent2, &format!("test -s {CRON}"))
        .status
        .code()
        != Some(0)
    {
        broken.push("agent2's cleanup cron");
    }
    broken
}

fn plan_durations(events: &[Value]) -> Vec<f64> {
    of_kind(events, "planned")
        .iter()
        .map(|e| e["duration_ms"].as_f64().unwrap() / 1000.0)
        .collect()
}

#[test]
fn injected_drift_is_repaired_within_two_cycles_counted_in_metrics_and_history() {
    let _serial = serial();
    let inv = lab_inventory();
    let started = Instant::now();
    let op = Operator::start(&inv, &[]);
    let (status, body) = poll("/healthz to answer", PATIENCE, || {
        http_get("127.0.0.1", op.port, "/healthz")
    });
    assert_eq!((status, body.trim()), (200, "ok"));
    let before = op.wait_for("a converged cycle", converged_cycle);
    let ok_key = "provisioner_operate_remediations_total{result=\"ok\"}";
    // The shared lab may have needed a repair first: count from here.
    let ok_before = sample(&op.metrics(), ok_key).unwrap_or(0.0);
    let since = now_utc();
    let drift = inject(&inv);
    eprintln!("drift injected after cycle {before}");
    // Every drifted host remediated, then a plan that finds nothing.
    let events = op.wait_for(
        "all three hosts remediated, then a plan without drift",
        |ev| {
            let fixed: BTreeSet<String> = of_kind(ev, "remediated")
                .iter()
                .filter(|e| e["ok"] == true && cycle(e) > before)
                .map(|e| e["host"].as_str().unwrap().to_string())
                .collect();
            let want = [&drift.agent1, &drift.master2, &drift.agent2];
            let last_fix = of_kind(ev, "remediated").iter().map(|e| cycle(e)).max()?;
            let clean_after = of_kind(ev, "planned").iter().any(|e| {
                cycle(e) > last_fix && e["drift"].as_object().is_some_and(|d| d.is_empty())
            });
            (want.iter().all(|h| fixed.contains(*h)) && clean_after).then(|| ev.to_vec())
        },
    );
    // The drift was seen by the first cycle after it and fixed within two cycles.
    let first = of_kind(&events, "planned")
        .into_iter()
        .find(|e| cycle(e) > before)
        .unwrap();
    for h in [&drift.agent1, &drift.master2, &drift.agent2] {
        assert!(
            first["drift"][h.as_str()].is_array(),
            "the first plan after the injection saw {h}'s drift: {first}"
        );
    }
    // Repairs the shared lab needed before the injection (cycles up to `before`) are not these.
    for e in of_kind(&events, "remediated")
        .into_iter()
        .filter(|e| cycle(e) > before)
    {
        assert_eq!(e["ok"], true, "no remediation failed: {e}");
        assert!(
            cycle(e) == before + 1 || cycle(e) == before + 2,
            "repaired within two intervals: {e}"
        );
    }
    // At most one agent per cycle (10% of 2 agents, at least 1): agent2 waits a cycle.
    let decided = of_kind(&events, "decided");
    let d1 = decided.iter().find(|e| cycle(e) == before + 1).unwrap();
    assert_eq!(
        d1["skipped"][drift.agent2.as_str()]["reason"],
        "budget",
        "{d1}"
    );
    assert_eq!(
        repaired(&inv, &drift),
        Vec::<&str>::new(),
        "the hosts are repaired"
    );
    let m = op.metrics();
    eprintln!("{m}");
    assert_eq!(sample(&m, "provisioner_operate_drift_tasks"), Some(0.0));
    assert_eq!(
        sample(&m, ok_key).map(|n| n - ok_before),
        Some(3.0),
        "one remediation per host"
    );
    assert_eq!(sample(&m, "provisioner_operate_active"), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "provisioner_operate_health_gate{component=\"zookeeper\"}"
        ),
        Some(1.0)
    );
    assert!(sample(&m, "provisioner_operate_plan_duration_seconds").unwrap() > 0.0);
    // `history drift` lists each repair with its time (and each cycle's finding).
    let rows = history(&inv, &["drift", "--since", &since]);
    for (host, task) in [
        (&drift.agent1, "one file per flag"),
        (&drift.master2, "dnsmasq"),
        (&drift.agent2, "cleanup cron"),
    ] {
        for command in ["operate", "operate remediate"] {
            let found = drift_rows(&rows, command, host);
            assert!(
                found.iter().any(|r| r.contains(task)),
                "`history drift` has a `{command}` row for {host} ({task}): {found:?}"
            );
        }
    }
    // SIGTERM while a plan runs: the plan finishes, the operator exits 0.
    let n = op.events().len();
    let started_cycle = op.wait_for("the next cycle to start", |ev| {
        ev[n..]
            .iter()
            .find(|e| e["event"] == "cycle_started")
            .map(cycle)
    });
    let (code, events) = op.stop();
    assert_eq!(code, Some(0), "SIGTERM: exit 0");
    let tail: Vec<&Value> = events[n..].iter().collect();
    let planned = tail
        .iter()
        .position(|e| e["event"] == "planned" && cycle(e) == started_cycle);
    let stopping = tail.iter().position(|e| e["event"] == "stopping");
    assert!(
        matches!((planned, stopping), (Some(p), Some(s)) if p < s),
        "the running plan finished before the operator stopped: {tail:?}"
    );
    let run = tail[planned.unwrap()]["run"].as_str().unwrap().to_string();
    let shown = history(&inv, &["show", &run]);
    assert_eq!(shown["run"]["exit_code"], 0, "{shown}");
    assert_eq!(shown["run"]["cancelled"], false, "{shown}");
    eprintln!(
        "plan durations per cycle (s): {:?}; test took {:?}",
        plan_durations(&events),
        started.elapsed()
    );
}

#[test]
fn remediate_off_reports_drift_in_metrics_and_history_and_changes_nothing() {
    let _serial = serial();
    let inv = lab_inventory();
    let (agent1, _, _) = hosts(&inv);
    let before = ssh_ok(&inv, &agent1, &format!("cat {FLAG}"));
    let since = now_utc();
    ssh_ok(&inv, &agent1, &format!("echo 42secs > {FLAG}"));
    let op = Operator::start(&inv, &["--remediate", "off"]);
    op.wait_for("two cycles that report agent1's drift only", |ev| {
        let seen = of_kind(ev, "decided")
            .iter()
            .filter(|e| e["skipped"][agent1.as_str()]["reason"] == "report_only")
            .count();
        (seen >= 2).then_some(())
    });
    let m = op.metrics();
    let line = format!("provisioner_operate_drift{{host=\"{agent1}\",component=\"mesos_agent\",task=\"mesos_agent : one file per flag\"}}");
    assert_eq!(sample(&m, &line), Some(1.0), "{m}");
    assert!(sample(&m, "provisioner_operate_drift_tasks").unwrap() >= 1.0);
    assert!(
        sample(
            &m,
            "provisioner_operate_skipped_total{reason=\"report_only\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        sample(&m, "provisioner_operate_remediations_total{result=\"ok\"}"),
        None,
        "nothing remediated: {m}"
    );
    let (code, events) = op.stop();
    assert_eq!(code, Some(0));
    assert!(of_kind(&events, "remediated").is_empty());
    assert_eq!(
        ssh_ok(&inv, &agent1, &format!("cat {FLAG}")),
        "42secs\n",
        "the host was not changed"
    );
    let rows = history(&inv, &["drift", "--since", &since]);
    assert!(
        !drift_rows(&rows, "operate", &agent1).is_empty(),
        "the cycles' plans are in the history: {rows}"
    );
    assert!(
        drift_rows(&rows, "operate remediate", &agent1).is_empty(),
        "no remediation run: {rows}"
    );
    // One cycle with remediation puts it back: exit 0 (converged).
    let i = inv.to_str().unwrap();
    let out = provisioner(&["operate", "-i", i, "--once", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "--once repaired the drift");
    assert_eq!(ssh_ok(&inv, &agent1, &format!("cat {FLAG}")), before);
}

fn state_file(inv: &Path, name: &str) -> PathBuf {
    provisioner::state::state_dir(inv).join(name)
}

#[test]
fn while_a_manual_apply_holds_the_lock_the_operator_waits_and_never_runs_beside_it() {
    let _serial = serial();
    let inv = lab_inventory();
    let tmp = tempfile::tempdir().unwrap();
    let target = group(&inv, "masters")[0].clone();
    let pb = tmp.path().join("slow.yml");
    std::fs::write(
        &pb,
        format!("- hosts: {target}\n  gather_facts: false\n  tasks:\n    - command: sleep 30\n"),
    )
    .unwrap();
    let i = inv.to_str().unwrap().to_string();
    let manual = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["play", "-i", &i, pb.to_str().unwrap(), "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = state_file(&inv, "run.lock");
    poll("the manual run to hold the lock", PATIENCE, || {
        std::fs::read_to_string(&lock)
            .ok()
            .filter(|t| t.contains("\"command\":\"play\""))
    });
    // --once while it is held: reports the holder, runs nothing, exit 5.
    let out = provisioner(&["operate", "-i", &i, "--once", "--output", "json"]);
    assert_eq!(out.status.code(), Some(5), "--once: lock held");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"lock_held\"") && text.contains("`play`"),
        "names the holder: {text}"
    );
    assert!(!text.contains("\"planned\""), "no plan beside it: {text}");
    // The loop waits politely, then runs once the lock is free.
    let op = Operator::start(&inv, &[]);
    op.wait_for("a lock wait", |ev| {
        of_kind(ev, "lock_held").first().map(|_| ())
    });
    let done = manual.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "the manual run finished");
    op.wait_for("a cycle after the lock was released", |ev| {
        of_kind(ev, "planned").first().map(|_| ())
    });
    let m = op.metrics();
    assert!(
        sample(&m, "provisioner_operate_lock_waits_total").unwrap() >= 1.0,
        "{m}"
    );
    let (code, _) = op.stop();
    assert_eq!(code, Some(0));
    // Never at the same time: every operator run started after the manual one ended.
    let runs = history(&inv, &["list", "--limit", "20"]);
    let runs = runs.as_array().unwrap();
    let play = runs.iter().find(|r| r["command"] == "play").unwrap();
    let play_end = play["ended"].as_str().unwrap();
    let play_start = play["started"].as_str().unwrap();
    let ours: Vec<&Value> = runs
        .iter()
        .filter(|r| {
            r["command"].as_str().unwrap().starts_with("operate")
                && r["started"].as_str().unwrap() > play_start
        })
        .collect();
    assert!(!ours.is_empty(), "the operator ran after the manual run");
    for r in ours {
        assert!(
            r["started"].as_str().unwrap() >= play_end,
            "operator run {} started {} before the manual run ended {play_end}",
            r["id"],
            r["started"]
        );
    }
}

fn http_json(host: &str, port: u16, path: &str) -> Option<Value> {
    let (status, body) = http_get(host, port, path)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// This machine's address on the way to `addr` (the lab bridge's).
fn local_address_towards(addr: &str) -> String {
    let out = Command::new("ip")
        .args(["-o", "route", "get", addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "src");
    words
        .next()
        .expect("`ip route get` names a source")
        .to_string()
}

#[test]
fn the_stacks_prometheus_scrapes_the_operator_and_fires_the_drift_alert_under_remediate_off() {
    let _serial = serial();
    let inv = lab_inventory();
    let i = inv.to_str().unwrap().to_string();
    let mon_host = group(&inv, "monitoring")[0].clone();
    let mon = common::inventory(&inv)
        .host_vars(&mon_host)
        .get("ansible_host")
        .and_then(Value::as_str)
        .unwrap_or(&mon_host)
        .to_string();
    let prom = cluster_core::bundle::Bundle::builtin()
        .unwrap()
        .component("prometheus")
        .unwrap()
        .ports["http"]
        .value;
    let me = local_address_towards(&mon);
    let port = free_port();
    let target = format!("{me}:{port}");
    // The monitoring host scrapes the operator, with a short drift window for the test.
    let vars = format!(
        "{{\"monitoring_operate_targets\": [\"{target}\"], \"monitoring_operate_drift_for\": \"30s\"}}"
    );
    let out = provisioner(&["apply", "-i", &i, "--limit", &mon_host, "-e", &vars]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the monitoring host takes the operator's job"
    );
    let (agent1, _, _) = hosts(&inv);
    let before = ssh_ok(&inv, &agent1, &format!("cat {FLAG}"));
    ssh_ok(&inv, &agent1, &format!("echo 42secs > {FLAG}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args([
            "operate",
            "-i",
            &i,
            "--output",
            "json",
            "--interval",
            INTERVAL,
        ])
        .args(["--listen", &target, "--remediate", "off"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let target_up = poll(
        "Prometheus scrapes the operator (target up)",
        PATIENCE,
        || {
            let t = http_json(&mon, prom, "/api/v1/targets")?;
            t["data"]["activeTargets"]
                .as_array()?
                .iter()
                .find(|x| x["labels"]["job"] == "provisioner_operate" && x["health"] == "up")
                .cloned()
        },
    );
    eprintln!("operator target: {target_up}");
    let alert = poll("OperateDriftPersists firing", PATIENCE, || {
        let a = http_json(&mon, prom, "/api/v1/alerts")?;
        a["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|x| x["labels"]["alertname"] == "OperateDriftPersists" && x["state"] == "firing")
            .cloned()
    });
    eprintln!("alert: {alert}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let code = poll("the operator to exit", PATIENCE, || {
        child.try_wait().unwrap().map(|s| s.code())
    });
    assert_eq!(code, Some(0));
    assert_eq!(
        ssh_ok(&inv, &agent1, &format!("cat {FLAG}")),
        "42secs\n",
        "--remediate off changed nothing"
    );
    // Put everything back: the drift, and the monitoring host's configuration.
    let out = provisioner(&["operate", "-i", &i, "--once", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "--once repaired the drift");
    assert_eq!(ssh_ok(&inv, &agent1, &format!("cat {FLAG}")), before);
    let out = provisioner(&["apply", "-i", &i, "--limit", &mon_host]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        common::ssh(&inv, &mon_host, "test -e /etc/prometheus/rules/operate.yml")
            .status
            .code()
            == Some(1),
        "without operator targets, no operator rules"
    );
}

#[test]
fn two_operators_elect_one_active_and_the_standby_takes_over_after_a_sigkill() {
    let _serial = serial();
    let inv = lab_inventory();
    let elect = ["--elect", "--elect-session-timeout", "6"];
    let a = Operator::start(&inv, &elect);
    let b = Operator::start(&inv, &elect);
    let is_active = |op: &Operator| {
        op.events()
            .iter()
            .rfind(|e| e["event"] == "active" || e["event"] == "standby")
            .is_some_and(|e| e["event"] == "active")
    };
    let ended = |op: &Operator| !of_kind(&op.events(), "cycle_ended").is_empty();
    poll(
        "one operator active, the other standing by",
        PATIENCE,
        || (ended(&a) && ended(&b) && is_active(&a) != is_active(&b)).then_some(()),
    );
    let (active, standby) = if is_active(&a) { (a, b) } else { (b, a) };
    assert_eq!(
        sample(&active.metrics(), "provisioner_operate_active"),
        Some(1.0)
    );
    assert_eq!(
        sample(&standby.metrics(), "provisioner_operate_active"),
        Some(0.0)
    );
    assert!(
        of_kind(&standby.events(), "planned").is_empty(),
        "a standby only observes: it never planned"
    );
    let mut active = active;
    active.signal("KILL");
    let killed = Instant::now();
    poll("the killed operator to exit", PATIENCE, || {
        active.child.try_wait().unwrap()
    });
    drop(active);
    standby.wait_for("the standby to become active", |ev| {
        of_kind(ev, "active").first().map(|_| ())
    });
    eprintln!(
        "takeover {:?} after the SIGKILL (session timeout 6 s, interval {INTERVAL})",
        killed.elapsed()
    );
    // The new active operator repairs new drift.
    let (agent1, _, _) = hosts(&inv);
    let before = ssh_ok(&inv, &agent1, &format!("cat {FLAG}"));
    ssh_ok(&inv, &agent1, &format!("echo 42secs > {FLAG}"));
    standby.wait_for("the new active operator to repair agent1", |ev| {
        of_kind(ev, "remediated")
            .iter()
            .find(|e| e["host"] == agent1.as_str() && e["ok"] == true)
            .map(|_| ())
    });
    assert_eq!(ssh_ok(&inv, &agent1, &format!("cat {FLAG}")), before);
    assert_eq!(
        sample(&standby.metrics(), "provisioner_operate_active"),
        Some(1.0)
    );
    let (code, _) = standby.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn zookeeper_drift_on_every_member_is_repaired_one_member_per_cycle_and_quorum_holds() {
    let _serial = serial();
    let inv = lab_inventory();
    let zk = group(&inv, "zookeeper");
    let inventory = common::inventory(&inv);
    let addrs: Vec<String> = zk
        .iter()
        .map(|h| {
            inventory
                .host_vars(h)
                .get("ansible_host")
                .and_then(Value::as_str)
                .unwrap_or(h)
                .to_string()
        })
        .collect();
    const ZOO_CFG: &str = "/etc/zookeeper/conf/zoo.cfg";
    let op = Operator::start(&inv, &[]);
    let before = op.wait_for("a converged cycle", converged_cycle);
    let cfg_before: Vec<String> = zk
        .iter()
        .map(|h| ssh_ok(&inv, h, &format!("cat {ZOO_CFG}")))
        .collect();
    // The sampler: every member asked in turn, about every 300 ms, until the repair is done.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = {
        let (stop, addrs) = (stop.clone(), addrs.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let s: Vec<Option<String>> = addrs.iter().map(|a| common::zk_mode(a)).collect();
                samples.push(s);
                std::thread::sleep(Duration::from_millis(300));
            }
            samples
        })
    };
    for h in &zk {
        ssh_ok(
            &inv,
            h,
            &format!("sed -i 's/^maxClientCnxns=.*/maxClientCnxns=77/' {ZOO_CFG}"),
        );
    }
    eprintln!("zoo.cfg drift on {zk:?} after cycle {before}");
    let events = op.wait_for("every member repaired, then a plan without drift", |ev| {
        let fixed: BTreeSet<&str> = of_kind(ev, "remediated")
            .iter()
            .filter(|e| e["ok"] == true && cycle(e) > before)
            .filter_map(|e| e["host"].as_str())
            .collect();
        let last_fix = of_kind(ev, "remediated").iter().map(|e| cycle(e)).max()?;
        let clean_after = of_kind(ev, "planned")
            .iter()
            .any(|e| cycle(e) > last_fix && e["drift"].as_object().is_some_and(|d| d.is_empty()));
        (zk.iter().all(|h| fixed.contains(h.as_str())) && clean_after).then(|| ev.to_vec())
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampling.join().unwrap();
    let (code, _) = op.stop();
    assert_eq!(code, Some(0));
    // One quorum member per cycle, each repaired once.
    let mut cycles = BTreeSet::new();
    for e in of_kind(&events, "remediated")
        .into_iter()
        .filter(|e| cycle(e) > before && zk.iter().any(|z| e["host"] == z.as_str()))
    {
        assert_eq!(e["ok"], true, "{e}");
        assert!(
            cycles.insert(cycle(e)),
            "two quorum members remediated in cycle {}: {e}",
            cycle(e)
        );
    }
    assert_eq!(cycles.len(), zk.len(), "one cycle per member: {cycles:?}");
    for e in of_kind(&events, "decided") {
        let members = e["remediate"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| zk.iter().any(|z| h.as_str() == Some(z)))
            .count();
        assert!(members <= 1, "one quorum member per cycle: {e}");
    }
    for (h, before) in zk.iter().zip(&cfg_before) {
        assert_eq!(&ssh_ok(&inv, h, &format!("cat {ZOO_CFG}")), before, "{h}");
    }
    assert!(samples.len() > 10, "too few samples: {}", samples.len());
    let below = common::assert_quorum_held(&samples, 300);
    eprintln!(
        "zookeeper repair: {} samples, {below} without a serving quorum",
        samples.len()
    );
    poll("the ensemble whole again", PATIENCE, || {
        addrs
            .iter()
            .all(|a| common::zk_mode(a).is_some())
            .then_some(())
    });
}

/// `stat -c '%U %a'` of `path` on `host` (`None` when it does not exist).
fn owner_mode(inv: &Path, host: &str, path: &str) -> Option<String> {
    let o = common::ssh(inv, host, &format!("stat -c '%U %a' '{path}'"));
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// `provisioner history ARGS -i INV --output json` run on `host` by the installed instance's
/// user, over its own history (its copy of the state dir).
fn installed_history(inv: &Path, host: &str, args: &str) -> Value {
    let out = ssh_ok(
        inv,
        host,
        &format!(
            "cd /var/lib/provisioner-operate && runuser -u provisioner -- env HOME=/var/lib/provisioner-operate /usr/local/bin/provisioner history {args} -i '{}' --output json",
            inv.display()
        ),
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn an_operator_installed_on_an_extra_host_runs_as_its_unit_repairs_drift_and_uninstalls_cleanly() {
    let _serial = serial();
    let inv = std::fs::canonicalize(lab_inventory()).unwrap();
    let i = inv.to_str().unwrap().to_string();
    let host = group(&inv, "extra")[0].clone();
    const UNIT: &str = "provisioner-operate";
    const UNIT_FILE: &str = "/etc/systemd/system/provisioner-operate.service";
    const KEY: &str = "/var/lib/provisioner-operate/key";
    let flags = [
        "--interval",
        INTERVAL,
        "--listen",
        "0.0.0.0:9466",
        "--remediate",
        "safe",
    ];
    let install = |yes: bool| {
        let mut a = vec!["operate", "-i", &i, "--install", &host];
        a.extend(flags);
        if yes {
            a.push("--yes");
        }
        provisioner(&a)
    };
    let uninstall = || provisioner(&["operate", "-i", &i, "--uninstall", &host, "--yes"]);
    let started = Instant::now();
    // Without --yes: the plan, and nothing on the host.
    let out = install(false);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(UNIT_FILE) && text.contains(KEY) && text.contains("--yes"),
        "{text}"
    );
    assert_eq!(
        owner_mode(&inv, &host, UNIT_FILE),
        None,
        "nothing installed"
    );
    let state = provisioner::state::state_dir(&inv);
    let ssh_key = common::var(&inv, &host, "ansible_ssh_private_key_file")
        .and_then(|v| v.as_str().map(str::to_string))
        .expect("the lab names its ssh key");
    let mut timings = Vec::new();
    let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A file of someone else's where the inventory would go: refused, nothing changed.
        // (Its directory may not exist there: CI's inventory lives under the clone.)
        ssh_ok(
            &inv,
            &host,
            &format!("test ! -e '{i}' && mkdir -p \"$(dirname '{i}')\" && touch '{i}'"),
        );
        let out = install(true);
        ssh_ok(&inv, &host, &format!("rm '{i}'"));
        assert_eq!(out.status.code(), Some(2), "refused");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains(&format!("{i} exists and belongs to root")),
            "{err}"
        );
        assert!(
            !common::ssh(&inv, &host, "getent passwd provisioner")
                .status
                .success(),
            "no user created"
        );
        assert_eq!(owner_mode(&inv, &host, KEY), None, "no key copied");
        let t = Instant::now();
        let out = install(true);
        timings.push(("install", t.elapsed()));
        assert_eq!(out.status.code(), Some(0), "--install --yes");
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        let addr = common::address(&inv, &host);
        assert!(
            said.contains(&format!("\"{addr}:9466\""))
                && said.contains("monitoring_operate_targets"),
            "names the target for Prometheus: {said}"
        );
        // The layout: the key, the inventory, the state dir, the ssh key, readable by the
        // provisioner user alone; no history or lock copied from here.
        assert_eq!(
            owner_mode(&inv, &host, KEY).as_deref(),
            Some("provisioner 600")
        );
        assert_eq!(
            owner_mode(&inv, &host, "/var/lib/provisioner-operate").as_deref(),
            Some("provisioner 700")
        );
        assert_eq!(
            owner_mode(&inv, &host, &i).as_deref(),
            Some("provisioner 600")
        );
        let st = state.display().to_string();
        assert_eq!(
            owner_mode(&inv, &host, &st).as_deref(),
            Some("provisioner 700")
        );
        assert_eq!(
            owner_mode(&inv, &host, &format!("{st}/secrets/.keycheck")).as_deref(),
            Some("provisioner 600")
        );
        assert_eq!(
            owner_mode(&inv, &host, &ssh_key).as_deref(),
            Some("provisioner 600")
        );
        assert_eq!(
            owner_mode(&inv, &host, "/usr/local/bin/provisioner").as_deref(),
            Some("root 755")
        );
        assert!(
            ssh_ok(&inv, &host, "getent passwd provisioner")
                .trim_end()
                .ends_with(":/usr/sbin/nologin"),
            "a system user without a login shell"
        );
        let here = Command::new("sh")
            .arg("-c")
            .arg("sha256sum < \"$0\"")
            .arg(provisioner::secrets::default_key_file())
            .output()
            .unwrap();
        assert_eq!(
            ssh_ok(&inv, &host, &format!("sha256sum < {KEY}")),
            String::from_utf8_lossy(&here.stdout),
            "the same key"
        );
        // The unit runs, and its /metrics answers from here.
        poll("the unit active", PATIENCE, || {
            common::ssh(&inv, &host, &format!("systemctl is-active --quiet {UNIT}"))
                .status
                .success()
                .then_some(())
        });
        let unit = ssh_ok(&inv, &host, &format!("cat {UNIT_FILE}"));
        assert!(unit.contains("\nUser=provisioner\n"), "{unit}");
        assert!(
            unit.contains(&format!("operate -i {i} --interval 10s --remediate safe")),
            "{unit}"
        );
        let t = Instant::now();
        let metrics = |name: &str| {
            http_get(&addr, 9466, "/metrics")
                .and_then(|(s, body)| (s == 200).then(|| sample(&body, name)).flatten())
        };
        poll(
            "a converged cycle of the installed operator",
            PATIENCE,
            || {
                metrics("provisioner_operate_cycles_total{result=\"converged\"}")
                    .filter(|n| *n >= 1.0)
            },
        );
        timings.push(("first converged cycle", t.elapsed()));
        assert_eq!(metrics("provisioner_operate_active"), Some(1.0));
        // Drift only it can repair: agent2's Docker cleanup cron.
        let (_, _, agent2) = hosts(&inv);
        let since = now_utc();
        ssh_ok(&inv, &agent2, &format!("rm {CRON}"));
        let t = Instant::now();
        poll(
            "the installed operator to put the cron back",
            PATIENCE,
            || {
                common::ssh(&inv, &agent2, &format!("test -s {CRON}"))
                    .status
                    .success()
                    .then_some(())
            },
        );
        timings.push(("drift repaired", t.elapsed()));
        let rows = installed_history(&inv, &host, &format!("drift --since {since}"));
        assert!(
            drift_rows(&rows, "operate remediate", &agent2)
                .iter()
                .any(|r| r.contains("cleanup cron")),
            "the installed instance's history has the repair: {rows}"
        );
        // The same inputs again: nothing changes, the unit is not restarted.
        let before = common::main_pid(&inv, &host, UNIT);
        let t = Instant::now();
        let out = install(true);
        timings.push(("second install", t.elapsed()));
        assert_eq!(out.status.code(), Some(0));
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            said.contains("already installed, nothing changed"),
            "{said}"
        );
        assert_eq!(common::main_pid(&inv, &host, UNIT), before, "not restarted");
        // Other flags: the unit is rewritten with them and restarted.
        let mut a = vec!["operate", "-i", &i, "--install", &host, "--yes"];
        a.extend([
            "--interval",
            "1h",
            "--remediate",
            "off",
            "--max-agents-per-cycle",
            "2",
        ]);
        let out = provisioner(&a);
        assert_eq!(out.status.code(), Some(0));
        let unit = ssh_ok(&inv, &host, &format!("cat {UNIT_FILE}"));
        assert!(
            unit.contains(&format!(
                "operate -i {i} --interval 3600s --remediate off --max-agents-per-cycle 2 --timeout 1800\n"
            )),
            "{unit}"
        );
        assert_ne!(common::main_pid(&inv, &host, UNIT), before, "restarted");
        poll("the unit active again", PATIENCE, || {
            common::ssh(&inv, &host, &format!("systemctl is-active --quiet {UNIT}"))
                .status
                .success()
                .then_some(())
        });
    }));
    let t = Instant::now();
    let out = uninstall();
    timings.push(("uninstall", t.elapsed()));
    if let Err(p) = body {
        std::panic::resume_unwind(p);
    }
    assert_eq!(out.status.code(), Some(0), "--uninstall --yes");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains(&format!("removed {KEY}\n")),
        "says what went: {said}"
    );
    assert!(
        !common::ssh(&inv, &host, &format!("systemctl is-active --quiet {UNIT}"))
            .status
            .success(),
        "the unit is stopped"
    );
    for gone in [
        UNIT_FILE,
        KEY,
        "/var/lib/provisioner-operate",
        "/usr/local/bin/provisioner",
    ] {
        assert_eq!(owner_mode(&inv, &host, gone), None, "{gone} removed");
    }
    assert_eq!(
        owner_mode(&inv, &host, &i),
        None,
        "the inventory copy removed"
    );
    assert_eq!(
        owner_mode(&inv, &host, &state.display().to_string()),
        None,
        "the state dir copy (secrets) removed"
    );
    assert_eq!(
        owner_mode(&inv, &host, &ssh_key),
        None,
        "the ssh key copy removed"
    );
    assert!(
        !common::ssh(&inv, &host, "getent passwd provisioner")
            .status
            .success(),
        "the user removed"
    );
    eprintln!(
        "operate --install on {host}: {timings:?}; test took {:?}",
        started.elapsed()
    );
}
