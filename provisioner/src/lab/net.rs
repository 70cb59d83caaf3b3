//! The per-lab bridge and the network partition of one host (its host-side veth down/up).
//! Hosts only talk to each other and to the apt proxy on the bridge: no forwarding, no NAT.

use std::net::Ipv4Addr;

use super::spec::Subnet;
use super::sys::{self, cmd};
use crate::error::{Error, Result};

pub fn bridge_exists(bridge: &str) -> bool {
    sys::succeeds(&mut cmd("ip", &["link", "show", "dev", bridge]))
}

/// IPv4 addresses on this machine: (interface, address, prefix).
fn addresses() -> Result<Vec<(String, Ipv4Addr, u8)>> {
    let out = sys::run(&mut cmd("ip", &["-o", "-4", "addr", "show"]))?;
    Ok(parse_addresses(&out))
}

fn parse_addresses(out: &str) -> Vec<(String, Ipv4Addr, u8)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(pos) = words.iter().position(|w| *w == "inet") else {
            continue;
        };
        let (Some(ifname), Some(cidr)) = (words.get(1), words.get(pos + 1)) else {
            continue;
        };
        if let Some((a, p)) = cidr.split_once('/') {
            if let (Ok(a), Ok(p)) = (a.parse(), p.parse()) {
                v.push((ifname.to_string(), a, p));
            }
        }
    }
    v
}

/// Refuse a subnet that another interface of this machine already uses.
pub fn check_subnet_free(bridge: &str, subnet: &Subnet) -> Result<()> {
    let all = addresses()?;
    if let Some((ifname, addr, prefix)) = clash(&all, bridge, subnet) {
        let hint = suggest_free(&all, bridge)
            .map(|s| format!("; choose another with --subnet, e.g. --subnet {s}"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "subnet {subnet} is already used by interface {ifname} ({addr}/{prefix}){hint}"
        )));
    }
    Ok(())
}

/// The first free 10.N.0.0/24 (N from 250 down), for error messages.
fn suggest_free(all: &[(String, Ipv4Addr, u8)], bridge: &str) -> Option<Subnet> {
    (200..=254u8)
        .rev()
        .filter_map(|n| format!("10.{n}.0.0/24").parse::<Subnet>().ok())
        .find(|s| clash(all, bridge, s).is_none())
}

fn clash(
    all: &[(String, Ipv4Addr, u8)],
    bridge: &str,
    subnet: &Subnet,
) -> Option<(String, Ipv4Addr, u8)> {
    for (ifname, addr, prefix) in all.iter().cloned() {
        if ifname == bridge {
            continue;
        }
        let theirs: Option<Subnet> = format!("{}/{prefix}", mask(addr, prefix)).parse().ok();
        let clash = match theirs {
            Some(t) => t.overlaps(subnet),
            None => subnet.contains(addr),
        };
        if clash {
            return Some((ifname, addr, prefix));
        }
    }
    None
}

fn mask(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let m = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(u32::from(addr) & m)
}

/// Create the bridge with `.1` of the subnet, or make sure an existing one has it and is up.
pub fn ensure_bridge(bridge: &str, subnet: &Subnet) -> Result<bool> {
    let created = if bridge_exists(bridge) {
        false
    } else {
        sys::run(&mut cmd(
            "ip",
            &["link", "add", "name", bridge, "type", "bridge"],
        ))?;
        true
    };
    let cidr = format!("{}/{}", subnet.bridge_ip(), subnet.prefix());
    sys::run(&mut cmd("ip", &["addr", "replace", &cidr, "dev", bridge]))?;
    sys::run(&mut cmd("ip", &["link", "set", bridge, "up"]))?;
    Ok(created)
}

pub fn delete_bridge(bridge: &str) -> Result<()> {
    if bridge_exists(bridge) {
        sys::run(&mut cmd("ip", &["link", "del", bridge]))?;
    }
    Ok(())
}

/// The host-side veth of a running container, found by the peer index of its `eth0`
/// (robust against nspawn's shortening of long interface names).
pub fn host_veth(init_pid: u32) -> Result<String> {
    let pid = init_pid.to_string();
    let inside = sys::run(&mut cmd(
        "nsenter",
        &["-t", &pid, "-n", "ip", "-o", "link", "show"],
    ))?;
    let peer = inside
        .lines()
        .filter_map(|l| {
            let name = l.split_whitespace().nth(1)?;
            let (ifname, idx) = name.trim_end_matches(':').split_once("@if")?;
            (ifname == "eth0" || ifname == "host0").then(|| idx.to_string())
        })
        .next()
        .ok_or_else(|| Error::Environment("the host has no eth0 veth".into()))?;
    let outside = sys::run(&mut cmd("ip", &["-o", "link", "show"]))?;
    for l in outside.lines() {
        let mut w = l.split_whitespace();
        let (Some(idx), Some(name)) = (w.next(), w.next()) else {
            continue;
        };
        if idx.trim_end_matches(':') == peer {
            let name = name.trim_end_matches(':');
            return Ok(name.split('@').next().unwrap_or(name).to_string());
        }
    }
    Err(Error::Environment(format!(
        "no interface with index {peer} on this machine"
    )))
}

/// Is the interface administratively up?
pub fn link_is_up(ifname: &str) -> bool {
    sys::run(&mut cmd("ip", &["-o", "link", "show", "dev", ifname]))
        .map(|o| {
            o.split_whitespace().nth(2).is_some_and(|flags| {
                flags
                    .trim_matches(|c| c == '<' || c == '>')
                    .split(',')
                    .any(|f| f == "UP")
            })
        })
        .unwrap_or(false)
}

pub fn set_link(ifname: &str, up: bool) -> Result<()> {
    sys::run(&mut cmd(
        "ip",
        &["link", "set", "dev", ifname, if up { "up" } else { "down" }],
    ))
    .map(|_| ())
}

/// A token bucket on `ifname`'s egress at `rate` (tc's units), or none (`None`: full speed).
pub fn set_rate(ifname: &str, rate: Option<&str>) -> Result<()> {
    match rate {
        Some(rate) => {
            let ok = rate.len() > 3
                && rate
                    .trim_end_matches(char::is_alphabetic)
                    .parse::<u64>()
                    .is_ok()
                && ["kbit", "mbit", "gbit"].iter().any(|u| rate.ends_with(u));
            if !ok {
                return Err(Error::Usage(format!(
                    "rate `{rate}`: a whole number with kbit, mbit or gbit (e.g. 40mbit)"
                )));
            }
            sys::run(&mut cmd(
                "tc",
                &[
                    "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", rate, "burst",
                    "64kb", "latency", "400ms",
                ],
            ))
            .map(|_| ())
        }
        // No qdisc of ours: nothing to delete (tc says so on stderr).
        None => {
            let _ = sys::run(&mut cmd("tc", &["qdisc", "del", "dev", ifname, "root"]));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_addr_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n5: lbprobe    inet 10.251.0.1/24 scope global lbprobe\\       valid_lft forever\n";
        let v = parse_addresses(out);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1],
            ("lbprobe".to_string(), Ipv4Addr::new(10, 251, 0, 1), 24)
        );
        assert_eq!(
            mask(Ipv4Addr::new(10, 251, 0, 1), 24),
            Ipv4Addr::new(10, 251, 0, 0)
        );
    }
}
