//! The DAG walker: runs plan nodes as their predecessors finish, at most `forks` at a time.
//!
//! Host failures are data: a failed or unreachable host's remaining steps are skipped, other
//! hosts go on. `max_fail_percentage` is checked when a batch ends; `any_errors_fatal` stops
//! every host of the play once the failing step is done. Cancellation stops scheduling new
//! steps and lets running ones finish.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use petgraph::graph::NodeIndex;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::plan::{Node, Plan, Step};
use crate::transport::BoxFuture;

/// How a host step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    Ok,
    /// A task failed (and was not ignored or rescued). The host stops.
    Failed,
    /// The host could not be reached. The host stops.
    Unreachable,
}

/// Runs one host step. Implementations emit their own detailed events.
pub trait StepRunner: Send + Sync + 'static {
    fn run(self: Arc<Self>, node: Node) -> BoxFuture<'static, StepOutcome>;
    /// Told when a host's remaining steps are skipped, and why.
    fn host_stopped(&self, _host: &str, _reason: StopReason) {}
}

pub use crate::exec::events::StopReason;

/// Per-play failure policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailPolicy {
    pub any_errors_fatal: bool,
    pub max_fail_percentage: Option<u8>,
}

/// The result of a walk: which hosts ended how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkSummary {
    pub failed: BTreeSet<String>,
    pub unreachable: BTreeSet<String>,
    /// Hosts stopped because of other hosts' failures or cancellation.
    pub aborted: BTreeSet<String>,
    pub cancelled: bool,
}

/// Walk `plan`, running host steps through `runner`.
pub async fn walk<R: StepRunner>(
    plan: &Plan,
    runner: Arc<R>,
    forks: usize,
    policies: &[FailPolicy],
    mut cancel: watch::Receiver<bool>,
) -> WalkSummary {
    let g = plan.graph();
    let mut pending: HashMap<NodeIndex, usize> = g
        .node_indices()
        .map(|i| (i, plan.predecessors(i).count()))
        .collect();
    let mut ready: Vec<NodeIndex> = pending
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| *i)
        .collect();
    ready.sort_unstable_by(|a, b| b.cmp(a));
    let sem = Arc::new(Semaphore::new(forks.max(1)));
    let mut running: JoinSet<(NodeIndex, StepOutcome)> = JoinSet::new();
    let mut stopped: HashMap<String, StopReason> = HashMap::new();
    let mut summary = WalkSummary::default();
    // Hosts that failed in the current batch of each play, for max_fail_percentage.
    let mut failed_in_batch: HashMap<(usize, usize), BTreeSet<String>> = HashMap::new();
    let mut abort_play: BTreeSet<usize> = BTreeSet::new();
    let mut cancel_open = true;

    loop {
        // Start everything that is ready.
        while let Some(i) = ready.pop() {
            let node = plan.node(i).clone();
            let play = node.step.play();
            match &node.host {
                None => {
                    // Barriers finish at once; batch ends check the failure budget.
                    if let Step::Barrier { label, .. } = &node.step {
                        let policy = policies.get(play).copied().unwrap_or_default();
                        let batch_hosts = plan
                            .batches()
                            .get(play)
                            .and_then(|b| b.get(node.batch))
                            .cloned()
                            .unwrap_or_default();
                        let failed = failed_in_batch
                            .get(&(play, node.batch))
                            .map(BTreeSet::len)
                            .unwrap_or(0);
                        let over_budget = label.starts_with("end of batch")
                            && policy.max_fail_percentage.is_some_and(|pct| {
                                !batch_hosts.is_empty()
                                    && failed * 100 > pct as usize * batch_hosts.len()
                            });
                        if over_budget || (policy.any_errors_fatal && failed > 0) {
                            abort_play.insert(play);
                        }
                    }
                    complete(plan, i, &mut pending, &mut ready);
                }
                Some(host) => {
                    let host = host.clone();
                    let cancelled = *cancel.borrow();
                    let reason = if cancelled {
                        Some(StopReason::Cancelled)
                    } else if let Some(r) = stopped.get(&host) {
                        Some(*r)
                    } else if abort_play.iter().any(|p| *p <= play) {
                        Some(StopReason::Aborted)
                    } else {
                        None
                    };
                    if let Some(r) = reason {
                        if !stopped.contains_key(&host) {
                            stopped.insert(host.clone(), r);
                            if r == StopReason::Aborted {
                                summary.aborted.insert(host.clone());
                            }
                            runner.host_stopped(&host, r);
                        }
                        complete(plan, i, &mut pending, &mut ready);
                        continue;
                    }
                    let sem = sem.clone();
                    let runner = runner.clone();
                    running.spawn(async move {
                        // The semaphore is never closed, so acquire cannot fail.
                        let _permit = sem.acquire_owned().await.ok();
                        (i, runner.run(node).await)
                    });
                }
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            done = running.join_next() => {
                let Some(done) = done else { break };
                let (i, outcome) = match done {
                    Ok(v) => v,
                    // A runner panicked: treat it as a failure of the tool, not a host.
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                let node = plan.node(i);
                if let (Some(host), false) = (&node.host, outcome == StepOutcome::Ok) {
                    let reason = if outcome == StepOutcome::Unreachable {
                        summary.unreachable.insert(host.clone());
                        StopReason::Unreachable
                    } else {
                        summary.failed.insert(host.clone());
                        StopReason::Failed
                    };
                    stopped.insert(host.clone(), reason);
                    runner.host_stopped(host, reason);
                    let play = node.step.play();
                    failed_in_batch.entry((play, node.batch)).or_default().insert(host.clone());
                    let policy = policies.get(play).copied().unwrap_or_default();
                    if policy.any_errors_fatal {
                        abort_play.insert(play);
                    }
                }
                complete(plan, i, &mut pending, &mut ready);
            }
            changed = cancel.changed(), if cancel_open => {
                match changed {
                    // Nobody can cancel any more: stop listening.
                    Err(_) => cancel_open = false,
                    Ok(()) => summary.cancelled |= *cancel.borrow(),
                }
            }
        }
    }
    summary.cancelled |= *cancel.borrow();
    summary
}

fn complete(
    plan: &Plan,
    i: NodeIndex,
    pending: &mut HashMap<NodeIndex, usize>,
    ready: &mut Vec<NodeIndex>,
) {
    for s in plan.successors(i) {
        if let Some(n) = pending.get_mut(&s) {
            *n -= 1;
            if *n == 0 {
                ready.push(s);
            }
        }
    }
    // Lowest index first: creation order, which is host order within a column.
    ready.sort_unstable_by(|a, b| b.cmp(a));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::play::{Batch, Play, Strategy};
    use crate::plan::PlayTarget;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    fn play(ntasks: usize, strategy: Strategy, serial: Vec<Batch>) -> Play {
        crate::model::play::test_support::play(ntasks, strategy, serial, false)
    }

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    /// Records the order of steps and the peak concurrency; fails configured (host, task) pairs.
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<String>>,
        running: AtomicUsize,
        peak: AtomicUsize,
        fail: Vec<(String, usize)>,
        unreachable: Vec<String>,
        stopped: Mutex<Vec<(String, StopReason)>>,
        delay_ms: u64,
    }

    impl StepRunner for Fake {
        fn run(self: Arc<Self>, node: Node) -> BoxFuture<'static, StepOutcome> {
            Box::pin(async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
                let host = node.host.clone().unwrap_or_default();
                let out = match node.step {
                    Step::Task { task, .. } => {
                        self.log.lock().unwrap().push(format!("{host}:t{task}"));
                        if self.unreachable.contains(&host) {
                            StepOutcome::Unreachable
                        } else if self.fail.contains(&(host.clone(), task)) {
                            StepOutcome::Failed
                        } else {
                            StepOutcome::Ok
                        }
                    }
                    _ => StepOutcome::Ok,
                };
                self.running.fetch_sub(1, Ordering::SeqCst);
                out
            })
        }

        fn host_stopped(&self, host: &str, reason: StopReason) {
            self.stopped
                .lock()
                .unwrap()
                .push((host.to_string(), reason));
        }
    }

    async fn run(
        plays: &[(Play, usize)],
        fake: Fake,
        forks: usize,
        policies: &[FailPolicy],
    ) -> (Arc<Fake>, WalkSummary) {
        let targets: Vec<PlayTarget<'_>> = plays
            .iter()
            .map(|(p, n)| PlayTarget {
                play: p,
                hosts: hosts(*n),
            })
            .collect();
        let plan = Plan::build(&targets);
        let fake = Arc::new(fake);
        let (_tx, rx) = watch::channel(false);
        let summary = walk(&plan, fake.clone(), forks, policies, rx).await;
        (fake, summary)
    }

    #[tokio::test]
    async fn linear_runs_tasks_in_lockstep_in_host_order() {
        let (fake, s) = run(
            &[(play(2, Strategy::Linear, vec![]), 3)],
            Fake::default(),
            1,
            &[],
        )
        .await;
        assert_eq!(
            *fake.log.lock().unwrap(),
            vec!["h1:t0", "h2:t0", "h3:t0", "h1:t1", "h2:t1", "h3:t1"]
        );
        assert_eq!(s, WalkSummary::default());
    }

    #[tokio::test]
    async fn forks_caps_concurrency() {
        let fake = Fake {
            delay_ms: 20,
            ..Default::default()
        };
        let (fake, _) = run(&[(play(2, Strategy::Free, vec![]), 6)], fake, 2, &[]).await;
        let peak = fake.peak.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&peak),
            "peak concurrency {peak} exceeds forks=2"
        );
        assert_eq!(fake.log.lock().unwrap().len(), 12);
    }

    #[tokio::test]
    async fn failed_host_skips_its_remaining_steps_and_others_continue() {
        let fake = Fake {
            fail: vec![("h2".into(), 0)],
            ..Default::default()
        };
        let p1 = play(2, Strategy::Linear, vec![]);
        let p2 = play(1, Strategy::Linear, vec![]);
        let (fake, s) = run(&[(p1, 3), (p2, 3)], fake, 4, &[]).await;
        let log = fake.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l == "h2:t1"), "{log:?}");
        // h1 and h3 run both tasks of play 1 and the task of play 2.
        assert_eq!(log.iter().filter(|l| l.starts_with("h1:")).count(), 3);
        assert_eq!(log.iter().filter(|l| l.starts_with("h3:")).count(), 3);
        assert_eq!(s.failed, BTreeSet::from(["h2".to_string()]));
        assert_eq!(
            *fake.stopped.lock().unwrap(),
            vec![("h2".to_string(), StopReason::Failed)]
        );
    }

    #[tokio::test]
    async fn unreachable_host_is_reported_apart_from_failures() {
        let fake = Fake {
            unreachable: vec!["h1".into()],
            ..Default::default()
        };
        let (_, s) = run(&[(play(2, Strategy::Linear, vec![]), 2)], fake, 2, &[]).await;
        assert_eq!(s.unreachable, BTreeSet::from(["h1".to_string()]));
        assert!(s.failed.is_empty());
    }

    #[tokio::test]
    async fn any_errors_fatal_stops_every_host_after_the_failing_task() {
        let fake = Fake {
            fail: vec![("h1".into(), 0)],
            ..Default::default()
        };
        let policy = FailPolicy {
            any_errors_fatal: true,
            max_fail_percentage: None,
        };
        let (fake, s) = run(
            &[(play(3, Strategy::Linear, vec![]), 3)],
            fake,
            1,
            &[policy],
        )
        .await;
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(log, vec!["h1:t0", "h2:t0", "h3:t0"]);
        assert_eq!(
            s.aborted,
            BTreeSet::from(["h2".to_string(), "h3".to_string()])
        );
    }

    #[tokio::test]
    async fn max_fail_percentage_stops_later_batches() {
        // serial 2: batch 1 = h1,h2 (h1 fails: 50% > 25%), so batch 2 (h3,h4) never runs.
        let fake = Fake {
            fail: vec![("h1".into(), 0)],
            ..Default::default()
        };
        let policy = FailPolicy {
            any_errors_fatal: false,
            max_fail_percentage: Some(25),
        };
        let (fake, s) = run(
            &[(play(1, Strategy::Linear, vec![Batch::Count(2)]), 4)],
            fake,
            4,
            &[policy],
        )
        .await;
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(log, vec!["h1:t0", "h2:t0"]);
        assert_eq!(
            s.aborted,
            BTreeSet::from(["h3".to_string(), "h4".to_string()])
        );
    }

    #[tokio::test]
    async fn failures_within_budget_let_later_batches_run() {
        let fake = Fake {
            fail: vec![("h1".into(), 0)],
            ..Default::default()
        };
        let policy = FailPolicy {
            any_errors_fatal: false,
            max_fail_percentage: Some(50),
        };
        let (fake, s) = run(
            &[(play(1, Strategy::Linear, vec![Batch::Count(2)]), 4)],
            fake,
            4,
            &[policy],
        )
        .await;
        assert_eq!(fake.log.lock().unwrap().len(), 4);
        assert!(s.aborted.is_empty());
    }

    #[tokio::test]
    async fn dropped_cancel_sender_does_not_cancel_the_run() {
        let p = play(2, Strategy::Linear, vec![]);
        let plan = Plan::build(&[PlayTarget {
            play: &p,
            hosts: hosts(2),
        }]);
        let fake = Arc::new(Fake {
            delay_ms: 5,
            ..Default::default()
        });
        let (tx, rx) = watch::channel(false);
        drop(tx);
        let s = walk(&plan, fake.clone(), 2, &[], rx).await;
        assert!(!s.cancelled);
        assert_eq!(fake.log.lock().unwrap().len(), 4);
    }

    /// Holds every step until released, and says when each starts.
    struct Gated {
        started: tokio::sync::mpsc::UnboundedSender<String>,
        gate: Arc<Semaphore>,
        log: Mutex<Vec<String>>,
    }

    impl StepRunner for Gated {
        fn run(self: Arc<Self>, node: Node) -> BoxFuture<'static, StepOutcome> {
            Box::pin(async move {
                if let Step::Task { task, .. } = node.step {
                    let id = format!("{}:t{task}", node.host.unwrap_or_default());
                    self.log.lock().unwrap().push(id.clone());
                    let _ = self.started.send(id);
                    let _permit = self.gate.acquire().await.ok();
                }
                StepOutcome::Ok
            })
        }
    }

    #[tokio::test]
    async fn cancellation_stops_scheduling_new_steps() {
        let p = play(3, Strategy::Linear, vec![]);
        let plan = Plan::build(&[PlayTarget {
            play: &p,
            hosts: hosts(2),
        }]);
        let (stx, mut srx) = tokio::sync::mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let runner = Arc::new(Gated {
            started: stx,
            gate: gate.clone(),
            log: Mutex::new(vec![]),
        });
        let (tx, rx) = watch::channel(false);
        let r2 = runner.clone();
        let handle = tokio::spawn(async move { walk(&plan, r2, 2, &[], rx).await });
        // Both first steps are running; cancel, then let them finish.
        srx.recv().await.unwrap();
        srx.recv().await.unwrap();
        tx.send(true).unwrap();
        gate.add_permits(100);
        let s = handle.await.unwrap();
        assert!(s.cancelled);
        let log = runner.log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec!["h1:t0", "h2:t0"],
            "running steps finish, no new ones start"
        );
    }
}
