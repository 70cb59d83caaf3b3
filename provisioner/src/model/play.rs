//! Resolved playbooks: plays, tasks and handlers with every keyword checked.
//!
//! Values that Ansible templates at run time (`when`, module args, `loop`) are kept as
//! untemplated JSON here; `exec` renders them per host.

use serde_json::{Map, Value};

use crate::diag::Loc;

/// A playbook: plays in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Playbook {
    pub path: String,
    pub plays: Vec<Play>,
}

/// How hosts move through a play's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Every host finishes task N before any host starts task N+1 (Ansible's default).
    #[default]
    Linear,
    /// Each host runs the play's tasks as fast as it can.
    Free,
}

/// `serial:` batch sizes, one entry per batch, the last repeating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batch {
    Count(usize),
    Percent(u8),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Play {
    pub name: String,
    pub loc: Loc,
    /// The host pattern (may contain a template).
    pub hosts: String,
    pub gather_facts: bool,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub vars: Map<String, Value>,
    pub serial: Vec<Batch>,
    pub strategy: Strategy,
    pub any_errors_fatal: bool,
    pub max_fail_percentage: Option<u8>,
    pub tags: Vec<String>,
    /// pre_tasks, role tasks (dependencies first), tasks, post_tasks: in Ansible's order.
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
    /// Role defaults, lowest precedence, by role name in load order.
    pub role_defaults: Vec<(String, Map<String, Value>)>,
    /// Role vars, by role name in load order.
    pub role_vars: Vec<(String, Map<String, Value>)>,
}

/// Where a task came from, for role-relative file lookups (`templates/`, `files/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRef {
    pub name: String,
    pub dir: String,
}

/// One task, handler or block.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub name: Option<String>,
    pub loc: Loc,
    pub kind: TaskKind,
    pub when: Vec<Value>,
    pub loop_: Option<Value>,
    /// `with_items:` flattens one level of nesting; `loop:` does not.
    pub loop_flatten: bool,
    /// `with_<lookup>:` (other than `with_items`): `loop_` holds the lookup's terms and the
    /// items are `query(lookup, terms)`, as Ansible's `with_X` is `loop: "{{ query('X', ...) }}"`.
    pub loop_with: Option<String>,
    pub loop_var: String,
    pub index_var: Option<String>,
    pub loop_label: Option<Value>,
    pub register: Option<String>,
    pub notify: Vec<String>,
    /// Handler names a handler also answers to (`listen:`).
    pub listen: Vec<String>,
    pub tags: Vec<String>,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub ignore_errors: Option<Value>,
    pub changed_when: Vec<Value>,
    pub failed_when: Vec<Value>,
    pub until: Vec<Value>,
    pub retries: Option<Value>,
    pub delay: Option<Value>,
    pub run_once: bool,
    pub delegate_to: Option<String>,
    pub check_mode: Option<bool>,
    pub no_log: bool,
    pub vars: Map<String, Value>,
    pub role: Option<RoleRef>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TaskKind {
    /// A module call with its (untemplated) arguments.
    Module {
        module: String,
        args: Map<String, Value>,
    },
    /// `block:` with optional `rescue:` and `always:`.
    Block {
        block: Vec<Task>,
        rescue: Vec<Task>,
        always: Vec<Task>,
    },
}

impl Task {
    /// The name shown in output: the task's name, else `module` as Ansible shows it.
    pub fn display_name(&self) -> String {
        match (&self.name, &self.kind, &self.role) {
            (Some(n), _, Some(r)) => format!("{} : {}", r.name, n),
            (Some(n), _, None) => n.clone(),
            (None, TaskKind::Module { module, .. }, _) => module.clone(),
            (None, TaskKind::Block { .. }, _) => "block".to_string(),
        }
    }

    /// The tasks of a block (`block`, then `rescue`, then `always`); none for a module call.
    pub fn children(&self) -> impl Iterator<Item = &Task> {
        let (b, r, a): (&[Task], &[Task], &[Task]) = match &self.kind {
            TaskKind::Block {
                block,
                rescue,
                always,
            } => (block, rescue, always),
            TaskKind::Module { .. } => (&[], &[], &[]),
        };
        b.iter().chain(r).chain(a)
    }

    /// The module name, if this is a module call.
    pub fn module(&self) -> Option<&str> {
        match &self.kind {
            TaskKind::Module { module, .. } => Some(module),
            TaskKind::Block { .. } => None,
        }
    }
}

/// Tag selection exactly as Ansible 2.14's `Taggable.evaluate_tags`: an untagged task counts as
/// tagged `untagged`; with no `--tags`, Ansible selects `all` (so `never` tasks do not run).
pub fn tags_selected(task_tags: &[String], only: &[String], skip: &[String]) -> bool {
    let untagged = ["untagged".to_string()];
    let tags: &[String] = if task_tags.is_empty() {
        &untagged
    } else {
        task_tags
    };
    let all = ["all".to_string()];
    let only: &[String] = if only.is_empty() { &all } else { only };
    let has = |t: &str| tags.iter().any(|x| x == t);
    let disjoint = |list: &[String]| !tags.iter().any(|t| list.contains(t));
    let is_untagged = task_tags.is_empty();
    let wants = |list: &[String], t: &str| list.iter().any(|x| x == t);
    let mut run = has("always")
        || (wants(only, "all") && !has("never"))
        || !disjoint(only)
        || (wants(only, "tagged") && !is_untagged && !has("never"));
    if run && !skip.is_empty() {
        if wants(skip, "all") {
            if !has("always") || wants(skip, "always") {
                run = false;
            }
        } else if !disjoint(skip) || (wants(skip, "tagged") && !is_untagged) {
            run = false;
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::tags_selected;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// Cases read off Ansible 2.14's `evaluate_tags`.
    #[test]
    fn tag_selection_follows_ansible() {
        // No selection (Ansible's default --tags all): everything but `never`.
        assert!(tags_selected(&v(&[]), &[], &[]));
        assert!(tags_selected(&v(&["a"]), &[], &[]));
        assert!(!tags_selected(&v(&["never"]), &[], &[]));
        assert!(tags_selected(&v(&["never", "always"]), &[], &[]));
        // --tags a
        assert!(tags_selected(&v(&["a", "b"]), &v(&["a"]), &[]));
        assert!(!tags_selected(&v(&["b"]), &v(&["a"]), &[]));
        assert!(!tags_selected(&v(&[]), &v(&["a"]), &[]));
        assert!(tags_selected(&v(&["always"]), &v(&["a"]), &[]));
        assert!(tags_selected(&v(&["never", "a"]), &v(&["a"]), &[]));
        // special words
        assert!(tags_selected(&v(&[]), &v(&["untagged"]), &[]));
        assert!(!tags_selected(&v(&["x"]), &v(&["untagged"]), &[]));
        assert!(tags_selected(&v(&["x"]), &v(&["tagged"]), &[]));
        assert!(!tags_selected(&v(&["never", "x"]), &v(&["tagged"]), &[]));
        // --skip-tags
        assert!(!tags_selected(&v(&["a"]), &[], &v(&["a"])));
        assert!(!tags_selected(&v(&["always", "a"]), &[], &v(&["a"])));
        assert!(!tags_selected(&v(&["always"]), &[], &v(&["always"])));
        assert!(tags_selected(&v(&["always"]), &[], &v(&["all"])));
        assert!(!tags_selected(&v(&["x"]), &[], &v(&["all"])));
        assert!(!tags_selected(&v(&["x"]), &[], &v(&["tagged"])));
        assert!(tags_selected(&v(&[]), &[], &v(&["tagged"])));
        assert!(!tags_selected(&v(&[]), &[], &v(&["untagged"])));
    }
}

/// Builders of plays and tasks for the plan and walker tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn task(name: &str) -> Task {
        Task {
            name: Some(name.into()),
            loc: Loc::file("t.yml"),
            kind: TaskKind::Module {
                module: "debug".into(),
                args: Default::default(),
            },
            when: vec![],
            loop_: None,
            loop_flatten: false,
            loop_with: None,
            loop_var: "item".into(),
            index_var: None,
            loop_label: None,
            register: None,
            notify: vec![],
            listen: vec![],
            tags: vec![],
            become_: None,
            become_user: None,
            ignore_errors: None,
            changed_when: vec![],
            failed_when: vec![],
            until: vec![],
            retries: None,
            delay: None,
            run_once: false,
            delegate_to: None,
            check_mode: None,
            no_log: false,
            vars: Default::default(),
            role: None,
        }
    }

    pub fn play(ntasks: usize, strategy: Strategy, serial: Vec<Batch>, facts: bool) -> Play {
        Play {
            name: "p".into(),
            loc: Loc::file("site.yml"),
            hosts: "all".into(),
            gather_facts: facts,
            become_: None,
            become_user: None,
            vars: Default::default(),
            serial,
            strategy,
            any_errors_fatal: false,
            max_fail_percentage: None,
            tags: vec![],
            tasks: (0..ntasks).map(|i| task(&format!("t{i}"))).collect(),
            handlers: vec![],
            role_defaults: vec![],
            role_vars: vec![],
        }
    }
}
