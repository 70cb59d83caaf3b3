//! Ansible-style human output: PLAY/TASK headers, one line per host result, unified diffs,
//! and the PLAY RECAP. Pure formatting: each function returns the lines to print.

use crate::exec::events::{DiffText, RunEvent, TaskStatus};
use crate::report::recap::Recap;

/// Options for human output.
#[derive(Clone, Copy, Debug, Default)]
pub struct HumanOptions {
    pub diff: bool,
    /// `-v`: show remote commands and ok results' messages.
    pub verbose: bool,
    pub color: bool,
}

/// Turns events into text, remembering the last header so tasks are titled once.
#[derive(Default)]
pub struct HumanFormatter {
    opts: HumanOptions,
    last_header: Option<String>,
}

/// How many trailing lines of a failure's message the summary after the recap repeats.
const MAX_FAILURE_LINES: usize = 8;

fn banner(title: &str) -> String {
    let pad = 79usize.saturating_sub(title.len() + 1);
    format!("\n{title} {}", "*".repeat(pad))
}

fn paint(s: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// A unified diff of one change, as `--diff` shows it.
pub fn unified_diff(d: &DiffText) -> String {
    let diff = similar::TextDiff::from_lines(&d.before, &d.after);
    let mut out = String::new();
    out.push_str(&format!(
        "--- before: {}\n+++ after: {}\n",
        d.label, d.label
    ));
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        out.push_str(&hunk.to_string());
    }
    out
}

impl HumanFormatter {
    pub fn new(opts: HumanOptions) -> Self {
        HumanFormatter {
            opts,
            last_header: None,
        }
    }

    /// The lines for one event (possibly none).
    pub fn format(&mut self, e: &RunEvent) -> Vec<String> {
        let c = self.opts.color;
        let mut out = Vec::new();
        match e {
            RunEvent::PlayStarted { name, hosts, .. } => {
                out.push(banner(&format!("PLAY [{name}]")));
                if hosts.is_empty() {
                    out.push(paint("skipping: no hosts matched", "36", c));
                }
                self.last_header = None;
            }
            RunEvent::MetaTask { task, .. } => {
                let header = format!("TASK [{task}]");
                out.push(banner(&header));
                self.last_header = Some(header);
            }
            RunEvent::TaskFinished(r) => {
                let kind = if r.handler { "RUNNING HANDLER" } else { "TASK" };
                let header = format!("{kind} [{}]", r.task);
                if self.last_header.as_deref() != Some(&header) {
                    out.push(banner(&header));
                    self.last_header = Some(header);
                }
                let item = r
                    .item
                    .as_ref()
                    .map(|i| format!(" => (item={i})"))
                    .unwrap_or_default();
                let msg = r.msg.as_deref().unwrap_or("");
                let line = match r.status {
                    TaskStatus::Ok => paint(&format!("ok: [{}]{item}", r.host), "32", c),
                    TaskStatus::Changed => paint(&format!("changed: [{}]{item}", r.host), "33", c),
                    TaskStatus::Skipped => paint(&format!("skipping: [{}]{item}", r.host), "36", c),
                    TaskStatus::Failed | TaskStatus::Rescued => paint(
                        &format!("fatal: [{}]: FAILED!{item} => {msg}  ({})", r.host, r.loc),
                        "31",
                        c,
                    ),
                    TaskStatus::Ignored => paint(
                        &format!("failed: [{}]{item} => {msg}  ...ignoring", r.host),
                        "31",
                        c,
                    ),
                    TaskStatus::Unreachable => paint(
                        &format!("fatal: [{}]: UNREACHABLE! => {msg}", r.host),
                        "31",
                        c,
                    ),
                };
                out.push(line);
                if (self.opts.verbose || r.output)
                    && matches!(r.status, TaskStatus::Ok | TaskStatus::Changed)
                    && !msg.is_empty()
                {
                    out.push(format!("  {msg}"));
                }
                if self.opts.diff {
                    for d in &r.diffs {
                        out.push(unified_diff(d).trim_end().to_string());
                    }
                }
            }
            RunEvent::Command { host, command } if self.opts.verbose => {
                out.push(format!("<{host}> EXEC {command}"));
            }
            RunEvent::Warning { message } => {
                out.push(paint(&format!("[WARNING]: {message}"), "35", c));
            }
            RunEvent::Notice { message } => {
                out.push(paint(&format!("[NOTICE]: {message}"), "36", c));
            }
            RunEvent::Step(s) => {
                let hosts = if s.hosts.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", s.hosts.join(", "))
                };
                let comp = s
                    .component
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default();
                let (mark, color) = match s.status {
                    crate::exec::events::StepStatus::Started => ("..", "0"),
                    crate::exec::events::StepStatus::Ok => ("ok", "32"),
                    crate::exec::events::StepStatus::Failed => ("!!", "31"),
                };
                for (i, line) in s.message.lines().enumerate() {
                    if i == 0 {
                        out.push(paint(
                            &format!("{} {mark} {}{comp}{hosts}: {line}", s.operation, s.phase),
                            color,
                            c,
                        ));
                    } else {
                        out.push(format!("    {line}"));
                    }
                }
            }
            RunEvent::HostStopped { host, reason } if self.opts.verbose => {
                out.push(format!("<{host}> no more steps: {reason}"));
            }
            _ => {}
        }
        out
    }

    /// The PLAY RECAP block.
    pub fn recap(&self, recap: &Recap) -> Vec<String> {
        let mut out = vec![banner("PLAY RECAP")];
        let width = recap
            .hosts
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(25);
        for (h, r) in &recap.hosts {
            out.push(format!(
                "{h:<width$} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={:<4} rescued={:<4} ignored={}",
                r.ok, r.changed, r.unreachable, r.failed, r.skipped, r.rescued, r.ignored
            ));
        }
        if !recap.failures.is_empty() {
            out.push(String::new());
            out.push(paint("FAILURES", "31", self.opts.color));
            for f in &recap.failures {
                let what = if f.unreachable {
                    "UNREACHABLE"
                } else {
                    "FAILED"
                };
                out.push(format!(
                    "  {}: {what} in TASK [{}] ({})",
                    f.host, f.task, f.loc
                ));
                // A long module message (apt's output) ends with the line that matters.
                let lines: Vec<&str> = f.msg.trim_end().lines().collect();
                let from = lines.len().saturating_sub(MAX_FAILURE_LINES);
                if from > 0 {
                    out.push(format!("    ... ({from} lines above)"));
                }
                for l in &lines[from..] {
                    out.push(format!("    {l}"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::events::TaskReport;

    fn report(host: &str, status: TaskStatus, diffs: Vec<DiffText>) -> RunEvent {
        RunEvent::TaskFinished(TaskReport {
            host: host.into(),
            play: 0,
            task: "web : configure".into(),
            loc: "roles/web/tasks/main.yml:1:3".into(),
            status,
            changed: false,
            item: None,
            msg: None,
            output: false,
            diffs,
            handler: false,
            duration_ms: 0,
        })
    }

    #[test]
    fn task_header_is_printed_once_per_task() {
        let mut f = HumanFormatter::new(HumanOptions::default());
        let a = f.format(&report("m1", TaskStatus::Changed, vec![]));
        let b = f.format(&report("m2", TaskStatus::Ok, vec![]));
        assert_eq!(a.len(), 2);
        assert!(a[0].contains("TASK [web : configure]"));
        assert_eq!(a[1], "changed: [m1]");
        assert_eq!(b, vec!["ok: [m2]"]);
    }

    #[test]
    fn a_play_without_hosts_says_so_under_its_header() {
        let mut f = HumanFormatter::new(HumanOptions::default());
        let play = |hosts: Vec<String>| RunEvent::PlayStarted {
            play: 0,
            name: "storage".into(),
            hosts,
        };
        let empty = f.format(&play(vec![]));
        assert!(empty[0].starts_with("\nPLAY [storage] ***"), "{empty:?}");
        assert_eq!(empty[1], "skipping: no hosts matched");
        assert_eq!(f.format(&play(vec!["s1".into()])).len(), 1);
    }

    #[test]
    fn a_meta_task_shows_its_header_only() {
        let mut f = HumanFormatter::new(HumanOptions::default());
        let lines = f.format(&RunEvent::MetaTask {
            play: 0,
            task: "meta".into(),
        });
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("\nTASK [meta] ***"), "{lines:?}");
    }

    #[test]
    fn diff_shows_unified_hunks_only_with_diff_option() {
        let d = DiffText {
            label: "/etc/x".into(),
            before: "a\nb\n".into(),
            after: "a\nc\n".into(),
        };
        let mut plain = HumanFormatter::new(HumanOptions::default());
        assert_eq!(
            plain
                .format(&report("m1", TaskStatus::Changed, vec![d.clone()]))
                .len(),
            2
        );
        let mut f = HumanFormatter::new(HumanOptions {
            diff: true,
            ..Default::default()
        });
        let lines = f.format(&report("m1", TaskStatus::Changed, vec![d]));
        let text = lines.join("\n");
        assert!(
            text.contains("--- before: /etc/x\n+++ after: /etc/x\n@@ -1,2 +1,2 @@\n a\n-b\n+c"),
            "{text}"
        );
    }

    #[test]
    fn recap_lists_every_host_with_ansible_counters() {
        let mut r = Recap::default();
        r.observe(&report("m1", TaskStatus::Changed, vec![]));
        let f = HumanFormatter::new(HumanOptions::default());
        let lines = f.recap(&r);
        assert!(lines[1].starts_with("m1 "));
        assert!(lines[1].contains("ok=1    changed=1    unreachable=0"));
    }

    #[test]
    fn failures_are_summed_up_after_the_recap_with_the_end_of_their_message() {
        let mut r = Recap::default();
        r.observe(&report("m1", TaskStatus::Ok, vec![]));
        let mut failed = report("a1", TaskStatus::Failed, vec![]);
        if let RunEvent::TaskFinished(t) = &mut failed {
            t.msg = Some((1..=20).map(|i| format!("line {i}\n")).collect());
        }
        r.observe(&failed);
        let f = HumanFormatter::new(HumanOptions::default());
        let text = f.recap(&r).join("\n");
        assert!(
            text.contains("FAILURES\n  a1: FAILED in TASK [web : configure] (roles/web/tasks/main.yml:1:3)\n    ... (12 lines above)\n    line 13\n"),
            "{text}"
        );
        assert!(text.ends_with("    line 20"), "{text}");
        assert!(!text.contains("m1: "), "{text}");
    }
}
