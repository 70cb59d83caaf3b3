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
use provisioner::ops::{lookup, Action, Mode, Planned};
use serde_json::{Map, Value};
use std::path::Path;

fn sha1(data: &[u8]) -> String {
    provisioner::ops::files::sha1::sha1_hex(data)
}

fn parent(p: &str) -> String {
    provisioner::ops::files::common::dirname(p).to_string()
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
        };
        let check = m.plan(&args, &facts, Mode::Check);
        let apply = m.plan(&args, &facts, Mode::Apply);
        assert_eq!(
            check, apply,
            "check mode must plan exactly what apply plans"
        );
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
