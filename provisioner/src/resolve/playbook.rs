//! Playbooks and roles: spanned YAML → [`crate::model::play`], collecting every error.
//!
//! Everything outside the supported Ansible subset is rejected here with its location, before
//! any host is contacted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, Loc};
use crate::model::play::{Batch, Play, Playbook, RoleRef, Strategy, Task, TaskKind};
use crate::raw::kv;
use crate::yaml::{self, Node};

/// What the resolver needs to know about a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Parameter names and their aliases; `None` means the module accepts any parameter.
    pub params: Option<Vec<(String, Vec<String>, bool)>>,
    pub free_form: bool,
    /// The canonical short name (`copy` for `ansible.builtin.copy`).
    pub canonical: String,
}

/// Module knowledge, injected so validation can be tested without the real module set.
pub trait ModuleCatalog {
    fn module(&self, name: &str) -> Option<ModuleInfo>;
}

/// Modules the engine itself implements (they never reach a host as actions).
pub const ENGINE_MODULES: &[&str] = &[
    "debug",
    "set_fact",
    "fail",
    "assert",
    "meta",
    "include_tasks",
    "import_tasks",
    // Ansible's deprecated task-level `include` (removed in ansible-core 2.16): run as
    // `include_tasks` with a literal file name, as older roles use it.
    "include",
    "include_vars",
];

/// The catalog of the real modules: `crate::modules` plus the engine's own.
pub struct BuiltinCatalog;

impl ModuleCatalog for BuiltinCatalog {
    fn module(&self, name: &str) -> Option<ModuleInfo> {
        let short = name.strip_prefix("ansible.builtin.").unwrap_or(name);
        if ENGINE_MODULES.contains(&short) {
            return Some(ModuleInfo {
                params: None,
                free_form: matches!(
                    short,
                    "meta" | "include_tasks" | "import_tasks" | "include" | "include_vars"
                ),
                canonical: short.to_string(),
            });
        }
        let m = crate::modules::lookup(name)?;
        Some(ModuleInfo {
            params: Some(
                m.params()
                    .iter()
                    .map(|p| {
                        (
                            p.name.to_string(),
                            p.aliases.iter().map(|a| a.to_string()).collect(),
                            p.required,
                        )
                    })
                    .collect(),
            ),
            free_form: m.free_form(),
            canonical: m.names()[0].to_string(),
        })
    }
}

/// The play keywords the subset supports.
pub const PLAY_KEYS: &[&str] = &[
    "name",
    "hosts",
    "gather_facts",
    "become",
    "become_user",
    "vars",
    "serial",
    "strategy",
    "any_errors_fatal",
    "max_fail_percentage",
    "tags",
    "roles",
    "pre_tasks",
    "tasks",
    "post_tasks",
    "handlers",
];

/// The task keywords the subset supports (besides the module's own key).
pub const TASK_KEYS: &[&str] = &[
    "name",
    "when",
    "loop",
    "with_items",
    "loop_control",
    "register",
    "notify",
    "listen",
    "tags",
    "become",
    "become_user",
    "ignore_errors",
    "changed_when",
    "failed_when",
    "until",
    "retries",
    "delay",
    "run_once",
    "delegate_to",
    "block",
    "rescue",
    "always",
    "check_mode",
    "no_log",
    "vars",
    "args",
];

/// Inherited context while walking blocks, roles and imports.
#[derive(Clone, Default)]
struct Inherit {
    when: Vec<Value>,
    tags: Vec<String>,
    vars: Map<String, Value>,
    become_: Option<bool>,
    become_user: Option<String>,
    role: Option<RoleRef>,
}

/// Loads and checks playbooks and roles.
pub struct Loader<'a> {
    catalog: &'a dyn ModuleCatalog,
    roles_path: Vec<PathBuf>,
    diags: Diagnostics,
    /// Files being imported, to report import cycles.
    import_stack: Vec<PathBuf>,
    /// `gather_facts` of a play that does not say (ansible.cfg `gathering`).
    gather_default: bool,
    /// An inline play's (role, tasks file): that role runs this file of its `tasks/`.
    tasks_from: Option<(String, String)>,
    /// The playbook's directory (`include_vars` searches its `vars/`).
    playbook_dir: PathBuf,
}

/// A one-play playbook built in memory: "role X (its tasks file Y) on hosts Z". Its roles are
/// found as a playbook's would be (`<dir>/roles`, then the roles path); the role's
/// dependencies, defaults, vars and handlers come with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlinePlay {
    pub name: String,
    /// A host pattern.
    pub hosts: String,
    pub role: String,
    /// A file of the role's `tasks/` (`upgrade` or `upgrade.yml`); `None`: `main.yml`.
    pub tasks_from: Option<String>,
    pub gather_facts: bool,
    pub become_: bool,
    /// Roles that run (their `main.yml`) before `role`, as a play lists them
    /// (`cluster_facts` first in the stack).
    pub before: Vec<String>,
    /// `role`'s parameters (`- role: X` with `key: value`).
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl InlinePlay {
    /// Role `role`'s main tasks on `hosts`, with privilege escalation and without facts.
    pub fn role(name: &str, hosts: &str, role: &str) -> Self {
        InlinePlay {
            name: name.to_string(),
            hosts: hosts.to_string(),
            role: role.to_string(),
            tasks_from: None,
            gather_facts: false,
            become_: true,
            before: Vec::new(),
            params: serde_json::Map::new(),
        }
    }
}

impl<'a> Loader<'a> {
    /// `roles_path`: directories searched for roles after `<playbook dir>/roles`.
    pub fn new(catalog: &'a dyn ModuleCatalog, roles_path: Vec<PathBuf>) -> Self {
        Loader {
            catalog,
            roles_path,
            diags: Diagnostics::new(),
            import_stack: Vec::new(),
            gather_default: true,
            tasks_from: None,
            playbook_dir: PathBuf::from("."),
        }
    }

    /// Whether a play without `gather_facts:` gathers facts (default: true).
    pub fn gather_facts_default(mut self, on: bool) -> Self {
        self.gather_default = on;
        self
    }

    /// Load a playbook file. Returns every problem found, or the resolved playbook.
    pub fn load_playbook(self, path: &Path) -> Result<Playbook, Diagnostics> {
        let docs = yaml::load_file(path)?;
        self.load_docs(docs, path)
    }

    /// Load an [`InlinePlay`] as if it were the playbook `path` (which need not exist: its
    /// directory is the playbook's directory).
    pub fn load_inline(mut self, play: &InlinePlay, path: &Path) -> Result<Playbook, Diagnostics> {
        let mut roles: Vec<serde_json::Value> =
            play.before.iter().map(|r| serde_json::json!(r)).collect();
        let mut main = play.params.clone();
        main.insert("role".into(), serde_json::json!(play.role));
        roles.push(serde_json::Value::Object(main));
        let text = serde_json::json!([{
            "name": play.name,
            "hosts": play.hosts,
            "gather_facts": play.gather_facts,
            "become": play.become_,
            "roles": roles,
        }])
        .to_string();
        let docs = yaml::load_str(&text, &path.display().to_string())?;
        if let Some(f) = &play.tasks_from {
            self.tasks_from = Some((play.role.clone(), f.clone()));
        }
        self.load_docs(docs, path)
    }

    fn load_docs(mut self, docs: Vec<Node>, path: &Path) -> Result<Playbook, Diagnostics> {
        let name = path.display().to_string();
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.playbook_dir = base.clone();
        let mut plays = Vec::new();
        match docs.as_slice() {
            [] => self
                .diags
                .error(&Loc::file(name.as_str()), "the playbook is empty"),
            [doc] => match doc.as_seq() {
                Some(items) => {
                    for item in items {
                        if let Some(p) = self.play(item, &base) {
                            plays.push(p);
                        }
                    }
                }
                None => self.diags.error(
                    &doc.loc,
                    format!("a playbook is a list of plays, found {}", doc.kind()),
                ),
            },
            [_, second, ..] => self
                .diags
                .error(&second.loc, "a playbook must be a single YAML document"),
        }
        self.diags.into_result(Playbook { path: name, plays })
    }

    fn play(&mut self, node: &Node, base: &Path) -> Option<Play> {
        let Some(map) = node.as_map() else {
            self.diags.error(
                &node.loc,
                format!("a play must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        for (k, _) in map {
            let key = k.key_string().unwrap_or_default();
            if !PLAY_KEYS.contains(&key.as_str()) {
                let hint = match key.as_str() {
                    "import_playbook" => " (import_playbook is outside the supported subset)",
                    _ => "",
                };
                self.diags.error(
                    &k.loc,
                    format!("`{key}` is not a supported play keyword{hint}"),
                );
            }
        }
        let hosts = match node.get("hosts") {
            Some(h) => match &h.value {
                yaml::Value::Str(s) => s.clone(),
                yaml::Value::Seq(items) => items
                    .iter()
                    .filter_map(|i| i.key_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                _ => {
                    self.diags
                        .error(&h.loc, "`hosts` must be a pattern string or a list");
                    String::new()
                }
            },
            None => {
                self.diags.error(&node.loc, "a play needs `hosts`");
                String::new()
            }
        };
        let name = self
            .opt_string(node, "name")
            .unwrap_or_else(|| hosts.clone());
        let vars = self.vars_map(node.get("vars"));
        let strategy = match self.opt_string(node, "strategy").as_deref() {
            None | Some("linear") => Strategy::Linear,
            Some("free") => Strategy::Free,
            Some(other) => {
                if let Some(n) = node.get("strategy") {
                    self.diags.error(
                        &n.loc,
                        format!("strategy `{other}` is not supported (use linear or free)"),
                    );
                }
                Strategy::Linear
            }
        };
        let serial = self.serial(node.get("serial"));
        let max_fail_percentage = node.get("max_fail_percentage").and_then(|n| {
            match n.to_json().as_u64().filter(|v| *v <= 100) {
                Some(v) => Some(v as u8),
                None => {
                    self.diags.error(
                        &n.loc,
                        "`max_fail_percentage` must be a number from 0 to 100",
                    );
                    None
                }
            }
        });
        let inherit = Inherit {
            tags: self.string_list(node.get("tags")),
            become_: self.opt_bool(node, "become"),
            become_user: self.opt_string(node, "become_user"),
            ..Default::default()
        };
        let mut play = Play {
            name,
            loc: node.loc.clone(),
            hosts,
            gather_facts: self
                .opt_bool(node, "gather_facts")
                .unwrap_or(self.gather_default),
            become_: inherit.become_,
            become_user: inherit.become_user.clone(),
            vars,
            serial,
            strategy,
            any_errors_fatal: self.opt_bool(node, "any_errors_fatal").unwrap_or(false),
            max_fail_percentage,
            tags: inherit.tags.clone(),
            tasks: Vec::new(),
            handlers: Vec::new(),
            role_defaults: Vec::new(),
            role_vars: Vec::new(),
        };
        // Play tags apply to every task of the play, as in Ansible.
        let play_inherit = inherit;
        if let Some(pre) = node.get("pre_tasks") {
            play.tasks
                .extend(self.task_list(pre, base, &play_inherit, false));
        }
        if let Some(roles) = node.get("roles") {
            let mut seen = HashSet::new();
            match roles.as_seq() {
                Some(items) => {
                    for r in items {
                        self.role_entry(r, base, &play_inherit, &mut play, &mut seen);
                    }
                }
                None => self.diags.error(&roles.loc, "`roles` must be a list"),
            }
        }
        for key in ["tasks", "post_tasks"] {
            if let Some(t) = node.get(key) {
                play.tasks
                    .extend(self.task_list(t, base, &play_inherit, false));
            }
        }
        if let Some(h) = node.get("handlers") {
            play.handlers
                .extend(self.task_list(h, base, &play_inherit, true));
        }
        Some(play)
    }

    fn serial(&mut self, node: Option<&Node>) -> Vec<Batch> {
        let Some(node) = node else { return Vec::new() };
        let items: Vec<&Node> = match node.as_seq() {
            Some(s) => s.iter().collect(),
            None => vec![node],
        };
        let mut out = Vec::new();
        for i in items {
            match &i.value {
                yaml::Value::Int(n) if *n > 0 => out.push(Batch::Count(*n as usize)),
                yaml::Value::Str(s) => match s.strip_suffix('%').map(str::parse::<u8>) {
                    Some(Ok(p)) if (1..=100).contains(&p) => out.push(Batch::Percent(p)),
                    _ => match s.parse::<usize>() {
                        Ok(n) if n > 0 => out.push(Batch::Count(n)),
                        _ => self.diags.error(
                            &i.loc,
                            format!(
                                "`serial` entry `{s}` must be a positive count or a percentage"
                            ),
                        ),
                    },
                },
                _ => self.diags.error(
                    &i.loc,
                    "`serial` must be a positive count, a percentage, or a list of them",
                ),
            }
        }
        out
    }

    /// Find a role directory by name.
    fn find_role(&self, name: &str, base: &Path) -> Option<PathBuf> {
        let as_path = base.join(name);
        if name.contains('/') && as_path.is_dir() {
            return Some(as_path);
        }
        std::iter::once(base.join("roles"))
            .chain(self.roles_path.iter().cloned())
            .map(|d| d.join(name))
            .find(|d| d.is_dir())
    }

    fn role_entry(
        &mut self,
        node: &Node,
        base: &Path,
        inherit: &Inherit,
        play: &mut Play,
        seen: &mut HashSet<String>,
    ) {
        let (name, params, extra) = match &node.value {
            yaml::Value::Str(s) => (s.clone(), Map::new(), Inherit::default()),
            yaml::Value::Map(pairs) => {
                let mut name = None;
                let mut params = Map::new();
                let mut extra = Inherit::default();
                for (k, v) in pairs {
                    match k.key_string().unwrap_or_default().as_str() {
                        "role" | "name" => name = v.key_string(),
                        "vars" => params.extend(self.vars_map(Some(v))),
                        "tags" => extra.tags = self.string_list(Some(v)),
                        "when" => extra.when = self.conditions(Some(v)),
                        "become" => extra.become_ = v.to_json().as_bool(),
                        "become_user" => extra.become_user = v.key_string(),
                        other => {
                            // Anything else is a role parameter, as in Ansible.
                            params.insert(other.to_string(), v.to_json());
                        }
                    }
                }
                match name {
                    Some(n) => (n, params, extra),
                    None => {
                        self.diags.error(&node.loc, "a role entry needs `role:`");
                        return;
                    }
                }
            }
            _ => {
                self.diags
                    .error(&node.loc, "a role entry must be a name or a mapping");
                return;
            }
        };
        let Some(dir) = self.find_role(&name, base) else {
            self.diags.error(
                &node.loc,
                format!(
                    "role `{name}` not found (searched {}/roles{})",
                    base.display(),
                    self.roles_path
                        .iter()
                        .map(|p| format!(", {}", p.display()))
                        .collect::<String>()
                ),
            );
            return;
        };
        // A role with the same parameters runs once per play (Ansible's default).
        let identity = format!("{}|{}", dir.display(), Value::Object(params.clone()));
        if !seen.insert(identity) {
            return;
        }
        let mut inh = inherit.clone();
        inh.when.extend(extra.when);
        inh.tags.extend(extra.tags);
        inh.become_ = extra.become_.or(inh.become_);
        inh.become_user = extra.become_user.or(inh.become_user);
        inh.vars.extend(params);
        inh.role = Some(RoleRef {
            name: name.clone(),
            dir: dir.display().to_string(),
        });
        // Dependencies first.
        let meta = dir.join("meta");
        if let Some(meta_file) = main_file(&meta) {
            match yaml::load_single(&meta_file) {
                Ok(m) => {
                    if let Some(deps) = m.get("dependencies") {
                        match deps.as_seq() {
                            Some(items) => {
                                let mut dep_inherit = inherit.clone();
                                dep_inherit.when = inh.when.clone();
                                dep_inherit.tags = inh.tags.clone();
                                for d in items {
                                    self.role_entry(d, base, &dep_inherit, play, seen);
                                }
                            }
                            None if deps.is_null() => {}
                            None => self
                                .diags
                                .error(&deps.loc, "`dependencies` must be a list of roles"),
                        }
                    }
                }
                Err(e) => self.diags.push(e),
            }
        }
        for (sub, target) in [("defaults", 0), ("vars", 1)] {
            if let Some(f) = main_file(&dir.join(sub)) {
                match yaml::load_single(&f) {
                    Ok(n) => {
                        let vars = self.vars_map(Some(&n));
                        if target == 0 {
                            play.role_defaults.push((name.clone(), vars));
                        } else {
                            play.role_vars.push((name.clone(), vars));
                        }
                    }
                    Err(e) => self.diags.push(e),
                }
            }
        }
        let tasks_file = match &self.tasks_from {
            Some((role, file)) if *role == name => {
                let tasks = dir.join("tasks");
                let found = [file.clone(), format!("{file}.yml"), format!("{file}.yaml")]
                    .into_iter()
                    .map(|f| tasks.join(f))
                    .find(|p| p.is_file());
                if found.is_none() {
                    self.diags.error(
                        &node.loc,
                        format!(
                            "role `{name}` has no tasks file `{file}` in {}",
                            tasks.display()
                        ),
                    );
                }
                found
            }
            _ => main_file(&dir.join("tasks")),
        };
        if let Some(f) = tasks_file {
            play.tasks.extend(self.task_file(&f, &inh, false));
        }
        if let Some(f) = main_file(&dir.join("handlers")) {
            play.handlers.extend(self.task_file(&f, &inh, true));
        }
    }

    fn task_file(&mut self, path: &Path, inherit: &Inherit, handlers: bool) -> Vec<Task> {
        if self.import_stack.iter().any(|p| p == path) {
            let chain: Vec<String> = self
                .import_stack
                .iter()
                .chain(std::iter::once(&path.to_path_buf()))
                .map(|p| p.display().to_string())
                .collect();
            self.diags.error(
                &Loc::file(path.display().to_string()),
                format!("import cycle: {}", chain.join(" -> ")),
            );
            return Vec::new();
        }
        let node = match yaml::load_single(path) {
            Ok(n) => n,
            Err(e) => {
                self.diags.push(e);
                return Vec::new();
            }
        };
        if node.is_null() {
            return Vec::new();
        }
        self.import_stack.push(path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let out = self.task_list(&node, &base, inherit, handlers);
        self.import_stack.pop();
        out
    }

    fn task_list(
        &mut self,
        node: &Node,
        base: &Path,
        inherit: &Inherit,
        handlers: bool,
    ) -> Vec<Task> {
        let Some(items) = node.as_seq() else {
            if !node.is_null() {
                self.diags.error(
                    &node.loc,
                    format!("expected a list of tasks, found {}", node.kind()),
                );
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            out.extend(self.task(item, base, inherit, handlers));
        }
        out
    }

    /// One task entry; imports expand to several tasks.
    fn task(&mut self, node: &Node, base: &Path, inherit: &Inherit, handler: bool) -> Vec<Task> {
        let Some(map) = node.as_map() else {
            self.diags.error(
                &node.loc,
                format!("a task must be a mapping, found {}", node.kind()),
            );
            return Vec::new();
        };
        let mut module: Option<(&Node, &Node)> = None;
        for (k, v) in map {
            let key = k.key_string().unwrap_or_default();
            if TASK_KEYS.contains(&key.as_str()) || with_lookup(&key).is_some() {
                if key == "listen" && !handler {
                    self.diags
                        .error(&k.loc, "`listen` is only valid on handlers");
                }
                continue;
            }
            if let Some(hint) = unsupported_keyword_hint(&key) {
                self.diags
                    .error(&k.loc, format!("`{key}` is not supported{hint}"));
                continue;
            }
            if let Some((prev, _)) = module {
                self.diags.error(
                    &k.loc,
                    format!(
                        "a task has one module; found `{}` and `{key}`",
                        prev.key_string().unwrap_or_default()
                    ),
                );
                continue;
            }
            module = Some((k, v));
        }

        let mut when = inherit.when.clone();
        when.extend(self.conditions(node.get("when")));
        let mut tags = inherit.tags.clone();
        tags.extend(self.string_list(node.get("tags")));
        let mut vars = inherit.vars.clone();
        vars.extend(self.vars_map(node.get("vars")));
        let become_ = self.opt_bool(node, "become").or(inherit.become_);
        let become_user = self
            .opt_string(node, "become_user")
            .or_else(|| inherit.become_user.clone());

        let is_block = node.get("block").is_some();
        if is_block && module.is_some() {
            self.diags
                .error(&node.loc, "a block cannot also call a module");
        }

        let kind = if is_block {
            // A block's when/tags/vars/become apply to each task in it (Ansible evaluates the
            // block's `when` on every child task, not once).
            let inner = Inherit {
                when: when.clone(),
                tags: tags.clone(),
                vars: vars.clone(),
                become_,
                become_user: become_user.clone(),
                role: inherit.role.clone(),
            };
            let list = |key: &str, me: &mut Self| match node.get(key) {
                Some(n) => me.task_list(n, base, &inner, handler),
                None => Vec::new(),
            };
            let block = list("block", self);
            let rescue = list("rescue", self);
            let always = list("always", self);
            TaskKind::Block {
                block,
                rescue,
                always,
            }
        } else {
            for key in ["rescue", "always"] {
                if let Some(n) = node.get(key) {
                    self.diags
                        .error(&n.loc, format!("`{key}` is only valid with `block`"));
                }
            }
            let Some((mk, mv)) = module else {
                self.diags.error(&node.loc, "this task calls no module");
                return Vec::new();
            };
            let name = mk.key_string().unwrap_or_default();
            let short = name.strip_prefix("ansible.builtin.").unwrap_or(&name);
            if matches!(short, "import_tasks" | "include_tasks" | "include") {
                return self.import(
                    node,
                    mk,
                    mv,
                    base,
                    Inherit {
                        when,
                        tags,
                        vars,
                        become_,
                        become_user,
                        role: inherit.role.clone(),
                    },
                    handler,
                );
            }
            let Some(info) = self.catalog.module(&name) else {
                self.diags.error(
                    &mk.loc,
                    format!("`{name}` is not a supported module or task keyword"),
                );
                return Vec::new();
            };
            let args = self.module_args(&info, mk, mv, node.get("args"));
            if info.canonical == "include_vars" {
                let role_dir = inherit.role.as_ref().map(|r| PathBuf::from(&r.dir));
                let pb = self.playbook_dir.clone();
                for p in super::include_vars::check(&args, role_dir.as_deref(), &pb) {
                    self.diags.error(&mv.loc, p);
                }
            }
            TaskKind::Module {
                module: info.canonical,
                args,
            }
        };

        // `loop`, `with_items` or `with_<lookup>`: one of them.
        let loops: Vec<(&Node, String)> = map
            .iter()
            .filter_map(|(k, _)| {
                let key = k.key_string()?;
                (key == "loop" || key == "with_items" || with_lookup(&key).is_some())
                    .then_some((k, key))
            })
            .collect();
        for (k, key) in loops.iter().skip(1) {
            self.diags.error(
                &k.loc,
                format!("use one of `loop`, `with_items` or `with_<lookup>`; `{}` and `{key}` both loop", loops[0].1),
            );
        }
        let (loop_, loop_flatten, loop_with) = match loops.first() {
            None => (None, false, None),
            Some((_, key)) => {
                let value = node.get(key).map(Node::to_json);
                match key.as_str() {
                    "loop" => (value, false, None),
                    "with_items" => (value, true, None),
                    other => (value, false, with_lookup(other).map(str::to_string)),
                }
            }
        };
        let (loop_var, index_var, loop_label) = match node.get("loop_control") {
            Some(lc) => {
                let mut lv = "item".to_string();
                let mut iv = None;
                let mut label = None;
                match lc.as_map() {
                    Some(pairs) => {
                        for (k, v) in pairs {
                            match k.key_string().unwrap_or_default().as_str() {
                                "loop_var" => lv = v.key_string().unwrap_or(lv),
                                "index_var" => iv = v.key_string(),
                                "label" => label = Some(v.to_json()),
                                other => self.diags.error(
                                    &k.loc,
                                    format!("`loop_control.{other}` is not supported"),
                                ),
                            }
                        }
                    }
                    None => self
                        .diags
                        .error(&lc.loc, "`loop_control` must be a mapping"),
                }
                (lv, iv, label)
            }
            None => ("item".to_string(), None, None),
        };
        if loop_.is_some() && is_block {
            self.diags.error(&node.loc, "a block cannot loop");
        }
        let register = self.opt_string(node, "register");
        if let (Some(r), Some(n)) = (&register, node.get("register")) {
            if !is_identifier(r) {
                self.diags.error(
                    &n.loc,
                    format!("`register: {r}` is not a valid variable name"),
                );
            }
        }
        let task = Task {
            name: self.opt_string(node, "name"),
            loc: node.loc.clone(),
            kind,
            when,
            loop_,
            loop_flatten,
            loop_with,
            loop_var,
            index_var,
            loop_label,
            register,
            notify: self.string_list(node.get("notify")),
            listen: self.string_list(node.get("listen")),
            tags,
            become_,
            become_user,
            ignore_errors: node.get("ignore_errors").map(Node::to_json),
            changed_when: self.conditions(node.get("changed_when")),
            failed_when: self.conditions(node.get("failed_when")),
            until: self.conditions(node.get("until")),
            retries: node.get("retries").map(Node::to_json),
            delay: node.get("delay").map(Node::to_json),
            run_once: self.opt_bool(node, "run_once").unwrap_or(false),
            delegate_to: self.opt_string(node, "delegate_to"),
            check_mode: self.opt_bool(node, "check_mode"),
            no_log: self.opt_bool(node, "no_log").unwrap_or(false),
            vars,
            role: inherit.role.clone(),
        };
        if handler && task.name.is_none() && task.listen.is_empty() {
            self.diags.error(
                &node.loc,
                "a handler needs a `name` (or `listen`) to be notified by",
            );
        }
        vec![task]
    }

    fn import(
        &mut self,
        node: &Node,
        mk: &Node,
        mv: &Node,
        base: &Path,
        inherit: Inherit,
        handler: bool,
    ) -> Vec<Task> {
        let kind = mk.key_string().unwrap_or_default();
        let mut inherit = inherit;
        let file = match &mv.value {
            // The old `include: file.yml k=v ...`: `tags=a,b` tags the included tasks, other
            // parameters are variables of the included tasks (as Ansible's include parameters).
            yaml::Value::Str(s) if kind.ends_with("include") => {
                match kv::split_args(s).and_then(|words| {
                    let rest = kv::join_args(words.get(1..).unwrap_or_default());
                    Ok((words.first().cloned(), kv::parse_kv(&rest, false)?))
                }) {
                    Ok((file, params)) => {
                        for (k, v) in params {
                            if k == "tags" {
                                let tags = v.as_str().unwrap_or_default().split(',');
                                inherit.tags.extend(
                                    tags.map(str::trim)
                                        .filter(|t| !t.is_empty())
                                        .map(str::to_string),
                                );
                            } else {
                                inherit.vars.insert(k, v);
                            }
                        }
                        file
                    }
                    Err(e) => {
                        self.diags.error(&mv.loc, e);
                        return Vec::new();
                    }
                }
            }
            yaml::Value::Str(s) => Some(s.clone()),
            yaml::Value::Map(_) => mv.get("file").and_then(Node::key_string),
            _ => None,
        };
        let Some(file) = file else {
            self.diags
                .error(&mv.loc, format!("`{kind}` needs a file name"));
            return Vec::new();
        };
        if file.contains("{{") || file.contains("{%") {
            self.diags.error(
                &mv.loc,
                format!("`{kind}` with a templated file name is outside the supported subset"),
            );
            return Vec::new();
        }
        let with_keys: Vec<String> = node
            .as_map()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.key_string())
            .filter(|k| with_lookup(k).is_some())
            .collect();
        let keys = ["loop", "with_items", "register"]
            .into_iter()
            .chain(with_keys.iter().map(String::as_str));
        for key in keys {
            if let Some(n) = node.get(key) {
                self.diags.error(
                    &n.loc,
                    format!("`{key}` on `{kind}` is outside the supported subset"),
                );
            }
        }
        // Inside a role, paths are relative to the role's tasks/ directory.
        let dir = match &inherit.role {
            Some(r) if !handler => PathBuf::from(&r.dir).join("tasks"),
            Some(r) => PathBuf::from(&r.dir).join("handlers"),
            None => base.to_path_buf(),
        };
        let path = [dir.join(&file), base.join(&file)]
            .into_iter()
            .find(|p| p.is_file());
        match path {
            Some(p) => self.task_file(&p, &inherit, handler),
            None => {
                self.diags.error(
                    &mv.loc,
                    format!("`{kind}`: file `{file}` not found in {}", dir.display()),
                );
                Vec::new()
            }
        }
    }

    fn module_args(
        &mut self,
        info: &ModuleInfo,
        mk: &Node,
        mv: &Node,
        extra: Option<&Node>,
    ) -> Map<String, Value> {
        let mut args = match &mv.value {
            yaml::Value::Null => Map::new(),
            yaml::Value::Map(_) => match mv.to_json() {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            yaml::Value::Str(s) => match kv::parse_kv(s, info.free_form) {
                Ok(m) => m,
                Err(e) => {
                    // Parameter checks would only repeat this error.
                    self.diags.error(&mv.loc, e);
                    return Map::new();
                }
            },
            _ if info.free_form => {
                let mut m = Map::new();
                m.insert(
                    "_raw_params".into(),
                    Value::String(mv.key_string().unwrap_or_default()),
                );
                m
            }
            _ => {
                self.diags.error(
                    &mv.loc,
                    format!(
                        "arguments of `{}` must be a mapping or k=v text",
                        info.canonical
                    ),
                );
                Map::new()
            }
        };
        if let Some(e) = extra {
            match e.to_json() {
                Value::Object(m) => args.extend(m),
                _ => self.diags.error(&e.loc, "`args` must be a mapping"),
            }
        }
        if let Some(params) = &info.params {
            for key in args.keys() {
                if key == "_raw_params" && info.free_form {
                    continue;
                }
                let known = params
                    .iter()
                    .any(|(n, aliases, _)| n == key || aliases.iter().any(|a| a == key));
                if !known {
                    let mut names: Vec<&str> = params.iter().map(|(n, _, _)| n.as_str()).collect();
                    names.sort_unstable();
                    self.diags.error(
                        &mv.loc,
                        format!(
                            "`{}` has no parameter `{key}` (supported: {})",
                            info.canonical,
                            names.join(", ")
                        ),
                    );
                }
            }
            for (name, aliases, required) in params {
                let present =
                    args.contains_key(name) || aliases.iter().any(|a| args.contains_key(a));
                if *required && !present {
                    self.diags.error(
                        &mk.loc,
                        format!("`{}` needs the parameter `{name}`", info.canonical),
                    );
                }
            }
        }
        args
    }

    fn conditions(&mut self, node: Option<&Node>) -> Vec<Value> {
        match node {
            None => Vec::new(),
            Some(n) => match &n.value {
                yaml::Value::Seq(items) => items.iter().map(Node::to_json).collect(),
                yaml::Value::Map(_) => {
                    self.diags.error(
                        &n.loc,
                        "a condition must be an expression or a list of them",
                    );
                    Vec::new()
                }
                _ => vec![n.to_json()],
            },
        }
    }

    fn vars_map(&mut self, node: Option<&Node>) -> Map<String, Value> {
        match node {
            None => Map::new(),
            Some(n) if n.is_null() => Map::new(),
            Some(n) => match n.as_map() {
                Some(pairs) => {
                    let mut out = Map::new();
                    for (k, v) in pairs {
                        let key = k.key_string().unwrap_or_default();
                        if !is_identifier(&key) {
                            self.diags
                                .error(&k.loc, format!("`{key}` is not a valid variable name"));
                        }
                        out.insert(key, v.to_json());
                    }
                    out
                }
                None => {
                    self.diags.error(
                        &n.loc,
                        format!("vars must be a mapping, found {}", n.kind()),
                    );
                    Map::new()
                }
            },
        }
    }

    fn string_list(&mut self, node: Option<&Node>) -> Vec<String> {
        match node {
            None => Vec::new(),
            Some(n) => match &n.value {
                yaml::Value::Str(s) => s
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
                yaml::Value::Seq(items) => items.iter().filter_map(Node::key_string).collect(),
                yaml::Value::Null => Vec::new(),
                _ => match n.key_string() {
                    Some(s) => vec![s],
                    None => {
                        self.diags
                            .error(&n.loc, "expected a string or a list of strings");
                        Vec::new()
                    }
                },
            },
        }
    }

    fn opt_string(&mut self, node: &Node, key: &str) -> Option<String> {
        let n = node.get(key)?;
        match &n.value {
            yaml::Value::Seq(_) | yaml::Value::Map(_) => {
                self.diags.error(
                    &n.loc,
                    format!("`{key}` must be a string, found {}", n.kind()),
                );
                None
            }
            yaml::Value::Null => None,
            _ => n.key_string(),
        }
    }

    fn opt_bool(&mut self, node: &Node, key: &str) -> Option<bool> {
        let n = node.get(key)?;
        match &n.value {
            yaml::Value::Bool(b) => Some(*b),
            yaml::Value::Str(s) if s.contains("{{") => {
                self.diags.error(
                    &n.loc,
                    format!("a templated `{key}` is outside the supported subset; use a literal boolean"),
                );
                None
            }
            yaml::Value::Str(_) | yaml::Value::Int(_) | yaml::Value::Float(_) => {
                match cluster_core::boolean(&n.to_json()) {
                    Some(b) => Some(b),
                    None => {
                        let shown = match &n.value {
                            yaml::Value::Str(s) => s.clone(),
                            _ => n.to_json().to_string(),
                        };
                        self.diags.error(
                            &n.loc,
                            format!("`{key}` must be a boolean, found `{shown}`"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.diags.error(
                    &n.loc,
                    format!("`{key}` must be a boolean, found {}", n.kind()),
                );
                None
            }
        }
    }
}

fn main_file(dir: &Path) -> Option<PathBuf> {
    ["main.yml", "main.yaml", "main"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The lookup behind a `with_<lookup>:` loop keyword (`with_items` is the loop itself), for
/// the lookups the engine has that make sense as loops.
pub fn with_lookup(key: &str) -> Option<&str> {
    let name = key.strip_prefix("with_")?;
    matches!(
        name,
        "list" | "dict" | "together" | "fileglob" | "first_found" | "lines" | "file" | "env"
    )
    .then_some(name)
}

/// Keywords Ansible knows that are outside our subset, with a hint.
fn unsupported_keyword_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "async" | "poll" => " (async tasks are outside the supported subset)",
        "local_action" | "action" => " (write the module name as the task key)",
        "include_role"
        | "import_role"
        | "ansible.builtin.include_role"
        | "ansible.builtin.import_role" => {
            " (list the role under the play's `roles:` or in meta dependencies)"
        }
        "environment" | "connection" | "remote_user" | "vars_files" | "with_nested"
        | "with_subelements" | "loop_with" | "diff" | "throttle" | "any_errors_fatal"
        | "debugger" | "collections" | "module_defaults" => " (outside the supported subset)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few modules with the parameter shapes of Ansible's, for hermetic tests.
    struct TestCatalog;

    impl ModuleCatalog for TestCatalog {
        fn module(&self, name: &str) -> Option<ModuleInfo> {
            let short = name.strip_prefix("ansible.builtin.").unwrap_or(name);
            let p = |n: &str, req: bool| (n.to_string(), Vec::new(), req);
            let (params, free_form) = match short {
                "copy" => (
                    vec![
                        p("dest", true),
                        p("content", false),
                        p("src", false),
                        p("mode", false),
                    ],
                    false,
                ),
                "command" => (
                    vec![p("creates", false), p("chdir", false), p("cmd", false)],
                    true,
                ),
                "service" => (
                    vec![p("name", true), p("state", false), p("enabled", false)],
                    false,
                ),
                _ => return BuiltinCatalog.module(name),
            };
            Some(ModuleInfo {
                params: Some(params),
                free_form,
                canonical: short.to_string(),
            })
        }
    }

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/playbook")
            .join(name)
            .join("site.yml")
    }

    fn names(tasks: &[Task]) -> Vec<String> {
        tasks.iter().map(Task::display_name).collect()
    }

    #[test]
    fn play_tasks_follow_ansible_order_with_role_dependencies_first() {
        let pb = Loader::new(&TestCatalog, vec![])
            .load_playbook(&fixture("ok"))
            .unwrap();
        let play = &pb.plays[0];
        assert_eq!(play.hosts, "web:&prod");
        assert_eq!(play.serial, vec![Batch::Count(1), Batch::Percent(50)]);
        assert_eq!(
            names(&play.tasks),
            vec![
                "debug",
                "base : base packages",
                "web : configure",
                "web : extra step",
                "run a command",
                "guarded block",
            ]
        );
        assert_eq!(play.role_defaults[0].0, "web");
        assert_eq!(play.role_vars[0].1["web_user"], "www-data");
        assert_eq!(
            names(&play.handlers),
            vec!["web : reload web", "restart web"]
        );
        assert_eq!(play.handlers[0].listen, vec!["restart web"]);
    }

    #[test]
    fn role_params_tags_and_import_conditions_are_inherited() {
        let pb = Loader::new(&TestCatalog, vec![])
            .load_playbook(&fixture("ok"))
            .unwrap();
        let extra = &pb.plays[0].tasks[3];
        assert_eq!(extra.vars["port"], 8080);
        assert_eq!(extra.tags, vec!["web"]);
        assert_eq!(extra.when, vec![Value::from("port == 8080")]);
        assert_eq!(extra.loop_var, "n");
        assert_eq!(extra.module(), Some("command"));
        assert_eq!(extra.become_, Some(true));
        // The dependency does not get the depending role's parameters.
        assert!(!pb.plays[0].tasks[1].vars.contains_key("port"));
    }

    #[test]
    fn free_form_and_kv_arguments_parse_like_ansible() {
        let pb = Loader::new(&TestCatalog, vec![])
            .load_playbook(&fixture("ok"))
            .unwrap();
        let t = &pb.plays[0].tasks[4];
        match &t.kind {
            TaskKind::Module { module, args } => {
                assert_eq!(module, "command");
                assert_eq!(args["_raw_params"], "echo hi");
                assert_eq!(args["creates"], "/tmp/hi");
            }
            other => panic!("{other:?}"),
        }
        match &pb.plays[0].tasks[2].kind {
            TaskKind::Module { args, .. } => {
                assert_eq!(args["mode"], "0644");
                assert_eq!(args["content"], "port={{ port }}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn blocks_keep_rescue_and_always() {
        let pb = Loader::new(&TestCatalog, vec![])
            .load_playbook(&fixture("ok"))
            .unwrap();
        let b = &pb.plays[0].tasks[5];
        assert_eq!(b.when, vec![Value::from("out.rc == 0")]);
        match &b.kind {
            TaskKind::Block {
                block,
                rescue,
                always,
            } => {
                assert_eq!(block.len(), 1);
                assert_eq!(block[0].notify, vec!["restart web"]);
                assert_eq!(rescue.len(), 1);
                assert_eq!(always.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_location() {
        let err = Loader::new(&TestCatalog, vec![])
            .load_playbook(&fixture("errors"))
            .unwrap_err();
        let text = err.to_string();
        let expect = [
            (
                "site.yml:2:3",
                "`vars_files` is not a supported play keyword",
            ),
            ("site.yml:3:13", "strategy `host_pinned` is not supported"),
            ("site.yml:5:7", "role `missing_role` not found"),
            (
                "site.yml:9:7",
                "a task has one module; found `copy` and `service`",
            ),
            ("site.yml:11:13", "`copy` has no parameter `contnet`"),
            ("site.yml:13:7", "`service` needs the parameter `name`"),
            ("site.yml:15:7", "`frobnicate` is not a supported module"),
            ("site.yml:18:7", "`async` is not supported"),
            (
                "site.yml:21:17",
                "`register: 1bad` is not a valid variable name",
            ),
            ("site.yml:22:7", "a block cannot also call a module"),
            ("site.yml:26:9", "`rescue` is only valid with `block`"),
            ("site.yml:29:11", "`serial` must be a positive count"),
            ("site.yml:32:13", "unbalanced quotes"),
        ];
        for (loc, msg) in expect {
            assert!(
                err.0.iter().any(
                    |d| d.loc.as_ref().is_some_and(|l| l.to_string().ends_with(loc))
                        && d.message.contains(msg)
                ),
                "missing `{loc}: {msg}` in:\n{text}"
            );
        }
        assert_eq!(err.len(), expect.len(), "{text}");
    }

    #[test]
    fn legacy_include_runs_as_include_tasks_with_its_tags_and_vars() {
        let err = Loader::new(&TestCatalog, vec![])
            .load_playbook(&fixture("include-legacy"))
            .unwrap_err()
            .to_string();
        // A templated file name stays outside the subset, as for include_tasks.
        assert!(err.contains("main.yml:5:"), "{err}");
        assert!(
            err.contains("`ansible.builtin.include` with a templated file name"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let dir = tempfile::tempdir().unwrap();
        let src = fixture("include-legacy");
        let src = src.parent().unwrap();
        for f in ["site.yml", "roles/r/tasks/setup.yml"] {
            std::fs::create_dir_all(dir.path().join(f).parent().unwrap()).unwrap();
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let main = std::fs::read_to_string(src.join("roles/r/tasks/main.yml")).unwrap();
        let main: String = main.lines().take(4).map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join("roles/r/tasks/main.yml"), main).unwrap();
        let pb = Loader::new(&TestCatalog, vec![])
            .load_playbook(&dir.path().join("site.yml"))
            .unwrap();
        let tasks = &pb.plays[0].tasks;
        assert_eq!(names(tasks), vec!["r : in setup", "r : after"]);
        assert_eq!(tasks[0].tags, vec!["configuration", "setup"]);
        assert_eq!(tasks[0].vars["port"], "81");
        assert_eq!(tasks[0].when, vec![Value::from("do_it")]);
        assert!(tasks[1].tags.is_empty() && !tasks[1].vars.contains_key("port"));
    }

    #[test]
    fn import_cycle_names_the_path() {
        let err = Loader::new(&TestCatalog, vec![])
            .load_playbook(&fixture("cycle"))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("import cycle:"), "{text}");
        assert!(
            text.contains("a.yml -> ") && text.contains("b.yml -> "),
            "{text}"
        );
    }
}
