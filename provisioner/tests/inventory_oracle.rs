//! Differential tests of inventory loading against Ansible itself.
//!
//! Each directory under tests/fixtures/inventory/ holds an inventory and what ansible-core 2.14
//! made of it (`regen.sh` there regenerates those files). We load the same inventory and compare:
//! per-host vars, the group tree, `group_names`, `groups`, and host pattern selections.

use std::path::{Path, PathBuf};

use provisioner::model::inventory::Inventory;
use provisioner::resolve::inventory::load;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inventory")
}

fn source(case: &str) -> PathBuf {
    let dir = fixtures().join(case);
    ["hosts.ini", "hosts.yml", "hosts", "inv"]
        .iter()
        .map(|s| dir.join(s))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{case}: no inventory source"))
}

fn read_json(case: &str, file: &str) -> Value {
    let p = fixtures().join(case).join(file);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn load_case(case: &str) -> Inventory {
    load(&source(case)).unwrap_or_else(|d| panic!("{case}: unexpected errors:\n{d}"))
}

/// `ansible-inventory --list`: hostvars and the direct hosts/children of every group.
fn check_list(case: &str, inv: &Inventory) {
    let expected = read_json(case, "expected.json");
    let hostvars = &expected["_meta"]["hostvars"];
    let mut ours: Vec<&str> = inv.hosts.keys().map(String::as_str).collect();
    ours.sort();
    let mut theirs: Vec<&str> = hostvars
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Hosts without vars are not in _meta; they appear in a group's `hosts`.
    for (g, body) in expected.as_object().unwrap() {
        if g != "_meta" {
            for h in body["hosts"].as_array().into_iter().flatten() {
                theirs.push(h.as_str().unwrap());
            }
        }
    }
    theirs.sort();
    theirs.dedup();
    assert_eq!(ours, theirs, "{case}: host set");
    for h in inv.hosts.keys() {
        let want = hostvars.get(h).cloned().unwrap_or_else(|| json!({}));
        assert_eq!(
            Value::Object(inv.host_vars(h)),
            want,
            "{case}: vars of host {h}"
        );
    }
    for (name, g) in &inv.groups {
        let body = expected.get(name).cloned().unwrap_or_else(|| json!({}));
        let children = body.get("children").cloned().unwrap_or_else(|| json!([]));
        let hosts = body.get("hosts").cloned().unwrap_or_else(|| json!([]));
        assert_eq!(json!(g.children), children, "{case}: children of {name}");
        // ansible-inventory never lists the hosts of `all` itself.
        if name != "all" {
            assert_eq!(json!(g.hosts), hosts, "{case}: direct hosts of {name}");
        }
    }
    for g in expected.as_object().unwrap().keys() {
        assert!(
            g == "_meta" || inv.groups.contains_key(g),
            "{case}: missing group {g}"
        );
    }
}

/// `group_names` and `groups` as a play sees them.
fn check_magic(case: &str, inv: &Inventory) {
    let magic = read_json(case, "magic.json");
    for (host, m) in magic.as_object().unwrap() {
        assert_eq!(
            json!(inv.group_names(host)),
            m["group_names"],
            "{case}: group_names of {host}"
        );
        let groups = json!(inv.groups_map());
        assert_eq!(groups, m["groups"], "{case}: groups (seen from {host})");
        let mv = inv.magic_vars(host);
        assert_eq!(mv["group_names"], m["group_names"]);
        assert_eq!(mv["inventory_hostname"], json!(host));
    }
}

/// `ansible PATTERN [--limit L] --list-hosts`.
fn check_patterns(case: &str, inv: &Inventory) {
    let p = fixtures().join(case).join("patterns.json");
    if !p.exists() {
        return;
    }
    for item in read_json(case, "patterns.json").as_array().unwrap() {
        let pattern = item["pattern"].as_str().unwrap();
        let limit = item["limit"].as_str();
        let sel = inv
            .select(pattern, limit)
            .unwrap_or_else(|e| panic!("{case}: pattern {pattern}: {e}"));
        assert_eq!(
            json!(sel.hosts),
            item["hosts"],
            "{case}: pattern {pattern:?} limit {limit:?}"
        );
    }
}

fn check(case: &str) {
    let inv = load_case(case);
    check_list(case, &inv);
    check_magic(case, &inv);
    check_patterns(case, &inv);
}

#[test]
fn ini_inventory_matches_ansible() {
    check("ini_basic");
}

#[test]
fn yaml_inventory_with_nested_children_and_vars_dirs_matches_ansible() {
    check("yaml_nested");
}

#[test]
fn group_vars_merge_by_depth_priority_and_name_like_ansible() {
    check("priority");
}

#[test]
fn ini_groups_named_before_they_are_defined_match_ansible() {
    check("ini_forward");
}

#[test]
fn directory_inventory_source_matches_ansible() {
    check("dir_source");
}
