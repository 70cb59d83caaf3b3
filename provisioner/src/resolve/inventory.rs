//! Raw inventory → [`Inventory`], the way Ansible's `InventoryData` builds it: hosts and groups
//! in the order they are met, `:children` declared before or after the group, cycles refused,
//! `all`/`ungrouped` reconciled at the end, vars directories attached per source.
//!
//! Every problem is collected (Ansible stops at the first); each has file:line.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, Loc};
use crate::model::inventory::{Group, Host, Inventory};
use crate::model::pattern::expand_host_pattern;
use crate::model::vars::{combine_into, Vars};
use crate::raw::inventory::{
    read_sources, read_vars_dirs, IniFile, IniLine, RawInventory, RawInventoryFile, SectionKind,
    VarsDirs, VarsFile, YamlFile,
};
use crate::yaml::{Node, Value as Y};

/// Load an inventory from one source (a file or a directory of files).
pub fn load(path: &Path) -> Result<Inventory, Diagnostics> {
    load_sources(&[path.to_path_buf()])
}

/// Load an inventory from several sources (`-i a -i b`), merged in order.
pub fn load_sources(sources: &[PathBuf]) -> Result<Inventory, Diagnostics> {
    let mut diags = Diagnostics::new();
    let raw = read_sources(sources, &mut diags);
    let inv = resolve(&raw, &mut diags);
    diags.into_result(inv)
}

/// Attach `group_vars/` and `host_vars/` found next to a playbook (levels 5, 7 and 10).
pub fn load_playbook_vars(inv: &mut Inventory, playbook_dir: &Path) -> Result<(), Diagnostics> {
    let mut diags = Diagnostics::new();
    let dirs = read_vars_dirs(playbook_dir);
    for g in inv.groups.values_mut() {
        g.playbook_vars = vars_for(&dirs.group_vars, &g.name, &mut diags);
    }
    for h in inv.hosts.values_mut() {
        h.playbook_vars = vars_for(&dirs.host_vars, &h.name, &mut diags);
    }
    diags.into_result(())
}

/// Turn raw files into the model, pushing every problem into `diags`.
pub fn resolve(raw: &RawInventory, diags: &mut Diagnostics) -> Inventory {
    let mut b = Builder::new();
    for f in &raw.files {
        match f {
            RawInventoryFile::Ini(ini) => b.ini(ini, diags),
            RawInventoryFile::Yaml(y) => b.yaml_file(y, diags),
        }
    }
    b.reconcile();
    let mut inv = b.finish();
    attach_vars_dirs(&mut inv, &raw.vars_dirs, diags);
    inv
}

fn attach_vars_dirs(inv: &mut Inventory, dirs: &[VarsDirs], diags: &mut Diagnostics) {
    for g in inv.groups.values_mut() {
        g.dir_vars = dirs
            .iter()
            .map(|d| vars_for(&d.group_vars, &g.name, diags))
            .collect();
    }
    for h in inv.hosts.values_mut() {
        h.dir_vars = dirs
            .iter()
            .map(|d| vars_for(&d.host_vars, &h.name, diags))
            .collect();
    }
}

fn vars_for(
    dir: &std::collections::BTreeMap<String, Vec<VarsFile>>,
    name: &str,
    diags: &mut Diagnostics,
) -> Vars {
    let mut out = Vars::new();
    for f in dir.get(name).map(Vec::as_slice).unwrap_or_default() {
        match &f.content {
            Err(d) => diags.push(d.clone()),
            Ok(None) => {}
            Ok(Some(node)) => match node.to_json() {
                Value::Object(m) => combine_into(&mut out, m),
                // Ansible skips falsy data (`if new_data:`) and fails on anything else.
                Value::Null | Value::Bool(false) => {}
                Value::String(s) if s.is_empty() => {}
                Value::Array(a) if a.is_empty() => {}
                Value::Number(n) if n.as_f64() == Some(0.0) => {}
                _ => diags.error(
                    &node.loc,
                    format!("a vars file must hold a mapping, not {}", node.kind()),
                ),
            },
        }
    }
    out
}

/// A group named before it is defined (INI `[g:vars]` or a `:children` entry).
struct Pending {
    loc: Loc,
    kind: SectionKind,
    parents: Vec<String>,
}

struct Builder {
    hosts: IndexMap<String, Host>,
    groups: IndexMap<String, Group>,
    warnings: Vec<Diagnostic>,
}

impl Builder {
    fn new() -> Self {
        let mut b = Builder {
            hosts: IndexMap::new(),
            groups: IndexMap::new(),
            warnings: Vec::new(),
        };
        b.add_group("all", None);
        b.add_group("ungrouped", None);
        b.link("all", "ungrouped");
        b
    }

    fn add_group(&mut self, name: &str, loc: Option<&Loc>) {
        if !self.groups.contains_key(name) {
            if !is_valid_var_name(name) {
                let msg = format!("invalid character(s) in group name `{name}` (Ansible keeps it but warns; it cannot be used as a variable name)");
                self.warnings.push(Diagnostic::new(loc.cloned(), msg));
            }
            self.groups.insert(
                name.to_string(),
                Group {
                    name: name.to_string(),
                    loc: loc.cloned(),
                    priority: 1,
                    ..Group::default()
                },
            );
        }
    }

    /// Add `host` (creating it if new) to `group`. The port only applies to a new host.
    fn add_host(&mut self, name: &str, group: &str, port: Option<u64>, loc: &Loc) {
        if !self.hosts.contains_key(name) {
            let mut h = Host {
                name: name.to_string(),
                loc: Some(loc.clone()),
                inventory_file: Some(loc.file.to_string()),
                ..Host::default()
            };
            if let Some(p) = port {
                h.vars.insert("ansible_port".into(), Value::from(p));
            }
            self.hosts.insert(name.to_string(), h);
        }
        let g = self.groups.get_mut(group);
        if let Some(g) = g {
            if !g.hosts.iter().any(|x| x == name) {
                g.hosts.push(name.to_string());
                if let Some(h) = self.hosts.get_mut(name) {
                    h.direct_groups.push(group.to_string());
                }
            }
        }
    }

    fn ancestors(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut stack = vec![group.to_string()];
        while let Some(g) = stack.pop() {
            if let Some(gr) = self.groups.get(&g) {
                for p in &gr.parents {
                    if !out.contains(p) {
                        out.push(p.clone());
                        stack.push(p.clone());
                    }
                }
            }
        }
        out
    }

    /// Make `child` a child group of `parent`, refusing cycles (Ansible's messages).
    fn add_child(&mut self, parent: &str, child: &str, loc: &Loc, diags: &mut Diagnostics) {
        if parent == child {
            diags.error(loc, format!("group `{child}` cannot be a child of itself"));
            return;
        }
        if self.ancestors(parent).iter().any(|a| a == child) {
            diags.error(
                loc,
                format!("Adding group '{child}' as child to '{parent}' creates a recursive dependency loop."),
            );
            return;
        }
        self.link(parent, child);
    }

    fn link(&mut self, parent: &str, child: &str) {
        if let Some(p) = self.groups.get_mut(parent) {
            if !p.children.iter().any(|c| c == child) {
                p.children.push(child.to_string());
            }
        }
        if let Some(c) = self.groups.get_mut(child) {
            if !c.parents.iter().any(|p| p == parent) {
                c.parents.push(parent.to_string());
            }
        }
    }

    fn set_group_var(
        &mut self,
        group: &str,
        key: &str,
        value: Value,
        loc: &Loc,
        diags: &mut Diagnostics,
    ) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if key == "ansible_group_priority" {
            match py_int(&value) {
                Some(p) => g.priority = p,
                None if value.is_null() => {}
                None => diags.error(
                    loc,
                    format!("ansible_group_priority must be an integer, got {value}"),
                ),
            }
        } else {
            g.vars.insert(key.to_string(), value);
        }
    }

    fn set_host_var(&mut self, host: &str, key: &str, value: Value) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.vars.insert(key.to_string(), value);
        }
    }

    // ---- INI (Ansible's ini plugin `_parse`)

    fn ini(&mut self, f: &IniFile, diags: &mut Diagnostics) {
        let mut pending: IndexMap<String, Pending> = IndexMap::new();
        let mut group = "ungrouped".to_string();
        for line in &f.lines {
            match line {
                IniLine::Section {
                    group: g,
                    kind,
                    loc,
                } => {
                    group = g.clone();
                    if !self.groups.contains_key(g) {
                        if *kind == SectionKind::Vars && !pending.contains_key(g) {
                            pending.insert(
                                g.clone(),
                                Pending {
                                    loc: loc.clone(),
                                    kind: SectionKind::Vars,
                                    parents: Vec::new(),
                                },
                            );
                        }
                        self.add_group(g, Some(loc));
                    }
                    if *kind != SectionKind::Vars {
                        match pending.get(g).map(|p| p.kind) {
                            Some(SectionKind::Children) => {
                                self.add_pending_children(g, &mut pending, diags);
                            }
                            Some(SectionKind::Vars) => {
                                pending.shift_remove(g);
                            }
                            _ => {}
                        }
                    }
                }
                IniLine::Host { pattern, vars, loc } => match expand_host_pattern(pattern) {
                    Ok((names, port)) => {
                        for n in names {
                            if n.is_empty() {
                                diags.error(loc, "Invalid empty host name provided");
                                continue;
                            }
                            self.add_host(&n, &group, port, loc);
                            for (k, v) in vars {
                                self.set_host_var(&n, k, v.clone());
                            }
                        }
                    }
                    Err(e) => diags.error(loc, e),
                },
                IniLine::Var { key, value, loc } => {
                    self.set_group_var(&group, key, value.clone(), loc, diags)
                }
                IniLine::Child { name, loc } => {
                    if self.groups.contains_key(name) {
                        self.add_child(&group, name, loc, diags);
                    } else {
                        pending
                            .entry(name.clone())
                            .or_insert_with(|| Pending {
                                loc: loc.clone(),
                                kind: SectionKind::Children,
                                parents: Vec::new(),
                            })
                            .parents
                            .push(group.clone());
                    }
                }
            }
        }
        for (name, p) in pending {
            match p.kind {
                SectionKind::Vars => diags.error(
                    &p.loc,
                    format!("Section [{name}:vars] not valid for undefined group: {name}"),
                ),
                _ => {
                    let parent = p.parents.last().cloned().unwrap_or_default();
                    diags.error(
                        &p.loc,
                        format!("Section [{parent}:children] includes undefined group: {name}"),
                    );
                }
            }
        }
    }

    fn add_pending_children(
        &mut self,
        group: &str,
        pending: &mut IndexMap<String, Pending>,
        diags: &mut Diagnostics,
    ) {
        let Some(p) = pending.get(group) else {
            return;
        };
        let (parents, loc) = (p.parents.clone(), p.loc.clone());
        for parent in parents {
            self.add_child(&parent, group, &loc, diags);
            if pending
                .get(&parent)
                .is_some_and(|pp| pp.kind == SectionKind::Children)
            {
                self.add_pending_children(&parent, pending, diags);
            }
        }
        pending.shift_remove(group);
    }

    // ---- YAML (Ansible's yaml plugin)

    fn yaml_file(&mut self, f: &YamlFile, diags: &mut Diagnostics) {
        let Some(root) = &f.root else {
            diags.error(&Loc::file(f.path.clone()), "Parsed empty YAML file");
            return;
        };
        let Some(map) = root.as_map() else {
            diags.error(
                &root.loc,
                format!(
                    "YAML inventory has invalid structure, it should be a dictionary, got: {}",
                    root.kind()
                ),
            );
            return;
        };
        if root.get("plugin").is_some_and(|p| !p.is_null()) {
            diags.error(
                &root.loc,
                "inventory plugin configuration files are not supported (only static YAML and INI inventories)",
            );
            return;
        }
        for (k, v) in map {
            self.yaml_group(k, v, diags);
        }
    }

    /// Returns the group's name, or `None` when it could not be added.
    fn yaml_group(&mut self, key: &Node, data: &Node, diags: &mut Diagnostics) -> Option<String> {
        let Some(name) = key.as_str().filter(|s| !s.is_empty()) else {
            diags.error(
                &key.loc,
                format!(
                    "Invalid group name supplied, expected a string but got {}",
                    key.kind()
                ),
            );
            return None;
        };
        let name = name.to_string();
        match &data.value {
            Y::Null => {
                self.add_group(&name, Some(&key.loc));
                return Some(name);
            }
            Y::Map(_) => {}
            _ => {
                self.warnings.push(Diagnostic::at(
                    &data.loc,
                    format!("Skipping '{name}' as this is not a valid group definition"),
                ));
                return Some(name);
            }
        }
        self.add_group(&name, Some(&key.loc));
        let Some(pairs) = data.as_map() else {
            return Some(name);
        };
        // A section given as a string is a one-entry mapping; anything else but a mapping or
        // null is an error for the three known sections.
        for section in ["vars", "children", "hosts"] {
            if let Some(s) = data.get(section) {
                if !matches!(s.value, Y::Map(_) | Y::Null | Y::Str(_)) {
                    diags.error(
                        &s.loc,
                        format!("Invalid \"{section}\" entry for \"{name}\" group, requires a dictionary, found {} instead.", s.kind()),
                    );
                }
            }
        }
        for (k, v) in pairs {
            let key_name = k.key_string().unwrap_or_default();
            let is_section = matches!(key_name.as_str(), "vars" | "children" | "hosts");
            let entries: Vec<(Node, Node)> = match &v.value {
                Y::Str(s) if is_section => vec![(
                    Node::new(Y::Str(s.clone()), v.loc.clone()),
                    Node::new(Y::Null, v.loc.clone()),
                )],
                Y::Map(m) => m.clone(),
                Y::Null => continue,
                _ => {
                    if !is_section {
                        self.warnings.push(Diagnostic::at(
                            &k.loc,
                            format!("Skipping key ({key_name}) in group ({name}) as it is not a mapping, it is {}", v.kind()),
                        ));
                    }
                    continue;
                }
            };
            match key_name.as_str() {
                "vars" => {
                    for (vk, vv) in &entries {
                        let vk = vk.key_string().unwrap_or_default();
                        self.set_group_var(&name, &vk, vv.to_json(), &vv.loc, diags);
                    }
                }
                "children" => {
                    for (ck, cv) in &entries {
                        if let Some(child) = self.yaml_group(ck, cv, diags) {
                            if self.groups.contains_key(&child) {
                                self.add_child(&name, &child, &ck.loc, diags);
                            } else if self.hosts.contains_key(&child) {
                                self.add_host(&child, &name, None, &ck.loc);
                            } else {
                                diags.error(&ck.loc, format!("{child} is not a known host nor group"));
                            }
                        }
                    }
                }
                "hosts" => {
                    for (hk, hv) in &entries {
                        self.yaml_host(&name, hk, hv, diags);
                    }
                }
                _ => self.warnings.push(Diagnostic::at(
                    &k.loc,
                    format!("Skipping unexpected key ({key_name}) in group ({name}), only \"vars\", \"children\" and \"hosts\" are valid"),
                )),
            }
        }
        Some(name)
    }

    fn yaml_host(&mut self, group: &str, key: &Node, data: &Node, diags: &mut Diagnostics) {
        let Some(pattern) = key.as_str() else {
            diags.error(
                &key.loc,
                format!(
                    "Host pattern {} must be a string. Enclose integers/floats in quotation marks.",
                    key.key_string().unwrap_or_default()
                ),
            );
            return;
        };
        let vars: &[(Node, Node)] = match &data.value {
            Y::Null => &[],
            Y::Map(m) => m,
            // Ansible treats any falsy value as "no vars".
            Y::Bool(false) | Y::Int(0) => &[],
            Y::Str(s) if s.is_empty() => &[],
            _ => {
                diags.error(
                    &data.loc,
                    format!(
                        "the vars of host `{pattern}` must be a mapping, not {}",
                        data.kind()
                    ),
                );
                return;
            }
        };
        match expand_host_pattern(pattern) {
            Ok((names, port)) => {
                for n in names {
                    self.add_host(&n, group, port, &key.loc);
                    for (vk, vv) in vars {
                        self.set_host_var(&n, &vk.key_string().unwrap_or_default(), vv.to_json());
                    }
                }
            }
            Err(e) => diags.error(&key.loc, e),
        }
    }

    // ---- after all sources (Ansible's `reconcile_inventory`)

    fn reconcile(&mut self) {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for g in &names {
            if g != "all" && self.groups.get(g).is_some_and(|gr| gr.parents.is_empty()) {
                self.link("all", g);
            }
        }
        let hosts: Vec<String> = self.hosts.keys().cloned().collect();
        for h in &hosts {
            let direct = self
                .hosts
                .get(h)
                .map(|x| x.direct_groups.clone())
                .unwrap_or_default();
            let in_ungrouped = direct.iter().any(|g| g == "ungrouped");
            let others = direct.iter().any(|g| g != "all" && g != "ungrouped");
            if in_ungrouped && others {
                if let Some(g) = self.groups.get_mut("ungrouped") {
                    g.hosts.retain(|x| x != h);
                }
                if let Some(host) = self.hosts.get_mut(h) {
                    host.direct_groups.retain(|g| g != "ungrouped");
                }
            } else if !in_ungrouped && !others {
                let loc = self
                    .hosts
                    .get(h)
                    .and_then(|x| x.loc.clone())
                    .unwrap_or_else(|| Loc::file(""));
                self.add_host(h, "ungrouped", None, &loc);
            }
            if self.groups.contains_key(h) {
                let loc = self.hosts.get(h).and_then(|x| x.loc.clone());
                self.warnings.push(Diagnostic::new(
                    loc,
                    format!("Found both group and host with same name: {h}"),
                ));
            }
        }
        self.compute_depths();
    }

    /// Depth = longest path from `all`, as Ansible's incremental bookkeeping ends up with.
    fn compute_depths(&mut self) {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        let mut depth: IndexMap<String, u32> = names.iter().map(|n| (n.clone(), 0)).collect();
        // Relax edges until stable; the graph is acyclic (cycles were refused).
        for _ in 0..=names.len() {
            let mut changed = false;
            for g in self.groups.values() {
                let d = depth.get(&g.name).copied().unwrap_or(0);
                for c in &g.children {
                    if let Some(cd) = depth.get_mut(c) {
                        if *cd < d + 1 {
                            *cd = d + 1;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        for (n, d) in depth {
            if let Some(g) = self.groups.get_mut(&n) {
                g.depth = d;
            }
        }
    }

    fn finish(self) -> Inventory {
        Inventory {
            hosts: self.hosts,
            groups: self.groups,
            warnings: self.warnings,
        }
    }
}

/// Python's `int(value)` for what a group priority may hold.
fn py_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64)),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Ansible's `INVALID_VARIABLE_NAMES` (`^[\d\W]|[^\w]`) does not match.
fn is_valid_var_name(name: &str) -> bool {
    let mut cs = name.chars();
    match cs.next() {
        Some(c) if c.is_alphabetic() || c == '_' => cs.all(|c| c.is_alphanumeric() || c == '_'),
        _ => false,
    }
}
