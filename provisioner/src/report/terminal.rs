//! Drives the terminal for one run: consumes `RunEvent`s, prints human lines or JSON lines,
//! shows per-host progress bars when stderr is a TTY, and returns the recap.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::exec::events::RunEvent;
use crate::report::human::{HumanFormatter, HumanOptions};
use crate::report::recap::Recap;
use crate::report::{json_line, print_line};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Consume events until the run finishes; returns the recap.
pub async fn render(
    mut rx: UnboundedReceiver<RunEvent>,
    output: Output,
    opts: HumanOptions,
) -> Recap {
    let mut recap = Recap::default();
    let mut fmt = HumanFormatter::new(opts);
    let tty = output == Output::Human && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if tty {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{spinner} {prefix:<24} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let out = |multi: &MultiProgress, line: &str| {
        if tty {
            let _ = multi.println(line);
        } else {
            print_line(line);
        }
    };
    while let Some(e) = rx.recv().await {
        recap.observe(&e);
        match output {
            Output::Json => print_line(&json_line(&e)),
            Output::Human => {
                for line in fmt.format(&e) {
                    out(&multi, &line);
                }
            }
        }
        match &e {
            RunEvent::RunStarted { hosts, .. } if tty => {
                for h in hosts {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.set_prefix(h.clone());
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    bars.insert(h.clone(), b);
                }
            }
            RunEvent::TaskStarted { host, task, .. } => {
                if let Some(b) = bars.get(host) {
                    b.set_message(task.clone());
                }
            }
            RunEvent::HostStopped { host, reason } => {
                if let Some(b) = bars.remove(host) {
                    b.finish_with_message(format!("stopped: {reason}"));
                }
            }
            RunEvent::RunFinished { .. } => break,
            _ => {}
        }
    }
    for (_, b) in bars.drain() {
        b.finish_and_clear();
    }
    let _ = multi.clear();
    if output == Output::Human {
        for line in fmt.recap(&recap) {
            print_line(&line);
        }
    }
    recap
}
