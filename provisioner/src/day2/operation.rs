//! One day-2 operation (`backup`, `restore`) as one run in the history: its progress is `step`
//! events on its own bus, which the caller's sinks (the terminal) and the history both see.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, ExitCode};
use crate::exec::events::{EventSink, RunEvent, Sink, StepEvent, StepStatus};
use crate::history::recorder::Recorder;
use crate::run::bus::{Bus, Reporter};

pub struct Operation {
    name: String,
    bus: Arc<Bus>,
    reporter: Reporter,
    recorder: Recorder,
}

impl Operation {
    /// Start recording `name` (mode `apply` or `check`) for the inventory `inventory`.
    pub fn start(
        name: &str,
        mode: &str,
        inventory: &Path,
        mut sinks: Vec<Box<dyn Sink>>,
    ) -> Result<Operation, Error> {
        let run_id = crate::run::bus::new_run_id();
        let meta = crate::history::RunMeta::new(&run_id, name, mode, inventory);
        let dir = crate::state::StateDir::for_inventory(inventory);
        let recorder = Recorder::start(
            &crate::history::db_path(dir.dir()),
            meta,
            Default::default(),
        );
        sinks.push(recorder.sink());
        let (bus, reporter) = crate::run::bus::start_as(run_id, sinks)?;
        Ok(Operation {
            name: name.to_string(),
            bus,
            reporter,
            recorder,
        })
    }

    /// One step: `phase` (`plan`, `stop`, `gate`, ...), the hosts it concerns, how it went.
    pub fn step(&self, phase: &str, hosts: &[String], status: StepStatus, message: &str) {
        self.bus.emit(RunEvent::Step(StepEvent {
            operation: self.name.clone(),
            phase: phase.into(),
            component: None,
            hosts: hosts.to_vec(),
            status,
            message: message.into(),
        }));
    }

    /// A step that went well.
    pub fn ok(&self, phase: &str, message: &str) {
        self.step(phase, &[], StepStatus::Ok, message);
    }

    /// End the record with `exit`; returns the warnings to show (the history could not
    /// record it) or the reporting's first error.
    pub fn finish(self, exit: ExitCode) -> Result<Vec<String>, Error> {
        self.bus.close();
        let errors = self.reporter.join();
        let warnings = self
            .recorder
            .finish(Some(exit as i32))
            .into_iter()
            .collect();
        match errors.first() {
            Some(e) => Err(Error::Usage(format!("reporting failed: {e}"))),
            None => Ok(warnings),
        }
    }
}
