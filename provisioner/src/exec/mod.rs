//! Execution (async): walks the plan with a tokio task per ready node and emits `RunEvent`s.

pub mod events;
pub mod walker;
pub mod runner;
pub mod session;
