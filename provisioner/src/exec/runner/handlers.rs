//! Handlers: flushing notified ones in definition order, and those kept pending across runs.

use super::*;

impl Runner {
    /// Run the host's notified handlers of `play`, in the order they are defined.
    pub(super) async fn flush_handlers(&self, host: &str, play: usize) -> StepOutcome {
        let pending = self.with_state(host, |s| s.notified.remove(&play).unwrap_or_default());
        if pending.is_empty() {
            return StepOutcome::Ok;
        }
        let handlers = &self.plays[play].handlers;
        let mut ran = BTreeSet::new();
        for (i, h) in handlers.iter().enumerate() {
            let called = h.name.as_ref().is_some_and(|n| pending.contains(n))
                || h.listen.iter().any(|l| pending.contains(l));
            if called && ran.insert(i) {
                let o = self.run_task(host, play, h, true).await;
                if o != StepOutcome::Ok {
                    // Keep the rest pending so a later run still fires them.
                    let rest: Vec<String> = handlers[i + 1..]
                        .iter()
                        .filter_map(|h| h.name.clone())
                        .filter(|n| pending.contains(n))
                        .collect();
                    self.with_state(host, |s| s.notified.entry(play).or_default().extend(rest));
                    return o;
                }
            }
        }
        StepOutcome::Ok
    }

    /// Handlers still pending on each host (for persistence after a failed run).
    pub fn pending_handlers(&self) -> HashMap<String, Vec<String>> {
        let states = match self.hosts.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        states
            .iter()
            .map(|(h, s)| {
                (
                    h.clone(),
                    s.notified.values().flatten().cloned().collect::<Vec<_>>(),
                )
            })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// Mark handlers as notified before the run starts (left pending by an earlier failed run).
    pub fn restore_pending(&self, host: &str, play: usize, names: Vec<String>) {
        self.with_state(host, |s| s.notified.entry(play).or_default().extend(names));
    }
}
