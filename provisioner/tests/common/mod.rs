//! Helpers shared by the end-to-end suites (each suite is its own crate: `mod common;`).
#![allow(dead_code)]

use std::process::Command;

/// A 10.N.0.0/24 with N from `range` (first match in the order given) that no interface of
/// this machine uses: a lab a test brings up beside the shared one gets its own subnet.
pub fn free_subnet(range: impl IntoIterator<Item = u8>) -> String {
    let addrs = String::from_utf8(
        Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .expect("run ip")
            .stdout,
    )
    .expect("ip prints text");
    range
        .into_iter()
        .map(|n| format!("10.{n}."))
        .find(|p| !addrs.contains(&format!(" inet {p}")))
        .map(|p| format!("{p}0.0/24"))
        .expect("a free 10.N.0.0/24")
}

pub mod lab;
