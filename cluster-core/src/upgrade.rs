//! Rolling upgrades: what differs from the bundle, in which order, behind which gates. Pure:
//! `provisioner upgrade` gathers the cluster's view (the probes of [`crate::health`]), asks
//! [`plan`] what to do, and asks [`may_begin`] and [`settled`] before and after every member.
//!
//! Facts it builds on (Mesos upgrade docs, ZooKeeper admin guide):
//! - masters first, then agents; among masters the leader last, so there is one failover;
//! - ZooKeeper one member at a time, followers first and the leader last; after each, the leader
//!   is back with every follower synced;
//! - an agent must re-register within `agent_ping_timeout` × `max_agent_ping_timeouts` (75 s by
//!   default), so the new build is installed before the quick restart, and the agent comes back
//!   with the same id;
//! - while masters run mixed versions, no `DRAIN_AGENT`/`DEACTIVATE_AGENT`/quota calls: agents
//!   are put in a maintenance window (the schedule), which every version understands.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::health::{self, ClusterView, Flag, Severity, ZkMode};

/// The components `upgrade` rolls, each with how it is rolled.
pub const COMPONENTS: [&str; 3] = ["zookeeper", "mesos_master", "mesos_agent"];

/// Compares dotted versions numerically (`1.10.0` > `1.9.3`); a part that is not a number
/// compares as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<String> { s.split(['.', '-']).map(str::to_string).collect() };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).map(String::as_str).unwrap_or("0");
        let y = pb.get(i).map(String::as_str).unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// What `component` runs on `host` now, as the view shows it.
pub fn running(view: &ClusterView, component: &str, host: &str) -> Option<String> {
    match component {
        "zookeeper" => view
            .zookeeper
            .iter()
            .find(|m| m.host == host)
            .and_then(|m| m.version.clone()),
        "mesos_master" => view
            .masters
            .iter()
            .find(|m| m.host == host)
            .and_then(|m| m.version.clone()),
        "mesos_agent" => view
            .agents
            .iter()
            .find(|a| a.hostname == host)
            .and_then(|a| a.version.clone()),
        _ => None,
    }
}

/// The members of `component` in the view (ZooKeeper members, masters, the inventory's agents).
pub fn members(view: &ClusterView, component: &str) -> Vec<String> {
    match component {
        "zookeeper" => view.zookeeper.iter().map(|m| m.host.clone()).collect(),
        "mesos_master" => view.masters.iter().map(|m| m.host.clone()).collect(),
        "mesos_agent" => view.expected_agents.clone(),
        _ => Vec::new(),
    }
}

/// One host's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub host: String,
    /// What it runs now (`None`: unknown).
    pub from: Option<String>,
    pub to: String,
}

/// One component's roll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub component: String,
    /// The bundle's `upgrade_order`.
    pub order: u32,
    /// The hosts to change, in the order they are planned now (a quorum's leader last; the
    /// runner re-reads the leader before each member).
    pub changes: Vec<Change>,
    /// Hosts restarted together: one each for a quorum, `--max-unavailable` for agents.
    pub batches: Vec<Vec<String>>,
    /// What must hold before each batch, and after it (the words [`may_begin`] and [`settled`]
    /// check).
    pub gates_before: Vec<String>,
    pub gates_after: Vec<String>,
    /// Agents whose new configuration Mesos cannot recover into their old identity (changed
    /// attributes or resources): they take the drain path (drained and marked gone, their
    /// tasks end, they register as new agents).
    pub drain: Vec<String>,
}

/// What `upgrade` will do, or why it will not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub stages: Vec<Stage>,
    /// Reasons to refuse; the plan runs only when this is empty.
    pub refusals: Vec<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.stages.is_empty()
    }
}

/// What [`plan`] decides from.
pub struct Request<'a> {
    pub view: &'a ClusterView,
    /// Every problem the probes found now (`health::evaluate` and `health::other_flags`).
    pub flags: &'a [Flag],
    /// component → host → the version the bundle (or the inventory) wants.
    pub desired: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// component → the bundle's `upgrade_order`.
    pub upgrade_order: &'a BTreeMap<String, u32>,
    /// `--component`: only this one.
    pub only: Option<&'a str>,
    pub max_unavailable: usize,
    pub allow_downgrade: bool,
    /// Agents the roles say would come back incompatible (their attributes or resources change).
    pub incompatible: &'a std::collections::BTreeSet<String>,
}

fn gates(component: &str) -> (Vec<String>, Vec<String>) {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
    match component {
        "zookeeper" => (
            v(&[
                "no critical flag anywhere",
                "the other members keep a majority serving while this one restarts",
            ]),
            v(&[
                "the member serves at the new version",
                "one leader, every member serving, every follower synced",
            ]),
        ),
        "mesos_master" => (
            v(&[
                "no critical flag anywhere",
                "the other masters keep a recovered majority of the log while this one restarts",
            ]),
            v(&[
                "the master answers at the new version",
                "one leader elected; every master recovered, ensemble_size = the master count",
                "after the leader: every agent registered again",
            ]),
        ),
        _ => (
            v(&[
                "no critical flag anywhere",
                "the batch is in a maintenance window (the schedule; no drain calls)",
            ]),
            v(&[
                "each agent registered and active, with the same agent id, at the new version",
                "then the window ends",
            ]),
        ),
    }
}

/// The upgrade's plan: for each component (in `upgrade_order`) the members whose running
/// version differs from the desired one, batched, or the reasons it must not start.
pub fn plan(req: &Request) -> Plan {
    let mut out = Plan::default();
    if let Some(c) = req.only {
        if !COMPONENTS.contains(&c) {
            out.refusals.push(format!(
                "--component {c}: upgrade rolls {}",
                COMPONENTS.join(", ")
            ));
            return out;
        }
    }
    for f in req
        .flags
        .iter()
        .filter(|f| f.severity == Severity::Critical)
    {
        out.refusals
            .push(format!("gate red: {}: {}", f.component, f.reason));
    }
    let mut comps: Vec<&str> = COMPONENTS
        .iter()
        .copied()
        .filter(|c| req.only.is_none_or(|o| o == *c))
        .collect();
    comps.sort_by_key(|c| req.upgrade_order.get(*c).copied().unwrap_or(u32::MAX));
    for c in comps {
        let Some(want) = req.desired.get(c) else {
            continue;
        };
        let mut changes = Vec::new();
        for host in members(req.view, c) {
            let Some(to) = want.get(&host) else { continue };
            let from = running(req.view, c, &host);
            match from.as_deref().map(|f| compare_versions(f, to)) {
                Some(Ordering::Equal) => continue,
                Some(Ordering::Greater) if !req.allow_downgrade => {
                    out.refusals.push(format!(
                        "{c} on {host}: runs {} and the bundle says {to}: that is a downgrade (--allow-downgrade)",
                        from.as_deref().unwrap_or_default()
                    ));
                    continue;
                }
                None => {
                    // Unknown: the host did not answer; the flags above already refuse.
                    out.refusals.push(format!(
                        "{c} on {host}: its running version is unknown (it did not answer)"
                    ));
                    continue;
                }
                _ => {}
            }
            changes.push(Change {
                host,
                from,
                to: to.clone(),
            });
        }
        if changes.is_empty() {
            continue;
        }
        let hosts: Vec<String> = changes.iter().map(|c| c.host.clone()).collect();
        let ordered = health::rollout_order(c, &hosts, req.view);
        changes.sort_by_key(|ch| ordered.iter().position(|h| *h == ch.host));
        let batches = match c {
            "mesos_agent" => ordered
                .chunks(req.max_unavailable.max(1))
                .map(<[String]>::to_vec)
                .collect(),
            _ => ordered.iter().map(|h| vec![h.clone()]).collect(),
        };
        let (gates_before, gates_after) = gates(c);
        let drain = match c {
            "mesos_agent" => ordered
                .iter()
                .filter(|h| req.incompatible.contains(*h))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        out.stages.push(Stage {
            component: c.to_string(),
            order: req.upgrade_order.get(c).copied().unwrap_or_default(),
            changes,
            batches,
            gates_before,
            gates_after,
            drain,
        });
    }
    out
}

/// The next member of a quorum component to restart among `remaining`: a non-leader while
/// there is one, the leader last (read again from the current view, so a failover during the
/// roll does not restart the new leader early).
pub fn next_member(component: &str, remaining: &[String], view: &ClusterView) -> Option<String> {
    health::rollout_order(component, remaining, view)
        .into_iter()
        .next()
}

/// May `batch` of `component` be restarted now? Every critical flag says no (a quorum short of
/// a member, a master not recovered, an agent down), and so does the quorum rule.
pub fn may_begin(
    component: &str,
    batch: &[String],
    view: &ClusterView,
    flags: &[Flag],
) -> Result<(), String> {
    let red: Vec<String> = flags
        .iter()
        .filter(|f| f.severity == Severity::Critical)
        .map(|f| format!("{}: {}", f.component, f.reason))
        .collect();
    if !red.is_empty() {
        return Err(red.join("; "));
    }
    if matches!(component, "zookeeper" | "mesos_master") {
        for m in batch {
            health::may_stop(component, m, view)?;
        }
    }
    Ok(())
}

/// What a batch looked like before it restarted: the agents' ids, the leader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Before {
    /// agent hostname → agent id.
    pub agent_ids: BTreeMap<String, String>,
    /// The batch held the quorum's leader.
    pub had_leader: bool,
    /// Agents that come back under a new id (the drain path); the others must keep theirs.
    pub new_ids: std::collections::BTreeSet<String>,
}

/// What to remember about `batch` before restarting it.
pub fn before(component: &str, batch: &[String], view: &ClusterView) -> Before {
    let in_batch = |h: &str| batch.iter().any(|b| b == h);
    Before {
        agent_ids: view
            .agents
            .iter()
            .filter(|a| in_batch(&a.hostname))
            .map(|a| (a.hostname.clone(), a.id.clone()))
            .collect(),
        had_leader: match component {
            "zookeeper" => view
                .zookeeper
                .iter()
                .any(|m| m.mode == Some(ZkMode::Leader) && in_batch(&m.host)),
            "mesos_master" => view.masters.iter().any(|m| m.elected && in_batch(&m.host)),
            _ => false,
        },
        new_ids: Default::default(),
    }
}

/// Is `batch` back after its restart: the gates after (see [`plan`]'s stages)? `Err` says what
/// is still missing.
pub fn settled(
    component: &str,
    batch: &[String],
    to: &str,
    before: &Before,
    view: &ClusterView,
) -> Result<(), String> {
    let at = |h: &str| -> Result<(), String> {
        match running(view, component, h) {
            Some(v) if compare_versions(&v, to) == Ordering::Equal => Ok(()),
            Some(v) => Err(format!("{h} runs {v}, not {to}")),
            None => Err(format!("{h} does not report a version yet")),
        }
    };
    match component {
        "zookeeper" => {
            for h in batch {
                at(h)?;
            }
            crate::membership::zookeeper_whole(view)
        }
        "mesos_master" => {
            for h in batch {
                at(h)?;
            }
            crate::membership::masters_whole(view)?;
            if before.had_leader {
                agents_registered(view, &view.expected_agents)?;
            }
            Ok(())
        }
        "mesos_agent" => {
            agents_registered(view, batch)?;
            for h in batch {
                at(h)?;
                let now = view.agents.iter().find(|a| &a.hostname == h && a.active);
                if let (Some(a), Some(id)) = (now, before.agent_ids.get(h)) {
                    if before.new_ids.contains(h) {
                        if &a.id == id {
                            return Err(format!(
                                "{h} is still registered under its old id {id} (the drain path gives it a new one)"
                            ));
                        }
                    } else if &a.id != id {
                        return Err(format!(
                            "{h} registered as a new agent ({}, was {id}): its tasks were lost",
                            a.id
                        ));
                    }
                }
            }
            Ok(())
        }
        other => Err(format!("{other} is not rolled by upgrade")),
    }
}

fn agents_registered(view: &ClusterView, hosts: &[String]) -> Result<(), String> {
    for h in hosts {
        if !view.agents.iter().any(|a| &a.hostname == h && a.active) {
            return Err(format!("agent {h} has not registered again"));
        }
    }
    Ok(())
}

/// The drain path may call `DRAIN_AGENT` only when every master runs the same version: a
/// drain writes a minimum capability into the registry that an older master cannot recover.
pub fn may_drain(view: &ClusterView) -> Result<(), String> {
    let versions: std::collections::BTreeSet<&str> = view
        .masters
        .iter()
        .filter_map(|m| m.version.as_deref())
        .collect();
    if versions.len() > 1 {
        return Err(format!(
            "the masters run mixed versions ({}): DRAIN_AGENT must wait until they agree",
            versions.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// The operator API call (`POST /api/v1`) that drains `agent_id` and then marks it gone.
pub fn drain_call(agent_id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "DRAIN_AGENT",
        "drain_agent": {"agent_id": {"value": agent_id}, "mark_gone": true},
    })
}

/// The maintenance schedule (`/master/maintenance/schedule`) with a window for `machines`
/// (hostname, ip) added: from `start_ns` for `duration_ns`. Other windows stay as they are.
pub fn schedule_with(
    schedule: &serde_json::Value,
    machines: &[(String, String)],
    start_ns: i64,
    duration_ns: i64,
) -> serde_json::Value {
    let hosts: Vec<String> = machines.iter().map(|(h, _)| h.clone()).collect();
    let mut out = schedule_without(schedule, &hosts);
    let window = serde_json::json!({
        "machine_ids": machines
            .iter()
            .map(|(h, ip)| serde_json::json!({"hostname": h, "ip": ip}))
            .collect::<Vec<_>>(),
        "unavailability": {
            "start": {"nanoseconds": start_ns},
            "duration": {"nanoseconds": duration_ns},
        },
    });
    if let Some(w) = out["windows"].as_array_mut() {
        w.push(window);
    }
    out
}

/// The maintenance schedule without `hosts` (a window left empty is dropped).
pub fn schedule_without(schedule: &serde_json::Value, hosts: &[String]) -> serde_json::Value {
    let windows: Vec<serde_json::Value> = schedule["windows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| {
            let mut w = w.clone();
            let ids: Vec<serde_json::Value> = w["machine_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| !hosts.iter().any(|h| m["hostname"].as_str() == Some(h)))
                .cloned()
                .collect();
            if ids.is_empty() {
                return None;
            }
            w["machine_ids"] = serde_json::Value::Array(ids);
            Some(w)
        })
        .collect();
    serde_json::json!({ "windows": windows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{AgentView, MasterView, ZkMember};
    use serde_json::json;

    fn master(host: &str, elected: bool, version: &str) -> MasterView {
        MasterView::from_metrics(
            host,
            Some(&json!({"master/elected": if elected {1.0} else {0.0},
                "registrar/log/recovered": 1.0, "registrar/log/ensemble_size": 3.0,
                "master/uptime_secs": 3600.0})),
            Some(&json!({ "version": version })),
        )
    }

    fn view(leader: &str, mv: &str, av: &str) -> ClusterView {
        let ms = ["m1", "m2", "m3"];
        ClusterView {
            zookeeper: ms
                .iter()
                .map(|h| ZkMember {
                    host: h.to_string(),
                    mode: Some(if *h == leader {
                        ZkMode::Leader
                    } else {
                        ZkMode::Follower
                    }),
                    zxid: Some(7),
                    synced_followers: (*h == leader).then_some(2),
                    version: Some("3.8.0".into()),
                })
                .collect(),
            masters: ms.iter().map(|h| master(h, *h == leader, mv)).collect(),
            expected_agents: vec!["a1".into(), "a2".into(), "a3".into()],
            agents: ["a1", "a2", "a3"]
                .iter()
                .map(|h| AgentView {
                    hostname: h.to_string(),
                    id: format!("id-{h}"),
                    active: true,
                    version: Some(av.into()),
                    ..Default::default()
                })
                .collect(),
            in_maintenance: Default::default(),
        }
    }

    fn desired(v: &str) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut d = BTreeMap::new();
        for (c, hs) in [
            ("zookeeper", vec!["m1", "m2", "m3"]),
            ("mesos_master", vec!["m1", "m2", "m3"]),
            ("mesos_agent", vec!["a1", "a2", "a3"]),
        ] {
            let want = if c == "zookeeper" { "3.8.0" } else { v };
            d.insert(
                c.to_string(),
                hs.iter()
                    .map(|h| (h.to_string(), want.to_string()))
                    .collect(),
            );
        }
        d
    }

    fn order() -> BTreeMap<String, u32> {
        [("zookeeper", 3), ("mesos_master", 4), ("mesos_agent", 5)]
            .into_iter()
            .map(|(c, o)| (c.to_string(), o))
            .collect()
    }

    fn req<'a>(
        view: &'a ClusterView,
        flags: &'a [Flag],
        d: &'a BTreeMap<String, BTreeMap<String, String>>,
        o: &'a BTreeMap<String, u32>,
    ) -> Request<'a> {
        Request {
            view,
            flags,
            desired: d,
            upgrade_order: o,
            only: None,
            max_unavailable: 2,
            allow_downgrade: false,
            incompatible: &NONE,
        }
    }

    static NONE: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();

    #[test]
    fn an_incompatible_agent_takes_the_drain_path_and_comes_back_new() {
        let v = view("m1", "1.11.0", "1.10.0");
        let (d, o) = (desired("1.11.0"), order());
        let inc: std::collections::BTreeSet<String> = ["a2".to_string()].into();
        let mut r = req(&v, &[], &d, &o);
        r.incompatible = &inc;
        let p = plan(&r);
        assert_eq!(p.stages[0].drain, ["a2"]);
        let mut b = before("mesos_agent", &["a2".into()], &v);
        b.new_ids.insert("a2".into());
        let mut after = v.clone();
        after.agents[1].version = Some("1.11.0".into());
        assert!(settled("mesos_agent", &["a2".into()], "1.11.0", &b, &after)
            .unwrap_err()
            .contains("old id"));
        after.agents[1].id = "id-a2-new".into();
        assert_eq!(
            settled("mesos_agent", &["a2".into()], "1.11.0", &b, &after),
            Ok(())
        );
        assert_eq!(may_drain(&v), Ok(()));
        let mut mixed = v.clone();
        mixed.masters[0].version = Some("1.10.0".into());
        assert!(may_drain(&mixed).unwrap_err().contains("mixed versions"));
        assert_eq!(drain_call("S1")["drain_agent"]["mark_gone"], true);
    }

    #[test]
    fn a_maintenance_window_is_added_and_removed_without_touching_others() {
        let other = json!({"windows": [{"machine_ids": [{"hostname": "x", "ip": "10.0.0.9"}],
            "unavailability": {"start": {"nanoseconds": 1}, "duration": {"nanoseconds": 2}}}]});
        let with = schedule_with(&other, &[("a1".into(), "10.0.0.5".into())], 100, 200);
        assert_eq!(with["windows"].as_array().unwrap().len(), 2);
        assert_eq!(with["windows"][1]["machine_ids"][0]["ip"], "10.0.0.5");
        assert_eq!(
            with["windows"][1]["unavailability"]["start"]["nanoseconds"],
            100
        );
        assert_eq!(schedule_without(&with, &["a1".into()]), other);
        assert_eq!(
            schedule_without(&json!({}), &["a1".into()]),
            json!({"windows": []})
        );
    }

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("1.11.0", "1.11.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.11", "1.11.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.10.0", "1.11.0"), Ordering::Less);
    }

    #[test]
    fn masters_roll_before_agents_and_the_leader_last() {
        let v = view("m2", "1.10.0", "1.10.0");
        let (d, o) = (desired("1.11.0"), order());
        let p = plan(&req(&v, &[], &d, &o));
        assert!(p.refusals.is_empty(), "{:?}", p.refusals);
        let comps: Vec<&str> = p.stages.iter().map(|s| s.component.as_str()).collect();
        assert_eq!(
            comps,
            ["mesos_master", "mesos_agent"],
            "zookeeper is current"
        );
        assert_eq!(p.stages[0].batches, [["m1"], ["m3"], ["m2"]]);
        assert_eq!(p.stages[1].batches, vec![vec!["a1", "a2"], vec!["a3"]]);
        assert_eq!(
            p.stages[0].changes[0].from.as_deref(),
            Some("1.10.0"),
            "the plan shows what runs now"
        );
    }

    #[test]
    fn nothing_differs_nothing_is_planned() {
        let v = view("m1", "1.11.0", "1.11.0");
        let (d, o) = (desired("1.11.0"), order());
        let p = plan(&req(&v, &[], &d, &o));
        assert!(p.is_noop() && p.refusals.is_empty());
    }

    #[test]
    fn a_downgrade_is_refused_unless_allowed() {
        let v = view("m1", "1.11.0", "1.11.0");
        let (d, o) = (desired("1.10.0"), order());
        let p = plan(&req(&v, &[], &d, &o));
        assert_eq!(p.refusals.len(), 6, "{:?}", p.refusals);
        assert!(p.refusals[0].contains("downgrade"));
        let mut r = req(&v, &[], &d, &o);
        r.allow_downgrade = true;
        let p = plan(&r);
        assert!(p.refusals.is_empty() && p.stages.len() == 2);
    }

    #[test]
    fn a_red_gate_refuses_with_its_reason() {
        let mut v = view("m1", "1.10.0", "1.10.0");
        v.masters[2] = MasterView {
            host: "m3".into(),
            ..Default::default()
        };
        let flags = health::evaluate(&v);
        let (d, o) = (desired("1.11.0"), order());
        let p = plan(&req(&v, &flags, &d, &o));
        assert!(
            p.refusals.iter().any(|r| r.contains("m3: does not answer")),
            "{:?}",
            p.refusals
        );
        assert!(may_begin("mesos_master", &["m2".into()], &v, &flags).is_err());
    }

    #[test]
    fn an_unknown_component_is_refused() {
        let v = view("m1", "1.10.0", "1.10.0");
        let (d, o) = (desired("1.11.0"), order());
        let mut r = req(&v, &[], &d, &o);
        r.only = Some("mesos");
        assert!(plan(&r).refusals[0].contains("--component mesos"));
        r.only = Some("mesos_agent");
        let p = plan(&r);
        assert_eq!(p.stages.len(), 1);
        assert_eq!(p.stages[0].component, "mesos_agent");
    }

    #[test]
    fn the_leader_is_chosen_last_from_the_current_view() {
        let v = view("m3", "1.10.0", "1.10.0");
        let rest = vec!["m2".to_string(), "m3".to_string()];
        assert_eq!(
            next_member("mesos_master", &rest, &v).as_deref(),
            Some("m2")
        );
        let only_leader = vec!["m3".to_string()];
        assert_eq!(
            next_member("mesos_master", &only_leader, &v).as_deref(),
            Some("m3")
        );
    }

    #[test]
    fn a_master_is_settled_only_at_the_new_version_with_the_log_whole() {
        let mut v = view("m1", "1.10.0", "1.10.0");
        let b = before("mesos_master", &["m2".into()], &v);
        assert!(!b.had_leader);
        let e = settled("mesos_master", &["m2".into()], "1.11.0", &b, &v).unwrap_err();
        assert!(e.contains("runs 1.10.0"), "{e}");
        v.masters[1] = master("m2", false, "1.11.0");
        assert_eq!(
            settled("mesos_master", &["m2".into()], "1.11.0", &b, &v),
            Ok(())
        );
        v.masters[2].ensemble_size = Some(2);
        assert!(settled("mesos_master", &["m2".into()], "1.11.0", &b, &v)
            .unwrap_err()
            .contains("ensemble_size"));
    }

    #[test]
    fn after_the_leader_every_agent_must_be_back() {
        let mut v = view("m1", "1.11.0", "1.10.0");
        let b = before("mesos_master", &["m1".into()], &v);
        assert!(b.had_leader);
        v.agents.retain(|a| a.hostname != "a2");
        v.masters[0] = master("m1", false, "1.11.0");
        v.masters[1] = master("m2", true, "1.11.0");
        let e = settled("mesos_master", &["m1".into()], "1.11.0", &b, &v).unwrap_err();
        assert!(e.contains("a2"), "{e}");
    }

    #[test]
    fn an_agent_back_with_a_new_id_is_not_settled() {
        let mut v = view("m1", "1.11.0", "1.10.0");
        let b = before("mesos_agent", &["a1".into()], &v);
        assert_eq!(b.agent_ids["a1"], "id-a1");
        v.agents[0].version = Some("1.11.0".into());
        assert_eq!(
            settled("mesos_agent", &["a1".into()], "1.11.0", &b, &v),
            Ok(())
        );
        v.agents[0].id = "id-new".into();
        assert!(settled("mesos_agent", &["a1".into()], "1.11.0", &b, &v)
            .unwrap_err()
            .contains("new agent"));
    }

    #[test]
    fn zookeeper_is_settled_when_every_follower_is_synced() {
        let mut v = view("m1", "1.11.0", "1.11.0");
        let b = before("zookeeper", &["m2".into()], &v);
        assert_eq!(
            settled("zookeeper", &["m2".into()], "3.8.0", &b, &v),
            Ok(())
        );
        v.zookeeper[0].synced_followers = Some(1);
        assert!(settled("zookeeper", &["m2".into()], "3.8.0", &b, &v)
            .unwrap_err()
            .contains("1 of 2"));
        v.zookeeper[1].mode = Some(ZkMode::NotServing);
        assert!(settled("zookeeper", &["m2".into()], "3.8.0", &b, &v)
            .unwrap_err()
            .contains("m2 is not serving"));
    }
}
