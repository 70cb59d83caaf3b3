//! Stable member identities: ZooKeeper ids (`myid`) and agent CNI subnets, allocated once and
//! recorded (the engine keeps them in the state dir's `allocations.json`, docs/stack.md).
//!
//! A host keeps what it was given for as long as it stays in its group. A new host takes the
//! lowest free id or /24; a removed host frees its own and moves nobody else's. With nothing
//! recorded (a new cluster, or the first run against one made before allocations existed) the
//! values are the positional ones of [`crate::derive`], so nothing changes on the hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::derive::{Subnet24, Supernet};

/// The schema version of `allocations.json`.
pub const VERSION: u32 = 1;

/// The recorded identities (`allocations.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    pub version: u32,
    /// `myid` of each ZooKeeper member, by inventory host name (1..=255).
    pub zookeeper: BTreeMap<String, u32>,
    /// The supernet the agents' subnets are carved from (`cni_supernet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_supernet: Option<String>,
    /// Each agent's /24 (`10.200.3.0/24`), by inventory host name.
    pub cni: BTreeMap<String, String>,
    /// ZooKeeper ids of members whose machine was replaced (`node replace`): never given again,
    /// so a rebuilt machine at an old address never joins under the id of a member that had data.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub retired_zookeeper: BTreeSet<u32>,
    /// The current members of both quorums (masters and ZooKeeper members), by inventory name:
    /// recorded by the first stack run that finds none, then changed only by `node` once a
    /// membership change is whole (crate::membership::unchanged guards every other run).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members: BTreeSet<String>,
}

impl Allocations {
    /// Retire `host`'s ZooKeeper id: the next allocation gives it the lowest id never used by a
    /// replaced member. Returns the retired id (`None`: it had none recorded).
    pub fn retire_zookeeper(&mut self, host: &str) -> Option<u32> {
        let id = self.zookeeper.remove(host)?;
        self.retired_zookeeper.insert(id);
        Some(id)
    }
}

/// ZooKeeper accepts server ids 1..=255.
const MAX_ZK_ID: u32 = 255;

/// The identities for the current groups, keeping what `previous` recorded (see the module).
/// `zookeeper` and `agents` are the groups' hosts in inventory order; `cni_supernet` is the
/// network the agents' /24s come from. A recorded subnet outside it is re-allocated.
pub fn allocate(
    previous: Option<&Allocations>,
    zookeeper: &[String],
    agents: &[String],
    cni_supernet: &str,
) -> Result<Allocations, String> {
    let net: Supernet = cni_supernet.parse()?;
    if agents.len() > net.capacity() {
        return Err(format!(
            "cni_supernet {cni_supernet} holds {} /24 subnet(s), not enough for {} agent(s)",
            net.capacity(),
            agents.len()
        ));
    }
    let Some(prev) = previous else {
        return Ok(positional(zookeeper, agents, cni_supernet));
    };

    let mut zk: BTreeMap<String, u32> = BTreeMap::new();
    let mut used: BTreeSet<u32> = prev.retired_zookeeper.clone();
    for h in zookeeper {
        if let Some(&id) = prev.zookeeper.get(h) {
            if (1..=MAX_ZK_ID).contains(&id)
                && !prev.retired_zookeeper.contains(&id)
                && used.insert(id)
            {
                zk.insert(h.clone(), id);
            }
        }
    }
    for h in zookeeper {
        if !zk.contains_key(h) {
            let id = (1..=MAX_ZK_ID)
                .find(|i| !used.contains(i))
                .ok_or_else(|| format!("no free ZooKeeper id (1..{MAX_ZK_ID}) for {h}"))?;
            used.insert(id);
            zk.insert(h.clone(), id);
        }
    }

    let base = u32::from(net.base);
    let index_of = |s: &str| -> Option<u32> {
        let ip: Ipv4Addr = s.strip_suffix("/24")?.parse().ok()?;
        let off = u32::from(ip).checked_sub(base)?;
        (off & 0xff == 0 && ((off >> 8) as usize) < net.capacity()).then_some(off >> 8)
    };
    let mut cni: BTreeMap<String, String> = BTreeMap::new();
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    for h in agents {
        if let Some(i) = prev.cni.get(h).and_then(|s| index_of(s)) {
            if taken.insert(i) {
                cni.insert(
                    h.clone(),
                    Subnet24(Ipv4Addr::from(base + (i << 8))).to_string(),
                );
            }
        }
    }
    for h in agents {
        if !cni.contains_key(h) {
            // Capacity was checked: a free /24 exists.
            let i = (0..net.capacity() as u32)
                .find(|i| !taken.contains(i))
                .ok_or_else(|| format!("cni_supernet {cni_supernet} has no free /24 for {h}"))?;
            taken.insert(i);
            cni.insert(
                h.clone(),
                Subnet24(Ipv4Addr::from(base + (i << 8))).to_string(),
            );
        }
    }
    Ok(Allocations {
        version: VERSION,
        zookeeper: zk,
        cni_supernet: Some(cni_supernet.to_string()),
        cni,
        retired_zookeeper: prev.retired_zookeeper.clone(),
        members: prev.members.clone(),
    })
}

/// Today's positional values (`cluster_facts`' fallback): myid = 1-based position in the
/// zookeeper group, the i-th agent gets the i-th /24.
fn positional(zookeeper: &[String], agents: &[String], cni_supernet: &str) -> Allocations {
    let subnets = crate::derive::cni_subnets(cni_supernet, agents.len()).unwrap_or_default();
    Allocations {
        version: VERSION,
        zookeeper: zookeeper
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), i as u32 + 1))
            .collect(),
        cni_supernet: Some(cni_supernet.to_string()),
        cni: agents
            .iter()
            .zip(subnets)
            .map(|(h, s)| (h.clone(), s.to_string()))
            .collect(),
        retired_zookeeper: BTreeSet::new(),
        members: BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    const NET: &str = "10.200.0.0/16";

    #[test]
    fn the_first_allocation_records_the_positional_values() {
        let zk = names(&["m1", "m2", "m3"]);
        let agents = names(&["a1", "a2"]);
        let a = allocate(None, &zk, &agents, NET).unwrap();
        for (i, h) in zk.iter().enumerate() {
            assert_eq!(
                Some(a.zookeeper[h] as usize),
                crate::derive::zookeeper_myid(&zk, h)
            );
            assert_eq!(a.zookeeper[h], i as u32 + 1);
        }
        let positional = crate::derive::cni_subnets(NET, 2).unwrap();
        assert_eq!(a.cni["a1"], positional[0].to_string());
        assert_eq!(a.cni["a2"], "10.200.1.0/24");
        // And a second run with the same groups changes nothing.
        assert_eq!(allocate(Some(&a), &zk, &agents, NET).unwrap(), a);
    }

    #[test]
    fn removing_a_middle_member_and_a_middle_agent_moves_nobody_else() {
        let zk = names(&["m1", "m2", "m3", "m4", "m5"]);
        let agents = names(&["a1", "a2", "a3", "a4"]);
        let before = allocate(None, &zk, &agents, NET).unwrap();
        let zk2 = names(&["m1", "m2", "m4", "m5"]);
        let agents2 = names(&["a1", "a3", "a4"]);
        let after = allocate(Some(&before), &zk2, &agents2, NET).unwrap();
        for h in &zk2 {
            assert_eq!(after.zookeeper[h], before.zookeeper[h], "{h} kept its id");
        }
        for h in &agents2 {
            assert_eq!(after.cni[h], before.cni[h], "{h} kept its subnet");
        }
        assert!(!after.zookeeper.contains_key("m3"));
        assert!(!after.cni.contains_key("a2"));
        // A new host takes the lowest free id and /24: the ones just freed.
        let zk3 = names(&["m1", "m2", "m4", "m5", "m6"]);
        let agents3 = names(&["a1", "a3", "a4", "a5", "a6"]);
        let grown = allocate(Some(&after), &zk3, &agents3, NET).unwrap();
        assert_eq!(grown.zookeeper["m6"], 3);
        assert_eq!(grown.cni["a5"], "10.200.1.0/24");
        assert_eq!(grown.cni["a6"], "10.200.4.0/24");
        for h in &agents2 {
            assert_eq!(grown.cni[h], before.cni[h]);
        }
    }

    #[test]
    fn recorded_subnets_outside_a_new_supernet_are_reallocated_and_duplicates_are_not_kept() {
        let agents = names(&["a1", "a2"]);
        let mut prev = allocate(None, &[], &agents, NET).unwrap();
        prev.cni.insert("a2".into(), prev.cni["a1"].clone());
        let a = allocate(Some(&prev), &[], &agents, NET).unwrap();
        assert_eq!(a.cni["a1"], "10.200.0.0/24");
        assert_eq!(a.cni["a2"], "10.200.1.0/24");
        let moved = allocate(Some(&a), &[], &agents, "10.201.0.0/16").unwrap();
        assert_eq!(moved.cni["a1"], "10.201.0.0/24");
        assert_eq!(moved.cni_supernet.as_deref(), Some("10.201.0.0/16"));
    }

    #[test]
    fn a_supernet_too_small_or_malformed_is_an_error() {
        let agents = names(&["a1", "a2", "a3"]);
        assert!(allocate(None, &[], &agents, "10.200.0.0/23")
            .unwrap_err()
            .contains("holds 2"));
        assert!(allocate(None, &[], &agents, "10.200.1.0/16")
            .unwrap_err()
            .contains("host bits"));
    }

    #[test]
    fn a_replaced_member_takes_a_new_id_and_its_old_one_is_never_given_again() {
        let zk = names(&["m1", "m2", "m3"]);
        let mut a = allocate(None, &zk, &[], NET).unwrap();
        assert_eq!(a.retire_zookeeper("m2"), Some(2));
        assert_eq!(a.retire_zookeeper("m2"), None);
        let b = allocate(Some(&a), &zk, &[], NET).unwrap();
        assert_eq!(
            (b.zookeeper["m1"], b.zookeeper["m2"], b.zookeeper["m3"]),
            (1, 4, 3)
        );
        assert!(b.retired_zookeeper.contains(&2));
        // Growing later skips it too, and a stale record of the old id is not kept.
        let zk5 = names(&["m1", "m2", "m3", "m4", "m5"]);
        let mut stale = b.clone();
        stale.zookeeper.insert("m5".into(), 2);
        let c = allocate(Some(&stale), &zk5, &[], NET).unwrap();
        assert_eq!((c.zookeeper["m4"], c.zookeeper["m5"]), (5, 6));
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""retired_zookeeper":[2]"#), "{text}");
    }

    #[test]
    fn the_file_is_plain_json() {
        let a = allocate(None, &names(&["m1"]), &names(&["a1"]), NET).unwrap();
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"zookeeper":{"m1":1},"cni_supernet":"10.200.0.0/16","cni":{"a1":"10.200.0.0/24"}}"#
        );
        assert_eq!(serde_json::from_str::<Allocations>(&text).unwrap(), a);
    }
}
