//! `provisioner restore`: put a [`super::backup`] archive back on the cluster.
//!
//! A thin layer, in the order the Mesos docs give for a replicated-log restore
//! (`cluster_core::backup`): every checksum is verified first (the archive is unpacked to a
//! local staging dir as it is hashed; a mismatch refuses before any host is touched). A serving
//! ZooKeeper quorum or an elected master refuses too, unless `--stop-cluster`. Then:
//! 1. stop agents, masters, ZooKeeper (in that order; the run API, recorded in the history);
//! 2. on every ZooKeeper member: move `version-2` aside (`version-2.pre-restore-<time>`, never
//!    deleted) and unpack the backed-up one (streamed; owner of the data dir);
//! 3. on every master: the same for `replicated_log`;
//! 4. start ZooKeeper; gate: a serving quorum;
//! 5. start the masters with `--log_auto_initialize=false` (a flag file, removed once they
//!    have recovered); gate: one leader, every master recovered;
//! 6. start the agents; gate: every inventory agent re-registered.
//!
//! A failure stops at that step and says where the moved-aside data is and how to resume (run
//! it again) or undo.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cluster_core::backup as core;
use cluster_core::health::{majority, ClusterView};

use super::backup::{read_archive, role_var, roles_dir, stamp};
use super::node::wait;
pub use super::node::Ended;
use super::operation::Operation;
use super::status;
use crate::error::Error;
use crate::shell::quote;

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub inventory: Vec<PathBuf>,
    pub stack_dir: Option<PathBuf>,
    pub file: PathBuf,
    /// Stop a running cluster first.
    pub stop_cluster: bool,
    /// The plan was confirmed.
    pub yes: bool,
    /// How long each gate may stay red.
    pub gate_timeout: Duration,
}

const STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

/// `(host, value)` pairs: a data dir, a unit, a script.
type PerHost = Vec<(String, String)>;

/// One member's paths, read from the inventory and the roles.
struct Paths {
    zk: Vec<(String, String)>,
    zk_unit: String,
    /// host → (work dir, flags dir, unit)
    masters: Vec<(String, String, String, String)>,
    agent_units: Vec<(String, String)>,
}

fn paths(opts: &Options, g: &status::Groups) -> Result<Paths, Error> {
    let inv = crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
    let roles = roles_dir(opts.stack_dir.as_deref())?;
    let var = |host: &str, role: &str, key: &str| {
        role_var(&inv, &roles, host, role, key).map_err(|e| Error::Usage(format!("{host}: {e}")))
    };
    let mut p = Paths {
        zk: Vec::new(),
        zk_unit: String::new(),
        masters: Vec::new(),
        agent_units: Vec::new(),
    };
    for h in &g.zookeeper {
        p.zk.push((h.clone(), var(h, "zookeeper", "zookeeper_data_dir")?));
        p.zk_unit = var(h, "zookeeper", "zookeeper_service")?;
    }
    for h in &g.masters {
        p.masters.push((
            h.clone(),
            var(h, "mesos_master", "mesos_master_work_dir")?,
            var(h, "mesos_master", "mesos_master_flags_dir")?,
            var(h, "mesos_master", "mesos_master_service")?,
        ));
    }
    for h in &g.agents {
        p.agent_units
            .push((h.clone(), var(h, "mesos_agent", "mesos_agent_service")?));
    }
    Ok(p)
}

/// The host script that moves `<dir>/<name>` aside and unpacks the tar on stdin in its place,
/// owned like `dir`. Prints `restored`.
pub fn put_back_script(dir: &str, name: &str, aside: &str) -> String {
    format!(
        r#"set -eu
d={dir}
test -d "$d"
owner=$(stat -c %u:%g "$d")
if [ -e "$d/{name}" ]; then mv "$d/{name}" "$d/{aside}"; fi
tar -xf - -C "$d" --no-same-owner
test -d "$d/{name}"
chown -R "$owner" "$d/{name}"
echo restored
"#,
        dir = quote(dir),
    )
}

/// Tar `stage/<part>/<name>` as `<name>/…` into a file in `stage`, for upload.
fn pack(stage: &Path, part: &str, name: &str) -> Result<tempfile::NamedTempFile, String> {
    let tmp = tempfile::NamedTempFile::new_in(stage).map_err(|e| e.to_string())?;
    let f = tmp.reopen().map_err(|e| e.to_string())?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    b.mode(tar::HeaderMode::Deterministic);
    let src = stage.join(part).join(name);
    if !src.is_dir() {
        return Err(format!("the archive holds no {part}/{name}"));
    }
    b.append_dir_all(name, &src).map_err(|e| e.to_string())?;
    b.into_inner()
        .map_err(|e| e.to_string())?
        .into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| e.to_string())?;
    Ok(tmp)
}

/// Restore the archive (see the module docs): one run in the history, its progress as `step`
/// events to `sinks`. The second value holds warnings to show (the history could not record
/// it).
pub fn restore(
    opts: &Options,
    sinks: Vec<Box<dyn crate::exec::events::Sink>>,
) -> Result<(Ended, Vec<String>), Error> {
    let inv_path = opts
        .inventory
        .first()
        .ok_or_else(|| Error::Usage("restore needs an inventory (-i)".into()))?;
    let op = Operation::start("restore", "apply", inv_path, sinks)?;
    let ended = steps(opts, &op);
    let exit = match &ended {
        Ok(e) => e.exit_code(),
        Err(e) => e.exit_code(),
    };
    let warnings = op.finish(exit)?;
    Ok((ended?, warnings))
}

fn steps(opts: &Options, op: &Operation) -> Result<Ended, Error> {
    let inv = crate::resolve::inventory::load_sources(&opts.inventory).map_err(Error::Invalid)?;
    let g = status::groups(&inv);
    let p = paths(opts, &g)?;
    let dir = opts
        .file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".restore-staging-")
        .tempdir_in(dir)
        .map_err(|e| Error::Environment(format!("cannot stage in {}: {e}", dir.display())))?;
    let stage = staging.path();
    op.ok(
        "verify",
        &format!("verifying every checksum of {}", opts.file.display()),
    );
    let m = match read_archive(&opts.file, Some(stage)) {
        Ok(m) => m,
        Err(why) => {
            return Ok(Ended::Refused(format!(
                "the archive failed verification: {why}"
            )))
        }
    };
    op.ok(
        "verify",
        &format!(
            "archive OK: {} files, made {} (leader {}, ZooKeeper zxid {} from {})",
            m.files.len(),
            m.created,
            m.mesos_leader,
            m.zookeeper_zxid,
            m.zookeeper_member
        ),
    );
    let r = status::status(&opts.inventory, opts.stack_dir.clone())?;
    let blockers = core::restore_blockers(&r.view);
    if !blockers.is_empty() && !opts.stop_cluster {
        return Ok(Ended::Refused(format!(
            "{}; a restore replaces the data of a stopped cluster: stop it first, or pass --stop-cluster",
            blockers.join("; ")
        )));
    }
    let ts = stamp(SystemTime::now());
    let aside = |name: &str| format!("{name}.pre-restore-{ts}");
    let hosts = |v: &[String]| v.join(", ");
    let plan = [
        format!(
            "stop mesos-agent on {}, then mesos-master on {}, then ZooKeeper on {}{}",
            hosts(&g.agents),
            hosts(&g.masters),
            hosts(&g.zookeeper),
            if blockers.is_empty() {
                String::new()
            } else {
                format!(" (the cluster runs: {})", blockers.join("; "))
            }
        ),
        format!(
            "on {}: move <zookeeper_data_dir>/{} aside to {} (never deleted), unpack the backup's ({})",
            hosts(&g.zookeeper),
            core::ZOOKEEPER_DATA,
            aside(core::ZOOKEEPER_DATA),
            m.zookeeper_zxid
        ),
        format!(
            "on {}: move <mesos_master_work_dir>/{} aside to {}, unpack the backup's (leader {}'s)",
            hosts(&g.masters),
            core::REPLICATED_LOG,
            aside(core::REPLICATED_LOG),
            m.mesos_leader
        ),
        "start ZooKeeper; gate: a serving quorum".to_string(),
        "start the masters with --log_auto_initialize=false; gate: one leader, every master recovered".to_string(),
        "start the agents; gate: every agent re-registered".to_string(),
    ];
    let mut text: Vec<String> = plan
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}. {p}", i + 1))
        .collect();
    if !opts.yes {
        text.push("nothing was changed; run again with --yes to do it".into());
    }
    op.ok("plan", &text.join("\n"));
    if !opts.yes {
        return Ok(Ended::Planned);
    }

    let undo = format!(
        "the data that was in place is in {} (ZooKeeper members) and {} (masters), never deleted. \
         To resume, run the same restore again with --stop-cluster --yes. To undo, stop the \
         services and move those directories back in place of the restored ones",
        aside(core::ZOOKEEPER_DATA),
        aside(core::REPLICATED_LOG)
    );
    let failed = |step: &str, why: String| {
        Ok(Ended::Failed(format!(
            "restore stopped at \"{step}\": {why}. {undo}"
        )))
    };

    // 1. Stop: agents, masters, ZooKeeper.
    for component in core::STOP_ORDER {
        let units: Vec<(String, String)> = match component {
            "mesos_agent" => p.agent_units.clone(),
            "mesos_master" => p
                .masters
                .iter()
                .map(|(h, _, _, u)| (h.clone(), u.clone()))
                .collect(),
            _ => {
                p.zk.iter()
                    .map(|(h, _)| (h.clone(), p.zk_unit.clone()))
                    .collect()
            }
        };
        let step = format!("stop {component}");
        if let Err(why) = on_hosts(opts, &step, &units, |u| {
            format!("systemctl stop {} && echo done", quote(u))
        }) {
            return failed(&step, why);
        }
        op.ok(
            "stop",
            &format!(
                "{component} on {}",
                hosts(&units.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>())
            ),
        );
    }

    // 2./3. Put the data back, streamed to each host.
    let streamer = crate::exec::stream::Streamer::new(&opts.inventory)?;
    let parts: Vec<(&str, &str, PerHost)> = vec![
        (core::ZOOKEEPER_DIR, core::ZOOKEEPER_DATA, p.zk.clone()),
        (
            core::MESOS_LOG_DIR,
            core::REPLICATED_LOG,
            p.masters
                .iter()
                .map(|(h, w, _, _)| (h.clone(), w.clone()))
                .collect(),
        ),
    ];
    for (part, name, members) in parts {
        let step = format!("restore {name}");
        let packed = match pack(stage, part, name) {
            Ok(t) => t,
            Err(why) => return failed(&step, why),
        };
        for (host, data_dir) in members {
            let file = match packed.reopen() {
                Ok(f) => f,
                Err(e) => return failed(&step, e.to_string()),
            };
            let script = put_back_script(&data_dir, name, &aside(name));
            match streamer.upload(&host, &script, file, STREAM_TIMEOUT) {
                Ok(out) if out.trim() == "restored" => op.ok(
                    "restore",
                    &format!(
                        "{host}: {data_dir}/{name} restored (the old one is {data_dir}/{})",
                        aside(name)
                    ),
                ),
                Ok(out) => return failed(&step, format!("{host}: unexpected answer {out:?}")),
                Err(why) => return failed(&step, why),
            }
        }
    }
    streamer.close();

    // 4. ZooKeeper.
    let step = "start ZooKeeper";
    let units: Vec<(String, String)> =
        p.zk.iter()
            .map(|(h, _)| (h.clone(), p.zk_unit.clone()))
            .collect();
    if let Err(why) = on_hosts(opts, step, &units, |u| {
        format!("systemctl start {} && echo done", quote(u))
    }) {
        return failed(step, why);
    }
    let need = majority(g.zookeeper.len());
    let probe =
        || status::status(&opts.inventory, opts.stack_dir.clone()).map_err(|e| e.to_string());
    if let Err(why) = wait(opts.gate_timeout, probe, |r| zk_quorum(&r.view, need)) {
        return failed(step, format!("gate: {why}"));
    }
    op.ok("gate", "ZooKeeper serves a quorum");

    // 5. Masters, log auto-initialization off for this start.
    let step = "start the masters";
    // (host, the flag file) of every master, and its unit.
    let flag_files: PerHost = p
        .masters
        .iter()
        .map(|(h, _, flags, _)| (h.clone(), format!("{flags}/{}", core::NO_AUTO_INIT_FLAG)))
        .collect();
    let flag_on: PerHost = flag_files
        .iter()
        .zip(&p.masters)
        .map(|((h, f), (_, _, _, unit))| {
            (
                h.clone(),
                format!(
                    "set -e; printf 'false\\n' > {}; systemctl start {}; echo done",
                    quote(f),
                    quote(unit)
                ),
            )
        })
        .collect();
    if let Err(why) = on_hosts(opts, step, &flag_on, |s| s.to_string()) {
        return failed(step, why);
    }
    let gate = wait(opts.gate_timeout, probe, |r| core::restored(&r.view, &[]));
    // The flag goes whatever the gate says: the next start (or apply) is a normal one.
    let removed = on_hosts(
        opts,
        "remove the log_auto_initialize flag",
        &flag_files,
        |f| format!("rm -f {} && echo done", quote(f)),
    );
    if let Err(why) = gate {
        return failed(step, format!("gate: {why}"));
    }
    if let Err(why) = removed {
        return failed("remove the log_auto_initialize flag", why);
    }
    op.ok(
        "gate",
        "one leader, every master recovered its replicated log",
    );

    // 6. Agents.
    let step = "start the agents";
    if let Err(why) = on_hosts(opts, step, &p.agent_units, |u| {
        format!("systemctl start {} && echo done", quote(u))
    }) {
        return failed(step, why);
    }
    if let Err(why) = wait(opts.gate_timeout, probe, |r| {
        core::restored(&r.view, &g.agents)
    }) {
        return failed(step, format!("gate: {why}"));
    }
    op.ok("gate", "every agent re-registered");
    op.ok(
        "done",
        &format!(
            "restored from {}; the replaced data stays in {} and {} until you delete it",
            opts.file.display(),
            aside(core::ZOOKEEPER_DATA),
            aside(core::REPLICATED_LOG)
        ),
    );
    Ok(Ended::Done)
}

fn zk_quorum(view: &ClusterView, need: usize) -> Result<(), String> {
    let serving = view
        .zookeeper
        .iter()
        .filter(|m| m.mode.is_some_and(|x| x.serving()))
        .count();
    if serving >= need {
        Ok(())
    } else {
        Err(format!(
            "{serving} ZooKeeper member(s) serve, {need} needed"
        ))
    }
}

/// Run `script(arg)` on each `(host, arg)` ([`status::run_to_done`]): every host must answer
/// `done`.
fn on_hosts(
    opts: &Options,
    step: &str,
    hosts: &[(String, String)],
    script: impl Fn(&str) -> String,
) -> Result<(), String> {
    let scripts = hosts.iter().map(|(h, a)| (h.clone(), script(a))).collect();
    status::run_to_done(
        &opts.inventory,
        opts.stack_dir.clone(),
        &format!("restore: {step}"),
        &scripts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_data_is_moved_aside_never_deleted() {
        let s = put_back_script("/var/lib/zookeeper", "version-2", "version-2.pre-restore-X");
        assert!(
            s.contains(r#"mv "$d/version-2" "$d/version-2.pre-restore-X""#),
            "{s}"
        );
        assert!(!s.contains("rm "), "{s}");
        assert!(s.find("mv ").unwrap() < s.find("tar -xf").unwrap());
    }

    #[test]
    fn put_back_moves_the_old_data_aside_and_unpacks_the_new() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("zk");
        std::fs::create_dir_all(data.join("version-2")).unwrap();
        std::fs::write(data.join("version-2/log.old"), b"old").unwrap();
        std::fs::write(data.join("myid"), b"2").unwrap();
        let stage = d.path().join("stage");
        std::fs::create_dir_all(stage.join("zookeeper/version-2")).unwrap();
        std::fs::write(stage.join("zookeeper/version-2/snapshot.5"), b"new").unwrap();
        let packed = pack(&stage, "zookeeper", "version-2").unwrap();
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &put_back_script(
                    &data.display().to_string(),
                    "version-2",
                    "version-2.pre-restore-T",
                ),
            ])
            .stdin(packed.reopen().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "restored");
        assert_eq!(
            std::fs::read(data.join("version-2/snapshot.5")).unwrap(),
            b"new"
        );
        assert!(!data.join("version-2/log.old").exists());
        assert_eq!(
            std::fs::read(data.join("version-2.pre-restore-T/log.old")).unwrap(),
            b"old"
        );
        assert_eq!(
            std::fs::read(data.join("myid")).unwrap(),
            b"2",
            "myid untouched"
        );
    }

    #[test]
    fn a_damaged_archive_is_refused_before_any_host_is_asked() {
        let d = tempfile::tempdir().unwrap();
        let inv = d.path().join("inv.ini");
        // Hosts nobody can reach: a refusal that asked them would fail differently.
        std::fs::write(
            &inv,
            "[masters]\nm1 ansible_host=192.0.2.250\n[agents]\na1 ansible_host=192.0.2.251\n",
        )
        .unwrap();
        let file = d.path().join("backup-x.tar.gz");
        std::fs::write(&file, b"not gzip at all").unwrap();
        let opts = Options {
            inventory: vec![inv],
            stack_dir: None,
            file,
            stop_cluster: true,
            yes: true,
            gate_timeout: Duration::from_secs(1),
        };
        match restore(&opts, Vec::new()).unwrap().0 {
            Ended::Refused(why) => assert!(why.contains("failed verification"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
