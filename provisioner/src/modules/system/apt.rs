//! `apt`, `package` (delegates to apt, as on Debian) and `package_facts` (manager apt).
//!
//! Semantics follow ansible-core 2.14's apt module (read from the module source on this machine
//! and checked with oracle runs in check mode):
//! - present: install when not installed (or the `name=VER*` glob does not match the installed
//!   version); latest: also when the candidate differs from the installed version;
//!   absent: remove when installed (or, with `purge`, when config files remain).
//! - The install command pins the best version, like Ansible: `'sl=5.02-1+b1'`.
//! - Unknown package: failed, "No package matching 'X' is available".
//! - `update_cache` without packages: changed when the cache timestamp moved (always in check
//!   mode); with packages, the update never makes the task changed by itself.
//! - `cache_valid_time`: skip the update while /var/lib/apt/periodic/update-success-stamp (or
//!   /var/lib/apt/lists) is younger than that many seconds.
//! - Results: present/latest carry `cache_updated`, `cache_update_time`; a run carries `stdout`,
//!   `stderr`, `diff: {}`; a failed install has msg "'<cmd>' failed: <stderr>" and `rc`.
//!
//! Probes: one read-only Command probe reporting, per package, dpkg's status and apt-cache's
//! policy (installed, candidate, version table), plus the cache timestamp and the host clock.

use super::args::{lines_value, p, pa, A};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

pub struct Apt;
pub struct Package;
pub struct PackageFacts;

pub static APT: Apt = Apt;
pub static PACKAGE: Package = Package;
pub static PACKAGE_FACTS: PackageFacts = PackageFacts;

const APT_PARAMS: &[ParamSpec] = &[
    pa("name", &["package", "pkg"]),
    p("state"),
    pa("update_cache", &["update-cache"]),
    p("update_cache_retries"),
    p("update_cache_retry_max_delay"),
    p("cache_valid_time"),
    pa("install_recommends", &["install-recommends"]),
    p("purge"),
    p("autoremove"),
    p("autoclean"),
    p("force"),
    p("force_apt_get"),
    p("dpkg_options"),
    p("default_release"),
    p("allow_unauthenticated"),
    p("allow_downgrade"),
    p("allow_change_held_packages"),
    p("fail_on_autoremove"),
    p("only_upgrade"),
    p("lock_timeout"),
    p("upgrade"),
    p("deb"),
    p("policy_rc_d"),
];

const PACKAGE_PARAMS: &[ParamSpec] = &[pa("name", &["pkg"]), p("state"), p("use")];
const PACKAGE_FACTS_PARAMS: &[ParamSpec] = &[p("manager"), p("strategy")];

/// What Ansible exports before running apt-get (`APT_ENV_VARS`, best parsable locale C.utf8).
const APT_ENV: &str = "DEBIAN_FRONTEND=noninteractive DEBIAN_PRIORITY=critical LANG=C.utf8 \
                       LC_ALL=C.utf8 LC_MESSAGES=C.utf8 LC_CTYPE=C.utf8";
const APT_GET: &str = "/usr/bin/apt-get";
/// apt-get's summary line when nothing was installed or upgraded (Ansible's `APT_GET_ZERO`).
const APT_GET_ZERO: &str = "\n0 upgraded, 0 newly installed";
const STAMP_SCRIPT: &str = "stat -c %Y /var/lib/apt/periodic/update-success-stamp 2>/dev/null \
                            || stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0";
/// Keys of the planned result that only `finish` reads; removed from the module result.
const PRIV: &str = "_apt_plan";

#[derive(Debug)]
struct AptArgs {
    packages: Vec<String>,
    state: String,
    update_cache: bool,
    cache_valid_time: i64,
    install_recommends: Option<bool>,
    purge: bool,
    autoremove: bool,
    force: bool,
    dpkg_options: String,
    allow_unauthenticated: bool,
    allow_downgrade: bool,
    allow_change_held_packages: bool,
    fail_on_autoremove: bool,
    only_upgrade: bool,
    default_release: Option<String>,
    lock_timeout: i64,
    update_retries: i64,
    update_retry_max_delay: i64,
}

fn parse(args: &Args) -> Result<AptArgs, OpError> {
    let a = A::new(args, APT_PARAMS)?;
    let state = a
        .choice(
            "state",
            &["absent", "build-dep", "fixed", "latest", "present"],
            Some("present"),
        )?
        .unwrap_or_default();
    if state == "build-dep" || state == "fixed" {
        return Err(OpError::new(format!(
            "apt: state={state} is not supported by provisioner"
        )));
    }
    let upgrade = a.choice(
        "upgrade",
        &["dist", "full", "no", "safe", "yes"],
        Some("no"),
    )?;
    if upgrade.as_deref() != Some("no") {
        return Err(OpError::new("apt: upgrade is not supported by provisioner"));
    }
    if a.has("deb") {
        return Err(OpError::new("apt: deb is not supported by provisioner"));
    }
    let raw = a.list("name")?.unwrap_or_default();
    let all = raw.iter().any(|p| p == "*");
    let packages: Vec<String> = raw
        .iter()
        .filter(|p| p.as_str() != "*")
        .map(|p| p.trim().to_string())
        .collect();
    if all {
        return Err(OpError::new(
            "apt: name='*' (upgrade all packages) is not supported by provisioner",
        ));
    }
    for p in &packages {
        if p.matches('=').count() > 1 {
            return Err(OpError::new(format!("invalid package spec: {p}")));
        }
        if p.is_empty() || p.contains(|c: char| c.is_whitespace() || "'\"\\$`;|&<>".contains(c)) {
            return Err(OpError::new(format!("invalid package name: {p:?}")));
        }
        if p.contains(">=") {
            return Err(OpError::new(format!(
                "apt: version comparison '>=' ({p}) is not supported by provisioner"
            )));
        }
    }
    let update_cache = a.bool("update_cache")?;
    let cache_valid_time = a.int_or("cache_valid_time", 0)?;
    if packages.is_empty() && update_cache != Some(true) && cache_valid_time == 0 {
        let autoremove = a.bool_or("autoremove", false)?;
        if !autoremove {
            return Err(OpError::new(
                "one of the following is required: autoremove, deb, package, update_cache, upgrade",
            ));
        }
    }
    Ok(AptArgs {
        packages,
        state,
        update_cache: update_cache.unwrap_or(false),
        cache_valid_time,
        install_recommends: a.bool("install_recommends")?,
        purge: a.bool_or("purge", false)?,
        autoremove: a.bool_or("autoremove", false)?,
        force: a.bool_or("force", false)?,
        dpkg_options: a.str_or("dpkg_options", "force-confdef,force-confold")?,
        allow_unauthenticated: a.bool_or("allow_unauthenticated", false)?,
        allow_downgrade: a.bool_or("allow_downgrade", false)?,
        allow_change_held_packages: a.bool_or("allow_change_held_packages", false)?,
        fail_on_autoremove: a.bool_or("fail_on_autoremove", false)?,
        only_upgrade: a.bool_or("only_upgrade", false)?,
        default_release: a.str("default_release")?,
        lock_timeout: a.int_or("lock_timeout", 60)?,
        update_retries: a.int_or("update_cache_retries", 5)?,
        update_retry_max_delay: a.int_or("update_cache_retry_max_delay", 12)?,
    })
}

/// `name`, `name=VER` → (name, Some(ver)).
fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    }
}

/// When a package's policy (candidate, version table) is read: `apt-cache policy` loads the whole
/// package cache, about 50 ms of the host's CPU per package, and was most of the host-side cost
/// of a no-op run of the stack. `absent` never uses it; `present` without a version only when
/// the package is not installed; `latest` and `name=VER` always.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Never,
    UnlessInstalled,
    Always,
}

fn policy_need(state: &str, version: Option<&str>) -> Policy {
    match (state, version) {
        ("absent", _) => Policy::Never,
        ("present", None) => Policy::UnlessInstalled,
        _ => Policy::Always,
    }
}

/// dpkg's status and version of a package, as the state probe prints them.
const DPKG_FORMAT: &str = "${db:Status-Abbrev}|${Version}\\n";

/// A name dpkg-query may expand (a glob) or qualify (`name:arch`): asked for on its own.
fn asked_alone(name: &str) -> bool {
    name.contains(['*', '?', '[', ':'])
}

fn state_probe(a: &AptArgs) -> Probe {
    let mut s = String::new();
    // One dpkg-query for the plain names (it reads dpkg's whole status file each time); a
    // shell function finds each package's line in its answer.
    let plain: Vec<String> = a
        .packages
        .iter()
        .map(|spec| split_spec(spec).0)
        .filter(|n| !asked_alone(n))
        .map(quote)
        .collect();
    if !plain.is_empty() {
        s.push_str(&format!(
            "_apt_s=$(dpkg-query -W -f='${{binary:Package}}|{DPKG_FORMAT}' -- {} 2>/dev/null)\n\
             _apt_d() {{ d=; while IFS= read -r l; do case \"$l\" in \"$1|\"*|\"$1:\"*\"|\"*) d=${{l#*|}}; return;; esac; done <<_APT_EOF\n\
             $_apt_s\n\
             _APT_EOF\n\
             }}\n",
            plain.join(" ")
        ));
    }
    for spec in &a.packages {
        let (name, ver) = split_spec(spec);
        let q = quote(name);
        let policy = format!("LC_ALL=C apt-cache policy -- {q} 2>/dev/null");
        let dpkg = if asked_alone(name) {
            format!("d=$(dpkg-query -W -f='{DPKG_FORMAT}' -- {q} 2>/dev/null | head -n1)")
        } else {
            format!("_apt_d {q}")
        };
        s.push_str(&format!(
            "printf '@@PKG %s\\n' {q}; {dpkg}; [ -n \"$d\" ] && printf '@@DPKG %s\\n' \"$d\"; "
        ));
        match policy_need(&a.state, ver) {
            Policy::Never => {}
            // dpkg's status abbreviation: the second letter `i` is "installed".
            Policy::UnlessInstalled => {
                s.push_str(&format!("case \"$d\" in ?i*) ;; *) {policy};; esac"))
            }
            Policy::Always => s.push_str(&policy),
        }
        s.push('\n');
    }
    if a.packages.is_empty() && a.autoremove {
        s.push_str("printf '@@AUTOREMOVE\\n'; LC_ALL=C apt-get -s autoremove 2>/dev/null");
    }
    Probe::Command { script: s }
}

/// The cache's timestamp and the host's clock: the same probe for every apt task, so a run
/// asks it once per host (the prefetch merges equal probes), not once per task.
fn stamp_probe() -> Probe {
    Probe::Command {
        script: format!(
            "printf '@@STAMP %s\\n' \"$({STAMP_SCRIPT})\"\nprintf '@@NOW %s\\n' \"$(date +%s)\""
        ),
    }
}

#[derive(Debug, Default)]
struct PkgInfo {
    /// dpkg's `db:Status-Abbrev` (e.g. "ii ", "rc "), empty when dpkg does not know it.
    status: String,
    installed_version: Option<String>,
    /// apt-cache printed a policy (the package exists in the cache).
    known: bool,
    candidate: Option<String>,
    /// The version table, highest first.
    versions: Vec<String>,
}

impl PkgInfo {
    fn installed(&self) -> bool {
        self.status.as_bytes().get(1) == Some(&b'i')
    }
    fn has_files(&self) -> bool {
        matches!(self.status.as_bytes().get(1), Some(c) if *c != b'n')
    }
}

#[derive(Debug, Default)]
struct AptState {
    pkgs: Vec<(String, PkgInfo)>,
    stamp: i64,
    now: i64,
    autoremove_sim: Option<String>,
}

fn parse_state(out: &str) -> AptState {
    let mut st = AptState::default();
    let mut in_auto = false;
    let mut auto = String::new();
    for line in out.lines() {
        if in_auto {
            auto.push_str(line);
            auto.push('\n');
            continue;
        }
        if let Some(name) = line.strip_prefix("@@PKG ") {
            st.pkgs.push((name.to_string(), PkgInfo::default()));
        } else if let Some(rest) = line.strip_prefix("@@DPKG ") {
            if let Some((_, info)) = st.pkgs.last_mut() {
                let (status, ver) = rest.split_once('|').unwrap_or((rest, ""));
                info.status = status.to_string();
                if info.installed() && !ver.is_empty() {
                    info.installed_version = Some(ver.to_string());
                }
            }
        } else if let Some(v) = line.strip_prefix("@@STAMP ") {
            st.stamp = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("@@NOW ") {
            st.now = v.trim().parse().unwrap_or(0);
        } else if line == "@@AUTOREMOVE" {
            in_auto = true;
        } else if let Some((_, info)) = st.pkgs.last_mut() {
            if !line.starts_with(' ') && line.ends_with(':') {
                info.known = true;
            } else if let Some(c) = line.strip_prefix("  Candidate: ") {
                info.candidate = (c != "(none)").then(|| c.to_string());
            } else if let Some(rest) = line
                .strip_prefix(" *** ")
                .or_else(|| line.strip_prefix("     "))
            {
                let mut it = rest.split_whitespace();
                if let (Some(v), Some(prio), None) = (it.next(), it.next(), it.next()) {
                    if prio.parse::<i64>().is_ok() && !rest.starts_with(' ') {
                        info.versions.push(v.to_string());
                    }
                }
            }
        }
    }
    if in_auto {
        st.autoremove_sim = Some(auto);
    }
    st
}

fn fnmatch(pattern: &str, s: &str) -> bool {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(s))
        .unwrap_or(pattern == s)
}

fn dpkg_opts(compressed: &str) -> String {
    compressed
        .split(',')
        .map(|o| format!("-o \"Dpkg::Options::=--{o}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Join command pieces, dropping the empty ones Ansible's format string leaves as extra spaces.
fn words(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn apt_state(facts: &Facts, a: &AptArgs) -> Result<AptState, OpError> {
    match (facts.get(&stamp_probe()), facts.get(&state_probe(a))) {
        // The stamp first: the state's answer may end with apt-get's autoremove simulation.
        (Some(ProbeResult::Command(stamp)), Some(ProbeResult::Command(o))) => {
            Ok(parse_state(&format!("{}{}", stamp.stdout, o.stdout)))
        }
        _ => Err(OpError::new("internal: apt state probe was not answered")),
    }
}

/// Seconds one `apt-get update` attempt may take before it is killed and retried. apt can hang
/// for good on a proxy that drops a connection mid-answer (seen with apt-cacher-ng refreshing
/// an InRelease for several hosts in the same second); a killed attempt is retried like a
/// failed one.
const UPDATE_ATTEMPT_SECS: u32 = 300;

/// `apt-get update`, retried as Ansible does (`update_cache_retries` times, the delay doubling
/// up to `update_cache_retry_max_delay` seconds), each attempt bounded by
/// [`UPDATE_ATTEMPT_SECS`], then the new cache timestamp. An index that cannot be fetched fails
/// the attempt (`APT::Update::Error-Mode=any`; Ansible's python-apt fails the same way, where
/// plain `apt-get update` only warns). When every attempt failed, the last one's messages are
/// reported with the number of attempts and the apt proxy, if one is set. A successful update
/// touches `/var/lib/apt/periodic/update-success-stamp`, as Ubuntu's apt hook does: without it
/// (plain Debian) an update that finds the indexes unchanged leaves every timestamp as it was,
/// and every run after `cache_valid_time` would update again, for each apt task (Ansible does
/// so).
fn update_script(a: &AptArgs) -> String {
    let (apt_get, tries, max) = (
        apt_get(a),
        a.update_retries.max(1),
        a.update_retry_max_delay.max(1),
    );
    let t = UPDATE_ATTEMPT_SECS;
    format!(
        "n=0; d=1; t=\ncommand -v timeout >/dev/null 2>&1 && t='timeout -k 10 {t}'\n\
         while :; do\n  \
         err=$({APT_ENV} $t {apt_get} -o APT::Update::Error-Mode=any update -q 2>&1 >/dev/null); rc=$?\n  \
         [ $rc -eq 0 ] && break\n  n=$((n+1))\n  \
         [ $rc -eq 124 ] && err=\"$err apt-get update did not finish in {t} s and was killed.\"\n  \
         if [ \"$n\" -ge {tries} ]; then\n    printf '%s\\n' \"$err\" >&2\n    \
         p=$(apt-config dump 2>/dev/null | sed -n 's/^Acquire::https*::Proxy \"\\(..*\\)\";$/\\1/p' | head -n 1)\n    \
         echo \"apt-get update failed $n time(s)${{p:+, through the apt proxy $p (is it up?)}}\" >&2\n    \
         exit $rc\n  fi\n  \
         sleep $d; d=$((d*2)); [ $d -gt {max} ] && d={max}\ndone\n\
         mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp\n\
         printf '@@STAMP %s\\n' \"$({STAMP_SCRIPT})\""
    )
}

/// apt-get waiting up to `lock_timeout` seconds for the dpkg lock another apt holds (Ansible
/// waits the same way before giving up).
fn apt_get(a: &AptArgs) -> String {
    format!("{APT_GET} -o DPkg::Lock::Timeout={}", a.lock_timeout.max(0))
}

/// The script that runs an apt-get command line `cmd` (which starts with [`APT_GET`]).
fn apt_script(a: &AptArgs, cmd: &str) -> String {
    let rest = cmd.strip_prefix(APT_GET).unwrap_or(cmd);
    format!("{APT_ENV} {}{rest}", apt_get(a))
}

fn plan_apt(args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
    let a = parse(args)?;
    let st = apt_state(facts, &a)?;
    let update = (a.update_cache || a.cache_valid_time > 0)
        && !(a.cache_valid_time > 0 && st.stamp + a.cache_valid_time >= st.now);
    let mut result = Map::new();
    let mut actions = Vec::new();
    let mut private = Map::new();
    if update {
        actions.push(Action::Exec {
            script: update_script(&a),
            stdin: None,
        });
        private.insert("update".into(), json!(true));
    }
    let _ = mode;

    if a.packages.is_empty() {
        if let Some(sim) = &st.autoremove_sim {
            if !update && !sim.contains("The following packages will be REMOVED") {
                return Ok(Planned::NoChange { result });
            }
            let cmd = words(&[
                APT_GET,
                "-y",
                &dpkg_opts(&a.dpkg_options),
                if a.purge { "--purge" } else { "" },
                if a.force { "--force-yes" } else { "" },
                "autoremove",
            ]);
            if sim.contains("The following packages will be REMOVED") {
                actions.push(Action::Exec {
                    script: apt_script(&a, &cmd),
                    stdin: None,
                });
                private.insert("cleanup".into(), json!(cmd));
            }
        }
        result.insert("cache_updated".into(), json!(false));
        result.insert("cache_update_time".into(), json!(st.stamp));
        if actions.is_empty() {
            return Ok(Planned::NoChange { result });
        }
        result.insert(PRIV.into(), Value::Object(private));
        return Ok(Planned::Change {
            actions,
            diffs: Vec::new(),
            result,
        });
    }

    let info = |name: &str| st.pkgs.iter().find(|(n, _)| n == name).map(|(_, i)| i);
    let empty = PkgInfo::default();
    if a.state == "absent" {
        let mut list = Vec::new();
        for spec in &a.packages {
            let (name, ver) = split_spec(spec);
            let i = info(name).unwrap_or(&empty);
            let version_ok = match (&i.installed_version, ver) {
                (Some(iv), Some(v)) => fnmatch(v, iv),
                (Some(_), None) => true,
                _ => false,
            };
            if (i.installed() && version_ok) || (i.has_files() && a.purge) {
                list.push(format!("'{spec}'"));
            }
        }
        if list.is_empty() {
            if update {
                result.insert(PRIV.into(), json!({"update": true, "quiet": true}));
                return Ok(Planned::Change {
                    actions,
                    diffs: Vec::new(),
                    result,
                });
            }
            return Ok(Planned::NoChange { result });
        }
        let packages = list.join(" ");
        let cmd = words(&[
            APT_GET,
            "-q",
            "-y",
            &dpkg_opts(&a.dpkg_options),
            if a.purge { "--purge" } else { "" },
            if a.force { "--force-yes" } else { "" },
            if a.autoremove { "--auto-remove" } else { "" },
            "remove",
            &packages,
        ]);
        actions.push(Action::Exec {
            script: apt_script(&a, &cmd),
            stdin: None,
        });
        private.insert(
            "remove".into(),
            json!(format!("'apt-get remove {packages}' failed: ")),
        );
        result.insert(PRIV.into(), Value::Object(private));
        return Ok(Planned::Change {
            actions,
            diffs: Vec::new(),
            result,
        });
    }

    // present / latest
    let upgrade = a.state == "latest";
    let mut list = Vec::new();
    for spec in &a.packages {
        let (name, ver) = split_spec(spec);
        let i = info(name).unwrap_or(&empty);
        if !i.known && !i.installed() {
            return Err(OpError::new(format!(
                "No package matching '{name}' is available"
            )));
        }
        let installed = i.installed();
        if !installed && a.only_upgrade {
            continue;
        }
        // package_best_match: a `=` spec pins every matching version at 1001, so the highest
        // matching version wins; otherwise the policy's candidate.
        let best: Option<String> = match ver {
            Some(v) => i.versions.iter().find(|x| fnmatch(v, x)).cloned(),
            None => i.candidate.clone(),
        };
        let (version_ok, installable) = match (&i.installed_version, installed) {
            (Some(iv), true) => {
                let ok = ver.is_none_or(|v| fnmatch(v, iv));
                let inst = best.clone().filter(|b| b != iv);
                (ok, inst)
            }
            _ => (false, best.clone()),
        };
        if !version_ok && installable.is_none() {
            if update {
                // The cache update may bring a candidate: let apt-get decide.
                list.push(format!("'{spec}'"));
                continue;
            }
            return Err(OpError::new(format!(
                "no available installation candidate for {spec}"
            )));
        }
        match &installable {
            Some(vi) if !installed || upgrade || !version_ok => {
                if update {
                    // Versions seen before the update may be stale: let apt-get pick.
                    list.push(format!("'{spec}'"));
                } else {
                    list.push(format!("'{name}={vi}'"));
                }
            }
            Some(_) if version_ok && ver.is_some() => {
                // Ansible's legacy branch: installed, a newer version matches the glob.
                list.push(format!("'{spec}'"));
            }
            _ => {
                if update && upgrade {
                    list.push(format!("'{spec}'"));
                    private.insert("zero_check".into(), json!(true));
                }
            }
        }
    }
    result.insert("cache_updated".into(), json!(false));
    result.insert("cache_update_time".into(), json!(st.stamp));
    if list.is_empty() {
        if update {
            private.insert("quiet".into(), json!(true));
            result.insert(PRIV.into(), Value::Object(private));
            return Ok(Planned::Change {
                actions,
                diffs: Vec::new(),
                result,
            });
        }
        return Ok(Planned::NoChange { result });
    }
    let packages = list.join(" ");
    let mut cmd = words(&[
        APT_GET,
        "-y",
        &dpkg_opts(&a.dpkg_options),
        if a.only_upgrade { "--only-upgrade" } else { "" },
        if a.force { "--force-yes" } else { "" },
        if a.autoremove { "--auto-remove" } else { "" },
        if a.fail_on_autoremove {
            "--no-remove"
        } else {
            ""
        },
        "install",
        &packages,
    ]);
    if let Some(r) = &a.default_release {
        cmd.push_str(&format!(" -t {}", quote(r)));
    }
    match a.install_recommends {
        Some(false) => cmd.push_str(" -o APT::Install-Recommends=no"),
        Some(true) => cmd.push_str(" -o APT::Install-Recommends=yes"),
        None => {}
    }
    if a.allow_unauthenticated {
        cmd.push_str(" --allow-unauthenticated");
    }
    if a.allow_downgrade {
        cmd.push_str(" --allow-downgrades");
    }
    if a.allow_change_held_packages {
        cmd.push_str(" --allow-change-held-packages");
    }
    actions.push(Action::Exec {
        script: apt_script(&a, &cmd),
        stdin: None,
    });
    private.insert("install".into(), json!(cmd));
    result.insert("diff".into(), json!({}));
    result.insert(PRIV.into(), Value::Object(private));
    Ok(Planned::Change {
        actions,
        diffs: Vec::new(),
        result,
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn finish_apt(planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
    let mut data = match planned {
        Planned::NoChange { result } => {
            return ModuleResult {
                data: result.clone(),
                ..Default::default()
            }
        }
        Planned::Change { result, .. } => result.clone(),
    };
    let private = data
        .remove(PRIV)
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let flag = |k: &str| private.get(k).and_then(Value::as_bool).unwrap_or(false);
    let check = outputs.is_empty();
    let mut outs = outputs.iter();
    let mut cache_updated = false;
    if flag("update") {
        if check {
            cache_updated = true;
        } else if let Some(o) = outs.next() {
            if o.rc != 0 {
                return ModuleResult {
                    failed: true,
                    msg: Some(format!(
                        "Failed to update apt cache: {}",
                        text(&o.stderr).trim()
                    )),
                    ..Default::default()
                };
            }
            let new_stamp = text(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("@@STAMP ").map(|s| s.trim().to_string()))
                .and_then(|s| s.parse::<i64>().ok());
            let old = data.get("cache_update_time").and_then(Value::as_i64);
            cache_updated = new_stamp.is_some() && new_stamp != old;
            if let Some(n) = new_stamp {
                if data.contains_key("cache_update_time") {
                    data.insert("cache_update_time".into(), json!(n));
                }
            }
        }
    }
    if data.contains_key("cache_updated") {
        data.insert("cache_updated".into(), json!(cache_updated));
    }
    let main = private
        .get("install")
        .or_else(|| private.get("remove"))
        .or_else(|| private.get("cleanup"))
        .and_then(Value::as_str);
    let Some(cmd) = main else {
        // Only a cache update: changed when it moved the timestamp, unless packages were named.
        let changed = cache_updated && !flag("quiet");
        return ModuleResult {
            changed,
            data,
            ..Default::default()
        };
    };
    let Some(o) = outs.next() else {
        return ModuleResult {
            changed: true,
            data,
            ..Default::default()
        };
    };
    let stdout = text(&o.stdout);
    let stderr = text(&o.stderr);
    data.insert("stdout".into(), json!(stdout));
    data.insert("stderr".into(), json!(stderr));
    data.insert("stdout_lines".into(), lines_value(&stdout));
    data.insert("stderr_lines".into(), lines_value(&stderr));
    if o.rc != 0 {
        data.insert("rc".into(), json!(o.rc));
        data.remove("diff");
        let msg = if private.contains_key("install") {
            format!("'{cmd}' failed: {stderr}")
        } else {
            format!("{cmd}{stderr}")
        };
        return ModuleResult {
            failed: true,
            msg: Some(msg),
            data,
            ..Default::default()
        };
    }
    let changed = if flag("zero_check") || private.contains_key("cleanup") {
        if private.contains_key("cleanup") {
            stdout.contains("The following packages will be REMOVED")
        } else {
            !stdout.contains(APT_GET_ZERO)
        }
    } else {
        true
    };
    if !data.contains_key("diff") {
        data.insert("diff".into(), json!({}));
    }
    ModuleResult {
        changed,
        data,
        ..Default::default()
    }
}

impl Module for Apt {
    fn names(&self) -> &'static [&'static str] {
        &["apt", "ansible.builtin.apt", "ansible.legacy.apt"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        APT_PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        Ok(vec![state_probe(&parse(args)?), stamp_probe()])
    }
    fn plan(&self, args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
        plan_apt(args, facts, mode)
    }
    fn finish(&self, _args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        finish_apt(planned, outputs)
    }
}

/// `package` on Debian: the same arguments handed to apt (`use` must be auto or apt).
fn package_to_apt(args: &Args) -> Result<Args, OpError> {
    let a = A::new(args, PACKAGE_PARAMS)?;
    if let Some(u) = a.str("use")? {
        if u != "auto" && u != "apt" {
            return Err(OpError::new(format!(
                "package: use={u} is not supported on Debian hosts (only auto or apt)"
            )));
        }
    }
    let Some(name) = a.raw("name") else {
        return Err(OpError::new("missing required arguments: name"));
    };
    if a.raw("state").is_none() {
        return Err(OpError::new("missing required arguments: state"));
    }
    let mut out = Map::new();
    for (k, v) in args {
        if k != "use" && k != "pkg" {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("name".into(), name.clone());
    Ok(out)
}

impl Module for Package {
    fn names(&self) -> &'static [&'static str] {
        &[
            "package",
            "ansible.builtin.package",
            "ansible.legacy.package",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PACKAGE_PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        APT.probes(&package_to_apt(args)?)
    }
    fn plan(&self, args: &Args, facts: &Facts, mode: Mode) -> Result<Planned, OpError> {
        plan_apt(&package_to_apt(args)?, facts, mode)
    }
    fn finish(&self, _args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        finish_apt(planned, outputs)
    }
}

const FACTS_SCRIPT: &str = "dpkg-query -W -f='${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\t${Section}\\t${Origin}\\n'";

impl Module for PackageFacts {
    fn names(&self) -> &'static [&'static str] {
        &[
            "package_facts",
            "ansible.builtin.package_facts",
            "ansible.legacy.package_facts",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PACKAGE_FACTS_PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let a = A::new(args, PACKAGE_FACTS_PARAMS)?;
        for m in a.list("manager")?.unwrap_or_default() {
            if m != "auto" && m != "apt" {
                return Err(OpError::new(format!(
                    "package_facts: manager {m} is not supported on Debian hosts (auto or apt)"
                )));
            }
        }
        Ok(vec![Probe::Command {
            script: FACTS_SCRIPT.into(),
        }])
    }
    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        self.probes(args)?;
        let out = match facts.get(&Probe::Command {
            script: FACTS_SCRIPT.into(),
        }) {
            Some(ProbeResult::Command(o)) if o.rc == 0 => o.stdout.clone(),
            Some(ProbeResult::Command(o)) => {
                return Err(OpError::new(format!(
                    "Could not detect a supported package manager: {}",
                    o.stderr.trim()
                )))
            }
            _ => {
                return Err(OpError::new(
                    "internal: package_facts probe was not answered",
                ))
            }
        };
        // Ansible's shape: {name: [{name, version, arch, category, origin, source: "apt"}]}.
        let mut packages: Map<String, Value> = Map::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 6 || f[0].as_bytes().get(1) != Some(&b'i') {
                continue;
            }
            let entry = json!({
                "arch": f[3], "category": f[4], "name": f[1], "origin": f[5],
                "source": "apt", "version": f[2],
            });
            match packages.get_mut(f[1]) {
                Some(Value::Array(v)) => v.push(entry),
                _ => {
                    packages.insert(f[1].to_string(), json!([entry]));
                }
            }
        }
        let mut result = Map::new();
        result.insert("ansible_facts".into(), json!({ "packages": packages }));
        Ok(Planned::NoChange { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_state(args: serde_json::Value) -> AptState {
        let a = parse(args.as_object().unwrap()).unwrap();
        let run = |p: Probe| {
            let Probe::Command { script } = p else {
                panic!()
            };
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        parse_state(&format!("{}{}", run(stamp_probe()), run(state_probe(&a))))
    }

    #[test]
    fn the_state_probe_runs_locally_and_parses() {
        let st = local_state(
            json!({"name": ["bash", "nosuchpkgxyz", "libc6:amd64", "libc6"], "state": "latest"}),
        );
        let bash = &st.pkgs[0].1;
        assert!(bash.known && bash.installed());
        assert!(bash.installed_version.is_some());
        assert!(!bash.versions.is_empty());
        let none = &st.pkgs[1].1;
        assert!(!none.known && !none.installed());
        assert!(st.now > 0 && st.stamp > 0);
        // An arch-qualified name is asked alone; a multi-arch package's plain name finds its
        // `name:arch` line in the shared answer.
        for (name, info) in st.pkgs.iter().skip(2) {
            assert!(
                info.installed() && info.installed_version.is_some(),
                "{name}: {info:?}"
            );
        }
        assert_eq!(
            st.pkgs[2].1.installed_version,
            st.pkgs[3].1.installed_version
        );
    }

    /// A no-op of the stack spent most of its hosts' CPU in `apt-cache policy` (about 50 ms per
    /// package, for every package of every apt task, in every run), which `present` never
    /// needs for an installed package.
    #[test]
    fn present_reads_no_policy_for_an_installed_package_but_does_for_a_missing_one() {
        let st = local_state(json!({"name": ["bash", "nosuchpkgxyz"]}));
        let bash = &st.pkgs[0].1;
        assert!(bash.installed() && bash.installed_version.is_some());
        assert!(!bash.known && bash.candidate.is_none(), "no policy read");
        let none = &st.pkgs[1].1;
        assert!(!none.known && !none.installed());
        let script =
            |args: serde_json::Value| match state_probe(&parse(args.as_object().unwrap()).unwrap())
            {
                Probe::Command { script } => script,
                _ => panic!(),
            };
        assert!(!script(json!({"name": "bash", "state": "absent"})).contains("apt-cache"));
        assert!(script(json!({"name": "bash=5.*"})).contains("apt-cache policy -- bash 2>"));
        let present = script(json!({"name": "bash"}));
        assert!(present.contains("case \"$d\" in ?i*) ;; *) LC_ALL=C apt-cache policy"));
    }

    /// Issue 15: with the apt proxy down, `apt-get update` only warned and exited 0, so the
    /// install failed later with an error that did not say why; and each retry's messages were
    /// all reported.
    #[test]
    fn a_failing_update_is_retried_a_bounded_number_of_times_and_names_the_apt_proxy() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path();
        let script = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let count = bin.join("attempts");
        script(
            "apt-get",
            &format!(
                "case \"$*\" in *APT::Update::Error-Mode=any*) ;; *) exit 0;; esac\n\
                 echo x >> {c}; n=$(wc -l < {c})\n\
                 echo \"E: Failed to fetch http://deb.example/InRelease  Could not connect to 10.9.9.9:3142 (attempt $n)\" >&2\n\
                 exit 100",
                c = count.display()
            ),
        );
        script(
            "apt-config",
            "echo 'Acquire::http::Proxy \"http://10.9.9.9:3142\";'",
        );
        let a = parse(
            serde_json::json!({"update_cache": true, "update_cache_retries": 3,
                               "update_cache_retry_max_delay": 1})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let fake = bin.join("apt-get").display().to_string();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(update_script(&a).replace(APT_GET, &fake))
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(100));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
        assert!(
            err.contains("(attempt 3)") && !err.contains("(attempt 2)"),
            "{err}"
        );
        assert!(
            err.contains("apt-get update failed 3 time(s), through the apt proxy http://10.9.9.9:3142 (is it up?)"),
            "{err}"
        );
    }
}
