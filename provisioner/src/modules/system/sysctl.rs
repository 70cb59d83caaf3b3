//! `sysctl` (ansible.posix.sysctl, shipped with the ansible package; semantics read from its
//! source on this machine):
//! - the file is parsed as `key = value` lines (comments `#`/`;` kept); on write every line is
//!   stripped, known keys are rewritten as `key=value`, later duplicates dropped, the key appended
//!   when missing;
//! - changed when the file value differs (or must be removed), or with `reload` (default yes) /
//!   `sysctl_set` when the running value (`sysctl -e -n KEY`) differs (whitespace-split compare);
//! - actions, in Ansible's order: `sysctl -w KEY="VALUE"` (only with sysctl_set), write the
//!   file, `sysctl -p FILE` when changed and reload;
//! - values: booleans become `1`/`0`, strings are stripped;
//! - result: only `changed`.

use super::args::{p, pa, to_bool, A};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Diff, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{Map, Value};

pub struct Sysctl;
pub static SYSCTL: Sysctl = Sysctl;

const PARAMS: &[ParamSpec] = &[
    pa("name", &["key"]),
    pa("value", &["val"]),
    p("state"),
    p("reload"),
    p("sysctl_set"),
    p("ignoreerrors"),
    p("sysctl_file"),
];

const MAX_READ: u64 = 1 << 20;

struct Sc {
    name: String,
    value: String,
    present: bool,
    reload: bool,
    sysctl_set: bool,
    ignoreerrors: bool,
    file: String,
}

fn parse(args: &Args) -> Result<Sc, OpError> {
    let a = A::new(args, PARAMS)?;
    let name = a
        .str("name")?
        .ok_or_else(|| OpError::new("missing required arguments: name"))?
        .trim()
        .to_string();
    if name.is_empty() {
        return Err(OpError::new("name cannot be blank"));
    }
    let state = a
        .choice("state", &["present", "absent"], Some("present"))?
        .unwrap_or_default();
    let present = state == "present";
    let raw = a.raw("value");
    if present && raw.is_none() {
        return Err(OpError::new(
            "state is present but all of the following are missing: value",
        ));
    }
    let value = match raw {
        None => String::new(),
        Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_string(),
        Some(v @ Value::String(s)) => match to_bool(v) {
            // Only the word forms: Ansible checks `value.lower() in BOOLEANS_TRUE/FALSE`.
            Some(b) if !s.trim().is_empty() && s == s.trim() => {
                if b { "1" } else { "0" }.to_string()
            }
            _ => s.trim().to_string(),
        },
        Some(v) => a
            .str("value")?
            .unwrap_or_else(|| v.to_string())
            .trim()
            .to_string(),
    };
    if present && value.is_empty() {
        return Err(OpError::new("value cannot be blank"));
    }
    Ok(Sc {
        name,
        value,
        present,
        reload: a.bool_or("reload", true)?,
        sysctl_set: a.bool_or("sysctl_set", false)?,
        ignoreerrors: a.bool_or("ignoreerrors", false)?,
        file: a.str_or("sysctl_file", "/etc/sysctl.conf")?,
    })
}

fn current_probe(name: &str) -> Probe {
    Probe::Command {
        script: format!("LANG=C LC_ALL=C sysctl -e -n {}", quote(name)),
    }
}

fn values_equal(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

fn is_entry(line: &str) -> bool {
    !(line.is_empty() || line.starts_with('#') || line.starts_with(';') || !line.contains('='))
}

impl Module for Sysctl {
    fn names(&self) -> &'static [&'static str] {
        &["sysctl", "ansible.posix.sysctl", "ansible.builtin.sysctl"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let s = parse(args)?;
        Ok(vec![
            current_probe(&s.name),
            Probe::Read {
                path: s.file.clone(),
                max_bytes: MAX_READ,
            },
        ])
    }

    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let s = parse(args)?;
        let proc_value = match facts.get(&current_probe(&s.name)) {
            Some(ProbeResult::Command(o)) if o.rc == 0 => Some(o.stdout.clone()),
            Some(ProbeResult::Command(_)) => None,
            _ => return Err(OpError::new("internal: sysctl probe was not answered")),
        };
        let content = match facts.read(&s.file) {
            Some(c) => c.map(|b| String::from_utf8_lossy(b).into_owned()),
            None => return Err(OpError::new("internal: sysctl file probe was not answered")),
        };
        let before = content.clone().unwrap_or_default();
        let lines: Vec<String> = before.lines().map(|l| l.trim().to_string()).collect();
        let mut file_value: Option<String> = None;
        for l in &lines {
            if is_entry(l) {
                if let Some((k, v)) = l.split_once('=') {
                    if k.trim() == s.name {
                        // The last occurrence wins when reading, like Ansible's dict.
                        file_value = Some(v.trim().to_string());
                    }
                }
            }
        }
        // fix_lines
        let mut checked: Vec<String> = Vec::new();
        let mut fixed: Vec<String> = Vec::new();
        for l in &lines {
            if !is_entry(l) {
                fixed.push(l.clone());
                continue;
            }
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if checked.contains(&k) {
                continue;
            }
            checked.push(k.clone());
            if k == s.name {
                if s.present {
                    fixed.push(format!("{k}={}", s.value));
                }
            } else {
                fixed.push(format!("{k}={v}"));
            }
        }
        if !checked.contains(&s.name) && s.present {
            fixed.push(format!("{}={}", s.name, s.value));
        }
        let mut changed = false;
        let mut write_file = false;
        let mut set_proc = false;
        match (&file_value, s.present) {
            (None, true) => {
                changed = true;
                write_file = true;
            }
            (None, false) => {}
            (Some(v), false) if !v.is_empty() => {
                changed = true;
                write_file = true;
            }
            (Some(v), _) if *v != s.value => {
                changed = true;
                write_file = true;
            }
            _ => {
                if s.reload
                    && !proc_value
                        .as_deref()
                        .is_some_and(|p| values_equal(p, &s.value))
                {
                    changed = true;
                }
            }
        }
        if s.sysctl_set && s.present {
            match &proc_value {
                None => changed = true,
                Some(p) if !values_equal(p, &s.value) => {
                    changed = true;
                    set_proc = true;
                }
                _ => {}
            }
        }
        if !changed {
            return Ok(Planned::NoChange { result: Map::new() });
        }
        let mut actions = Vec::new();
        let e = if s.ignoreerrors { "-e " } else { "" };
        if set_proc {
            // Ansible quotes the value in a command line it shlex-splits: one `KEY=VALUE` word.
            actions.push(Action::Exec {
                script: format!(
                    "LANG=C LC_ALL=C sysctl {e}-w {}",
                    quote(&format!("{}={}", s.name, s.value))
                ),
                stdin: None,
            });
        }
        let mut diffs = Vec::new();
        if write_file {
            let after: String = fixed.iter().map(|l| format!("{}\n", l.trim())).collect();
            actions.push(Action::WriteFile {
                path: s.file.clone(),
                content: after.clone().into_bytes(),
                mode: content.is_none().then_some(0o644),
                owner: None,
                group: None,
            });
            diffs.push(Diff {
                label: s.file.clone(),
                before,
                after,
            });
        }
        if s.reload {
            actions.push(Action::Exec {
                script: format!("LANG=C LC_ALL=C sysctl {e}-p {}", quote(&s.file)),
                stdin: None,
            });
        }
        Ok(Planned::Change {
            actions,
            diffs,
            result: Map::new(),
        })
    }

    fn finish(&self, args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let Planned::Change { actions, .. } = planned else {
            return ModuleResult::default();
        };
        let name = parse(args).map(|s| s.name).unwrap_or_default();
        let re = regex::Regex::new(
            r#"(?m)^sysctl: setting key "[^"]+": (Invalid argument|Read-only file system)$"#,
        )
        .ok();
        for (act, out) in actions.iter().zip(outputs) {
            let Action::Exec { script, .. } = act else {
                continue;
            };
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let bad = out.rc != 0 || re.as_ref().is_some_and(|r| r.is_match(&stderr));
            if bad {
                let msg = if script.contains(" -w ") {
                    format!("setting {name} failed: {stdout}{stderr}")
                } else {
                    format!("Failed to reload sysctl: {stdout}{stderr}")
                };
                return ModuleResult {
                    changed: true,
                    failed: true,
                    msg: Some(msg),
                    ..Default::default()
                };
            }
        }
        ModuleResult {
            changed: true,
            ..Default::default()
        }
    }
}
