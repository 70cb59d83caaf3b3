//! A minimal local executor for the system modules: answers probes with `/bin/sh` and the local
//! filesystem, runs the actions, and calls `finish`. The tests that change the machine (throwaway
//! users, groups and crontabs named `provtest*`) are `#[ignore]`d: run them as root with
//! `cargo test --test ops_system_local -- --ignored --test-threads=1` next to the Ansible oracle.

#![allow(clippy::unwrap_used)]

use provisioner::facts::{CommandOutput, Facts, Probe, ProbeResult};
use provisioner::ops::{self, Action, ActionOutput, Mode, ModuleResult, Planned};
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
    let m = ops::lookup(module).unwrap();
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
    let facts = Facts { answers };
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

#[test]
#[ignore = "creates and deletes the throwaway user provtest1 and group provtestg1 (root only)"]
fn user_and_group_lifecycle_on_this_machine() {
    let apply = |m: &str, a: Value| run(m, a, Mode::Apply).1;
    let r = apply("group", json!({"name": "provtestg1", "gid": 4321}));
    assert!(r.changed && !r.failed, "{r:?}");
    assert!(!apply("group", json!({"name": "provtestg1", "gid": 4321})).changed);
    let pw = "$6$salt$8eW0Gh0W0dCvqdCYs2/8Rf2FP1pWXCVEJxQo8LQnS.NXD6T8jOqN0ThJ5Rb3sGIyEdnhwEzzeK9eDg8rVMGX6/";
    let args = json!({"name": "provtest1", "groups": ["provtestg1"], "comment": "Prov Test",
                      "shell": "/bin/bash", "password": pw});
    let r = apply("user", args.clone());
    assert!(r.changed && !r.failed, "{r:?}");
    assert_eq!(r.data["password"], json!("NOT_LOGGING_PASSWORD"));
    let r2 = apply("user", args.clone());
    assert!(!r2.changed, "{r2:?}");
    let r = apply("user", json!({"name": "provtest1", "password_lock": true}));
    assert!(r.changed && !r.failed, "{r:?}");
    assert!(!apply("user", json!({"name": "provtest1", "password_lock": true})).changed);
    let r = apply(
        "user",
        json!({"name": "provtest1", "groups": "", "append": true}),
    );
    assert!(!r.changed, "{r:?}");
    let r = apply("user", json!({"name": "provtest1", "groups": []}));
    assert!(r.changed, "{r:?}");
    let r = apply(
        "user",
        json!({"name": "provtest1", "state": "absent", "remove": true}),
    );
    assert!(r.changed && !r.failed, "{r:?}");
    assert!(!apply("user", json!({"name": "provtest1", "state": "absent"})).changed);
    assert!(apply("group", json!({"name": "provtestg1", "state": "absent"})).changed);
}

/// Plans (check mode, nothing changes) the module and args given in `PROV_MODULE` and
/// `PROV_ARGS` (JSON) and prints the plan: for differential runs next to Ansible.
#[test]
#[ignore = "manual differential helper: PROV_MODULE=user PROV_ARGS='{...}'"]
fn plan_from_env() {
    let m = std::env::var("PROV_MODULE").unwrap();
    let a: Value = serde_json::from_str(&std::env::var("PROV_ARGS").unwrap()).unwrap();
    let (planned, r) = run(&m, a, Mode::Check);
    eprintln!("{planned:#?}\n{r:#?}");
}
