//! `command` and `shell`.
//!
//! Behaviour taken from ansible-core 2.14 (oracle runs of `ansible localhost -c local -m command`):
//! - `command` never uses a shell: the free-form text is split with `shlex.split` (POSIX) and each
//!   word is passed literally (`|`, `>` are plain arguments). Words are expanded like
//!   `run_command` does: `expanduser(expandvars(word))` (`$HOME`, `~`), so we route such argv
//!   through python3's `os.execvp`; other argv is `exec`ed from `/bin/sh` with every word quoted.
//! - `shell` runs the text with `/bin/sh -c` (or `executable -c`).
//! - `creates`/`removes` are globs, resolved after `chdir`. When they decide to skip:
//!   changed=false, rc=0, stdout "skipped, since X exists" / "skipped, since X does not exist",
//!   msg "Did not run command since 'X' exists" ("Would not ..." in check mode).
//! - Check mode otherwise: msg "Command would have run if not in check mode", rc=0; skipped=true
//!   and changed=false when neither creates nor removes is given, else changed=true, not skipped.
//! - rc != 0 → failed, msg "non-zero return code". stdout/stderr are stripped of trailing
//!   `\r\n` (`strip_empty_ends`, default true); `*_lines` are `splitlines()`.
//! - `cmd` is the argv list for command and the string for shell.
//!
//! Executor contract: in check mode the executor calls `finish(args, planned, &[])`; an empty
//! `outputs` slice is how `finish` knows the command did not run.

use super::args::{glob_probe, lines_value, p, pa, shlex_split, A};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

/// `command` (`shell == false`) or `shell` (`shell == true`).
pub struct CommandModule {
    shell: bool,
}

pub static COMMAND: CommandModule = CommandModule { shell: false };
pub static SHELL: CommandModule = CommandModule { shell: true };

const COMMAND_PARAMS: &[ParamSpec] = &[
    pa("_raw_params", &["cmd"]),
    p("argv"),
    p("chdir"),
    p("creates"),
    p("removes"),
    p("stdin"),
    p("stdin_add_newline"),
    p("strip_empty_ends"),
    p("executable"),
];

const SHELL_PARAMS: &[ParamSpec] = &[
    pa("_raw_params", &["cmd"]),
    p("chdir"),
    p("creates"),
    p("removes"),
    p("stdin"),
    p("stdin_add_newline"),
    p("strip_empty_ends"),
    p("executable"),
];

/// The parsed arguments.
struct Cmd {
    /// Argv for `command`; a one-element list holding the script for `shell`.
    words: Vec<String>,
    /// The `cmd` result field.
    cmd_field: Value,
    chdir: Option<String>,
    creates: Option<String>,
    removes: Option<String>,
    stdin: Option<String>,
    stdin_add_newline: bool,
    strip: bool,
    executable: Option<String>,
}

impl CommandModule {
    fn spec(&self) -> &'static [ParamSpec] {
        if self.shell {
            SHELL_PARAMS
        } else {
            COMMAND_PARAMS
        }
    }

    fn parse(&self, args: &Args) -> Result<Cmd, OpError> {
        let a = A::new(args, self.spec())?;
        let raw = a.str("_raw_params")?;
        let argv = if self.shell { None } else { a.list("argv")? };
        let raw_given = raw.as_deref().is_some_and(|r| !r.trim().is_empty());
        let argv_given = argv.as_ref().is_some_and(|v| !v.is_empty());
        if !raw_given && !argv_given {
            return Err(OpError::new("no command given"));
        }
        if raw_given && argv_given {
            return Err(OpError::new("only command or argv can be given, not both"));
        }
        let (words, cmd_field) = match (raw, argv) {
            (Some(r), _) if raw_given && self.shell => (vec![r.clone()], Value::String(r)),
            (Some(r), _) if raw_given => {
                let w = shlex_split(&r)?;
                let v = json!(w);
                (w, v)
            }
            (_, Some(v)) => {
                let j = json!(v);
                (v, j)
            }
            _ => return Err(OpError::new("no command given")),
        };
        Ok(Cmd {
            words,
            cmd_field,
            chdir: a.path("chdir")?,
            creates: a.path("creates")?,
            removes: a.path("removes")?,
            stdin: a.str("stdin")?,
            stdin_add_newline: a.bool_or("stdin_add_newline", true)?,
            strip: a.bool_or("strip_empty_ends", true)?,
            // Ansible ignores `executable` for `command` (with a warning).
            executable: if self.shell {
                a.str("executable")?
            } else {
                None
            },
        })
    }

    fn script(&self, c: &Cmd) -> String {
        let mut s = String::new();
        if let Some(d) = &c.chdir {
            s.push_str(&format!("cd {} || exit 1\n", quote(d)));
        }
        if self.shell {
            match &c.executable {
                Some(exe) => s.push_str(&format!("exec {} -c {}", quote(exe), quote(&c.words[0]))),
                None => s.push_str(&format!("exec /bin/sh -c {}", quote(&c.words[0]))),
            }
        } else if c
            .words
            .iter()
            .any(|w| w.contains('$') || w.starts_with('~'))
        {
            // run_command's expand_user_and_vars: expanduser(expandvars(word)), unknown vars kept.
            s.push_str(
                "exec python3 -c 'import os,sys; a=[os.path.expanduser(os.path.expandvars(x)) \
                 for x in sys.argv[1:]]; os.execvp(a[0], a)'",
            );
            for w in &c.words {
                s.push(' ');
                s.push_str(&quote(w));
            }
        } else {
            s.push_str("exec ");
            s.push_str(&crate::shell::join(&c.words));
        }
        s
    }
}

fn probe_answer<'f>(facts: &'f Facts, probe: &Probe) -> Result<&'f str, OpError> {
    match facts.get(probe) {
        Some(ProbeResult::Command(o)) if o.rc == 3 => Err(OpError::new(format!(
            "Unable to change directory before execution: {}",
            o.stderr.trim()
        ))),
        Some(ProbeResult::Command(o)) => Ok(o.stdout.trim()),
        _ => Err(OpError::new(
            "internal: creates/removes probe was not answered",
        )),
    }
}

fn base_result(cmd: &Cmd) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("cmd".into(), cmd.cmd_field.clone());
    r
}

impl Module for CommandModule {
    fn names(&self) -> &'static [&'static str] {
        if self.shell {
            &["shell", "ansible.builtin.shell", "ansible.legacy.shell"]
        } else {
            &[
                "command",
                "ansible.builtin.command",
                "ansible.legacy.command",
            ]
        }
    }

    fn params(&self) -> &'static [ParamSpec] {
        self.spec()
    }

    fn free_form(&self) -> bool {
        true
    }

    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let c = self.parse(args)?;
        let mut out = Vec::new();
        for pat in [&c.creates, &c.removes].into_iter().flatten() {
            out.push(Probe::Command {
                script: glob_probe(pat, c.chdir.as_deref()),
            });
        }
        Ok(out)
    }

    fn plan(&self, args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
        let c = self.parse(args)?;
        let verb = match mode {
            Mode::Check => "Would",
            Mode::Apply => "Did",
        };
        let skip = |stdout: String, msg: String| {
            let mut r = base_result(&c);
            r.insert("rc".into(), json!(0));
            r.insert("stdout_lines".into(), lines_value(&stdout));
            r.insert("stdout".into(), json!(stdout));
            r.insert("stderr".into(), json!(""));
            r.insert("stderr_lines".into(), json!([]));
            r.insert("msg".into(), json!(msg));
            Planned::NoChange { result: r }
        };
        if let Some(pat) = &c.creates {
            let probe = Probe::Command {
                script: glob_probe(pat, c.chdir.as_deref()),
            };
            if probe_answer(facts, &probe)? == "yes" {
                return Ok(skip(
                    format!("skipped, since {pat} exists"),
                    format!("{verb} not run command since '{pat}' exists"),
                ));
            }
        }
        if let Some(pat) = &c.removes {
            let probe = Probe::Command {
                script: glob_probe(pat, c.chdir.as_deref()),
            };
            if probe_answer(facts, &probe)? != "yes" {
                return Ok(skip(
                    format!("skipped, since {pat} does not exist"),
                    format!("{verb} not run command since '{pat}' does not exist"),
                ));
            }
        }
        let stdin = c.stdin.as_ref().map(|s| {
            let mut b = s.clone().into_bytes();
            if c.stdin_add_newline {
                b.push(b'\n');
            }
            b
        });
        Ok(Planned::Change {
            actions: vec![Action::Exec {
                script: self.script(&c),
                stdin,
            }],
            diffs: Vec::new(),
            result: base_result(&c),
        })
    }

    fn finish(&self, args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let (changed_possible, mut data) = match planned {
            Planned::NoChange { result } => (false, result.clone()),
            Planned::Change { result, .. } => (true, result.clone()),
        };
        let msg = data
            .remove("msg")
            .and_then(|m| m.as_str().map(str::to_string));
        if !changed_possible {
            return ModuleResult {
                msg,
                data,
                ..Default::default()
            };
        }
        let parsed = self.parse(args).ok();
        let strip = parsed.as_ref().is_none_or(|c| c.strip);
        let Some(out) = outputs.first() else {
            // Check mode: the command did not run.
            let decided_by_files = parsed
                .as_ref()
                .is_some_and(|c| c.creates.is_some() || c.removes.is_some());
            data.insert("rc".into(), json!(0));
            for k in ["stdout", "stderr"] {
                data.insert(k.into(), json!(""));
                data.insert(format!("{k}_lines"), json!([]));
            }
            return ModuleResult {
                changed: decided_by_files,
                skipped: !decided_by_files,
                failed: false,
                msg: Some("Command would have run if not in check mode".into()),
                data,
            };
        };
        let text = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            if strip {
                s.trim_end_matches(['\r', '\n']).to_string()
            } else {
                s
            }
        };
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        data.insert("rc".into(), json!(out.rc));
        data.insert("stdout_lines".into(), lines_value(&stdout));
        data.insert("stderr_lines".into(), lines_value(&stderr));
        data.insert("stdout".into(), json!(stdout));
        data.insert("stderr".into(), json!(stderr));
        let failed = out.rc != 0;
        ModuleResult {
            changed: true,
            failed,
            skipped: false,
            msg: Some(if failed {
                "non-zero return code".into()
            } else {
                String::new()
            }),
            data,
        }
    }
}
