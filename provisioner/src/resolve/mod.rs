//! Resolution: raw input -> model. Collects *every* error, each with file:line:col.

pub mod expressions;
pub mod include_vars;
pub mod inventory;
pub mod playbook;
pub mod undefined;
