//! Every expression of a playbook checked before any host is touched: each filter, test and
//! lookup it names must exist (template/names.rs), and every template file it renders (the
//! `template` module's literal `src`, `lookup('template', 'literal')`) must exist, parse and
//! name only what exists. What would fail mid-run for these reasons fails `validate`.
//!
//! Expression kinds walked: task and handler arguments, `name`, `when`, `loop`/`with_items`,
//! `loop_control.label`, task `vars`, `changed_when`, `failed_when`, `until`, `retries`,
//! `delay`, `ignore_errors`, `delegate_to`, `notify`; play `hosts` and `vars`; role
//! `defaults/` and `vars/`; template files, recursively through `lookup('template')`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diag::{Diagnostics, Loc};
use crate::model::play::{Play, Playbook, Task, TaskKind};
use crate::template::{self, names};

/// Check `pb` (whose playbook lives in `playbook_dir`); every problem is returned.
pub fn check(pb: &Playbook, playbook_dir: &Path) -> Diagnostics {
    let mut c = Checker {
        playbook_dir,
        diags: Diagnostics::new(),
        files_seen: BTreeSet::new(),
    };
    for play in &pb.plays {
        c.play(play);
    }
    c.diags
}

/// The directory of a role of the play, from any of its tasks.
fn role_dir(play: &Play, role: &str) -> Option<PathBuf> {
    fn find<'t>(mut tasks: impl Iterator<Item = &'t Task>, role: &str) -> Option<PathBuf> {
        tasks.find_map(|t| match &t.role {
            Some(r) if r.name == role => Some(PathBuf::from(&r.dir)),
            _ => find(t.children(), role),
        })
    }
    find(play.tasks.iter().chain(&play.handlers), role)
}

struct Checker<'a> {
    playbook_dir: &'a Path,
    diags: Diagnostics,
    files_seen: BTreeSet<PathBuf>,
}

fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) if template::is_possibly_template(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(m) => m.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

impl Checker<'_> {
    fn play(&mut self, play: &Play) {
        self.source(&play.hosts, false, &play.loc, None, "hosts");
        self.values(&Value::Object(play.vars.clone()), &play.loc, None, "vars");
        let defaults = play.role_defaults.iter().map(|r| (r, "defaults"));
        for ((role, vars), sub) in defaults.chain(play.role_vars.iter().map(|r| (r, "vars"))) {
            // Role variables have no line of their own: name the role's file.
            let loc = role_dir(play, role).map_or_else(
                || play.loc.clone(),
                |d| Loc::file(d.join(sub).join("main.yml").display().to_string()),
            );
            let what = format!("a variable of role `{role}`");
            self.values(&Value::Object(vars.clone()), &loc, None, &what);
        }
        for t in play.tasks.iter().chain(&play.handlers) {
            self.task(t);
        }
    }

    fn values(&mut self, v: &Value, loc: &Loc, task: Option<&Task>, what: &str) {
        let mut s = Vec::new();
        strings(v, &mut s);
        for src in s {
            self.source(src, false, loc, task, what);
        }
    }

    fn task(&mut self, t: &Task) {
        let loc = &t.loc;
        if let TaskKind::Module { module, args } = &t.kind {
            if module == "assert" {
                for (k, v) in args {
                    let mut s = Vec::new();
                    match v {
                        Value::String(x) if k == "that" => s.push(x.as_str()),
                        Value::Array(a) if k == "that" => {
                            s.extend(a.iter().filter_map(Value::as_str))
                        }
                        other => strings(other, &mut s),
                    }
                    for src in s {
                        self.source(src, k == "that", loc, Some(t), "assert");
                    }
                }
            } else {
                self.values(&Value::Object(args.clone()), loc, Some(t), "arguments");
            }
            if module == "template" {
                if let Some(src) = args.get("src").and_then(Value::as_str) {
                    if !template::is_possibly_template(src) {
                        self.template_file(src, loc, t);
                    }
                }
            }
        }
        if let Some(n) = &t.name {
            self.source(n, false, loc, Some(t), "name");
        }
        for (v, what) in [
            (&t.loop_, "loop"),
            (&t.loop_label, "loop_control.label"),
            (&t.retries, "retries"),
            (&t.delay, "delay"),
            (&t.ignore_errors, "ignore_errors"),
        ] {
            if let Some(v) = v {
                self.values(v, loc, Some(t), what);
            }
        }
        self.values(&Value::Object(t.vars.clone()), loc, Some(t), "vars");
        for (list, what) in [
            (&t.when, "when"),
            (&t.changed_when, "changed_when"),
            (&t.failed_when, "failed_when"),
            (&t.until, "until"),
        ] {
            for c in list {
                if let Value::String(expr) = c {
                    self.source(expr, true, loc, Some(t), what);
                }
            }
        }
        if let Some(d) = &t.delegate_to {
            self.source(d, false, loc, Some(t), "delegate_to");
        }
        for n in &t.notify {
            self.source(n, false, loc, Some(t), "notify");
        }
        for child in t.children() {
            self.task(child);
        }
    }

    /// One template string: unknown names, and the template files it looks up.
    fn source(&mut self, src: &str, is_expr: bool, loc: &Loc, task: Option<&Task>, what: &str) {
        if !is_expr && !template::is_possibly_template(src) {
            return;
        }
        for u in names::unknown(src, is_expr) {
            self.diags.error(loc, format!("{what}: {u}"));
        }
        if let Some(t) = task {
            for f in names::template_lookup_files(src, is_expr) {
                self.template_file(&f, loc, t);
            }
        }
    }

    /// Directories searched for `sub`, as the runner and the lookups search them.
    fn dirs(&self, t: &Task, sub: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(r) = &t.role {
            dirs.push(Path::new(&r.dir).join(sub));
            dirs.push(PathBuf::from(&r.dir));
        }
        dirs.push(self.playbook_dir.join(sub));
        dirs.push(self.playbook_dir.to_path_buf());
        dirs
    }

    /// A template file the task renders: it must exist, parse, and name only known things.
    fn template_file(&mut self, src: &str, loc: &Loc, t: &Task) {
        let p = Path::new(src);
        let dirs = self.dirs(t, "templates");
        let found = if p.is_absolute() {
            p.is_file().then(|| p.to_path_buf())
        } else {
            dirs.iter().map(|d| d.join(src)).find(|c| c.is_file())
        };
        let Some(path) = found else {
            let searched = dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            self.diags.error(
                loc,
                format!("template `{src}` not found (searched {searched})"),
            );
            return;
        };
        if !self.files_seen.insert(path.clone()) {
            return;
        }
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                self.diags
                    .error(&Loc::file(shown.as_str()), format!("cannot read: {e}"));
                return;
            }
        };
        if let Err(d) = template::check_syntax(&text, &Loc::file(shown.as_str())) {
            self.diags.push(d);
            return;
        }
        for u in names::unknown(&text, false) {
            self.diags
                .error(&Loc::new(shown.as_str(), u.line, 0), u.to_string());
        }
        for f in names::template_lookup_files(&text, false) {
            self.template_file(&f, loc, t);
        }
    }
}
