//! `file`: state file / directory / touch / absent / link, with mode (octal or symbolic), owner,
//! group, recurse and force. `hard` links are not supported.
//!
//! Differences from Ansible: `modification_time`/`access_time` are accepted only as unset (or
//! `now`/`preserve` for touch); attributes of entries below a recursed directory that are
//! symlinks get owner/group (`chown -h`) but no mode; a path that is an existing directory is
//! not rewritten to `path/basename(src)` for state file/touch.

use super::args::{parse, specs, Kind, Param, Params, FILE_COMMON};
use super::common::{dirname, mode_str, need_stat, new_stat, AttrPlan, FileAttrs};
use crate::facts::{Facts, FileStat, Probe, ProbeResult};
use crate::modules::{Action, Args, Diff, Mode, Module, OpError, ParamSpec, Planned};
use crate::shell::quote;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub struct File;

const P: [Param; 18] = [
    Param::new("path", Kind::Path)
        .aliases(&["dest", "name"])
        .required(),
    Param::new("state", Kind::Str).choices(&[
        "absent",
        "directory",
        "file",
        "hard",
        "link",
        "touch",
    ]),
    Param::new("src", Kind::Path),
    Param::new("recurse", Kind::Bool),
    Param::new("force", Kind::Bool),
    Param::new("follow", Kind::Bool),
    Param::new("modification_time", Kind::Str),
    Param::new("modification_time_format", Kind::Str),
    Param::new("access_time", Kind::Str),
    Param::new("access_time_format", Kind::Str),
    FILE_COMMON[0],
    FILE_COMMON[1],
    FILE_COMMON[2],
    FILE_COMMON[3],
    FILE_COMMON[4],
    FILE_COMMON[5],
    FILE_COMMON[6],
    FILE_COMMON[7],
];
static SPECS: [ParamSpec; 18] = specs(&P);

/// Lists the entries below a directory: `type mode uid gid user group path`, NUL-terminated.
fn tree_probe(path: &str) -> Probe {
    let p = if path.starts_with('-') {
        format!("./{path}")
    } else {
        path.to_string()
    };
    Probe::Command {
        script: format!(
            "find {} -mindepth 1 -printf '%y %m %U %G %u %g %p\\0'",
            quote(&p)
        ),
    }
}

/// Where a link's `src` resolves, relative to the link's directory.
fn link_abs_src(path: &str, src: &str) -> String {
    if src.starts_with('/') {
        src.to_string()
    } else {
        let d = dirname(path);
        if d.is_empty() {
            src.to_string()
        } else if d.ends_with('/') {
            format!("{d}{src}")
        } else {
            format!("{d}/{src}")
        }
    }
}

fn params(args: &Args) -> Result<Params, OpError> {
    let p = parse("file", &P, args)?;
    if p.str("state") == Some("hard") {
        return Err(OpError::new(
            "state=hard is not supported by provisioner's file module",
        ));
    }
    for t in ["modification_time", "access_time"] {
        if let Some(v) = p.str(t) {
            if !(v == "preserve" || v == "now") {
                return Err(OpError::new(format!(
                    "{t}: only 'now' and 'preserve' are supported by provisioner"
                )));
            }
        }
    }
    if p.has("src") && !matches!(p.str("state"), Some("link") | Some("hard")) {
        // Ansible: src is only used with state link/hard (it warns / fails otherwise).
        if p.str("state").is_some() {
            return Err(OpError::new(format!(
                "src option requires state to be 'link' or 'hard' (state is {})",
                p.str_or("state", "")
            )));
        }
    }
    Ok(p)
}

fn kind_to_state(st: &FileStat) -> &'static str {
    if !st.exists {
        return "absent";
    }
    match st.kind.as_str() {
        "file" => "file",
        "directory" => "directory",
        "link" => "link",
        _ => "file",
    }
}

fn state_diff(path: &str, before: &str, after: &str) -> Diff {
    Diff {
        label: format!("{path} (state)"),
        before: format!("state: {before}\n"),
        after: format!("state: {after}\n"),
    }
}

fn exec(script: String) -> Action {
    Action::Exec {
        script,
        stdin: None,
    }
}

fn finish_planned(actions: Vec<Action>, diffs: Vec<Diff>, result: Map<String, Value>) -> Planned {
    if actions.is_empty() {
        Planned::NoChange { result }
    } else {
        Planned::Change {
            actions,
            diffs,
            result,
        }
    }
}

fn base_result(key: &str, path: &str, state: &str) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert(key.into(), path.into());
    r.insert("state".into(), state.into());
    r
}

impl Module for File {
    fn confined_to(&self, args: &Args) -> Option<Vec<String>> {
        super::common::own_path(args)
    }
    fn names(&self) -> &'static [&'static str] {
        &["file", "ansible.builtin.file", "ansible.legacy.file"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        &SPECS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let p = params(args)?;
        let path = p.str_or("path", "").to_string();
        let mut v = vec![
            Probe::Stat {
                path: path.clone(),
                follow: false,
            },
            Probe::Stat {
                path: path.clone(),
                follow: true,
            },
        ];
        if let Some(src) = p.str("src") {
            v.push(Probe::Stat {
                path: link_abs_src(&path, src),
                follow: true,
            });
        }
        if p.bool_or("recurse", false) {
            v.push(tree_probe(&path));
        }
        Ok(v)
    }

    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let p = params(args)?;
        let path = p.str_or("path", "");
        let attrs = FileAttrs::from_params(&p)?;
        let follow = p.bool_or("follow", true);
        let recurse = p.bool_or("recurse", false);
        let lst = need_stat(facts, path, false)?;
        let prev = kind_to_state(lst);
        let state = match p.str("state") {
            Some(s) => s,
            None if prev != "absent" => prev,
            None if recurse => "directory",
            None => "file",
        };
        if recurse && state != "directory" {
            return Err(OpError::new(
                "recurse option requires state to be 'directory'",
            ));
        }
        // The path whose attributes we manage: the link's target when following.
        let target = if follow && lst.kind == "link" {
            need_stat(facts, path, true)?
        } else {
            lst
        };
        match state {
            "absent" => {
                let mut r = base_result("path", path, "absent");
                if prev == "absent" {
                    return Ok(Planned::NoChange { result: r });
                }
                r.insert("changed".into(), true.into());
                let script = if lst.kind == "directory" {
                    format!("rm -rf -- {}", quote(path))
                } else {
                    format!("rm -f -- {}", quote(path))
                };
                Ok(finish_planned(
                    vec![exec(script)],
                    vec![state_diff(path, prev, "absent")],
                    r,
                ))
            }
            "file" => {
                let tstate = kind_to_state(target);
                if tstate != "file" {
                    return Err(OpError::new(format!(
                        "file ({path}) is {tstate}, cannot continue"
                    )));
                }
                let ap = attrs.plan(path, target, false)?;
                let mut r = base_result("path", path, "file");
                r.insert("size".into(), target.size.into());
                ap.result(&mut r);
                let actions = attr_actions(&ap);
                Ok(finish_planned(
                    actions,
                    ap.diff(path).into_iter().collect(),
                    r,
                ))
            }
            "touch" => {
                let mut r = base_result("dest", path, if prev == "absent" { "file" } else { prev });
                let mut script = Vec::new();
                let preserve = p.str("modification_time") == Some("preserve")
                    && p.str("access_time") == Some("preserve");
                let st = if prev == "absent" {
                    script.push(format!("touch -- {}", quote(path)));
                    new_stat("file")
                } else {
                    if !preserve {
                        script.push(format!("touch -c -- {}", quote(path)));
                    }
                    target.clone()
                };
                let mut ap = attrs.plan(path, &st, false)?;
                if prev == "absent" {
                    ap.before.clear();
                    ap.after.clear();
                }
                script.extend(ap.commands.iter().cloned());
                ap.result(&mut r);
                let mut diffs = Vec::new();
                if prev == "absent" {
                    diffs.push(state_diff(path, "absent", "touch"));
                }
                diffs.extend(ap.diff(path));
                let actions = if script.is_empty() {
                    vec![]
                } else {
                    vec![exec(script.join(" && "))]
                };
                Ok(finish_planned(actions, diffs, r))
            }
            "directory" => plan_directory(&p, path, &attrs, lst, target, facts, recurse),
            "link" => plan_link(&p, path, &attrs, lst, facts, follow),
            _ => Err(OpError::new(format!("unsupported state {state}"))),
        }
    }
}

fn attr_actions(ap: &AttrPlan) -> Vec<Action> {
    if ap.changed() {
        vec![exec(ap.commands.join(" && "))]
    } else {
        vec![]
    }
}

fn plan_directory(
    p: &Params,
    path: &str,
    attrs: &FileAttrs,
    lst: &FileStat,
    target: &FileStat,
    facts: &Facts,
    recurse: bool,
) -> Result<Planned, OpError> {
    let mut r = base_result("path", path, "directory");
    let tstate = kind_to_state(target);
    if tstate == "absent" {
        if lst.kind == "link" {
            return Err(OpError::new(format!("{path} already exists as a link")));
        }
        // mkdir -p, applying the attributes to every directory it creates (Ansible does the
        // same walk), and nothing to the ones that already exist.
        let ap = attrs.plan("$d", &new_stat("directory"), false)?;
        let mut components = Vec::new();
        let mut cur = String::new();
        for (i, part) in path.split('/').enumerate() {
            if i == 0 && part.is_empty() {
                cur.push('/');
                continue;
            }
            if part.is_empty() {
                continue;
            }
            if !cur.is_empty() && !cur.ends_with('/') {
                cur.push('/');
            }
            cur.push_str(part);
            components.push(quote(&cur));
        }
        let cmds: Vec<String> = ap
            .commands
            .iter()
            .map(|c| c.replace("'$d'", "\"$d\""))
            .collect();
        let mut script = format!(
            "for d in {}; do if [ ! -e \"$d\" ]; then mkdir -- \"$d\"",
            components.join(" ")
        );
        for c in &cmds {
            script.push_str(" && ");
            script.push_str(c);
        }
        script.push_str(" || exit 1; fi; done");
        let mut ap = ap;
        ap.owner = attrs.owner.clone().unwrap_or_default();
        ap.group = attrs.group.clone().unwrap_or_default();
        if attrs.owner.is_none() {
            ap.uid = None;
        }
        if attrs.group.is_none() {
            ap.gid = None;
        }
        ap.result(&mut r);
        let _ = p;
        return Ok(Planned::Change {
            actions: vec![exec(script)],
            diffs: vec![state_diff(path, "absent", "directory")],
            result: r,
        });
    }
    if tstate != "directory" {
        return Err(OpError::new(format!(
            "{path} already exists as a {}",
            kind_to_state(lst)
        )));
    }
    let ap = attrs.plan(path, target, false)?;
    ap.result(&mut r);
    let mut actions = attr_actions(&ap);
    let mut diffs: Vec<Diff> = ap.diff(path).into_iter().collect();
    if recurse && !attrs.is_empty() {
        let (script, changed) = recurse_script(path, attrs, facts)?;
        if let Some(s) = script {
            actions.push(exec(s));
            diffs.push(Diff {
                label: format!("{path} (recursive attributes)"),
                before: String::new(),
                after: changed.iter().map(|c| format!("{c}\n")).collect(),
            });
        }
    }
    Ok(finish_planned(actions, diffs, r))
}

/// One entry of the recursive listing.
struct Entry {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    user: String,
    group: String,
    path: String,
}

fn parse_tree(out: &str) -> Vec<Entry> {
    out.split('\0')
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let mut it = l.splitn(7, ' ');
            Some(Entry {
                kind: it.next()?.chars().next()?,
                mode: u32::from_str_radix(it.next()?, 8).ok()?,
                uid: it.next()?.parse().ok()?,
                gid: it.next()?.parse().ok()?,
                user: it.next()?.to_string(),
                group: it.next()?.to_string(),
                path: it.next()?.to_string(),
            })
        })
        .collect()
}

fn recurse_script(
    path: &str,
    attrs: &FileAttrs,
    facts: &Facts,
) -> Result<(Option<String>, Vec<String>), OpError> {
    let out = match facts.get(&tree_probe(path)) {
        Some(ProbeResult::Command(o)) if o.rc == 0 => o.stdout.clone(),
        Some(ProbeResult::Command(o)) => {
            return Err(OpError::new(format!(
                "cannot list {path}: {}",
                o.stderr.trim()
            )))
        }
        _ => {
            return Err(OpError::new(format!(
                "internal: no listing probe for {path}"
            )))
        }
    };
    let mut chown: Vec<String> = Vec::new();
    let mut chgrp: Vec<String> = Vec::new();
    let mut chmod: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut changed = Vec::new();
    for e in parse_tree(&out) {
        let st = FileStat {
            exists: true,
            kind: match e.kind {
                'd' => "directory",
                'f' => "file",
                'l' => "link",
                _ => "other",
            }
            .into(),
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            owner: e.user,
            group: e.group,
            ..Default::default()
        };
        let ap = attrs.plan(&e.path, &st, e.kind == 'l')?;
        if !ap.changed() {
            continue;
        }
        changed.push(format!("{}: {}", e.path, ap.after.join(", ")));
        if ap.owner != st.owner && attrs.owner.is_some() {
            chown.push(quote(&e.path));
        }
        if ap.group != st.group && attrs.group.is_some() {
            chgrp.push(quote(&e.path));
        }
        if ap.mode != st.mode && e.kind != 'l' {
            chmod.entry(ap.mode).or_default().push(quote(&e.path));
        }
    }
    let mut cmds = Vec::new();
    if let (Some(o), false) = (&attrs.owner, chown.is_empty()) {
        cmds.push(format!("chown -h {} -- {}", quote(o), chown.join(" ")));
    }
    if let (Some(g), false) = (&attrs.group, chgrp.is_empty()) {
        cmds.push(format!("chgrp -h {} -- {}", quote(g), chgrp.join(" ")));
    }
    for (m, paths) in chmod {
        cmds.push(format!("chmod {} -- {}", mode_str(m), paths.join(" ")));
    }
    Ok(((!cmds.is_empty()).then(|| cmds.join(" && ")), changed))
}

fn plan_link(
    p: &Params,
    path: &str,
    attrs: &FileAttrs,
    lst: &FileStat,
    facts: &Facts,
    follow: bool,
) -> Result<Planned, OpError> {
    let force = p.bool_or("force", false);
    let prev = kind_to_state(lst);
    let src = match p.str("src") {
        Some(s) => s.to_string(),
        None if follow && lst.kind == "link" => lst.link_target.clone().unwrap_or_default(),
        None => {
            return Err(OpError::new("src is required for creating new symlinks"));
        }
    };
    let absrc = link_abs_src(path, &src);
    let src_st = facts.stat(&absrc, true);
    let src_exists = src_st.map(|s| s.exists).unwrap_or(false);
    if !force && p.has("src") && !src_exists {
        return Err(OpError::new(format!(
            "src file does not exist, use \"force=yes\" if you really want to create the link: {absrc}"
        )));
    }
    let q = quote(path);
    let mut actions = Vec::new();
    let mut diffs = Vec::new();
    match prev {
        "directory" if !force => {
            return Err(OpError::new(format!(
                "refusing to convert from directory to symlink for {path}"
            )))
        }
        "file" if !force => {
            return Err(OpError::new(format!(
                "refusing to convert from file to symlink for {path}"
            )))
        }
        "absent" => {
            actions.push(exec(format!("ln -s -- {} {q}", quote(&src))));
            diffs.push(state_diff(path, "absent", "link"));
        }
        "link" => {
            let old = lst.link_target.clone().unwrap_or_default();
            if old != src {
                actions.push(exec(replace_with_link(path, &src, false)));
                diffs.push(Diff {
                    label: format!("{path} (link)"),
                    before: format!("src: {old}\n"),
                    after: format!("src: {src}\n"),
                });
            }
        }
        _ => {
            actions.push(exec(replace_with_link(path, &src, prev == "directory")));
            diffs.push(state_diff(path, prev, "link"));
        }
    }
    let mut r = base_result("dest", path, "link");
    r.insert("src".into(), src.clone().into());
    // Attributes go to the target when following (and it exists), else to the link itself.
    let (ap_path, ap_stat, on_link) = if follow {
        match src_st {
            Some(s) if s.exists => (absrc.clone(), s.clone(), false),
            _ => (String::new(), FileStat::default(), true),
        }
    } else if lst.kind == "link" {
        (path.to_string(), lst.clone(), true)
    } else {
        let mut s = new_stat("link");
        s.mode = 0o777;
        (path.to_string(), s, true)
    };
    if !ap_path.is_empty() && !attrs.is_empty() {
        let ap = attrs.plan(&ap_path, &ap_stat, on_link)?;
        if ap.changed() {
            actions.push(exec(ap.commands.join(" && ")));
            diffs.extend(ap.diff(path));
        }
    }
    Ok(finish_planned(actions, diffs, r))
}

/// Replace `path` by a symlink atomically (temp link + rename), like Ansible.
fn replace_with_link(path: &str, src: &str, rmdir: bool) -> String {
    let d = dirname(path);
    let tmp = format!(
        "{}/.provisioner.link.tmp",
        if d.is_empty() { "." } else { d }
    );
    let mut s = String::new();
    if rmdir {
        s.push_str(&format!("rmdir -- {} && ", quote(path)));
    }
    s.push_str(&format!(
        "rm -f -- {t} && ln -s -- {} {t} && mv -fT -- {t} {}",
        quote(src),
        quote(path),
        t = quote(&tmp)
    ));
    s
}
