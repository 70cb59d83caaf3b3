//! `apt_repository` (one-line `deb` sources; semantics from ansible-core 2.14's module source and
//! oracle runs with `--check --diff`):
//! - every `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*.list` is parsed; lines are
//!   `(enabled, source, comment)`; a valid source starts with `deb`/`deb-src`, its whitespace is
//!   collapsed;
//! - present: enable every identical source (also commented-out ones); otherwise append it to
//!   `filename`.list (default: derived from the URL: options and scheme dropped, first word after
//!   the type, non-alphanumerics → `_`, e.g. `https://repos.example.com/debian/` →
//!   `repos_example_com_debian.list`, checked with the oracle); absent: drop enabled copies;
//! - changed when the rendered files differ; then Ansible rewrites every file in its normalised
//!   form (`# ` for disabled lines, ` # comment`), so we write each file whose normalised text
//!   differs from its bytes, and delete files left with no lines; `mode` (default 0644) applies
//!   to the file a source was added to; `update_cache` (default yes) runs `apt-get update`;
//! - result: `repo`, `state`; diffs per file.

use super::args::{p, pa, A};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Diff, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

pub struct AptRepository;
pub static APT_REPOSITORY: AptRepository = AptRepository;

const PARAMS: &[ParamSpec] = &[
    p("repo"),
    p("state"),
    p("mode"),
    p("filename"),
    pa("update_cache", &["update-cache"]),
    p("update_cache_retries"),
    p("update_cache_retry_max_delay"),
    p("validate_certs"),
    p("codename"),
    p("install_python_apt"),
];

const SOURCES_LIST: &str = "/etc/apt/sources.list";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const DUMP_SCRIPT: &str = "for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do \
     [ -f \"$f\" ] || continue; printf '\\001FILE %s\\n' \"$f\"; cat -- \"$f\"; \
     printf '\\n\\001END\\n'; done";

#[derive(Clone, Debug, PartialEq)]
struct Line {
    valid: bool,
    enabled: bool,
    source: String,
    comment: String,
}

fn parse_line(raw: &str) -> Line {
    let mut line = raw.trim();
    let mut enabled = true;
    if let Some(rest) = line.strip_prefix('#') {
        enabled = false;
        line = rest;
    }
    let mut comment = String::new();
    if let Some(i) = line.find('#') {
        if i > 0 {
            comment = line[i + 1..].trim().to_string();
            line = &line[..i];
        }
    }
    let mut source = line.trim().to_string();
    let mut valid = false;
    let chunks: Vec<&str> = source.split_whitespace().collect();
    if chunks
        .first()
        .is_some_and(|c| *c == "deb" || *c == "deb-src")
    {
        valid = true;
        source = chunks.join(" ");
    }
    Line {
        valid,
        enabled,
        source,
        comment,
    }
}

fn render(lines: &[Line]) -> String {
    let mut s = String::new();
    for l in lines {
        if !l.enabled {
            s.push_str("# ");
        }
        s.push_str(&l.source);
        if !l.comment.is_empty() {
            s.push_str(" # ");
            s.push_str(&l.comment);
        }
        s.push('\n');
    }
    s
}

/// Ansible's `_suggest_filename` (without the `filename` override).
pub fn suggest_filename(source: &str) -> String {
    let opts = regex::Regex::new(r"\[[^\]]+\]").ok();
    let proto = regex::Regex::new(r"\w+://").ok();
    let mut line = source.to_string();
    if let Some(r) = &opts {
        line = r.replace_all(&line, "").into_owned();
    }
    if let Some(r) = &proto {
        line = r.replace_all(&line, "").into_owned();
    }
    let mut parts: Vec<&str> = line
        .split_whitespace()
        .filter(|p| *p != "deb" && *p != "deb-src")
        .collect();
    let first = parts.first_mut().map(|p| match p.split_once('@') {
        Some((_, host)) => host.to_string(),
        None => p.to_string(),
    });
    let cleaned: String = first
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' })
        .collect();
    format!(
        "{}.list",
        cleaned.split_whitespace().collect::<Vec<_>>().join("_")
    )
}

fn parse_dump(out: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut rest = out;
    while let Some(i) = rest.find("\u{1}FILE ") {
        rest = &rest[i + 6..];
        let Some(nl) = rest.find('\n') else { break };
        let name = rest[..nl].to_string();
        rest = &rest[nl + 1..];
        let end = rest.find("\n\u{1}END\n").unwrap_or(rest.len());
        files.push((name, rest[..end].to_string()));
        rest = &rest[(end + 6).min(rest.len())..];
    }
    files
}

fn parse_mode(v: Option<&Value>) -> Result<u32, OpError> {
    match v {
        None => Ok(0o644),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| n as u32)
            .ok_or_else(|| OpError::new("mode must be an octal number")),
        Some(Value::String(s)) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .map_err(|_| OpError::new(format!("mode must be in octal or symbolic form: {s}"))),
        Some(_) => Err(OpError::new("mode must be an octal number")),
    }
}

impl Module for AptRepository {
    fn names(&self) -> &'static [&'static str] {
        &[
            "apt_repository",
            "ansible.builtin.apt_repository",
            "ansible.legacy.apt_repository",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        A::new(args, PARAMS)?;
        Ok(vec![Probe::Command {
            script: DUMP_SCRIPT.into(),
        }])
    }
    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let a = A::new(args, PARAMS)?;
        let repo = a.str("repo")?.unwrap_or_default();
        if repo.is_empty() {
            return Err(OpError::new(
                "Please set argument 'repo' to a non-empty value",
            ));
        }
        let state = a
            .choice("state", &["absent", "present"], Some("present"))?
            .unwrap_or_default();
        let mode = parse_mode(a.raw("mode"))?;
        let update_cache = a.bool_or("update_cache", true)?;
        let dump = match facts.get(&Probe::Command {
            script: DUMP_SCRIPT.into(),
        }) {
            Some(ProbeResult::Command(o)) => parse_dump(&o.stdout),
            _ => return Err(OpError::new("internal: sources probe was not answered")),
        };
        let new = parse_line(&repo);
        if !new.valid || !new.enabled {
            return Err(OpError::new(format!(
                "Invalid repository string: {}",
                repo.trim()
            )));
        }
        let raw: Vec<(String, String)> = dump;
        let mut files: Vec<(String, Vec<Line>)> = raw
            .iter()
            .map(|(f, c)| (f.clone(), c.lines().map(parse_line).collect()))
            .collect();
        let before: Vec<(String, String)> = files
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(f, l)| (f.clone(), render(l)))
            .collect();
        let mut added_to: Option<String> = None;
        if state == "present" {
            let mut found = false;
            for (_, lines) in files.iter_mut() {
                for l in lines.iter_mut() {
                    if l.valid && l.source == new.source {
                        l.enabled = true;
                        found = true;
                    }
                }
            }
            if !found {
                let name = match a.str("filename")? {
                    Some(f) => format!("{f}.list"),
                    None => suggest_filename(&new.source),
                };
                let path = if name.contains('/') {
                    name
                } else {
                    format!("{SOURCES_DIR}/{name}")
                };
                let line = Line {
                    comment: String::new(),
                    ..new.clone()
                };
                match files.iter_mut().find(|(f, _)| *f == path) {
                    Some((_, l)) => l.push(line),
                    None => files.push((path.clone(), vec![line])),
                }
                added_to = Some(path);
            }
        } else {
            for (_, lines) in files.iter_mut() {
                lines.retain(|l| !(l.valid && l.enabled && l.source == new.source));
            }
        }
        let after: Vec<(String, String)> = files
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(f, l)| (f.clone(), render(l)))
            .collect();
        let mut result = Map::new();
        result.insert("repo".into(), json!(repo));
        result.insert("state".into(), json!(state));
        if before == after {
            return Ok(Planned::NoChange { result });
        }
        let mut actions = Vec::new();
        let mut diffs = Vec::new();
        let _ = SOURCES_LIST;
        for (f, lines) in &files {
            let old_raw = raw.iter().find(|(g, _)| g == f).map(|(_, c)| c.clone());
            if lines.is_empty() {
                if old_raw.is_some() {
                    actions.push(Action::Exec {
                        script: format!("rm -f -- {}", quote(f)),
                        stdin: None,
                    });
                }
            } else {
                let text = render(lines);
                if old_raw.as_deref() != Some(text.as_str()) {
                    actions.push(Action::WriteFile {
                        path: f.clone(),
                        content: text.into_bytes(),
                        mode: (added_to.as_deref() == Some(f.as_str())).then_some(mode),
                        owner: None,
                        group: None,
                    });
                }
            }
            let b = before.iter().find(|(g, _)| g == f).map(|(_, t)| t.clone());
            let af = after.iter().find(|(g, _)| g == f).map(|(_, t)| t.clone());
            if b != af {
                diffs.push(Diff {
                    label: f.clone(),
                    before: b.unwrap_or_default(),
                    after: af.unwrap_or_default(),
                });
            }
        }
        if update_cache {
            actions.push(Action::Exec {
                script: "DEBIAN_FRONTEND=noninteractive LANG=C.utf8 LC_ALL=C.utf8 \
                         /usr/bin/apt-get update -q"
                    .into(),
                stdin: None,
            });
        }
        Ok(Planned::Change {
            actions,
            diffs,
            result,
        })
    }
    fn finish(&self, _args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let (changed, data, actions) = match planned {
            Planned::NoChange { result } => (false, result.clone(), &[][..]),
            Planned::Change {
                result, actions, ..
            } => (true, result.clone(), actions.as_slice()),
        };
        for (act, out) in actions.iter().zip(outputs) {
            if out.rc != 0 {
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                let is_update =
                    matches!(act, Action::Exec { script, .. } if script.contains("apt-get update"));
                return ModuleResult {
                    changed,
                    failed: true,
                    msg: Some(if is_update {
                        format!("Failed to update apt cache: {err}")
                    } else {
                        err
                    }),
                    data,
                    ..Default::default()
                };
            }
        }
        ModuleResult {
            changed,
            data,
            ..Default::default()
        }
    }
}
