//! Values derived from the inventory, never typed by hand (docs/stack.md, "Derived").
//!
//! The `cluster_facts` role computes the same values with Jinja so ansible-playbook derives
//! them too; these functions are the reference the engine validates against.

use std::net::Ipv4Addr;

use serde::Serialize;

pub use crate::topology::mesos_quorum;

/// One ZooKeeper ensemble member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnsembleMember {
    /// `myid`: 1-based position in `groups['zookeeper']`.
    pub id: usize,
    pub host: String,
    pub address: String,
}

/// `zookeeper_myid` of `host`: its 1-based index in the zookeeper group, `None` if not a member.
pub fn zookeeper_myid(zookeeper: &[String], host: &str) -> Option<usize> {
    zookeeper.iter().position(|h| h == host).map(|i| i + 1)
}

/// `zookeeper_ensemble`: the members in group order with their ids and addresses.
/// `address_of` gives a host's cluster address.
pub fn zookeeper_ensemble(
    zookeeper: &[String],
    address_of: impl Fn(&str) -> String,
) -> Vec<EnsembleMember> {
    zookeeper
        .iter()
        .enumerate()
        .map(|(i, h)| EnsembleMember {
            id: i + 1,
            host: h.clone(),
            address: address_of(h),
        })
        .collect()
}

/// `mesos_zk`: `zk://a1:2181,a2:2181,a3:2181/mesos` over the members' addresses.
pub fn mesos_zk(addresses: &[String], client_port: u16, path: &str) -> String {
    let hosts: Vec<String> = addresses
        .iter()
        .map(|a| format!("{a}:{client_port}"))
        .collect();
    format!("zk://{}/{}", hosts.join(","), path.trim_start_matches('/'))
}

/// `cni_supernet` when the inventory does not set it (the `cluster_facts` role's default).
pub const DEFAULT_CNI_SUPERNET: &str = "10.200.0.0/16";

/// A /24 carved from the CNI supernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet24(pub Ipv4Addr);

impl std::fmt::Display for Subnet24 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/24", self.0)
    }
}

/// An IPv4 network `a.b.c.d/p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supernet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Supernet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a network (a.b.c.d/prefix)"))?;
        let base: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{s}`: `{a}` is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{s}`: prefix `{p}` is not 0..32"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if u32::from(base) & !mask != 0 {
            return Err(format!("`{s}` has host bits set"));
        }
        Ok(Supernet { base, prefix })
    }
}

impl Supernet {
    /// How many /24s it holds (0 if it is smaller than a /24).
    pub fn capacity(&self) -> usize {
        if self.prefix > 24 {
            0
        } else {
            1usize << (24 - self.prefix)
        }
    }
}

/// `cni_subnet` for every agent: the agent at 0-based position `i` in `groups['agents']`
/// gets the `i`-th /24 of the supernet (`10.200.0.0/16`: agent 0 → `10.200.0.0/24`, agent 1
/// → `10.200.1.0/24`). Disjoint and deterministic; an error when the supernet is too small.
pub fn cni_subnets(supernet: &str, agents: usize) -> Result<Vec<Subnet24>, String> {
    let net: Supernet = supernet.parse()?;
    if agents > net.capacity() {
        return Err(format!(
            "cni_supernet {supernet} holds {} /24 subnet(s), not enough for {agents} agent(s)",
            net.capacity()
        ));
    }
    let base = u32::from(net.base);
    Ok((0..agents)
        .map(|i| Subnet24(Ipv4Addr::from(base + ((i as u32) << 8))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn myid_is_one_based_in_group_order() {
        let zk = names(&["m1", "m2", "m3"]);
        assert_eq!(zookeeper_myid(&zk, "m1"), Some(1));
        assert_eq!(zookeeper_myid(&zk, "m3"), Some(3));
        assert_eq!(zookeeper_myid(&zk, "a1"), None);
        let e = zookeeper_ensemble(&zk, |h| format!("10.0.0.{}", &h[1..]));
        assert_eq!(
            e[1],
            EnsembleMember {
                id: 2,
                host: "m2".into(),
                address: "10.0.0.2".into()
            }
        );
    }

    #[test]
    fn zk_string_lists_every_member() {
        let a = names(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(
            mesos_zk(&a, 2181, "mesos"),
            "zk://10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181/mesos"
        );
        assert_eq!(
            mesos_zk(&a[..1], 2181, "/mesos"),
            "zk://10.0.0.1:2181/mesos"
        );
    }

    #[test]
    fn cni_subnets_are_disjoint_and_deterministic() {
        let s = cni_subnets("10.200.0.0/16", 3).unwrap();
        let t: Vec<String> = s.iter().map(|s| s.to_string()).collect();
        assert_eq!(t, ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]);
        assert_eq!(cni_subnets("10.200.0.0/16", 3).unwrap(), s);
        let many = cni_subnets("10.0.0.0/8", 300).unwrap();
        assert_eq!(many[256].to_string(), "10.1.0.0/24");
        let set: std::collections::BTreeSet<_> = many.iter().map(|s| s.0).collect();
        assert_eq!(set.len(), 300);
    }

    #[test]
    fn cni_supernet_errors() {
        assert!(cni_subnets("10.200.0.0/23", 3)
            .unwrap_err()
            .contains("holds 2"));
        assert!(cni_subnets("10.200.0.0/25", 1).is_err());
        assert!(cni_subnets("10.200.1.0/16", 1)
            .unwrap_err()
            .contains("host bits"));
        assert!(cni_subnets("nope", 1).is_err());
        assert!(cni_subnets("10.200.0.0/33", 1).is_err());
        assert_eq!(cni_subnets("10.200.0.0/24", 1).unwrap().len(), 1);
    }
}
