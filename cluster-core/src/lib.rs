//! The bundled cluster core: pure knowledge about the Mesos stack.
//!
//! No I/O happens here beyond parsing embedded files. The engine (`provisioner`)
//! consumes these types to validate topology and order rollouts.
//!
//! - [`bundle`]: `bundle.yaml` (components, versions, sources, ports, probes, upgrade order),
//!   typed, with every problem of the file reported with its line.
//! - [`derive`]: values derived from the inventory, never typed by hand (quorum, myid, the
//!   ZooKeeper connect string, per-agent CNI subnets).
//! - [`topology`]: the inventory rules of docs/stack.md, checked before anything runs.
//! - [`gates`]: the health gates of rolling restarts as one program the roles run on hosts.
//! - [`allocations`]: stable member identities (ZooKeeper ids, CNI subnets), allocated once.
//! - [`membership`]: quorum membership changes: allowed counts, step order, the "whole" gate,
//!   the identity guard.
//! - [`backup`]: what a backup holds (which member's data) and a restore's order and gates.

pub mod allocations;
pub mod backup;
pub mod bundle;
pub mod derive;
pub mod gates;
pub mod health;
pub mod membership;
pub mod topology;
pub mod upgrade;

use std::fmt;

/// Ansible's truthiness, `boolean()` (`module_utils.parsing.convert_bool`), the one
/// implementation every part of the workspace uses (inventory flags, module arguments, play
/// keywords, topology rules): `true` for `true`, `1`, `1.0` and the strings `y`, `yes`, `on`,
/// `1`, `true`, `t`; `false` for `false`, `0`, `0.0` and `n`, `no`, `off`, `0`, `false`, `f`
/// (strings in any case, trimmed); anything else is not a boolean (`None`). Jinja's `bool`
/// filter is another thing (Ansible 2.14's `to_bool`: only `yes`, `on`, `1`, `true`).
pub fn boolean(v: &serde_json::Value) -> Option<bool> {
    use serde_json::Value;
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(true),
            Some(0.0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The bundle shipped with this build (`cluster-core/bundle.yaml`).
pub const BUNDLE_YAML: &str = include_str!("../bundle.yaml");

/// One problem found by a check, with the 1-based line and column it points at (0 when it is
/// about the input as a whole; the caller then names the file).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl Problem {
    pub fn new(line: u32, col: u32, message: impl Into<String>) -> Self {
        Problem {
            line,
            col,
            message: message.into(),
        }
    }

    /// A problem about the input as a whole (no line).
    pub fn whole(message: impl Into<String>) -> Self {
        Problem::new(0, 0, message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (0, _) => f.write_str(&self.message),
            (l, 0) => write!(f, "{l}: {}", self.message),
            (l, c) => write!(f, "{l}:{c}: {}", self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::boolean;
    use serde_json::json;

    #[test]
    fn boolean_follows_ansible() {
        for t in [
            json!(true),
            json!(1),
            json!(1.0),
            json!("y"),
            json!("Yes"),
            json!(" on "),
            json!("1"),
            json!("TRUE"),
            json!("t"),
        ] {
            assert_eq!(boolean(&t), Some(true), "{t}");
        }
        for f in [
            json!(false),
            json!(0),
            json!(0.0),
            json!("n"),
            json!("NO"),
            json!("off"),
            json!("0"),
            json!("False"),
            json!("f"),
        ] {
            assert_eq!(boolean(&f), Some(false), "{f}");
        }
        for x in [
            json!(2),
            json!(-1),
            json!("1.0"),
            json!("maybe"),
            json!(""),
            json!(null),
            json!([true]),
            json!({}),
        ] {
            assert_eq!(boolean(&x), None, "{x}");
        }
    }
}
