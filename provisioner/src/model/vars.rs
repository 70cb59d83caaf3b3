//! Variable precedence, as Ansible defines it (docs/variables.md has the table).
//!
//! A [`VarStack`] holds one mapping per [`VarLevel`]. [`VarStack::resolve`] applies the levels
//! from lowest to highest; a key at a higher level replaces the whole value of a lower one
//! (Ansible's default `hash_behaviour = replace`: no deep merge of dicts).

use serde_json::{Map, Value};

pub type Vars = Map<String, Value>;

/// Ansible's 22 precedence levels, lowest first. The discriminant is the row number in the
/// documentation's list. The inventory fills 3–10; the engine fills the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VarLevel {
    /// 1. Command line values such as `-u user` (not variables; kept for the table's numbering).
    CommandLineValues = 1,
    /// 2. Role defaults (`defaults/main.yml`).
    RoleDefaults,
    /// 3. Inventory file group vars (`all` first, then groups by depth, priority, name).
    InventoryGroupVars,
    /// 4. `group_vars/all` next to the inventory.
    InventoryGroupVarsAll,
    /// 5. `group_vars/all` next to the playbook.
    PlaybookGroupVarsAll,
    /// 6. `group_vars/<group>` next to the inventory.
    InventoryGroupVarsDir,
    /// 7. `group_vars/<group>` next to the playbook.
    PlaybookGroupVarsDir,
    /// 8. Inventory file host vars (inline `k=v`, YAML host mapping, `host:port`).
    InventoryHostVars,
    /// 9. `host_vars/<host>` next to the inventory.
    InventoryHostVarsDir,
    /// 10. `host_vars/<host>` next to the playbook.
    PlaybookHostVarsDir,
    /// 11. Host facts and cached `set_fact`s.
    Facts,
    /// 12. Play `vars:`.
    PlayVars,
    /// 13. Play `vars_prompt:`.
    PlayVarsPrompt,
    /// 14. Play `vars_files:`.
    PlayVarsFiles,
    /// 15. Role vars (`vars/main.yml`).
    RoleVars,
    /// 16. Block `vars:`.
    BlockVars,
    /// 17. Task `vars:`.
    TaskVars,
    /// 18. `include_vars`.
    IncludeVars,
    /// 19. `set_fact` and registered vars.
    SetFacts,
    /// 20. Role (and `include_role`) params.
    RoleParams,
    /// 21. Include params.
    IncludeParams,
    /// 22. Extra vars (`-e`): always win.
    ExtraVars,
}

impl VarLevel {
    /// Every level, lowest precedence first.
    pub const ALL: [VarLevel; 22] = [
        VarLevel::CommandLineValues,
        VarLevel::RoleDefaults,
        VarLevel::InventoryGroupVars,
        VarLevel::InventoryGroupVarsAll,
        VarLevel::PlaybookGroupVarsAll,
        VarLevel::InventoryGroupVarsDir,
        VarLevel::PlaybookGroupVarsDir,
        VarLevel::InventoryHostVars,
        VarLevel::InventoryHostVarsDir,
        VarLevel::PlaybookHostVarsDir,
        VarLevel::Facts,
        VarLevel::PlayVars,
        VarLevel::PlayVarsPrompt,
        VarLevel::PlayVarsFiles,
        VarLevel::RoleVars,
        VarLevel::BlockVars,
        VarLevel::TaskVars,
        VarLevel::IncludeVars,
        VarLevel::SetFacts,
        VarLevel::RoleParams,
        VarLevel::IncludeParams,
        VarLevel::ExtraVars,
    ];

    /// The row number in Ansible's documented list (1 = lowest).
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// Whether `provisioner` fills this level (see docs/variables.md).
    pub fn supported(self) -> bool {
        !matches!(
            self,
            VarLevel::CommandLineValues | VarLevel::PlayVarsPrompt | VarLevel::IncludeParams
        )
    }
}

/// One mapping per precedence level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VarStack {
    levels: Vec<(VarLevel, Vars)>,
}

impl VarStack {
    pub fn new() -> Self {
        VarStack::default()
    }

    /// Set the vars of `level`, replacing what it held.
    pub fn set(&mut self, level: VarLevel, vars: Vars) {
        match self.levels.binary_search_by_key(&level, |(l, _)| *l) {
            Ok(i) => self.levels[i].1 = vars,
            Err(i) => self.levels.insert(i, (level, vars)),
        }
    }

    /// Add vars to `level`; a key already there is replaced (in place, keeping its position).
    pub fn merge(&mut self, level: VarLevel, vars: Vars) {
        match self.levels.binary_search_by_key(&level, |(l, _)| *l) {
            Ok(i) => combine_into(&mut self.levels[i].1, vars),
            Err(i) => self.levels.insert(i, (level, vars)),
        }
    }

    /// The vars set at `level`, if any.
    pub fn get(&self, level: VarLevel) -> Option<&Vars> {
        self.levels
            .binary_search_by_key(&level, |(l, _)| *l)
            .ok()
            .map(|i| &self.levels[i].1)
    }

    /// All levels applied lowest first; higher levels replace keys whole.
    pub fn resolve(&self) -> Vars {
        resolve_levels(&self.levels.iter().map(|(_, v)| v).collect::<Vec<_>>())
    }

    /// The levels set, lowest first.
    pub fn levels(&self) -> impl Iterator<Item = (VarLevel, &Vars)> {
        self.levels.iter().map(|(l, v)| (*l, v))
    }

    /// The level a variable's winning value comes from.
    pub fn source_of(&self, key: &str) -> Option<VarLevel> {
        self.levels
            .iter()
            .rev()
            .find(|(_, v)| v.contains_key(key))
            .map(|(l, _)| *l)
    }
}

/// Levels given lowest first, applied as [`combine_into`] would apply them one after the other
/// (a key keeps the position of its first appearance and takes its highest level's value), but
/// cloning only each key's winning value: the stack is resolved for every task on every host.
pub fn resolve_levels(levels: &[&Vars]) -> Vars {
    let mut out = Vars::new();
    for (i, vars) in levels.iter().enumerate() {
        for k in vars.keys() {
            if out.contains_key(k) {
                continue;
            }
            if let Some(v) = levels[i..].iter().rev().find_map(|l| l.get(k)) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The index of the highest level that sets `key`.
pub fn winner_of(levels: &[&Vars], key: &str) -> Option<usize> {
    levels.iter().rposition(|l| l.contains_key(key))
}

/// Ansible's `combine_vars` with `hash_behaviour = replace`: `dict.update`. An existing key keeps
/// its position and takes the new value; new keys are appended.
pub fn combine_into(into: &mut Vars, new: Vars) {
    for (k, v) in new {
        into.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolving_by_reference_is_applying_each_level_in_turn() {
        let m = |v: Value| v.as_object().unwrap().clone();
        let levels = [
            m(json!({"a": 1, "b": {"x": 1}, "c": 3})),
            m(json!({"d": 4, "b": {"y": 2}})),
            m(json!({})),
            m(json!({"a": [9], "e": 5, "d": null})),
        ];
        let mut applied = Vars::new();
        for l in &levels {
            combine_into(&mut applied, l.clone());
        }
        let refs: Vec<&Vars> = levels.iter().collect();
        let resolved = resolve_levels(&refs);
        assert_eq!(resolved, applied);
        let order = |v: &Vars| v.keys().cloned().collect::<Vec<_>>();
        assert_eq!(order(&resolved), order(&applied), "same key order");
        assert_eq!(winner_of(&refs, "d"), Some(3));
        assert_eq!(winner_of(&refs, "c"), Some(0));
        assert_eq!(winner_of(&refs, "zz"), None);
    }

    fn vars(v: Value) -> Vars {
        match v {
            Value::Object(m) => m,
            _ => Vars::new(),
        }
    }

    #[test]
    fn levels_are_ordered_like_ansibles_documented_list() {
        assert_eq!(VarLevel::ALL.len(), 22);
        for (i, l) in VarLevel::ALL.iter().enumerate() {
            assert_eq!(l.rank() as usize, i + 1);
        }
        assert!(VarLevel::RoleDefaults < VarLevel::InventoryGroupVars);
        assert!(VarLevel::PlaybookGroupVarsDir < VarLevel::InventoryHostVars);
        assert!(VarLevel::Facts < VarLevel::PlayVars);
        assert!(VarLevel::RoleVars < VarLevel::TaskVars);
        assert!(VarLevel::SetFacts < VarLevel::ExtraVars);
    }

    #[test]
    fn higher_level_wins_regardless_of_set_order() {
        let mut s = VarStack::new();
        s.set(VarLevel::ExtraVars, vars(json!({"x": "extra"})));
        s.set(
            VarLevel::RoleDefaults,
            vars(json!({"x": "default", "y": 1})),
        );
        s.set(VarLevel::PlayVars, vars(json!({"x": "play"})));
        let r = s.resolve();
        assert_eq!(r["x"], json!("extra"));
        assert_eq!(r["y"], json!(1));
        assert_eq!(s.source_of("x"), Some(VarLevel::ExtraVars));
        assert_eq!(s.source_of("y"), Some(VarLevel::RoleDefaults));
    }

    #[test]
    fn dicts_are_replaced_whole_not_deep_merged() {
        let mut s = VarStack::new();
        s.set(VarLevel::RoleDefaults, vars(json!({"d": {"a": 1, "b": 2}})));
        s.set(VarLevel::TaskVars, vars(json!({"d": {"b": 3}})));
        assert_eq!(s.resolve()["d"], json!({"b": 3}));
    }

    #[test]
    fn set_replaces_a_level_and_merge_adds_to_it() {
        let mut s = VarStack::new();
        s.set(VarLevel::PlayVars, vars(json!({"a": 1})));
        s.set(VarLevel::PlayVars, vars(json!({"b": 2})));
        assert_eq!(s.resolve(), vars(json!({"b": 2})));
        s.merge(VarLevel::PlayVars, vars(json!({"c": 3, "b": 4})));
        assert_eq!(s.resolve(), vars(json!({"b": 4, "c": 3})));
    }

    #[test]
    fn overridden_keys_keep_their_first_position_like_python_dict_update() {
        let mut s = VarStack::new();
        s.set(VarLevel::RoleDefaults, vars(json!({"a": 1, "b": 2})));
        s.set(VarLevel::PlayVars, vars(json!({"c": 3, "a": 9})));
        let keys: Vec<_> = s.resolve().keys().cloned().collect();
        assert_eq!(keys, vec!["a", "b", "c"]);
    }
}
