//! A run's event bus: producers emit into it; it folds the recap (the exit code's only source)
//! and hands each event, in order, to a reporting thread that feeds every sink.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::Error;
use crate::exec::events::{EventSink, RunEvent, Sink};
use crate::report::recap::Recap;

/// The producers' side.
pub struct Bus {
    state: Mutex<State>,
}

struct State {
    recap: Recap,
    /// `None` once closed (or when the reporting thread is gone).
    tx: Option<mpsc::Sender<RunEvent>>,
}

impl EventSink for Bus {
    fn emit(&self, event: RunEvent) {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.recap.observe(&event);
        // Sent under the lock: the reporting thread sees events in the order they were folded.
        if let Some(tx) = &s.tx {
            if tx.send(event).is_err() {
                s.tx = None;
            }
        }
    }
}

impl Bus {
    /// No more events: the reporting thread finishes its sinks. Returns the recap.
    pub fn close(&self) -> Recap {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.tx = None;
        s.recap.clone()
    }
}

/// The reporting thread.
pub struct Reporter(JoinHandle<Vec<String>>);

impl Reporter {
    /// Wait for every sink to finish; returns what failed (empty: all reported).
    pub fn join(self) -> Vec<String> {
        match self.0.join() {
            Ok(errors) => errors,
            Err(p) => vec![format!("the reporting thread died: {}", panic_text(&*p))],
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

/// Call one sink, catching its panic; `Err` names what went wrong.
fn guarded(index: usize, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("output {index} failed: {e}")),
        Err(p) => Err(format!("output {index} panicked: {}", panic_text(&*p))),
    }
}

/// Start a bus feeding `sinks` from a reporting thread.
pub fn start(sinks: Vec<Box<dyn Sink>>) -> Result<(Arc<Bus>, Reporter), Error> {
    let (tx, rx) = mpsc::channel::<RunEvent>();
    let handle = std::thread::Builder::new()
        .name("report".into())
        .spawn(move || {
            let mut sinks: Vec<Option<Box<dyn Sink>>> = sinks.into_iter().map(Some).collect();
            let mut errors = Vec::new();
            for e in rx {
                for (i, slot) in sinks.iter_mut().enumerate() {
                    if let Some(s) = slot {
                        if let Err(msg) = guarded(i, || s.event(&e)) {
                            errors.push(msg);
                            *slot = None;
                        }
                    }
                }
            }
            for (i, s) in sinks.iter_mut().enumerate() {
                if let Some(s) = s {
                    if let Err(msg) = guarded(i, || s.finish()) {
                        errors.push(msg);
                    }
                }
            }
            errors
        })
        .map_err(|e| Error::Environment(format!("cannot start the reporting thread: {e}")))?;
    let bus = Arc::new(Bus {
        state: Mutex::new(State {
            recap: Recap::default(),
            tx: Some(tx),
        }),
    });
    Ok((bus, Reporter(handle)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::events::Collector;

    struct Panics;
    impl Sink for Panics {
        fn event(&mut self, _: &RunEvent) -> Result<(), String> {
            panic!("renderer bug")
        }
    }

    fn warning() -> RunEvent {
        RunEvent::Warning {
            message: "w".into(),
        }
    }

    #[test]
    fn a_failing_sink_is_reported_and_the_others_keep_receiving() {
        let c = Collector::default();
        let (bus, reporter) = start(vec![Box::new(Panics), Box::new(c.clone())]).unwrap();
        bus.emit(warning());
        bus.emit(warning());
        bus.close();
        let errors = reporter.join();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("renderer bug"), "{errors:?}");
        assert_eq!(c.events().len(), 2);
        // After close, nothing more is sent (and nothing fails).
        bus.emit(warning());
    }
}
