//! A run's event bus: producers emit into it; it stamps each event with the envelope (run id,
//! gap-free sequence number, UTC time), folds the recap (the exit code's only source), and
//! hands each event, in order, to a reporting thread that feeds every sink.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::Error;
use crate::exec::events::{Event, EventSink, RunEvent, Sink, EVENTS_VERSION};
use crate::report::recap::Recap;

/// The producers' side.
pub struct Bus {
    state: Mutex<State>,
}

struct State {
    run: Arc<str>,
    /// The next event's sequence number.
    seq: u64,
    recap: Recap,
    /// `None` once closed (or when the reporting thread is gone).
    tx: Option<mpsc::Sender<Event>>,
}

impl EventSink for Bus {
    fn emit(&self, event: RunEvent) {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.recap.observe(&event);
        let e = Event {
            version: EVENTS_VERSION,
            run: s.run.clone(),
            seq: s.seq,
            time: std::time::SystemTime::now(),
            body: event,
        };
        s.seq += 1;
        // Numbered and sent under the lock: sinks see events in sequence order.
        if let Some(tx) = &s.tx {
            if tx.send(e).is_err() {
                s.tx = None;
            }
        }
    }
}

impl Bus {
    pub fn run_id(&self) -> Arc<str> {
        match self.state.lock() {
            Ok(s) => s.run.clone(),
            Err(p) => p.into_inner().run.clone(),
        }
    }

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

/// A run id: the start time in milliseconds and 32 random bits, in hex (`0191f3a2b4c5-9f0e1d2c`):
/// unique, and sorted by start time.
pub fn new_run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut r = [0u8; 4];
    // Without randomness the pid still separates concurrent runs.
    if getrandom::fill(&mut r).is_err() {
        r = std::process::id().to_be_bytes();
    }
    format!("{ms:012x}-{:08x}", u32::from_be_bytes(r))
}

/// Start a bus feeding `sinks` from a reporting thread.
pub fn start(sinks: Vec<Box<dyn Sink>>) -> Result<(Arc<Bus>, Reporter), Error> {
    start_as(new_run_id(), sinks)
}

/// [`start`] with a run id chosen before (the history records the run under it from its start).
pub fn start_as(run_id: String, sinks: Vec<Box<dyn Sink>>) -> Result<(Arc<Bus>, Reporter), Error> {
    let (tx, rx) = mpsc::channel::<Event>();
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
            run: Arc::from(run_id),
            seq: 0,
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
        fn event(&mut self, _: &Event) -> Result<(), String> {
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

    #[test]
    fn the_envelope_numbers_events_without_gaps_under_concurrent_producers() {
        let c = Collector::default();
        let (bus, reporter) = start(vec![Box::new(c.clone())]).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let bus = bus.clone();
                s.spawn(move || {
                    for _ in 0..250 {
                        bus.emit(warning());
                    }
                });
            }
        });
        bus.close();
        assert!(reporter.join().is_empty());
        let got = c.envelopes();
        assert_eq!(got.len(), 1000);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.seq, i as u64, "in order, no gaps");
            assert_eq!(e.run, bus.run_id());
            assert_eq!(e.version, EVENTS_VERSION);
        }
        assert!(got.windows(2).all(|w| w[0].time <= w[1].time));
        let json: serde_json::Value =
            serde_json::from_str(&crate::report::json_line(&got[0])).unwrap();
        assert_eq!(json["event"], "warning");
        assert_eq!(json["seq"], 0);
        assert_eq!(json["version"], EVENTS_VERSION);
        let t = json["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() == 24, "{t}");
    }
}
