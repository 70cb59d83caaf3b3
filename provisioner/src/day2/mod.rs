//! Day-2 commands (`status`, and later `upgrade`, `node`, `backup`, `restore`): thin layers
//! over the run API ([`crate::run`]) and cluster-core's knowledge (`cluster_core::health`).
//! They hold no engine of their own and never print; the CLI renders what they return.

pub mod backup;
pub mod node;
pub mod operation;
pub mod restore;
pub mod status;
pub mod upgrade;

/// The first failures of a run, one line each (`host: task: message`), for a day-2 message.
pub fn failures_text(outcome: &crate::run::Outcome) -> String {
    let fails: Vec<String> = outcome
        .recap
        .failures
        .iter()
        .take(3)
        .map(|f| format!("{}: {}: {}", f.host, f.task, f.msg.trim()))
        .collect();
    if fails.is_empty() {
        format!("exit {:?}", outcome.exit)
    } else {
        fails.join("; ")
    }
}
