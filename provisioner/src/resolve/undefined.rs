//! Validate-first variable check: every variable a task reads must be defined for every host it
//! targets, or be produced earlier in the run (`register`, `set_fact`, a loop variable, facts).
//!
//! References guarded the way Ansible users guard optional variables (`x | default(...)`,
//! `x is defined`, `x is undefined`, `x is none`) are not reported. Variables whose value is a
//! template are followed, so a typo inside a role default is reported at the task that uses it.
//! This check can miss an undefined variable (runtime still reports it); it must not report a
//! defined one.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde_json::{Map, Value};

use crate::diag::{Diagnostics, Loc};
use crate::model::inventory::Inventory;
use crate::model::play::{Play, Playbook, Task, TaskKind};
use crate::template;

/// Names the engine defines for every task (see exec/runner.rs `task_vars`).
const ENGINE_NAMES: &[&str] = &[
    "inventory_hostname",
    "inventory_hostname_short",
    "group_names",
    "groups",
    "hostvars",
    "inventory_file",
    "inventory_dir",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_play_batch",
    "play_hosts",
    "ansible_play_name",
    "ansible_check_mode",
    "ansible_diff_mode",
    "playbook_dir",
    "role_name",
    "role_path",
    "ansible_loop_var",
    "vars",
    "omit",
];

/// Everything a check needs besides the playbook.
pub struct Context<'a> {
    pub inventory: &'a Inventory,
    /// The hosts each play targets, in play order.
    pub play_hosts: &'a [Vec<String>],
    pub extra_vars: &'a Map<String, Value>,
    /// Variables the run adds at role-defaults precedence (e.g. `bundle` for the stack).
    pub stack_vars: &'a Map<String, Value>,
}

/// Report every undefined variable, one diagnostic per (task, name), naming the hosts.
pub fn check(pb: &Playbook, ctx: &Context<'_>) -> Diagnostics {
    let produced = produced_names(pb);
    let gathers_facts = pb.plays.iter().any(|p| p.gather_facts);
    let templar = template::Templar::new(".");
    // (loc, message) -> hosts
    let mut found: BTreeMap<(Loc, String), Vec<String>> = BTreeMap::new();
    for (pi, play) in pb.plays.iter().enumerate() {
        let hosts = ctx.play_hosts.get(pi).cloned().unwrap_or_default();
        for host in &hosts {
            let base = play_vars(play, ctx, host);
            let mut tasks: Vec<&Task> = Vec::new();
            flatten(play.tasks.iter().chain(&play.handlers), &mut tasks);
            for task in tasks {
                let mut vars = base.clone();
                vars.extend(task.vars.clone());
                vars.extend(ctx.inventory.magic_vars(host));
                // A task whose `when` is already false for this host never reads its arguments.
                // (A `when` that cannot be evaluated yet, e.g. on a registered result, is checked.)
                if statically_false(&templar, &task.when, &vars) {
                    continue;
                }
                let known = |name: &str| {
                    vars.contains_key(name)
                        || produced.contains(name)
                        || ENGINE_NAMES.contains(&name)
                        || name == task.loop_var
                        || task.index_var.as_deref() == Some(name)
                        || (gathers_facts
                            && (name == "ansible_facts" || name.starts_with("ansible_")))
                };
                for (src, is_expr) in task_sources(task) {
                    for name in unguarded_refs(&src, is_expr) {
                        if !known(&name) {
                            found
                                .entry((task.loc.clone(), format!("`{name}` is undefined")))
                                .or_default()
                                .push(host.clone());
                        } else if let Some(chain) = follow(&name, &vars, &known, 0) {
                            found
                                .entry((task.loc.clone(), chain))
                                .or_default()
                                .push(host.clone());
                        }
                    }
                }
            }
        }
    }
    let mut diags = Diagnostics::new();
    for ((loc, msg), mut hosts) in found {
        hosts.dedup();
        let who = match hosts.len() {
            1 => format!("for host {}", hosts[0]),
            n if n <= 3 => format!("for hosts {}", hosts.join(", ")),
            n => format!("for hosts {} and {} more", hosts[..3].join(", "), n - 3),
        };
        diags.error(
            &loc,
            format!("{msg} {who} (define it, or guard it with `| default(...)`)"),
        );
    }
    diags
}

/// Whether `when` evaluates to false with the variables known before the run.
fn statically_false(
    templar: &template::Templar,
    when: &[Value],
    vars: &Map<String, Value>,
) -> bool {
    if when.is_empty() {
        return false;
    }
    let mut exprs = Vec::new();
    for c in when {
        match c {
            Value::Bool(false) => return true,
            Value::Bool(true) => {}
            Value::String(s) => exprs.push(s.clone()),
            _ => return false,
        }
    }
    matches!(templar.eval_when(&exprs, vars), Ok(false))
}

/// If `name`'s value is a template reading an undefined variable, say which.
fn follow(
    name: &str,
    vars: &Map<String, Value>,
    known: &dyn Fn(&str) -> bool,
    depth: usize,
) -> Option<String> {
    if depth > 8 {
        return None;
    }
    let mut strings = Vec::new();
    collect_strings(vars.get(name)?, &mut strings);
    for s in strings {
        for inner in unguarded_refs(&s, false) {
            if inner == name {
                continue;
            }
            if !known(&inner) {
                return Some(format!("`{name}` reads `{inner}`, which is undefined"));
            }
            if let Some(deeper) = follow(&inner, vars, known, depth + 1) {
                return Some(deeper);
            }
        }
    }
    None
}

/// Every variable a task could define for later tasks: `register` names, `set_fact` keys and
/// what an `include_vars` may load.
fn produced_names(pb: &Playbook) -> BTreeSet<String> {
    let pb_dir = std::path::Path::new(&pb.path)
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let mut out = BTreeSet::new();
    let mut tasks = Vec::new();
    for p in &pb.plays {
        flatten(p.tasks.iter().chain(&p.handlers), &mut tasks);
    }
    for t in tasks {
        if let Some(r) = &t.register {
            out.insert(r.clone());
        }
        if let TaskKind::Module { module, args } = &t.kind {
            if module == "set_fact" {
                out.extend(args.keys().cloned());
            }
            if module == "include_vars" {
                let role = t.role.as_ref().map(|r| std::path::PathBuf::from(&r.dir));
                out.extend(super::include_vars::possible_names(
                    args,
                    role.as_deref(),
                    &pb_dir,
                ));
            }
            if module == "package_facts" {
                out.insert("packages".into());
            }
        }
    }
    out
}

fn flatten<'a>(tasks: impl Iterator<Item = &'a Task>, out: &mut Vec<&'a Task>) {
    for t in tasks {
        out.push(t);
        if let TaskKind::Block {
            block,
            rescue,
            always,
        } = &t.kind
        {
            flatten(block.iter().chain(rescue).chain(always), out);
        }
    }
}

/// The variables of a play for a host, before task vars, lowest precedence first.
fn play_vars(play: &Play, ctx: &Context<'_>, host: &str) -> Map<String, Value> {
    let mut vars = ctx.stack_vars.clone();
    for (_, d) in &play.role_defaults {
        vars.extend(d.clone());
    }
    vars.extend(ctx.inventory.host_vars(host));
    vars.extend(play.vars.clone());
    for (_, v) in &play.role_vars {
        vars.extend(v.clone());
    }
    vars.extend(ctx.extra_vars.clone());
    vars
}

/// (source, is a bare expression) for everything of a task that is templated.
fn task_sources(t: &Task) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut strings = Vec::new();
    if let TaskKind::Module { module, args } = &t.kind {
        if module == "assert" {
            // `that` holds bare expressions.
            for (k, v) in args {
                if k == "that" {
                    let mut that = Vec::new();
                    collect_strings(v, &mut that);
                    out.extend(that.into_iter().map(|s| (s, true)));
                } else {
                    collect_strings(v, &mut strings);
                }
            }
        } else if module == "debug" && args.contains_key("var") {
            if let Some(Value::String(v)) = args.get("var") {
                out.push((v.clone(), true));
            }
        } else {
            collect_strings(&Value::Object(args.clone()), &mut strings);
        }
    }
    if let Some(l) = &t.loop_ {
        collect_strings(l, &mut strings);
    }
    if let Some(d) = &t.delegate_to {
        strings.push(d.clone());
    }
    out.extend(strings.into_iter().map(|s| (s, false)));
    for c in t
        .when
        .iter()
        .chain(&t.changed_when)
        .chain(&t.failed_when)
        .chain(&t.until)
    {
        if let Value::String(s) = c {
            out.push((s.clone(), true));
        }
    }
    out
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if template::is_possibly_template(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(m) => m.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Top-level names `src` reads, leaving out those guarded by `default`/`is defined`-style tests.
fn unguarded_refs(src: &str, is_expr: bool) -> BTreeSet<String> {
    let names = if is_expr {
        template::referenced_variables_expr(src)
    } else {
        template::referenced_variables(src)
    };
    names.into_iter().filter(|n| !is_guarded(src, n)).collect()
}

/// Names `src` guards (`name.attr | default(...)`, `name is defined`, ...), found in one pass.
fn guarded_names(src: &str) -> std::collections::HashSet<String> {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(
            r"\b([A-Za-z_][A-Za-z0-9_]*)(?:\s*(?:\.\w+|\[[^\]]*\]))*\s*(?:\|\s*(?:default|d|mandatory)\b|is\s+(?:not\s+)?(?:defined|undefined|none))",
        )
        .ok()
    });
    match re {
        Some(re) => re
            .captures_iter(src)
            .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
            .collect(),
        None => std::collections::HashSet::new(),
    }
}

fn is_guarded(src: &str, name: &str) -> bool {
    guarded_names(src).contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_are_recognised() {
        assert!(is_guarded("{{ x | default(1) }}", "x"));
        assert!(is_guarded("{{ x.y.z|d('a') }}", "x"));
        assert!(is_guarded("x is defined and x", "x"));
        assert!(is_guarded("x['k'] is not defined", "x"));
        assert!(!is_guarded("{{ x }}", "x"));
        assert!(!is_guarded("{{ xx | default(1) }} {{ x }}", "x"));
    }

    #[test]
    fn unguarded_references_only() {
        let r = unguarded_refs(
            "{{ a }} {{ b | default(1) }} {% for i in c %}{{ i }}{% endfor %}",
            false,
        );
        assert_eq!(r, BTreeSet::from(["a".to_string(), "c".to_string()]));
        let r = unguarded_refs("a == 1 and b is defined", true);
        assert_eq!(r, BTreeSet::from(["a".to_string()]));
    }
}
