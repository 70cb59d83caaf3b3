//! `copy` and `template`.
//!
//! Engine contract (the control-node side is not the module's business):
//! - `copy` with `content`: the module uses `content` as is.
//! - `copy` with `src` (and no `remote_src`): the ENGINE finds the file on the control node
//!   (role `files/`, playbook dir, ...) and adds `_content_sha1` (its sha1): a plan that finds
//!   the content unchanged needs nothing more; one that must write it fails with
//!   `OpError::needs_content`, and the engine plans again with `_content_b64` (base64 of the
//!   bytes). `_src_mode` (int, the file's permission bits) comes with `mode: preserve`. `src`
//!   stays in the args (it is reported in the result). Without either the module refuses to
//!   plan. Copying a directory `src` is not supported.
//! - `copy` with `remote_src: yes`: `src` is a path on the host; the module probes it and
//!   copies it with `cat` into a temp file next to `dest`, then renames.
//! - `template`: the ENGINE renders `src` (with `newline_sequence`, `trim_blocks`, ... which the
//!   module accepts and ignores) and passes the rendered text as `_content` (string) or
//!   `_content_b64`.
//!
//! Semantics follow Ansible 2.14: a new file gets 0644 (umask 022) unless `mode` says
//! otherwise; an existing file keeps its mode/owner unless told; identical content with
//! different mode/owner is a `chmod`/`chown`, not a rewrite; `force: no` never touches an
//! existing dest; a missing parent directory fails (unless dest ends with `/`); `backup: yes`
//! is refused.

use super::args::{parse, specs, Kind, Param, Params, FILE_COMMON};
use super::common::{
    basename, dirname, need_stat, plan_write, realpath, realpath_probe, FileAttrs, ModeArg,
    WriteFile,
};
use crate::facts::{Facts, Probe};
use crate::modules::{Action, Args, Diff, Mode, Module, OpError, ParamSpec, Planned};
use crate::shell::quote;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Bytes of the current dest read for the diff (Ansible's max_diff_size is ~100 KiB).
const DIFF_READ: u64 = 1024 * 1024;

pub struct Copy;
pub struct Template;

const COPY_P: [Param; 26] = [
    Param::new("dest", Kind::Path).required(),
    Param::new("src", Kind::Path),
    Param::new("content", Kind::Str),
    Param::new("backup", Kind::Bool),
    Param::new("force", Kind::Bool).aliases(&["thirsty"]),
    Param::new("follow", Kind::Bool),
    Param::new("remote_src", Kind::Bool),
    Param::new("validate", Kind::Str),
    Param::new("directory_mode", Kind::Raw),
    Param::new("local_follow", Kind::Bool),
    Param::new("checksum", Kind::Str),
    Param::new("decrypt", Kind::Bool),
    Param::new("_original_basename", Kind::Str),
    Param::new("_content_b64", Kind::Str),
    Param::new("_content_sha1", Kind::Str),
    Param::new("_content", Kind::Str),
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
static COPY_SPECS: [ParamSpec; 25] = specs(&COPY_P);

const TEMPLATE_P: [Param; 28] = [
    Param::new("src", Kind::Path).required(),
    Param::new("dest", Kind::Path).required(),
    Param::new("backup", Kind::Bool),
    Param::new("force", Kind::Bool),
    Param::new("follow", Kind::Bool),
    Param::new("validate", Kind::Str),
    Param::new("newline_sequence", Kind::Str).choices(&["\n", "\r", "\r\n"]),
    Param::new("trim_blocks", Kind::Bool),
    Param::new("lstrip_blocks", Kind::Bool),
    Param::new("variable_start_string", Kind::Str),
    Param::new("variable_end_string", Kind::Str),
    Param::new("block_start_string", Kind::Str),
    Param::new("block_end_string", Kind::Str),
    Param::new("comment_start_string", Kind::Str),
    Param::new("comment_end_string", Kind::Str),
    Param::new("output_encoding", Kind::Str),
    Param::new("_content_b64", Kind::Str),
    Param::new("_content", Kind::Str),
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
static TEMPLATE_SPECS: [ParamSpec; 28] = specs(&TEMPLATE_P);

/// What to put at dest.
enum Source {
    Bytes(Vec<u8>),
    /// A control-node file known by its sha1 (`_content_sha1`): enough to find it unchanged.
    Digest(String),
    Remote(String),
}

struct Req {
    /// dest as given (after the dir/basename rewrite when dest ends with `/`).
    dest: String,
    /// dest when it turns out to be an existing directory (`dest/basename(src)`).
    dest_in_dir: Option<String>,
    src: Option<String>,
    source: Source,
    p: Params,
    mkdir_parent: bool,
}

fn engine_content(p: &Params, module: &str) -> Result<Option<Vec<u8>>, OpError> {
    if let Some(b) = p.str("_content_b64") {
        return base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map(Some)
            .map_err(|e| OpError::new(format!("{module}: _content_b64 is not base64: {e}")));
    }
    Ok(p.str("_content").map(|s| s.as_bytes().to_vec()))
}

fn request(module: &str, args: &Args) -> Result<Req, OpError> {
    let spec: &[Param] = if module == "template" {
        &TEMPLATE_P
    } else {
        &COPY_P
    };
    let p = parse(module, spec, args)?;
    if p.bool_or("backup", false) {
        return Err(OpError::new(format!(
            "{module}: backup=yes is not supported by provisioner"
        )));
    }
    attrs_for(&p)?;
    let mut dest = p.str_or("dest", "").to_string();
    let src = p.str("src").map(str::to_string);
    let remote = p.bool_or("remote_src", false);
    let source = if module == "template" {
        Source::Bytes(engine_content(&p, module)?.ok_or_else(|| {
            OpError::new("template: the engine must pass the rendered template as _content")
        })?)
    } else if let Some(c) = p.str("content") {
        if p.has("src") {
            return Err(OpError::new(
                "parameters are mutually exclusive: content|src",
            ));
        }
        if dest.ends_with('/') {
            return Err(OpError::new("can not use content with a dir as dest"));
        }
        Source::Bytes(c.as_bytes().to_vec())
    } else if let Some(s) = &src {
        if remote {
            Source::Remote(s.clone())
        } else if let Some(c) = engine_content(&p, module)? {
            Source::Bytes(c)
        } else if let Some(d) = p.str("_content_sha1") {
            Source::Digest(d.to_string())
        } else {
            return Err(OpError::new(format!(
                "copy: src {s} must be read by the engine and passed as _content_b64"
            )));
        }
    } else {
        return Err(OpError::new("src (or content) is required"));
    };
    if p.has("checksum") {
        let got = match &source {
            Source::Bytes(b) => Some(super::sha1::sha1_hex(b)),
            Source::Digest(d) => Some(d.clone()),
            Source::Remote(_) => None,
        };
        if let (Some(want), Some(got)) = (p.str("checksum"), got) {
            if want != got {
                return Err(OpError::new(format!(
                    "Copied file does not match the expected checksum. Transfer failed. (expected {want}, got {got})"
                )));
            }
        }
    }
    let mut mkdir_parent = false;
    if dest.ends_with('/') {
        let base = basename(src.as_deref().unwrap_or(""));
        dest.push_str(base);
        mkdir_parent = true;
    }
    let dest_in_dir = match (&src, module) {
        (Some(s), "copy") if !mkdir_parent => {
            let b = p.str("_original_basename").unwrap_or_else(|| basename(s));
            Some(format!("{}/{}", dest.trim_end_matches('/'), b))
        }
        _ => None,
    };
    Ok(Req {
        dest,
        dest_in_dir,
        src,
        source,
        p,
        mkdir_parent,
    })
}

/// The file attributes, with `mode: preserve` resolved from the engine's `_src_mode`.
fn attrs_for(p: &Params) -> Result<FileAttrs, OpError> {
    if p.raw("mode") == Some(&Value::String("preserve".into())) {
        let mut q = p.clone();
        q.remove("mode");
        let mut attrs = FileAttrs::from_params(&q)?;
        let sm = p.int("_src_mode").ok_or_else(|| {
            OpError::new("mode=preserve needs the source mode (_src_mode) from the engine")
        })?;
        attrs.mode = Some(ModeArg::Octal(sm as u32 & 0o7777));
        return Ok(attrs);
    }
    FileAttrs::from_params(p)
}

fn probes_for(req: &Req) -> Vec<Probe> {
    let mut v = Vec::new();
    let follow = req.p.bool_or("follow", false);
    let one = |path: &str, v: &mut Vec<Probe>| {
        v.push(Probe::Stat {
            path: path.to_string(),
            follow: false,
        });
        v.push(Probe::Stat {
            path: path.to_string(),
            follow: true,
        });
        if matches!(req.source, Source::Bytes(_) | Source::Digest(_)) {
            v.push(Probe::Read {
                path: path.to_string(),
                max_bytes: DIFF_READ,
            });
        }
        if follow {
            v.push(realpath_probe(path));
        }
    };
    one(&req.dest, &mut v);
    if let Some(d) = &req.dest_in_dir {
        one(d, &mut v);
    }
    let parent = dirname(&req.dest);
    v.push(Probe::Stat {
        path: if parent.is_empty() { "." } else { parent }.to_string(),
        follow: true,
    });
    if let Source::Remote(s) = &req.source {
        v.push(Probe::Stat {
            path: s.clone(),
            follow: true,
        });
    }
    v
}

/// In check mode a missing parent directory is planned as a change, not an error: an earlier
/// task of the same run usually creates it, and `plan` on a fresh host must still show the
/// whole change set. (Ansible's check mode fails here; apply mode behaves exactly as Ansible.)
fn plan_copy(module: &str, req: Req, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
    let p = &req.p;
    let mut dest = req.dest.clone();
    let mut lst = need_stat(facts, &dest, false)?;
    let mut st = need_stat(facts, &dest, true)?;
    if st.kind == "directory" {
        match &req.dest_in_dir {
            Some(d) => {
                dest = d.clone();
                lst = need_stat(facts, &dest, false)?;
                st = need_stat(facts, &dest, true)?;
                if st.kind == "directory" {
                    return Err(OpError::new(format!("{dest} is a directory")));
                }
            }
            None => {
                return Err(OpError::new(format!(
                    "{module}: dest {dest} is a directory"
                )))
            }
        }
    }
    let exists = st.exists || lst.exists;
    let mut result = Map::new();
    result.insert("dest".into(), dest.clone().into());
    if let Some(s) = &req.src {
        result.insert("src".into(), s.clone().into());
    }
    if exists && !p.bool_or("force", true) {
        return Ok(Planned::NoChange { result });
    }
    let parent = dirname(&req.dest);
    let parent = if parent.is_empty() { "." } else { parent };
    let parent_ok = facts.stat(parent, true).map(|s| s.exists).unwrap_or(true);
    if !parent_ok && !req.mkdir_parent && mode == Mode::Apply {
        return Err(OpError::new(format!(
            "Destination directory {parent} does not exist"
        )));
    }
    let attrs = attrs_for(p)?;
    let follow = p.bool_or("follow", false);
    let write_path = if follow && lst.kind == "link" {
        realpath(facts, &dest)
    } else {
        dest.clone()
    };
    let current = st.exists.then_some(st);
    // Ok((content, its sha1 when only that is known)), Err(remote source path).
    let content = match req.source {
        Source::Bytes(b) => Ok((b, None)),
        Source::Digest(d) => Ok((Vec::new(), Some(d))),
        Source::Remote(s) => Err(s),
    };
    match content {
        Ok((bytes, after_sha1)) => {
            let before = if st.exists && st.size <= DIFF_READ {
                facts.read(&dest).flatten()
            } else {
                None
            };
            // Unchanged content (the only plan a digest allows) has the current size.
            let size = if after_sha1.is_some() {
                st.size as usize
            } else {
                bytes.len()
            };
            let w = plan_write(WriteFile {
                path: &dest,
                write_path,
                current,
                before,
                after: bytes,
                attrs: &attrs,
                validate: p.str("validate"),
                mkdir: (req.mkdir_parent && !parent_ok).then(|| parent.to_string()),
                after_sha1,
            })?;
            result.insert("checksum".into(), w.checksum.clone().into());
            result.insert("size".into(), size.into());
            result.insert("state".into(), "file".into());
            Ok(w.into_planned(result))
        }
        Err(src) => {
            let sst = need_stat(facts, &src, true)?;
            if !sst.exists {
                return Err(OpError::new(format!("Source {src} not found")));
            }
            if sst.kind == "directory" {
                return Err(OpError::new(
                    "copy: remote_src of a directory is not supported by provisioner",
                ));
            }
            let same = current.is_some()
                && sst.checksum_sha1.is_some()
                && sst.checksum_sha1 == st.checksum_sha1;
            let base = match current {
                Some(c) => c.clone(),
                None => super::common::new_stat("file"),
            };
            let ap = attrs.plan(&write_path, &base, false)?;
            let mut actions = Vec::new();
            let mut diffs = Vec::new();
            if !same {
                let owner = attrs
                    .owner
                    .clone()
                    .or_else(|| current.map(|c| c.uid.to_string()));
                let group = attrs
                    .group
                    .clone()
                    .or_else(|| current.map(|c| c.gid.to_string()));
                let d = dirname(&write_path);
                let mut s = String::new();
                if req.mkdir_parent && !parent_ok {
                    s.push_str(&format!("mkdir -p -- {} && ", quote(parent)));
                }
                s.push_str(&format!(
                    "t=$(mktemp {}/.provisioner_tmpXXXXXXXX) && cat -- {} > \"$t\" && chmod {} \"$t\"",
                    quote(if d.is_empty() { "." } else { d }),
                    quote(&src),
                    super::common::mode_str(ap.mode)
                ));
                if let Some(o) = owner {
                    s.push_str(&format!(" && chown {} \"$t\"", quote(&o)));
                }
                if let Some(g) = group {
                    s.push_str(&format!(" && chgrp {} \"$t\"", quote(&g)));
                }
                s.push_str(&format!(
                    " && mv -f \"$t\" {} || {{ rm -f \"$t\"; exit 1; }}",
                    quote(&write_path)
                ));
                actions.push(Action::Exec {
                    script: s,
                    stdin: None,
                });
                diffs.push(Diff {
                    label: dest.clone(),
                    before: st
                        .checksum_sha1
                        .clone()
                        .map(|c| format!("sha1: {c}\n"))
                        .unwrap_or_default(),
                    after: format!("sha1: {}\n", sst.checksum_sha1.clone().unwrap_or_default()),
                });
            } else if ap.changed() {
                actions.push(Action::Exec {
                    script: ap.commands.join(" && "),
                    stdin: None,
                });
                diffs.extend(ap.diff(&dest));
            }
            result.insert(
                "checksum".into(),
                sst.checksum_sha1.clone().unwrap_or_default().into(),
            );
            result.insert("size".into(), sst.size.into());
            result.insert("state".into(), "file".into());
            ap.result(&mut result);
            Ok(if actions.is_empty() {
                Planned::NoChange { result }
            } else {
                Planned::Change {
                    actions,
                    diffs,
                    result,
                }
            })
        }
    }
}

impl Module for Copy {
    fn confined_to(&self, args: &Args) -> Option<Vec<String>> {
        super::common::own_path(args)
    }
    fn names(&self) -> &'static [&'static str] {
        &["copy", "ansible.builtin.copy", "ansible.legacy.copy"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        &COPY_SPECS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        Ok(probes_for(&request("copy", args)?))
    }
    fn plan(&self, args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
        plan_copy("copy", request("copy", args)?, facts, mode)
    }
}

impl Module for Template {
    fn confined_to(&self, args: &Args) -> Option<Vec<String>> {
        super::common::own_path(args)
    }
    fn names(&self) -> &'static [&'static str] {
        &[
            "template",
            "ansible.builtin.template",
            "ansible.legacy.template",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        &TEMPLATE_SPECS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        Ok(probes_for(&request("template", args)?))
    }
    fn plan(&self, args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
        plan_copy("template", request("template", args)?, facts, mode)
    }
}
