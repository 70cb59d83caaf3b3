//! Data-driven tests for the file modules: facts in -> plan out.
//!
//! Every `tests/fixtures/ops/files/<module>.yml` holds `cases`. A case gives the module `args`,
//! a virtual host filesystem (`files`), and what to `expect`. The harness asks the module for
//! its probes, answers them from `files`, plans in BOTH check and apply mode (the plans must be
//! identical), and compares:
//!
//! ```yaml
//! files:                       # the host before the task
//!   /etc/x: {content: "a\n", mode: "0644", owner: root, group: root}
//!   /etc: {dir: true}
//!   /etc/l: {link: x}          # symlink (target relative to the link's dir)
//! commands:                    # answers for Command probes, matched by substring of the script
//!   - {match: "find", rc: 0, stdout: "..."}
//! expect:
//!   error: "substring"         # plan (or probes) fails with this
//!   changed: true|false
//!   content: "..."             # the bytes written (WriteFile content or Exec stdin)
//!   write_mode: "0644"         # WriteFile mode
//!   exec: ["chmod 0600", ...]  # substrings that the Exec scripts must contain, in order
//!   no_exec: true              # no Exec action at all
//!   result: {k: v}             # subset of the result map
//!   diff_before / diff_after   # the first diff's texts
//! ```
//! A case with `oracle:` says the expectation was produced by running ansible-core 2.14.

#![allow(clippy::unwrap_used)] // test harness: a malformed fixture should panic loudly

use provisioner::facts::{CommandOutput, Facts, FileStat, Probe, ProbeResult};
use provisioner::modules::{lookup, Action, Mode, Planned};
use serde_json::{Map, Value};
use std::path::Path;

fn sha1(data: &[u8]) -> String {
    provisioner::modules::files::sha1::sha1_hex(data)
}

fn parent(p: &str) -> String {
    provisioner::modules::files::common::dirname(p).to_string()
}

fn resolve(files: &Map<String, Value>, path: &str, follow: bool) -> Option<(String, Value)> {
    let mut cur = path.trim_end_matches('/').to_string();
    if cur.is_empty() {
        cur = "/".into();
    }
    for _ in 0..10 {
        let f = files.get(&cur).cloned().or_else(|| {
            // Implicit directories: any prefix of a listed path, and "/".
            let prefix = format!("{}/", cur.trim_end_matches('/'));
            (cur == "/" || files.keys().any(|k| k.starts_with(&prefix)))
                .then(|| serde_json::json!({"dir": true}))
        })?;
        match f.get("link").and_then(Value::as_str) {
            Some(t) if follow => {
                cur = if t.starts_with('/') {
                    t.to_string()
                } else {
                    format!("{}/{t}", parent(&cur))
                };
            }
            _ => return Some((cur, f)),
        }
    }
    None
}

fn stat_of(files: &Map<String, Value>, path: &str, follow: bool) -> FileStat {
    let Some((_, f)) = resolve(files, path, follow) else {
        return FileStat::default();
    };
    let s = |k: &str, d: &str| f.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    let content = f.get("content").and_then(Value::as_str).unwrap_or("");
    let kind = if f.get("link").is_some() {
        "link"
    } else if f.get("dir").is_some() {
        "directory"
    } else {
        "file"
    };
    let default_mode = match kind {
        "directory" => "0755",
        "link" => "0777",
        _ => "0644",
    };
    let owner = s("owner", "root");
    let group = s("group", "root");
    FileStat {
        exists: true,
        kind: kind.into(),
        mode: u32::from_str_radix(&s("mode", default_mode), 8).unwrap(),
        uid: f
            .get("uid")
            .and_then(Value::as_u64)
            .unwrap_or(if owner == "root" { 0 } else { 1000 }) as u32,
        gid: f
            .get("gid")
            .and_then(Value::as_u64)
            .unwrap_or(if group == "root" { 0 } else { 1000 }) as u32,
        owner,
        group,
        size: content.len() as u64,
        mtime: 1_700_000_000,
        link_target: f.get("link").and_then(Value::as_str).map(str::to_string),
        checksum_sha1: (kind == "file").then(|| sha1(content.as_bytes())),
    }
}

fn answer(files: &Map<String, Value>, commands: &[Value], probe: &Probe) -> ProbeResult {
    match probe {
        Probe::Stat { path, follow } => ProbeResult::Stat(stat_of(files, path, *follow)),
        Probe::Read { path, max_bytes } => ProbeResult::Read(
            resolve(files, path, true)
                .and_then(|(_, f)| {
                    if f.get("dir").is_some() {
                        return None;
                    }
                    f.get("content")
                        .and_then(Value::as_str)
                        .map(|c| c.as_bytes()[..c.len().min(*max_bytes as usize)].to_vec())
                })
                .or_else(|| {
                    resolve(files, path, true)
                        .filter(|(_, f)| f.get("dir").is_none())
                        .map(|_| Vec::new())
                }),
        ),
        Probe::Command { script } => {
            if let Some(c) = commands
                .iter()
                .find(|c| script.contains(c["match"].as_str().unwrap()))
            {
                return ProbeResult::Command(CommandOutput {
                    rc: c.get("rc").and_then(Value::as_i64).unwrap_or(0) as i32,
                    stdout: c.get("stdout").and_then(Value::as_str).unwrap_or("").into(),
                    stderr: c.get("stderr").and_then(Value::as_str).unwrap_or("").into(),
                });
            }
            if script.starts_with("readlink -m -- ") {
                // realpath: resolve through the virtual filesystem.
                let path = script
                    .trim_start_matches("readlink -m -- ")
                    .trim_matches('\'');
                let real = resolve(files, path, true)
                    .map(|(p, _)| p)
                    .unwrap_or_else(|| path.to_string());
                return ProbeResult::Command(CommandOutput {
                    rc: 0,
                    stdout: format!("{real}\n"),
                    stderr: String::new(),
                });
            }
            ProbeResult::Command(CommandOutput {
                rc: 127,
                stdout: String::new(),
                stderr: format!("no fixture answer for {script:?}"),
            })
        }
        other => panic!("unexpected probe {other:?}"),
    }
}

fn written(actions: &[Action]) -> Option<Vec<u8>> {
    actions.iter().find_map(|a| match a {
        Action::WriteFile { content, .. } => Some(content.clone()),
        Action::Exec { stdin: Some(s), .. } => Some(s.clone()),
        _ => None,
    })
}

fn run_case(module: &str, case: &Value) -> Result<(), String> {
    let m = lookup(module).ok_or(format!("no module {module}"))?;
    let args = case["args"].as_object().cloned().unwrap_or_default();
    let files = case
        .get("files")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let commands = case
        .get("commands")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let expect = &case["expect"];
    let planned = m.probes(&args).and_then(|probes| {
        let facts = Facts {
            answers: probes
                .iter()
                .map(|p| (p.clone(), answer(&files, &commands, p)))
                .collect(),
            ..Default::default()
        };
        let check = m.plan(&args, &facts, Mode::Check);
        let apply = m.plan(&args, &facts, Mode::Apply);
        // A case may say what check mode does when it deliberately differs (`check_changed`).
        match case.get("check_changed").and_then(Value::as_bool) {
            Some(changed) => assert_eq!(
                matches!(check, Ok(Planned::Change { .. })),
                changed,
                "check mode: {check:?}"
            ),
            None => assert_eq!(
                check, apply,
                "check mode must plan exactly what apply plans"
            ),
        }
        apply
    });
    if let Some(err) = expect.get("error").and_then(Value::as_str) {
        return match planned {
            Err(e) if e.0.contains(err) => Ok(()),
            Err(e) => Err(format!("error {:?} does not contain {err:?}", e.0)),
            Ok(p) => Err(format!("expected error {err:?}, got {p:?}")),
        };
    }
    let planned = planned.map_err(|e| format!("unexpected error: {}", e.0))?;
    let (changed, actions, diffs, result) = match &planned {
        Planned::NoChange { result } => (false, vec![], vec![], result.clone()),
        Planned::Change {
            actions,
            diffs,
            result,
        } => (true, actions.clone(), diffs.clone(), result.clone()),
    };
    let ctx = || format!("plan was {planned:#?}");
    if let Some(c) = expect.get("changed").and_then(Value::as_bool) {
        if c != changed {
            return Err(format!("changed: expected {c}, got {changed}; {}", ctx()));
        }
    }
    if let Some(c) = expect.get("content").and_then(Value::as_str) {
        let got = written(&actions).ok_or_else(|| format!("nothing written; {}", ctx()))?;
        if got != c.as_bytes() {
            return Err(format!(
                "content:\n--- expected\n{c}\n--- got\n{}",
                String::from_utf8_lossy(&got)
            ));
        }
    }
    if expect.get("no_write").and_then(Value::as_bool) == Some(true) && written(&actions).is_some()
    {
        return Err(format!("expected no content write; {}", ctx()));
    }
    if let Some(mode) = expect.get("write_mode").and_then(Value::as_str) {
        let got = actions.iter().find_map(|a| match a {
            Action::WriteFile { mode, .. } => *mode,
            _ => None,
        });
        if got != Some(u32::from_str_radix(mode, 8).unwrap()) {
            return Err(format!(
                "write mode: expected {mode}, got {:?}; {}",
                got.map(|m| format!("{m:o}")),
                ctx()
            ));
        }
    }
    if let Some(owner) = expect.get("write_owner").and_then(Value::as_str) {
        let got = actions.iter().find_map(|a| match a {
            Action::WriteFile { owner, .. } => owner.clone(),
            _ => None,
        });
        if got.as_deref() != Some(owner) {
            return Err(format!("write owner: expected {owner}, got {got:?}"));
        }
    }
    let scripts: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Exec { script, .. } => Some(script.as_str()),
            _ => None,
        })
        .collect();
    let all = scripts.join("\n");
    let mut pos = 0;
    for want in expect
        .get("exec")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let want = want.as_str().unwrap();
        match all[pos..].find(want) {
            Some(i) => pos += i + want.len(),
            None => return Err(format!("exec script lacks {want:?} (in order); {}", ctx())),
        }
    }
    if expect.get("no_exec").and_then(Value::as_bool) == Some(true) && !scripts.is_empty() {
        return Err(format!("expected no exec; {}", ctx()));
    }
    if let Some(want) = expect.get("result").and_then(Value::as_object) {
        for (k, v) in want {
            if result.get(k) != Some(v) {
                return Err(format!(
                    "result.{k}: expected {v}, got {:?}; {}",
                    result.get(k),
                    ctx()
                ));
            }
        }
    }
    for (k, idx) in [("diff_before", 0), ("diff_after", 1)] {
        if let Some(want) = expect.get(k).and_then(Value::as_str) {
            let d = diffs.first().ok_or_else(|| format!("no diff; {}", ctx()))?;
            let got = if idx == 0 { &d.before } else { &d.after };
            if got != want {
                return Err(format!("{k}: expected {want:?}, got {got:?}"));
            }
        }
    }
    Ok(())
}

fn run_fixture(module: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ops/files")
        .join(format!("{module}.yml"));
    let doc = provisioner::yaml::load_single(&path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .to_json();
    let cases = doc["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let module = case.get("module").and_then(Value::as_str).unwrap_or(module);
        if let Err(e) = run_case(module, case) {
            failures.push(format!("[{module}] {name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn file_module_fixtures() {
    run_fixture("file");
}

#[test]
fn copy_module_fixtures() {
    run_fixture("copy");
}

#[test]
fn template_module_fixtures() {
    run_fixture("template");
}

#[test]
fn stat_module_fixtures() {
    run_fixture("stat");
}

#[test]
fn lineinfile_matches_the_ansible_oracle() {
    run_fixture("lineinfile");
}

#[test]
fn blockinfile_matches_the_ansible_oracle() {
    run_fixture("blockinfile");
}

#[test]
fn ini_file_matches_the_ansible_oracle() {
    run_fixture("ini_file");
}

#[test]
fn text_edit_attributes_and_argument_errors() {
    run_fixture("text_edits");
}

#[test]
fn get_url_fixtures() {
    run_fixture("get_url");
}

#[test]
fn unarchive_fixtures() {
    run_fixture("unarchive");
}

/// Run the actions of a plan on this machine, as the executor would. Returns the outputs.
fn run_actions(actions: &[Action]) -> Vec<provisioner::modules::ActionOutput> {
    use std::io::Write;
    actions
        .iter()
        .map(|a| match a {
            Action::Exec { script, stdin } => {
                let mut child = std::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(script)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut inp = child.stdin.take().unwrap();
                inp.write_all(stdin.as_deref().unwrap_or_default()).unwrap();
                drop(inp);
                let out = child.wait_with_output().unwrap();
                provisioner::modules::ActionOutput {
                    rc: out.status.code().unwrap_or(-1),
                    stdout: out.stdout,
                    stderr: out.stderr,
                }
            }
            Action::WriteFile {
                path,
                content,
                mode,
                ..
            } => {
                // The transport's job; emulated here without owner changes.
                use std::os::unix::fs::PermissionsExt;
                std::fs::write(path, content).unwrap();
                if let Some(m) = mode {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(*m)).unwrap();
                }
                provisioner::modules::ActionOutput::default()
            }
        })
        .collect()
}

/// Probe, plan and apply one task on this machine (probe script run with /bin/sh).
fn apply_locally(module: &str, args: Value) -> provisioner::modules::ModuleResult {
    let m = lookup(module).unwrap();
    let args = args.as_object().unwrap().clone();
    let probes = m.probes(&args).unwrap();
    let script = provisioner::facts::probe::probe_script(&probes);
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let facts = provisioner::facts::probe::parse_probe_output(&probes, &out.stdout).unwrap();
    let planned = m.plan(&args, &facts, Mode::Apply).unwrap();
    let outputs = match &planned {
        Planned::Change { actions, .. } => run_actions(actions),
        Planned::NoChange { .. } => Vec::new(),
    };
    m.finish(&args, &planned, &outputs)
}

#[test]
fn unarchive_extracts_a_tarball_once_then_is_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("app/bin")).unwrap();
    std::fs::write(src.join("app/bin/run"), b"#!/bin/sh\necho hi\n").unwrap();
    let tgz = d.path().join("app.tgz");
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg("app")
        .status()
        .unwrap();
    assert!(st.success());
    let dest = d.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let bytes = std::fs::read(&tgz).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    // From the control node (bytes from the engine).
    let args = serde_json::json!({"src": "app.tgz", "dest": dest, "_content_b64": b64, "list_files": true});
    let r1 = apply_locally("unarchive", args.clone());
    assert!(!r1.failed, "{:?}", r1.msg);
    assert!(r1.changed);
    assert!(r1.data["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "app/bin/run"));
    assert_eq!(
        std::fs::read(dest.join("app/bin/run")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    let r2 = apply_locally("unarchive", args);
    assert!(
        !r2.failed && !r2.changed,
        "second run must be unchanged: {r2:?}"
    );
    // On the host (remote_src): the compare probe decides at plan time.
    let args = serde_json::json!({"src": tgz, "dest": dest, "remote_src": true});
    let r3 = apply_locally("unarchive", args);
    assert!(!r3.failed && !r3.changed, "{r3:?}");
    std::fs::write(dest.join("app/bin/run"), b"changed").unwrap();
    let r4 = apply_locally(
        "unarchive",
        serde_json::json!({"src": tgz, "dest": dest, "remote_src": true}),
    );
    assert!(!r4.failed && r4.changed, "{r4:?}");
    assert_eq!(
        std::fs::read(dest.join("app/bin/run")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
}

#[test]
fn unarchive_extracts_a_zip_once_then_is_unchanged() {
    if std::process::Command::new("zip")
        .arg("-v")
        .output()
        .is_err()
    {
        return; // zip is needed to build the test archive
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("src/z")).unwrap();
    std::fs::write(d.path().join("src/z/a.txt"), b"a\n").unwrap();
    let zip = d.path().join("z.zip");
    let st = std::process::Command::new("zip")
        .arg("-qr")
        .arg(&zip)
        .arg("z")
        .current_dir(d.path().join("src"))
        .status()
        .unwrap();
    assert!(st.success());
    let dest = d.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let args = serde_json::json!({"src": zip, "dest": dest, "remote_src": "yes", "mode": "0600"});
    let r1 = apply_locally("unarchive", args.clone());
    assert!(!r1.failed && r1.changed, "{r1:?}");
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(dest.join("z/a.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(m & 0o7777, 0o600);
    let r2 = apply_locally("unarchive", args);
    assert!(!r2.failed && !r2.changed, "{r2:?}");
}

#[test]
fn get_url_downloads_verifies_and_then_is_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("payload");
    std::fs::write(&src, b"payload\n").unwrap();
    let url = format!("file://{}", src.display());
    let dest = d.path().join("out");
    // sha256 of "payload\n"
    let sum = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(b"payload\n");
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let args = serde_json::json!({"url": url, "dest": dest, "checksum": format!("sha256:{sum}")});
    let r1 = apply_locally("get_url", args.clone());
    assert!(!r1.failed && r1.changed, "{r1:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"payload\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    let r2 = apply_locally("get_url", args);
    assert!(!r2.failed && !r2.changed, "{r2:?}");
    // Without checksum: downloads, compares, reports unchanged.
    let r3 = apply_locally("get_url", serde_json::json!({"url": url, "dest": dest}));
    assert!(!r3.failed && !r3.changed, "{r3:?}");
    // A wrong checksum fails and leaves no file behind.
    let bad = d.path().join("bad");
    let r4 = apply_locally(
        "get_url",
        serde_json::json!({"url": url, "dest": bad, "checksum": "sha256:00"}),
    );
    assert!(r4.failed, "{r4:?}");
    assert!(r4.msg.unwrap_or_default().contains("did not match"));
    assert!(!bad.exists());
}

#[test]
fn file_scripts_converge_on_a_real_filesystem() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_str().unwrap().to_string();
    let mode = |p: &str| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    // Nested directories: every created component gets the mode; then idempotent.
    let args =
        serde_json::json!({"path": format!("{root}/a b/c"), "state": "directory", "mode": "0750"});
    let r = apply_locally("file", args.clone());
    assert!(r.changed && !r.failed, "{r:?}");
    assert_eq!(mode(&format!("{root}/a b")), 0o750);
    assert_eq!(mode(&format!("{root}/a b/c")), 0o750);
    assert!(!apply_locally("file", args).changed);
    // Recurse with a symbolic mode.
    std::fs::write(format!("{root}/a b/c/f"), b"x").unwrap();
    std::fs::set_permissions(
        format!("{root}/a b/c/f"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let args = serde_json::json!({"path": format!("{root}/a b"), "state": "directory", "recurse": true, "mode": "u=rwX,g=rX,o=rX"});
    let r = apply_locally("file", args.clone());
    assert!(r.changed && !r.failed, "{r:?}");
    assert_eq!(mode(&format!("{root}/a b/c/f")), 0o644);
    assert_eq!(mode(&format!("{root}/a b/c")), 0o755);
    assert!(!apply_locally("file", args).changed);
    // Links: create, keep, retarget.
    let link = format!("{root}/cur");
    let args = serde_json::json!({"src": "a b", "dest": link, "state": "link"});
    assert!(apply_locally("file", args.clone()).changed);
    assert!(!apply_locally("file", args).changed);
    let r = apply_locally(
        "file",
        serde_json::json!({"src": "a b/c", "dest": link, "state": "link"}),
    );
    assert!(r.changed && !r.failed, "{r:?}");
    assert_eq!(std::fs::read_link(&link).unwrap().to_str(), Some("a b/c"));
    // Touch then absent.
    let f = format!("{root}/flag");
    assert!(
        apply_locally(
            "file",
            serde_json::json!({"path": f, "state": "touch", "mode": "0600"})
        )
        .changed
    );
    assert_eq!(mode(&f), 0o600);
    assert!(apply_locally("file", serde_json::json!({"path": f, "state": "absent"})).changed);
    assert!(!apply_locally("file", serde_json::json!({"path": f, "state": "absent"})).changed);
}

#[test]
fn text_edits_converge_on_a_real_filesystem() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("new/conf");
    let args = serde_json::json!({"path": p, "line": "a=1", "create": true});
    let r = apply_locally("lineinfile", args.clone());
    assert!(r.changed && !r.failed, "{r:?}");
    assert_eq!(std::fs::read(&p).unwrap(), b"a=1\n");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    assert!(!apply_locally("lineinfile", args).changed);
    let args =
        serde_json::json!({"path": p, "section": "s", "option": "k", "value": "v", "mode": "0640"});
    assert!(apply_locally("ini_file", args.clone()).changed);
    assert!(!apply_locally("ini_file", args).changed);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "a=1\n[s]\nk = v\n");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let args = serde_json::json!({"dest": p, "content": "x\n", "mode": "0600"});
    assert!(apply_locally("copy", args.clone()).changed);
    assert!(!apply_locally("copy", args).changed);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o600
    );
}
