//! `unarchive`: tar (plain, gz, bz2, xz; GNU tar detects the compression) and zip (needs
//! `unzip` on the host).
//!
//! Engine contract: as for `copy`, a control-node `src` is read by the ENGINE and passed as
//! `_content_b64`; the module streams it to a temp file on the host. With `remote_src: yes`
//! (or the deprecated `copy: no`) `src` is a path on the host.
//!
//! Changed semantics, as Ansible: nothing when `creates` exists; otherwise the archive is
//! compared with dest (`tar --compare`, or for zip each member's bytes with `cmp`) and only
//! extracted when something differs. For `remote_src` the comparison runs as a probe, so plan
//! and check mode are exact. For a control-node archive the comparison can only run with the
//! archive on the host, so the plan is an `Exec` that prints CHANGED/UNCHANGED, and `finish`
//! reports accordingly (check mode shows it as a possible change).
//! `mode`/`owner`/`group` are applied to every extracted member after extraction.

use super::args::{parse, specs, Kind, Param, Params, FILE_COMMON};
use super::common::{mode_str, need_stat, FileAttrs, ModeArg};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    default_finish, Action, ActionOutput, Args, Diff, Mode, Module, ModuleResult, OpError,
    ParamSpec, Planned,
};
use crate::shell::quote;
use base64::Engine as _;
use serde_json::{Map, Value};

pub struct Unarchive;

const P: [Param; 25] = [
    Param::new("src", Kind::Path).required(),
    Param::new("dest", Kind::Path).required(),
    Param::new("remote_src", Kind::Bool),
    Param::new("copy", Kind::Bool),
    Param::new("creates", Kind::Path),
    Param::new("list_files", Kind::Bool),
    Param::new("exclude", Kind::List),
    Param::new("include", Kind::List),
    Param::new("keep_newer", Kind::Bool),
    Param::new("extra_opts", Kind::List),
    Param::new("validate_certs", Kind::Bool),
    Param::new("decrypt", Kind::Bool),
    Param::new("io_buffer_size", Kind::Int),
    Param::new("_content_b64", Kind::Str),
    Param::new("_original_basename", Kind::Str),
    Param::new("_src_mode", Kind::Int),
    FILE_COMMON[0],
    FILE_COMMON[1],
    FILE_COMMON[2],
    FILE_COMMON[3],
    FILE_COMMON[4],
    FILE_COMMON[5],
    FILE_COMMON[6],
    FILE_COMMON[7],
    FILE_COMMON[8],
];
static SPECS: [ParamSpec; 25] = specs(&P);

fn params(args: &Args) -> Result<Params, OpError> {
    let p = parse("unarchive", &P, args)?;
    p.mutually_exclusive(&["copy", "remote_src"])?;
    FileAttrs::from_params(&p)?;
    if !remote(&p) && !p.has("_content_b64") {
        return Err(OpError::new(
            "unarchive: src must be read by the engine and passed as _content_b64 (or use remote_src)",
        ));
    }
    if p.str_or("src", "").contains("://") {
        return Err(OpError::new(
            "unarchive: downloading src from a URL is not supported; use get_url first",
        ));
    }
    Ok(p)
}

fn remote(p: &Params) -> bool {
    p.bool_or("remote_src", false) || !p.bool_or("copy", true)
}

/// Shell functions shared by the compare and the extract scripts. `$a` is the archive, `$d`
/// the destination. `is_zip` sniffs the magic bytes.
fn prelude(p: &Params) -> String {
    let list = |name: &str, flag: &str| -> String {
        p.list(name)
            .iter()
            .map(|x| format!(" {flag}{}", quote(x)))
            .collect()
    };
    let extra: String = p
        .list("extra_opts")
        .iter()
        .map(|x| format!(" {}", quote(x)))
        .collect();
    let include: String = p
        .list("include")
        .iter()
        .map(|x| format!(" {}", quote(x)))
        .collect();
    let keep_newer = if p.bool_or("keep_newer", false) {
        " --keep-newer-files"
    } else {
        ""
    };
    let mut s = String::new();
    s.push_str(
        "is_zip() { [ \"$(head -c 4 \"$a\" | od -An -tx1 | tr -d ' \\n')\" = 504b0304 ]; }\n",
    );
    s.push_str(&format!(
        "tar_x() {{ tar -xf \"$a\" -C \"$d\"{keep_newer}{}{extra} --{include}; }}\n",
        list("exclude", "--exclude=")
    ));
    s.push_str(&format!(
        "tar_cmp() {{ out=$(tar -d -f \"$a\" -C \"$d\"{}{extra} --{include} 2>&1); [ -z \"$out\" ]; }}\n",
        list("exclude", "--exclude=")
    ));
    s.push_str("tar_list() { tar -tf \"$a\"; }\n");
    let zip_ex: String = if p.list("exclude").is_empty() {
        String::new()
    } else {
        format!(
            " -x{}",
            p.list("exclude")
                .iter()
                .map(|x| format!(" {}", quote(x)))
                .collect::<String>()
        )
    };
    s.push_str("need_unzip() { command -v unzip >/dev/null 2>&1 || { echo \"Failed to find handler for \\\"$a\\\". Make sure the required command to extract the file is installed. Unable to find required 'unzip' binary in the path.\" >&2; exit 1; }; }\n");
    s.push_str(&format!(
        "zip_x() {{ need_unzip; unzip -o -q{extra} \"$a\"{include}{zip_ex} -d \"$d\"; }}\n"
    ));
    s.push_str("zip_list() { need_unzip; unzip -Z1 \"$a\"; }\n");
    s.push_str("zip_cmp() { need_unzip; unzip -Z1 \"$a\" | while IFS= read -r f; do case \"$f\" in */) [ -d \"$d/$f\" ] || exit 1;; *) unzip -p \"$a\" \"$f\" | cmp -s - \"$d/$f\" || exit 1;; esac; done; }\n");
    s.push_str("same() { if is_zip; then zip_cmp; else tar_cmp; fi; }\n");
    s.push_str("extract() { if is_zip; then zip_x; else tar_x; fi; }\n");
    s.push_str("listing() { if is_zip; then zip_list; else tar_list; fi; }\n");
    s
}

fn compare_probe(p: &Params) -> Probe {
    Probe::Command {
        script: format!(
            "a={}\nd={}\n{}if same; then echo UNCHANGED; else echo CHANGED; fi",
            quote(p.str_or("src", "")),
            quote(p.str_or("dest", "")),
            prelude(p)
        ),
    }
}

fn attrs_script(attrs: &FileAttrs) -> String {
    // Applied to each member (relative names from the listing).
    let mut s = String::new();
    if attrs.is_empty() {
        return s;
    }
    s.push_str("listing | while IFS= read -r f; do p=\"$d/$f\"; [ -e \"$p\" ] || continue; ");
    if let Some(o) = &attrs.owner {
        s.push_str(&format!("chown -h {} \"$p\"; ", quote(o)));
    }
    if let Some(g) = &attrs.group {
        s.push_str(&format!("chgrp -h {} \"$p\"; ", quote(g)));
    }
    match &attrs.mode {
        Some(ModeArg::Octal(m)) => {
            s.push_str(&format!("[ -L \"$p\" ] || chmod {} \"$p\"; ", mode_str(*m)))
        }
        Some(ModeArg::Symbolic(m)) => {
            s.push_str(&format!("[ -L \"$p\" ] || chmod {} \"$p\"; ", quote(m)))
        }
        None => {}
    }
    s.push_str("done\n");
    s
}

impl Module for Unarchive {
    fn names(&self) -> &'static [&'static str] {
        &[
            "unarchive",
            "ansible.builtin.unarchive",
            "ansible.legacy.unarchive",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        &SPECS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let p = params(args)?;
        let mut v = vec![Probe::Stat {
            path: p.str_or("dest", "").to_string(),
            follow: true,
        }];
        if let Some(c) = p.str("creates") {
            v.push(Probe::Stat {
                path: c.to_string(),
                follow: true,
            });
        }
        if remote(&p) {
            v.push(Probe::Stat {
                path: p.str_or("src", "").to_string(),
                follow: true,
            });
            v.push(compare_probe(&p));
        }
        Ok(v)
    }

    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let p = params(args)?;
        let src = p.str_or("src", "");
        let dest = p.str_or("dest", "");
        let attrs = FileAttrs::from_params(&p)?;
        let mut result = Map::new();
        result.insert("dest".into(), dest.into());
        result.insert("src".into(), src.into());
        if let Some(c) = p.str("creates") {
            if need_stat(facts, c, true)?.exists {
                result.insert("msg".into(), format!("skipped, since {c} exists").into());
                return Ok(Planned::NoChange { result });
            }
        }
        let dst = need_stat(facts, dest, true)?;
        if dst.kind != "directory" {
            return Err(OpError::new(format!(
                "Destination '{dest}' is not a directory"
            )));
        }
        let mut script = String::from("set -e\n");
        let stdin = if remote(&p) {
            if !need_stat(facts, src, true)?.exists {
                return Err(OpError::new(format!("Source '{src}' does not exist")));
            }
            if let Some(ProbeResult::Command(o)) = facts.get(&compare_probe(&p)) {
                if o.stdout.trim() == "UNCHANGED" {
                    return Ok(Planned::NoChange { result });
                }
            }
            script.push_str(&format!("a={}\nd={}\n", quote(src), quote(dest)));
            None
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.str_or("_content_b64", "").trim())
                .map_err(|e| OpError::new(format!("unarchive: _content_b64 is not base64: {e}")))?;
            script.push_str(&format!(
                "d={}\na=$(mktemp)\ntrap 'rm -f \"$a\"' EXIT\ncat > \"$a\"\n",
                quote(dest)
            ));
            Some(bytes)
        };
        script.push_str(&prelude(&p));
        script.push_str("if same; then echo UNCHANGED; exit 0; fi\nextract\n");
        script.push_str(&attrs_script(&attrs));
        if p.bool_or("list_files", false) {
            script.push_str("echo FILES; listing\n");
        }
        script.push_str("echo CHANGED\n");
        Ok(Planned::Change {
            actions: vec![Action::Exec { script, stdin }],
            diffs: vec![Diff {
                label: dest.to_string(),
                before: String::new(),
                after: format!("extract {src}\n"),
            }],
            result,
        })
    }

    fn finish(&self, _args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let mut res = default_finish(planned, outputs);
        // Ansible's action plugin raises AnsibleActionSkip when `creates` exists: the task is
        // reported skipped, not ok.
        if let Planned::NoChange { result } = planned {
            if let Some(Value::String(m)) = result.get("msg") {
                if m.starts_with("skipped, since ") {
                    res.skipped = true;
                    res.msg = Some(m.clone());
                }
            }
        }
        if res.failed {
            return res;
        }
        if let Some(o) = outputs.first() {
            let out = String::from_utf8_lossy(&o.stdout);
            res.changed = out.lines().any(|l| l == "CHANGED");
            if let Some((_, files)) = out.split_once("FILES\n") {
                let list: Vec<Value> = files
                    .lines()
                    .filter(|l| *l != "CHANGED")
                    .map(|l| Value::String(l.to_string()))
                    .collect();
                res.data.insert("files".into(), Value::Array(list));
            }
        }
        res
    }
}
