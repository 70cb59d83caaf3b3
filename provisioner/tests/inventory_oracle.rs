//! Differential tests of inventory loading against Ansible itself.
//!
//! Each directory under tests/fixtures/inventory/ holds an inventory and what ansible-core 2.14
//! made of it (`regen.sh` there regenerates those files). We load the same inventory and compare:
//! per-host vars, the group tree, `group_names`, `groups`, and host pattern selections.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

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

// ---- errors: every problem at once, with file:line (Ansible stops at the first one;
// its message for each fixture is in ansible-error.txt).

fn errors(case: &str) -> Vec<String> {
    let d = load(&source(case)).expect_err("errors expected");
    let root = format!("{}/", fixtures().display());
    d.0.iter()
        .map(|x| x.to_string().replace(&root, ""))
        .collect()
}

#[test]
fn ini_with_three_problems_reports_all_three_with_lines() {
    let e = errors("errors_ini");
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].starts_with("errors_ini/hosts.ini:3:1: host range must specify equal-length"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("errors_ini/hosts.ini:5:1: Section [web:bogus] has unknown type"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with(
            "errors_ini/hosts.ini:10:1: Section [parent:children] includes undefined group: nosuch"
        ),
        "{e:#?}"
    );
}

#[test]
fn yaml_structure_errors_cycles_and_bad_vars_files_are_all_reported() {
    let e = errors("errors_yaml");
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e.iter().any(|m| m
            .starts_with("errors_yaml/group_vars/all.yml:1:1: a vars file must hold a mapping")),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|m| m
            .starts_with("errors_yaml/hosts.yml:5:9: Invalid \"hosts\" entry for \"web\" group")),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("errors_yaml/hosts.yml:8:9: Host pattern 1.5 must be a string")),
        "{e:#?}"
    );
    assert!(e.iter().any(|m| m.starts_with("errors_yaml/hosts.yml:11:9: Adding group 'b' as child to 'a' creates a recursive dependency loop")), "{e:#?}");
}

#[test]
fn ini_cycle_and_vars_for_undefined_group_are_both_reported() {
    let e = errors("errors_cycle");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("errors_cycle/hosts.ini:4:1: Adding group 'a' as child to 'b' creates a recursive dependency loop"), "{e:#?}");
    assert!(
        e[1].starts_with(
            "errors_cycle/hosts.ini:5:1: Section [c:vars] not valid for undefined group: c"
        ),
        "{e:#?}"
    );
}

#[test]
fn invalid_yaml_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("inv.yml");
    std::fs::write(&p, "all:\n  hosts: [a, b\n  vars: {}\n").unwrap();
    let d = load(&p).unwrap_err();
    assert_eq!(d.len(), 1, "{d}");
    let s = d.to_string();
    assert!(s.contains("inv.yml:") && s.contains("invalid YAML"), "{s}");
}

#[test]
fn missing_source_is_an_error() {
    let d = load(Path::new("/nonexistent/inventory.yml")).unwrap_err();
    assert!(d.to_string().contains("does not exist"), "{d}");
}

// ---- precedence (levels named in docs/variables.md)

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn playbook_group_and_host_vars_sit_between_inventory_levels() {
    use provisioner::model::vars::VarLevel;
    use provisioner::resolve::inventory::load_playbook_vars;
    let inv_dir = tempfile::tempdir().unwrap();
    let pb_dir = tempfile::tempdir().unwrap();
    let i = inv_dir.path();
    write(i, "hosts.yml", "all:\n  vars: {a: inv_all, b: inv_all, c: inv_all}\n  children:\n    web:\n      hosts:\n        h1: {e: inv_host}\n      vars: {d: inv_web}\n");
    write(i, "group_vars/all.yml", "a: inv_dir_all\n");
    write(i, "group_vars/web.yml", "c: inv_dir_web\n");
    write(
        pb_dir.path(),
        "group_vars/all.yml",
        "a: pb_all\nb: pb_all\n",
    );
    write(
        pb_dir.path(),
        "group_vars/web.yml",
        "c: pb_web\nd: pb_web\n",
    );
    write(pb_dir.path(), "host_vars/h1.yml", "e: pb_host\n");
    let mut inv = load(&i.join("hosts.yml")).unwrap();
    load_playbook_vars(&mut inv, pb_dir.path()).unwrap();
    let v = inv.host_vars("h1");
    // playbook group_vars/all (5) beats inventory group_vars/all (4)
    assert_eq!(v["a"], json!("pb_all"));
    assert_eq!(v["b"], json!("pb_all"));
    // playbook group_vars/web (7) beats inventory group_vars/web (6)
    assert_eq!(v["c"], json!("pb_web"));
    // any group_vars dir (5..7) beats inventory file group vars (3)
    assert_eq!(v["d"], json!("pb_web"));
    // playbook host_vars (10) beats inventory file host vars (8)
    assert_eq!(v["e"], json!("pb_host"));
    let stack = inv.var_stack("h1");
    assert_eq!(stack.source_of("a"), Some(VarLevel::PlaybookGroupVarsAll));
    assert_eq!(stack.source_of("e"), Some(VarLevel::PlaybookHostVarsDir));
}

#[test]
fn inventory_group_vars_all_dir_loses_to_a_specific_groups_inline_vars_only_if_lower_level() {
    // group_vars/all (level 4) beats inline vars of any group (level 3), even a child group.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "hosts.ini", "[web]\nh1\n[web:vars]\nx=web_inline\n");
    write(d, "group_vars/all.yml", "x: all_dir\n");
    let inv = load(&d.join("hosts.ini")).unwrap();
    assert_eq!(inv.host_vars("h1")["x"], json!("all_dir"));
}

#[test]
fn engine_levels_stack_on_top_of_the_inventory() {
    use provisioner::model::vars::VarLevel;
    let inv = load_case("priority");
    let mut stack = inv.var_stack("h1");
    let m = |v: Value| v.as_object().unwrap().clone();
    stack.set(
        VarLevel::RoleDefaults,
        m(json!({"who": "default", "only_default": 1})),
    );
    assert_eq!(stack.resolve()["who"], json!("zeta_dir"));
    stack.set(VarLevel::PlayVars, m(json!({"who": "play"})));
    stack.set(VarLevel::ExtraVars, m(json!({"d": "extra"})));
    let r = stack.resolve();
    assert_eq!(r["who"], json!("play"));
    assert_eq!(r["d"], json!("extra"));
    assert_eq!(r["only_default"], json!(1));
}

// ---- host patterns: one test per operator, and the evaluation order

fn sel(inv: &Inventory, p: &str) -> Vec<String> {
    inv.select(p, None).unwrap().hosts
}

#[test]
fn pattern_union_keeps_first_seen_inventory_order() {
    let inv = load_case("ini_basic");
    assert_eq!(
        sel(&inv, "dbs:web"),
        ["db1", "db-a", "db-b", "db-c", "web01", "web02", "web03", "loose1"]
    );
}

#[test]
fn pattern_intersection_keeps_hosts_in_both() {
    let inv = load_case("ini_basic");
    assert_eq!(sel(&inv, "web:&dbs"), ["db1"]);
}

#[test]
fn pattern_exclusion_removes_hosts() {
    let inv = load_case("ini_basic");
    assert_eq!(sel(&inv, "all:!parent"), ["10.0.0.9"]);
}

#[test]
fn pattern_operators_apply_unions_then_intersections_then_exclusions_regardless_of_position() {
    let inv = load_case("ini_basic");
    assert_eq!(
        sel(&inv, "!db1:&dbs:web:dbs"),
        sel(&inv, "web:dbs:&dbs:!db1")
    );
    assert_eq!(sel(&inv, "!db1:&dbs:web:dbs"), ["db-a", "db-b", "db-c"]);
    // Only modifiers: the union is `all`.
    assert_eq!(sel(&inv, "!parent"), ["10.0.0.9"]);
}

#[test]
fn pattern_globs_regexes_and_subscripts() {
    let inv = load_case("ini_basic");
    assert_eq!(sel(&inv, "db-?"), ["db-a", "db-b", "db-c"]);
    assert_eq!(sel(&inv, "~^db-[bc]$"), ["db-b", "db-c"]);
    assert_eq!(sel(&inv, "dbs[1:2]"), ["db-a", "db-b"]);
    assert_eq!(sel(&inv, "dbs[-1]"), ["db-c"]);
    assert!(inv.select("dbs[9]", None).is_err());
    assert!(inv.select("~(", None).is_err());
}

#[test]
fn pattern_matching_nothing_is_empty_and_flagged() {
    let inv = load_case("ini_basic");
    let s = inv.select("web:nosuch", None).unwrap();
    assert_eq!(s.unmatched, ["nosuch"]);
    assert_eq!(s.hosts.len(), 5);
    let s = inv.select("nosuch", None).unwrap();
    assert!(s.is_empty());
}

#[test]
fn limit_restricts_a_selection() {
    let inv = load_case("ini_basic");
    assert_eq!(
        inv.select("all", Some("web:!loose1")).unwrap().hosts,
        ["web01", "web02", "web03", "db1"]
    );
}

// ---- connection vars through the inventory

#[test]
fn connect_target_comes_from_resolved_inventory_vars() {
    let inv = load_case("ini_basic");
    let t = inv.connect_target("db1").unwrap();
    assert_eq!(t.address, "db1");
    assert_eq!(t.port, Some(2200));
    // [dbs:vars] (depth 2) beats [all:vars]
    assert_eq!(t.user.as_deref(), Some("postgres"));
    let c = inv.connection("web01").unwrap();
    assert_eq!(c.target.port, Some(2222));
    assert_eq!(c.target.user.as_deref(), Some("admin"));
    // group_vars/all.yml: ansible_become: yes
    assert_eq!(c.become_.as_deref(), Some("root"));
    assert!(inv.connection("nosuch").is_err());
}

#[test]
fn magic_vars_short_name_keeps_ip_addresses_whole() {
    let inv = load_case("ini_basic");
    assert_eq!(
        inv.magic_vars("10.0.0.9")["inventory_hostname_short"],
        json!("10.0.0.9")
    );
    let f = inv.magic_vars("web01")["inventory_file"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(f.ends_with("ini_basic/hosts.ini"), "{f}");
}
