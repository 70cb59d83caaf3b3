//! Run history: every run is recorded in `history.db` (SQLite, WAL) in the inventory's state dir.
//!
//! What is recorded, per run: the command, its parent (a day-2 operation's run, for the runs it
//! starts), the mode, user, machine, inventory, limit, start, end, exit code and the bundle's
//! component versions; per host and task: status, changed, duration and the sha256 of the diff
//! the task reported; and every event, as the JSON line `--output json` prints. Events reach
//! the recorder after the redactor (it is one more sink of the run's bus), so secrets are
//! censored before they are stored.
//!
//! This module holds the schema and the queries, as plain functions over a
//! [`rusqlite::Connection`]; [`recorder`] is the sink that writes from its own thread and never
//! stalls or fails a run; [`render`] turns query results into lines for the CLI.

pub mod recorder;
pub mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::Value;

use crate::exec::events::{Event, RunEvent, TaskReport};

/// The file in the state dir.
pub const FILE: &str = "history.db";

/// The schema version (`PRAGMA user_version`). Migrations run from the file's version up to
/// this one; each is idempotent.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    parent TEXT,
    command TEXT NOT NULL,
    mode TEXT NOT NULL,
    user TEXT NOT NULL,
    machine TEXT NOT NULL,
    inventory TEXT NOT NULL,
    run_limit TEXT,
    started INTEGER NOT NULL,
    ended INTEGER,
    exit_code INTEGER,
    cancelled INTEGER NOT NULL DEFAULT 0,
    bundle_versions TEXT,
    tool_version TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time INTEGER NOT NULL,
    host TEXT NOT NULL,
    play INTEGER NOT NULL,
    task TEXT NOT NULL,
    loc TEXT NOT NULL,
    item TEXT,
    handler INTEGER NOT NULL,
    status TEXT NOT NULL,
    changed INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    diff_hash TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status, time);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
";

/// How many runs the history keeps. A run is pruned when it is not among the newest `runs`
/// or older than `days` (0: no limit of that kind). Pruned at the end of each recorded run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub runs: u32,
    pub days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            runs: 1000,
            days: 90,
        }
    }
}

/// `PROVISIONER_HISTORY_KEEP_RUNS`, `PROVISIONER_HISTORY_KEEP_DAYS`.
pub const KEEP_RUNS_ENV: &str = "PROVISIONER_HISTORY_KEEP_RUNS";
pub const KEEP_DAYS_ENV: &str = "PROVISIONER_HISTORY_KEEP_DAYS";

impl Retention {
    /// From the two settings' texts (a count each; unset or unreadable: the default).
    pub fn from_values(runs: Option<&str>, days: Option<&str>) -> Retention {
        let d = Retention::default();
        let num = |v: Option<&str>, default: u32| {
            v.and_then(|v| v.trim().parse().ok()).unwrap_or(default)
        };
        Retention {
            runs: num(runs, d.runs),
            days: num(days, d.days),
        }
    }

    /// From the environment (every command records, so the setting is where all of them see it).
    pub fn from_env() -> Retention {
        let var = |k: &str| std::env::var(k).ok();
        Retention::from_values(var(KEEP_RUNS_ENV).as_deref(), var(KEEP_DAYS_ENV).as_deref())
    }
}

/// `history.db` of a state dir.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Milliseconds since the epoch.
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn utc_ms(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    crate::exec::events::utc_text(t)
}

fn sql(e: rusqlite::Error) -> String {
    e.to_string()
}

/// A write transaction that takes the write lock at once (waiting up to the busy timeout), so
/// two writers (two runs, an operation and its role run) queue instead of failing on a stale
/// read snapshot.
fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, String> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)
}

/// Bring the schema to [`SCHEMA_VERSION`]. Idempotent; refuses a file of a newer version.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the history was written by a newer provisioner (schema {version}, this one knows {SCHEMA_VERSION})"
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = write_tx(conn)?;
    tx.execute_batch(SCHEMA_V1).map_err(sql)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql)?;
    tx.commit().map_err(sql)
}

/// Open (creating it, mode 0600) the history for writing: WAL, `busy` as the lock timeout,
/// schema migrated.
pub fn open_write(path: &Path, busy: Duration) -> Result<Connection, String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Created here, owner-only, before SQLite sees it: SQLite gives its -wal and -shm files
    // the database file's permissions.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(busy).map_err(sql)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "{}: cannot use WAL (journal mode {mode})",
            path.display()
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    migrate(&mut conn).map_err(|e| format!("{}: {e}", path.display()))?;
    owner_only(path);
    Ok(conn)
}

/// Tighten the database's files to 0600 (the WAL and shared-memory files included), in case
/// they were created by something else.
fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

/// Open the history for reading (works while a run writes: WAL). A missing file is an error
/// that says so.
pub fn open_read(path: &Path) -> Result<Connection, String> {
    if !path.exists() {
        return Err(format!("no history yet in {}", path.display()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match version {
        0 => Err(format!("no history yet in {}", path.display())),
        v if v > SCHEMA_VERSION => Err(format!(
            "{}: written by a newer provisioner (schema {v}, this one knows {SCHEMA_VERSION})",
            path.display()
        )),
        _ => Ok(conn),
    }
}

/// What a run is, known when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMeta {
    /// The run id (the events' envelope).
    pub id: String,
    /// The day-2 operation this run is a step of.
    pub parent: Option<String>,
    pub command: String,
    /// `check` or `apply` (a day-2 operation: `apply`, or `plan` when it only plans).
    pub mode: String,
    pub user: String,
    pub machine: String,
    pub inventory: String,
    pub limit: Option<String>,
    pub started: SystemTime,
    /// Component → version of the bundle the run used (`None`: not a stack run).
    pub bundle_versions: Option<BTreeMap<String, String>>,
}

impl RunMeta {
    /// A run's metadata with this process's user and machine.
    pub fn new(id: &str, command: &str, mode: &str, inventory: &Path) -> RunMeta {
        RunMeta {
            id: id.to_string(),
            parent: None,
            command: command.to_string(),
            mode: mode.to_string(),
            user: current_user(),
            machine: machine_name(),
            inventory: std::path::absolute(inventory)
                .unwrap_or_else(|_| inventory.to_path_buf())
                .display()
                .to_string(),
            limit: None,
            started: SystemTime::now(),
            bundle_versions: None,
        }
    }
}

/// `$USER` (or `$LOGNAME`), else the uid.
pub fn current_user() -> String {
    for k in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(k) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| format!("uid {u}")))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The kernel's host name.
pub fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// The component versions of a `bundle` variable (`bundle.components.<name>.version`).
pub fn versions_of(bundle: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(cs)) = bundle.get("components") {
        for (name, c) in cs {
            let v = c.get("version").map(|v| v.get("value").unwrap_or(v));
            if let Some(Value::String(v)) = v {
                out.insert(name.clone(), v.clone());
            }
        }
    }
    out
}

/// Record the start of a run (idempotent).
pub fn insert_run(tx: &Transaction<'_>, m: &RunMeta) -> Result<(), String> {
    let versions = m
        .bundle_versions
        .as_ref()
        .map(|v| serde_json::to_string(v).unwrap_or_default());
    tx.execute(
        "INSERT OR IGNORE INTO runs (id, parent, command, mode, user, machine, inventory, run_limit, started, bundle_versions, tool_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            m.id,
            m.parent,
            m.command,
            m.mode,
            m.user,
            m.machine,
            m.inventory,
            m.limit,
            millis(m.started),
            versions,
            env!("CARGO_PKG_VERSION"),
        ],
    )
    .map_err(sql)?;
    Ok(())
}

/// The sha256 (hex) of a task's diffs (`None`: it reported none).
pub fn diff_hash(r: &TaskReport) -> Option<String> {
    use sha2::{Digest, Sha256};
    if r.diffs.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for d in &r.diffs {
        for part in [&d.label, &d.before, &d.after] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
    }
    Some(
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// Record one event of run `e.run` (its run row must exist).
pub fn insert_event(tx: &Transaction<'_>, e: &Event) -> Result<(), String> {
    let run: &str = &e.run;
    let seq = i64::try_from(e.seq).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT OR REPLACE INTO events (run_id, seq, json) VALUES (?1, ?2, ?3)",
        params![run, seq, crate::report::json_line(e)],
    )
    .map_err(sql)?;
    match &e.body {
        RunEvent::TaskFinished(r) => {
            let status = serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            tx.execute(
                "INSERT OR REPLACE INTO tasks (run_id, seq, time, host, play, task, loc, item, handler, status, changed, duration_ms, diff_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    run,
                    seq,
                    millis(e.time),
                    r.host,
                    i64::try_from(r.play).unwrap_or(i64::MAX),
                    r.task,
                    r.loc,
                    r.item,
                    r.handler,
                    status,
                    r.changed,
                    i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
                    diff_hash(r),
                ],
            )
            .map_err(sql)?;
        }
        RunEvent::RunFinished { cancelled, .. } => {
            tx.execute(
                "UPDATE runs SET cancelled = ?2 WHERE id = ?1",
                params![run, cancelled],
            )
            .map_err(sql)?;
        }
        _ => {}
    }
    Ok(())
}

/// Record how a run ended.
pub fn end_run(
    conn: &Connection,
    id: &str,
    ended: SystemTime,
    exit_code: Option<i32>,
) -> Result<(), String> {
    conn.execute(
        "UPDATE runs SET ended = ?2, exit_code = ?3 WHERE id = ?1",
        params![id, millis(ended), exit_code],
    )
    .map_err(sql)?;
    Ok(())
}

/// Delete the runs `keep` does not keep (never `current`), with their tasks and events.
/// Returns how many runs were deleted.
pub fn prune(
    conn: &mut Connection,
    keep: Retention,
    now: SystemTime,
    current: &str,
) -> Result<usize, String> {
    let cutoff = if keep.days == 0 {
        i64::MIN
    } else {
        millis(now) - i64::from(keep.days) * 86_400_000
    };
    let limit = if keep.runs == 0 {
        -1
    } else {
        i64::from(keep.runs)
    };
    let tx = write_tx(conn)?;
    let n = tx
        .execute(
            "DELETE FROM runs WHERE id != ?1 AND (started < ?2 OR id NOT IN
                (SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT ?3))",
            params![current, cutoff, limit],
        )
        .map_err(sql)?;
    if n > 0 {
        tx.execute_batch(
            "DELETE FROM tasks WHERE run_id NOT IN (SELECT id FROM runs);
             DELETE FROM events WHERE run_id NOT IN (SELECT id FROM runs);",
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)?;
    Ok(n)
}

/// One run, as `history list` and `show` give it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRow {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub command: String,
    pub mode: String,
    pub user: String,
    pub machine: String,
    pub inventory: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// UTC, RFC 3339.
    pub started: String,
    /// `None`: the run has not ended (or its end was not recorded).
    pub ended: Option<String>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i64>,
    pub cancelled: bool,
    pub bundle_versions: Option<BTreeMap<String, String>>,
    /// Hosts with at least one changed task (would change, in check mode).
    pub hosts_changed: i64,
    pub tasks: i64,
}

const RUN_COLUMNS: &str =
    "r.id, r.parent, r.command, r.mode, r.user, r.machine, r.inventory, r.run_limit,
    r.started, r.ended, r.exit_code, r.cancelled, r.bundle_versions,
    (SELECT COUNT(DISTINCT host) FROM tasks t WHERE t.run_id = r.id AND t.status = 'changed'),
    (SELECT COUNT(*) FROM tasks t WHERE t.run_id = r.id AND t.item IS NULL)";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let started: i64 = r.get(8)?;
    let ended: Option<i64> = r.get(9)?;
    let versions: Option<String> = r.get(12)?;
    Ok(RunRow {
        id: r.get(0)?,
        parent: r.get(1)?,
        command: r.get(2)?,
        mode: r.get(3)?,
        user: r.get(4)?,
        machine: r.get(5)?,
        inventory: r.get(6)?,
        limit: r.get(7)?,
        started: utc_ms(started),
        ended: ended.map(utc_ms),
        duration_ms: ended.map(|e| (e - started).max(0)),
        exit_code: r.get(10)?,
        cancelled: r.get(11)?,
        bundle_versions: versions.and_then(|v| serde_json::from_str(&v).ok()),
        hosts_changed: r.get(13)?,
        tasks: r.get(14)?,
    })
}

/// Every row `query` returns, each read by `f`.
fn rows<T>(
    conn: &Connection,
    query: &str,
    params: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, String> {
    let mut st = conn.prepare(query).map_err(sql)?;
    let rows = st.query_map(params, f).map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

/// The newest runs first (`limit`: at most that many).
pub fn list(conn: &Connection, limit: Option<usize>) -> Result<Vec<RunRow>, String> {
    let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    rows(
        conn,
        &format!("SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.started DESC, r.id DESC LIMIT ?1"),
        [limit],
        run_row,
    )
}

/// The id `which` names: `last` (the newest run) or a unique prefix of an id.
pub fn resolve(conn: &Connection, which: &str) -> Result<String, String> {
    if which == "last" {
        return conn
            .query_row(
                "SELECT id FROM runs ORDER BY started DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?
            .ok_or_else(|| "no run recorded yet".to_string());
    }
    let ids: Vec<String> = rows(
        conn,
        "SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT 6",
        [which],
        |r| r.get(0),
    )?;
    match ids.as_slice() {
        [] => Err(format!("no run {which} in the history")),
        [one] => Ok(one.clone()),
        more => Err(format!(
            "{which} is ambiguous: it begins the ids {}{}",
            more[..more.len().min(5)].join(", "),
            if more.len() > 5 { ", ..." } else { "" }
        )),
    }
}

/// One task result of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub seq: i64,
    pub time: String,
    pub host: String,
    pub play: i64,
    pub task: String,
    pub loc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    pub handler: bool,
    pub status: String,
    pub changed: bool,
    pub duration_ms: i64,
    pub diff_hash: Option<String>,
}

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        seq: r.get(0)?,
        time: utc_ms(r.get(1)?),
        host: r.get(2)?,
        play: r.get(3)?,
        task: r.get(4)?,
        loc: r.get(5)?,
        item: r.get(6)?,
        handler: r.get(7)?,
        status: r.get(8)?,
        changed: r.get(9)?,
        duration_ms: r.get(10)?,
        diff_hash: r.get(11)?,
    })
}

const TASK_COLUMNS: &str =
    "seq, time, host, play, task, loc, item, handler, status, changed, duration_ms, diff_hash";

/// A run with its task results (in order), the runs it started, and its steps (a day-2
/// operation's `step` events).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetail {
    pub run: RunRow,
    pub tasks: Vec<TaskRow>,
    pub children: Vec<RunRow>,
    pub steps: Vec<Value>,
}

fn one_run(conn: &Connection, id: &str) -> Result<RunRow, String> {
    conn.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.id = ?1"),
        [id],
        run_row,
    )
    .optional()
    .map_err(sql)?
    .ok_or_else(|| format!("no run {id} in the history"))
}

fn tasks_of(conn: &Connection, id: &str) -> Result<Vec<TaskRow>, String> {
    rows(
        conn,
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?1 ORDER BY seq"),
        [id],
        task_row,
    )
}

pub fn show(conn: &Connection, id: &str) -> Result<RunDetail, String> {
    let run = one_run(conn, id)?;
    let tasks = tasks_of(conn, id)?;
    let children = rows(
        conn,
        &format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.parent = ?1 ORDER BY r.started, r.id"),
        [id],
        run_row,
    )?;
    let steps = rows(
        conn,
        "SELECT json FROM events WHERE run_id = ?1 AND json LIKE '%\"event\":\"step\"%' ORDER BY seq",
        [id],
        |r| r.get::<_, String>(0),
    )?
    .into_iter()
    .filter_map(|j| serde_json::from_str::<Value>(&j).ok())
    .filter(|v| v["event"] == "step")
    .collect();
    Ok(RunDetail {
        run,
        tasks,
        children,
        steps,
    })
}

/// How one task ended in one run, for `diff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Side {
    pub status: String,
    pub changed: bool,
    pub diff_hash: Option<String>,
}

/// A task whose result differs between two runs (`None`: it did not run in that one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskDiff {
    pub host: String,
    pub task: String,
    pub loc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    pub a: Option<Side>,
    pub b: Option<Side>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDiff {
    pub a: RunRow,
    pub b: RunRow,
    pub tasks: Vec<TaskDiff>,
}

/// The tasks whose status, changed flag or diff hash differ between runs `a` and `b`. A task
/// is the same task in both when host, play, location, handler flag and loop item match.
pub fn diff(conn: &Connection, a: &str, b: &str) -> Result<RunDiff, String> {
    type Key = (String, i64, String, bool, Option<String>);
    let index = |id: &str| -> Result<BTreeMap<Key, TaskRow>, String> {
        Ok(tasks_of(conn, id)?
            .into_iter()
            .map(|t| {
                (
                    (
                        t.host.clone(),
                        t.play,
                        t.loc.clone(),
                        t.handler,
                        t.item.clone(),
                    ),
                    t,
                )
            })
            .collect())
    };
    let (ta, tb) = (index(a)?, index(b)?);
    let side = |t: &TaskRow| Side {
        status: t.status.clone(),
        changed: t.changed,
        diff_hash: t.diff_hash.clone(),
    };
    let mut keys: Vec<&Key> = ta.keys().chain(tb.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut tasks = Vec::new();
    for k in keys {
        let (x, y) = (ta.get(k), tb.get(k));
        let (sx, sy) = (x.map(side), y.map(side));
        if sx == sy {
            continue;
        }
        let Some(t) = x.or(y) else { continue };
        tasks.push(TaskDiff {
            host: t.host.clone(),
            task: t.task.clone(),
            loc: t.loc.clone(),
            item: t.item.clone(),
            a: sx,
            b: sy,
        });
    }
    Ok(RunDiff {
        a: one_run(conn, a)?,
        b: one_run(conn, b)?,
        tasks,
    })
}

/// A task that would change (a check run: `plan`, an operate cycle) or changed (an apply run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriftRow {
    pub time: String,
    pub run: String,
    pub command: String,
    pub mode: String,
    pub host: String,
    pub task: String,
    pub loc: String,
    pub diff_hash: Option<String>,
}

/// Every changed (or would-change) task since `since` (ms since the epoch), newest first; loop
/// items are folded into their task's row.
pub fn drift(conn: &Connection, since: Option<i64>) -> Result<Vec<DriftRow>, String> {
    rows(
        conn,
        "SELECT t.time, t.run_id, r.command, r.mode, t.host, t.task, t.loc, t.diff_hash
             FROM tasks t JOIN runs r ON r.id = t.run_id
             WHERE t.status = 'changed' AND t.item IS NULL AND t.time >= ?1
             ORDER BY t.time DESC, t.run_id DESC, t.seq DESC",
        [since.unwrap_or(i64::MIN)],
        |r| {
            Ok(DriftRow {
                time: utc_ms(r.get(0)?),
                run: r.get(1)?,
                command: r.get(2)?,
                mode: r.get(3)?,
                host: r.get(4)?,
                task: r.get(5)?,
                loc: r.get(6)?,
                diff_hash: r.get(7)?,
            })
        },
    )
}

/// `--since`: a duration back from `now` (`90s`, `30m`, `24h`, `7d`) or a UTC time
/// (`2026-01-31`, `2026-01-31T12:00`, `2026-01-31T12:00:00Z`). Milliseconds since the epoch.
pub fn parse_since(s: &str, now: SystemTime) -> Result<i64, String> {
    let bad = || {
        format!(
            "--since {s}: give a duration (90s, 30m, 24h, 7d) or a UTC time (2026-01-31T12:00:00Z)"
        )
    };
    let t = s.trim();
    if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c)) {
        if let Ok(n) = t[..t.len() - 1].parse::<i64>() {
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 7 * 86_400,
            };
            return Ok(millis(now) - n.saturating_mul(secs).saturating_mul(1000));
        }
    }
    let t = t.trim_end_matches('Z');
    let (date, clock) = t.split_once(['T', ' ']).unwrap_or((t, "00:00:00"));
    let num = |v: Option<&str>| v.and_then(|v| v.parse::<i64>().ok()).ok_or_else(bad);
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next())?, num(d.next())?, num(d.next())?);
    let mut c = clock.split(':');
    let h = num(c.next())?;
    let mi = num(c.next())?;
    let sec: f64 = c.next().unwrap_or("0").parse().map_err(|_| bad())?;
    if d.next().is_some() || c.next().is_some() {
        return Err(bad());
    }
    let month = time::Month::try_from(u8::try_from(mo).map_err(|_| bad())?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(
        i32::try_from(y).map_err(|_| bad())?,
        month,
        u8::try_from(da).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    let clock = time::Time::from_hms(
        u8::try_from(h).map_err(|_| bad())?,
        u8::try_from(mi).map_err(|_| bad())?,
        0,
    )
    .map_err(|_| bad())?;
    let at = time::PrimitiveDateTime::new(date, clock).assume_utc();
    if !(0.0..60.0).contains(&sec) {
        return Err(bad());
    }
    Ok(at.unix_timestamp() * 1000 + (sec * 1000.0) as i64)
}

#[cfg(test)]
mod tests;
