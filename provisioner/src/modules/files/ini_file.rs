//! `ini_file` (community.general 6.6.2, the version shipped with ansible 7 / core 2.14),
//! following its algorithm: a fake top section for section-less options, commented
//! `#option = x` lines are matched (and uncommented) on present, `exclusive`, `values`,
//! `allow_no_value`, options inserted after the last non-blank non-comment line of the section,
//! a missing section appended at the end, and a missing final newline always added (which by
//! itself reports a change, like the original). The file is read as UTF-8 with universal
//! newlines (a BOM is dropped, CRLF becomes LF when the file is rewritten).

use super::args::{parse, specs, Kind, Param, Params, FILE_COMMON};
use super::common::FileAttrs;
use super::edit;
use crate::facts::{Facts, Probe};
use crate::modules::{Args, Mode, Module, OpError, ParamSpec, Planned};
use regex::Regex;
use serde_json::Map;

pub struct IniFile;

const P: [Param; 20] = [
    Param::new("path", Kind::Path).aliases(&["dest"]).required(),
    Param::new("section", Kind::Str),
    Param::new("option", Kind::Str),
    Param::new("value", Kind::Str),
    Param::new("values", Kind::List),
    Param::new("backup", Kind::Bool),
    Param::new("state", Kind::Str).choices(&["absent", "present"]),
    Param::new("exclusive", Kind::Bool),
    Param::new("no_extra_spaces", Kind::Bool),
    Param::new("allow_no_value", Kind::Bool),
    Param::new("create", Kind::Bool),
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

const FAKE: &str = "ad01e11446efb704fcdbdb21f2c43757423d91c5";

fn params(args: &Args) -> Result<Params, OpError> {
    let p = parse("ini_file", &P, args)?;
    p.mutually_exclusive(&["value", "values"])?;
    if p.bool_or("backup", false) {
        return Err(OpError::new(
            "ini_file: backup=yes is not supported by provisioner",
        ));
    }
    if p.str_or("state", "present") == "present"
        && !p.bool_or("allow_no_value", false)
        && !p.has("value")
        && p.list("values").is_empty()
    {
        return Err(OpError::new(
            "Parameter 'value(s)' must be defined if state=present and allow_no_value=False.",
        ));
    }
    FileAttrs::from_params(&p)?;
    Ok(p)
}

/// `re.match('[#;]?( |\t)*(OPT)( |\t)*(=|$)( |\t)*(.*)', line)`; returns group 6.
fn opt_value(re: &Regex, line: &str) -> Option<String> {
    let l = line.strip_suffix('\n').unwrap_or(line);
    re.captures(l)
        .map(|c| c.get(6).map(|m| m.as_str().to_string()).unwrap_or_default())
}

/// Ansible's `do_ini`: the new text and message, and whether it changed.
fn do_ini(p: &Params, text: Option<&str>) -> Result<(bool, String, &'static str), OpError> {
    let section_arg = p.str("section").filter(|s| !s.is_empty());
    let option = p.str("option").filter(|s| !s.is_empty());
    let state = p.str_or("state", "present");
    let exclusive = p.bool_or("exclusive", true);
    let allow_no_value = p.bool_or("allow_no_value", false);
    let mut values: Vec<String> = Vec::new();
    let raw_values = match p.str("value") {
        Some(v) => vec![v.to_string()],
        None => p.list("values"),
    };
    for v in raw_values {
        if !values.contains(&v) {
            values.push(v);
        }
    }
    let fmt = |o: &str, v: &str| {
        if p.bool_or("no_extra_spaces", false) {
            format!("{o}={v}\n")
        } else {
            format!("{o} = {v}\n")
        }
    };
    let mut ini: Vec<String> = match text {
        Some(t) => t.split_inclusive('\n').map(str::to_string).collect(),
        None => Vec::new(),
    };
    let mut changed = false;
    if ini.is_empty() {
        ini.push("\n".into());
    }
    if let Some(last) = ini.last_mut() {
        if !last.ends_with('\n') {
            last.push('\n');
            changed = true;
        }
    }
    ini.insert(0, format!("[{FAKE}]"));
    ini.push("[".into());
    let section = section_arg.unwrap_or(FAKE);
    let mut within = false;
    let (mut start, mut end) = (0, 0);
    for (i, line) in ini.iter().enumerate() {
        if line.starts_with(&format!("[{section}]")) {
            within = true;
            start = i;
        } else if line.starts_with('[') && within {
            end = i;
            break;
        }
    }
    let before: Vec<String> = ini[..start].to_vec();
    let mut sec: Vec<String> = ini[start..end].to_vec();
    let after: Vec<String> = ini[end..].to_vec();
    let mut changed_lines = vec![false; sec.len()];
    let mut msg = "OK";
    let esc = regex::escape(option.unwrap_or(""));
    let re_opt = Regex::new(&format!(r"^[#;]?( |\t)*({esc})( |\t)*(=|$)( |\t)*(.*)"))
        .map_err(|e| OpError::new(e.to_string()))?;
    let re_active = Regex::new(&format!(r"^( |\t)*({esc})( |\t)*(=|$)( |\t)*(.*)"))
        .map_err(|e| OpError::new(e.to_string()))?;
    let non_blank_non_comment =
        Regex::new(r"^[ \t]*([#;].*)?$").map_err(|e| OpError::new(e.to_string()))?;
    let mut no_value_present = false;
    let update = |sec: &mut Vec<String>,
                  cl: &mut Vec<bool>,
                  i: usize,
                  nl: String,
                  changed: &mut bool,
                  msg: &mut &'static str| {
        if sec[i] != nl {
            *changed = true;
            *msg = "option changed";
        }
        sec[i] = nl;
        cl[i] = true;
    };
    if state == "present" {
        if let Some(o) = option {
            for i in 0..sec.len() {
                let Some(v) = opt_value(&re_opt, &sec[i]) else {
                    continue;
                };
                if !values.is_empty() && values.contains(&v) {
                    let nl = if v.is_empty() && allow_no_value {
                        no_value_present = true;
                        format!("{o}\n")
                    } else {
                        fmt(o, &v)
                    };
                    update(&mut sec, &mut changed_lines, i, nl, &mut changed, &mut msg);
                    values.retain(|x| *x != v);
                } else if values.is_empty() && allow_no_value {
                    update(
                        &mut sec,
                        &mut changed_lines,
                        i,
                        format!("{o}\n"),
                        &mut changed,
                        &mut msg,
                    );
                    no_value_present = true;
                    break;
                }
            }
        }
    }
    if state == "present" && exclusive && !allow_no_value {
        let o = option.unwrap_or("");
        if !values.is_empty() {
            for i in 0..sec.len() {
                if !changed_lines[i] && opt_value(&re_opt, &sec[i]).is_some() {
                    let v = values.remove(0);
                    update(
                        &mut sec,
                        &mut changed_lines,
                        i,
                        fmt(o, &v),
                        &mut changed,
                        &mut msg,
                    );
                    if values.is_empty() {
                        break;
                    }
                }
            }
        }
        let mut i = sec.len().saturating_sub(1);
        while i > 0 {
            if !changed_lines[i] && opt_value(&re_opt, &sec[i]).is_some() {
                sec.remove(i);
                changed_lines.remove(i);
                changed = true;
                msg = "option changed";
            }
            i -= 1;
        }
    }
    if state == "present" {
        let mut i = sec.len();
        while i > 0 {
            let l = sec[i - 1].strip_suffix('\n').unwrap_or(&sec[i - 1]);
            if !non_blank_non_comment.is_match(l) {
                if let (Some(o), false) = (option, values.is_empty()) {
                    for v in values.iter().rev() {
                        sec.insert(i, fmt(o, v));
                        msg = "option added";
                        changed = true;
                    }
                } else if let (Some(o), true, true, false) =
                    (option, values.is_empty(), allow_no_value, no_value_present)
                {
                    sec.insert(i, format!("{o}\n"));
                    msg = "option added";
                    changed = true;
                }
                break;
            }
            i -= 1;
        }
    }
    if state == "absent" {
        if let Some(_o) = option {
            let old = sec.clone();
            if exclusive {
                sec.retain(|l| opt_value(&re_active, l).is_none());
            } else if !values.is_empty() {
                sec.retain(|l| match opt_value(&re_active, l) {
                    Some(v) => !values.contains(&v),
                    None => true,
                });
            }
            if sec != old {
                changed = true;
                msg = "option changed";
            }
        } else if !sec.is_empty() {
            sec.clear();
            msg = "section removed";
            changed = true;
        }
    }
    let mut out: Vec<String> = before;
    out.extend(sec);
    out.extend(after);
    out.remove(0);
    out.pop();
    if !within && state == "present" {
        out.push(format!("[{section}]\n"));
        msg = "section and option added";
        match option {
            Some(o) if !values.is_empty() => {
                for v in &values {
                    out.push(fmt(o, v));
                }
            }
            Some(o) if allow_no_value => out.push(format!("{o}\n")),
            _ => msg = "only section added",
        }
        changed = true;
    }
    Ok((changed, out.concat(), msg))
}

impl Module for IniFile {
    fn confined_to(&self, args: &Args) -> Option<Vec<String>> {
        super::common::own_path(args)
    }
    fn names(&self) -> &'static [&'static str] {
        &["ini_file", "community.general.ini_file"]
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
        if cur.is_none() && !p.bool_or("create", true) {
            return Err(OpError::new(format!("Destination {path} does not exist!")));
        }
        let text = match &cur {
            Some((_, c)) => {
                let s = std::str::from_utf8(c).map_err(|_| {
                    OpError::new(format!("{path} is not UTF-8; ini_file cannot read it"))
                })?;
                let s = s.strip_prefix('\u{feff}').unwrap_or(s);
                Some(s.replace("\r\n", "\n").replace('\r', "\n"))
            }
            None => None,
        };
        let (changed, new, msg) = do_ini(&p, text.as_deref())?;
        let mut result = Map::new();
        result.insert("path".into(), path.into());
        let plan = edit::plan(
            facts,
            edit::Edit {
                path,
                current: cur.as_ref().map(|(s, c)| (*s, c.as_slice())),
                after: changed.then(|| new.into_bytes()),
                attrs: &attrs,
                validate: None,
                msg,
            },
            result,
        )?;
        // ini_file's message is "OK" when nothing changed.
        Ok(match plan {
            Planned::NoChange { mut result } => {
                result.insert("msg".into(), "OK".into());
                Planned::NoChange { result }
            }
            other => other,
        })
    }
}
