//! Raw input: a faithful mirror of the files (inventory, playbooks, roles), with locations.
//! No defaults are applied and nothing is resolved here; `resolve` turns this into the model.
pub mod inventory;
