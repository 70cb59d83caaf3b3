//! `group` (ansible-core 2.14 `group.py`, Linux generic class):
//! - probe: `getent group NAME` (Python's `grp.getgrnam`);
//! - present + missing: `groupadd [-g GID] [-r] NAME`; present + existing: `groupmod -g GID NAME`
//!   only when `gid` is given and differs (`system` is never changed on an existing group);
//!   absent + existing: `groupdel NAME`;
//! - result: `name`, `state`, and, when the group exists afterwards, `gid` and `system` (the
//!   *argument*, as Ansible reports it); `stdout`/`stderr` of the command when not empty.
//!   In check mode a group that would be created or removed reports only `changed` (Ansible's
//!   early `exit_json(changed=True)`); a modification reports the current gid.
//! - the gid of a created group is read back by a second, read-only action (`getent group NAME`).
//!
//! `local` and `non_unique` are not supported (rejected as unknown parameters).

use super::args::{p, req, A};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

pub struct Group;
pub static GROUP: Group = Group;

const PARAMS: &[ParamSpec] = &[req("name", &[]), p("state"), p("gid"), p("system")];

struct G {
    name: String,
    present: bool,
    gid: Option<i64>,
    system: bool,
}

fn parse(args: &Args) -> Result<G, OpError> {
    let a = A::new(args, PARAMS)?;
    let name = a.str("name")?.unwrap_or_default();
    let state = a
        .choice("state", &["absent", "present"], Some("present"))?
        .unwrap_or_default();
    Ok(G {
        name,
        present: state == "present",
        gid: a.int("gid")?,
        system: a.bool_or("system", false)?,
    })
}

/// The read-only query for one group (by name, or by gid when numeric).
pub fn getent_group(name: &str) -> String {
    format!("getent group {}", quote(name))
}

/// A `/etc/group` line: (name, gid, members).
pub fn parse_group_line(line: &str) -> Option<(String, i64, Vec<String>)> {
    let f: Vec<&str> = line.trim_end_matches(['\n', '\r']).split(':').collect();
    if f.len() < 3 {
        return None;
    }
    let members = f
        .get(3)
        .map(|m| {
            m.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some((f[0].to_string(), f[2].parse().ok()?, members))
}

/// The answer to a `getent group` probe: `Some((name, gid, members))` when it exists.
pub fn group_from(
    facts: &Facts,
    name: &str,
) -> Result<Option<(String, i64, Vec<String>)>, OpError> {
    match facts.get(&Probe::Command {
        script: getent_group(name),
    }) {
        Some(ProbeResult::Command(o)) if o.rc == 0 => {
            Ok(o.stdout.lines().next().and_then(parse_group_line))
        }
        Some(ProbeResult::Command(o)) if o.rc == 2 => Ok(None),
        Some(ProbeResult::Command(o)) => Err(OpError::new(format!(
            "getent group {name} failed (rc {}): {}",
            o.rc,
            o.stderr.trim()
        ))),
        _ => Err(OpError::new("internal: group probe was not answered")),
    }
}

impl Module for Group {
    fn names(&self) -> &'static [&'static str] {
        &["group", "ansible.builtin.group", "ansible.legacy.group"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let g = parse(args)?;
        Ok(vec![Probe::Command {
            script: getent_group(&g.name),
        }])
    }

    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let g = parse(args)?;
        let cur = group_from(facts, &g.name)?;
        let mut result = Map::new();
        result.insert("name".into(), json!(g.name));
        result.insert(
            "state".into(),
            json!(if g.present { "present" } else { "absent" }),
        );
        let lookup = Action::Exec {
            script: getent_group(&g.name),
            stdin: None,
        };
        match (g.present, cur) {
            (false, None) => Ok(Planned::NoChange { result }),
            (false, Some(_)) => Ok(Planned::Change {
                actions: vec![Action::Exec {
                    script: format!("groupdel {}", quote(&g.name)),
                    stdin: None,
                }],
                diffs: Vec::new(),
                result,
            }),
            (true, None) => {
                let mut cmd = vec!["groupadd".to_string()];
                if let Some(gid) = g.gid {
                    cmd.push("-g".into());
                    cmd.push(gid.to_string());
                }
                if g.system {
                    cmd.push("-r".into());
                }
                cmd.push(g.name.clone());
                result.insert("_group_created".into(), json!(true));
                Ok(Planned::Change {
                    actions: vec![
                        Action::Exec {
                            script: crate::shell::join(&cmd),
                            stdin: None,
                        },
                        lookup,
                    ],
                    diffs: Vec::new(),
                    result,
                })
            }
            (true, Some((_, gid, _))) => {
                result.insert("system".into(), json!(g.system));
                result.insert("gid".into(), json!(gid));
                match g.gid {
                    Some(want) if want != gid => Ok(Planned::Change {
                        actions: vec![
                            Action::Exec {
                                script: format!("groupmod -g {want} {}", quote(&g.name)),
                                stdin: None,
                            },
                            lookup,
                        ],
                        diffs: Vec::new(),
                        result,
                    }),
                    _ => Ok(Planned::NoChange { result }),
                }
            }
        }
    }

    fn finish(&self, args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let Planned::Change { result, .. } = planned else {
            return crate::modules::default_finish(planned, outputs);
        };
        let mut data = result.clone();
        let created = data.remove("_group_created").is_some();
        if outputs.is_empty() {
            // Check mode: Ansible exits early with only `changed` when adding or deleting.
            if created || data.get("state") == Some(&json!("absent")) {
                data = Map::new();
            }
            return ModuleResult {
                changed: true,
                data,
                ..Default::default()
            };
        }
        let main = &outputs[0];
        let stdout = String::from_utf8_lossy(&main.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&main.stderr).into_owned();
        if main.rc != 0 {
            let mut d = Map::new();
            d.insert("name".into(), data["name"].clone());
            return ModuleResult {
                changed: false,
                failed: true,
                msg: Some(stderr),
                data: d,
                ..Default::default()
            };
        }
        if !stdout.is_empty() {
            data.insert("stdout".into(), json!(stdout));
        }
        if !stderr.is_empty() {
            data.insert("stderr".into(), json!(stderr));
        }
        if let Some(look) = outputs.get(1) {
            let text = String::from_utf8_lossy(&look.stdout);
            if let Some((_, gid, _)) = text.lines().next().and_then(parse_group_line) {
                if let Ok(g) = parse(args) {
                    data.insert("system".into(), json!(g.system));
                }
                data.insert("gid".into(), Value::from(gid));
            }
        }
        ModuleResult {
            changed: true,
            data,
            ..Default::default()
        }
    }
}
