//! The bundled stack: `roles/` and `cluster-core/bundle.yaml`, embedded in the binary.
//!
//! - [`FILES`] are the roles, embedded by `build.rs` (a sorted list of `include_bytes!`);
//!   the bundle comes from `cluster_core::BUNDLE_YAML`.
//! - [`extract`] writes them once to `<cache>/stack-<hash>/` (the hash is the content's
//!   SHA-256, so a new build gets a new directory and an old one is never reused): into a
//!   temporary directory beside it, then one atomic rename. A directory that exists is complete.
//! - [`load`] gives the directory to run (`site.yml` in it, its roles beside it) and the bundle:
//!   the embedded copy, or `--stack-dir DIR` (a `roles/`-shaped directory on disk; its own
//!   `bundle.yaml` if it has one, else the embedded bundle).
//! - [`prepare_inventory`] adds the default groups and checks the topology rules (docs/stack.md),
//!   for `session::prepare`.
//!
//! No printing here: callers render.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cluster_core::bundle::Bundle;
use cluster_core::topology::{self, Groups};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Diagnostics, Loc};
use crate::error::Error;
use crate::model::inventory::Inventory;
use crate::template::Vars;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/stack_files.rs"));
}

/// The stack's roles as embedded at build time: (path relative to `roles/`, content).
pub use embedded::FILES;

/// The playbook of the stack, relative to the stack directory.
pub const PLAYBOOK: &str = "site.yml";
/// The bundle's file name in an extracted stack directory (and in a `--stack-dir`).
pub const BUNDLE_FILE: &str = "bundle.yaml";

/// Every file of the embedded stack, the bundle included, sorted by path.
pub fn files() -> Vec<(&'static str, &'static [u8])> {
    let mut v: Vec<(&'static str, &'static [u8])> = FILES.to_vec();
    v.push((BUNDLE_FILE, cluster_core::BUNDLE_YAML.as_bytes()));
    v.sort_by_key(|(p, _)| *p);
    v
}

/// SHA-256 of the embedded stack (paths and contents), hex; the cache directory's key.
pub fn content_hash() -> String {
    let mut h = Sha256::new();
    for (path, data) in files() {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where extracted stacks are kept: `$XDG_CACHE_HOME/provisioner`, else
/// `$HOME/.cache/provisioner`, else `/var/cache/provisioner`.
pub fn default_cache_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(x) = env("XDG_CACHE_HOME") {
        return x.join("provisioner");
    }
    if let Some(h) = env("HOME") {
        return h.join(".cache").join("provisioner");
    }
    PathBuf::from("/var/cache/provisioner")
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::Environment(format!("cannot {what} {}: {e}", p.display()))
}

/// Extract the embedded stack under `cache_root` (once per content hash) and return its
/// directory, `<cache_root>/stack-<first 16 hex of the hash>`.
pub fn extract(cache_root: &Path) -> Result<PathBuf, Error> {
    let hash = content_hash();
    let dir = cache_root.join(format!("stack-{}", &hash[..16]));
    if dir.join(PLAYBOOK).is_file() || (FILES.is_empty() && dir.is_dir()) {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache_root).map_err(|e| io("create", cache_root, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".stack-")
        .tempdir_in(cache_root)
        .map_err(|e| io("create a directory in", cache_root, e))?;
    for (rel, data) in files() {
        let path = tmp.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        let mut f = std::fs::File::create(&path).map_err(|e| io("write", &path, e))?;
        f.write_all(data).map_err(|e| io("write", &path, e))?;
        f.sync_all().map_err(|e| io("write", &path, e))?;
    }
    let staged = tmp.keep();
    match std::fs::rename(&staged, &dir) {
        Ok(()) => Ok(dir),
        // Another run extracted the same content first: use it, drop ours.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(io("rename into", &dir, e))
        }
    }
}

/// A stack ready to run.
#[derive(Clone, Debug)]
pub struct Stack {
    /// The directory holding `site.yml` and the roles.
    pub dir: PathBuf,
    /// `<dir>/site.yml`.
    pub playbook: PathBuf,
    /// The bundle, or `None` when it has problems (they are in `diags`).
    pub bundle: Option<Bundle>,
    /// Problems of the bundle, with its file and line.
    pub diags: Diagnostics,
    /// Where the bundle came from (a path, or `bundle.yaml (built in)`).
    pub bundle_source: String,
}

impl Stack {
    /// The variables a stack run adds at role-defaults precedence: `bundle`.
    pub fn vars(&self) -> Vars {
        let mut v = Vars::new();
        if let Some(b) = &self.bundle {
            v.insert("bundle".into(), bundle_var(b));
        }
        v
    }
}

/// The `bundle` variable: the bundle as JSON, plus `gate_program`, the health gates the roles
/// run on hosts (`cluster_core::gates`; the `common` role installs it as `provisioner_gate`).
pub fn bundle_var(bundle: &Bundle) -> Value {
    let mut j = bundle.to_json();
    if let Value::Object(m) = &mut j {
        m.insert(
            "gate_program".into(),
            Value::String(cluster_core::gates::gate_program()),
        );
    }
    j
}

/// Parse a bundle, turning its problems into diagnostics located in `file`.
pub fn parse_bundle(src: &str, file: &str) -> Result<Bundle, Diagnostics> {
    Bundle::parse(src).map_err(|problems| {
        Diagnostics(
            problems
                .into_iter()
                .map(|p| Diagnostic::at(&Loc::new(file, p.line, p.col), p.message))
                .collect(),
        )
    })
}

/// The built-in bundle (for `bundle show` / `bundle vars`).
pub fn builtin_bundle() -> Result<Bundle, Error> {
    parse_bundle(cluster_core::BUNDLE_YAML, BUILTIN_BUNDLE).map_err(Error::Invalid)
}

const BUILTIN_BUNDLE: &str = "bundle.yaml (built in)";

/// The stack to run: `stack_dir` from disk, or the embedded one extracted under `cache_root`.
pub fn load(stack_dir: Option<&Path>, cache_root: &Path) -> Result<Stack, Error> {
    let dir = match stack_dir {
        Some(d) => {
            if !d.join(PLAYBOOK).is_file() {
                return Err(Error::Usage(format!(
                    "--stack-dir {}: no {PLAYBOOK} in it (give a directory shaped like the repository's roles/)",
                    d.display()
                )));
            }
            d.to_path_buf()
        }
        None => {
            if !FILES.iter().any(|(p, _)| *p == PLAYBOOK) {
                return Err(Error::Usage(format!(
                    "this build has no bundled stack (roles/{PLAYBOOK} was missing when it was built); give a playbook or --stack-dir"
                )));
            }
            extract(cache_root)?
        }
    };
    let disk_bundle = dir.join(BUNDLE_FILE);
    let (src, source) = if stack_dir.is_some() && disk_bundle.is_file() {
        let text =
            std::fs::read_to_string(&disk_bundle).map_err(|e| io("read", &disk_bundle, e))?;
        (text, disk_bundle.display().to_string())
    } else {
        (
            cluster_core::BUNDLE_YAML.to_string(),
            BUILTIN_BUNDLE.to_string(),
        )
    };
    let (bundle, diags) = match parse_bundle(&src, &source) {
        Ok(b) => (Some(b), Diagnostics::new()),
        Err(d) => (None, d),
    };
    Ok(Stack {
        playbook: dir.join(PLAYBOOK),
        dir,
        bundle,
        diags,
        bundle_source: source,
    })
}

/// The variables topology validation reads.
const TOPOLOGY_VARS: &[&str] = &[
    "mesos_quorum",
    "mesos_source",
    "mesos_local_artifact",
    "mesos_dns_source",
    "mesos_dns_local_artifact",
    "allow_colocated",
    "cni_supernet",
];

/// The variable a stack run passes the recorded identities in (role-defaults precedence), as
/// `allocations.json` holds them; `cluster_facts` falls back to positions without it.
pub const ALLOCATIONS_VAR: &str = "provisioner_allocations";

/// The extra var `node remove` passes the hosts leaving both quorums in (still in the
/// inventory; `cluster_facts` leaves them out of the masters and the ensemble).
pub const LEAVING_VAR: &str = "provisioner_leaving";

/// The extra var `node` sets on the runs of a membership change: the recorded membership
/// (`allocations.json` `members`) is neither checked nor updated by them; `node` records it
/// once the change is whole.
pub const MEMBERSHIP_CHANGE_VAR: &str = "provisioner_membership_change";

/// What [`prepare_inventory`] found.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The groups added (`zookeeper`, `monitoring`).
    pub added: Vec<String>,
    /// The member identities for this inventory (`None` when the topology has problems).
    pub allocations: Option<cluster_core::allocations::Allocations>,
}

/// For a stack run, before host selection: add the groups the inventory lacks (`zookeeper` =
/// the masters, `monitoring` = the first master), check the topology rules with each host's
/// inventory variables overlaid by `extra_vars`, and allocate the member identities, keeping
/// `previous` ones (cluster_core::allocations). `site`: a run of the site playbook, whose quorum
/// membership must be the recorded one (cluster_core::membership::unchanged) unless `node`
/// marks it as a membership change. Problems are located at `inventory`.
pub fn prepare_inventory(
    inv: &mut Inventory,
    extra_vars: &Vars,
    inventory: &str,
    diags: &mut Diagnostics,
    previous: Option<&cluster_core::allocations::Allocations>,
    site: bool,
) -> Prepared {
    let groups_of = |inv: &Inventory| -> Groups {
        inv.groups
            .keys()
            .map(|g| {
                (
                    g.clone(),
                    inv.group_hosts(g).into_iter().map(str::to_string).collect(),
                )
            })
            .collect()
    };
    let mut added = Vec::new();
    for (name, hosts) in topology::default_groups(&groups_of(inv)) {
        if inv.add_implicit_group(&name, &hosts) {
            added.push(name);
        }
    }
    let groups = groups_of(inv);
    let mut vars: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let templar = crate::template::Templar::new(".");
    for h in inv.host_names() {
        let mut v = inv.host_vars(h);
        v.extend(extra_vars.clone());
        // The checked values may be Jinja (e.g. the cluster_facts expression for
        // mesos_quorum): judge what they render to, without facts; keep them when they
        // cannot render yet.
        let mut ctx = v.clone();
        ctx.extend(inv.magic_vars(h));
        for k in TOPOLOGY_VARS {
            if let Some(Value::String(s)) = v.get(*k) {
                if crate::template::is_possibly_template(s) {
                    if let Ok(r) = templar.render_str(s, &ctx) {
                        v.insert(k.to_string(), r);
                    }
                }
            }
        }
        vars.insert(h.to_string(), v);
    }
    let loc = Loc::file(inventory);
    let problems = topology::validate_topology(&groups, &vars);
    let allocations = if problems.is_empty() {
        let get = |g: &str| groups.get(g).cloned().unwrap_or_default();
        let agents = get("agents");
        let supernet = agents
            .first()
            .and_then(|a| vars.get(a))
            .and_then(|v| v.get("cni_supernet"))
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_else(|| cluster_core::derive::DEFAULT_CNI_SUPERNET.to_string());
        // `node` runs pass the hosts leaving the quorums and say they change the membership.
        let leaving: Vec<String> = match extra_vars.get(LEAVING_VAR) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let change = extra_vars
            .get(MEMBERSHIP_CHANGE_VAR)
            .and_then(cluster_core::boolean)
            .unwrap_or(false);
        let zookeeper: Vec<String> = get("zookeeper")
            .into_iter()
            .filter(|h| !leaving.contains(h))
            .collect();
        let quorum = cluster_core::membership::quorum_hosts(&zookeeper, &get("masters"), &leaving);
        match cluster_core::allocations::allocate(previous, &zookeeper, &agents, &supernet) {
            Ok(mut a) => {
                let recorded = previous.map(|p| p.members.clone()).unwrap_or_default();
                if change || !site {
                    a.members = recorded;
                } else if let Err(e) = cluster_core::membership::unchanged(&recorded, &quorum) {
                    diags.error(&loc, e);
                } else {
                    a.members = quorum.into_iter().collect();
                }
                Some(a)
            }
            Err(e) => {
                diags.error(&loc, format!("cni_supernet: {e}"));
                None
            }
        }
    } else {
        None
    };
    for p in problems {
        diags.error(&loc, p.message);
    }
    Prepared { added, allocations }
}

/// `bundle:` as YAML for ansible-playbook's `group_vars/all/bundle.yml`.
pub fn bundle_vars_yaml(bundle: &Bundle) -> Result<String, Error> {
    let mut vars = Vars::new();
    vars.insert("bundle".into(), bundle_var(bundle));
    let t = crate::template::Templar::new(".");
    let body = t
        .render_string("{{ v | to_nice_yaml(indent=2) }}", &{
            let mut m = Vars::new();
            m.insert("v".into(), Value::Object(vars));
            m
        })
        .map_err(|e| Error::Environment(format!("cannot render the bundle as YAML: {e}")))?;
    Ok(format!(
        "# Generated by `provisioner bundle vars` from cluster-core/bundle.yaml ({}).\n# The stack's roles read versions, sources and ports from it. Do not edit: regenerate.\n{body}",
        &content_hash()[..16]
    ))
}

/// One row of `bundle show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentRow {
    pub order: u32,
    pub name: String,
    pub version: String,
    pub groups: String,
    pub sources: String,
    pub ports: String,
    pub restart: String,
    pub after: String,
}

/// The bundle as rows, in upgrade order.
pub fn rows(bundle: &Bundle) -> Vec<ComponentRow> {
    bundle
        .upgrade_order()
        .into_iter()
        .filter_map(|name| {
            let c = bundle.component(name)?;
            let sources: Vec<String> = c
                .sources
                .iter()
                .map(|(fam, s)| format!("{fam}: {}", s.value.kinds().join("+")))
                .collect();
            let ports: Vec<String> = c
                .ports
                .iter()
                .map(|(n, p)| format!("{n}={}", p.value))
                .collect();
            Some(ComponentRow {
                order: c.upgrade_order.value,
                name: name.to_string(),
                version: c.version.value.clone(),
                groups: c
                    .groups
                    .iter()
                    .map(|g| g.value.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                sources: sources.join("; "),
                ports: if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(" ")
                },
                restart: c.restart.to_string(),
                after: if c.after.is_empty() {
                    "-".into()
                } else {
                    c.after
                        .iter()
                        .map(|a| a.value.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_stack_has_the_playbook_and_a_stable_hash() {
        assert!(FILES.iter().any(|(p, _)| *p == PLAYBOOK));
        assert!(files().iter().any(|(p, _)| *p == BUNDLE_FILE));
        assert_eq!(content_hash(), content_hash());
        assert_eq!(content_hash().len(), 64);
    }

    #[test]
    fn extraction_is_once_and_atomic() {
        let cache = tempfile::tempdir().unwrap();
        let a = extract(cache.path()).unwrap();
        assert!(a.join(PLAYBOOK).is_file());
        assert_eq!(
            std::fs::read_to_string(a.join(BUNDLE_FILE)).unwrap(),
            cluster_core::BUNDLE_YAML
        );
        // A second extraction reuses the directory; no temporary directory is left behind.
        std::fs::write(a.join("marker"), "x").unwrap();
        let b = extract(cache.path()).unwrap();
        assert_eq!(a, b);
        assert!(b.join("marker").is_file());
        let names: Vec<String> = std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, [format!("stack-{}", &content_hash()[..16])]);
    }

    #[test]
    fn load_uses_a_stack_dir_and_its_bundle() {
        let d = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let err = load(Some(d.path()), cache.path()).unwrap_err().to_string();
        assert!(err.contains("no site.yml"), "{err}");
        std::fs::write(d.path().join(PLAYBOOK), "- hosts: all\n").unwrap();
        let s = load(Some(d.path()), cache.path()).unwrap();
        assert_eq!(s.bundle_source, BUILTIN_BUNDLE);
        assert!(s.vars()["bundle"]["components"]["zookeeper"].is_object());
        assert_eq!(
            s.vars()["bundle"]["gate_program"],
            cluster_core::gates::gate_program()
        );
        std::fs::write(
            d.path().join(BUNDLE_FILE),
            "schema: 1\ncomponents:\n  x: 3\n",
        )
        .unwrap();
        let s = load(Some(d.path()), cache.path()).unwrap();
        assert!(s.bundle.is_none());
        let msg = s.diags.0[0].to_string();
        assert!(msg.contains("bundle.yaml:3:"), "{msg}");
        assert!(s.vars().is_empty());
    }

    #[test]
    fn bundle_vars_is_yaml_with_the_bundle() {
        let b = builtin_bundle().unwrap();
        let y = bundle_vars_yaml(&b).unwrap();
        let docs = crate::yaml::load_str(&y, "bundle.yml").unwrap();
        let j = docs[0].to_json();
        assert_eq!(j["bundle"], bundle_var(&b));
        assert_eq!(
            j["bundle"]["gate_program"],
            cluster_core::gates::gate_program()
        );
    }

    /// `mesos_quorum` stays Jinja in `cluster_facts` (ansible-playbook derives it too); it must
    /// be cluster-core's quorum rule for every size.
    #[test]
    fn cluster_facts_mesos_quorum_is_cluster_cores() {
        let (_, src) = FILES
            .iter()
            .find(|(p, _)| *p == "cluster_facts/defaults/main.yml")
            .unwrap();
        let docs = crate::yaml::load_str(std::str::from_utf8(src).unwrap(), "main.yml").unwrap();
        let expr = docs[0].to_json()["mesos_quorum"]
            .as_str()
            .unwrap()
            .to_string();
        let t = crate::template::Templar::new(".");
        for n in 1..=9 {
            let mut vars = Vars::new();
            vars.insert(
                "master_hosts".into(),
                (0..n).map(|i| Value::from(format!("m{i}"))).collect(),
            );
            let got = t.render_string(&expr, &vars).unwrap();
            let want = cluster_core::topology::mesos_quorum(n).unwrap();
            assert_eq!(got, want.to_string(), "{n} masters");
            assert_eq!(want, cluster_core::health::majority(n));
        }
    }

    #[test]
    fn rows_are_in_upgrade_order() {
        let b = builtin_bundle().unwrap();
        let r = rows(&b);
        assert_eq!(r.len(), b.components.len());
        assert!(r.windows(2).all(|w| w[0].order <= w[1].order));
        let zk = r.iter().find(|x| x.name == "zookeeper").unwrap();
        assert_eq!(zk.version, "3.8.0");
        assert_eq!(zk.sources, "Debian: package");
        assert!(zk.ports.contains("client=2181"));
        let mm = r.iter().find(|x| x.name == "mesos_master").unwrap();
        assert_eq!(mm.sources, "Debian: apt_repo+local");
        assert_eq!(mm.after, "zookeeper");
    }
}
