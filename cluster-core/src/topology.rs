//! Quorum math, group defaults and the topology rules of docs/stack.md, checked before a stack
//! run touches any host.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::Problem;

/// Mesos master quorum for `masters` masters: a strict majority, `floor(n/2) + 1`.
///
/// Returns `None` for an empty master set, which has no quorum.
pub fn mesos_quorum(masters: usize) -> Option<usize> {
    (masters > 0).then_some(masters / 2 + 1)
}

/// How many members of a ZooKeeper ensemble of `size` may be down while the ensemble
/// still holds quorum. An ensemble of 3 tolerates 1, of 5 tolerates 2.
pub fn zookeeper_fault_tolerance(size: usize) -> usize {
    size.saturating_sub(1) / 2
}

/// Group name → hosts, in inventory order (Ansible's `groups`).
pub type Groups = IndexMap<String, Vec<String>>;

/// The groups a stack run adds when the inventory lacks them: `zookeeper` = the masters,
/// `monitoring` = the first master. A group that exists (even empty) is kept as is, so an
/// operator can see an empty ensemble rejected rather than silently replaced.
pub fn default_groups(groups: &Groups) -> Vec<(String, Vec<String>)> {
    let masters = groups.get("masters").cloned().unwrap_or_default();
    let mut out = Vec::new();
    if !groups.contains_key("zookeeper") && !masters.is_empty() {
        out.push(("zookeeper".to_string(), masters.clone()));
    }
    if !groups.contains_key("monitoring") && !masters.is_empty() {
        out.push(("monitoring".to_string(), masters[..1].to_vec()));
    }
    out
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Check the inventory against docs/stack.md's rules. `groups` must already include the
/// defaults of [`default_groups`]; `vars` is each host's resolved variables. Problems carry no
/// line: they are about the inventory as a whole (the caller names its file); each names the
/// hosts or groups at fault.
pub fn validate_topology(
    groups: &Groups,
    vars: &BTreeMap<String, Map<String, Value>>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let get = |g: &str| groups.get(g).map(Vec::as_slice).unwrap_or_default();
    let masters = get("masters");
    let agents = get("agents");
    let zookeeper = get("zookeeper");
    if masters.is_empty() {
        out.push(Problem::whole(
            "no masters: the stack needs a `masters` group with at least one host (an odd number: 1, 3, 5)",
        ));
    }
    if agents.is_empty() {
        out.push(Problem::whole(
            "no agents: the stack needs an `agents` group with at least one host",
        ));
    }
    if groups.contains_key("zookeeper") || !masters.is_empty() {
        if zookeeper.is_empty() {
            out.push(Problem::whole(
                "the `zookeeper` group is empty: an ensemble needs an odd number of hosts (1, 3, 5); remove the group to default to the masters",
            ));
        } else if zookeeper.len() % 2 == 0 {
            out.push(Problem::whole(format!(
                "the ZooKeeper ensemble has {} members ({}): it must be odd (an even ensemble tolerates no more failures than one member fewer)",
                zookeeper.len(),
                zookeeper.join(", ")
            )));
        }
    }
    let var = |h: &str, k: &str| vars.get(h).and_then(|m| m.get(k));
    for h in masters.iter().filter(|h| agents.contains(h)) {
        if var(h, "allow_colocated").and_then(crate::boolean) != Some(true) {
            out.push(Problem::whole(format!(
                "{h} is in both `masters` and `agents`; set `allow_colocated: true` for it to allow that"
            )));
        }
    }
    let derived = mesos_quorum(masters.len());
    let mut hosts: Vec<&String> = vars.keys().collect();
    hosts.sort();
    for h in hosts {
        if let Some(q) = var(h, "mesos_quorum") {
            if let Some(d) = derived {
                if as_int(q) != Some(d as i64) {
                    out.push(Problem::whole(format!(
                        "{h}: mesos_quorum is set to {q} but {} masters need {d}; remove it, it is derived (floor(masters/2)+1)",
                        masters.len()
                    )));
                }
            }
        }
        let in_stack = masters.contains(h) || agents.contains(h);
        let source = var(h, "mesos_source").and_then(Value::as_str);
        // Mesos-DNS runs on the masters; its source defaults to mesos_source.
        let dns_source = var(h, "mesos_dns_source")
            .and_then(Value::as_str)
            .or(source);
        for (what, src, artifact, used, thing) in [
            (
                "mesos_source",
                source,
                "mesos_local_artifact",
                in_stack,
                "a Mesos build tarball",
            ),
            (
                "mesos_dns_source",
                dns_source,
                "mesos_dns_local_artifact",
                masters.contains(h),
                "a Mesos-DNS binary",
            ),
        ] {
            match src {
                None | Some("aventer") => {}
                Some("local") => {
                    let path = var(h, artifact)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty());
                    if used && path.is_none() {
                        out.push(Problem::whole(format!(
                            "{h}: {what} is `local` but {artifact} (the control-node path of {thing}) is not set"
                        )));
                    }
                }
                Some(other) if what == "mesos_source" || var(h, what).is_some() => {
                    out.push(Problem::whole(format!(
                        "{h}: {what} `{other}` is not one of aventer, local"
                    )))
                }
                Some(_) => {}
            }
        }
    }
    // The CNI supernet must hold a /24 for every agent (taken from the first agent's view).
    if let Some(first) = agents.first() {
        if let Some(v) = var(first, "cni_supernet") {
            let s = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            // The same rule the allocation of subnets applies (allocations::allocate).
            if let Err(e) = crate::allocations::allocate(None, &[], agents, &s) {
                out.push(Problem::whole(format!("cni_supernet: {e}")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quorum_is_strict_majority() {
        assert_eq!(mesos_quorum(0), None);
        assert_eq!(mesos_quorum(1), Some(1));
        assert_eq!(mesos_quorum(2), Some(2));
        assert_eq!(mesos_quorum(3), Some(2));
        assert_eq!(mesos_quorum(4), Some(3));
        assert_eq!(mesos_quorum(5), Some(3));
    }

    #[test]
    fn zookeeper_tolerates_minority_loss() {
        assert_eq!(zookeeper_fault_tolerance(1), 0);
        assert_eq!(zookeeper_fault_tolerance(3), 1);
        assert_eq!(zookeeper_fault_tolerance(4), 1);
        assert_eq!(zookeeper_fault_tolerance(5), 2);
    }

    fn groups(spec: &[(&str, &[&str])]) -> Groups {
        spec.iter()
            .map(|(g, hs)| (g.to_string(), hs.iter().map(|h| h.to_string()).collect()))
            .collect()
    }

    fn with_defaults(mut g: Groups) -> Groups {
        for (k, v) in default_groups(&g) {
            g.insert(k, v);
        }
        g
    }

    fn vars(spec: &[(&str, Value)]) -> BTreeMap<String, Map<String, Value>> {
        let mut out: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (h, v) in spec {
            if let Value::Object(m) = v {
                out.entry(h.to_string()).or_default().extend(m.clone());
            }
        }
        out
    }

    fn msgs(g: &Groups, v: &BTreeMap<String, Map<String, Value>>) -> Vec<String> {
        validate_topology(g, v)
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    #[test]
    fn defaults_are_masters_and_first_master() {
        let g = groups(&[("masters", &["m1", "m2", "m3"]), ("agents", &["a1"])]);
        let d = default_groups(&g);
        assert_eq!(
            d,
            vec![
                (
                    "zookeeper".to_string(),
                    vec!["m1".into(), "m2".into(), "m3".into()]
                ),
                ("monitoring".to_string(), vec!["m1".to_string()]),
            ]
        );
        let g = groups(&[
            ("masters", &["m1"]),
            ("zookeeper", &["z1"]),
            ("monitoring", &["x"]),
        ]);
        assert!(default_groups(&g).is_empty());
    }

    #[test]
    fn a_good_topology_passes() {
        let g = with_defaults(groups(&[
            ("masters", &["m1", "m2", "m3"]),
            ("agents", &["a1", "a2"]),
        ]));
        let v = vars(&[
            (
                "m1",
                json!({"mesos_quorum": 2, "mesos_source": "local", "mesos_local_artifact": "/x",
                        "mesos_dns_local_artifact": "/y"}),
            ),
            ("a1", json!({"cni_supernet": "10.200.0.0/16"})),
        ]);
        assert_eq!(msgs(&g, &v), Vec::<String>::new());
    }

    #[test]
    fn every_rule_rejects() {
        let g = groups(&[("masters", &[]), ("agents", &[])]);
        let m = msgs(&with_defaults(g), &BTreeMap::new());
        assert!(m[0].starts_with("no masters"), "{m:?}");
        assert!(m[1].starts_with("no agents"), "{m:?}");

        let g = groups(&[
            ("masters", &["m1", "m2"]),
            ("agents", &["a1"]),
            ("zookeeper", &["m1", "m2"]),
        ]);
        let m = msgs(&g, &BTreeMap::new());
        assert!(
            m.iter()
                .any(|x| x.contains("2 members (m1, m2): it must be odd")),
            "{m:?}"
        );

        let g = groups(&[
            ("masters", &["m1"]),
            ("agents", &["a1"]),
            ("zookeeper", &[]),
        ]);
        let m = msgs(&g, &BTreeMap::new());
        assert!(
            m.iter().any(|x| x.contains("`zookeeper` group is empty")),
            "{m:?}"
        );

        let g = with_defaults(groups(&[("masters", &["m1"]), ("agents", &["m1", "a1"])]));
        let m = msgs(&g, &BTreeMap::new());
        assert_eq!(m, ["m1 is in both `masters` and `agents`; set `allow_colocated: true` for it to allow that"]);
        let v = vars(&[("m1", json!({"allow_colocated": "yes"}))]);
        assert!(msgs(&g, &v).is_empty());

        let g = with_defaults(groups(&[
            ("masters", &["m1", "m2", "m3"]),
            ("agents", &["a1"]),
        ]));
        let v = vars(&[
            ("m2", json!({"mesos_quorum": 1})),
            ("a1", json!({"mesos_source": "local"})),
        ]);
        let m = msgs(&g, &v);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].contains("a1: mesos_source is `local` but mesos_local_artifact"),
            "{m:?}"
        );
        assert!(
            m[1].contains("m2: mesos_quorum is set to 1 but 3 masters need 2"),
            "{m:?}"
        );

        // Mesos-DNS follows mesos_source on the masters and needs its own binary.
        let v = vars(&[(
            "m1",
            json!({"mesos_source": "local", "mesos_local_artifact": "/x"}),
        )]);
        assert_eq!(
            msgs(&g, &v),
            ["m1: mesos_dns_source is `local` but mesos_dns_local_artifact (the control-node path of a Mesos-DNS binary) is not set"]
        );
        let v = vars(&[(
            "m1",
            json!({"mesos_source": "local", "mesos_local_artifact": "/x", "mesos_dns_source": "aventer"}),
        )]);
        assert!(msgs(&g, &v).is_empty());

        let v = vars(&[(
            "a1",
            json!({"mesos_source": "tarball", "cni_supernet": "10.0.0.0/25"}),
        )]);
        let m = msgs(&g, &v);
        assert!(
            m.iter().any(|x| x.contains("`tarball` is not one of")),
            "{m:?}"
        );
        assert!(m.iter().any(|x| x.starts_with("cni_supernet:")), "{m:?}");
    }
}
