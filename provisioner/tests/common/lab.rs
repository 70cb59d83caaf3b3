//! The shared lab, as the engine and fault suites see it: its inventory, ssh to its hosts as
//! root, and `provisioner` runs with their output kept in the test log.
#![allow(dead_code, clippy::print_stderr, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn lab_inventory() -> PathBuf {
    let p = std::env::var_os("PROVISIONER_LAB_INVENTORY").expect(
        "PROVISIONER_LAB_INVENTORY is not set: these tests need a lab (bash .ci/test brings one up)",
    );
    PathBuf::from(p)
}

/// The lab's name: `PROVISIONER_LAB_NAME`, else the one its inventory records.
pub fn lab_name(inv: &Path) -> String {
    std::env::var("PROVISIONER_LAB_NAME")
        .ok()
        .unwrap_or_else(|| {
            provisioner::yaml::load_single(inv).unwrap().to_json()["all"]["vars"]["lab_name"]
                .as_str()
                .expect("lab_name in the lab inventory")
                .to_string()
        })
}

/// `provisioner lab ARGS --name LAB`, which must succeed.
pub fn lab(inv: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("lab")
        .args(args)
        .args(["--name", &lab_name(inv)])
        .output()
        .expect("run provisioner lab");
    assert!(
        out.status.success(),
        "lab {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn provisioner(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .output()
        .expect("run provisioner");
    eprintln!(
        "$ provisioner {}\n--- stdout\n{}--- stderr\n{}--- exit {:?}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

pub struct Host {
    pub address: String,
    pub user: String,
    pub key: String,
    pub known_hosts: String,
}

pub fn host(inv: &Path, name: &str) -> Host {
    let inventory = provisioner::resolve::inventory::load(inv).expect("lab inventory loads");
    let vars = inventory.host_vars(name);
    let s = |k: &str| {
        vars.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let common = s("ansible_ssh_common_args");
    let known_hosts = common
        .split_whitespace()
        .find_map(|w| w.strip_prefix("UserKnownHostsFile="))
        .expect("lab inventory names its known_hosts")
        .to_string();
    Host {
        address: s("ansible_host"),
        user: s("ansible_user"),
        key: s("ansible_ssh_private_key_file"),
        known_hosts,
    }
}

/// Run a command on a lab host with the system ssh client (strict host keys), as root.
pub fn ssh(inv: &Path, name: &str, cmd: &str) -> Output {
    super::ssh_command(inv, name, cmd)
        .output()
        .expect("run ssh")
}

pub fn ssh_ok(inv: &Path, name: &str, cmd: &str) -> String {
    let o = ssh(inv, name, cmd);
    assert!(
        o.status.success(),
        "{name}: `{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn groups(inv: &Path) -> BTreeMap<String, Vec<String>> {
    let inventory = provisioner::resolve::inventory::load(inv).expect("lab inventory loads");
    inventory.groups_map().into_iter().collect()
}

/// JSON events of a run, one per line.
pub fn events(out: &Output) -> Vec<Value> {
    events_of(&out.stdout)
}

pub fn events_of(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// (task name, changed) per finished task of `host`, in order (loop items excluded).
pub fn changed_flags(events: &[Value], host: &str) -> Vec<(String, bool)> {
    events
        .iter()
        .filter(|e| e["event"] == "task_finished" && e["host"] == host && e.get("item").is_none())
        .filter(|e| e["task"] != "Gathering Facts")
        .map(|e| {
            (
                e["task"].as_str().unwrap_or("").to_string(),
                e["changed"] == true,
            )
        })
        .collect()
}

/// A copy of the lab inventory in `dir` with its own known_hosts (edited by
/// `edit_known_hosts`) and `extra_hosts` appended: its state dir, and so its run lock, is the
/// caller's own.
pub fn private_inventory(
    inv: &Path,
    dir: &Path,
    extra_hosts: &str,
    edit_known_hosts: impl Fn(String) -> String,
) -> PathBuf {
    let h = host(inv, &groups(inv)["all"][0]);
    let kh = std::fs::read_to_string(&h.known_hosts).unwrap();
    let new_kh = dir.join("known_hosts");
    std::fs::write(&new_kh, edit_known_hosts(kh)).unwrap();
    let text = std::fs::read_to_string(inv)
        .unwrap()
        .replace(&h.known_hosts, new_kh.to_str().unwrap());
    let out = dir.join("inventory.yml");
    std::fs::write(&out, format!("{text}{extra_hosts}")).unwrap();
    out
}
