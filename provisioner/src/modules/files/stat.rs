//! `stat`: never changes anything; reports `stat` with Ansible's key names.
//!
//! Reported keys: exists, path, mode ("0644"), isdir, isreg, islnk, isblk/ischr/isfifo/issock
//! (false; "other" file types are not told apart), uid, gid, pw_name, gr_name, size, mtime,
//! the permission booleans (rusr, wusr, xusr, rgrp, ..., isuid, isgid), lnk_target and
//! lnk_source (for links, when follow is off), and checksum (sha1, regular files, when
//! get_checksum). Not reported: atime, ctime, inode, dev, nlink, mime type, attributes,
//! readable/writeable/executable.

use super::args::{parse, specs, Kind, Param, Params};
use super::common::{dirname, mode_str, need_stat};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{Args, Mode, Module, OpError, ParamSpec, Planned};
use crate::shell::quote;
use serde_json::{Map, Value};

pub struct Stat;

const P: [Param; 8] = [
    Param::new("path", Kind::Path)
        .aliases(&["dest", "name"])
        .required(),
    Param::new("follow", Kind::Bool),
    Param::new("get_checksum", Kind::Bool),
    Param::new("checksum_algorithm", Kind::Str)
        .aliases(&["checksum", "checksum_algo"])
        .choices(&["md5", "sha1", "sha224", "sha256", "sha384", "sha512"]),
    Param::new("get_md5", Kind::Bool),
    Param::new("get_mime", Kind::Bool).aliases(&["mime", "mime_type", "mime-type"]),
    Param::new("get_attributes", Kind::Bool).aliases(&["attr", "attributes"]),
    Param::new("get_selinux_context", Kind::Bool),
];
static SPECS: [ParamSpec; 8] = specs(&P);

fn params(args: &Args) -> Result<Params, OpError> {
    let p = parse("stat", &P, args)?;
    if p.bool_or("get_md5", false) {
        return Err(OpError::new(
            "get_md5 is not supported; use checksum_algorithm=md5",
        ));
    }
    Ok(p)
}

fn algo(p: &Params) -> &str {
    p.str_or("checksum_algorithm", "sha1")
}

fn sum_probe(path: &str, algo: &str) -> Probe {
    Probe::Command {
        script: format!(
            "[ -f {q} ] && [ -r {q} ] && {algo}sum < {q} | cut -d' ' -f1",
            q = quote(path)
        ),
    }
}

impl Module for Stat {
    fn names(&self) -> &'static [&'static str] {
        &["stat", "ansible.builtin.stat", "ansible.legacy.stat"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        &SPECS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let p = params(args)?;
        let path = p.str_or("path", "").to_string();
        let follow = p.bool_or("follow", false);
        let mut v = vec![Probe::Stat {
            path: path.clone(),
            follow,
        }];
        if algo(&p) != "sha1" && p.bool_or("get_checksum", true) {
            v.push(sum_probe(&path, algo(&p)));
        }
        Ok(v)
    }
    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let p = params(args)?;
        let path = p.str_or("path", "");
        let follow = p.bool_or("follow", false);
        let st = need_stat(facts, path, follow)?;
        let mut s = Map::new();
        s.insert("exists".into(), st.exists.into());
        if st.exists {
            let m = st.mode;
            let b = |bit: u32| Value::Bool(m & bit != 0);
            s.insert("path".into(), path.into());
            s.insert("mode".into(), mode_str(m).into());
            s.insert("isdir".into(), (st.kind == "directory").into());
            s.insert("isreg".into(), (st.kind == "file").into());
            s.insert("islnk".into(), (st.kind == "link").into());
            for k in ["isblk", "ischr", "isfifo", "issock"] {
                s.insert(k.into(), false.into());
            }
            s.insert("uid".into(), st.uid.into());
            s.insert("gid".into(), st.gid.into());
            s.insert("pw_name".into(), st.owner.clone().into());
            s.insert("gr_name".into(), st.group.clone().into());
            s.insert("size".into(), st.size.into());
            s.insert("mtime".into(), st.mtime.into());
            for (k, bit) in [
                ("rusr", 0o400),
                ("wusr", 0o200),
                ("xusr", 0o100),
                ("rgrp", 0o040),
                ("wgrp", 0o020),
                ("xgrp", 0o010),
                ("roth", 0o004),
                ("woth", 0o002),
                ("xoth", 0o001),
                ("isuid", 0o4000),
                ("isgid", 0o2000),
            ] {
                s.insert(k.into(), b(bit));
            }
            if st.kind == "link" {
                let target = st.link_target.clone().unwrap_or_default();
                let source = if target.starts_with('/') {
                    target.clone()
                } else {
                    format!("{}/{target}", dirname(path))
                };
                s.insert("lnk_target".into(), target.into());
                s.insert("lnk_source".into(), source.into());
            }
            if st.kind == "file" && p.bool_or("get_checksum", true) {
                let sum = if algo(&p) == "sha1" {
                    st.checksum_sha1.clone()
                } else {
                    match facts.get(&sum_probe(path, algo(&p))) {
                        Some(ProbeResult::Command(o)) if o.rc == 0 => {
                            Some(o.stdout.trim().to_string())
                        }
                        _ => None,
                    }
                };
                if let Some(c) = sum {
                    s.insert("checksum".into(), c.into());
                }
            }
        }
        let mut result = Map::new();
        result.insert("stat".into(), Value::Object(s));
        Ok(Planned::NoChange { result })
    }
}
