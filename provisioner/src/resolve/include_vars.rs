//! `include_vars`, as Ansible 2.14's action plugin does it, on the control node: a file
//! (`include_vars: f.yml`, `file:`) or a directory (`dir:` with `depth`, `files_matching`,
//! `ignore_files`, `extensions`, `ignore_unknown_extensions`), optionally under one `name`.
//!
//! Relative names are searched as Ansible's `_find_needle('vars', ...)`: the role's `vars/`,
//! the role, the playbook's `vars/`, the playbook's directory. Pure apart from reading files;
//! `validate` uses [`check`] on literal arguments, the runner [`load`] on templated ones.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The parameters `include_vars` takes.
pub const PARAMS: &[&str] = &[
    "_raw_params",
    "file",
    "dir",
    "name",
    "depth",
    "files_matching",
    "ignore_files",
    "extensions",
    "ignore_unknown_extensions",
    "hash_behaviour",
];

const DEFAULT_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// What an `include_vars` loaded: the variables, and the files they came from in order.
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    pub vars: Map<String, Value>,
    pub files: Vec<String>,
}

/// The directories a relative name is searched in, in order.
pub fn search_dirs(role_dir: Option<&Path>, playbook_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(r) = role_dir {
        dirs.push(r.join("vars"));
        dirs.push(r.to_path_buf());
    }
    dirs.push(playbook_dir.join("vars"));
    dirs.push(playbook_dir.to_path_buf());
    dirs
}

/// The first existing `name` in the search path (absolute names as given).
pub fn find(name: &str, role_dir: Option<&Path>, playbook_dir: &Path) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    search_dirs(role_dir, playbook_dir)
        .into_iter()
        .map(|d| d.join(name))
        .find(|c| c.exists())
}

fn not_found(what: &str, name: &str, role_dir: Option<&Path>, playbook_dir: &Path) -> String {
    let searched: Vec<String> = search_dirs(role_dir, playbook_dir)
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    format!(
        "include_vars: could not find {what} `{name}` (searched {})",
        searched.join(", ")
    )
}

fn str_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// The file or directory an `include_vars` names: `("file", name)` or `("dir", name)`.
pub fn source(args: &Map<String, Value>) -> Result<(&'static str, String), String> {
    let file = str_arg(args, "file").or_else(|| str_arg(args, "_raw_params"));
    match (file, str_arg(args, "dir")) {
        (Some(_), Some(_)) => Err("include_vars: `file` and `dir` are mutually exclusive".into()),
        (Some(f), None) => Ok(("file", f.trim().to_string())),
        (None, Some(d)) => Ok(("dir", d.trim().to_string())),
        (None, None) => Err("include_vars needs a file name, `file:` or `dir:`".into()),
    }
}

/// The checks `validate` makes on untemplated arguments: known parameters, and a literal file
/// or directory that exists in the search path. Templated names are left to the run.
pub fn check(
    args: &Map<String, Value>,
    role_dir: Option<&Path>,
    playbook_dir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    for k in args.keys() {
        if !PARAMS.contains(&k.as_str()) {
            let mut names: Vec<&str> = PARAMS[1..].to_vec();
            names.sort_unstable();
            problems.push(format!(
                "`include_vars` has no parameter `{k}` (supported: {})",
                names.join(", ")
            ));
        }
    }
    if let Some(Value::String(h)) = args.get("hash_behaviour") {
        if h != "replace" && !crate::template::is_possibly_template(h) {
            problems.push(format!(
                "include_vars: `hash_behaviour: {h}` is outside the supported subset (replace is)"
            ));
        }
    }
    match source(args) {
        Err(e) => problems.push(e),
        Ok((what, name)) if !crate::template::is_possibly_template(&name) => {
            match find(&name, role_dir, playbook_dir) {
                None => problems.push(not_found(what, &name, role_dir, playbook_dir)),
                Some(p) if what == "dir" && !p.is_dir() => {
                    problems.push(format!("include_vars: `{name}` is not a directory"))
                }
                Some(p) if what == "file" => {
                    if let Err(e) = read_file(&p) {
                        problems.push(e);
                    }
                }
                Some(_) => {}
            }
        }
        Ok(_) => {}
    }
    problems
}

/// Read one vars file: a mapping (an empty file is none).
pub fn read_file(path: &Path) -> Result<Map<String, Value>, String> {
    let docs = crate::yaml::load_file(path).map_err(|d| format!("include_vars: {d}"))?;
    match docs.first().map(crate::yaml::Node::to_json) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(format!(
            "include_vars: {} must be stored as a dictionary/hash",
            path.display()
        )),
    }
}

/// Load what templated `args` name, as Ansible's `include_vars` does.
pub fn load(
    args: &Map<String, Value>,
    role_dir: Option<&Path>,
    playbook_dir: &Path,
) -> Result<Loaded, String> {
    let (what, name) = source(args)?;
    let found = find(&name, role_dir, playbook_dir)
        .ok_or_else(|| not_found(what, &name, role_dir, playbook_dir))?;
    let mut out = Loaded::default();
    if what == "file" {
        out.vars = read_file(&found)?;
        out.files.push(found.display().to_string());
    } else {
        load_dir(args, &found, &mut out)?;
    }
    if let Some(n) = str_arg(args, "name") {
        let all = std::mem::take(&mut out.vars);
        out.vars.insert(n.to_string(), Value::Object(all));
    }
    Ok(out)
}

fn list_arg(args: &Map<String, Value>, key: &str) -> Vec<String> {
    match args.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect(),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        _ => Vec::new(),
    }
}

/// `dir:`: Ansible walks the tree, sorts the directories by path and reads the first `depth`
/// of them (all for 0), each one's files in sorted order.
fn load_dir(args: &Map<String, Value>, dir: &Path, out: &mut Loaded) -> Result<(), String> {
    let depth = match args.get("depth") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| format!("include_vars: `depth` must be an integer, got {v}"))?,
    } as usize;
    let matcher = match str_arg(args, "files_matching") {
        Some(p) => Some(
            regex::Regex::new(p)
                .map_err(|e| format!("include_vars: bad `files_matching` {p}: {e}"))?,
        ),
        None => None,
    };
    let ignore: Vec<regex::Regex> = list_arg(args, "ignore_files")
        .iter()
        .map(|p| {
            regex::Regex::new(&format!("{p}$"))
                .map_err(|e| format!("include_vars: bad `ignore_files` {p}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut exts = list_arg(args, "extensions");
    if exts.is_empty() {
        exts = DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect();
    }
    let ignore_unknown = args
        .get("ignore_unknown_extensions")
        .and_then(cluster_core::boolean)
        .unwrap_or(false);
    let mut dirs = Vec::new();
    walk(dir, &mut dirs);
    dirs.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    for (i, (root, mut files)) in dirs.into_iter().enumerate() {
        if depth != 0 && i >= depth {
            break;
        }
        files.sort();
        for f in files {
            if matcher.as_ref().is_some_and(|m| !m.is_match(&f)) {
                continue;
            }
            if ignore.iter().any(|r| r.is_match(&f)) {
                continue;
            }
            let valid_ext = Path::new(&f)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| x.trim_start_matches('.') == e));
            if !valid_ext {
                if ignore_unknown {
                    continue;
                }
                return Err(format!(
                    "include_vars: {} does not have a valid extension: {}",
                    root.join(&f).display(),
                    exts.join(", ")
                ));
            }
            let path = root.join(&f);
            out.vars.extend(read_file(&path)?);
            out.files.push(path.display().to_string());
        }
    }
    Ok(())
}

/// Every directory under `dir` (itself included) with its file names, as `os.walk` lists them.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<String>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            subdirs.push(p);
        } else {
            files.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.push((dir.to_path_buf(), files));
    for s in subdirs {
        walk(&s, out);
    }
}

/// Top-level names an `include_vars` may define, for the undefined-variable check (which must
/// not report a defined variable): the `name`, else the keys of the literal file, else of every
/// vars file it could load (the search path's `vars/` directories, or the `dir`).
pub fn possible_names(
    args: &Map<String, Value>,
    role_dir: Option<&Path>,
    playbook_dir: &Path,
) -> Vec<String> {
    if let Some(n) = str_arg(args, "name") {
        return vec![n.to_string()];
    }
    let mut files: Vec<PathBuf> = Vec::new();
    match source(args) {
        Ok(("file", name)) if !crate::template::is_possibly_template(&name) => {
            files.extend(find(&name, role_dir, playbook_dir));
        }
        Ok(("dir", name)) if !crate::template::is_possibly_template(&name) => {
            if let Some(d) = find(&name, role_dir, playbook_dir) {
                let mut dirs = Vec::new();
                walk(&d, &mut dirs);
                for (root, fs) in dirs {
                    files.extend(fs.iter().map(|f| root.join(f)));
                }
            }
        }
        _ => {
            let mut dirs = Vec::new();
            for d in search_dirs(role_dir, playbook_dir)
                .into_iter()
                .filter(|d| d.ends_with("vars"))
            {
                walk(&d, &mut dirs);
            }
            for (root, fs) in dirs {
                files.extend(fs.iter().map(|f| root.join(f)));
            }
        }
    }
    files
        .iter()
        .filter_map(|f| read_file(f).ok())
        .flat_map(|m| m.into_iter().map(|(k, _)| k))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w("roles/r/vars/Debian.yml", "pkg: apt-thing\nsame: role\n");
        w("roles/r/Only.yml", "only: role-root\n");
        w("vars/Debian.yml", "pkg: playbook\n");
        w("vars/Play.yml", "play: yes\n");
        w("top.yml", "top: 1\n");
        w("roles/r/vars/conf.d/10-a.yml", "a: 1\nx: a\n");
        w("roles/r/vars/conf.d/20-b.json", "{\"b\": 2, \"x\": \"b\"}");
        w("roles/r/vars/conf.d/30-c.txt", "c: 3\n");
        w("roles/r/vars/conf.d/sub/40-d.yml", "d: 4\n");
        w("roles/r/vars/bad.yml", "- a list\n");
        d
    }

    #[test]
    fn files_are_searched_in_ansibles_order() {
        let d = tree();
        let role = d.path().join("roles/r");
        let pb = d.path();
        let l = load(&args(json!({"_raw_params": "Debian.yml"})), Some(&role), pb).unwrap();
        assert_eq!(l.vars, args(json!({"pkg": "apt-thing", "same": "role"})));
        let l = load(&args(json!({"file": "Only.yml"})), Some(&role), pb).unwrap();
        assert_eq!(l.vars, args(json!({"only": "role-root"})));
        let l = load(&args(json!({"file": "Debian.yml"})), None, pb).unwrap();
        assert_eq!(l.vars, args(json!({"pkg": "playbook"})));
        let l = load(&args(json!({"file": "Play.yml"})), Some(&role), pb).unwrap();
        assert_eq!(l.vars, args(json!({"play": true})));
        let l = load(
            &args(json!({"file": "top.yml", "name": "ns"})),
            Some(&role),
            pb,
        )
        .unwrap();
        assert_eq!(l.vars, args(json!({"ns": {"top": 1}})));
        let e = load(&args(json!({"file": "nope.yml"})), Some(&role), pb).unwrap_err();
        assert!(e.contains("could not find file `nope.yml`"), "{e}");
        let e = load(&args(json!({"file": "bad.yml"})), Some(&role), pb).unwrap_err();
        assert!(e.contains("dictionary"), "{e}");
    }

    #[test]
    fn directories_follow_ansibles_walk_and_filters() {
        let d = tree();
        let role = d.path().join("roles/r");
        let pb = d.path();
        // An unknown extension fails unless ignored.
        let e = load(&args(json!({"dir": "conf.d"})), Some(&role), pb).unwrap_err();
        assert!(e.contains("valid extension"), "{e}");
        let l = load(
            &args(json!({"dir": "conf.d", "ignore_unknown_extensions": true})),
            Some(&role),
            pb,
        )
        .unwrap();
        assert_eq!(l.vars, args(json!({"a": 1, "x": "b", "b": 2, "d": 4})));
        let l = load(
            &args(json!({"dir": "conf.d", "depth": 1, "ignore_files": ["30-c.txt"]})),
            Some(&role),
            pb,
        )
        .unwrap();
        assert_eq!(l.vars, args(json!({"a": 1, "x": "b", "b": 2})));
        let l = load(
            &args(json!({"dir": "conf.d", "files_matching": "^[12]", "name": "c"})),
            Some(&role),
            pb,
        )
        .unwrap();
        assert_eq!(l.vars, args(json!({"c": {"a": 1, "x": "b", "b": 2}})));
    }

    #[test]
    fn validation_checks_literal_names_only() {
        let d = tree();
        let role = d.path().join("roles/r");
        let pb = d.path();
        assert!(check(&args(json!({"_raw_params": "Debian.yml"})), Some(&role), pb).is_empty());
        assert!(check(
            &args(json!({"file": "{{ ansible_os_family }}.yml"})),
            Some(&role),
            pb
        )
        .is_empty());
        let p = check(
            &args(json!({"file": "Nope.yml", "bogus": 1})),
            Some(&role),
            pb,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(check(&args(json!({})), None, pb)[0].contains("needs a file"));
        let mut names = possible_names(&args(json!({"file": "{{ x }}.yml"})), Some(&role), pb);
        names.sort();
        names.dedup();
        assert!(names.contains(&"pkg".to_string()) && names.contains(&"play".to_string()));
    }
}
