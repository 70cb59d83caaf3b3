//! Quorum membership changes (`node add` of masters, `node replace` of a master or ZooKeeper
//! member): which counts are allowed, the order of the steps, and when the cluster is whole.
//!
//! Facts this rests on (Mesos's replicated log and ZooKeeper's static configuration):
//! - `--quorum` cannot change online and must be a majority of the masters. Growing, the
//!   running masters restart with the new quorum first and the new ones start after; so there
//!   are never more masters than twice the quorum minus one, not even for a moment.
//! - A master with an empty replica catches up from the others while a quorum of them is up.
//! - A ZooKeeper server starts with the full new server list; the others then restart one at a
//!   time, followers first and the leader last (the `zookeeper` role's rolling restart). A new
//!   server joins the running ensemble as a non-voting learner until the voters know its id.
//! - A rebuilt machine takes a new ZooKeeper id ([`crate::allocations::Allocations::retire_zookeeper`]).

use crate::health::{majority, ClusterView, ZkMode};

/// One step of a membership change, executed by the engine's day-2 layer in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Install the stack on `hosts` (the site, limited to them). `hold_masters`: their Mesos
    /// master is installed and configured but not started (the running masters must have the
    /// new quorum first). ZooKeeper starts on them with the new server list.
    Install {
        hosts: Vec<String>,
        hold_masters: bool,
    },
    /// Converge `hosts` (the site, limited to them, with `leaving` out of the masters and the
    /// ZooKeeper ensemble): changed ZooKeeper and master configs restart one member at a time
    /// behind the roles' gates (followers first, ZooKeeper's and the masters' leaders last).
    Roll {
        hosts: Vec<String>,
        leaving: Vec<String>,
    },
    /// Start the held masters on `hosts` (the site, limited to them), all at once.
    StartMasters { hosts: Vec<String> },
    /// ZooKeeper's leader must be one of `staying` before their server lists change (a member
    /// restarted with the new list can follow only a leader that list names): while a leaving
    /// member leads, stop its ZooKeeper so the others elect anew ([`leader_move`]); then start
    /// the stopped ones again.
    LeaderAmong { staying: Vec<String> },
    /// Stop and disable the Mesos master on `hosts` and move its work dir aside: it never
    /// comes back with its replica.
    RetireMasters { hosts: Vec<String> },
    /// Stop and disable ZooKeeper on `hosts` and move its data dir aside.
    RetireZookeeper { hosts: Vec<String> },
    /// Gate: [`whole`], on the members not in `without`.
    Whole { without: Vec<String> },
}

impl Step {
    /// The plan line for this step.
    pub fn describe(&self) -> String {
        match self {
            Step::Install {
                hosts,
                hold_masters: true,
            } => format!(
                "install the stack on {} (the site, limited to them): ZooKeeper starts with the new server list and joins as a learner; their Mesos master is installed but held stopped",
                hosts.join(", ")
            ),
            Step::Install { hosts, .. } => format!(
                "install the stack on {} (the site, limited to them): ZooKeeper starts under its new id with the new server list; the Mesos master starts with an empty replica and catches up from the others",
                hosts.join(", ")
            ),
            Step::Roll { hosts, leaving } => format!(
                "converge {} (the site, limited to them{}): each ZooKeeper member and master whose config changed restarts one at a time behind its gate, followers first and each leader last",
                hosts.join(", "),
                if leaving.is_empty() {
                    String::new()
                } else {
                    format!("; {} left out of the server list and the quorum", leaving.join(", "))
                }
            ),
            Step::LeaderAmong { staying } => format!(
                "make ZooKeeper's leader one of {}: while a leaving member leads, stop its ZooKeeper (the others elect anew, a majority always serving), then start the stopped ones again",
                staying.join(", ")
            ),
            Step::RetireMasters { hosts } => format!(
                "stop and disable the Mesos master on {} and move its work dir aside (*.removed-<time>): they never come back",
                hosts.join(", ")
            ),
            Step::RetireZookeeper { hosts } => format!(
                "stop and disable ZooKeeper on {} and move its data dir aside (*.removed-<time>)",
                hosts.join(", ")
            ),
            Step::StartMasters { hosts } => format!(
                "start the Mesos masters on {} at once; they catch up from the others",
                hosts.join(", ")
            ),
            Step::Whole { .. } => "gate: every ZooKeeper member serves under one leader with every follower synced; every master answers, has recovered its replica and reports ensemble_size = the master count; one master is elected".into(),
        }
    }
}

/// The members of both quorums: the ZooKeeper members, then the masters not among them, in
/// their groups' order, without `except`.
pub fn quorum_hosts(zookeeper: &[String], masters: &[String], except: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in zookeeper.iter().chain(masters) {
        if !except.contains(h) && !out.contains(h) {
            out.push(h.clone());
        }
    }
    out
}

/// The masters group may go from `current` to `target` members. `Err` says why not.
pub fn check_master_count(current: usize, target: usize) -> Result<(), String> {
    check_count("master", "masters", current, target)
}

/// The ZooKeeper ensemble may go from `current` to `target` members.
pub fn check_zookeeper_count(current: usize, target: usize) -> Result<(), String> {
    check_count("ZooKeeper member", "ZooKeeper members", current, target)
}

fn check_count(one: &str, many: &str, current: usize, target: usize) -> Result<(), String> {
    if target == 0 {
        return Err(format!("that would remove the last {one}"));
    }
    if target.is_multiple_of(2) {
        return Err(format!(
            "{target} {many} is an even count: it tolerates no more failures than {} and needs a quorum of {}; use an odd count",
            target - 1,
            majority(target)
        ));
    }
    if current > 0 && target < majority(current) {
        return Err(format!(
            "going from {current} to {target} {many} at once would leave fewer than the current quorum of {}: shrink in steps",
            majority(current)
        ));
    }
    Ok(())
}

/// Growing the masters (and, where they are in its group, the ZooKeeper ensemble) by `new`:
/// install them with their master held, converge the running members (new server list, new
/// quorum, one at a time), then start the new masters together, then the gate.
pub fn grow(running: &[String], new: &[String]) -> Vec<Step> {
    vec![
        Step::Install {
            hosts: new.to_vec(),
            hold_masters: true,
        },
        Step::Roll {
            hosts: running.to_vec(),
            leaving: vec![],
        },
        Step::StartMasters {
            hosts: new.to_vec(),
        },
        Step::Whole { without: vec![] },
    ]
}

/// Shrinking the masters and ZooKeeper members by `leaving` (the documented order): the leader
/// of ZooKeeper among the staying members; the leaving masters stopped for good (the staying
/// ones still hold the old quorum, so no write is lost); the staying members converge to the
/// new server list and quorum one at a time; the leaving ZooKeeper members stop (they no longer
/// vote); the gate on the staying members. `leaving_masters` / `leaving_zookeeper` are the
/// leaving hosts in each group.
pub fn shrink(
    staying: &[String],
    leaving_masters: &[String],
    leaving_zookeeper: &[String],
) -> Vec<Step> {
    let mut leaving: Vec<String> = leaving_masters.to_vec();
    leaving.extend(
        leaving_zookeeper
            .iter()
            .filter(|h| !leaving.contains(h))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut out = Vec::new();
    if !leaving_zookeeper.is_empty() {
        out.push(Step::LeaderAmong {
            staying: staying.to_vec(),
        });
    }
    if !leaving_masters.is_empty() {
        out.push(Step::RetireMasters {
            hosts: leaving_masters.to_vec(),
        });
    }
    out.push(Step::Roll {
        hosts: staying.to_vec(),
        leaving: leaving.clone(),
    });
    if !leaving_zookeeper.is_empty() {
        out.push(Step::RetireZookeeper {
            hosts: leaving_zookeeper.to_vec(),
        });
    }
    out.push(Step::Whole { without: leaving });
    out
}

/// What [`Step::LeaderAmong`] does next, from what ZooKeeper looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderMove {
    /// A staying member leads.
    Done,
    /// No leader right now (an election): look again.
    Wait,
    /// Stop this (leaving) leader's ZooKeeper: the others keep a majority.
    Stop(String),
    /// Stopping the leaving leader would cost the majority.
    Refuse(String),
}

/// The next move to get ZooKeeper's leader among `staying` (see [`Step::LeaderAmong`]).
pub fn leader_move(view: &ClusterView, staying: &[String]) -> LeaderMove {
    let Some(leader) = view
        .zookeeper
        .iter()
        .find(|m| m.mode == Some(ZkMode::Leader))
    else {
        return LeaderMove::Wait;
    };
    if staying.contains(&leader.host) {
        return LeaderMove::Done;
    }
    let n = view.zookeeper.len();
    let others = view
        .zookeeper
        .iter()
        .filter(|m| m.host != leader.host && m.mode.is_some_and(ZkMode::serving))
        .count();
    if others < majority(n) {
        return LeaderMove::Refuse(format!(
            "the leaving member {} leads and only {others} of the other members serve; {} are needed to elect another",
            leader.host,
            majority(n)
        ));
    }
    LeaderMove::Stop(leader.host.clone())
}

/// Replacing the machine of `host` (a master, a ZooKeeper member, or both; same name and
/// address, empty disk): install it (ZooKeeper under a new id), converge the other members of
/// its quorums (the new id in their server lists), then the gate. The master count does not
/// change, so no master's quorum does.
pub fn replace(host: &str, others: &[String]) -> Vec<Step> {
    vec![
        Step::Install {
            hosts: vec![host.to_string()],
            hold_masters: false,
        },
        Step::Roll {
            hosts: others.to_vec(),
            leaving: vec![],
        },
        Step::Whole { without: vec![] },
    ]
}

/// Every ZooKeeper member serves, exactly one leads (none for a single standalone member), and
/// the leader has all the others synced. `Err` names what is missing.
pub fn zookeeper_whole(view: &ClusterView) -> Result<(), String> {
    let n = view.zookeeper.len();
    if let Some(m) = view
        .zookeeper
        .iter()
        .find(|m| !m.mode.is_some_and(ZkMode::serving))
    {
        return Err(format!("ZooKeeper member {} is not serving", m.host));
    }
    let leaders: Vec<_> = view
        .zookeeper
        .iter()
        .filter(|m| m.mode == Some(ZkMode::Leader))
        .collect();
    match leaders.as_slice() {
        [l] => match l.synced_followers {
            Some(s) if (s as usize) < n - 1 => Err(format!(
                "the ZooKeeper leader {} has {s} of {} followers synced",
                l.host,
                n - 1
            )),
            _ => Ok(()),
        },
        [] if n > 1 => Err("no ZooKeeper leader".into()),
        [] => Ok(()),
        _ => Err("more than one ZooKeeper leader".into()),
    }
}

/// Every master answers, has recovered its replica of the log and reports an ensemble of the
/// master count; exactly one is elected. `Err` names what is missing.
pub fn masters_whole(view: &ClusterView) -> Result<(), String> {
    let n = view.masters.len();
    for m in &view.masters {
        if !m.answered {
            return Err(format!("master {} does not answer", m.host));
        }
        if !m.recovered {
            return Err(format!(
                "master {} has not recovered its replica of the log",
                m.host
            ));
        }
        if m.ensemble_size != Some(n as u64) {
            return Err(format!(
                "master {} reports ensemble_size {:?}, not {n}",
                m.host, m.ensemble_size
            ));
        }
    }
    match view.masters.iter().filter(|m| m.elected).count() {
        1 => Ok(()),
        0 => Err("no master is elected".into()),
        k => Err(format!("{k} masters say they lead")),
    }
}

/// Both quorums are whole ([`zookeeper_whole`], [`masters_whole`]).
pub fn whole(view: &ClusterView) -> Result<(), String> {
    zookeeper_whole(view)?;
    masters_whole(view)
}

/// A plain run (not `node`) may not change the quorums' membership: `recorded` (the state
/// dir's record; empty: none yet) must equal the masters and ZooKeeper members the inventory
/// names now (`quorum`). `Err` says what differs and what to run instead.
pub fn unchanged(
    recorded: &std::collections::BTreeSet<String>,
    quorum: &[String],
) -> Result<(), String> {
    if recorded.is_empty() {
        return Ok(());
    }
    let now: std::collections::BTreeSet<String> = quorum.iter().cloned().collect();
    if &now == recorded {
        return Ok(());
    }
    let added: Vec<&String> = now.difference(recorded).collect();
    let gone: Vec<&String> = recorded.difference(&now).collect();
    let mut what = Vec::new();
    if !added.is_empty() {
        what.push(format!(
            "{} in the inventory's masters or zookeeper group but not members: `provisioner node add {}` adds them one quorum step at a time (if `node remove` took them out, delete them from the inventory)",
            join(&added),
            join(&added).replace(", ", " ")
        ));
    }
    if !gone.is_empty() {
        what.push(format!(
            "{} members but no longer in those groups: `provisioner node remove {}` takes them out safely (put them back in the inventory first)",
            join(&gone),
            join(&gone).replace(", ", " ")
        ));
    }
    Err(format!(
        "the quorum membership differs from the cluster's (the state dir's allocations.json): {}; a plain run cannot change --quorum or ZooKeeper's server list safely",
        what.join("; ")
    ))
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The identity guard: a host about to join as new must not be, at its address, a live
/// ZooKeeper member or a live replica of the masters' log (a machine still in service under
/// another name, or an old member not yet gone). `zk_serves` / `replica` are what a probe of
/// that address found. `Err` says why the host is refused.
pub fn identity_guard(
    host: &str,
    address: &str,
    zk_serves: bool,
    replica: bool,
) -> Result<(), String> {
    let what = match (zk_serves, replica) {
        (false, false) => return Ok(()),
        (true, false) => "a serving ZooKeeper member",
        (false, true) => "a Mesos master with a recovered replica of the log",
        (true, true) => {
            "a serving ZooKeeper member and a Mesos master with a recovered replica of the log"
        }
    };
    Err(format!(
        "{host}: its address {address} is still {what}: joining it as new would split the ensemble (stop that machine first; `node replace` for a rebuilt one; --force to join anyway)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{MasterView, ZkMember};

    fn zk(host: &str, mode: ZkMode, synced: Option<u64>) -> ZkMember {
        ZkMember {
            host: host.into(),
            mode: Some(mode),
            zxid: Some(1),
            synced_followers: synced,
            version: None,
        }
    }

    fn master(host: &str, elected: bool, recovered: bool, ensemble: u64) -> MasterView {
        MasterView {
            host: host.into(),
            answered: true,
            elected,
            recovered,
            ensemble_size: Some(ensemble),
            uptime_secs: Some(100.0),
            version: None,
        }
    }

    fn whole_view() -> ClusterView {
        ClusterView {
            zookeeper: vec![
                zk("m1", ZkMode::Follower, None),
                zk("m2", ZkMode::Leader, Some(2)),
                zk("m3", ZkMode::Follower, None),
            ],
            masters: vec![
                master("m1", false, true, 3),
                master("m2", true, true, 3),
                master("m3", false, true, 3),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn even_counts_the_last_master_and_too_big_a_shrink_are_refused() {
        assert!(check_master_count(3, 5).is_ok());
        assert!(check_master_count(5, 3).is_ok());
        assert!(check_master_count(1, 3).is_ok());
        assert!(check_master_count(3, 4).unwrap_err().contains("even"));
        assert!(check_master_count(1, 0)
            .unwrap_err()
            .contains("last master"));
        assert!(check_master_count(7, 3)
            .unwrap_err()
            .contains("quorum of 4"));
        assert!(check_zookeeper_count(3, 2).unwrap_err().contains("even"));
        assert!(check_zookeeper_count(3, 0).unwrap_err().contains("last"));
        assert!(check_zookeeper_count(3, 5).is_ok());
    }

    #[test]
    fn growing_starts_the_new_masters_only_after_the_running_ones_rolled() {
        let steps = grow(
            &["m1".into(), "m2".into(), "m3".into()],
            &["m4".into(), "m5".into()],
        );
        let held = steps
            .iter()
            .position(|s| {
                matches!(
                    s,
                    Step::Install {
                        hold_masters: true,
                        ..
                    }
                )
            })
            .unwrap();
        let rolled = steps
            .iter()
            .position(|s| matches!(s, Step::Roll { .. }))
            .unwrap();
        let started = steps
            .iter()
            .position(|s| matches!(s, Step::StartMasters { .. }))
            .unwrap();
        assert!(held < rolled && rolled < started);
        assert_eq!(steps.last(), Some(&Step::Whole { without: vec![] }));
        // A replacement starts its master at once: the count does not change.
        assert!(matches!(
            replace("m2", &["m1".into(), "m3".into()])[0],
            Step::Install {
                hold_masters: false,
                ..
            }
        ));
    }

    #[test]
    fn shrinking_retires_the_leaving_masters_before_the_staying_ones_take_the_new_quorum() {
        let staying: Vec<String> = vec!["m1".into(), "m2".into(), "m3".into()];
        let leaving: Vec<String> = vec!["m4".into(), "m5".into()];
        let steps = shrink(&staying, &leaving, &leaving);
        let pos = |f: &dyn Fn(&Step) -> bool| steps.iter().position(f).unwrap();
        let leader = pos(&|s| matches!(s, Step::LeaderAmong { .. }));
        let retired = pos(&|s| matches!(s, Step::RetireMasters { .. }));
        let rolled = pos(&|s| matches!(s, Step::Roll { .. }));
        let zk_gone = pos(&|s| matches!(s, Step::RetireZookeeper { .. }));
        assert!(leader < retired && retired < rolled && rolled < zk_gone);
        assert_eq!(
            steps[rolled],
            Step::Roll {
                hosts: staying.clone(),
                leaving: leaving.clone()
            }
        );
        assert_eq!(steps.last(), Some(&Step::Whole { without: leaving }));
    }

    #[test]
    fn a_leaving_leader_is_stopped_only_while_the_others_keep_a_majority() {
        let mut v = whole_view();
        let staying: Vec<String> = vec!["m1".into(), "m2".into()];
        // m2 leads: done.
        assert_eq!(leader_move(&v, &staying), LeaderMove::Done);
        v.zookeeper[1].mode = Some(ZkMode::Follower);
        v.zookeeper[2].mode = Some(ZkMode::Leader);
        assert_eq!(leader_move(&v, &staying), LeaderMove::Stop("m3".into()));
        v.zookeeper[0].mode = None;
        assert!(matches!(leader_move(&v, &staying), LeaderMove::Refuse(_)));
        v.zookeeper[2].mode = Some(ZkMode::NotServing);
        assert_eq!(leader_move(&v, &staying), LeaderMove::Wait);
    }

    #[test]
    fn whole_needs_every_member_serving_synced_recovered_and_one_leader() {
        let v = whole_view();
        assert_eq!(whole(&v), Ok(()));
        let mut lagging = v.clone();
        lagging.zookeeper[1].synced_followers = Some(1);
        assert!(whole(&lagging).unwrap_err().contains("1 of 2 followers"));
        let mut looking = v.clone();
        looking.zookeeper[0].mode = Some(ZkMode::NotServing);
        assert!(whole(&looking).unwrap_err().contains("m1 is not serving"));
        let mut empty = v.clone();
        empty.masters[2].recovered = false;
        assert!(whole(&empty).unwrap_err().contains("m3 has not recovered"));
        let mut old_quorum = v.clone();
        old_quorum.masters[0].ensemble_size = Some(5);
        assert!(whole(&old_quorum).unwrap_err().contains("not 3"));
        let mut two = v.clone();
        two.masters[0].elected = true;
        assert!(whole(&two).unwrap_err().contains("2 masters"));
    }

    #[test]
    fn a_plain_run_may_not_change_the_recorded_membership() {
        let rec: std::collections::BTreeSet<String> =
            ["m1", "m2", "m3"].iter().map(|s| s.to_string()).collect();
        let v = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(unchanged(&rec, &v(&["m3", "m1", "m2"])), Ok(()));
        assert_eq!(unchanged(&Default::default(), &v(&["m1"])), Ok(()));
        let e = unchanged(&rec, &v(&["m1", "m2", "m3", "m4", "m5"])).unwrap_err();
        assert!(e.contains("node add m4 m5"), "{e}");
        let e = unchanged(&rec, &v(&["m1"])).unwrap_err();
        assert!(e.contains("node remove m2 m3"), "{e}");
    }

    #[test]
    fn a_live_member_at_a_new_hosts_address_is_refused() {
        assert_eq!(identity_guard("m9", "10.0.0.2", false, false), Ok(()));
        let e = identity_guard("m9", "10.0.0.2", true, false).unwrap_err();
        assert!(
            e.contains("serving ZooKeeper member") && e.contains("--force"),
            "{e}"
        );
        assert!(identity_guard("m9", "10.0.0.2", false, true)
            .unwrap_err()
            .contains("replica"));
    }
}
