//! Day-2 commands (`status`, and later `upgrade`, `node`, `backup`, `restore`): thin layers
//! over the run API ([`crate::run`]) and cluster-core's knowledge (`cluster_core::health`).
//! They hold no engine of their own and never print; the CLI renders what they return.

pub mod status;
pub mod upgrade;
