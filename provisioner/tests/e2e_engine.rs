//! End-to-end tests of the engine on `provisioner lab` hosts.
//!
//! Run by `.ci/test` after it brings a lab up: `PROVISIONER_LAB_INVENTORY` names the lab's
//! inventory. Without it these tests fail (they are never skipped).
//!
//! The differential test runs the same role through `ansible-playbook` on one agent and through
//! us on the other, and compares the resulting files and the per-task `changed` flags.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::lab::{
    changed_flags, events, groups, host, lab, lab_inventory, private_inventory, provisioner, ssh,
    ssh_ok,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

const MANAGED: &str = "/etc/provisioner-e2e";

/// Undo everything the e2e role does, so each run starts from a fresh host.
const RESET: &str = "rm -rf /etc/provisioner-e2e /etc/sysctl.d/90-e2e.conf; \
    crontab -r -u e2eu 2>/dev/null; userdel -r e2eu 2>/dev/null; groupdel e2eg 2>/dev/null; \
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q tree >/dev/null 2>&1; true";

fn snapshot(inv: &Path, name: &str) -> String {
    // Mode, owner, group and content hash of every managed file (the host's own name replaced,
    // since content that names the host differs by design), minus the handler's timestamp.
    ssh_ok(
        inv,
        name,
        &format!(
            "cd {MANAGED} && for f in $(ls -A | grep -v handler-ran | sort); do \
             printf '%s %s %s\\n' \"$f\" \"$(stat -c '%a %U %G %F' \"$f\")\" \
             \"$(sed 's/{name}/HOST/g' \"$f\" 2>/dev/null | sha1sum | cut -c1-40)\"; done; \
             getent passwd e2eu; getent group e2eg; stat -c '%a %U %G' /home/e2eu; \
             crontab -l -u e2eu; cat /etc/sysctl.d/90-e2e.conf; stat -c '%a' /etc/sysctl.d/90-e2e.conf; \
             dpkg-query -W -f '${{Status}}\\n' tree; systemctl is-enabled cron; systemctl is-active cron"
        ),
    )
}

/// A task name without its `role : ` prefix.
fn bare(name: &str) -> String {
    name.rsplit(" : ").next().unwrap_or(name).to_string()
}

#[test]
fn apply_converges_then_plan_is_empty_and_plan_changes_nothing() {
    let inv = lab_inventory();
    let pb = fixtures().join("e2e/site.yml");
    let (inv_s, pb_s) = (inv.to_str().unwrap(), pb.to_str().unwrap());
    let masters = groups(&inv)["masters"].clone();
    let limit = masters.join(",");
    ssh_ok(&inv, &masters[0], RESET);

    let first = provisioner(&["apply", "-i", inv_s, pb_s, "--limit", &limit]);
    assert_eq!(first.status.code(), Some(0), "first apply succeeds");

    let again = provisioner(&[
        "plan",
        "-i",
        inv_s,
        pb_s,
        "--limit",
        &limit,
        "--exit-code",
        "--output",
        "json",
    ]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "a converged cluster has nothing to change"
    );
    let changed: Vec<_> = events(&again)
        .into_iter()
        .filter(|e| e["event"] == "task_finished" && e["status"] == "changed")
        .collect();
    assert!(changed.is_empty(), "changes after apply: {changed:?}");

    // Drift on one host: plan reports it, exits 4, and leaves the host as it is.
    ssh_ok(
        &inv,
        &masters[0],
        &format!("echo drift > {MANAGED}/app.conf && chmod 0600 {MANAGED}/motd"),
    );
    let drift = provisioner(&[
        "plan",
        "-i",
        inv_s,
        pb_s,
        "--limit",
        &limit,
        "--exit-code",
        "--diff",
    ]);
    assert_eq!(drift.status.code(), Some(4));
    let text = String::from_utf8_lossy(&drift.stdout);
    assert!(
        text.contains("-drift"),
        "the diff shows the drifted line:\n{text}"
    );
    assert_eq!(
        ssh_ok(&inv, &masters[0], &format!("cat {MANAGED}/app.conf")),
        "drift\n",
        "plan did not touch app.conf"
    );
    assert_eq!(
        ssh_ok(&inv, &masters[0], &format!("stat -c %a {MANAGED}/motd")),
        "600\n",
        "plan did not touch motd's mode"
    );

    // Apply repairs it, and the handler fires because config changed.
    ssh_ok(&inv, &masters[0], &format!("rm -f {MANAGED}/handler-ran"));
    let repair = provisioner(&["apply", "-i", inv_s, pb_s, "--limit", &masters[0]]);
    assert_eq!(repair.status.code(), Some(0));
    ssh_ok(
        &inv,
        &masters[0],
        &format!("test -e {MANAGED}/motd && test -e {MANAGED}/handler-ran"),
    );
}

#[test]
fn invalid_playbook_changes_nothing_on_any_host() {
    let inv = lab_inventory();
    let pb = fixtures().join("e2e-invalid/site.yml");
    for h in groups(&inv)["all"].iter() {
        ssh_ok(&inv, h, "rm -f /tmp/provisioner-e2e-invalid");
    }
    let out = provisioner(&["apply", "-i", inv.to_str().unwrap(), pb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "bad input exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("site.yml:") && err.contains("`file` has no parameter `stat`"),
        "{err}"
    );
    for h in groups(&inv)["all"].iter() {
        assert_eq!(
            ssh(&inv, h, "test -e /tmp/provisioner-e2e-invalid")
                .status
                .code(),
            Some(1),
            "{h} was touched"
        );
    }
}

/// A copy of the lab inventory with its own known_hosts, for tests that tamper with keys or hosts.

#[test]
fn changed_host_key_is_refused_and_other_hosts_continue() {
    let inv = lab_inventory();
    let tmp = tempfile::tempdir().unwrap();
    let g = groups(&inv);
    let (victim, other) = (g["masters"][0].clone(), g["masters"][1].clone());
    let (va, oa) = (host(&inv, &victim).address, host(&inv, &other).address);
    // Give the victim's address the other host's keys.
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| {
        let mut out = String::new();
        for line in kh.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.split(',').any(|n| n == va || n == victim) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if first.split(',').any(|n| n == oa) {
                out.push_str(&line.replacen(first, &va, 1));
                out.push('\n');
            }
        }
        out
    });
    let pb = fixtures().join("e2e/site.yml");
    let out = provisioner(&[
        "apply",
        "-i",
        inv2.to_str().unwrap(),
        pb.to_str().unwrap(),
        "--limit",
        &format!("{victim},{other}"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a refused host is unreachable (exit 3)"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("fatal: [{victim}]: UNREACHABLE!")),
        "{text}"
    );
    assert!(
        text.contains("host key changed") && text.matches("SHA256:").count() >= 2,
        "names both fingerprints:\n{text}"
    );
    assert!(
        text.contains(&format!("{other} ")) && !text.contains(&format!("fatal: [{other}]")),
        "{text}"
    );
}

#[test]
fn unreachable_host_does_not_stop_the_others() {
    let inv = lab_inventory();
    let tmp = tempfile::tempdir().unwrap();
    let g = groups(&inv);
    let ok = g["masters"][0].clone();
    let addr = host(&inv, &ok).address;
    // An address on the lab's subnet where nothing answers.
    let ghost_addr = format!("{}.250", addr.rsplit_once('.').unwrap().0);
    let extra = format!(
        "    ghost:\n      hosts:\n        ghost1:\n          ansible_host: {ghost_addr}\n"
    );
    let text = std::fs::read_to_string(&inv).unwrap();
    assert!(
        text.contains("  children:\n"),
        "lab inventory has groups under all.children"
    );
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| kh);
    let patched = std::fs::read_to_string(&inv2).unwrap().replacen(
        "  children:\n",
        &format!("  children:\n{extra}"),
        1,
    );
    std::fs::write(&inv2, patched).unwrap();
    let pb = fixtures().join("e2e/site.yml");
    let out = provisioner(&[
        "apply",
        "-i",
        inv2.to_str().unwrap(),
        pb.to_str().unwrap(),
        "--limit",
        &format!("{ok},ghost1"),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let ev = events(&out);
    assert!(ev
        .iter()
        .any(|e| e["host"] == "ghost1" && e["status"] == "unreachable"));
    let flags = changed_flags(&ev, &ok);
    assert!(flags.len() >= 18, "{ok} ran every task: {flags:?}");
}

#[test]
fn sudo_failure_is_a_clear_error() {
    let inv = lab_inventory();
    let pb = fixtures().join("e2e/site.yml");
    let m = groups(&inv)["masters"][0].clone();
    let out = provisioner(&[
        "apply",
        "-i",
        inv.to_str().unwrap(),
        pb.to_str().unwrap(),
        "--limit",
        &m,
        "-e",
        "ansible_become_user=nosuchuser",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("become (sudo) failed") && text.contains("nosuchuser"),
        "{text}"
    );
}

/// Run `fixture` with ansible-playbook on the first agent and with provisioner on the second,
/// twice each, after `reset`; the changed flags of both runs and the `snapshot` of both hosts
/// must be equal.
fn differential(fixture: &str, reset: &str, snapshot: &dyn Fn(&Path, &str) -> String) {
    let inv = lab_inventory();
    let g = groups(&inv);
    let (theirs, ours) = (g["agents"][0].clone(), g["agents"][1].clone());
    for h in [&theirs, &ours] {
        ssh_ok(&inv, h, reset);
    }
    let pb = fixtures().join(fixture).join("site.yml");
    let run_ansible = || {
        let out = Command::new("ansible-playbook")
            .args([
                "-i",
                inv.to_str().unwrap(),
                pb.to_str().unwrap(),
                "--limit",
                &theirs,
            ])
            .env("ANSIBLE_STDOUT_CALLBACK", "json")
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .output()
            .expect("ansible-playbook runs");
        assert!(
            out.status.success(),
            "ansible-playbook failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json callback output");
        let mut flags = Vec::new();
        for play in v["plays"].as_array().unwrap() {
            for t in play["tasks"].as_array().unwrap() {
                let name = t["task"]["name"].as_str().unwrap_or("").to_string();
                if name == "Gathering Facts" || name.is_empty() {
                    continue;
                }
                let r = &t["hosts"][&theirs];
                if r.is_null() || r.get("skipped") == Some(&Value::Bool(true)) {
                    continue;
                }
                flags.push((bare(&name), r["changed"] == Value::Bool(true)));
            }
        }
        flags
    };
    let run_ours = || {
        let out = provisioner(&[
            "apply",
            "-i",
            inv.to_str().unwrap(),
            pb.to_str().unwrap(),
            "--limit",
            &ours,
            "--output",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0));
        // Skipped tasks are left out on both sides.
        let ev: Vec<Value> = events(&out)
            .into_iter()
            .filter(|e| e["status"] != "skipped")
            .collect();
        changed_flags(&ev, &ours)
            .into_iter()
            .map(|(t, c)| (bare(&t), c))
            .collect::<Vec<_>>()
    };
    let (a1, o1) = (run_ansible(), run_ours());
    assert_eq!(o1, a1, "changed flags on the first run");
    let (a2, o2) = (run_ansible(), run_ours());
    assert_eq!(o2, a2, "changed flags on the second run");
    let (sa, so) = (snapshot(&inv, &theirs), snapshot(&inv, &ours));
    assert_eq!(so, sa, "resulting state matches");
}

#[test]
fn differential_against_ansible_playbook() {
    differential("e2e", RESET, &snapshot);
}

#[test]
fn differential_keywords_and_more_modules() {
    let reset = "systemctl disable --now provisioner-kw 2>/dev/null; \
        rm -rf /etc/provisioner-kw /etc/systemd/system/provisioner-kw.service \
        /etc/apt/sources.list.d/provisioner-kw.list; systemctl daemon-reload; \
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -q tree >/dev/null 2>&1; true";
    differential("e2e-keywords", reset, &|inv, name| {
        ssh_ok(
            inv,
            name,
            &format!(
                "cd /etc/provisioner-kw && stat -c '%a %U %G' report.html && \
                 for f in $(find . -type f ! -name report.html | sort); do \
                 printf '%s %s %s\\n' \"$f\" \"$(stat -c '%a %U %G' \"$f\")\" \
                 \"$(sed 's/{name}/HOST/g' \"$f\" | sha1sum | cut -c1-40)\"; done; \
                 cat /etc/apt/sources.list.d/provisioner-kw.list; stat -c '%a' /etc/apt/sources.list.d/provisioner-kw.list; \
                 systemctl is-enabled provisioner-kw; systemctl is-active provisioner-kw; \
                 dpkg-query -W -f '${{Status}}\\n' tree"
            ),
        )
    });
    // What the fixture installed (a service, a package, an apt source) is not the stack's:
    // later suites find the agents as the stack left them.
    let inv = lab_inventory();
    for h in &groups(&inv)["agents"][..2] {
        ssh_ok(&inv, h, reset);
    }
}

#[test]
fn two_applies_at_once_one_runs_and_the_other_refuses_with_the_lock_message() {
    let inv = lab_inventory();
    let tmp = tempfile::tempdir().unwrap();
    // A copy of the inventory: its state dir (and so its lock) is this test's own.
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| kh);
    let target = groups(&inv)["masters"][0].clone();
    const MARK: &str = "/tmp/provisioner-e2e-lock";
    ssh_ok(&inv, &target, &format!("rm -f {MARK}"));
    let pb = tmp.path().join("slow.yml");
    std::fs::write(
        &pb,
        format!(
            "- hosts: {target}\n  gather_facts: false\n  tasks:\n    - command: sleep 8\n    - copy: dest={MARK} content={{{{ tag }}}}\n"
        ),
    )
    .unwrap();
    let start = |tag: &str| {
        Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(["apply", "-i", inv2.to_str().unwrap(), pb.to_str().unwrap()])
            .args(["-e", &format!("tag={tag}"), "--output", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start provisioner")
    };
    let (mut a, mut b) = (start("A"), start("B"));
    // Which one ends first, and whether the other still runs then: the refused run must end
    // while the winner is still in its 8 s task (an order, not a duration).
    let first_done = loop {
        let (da, db) = (a.try_wait().unwrap(), b.try_wait().unwrap());
        match (da, db) {
            (Some(_), None) => break "A",
            (None, Some(_)) => break "B",
            (Some(_), Some(_)) => break "both",
            (None, None) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for (name, o) in [("A", &oa), ("B", &ob)] {
        eprintln!(
            "--- {name}: exit {:?}\n{}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let codes = (oa.status.code(), ob.status.code());
    let (winner, loser, loser_name) = match codes {
        (Some(0), Some(5)) => ("A", &ob, "B"),
        (Some(5), Some(0)) => ("B", &oa, "A"),
        other => panic!("one apply runs (0) and the other refuses (5): got {other:?}"),
    };
    assert_eq!(
        first_done, loser_name,
        "the refused run ended at once, while the winner still ran its 8 s task"
    );
    let msg = String::from_utf8_lossy(&loser.stderr);
    assert!(
        msg.contains("another run holds the lock") && msg.contains("`apply`"),
        "{msg}"
    );
    assert!(
        msg.contains(" pid ") && msg.contains(" on ") && msg.contains("started 20"),
        "names the holder's pid, machine and start time: {msg}"
    );
    assert!(
        events(loser).is_empty(),
        "the refused run reported no event: it ran nothing"
    );
    assert_eq!(
        ssh_ok(&inv, &target, &format!("cat {MARK}")),
        winner,
        "only the winner changed the host"
    );
    ssh_ok(&inv, &target, &format!("rm -f {MARK}"));
}

#[test]
fn a_cut_host_does_not_delay_the_other_hosts_first_task() {
    let inv = lab_inventory();
    let g = groups(&inv);
    // The victim first in the limit: before the fix, every handshake queued behind its
    // connect timeout.
    let victim = g["agents"][0].clone();
    let others: Vec<String> = g["masters"].clone();
    let limit = std::iter::once(victim.clone())
        .chain(others.iter().cloned())
        .collect::<Vec<_>>()
        .join(",");
    let tmp = tempfile::tempdir().unwrap();
    let pb = tmp.path().join("first.yml");
    std::fs::write(
        &pb,
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: first\n      stat: path=/etc/hostname\n",
    )
    .unwrap();
    let plan = || {
        provisioner(&[
            "plan",
            "-i",
            inv.to_str().unwrap(),
            pb.to_str().unwrap(),
            "--limit",
            &limit,
            "--forks",
            "16",
            "--output",
            "json",
        ])
    };
    lab(&inv, &["cut", &victim]);
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let out = plan();
        assert_eq!(out.status.code(), Some(3), "the cut host is unreachable");
        events(&out)
    }));
    lab(&inv, &["heal", &victim]);
    let ev = cut.unwrap_or_else(|p| std::panic::resume_unwind(p));
    // The victim's result comes only when its connect timeout ends: every other host's first
    // task must be reported before it (an order of events, not a duration).
    let first = |h: &str| {
        ev.iter()
            .position(|e| e["event"] == "task_finished" && e["host"] == h)
            .unwrap_or_else(|| panic!("{h} has a result: {ev:?}"))
    };
    let v = first(&victim);
    assert_eq!(ev[v]["status"], "unreachable", "{}", ev[v]);
    for h in &others {
        assert!(
            first(h) < v,
            "{h}'s first task was reported after the cut host timed out: it waited for it"
        );
    }
}

// ---- issue 11: Ansible projects as they are ------------------------------------------------

/// The lab inventory's own ssh args (strict checking against the lab's known_hosts), which the
/// tests below replace with what Ansible projects write.
fn lab_ssh_args(inv: &Path) -> String {
    let h = host(inv, &groups(inv)["all"][0]);
    format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
        h.known_hosts
    )
}

/// The lab inventory's text with `from` replaced by `to` (which must be there).
fn lab_inventory_text(inv: &Path, edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(inv).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "the lab inventory has {from:?}:\n{text}"
        );
        text = text.replace(from, to);
    }
    text
}

/// `ssh-keygen -lf` of one known_hosts line: its SHA256 fingerprint.
fn fingerprint_of(line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("line");
    std::fs::write(&f, format!("{line}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&f)
        .output()
        .expect("ssh-keygen");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let fp = text
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint for {line:?}: {text}"))
        .to_string();
    fp
}

/// The recap line of `host` in human output.
fn recap_line<'a>(text: &'a str, host: &str) -> &'a str {
    text.lines()
        .rev()
        .find(|l| l.starts_with(&format!("{host} ")) && l.contains(" : ok="))
        .unwrap_or_else(|| panic!("no recap line for {host}:\n{text}"))
}

/// Issue 11, "Prove": an inventory with the most common settings of real Ansible inventories
/// (`StrictHostKeyChecking=no`, `UserKnownHostsFile=/dev/null`) runs, with one warning, and the
/// keys land in the inventory's state dir; with one host's entry there swapped for another
/// host's key, the next run refuses that host (exit 3, both fingerprints named) and the
/// others still run. Needs: a lab with at least 3 masters.
#[test]
fn lenient_ssh_args_record_keys_in_the_state_dir_and_a_changed_key_is_refused() {
    let inv = lab_inventory();
    let tmp = tempfile::tempdir().unwrap();
    let masters = groups(&inv)["masters"].clone();
    assert!(masters.len() >= 3, "needs 3 masters: {masters:?}");
    let text = lab_inventory_text(
        &inv,
        &[(
            lab_ssh_args(&inv).as_str(),
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        )],
    );
    let inv2 = tmp.path().join("inventory.yml");
    std::fs::write(&inv2, text).unwrap();
    let state_kh = tmp.path().join(".inventory.state/known_hosts");
    let pb = fixtures().join("e2e-small/site.yml");
    let run = || {
        provisioner(&[
            "apply",
            "-i",
            inv2.to_str().unwrap(),
            pb.to_str().unwrap(),
            "--limit",
            "masters",
        ])
    };
    let warnings = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .lines()
        .filter(|l| l.contains("host-key checking is never off"))
        .count()
    };

    let first = run();
    assert_eq!(first.status.code(), Some(0), "the first run connects");
    assert_eq!(warnings(&first), 1, "one warning line");
    let kh = std::fs::read_to_string(&state_kh).expect("keys recorded in the state dir");
    let line_of = |kh: &str, name: &str| -> String {
        let addr = host(&inv, name).address;
        kh.lines()
            .find(|l| l.split_whitespace().next() == Some(addr.as_str()))
            .unwrap_or_else(|| panic!("no key of {name} ({addr}) in {}:\n{kh}", state_kh.display()))
            .to_string()
    };
    for m in &masters {
        line_of(&kh, m);
    }

    // The victim's entry now holds the other host's key.
    let (victim, other) = (&masters[0], &masters[1]);
    let (victim_line, other_line) = (line_of(&kh, victim), line_of(&kh, other));
    let (actual, expected) = (fingerprint_of(&victim_line), fingerprint_of(&other_line));
    assert_ne!(actual, expected);
    let victim_addr = host(&inv, victim).address;
    let other_key: Vec<&str> = other_line.split_whitespace().skip(1).take(2).collect();
    let swapped = format!("{victim_addr} {}", other_key.join(" "));
    std::fs::write(&state_kh, kh.replace(&victim_line, &swapped)).unwrap();

    let second = run();
    assert_eq!(
        second.status.code(),
        Some(3),
        "a refused host is unreachable"
    );
    assert_eq!(warnings(&second), 1, "one warning line");
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        out.contains(&format!("fatal: [{victim}]: UNREACHABLE!"))
            && out.contains("host key changed"),
        "{out}"
    );
    assert!(
        out.contains(&actual) && out.contains(&expected),
        "names both fingerprints ({expected} known, {actual} offered):\n{out}"
    );
    assert!(recap_line(&out, victim).contains("unreachable=1"), "{out}");
    for m in masters.iter().filter(|m| *m != victim) {
        assert!(!out.contains(&format!("fatal: [{m}]")), "{m} ran:\n{out}");
        let line = recap_line(&out, m);
        assert!(
            line.contains("unreachable=0") && line.contains("failed=0") && line.contains("ok=1"),
            "{line}"
        );
    }
    let kh_after = std::fs::read_to_string(&state_kh).unwrap();
    assert!(
        kh_after.contains(&swapped) && !kh_after.contains(&victim_line),
        "a refused key is not recorded:\n{kh_after}"
    );
}

/// Issue 11, "Prove": a project directory with an ansible.cfg (inventory, roles_path,
/// remote_user, host_key_checking = False) runs `provisioner apply site.yml` with no flags.
/// The inventory there has no `ansible_user` and no strict-checking option, so the login user
/// and the recording of new keys can only come from ansible.cfg. Needs: a lab (its masters).
#[test]
fn ansible_cfg_project_runs_with_no_flags() {
    let inv = lab_inventory();
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path();
    let masters = groups(&inv)["masters"].clone();
    for m in &masters {
        ssh_ok(&inv, m, "rm -f /tmp/provisioner-e2e-cfg");
    }
    let known_hosts = proj.join("known_hosts");
    let own_args = format!("-o UserKnownHostsFile={}", known_hosts.display());
    let text = lab_inventory_text(
        &inv,
        &[
            ("    ansible_user: ops\n", ""),
            (lab_ssh_args(&inv).as_str(), own_args.as_str()),
        ],
    );
    std::fs::write(proj.join("hosts.yml"), text).unwrap();
    std::fs::write(
        proj.join("ansible.cfg"),
        "[defaults]\ninventory = hosts.yml\nroles_path = galaxy_roles\nremote_user = ops\n\
         host_key_checking = False\nretry_files_enabled = False\n",
    )
    .unwrap();
    let tasks = proj.join("galaxy_roles/cfgprobe/tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    std::fs::write(
        tasks.join("main.yml"),
        "- name: who logged in\n  shell: echo \"${SUDO_USER:-$(id -un)}\"\n  register: login\n  \
         changed_when: false\n\
         - name: it is ansible.cfg's remote_user\n  assert:\n    that: login.stdout == 'ops'\n\
         - name: a marker\n  copy:\n    dest: /tmp/provisioner-e2e-cfg\n    content: \"{{ login.stdout }}\\n\"\n",
    )
    .unwrap();
    std::fs::write(
        proj.join("site.yml"),
        "- hosts: masters\n  become: true\n  gather_facts: false\n  roles:\n    - cfgprobe\n",
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["apply", "site.yml"])
        .current_dir(proj)
        .env_remove("ANSIBLE_CONFIG")
        .env_remove("ANSIBLE_HOST_KEY_CHECKING")
        .output()
        .expect("run provisioner");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!(
        "$ (cd {}; provisioner apply site.yml)\n{stdout}{stderr}",
        proj.display()
    );
    assert_eq!(out.status.code(), Some(0));
    let both = format!("{stdout}{stderr}");
    let warning: Vec<&str> = both
        .lines()
        .filter(|l| l.contains("host-key checking is never off"))
        .collect();
    assert_eq!(warning.len(), 1, "{both}");
    assert!(
        warning[0].contains("host_key_checking = False") && warning[0].contains("ansible.cfg"),
        "{}",
        warning[0]
    );
    let kh = std::fs::read_to_string(&known_hosts).expect("new keys recorded");
    for m in &masters {
        let addr = host(&inv, m).address;
        assert!(
            kh.lines()
                .any(|l| l.split_whitespace().next() == Some(addr.as_str())),
            "{m}'s key recorded:\n{kh}"
        );
        assert_eq!(
            ssh_ok(&inv, m, "cat /tmp/provisioner-e2e-cfg"),
            "ops\n",
            "{m}"
        );
    }
}

/// Issue 11, "Prove": a playbook with an unknown lookup fails `validate` with file:line, and
/// `apply` touches no host (the first task's marker is written nowhere). Needs: a lab.
#[test]
fn unknown_lookup_fails_validate_with_its_line_and_apply_touches_no_host() {
    let inv = lab_inventory();
    let pb = fixtures().join("e2e-unknown-lookup/site.yml");
    let all = groups(&inv)["all"].clone();
    for h in &all {
        ssh_ok(&inv, h, "rm -f /tmp/provisioner-e2e-lookup");
    }
    for cmd in ["validate", "apply"] {
        let out = provisioner(&[cmd, "-i", inv.to_str().unwrap(), pb.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: bad input exits 2");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("e2e-unknown-lookup/site.yml:10:")
                && err.contains("lookup plugin `nosuchlookup` is not supported"),
            "{cmd}: {err}"
        );
    }
    for h in &all {
        assert_eq!(
            ssh(&inv, h, "test -e /tmp/provisioner-e2e-lookup")
                .status
                .code(),
            Some(1),
            "{h} was touched"
        );
    }
}

/// Issue 11, "Prove": a role whose `blockinfile` blocks come from `lookup('template')` gives
/// the same files and changed flags through ansible-playbook (first agent) and through us
/// (second agent). Needs: a lab with 2 agents, ansible-playbook. (engine_local.rs checks the
/// same role hermetically against files ansible-playbook made.)
#[test]
fn differential_blockinfile_from_template_lookup() {
    differential(
        "e2e-lookup-template",
        "rm -rf /etc/provisioner-lt",
        &|inv, name| {
            ssh_ok(
                inv,
                name,
                &format!(
                    "cd /etc/provisioner-lt && for f in $(ls -A | sort); do \
                     echo \"== $f $(stat -c '%a %U %G' \"$f\")\"; sed 's/{name}/HOST/g' \"$f\"; done"
                ),
            )
        },
    );
}

/// A playbook of one test on the first master, run against a private copy of the lab inventory
/// (its own state dir and lock), with `dir` on the host emptied first.
struct Scratch {
    inv: PathBuf,
    _tmp: tempfile::TempDir,
    inv2: PathBuf,
    state: PathBuf,
    target: String,
    pb: PathBuf,
}

fn scratch(dir: &str, playbook: impl Fn(&str) -> String) -> Scratch {
    let inv = lab_inventory();
    let tmp = tempfile::tempdir().unwrap();
    let inv2 = private_inventory(&inv, tmp.path(), "", |kh| kh);
    let target = groups(&inv)["masters"][0].clone();
    ssh_ok(&inv, &target, &format!("rm -rf {dir}"));
    let pb = tmp.path().join("playbook.yml");
    std::fs::write(&pb, playbook(&target)).unwrap();
    Scratch {
        inv,
        state: tmp.path().join(".inventory.state"),
        _tmp: tmp,
        inv2,
        target,
        pb,
    }
}

impl Scratch {
    /// `apply` of the playbook with JSON events on a pipe.
    fn spawn(&self, extra: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args([
                "apply",
                "-i",
                self.inv2.to_str().unwrap(),
                self.pb.to_str().unwrap(),
            ])
            .args(extra)
            .args(["--output", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start provisioner")
    }
}

/// Issue 15: SIGINT, and SIGTERM, during an apply. The task running finishes, no task starts
/// after it, the run exits 130 (143), the handler notified before is kept in the state dir,
/// and the next run fires it and finishes the play.
#[test]
fn a_signal_stops_the_apply_at_a_task_boundary_and_keeps_its_handlers_for_the_next_run() {
    use std::io::BufRead;
    const DIR: &str = "/tmp/provisioner-e2e-signal";
    let sc = scratch(DIR, |target| {
        format!(
            "- hosts: {target}
  gather_facts: false
  tasks:
    - name: the directory
      file: path={DIR} state=directory
    - name: a change that notifies
      copy: dest={DIR}/one content={{{{ tag }}}}
      notify: the handler
    - name: slow
      command: sleep 4
    - name: after
      copy: dest={DIR}/after content=x
  handlers:
    - name: the handler
      shell: echo fired >> {DIR}/handler
"
        )
    });
    let (inv, target, state) = (&sc.inv, &sc.target, &sc.state);
    let apply = |tag: &str| sc.spawn(&["-e", &format!("tag={tag}")]);
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        ssh_ok(inv, target, &format!("rm -rf {DIR}"));
        let mut child = apply(signal);
        let stdout = child.stdout.take().unwrap();
        let mut seen: Vec<Value> = Vec::new();
        let mut sent = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(&line.unwrap()) else {
                continue;
            };
            if !sent && v["event"] == "task_started" && v["task"] == "slow" {
                sent = true;
                Command::new("kill")
                    .args([&format!("-{signal}"), &child.id().to_string()])
                    .status()
                    .unwrap();
            }
            seen.push(v);
        }
        let out = child.wait_with_output().unwrap();
        eprintln!("--- SIG{signal}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(sent, "the run reached the slow task");
        assert_eq!(out.status.code(), Some(code), "SIG{signal}");
        let finished = |t: &str| {
            seen.iter()
                .any(|e| e["event"] == "task_finished" && e["task"] == t)
        };
        assert!(
            finished("slow"),
            "the running task finished (a task boundary)"
        );
        assert!(
            !seen
                .iter()
                .any(|e| e["event"] == "task_started" && e["task"] == "after"),
            "no task starts after the signal"
        );
        assert_eq!(
            ssh(
                inv,
                target,
                &format!("test -e {DIR}/after || test -e {DIR}/handler")
            )
            .status
            .code(),
            Some(1),
            "nothing after the signal reached the host"
        );
        let pending = std::fs::read_to_string(state.join("pending-handlers.json"))
            .expect("the notified handler is kept in the state dir");
        assert!(pending.contains("the handler"), "{pending}");
        // The next run fires the handler once and finishes the play.
        let next = apply(signal).wait_with_output().unwrap();
        assert_eq!(
            next.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&next.stderr)
        );
        assert_eq!(
            ssh_ok(inv, target, &format!("cat {DIR}/handler")),
            "fired\n"
        );
        ssh_ok(inv, target, &format!("test -e {DIR}/after"));
        assert!(
            !state.join("pending-handlers.json").exists(),
            "the pending set is emptied"
        );
    }
    ssh_ok(inv, target, &format!("rm -rf {DIR}"));
}

/// Issue 15: SIGKILL mid-apply. The next run takes the lock over with a warning and converges.
/// What a SIGKILL loses (README, "Reliability"): a handler notified but not yet saved. Here the
/// notifying change was already made, so the next run has nothing to notify it again.
#[test]
fn after_a_sigkill_the_next_run_takes_the_lock_over_and_converges() {
    use std::io::BufRead;
    const DIR: &str = "/tmp/provisioner-e2e-sigkill";
    let sc = scratch(DIR, |target| {
        format!(
            "- hosts: {target}
  gather_facts: false
  tasks:
    - name: the directory
      file: path={DIR} state=directory
    - name: a change that notifies
      copy: dest={DIR}/one content=1
      notify: the handler
    - name: slow
      command: sleep 30
      when: not (second | default(false) | bool)
    - name: after
      copy: dest={DIR}/after content=x
  handlers:
    - name: the handler
      shell: echo fired >> {DIR}/handler
"
        )
    });
    let (inv, target) = (&sc.inv, &sc.target);
    let mut child = sc.spawn(&[]);
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(stdout).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap_or(Value::Null);
        if v["event"] == "task_started" && v["task"] == "slow" {
            Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed");
    let next = provisioner(&[
        "apply",
        "-i",
        sc.inv2.to_str().unwrap(),
        sc.pb.to_str().unwrap(),
        "-e",
        "second=true",
    ]);
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&next.stdout),
        String::from_utf8_lossy(&next.stderr)
    );
    assert_eq!(next.status.code(), Some(0), "{err}");
    assert!(
        err.contains("took over the run lock") && err.contains("no longer running"),
        "warns that it took the stale lock over: {err}"
    );
    ssh_ok(inv, target, &format!("test -e {DIR}/after"));
    assert_eq!(
        ssh(inv, target, &format!("test -e {DIR}/handler"))
            .status
            .code(),
        Some(1),
        "the handler notified before the SIGKILL was lost (documented)"
    );
    ssh_ok(inv, target, &format!("rm -rf {DIR}"));
}

/// Issue 15: the disk fills up during a write (a 64 KiB tmpfs at the target directory). The
/// task fails with the host's own reason, the original file is intact, no temp file is left,
/// and once there is room the next run writes it.
#[test]
fn a_full_disk_fails_the_write_clearly_and_leaves_the_original_file() {
    const DIR: &str = "/tmp/provisioner-e2e-full";
    let sc = scratch(DIR, |target| {
        format!(
            "- hosts: {target}
  gather_facts: false
  tasks:
    - name: a large file
      copy:
        dest: {DIR}/conf
        content: \"{{{{ 'x' * 40000 }}}}\"
"
        )
    });
    let (inv, target) = (&sc.inv, &sc.target);
    ssh_ok(
        inv,
        target,
        &format!(
            "mkdir -p {DIR} && mount -t tmpfs -o size=64k tmpfs {DIR} && echo original > {DIR}/conf && \
             (dd if=/dev/zero of={DIR}/filler bs=1k count=40 2>/dev/null || true)"
        ),
    );
    let out = sc.spawn(&[]).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let cleanup = format!("umount {DIR}; rm -rf {DIR}");
    let listing = ssh_ok(inv, target, &format!("ls -A {DIR}"));
    let original = ssh_ok(inv, target, &format!("cat {DIR}/conf"));
    if out.status.code() != Some(1) || original != "original\n" {
        ssh_ok(inv, target, &cleanup);
    }
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("No space left on device"),
        "the host's reason is shown: {text}"
    );
    assert_eq!(original, "original\n", "the original file is intact");
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["conf", "filler"],
        "no temp file left"
    );
    // Room again: the next run writes it.
    ssh_ok(inv, target, &format!("rm {DIR}/filler"));
    let out = sc.spawn(&[]).wait_with_output().unwrap();
    let size = ssh_ok(inv, target, &format!("stat -c %s {DIR}/conf"));
    ssh_ok(inv, target, &cleanup);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(size.trim(), "40000");
}
