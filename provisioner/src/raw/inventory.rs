//! Raw inventory: the files as Ansible reads them, before any group or host is built.
//!
//! * INI inventories are split into lines of four kinds (section header, host line, `k=v`
//!   variable, child group), with values already converted the way Ansible's `ini` plugin does
//!   (`ast.literal_eval`, falling back to the string). Errors are collected, one per bad line.
//! * YAML inventories are kept as spanned [`Node`]s; their structure is checked in `resolve`.
//! * `group_vars/` and `host_vars/` directories are listed and parsed per entity name, with the
//!   file search rules of Ansible's `host_group_vars` plugin (`NAME`, `NAME.yml`, `NAME.yaml`,
//!   `NAME.json`: the first that exists wins; a directory `NAME/` is read recursively in sorted
//!   order, skipping hidden and backup files).
//!
//! Reading the disk happens only here; `resolve` is pure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{Diagnostic, Diagnostics, Loc};
use crate::yaml::{self, Node};

/// Every inventory file and vars directory that one `-i` (or several) names.
#[derive(Clone, Debug, Default)]
pub struct RawInventory {
    /// Inventory files, in the order Ansible parses them.
    pub files: Vec<RawInventoryFile>,
    /// One per source given on the command line: the directory that holds its `group_vars/` and
    /// `host_vars/` (the file's directory, or the source itself when it is a directory).
    pub vars_dirs: Vec<VarsDirs>,
}

/// One inventory file.
#[derive(Clone, Debug)]
pub enum RawInventoryFile {
    Ini(IniFile),
    Yaml(YamlFile),
}

/// An INI inventory, line by line (blank and comment lines dropped).
#[derive(Clone, Debug, Default)]
pub struct IniFile {
    pub path: Arc<str>,
    pub lines: Vec<IniLine>,
}

/// The kind of an INI section: `[g]`, `[g:children]` or `[g:vars]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Hosts,
    Children,
    Vars,
}

/// One meaningful INI line.
#[derive(Clone, Debug, PartialEq)]
pub enum IniLine {
    Section {
        group: String,
        kind: SectionKind,
        loc: Loc,
    },
    /// `pattern k=v ...` in a hosts section. The pattern is not expanded yet (ranges, port).
    Host {
        pattern: String,
        vars: Vec<(String, serde_json::Value)>,
        loc: Loc,
    },
    /// `k = v` in a `:vars` section.
    Var {
        key: String,
        value: serde_json::Value,
        loc: Loc,
    },
    /// A group name in a `:children` section.
    Child { name: String, loc: Loc },
}

/// A YAML inventory: the first document of the file.
#[derive(Clone, Debug)]
pub struct YamlFile {
    pub path: Arc<str>,
    /// `None` when the file holds no document (Ansible: "Parsed empty YAML file").
    pub root: Option<Node>,
}

/// The `group_vars/` and `host_vars/` next to one inventory source.
#[derive(Clone, Debug, Default)]
pub struct VarsDirs {
    pub base: PathBuf,
    /// Entity name → its vars files, in load order.
    pub group_vars: BTreeMap<String, Vec<VarsFile>>,
    pub host_vars: BTreeMap<String, Vec<VarsFile>>,
}

/// One vars file. A parse error is kept, not reported: Ansible reads a vars file only for a
/// group or host that exists, so `resolve` reports it only then.
#[derive(Clone, Debug)]
pub struct VarsFile {
    pub path: Arc<str>,
    /// `Ok(None)` for an empty file (ignored, as in Ansible).
    pub content: Result<Option<Node>, Diagnostic>,
}

/// Extensions Ansible tries for vars files (`YAML_FILENAME_EXTENSIONS`), after the bare name.
const VARS_EXTS: [&str; 3] = [".yml", ".yaml", ".json"];

/// Extensions ignored when a directory is an inventory source (`INVENTORY_IGNORE_EXTS`).
const IGNORED_INVENTORY_EXTS: [&str; 13] = [
    ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".ini", ".cfg",
    ".retry",
];

/// Read the inventory sources (files or directories), collecting every error.
pub fn read_sources(sources: &[PathBuf], diags: &mut Diagnostics) -> RawInventory {
    let mut raw = RawInventory::default();
    for src in sources {
        if src.is_dir() {
            read_dir_source(src, &mut raw, diags);
            raw.vars_dirs.push(read_vars_dirs(src));
        } else if src.exists() {
            read_file_source(src, &mut raw, diags);
            let base = src
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let base = if base.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                base
            };
            raw.vars_dirs.push(read_vars_dirs(&base));
        } else {
            diags.error(
                &Loc::file(src.display().to_string()),
                "inventory source does not exist",
            );
        }
    }
    raw
}

fn is_ignored_inventory_entry(name: &str) -> bool {
    name.starts_with('.')
        || matches!(name, "host_vars" | "group_vars" | "vars_plugins")
        || IGNORED_INVENTORY_EXTS.iter().any(|e| name.ends_with(e))
}

fn read_dir_source(dir: &Path, raw: &mut RawInventory, diags: &mut Diagnostics) {
    let entries = match sorted_entries(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.error(
                &Loc::file(dir.display().to_string()),
                format!("cannot read directory: {e}"),
            );
            return;
        }
    };
    for (name, path) in entries {
        if is_ignored_inventory_entry(&name) {
            continue;
        }
        if path.is_dir() {
            read_dir_source(&path, raw, diags);
        } else {
            read_file_source(&path, raw, diags);
        }
    }
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    // Python sorts the byte names; for UTF-8 that is the same as sorting the strings.
    out.sort();
    Ok(out)
}

/// How an inventory file is read: by extension like Ansible's `yaml` plugin (`.yml`, `.yaml`,
/// `.json`, or no extension), falling back to INI when a YAML parse fails or is not a mapping.
fn read_file_source(path: &Path, raw: &mut RawInventory, diags: &mut Diagnostics) {
    let name = path.display().to_string();
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            diags.error(&Loc::file(name.as_str()), format!("cannot read: {e}"));
            return;
        }
    };
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    match ext.as_deref() {
        Some("yml" | "yaml" | "json") => match yaml::load_str(&src, &name) {
            Ok(mut docs) => raw.files.push(RawInventoryFile::Yaml(YamlFile {
                path: Arc::from(name.as_str()),
                root: if docs.is_empty() {
                    None
                } else {
                    Some(docs.remove(0))
                },
            })),
            Err(d) => diags.push(d),
        },
        None => {
            // Ansible tries the yaml plugin first, then ini.
            if let Ok(mut docs) = yaml::load_str(&src, &name) {
                if docs.first().is_some_and(|d| d.as_map().is_some()) {
                    raw.files.push(RawInventoryFile::Yaml(YamlFile {
                        path: Arc::from(name.as_str()),
                        root: Some(docs.remove(0)),
                    }));
                    return;
                }
            }
            raw.files
                .push(RawInventoryFile::Ini(parse_ini(&src, &name, diags)));
        }
        Some(_) => raw
            .files
            .push(RawInventoryFile::Ini(parse_ini(&src, &name, diags))),
    }
}

/// List and parse `group_vars/` and `host_vars/` under `base`.
pub fn read_vars_dirs(base: &Path) -> VarsDirs {
    VarsDirs {
        base: base.to_path_buf(),
        group_vars: read_vars_dir(&base.join("group_vars")),
        host_vars: read_vars_dir(&base.join("host_vars")),
    }
}

fn read_vars_dir(dir: &Path) -> BTreeMap<String, Vec<VarsFile>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = sorted_entries(dir) else {
        return out;
    };
    // Every entity name this directory can serve.
    let mut names: Vec<String> = Vec::new();
    for (name, _) in &entries {
        let base = VARS_EXTS
            .iter()
            .find_map(|e| name.strip_suffix(e))
            .unwrap_or(name);
        if !base.is_empty() && !names.iter().any(|n| n == base) {
            names.push(base.to_string());
        }
    }
    for name in names {
        let files = find_vars_files(dir, &name);
        if !files.is_empty() {
            out.insert(name, files.iter().map(|p| load_vars_file(p)).collect());
        }
    }
    out
}

/// Ansible's `DataLoader.find_vars_files`: the bare name first, then each extension; the first
/// that exists wins, and a directory is read recursively.
fn find_vars_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for ext in std::iter::once("").chain(VARS_EXTS) {
        let p = dir.join(format!("{name}{ext}"));
        if p.exists() {
            if p.is_dir() {
                dir_vars_files(&p, &mut found);
            } else {
                found.push(p);
            }
            break;
        }
    }
    found
}

fn dir_vars_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = sorted_entries(dir) else {
        return;
    };
    for (name, path) in entries {
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let ext = Path::new(&name)
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()));
        if path.is_dir() && ext.is_none() {
            dir_vars_files(&path, found);
        } else if path.is_file() && ext.as_deref().is_none_or(|e| VARS_EXTS.contains(&e)) {
            found.push(path);
        }
    }
}

fn load_vars_file(path: &Path) -> VarsFile {
    let name = path.display().to_string();
    let content = yaml::load_file(path).and_then(|mut docs| match docs.len() {
        0 => Ok(None),
        1 => Ok(Some(docs.remove(0))),
        n => Err(Diagnostic::at(
            &docs[1].loc,
            format!("expected one YAML document in a vars file, found {n}"),
        )),
    });
    VarsFile {
        path: Arc::from(name.as_str()),
        content,
    }
}

// ---------------------------------------------------------------------------------------------
// INI

/// Parse an INI inventory into lines, reporting every malformed line.
pub fn parse_ini(src: &str, file: &str, diags: &mut Diagnostics) -> IniFile {
    let path: Arc<str> = Arc::from(file);
    let mut lines = Vec::new();
    let mut state = SectionKind::Hosts;
    let mut skipping = false;
    for (i, line) in src.lines().enumerate() {
        let lineno = (i + 1) as u32;
        let indent = line.len() - line.trim_start().len();
        let loc = Loc::new(path.clone(), lineno, indent as u32 + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some((group, kind)) = match_section(line) {
            match kind {
                None | Some("hosts") => state = SectionKind::Hosts,
                Some("children") => state = SectionKind::Children,
                Some("vars") => state = SectionKind::Vars,
                Some(other) => {
                    diags.error(
                        &loc,
                        format!("Section [{group}:{other}] has unknown type: {other}"),
                    );
                    // Ansible stops here; we skip the section's lines to report the rest.
                    skipping = true;
                    continue;
                }
            }
            skipping = false;
            lines.push(IniLine::Section {
                group: group.to_string(),
                kind: state,
                loc,
            });
            continue;
        } else if line.starts_with('[') && line.ends_with(']') {
            diags.error(
                &loc,
                format!("Invalid section entry: '{line}'. Please make sure that there are no spaces in the section entry, and that there are no other invalid characters"),
            );
            continue;
        }
        if skipping {
            continue;
        }
        match state {
            SectionKind::Hosts => match parse_host_line(line) {
                Ok((pattern, vars)) => lines.push(IniLine::Host { pattern, vars, loc }),
                Err(msg) => diags.error(&loc, msg),
            },
            SectionKind::Vars => match line.split_once('=') {
                Some((k, v)) => lines.push(IniLine::Var {
                    key: k.trim().to_string(),
                    value: ini_value(v.trim()),
                    loc,
                }),
                None => diags.error(&loc, format!("Expected key=value, got: {line}")),
            },
            SectionKind::Children => match match_group_name(line) {
                Some(name) => lines.push(IniLine::Child {
                    name: name.to_string(),
                    loc,
                }),
                None => diags.error(&loc, format!("Expected group name, got: {line}")),
            },
        }
    }
    IniFile { path, lines }
}

/// `^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$`
fn match_section(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(|c: char| c == ':' || c == ']' || c.is_whitespace())?;
    let name = &rest[..end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &rest[end..];
    let mut kind = None;
    if let Some(r) = rest.strip_prefix(':') {
        let kend = r.find(|c: char| !is_word_char(c)).unwrap_or(r.len());
        if kend == 0 {
            return None;
        }
        kind = Some(&r[..kend]);
        rest = &r[kend..];
    }
    let rest = rest.strip_prefix(']')?.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Some((name, kind))
    } else {
        None
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `^([^:\]\s]+)\s*(?:#.*)?$`
fn match_group_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| c == ':' || c == ']' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..end];
    let rest = line[end..].trim_start();
    (!name.is_empty() && (rest.is_empty() || rest.starts_with('#'))).then_some(name)
}

type HostLine = (String, Vec<(String, serde_json::Value)>);

fn parse_host_line(line: &str) -> Result<HostLine, String> {
    let tokens =
        shlex_split(line).map_err(|e| format!("Error parsing host definition '{line}': {e}"))?;
    let mut it = tokens.into_iter();
    let pattern = it.next().unwrap_or_default();
    let mut vars = Vec::new();
    for t in it {
        match t.split_once('=') {
            Some((k, v)) => vars.push((k.to_string(), ini_value(v))),
            None => {
                return Err(format!(
                    "Expected key=value host variable assignment, got: {t}"
                ))
            }
        }
    }
    Ok((pattern, vars))
}

/// Python's `shlex.split(s, comments=True)` (POSIX mode).
pub fn shlex_split(s: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut tok = String::new();
    let mut in_tok = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_tok {
                    out.push(std::mem::take(&mut tok));
                    in_tok = false;
                }
            }
            '#' => break,
            '\\' => {
                let n = chars.next().ok_or("No escaped character")?;
                tok.push(n);
                in_tok = true;
            }
            '\'' => {
                in_tok = true;
                loop {
                    match chars.next() {
                        None => return Err("No closing quotation"),
                        Some('\'') => break,
                        Some(x) => tok.push(x),
                    }
                }
            }
            '"' => {
                in_tok = true;
                loop {
                    match chars.next() {
                        None => return Err("No closing quotation"),
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some(&n) if n == '"' || n == '\\' => {
                                tok.push(n);
                                chars.next();
                            }
                            Some(_) => tok.push('\\'),
                            None => return Err("No escaped character"),
                        },
                        Some(x) => tok.push(x),
                    }
                }
            }
            c => {
                tok.push(c);
                in_tok = true;
            }
        }
    }
    if in_tok {
        out.push(tok);
    }
    Ok(out)
}

/// An INI value as Ansible's `ini` plugin reads it: `ast.literal_eval`, else the string itself.
/// This applies to inline host vars *and* to `[g:vars]` values (ansible-core 2.14).
pub fn ini_value(v: &str) -> serde_json::Value {
    py_literal_eval(v).unwrap_or_else(|| serde_json::Value::String(v.to_string()))
}

/// Python's `ast.literal_eval` for the literals that have a JSON form: numbers, strings
/// (bytes become text), `True`/`False`/`None`, lists, tuples (as lists) and dicts.
/// `None` means "not a literal" (sets and complex numbers included), and the caller keeps the
/// string.
pub fn py_literal_eval(s: &str) -> Option<serde_json::Value> {
    let mut p = PyParser {
        s: s.trim_start_matches([' ', '\t']).as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.expr()?;
    p.skip_ws();
    (p.i == p.s.len()).then_some(v)
}

struct PyParser<'a> {
    s: &'a [u8],
    i: usize,
    /// Nesting of the expression being read (see [`PY_MAX_NESTING`]).
    depth: usize,
}

/// Python's tokenizer refuses more than 200 nested brackets ("too many nested parentheses"),
/// so `literal_eval` fails and Ansible keeps the string; the recursion here stops there too
/// (a line of `[[[[...` would otherwise overflow the stack).
const PY_MAX_NESTING: usize = 200;

impl PyParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Whitespace, comments and line continuations between tokens.
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.i += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'\\' if self.s.get(self.i + 1) == Some(&b'\n') => self.i += 2,
                _ => break,
            }
        }
    }

    fn expr(&mut self) -> Option<serde_json::Value> {
        if self.depth >= PY_MAX_NESTING {
            return None;
        }
        self.depth += 1;
        let v = self.expr_unnested();
        self.depth -= 1;
        v
    }

    fn expr_unnested(&mut self) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        self.skip_ws();
        match self.peek()? {
            b'[' => {
                self.i += 1;
                J::Array(self.items(b']')?).into()
            }
            b'(' => {
                self.i += 1;
                // `(x)` is x; `(x,)` and `()` are tuples.
                self.skip_ws();
                if self.peek() == Some(b')') {
                    self.i += 1;
                    return Some(J::Array(vec![]));
                }
                let first = self.expr()?;
                self.skip_ws();
                match self.peek()? {
                    b')' => {
                        self.i += 1;
                        Some(first)
                    }
                    b',' => {
                        self.i += 1;
                        let mut rest = self.items(b')')?;
                        rest.insert(0, first);
                        Some(J::Array(rest))
                    }
                    _ => None,
                }
            }
            b'{' => {
                self.i += 1;
                let mut map = serde_json::Map::new();
                loop {
                    self.skip_ws();
                    if self.peek()? == b'}' {
                        self.i += 1;
                        return Some(J::Object(map));
                    }
                    let k = self.expr()?;
                    self.skip_ws();
                    // A set literal has no JSON form.
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.i += 1;
                    let v = self.expr()?;
                    map.insert(py_json_key(&k)?, v);
                    self.skip_ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {}
                        _ => return None,
                    }
                }
            }
            b'-' | b'+' => {
                let neg = self.peek()? == b'-';
                self.i += 1;
                self.skip_ws();
                // Only one sign, directly on a number (Python 3.11's literal_eval).
                match self.number()? {
                    J::Number(n) => {
                        if !neg {
                            Some(J::Number(n))
                        } else if let Some(i) = n.as_i64() {
                            Some(J::from(i.checked_neg()?))
                        } else {
                            serde_json::Number::from_f64(-n.as_f64()?).map(J::Number)
                        }
                    }
                    _ => None,
                }
            }
            c if c.is_ascii_digit() || c == b'.' => self.number(),
            _ => {
                // Names and strings (with optional prefixes).
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
                {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                match self.peek() {
                    Some(b'\'' | b'"') if is_str_prefix(word) => self.strings(word),
                    _ => match word {
                        "True" => Some(J::Bool(true)),
                        "False" => Some(J::Bool(false)),
                        "None" => Some(J::Null),
                        "" if matches!(self.peek(), Some(b'\'' | b'"')) => self.strings(""),
                        _ => None,
                    },
                }
            }
        }
    }

    fn items(&mut self, close: u8) -> Option<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.peek()? == close {
                self.i += 1;
                return Some(out);
            }
            out.push(self.expr()?);
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {}
                _ => return None,
            }
        }
    }

    fn number(&mut self) -> Option<serde_json::Value> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            // An exponent sign belongs to the number.
            let c = self.peek()?;
            self.i += 1;
            if (c == b'e' || c == b'E')
                && matches!(self.peek(), Some(b'+' | b'-'))
                && !self.s[start..self.i].starts_with(b"0x")
                && !self.s[start..self.i].starts_with(b"0X")
            {
                self.i += 1;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        py_number(text)
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self, first_prefix: &str) -> Option<serde_json::Value> {
        let mut out = String::new();
        let mut prefix = first_prefix.to_string();
        let mut kinds = (false, false); // (any bytes, any text)
        loop {
            let lower = prefix.to_ascii_lowercase();
            if lower.contains('f') {
                return None;
            }
            let raw = lower.contains('r');
            if lower.contains('b') {
                kinds.0 = true;
            } else {
                kinds.1 = true;
            }
            out.push_str(&self.string_body(raw)?);
            // Another literal may follow.
            let save = self.i;
            self.skip_ws();
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.i += 1;
            }
            let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            if matches!(self.peek(), Some(b'\'' | b'"')) && is_str_prefix(word) {
                prefix = word.to_string();
                continue;
            }
            self.i = save;
            break;
        }
        // Python refuses to concatenate bytes and str.
        if kinds.0 && kinds.1 {
            return None;
        }
        Some(serde_json::Value::String(out))
    }

    fn string_body(&mut self, raw: bool) -> Option<String> {
        let q = self.peek()?;
        let triple = self.s.get(self.i..self.i + 3) == Some(&[q, q, q][..]);
        self.i += if triple { 3 } else { 1 };
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            if c == q {
                if !triple {
                    self.i += 1;
                    break;
                }
                if self.s.get(self.i..self.i + 3) == Some(&[q, q, q][..]) {
                    self.i += 3;
                    break;
                }
                bytes.push(c);
                self.i += 1;
                continue;
            }
            if c == b'\n' && !triple {
                return None;
            }
            if c == b'\\' {
                let n = *self.s.get(self.i + 1)?;
                if raw {
                    bytes.extend_from_slice(&[c, n]);
                    self.i += 2;
                    continue;
                }
                self.i += 2;
                let push_char = |ch: char, bytes: &mut Vec<u8>| {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                };
                match n {
                    b'\n' => {}
                    b'\\' => bytes.push(b'\\'),
                    b'\'' => bytes.push(b'\''),
                    b'"' => bytes.push(b'"'),
                    b'a' => bytes.push(0x07),
                    b'b' => bytes.push(0x08),
                    b'f' => bytes.push(0x0c),
                    b'n' => bytes.push(b'\n'),
                    b'r' => bytes.push(b'\r'),
                    b't' => bytes.push(b'\t'),
                    b'v' => bytes.push(0x0b),
                    b'0'..=b'7' => {
                        let mut v = u32::from(n - b'0');
                        for _ in 0..2 {
                            match self.peek() {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    self.i += 1;
                                }
                                _ => break,
                            }
                        }
                        push_char(char::from_u32(v)?, &mut bytes);
                    }
                    b'x' | b'u' | b'U' => {
                        let len = match n {
                            b'x' => 2,
                            b'u' => 4,
                            _ => 8,
                        };
                        let hex = std::str::from_utf8(self.s.get(self.i..self.i + len)?).ok()?;
                        let v = u32::from_str_radix(hex, 16).ok()?;
                        self.i += len;
                        push_char(char::from_u32(v)?, &mut bytes);
                    }
                    other => bytes.extend_from_slice(&[b'\\', other]),
                }
                continue;
            }
            bytes.push(c);
            self.i += 1;
        }
        String::from_utf8(bytes).ok()
    }
}

fn is_str_prefix(w: &str) -> bool {
    matches!(
        w.to_ascii_lowercase().as_str(),
        "" | "r" | "u" | "b" | "br" | "rb" | "f" | "fr" | "rf"
    )
}

/// A Python numeric literal (no sign). Complex numbers have no JSON form.
fn py_number(t: &str) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    let valid_underscores = |d: &str| !d.starts_with('_') && !d.ends_with('_') && !d.contains("__");
    let lower = t.to_ascii_lowercase();
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(d) = lower.strip_prefix(prefix) {
            let d = d.strip_prefix('_').unwrap_or(d);
            if d.is_empty() || !valid_underscores(d) {
                return None;
            }
            return i64::from_str_radix(&d.replace('_', ""), radix)
                .ok()
                .map(J::from);
        }
    }
    if lower.ends_with('j') {
        return None;
    }
    if lower.bytes().all(|c| c.is_ascii_digit() || c == b'_') {
        if !valid_underscores(&lower) {
            return None;
        }
        let d = lower.replace('_', "");
        // Python 3 refuses leading zeros, except for zero itself.
        if d.len() > 1 && d.starts_with('0') && d.bytes().any(|c| c != b'0') {
            return None;
        }
        return d.parse::<i64>().ok().map(J::from);
    }
    // Float: digits [. digits] [e[+-]digits], with at least one digit around the dot.
    let (mant, exp) = match lower.find('e') {
        Some(p) => (&lower[..p], Some(&lower[p + 1..])),
        None => (&lower[..], None),
    };
    let (ip, fp) = match mant.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mant, None),
    };
    let digits_ok =
        |d: &str| d.bytes().all(|c| c.is_ascii_digit() || c == b'_') && valid_underscores(d);
    if (ip.is_empty() && fp.is_none_or(str::is_empty))
        || !(ip.is_empty() || digits_ok(ip))
        || !fp.is_none_or(|f| f.is_empty() || digits_ok(f))
        || (fp.is_none() && exp.is_none())
    {
        return None;
    }
    if let Some(e) = exp {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e.is_empty() || !digits_ok(e) {
            return None;
        }
    }
    let f: f64 = lower.replace('_', "").parse().ok()?;
    serde_json::Number::from_f64(f).map(J::Number)
}

/// How `json.dumps` writes a dict key.
fn py_json_key(k: &serde_json::Value) -> Option<String> {
    use serde_json::Value as J;
    Some(match k {
        J::String(s) => s.clone(),
        J::Number(n) => n.to_string(),
        J::Bool(b) => b.to_string(),
        J::Null => "null".to_string(),
        J::Array(_) | J::Object(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ini_values_follow_python_literal_eval() {
        assert_eq!(ini_value("5"), json!(5));
        assert_eq!(ini_value("yes"), json!("yes"));
        assert_eq!(ini_value("True"), json!(true));
        assert_eq!(ini_value("None"), json!(null));
        assert_eq!(ini_value("0644"), json!("0644"));
        assert_eq!(ini_value("00"), json!(0));
        assert_eq!(ini_value("1e3"), json!(1000.0));
        assert_eq!(ini_value(".5"), json!(0.5));
        assert_eq!(ini_value("5."), json!(5.0));
        assert_eq!(ini_value("1_000"), json!(1000));
        assert_eq!(ini_value("-0x1F"), json!(-31));
        assert_eq!(ini_value("--5"), json!("--5"));
        assert_eq!(ini_value("5 # note"), json!(5));
        assert_eq!(ini_value("hello # note"), json!("hello # note"));
        assert_eq!(ini_value("\"quoted\""), json!("quoted"));
        assert_eq!(ini_value("'a' \"b\""), json!("ab"));
        assert_eq!(ini_value("r'\\n'"), json!("\\n"));
        assert_eq!(ini_value("'\\q\\n'"), json!("\\q\n"));
        assert_eq!(
            ini_value("[1, -2.5, None, (1,)]"),
            json!([1, -2.5, null, [1]])
        );
        assert_eq!(ini_value("{'k': [1], 2: 'x'}"), json!({"k": [1], "2": "x"}));
        assert_eq!(ini_value("{1, 2}"), json!("{1, 2}"));
        assert_eq!(ini_value("1j"), json!("1j"));
        assert_eq!(ini_value(""), json!(""));
        assert_eq!(ini_value("spaced value"), json!("spaced value"));
    }

    #[test]
    fn deeply_nested_ini_values_stay_strings() {
        let ok = format!("{}1{}", "[".repeat(199), "]".repeat(199));
        assert!(ini_value(&ok).is_array());
        let deep = format!("{}1{}", "[".repeat(201), "]".repeat(201));
        assert_eq!(ini_value(&deep), serde_json::Value::String(deep.clone()));
        let huge = "[".repeat(1_000_000);
        assert_eq!(ini_value(&huge), serde_json::Value::String(huge.clone()));
    }

    #[test]
    fn shlex_splits_like_python_posix_mode_with_comments() {
        assert_eq!(
            shlex_split(r#"h a=b#c d="x\"y" e='q\r'"#).unwrap(),
            vec!["h", "a=b"]
        );
        assert_eq!(
            shlex_split(r#"h d="x\"y\z" e='q\r' f=a\ b"#).unwrap(),
            vec!["h", "d=x\"y\\z", "e=q\\r", "f=a b"]
        );
        assert!(shlex_split("h a='x").is_err());
    }

    #[test]
    fn ini_lines_are_classified_and_every_bad_line_reported() {
        let mut d = Diagnostics::new();
        let f = parse_ini(
            "h1 x=1\n[web:vars]\nnokey\n[web:bogus]\n[bad name]\n[web]\nh2 novalue\n",
            "i.ini",
            &mut d,
        );
        assert_eq!(d.len(), 4, "{d}");
        assert!(matches!(&f.lines[0], IniLine::Host { pattern, .. } if pattern == "h1"));
        let lines: Vec<u32> =
            d.0.iter()
                .map(|x| x.loc.as_ref().map_or(0, |l| l.line))
                .collect();
        assert_eq!(lines, vec![3, 4, 5, 7]);
    }

    #[test]
    fn section_headers_accept_trailing_comments_only_with_hash() {
        assert_eq!(match_section("[web]  # x"), Some(("web", None)));
        assert_eq!(match_section("[web:vars]"), Some(("web", Some("vars"))));
        assert_eq!(match_section("[web] ; x"), None);
        assert_eq!(match_section("[we b]"), None);
    }
}
