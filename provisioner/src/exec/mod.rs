//! Execution (async): walks the plan with a tokio task per ready node and emits `RunEvent`s.
//! The run [`Mode`] lives here; `modules` plan for it.

pub mod events;
pub mod redact;
pub mod runner;
pub mod session;
pub mod stream;
pub mod walker;

/// What a run may do. The only path to a mutation is `Apply`: in `Check` the runner sends no
/// module action (except `read_only` modules'), so check mode cannot change a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Probe and plan only; report what would change.
    Check,
    /// Probe, plan, then perform the actions.
    Apply,
}
