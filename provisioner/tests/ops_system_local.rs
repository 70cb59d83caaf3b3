//! A minimal local executor for the system modules: answers probes with `/bin/sh` and the local
//! filesystem (read-only here). Creating users, groups and crontabs is exercised on lab hosts by
//! the end-to-end differential test against ansible-playbook (tests/e2e_engine.rs).

#![allow(clippy::unwrap_used)]

use provisioner::facts::{CommandOutput, Facts, Probe, ProbeResult};
use provisioner::modules::{self, Action, ActionOutput, Mode, ModuleResult, Planned};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

fn sh(script: &str, stdin: Option<&[u8]>) -> ActionOutput {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut i = child.stdin.take().unwrap();
        if let Some(b) = stdin {
            i.write_all(b).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    ActionOutput {
        rc: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Probe, plan, (in apply mode) run, finish. Returns the plan and the result.
pub fn run(module: &str, args: Value, mode: Mode) -> (Planned, ModuleResult) {
    let m = modules::lookup(module).unwrap();
    let args = args.as_object().unwrap().clone();
    let probes = m.probes(&args).unwrap();
    let answers = probes
        .into_iter()
        .map(|p| {
            let r = match &p {
                Probe::Command { script } => {
                    let o = sh(script, None);
                    ProbeResult::Command(CommandOutput {
                        rc: o.rc,
                        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                    })
                }
                Probe::Read { path, .. } => ProbeResult::Read(std::fs::read(path).ok()),
                other => panic!("probe not supported here: {other:?}"),
            };
            (p, r)
        })
        .collect();
    let facts = Facts {
        answers,
        ..Default::default()
    };
    let planned = m.plan(&args, &facts, mode).unwrap();
    let mut outputs = Vec::new();
    if mode == Mode::Apply || m.read_only(&args) {
        if let Planned::Change { actions, .. } = &planned {
            for a in actions {
                let o = match a {
                    Action::Exec { script, stdin } => sh(script, stdin.as_deref()),
                    Action::WriteFile {
                        path,
                        content,
                        mode,
                        ..
                    } => {
                        std::fs::write(path, content).unwrap();
                        if let Some(md) = mode {
                            use std::os::unix::fs::PermissionsExt;
                            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*md))
                                .unwrap();
                        }
                        ActionOutput::default()
                    }
                };
                let failed = o.rc != 0;
                outputs.push(o);
                if failed {
                    break;
                }
            }
        }
    }
    let r = m.finish(&args, &planned, &outputs);
    (planned, r)
}

#[test]
fn user_probe_reads_root_without_changing_anything() {
    let (planned, r) = run(
        "user",
        json!({"name": "root", "create_home": false}),
        Mode::Check,
    );
    assert!(matches!(planned, Planned::NoChange { .. }), "{planned:#?}");
    assert_eq!(r.data["uid"], json!(0));
    assert_eq!(r.data["home"], json!("/root"));
}

#[test]
fn group_probe_reads_root() {
    let (planned, r) = run("group", json!({"name": "root", "gid": 0}), Mode::Check);
    assert!(matches!(planned, Planned::NoChange { .. }));
    assert_eq!(r.data["gid"], json!(0));
}
