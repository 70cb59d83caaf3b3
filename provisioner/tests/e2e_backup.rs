//! End-to-end proof of `provisioner backup` and `restore` (issue 10) on the shared lab with the
//! stack applied and real Mesos (`PROVISIONER_LAB_INVENTORY`; without it the test fails, never
//! skips). Destructive: it stops the whole cluster and wipes every ZooKeeper data dir and every
//! master's replicated log, then restores them; it runs after every other suite (last in
//! `.ci/test`'s SUITES) and leaves the cluster healthy, with its maintenance schedule empty.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{json, Value};

/// A call to the leader's operator API (`/api/v1`), made on the leader's host as the day-2
/// commands make it: (HTTP status, body).
fn operator_call(inv: &Path, body: &Value) -> (String, String) {
    let l = leader(inv, Duration::from_secs(120));
    let i = provisioner::resolve::inventory::load(inv).unwrap();
    provisioner::day2::status::master_call(
        &[inv.to_path_buf()],
        None,
        "e2e_backup",
        &l,
        (
            port("mesos_master", "http"),
            provisioner::day2::status::ca_file(&i.host_vars(&l)).as_deref(),
        ),
        "/api/v1",
        Some(&body.to_string()),
        None,
    )
    .unwrap()
}

/// The machines of the leader's maintenance schedule, sorted (`hostname ip`).
fn scheduled_machines(inv: &Path) -> Vec<String> {
    let (code, body) = operator_call(inv, &json!({"type": "GET_MAINTENANCE_SCHEDULE"}));
    assert!(
        code.starts_with('2'),
        "GET_MAINTENANCE_SCHEDULE: {code} {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut out: Vec<String> = v["get_maintenance_schedule"]["schedule"]["windows"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["machine_ids"].as_array().cloned().unwrap_or_default())
        .map(|m| {
            format!(
                "{} {}",
                m["hostname"].as_str().unwrap_or_default(),
                m["ip"].as_str().unwrap_or_default()
            )
        })
        .collect();
    out.sort();
    out
}

fn set_schedule(inv: &Path, windows: Value) {
    let (code, body) = operator_call(
        inv,
        &json!({"type": "UPDATE_MAINTENANCE_SCHEDULE",
                "update_maintenance_schedule": {"schedule": {"windows": windows}}}),
    );
    assert!(
        code.starts_with('2'),
        "UPDATE_MAINTENANCE_SCHEDULE: {code} {body}"
    );
}

/// Every unit's InvocationID on every host: changes whenever a service (re)starts or stops.
fn invocations(inv: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (g, unit) in [
        ("zookeeper", "zookeeper"),
        ("masters", "mesos-master"),
        ("agents", "mesos-agent"),
    ] {
        for h in group(inv, g) {
            out.push((h.clone(), unit.to_string(), main_pid(inv, &h, unit)));
        }
    }
    out
}

fn role_var(inv: &Path, host: &str, role: &str, key: &str) -> String {
    let i = provisioner::resolve::inventory::load(inv).unwrap();
    let roles = provisioner::day2::backup::roles_dir(None).unwrap();
    provisioner::day2::backup::role_var(&i, &roles, host, role, key).unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_wiped_cluster_comes_back_from_a_backup_and_a_damaged_archive_is_refused_first() {
    let started = Instant::now();
    let inv = lab_inventory();
    let i = inv.display().to_string();
    let masters = group(&inv, "masters");
    let agents = group(&inv, "agents");
    let zk = group(&inv, "zookeeper");

    // A maintenance schedule (a window a day from now: the agent keeps running) and the agent
    // ids: both live only in the replicated log.
    let agent_ids = active_agents(&inv, Duration::from_secs(180));
    let first = &agents[0];
    let in_a_day = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        + 86_400 * 1_000_000_000;
    set_schedule(
        &inv,
        json!([{
            "machine_ids": [{"hostname": first, "ip": address(&inv, first)}],
            "unavailability": {"start": {"nanoseconds": in_a_day}}
        }]),
    );
    let schedule = scheduled_machines(&inv);
    assert_eq!(schedule, vec![format!("{first} {}", address(&inv, first))]);

    let stop = Arc::new(AtomicBool::new(false));
    let sampling = sampler(inv.clone(), stop.clone());

    // Back up.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("backup-e2e.tar.gz");
    let a = archive.display().to_string();
    let t = Instant::now();
    let out = provisioner(&["backup", "-i", &i, "-o", &a]);
    let backup_time = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "backup: {}", text(&out));
    let meta = std::fs::metadata(&archive).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let out = provisioner(&["backup", "--verify", &a]);
    assert_eq!(out.status.code(), Some(0), "verify: {}", text(&out));

    // One flipped byte: --verify and restore refuse it, and nothing was stopped.
    let before = invocations(&inv);
    let bad = dir.path().join("backup-bad.tar.gz");
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&bad, &bytes).unwrap();
    let b = bad.display().to_string();
    let out = provisioner(&["backup", "--verify", &b]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify of a damaged copy: {}",
        text(&out)
    );
    assert!(text(&out).contains("verification failed"), "{}", text(&out));
    let out = provisioner(&["restore", "-i", &i, &b, "--stop-cluster", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "restore of a damaged copy: {}",
        text(&out)
    );
    assert!(text(&out).contains("failed verification"), "{}", text(&out));
    // A whole archive is refused too while the cluster runs, without --stop-cluster.
    let out = provisioner(&["restore", "-i", &i, &a, "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "restore of a running cluster: {}",
        text(&out)
    );
    assert!(text(&out).contains("--stop-cluster"), "{}", text(&out));
    assert_eq!(
        invocations(&inv),
        before,
        "a refused restore stopped something"
    );

    // Destroy: stop everything, wipe ZooKeeper's data and every replicated log.
    for a in &agents {
        ssh_ok(&inv, a, "systemctl stop mesos-agent");
    }
    for m in &masters {
        ssh_ok(&inv, m, "systemctl stop mesos-master");
    }
    for z in &zk {
        ssh_ok(&inv, z, "systemctl stop zookeeper");
    }
    for z in &zk {
        let d = role_var(&inv, z, "zookeeper", "zookeeper_data_dir");
        ssh_ok(
            &inv,
            z,
            &format!("rm -rf {d}/version-2 && test ! -e {d}/version-2"),
        );
    }
    for m in &masters {
        let d = role_var(&inv, m, "mesos_master", "mesos_master_work_dir");
        ssh_ok(
            &inv,
            m,
            // Wiped, with a marker in the empty log dir: the restore must move it aside, not
            // delete it.
            &format!(
                "rm -rf {d}/replicated_log && mkdir {d}/replicated_log && touch {d}/replicated_log/wiped-by-e2e"
            ),
        );
    }

    // A restore that stops halfway: ZooKeeper cannot start on one member (its unit masked).
    // It stops at that step, names it and the data moved aside, and starts no master.
    let broken = zk.last().unwrap().clone();
    ssh_ok(&inv, &broken, "systemctl mask zookeeper");
    let t = Instant::now();
    let out = provisioner(&["restore", "-i", &i, &a, "--stop-cluster", "--yes"]);
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a restore that cannot start ZooKeeper: {said}"
    );
    assert!(
        said.contains("restore stopped at \"start ZooKeeper\"")
            && said.contains(".pre-restore-")
            && said.contains("run the same restore again"),
        "{said}"
    );
    for m in &masters {
        let o = ssh(&inv, m, "systemctl is-active mesos-master");
        assert!(
            !o.status.success(),
            "{m}: a master started after ZooKeeper failed to"
        );
    }
    eprintln!(
        "restore stopped halfway (ZooKeeper masked on {broken}): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The cause removed, the same command resumes and finishes.
    ssh_ok(&inv, &broken, "systemctl unmask zookeeper");
    let t = Instant::now();
    let out = provisioner(&["restore", "-i", &i, &a, "--stop-cluster", "--yes"]);
    let restore_time = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "restore: {}", text(&out));

    // One leader, every master recovered, the same agents under the same ids, the schedule.
    let l = leader(&inv, Duration::from_secs(120));
    for m in &masters {
        let v = master_metrics(&inv, m).unwrap_or_else(|| panic!("{m}: no metrics"));
        assert_eq!(
            metric(&v, "registrar/log/recovered"),
            1.0,
            "{m} not recovered"
        );
    }
    let after = active_agents(&inv, Duration::from_secs(180));
    assert_eq!(after, agent_ids, "the agents came back under other ids");
    assert_eq!(
        scheduled_machines(&inv),
        schedule,
        "the maintenance schedule is not back"
    );
    // What was in place was moved aside, not deleted (by both attempts: the wiped log by the
    // first).
    for m in &masters {
        let d = role_var(&inv, m, "mesos_master", "mesos_master_work_dir");
        ssh_ok(
            &inv,
            m,
            &format!(
                "test ! -e {d}/replicated_log/wiped-by-e2e && ls {d}/replicated_log.pre-restore-*/ | grep -qx wiped-by-e2e"
            ),
        );
    }

    stop.store(true, Ordering::SeqCst);
    let record = sampling.join().unwrap();
    set_schedule(&inv, json!([]));

    // The sampler saw the cluster leaderless (the wipe) and then one leader again.
    let leaders = |s: &Sample| s.masters.iter().filter(|(_, e)| *e).count();
    assert!(
        record.iter().any(|s| leaders(s) == 0),
        "never saw the cluster down"
    );
    let last = record.last().unwrap();
    assert_eq!(leaders(last), 1, "last sample: {:?}", last.masters);
    assert!(
        last.zk
            .iter()
            .all(|m| matches!(m.as_deref(), Some("leader" | "follower"))),
        "last sample: {:?}",
        last.zk
    );
    if let Some(s) = record.iter().find(|s| leaders(s) > 1) {
        panic!(
            "two masters elected at once at {:?}: masters {:?}, ZooKeeper {:?}",
            s.at, s.masters, s.zk
        );
    }
    let (median, max) = sample_periods(&record);
    eprintln!(
        "e2e_backup: leader {l}; backup {} bytes in {:.1} s; restore {:.1} s; scenario {:.1} s; {} samples (period median {median} ms, max {max} ms)",
        meta.len(),
        backup_time.as_secs_f64(),
        restore_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        record.len()
    );
}
