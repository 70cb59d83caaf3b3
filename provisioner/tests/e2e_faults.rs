//! Issue 15's fault suite: faults made to happen during a run on `provisioner lab` hosts.
//!
//! Each scenario checks that nothing is lost or half done, that the report names what
//! happened, and what the next run does. Every scenario runs on a scratch host it adds to the
//! shared lab (`lab add`, group extra) and removes at the end, so the stack's hosts never see
//! a fault. Run by `.ci/test` after it brings a lab up (`PROVISIONER_LAB_INVENTORY`), one test
//! at a time (`--test-threads=1`: the scratch hosts change the lab's inventory). The earlier
//! fault tests (signals, SIGKILL, full disk, two applies, a cut host, a changed host key) are in
//! e2e_engine.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::lab::{
    changed_flags, events_of, groups, lab, lab_inventory, private_inventory, provisioner, ssh_ok,
};
use common::ssh_input;

/// A host added to the shared lab for one scenario, removed when dropped.
struct ScratchHost {
    inv: PathBuf,
    name: String,
}

impl ScratchHost {
    fn add(inv: &Path, name: &str) -> ScratchHost {
        // Leftovers of an interrupted run.
        let _ = remove(inv, name);
        let t = Instant::now();
        lab(inv, &["add", name, "--group", "extra"]);
        eprintln!("lab add {name}: {:.1} s", t.elapsed().as_secs_f64());
        ScratchHost {
            inv: inv.to_path_buf(),
            name: name.to_string(),
        }
    }
}

impl Drop for ScratchHost {
    fn drop(&mut self) {
        let out = remove(&self.inv, &self.name);
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("lab remove {}: {out:?}", self.name);
        }
    }
}

/// `lab remove HOST`, whatever it answers (a drop must not panic).
fn remove(inv: &Path, name: &str) -> std::io::Result<std::process::Output> {
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["lab", "remove", name, "--name", &common::lab::lab_name(inv)])
        .output()
}

/// An `apply` running in the background; its JSON events are read as they come.
struct Running {
    child: std::process::Child,
    events: std::sync::mpsc::Receiver<Value>,
    reader: std::thread::JoinHandle<Vec<Value>>,
}

fn spawn_apply(inv: &Path, pb: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["apply", "-i", inv.to_str().unwrap(), pb.to_str().unwrap()])
        .args(extra)
        .args(["--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start provisioner");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v.clone());
                all.push(v);
            }
        }
        all
    });
    Running {
        child,
        events: rx,
        reader,
    }
}

impl Running {
    /// Wait for the first event that `pred` accepts (the run's own pace decides when).
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        loop {
            match self.events.recv_timeout(Duration::from_secs(300)) {
                Ok(e) if pred(&e) => return,
                Ok(_) => {}
                Err(e) => panic!("no event {what}: {e}"),
            }
        }
    }

    fn finish(mut self) -> (Option<i32>, Vec<Value>) {
        let code = self.child.wait().unwrap().code();
        (code, self.reader.join().unwrap())
    }
}

fn apply(inv: &Path, pb: &Path, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let mut args = vec!["apply", "-i", inv.to_str().unwrap(), pb.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = provisioner(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), events_of(&out.stdout), text)
}

fn status_of(events: &[Value], host: &str, task: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "task_finished" && e["host"] == host && e["task"] == task)
        .map(|e| e["status"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_host_powered_off_mid_apply_is_unreachable_the_others_finish_and_the_next_runs_converge() {
    let inv = lab_inventory();
    let victim = ScratchHost::add(&inv, "fault-power");
    let other = groups(&inv)["masters"][0].clone();
    const DIR: &str = "/var/tmp/provisioner-fault-power";
    ssh_ok(&inv, &other, &format!("rm -rf {DIR}"));
    let tmp = tempfile::tempdir().unwrap();
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| kh);
    let pb = tmp.path().join("power.yml");
    std::fs::write(
        &pb,
        format!(
            "- hosts: {v},{other}\n  gather_facts: false\n  become: true\n  tasks:\n\
             \x20   - name: dir\n      file: path={DIR} state=directory\n\
             \x20   - name: before\n      copy: dest={DIR}/before content=one\n\
             \x20   - name: slow\n      command: sleep 6\n      changed_when: false\n\
             \x20   - name: after\n      copy: dest={DIR}/after content=two\n\
             \x20   - name: last\n      copy: dest={DIR}/last content=three\n",
            v = victim.name
        ),
    )
    .unwrap();

    let run = spawn_apply(&inv2, &pb, &[]);
    run.wait_for("slow starts on the victim", |e| {
        e["event"] == "task_started" && e["host"] == victim.name.as_str() && e["task"] == "slow"
    });
    let t = Instant::now();
    lab(&inv, &["stop", &victim.name]);
    let (code, ev) = run.finish();
    eprintln!(
        "powered off during `slow`; the run ended {:.1} s after the stop began",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(3), "exit 3: a host was unreachable");
    let slow = status_of(&ev, &victim.name, "slow");
    assert_eq!(slow, ["unreachable"], "the victim's running task: {slow:?}");
    for task in ["after", "last"] {
        assert!(
            status_of(&ev, &victim.name, task).is_empty(),
            "nothing ran on the victim after it went: {task}"
        );
    }
    assert_eq!(
        changed_flags(&ev, &other),
        [
            ("dir".to_string(), true),
            ("before".to_string(), true),
            ("slow".to_string(), false),
            ("after".to_string(), true),
            ("last".to_string(), true)
        ],
        "the other host finished every task"
    );
    let stopped: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "host_stopped")
        .map(|e| {
            (
                e["host"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(stopped, [(victim.name.as_str(), "unreachable")]);

    // Powered on again: the next run completes what was left, the one after changes nothing.
    lab(&inv, &["start", &victim.name]);
    let (code, ev, text) = apply(&inv2, &pb, &["--output", "json"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        changed_flags(&ev, &victim.name),
        [
            ("dir".to_string(), false),
            ("before".to_string(), false),
            ("slow".to_string(), false),
            ("after".to_string(), true),
            ("last".to_string(), true)
        ],
        "the second run finished the victim's play from where the power went"
    );
    let (code, ev, text) = apply(&inv2, &pb, &["--output", "json"]);
    assert_eq!(code, Some(0), "{text}");
    for h in [victim.name.as_str(), other.as_str()] {
        let changed: Vec<_> = changed_flags(&ev, h).into_iter().filter(|c| c.1).collect();
        assert!(
            changed.is_empty(),
            "{h}: the third run is a no-op: {changed:?}"
        );
    }
    ssh_ok(&inv, &other, &format!("rm -rf {DIR}"));
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_network_cut_during_a_50_mb_copy_leaves_the_old_file_or_the_new_and_no_temp_file() {
    let inv = lab_inventory();
    let victim = ScratchHost::add(&inv, "fault-copy");
    let v = victim.name.clone();
    const DIR: &str = "/var/tmp/provisioner-fault-copy";
    let tmp = tempfile::tempdir().unwrap();
    // Keepalives every second, three unanswered end the session: the cut is noticed quickly.
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| kh);
    let text = std::fs::read_to_string(&inv2).unwrap().replace(
        "StrictHostKeyChecking=yes",
        "StrictHostKeyChecking=yes -o ServerAliveInterval=1 -o ServerAliveCountMax=3",
    );
    std::fs::write(&inv2, text).unwrap();
    let (old, new) = (tmp.path().join("old.bin"), tmp.path().join("new.bin"));
    for f in [&old, &new] {
        let ok = Command::new("dd")
            .args(["if=/dev/urandom", &format!("of={}", f.display())])
            .args(["bs=1M", "count=50", "status=none"])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let pb = tmp.path().join("copy.yml");
    std::fs::write(
        &pb,
        format!(
            "- hosts: {v}\n  gather_facts: false\n  become: true\n  tasks:\n\
             \x20   - file: path={DIR} state=directory\n\
             \x20   - name: big\n      copy: src={{{{ src }}}} dest={DIR}/big.bin\n"
        ),
    )
    .unwrap();
    let src = |f: &Path| format!("src={}", f.display());
    let (code, _, text) = apply(&inv2, &pb, &["-e", &src(&old)]);
    assert_eq!(code, Some(0), "{text}");
    let remote_sha = || {
        ssh_ok(&inv, &v, &format!("sha256sum {DIR}/big.bin"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let temps = || {
        ssh_ok(
            &inv,
            &v,
            &format!("find {DIR} -name '.big.bin.provisioner.*' -printf '%s\\n'"),
        )
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .collect::<Vec<_>>()
    };
    let (old_sha, new_sha) = (sha256_of(&old), sha256_of(&new));
    assert_eq!(remote_sha(), old_sha);

    // 40 Mbit/s: the 50 MB take about 10 s, and the cut comes once 10 MB have arrived.
    lab(&inv, &["throttle", &v, "--rate", "40mbit"]);
    let run = spawn_apply(&inv2, &pb, &["-e", &src(&new)]);
    common::poll(
        "the new content is arriving",
        Duration::from_secs(120),
        || temps().iter().any(|&s| s > 10 << 20).then_some(()),
    );
    lab(&inv, &["cut", &v]);
    let cut_at = Instant::now();
    let (code, ev) = run.finish();
    eprintln!(
        "the run ended {:.1} s after the cut",
        cut_at.elapsed().as_secs_f64()
    );
    lab(&inv, &["heal", &v]);
    assert_eq!(code, Some(3), "the host was lost mid-task: exit 3");
    assert_eq!(status_of(&ev, &v, "big"), ["unreachable"]);
    let msg = ev
        .iter()
        .find(|e| e["event"] == "task_finished" && e["task"] == "big")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("connection lost"),
        "names what happened: {msg}"
    );
    // The writer on the host may wait for the rest for hours (it never learns the connection
    // is gone); whatever it does, it cannot put a part in place.
    let after_cut = remote_sha();
    assert!(
        after_cut == old_sha || after_cut == new_sha,
        "the destination is the old file or the new one, never a part"
    );
    eprintln!(
        "after the cut the destination holds the {} content",
        if after_cut == old_sha { "old" } else { "new" }
    );
    let left = temps();
    eprintln!("temp files of the cut run before the next run: {left:?} (bytes)");
    let (code, _, text) = apply(&inv2, &pb, &["-e", &src(&new)]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(remote_sha(), new_sha);
    assert!(temps().is_empty(), "no temp file after the next run");
}

#[test]
fn a_wrong_become_password_fails_once_per_host_is_never_retried_and_never_printed() {
    let inv = lab_inventory();
    let victim = ScratchHost::add(&inv, "fault-sudo");
    let v = victim.name.clone();
    let right = format!("right-{:016x}", rand::random::<u64>());
    let wrong = format!("wrong-{:016x}", rand::random::<u64>());
    // A user whose sudo asks for a password (the lab's own user needs none). Passwords go on
    // stdin: sudo logs every command line.
    ssh_ok(
        &inv,
        &v,
        "useradd -m -s /bin/sh faultpw && mkdir -p ~faultpw/.ssh && \
         cp ~ops/.ssh/authorized_keys ~faultpw/.ssh/ && chown -R faultpw: ~faultpw/.ssh && \
         echo 'faultpw ALL=(ALL:ALL) ALL' > /etc/sudoers.d/faultpw && chmod 0440 /etc/sudoers.d/faultpw",
    );
    let set = ssh_input(
        &inv,
        &v,
        "chpasswd",
        format!("faultpw:{right}\n").as_bytes(),
    );
    assert!(set.status.success(), "{set:?}");
    let tmp = tempfile::tempdir().unwrap();
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| kh);
    let host_vars = tmp.path().join("host_vars");
    std::fs::create_dir_all(&host_vars).unwrap();
    let set_password = |pw: &str| {
        std::fs::write(
            host_vars.join(format!("{v}.yml")),
            format!("ansible_user: faultpw\nansible_become_password: \"{pw}\"\n"),
        )
        .unwrap();
    };
    let pb = tmp.path().join("become.yml");
    std::fs::write(
        &pb,
        format!(
            "- hosts: {v}\n  gather_facts: false\n  become: true\n  tasks:\n\
             \x20   - name: first\n      command: id -u\n      changed_when: false\n      ignore_errors: true\n\
             \x20   - name: second\n      copy: dest=/var/tmp/fault-become content=x\n\
             \x20   - name: third\n      command: id -u\n      changed_when: false\n"
        ),
    )
    .unwrap();
    // The pattern cannot match its own command line, which sudo logs too.
    let attempts = || {
        ssh_ok(
            &inv,
            &v,
            "journalctl -q --no-pager _COMM=sudo | grep -cE 'faultpw : [0-9]+ incorrect password attempt' || true",
        )
        .trim()
        .parse::<u32>()
        .unwrap()
    };
    let before = attempts();

    set_password(&wrong);
    let mut outputs = Vec::new();
    let (code, ev, text) = apply(&inv2, &pb, &["--output", "json", "-v"]);
    outputs.push(text.clone());
    assert_eq!(code, Some(1), "a failed host: exit 1\n{text}");
    let failed: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "task_finished" && e["host"] == v.as_str())
        .filter(|e| e["status"] == "failed")
        .collect();
    assert!(!failed.is_empty(), "{text}");
    for e in &failed {
        assert!(
            e.to_string().contains("incorrect sudo password"),
            "a clear error: {e}"
        );
    }
    assert!(
        status_of(&ev, &v, "third").is_empty(),
        "the host stopped at its first failure that was not ignored"
    );
    let (code, _, text) = apply(&inv2, &pb, &["-v"]);
    outputs.push(text.clone());
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("incorrect sudo password"), "{text}");
    let tries = attempts() - before;
    assert_eq!(
        tries,
        2,
        "one refused password per host and run, never retried within a run (two runs):\n{}",
        ssh_ok(
            &inv,
            &v,
            "journalctl -q --no-pager _COMM=sudo | grep -E 'faultpw : [0-9]+ incorrect' || true"
        )
    );

    // The same setup with the right password works, so the failure was the password's.
    set_password(&right);
    let (code, _, text) = apply(&inv2, &pb, &["-v", "-D"]);
    outputs.push(text);
    assert_eq!(code, Some(0), "{}", outputs.last().unwrap());
    for (i, o) in outputs.iter().enumerate() {
        for pw in [&right, &wrong] {
            assert!(
                !o.contains(pw.as_str()),
                "run {i} printed a become password"
            );
        }
    }
    let found = ssh_input(
        &inv,
        &v,
        "grep -rlF -f /dev/stdin /var/log /tmp /var/tmp /etc /home 2>/dev/null || true",
        format!("{right}\n{wrong}\n").as_bytes(),
    );
    assert!(
        String::from_utf8_lossy(&found.stdout).trim().is_empty(),
        "a password reached the host's files: {found:?}"
    );
}

/// The lab bridge's address as the hosts see it (their gateway; nothing listens on its port 9).
fn gateway(inv: &Path, host: &str) -> String {
    let a = common::lab::host(inv, host).address;
    format!("{}.1", a.rsplit_once('.').unwrap().0)
}

#[test]
fn the_apt_proxy_down_gives_bounded_retries_then_an_error_naming_the_proxy() {
    let inv = lab_inventory();
    let victim = ScratchHost::add(&inv, "fault-apt");
    let v = victim.name.clone();
    // A proxy that is down: nothing listens on port 9 of the gateway.
    let dead = format!("http://{}:9", gateway(&inv, &v));
    ssh_ok(
        &inv,
        &v,
        &format!(
            "echo 'Acquire::http::Proxy \"{dead}\";' > /etc/apt/apt.conf.d/99provisioner-fault"
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| kh);
    let pb = tmp.path().join("apt.yml");
    std::fs::write(
        &pb,
        format!(
            "- hosts: {v}\n  gather_facts: false\n  become: true\n  tasks:\n\
             \x20   - name: pkg\n      apt: name=sl update_cache=true update_cache_retries=3 update_cache_retry_max_delay=1\n"
        ),
    )
    .unwrap();
    let (code, ev, text) = apply(&inv2, &pb, &["--output", "json"]);
    assert_eq!(code, Some(1), "{text}");
    let msg = ev
        .iter()
        .find(|e| e["event"] == "task_finished" && e["task"] == "pkg")
        .and_then(|e| e["msg"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(&format!(
            "apt-get update failed 3 time(s), through the apt proxy {dead} (is it up?)"
        )),
        "bounded retries, then the proxy named: {msg}"
    );
    assert!(msg.contains("Could not connect"), "apt's own reason: {msg}");
    assert_eq!(
        ssh_ok(
            &inv,
            &v,
            "dpkg-query -W -f '${Status}' sl 2>/dev/null || true"
        )
        .trim(),
        "",
        "nothing was installed"
    );
    // The proxy back: the same task converges.
    ssh_ok(&inv, &v, "rm /etc/apt/apt.conf.d/99provisioner-fault");
    let (code, _, text) = apply(&inv2, &pb, &[]);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_clock_ten_minutes_ahead_is_named_with_its_offset_by_preflight() {
    let inv = lab_inventory();
    let victim = ScratchHost::add(&inv, "fault-clock");
    let v = victim.name.clone();
    let other = groups(&inv)["masters"][0].clone();
    // The hosts of a lab share the kernel's clock, which no namespace can move; libfaketime
    // preloaded host-wide breaks sshd. So the host's `date` (what preflight reads) is made to
    // report its clock 600 s ahead: the check is what is tested, the skew is staged.
    ssh_ok(
        &inv,
        &v,
        "printf '#!/bin/sh\\nexec /usr/bin/date -d @$(( $(/usr/bin/date +%%s) + 600 )) \"$@\"\\n' \
         > /usr/local/bin/date && chmod 755 /usr/local/bin/date",
    );
    let remote: i64 = ssh_ok(&inv, &v, "date +%s").trim().parse().unwrap();
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        remote - local > 500,
        "the host's clock is ahead: {remote} vs {local}"
    );

    let out = provisioner(&[
        "plan",
        "-i",
        inv.to_str().unwrap(),
        "--limit",
        &format!("{v},{other}"),
        "--tags",
        "preflight",
        // A bare lab (CI_LAB_STACK=0) has no Mesos-DNS binary, which validation asks for;
        // preflight never reads it, and a plan writes nothing.
        "-e",
        &format!(
            "mesos_dns_local_artifact={}",
            env!("CARGO_BIN_EXE_provisioner")
        ),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning fails nothing: {text}"
    );
    let warning = text
        .lines()
        .find(|l| l.contains("WARNING: the clock of"))
        .unwrap_or_else(|| panic!("no clock warning: {text}"));
    assert!(
        warning.contains(&format!("the clock of {v} is ")),
        "{warning}"
    );
    let offset: i64 = warning
        .split(" is ")
        .nth(1)
        .and_then(|r| r.split(" s ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("an offset in seconds: {warning}"));
    assert!(
        (590..=620).contains(&offset),
        "the offset is the skew (600 s): {offset}"
    );
    assert!(warning.contains("ahead of the control node"), "{warning}");
    assert_eq!(
        text.matches("WARNING: the clock of").count(),
        1,
        "only the skewed host is named"
    );
    ssh_ok(&inv, &v, "rm -f /usr/local/bin/date");
}

#[test]
fn a_port_a_foreign_process_listens_on_is_named_by_preflight() {
    let inv = lab_inventory();
    let victim = ScratchHost::add(&inv, "fault-port");
    let v = victim.name.clone();
    // Preflight reads every listener in one `ss` listing and names each foreign one on a port
    // the host will serve: dnsmasq's, moved here to a free port a stranger then takes.
    let port = "5354";
    let preflight = || {
        provisioner(&[
            "plan",
            "-i",
            inv.to_str().unwrap(),
            "--limit",
            &v,
            "--tags",
            "preflight",
            "-e",
            &format!("dnsmasq_port={port}"),
            "-e",
            &format!(
                "mesos_dns_local_artifact={}",
                env!("CARGO_BIN_EXE_provisioner")
            ),
        ])
    };
    ssh_ok(
        &inv,
        &v,
        &format!(
            "setsid python3 -m http.server {port} --bind 0.0.0.0 >/dev/null 2>&1 < /dev/null & \
             for i in $(seq 50); do ss -Hltn 'sport = :{port}' | grep -q . && exit 0; sleep 0.1; done; exit 1"
        ),
    );
    let out = preflight();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(
        out.status.code(),
        Some(0),
        "a taken port fails preflight: {text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains(&format!("port {port} (dnsmasq) is taken")))
        .unwrap_or_else(|| panic!("the taken port is named: {text}"));
    assert!(line.contains("python3"), "with who holds it: {line}");
    // Our own listeners are not conflicts: sshd's port is not one the host serves, and
    // dnsmasq's own port (53, where it listens) passes.
    ssh_ok(&inv, &v, &format!("pkill -f '[h]ttp.server {port}'"));
    let out = preflight();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("is taken"), "{text}");
}
