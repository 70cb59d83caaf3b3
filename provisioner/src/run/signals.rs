//! SIGINT and SIGTERM: a run stops at the next task boundary (the walker's cancel), saves its
//! pending handlers and exits 130 or 143, the shell's codes for those signals. Once the
//! listener is up, a second signal no longer kills the process mid-write either.

use std::sync::atomic::{AtomicI32, Ordering};

use tokio::sync::watch;

/// The last stop signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

/// The stop signal received so far, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Listen for SIGINT and SIGTERM on a thread of its own: the receiver turns true at the first
/// one, and [`received`] says which.
pub fn listen() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let _ = std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                loop {
                    let s = tokio::select! {
                        _ = int.recv() => SIGINT,
                        _ = term.recv() => SIGTERM,
                    };
                    RECEIVED.store(s, Ordering::SeqCst);
                    let _ = tx.send(true);
                }
            });
        });
    rx
}

/// The exit code of a run that a signal cancelled.
pub fn exit_code() -> crate::error::ExitCode {
    match received() {
        Some(SIGTERM) => crate::error::ExitCode::Terminated,
        _ => crate::error::ExitCode::Interrupted,
    }
}
