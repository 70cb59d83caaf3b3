//! What a backup of the stack holds and how a restore proceeds: pure knowledge, no I/O.
//!
//! - ZooKeeper: the snapshot and transaction logs of the member with the highest zxid (the
//!   most recent committed state any member has).
//! - Mesos: the leading master's replicated log (`<work_dir>/replicated_log`). Mesos's durable
//!   state (agents, maintenance, quota) lives there; ZooKeeper only holds ephemeral znodes for
//!   leader election and replica discovery.
//! - A restore puts the same ZooKeeper data on every member and the same log on every master,
//!   all of them stopped, then starts the masters with `--log_auto_initialize=false`: a log
//!   that turned out empty must not silently start a new cluster.

use crate::health::{majority, ClusterView};

/// The archive layout's version (`manifest.json` `format`).
pub const FORMAT: u32 = 1;

/// Where each part lives in the archive.
pub const ZOOKEEPER_DIR: &str = "zookeeper";
pub const MESOS_LOG_DIR: &str = "mesos";
pub const CONFIG_DIR: &str = "config";
pub const STATE_DIR: &str = "state";
pub const MANIFEST: &str = "manifest.json";

/// The master's replicated log, under its `--work_dir`.
pub const REPLICATED_LOG: &str = "replicated_log";
/// ZooKeeper's snapshots and transaction logs, under its `dataDir` (the `myid` beside them is
/// the member's own and is never copied between members).
pub const ZOOKEEPER_DATA: &str = "version-2";

/// The flag a restore starts the masters with, once (a flag file of that name holding `false`).
pub const NO_AUTO_INIT_FLAG: &str = "log_auto_initialize";

/// Order of the stop step: agents, then masters, then ZooKeeper; starting is the reverse.
pub const STOP_ORDER: [&str; 3] = ["mesos_agent", "mesos_master", "zookeeper"];

/// The ZooKeeper member to back up: the serving member with the highest zxid (ties: the first
/// in inventory order). `Err` when no member answered with a zxid.
pub fn zookeeper_source(view: &ClusterView) -> Result<(String, u64), String> {
    let mut best: Option<(&str, u64)> = None;
    for m in &view.zookeeper {
        if let (Some(mode), Some(z)) = (m.mode, m.zxid) {
            if mode.serving() && best.is_none_or(|(_, b)| z > b) {
                best = Some((&m.host, z));
            }
        }
    }
    best.map(|(h, z)| (h.to_string(), z)).ok_or_else(|| {
        "no ZooKeeper member is serving with a zxid: nothing consistent to back up".to_string()
    })
}

/// The master whose replicated log is backed up: the elected leader, which must have
/// recovered its log. `Err` says why there is none.
pub fn log_source(view: &ClusterView) -> Result<String, String> {
    let leader = view
        .leader()
        .ok_or_else(|| "no Mesos master is elected: no leader's log to back up".to_string())?;
    let recovered = view.masters.iter().any(|m| m.host == leader && m.recovered);
    if !recovered {
        return Err(format!(
            "the leader {leader} has not recovered its replicated log (registrar/log/recovered != 1)"
        ));
    }
    Ok(leader.to_string())
}

/// Why a restore may not touch the cluster as it runs now: a ZooKeeper quorum serves, or a
/// master is elected. Empty: everything is down, a restore may proceed. With `--stop-cluster`
/// the restore stops them first instead.
pub fn restore_blockers(view: &ClusterView) -> Vec<String> {
    let mut out = Vec::new();
    let serving: Vec<&str> = view
        .zookeeper
        .iter()
        .filter(|m| m.mode.is_some_and(|x| x.serving()))
        .map(|m| m.host.as_str())
        .collect();
    if !view.zookeeper.is_empty() && serving.len() >= majority(view.zookeeper.len()) {
        out.push(format!(
            "a ZooKeeper quorum serves ({})",
            serving.join(", ")
        ));
    }
    let elected: Vec<&str> = view
        .masters
        .iter()
        .filter(|m| m.elected)
        .map(|m| m.host.as_str())
        .collect();
    if !elected.is_empty() {
        out.push(format!(
            "a Mesos master is elected ({})",
            elected.join(", ")
        ));
    }
    out
}

/// The restore's final gate: exactly one leader, every master recovered, and every agent of
/// `agents` (inventory names) registered and active again. `Err` names what is still missing.
pub fn restored(view: &ClusterView, agents: &[String]) -> Result<(), String> {
    let leaders: Vec<&str> = view
        .masters
        .iter()
        .filter(|m| m.elected)
        .map(|m| m.host.as_str())
        .collect();
    if leaders.len() != 1 {
        return Err(format!(
            "{} elected masters ({}), want exactly one",
            leaders.len(),
            leaders.join(", ")
        ));
    }
    let behind: Vec<&str> = view
        .masters
        .iter()
        .filter(|m| !m.recovered)
        .map(|m| m.host.as_str())
        .collect();
    if !behind.is_empty() {
        return Err(format!(
            "not recovered (registrar/log/recovered != 1): {}",
            behind.join(", ")
        ));
    }
    let missing: Vec<&str> = agents
        .iter()
        .filter(|a| !view.agents.iter().any(|v| &v.hostname == *a && v.active))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!("agents not re-registered: {}", missing.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{AgentView, MasterView, ZkMember, ZkMode};

    fn zk(host: &str, mode: Option<ZkMode>, zxid: Option<u64>) -> ZkMember {
        ZkMember {
            host: host.into(),
            mode,
            zxid,
            ..Default::default()
        }
    }

    fn master(host: &str, elected: bool, recovered: bool) -> MasterView {
        MasterView {
            host: host.into(),
            answered: true,
            elected,
            recovered,
            ..Default::default()
        }
    }

    #[test]
    fn the_member_with_the_highest_zxid_is_backed_up() {
        let v = ClusterView {
            zookeeper: vec![
                zk("m1", Some(ZkMode::Follower), Some(0x10)),
                zk("m2", Some(ZkMode::Leader), Some(0x12)),
                zk("m3", Some(ZkMode::NotServing), Some(0x99)),
                zk("m4", None, None),
            ],
            ..Default::default()
        };
        assert_eq!(zookeeper_source(&v), Ok(("m2".into(), 0x12)));
        assert!(zookeeper_source(&ClusterView::default()).is_err());
    }

    #[test]
    fn only_a_recovered_leader_gives_its_log() {
        let mut v = ClusterView {
            masters: vec![master("m1", false, true), master("m2", true, false)],
            ..Default::default()
        };
        assert!(log_source(&v).unwrap_err().contains("not recovered"));
        v.masters[1].recovered = true;
        assert_eq!(log_source(&v), Ok("m2".into()));
        v.masters[1].elected = false;
        assert!(log_source(&v).unwrap_err().contains("no Mesos master"));
    }

    #[test]
    fn restore_is_blocked_by_a_serving_quorum_or_a_leader() {
        let mut v = ClusterView {
            zookeeper: vec![
                zk("m1", Some(ZkMode::Follower), None),
                zk("m2", Some(ZkMode::Leader), None),
                zk("m3", None, None),
            ],
            masters: vec![master("m1", false, false)],
            ..Default::default()
        };
        assert_eq!(restore_blockers(&v).len(), 1);
        v.zookeeper[1].mode = None;
        assert!(
            restore_blockers(&v).is_empty(),
            "one of three serves no quorum"
        );
        v.masters[0].elected = true;
        assert!(restore_blockers(&v)[0].contains("elected (m1)"));
    }

    #[test]
    fn restored_needs_one_leader_every_master_recovered_and_the_agents() {
        let mut v = ClusterView {
            masters: vec![master("m1", true, true), master("m2", false, false)],
            agents: vec![AgentView {
                hostname: "a1".into(),
                active: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let agents = vec!["a1".to_string(), "a2".to_string()];
        assert!(restored(&v, &agents).unwrap_err().contains("m2"));
        v.masters[1].recovered = true;
        assert!(restored(&v, &agents).unwrap_err().contains("a2"));
        assert_eq!(restored(&v, &agents[..1]), Ok(()));
        v.masters[1].elected = true;
        assert!(restored(&v, &agents[..1])
            .unwrap_err()
            .contains("2 elected"));
    }
}
