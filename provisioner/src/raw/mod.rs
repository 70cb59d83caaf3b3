//! Raw input: a faithful mirror of the files (inventory, playbooks, roles), with locations.
//! No defaults are applied and nothing is resolved here; `resolve` turns this into the model.
//! Playbooks and roles are read as spanned YAML trees (`crate::yaml::Node`); `kv` parses
//! Ansible's `k=v` argument strings.

pub mod inventory;
pub mod kv;
