//! `provisioner backup`: one archive (tar + gzip) of what a cluster cannot rebuild from its
//! inventory, and `backup --verify`, its offline check.
//!
//! A thin layer. `status`'s probes say who holds what; cluster-core says which member to take
//! (`cluster_core::backup`); the data crosses through the transport's streaming exec
//! ([`crate::exec::stream`]), host → a staging dir on local disk → the archive, never whole in
//! memory. The archive holds:
//! - `manifest.json` (first): format, bundle versions, the Mesos leader, ZooKeeper's last zxid
//!   and the member it came from, the creation time, and the sha256 and size of every file;
//! - `zookeeper/version-2/…`: the snapshot and transaction logs of the member with the highest
//!   zxid;
//! - `mesos/replicated_log/…`: the leader's replicated log, copied while the leader is frozen
//!   (SIGSTOP, then SIGCONT whatever happens: a trap on the host), so the copy is what a crash
//!   at that instant would leave, which LevelDB and the log's recovery are built for;
//! - `config/<host>/…`: each host's component config (ZooKeeper's conf dir, the Mesos flag
//!   dirs and units), without the files that carry secrets (JAAS, credentials);
//! - `state/…`: the inventory's state dir, secrets still encrypted (the key is outside it),
//!   the history as a consistent SQLite copy, without the run lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use cluster_core::backup as core;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::status;
use crate::error::Error;
use crate::model::inventory::Inventory;
use crate::shell::quote;

/// Default retention: the newest this many `backup-*.tar.gz` are kept in the output's dir.
pub const DEFAULT_KEEP: usize = 7;

/// The longest one host's part may take to stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub inventory: Vec<PathBuf>,
    pub stack_dir: Option<PathBuf>,
    /// The archive to write; `None`: [`default_dir`] with a timestamped name.
    pub output: Option<PathBuf>,
    /// Keep the newest N backups in the output's dir (0: keep all).
    pub keep: usize,
}

/// One progress step: its phase and what happens.
type Say<'a> = &'a dyn Fn(&str, &str);

/// One file in the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// RFC 3339, UTC.
    pub created: String,
    /// The inventory file's name (the cluster's).
    pub inventory: String,
    /// component → version, from the bundle the backup was made with.
    pub bundle: BTreeMap<String, String>,
    pub mesos_leader: String,
    pub zookeeper_member: String,
    /// ZooKeeper's last zxid on that member (`0x…`).
    pub zookeeper_zxid: String,
    /// How long the leader was frozen for the copy of its log.
    pub leader_frozen_ms: u64,
    /// Where the data came from on the hosts.
    pub sources: BTreeMap<String, String>,
    /// Every file but the manifest: archive path → size and sha256.
    pub files: BTreeMap<String, FileEntry>,
}

/// What a backup made.
#[derive(Clone, Debug)]
pub struct Made {
    pub path: PathBuf,
    pub bytes: u64,
    pub manifest: Manifest,
    pub elapsed: Duration,
    /// Older backups removed by the retention count.
    pub removed: Vec<PathBuf>,
}

/// `<inventory dir>/.<inventory stem>.backups/`, beside the state dir.
pub fn default_dir(inventory: &Path) -> PathBuf {
    let state = crate::state::state_dir(inventory);
    let name = state
        .file_name()
        .map(|n| n.to_string_lossy().replace(".state", ".backups"))
        .unwrap_or_else(|| ".inventory.backups".into());
    state.with_file_name(name)
}

/// `backup-YYYYMMDDTHHMMSSZ.tar.gz`.
pub fn default_name(t: SystemTime) -> String {
    format!("backup-{}.tar.gz", stamp(t))
}

/// `YYYYMMDDTHHMMSSZ` (UTC): sorts as time does.
pub fn stamp(t: SystemTime) -> String {
    // From `2026-01-31T12:00:00.123Z`.
    let text = crate::exec::events::utc_text(t);
    format!("{}Z", text[..19].replace(['-', ':'], ""))
}

/// A role variable as `host` sees it: the inventory's value, else the role's default. Only
/// plain values: a template is refused (backup reads where data lives, it does not render).
pub fn role_var(
    inv: &Inventory,
    roles: &Path,
    host: &str,
    role: &str,
    key: &str,
) -> Result<String, String> {
    let plain = |v: &Value, from: &str| -> Result<String, String> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("{key} ({from}) is not a string: {other}")),
        };
        if s.contains("{{") || s.contains("{%") {
            return Err(format!(
                "{key} ({from}) is a template ({s}); set it to a plain path in the inventory"
            ));
        }
        Ok(s)
    };
    if let Some(v) = inv.host_vars(host).get(key) {
        return plain(v, &format!("inventory, host {host}"));
    }
    let file = roles.join(role).join("defaults/main.yml");
    let defaults = crate::yaml::load_single(&file)
        .map_err(|d| d.to_string())?
        .to_json();
    match defaults.get(key) {
        Some(v) => plain(v, &format!("{}", file.display())),
        None => Err(format!(
            "{key} is neither in the inventory nor in {}",
            file.display()
        )),
    }
}

/// The roles' directory of the stack in use.
pub fn roles_dir(stack_dir: Option<&Path>) -> Result<PathBuf, Error> {
    Ok(crate::stack::load(stack_dir, &crate::stack::default_cache_root())?.dir)
}

/// Take the backup: one run in the history, its progress as `step` events to `sinks`. The
/// second value holds warnings to show (the history could not record it).
pub fn backup(
    opts: &Options,
    sinks: Vec<Box<dyn crate::exec::events::Sink>>,
) -> Result<(Result<Made, Error>, Vec<String>), Error> {
    let inv_path = opts
        .inventory
        .first()
        .ok_or_else(|| Error::Usage("backup needs an inventory (-i)".into()))?;
    let op = super::operation::Operation::start("backup", "apply", inv_path, sinks)?;
    let made = take(opts, &|phase: &str, msg: &str| op.ok(phase, msg));
    let exit = match &made {
        Ok(m) => {
            op.ok(
                "done",
                &format!(
                    "{} ({} bytes, {} files) in {:.1} s",
                    m.path.display(),
                    m.bytes,
                    m.manifest.files.len(),
                    m.elapsed.as_secs_f64()
                ),
            );
            crate::error::ExitCode::Ok
        }
        Err(e) => e.exit_code(),
    };
    Ok((made, op.finish(exit)?))
}

fn take(opts: &Options, say: Say<'_>) -> Result<Made, Error> {
    let started = Instant::now();
    let inv_path = opts
        .inventory
        .first()
        .ok_or_else(|| Error::Usage("backup needs an inventory (-i)".into()))?;
    let inv = crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
    let roles = roles_dir(opts.stack_dir.as_deref())?;
    let g = status::groups(&inv);
    let r = status::status(&opts.inventory, opts.stack_dir.clone())?;
    let (zk_host, zxid) = core::zookeeper_source(&r.view).map_err(Error::Usage)?;
    let leader = core::log_source(&r.view).map_err(Error::Usage)?;
    let var = |host: &str, role: &str, key: &str| {
        role_var(&inv, &roles, host, role, key).map_err(|e| Error::Usage(format!("{host}: {e}")))
    };
    let zk_data = var(&zk_host, "zookeeper", "zookeeper_data_dir")?;
    let work_dir = var(&leader, "mesos_master", "mesos_master_work_dir")?;
    let master_unit = var(&leader, "mesos_master", "mesos_master_service")?;

    let (dir, path) = match &opts.output {
        Some(p) => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            (dir, p.clone())
        }
        None => {
            let dir = default_dir(inv_path);
            (dir.clone(), dir.join(default_name(SystemTime::now())))
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Environment(format!("cannot create {}: {e}", dir.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".backup-staging-")
        .tempdir_in(&dir)
        .map_err(|e| Error::Environment(format!("cannot stage in {}: {e}", dir.display())))?;
    let stage = staging.path();
    let streamer = crate::exec::stream::Streamer::new(&opts.inventory)?;
    let fail = |e: String| Error::Environment(format!("backup failed, nothing was written: {e}"));

    say(
        "zookeeper",
        &format!(
            "{zk_host} has the highest zxid ({zxid:#x}); streaming {zk_data}/{}",
            core::ZOOKEEPER_DATA
        ),
    );
    // ZooKeeper keeps appending to its transaction log: GNU tar's exit 1 ("file changed as
    // we read it") is expected; the log's records carry checksums and a cut last record is
    // dropped on load, as after a crash.
    let script = format!(
        "set -e; cd {}; tar --warning=no-file-changed -cf - {} || [ $? -eq 1 ]",
        quote(&zk_data),
        core::ZOOKEEPER_DATA
    );
    fetch_tree(
        &streamer,
        &zk_host,
        &script,
        stage,
        &stage.join(core::ZOOKEEPER_DIR),
    )
    .map_err(fail)?;

    say(
        "mesos",
        &format!(
            "freezing the leader {leader} (SIGSTOP) while its {work_dir}/{} is copied",
            core::REPLICATED_LOG
        ),
    );
    let stderr = fetch_tree(
        &streamer,
        &leader,
        &frozen_copy_script(&master_unit, &work_dir),
        stage,
        &stage.join(core::MESOS_LOG_DIR),
    )
    .map_err(fail)?;
    let frozen_ms = stderr
        .lines()
        .find_map(|l| l.strip_prefix("frozen_ms="))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_default();
    say(
        "mesos",
        &format!("the leader ran again after {frozen_ms} ms"),
    );

    for host in inv.group_hosts("all") {
        let mut paths: Vec<String> = Vec::new();
        let has = |l: &[String]| l.iter().any(|h| h == host);
        if has(&g.zookeeper) {
            paths.push(var(host, "zookeeper", "zookeeper_conf_dir")?);
        }
        for (group, role, prefix) in [
            (&g.masters, "mesos_master", "mesos_master"),
            (&g.agents, "mesos_agent", "mesos_agent"),
        ] {
            if has(group) {
                paths.push(var(host, role, &format!("{prefix}_flags_dir"))?);
                let unit = var(host, role, &format!("{prefix}_service"))?;
                paths.push(format!("/etc/systemd/system/{unit}.service"));
                paths.push(format!("/etc/systemd/system/{unit}.service.d"));
            }
        }
        if paths.is_empty() {
            continue;
        }
        say("config", host);
        fetch_tree(
            &streamer,
            host,
            &config_script(&paths),
            stage,
            &stage.join(core::CONFIG_DIR).join(host),
        )
        .map_err(fail)?;
    }
    streamer.close();

    say("state", "copying the state dir (secrets stay encrypted)");
    copy_state_dir(
        &crate::state::state_dir(inv_path),
        &stage.join(core::STATE_DIR),
    )
    .map_err(fail)?;

    let bundle = crate::stack::builtin_bundle()?;
    let manifest = Manifest {
        format: core::FORMAT,
        created: crate::exec::events::utc_text(SystemTime::now()),
        inventory: inv_path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        bundle: bundle
            .components
            .iter()
            .map(|(k, c)| (k.clone(), c.value.version.value.clone()))
            .collect(),
        mesos_leader: leader.clone(),
        zookeeper_member: zk_host.clone(),
        zookeeper_zxid: format!("{zxid:#x}"),
        leader_frozen_ms: frozen_ms,
        sources: [
            ("zookeeper".to_string(), format!("{zk_host}:{zk_data}")),
            ("mesos".to_string(), format!("{leader}:{work_dir}")),
        ]
        .into(),
        files: BTreeMap::new(),
    };
    say("archive", "hashing and writing");
    let (manifest, bytes) = write_archive(stage, manifest, &path).map_err(fail)?;
    drop(staging);
    let removed = if opts.keep > 0 {
        retain(&dir, opts.keep, &path)
    } else {
        Vec::new()
    };
    Ok(Made {
        path,
        bytes,
        manifest,
        elapsed: started.elapsed(),
        removed,
    })
}

/// The host script that copies the replicated log while the master is frozen: SIGSTOP, a
/// local copy (fast, no network in between), SIGCONT from a trap whatever happens, then the
/// copy is streamed. The freeze's length goes to stderr (`frozen_ms=N`).
pub fn frozen_copy_script(unit: &str, work_dir: &str) -> String {
    format!(
        r#"set -eu
t=$(mktemp /tmp/provisioner-backup.XXXXXX)
frozen=0
thaw() {{ if [ "$frozen" = 1 ]; then systemctl kill --signal=SIGCONT {unit} || true; frozen=0; fi; }}
trap 'thaw; rm -f "$t"' EXIT
trap 'exit 1' HUP INT TERM PIPE
test -d {dir}/{log}
start=$(date +%s%N)
frozen=1
systemctl kill --signal=SIGSTOP {unit}
tar -C {dir} -cf "$t" {log}
thaw
end=$(date +%s%N)
echo "frozen_ms=$(( (end - start) / 1000000 ))" >&2
cat "$t"
"#,
        unit = quote(unit),
        dir = quote(work_dir),
        log = core::REPLICATED_LOG,
    )
}

/// The host script that tars a host's component config (symlinks followed, as Debian's
/// alternatives link `/etc/zookeeper/conf`), without the files that carry secrets.
fn config_script(paths: &[String]) -> String {
    let list: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    format!(
        "set -e; set --; for p in {}; do [ -e \"$p\" ] && set -- \"$@\" \"${{p#/}}\"; done; \
         cd /; [ $# -gt 0 ] || exec tar -cf - -T /dev/null; \
         tar -chf - --exclude='*jaas*' --exclude='*secret*' --exclude='*credential*' \"$@\"",
        list.join(" ")
    )
}

/// Stream `script`'s stdout (a tar) to a file in `stage`, then unpack it into `into`.
/// Returns the script's stderr.
fn fetch_tree(
    streamer: &crate::exec::stream::Streamer,
    host: &str,
    script: &str,
    stage: &Path,
    into: &Path,
) -> Result<String, String> {
    let tmp = tempfile::NamedTempFile::new_in(stage).map_err(|e| e.to_string())?;
    let file = tmp.reopen().map_err(|e| e.to_string())?;
    let stderr = streamer.download(host, script, file, STREAM_TIMEOUT)?;
    std::fs::create_dir_all(into).map_err(|e| e.to_string())?;
    let f = File::open(tmp.path()).map_err(|e| e.to_string())?;
    let mut a = tar::Archive::new(std::io::BufReader::new(f));
    a.set_preserve_mtime(true);
    a.unpack(into)
        .map_err(|e| format!("{host}: unpacking what it sent: {e}"))?;
    Ok(stderr)
}

/// Copy the state dir: everything but the run lock; the history through SQLite's own
/// consistent copy (`VACUUM INTO`), so a run writing meanwhile leaves no torn file.
fn copy_state_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    if !from.is_dir() {
        return Ok(());
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = from.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().to_string();
            let rel_child = rel.join(&name);
            let ft = e.file_type().map_err(|e| e.to_string())?;
            if ft.is_dir() {
                std::fs::create_dir_all(to.join(&rel_child)).map_err(|e| e.to_string())?;
                stack.push(rel_child);
            } else if ft.is_file() {
                if rel.as_os_str().is_empty()
                    && (name == "run.lock" || name.starts_with("history.db"))
                {
                    continue;
                }
                std::fs::copy(e.path(), to.join(&rel_child))
                    .map_err(|err| format!("{}: {err}", e.path().display()))?;
            }
        }
    }
    let history = crate::history::db_path(from);
    if history.exists() {
        let conn = rusqlite::Connection::open_with_flags(
            &history,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .map_err(|e| format!("{}: {e}", history.display()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let dest = to.join("history.db");
        conn.execute("VACUUM INTO ?1", [dest.to_string_lossy().as_ref()])
            .map_err(|e| format!("copying {}: {e}", history.display()))?;
    }
    Ok(())
}

/// Every regular file under `root`, as archive paths (`/`-separated), sorted.
fn files_under(root: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let ft = e.file_type().map_err(|e| e.to_string())?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .map_err(|e| e.to_string())?
                    .to_path_buf();
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A writer that hashes what passes through it (and counts it).
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_file(path: &Path) -> Result<FileEntry, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Hashing {
        inner: std::io::sink(),
        hash: Sha256::new(),
        size: 0,
    };
    std::io::copy(&mut f, &mut h).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(FileEntry {
        size: h.size,
        sha256: hex(&h.hash.finalize()),
    })
}

/// Hash every file under `stage`, then write the archive (manifest first) atomically to
/// `path`: a 0600 temp file beside it, fsync, rename. Returns the manifest and the size.
fn write_archive(stage: &Path, mut m: Manifest, path: &Path) -> Result<(Manifest, u64), String> {
    let files = files_under(stage)?;
    for f in &files {
        m.files.insert(f.clone(), hash_file(&stage.join(f))?);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".backup-")
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = tmp.reopen().map_err(|e| e.to_string())?;
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(256 * 1024, out),
        flate2::Compression::default(),
    );
    let mut b = tar::Builder::new(gz);
    b.mode(tar::HeaderMode::Deterministic);
    let json = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    b.append_data(&mut header, core::MANIFEST, &json[..])
        .map_err(|e| e.to_string())?;
    for f in &files {
        let mut file = File::open(stage.join(f)).map_err(|e| e.to_string())?;
        b.append_file(f, &mut file)
            .map_err(|e| format!("{f}: {e}"))?;
    }
    let gz = b.into_inner().map_err(|e| e.to_string())?;
    let buf = gz.finish().map_err(|e| e.to_string())?;
    let out = buf.into_inner().map_err(|e| e.to_string())?;
    out.sync_all().map_err(|e| e.to_string())?;
    let bytes = out.metadata().map_err(|e| e.to_string())?.len();
    tmp.persist(path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((m, bytes))
}

/// Keep the newest `keep` `backup-*.tar.gz` in `dir` (by name: the names are timestamps);
/// `just_made` is never removed. Returns what was removed.
fn retain(dir: &Path, keep: usize, just_made: &Path) -> Vec<PathBuf> {
    let mut ours: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("backup-") && n.ends_with(".tar.gz"))
        })
        .collect();
    ours.sort();
    let mut removed = Vec::new();
    let excess = ours.len().saturating_sub(keep);
    for p in ours.into_iter().take(excess) {
        if p != just_made && std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// An archive path that stays inside the directory it is unpacked into.
fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Read an archive and check it against its manifest: every file's size and sha256, none
/// missing, none extra, a known format. With `extract_to`, every file is also written there
/// (as it is hashed: one pass). `Err` says what is wrong, for the operator.
pub fn read_archive(file: &Path, extract_to: Option<&Path>) -> Result<Manifest, String> {
    let f = File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(256 * 1024, f));
    let mut a = tar::Archive::new(gz);
    let unreadable =
        |e: std::io::Error| format!("{} is damaged or not a backup archive: {e}", file.display());
    let mut entries = a.entries().map_err(unreadable)?;
    let first = entries
        .next()
        .ok_or_else(|| format!("{} is empty", file.display()))?
        .map_err(unreadable)?;
    let name = first
        .path()
        .map_err(unreadable)?
        .to_string_lossy()
        .to_string();
    if name != core::MANIFEST {
        return Err(format!(
            "{} does not start with {}: not a backup archive",
            file.display(),
            core::MANIFEST
        ));
    }
    let mut text = Vec::new();
    first
        .take(16 * 1024 * 1024)
        .read_to_end(&mut text)
        .map_err(unreadable)?;
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: its manifest is unreadable: {e}", file.display()))?;
    if m.format != core::FORMAT {
        return Err(format!(
            "{}: archive format {} is not the one this version reads ({})",
            file.display(),
            m.format,
            core::FORMAT
        ));
    }
    if let Some(bad) = m.files.keys().find(|p| !safe_path(p)) {
        return Err(format!(
            "{}: unsafe path in the manifest: {bad}",
            file.display()
        ));
    }
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for e in entries {
        let mut e = e.map_err(unreadable)?;
        if e.header().entry_type().is_dir() {
            continue;
        }
        let name = e.path().map_err(unreadable)?.to_string_lossy().to_string();
        let Some(want) = m.files.get(&name) else {
            return Err(format!(
                "{}: {name} is in the archive but not in its manifest",
                file.display()
            ));
        };
        let sink: Box<dyn Write> = match extract_to {
            Some(root) => {
                let p = root.join(&name);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                Box::new(File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?)
            }
            None => Box::new(std::io::sink()),
        };
        let mut h = Hashing {
            inner: sink,
            hash: Sha256::new(),
            size: 0,
        };
        std::io::copy(&mut e, &mut h).map_err(unreadable)?;
        let got = hex(&h.hash.finalize());
        if h.size != want.size || got != want.sha256 {
            return Err(format!(
                "{}: {name} does not match its manifest (size {} vs {}, sha256 {} vs {})",
                file.display(),
                h.size,
                want.size,
                got,
                want.sha256
            ));
        }
        seen.insert(name, ());
    }
    // To the end of the gzip stream, so its CRC and length are checked too.
    std::io::copy(&mut a.into_inner(), &mut std::io::sink()).map_err(unreadable)?;
    let missing: Vec<&String> = m.files.keys().filter(|k| !seen.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: {} file(s) of the manifest are missing, e.g. {}",
            file.display(),
            missing.len(),
            missing[0]
        ));
    }
    Ok(m)
}

/// `backup --verify FILE`: offline, every checksum and size against the manifest.
pub fn verify(file: &Path) -> Result<Manifest, String> {
    read_archive(file, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: core::FORMAT,
            created: "2026-01-01T00:00:00.000Z".into(),
            inventory: "lab.yml".into(),
            bundle: BTreeMap::new(),
            mesos_leader: "m1".into(),
            zookeeper_member: "m2".into(),
            zookeeper_zxid: "0x10".into(),
            leader_frozen_ms: 3,
            sources: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    fn staged() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let stage = d.path().join("stage");
        std::fs::create_dir_all(stage.join("zookeeper/version-2")).unwrap();
        std::fs::create_dir_all(stage.join("mesos/replicated_log")).unwrap();
        std::fs::write(stage.join("zookeeper/version-2/snapshot.1"), b"snap").unwrap();
        // Incompressible, so a byte flipped in the middle of the file lands in its data.
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(stage.join("mesos/replicated_log/000003.log"), &noise).unwrap();
        (d, stage)
    }

    #[test]
    fn an_archive_verifies_and_unpacks_to_what_was_staged() {
        let (d, stage) = staged();
        let out = d.path().join("backup-x.tar.gz");
        let (m, bytes) = write_archive(&stage, manifest(), &out).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(verify(&out).unwrap(), m);
        let to = d.path().join("x");
        read_archive(&out, Some(&to)).unwrap();
        assert_eq!(
            std::fs::read(to.join("zookeeper/version-2/snapshot.1")).unwrap(),
            b"snap"
        );
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let (d, stage) = staged();
        let out = d.path().join("backup-x.tar.gz");
        write_archive(&stage, manifest(), &out).unwrap();
        let mut bytes = std::fs::read(&out).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&out, &bytes).unwrap();
        assert!(verify(&out).is_err());
    }

    #[test]
    fn a_flipped_byte_in_the_gzip_trailer_is_refused() {
        // The tar reader stops at the end-of-archive blocks; the gzip CRC behind them is only
        // checked when the stream is read to its end.
        let (d, stage) = staged();
        let out = d.path().join("backup-x.tar.gz");
        write_archive(&stage, manifest(), &out).unwrap();
        let mut bytes = std::fs::read(&out).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 0x01; // inside the CRC32 of the trailer
        std::fs::write(&out, &bytes).unwrap();
        assert!(verify(&out).is_err());
    }

    #[test]
    fn a_file_changed_after_hashing_is_refused_by_name() {
        // The manifest says one thing and the archive holds another (a tampered manifest or a
        // file that changed under the backup): the message names the file.
        let (d, stage) = staged();
        let out = d.path().join("backup-x.tar.gz");
        let mut m = manifest();
        m.files.insert(
            "zookeeper/version-2/snapshot.1".into(),
            FileEntry {
                size: 4,
                sha256: "00".repeat(32),
            },
        );
        // write_archive recomputes, so tamper by hand: write, then rewrite with a bad manifest.
        let (mut good, _) = write_archive(&stage, manifest(), &out).unwrap();
        good.files
            .get_mut("zookeeper/version-2/snapshot.1")
            .unwrap()
            .sha256 = "00".repeat(32);
        let files = files_under(&stage).unwrap();
        let f = File::create(&out).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::fast(),
        ));
        let json = serde_json::to_vec(&good).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(json.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &json[..]).unwrap();
        for f in &files {
            b.append_path_with_name(stage.join(f), f).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        let err = verify(&out).unwrap_err();
        assert!(err.contains("snapshot.1 does not match"), "{err}");
        drop(m);
    }

    #[test]
    fn retention_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "backup-20260101T000000Z.tar.gz",
            "backup-20260102T000000Z.tar.gz",
            "backup-20260103T000000Z.tar.gz",
            "other.tar.gz",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let newest = d.path().join("backup-20260103T000000Z.tar.gz");
        let removed = retain(d.path(), 2, &newest);
        assert_eq!(
            removed,
            vec![d.path().join("backup-20260101T000000Z.tar.gz")]
        );
        assert!(d.path().join("other.tar.gz").exists());
    }

    #[test]
    fn backups_go_beside_the_state_dir() {
        assert_eq!(
            default_dir(Path::new("inv/prod.yml")),
            PathBuf::from("inv/.prod.backups")
        );
        assert_eq!(
            default_name(SystemTime::UNIX_EPOCH),
            "backup-19700101T000000Z.tar.gz"
        );
    }

    #[test]
    fn the_leader_is_thawed_by_a_trap() {
        let s = frozen_copy_script("mesos-master", "/var/lib/mesos/master");
        let stop = s.find("SIGSTOP").unwrap();
        assert!(s.find("trap 'thaw").unwrap() < stop, "{s}");
        assert!(s[stop..].contains("thaw\n"), "{s}");
    }

    /// Runs a host script here with `sh`, a fake `systemctl` (it logs its arguments) and
    /// optionally a failing `tar` first on PATH: (exit code, stdout, stderr, systemctl's log).
    fn run_here(script: &str, failing_tar: bool) -> (i32, Vec<u8>, String, String) {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = d.path().join("systemctl.log");
        let mut fakes = vec![(
            "systemctl",
            format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
        )];
        if failing_tar {
            fakes.push((
                "tar",
                "#!/bin/sh\necho 'tar: boom' >&2; exit 2\n".to_string(),
            ));
        }
        for (name, text) in fakes {
            std::fs::write(bin.join(name), text).unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .env("PATH", path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).to_string(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    fn tar_names(bytes: &[u8]) -> Vec<String> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn the_frozen_copy_stops_copies_resumes_then_streams() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("master");
        std::fs::create_dir_all(work.join("replicated_log")).unwrap();
        std::fs::write(work.join("replicated_log/000003.log"), b"entries").unwrap();
        let (code, stdout, stderr, log) = run_here(
            &frozen_copy_script("mesos-master", &work.display().to_string()),
            false,
        );
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            log,
            "kill --signal=SIGSTOP mesos-master\nkill --signal=SIGCONT mesos-master\n"
        );
        assert!(stderr.contains("frozen_ms="), "{stderr}");
        let names = tar_names(&stdout);
        assert!(
            names.contains(&"replicated_log/000003.log".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn the_leader_resumes_when_the_copy_fails() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("master");
        std::fs::create_dir_all(work.join("replicated_log")).unwrap();
        let script = frozen_copy_script("mesos-master", &work.display().to_string());
        let (code, stdout, _, log) = run_here(&script, true);
        assert_ne!(code, 0);
        assert!(stdout.is_empty());
        assert_eq!(
            log,
            "kill --signal=SIGSTOP mesos-master\nkill --signal=SIGCONT mesos-master\n"
        );
        // No log to copy: refused before the leader is frozen.
        let (code, _, _, log) = run_here(
            &frozen_copy_script("mesos-master", &d.path().join("none").display().to_string()),
            false,
        );
        assert_ne!(code, 0);
        assert_eq!(log, "");
    }

    #[test]
    fn config_is_copied_without_secrets_and_missing_paths_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("zoo.cfg"), b"tickTime=2000").unwrap();
        std::fs::write(conf.join("jaas.conf"), b"password").unwrap();
        // A host with none of them (its component not installed yet) sends an empty archive.
        let (code, stdout, stderr, _) = run_here(
            &config_script(&[d.path().join("absent").display().to_string()]),
            false,
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(tar_names(&stdout).is_empty());
        let paths = vec![
            conf.display().to_string(),
            d.path().join("absent").display().to_string(),
        ];
        let (code, stdout, stderr, _) = run_here(&config_script(&paths), false);
        assert_eq!(code, 0, "{stderr}");
        let names = tar_names(&stdout);
        assert!(
            names.iter().any(|n| n.ends_with("conf/zoo.cfg")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("jaas")), "{names:?}");
    }

    #[test]
    fn role_vars_come_from_the_inventory_else_the_role_defaults() {
        let inv = crate::day2::status::tests::inventory(
            "[masters]\nm1 mesos_master_work_dir=/data/m\nm2\n",
        );
        let roles = crate::stack::extract(&tempfile::tempdir().unwrap().keep()).unwrap();
        assert_eq!(
            role_var(&inv, &roles, "m1", "mesos_master", "mesos_master_work_dir").unwrap(),
            "/data/m"
        );
        assert_eq!(
            role_var(&inv, &roles, "m2", "mesos_master", "mesos_master_work_dir").unwrap(),
            "/var/lib/mesos/master"
        );
        assert!(
            role_var(&inv, &roles, "m2", "mesos_master", "mesos_master_port")
                .unwrap_err()
                .contains("template")
        );
    }
}
