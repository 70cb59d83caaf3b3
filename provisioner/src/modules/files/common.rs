//! Helpers shared by the file modules: mode parsing (octal and symbolic, Ansible's rules),
//! owner/group comparison, attribute changes as `chown`/`chgrp`/`chmod`, and the
//! "write this content to that file" plan used by copy, template, lineinfile, blockinfile and
//! ini_file.
//!
//! Assumptions, stated once: the remote umask is 022, so new files are 0644 and new directories
//! 0755 (Ansible's atomic_move creates files with `0666 & ~umask`). Files we create are owned by
//! the become user unless `owner`/`group` say otherwise.

use super::args::{py_str, Params};
use super::sha1::sha1_hex;
use crate::facts::{Facts, FileStat, ProbeResult};
use crate::modules::{Action, Args, Diff, OpError, Planned};
use crate::shell::quote;
use serde_json::{Map, Value};

/// Mode of a file created by a module (0666 & ~022).
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a directory created by a module (0777 & ~022).
pub const DEFAULT_DIR_MODE: u32 = 0o755;
const UMASK: u32 = 0o022;
/// The largest file we read to edit or diff.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

/// A `mode` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Octal(u32),
    Symbolic(String),
}

/// Python's `int(s, 8)`.
fn py_int_octal(s: &str) -> Option<u32> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let t = t
        .strip_prefix("0o")
        .or_else(|| t.strip_prefix("0O"))
        .unwrap_or(t);
    if t.is_empty() || t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    let digits: String = t.chars().filter(|c| *c != '_').collect();
    if !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return None;
    }
    u32::from_str_radix(&digits, 8).ok()
}

impl ModeArg {
    /// Parse a `mode` value: an int is taken as is (YAML `0644` arrives as 420), a string of
    /// octal digits is octal, anything else is symbolic (`u=rw,g=r,o=r`, `u+x`, `a-w`, `+X`).
    pub fn parse(v: &Value) -> Result<ModeArg, OpError> {
        let m = match v {
            Value::Number(n) => match n.as_u64() {
                Some(n) if n <= 0o7777 => ModeArg::Octal(n as u32),
                _ => {
                    return Err(OpError::new(format!(
                        "Invalid mode supplied, only permission info is allowed: {n}"
                    )))
                }
            },
            Value::String(s) => match py_int_octal(s) {
                Some(n) if n <= 0o7777 => ModeArg::Octal(n),
                Some(_) => {
                    return Err(OpError::new(format!(
                        "Invalid mode supplied, only permission info is allowed: {s}"
                    )))
                }
                None => {
                    let m = ModeArg::Symbolic(s.clone());
                    m.resolve(0, false)?;
                    m
                }
            },
            other => {
                return Err(OpError::new(format!(
                    "mode must be in octal or symbolic form: {}",
                    py_str(other)
                )))
            }
        };
        Ok(m)
    }

    /// The resulting permission bits for a path whose current bits are `current`.
    pub fn resolve(&self, current: u32, is_dir: bool) -> Result<u32, OpError> {
        match self {
            ModeArg::Octal(m) => Ok(*m),
            ModeArg::Symbolic(s) => symbolic(s, current & 0o7777, is_dir)
                .map_err(|e| OpError::new(format!("mode must be in octal or symbolic form ({e})"))),
        }
    }
}

/// Ansible's `_symbolic_mode_to_octal`: like chmod(1), except that `X` and the copy forms
/// (`g=u`) look at the mode before the whole expression, and an empty who-list means `a`
/// masked by the umask.
fn symbolic(expr: &str, current: u32, is_dir: bool) -> Result<u32, String> {
    let prev = current;
    let mut mode = current;
    for clause in expr.split(',') {
        let bad = || format!("bad symbolic permission for mode: {clause}");
        let op_pos = clause.find(['+', '-', '=']).ok_or_else(bad)?;
        let who = &clause[..op_pos];
        let use_umask = who.is_empty();
        let who = if who.is_empty() || who == "a" {
            "ugo"
        } else {
            who
        };
        if who.chars().any(|c| !"ugo".contains(c)) {
            return Err(bad());
        }
        // Split the rest into (operator, perms) pairs.
        let rest = &clause[op_pos..];
        let mut pairs: Vec<(char, String)> = Vec::new();
        for c in rest.chars() {
            if "+-=".contains(c) {
                pairs.push((c, String::new()));
            } else if let Some(last) = pairs.last_mut() {
                last.1.push(c);
            }
        }
        for (op, perms) in pairs {
            if perms.chars().any(|c| !"rwxXstugo".contains(c)) {
                return Err(bad());
            }
            for u in who.chars() {
                let apply_x = is_dir || prev & 0o111 != 0;
                let mut bits = 0u32;
                for p in perms.chars() {
                    let um = |b: u32| if use_umask { b & !UMASK } else { b };
                    bits |= match (u, p) {
                        ('u', 'r') => um(0o400),
                        ('u', 'w') => um(0o200),
                        ('u', 'x') => um(0o100),
                        ('u', 'X') if apply_x => 0o100,
                        ('u', 's') => 0o4000,
                        ('u', 'u') => prev & 0o700,
                        ('u', 'g') => (prev & 0o070) << 3,
                        ('u', 'o') => (prev & 0o007) << 6,
                        ('g', 'r') => um(0o040),
                        ('g', 'w') => um(0o020),
                        ('g', 'x') => um(0o010),
                        ('g', 'X') if apply_x => 0o010,
                        ('g', 's') => 0o2000,
                        ('g', 'u') => (prev & 0o700) >> 3,
                        ('g', 'g') => prev & 0o070,
                        ('g', 'o') => (prev & 0o007) << 3,
                        ('o', 'r') => um(0o004),
                        ('o', 'w') => um(0o002),
                        ('o', 'x') => um(0o001),
                        ('o', 'X') if apply_x => 0o001,
                        ('o', 't') => 0o1000,
                        ('o', 'u') => (prev & 0o700) >> 6,
                        ('o', 'g') => (prev & 0o070) >> 3,
                        ('o', 'o') => prev & 0o007,
                        _ => 0,
                    };
                }
                mode = match op {
                    '=' => {
                        let mask = match u {
                            'u' => 0o4700,
                            'g' => 0o2070,
                            _ => 0o1007,
                        };
                        (mode & !mask & 0o7777) | bits
                    }
                    '+' => mode | bits,
                    _ => mode & !bits,
                };
            }
        }
    }
    Ok(mode)
}

/// `"0644"`, Ansible's rendering of a mode (`'0%03o'`).
pub fn mode_str(m: u32) -> String {
    format!("0{m:03o}")
}

/// The desired owner, group and mode of a path (`mode`, `owner`, `group` args).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileAttrs {
    pub mode: Option<ModeArg>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// What changes on a path's attributes, and the path's attributes afterwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrPlan {
    /// Shell commands (`chown`, `chgrp`, `chmod`) to apply, in Ansible's order.
    pub commands: Vec<String>,
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// Resulting mode.
    pub mode: u32,
    /// Resulting owner / group, as names when known (else the uid/gid as given).
    pub owner: String,
    pub group: String,
    /// uid/gid when they are known before running.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl AttrPlan {
    pub fn changed(&self) -> bool {
        !self.commands.is_empty()
    }
    pub fn diff(&self, path: &str) -> Option<Diff> {
        self.changed().then(|| Diff {
            label: format!("{path} (file attributes)"),
            before: lines(&self.before),
            after: lines(&self.after),
        })
    }
    /// Ansible's result fields for the path: mode, owner, group, uid, gid.
    pub fn result(&self, r: &mut Map<String, Value>) {
        r.insert("mode".into(), mode_str(self.mode).into());
        r.insert("owner".into(), self.owner.clone().into());
        r.insert("group".into(), self.group.clone().into());
        if let Some(u) = self.uid {
            r.insert("uid".into(), u.into());
        }
        if let Some(g) = self.gid {
            r.insert("gid".into(), g.into());
        }
    }
}

fn lines(v: &[String]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl FileAttrs {
    pub fn from_params(p: &Params) -> Result<FileAttrs, OpError> {
        Ok(FileAttrs {
            mode: p.raw("mode").map(ModeArg::parse).transpose()?,
            owner: p.str("owner").map(str::to_string),
            group: p.str("group").map(str::to_string),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.owner.is_none() && self.group.is_none()
    }

    /// Attribute changes for `path`, whose current state is `st`. `link` applies them to a
    /// symlink itself (`chown -h`, and mode is not applicable to links on Linux).
    pub fn plan(&self, path: &str, st: &FileStat, link: bool) -> Result<AttrPlan, OpError> {
        let q = quote(path);
        let h = if link { "-h " } else { "" };
        let mut p = AttrPlan {
            mode: st.mode,
            owner: st.owner.clone(),
            group: st.group.clone(),
            uid: Some(st.uid),
            gid: Some(st.gid),
            ..Default::default()
        };
        if let Some(o) = &self.owner {
            let same = if is_numeric(o) {
                o.parse::<u32>().ok() == Some(st.uid)
            } else {
                *o == st.owner
            };
            if !same {
                p.commands.push(format!("chown {h}{} {q}", quote(o)));
                p.before.push(format!("owner: {}", st.owner));
                p.after.push(format!("owner: {o}"));
                p.owner = o.clone();
                p.uid = o.parse().ok();
            }
        }
        if let Some(g) = &self.group {
            let same = if is_numeric(g) {
                g.parse::<u32>().ok() == Some(st.gid)
            } else {
                *g == st.group
            };
            if !same {
                p.commands.push(format!("chgrp {h}{} {q}", quote(g)));
                p.before.push(format!("group: {}", st.group));
                p.after.push(format!("group: {g}"));
                p.group = g.clone();
                p.gid = g.parse().ok();
            }
        }
        if let (Some(m), false) = (&self.mode, link) {
            let want = m.resolve(st.mode, st.kind == "directory")?;
            if want != st.mode {
                p.commands.push(format!("chmod {} {q}", mode_str(want)));
                p.before.push(format!("mode: {}", mode_str(st.mode)));
                p.after.push(format!("mode: {}", mode_str(want)));
                p.mode = want;
            }
        }
        Ok(p)
    }
}

/// The stat a file (or directory) would have right after a module creates it.
pub fn new_stat(kind: &str) -> FileStat {
    FileStat {
        exists: true,
        kind: kind.to_string(),
        mode: if kind == "directory" {
            DEFAULT_DIR_MODE
        } else {
            DEFAULT_FILE_MODE
        },
        uid: 0,
        gid: 0,
        // The become user; unknown before running.
        owner: String::new(),
        group: String::new(),
        ..Default::default()
    }
}

/// `Facts::stat`, but a missing answer is a bug in the caller (probe not asked).
pub fn need_stat<'a>(facts: &'a Facts, path: &str, follow: bool) -> Result<&'a FileStat, OpError> {
    facts
        .stat(path, follow)
        .ok_or_else(|| OpError::new(format!("internal: no stat probe answer for {path}")))
}

/// The content of `path`, `None` when missing; an error when the probe was not asked.
pub fn need_read<'a>(facts: &'a Facts, path: &str) -> Result<Option<&'a [u8]>, OpError> {
    facts
        .read(path)
        .ok_or_else(|| OpError::new(format!("internal: no read probe answer for {path}")))
}

/// The realpath of `path` from a `realpath_probe`, or `path` itself.
pub fn realpath(facts: &Facts, path: &str) -> String {
    match facts.get(&realpath_probe(path)) {
        Some(ProbeResult::Command(o)) if o.rc == 0 && !o.stdout.trim_end().is_empty() => {
            o.stdout.trim_end_matches('\n').to_string()
        }
        _ => path.to_string(),
    }
}

/// A probe answering the canonical path of `path` (symlinks resolved), like `os.path.realpath`.
pub fn realpath_probe(path: &str) -> crate::facts::Probe {
    crate::facts::Probe::Command {
        script: format!("readlink -m -- {}", quote(path)),
    }
}

/// `os.path.dirname`.
/// The file a file module works on (`path` or one of its aliases), for
/// [`crate::modules::Module::confined_to`]: its actions touch that path (and parents they create).
pub fn own_path(args: &Args) -> Option<Vec<String>> {
    ["path", "dest", "destfile", "name"]
        .iter()
        .find_map(|k| args.get(*k).and_then(Value::as_str))
        .map(|p| vec![p.to_string()])
}

pub fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        None => "",
        Some(i) => {
            let head = &path[..=i];
            let t = head.trim_end_matches('/');
            if t.is_empty() {
                head
            } else {
                t
            }
        }
    }
}

/// `os.path.basename`.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A text diff of content (lossy for non-UTF-8).
pub fn content_diff(path: &str, before: &[u8], after: &[u8]) -> Diff {
    Diff {
        label: path.to_string(),
        before: String::from_utf8_lossy(before).into_owned(),
        after: String::from_utf8_lossy(after).into_owned(),
    }
}

/// Everything needed to bring a regular file to a given content and attributes.
pub struct WriteFile<'a> {
    /// The path as the user wrote it (labels, results).
    pub path: &'a str,
    /// Where to write (the realpath when the module follows links).
    pub write_path: String,
    /// The current file (followed), `None` when it does not exist.
    pub current: Option<&'a FileStat>,
    /// Current content, when known (for the diff).
    pub before: Option<&'a [u8]>,
    pub after: Vec<u8>,
    pub attrs: &'a FileAttrs,
    /// `validate` command with `%s`.
    pub validate: Option<&'a str>,
    /// Create this parent directory first (`mkdir -p`).
    pub mkdir: Option<String>,
    /// The sha1 of the content when only that is known (`after` is then empty): a plan that
    /// would write the content fails with [`OpError::needs_content`].
    pub after_sha1: Option<String>,
}

/// The outcome of [`plan_write`].
pub struct WritePlan {
    pub actions: Vec<Action>,
    pub diffs: Vec<Diff>,
    pub content_changed: bool,
    pub attrs: AttrPlan,
    pub checksum: String,
}

impl WritePlan {
    pub fn changed(&self) -> bool {
        !self.actions.is_empty()
    }
    /// `Planned` with `result` extended by the path attributes.
    pub fn into_planned(self, mut result: Map<String, Value>) -> Planned {
        self.attrs.result(&mut result);
        if self.actions.is_empty() {
            Planned::NoChange { result }
        } else {
            Planned::Change {
                actions: self.actions,
                diffs: self.diffs,
                result,
            }
        }
    }
}

/// Validate first when asked to: Ansible writes a temp file, runs `validate % tmp`, and only
/// then moves it into place.
pub fn validate_check(validate: Option<&str>) -> Result<(), OpError> {
    match validate {
        Some(v) if !v.contains("%s") => Err(OpError::new(format!("validate must contain %s: {v}"))),
        _ => Ok(()),
    }
}

/// Plan writing `after` to a file: nothing when content and attributes already match; a
/// `WriteFile` (carrying the final mode and owner, preserving the current ones) when the content
/// differs; `chown`/`chgrp`/`chmod` when only attributes differ.
pub fn plan_write(w: WriteFile<'_>) -> Result<WritePlan, OpError> {
    validate_check(w.validate)?;
    let checksum = w.after_sha1.clone().unwrap_or_else(|| sha1_hex(&w.after));
    let same_content = match (w.current, w.before) {
        (None, _) => false,
        (Some(_), Some(b)) if w.after_sha1.is_none() => b == w.after.as_slice(),
        (Some(st), _) => st.checksum_sha1.as_deref() == Some(checksum.as_str()),
    };
    if !same_content && w.after_sha1.is_some() {
        return Err(OpError::needs_content());
    }
    let base = match w.current {
        Some(st) => st.clone(),
        None => new_stat("file"),
    };
    let mut attrs = w.attrs.plan(&w.write_path, &base, false)?;
    let mut actions = Vec::new();
    let mut diffs = Vec::new();
    if same_content {
        if attrs.changed() {
            actions.push(Action::Exec {
                script: attrs.commands.join(" && "),
                stdin: None,
            });
        }
    } else {
        if let Some(dir) = &w.mkdir {
            actions.push(Action::Exec {
                script: format!("mkdir -p -- {}", quote(dir)),
                stdin: None,
            });
        }
        diffs.push(content_diff(w.path, w.before.unwrap_or_default(), &w.after));
        // Keep the current owner/group when not asked to change them; a new file gets the
        // become user's.
        let owner = w.attrs.owner.clone().or_else(|| keep_id(w.current, true));
        let group = w.attrs.group.clone().or_else(|| keep_id(w.current, false));
        match w.validate {
            None => actions.push(Action::WriteFile {
                path: w.write_path.clone(),
                content: w.after.clone(),
                mode: Some(attrs.mode),
                owner,
                group,
            }),
            Some(v) => actions.push(Action::Exec {
                script: validated_write_script(&w.write_path, v, attrs.mode, owner, group),
                stdin: Some(w.after.clone()),
            }),
        }
        if w.current.is_none() {
            // Attribute changes of a new file are not reported separately by Ansible.
            attrs.before.clear();
            attrs.after.clear();
            if attrs.owner.is_empty() {
                attrs.uid = None;
            }
            if attrs.group.is_empty() {
                attrs.gid = None;
            }
        }
    }
    if w.current.is_some() {
        if let Some(d) = attrs.diff(w.path) {
            diffs.push(d);
        }
    }
    Ok(WritePlan {
        content_changed: !same_content,
        actions,
        diffs,
        attrs,
        checksum,
    })
}

fn keep_id(current: Option<&FileStat>, owner: bool) -> Option<String> {
    let st = current?;
    let (name, id) = if owner {
        (&st.owner, st.uid)
    } else {
        (&st.group, st.gid)
    };
    Some(if name.is_empty() || name == "UNKNOWN" {
        id.to_string()
    } else {
        name.clone()
    })
}

/// Write stdin to a temp file next to `path`, validate it, set mode and owner, rename.
pub fn validated_write_script(
    path: &str,
    validate: &str,
    mode: u32,
    owner: Option<String>,
    group: Option<String>,
) -> String {
    let q = quote(path);
    let d = dirname(path);
    let dir = quote(if d.is_empty() { "." } else { d });
    let mut s = format!(
        "set -e\nt=$(mktemp {dir}/.provisioner_tmpXXXXXXXX)\ntrap 'rm -f \"$t\"' EXIT\ncat > \"$t\"\n"
    );
    s.push_str(&format!(
        "if ! {}; then echo \"failed to validate: {}\" >&2; exit 1; fi\n",
        validate.replace("%s", "\"$t\""),
        validate.replace('"', "'")
    ));
    s.push_str(&format!("chmod {} \"$t\"\n", mode_str(mode)));
    if let Some(o) = owner {
        s.push_str(&format!("chown {} \"$t\"\n", quote(&o)));
    }
    if let Some(g) = group {
        s.push_str(&format!("chgrp {} \"$t\"\n", quote(&g)));
    }
    s.push_str(&format!("mv -f \"$t\" {q}\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_parse_like_ansible() {
        assert_eq!(ModeArg::parse(&json!(420)).unwrap(), ModeArg::Octal(0o644));
        assert_eq!(
            ModeArg::parse(&json!("0644")).unwrap(),
            ModeArg::Octal(0o644)
        );
        assert_eq!(
            ModeArg::parse(&json!("644")).unwrap(),
            ModeArg::Octal(0o644)
        );
        assert_eq!(
            ModeArg::parse(&json!("0o755")).unwrap(),
            ModeArg::Octal(0o755)
        );
        // YAML 644 (decimal) is 0o1204, Ansible's well known pitfall.
        assert_eq!(ModeArg::parse(&json!(644)).unwrap(), ModeArg::Octal(0o1204));
        assert!(ModeArg::parse(&json!("u=rw,g=bogus")).is_err());
        assert!(ModeArg::parse(&json!("077777")).is_err());
    }

    #[test]
    fn symbolic_modes_follow_ansible() {
        let r = |s: &str, cur, dir| ModeArg::Symbolic(s.into()).resolve(cur, dir).unwrap();
        assert_eq!(r("u=rw,g=r,o=r", 0o777, false), 0o644);
        assert_eq!(r("u+x", 0o644, false), 0o744);
        assert_eq!(r("a-w", 0o666, false), 0o444);
        assert_eq!(r("u=rwX,g=rX,o=rX", 0o600, true), 0o755);
        assert_eq!(r("u=rwX,g=rX,o=rX", 0o600, false), 0o644);
        assert_eq!(r("u=rwX,g=rX,o=rX", 0o700, false), 0o755);
        // an empty who-list is masked by the umask (022)
        assert_eq!(r("+w", 0o444, false), 0o644);
        assert_eq!(r("g=u", 0o640, false), 0o660);
        assert_eq!(r("u+s,o+t", 0o755, true), 0o5755);
        assert_eq!(r("u=rw-x+X", 0o744, false), 0o744);
    }

    #[test]
    fn dirname_and_basename_match_python() {
        assert_eq!(dirname("/etc/hosts"), "/etc");
        assert_eq!(dirname("/hosts"), "/");
        assert_eq!(dirname("hosts"), "");
        assert_eq!(basename("/etc/hosts"), "hosts");
        assert_eq!(basename("/etc/"), "");
    }
}
