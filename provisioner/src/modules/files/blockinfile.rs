//! `blockinfile`, following ansible-core 2.14: markers `{mark}` replaced by marker_begin /
//! marker_end, an existing block replaced in place, else inserted after/before the LAST line
//! matching insertafter/insertbefore (or EOF/BOF), `(?m)` patterns searched over the whole file.

use super::args::{parse, specs, Kind, Param, Params, FILE_COMMON};
use super::common::FileAttrs;
use super::edit::{self, py_regex, splitlines_keepends};
use crate::facts::{Facts, Probe};
use crate::modules::{Args, Mode, Module, OpError, ParamSpec, Planned};
use serde_json::Map;

pub struct BlockInFile;

const P: [Param; 20] = [
    Param::new("path", Kind::Path)
        .aliases(&["dest", "destfile", "name"])
        .required(),
    Param::new("state", Kind::Str).choices(&["absent", "present"]),
    Param::new("marker", Kind::Str),
    Param::new("block", Kind::Str).aliases(&["content"]),
    Param::new("insertafter", Kind::Str),
    Param::new("insertbefore", Kind::Str),
    Param::new("create", Kind::Bool),
    Param::new("backup", Kind::Bool),
    Param::new("validate", Kind::Str),
    Param::new("marker_begin", Kind::Str),
    Param::new("marker_end", Kind::Str),
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
static SPECS: [ParamSpec; 20] = specs(&P);

fn params(args: &Args) -> Result<Params, OpError> {
    let p = parse("blockinfile", &P, args)?;
    p.mutually_exclusive(&["insertbefore", "insertafter"])?;
    if p.bool_or("backup", false) {
        return Err(OpError::new(
            "blockinfile: backup=yes is not supported by provisioner",
        ));
    }
    FileAttrs::from_params(&p)?;
    Ok(p)
}

/// The new content (or the same), and Ansible's message.
fn edit(p: &Params, original: Option<&[u8]>) -> Result<(Vec<u8>, &'static str), OpError> {
    let present = p.str_or("state", "present") == "present";
    let mut lines = original.map(splitlines_keepends).unwrap_or_default();
    let mut insertafter = p.str("insertafter");
    let insertbefore = p.str("insertbefore");
    if insertafter.is_none() && insertbefore.is_none() {
        insertafter = Some("EOF");
    }
    let (insertre, pattern) = match (insertafter, insertbefore) {
        (Some(a), _) if a != "EOF" => (Some(py_regex("insertafter", a)?), a),
        (None, Some(b)) if b != "BOF" => (Some(py_regex("insertbefore", b)?), b),
        _ => (None, ""),
    };
    let marker = p.str_or("marker", "# {mark} ANSIBLE MANAGED BLOCK");
    let mut marker0 = marker
        .replace("{mark}", p.str_or("marker_begin", "BEGIN"))
        .into_bytes();
    marker0.push(b'\n');
    let mut marker1 = marker
        .replace("{mark}", p.str_or("marker_end", "END"))
        .into_bytes();
    marker1.push(b'\n');
    let mut block = p.str_or("block", "").as_bytes().to_vec();
    let blocklines = if present && !block.is_empty() {
        if !block.ends_with(b"\n") {
            block.push(b'\n');
        }
        let mut v = vec![marker0.clone()];
        v.extend(splitlines_keepends(&block));
        v.push(marker1.clone());
        v
    } else {
        Vec::new()
    };
    let (mut n0, mut n1) = (None, None);
    for (i, l) in lines.iter().enumerate() {
        if *l == marker0 {
            n0 = Some(i);
        }
        if *l == marker1 {
            n1 = Some(i);
        }
    }
    let at = match (n0, n1) {
        (Some(a), Some(b)) if a < b => {
            lines.drain(a..=b);
            a
        }
        (Some(a), Some(b)) => {
            lines.drain(b..=a);
            b
        }
        _ => {
            if let Some(re) = &insertre {
                let multiline = pattern.starts_with("(?")
                    && pattern[2..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphabetic())
                        .any(|c| c == 'm');
                let mut found: Option<usize> = None;
                if multiline {
                    let orig = original.unwrap_or_default();
                    if let Some(m) = re.find(orig) {
                        let upto = if insertafter.is_some() {
                            m.end()
                        } else {
                            m.start()
                        };
                        found = Some(orig[..upto].iter().filter(|b| **b == b'\n').count());
                    }
                } else {
                    for (i, l) in lines.iter().enumerate() {
                        if re.is_match(l) {
                            found = Some(i);
                        }
                    }
                }
                match found {
                    None => lines.len(),
                    Some(n) if insertafter.is_some() => n + 1,
                    Some(n) => n,
                }
            } else if insertbefore.is_some() {
                0
            } else {
                lines.len()
            }
        }
    };
    if at > 0 && !lines[at - 1].ends_with(b"\n") {
        lines[at - 1].push(b'\n');
    }
    let removed = blocklines.is_empty();
    lines.splice(at..at, blocklines);
    let result = lines.concat();
    let msg = if original == Some(result.as_slice()) {
        ""
    } else if original.is_none() {
        "File created"
    } else if removed {
        "Block removed"
    } else {
        "Block inserted"
    };
    Ok((result, msg))
}

impl Module for BlockInFile {
    fn confined_to(&self, args: &Args) -> Option<Vec<String>> {
        super::common::own_path(args)
    }
    fn names(&self) -> &'static [&'static str] {
        &[
            "blockinfile",
            "ansible.builtin.blockinfile",
            "ansible.legacy.blockinfile",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        &SPECS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let p = params(args)?;
        Ok(edit::probes(p.str_or("path", "")))
    }
    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let p = params(args)?;
        let path = p.str_or("path", "");
        let attrs = FileAttrs::from_params(&p)?;
        let cur = edit::current(facts, path)?;
        let present = p.str_or("state", "present") == "present";
        if cur.is_none() {
            if !p.bool_or("create", false) {
                return Err(OpError::new(format!("Path {path} does not exist !")));
            }
            if !present {
                let mut result = Map::new();
                result.insert("msg".into(), format!("File {path} not present").into());
                return Ok(Planned::NoChange { result });
            }
        }
        let original = cur.as_ref().map(|(_, c)| c.as_slice());
        let (new, msg) = edit(&p, original)?;
        let changed = original != Some(new.as_slice());
        edit::plan(
            facts,
            edit::Edit {
                path,
                current: cur.as_ref().map(|(s, c)| (*s, c.as_slice())),
                after: changed.then_some(new),
                attrs: &attrs,
                validate: p.str("validate"),
                msg,
            },
            Map::new(),
        )
    }
}
