//! The lookups roles use besides `password`/`provisioner_tls` (see `filters.rs`), on the
//! control node as Ansible runs them: `template`, `file`, `env` (in `filters.rs`), `pipe`,
//! `lines`, `first_found`, `fileglob`, `vars`.
//!
//! Relative paths are searched as Ansible's `find_file_in_search_path` does and as the
//! engine's `template`/`copy` do: `<role>/<sub>/`, `<role>/`, `<playbook dir>/<sub>/`,
//! `<playbook dir>/`, with `<sub>` `files` (`templates` for the `template` lookup). The role
//! and playbook directories come from the task's `role_path` and `playbook_dir`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, ValueKind};
use minijinja::{Error, ErrorKind, State, Value};

use super::pyfmt;

/// Every lookup the engine knows (short names; `ansible.builtin.` is accepted too).
pub const KNOWN: &[&str] = &[
    "env",
    "file",
    "template",
    "pipe",
    "lines",
    "first_found",
    "fileglob",
    "vars",
    "list",
    "dict",
    "together",
    "password",
    "provisioner_tls",
];

/// Whether `name` is a lookup the engine has.
pub fn is_known(name: &str) -> bool {
    KNOWN.contains(&name.strip_prefix("ansible.builtin.").unwrap_or(name))
}

/// The name under which the template context (the task's variables) answers with itself,
/// so a lookup can render a template file in the caller's context.
pub(crate) const ROOT_KEY: &str = "__provisioner_task_vars__";

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn text(v: &Value) -> String {
    pyfmt::to_text(v)
}

fn var_path(state: &State, name: &str) -> Option<PathBuf> {
    state
        .lookup(name)
        .filter(|v| v.kind() == ValueKind::String)
        .and_then(|v| v.as_str().map(PathBuf::from))
}

/// The directories searched for `sub` (`files`, `templates`), in order.
pub(crate) fn search_dirs(state: &State, base: &Path, sub: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(role) = var_path(state, "role_path") {
        dirs.push(role.join(sub));
        dirs.push(role);
    }
    let pb = var_path(state, "playbook_dir").unwrap_or_else(|| base.to_path_buf());
    dirs.push(pb.join(sub));
    dirs.push(pb);
    dirs
}

/// A file for a lookup: absolute as given, else the first match in the search path.
pub(crate) fn find(state: &State, base: &Path, sub: &str, term: &str) -> Option<PathBuf> {
    let p = Path::new(term);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    search_dirs(state, base, sub)
        .into_iter()
        .map(|d| d.join(term))
        .find(|c| c.is_file())
}

/// Run one of this module's lookups; `None` when `name` is not one of them.
pub(crate) fn run(
    state: &State,
    base: &Path,
    name: &str,
    terms: &[Value],
    kw: &Kwargs,
) -> Option<Result<Vec<Value>, Error>> {
    let short = name.strip_prefix("ansible.builtin.").unwrap_or(name);
    type Lookup = fn(&State, &Path, &[Value], &Kwargs) -> Result<Vec<Value>, Error>;
    let run: Lookup = match short {
        "template" => template,
        "pipe" => |_, base, terms, _| command(base, terms, "pipe", false),
        "lines" => |_, base, terms, _| command(base, terms, "lines", true),
        "first_found" => first_found,
        "fileglob" => fileglob,
        "vars" => vars,
        "list" => |_, _, terms, _| Ok(terms.to_vec()),
        "dict" => dict,
        "together" => together,
        _ => return None,
    };
    Some(run(state, base, terms, kw))
}

/// `lookup('template', 'x.j2', template_vars={...}, convert_data=True)`: the file rendered
/// with the task's variables (plus the template module's `template_*` variables).
fn template(state: &State, base: &Path, terms: &[Value], kw: &Kwargs) -> Result<Vec<Value>, Error> {
    let root = state
        .lookup(ROOT_KEY)
        .ok_or_else(|| err("lookup('template') needs the task's variables"))?;
    let extra: Option<Value> = kw.get("template_vars")?;
    let convert: Option<bool> = kw.get("convert_data")?;
    let _: Option<bool> = kw.get("jinja2_native")?;
    let mut out = Vec::new();
    for t in terms {
        let term = text(t);
        let path = find(state, base, "templates", &term).ok_or_else(|| {
            err(format!(
                "the template file {term} could not be found for the lookup (searched {})",
                show(&search_dirs(state, base, "templates"))
            ))
        })?;
        let src = std::fs::read_to_string(&path)
            .map_err(|e| err(format!("could not read {}: {e}", path.display())))?;
        super::limits::check_source(&src, false)
            .map_err(|m| err(format!("{}: template syntax error: {m}", path.display())))?;
        // A template that looks itself up would recurse until the stack ends.
        let _level = super::limits::enter(None).map_err(|e| err(e.message))?;
        let mut vars: BTreeMap<String, Value> = BTreeMap::new();
        let opts = super::FileOptions {
            src_arg: Some(term.clone()),
            ..Default::default()
        };
        for (k, v) in super::template_file_vars(&path, &opts) {
            vars.insert(k, super::json_to_value(&v));
        }
        if let Some(extra) = &extra {
            for k in extra.try_iter()? {
                vars.insert(text(&k), extra.get_item(&k)?);
            }
        }
        let mut env = state.env().clone();
        let mut dirs = search_dirs(state, base, "templates");
        dirs.extend(path.parent().map(Path::to_path_buf));
        env.set_loader(super::search_loader(dirs));
        let ctx = Value::from_object(Overlay {
            extra: vars,
            base: root.clone(),
        });
        let name = path.display().to_string();
        let tmpl = env.template_from_named_str(&name, &src)?;
        let mut rendered = match super::limits::render(&tmpl, ctx) {
            Ok(out) => out,
            Err(super::limits::RenderError::Output(n)) => {
                return Err(err(super::limits::output_error(n).message))
            }
            Err(super::limits::RenderError::Engine(e)) => return Err(e),
        };
        super::restore_trailing_newlines(&src, &mut rendered);
        out.push(if convert.unwrap_or(true) {
            pyfmt::convert_rendered(rendered)
        } else {
            Value::from(rendered)
        });
    }
    Ok(out)
}

fn show(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Variables over the task's variables.
#[derive(Debug)]
struct Overlay {
    extra: BTreeMap<String, Value>,
    base: Value,
}

impl Object for Overlay {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(v) = key.as_str().and_then(|k| self.extra.get(k)) {
            return Some(v.clone());
        }
        self.base.get_item(key).ok().filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = self.extra.keys().map(|k| Value::from(k.as_str())).collect();
        if let Ok(it) = self.base.try_iter() {
            keys.extend(it.filter(|k| k.as_str().is_none_or(|k| !self.extra.contains_key(k))));
        }
        Enumerator::Values(keys)
    }
}

/// `pipe` (stdout, trailing whitespace removed) and `lines` (stdout's lines): `sh -c TERM`
/// on the control node, in the playbook's directory. A non-zero exit fails, as in Ansible.
fn command(base: &Path, terms: &[Value], name: &str, lines: bool) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for t in terms {
        let cmd = text(t);
        let o = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(base)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| err(format!("lookup_plugin.{name}({cmd}): {e}")))?;
        if !o.status.success() {
            return Err(err(format!(
                "lookup_plugin.{name}({cmd}) returned {}",
                o.status.code().unwrap_or(-1)
            )));
        }
        let stdout = String::from_utf8_lossy(&o.stdout);
        if lines {
            out.extend(stdout.lines().map(Value::from));
        } else {
            out.push(Value::from(stdout.trim_end()));
        }
    }
    Ok(out)
}

/// `vars`: variables by name, templated; `default=` for missing ones.
fn vars(state: &State, _: &Path, terms: &[Value], kw: &Kwargs) -> Result<Vec<Value>, Error> {
    let default: Option<Value> = kw.get("default")?;
    terms
        .iter()
        .map(|t| {
            let name = text(t);
            match state.lookup(&name).filter(|v| !v.is_undefined()) {
                Some(v) => Ok(v),
                None => default
                    .clone()
                    .ok_or_else(|| err(format!("No variable found with this name: {name}"))),
            }
        })
        .collect()
}

/// `fileglob`: files (not directories) matching the pattern, in the first search directory
/// that exists (`files/` of the role, ...), sorted.
fn fileglob(state: &State, base: &Path, terms: &[Value], _: &Kwargs) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for t in terms {
        let term = text(t);
        let (dir, pattern) = match term.rfind('/') {
            Some(i) => (&term[..i], &term[i + 1..]),
            None => ("", term.as_str()),
        };
        let dir_path = Path::new(dir);
        let found = if dir_path.is_absolute() {
            Some(dir_path.to_path_buf()).filter(|d| d.is_dir())
        } else {
            search_dirs(state, base, "files")
                .into_iter()
                .map(|d| d.join(dir))
                .find(|d| d.is_dir())
        };
        let Some(found) = found else { continue };
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| err(format!("fileglob: bad pattern {pattern}: {e}")))?
            .compile_matcher();
        let mut hits: Vec<String> = std::fs::read_dir(&found)
            .map_err(|e| err(format!("fileglob: cannot read {}: {e}", found.display())))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file() && glob.is_match(e.file_name()))
            .map(|e| e.path().display().to_string())
            .collect();
        hits.sort();
        out.extend(hits.into_iter().map(Value::from));
    }
    Ok(out)
}

/// `dict` (`with_dict`): each mapping's items as `{key, value}`, in order.
fn dict(_: &State, _: &Path, terms: &[Value], _: &Kwargs) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for t in terms {
        if t.kind() != ValueKind::Map {
            return Err(err("with_dict expects a dict"));
        }
        let iter = t.try_iter().map_err(|e| err(format!("with_dict: {e}")))?;
        for k in iter {
            let v = t.get_item(&k)?;
            out.push(Value::from(BTreeMap::from([
                ("key".to_string(), k),
                ("value".to_string(), v),
            ])));
        }
    }
    Ok(out)
}

fn flatten_into(v: &Value, out: &mut Vec<Value>) {
    if v.kind() == ValueKind::Seq {
        for x in v.try_iter().into_iter().flatten() {
            flatten_into(&x, out);
        }
    } else {
        out.push(v.clone());
    }
}

/// `together` (`with_together`): the lists zipped, shorter ones padded with none, each
/// tuple flattened.
fn together(_: &State, _: &Path, terms: &[Value], _: &Kwargs) -> Result<Vec<Value>, Error> {
    if terms.is_empty() {
        return Err(err(
            "with_together requires at least one element in each list",
        ));
    }
    let lists: Vec<Vec<Value>> = terms
        .iter()
        .map(|t| match t.kind() {
            ValueKind::Seq => t.try_iter().map(|i| i.collect()).unwrap_or_default(),
            _ => vec![t.clone()],
        })
        .collect();
    let n = lists.iter().map(Vec::len).max().unwrap_or(0);
    Ok((0..n)
        .map(|i| {
            let mut row = Vec::new();
            for l in &lists {
                flatten_into(l.get(i).unwrap_or(&Value::from(())), &mut row);
            }
            Value::from(row)
        })
        .collect())
}

fn strings(v: &Value, split: &[char]) -> Vec<String> {
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => v
            .try_iter()
            .map(|it| it.flat_map(|x| strings(&x, split)).collect())
            .unwrap_or_default(),
        ValueKind::Undefined | ValueKind::None => Vec::new(),
        _ => text(v)
            .split(split)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// `first_found`: the first file that exists, from terms that are file names, lists of
/// them, or `{files: [...], paths: [...], skip: bool}`; `files=`, `paths=`, `skip=` as
/// keywords. Relative names are searched in `files/` (then `templates/`, `vars/`).
fn first_found(
    state: &State,
    base: &Path,
    terms: &[Value],
    kw: &Kwargs,
) -> Result<Vec<Value>, Error> {
    let kw_files: Option<Value> = kw.get("files")?;
    let kw_paths: Option<Value> = kw.get("paths")?;
    let kw_skip: Option<bool> = kw.get("skip")?;
    let mut skip = kw_skip.unwrap_or(false);
    let mut candidates = Vec::new();
    let mut add = |files: Vec<String>, paths: Vec<String>| {
        if paths.is_empty() {
            candidates.extend(files);
        } else {
            for p in &paths {
                for f in &files {
                    candidates.push(Path::new(p).join(f).display().to_string());
                }
            }
        }
    };
    let kw_paths = kw_paths
        .map(|p| strings(&p, &[',', ':', ';']))
        .unwrap_or_default();
    let mut all_terms: Vec<Value> = terms.to_vec();
    if let Some(f) = kw_files {
        all_terms.push(f);
    }
    for t in &all_terms {
        if t.kind() == ValueKind::Map {
            let files = t.get_attr("files").map(|v| strings(&v, &[',', ';']))?;
            let paths = t.get_attr("paths").map(|v| strings(&v, &[',', ':', ';']))?;
            if let Ok(s) = t.get_attr("skip") {
                if !s.is_undefined() {
                    skip = s.is_true();
                }
            }
            add(files, paths);
        } else {
            add(strings(t, &[',', ';']), kw_paths.clone());
        }
    }
    // A `with_first_found` loop searches the subdirectory Ansible picks for the task's
    // module; a lookup in a template tries `files/`, `templates/`, `vars/`.
    let subdir = state
        .lookup(super::LOOKUP_SUBDIR)
        .and_then(|v| v.as_str().map(str::to_string));
    let subs: Vec<&str> = match &subdir {
        Some(s) => vec![s.as_str()],
        None => vec!["files", "templates", "vars"],
    };
    for c in &candidates {
        for &sub in &subs {
            if let Some(p) = find(state, base, sub, c) {
                return Ok(vec![Value::from(p.display().to_string())]);
            }
        }
    }
    if skip {
        Ok(Vec::new())
    } else {
        Err(err(format!(
            "No file was found when using first_found (looked for {})",
            candidates.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::template::{Templar, Vars};

    fn setup() -> (tempfile::TempDir, Vars) {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("roles/r/templates/block.j2", "port={{ port }}\n{% for h in hosts %}server {{ h }}\n{% endfor %}extra={{ extra | default('none') }}\n");
        w("templates/pb.j2", "from the playbook {{ port }}");
        w("roles/r/files/a.conf", "A\n");
        w("roles/r/files/b.conf", "B\n");
        w("roles/r/files/skip.txt", "no");
        w("files/Debian.yml", "x: 1\n");
        let vars: Vars = serde_json::from_value(json!({
            "port": 2181,
            "hosts": ["a", "b"],
            "role_path": d.path().join("roles/r").display().to_string(),
            "playbook_dir": d.path().display().to_string(),
            "os": "Debian",
            "indirect": "{{ port + 1 }}",
        }))
        .unwrap();
        (d, vars)
    }

    fn render(d: &tempfile::TempDir, vars: &Vars, src: &str) -> Result<serde_json::Value, String> {
        Templar::new(d.path())
            .render_str(src, vars)
            .map_err(|e| e.message)
    }

    #[test]
    fn template_renders_in_the_task_context_from_the_role_then_the_playbook() {
        let (d, vars) = setup();
        assert_eq!(
            render(&d, &vars, "{{ lookup('template', 'block.j2') }}").unwrap(),
            json!("port=2181\nserver a\nserver b\nextra=none\n")
        );
        assert_eq!(
            render(
                &d,
                &vars,
                "{{ lookup('ansible.builtin.template', 'block.j2', template_vars={'extra': 7}) }}"
            )
            .unwrap(),
            json!("port=2181\nserver a\nserver b\nextra=7\n")
        );
        assert_eq!(
            render(&d, &vars, "{{ lookup('template', 'pb.j2') }}").unwrap(),
            json!("from the playbook 2181")
        );
        let e = render(&d, &vars, "{{ lookup('template', 'missing.j2') }}").unwrap_err();
        assert!(e.contains("missing.j2 could not be found"), "{e}");
    }

    #[test]
    fn file_fileglob_first_found_and_vars() {
        let (d, vars) = setup();
        assert_eq!(
            render(&d, &vars, "{{ lookup('file', 'a.conf') }}").unwrap(),
            json!("A")
        );
        let files = d.path().join("roles/r/files");
        assert_eq!(
            render(&d, &vars, "{{ query('fileglob', '*.conf') }}").unwrap(),
            json!([
                files.join("a.conf").display().to_string(),
                files.join("b.conf").display().to_string()
            ])
        );
        assert_eq!(
            render(
                &d,
                &vars,
                "{{ lookup('first_found', ['{{ os }}-x.yml', os ~ '.yml', 'default.yml']) }}"
            )
            .unwrap(),
            json!(d.path().join("files/Debian.yml").display().to_string())
        );
        assert_eq!(
            render(
                &d,
                &vars,
                "{{ lookup('first_found', files=['nope.yml'], paths=['/nowhere'], skip=True) }}"
            )
            .unwrap(),
            json!("")
        );
        assert!(render(&d, &vars, "{{ lookup('first_found', 'nope.yml') }}")
            .unwrap_err()
            .contains("No file was found"));
        assert_eq!(
            render(&d, &vars, "{{ lookup('vars', 'indirect') }}").unwrap(),
            json!("2182")
        );
        assert_eq!(
            render(&d, &vars, "{{ lookup('vars', 'nope', default='d') }}").unwrap(),
            json!("d")
        );
        assert!(render(&d, &vars, "{{ lookup('vars', 'nope') }}")
            .unwrap_err()
            .contains("No variable found with this name: nope"));
    }

    #[test]
    fn pipe_and_lines_run_on_the_control_node_in_the_playbook_dir() {
        let (d, vars) = setup();
        assert_eq!(
            render(
                &d,
                &vars,
                "{{ lookup('pipe', 'cat files/Debian.yml; echo') }}"
            )
            .unwrap(),
            json!("x: 1")
        );
        assert_eq!(
            render(&d, &vars, "{{ query('lines', 'printf \"a\\nb\\n\"') }}").unwrap(),
            json!(["a", "b"])
        );
        assert!(render(&d, &vars, "{{ lookup('pipe', 'exit 3') }}")
            .unwrap_err()
            .contains("returned 3"));
    }
}
