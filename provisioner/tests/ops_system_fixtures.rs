//! Data-driven tests for the system modules: every `*.json` under
//! `tests/fixtures/ops/system/` is a list of cases, facts in → plan out → result out.
//!
//! Case fields (all but `name` and `args` optional):
//! - `args`: module arguments as a task would pass them after templating;
//! - `mode`: `"apply"` (default) or `"check"`;
//! - `probes`: the exact probes `probes(args)` must return;
//! - `answers`: one answer per probe, in the order `probes(args)` returns them;
//! - `error`: the `OpError` expected from `probes` or `plan` (substring match);
//! - `plan`: `{"no_change": result}` or `{"change": {"actions", "diffs", "result"}}` (exact);
//! - `actions`: only the planned actions (exact), when the whole `plan` is not spelled out;
//! - `outputs`: what each action returned (omitted: none, as in check mode);
//! - `finish`: the expected `ModuleResult` (`changed`, `failed`, `skipped`, `msg`, `data`), exact;
//!   `finish_data_subset`: only these `data` keys are compared.
//!
//! Probe JSON: `{"command": script}`, `{"unit": name}`, `{"dpkg": [names]}`,
//! `{"read": {"path", "max_bytes"}}`, `{"stat": {"path", "follow"}}`.
//! Answer JSON: `{"command": {"rc", "stdout", "stderr"}}`, `{"unit": {"load_state", ...}}`,
//! `{"dpkg": {name: version|null}}`, `{"read": text|null}`, `{"stat": {...}}`.
//! Action JSON: `{"exec": script, "stdin": text?}` or `{"write": {"path", "content", "mode"?,
//! "owner"?, "group"?}}` (mode as an octal string).

#![allow(clippy::unwrap_used)] // test helpers: a malformed fixture should panic loudly

use provisioner::facts::{
    CommandOutput, Facts, FileStat, PackageState, Probe, ProbeResult, UnitState,
};
use provisioner::modules::{self, Action, ActionOutput, Mode, Planned};
use serde_json::{json, Map, Value};
use std::path::Path;

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn probe_from(v: &Value) -> Probe {
    let (kind, body) = v.as_object().unwrap().iter().next().unwrap();
    match kind.as_str() {
        "command" => Probe::Command {
            script: body.as_str().unwrap().to_string(),
        },
        "unit" => Probe::Unit {
            name: body.as_str().unwrap().to_string(),
        },
        "dpkg" => Probe::Dpkg {
            packages: body
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect(),
        },
        "read" => Probe::Read {
            path: s(body, "path"),
            max_bytes: body["max_bytes"].as_u64().unwrap(),
        },
        "stat" => Probe::Stat {
            path: s(body, "path"),
            follow: body["follow"].as_bool().unwrap_or(false),
        },
        other => panic!("unknown probe kind {other}"),
    }
}

fn answer_from(v: &Value) -> ProbeResult {
    let (kind, body) = v.as_object().unwrap().iter().next().unwrap();
    match kind.as_str() {
        "command" => ProbeResult::Command(CommandOutput {
            rc: body.get("rc").and_then(Value::as_i64).unwrap_or(0) as i32,
            stdout: s(body, "stdout"),
            stderr: s(body, "stderr"),
        }),
        "unit" => ProbeResult::Unit(UnitState {
            name: s(body, "name"),
            load_state: s(body, "load_state"),
            active_state: s(body, "active_state"),
            sub_state: s(body, "sub_state"),
            unit_file_state: s(body, "unit_file_state"),
        }),
        "dpkg" => ProbeResult::Dpkg(
            body.as_object()
                .unwrap()
                .iter()
                .map(|(n, v)| PackageState {
                    name: n.clone(),
                    version: v.as_str().map(str::to_string),
                })
                .collect(),
        ),
        "read" => ProbeResult::Read(body.as_str().map(|t| t.as_bytes().to_vec())),
        "stat" => ProbeResult::Stat(FileStat {
            exists: body["exists"].as_bool().unwrap_or(false),
            kind: s(body, "kind"),
            ..Default::default()
        }),
        other => panic!("unknown answer kind {other}"),
    }
}

fn action_from(v: &Value) -> Action {
    if let Some(script) = v.get("exec") {
        return Action::Exec {
            script: script.as_str().unwrap().to_string(),
            stdin: v
                .get("stdin")
                .and_then(Value::as_str)
                .map(|t| t.as_bytes().to_vec()),
        };
    }
    let w = &v["write"];
    Action::WriteFile {
        path: s(w, "path"),
        content: s(w, "content").into_bytes(),
        mode: w
            .get("mode")
            .and_then(Value::as_str)
            .map(|m| u32::from_str_radix(m, 8).unwrap()),
        owner: w.get("owner").and_then(Value::as_str).map(str::to_string),
        group: w.get("group").and_then(Value::as_str).map(str::to_string),
    }
}

fn action_to(a: &Action) -> Value {
    match a {
        Action::Exec { script, stdin } => {
            let mut m = Map::new();
            m.insert("exec".into(), json!(script));
            if let Some(i) = stdin {
                m.insert("stdin".into(), json!(String::from_utf8_lossy(i)));
            }
            Value::Object(m)
        }
        Action::WriteFile {
            path,
            content,
            mode,
            owner,
            group,
        } => {
            let mut w = Map::new();
            w.insert("path".into(), json!(path));
            w.insert("content".into(), json!(String::from_utf8_lossy(content)));
            if let Some(m) = mode {
                w.insert("mode".into(), json!(format!("{m:04o}")));
            }
            if let Some(o) = owner {
                w.insert("owner".into(), json!(o));
            }
            if let Some(g) = group {
                w.insert("group".into(), json!(g));
            }
            json!({ "write": w })
        }
    }
}

fn planned_to(p: &Planned) -> Value {
    match p {
        Planned::NoChange { result } => json!({ "no_change": result }),
        Planned::Change {
            actions,
            diffs,
            result,
        } => json!({ "change": {
            "actions": actions.iter().map(action_to).collect::<Vec<_>>(),
            "diffs": diffs.iter().map(|d| json!({"label": d.label, "before": d.before, "after": d.after})).collect::<Vec<_>>(),
            "result": result,
        }}),
    }
}

fn normalise_expected_plan(v: &Value) -> Value {
    // Re-encode actions through Action so optional fields compare the same way.
    let mut v = v.clone();
    if let Some(ch) = v.get_mut("change") {
        if let Some(acts) = ch.get("actions").cloned() {
            ch["actions"] = Value::Array(
                acts.as_array()
                    .unwrap()
                    .iter()
                    .map(|a| action_to(&action_from(a)))
                    .collect(),
            );
        } else {
            ch["actions"] = json!([]);
        }
        if ch.get("diffs").is_none() {
            ch["diffs"] = json!([]);
        }
        if ch.get("result").is_none() {
            ch["result"] = json!({});
        }
    }
    v
}

fn run_case(file: &str, module: &str, case: &Value) -> Result<(), String> {
    let name = s(case, "name");
    let ctx = format!("{file}: {name}");
    let m = modules::lookup(module).ok_or(format!("{ctx}: no module {module}"))?;
    let args = case["args"].as_object().cloned().unwrap_or_default();
    let mode = match case.get("mode").and_then(Value::as_str) {
        Some("check") => Mode::Check,
        _ => Mode::Apply,
    };
    let expect_err = case.get("error").and_then(Value::as_str);
    let probes = match m.probes(&args) {
        Ok(p) => p,
        Err(e) => {
            return match expect_err {
                Some(want) if e.0.contains(want) => Ok(()),
                _ => Err(format!("{ctx}: probes failed: {e}")),
            }
        }
    };
    if let Some(want) = case.get("probes") {
        let want: Vec<Probe> = want.as_array().unwrap().iter().map(probe_from).collect();
        if want != probes {
            return Err(format!(
                "{ctx}: probes differ\n want {want:#?}\n got  {probes:#?}"
            ));
        }
    }
    let answers: Vec<ProbeResult> = case
        .get("answers")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(answer_from).collect())
        .unwrap_or_default();
    if answers.len() != probes.len() {
        return Err(format!(
            "{ctx}: {} answers for {} probes: {probes:#?}",
            answers.len(),
            probes.len()
        ));
    }
    let facts = Facts {
        answers: probes.into_iter().zip(answers).collect(),
        ..Default::default()
    };
    let planned = match m.plan(&args, &facts, mode) {
        Ok(p) => p,
        Err(e) => {
            return match expect_err {
                Some(want) if e.0.contains(want) => Ok(()),
                _ => Err(format!("{ctx}: plan failed: {e}")),
            }
        }
    };
    if let Some(want) = expect_err {
        return Err(format!("{ctx}: expected error {want:?}, got {planned:#?}"));
    }
    if let Some(want) = case.get("plan") {
        let got = planned_to(&planned);
        let want = normalise_expected_plan(want);
        if got != want {
            return Err(format!(
                "{ctx}: plan differs\n want {}\n got  {}",
                serde_json::to_string_pretty(&want).unwrap(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    if let Some(want) = case.get("actions") {
        let got = match &planned {
            Planned::Change { actions, .. } => actions.iter().map(action_to).collect(),
            Planned::NoChange { .. } => Vec::new(),
        };
        let want: Vec<Value> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|a| action_to(&action_from(a)))
            .collect();
        if got != want {
            return Err(format!(
                "{ctx}: actions differ\n want {}\n got  {}",
                serde_json::to_string_pretty(&want).unwrap(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    let outputs: Vec<ActionOutput> = case
        .get("outputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|o| ActionOutput {
                    rc: o.get("rc").and_then(Value::as_i64).unwrap_or(0) as i32,
                    stdout: s(o, "stdout").into_bytes(),
                    stderr: s(o, "stderr").into_bytes(),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(want) = case.get("finish") {
        let r = m.finish(&args, &planned, &outputs);
        let mut got = json!({
            "changed": r.changed,
            "failed": r.failed,
            "skipped": r.skipped,
            "msg": r.msg,
            "data": r.data,
        });
        let mut want = want.clone();
        for (k, d) in [("changed", false), ("failed", false), ("skipped", false)] {
            if want.get(k).is_none() {
                want[k] = json!(d);
            }
        }
        if want.get("msg").is_none() {
            want["msg"] = Value::Null;
        }
        if want.get("data").is_none() {
            got["data"] = json!({});
            want["data"] = json!({});
        } else if case.get("finish_data_subset").and_then(Value::as_bool) == Some(true) {
            let keys: Vec<String> = want["data"].as_object().unwrap().keys().cloned().collect();
            let sub: Map<String, Value> = keys
                .iter()
                .map(|k| {
                    (
                        k.clone(),
                        got["data"].get(k).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect();
            got["data"] = Value::Object(sub);
        }
        if got != want {
            return Err(format!(
                "{ctx}: finish differs\n want {}\n got  {}",
                serde_json::to_string_pretty(&want).unwrap(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    Ok(())
}

#[test]
fn every_system_fixture_case_holds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops/system");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut count = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: bad JSON: {e}", f.display()));
        let module = doc["module"].as_str().unwrap();
        let fname = f.file_name().unwrap().to_string_lossy().to_string();
        for case in doc["cases"].as_array().unwrap() {
            count += 1;
            let module = case.get("module").and_then(Value::as_str).unwrap_or(module);
            if let Err(e) = run_case(&fname, module, case) {
                failures.push(e);
            }
        }
    }
    assert!(count > 0, "no fixture cases found in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
