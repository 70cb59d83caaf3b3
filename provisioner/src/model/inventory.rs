//! The resolved inventory: hosts, groups, their variables, and the queries the engine needs
//! (group membership, Ansible's magic variables, host vars by precedence, connection settings).
//!
//! Order is deterministic and follows Ansible: hosts and groups in the order they were first
//! met in the sources, a group's hosts in Ansible's `Group.get_hosts()` order (its own hosts,
//! then its children's, breadth first).

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::{IndexMap, IndexSet};
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, Loc};
use crate::model::vars::{combine_into, VarLevel, VarStack, Vars};
use crate::secret::Secret;
use crate::transport::{ConnectTarget, HostKeyPolicy};

/// A host as the inventory defines it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Host {
    pub name: String,
    /// Where the host was first defined.
    pub loc: Option<Loc>,
    /// Level 8: inline vars of the inventory file (including `ansible_port` from `host:port`).
    pub vars: Vars,
    /// Level 9: `host_vars/` next to each inventory source, one entry per source, in order.
    pub dir_vars: Vec<Vars>,
    /// Level 10: `host_vars/` next to the playbook.
    pub playbook_vars: Vars,
    /// Groups the host is directly in, in the order it was added to them.
    pub direct_groups: Vec<String>,
    /// The inventory file that first defined the host (Ansible's `inventory_file`).
    pub inventory_file: Option<String>,
}

/// A group as the inventory defines it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Group {
    pub name: String,
    pub loc: Option<Loc>,
    /// Level 3: vars from the inventory file.
    pub vars: Vars,
    /// Levels 4/6: `group_vars/` next to each inventory source, one entry per source.
    pub dir_vars: Vec<Vars>,
    /// Levels 5/7: `group_vars/` next to the playbook.
    pub playbook_vars: Vars,
    /// `ansible_group_priority` (default 1). Not a variable: it only orders merging.
    pub priority: i64,
    /// Longest path from `all` (which is 0).
    pub depth: u32,
    pub children: Vec<String>,
    pub parents: Vec<String>,
    /// Hosts directly in this group, in order.
    pub hosts: Vec<String>,
}

/// The whole inventory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub hosts: IndexMap<String, Host>,
    pub groups: IndexMap<String, Group>,
    /// Things Ansible warns about (skipped YAML keys, odd group names, ...). Not errors.
    pub warnings: Vec<Diagnostic>,
}

impl Inventory {
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Add a group that the inventory does not define, as a child of `all` holding `hosts`
    /// (known hosts only, in the given order). Used by stack runs for default groups
    /// (`zookeeper` = the masters, ...). Returns false, changing nothing, if the group exists.
    pub fn add_implicit_group(&mut self, name: &str, hosts: &[String]) -> bool {
        if self.groups.contains_key(name) {
            return false;
        }
        let members: Vec<String> = hosts
            .iter()
            .filter(|h| self.hosts.contains_key(h.as_str()))
            .cloned()
            .collect();
        for h in &members {
            if let Some(host) = self.hosts.get_mut(h) {
                host.direct_groups.push(name.to_string());
            }
        }
        self.groups.insert(
            name.to_string(),
            Group {
                name: name.to_string(),
                priority: 1,
                depth: 1,
                parents: vec!["all".to_string()],
                hosts: members,
                ..Group::default()
            },
        );
        if let Some(all) = self.groups.get_mut("all") {
            all.children.push(name.to_string());
        }
        true
    }

    /// Host names in inventory order (the order of Ansible's `groups['all']`).
    pub fn host_names(&self) -> Vec<&str> {
        self.group_hosts("all")
    }

    /// Every group `host` belongs to, directly or through a child group, including `all`, in
    /// inventory (group creation) order.
    pub fn host_groups(&self, host: &str) -> Vec<&str> {
        let Some(h) = self.hosts.get(host) else {
            return Vec::new();
        };
        let mut set: IndexSet<&str> = IndexSet::new();
        let mut stack: Vec<&str> = h.direct_groups.iter().map(String::as_str).collect();
        while let Some(g) = stack.pop() {
            if set.insert(g) {
                if let Some(group) = self.groups.get(g) {
                    stack.extend(group.parents.iter().map(String::as_str));
                }
            }
        }
        set.insert("all");
        let mut out: Vec<&str> = set.into_iter().collect();
        out.sort_by_key(|g| self.groups.get_index_of(*g).unwrap_or(usize::MAX));
        out
    }

    /// Ansible's `group_names`: the host's groups, sorted, without `all` (but with `ungrouped`
    /// when the host is in it).
    pub fn group_names(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .host_groups(host)
            .into_iter()
            .filter(|g| *g != "all")
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// Hosts of a group and of its descendants, in Ansible's `Group.get_hosts()` order.
    pub fn group_hosts(&self, group: &str) -> Vec<&str> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        // The group, its children in order, then further generations breadth first.
        let mut ordered: Vec<&Group> = vec![g];
        let mut seen: IndexSet<&str> = IndexSet::from([g.name.as_str()]);
        let mut level: Vec<&Group> = vec![g];
        while !level.is_empty() {
            let mut next = Vec::new();
            for p in &level {
                for c in &p.children {
                    if let Some(cg) = self.groups.get(c) {
                        if seen.insert(cg.name.as_str()) {
                            ordered.push(cg);
                            next.push(cg);
                        }
                    }
                }
            }
            level = next;
        }
        let mut hosts: IndexSet<&str> = IndexSet::new();
        for g in ordered {
            for h in &g.hosts {
                hosts.insert(h.as_str());
            }
        }
        hosts.into_iter().collect()
    }

    /// Ansible's `groups` magic variable: every group (including `all` and `ungrouped`) to its
    /// hosts.
    pub fn groups_map(&self) -> IndexMap<String, Vec<String>> {
        self.groups
            .keys()
            .map(|g| {
                (
                    g.clone(),
                    self.group_hosts(g)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                )
            })
            .collect()
    }

    /// The host's groups other than `all`, in the order Ansible merges their vars:
    /// by depth, then `ansible_group_priority`, then name.
    pub fn sorted_groups(&self, host: &str) -> Vec<&Group> {
        let mut gs: Vec<&Group> = self
            .host_groups(host)
            .into_iter()
            .filter(|g| *g != "all")
            .filter_map(|g| self.groups.get(g))
            .collect();
        gs.sort_by(|a, b| (a.depth, a.priority, &a.name).cmp(&(b.depth, b.priority, &b.name)));
        gs
    }

    /// The inventory's precedence levels (3 to 10) for `host`. The engine adds the others.
    pub fn var_stack(&self, host: &str) -> VarStack {
        let mut stack = VarStack::new();
        let Some(h) = self.hosts.get(host) else {
            return stack;
        };
        let all = self.groups.get("all");
        let groups = self.sorted_groups(host);
        let sources = self
            .groups
            .values()
            .map(|g| g.dir_vars.len())
            .chain(self.hosts.values().map(|h| h.dir_vars.len()))
            .max()
            .unwrap_or(0);

        let mut l3 = all.map(|g| g.vars.clone()).unwrap_or_default();
        for g in &groups {
            combine_into(&mut l3, g.vars.clone());
        }
        stack.set(VarLevel::InventoryGroupVars, l3);

        let mut l4 = Vars::new();
        if let Some(all) = all {
            for v in &all.dir_vars {
                combine_into(&mut l4, v.clone());
            }
        }
        stack.set(VarLevel::InventoryGroupVarsAll, l4);
        stack.set(
            VarLevel::PlaybookGroupVarsAll,
            all.map(|g| g.playbook_vars.clone()).unwrap_or_default(),
        );

        // Per source, then per group: how Ansible's vars plugins are merged.
        let mut l6 = Vars::new();
        for src in 0..sources {
            for g in &groups {
                if let Some(v) = g.dir_vars.get(src) {
                    combine_into(&mut l6, v.clone());
                }
            }
        }
        stack.set(VarLevel::InventoryGroupVarsDir, l6);
        let mut l7 = Vars::new();
        for g in &groups {
            combine_into(&mut l7, g.playbook_vars.clone());
        }
        stack.set(VarLevel::PlaybookGroupVarsDir, l7);

        stack.set(VarLevel::InventoryHostVars, h.vars.clone());
        let mut l9 = Vars::new();
        for v in &h.dir_vars {
            combine_into(&mut l9, v.clone());
        }
        stack.set(VarLevel::InventoryHostVarsDir, l9);
        stack.set(VarLevel::PlaybookHostVarsDir, h.playbook_vars.clone());
        stack
    }

    /// The host's variables from the inventory alone (levels 3 to 10), as `ansible-inventory
    /// --host` shows them. Empty for an unknown host.
    pub fn host_vars(&self, host: &str) -> Vars {
        self.var_stack(host).resolve()
    }

    /// Ansible's magic variables for `host` that come from the inventory:
    /// `inventory_hostname`, `inventory_hostname_short`, `group_names`, `groups`,
    /// `inventory_file`, `inventory_dir`.
    pub fn magic_vars(&self, host: &str) -> Vars {
        let mut m = Vars::new();
        let short = if crate::model::pattern::is_ip_address(host) {
            host.to_string()
        } else {
            host.split('.').next().unwrap_or(host).to_string()
        };
        m.insert("inventory_hostname".into(), Value::from(host));
        m.insert("inventory_hostname_short".into(), Value::from(short));
        m.insert("group_names".into(), Value::from(self.group_names(host)));
        let groups: serde_json::Map<String, Value> = self
            .groups_map()
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        m.insert("groups".into(), Value::Object(groups));
        let file = self.hosts.get(host).and_then(|h| h.inventory_file.clone());
        let dir = file.as_deref().map(|f| {
            Path::new(f)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        });
        m.insert(
            "inventory_file".into(),
            file.map_or(Value::Null, Value::from),
        );
        m.insert("inventory_dir".into(), dir.map_or(Value::Null, Value::from));
        m
    }

    /// How to reach `host`, from its inventory vars. See [`HostConnection::from_vars`].
    pub fn connection(&self, host: &str) -> Result<HostConnection, Diagnostics> {
        let Some(h) = self.hosts.get(host) else {
            return Err(Diagnostic::new(None, format!("unknown host `{host}`")).into());
        };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        HostConnection::from_vars(host, h.loc.as_ref(), &self.host_vars(host), home.as_deref())
    }

    /// The SSH target for `host` (the first problem if its connection vars are invalid).
    pub fn connect_target(&self, host: &str) -> Result<ConnectTarget, Diagnostic> {
        self.connection(host).map(|c| c.target).map_err(|d| {
            d.0.into_iter()
                .next()
                .unwrap_or_else(|| Diagnostic::new(None, "invalid connection vars"))
        })
    }
}

/// Connection settings of one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConnection {
    pub target: ConnectTarget,
    /// `Some(user)` when `ansible_become` is true (`ansible_become_user`, default `root`).
    pub become_: Option<String>,
    /// `ansible_ssh_common_args` then `ansible_ssh_extra_args`, unparsed.
    pub ssh_args: Vec<String>,
    /// Connection vars whose value is a Jinja template (`{{ ... }}`). String fields keep the
    /// template text; `ansible_port` is left `None`. The engine templates the host's vars and
    /// calls [`HostConnection::from_vars`] again.
    pub templated: Vec<String>,
}

/// Ansible's default SSH connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

impl HostConnection {
    /// Build from (possibly templated) host vars. Static values are type-checked: the port must
    /// be an integer 1..=65535, booleans must be Ansible booleans, strings must be strings.
    /// `home` expands a leading `~` in the key file.
    pub fn from_vars(
        name: &str,
        loc: Option<&Loc>,
        vars: &Vars,
        home: Option<&Path>,
    ) -> Result<HostConnection, Diagnostics> {
        let mut diags = Diagnostics::new();
        let mut templated = Vec::new();
        let err = |diags: &mut Diagnostics, msg: String| {
            diags.push(Diagnostic::new(
                loc.cloned(),
                format!("host `{name}`: {msg}"),
            ));
        };
        // First of the names that is set (Ansible's aliases).
        let get = |names: &[&str]| -> Option<(String, &Value)> {
            names
                .iter()
                .find_map(|n| vars.get(*n).map(|v| (n.to_string(), v)))
        };
        let mut string_var = |diags: &mut Diagnostics, names: &[&str]| -> Option<String> {
            let (n, v) = get(names)?;
            match v {
                Value::Null => None,
                Value::String(s) => {
                    if is_template(s) {
                        templated.push(n);
                    }
                    Some(s.clone())
                }
                Value::Number(x) => Some(x.to_string()),
                other => {
                    err(
                        diags,
                        format!("`{n}` must be a string, not {}", kind(other)),
                    );
                    None
                }
            }
        };
        let address = string_var(&mut diags, &["ansible_host", "ansible_ssh_host"])
            .unwrap_or_else(|| name.to_string());
        let user = string_var(&mut diags, &["ansible_user", "ansible_ssh_user"]);
        let key = string_var(
            &mut diags,
            &["ansible_ssh_private_key_file", "ansible_private_key_file"],
        );
        let become_user = string_var(&mut diags, &["ansible_become_user"]);
        let password = string_var(
            &mut diags,
            &["ansible_become_password", "ansible_become_pass"],
        );
        let common = string_var(&mut diags, &["ansible_ssh_common_args"]);
        let extra = string_var(&mut diags, &["ansible_ssh_extra_args"]);

        let port = match get(&["ansible_port", "ansible_ssh_port"]) {
            None | Some((_, Value::Null)) => None,
            Some((n, v)) => {
                let parsed = match v {
                    Value::Number(x) => x.as_i64(),
                    Value::String(s) if is_template(s) => {
                        templated.push(n.clone());
                        None
                    }
                    Value::String(s) => s.trim().parse::<i64>().ok().or(Some(-1)),
                    _ => Some(-1),
                };
                match parsed {
                    Some(p) if (1..=65535).contains(&p) => u16::try_from(p).ok(),
                    Some(_) => {
                        err(
                            &mut diags,
                            format!("`{n}` must be an integer from 1 to 65535, got {v}"),
                        );
                        None
                    }
                    None => None,
                }
            }
        };

        let become_on = match get(&["ansible_become"]) {
            None => false,
            Some((n, v)) => match ansible_bool(v) {
                Some(b) => b,
                None if v.as_str().is_some_and(is_template) => {
                    templated.push(n);
                    false
                }
                None => {
                    err(&mut diags, format!("`{n}` must be a boolean, got {v}"));
                    false
                }
            },
        };

        let identity_files = key.map(|k| expand_tilde(&k, home)).into_iter().collect();
        let target = ConnectTarget {
            name: name.to_string(),
            address,
            port,
            user,
            identity_files,
            known_hosts: None,
            host_key_policy: HostKeyPolicy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            become_password: password.map(Secret::new),
            proxy_jump: None,
            alive_interval: None,
            alive_count_max: None,
        };
        let conn = HostConnection {
            target,
            become_: become_on.then(|| become_user.unwrap_or_else(|| "root".to_string())),
            ssh_args: [common, extra]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect(),
            templated,
        };
        diags.into_result(conn)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Ansible's `boolean()`: the workspace's one truthiness (see [`cluster_core::boolean`]).
pub use cluster_core::boolean as ansible_bool;

/// `~` or `~/x` → the home directory; anything else unchanged. A template is left alone.
pub fn expand_tilde(p: &str, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h.to_path_buf(),
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(&rest[1..]),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Vars {
        match v {
            Value::Object(m) => m,
            _ => Vars::new(),
        }
    }

    #[test]
    fn connection_reads_ansible_vars_and_expands_tilde() {
        let v = vars(json!({
            "ansible_host": "10.0.0.5", "ansible_port": "2222", "ansible_user": "ops",
            "ansible_ssh_private_key_file": "~/.ssh/id_ed25519", "ansible_become": "yes",
            "ansible_become_pass": "pw", "ansible_ssh_common_args": "-o ProxyJump=bastion",
            "ansible_ssh_extra_args": ""
        }));
        let c = HostConnection::from_vars("h1", None, &v, Some(Path::new("/home/ops"))).unwrap();
        assert_eq!(c.target.address, "10.0.0.5");
        assert_eq!(c.target.port, Some(2222));
        assert_eq!(c.target.user.as_deref(), Some("ops"));
        assert_eq!(
            c.target.identity_files,
            vec![PathBuf::from("/home/ops/.ssh/id_ed25519")]
        );
        assert_eq!(c.become_.as_deref(), Some("root"));
        assert_eq!(
            c.target.become_password.as_ref().map(Secret::expose),
            Some("pw")
        );
        assert_eq!(c.ssh_args, vec!["-o ProxyJump=bastion"]);
        assert!(c.templated.is_empty());
    }

    #[test]
    fn connection_defaults_to_the_inventory_name() {
        let c = HostConnection::from_vars("web1", None, &Vars::new(), None).unwrap();
        assert_eq!(c.target.address, "web1");
        assert_eq!(c.target.port, None);
        assert_eq!(c.become_, None);
    }

    #[test]
    fn bad_static_connection_vars_are_all_reported() {
        let v =
            vars(json!({"ansible_port": 70000, "ansible_become": "maybe", "ansible_user": [1]}));
        let e = HostConnection::from_vars("h", None, &v, None).unwrap_err();
        assert_eq!(e.len(), 3, "{e}");
        let v = vars(json!({"ansible_port": "ssh"}));
        assert!(HostConnection::from_vars("h", None, &v, None).is_err());
    }

    #[test]
    fn templated_connection_vars_are_left_for_the_engine() {
        let v = vars(json!({"ansible_host": "{{ ip }}", "ansible_port": "{{ p }}"}));
        let c = HostConnection::from_vars("h", None, &v, None).unwrap();
        assert_eq!(c.target.address, "{{ ip }}");
        assert_eq!(c.target.port, None);
        assert_eq!(c.templated, vec!["ansible_host", "ansible_port"]);
    }
}
