//! Execution (async): walks the plan with a tokio task per ready node and emits `RunEvent`s.

pub mod events;
pub mod redact;
pub mod runner;
pub mod session;
pub mod walker;
