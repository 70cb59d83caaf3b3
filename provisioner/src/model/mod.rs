//! The resolved model: inventory, plays, roles, tasks and variables, validated and ready to plan.

pub mod inventory;
pub mod pattern;
pub mod play;
pub mod vars;
