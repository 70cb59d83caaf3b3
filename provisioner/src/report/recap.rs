//! Per-host counters for the PLAY RECAP, in Ansible's categories.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::exec::events::{RunEvent, TaskStatus};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostRecap {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
    pub rescued: u32,
    pub ignored: u32,
}

/// A task that failed a host (or found it unreachable), kept for the summary after the recap:
/// in a long run the first failure is far up the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub host: String,
    pub task: String,
    pub loc: String,
    pub msg: String,
    pub unreachable: bool,
}

/// Counters for every host, folded from events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recap {
    pub hosts: BTreeMap<String, HostRecap>,
    /// Failed and unreachable task results, in the order they happened.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
}

impl Recap {
    pub fn observe(&mut self, e: &RunEvent) {
        match e {
            RunEvent::RunStarted { hosts, .. } | RunEvent::PlayStarted { hosts, .. } => {
                for h in hosts {
                    self.hosts.entry(h.clone()).or_default();
                }
            }
            RunEvent::TaskFinished(r) if r.item.is_none() => {
                let c = self.hosts.entry(r.host.clone()).or_default();
                // As in Ansible: a changed task also counts as ok.
                match r.status {
                    TaskStatus::Ok => c.ok += 1,
                    TaskStatus::Changed => {
                        c.ok += 1;
                        c.changed += 1
                    }
                    TaskStatus::Skipped => c.skipped += 1,
                    TaskStatus::Failed => c.failed += 1,
                    TaskStatus::Ignored => {
                        c.ok += 1;
                        c.ignored += 1
                    }
                    TaskStatus::Rescued => c.rescued += 1,
                    TaskStatus::Unreachable => c.unreachable += 1,
                }
                if matches!(r.status, TaskStatus::Failed | TaskStatus::Unreachable) {
                    self.failures.push(Failure {
                        host: r.host.clone(),
                        task: r.task.clone(),
                        loc: r.loc.clone(),
                        msg: r.msg.clone().unwrap_or_default(),
                        unreachable: r.status == TaskStatus::Unreachable,
                    });
                }
            }
            _ => {}
        }
    }

    pub fn total_changed(&self) -> u32 {
        self.hosts.values().map(|h| h.changed).sum()
    }

    pub fn any_failed(&self) -> bool {
        self.hosts.values().any(|h| h.failed > 0)
    }

    pub fn any_unreachable(&self) -> bool {
        self.hosts.values().any(|h| h.unreachable > 0)
    }

    /// The process exit code for this run: 0 ok, 1 host failures, 3 unreachable (only),
    /// 4 changes pending when `changes_are_drift` (plan --exit-code).
    pub fn exit_code(&self, changes_are_drift: bool) -> crate::error::ExitCode {
        use crate::error::ExitCode;
        if self.any_failed() {
            ExitCode::HostsFailed
        } else if self.any_unreachable() {
            ExitCode::Unreachable
        } else if changes_are_drift && self.total_changed() > 0 {
            ExitCode::ChangesPending
        } else {
            ExitCode::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;
    use crate::exec::events::TaskReport;

    fn done(host: &str, status: TaskStatus) -> RunEvent {
        RunEvent::TaskFinished(TaskReport {
            host: host.into(),
            play: 0,
            task: "t".into(),
            loc: "x.yml:1:1".into(),
            status,
            changed: false,
            item: None,
            msg: None,
            output: false,
            diffs: vec![],
            handler: false,
            duration_ms: 0,
        })
    }

    #[test]
    fn changed_counts_as_ok_too_and_exit_codes_follow_severity() {
        let mut r = Recap::default();
        r.observe(&RunEvent::RunStarted {
            check: false,
            hosts: vec!["a".into(), "b".into()],
        });
        r.observe(&done("a", TaskStatus::Changed));
        r.observe(&done("a", TaskStatus::Ok));
        r.observe(&done("b", TaskStatus::Skipped));
        assert_eq!(
            r.hosts["a"],
            HostRecap {
                ok: 2,
                changed: 1,
                ..Default::default()
            }
        );
        assert_eq!(r.hosts["b"].skipped, 1);
        assert_eq!(r.exit_code(false), ExitCode::Ok);
        assert_eq!(r.exit_code(true), ExitCode::ChangesPending);
        r.observe(&done("b", TaskStatus::Unreachable));
        assert_eq!(r.exit_code(true), ExitCode::Unreachable);
        r.observe(&done("a", TaskStatus::Failed));
        assert_eq!(r.exit_code(true), ExitCode::HostsFailed);
    }

    #[test]
    fn per_item_results_do_not_count_twice() {
        let mut r = Recap::default();
        let mut item = done("a", TaskStatus::Changed);
        if let RunEvent::TaskFinished(t) = &mut item {
            t.item = Some("x".into());
        }
        r.observe(&item);
        r.observe(&done("a", TaskStatus::Changed));
        assert_eq!(r.hosts["a"].changed, 1);
    }
}
