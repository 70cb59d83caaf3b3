//! Reporting: the only module that writes to the terminal (progress, recap, JSON lines).

use std::io::Write;

/// Write one line to standard output. Errors writing to a closed pipe are ignored.
pub fn print_line(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

/// Write one line to standard error.
pub fn eprint_line(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}
