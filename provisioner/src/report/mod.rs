//! Reporting: the only module that writes to the terminal.
//!
//! - `human`: Ansible-style task lines, unified diffs, and the PLAY RECAP;
//! - `json`: one JSON object per event per line (`--output json`);
//! - `recap`: per-host counters, folded from events (so the recap always matches the log).

pub mod human;
pub mod recap;
pub mod terminal;

use std::io::Write;

use crate::exec::events::Event;

/// Write one line to standard output. Errors writing to a closed pipe are ignored.
pub fn print_line(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

/// Write text to standard output as is (it carries its own newlines).
pub fn print_raw(s: &str) {
    let _ = write!(std::io::stdout().lock(), "{s}");
}

/// Write one line to standard error.
pub fn eprint_line(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

/// Write a prompt to standard error, without a newline, and flush it.
pub fn eprint_prompt(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "{s}");
    let _ = e.flush();
}

/// One event, with its envelope, as a JSON line (docs/events.md).
pub fn json_line(event: &Event) -> String {
    serde_json::to_string(event)
        .unwrap_or_else(|e| format!("{{\"event\":\"error\",\"message\":\"{e}\"}}"))
}
