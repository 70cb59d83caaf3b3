//! `bundle.yaml`: the stack's components, typed, and the checks of the file itself.
//!
//! Parsing uses `serde-saphyr`, which reports type errors with line and column and gives
//! [`Spanned`] values, so semantic problems (an unknown component in `after`, a cycle, a
//! duplicate port) also name their line. [`Bundle::parse`] returns every problem at once.
//!
//! Serialising a [`Bundle`] (to JSON for the `bundle` variable) emits plain values: spans are
//! dropped.

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
pub use serde_saphyr::Spanned;

use crate::Problem;

/// Inventory groups a component may name in `groups`.
pub const KNOWN_GROUPS: &[&str] = &[
    "all",
    "masters",
    "agents",
    "zookeeper",
    "monitoring",
    "storage",
];

/// The whole bundle.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub schema: u32,
    /// Components by name, in file order.
    pub components: IndexMap<String, Spanned<Component>>,
}

/// One component of the stack.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    #[serde(default)]
    pub description: String,
    /// Upstream version.
    pub version: Spanned<String>,
    /// Inventory groups it runs on.
    pub groups: Vec<Spanned<String>>,
    /// Its systemd unit, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Sources per Ansible os family (`ansible_os_family`: `Debian`, ...).
    pub sources: IndexMap<String, Spanned<Sources>>,
    /// Port name to port number.
    #[serde(default)]
    pub ports: IndexMap<String, Spanned<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Spanned<Health>>,
    pub restart: Restart,
    /// Lower upgrades first.
    pub upgrade_order: Spanned<u32>,
    /// Components that must be healthy before this one starts.
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
}

/// Where a component comes from on one OS family. At least one kind must be given.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apt_repo: Option<AptRepo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<Tarball>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalFile>,
}

impl Sources {
    /// The kinds given, in a fixed order (`package`, `apt_repo`, `tarball`, `local`).
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        if self.package.is_some() {
            k.push("package");
        }
        if self.apt_repo.is_some() {
            k.push("apt_repo");
        }
        if self.tarball.is_some() {
            k.push("tarball");
        }
        if self.local.is_some() {
            k.push("local");
        }
        k
    }
}

/// Packages from the distribution's own archive.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub names: Vec<String>,
    /// An apt version glob (`name=pin`), e.g. `3.8.0-*`.
    pub pin: String,
}

/// Packages from a vendor's apt repository (AVENTER for Mesos).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AptRepo {
    pub url: Spanned<String>,
    pub suite: String,
    pub components: Vec<String>,
    /// The repository's signing key (ASCII-armoured), kept as a keyring file (`signed-by`).
    pub key_url: Spanned<String>,
    pub names: Vec<String>,
    pub pin: String,
}

/// A download verified by its checksum.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tarball {
    pub url: Spanned<String>,
    pub sha256: Spanned<String>,
}

/// A file on the control node, pushed to the hosts (air-gapped sites, the lab's stand-in).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    /// The inventory variable holding the control-node path.
    pub var: String,
}

/// How to tell the component is healthy: a command, or an HTTP request on one of its ports.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A regex the command's stdout (or the HTTP body) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// The name of one of the component's ports.
    pub port: Spanned<String>,
    pub path: String,
    #[serde(default = "default_status")]
    pub status: u16,
    /// HTTPS, verified against the cluster CA (Mesos with libprocess TLS, `mesos_tls`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

fn default_status() -> u16 {
    200
}

/// What a config change restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// One member at a time; the next waits until the restarted one is healthy (quorum members).
    Rolling,
    /// Every affected host restarts its service at once.
    Plain,
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Restart::Rolling => "rolling",
            Restart::Plain => "plain",
        })
    }
}

fn at<T>(s: &Spanned<T>) -> (u32, u32) {
    let l = s.referenced;
    (l.line() as u32, l.column() as u32)
}

fn problem_at<T>(s: &Spanned<T>, message: impl Into<String>) -> Problem {
    let (l, c) = at(s);
    Problem::new(l, c, message)
}

impl Bundle {
    /// The bundle built into this binary. It is validated by the crate's tests, so a failure
    /// here means a broken build; the problems are returned anyway.
    pub fn builtin() -> Result<Bundle, Vec<Problem>> {
        Bundle::parse(crate::BUNDLE_YAML)
    }

    /// Parse and check a bundle. Returns every problem found, each with its line.
    pub fn parse(src: &str) -> Result<Bundle, Vec<Problem>> {
        let bundle: Bundle = serde_saphyr::from_str(src).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line() as u32, l.column() as u32))
                .unwrap_or((0, 0));
            vec![Problem::new(line, col, first_line(&e.to_string()))]
        })?;
        let problems = bundle.check();
        if problems.is_empty() {
            Ok(bundle)
        } else {
            Err(problems)
        }
    }

    /// The bundle as JSON (the `bundle` variable): plain values, no spans.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.get(name).map(|c| &c.value)
    }

    /// A component's named port (`port("mesos_master", "http")`).
    pub fn port(&self, component: &str, name: &str) -> Option<u16> {
        self.component(component)?.ports.get(name).map(|p| p.value)
    }

    /// Component names by upgrade order (stable: file order within one order value).
    pub fn upgrade_order(&self) -> Vec<&str> {
        let mut v: Vec<(&str, u32, usize)> = self
            .components
            .iter()
            .enumerate()
            .map(|(i, (n, c))| (n.as_str(), c.value.upgrade_order.value, i))
            .collect();
        v.sort_by_key(|(_, o, i)| (*o, *i));
        v.into_iter().map(|(n, _, _)| n).collect()
    }

    /// Every semantic problem of the bundle (the parse succeeded).
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.schema != 1 {
            out.push(Problem::new(
                1,
                1,
                format!(
                    "unsupported bundle schema {} (this build reads 1)",
                    self.schema
                ),
            ));
        }
        for (name, comp) in &self.components {
            check_component(name, comp, self, &mut out);
        }
        check_cycles(self, &mut out);
        check_ports(self, &mut out);
        out.sort();
        out.dedup();
        out
    }
}

/// serde-saphyr renders a snippet under the message; keep the message line.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn has_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

fn check_component(name: &str, comp: &Spanned<Component>, b: &Bundle, out: &mut Vec<Problem>) {
    let c = &comp.value;
    if !is_ident(name) {
        out.push(problem_at(
            comp,
            format!("component name `{name}` must be lowercase letters, digits and `_` (roles read it as bundle.components.{name})"),
        ));
    }
    if c.version.value.trim().is_empty() {
        out.push(problem_at(&c.version, format!("{name}: empty version")));
    }
    if c.groups.is_empty() {
        out.push(problem_at(comp, format!("{name}: `groups` is empty")));
    }
    for g in &c.groups {
        if !KNOWN_GROUPS.contains(&g.value.as_str()) {
            out.push(problem_at(
                g,
                format!(
                    "{name}: unknown group `{}` (known: {})",
                    g.value,
                    KNOWN_GROUPS.join(", ")
                ),
            ));
        }
    }
    if c.sources.is_empty() {
        out.push(problem_at(
            comp,
            format!("{name}: no sources (give at least one OS family, e.g. `Debian:`)"),
        ));
    }
    for (family, s) in &c.sources {
        check_sources(name, family, s, out);
    }
    for (pname, p) in &c.ports {
        if p.value == 0 {
            out.push(problem_at(p, format!("{name}: port `{pname}` is 0")));
        }
    }
    if let Some(h) = &c.health {
        match (&h.value.command, &h.value.http) {
            (Some(_), Some(_)) => out.push(problem_at(
                h,
                format!("{name}: health has both `command` and `http`; give one"),
            )),
            (None, None) => out.push(problem_at(
                h,
                format!("{name}: health needs `command` or `http`"),
            )),
            (Some(cmd), None) if has_template(cmd) => out.push(problem_at(
                h,
                format!("{name}: health command contains a template; bundle values are data"),
            )),
            _ => {}
        }
        if let Some(http) = &h.value.http {
            if !c.ports.contains_key(&http.port.value) {
                out.push(problem_at(
                    &http.port,
                    format!(
                        "{name}: health probe names port `{}`, which the component does not declare",
                        http.port.value
                    ),
                ));
            }
            if !http.path.starts_with('/') {
                out.push(problem_at(
                    h,
                    format!("{name}: health path `{}` must start with `/`", http.path),
                ));
            }
        }
        if let Some(e) = &h.value.expect {
            if let Err(err) = regex::Regex::new(&e.value) {
                out.push(problem_at(
                    e,
                    format!("{name}: `expect` is not a valid regex: {err}"),
                ));
            }
        }
    }
    for a in &c.after {
        if a.value == name {
            out.push(problem_at(
                a,
                format!("{name}: a component cannot be after itself"),
            ));
        } else if let Some(dep) = b.components.get(&a.value) {
            if dep.value.upgrade_order.value >= c.upgrade_order.value {
                out.push(problem_at(
                    &c.upgrade_order,
                    format!(
                        "{name}: upgrade_order {} must be greater than that of `{}` ({}), which it is after",
                        c.upgrade_order.value, a.value, dep.value.upgrade_order.value
                    ),
                ));
            }
        } else {
            out.push(problem_at(
                a,
                format!("{name}: `after` names unknown component `{}`", a.value),
            ));
        }
    }
}

fn check_sources(name: &str, family: &str, s: &Spanned<Sources>, out: &mut Vec<Problem>) {
    let src = &s.value;
    if src.kinds().is_empty() {
        out.push(problem_at(
            s,
            format!("{name}: no source for {family} (give package, apt_repo, tarball or local)"),
        ));
    }
    let url_ok = |u: &Spanned<String>, what: &str, out: &mut Vec<Problem>| {
        if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
            out.push(problem_at(
                u,
                format!("{name}: {what} `{}` must be an http(s) URL", u.value),
            ));
        }
    };
    if let Some(p) = &src.package {
        if p.names.is_empty() {
            out.push(problem_at(
                s,
                format!("{name}: {family} package has no names"),
            ));
        }
    }
    if let Some(r) = &src.apt_repo {
        url_ok(&r.url, "apt_repo url", out);
        url_ok(&r.key_url, "apt_repo key_url", out);
        if r.names.is_empty() {
            out.push(problem_at(
                &r.url,
                format!("{name}: {family} apt_repo has no names"),
            ));
        }
    }
    if let Some(t) = &src.tarball {
        url_ok(&t.url, "tarball url", out);
        let h = &t.sha256.value;
        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push(problem_at(
                &t.sha256,
                format!("{name}: tarball sha256 must be 64 hex digits"),
            ));
        }
    }
    if let Some(l) = &src.local {
        if !is_ident(&l.var) {
            out.push(problem_at(
                s,
                format!(
                    "{name}: local source var `{}` is not a variable name",
                    l.var
                ),
            ));
        }
    }
}

/// `after` must be acyclic; each cycle is reported once, at its first member, with its path.
fn check_cycles(b: &Bundle, out: &mut Vec<Problem>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        b: &'a Bundle,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        out: &mut Vec<Problem>,
    ) {
        marks.insert(n, Mark::Active);
        stack.push(n);
        if let Some(c) = b.components.get(n) {
            for a in &c.value.after {
                let dep = a.value.as_str();
                let Some((k, _)) = b.components.get_key_value(dep) else {
                    continue;
                };
                match marks.get(k.as_str()).copied().unwrap_or(Mark::New) {
                    Mark::New => visit(k, b, marks, stack, out),
                    Mark::Active => {
                        let from = stack.iter().position(|s| *s == k).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..].to_vec();
                        path.push(k);
                        if path.len() > 2 {
                            out.push(problem_at(
                                a,
                                format!("`after` has a cycle: {}", path.join(" -> ")),
                            ));
                        }
                    }
                    Mark::Done => {}
                }
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    for n in b.components.keys() {
        if marks.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            visit(n, b, &mut marks, &mut Vec::new(), out);
        }
    }
}

/// Groups that can share a host with `g` in any inventory that passes topology validation:
/// `all` shares with everything; `zookeeper` and `monitoring` default to masters; `storage`
/// may be any hosts. `masters` and `agents` are disjoint unless `allow_colocated`, which the
/// operator opts into knowing the ports (checked per host at topology time).
fn may_share(a: &str, b: &str) -> bool {
    if a == b || a == "all" || b == "all" || a == "storage" || b == "storage" {
        return true;
    }
    let masterish = |g: &str| matches!(g, "masters" | "zookeeper" | "monitoring");
    masterish(a) && masterish(b)
}

/// Two components that may run on one host must not declare the same port.
fn check_ports(b: &Bundle, out: &mut Vec<Problem>) {
    // (component, port name, port, the component's groups)
    let mut seen: Vec<(&str, &str, u16, Vec<&str>)> = Vec::new();
    for (name, c) in &b.components {
        let groups: Vec<&str> = c.value.groups.iter().map(|g| g.value.as_str()).collect();
        let mut own: BTreeSet<u16> = BTreeSet::new();
        for (pname, p) in &c.value.ports {
            if !own.insert(p.value) {
                out.push(problem_at(
                    p,
                    format!("{name}: port {} (`{pname}`) is declared twice", p.value),
                ));
                continue;
            }
            for (other, opname, port, ogroups) in &seen {
                if *port == p.value
                    && groups
                        .iter()
                        .any(|g| ogroups.iter().any(|o| may_share(g, o)))
                {
                    out.push(problem_at(
                        p,
                        format!(
                            "{name}: port {} (`{pname}`) is also {other}'s `{opname}`, on hosts both may share",
                            p.value
                        ),
                    ));
                }
            }
        }
        for (pname, p) in &c.value.ports {
            seen.push((name, pname, p.value, groups.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "schema: 1
components:
  a:
    version: \"1\"
    groups: [masters]
    sources:
      Debian:
        package: {names: [a], pin: \"1*\"}
    ports: {http: 80}
    health:
      http: {port: http, path: /health}
    restart: rolling
    upgrade_order: 1
  b:
    version: \"2\"
    groups: [agents]
    sources:
      Debian:
        tarball: {url: https://example.org/b.tgz, sha256: 0000000000000000000000000000000000000000000000000000000000000000}
    ports: {http: 80}
    restart: plain
    upgrade_order: 2
    after: [a]
";

    fn problems(src: &str) -> Vec<String> {
        match Bundle::parse(src) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn the_shipped_bundle_is_valid_and_complete() {
        let b = match Bundle::builtin() {
            Ok(b) => b,
            Err(p) => panic!("bundle.yaml: {p:?}"),
        };
        for c in [
            "zookeeper",
            "mesos_master",
            "mesos_agent",
            "mesos_dns",
            "dnsmasq",
            "docker",
            "cni",
            "prometheus",
            "alertmanager",
            "node_exporter",
            "glusterfs",
            "chrony",
        ] {
            let comp = b.component(c).unwrap_or_else(|| panic!("missing {c}"));
            assert!(comp.sources.contains_key("Debian"), "{c}");
            assert!(comp.health.is_some(), "{c} has no health probe");
        }
        assert_eq!(b.component("zookeeper").unwrap().version.value, "3.8.0");
        assert_eq!(b.component("mesos_master").unwrap().version.value, "1.11.0");
        assert_eq!(
            b.component("zookeeper").unwrap().ports["client"].value,
            2181
        );
        let deb = &b.component("mesos_master").unwrap().sources["Debian"].value;
        assert_eq!(deb.kinds(), ["apt_repo", "local"]);
        let order = b.upgrade_order();
        let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
        assert!(pos("zookeeper") < pos("mesos_master"));
        assert!(pos("mesos_master") < pos("mesos_agent"));
        assert_eq!(b.component("zookeeper").unwrap().restart, Restart::Rolling);
    }

    #[test]
    fn json_has_plain_values_for_roles() {
        let b = Bundle::builtin().unwrap();
        let j = b.to_json();
        assert_eq!(j["components"]["zookeeper"]["ports"]["client"], 2181);
        assert_eq!(j["components"]["zookeeper"]["version"], "3.8.0");
        assert_eq!(
            j["components"]["mesos_master"]["sources"]["Debian"]["apt_repo"]["url"],
            "http://rpm.aventer.biz/Debian"
        );
        assert_eq!(j["components"]["mesos_master"]["after"][0], "zookeeper");
        assert_eq!(j["components"]["mesos_master"]["restart"], "rolling");
    }

    #[test]
    fn a_minimal_bundle_parses() {
        let b = Bundle::parse(MIN).unwrap();
        assert_eq!(b.upgrade_order(), ["a", "b"]);
    }

    #[test]
    fn type_errors_name_the_line() {
        let src = MIN.replace("upgrade_order: 2", "upgrade_order: second");
        let p = problems(&src);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("22:"), "{p:?}");
        let src = MIN.replace("    restart: plain", "    restart: plain\n    colour: blue");
        let p = problems(&src);
        assert!(p[0].starts_with("22:") && p[0].contains("colour"), "{p:?}");
    }

    #[test]
    fn unknown_after_and_cycles_are_reported_with_lines() {
        let src = MIN.replace("after: [a]", "after: [a, zk]");
        let p = problems(&src);
        assert_eq!(p, ["23:16: b: `after` names unknown component `zk`"]);
        let src = MIN.replace(
            "    upgrade_order: 1\n",
            "    upgrade_order: 1\n    after: [b]\n",
        );
        let p = problems(&src);
        assert!(
            p.iter()
                .any(|x| x.contains("cycle: a -> b -> a") || x.contains("cycle: b -> a -> b")),
            "{p:?}"
        );
        assert!(p.iter().all(|x| !x.starts_with("0")), "{p:?}");
    }

    #[test]
    fn missing_sources_and_bad_checksums_are_reported() {
        let src = MIN.replace(
            "        package: {names: [a], pin: \"1*\"}\n",
            "        {}\n",
        );
        let p = problems(&src);
        assert!(
            p.iter().any(|x| x.contains("a: no source for Debian")),
            "{p:?}"
        );
        let src = MIN.replace("sha256: 0000", "sha256: zz00");
        let p = problems(&src);
        assert!(
            p.iter()
                .any(|x| x.starts_with("19:") && x.contains("64 hex")),
            "{p:?}"
        );
    }

    #[test]
    fn duplicate_ports_on_shared_hosts_are_reported() {
        // a on masters and b on agents may both use 80; b on all may not.
        assert!(problems(MIN).is_empty());
        let src = MIN.replace("groups: [agents]", "groups: [all]");
        let p = problems(&src);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("20:19:") && p[0].contains("also a's `http`"),
            "{p:?}"
        );
        let src = MIN.replace("groups: [agents]", "groups: [zookeeper]");
        assert_eq!(problems(&src).len(), 1);
        let src = MIN.replace(
            "ports: {http: 80}\n    health",
            "ports: {http: 80, web: 80}\n    health",
        );
        assert!(problems(&src).iter().any(|x| x.contains("declared twice")));
    }

    #[test]
    fn health_must_name_a_declared_port() {
        let src = MIN.replace("port: http, path", "port: admin, path");
        let p = problems(&src);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("port `admin`"), "{p:?}");
    }

    #[test]
    fn upgrade_order_follows_after() {
        let src = MIN.replace("upgrade_order: 2", "upgrade_order: 1");
        let p = problems(&src);
        assert!(p.iter().any(|x| x.contains("must be greater")), "{p:?}");
    }
}
