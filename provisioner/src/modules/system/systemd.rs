//! `systemd` and `service` (on systemd hosts Ansible's service action runs the systemd module).
//!
//! From ansible-core 2.14's systemd module source (this machine has no systemd as PID 1, so the
//! oracle could not run it live; `service` against a missing unit was checked:
//! msg "Could not find the requested service X: host"):
//! - order: daemon-reload, daemon-reexec, mask/unmask, enable/disable, start/stop/restart/reload;
//! - `daemon_reload`/`daemon_reexec` never make the task changed, and are not run in check mode;
//! - started: start unless ActiveState is active/activating; stopped: stop when
//!   active/activating/deactivating; restarted/reloaded: always act (start when not running),
//!   and the result's `state` is then `started`;
//! - enabled: `is-enabled` succeeds for enabled, enabled-runtime, static, generated, transient
//!   (alias/indirect count as not enabled); the result carries the new `enabled`;
//! - result: `name`, `changed`, `status` (the unit's properties; we carry LoadState,
//!   ActiveState, SubState, UnitFileState), `state`, `enabled`.

use super::args::{p, pa, A};
use crate::facts::{Facts, Probe, ProbeResult, UnitState};
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

pub struct Systemd {
    service: bool,
}

pub static SYSTEMD: Systemd = Systemd { service: false };
pub static SERVICE: Systemd = Systemd { service: true };

const SYSTEMD_PARAMS: &[ParamSpec] = &[
    pa("name", &["service", "unit"]),
    p("state"),
    p("enabled"),
    p("force"),
    p("masked"),
    pa("daemon_reload", &["daemon-reload"]),
    pa("daemon_reexec", &["daemon-reexec"]),
    p("scope"),
    p("no_block"),
];

/// `service`'s parameters; on systemd hosts the generic ones are dropped like Ansible does.
const SERVICE_PARAMS: &[ParamSpec] = &[
    pa("name", &["service", "unit"]),
    p("state"),
    p("enabled"),
    p("pattern"),
    p("sleep"),
    pa("arguments", &["args"]),
    p("runlevel"),
    p("use"),
];

const PRIV: &str = "_systemd_actions";

struct Sd {
    name: Option<String>,
    state: Option<String>,
    enabled: Option<bool>,
    masked: Option<bool>,
    daemon_reload: bool,
    daemon_reexec: bool,
    systemctl: String,
}

impl Systemd {
    fn parse(&self, args: &Args) -> Result<Sd, OpError> {
        let spec = if self.service {
            SERVICE_PARAMS
        } else {
            SYSTEMD_PARAMS
        };
        let a = A::new(args, spec)?;
        let state = a.choice(
            "state",
            &["reloaded", "restarted", "started", "stopped"],
            None,
        )?;
        let name = a.str("name")?;
        let enabled = a.bool("enabled")?;
        let (masked, daemon_reload, daemon_reexec, mut systemctl) = if self.service {
            if let Some(u) = a.str("use")? {
                if u != "auto" && u != "systemd" {
                    return Err(OpError::new(format!(
                        "service: use={u} is not supported (hosts are managed by systemd)"
                    )));
                }
            }
            if name.is_none() {
                return Err(OpError::new("missing required arguments: name"));
            }
            (None, false, false, "/usr/bin/systemctl".to_string())
        } else {
            let scope = a
                .choice("scope", &["system", "user", "global"], Some("system"))?
                .unwrap_or_default();
            let mut s = "/usr/bin/systemctl".to_string();
            if scope != "system" {
                s.push_str(&format!(" --{scope}"));
            }
            if a.bool_or("no_block", false)? {
                s.push_str(" --no-block");
            }
            if a.bool_or("force", false)? {
                s.push_str(" --force");
            }
            (
                a.bool("masked")?,
                a.bool_or("daemon_reload", false)?,
                a.bool_or("daemon_reexec", false)?,
                s,
            )
        };
        if state.is_none()
            && enabled.is_none()
            && masked.is_none()
            && !daemon_reload
            && !daemon_reexec
        {
            return Err(OpError::new(if self.service {
                "one of the following is required: state, enabled"
            } else {
                "one of the following is required: state, enabled, masked, daemon_reload, \
                 daemon_reexec"
            }));
        }
        for (k, given) in [
            ("state", state.is_some()),
            ("enabled", enabled.is_some()),
            ("masked", masked.is_some()),
        ] {
            if given && name.is_none() {
                return Err(OpError::new(format!(
                    "missing parameter(s) required by '{k}': name"
                )));
            }
        }
        if let Some(n) = &name {
            for g in ["*", "?", "["] {
                if n.contains(g) {
                    return Err(OpError::new(format!(
                        "This module does not currently support using glob patterns, found \
                         '{g}' in service name: {n}"
                    )));
                }
            }
        }
        systemctl = systemctl.trim().to_string();
        Ok(Sd {
            name,
            state,
            enabled,
            masked,
            daemon_reload,
            daemon_reexec,
            systemctl,
        })
    }
}

fn status_map(u: &UnitState) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("ActiveState".into(), json!(u.active_state));
    m.insert("LoadState".into(), json!(u.load_state));
    m.insert("SubState".into(), json!(u.sub_state));
    m.insert("UnitFileState".into(), json!(u.unit_file_state));
    m
}

fn running(u: &UnitState) -> bool {
    u.active_state == "active" || u.active_state == "activating"
}

impl Module for Systemd {
    fn names(&self) -> &'static [&'static str] {
        if self.service {
            &[
                "service",
                "ansible.builtin.service",
                "ansible.legacy.service",
            ]
        } else {
            &[
                "systemd",
                "systemd_service",
                "ansible.builtin.systemd",
                "ansible.builtin.systemd_service",
                "ansible.legacy.systemd",
            ]
        }
    }

    fn params(&self) -> &'static [ParamSpec] {
        if self.service {
            SERVICE_PARAMS
        } else {
            SYSTEMD_PARAMS
        }
    }

    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let sd = self.parse(args)?;
        Ok(sd
            .name
            .into_iter()
            .map(|name| Probe::Unit { name })
            .collect())
    }

    fn plan(&self, args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
        let sd = self.parse(args)?;
        let mut result = Map::new();
        result.insert("name".into(), json!(sd.name));
        result.insert("status".into(), json!({}));
        // (systemctl verb, counts as a change)
        let mut acts: Vec<(String, bool)> = Vec::new();
        if mode == Mode::Apply {
            if sd.daemon_reload {
                acts.push(("daemon-reload".into(), false));
            }
            if sd.daemon_reexec {
                acts.push(("daemon-reexec".into(), false));
            }
        }
        if let Some(name) = &sd.name {
            let unit = match facts.get(&Probe::Unit { name: name.clone() }) {
                Some(ProbeResult::Unit(u)) => u.clone(),
                _ => return Err(OpError::new("internal: unit probe was not answered")),
            };
            let found = !unit.load_state.is_empty() && unit.load_state != "not-found";
            // A unit file written earlier may only appear after the daemon-reload we run first.
            let missing_ok = sd.daemon_reload && mode == Mode::Apply;
            if found {
                result.insert("status".into(), Value::Object(status_map(&unit)));
            }
            let missing =
                || OpError::new(format!("Could not find the requested service {name}: host"));
            if let Some(want) = sd.masked {
                let is = unit.unit_file_state == "masked" || unit.load_state == "masked";
                if is != want {
                    acts.push((if want { "mask" } else { "unmask" }.into(), true));
                }
            }
            if let Some(want) = sd.enabled {
                if !found && !missing_ok {
                    return Err(missing());
                }
                let is = matches!(
                    unit.unit_file_state.as_str(),
                    "enabled" | "enabled-runtime" | "static" | "generated" | "transient"
                );
                result.insert("enabled".into(), json!(want));
                if is != want {
                    acts.push((if want { "enable" } else { "disable" }.into(), true));
                }
            }
            if let Some(state) = &sd.state {
                if !found && !missing_ok {
                    return Err(missing());
                }
                let verb = match state.as_str() {
                    "started" => (!running(&unit)).then_some("start"),
                    "stopped" => {
                        (running(&unit) || unit.active_state == "deactivating").then_some("stop")
                    }
                    _ if !running(&unit) => Some("start"),
                    "restarted" => Some("restart"),
                    _ => Some("reload"),
                };
                let shown = if state == "restarted" || state == "reloaded" {
                    "started"
                } else {
                    state.as_str()
                };
                result.insert("state".into(), json!(shown));
                if let Some(v) = verb {
                    acts.push((v.into(), true));
                }
            }
        }
        let changes = acts.iter().any(|(_, c)| *c);
        if acts.is_empty() || (!changes && mode == Mode::Check) {
            return Ok(Planned::NoChange { result });
        }
        let actions = acts
            .iter()
            .map(|(verb, _)| Action::Exec {
                script: match (&sd.name, verb.as_str()) {
                    (_, "daemon-reload") | (_, "daemon-reexec") => {
                        format!("{} {verb}", sd.systemctl)
                    }
                    (Some(n), _) => format!("{} {verb} {}", sd.systemctl, quote(n)),
                    (None, _) => format!("{} {verb}", sd.systemctl),
                },
                stdin: None,
            })
            .collect();
        result.insert(
            PRIV.into(),
            json!(acts.iter().map(|(v, c)| json!([v, c])).collect::<Vec<_>>()),
        );
        Ok(Planned::Change {
            actions,
            diffs: Vec::new(),
            result,
        })
    }

    fn finish(&self, args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let mut data = match planned {
            Planned::NoChange { result } | Planned::Change { result, .. } => result.clone(),
        };
        let acts: Vec<(String, bool)> = data
            .remove(PRIV)
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| Some((v[0].as_str()?.to_string(), v[1].as_bool()?)))
            .collect();
        let name = self
            .parse(args)
            .ok()
            .and_then(|s| s.name)
            .unwrap_or_default();
        let changed = acts.iter().any(|(_, c)| *c);
        for ((verb, _), out) in acts.iter().zip(outputs) {
            if out.rc == 0 {
                continue;
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let msg = match verb.as_str() {
                "daemon-reload" | "daemon-reexec" => {
                    format!("failure {} during {verb}: {stderr}", out.rc)
                }
                "enable" | "disable" => {
                    format!("Unable to {verb} service {name}: {stdout}{stderr}")
                }
                "mask" | "unmask" => continue,
                _ if stderr.contains("not found") || stderr.contains("not loaded") => {
                    format!("Could not find the requested service {name}: host")
                }
                _ => format!("Unable to {verb} service {name}: {stderr}"),
            };
            return ModuleResult {
                changed,
                failed: true,
                msg: Some(msg),
                data,
                ..Default::default()
            };
        }
        ModuleResult {
            changed,
            data,
            ..Default::default()
        }
    }
}
