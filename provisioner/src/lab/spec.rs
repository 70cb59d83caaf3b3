//! The shape of a lab: its name, subnet and hosts. Pure: no I/O.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// First host address inside the subnet (`.11`); the bridge takes `.1`.
pub const FIRST_HOST_OFFSET: u32 = 11;

/// An IPv4 subnet in the 10.0.0.0/8 range, e.g. `10.250.0.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    network: u32,
    prefix: u8,
}

impl Subnet {
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The bridge (and apt proxy) address: `.1` of the subnet.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// The address of the `index`-th host (0-based), from `.11` on.
    pub fn host_ip(&self, index: usize) -> Option<Ipv4Addr> {
        let offset = FIRST_HOST_OFFSET.checked_add(u32::try_from(index).ok()?)?;
        // Keep the broadcast address free.
        if offset >= self.size().saturating_sub(1) {
            return None;
        }
        Some(Ipv4Addr::from(self.network + offset))
    }

    fn size(&self) -> u32 {
        (!self.mask()).saturating_add(1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network
    }

    /// Do the two subnets share any address?
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = self.mask() & other.mask();
        self.network & m == other.network & m
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("bad lab subnet {s:?}: {why}"));
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected A.B.C.D/LEN, e.g. 10.250.0.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=28).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 28"));
        }
        if addr.octets()[0] != 10 {
            return Err(bad("the lab only uses the 10.0.0.0/8 range"));
        }
        let net = Subnet {
            network: u32::from(addr),
            prefix,
        };
        if net.network & !net.mask() != 0 {
            return Err(bad(&format!(
                "host bits are set; did you mean {}/{prefix}?",
                Ipv4Addr::from(net.network & net.mask())
            )));
        }
        Ok(net)
    }
}

/// What a host is for. Decides its hostname prefix and inventory groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Agent,
    Extra,
}

impl Role {
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
            Role::Extra => "extra",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// The hostname, e.g. `master1`.
    pub name: String,
    pub role: Role,
    pub ip: Ipv4Addr,
}

/// A lab's declared shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabSpec {
    pub name: String,
    pub subnet: Subnet,
    pub masters: usize,
    pub agents: usize,
    pub extra: usize,
}

/// Lab names become part of interface names (15 bytes at most) and machine names.
pub const MAX_NAME_LEN: usize = 11;

pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "bad lab name {name:?}: use 1 to {MAX_NAME_LEN} characters a-z, 0-9 and '-', starting with a letter"
        )))
    }
}

impl LabSpec {
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.masters == 0 {
            return Err(Error::Usage("a lab needs at least one master".into()));
        }
        let total = self.masters + self.agents + self.extra;
        if total > 0 && self.subnet.host_ip(total - 1).is_none() {
            return Err(Error::Usage(format!(
                "subnet {} is too small for {total} hosts (hosts start at .{FIRST_HOST_OFFSET})",
                self.subnet
            )));
        }
        Ok(())
    }

    /// Every host, in a fixed order: masters, agents, extras; addresses from `.11`.
    pub fn hosts(&self) -> Vec<HostSpec> {
        let roles = [
            (Role::Master, self.masters),
            (Role::Agent, self.agents),
            (Role::Extra, self.extra),
        ];
        let mut out = Vec::new();
        for (role, count) in roles {
            for i in 1..=count {
                let index = out.len();
                if let Some(ip) = self.subnet.host_ip(index) {
                    out.push(HostSpec {
                        name: format!("{}{i}", role.prefix()),
                        role,
                        ip,
                    });
                }
            }
        }
        out
    }

    /// The per-lab bridge on the control machine.
    pub fn bridge_name(&self) -> String {
        bridge_name(&self.name)
    }
}

pub fn bridge_name(lab: &str) -> String {
    format!("pl-{lab}")
}

/// The nspawn machine name: includes the lab's name so two labs can coexist.
pub fn machine_name(lab: &str, host: &str) -> String {
    format!("{lab}-{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(m: usize, a: usize, e: usize) -> LabSpec {
        LabSpec {
            name: "lab".into(),
            subnet: "10.250.0.0/24".parse().unwrap(),
            masters: m,
            agents: a,
            extra: e,
        }
    }

    #[test]
    fn subnet_parses_and_places_bridge_and_hosts() {
        let s: Subnet = "10.250.0.0/24".parse().unwrap();
        assert_eq!(s.bridge_ip(), Ipv4Addr::new(10, 250, 0, 1));
        assert_eq!(s.host_ip(0), Some(Ipv4Addr::new(10, 250, 0, 11)));
        assert_eq!(s.host_ip(243), Some(Ipv4Addr::new(10, 250, 0, 254)));
        assert_eq!(s.host_ip(244), None);
        assert!(s.contains(Ipv4Addr::new(10, 250, 0, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 251, 0, 200)));
        assert_eq!(s.to_string(), "10.250.0.0/24");
    }

    #[test]
    fn subnet_rejects_other_ranges_and_host_bits() {
        for bad in [
            "192.168.0.0/24",
            "10.0.0.1/24",
            "10.0.0.0",
            "10.0.0.0/30",
            "x/24",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlapping_subnets_are_detected() {
        let a: Subnet = "10.250.0.0/24".parse().unwrap();
        let b: Subnet = "10.250.0.0/16".parse().unwrap();
        let c: Subnet = "10.251.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn hosts_are_named_and_numbered_in_order() {
        let hosts = spec(3, 2, 1).hosts();
        let names: Vec<_> = hosts
            .iter()
            .map(|h| format!("{}={}", h.name, h.ip))
            .collect();
        assert_eq!(
            names,
            [
                "master1=10.250.0.11",
                "master2=10.250.0.12",
                "master3=10.250.0.13",
                "agent1=10.250.0.14",
                "agent2=10.250.0.15",
                "extra1=10.250.0.16"
            ]
        );
    }

    #[test]
    fn validation_catches_bad_names_and_small_subnets() {
        assert!(spec(3, 2, 0).validate().is_ok());
        assert!(spec(0, 2, 0).validate().is_err());
        let mut s = spec(3, 2, 0);
        s.subnet = "10.1.0.0/28".parse().unwrap();
        assert!(s.validate().is_err());
        for bad in ["", "Lab", "1ab", "a_b", "averyverylongname", "lab-"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name("ci-2").is_ok());
        assert_eq!(machine_name("ci", "agent1"), "ci-agent1");
        assert_eq!(bridge_name("ci"), "pl-ci");
    }
}
