use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::recorder::{Options, Recorder};
use super::*;
use crate::exec::events::{DiffText, Event, RunEvent, TaskReport, TaskStatus, EVENTS_VERSION};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000 + secs)
}

fn task(host: &str, name: &str, status: TaskStatus, diff: Option<&str>) -> RunEvent {
    RunEvent::TaskFinished(TaskReport {
        host: host.into(),
        play: 0,
        task: name.into(),
        loc: format!("site.yml:{}:3", name.len()),
        status,
        changed: status == TaskStatus::Changed,
        item: None,
        msg: None,
        output: false,
        diffs: diff
            .map(|d| {
                vec![DiffText {
                    label: "/etc/app.conf".into(),
                    before: "port=1\n".into(),
                    after: d.into(),
                }]
            })
            .unwrap_or_default(),
        handler: false,
        duration_ms: 12,
    })
}

/// A run's events with envelopes, as the bus stamps them.
fn stream(run: &str, start: u64, check: bool, bodies: Vec<RunEvent>) -> Vec<Event> {
    let mut all = vec![RunEvent::RunStarted {
        check,
        hosts: vec!["h1".into(), "h2".into()],
    }];
    all.extend(bodies);
    all.push(RunEvent::RunFinished {
        duration_ms: 3000,
        cancelled: false,
    });
    all.into_iter()
        .enumerate()
        .map(|(i, body)| Event {
            version: EVENTS_VERSION,
            run: Arc::from(run),
            seq: i as u64,
            time: at(start + i as u64),
            body,
        })
        .collect()
}

fn meta(id: &str, command: &str, mode: &str, start: u64) -> RunMeta {
    let mut m = RunMeta::new(id, command, mode, Path::new("/ops/prod.yml"));
    m.started = at(start);
    m
}

/// Keeping everything: the fixtures' runs are older than the default's 90 days.
fn opts() -> Options {
    Options {
        retention: Retention { runs: 0, days: 0 },
        ..Options::default()
    }
}

/// Record `events` as run `m` through the recorder's sink; the warning it ends with.
fn record(path: &Path, m: RunMeta, events: &[Event], exit: i32, o: Options) -> Option<String> {
    let r = Recorder::start(path, m, o);
    let mut sink = r.sink();
    for e in events {
        sink.event(e).unwrap();
    }
    drop(sink);
    r.finish(Some(exit))
}

#[test]
fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/history.db");
    let mut c = open_write(&path, Duration::from_millis(100)).unwrap();
    migrate(&mut c).unwrap();
    drop(c);
    let mut c = open_write(&path, Duration::from_millis(100)).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    migrate(&mut c).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = open_write(&path, Duration::from_millis(100)).unwrap_err();
    assert!(e.contains("newer provisioner"), "{e}");
    let e = open_read(&path).err().unwrap();
    assert!(e.contains("newer provisioner"), "{e}");
}

#[test]
fn reading_a_missing_history_says_there_is_none_yet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let e = open_read(&path).err().unwrap();
    assert_eq!(e, format!("no history yet in {}", path.display()));
}

#[test]
fn a_recorded_stream_reads_back_as_list_show_diff_and_drift() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let mut apply = meta("0001-aaaa", "apply", "apply", 0);
    apply.bundle_versions = Some([("mesos".to_string(), "1.11.0".to_string())].into());
    apply.limit = Some("web".into());
    let a = stream(
        "0001-aaaa",
        0,
        false,
        vec![
            task("h1", "config", TaskStatus::Changed, Some("port=2\n")),
            task("h2", "config", TaskStatus::Ok, None),
            task("h1", "service", TaskStatus::Ok, None),
        ],
    );
    assert_eq!(record(&path, apply, &a, 0, opts()), None);
    let b = stream(
        "0002-bbbb",
        100,
        true,
        vec![
            task("h1", "config", TaskStatus::Changed, Some("port=3\n")),
            task("h2", "config", TaskStatus::Ok, None),
            task("h1", "service", TaskStatus::Ok, None),
        ],
    );
    assert_eq!(
        record(
            &path,
            meta("0002-bbbb", "plan", "check", 100),
            &b,
            4,
            opts()
        ),
        None
    );

    let c = open_read(&path).unwrap();
    let runs = list(&c, None).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["0002-bbbb", "0001-aaaa"],
        "newest first"
    );
    assert_eq!(runs[0].exit_code, Some(4));
    assert_eq!(runs[0].hosts_changed, 1);
    assert_eq!(runs[1].command, "apply");
    assert_eq!(runs[1].tasks, 3);
    assert_eq!(runs[1].limit.as_deref(), Some("web"));
    assert_eq!(list(&c, Some(1)).unwrap().len(), 1);
    assert_eq!(resolve(&c, "last").unwrap(), "0002-bbbb");
    assert_eq!(resolve(&c, "0001").unwrap(), "0001-aaaa");
    assert!(resolve(&c, "000").unwrap_err().contains("ambiguous"));
    assert!(resolve(&c, "9").unwrap_err().contains("no run 9"));

    let d = show(&c, "0001-aaaa").unwrap();
    assert_eq!(d.run.started, "2026-05-28T20:26:40.000Z");
    assert_eq!(
        d.run.bundle_versions.as_ref().unwrap()["mesos"],
        "1.11.0".to_string()
    );
    assert_eq!(d.tasks.len(), 3);
    assert_eq!(d.tasks[0].status, "changed");
    assert_eq!(d.tasks[0].diff_hash.as_ref().map(String::len), Some(64));
    assert_eq!(d.tasks[1].diff_hash, None);
    let events: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = '0001-aaaa'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(events, 5, "every event is kept");
    let lines = render::show(&d);
    assert!(lines[0].contains("0001-aaaa: apply"), "{lines:?}");

    // Only h1's config differs: same status, another diff.
    let x = diff(&c, "0001-aaaa", "0002-bbbb").unwrap();
    assert_eq!(x.tasks.len(), 1, "{x:?}");
    assert_eq!(x.tasks[0].host, "h1");
    assert_eq!(x.tasks[0].task, "config");
    assert_ne!(
        x.tasks[0].a.as_ref().unwrap().diff_hash,
        x.tasks[0].b.as_ref().unwrap().diff_hash
    );
    assert!(diff(&c, "0001-aaaa", "0001-aaaa").unwrap().tasks.is_empty());

    let dr = drift(&c, None).unwrap();
    assert_eq!(dr.len(), 2);
    assert_eq!(
        (dr[0].run.as_str(), dr[0].mode.as_str()),
        ("0002-bbbb", "check")
    );
    assert_eq!(
        (dr[1].run.as_str(), dr[1].mode.as_str()),
        ("0001-aaaa", "apply")
    );
    assert!(render::drift(&dr)[1].contains("would change"));
    let since = millis(at(50));
    let dr = drift(&c, Some(since)).unwrap();
    assert_eq!(dr.len(), 1);
    assert_eq!(dr[0].run, "0002-bbbb");
}

#[test]
fn the_database_and_its_wal_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let a = stream("0001-aaaa", 0, false, vec![]);
    assert_eq!(
        record(&path, meta("0001-aaaa", "apply", "apply", 0), &a, 0, opts()),
        None
    );
    // A reader keeps the -wal and -shm files there.
    let c = open_read(&path).unwrap();
    assert_eq!(list(&c, None).unwrap().len(), 1);
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", path.display());
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{p}");
        }
    }
}

#[test]
fn a_database_that_cannot_be_opened_is_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let a = stream("0001-aaaa", 0, false, vec![]);
    // A directory where the file should be.
    let path = dir.path().join("history.db");
    std::fs::create_dir(&path).unwrap();
    let w = record(&path, meta("0001-aaaa", "apply", "apply", 0), &a, 0, opts()).unwrap();
    assert!(w.starts_with("history: not recorded: "), "{w}");
    // A file of garbage.
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
    let w = record(&path, meta("0001-aaaa", "apply", "apply", 0), &a, 0, opts()).unwrap();
    assert!(w.starts_with("history: not recorded: "), "{w}");
    assert!(w.contains("garbage.db"), "{w}");
}

/// A history whose write lock the test's own connection holds (`COMMIT` on it releases it).
fn locked_history(dir: &Path) -> (PathBuf, Connection) {
    let path = dir.join("history.db");
    drop(open_write(&path, Duration::from_millis(100)).unwrap());
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    (path, blocker)
}

#[test]
fn a_full_queue_drops_events_without_blocking_and_the_warning_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    // The writer waits on the lock while the test sends.
    let (path, blocker) = locked_history(dir.path());
    let o = Options {
        capacity: 1,
        busy_timeout: Duration::from_secs(600),
        finish_wait: Duration::from_secs(600),
        retention: Retention::default(),
    };
    let r = Recorder::start(&path, meta("0001-aaaa", "apply", "apply", 0), o);
    let mut sink = r.sink();
    let bodies = (0..200)
        .map(|i| task("h1", &format!("t{i}"), TaskStatus::Ok, None))
        .collect();
    // Were `event` to block, this thread (which holds the lock) would never get past it.
    for e in stream("0001-aaaa", 0, false, bodies) {
        sink.event(&e).unwrap();
    }
    drop(sink);
    blocker.execute_batch("COMMIT").unwrap();
    let w = r.finish(Some(0)).unwrap();
    assert!(w.starts_with("history: "), "{w}");
    let n: u64 = w
        .trim_start_matches("history: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // At most one event in the queue and one in the writer's hands got through.
    assert!(n >= 200, "{w}");
    assert!(w.contains("events dropped"), "{w}");
    // What did get through is there, and the run's end.
    let c = open_read(&path).unwrap();
    let runs = list(&c, None).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].exit_code, Some(0));
}

#[test]
fn a_writer_stuck_on_a_lock_does_not_hold_up_the_end_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (path, blocker) = locked_history(dir.path());
    let o = Options {
        busy_timeout: Duration::from_secs(600),
        finish_wait: Duration::from_millis(50),
        ..opts()
    };
    let a = stream("0001-aaaa", 0, false, vec![]);
    // The lock is released only after `finish` returned.
    let w = record(&path, meta("0001-aaaa", "apply", "apply", 0), &a, 0, o).unwrap();
    // Reading does not wait for a writer (WAL).
    assert!(list(&open_read(&path).unwrap(), None).unwrap().is_empty());
    blocker.execute_batch("COMMIT").unwrap();
    assert!(w.starts_with("history: not recorded completely: "), "{w}");
    assert!(w.contains("did not answer within 50ms"), "{w}");
}

#[test]
fn retention_prunes_old_and_surplus_runs_with_their_tasks_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let day = 86_400;
    // Five runs a day apart, the newest last.
    for i in 0..5u64 {
        let id = format!("000{i}-run");
        let ev = stream(
            &id,
            i * day,
            false,
            vec![task("h1", "t", TaskStatus::Ok, None)],
        );
        let keep_all = Options {
            retention: Retention { runs: 0, days: 0 },
            ..Options::default()
        };
        assert_eq!(
            record(
                &path,
                meta(&id, "apply", "apply", i * day),
                &ev,
                0,
                keep_all
            ),
            None
        );
    }
    let mut c = open_write(&path, Duration::from_millis(100)).unwrap();
    let ids = |c: &Connection| -> Vec<String> {
        list(c, None).unwrap().into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(&c).len(), 5);
    // Keep three: the two oldest go.
    let keep = Retention { runs: 3, days: 0 };
    assert_eq!(prune(&mut c, keep, at(5 * day), "0004-run").unwrap(), 2);
    assert_eq!(ids(&c), ["0004-run", "0003-run", "0002-run"]);
    // Keep one day back from day 5: only day 4's run is that young; the current run stays.
    let keep = Retention { runs: 0, days: 1 };
    assert_eq!(prune(&mut c, keep, at(5 * day), "0002-run").unwrap(), 1);
    assert_eq!(ids(&c), ["0004-run", "0002-run"]);
    let orphans: i64 = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE run_id NOT IN (SELECT id FROM runs))
                  + (SELECT COUNT(*) FROM events WHERE run_id NOT IN (SELECT id FROM runs))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    // The recorder prunes at the end of a run.
    let ev = stream("0009-run", 9 * day, false, vec![]);
    let o = Options {
        retention: Retention { runs: 1, days: 0 },
        ..Options::default()
    };
    drop(c);
    assert_eq!(
        record(
            &path,
            meta("0009-run", "apply", "apply", 9 * day),
            &ev,
            0,
            o
        ),
        None
    );
    let c = open_read(&path).unwrap();
    assert_eq!(ids(&c), ["0009-run"]);
}

#[test]
fn retention_settings_parse_with_defaults() {
    assert_eq!(Retention::from_values(None, None), Retention::default());
    assert_eq!(
        Retention::from_values(Some("50"), Some("0")),
        Retention { runs: 50, days: 0 }
    );
    assert_eq!(
        Retention::from_values(Some("many"), None),
        Retention::default()
    );
}

#[test]
fn since_takes_durations_and_utc_times() {
    let now = at(0);
    let n = millis(now);
    assert_eq!(parse_since("90s", now).unwrap(), n - 90_000);
    assert_eq!(parse_since("2h", now).unwrap(), n - 7_200_000);
    assert_eq!(parse_since("7d", now).unwrap(), n - 7 * 86_400_000);
    assert_eq!(parse_since("1970-01-02", now).unwrap(), 86_400_000);
    assert_eq!(parse_since("1970-01-01T00:01", now).unwrap(), 60_000);
    assert_eq!(parse_since("1970-01-01T00:00:01.5Z", now).unwrap(), 1_500);
    assert!(parse_since("yesterday", now).is_err());
    assert!(parse_since("2026-13-01", now).is_err());
}

#[test]
fn bundle_versions_are_read_from_the_bundle_variable() {
    let b = crate::stack::bundle_var(&crate::stack::builtin_bundle().unwrap());
    let v = versions_of(&b);
    assert!(
        v.contains_key("mesos_master") || v.contains_key("zookeeper"),
        "{v:?}"
    );
    assert!(v.values().all(|x| !x.is_empty()));
}
