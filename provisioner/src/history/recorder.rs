//! The history's sink: a bounded queue in front of a writer thread that owns the database.
//!
//! [`Recorder::start`] spawns the writer; [`Recorder::sink`] is the [`Sink`] the run's bus
//! feeds (so it sees only redacted events). `event()` never blocks: it `try_send`s into the
//! queue and counts what a full queue drops. The writer opens the database (WAL, a short busy
//! timeout), records the run, writes events in batches (one transaction each), and at the end
//! records the exit code and prunes by the [`Retention`]. A database that cannot be opened or
//! written stops the recording, not the run. [`Recorder::finish`] waits for the writer a
//! bounded time and returns at most one warning; the exit code never depends on it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{Retention, RunMeta};
use crate::exec::events::{Event, Sink};

/// How the recorder behaves; [`Options::default`] is what runs use.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events the queue holds before new ones are dropped.
    pub capacity: usize,
    /// SQLite's lock timeout for each write.
    pub busy_timeout: Duration,
    /// How long [`Recorder::finish`] waits for the writer.
    pub finish_wait: Duration,
    pub retention: Retention,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: 4096,
            busy_timeout: Duration::from_millis(1000),
            finish_wait: Duration::from_secs(5),
            retention: Retention::from_env(),
        }
    }
}

/// What the sink and the writer share.
#[derive(Default)]
struct Shared {
    dropped: AtomicU64,
    /// Set when the writer stopped recording; the sink stops queueing.
    broken: AtomicBool,
    error: Mutex<Option<String>>,
    /// The run's end: time and exit code, set by `finish` before the queue closes.
    end: Mutex<Option<(SystemTime, Option<i32>)>>,
}

impl Shared {
    fn fail(&self, e: String) {
        self.broken.store(true, Ordering::SeqCst);
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
    }
}

/// The sink side: cheap, never blocks, never fails the run.
pub struct HistorySink {
    tx: SyncSender<Box<Event>>,
    shared: Arc<Shared>,
}

impl Sink for HistorySink {
    fn event(&mut self, e: &Event) -> Result<(), String> {
        if self.shared.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.tx.try_send(Box::new(e.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::SeqCst);
            }
            // The writer is gone; it said why (or `finish` will).
            Err(TrySendError::Disconnected(_)) => {}
        }
        Ok(())
    }
}

/// One run's recording.
pub struct Recorder {
    tx: Option<SyncSender<Box<Event>>>,
    shared: Arc<Shared>,
    done: Receiver<()>,
    wait: Duration,
    path: std::path::PathBuf,
}

impl Recorder {
    /// Start recording `meta` into the database at `path`. Never fails: a writer thread that
    /// cannot start is a warning at [`Recorder::finish`].
    pub fn start(path: &std::path::Path, meta: RunMeta, opts: Options) -> Recorder {
        let (tx, rx) = mpsc::sync_channel::<Box<Event>>(opts.capacity.max(1));
        let (done_tx, done) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let writer_shared = shared.clone();
        let db = path.to_path_buf();
        let o = opts.clone();
        let spawned = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || {
                write(&db, &meta, &o, &rx, &writer_shared);
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            shared.fail(format!("cannot start its thread: {e}"));
        }
        Recorder {
            tx: Some(tx),
            shared,
            done,
            wait: opts.finish_wait,
            path: path.to_path_buf(),
        }
    }

    /// The sink to give the run's bus.
    pub fn sink(&self) -> Box<dyn Sink> {
        match &self.tx {
            Some(tx) => Box::new(HistorySink {
                tx: tx.clone(),
                shared: self.shared.clone(),
            }),
            None => Box::new(crate::exec::events::Collector::default()),
        }
    }

    /// The run ended with `exit_code` (`None`: the tool failed). Call after the bus's sinks are
    /// dropped (the reporting thread joined). Waits for the writer at most the configured time;
    /// returns the warning to show, if any (`history: ...`).
    pub fn finish(mut self, exit_code: Option<i32>) -> Option<String> {
        if let Ok(mut end) = self.shared.end.lock() {
            *end = Some((SystemTime::now(), exit_code));
        }
        // The queue closes when the last sender goes: ours, and the sink's with the bus.
        self.tx = None;
        let finished = match self.done.recv_timeout(self.wait) {
            Ok(()) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            // The writer ended without saying so: it panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.shared.fail("its writer stopped".into());
                true
            }
        };
        let dropped = self.shared.dropped.load(Ordering::SeqCst);
        let error = self.shared.error.lock().ok().and_then(|e| e.clone());
        let where_ = self.path.display();
        match (error, finished, dropped) {
            (Some(e), _, _) => Some(format!("history: not recorded: {e}")),
            (None, false, _) => Some(format!(
                "history: not recorded completely: {where_} did not answer within {:?}",
                self.wait
            )),
            (None, true, 0) => None,
            (None, true, n) => Some(format!(
                "history: {n} events dropped (the database in {where_} was too slow); the run's record is incomplete"
            )),
        }
    }
}

/// The writer thread: open, record, end, prune. Errors go to `shared`; the queue is drained to
/// the end either way.
fn write(
    path: &std::path::Path,
    meta: &RunMeta,
    opts: &Options,
    rx: &Receiver<Box<Event>>,
    shared: &Shared,
) {
    let mut conn = match super::open_write(path, opts.busy_timeout).and_then(|mut c| {
        let tx = super::write_tx(&mut c)?;
        super::insert_run(&tx, meta)?;
        tx.commit().map_err(super::sql)?;
        Ok(c)
    }) {
        Ok(c) => Some(c),
        Err(e) => {
            shared.fail(e);
            None
        }
    };
    const BATCH: usize = 512;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let written = super::write_tx(c).and_then(|tx| {
            for e in &batch {
                super::insert_event(&tx, e)?;
            }
            tx.commit().map_err(super::sql)
        });
        if let Err(e) = written {
            shared.fail(format!("{}: {e}", path.display()));
            conn = None;
        }
    }
    let Some(mut c) = conn else { return };
    let end = shared.end.lock().ok().and_then(|e| *e);
    let (ended, exit) = end.unwrap_or((SystemTime::now(), None));
    let r = super::end_run(&c, &meta.id, ended, exit)
        .and_then(|()| super::prune(&mut c, opts.retention, ended, &meta.id).map(|_| ()));
    if let Err(e) = r {
        shared.fail(format!("{}: {e}", path.display()));
    }
}
