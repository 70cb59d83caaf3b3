//! Who the operator remediates in a cycle: a pure function of the drift, the roles, the health
//! gates, the backoff and the budget. No I/O, no clock (the caller passes `now`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// `--remediate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Remediate {
    /// Report drift only.
    Off,
    /// Remediate, but never a quorum member while a quorum gate is red.
    Safe,
    /// Remediate, one quorum member per cycle, whatever the gates say.
    All,
}

/// `--max-agents-per-cycle`: a count or a percentage of the inventory's agents (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Count(usize),
    Percent(u32),
}

impl Budget {
    pub fn parse(s: &str) -> Result<Budget, String> {
        let bad = || format!("--max-agents-per-cycle {s}: give a count (2) or a percentage (10%)");
        let t = s.trim();
        match t.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p == 0 || p > 100 {
                    return Err(format!(
                        "--max-agents-per-cycle {s}: a percentage from 1% to 100%"
                    ));
                }
                Ok(Budget::Percent(p))
            }
            None => match t.parse::<usize>() {
                Ok(0) => Err(format!("--max-agents-per-cycle {s}: at least 1")),
                Ok(n) => Ok(Budget::Count(n)),
                Err(_) => Err(bad()),
            },
        }
    }

    /// How many agents a cycle may remediate, out of `agents` in the inventory: at least 1.
    pub fn agents(self, agents: usize) -> usize {
        match self {
            Budget::Count(n) => n.max(1),
            Budget::Percent(p) => (agents * p as usize / 100).max(1),
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::Percent(10)
    }
}

/// Failures in a row after which a host is backed off.
pub const BACKOFF_AFTER: u32 = 3;
/// The longest a backed-off host waits, in intervals.
pub const BACKOFF_MAX_INTERVALS: u64 = 32;

/// Each host's remediation failures in a row, and when it may be tried again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Backoff {
    hosts: BTreeMap<String, HostBackoff>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostBackoff {
    pub failures: u32,
    /// Seconds (the caller's clock) before which the host is not tried.
    pub until: u64,
}

impl Backoff {
    /// Record a remediation of `host` at `now` (seconds). After [`BACKOFF_AFTER`] failures in a
    /// row, the host waits `interval` × 2^(failures − K), at most [`BACKOFF_MAX_INTERVALS`]
    /// intervals; a success forgets it.
    pub fn record(&mut self, host: &str, ok: bool, now: u64, interval_secs: u64) {
        if ok {
            self.hosts.remove(host);
            return;
        }
        let h = self.hosts.entry(host.to_string()).or_default();
        h.failures += 1;
        if h.failures >= BACKOFF_AFTER {
            let k = (h.failures - BACKOFF_AFTER).min(16);
            let intervals = (1u64 << k).min(BACKOFF_MAX_INTERVALS);
            h.until = now.saturating_add(interval_secs.max(1).saturating_mul(intervals));
        }
    }

    /// `Some(seconds left)` while `host` is backed off at `now`.
    pub fn waiting(&self, host: &str, now: u64) -> Option<(u32, u64)> {
        let h = self.hosts.get(host)?;
        (h.failures >= BACKOFF_AFTER && now < h.until).then(|| (h.failures, h.until - now))
    }

    pub fn failures(&self, host: &str) -> u32 {
        self.hosts.get(host).map(|h| h.failures).unwrap_or(0)
    }
}

/// What the cluster's health says about quorum members this cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Critical quorum gates (ZooKeeper, Mesos masters); empty: green.
    pub red: Vec<RedGate>,
    /// Per quorum member: why it may not stop now (`cluster_core::health::may_stop`).
    pub may_not_stop: BTreeMap<String, String>,
}

/// A red quorum gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedGate {
    /// The member the flag is about (`master2: does not answer`); `None`: the ensemble's
    /// (quorum lost, no leader).
    pub member: Option<String>,
    pub reason: String,
}

impl RedGate {
    pub fn cluster(reason: &str) -> RedGate {
        RedGate {
            member: None,
            reason: reason.to_string(),
        }
    }
}

/// The roles that bound remediation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    /// ZooKeeper members and Mesos masters, in the order to remediate them (followers first,
    /// the leader last: `cluster_core::health::rollout_order`).
    pub quorum: Vec<String>,
    /// The inventory's agents.
    pub agents: Vec<String>,
}

/// Why a drifted host is not remediated this cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Skip {
    /// `--remediate off`.
    ReportOnly,
    /// Another quorum member is remediated this cycle.
    QuorumOnePerCycle { chosen: String },
    /// `safe`: a quorum gate is red, or this member may not stop now.
    HealthRed { why: String },
    /// The agents' budget is used up this cycle.
    Budget { per_cycle: usize },
    /// Failed too often in a row; tried again later.
    BackedOff { failures: u32, retry_in_secs: u64 },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::ReportOnly => write!(f, "--remediate off"),
            Skip::QuorumOnePerCycle { chosen } => {
                write!(f, "one quorum member per cycle ({chosen} this cycle)")
            }
            Skip::HealthRed { why } => write!(f, "health gate red: {why}"),
            Skip::Budget { per_cycle } => write!(f, "agent budget ({per_cycle} per cycle)"),
            Skip::BackedOff {
                failures,
                retry_in_secs,
            } => write!(
                f,
                "backed off after {failures} failures in a row, retried in {retry_in_secs}s"
            ),
        }
    }
}

/// The cycle's decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub remediate: Vec<String>,
    pub skipped: BTreeMap<String, Skip>,
}

/// Who to remediate: only drifted hosts; at most one quorum member (the first in
/// `roles.quorum` order that may go); agents up to the budget; other hosts (no quorum, no
/// agent: e.g. storage or monitoring only) all. Backed-off hosts wait; `safe` leaves quorum
/// members alone while a gate is red (a gate red only about the member itself does not count: its
/// repair is the fix, as long as the others keep their majority); `off` remediates nothing.
pub fn decide(
    drifted: &BTreeSet<String>,
    roles: &Roles,
    health: &Health,
    backoff: &Backoff,
    now: u64,
    mode: Remediate,
    budget: Budget,
) -> Decision {
    let mut d = Decision::default();
    if mode == Remediate::Off {
        d.skipped = drifted
            .iter()
            .map(|h| (h.clone(), Skip::ReportOnly))
            .collect();
        return d;
    }
    let mut available: BTreeSet<&String> = BTreeSet::new();
    for h in drifted {
        match backoff.waiting(h, now) {
            Some((failures, retry_in_secs)) => {
                d.skipped.insert(
                    h.clone(),
                    Skip::BackedOff {
                        failures,
                        retry_in_secs,
                    },
                );
            }
            None => {
                available.insert(h);
            }
        }
    }
    // Quorum members first, in rollout order.
    let is_quorum = |h: &String| roles.quorum.contains(h);
    let quorum: Vec<&String> = roles
        .quorum
        .iter()
        .filter(|h| available.contains(h))
        .collect();
    let mut chosen: Option<String> = None;
    for h in quorum {
        if let Some(c) = &chosen {
            d.skipped
                .insert(h.clone(), Skip::QuorumOnePerCycle { chosen: c.clone() });
            continue;
        }
        // A gate red only because of this member itself (it is down) does not hold its own
        // repair back; the others' majority still must hold (`may_not_stop`).
        let red: Vec<&str> = health
            .red
            .iter()
            .filter(|g| g.member.as_ref() != Some(h))
            .map(|g| g.reason.as_str())
            .collect();
        let blocked = if mode == Remediate::Safe {
            if !red.is_empty() {
                Some(red.join("; "))
            } else {
                health.may_not_stop.get(h).cloned()
            }
        } else {
            None
        };
        match blocked {
            Some(why) => {
                d.skipped.insert(h.clone(), Skip::HealthRed { why });
            }
            None => {
                d.remediate.push(h.clone());
                chosen = Some(h.clone());
            }
        }
    }
    let per_cycle = budget.agents(roles.agents.len());
    let mut agents = 0;
    for h in available.iter().filter(|h| !is_quorum(h)) {
        if roles.agents.contains(h) {
            if agents == per_cycle {
                d.skipped.insert((*h).clone(), Skip::Budget { per_cycle });
                continue;
            }
            agents += 1;
        }
        d.remediate.push((*h).clone());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    fn roles() -> Roles {
        Roles {
            quorum: vec!["m2".into(), "m3".into(), "m1".into()],
            agents: (1..=20).map(|i| format!("a{i}")).collect(),
        }
    }

    #[test]
    fn budget_parses_counts_and_percentages_and_refuses_zero() {
        assert_eq!(Budget::parse("3"), Ok(Budget::Count(3)));
        assert_eq!(Budget::parse("25%"), Ok(Budget::Percent(25)));
        assert!(Budget::parse("0").is_err());
        assert!(Budget::parse("0%").is_err());
        assert!(Budget::parse("120%").is_err());
        assert!(Budget::parse("many").unwrap_err().contains("percentage"));
        assert_eq!(Budget::Percent(10).agents(2), 1, "at least one");
        assert_eq!(Budget::Percent(10).agents(20), 2);
        assert_eq!(Budget::Count(5).agents(2), 5);
    }

    #[test]
    fn off_only_reports() {
        let d = decide(
            &set(&["m1", "a1"]),
            &roles(),
            &Health::default(),
            &Backoff::default(),
            0,
            Remediate::Off,
            Budget::default(),
        );
        assert!(d.remediate.is_empty());
        assert_eq!(d.skipped.len(), 2);
        assert!(d.skipped.values().all(|s| *s == Skip::ReportOnly));
    }

    #[test]
    fn one_quorum_member_per_cycle_in_rollout_order() {
        let d = decide(
            &set(&["m1", "m2", "m3"]),
            &roles(),
            &Health::default(),
            &Backoff::default(),
            0,
            Remediate::Safe,
            Budget::default(),
        );
        assert_eq!(d.remediate, ["m2"]);
        assert_eq!(
            d.skipped["m1"],
            Skip::QuorumOnePerCycle {
                chosen: "m2".into()
            }
        );
    }

    #[test]
    fn safe_leaves_quorum_members_alone_while_a_gate_is_red_but_all_does_not() {
        let red = Health {
            red: vec![RedGate::cluster("zookeeper: no leader")],
            ..Default::default()
        };
        let drift = set(&["m1", "a1", "other"]);
        let d = decide(
            &drift,
            &roles(),
            &red,
            &Backoff::default(),
            0,
            Remediate::Safe,
            Budget::default(),
        );
        assert_eq!(d.remediate, ["a1", "other"]);
        assert!(matches!(d.skipped["m1"], Skip::HealthRed { .. }));
        let d = decide(
            &drift,
            &roles(),
            &red,
            &Backoff::default(),
            0,
            Remediate::All,
            Budget::default(),
        );
        assert_eq!(d.remediate, ["m1", "a1", "other"]);
    }

    #[test]
    fn safe_skips_a_member_that_may_not_stop_and_takes_the_next() {
        let h = Health {
            red: vec![],
            may_not_stop: [("m2".to_string(), "ZooKeeper: without m2 ...".to_string())].into(),
        };
        let d = decide(
            &set(&["m2", "m3"]),
            &roles(),
            &h,
            &Backoff::default(),
            0,
            Remediate::Safe,
            Budget::default(),
        );
        assert_eq!(d.remediate, ["m3"]);
        assert!(matches!(d.skipped["m2"], Skip::HealthRed { .. }));
    }

    #[test]
    fn a_quorum_member_that_is_itself_the_red_gate_is_repaired_when_the_others_hold_quorum() {
        let h = Health {
            red: vec![RedGate {
                member: Some("m2".into()),
                reason: "zookeeper: m2: does not answer".into(),
            }],
            may_not_stop: BTreeMap::new(),
        };
        let d = decide(
            &set(&["m2", "m3"]),
            &roles(),
            &h,
            &Backoff::default(),
            0,
            Remediate::Safe,
            Budget::default(),
        );
        assert_eq!(d.remediate, ["m2"], "its own flag does not block m2");
        let d = decide(
            &set(&["m3"]),
            &roles(),
            &h,
            &Backoff::default(),
            0,
            Remediate::Safe,
            Budget::default(),
        );
        assert!(d.remediate.is_empty(), "m2 down blocks restarting m3");
        assert!(matches!(d.skipped["m3"], Skip::HealthRed { .. }));
    }

    #[test]
    fn agents_follow_the_budget() {
        let drift: BTreeSet<String> = (1..=5).map(|i| format!("a{i}")).collect();
        let d = decide(
            &drift,
            &roles(),
            &Health::default(),
            &Backoff::default(),
            0,
            Remediate::Safe,
            Budget::Percent(10),
        );
        assert_eq!(d.remediate.len(), 2, "10% of 20 agents");
        assert_eq!(
            d.skipped
                .values()
                .filter(|s| **s == Skip::Budget { per_cycle: 2 })
                .count(),
            3
        );
    }

    #[test]
    fn a_host_failing_three_times_in_a_row_is_backed_off_with_a_growing_delay() {
        let mut b = Backoff::default();
        let drift = set(&["a1"]);
        let go = |b: &Backoff, now| {
            decide(
                &drift,
                &roles(),
                &Health::default(),
                b,
                now,
                Remediate::Safe,
                Budget::default(),
            )
        };
        b.record("a1", false, 0, 10);
        b.record("a1", false, 10, 10);
        assert_eq!(go(&b, 20).remediate, ["a1"], "two failures: still tried");
        b.record("a1", false, 20, 10);
        let d = go(&b, 25);
        assert_eq!(
            d.skipped["a1"],
            Skip::BackedOff {
                failures: 3,
                retry_in_secs: 5
            }
        );
        assert_eq!(go(&b, 30).remediate, ["a1"], "retried after one interval");
        b.record("a1", false, 30, 10);
        assert_eq!(b.waiting("a1", 30), Some((4, 20)), "then two intervals");
        b.record("a1", true, 50, 10);
        assert_eq!(b.failures("a1"), 0, "a success forgets");
        for i in 0..40 {
            b.record("a2", false, 0, 10);
            let left = b.waiting("a2", 0).map(|w| w.1).unwrap_or(0);
            assert!(left <= 10 * BACKOFF_MAX_INTERVALS, "capped at round {i}");
        }
    }

    proptest! {
        #[test]
        fn the_decision_keeps_the_rules(
            drift in proptest::collection::btree_set(
                prop_oneof![
                    (1u8..4).prop_map(|i| format!("m{i}")),
                    (1u8..21).prop_map(|i| format!("a{i}")),
                    (1u8..3).prop_map(|i| format!("x{i}")),
                ], 0..30),
            red in any::<bool>(),
            blocked in proptest::collection::btree_set((1u8..4).prop_map(|i| format!("m{i}")), 0..3),
            failures in proptest::collection::btree_map(
                prop_oneof![(1u8..4).prop_map(|i| format!("m{i}")), (1u8..21).prop_map(|i| format!("a{i}"))],
                0u32..6, 0..8),
            mode in prop_oneof![Just(Remediate::Off), Just(Remediate::Safe), Just(Remediate::All)],
            budget in prop_oneof![(1usize..5).prop_map(Budget::Count), (1u32..101).prop_map(Budget::Percent)],
        ) {
            let roles = roles();
            let health = Health {
                red: if red { vec![RedGate::cluster("zookeeper: no leader")] } else { vec![] },
                may_not_stop: blocked.iter().map(|h| (h.clone(), "no".into())).collect(),
            };
            let mut b = Backoff::default();
            for (h, n) in &failures {
                for _ in 0..*n {
                    b.record(h, false, 0, 10);
                }
            }
            let d = decide(&drift, &roles, &health, &b, 1, mode, budget);
            // Every drifted host is either remediated or skipped with a reason; nothing else.
            let mut seen: BTreeSet<String> = d.remediate.iter().cloned().collect();
            prop_assert_eq!(seen.len(), d.remediate.len());
            for h in d.skipped.keys() {
                prop_assert!(seen.insert(h.clone()), "{} both remediated and skipped", h);
            }
            prop_assert_eq!(&seen, &drift);
            let quorum: Vec<&String> = d.remediate.iter().filter(|h| roles.quorum.contains(h)).collect();
            prop_assert!(quorum.len() <= 1);
            let agents = d.remediate.iter().filter(|h| roles.agents.contains(h)).count();
            prop_assert!(agents <= budget.agents(roles.agents.len()));
            for h in &d.remediate {
                prop_assert!(b.waiting(h, 1).is_none());
            }
            if mode == Remediate::Off {
                prop_assert!(d.remediate.is_empty());
            }
            if mode == Remediate::Safe {
                for q in quorum {
                    prop_assert!(!red && !blocked.contains(q));
                }
            }
        }
    }
}
