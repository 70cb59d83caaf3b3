//! The terminal's sinks for one run: human lines (with per-host progress bars when stderr is a
//! TTY, and the recap at the end) or JSON lines.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::events::{Event, RunEvent, Sink};
use crate::report::human::{HumanFormatter, HumanOptions};
use crate::report::recap::Recap;
use crate::report::{eprint_line, json_line, print_line};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// The sink for `--output`.
pub fn sink(output: Output, opts: HumanOptions) -> Box<dyn Sink> {
    match output {
        Output::Human => Box::new(Human::new(opts)),
        Output::Json => Box::new(JsonLines),
    }
}

/// What a run's outcome says beyond its events: failed reporting, cancellation (stderr).
pub fn print_outcome(outcome: &crate::run::Outcome) {
    for e in &outcome.reporting_errors {
        eprint_line(&format!(
            "error: reporting failed ({e}); the exit code still reflects the run"
        ));
    }
    for e in &outcome.state_errors {
        eprint_line(&format!("error: {e}"));
    }
    for w in &outcome.warnings {
        eprint_line(&format!("[WARNING]: {w}"));
    }
    if outcome.cancelled {
        eprint_line("cancelled: running steps were allowed to finish; nothing new was started");
    }
}

/// One JSON object per event per line on stdout.
pub struct JsonLines;

impl Sink for JsonLines {
    fn event(&mut self, e: &Event) -> Result<(), String> {
        print_line(&json_line(e));
        Ok(())
    }
}

/// Ansible-style lines, progress bars on a TTY, the recap at the end.
pub struct Human {
    fmt: HumanFormatter,
    recap: Recap,
    tty: bool,
    multi: MultiProgress,
    style: ProgressStyle,
    bars: HashMap<String, ProgressBar>,
}

impl Human {
    pub fn new(opts: HumanOptions) -> Self {
        let tty = std::io::stderr().is_terminal();
        Human {
            fmt: HumanFormatter::new(opts),
            recap: Recap::default(),
            tty,
            multi: MultiProgress::with_draw_target(if tty {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            }),
            style: ProgressStyle::with_template("{spinner} {prefix:<24} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            bars: HashMap::new(),
        }
    }

    fn out(&self, line: &str) {
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            print_line(line);
        }
    }
}

impl Sink for Human {
    fn event(&mut self, e: &Event) -> Result<(), String> {
        let e = &e.body;
        self.recap.observe(e);
        for line in self.fmt.format(e) {
            self.out(&line);
        }
        match e {
            RunEvent::RunStarted { hosts, .. } if self.tty => {
                for h in hosts {
                    let b = self.multi.add(ProgressBar::new_spinner());
                    b.set_style(self.style.clone());
                    b.set_prefix(h.clone());
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    self.bars.insert(h.clone(), b);
                }
            }
            RunEvent::TaskStarted { host, task, .. } => {
                if let Some(b) = self.bars.get(host) {
                    b.set_message(task.clone());
                }
            }
            RunEvent::HostStopped { host, reason } => {
                if let Some(b) = self.bars.remove(host) {
                    b.finish_with_message(format!("stopped: {reason}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for (_, b) in self.bars.drain() {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
        if self.recap.hosts.is_empty() {
            // A stream without runs (a day-2 operation's steps) has no recap.
            return Ok(());
        }
        for line in self.fmt.recap(&self.recap) {
            print_line(&line);
        }
        Ok(())
    }
}
