//! One active operator among several, through the stack's own ZooKeeper ensemble
//! (`operate --elect`). The recipe is zookeeper-client's `lock` (ZooKeeper's leader-election
//! recipe: an ephemeral sequential znode under [`PATH`], the lowest one leads, each contender
//! watches its predecessor); nothing here is a lock service of its own.
//!
//! The session authenticates with the `digest` scheme as [`USER`], with a password kept in the
//! inventory's secrets store (`password/zookeeper_operate`, generated on first use), and the
//! znodes carry `creator_all` ACLs: only holders of that password can read or take them.
//!
//! The client runs on a thread of its own with a current-thread runtime (as `run::signals`
//! does), so the operator stays blocking. An instance is active only while its session is
//! connected and it holds the lowest znode: a disconnection makes it standby at once, before the
//! server expires the session (so two instances never both act); when the active one dies, its
//! znode goes with its session, after the session timeout, and the next contender leads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zookeeper_client as zk;

/// The contenders' parent znode.
pub const PATH: &str = "/provisioner/operate";
/// The digest user the operators authenticate as.
pub const USER: &str = "provisioner-operate";
/// The secrets store's name for that user's password.
pub const SECRET: &str = "zookeeper_operate";

/// A running election; [`Election::stop`] leaves it (else the process's end does, and the
/// others wait for the session timeout).
#[derive(Clone)]
pub struct Election {
    active: Arc<AtomicBool>,
    /// The last problem the election hit (connection, auth), for the operator's report.
    problem: Arc<Mutex<Option<String>>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    done: Arc<AtomicBool>,
}

impl Election {
    /// Contend from now on, on a thread of its own. `ensemble`: `host:port,host:port`.
    pub fn start(
        ensemble: String,
        password: crate::secret::Secret,
        session_timeout: Duration,
        me: String,
    ) -> Result<Election, String> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let e = Election {
            active: Arc::new(AtomicBool::new(false)),
            problem: Arc::new(Mutex::new(None)),
            stop: Arc::new(stop),
            done: Arc::new(AtomicBool::new(false)),
        };
        let (active, problem, done) = (e.active.clone(), e.problem.clone(), e.done.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the election's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("operate-election".into())
            .spawn(move || {
                let auth = format!("{USER}:{}", password.expose());
                rt.block_on(contend(
                    &ensemble,
                    auth.as_bytes(),
                    session_timeout,
                    me.as_bytes(),
                    (&active, &problem),
                    stopped,
                ));
                active.store(false, Ordering::SeqCst);
                done.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("cannot start the election: {e}"))?;
        Ok(e)
    }

    pub fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    /// Leave the election now: the znode is deleted, so a standby takes over at once. Waits
    /// up to 5 s for ZooKeeper to confirm.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !self.done.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn contend(
    ensemble: &str,
    auth: &[u8],
    session_timeout: Duration,
    me: &[u8],
    (active, problem): (&AtomicBool, &Mutex<Option<String>>),
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let say = |p: Option<String>| {
        if let Ok(mut g) = problem.lock() {
            *g = p;
        }
    };
    loop {
        active.store(false, Ordering::SeqCst);
        if *stopped.borrow() {
            return;
        }
        let client = match zk::Client::connector()
            .with_session_timeout(session_timeout)
            .with_connection_timeout(Duration::from_secs(5))
            .with_auth("digest", auth)
            .connect(ensemble)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                say(Some(format!("zookeeper {ensemble}: {e}")));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut states = client.state_watcher();
        let options = zk::LockOptions::new(zk::Acls::creator_all())
            .with_ancestor_options(zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all()));
        let options = match options {
            Ok(o) => o,
            Err(e) => {
                say(Some(format!("election options: {e}")));
                return;
            }
        };
        let prefix = match zk::LockPrefix::new_curator(PATH, "latch-") {
            Ok(p) => p,
            Err(e) => {
                say(Some(format!("election path: {e}")));
                return;
            }
        };
        say(None);
        // Wait for the lead, or for the session to end (then start over with a new one).
        let lead = tokio::select! {
            l = client.lock(prefix, me, options) => l.map_err(|e| e.to_string()),
            s = wait_terminal(&mut states) => Err(format!("session {s:?}")),
            // Dropping the contender's future deletes its znode (the recipe is cancel-safe).
            _ = stopped.wait_for(|s| *s) => return,
        };
        let lock = match lead {
            Ok(l) => l,
            Err(e) => {
                say(Some(format!("election: {e}")));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        active.store(true, Ordering::SeqCst);
        // Lead while connected; a disconnection makes us standby until the same session is
        // back; an ended session ends the lead.
        loop {
            let s = tokio::select! {
                s = states.changed() => s,
                _ = stopped.wait_for(|s| *s) => {
                    active.store(false, Ordering::SeqCst);
                    let path = lock.lock_path().to_string();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(4),
                        client.delete(&path, None),
                    )
                    .await;
                    return;
                }
            };
            match s {
                zk::SessionState::SyncConnected => active.store(true, Ordering::SeqCst),
                s if s.is_terminated() => {
                    active.store(false, Ordering::SeqCst);
                    say(Some(format!("election: session {s:?}; contending again")));
                    break;
                }
                _ => active.store(false, Ordering::SeqCst),
            }
        }
    }
}

async fn wait_terminal(states: &mut zk::StateWatcher) -> zk::SessionState {
    loop {
        let s = states.changed().await;
        if s.is_terminated() {
            return s;
        }
    }
}
