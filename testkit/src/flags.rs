//! Flag files as Mesos's Debian packaging lays them out (`/etc/mesos-master/<flag>`,
//! `/etc/mesos-agent/<flag>`, `/etc/mesos/zk`), and the checks real Mesos would fail on.
//! Every problem is reported, not only the first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::zkurl::{redact, ZkUrl};

/// Raw flags: name → value, in name order.
pub type Flags = BTreeMap<String, String>;

/// Reads one file per flag. A file named `?name` is a boolean flag set to true by its presence
/// (the Debian wrapper's convention). Values are trimmed of surrounding whitespace.
pub fn read_flags_dir(dir: &Path) -> Result<Flags, String> {
    let mut flags = Flags::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read flags dir {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read flags dir {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if path.is_dir() {
            return Err(format!(
                "{}: a flag must be a file, not a directory",
                path.display()
            ));
        }
        if let Some(flag) = name.strip_prefix('?') {
            flags.insert(flag.to_string(), "true".into());
            continue;
        }
        let value = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read flag file {}: {e}", path.display()))?;
        flags.insert(name, value.trim().to_string());
    }
    Ok(flags)
}

/// Reads the zk file (`/etc/mesos/zk`).
pub fn read_zk_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read zk file {}: {e}", path.display()))
}

const MASTER_FLAGS: &[&str] = &[
    "acls",
    "advertise_ip",
    "advertise_port",
    "agent_ping_timeout",
    "agent_removal_rate_limit",
    "agent_reregister_timeout",
    "allocation_interval",
    "allocator",
    "authenticate_agents",
    "authenticate_frameworks",
    "authenticate_http_frameworks",
    "authenticate_http_readonly",
    "authenticate_http_readwrite",
    "authentication_v0_timeout",
    "authenticators",
    "authorizers",
    "cluster",
    "credentials",
    "domain",
    "external_log_file",
    "fair_sharing_excluded_resource_names",
    "filter_gpu_resources",
    "framework_sorter",
    "hooks",
    "hostname",
    "hostname_lookup",
    "http_authenticators",
    "http_framework_authenticators",
    "ip",
    "ip_discovery_command",
    "log_auto_initialize",
    "log_dir",
    "logbufsecs",
    "logging_level",
    "max_agent_ping_timeouts",
    "max_completed_frameworks",
    "max_completed_tasks_per_framework",
    "max_unreachable_tasks_per_framework",
    "min_allocatable_resources",
    "modules",
    "modules_dir",
    "offer_timeout",
    "port",
    "publish_per_framework_metrics",
    "quiet",
    "quorum",
    "rate_limits",
    "recovery_agent_removal_limit",
    "registry",
    "registry_fetch_timeout",
    "registry_gc_interval",
    "registry_max_agent_age",
    "registry_max_agent_count",
    "registry_store_timeout",
    "registry_strict",
    "require_agent_domain",
    "roles",
    "root_submissions",
    "user_sorter",
    "webui_dir",
    "weights",
    "whitelist",
    "work_dir",
    "zk",
    "zk_session_timeout",
];

const AGENT_FLAGS: &[&str] = &[
    "acls",
    "advertise_ip",
    "advertise_port",
    "appc_store_dir",
    "attributes",
    "authenticate_http_readonly",
    "authenticate_http_readwrite",
    "authenticatee",
    "authentication_backoff_factor",
    "cgroups_enable_cfs",
    "cgroups_hierarchy",
    "cgroups_root",
    "container_disk_watch_interval",
    "container_logger",
    "containerizers",
    "credential",
    "default_container_info",
    "default_role",
    "disk_watch_interval",
    "docker",
    "docker_config",
    "docker_mesos_image",
    "docker_registry",
    "docker_remove_delay",
    "docker_socket",
    "docker_stop_timeout",
    "docker_store_dir",
    "docker_volume_checkpoint_dir",
    "enforce_container_disk_quota",
    "executor_environment_variables",
    "executor_registration_timeout",
    "executor_shutdown_grace_period",
    "fetcher_cache_dir",
    "fetcher_cache_size",
    "frameworks_home",
    "gc_delay",
    "gc_disk_headroom",
    "hooks",
    "hostname",
    "hostname_lookup",
    "http_credentials",
    "image_providers",
    "image_provisioner_backend",
    "ip",
    "ip_discovery_command",
    "isolation",
    "launcher",
    "launcher_dir",
    "log_dir",
    "logbufsecs",
    "logging_level",
    "master",
    "modules",
    "network_cni_config_dir",
    "network_cni_plugins_dir",
    "oversubscribed_resources_interval",
    "port",
    "qos_controller",
    "quiet",
    "recover",
    "recovery_timeout",
    "registration_backoff_factor",
    "resources",
    "runtime_dir",
    "sandbox_directory",
    "strict",
    "switch_user",
    "systemd_enable_support",
    "systemd_runtime_directory",
    "work_dir",
];

const BOOL_FLAGS: &[&str] = &[
    "authenticate_agents",
    "authenticate_frameworks",
    "authenticate_http_frameworks",
    "authenticate_http_readonly",
    "authenticate_http_readwrite",
    "cgroups_enable_cfs",
    "enforce_container_disk_quota",
    "filter_gpu_resources",
    "hostname_lookup",
    "log_auto_initialize",
    "publish_per_framework_metrics",
    "quiet",
    "registry_strict",
    "require_agent_domain",
    "root_submissions",
    "strict",
    "switch_user",
    "systemd_enable_support",
];

const DURATION_FLAGS: &[&str] = &[
    "agent_ping_timeout",
    "agent_reregister_timeout",
    "allocation_interval",
    "authentication_v0_timeout",
    "disk_watch_interval",
    "docker_remove_delay",
    "docker_stop_timeout",
    "executor_registration_timeout",
    "executor_shutdown_grace_period",
    "gc_delay",
    "logbufsecs_duration",
    "offer_timeout",
    "recovery_timeout",
    "registry_fetch_timeout",
    "registry_gc_interval",
    "registry_max_agent_age",
    "registry_store_timeout",
    "zk_session_timeout",
];

/// Isolators Mesos 1.x knows (`--isolation`).
pub const ISOLATORS: &[&str] = &[
    "appc/runtime",
    "cgroups/all",
    "cgroups/blkio",
    "cgroups/cpu",
    "cgroups/cpuset",
    "cgroups/devices",
    "cgroups/hugetlb",
    "cgroups/mem",
    "cgroups/net_cls",
    "cgroups/net_prio",
    "cgroups/perf_event",
    "cgroups/pids",
    "disk/du",
    "disk/xfs",
    "docker/runtime",
    "docker/volume",
    "environment_secret",
    "filesystem/linux",
    "filesystem/posix",
    "filesystem/shared",
    "filesystem/windows",
    "gpu/nvidia",
    "linux/capabilities",
    "linux/devices",
    "linux/nnp",
    "linux/seccomp",
    "namespaces/ipc",
    "namespaces/pid",
    "network/cni",
    "network/port_mapping",
    "posix/cpu",
    "posix/disk",
    "posix/mem",
    "posix/rlimits",
    "volume/host_path",
    "volume/image",
    "volume/sandbox_path",
    "volume/secret",
    "volume/csi",
];

#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub flags: Flags,
    pub zk: ZkUrl,
    pub quorum: usize,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub hostname: String,
    pub cluster: Option<String>,
    pub work_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub flags: Flags,
    pub master: ZkUrl,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub hostname: String,
    pub work_dir: PathBuf,
    pub attributes: Map<String, Value>,
    pub resources: Map<String, Value>,
    pub containerizers: Vec<String>,
}

/// Master flags: the flags dir plus the zk file (the zk file wins over a `zk` flag file, as the
/// Debian wrapper passes it last).
pub fn master_config(
    mut flags: Flags,
    zk_file: Option<String>,
) -> Result<MasterConfig, Vec<String>> {
    let mut errs = Vec::new();
    if let Some(zk) = zk_file {
        flags.insert("zk".into(), zk);
    }
    check_common(&flags, MASTER_FLAGS, &mut errs);
    let zk = match flags.get("zk") {
        None => {
            errs.push("missing --zk (no /etc/mesos/zk and no zk flag): a multi-master stand-in needs ZooKeeper".into());
            None
        }
        Some(z) => match ZkUrl::parse(&resolve_file_value(z, &mut errs)) {
            Ok(u) => Some(u),
            Err(e) => {
                errs.push(format!("--zk: {e}"));
                None
            }
        },
    };
    let registry = flags
        .get("registry")
        .map(String::as_str)
        .unwrap_or("replicated_log");
    if !["replicated_log", "in_memory"].contains(&registry) {
        errs.push(format!(
            "--registry must be 'replicated_log' or 'in_memory', not '{registry}'"
        ));
    }
    let quorum = match flags.get("quorum") {
        None => {
            errs.push(
                "missing required flag --quorum (needed with --zk and the replicated_log registry)"
                    .into(),
            );
            None
        }
        Some(q) => match q.parse::<usize>() {
            Ok(q) if q > 0 => Some(q),
            _ => {
                errs.push(format!("--quorum must be a positive integer, not '{q}'"));
                None
            }
        },
    };
    if let (Some(q), Some(zk)) = (quorum, &zk) {
        // The stack runs one master per ZooKeeper server (docs/stack.md: the ensemble defaults to
        // the masters), so the zk string implies the number of masters.
        let n = zk.servers.len();
        if q > n {
            errs.push(format!("--quorum={q} is larger than the {n} masters implied by --zk; the registry could never reach quorum"));
        } else if q <= n / 2 {
            errs.push(format!("--quorum={q} is not a majority of the {n} masters implied by --zk (need {}); two leaders could write the registry", n / 2 + 1));
        }
    }
    let work_dir = match flags.get("work_dir") {
        None if registry == "replicated_log" => {
            errs.push(
                "missing required flag --work_dir (needed by the replicated_log registry)".into(),
            );
            None
        }
        None => Some(PathBuf::from("/var/lib/mesos")),
        Some(w) => check_abs_path("work_dir", w, &mut errs),
    };
    if let Some(c) = flags.get("cluster") {
        if c.is_empty()
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            errs.push(format!(
                "--cluster '{c}' may only hold letters, digits, '-', '_' and '.'"
            ));
        }
    }
    let auth = [
        "authenticate_agents",
        "authenticate_frameworks",
        "authenticate_http_frameworks",
    ]
    .iter()
    .any(|f| flags.get(*f).map(String::as_str) == Some("true"));
    match flags.get("credentials") {
        Some(c) => {
            if let Err(e) = load_credentials(c) {
                errs.push(format!("--credentials: {e}"));
            }
        }
        None if auth => errs.push(
            "authentication is required (--authenticate_agents/--authenticate_frameworks) but --credentials is not set; every registration would be refused".into(),
        ),
        None => {}
    }
    if let Some(a) = flags.get("acls") {
        let text = resolve_file_value(a, &mut errs);
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(_)) => {}
            Ok(_) => errs.push("--acls must be a JSON object".into()),
            Err(e) => errs.push(format!("--acls is not valid JSON: {e}")),
        }
    }
    if let Some(n) = flags.get("max_agent_ping_timeouts") {
        if n.parse::<u32>().map(|n| n == 0).unwrap_or(true) {
            errs.push(format!(
                "--max_agent_ping_timeouts must be a positive integer, not '{n}'"
            ));
        }
    }
    let (ip, port, hostname) = check_endpoint(&flags, 5050, &mut errs);
    match (zk, quorum, work_dir) {
        (Some(zk), Some(quorum), Some(work_dir)) if errs.is_empty() => Ok(MasterConfig {
            cluster: flags.get("cluster").cloned(),
            flags,
            zk,
            quorum,
            ip,
            port,
            hostname,
            work_dir,
        }),
        _ => Err(errs),
    }
}

/// Agent flags: the flags dir plus the zk file as `--master` when there is no `master` flag file.
pub fn agent_config(mut flags: Flags, zk_file: Option<String>) -> Result<AgentConfig, Vec<String>> {
    let mut errs = Vec::new();
    if let Some(zk) = zk_file {
        flags.entry("master".into()).or_insert(zk);
    }
    check_common(&flags, AGENT_FLAGS, &mut errs);
    let master = match flags.get("master") {
        None => {
            errs.push("missing required flag --master".into());
            None
        }
        Some(m) => match ZkUrl::parse(&resolve_file_value(m, &mut errs)) {
            Ok(u) => Some(u),
            Err(e) => {
                errs.push(format!(
                    "--master: {e} (the stand-in only supports zk:// masters)"
                ));
                None
            }
        },
    };
    let work_dir = match flags.get("work_dir") {
        None => {
            errs.push("missing required flag --work_dir".into());
            None
        }
        Some(w) => check_abs_path("work_dir", w, &mut errs),
    };
    let containerizers: Vec<String> = flags
        .get("containerizers")
        .map(String::as_str)
        .unwrap_or("mesos")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    for (i, c) in containerizers.iter().enumerate() {
        if !["mesos", "docker"].contains(&c.as_str()) {
            errs.push(format!(
                "--containerizers: unknown containerizer '{c}' (known: mesos, docker)"
            ));
        }
        if containerizers[..i].contains(c) {
            errs.push(format!("--containerizers: '{c}' is listed twice"));
        }
    }
    if containerizers.iter().any(|c| c == "docker") {
        let socket = flags
            .get("docker_socket")
            .map(String::as_str)
            .unwrap_or("/var/run/docker.sock");
        if !Path::new(socket).exists() {
            errs.push(format!("the docker containerizer is listed but the docker socket {socket} does not exist (is dockerd running?)"));
        }
    }
    let isolation: Vec<&str> = flags
        .get("isolation")
        .map(String::as_str)
        .unwrap_or("posix/cpu,posix/mem")
        .split(',')
        .map(str::trim)
        .collect();
    for i in &isolation {
        if !ISOLATORS.contains(i) {
            errs.push(format!("--isolation: unknown isolator '{i}'"));
        }
    }
    if isolation.contains(&"docker/runtime") && !isolation.contains(&"filesystem/linux") {
        errs.push("--isolation: 'docker/runtime' needs 'filesystem/linux'".into());
    }
    if let Some(p) = flags.get("image_providers") {
        for v in p.split(',').map(str::trim) {
            if !["docker", "appc"].contains(&v) {
                errs.push(format!(
                    "--image_providers: unknown provider '{v}' (known: docker, appc)"
                ));
            }
        }
        if !containerizers.iter().any(|c| c == "mesos") {
            errs.push("--image_providers needs the mesos containerizer".into());
        }
    }
    let cni_conf = flags.get("network_cni_config_dir");
    let cni_plugins = flags.get("network_cni_plugins_dir");
    match (cni_conf, cni_plugins) {
        (Some(_), None) => {
            errs.push("--network_cni_config_dir needs --network_cni_plugins_dir".into())
        }
        (None, Some(_)) => {
            errs.push("--network_cni_plugins_dir needs --network_cni_config_dir".into())
        }
        _ => {}
    }
    if let Some(d) = cni_conf {
        if !Path::new(d).is_dir() {
            errs.push(format!("--network_cni_config_dir: {d} is not a directory"));
        }
    }
    if let Some(d) = cni_plugins {
        for part in d.split(':') {
            if !Path::new(part).is_dir() {
                errs.push(format!(
                    "--network_cni_plugins_dir: {part} is not a directory"
                ));
            }
        }
    }
    let attributes = match flags.get("attributes") {
        None => Map::new(),
        Some(a) => parse_attributes(a).unwrap_or_else(|e| {
            errs.push(format!("--attributes: {e}"));
            Map::new()
        }),
    };
    let mut resources = match flags.get("resources") {
        None => Map::new(),
        Some(r) => parse_resources(r).unwrap_or_else(|e| {
            errs.push(format!("--resources: {e}"));
            Map::new()
        }),
    };
    default_resources(&mut resources);
    if let Some(c) = flags.get("credential") {
        if let Err(e) = load_credential(c) {
            errs.push(format!("--credential: {e}"));
        }
    }
    if let Some(d) = flags.get("docker_config") {
        let text = resolve_file_value(d, &mut errs);
        if let Err(e) = serde_json::from_str::<Map<String, Value>>(&text) {
            errs.push(format!("--docker_config is not a JSON object: {e}"));
        }
    }
    let (ip, port, hostname) = check_endpoint(&flags, 5051, &mut errs);
    match (master, work_dir) {
        (Some(master), Some(work_dir)) if errs.is_empty() => Ok(AgentConfig {
            flags,
            master,
            ip,
            port,
            hostname,
            work_dir,
            attributes,
            resources,
            containerizers,
        }),
        _ => Err(errs),
    }
}

fn check_common(flags: &Flags, known: &[&str], errs: &mut Vec<String>) {
    for (k, v) in flags {
        if !known.contains(&k.as_str()) {
            errs.push(format!("Failed to load unknown flag '{k}'"));
            continue;
        }
        if BOOL_FLAGS.contains(&k.as_str()) && !["true", "false"].contains(&v.as_str()) {
            errs.push(format!("--{k} must be 'true' or 'false', not '{v}'"));
        }
        if DURATION_FLAGS.contains(&k.as_str()) && parse_duration(v).is_none() {
            errs.push(format!(
                "--{k}: '{v}' is not a duration (e.g. 15secs, 2mins, 500ms)"
            ));
        }
        if k == "logging_level" && !["INFO", "WARNING", "ERROR"].contains(&v.as_str()) {
            errs.push(format!(
                "--logging_level must be INFO, WARNING or ERROR, not '{v}'"
            ));
        }
        if k == "log_dir" && !v.starts_with('/') {
            errs.push(format!("--log_dir must be an absolute path, not '{v}'"));
        }
    }
}

fn check_abs_path(flag: &str, v: &str, errs: &mut Vec<String>) -> Option<PathBuf> {
    if v.starts_with('/') {
        Some(PathBuf::from(v))
    } else {
        errs.push(format!("--{flag} must be an absolute path, not '{v}'"));
        None
    }
}

fn check_endpoint(
    flags: &Flags,
    default_port: u16,
    errs: &mut Vec<String>,
) -> (Ipv4Addr, u16, String) {
    let port = match flags.get("port") {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).unwrap_or_else(|| {
            errs.push(format!(
                "--port must be a number between 1 and 65535, not '{p}'"
            ));
            default_port
        }),
    };
    if let Some(p) = flags.get("advertise_port") {
        if p.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
            errs.push(format!(
                "--advertise_port must be a number between 1 and 65535, not '{p}'"
            ));
        }
    }
    let ip = match flags.get("ip") {
        None => Ipv4Addr::UNSPECIFIED,
        Some(i) => i.parse().unwrap_or_else(|_| {
            errs.push(format!("--ip must be an IPv4 address, not '{i}'"));
            Ipv4Addr::UNSPECIFIED
        }),
    };
    if let Some(i) = flags.get("advertise_ip") {
        if i.parse::<Ipv4Addr>().is_err() {
            errs.push(format!("--advertise_ip must be an IPv4 address, not '{i}'"));
        }
    }
    let hostname = match flags.get("hostname") {
        Some(h) => {
            if !valid_hostname(h) {
                errs.push(format!("--hostname '{h}' is not a valid host name"));
            }
            h.clone()
        }
        None => system_hostname(),
    };
    (ip, port, hostname)
}

pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Mesos flag values starting with `file://` are read from that file.
fn resolve_file_value(v: &str, errs: &mut Vec<String>) -> String {
    match v.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| {
                errs.push(format!("cannot read {path}: {e}"));
                String::new()
            }),
        None => v.to_string(),
    }
}

/// Mesos durations: a number and one of ns, us, ms, secs, mins, hrs, days, weeks.
pub fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let i = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let n: f64 = v[..i].parse().ok()?;
    let secs = match &v[i..] {
        "ns" => n / 1e9,
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "secs" => n,
        "mins" => n * 60.0,
        "hrs" => n * 3600.0,
        "days" => n * 86400.0,
        "weeks" => n * 604800.0,
        _ => return None,
    };
    Some(std::time::Duration::from_secs_f64(secs))
}

/// Master `--credentials`: a path (optionally `file://`) to JSON
/// `{"credentials": [{"principal": .., "secret": ..}]}` or lines of `principal secret`.
/// Returns the principals.
pub fn load_credentials(v: &str) -> Result<Vec<(String, String)>, String> {
    let path = v.strip_prefix("file://").unwrap_or(v);
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_credentials(&text)
}

pub fn parse_credentials(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let list = v
            .get("credentials")
            .and_then(Value::as_array)
            .ok_or("JSON credentials need a 'credentials' array")?;
        let mut out = Vec::new();
        for c in list {
            out.push(principal_secret(c)?);
        }
        if out.is_empty() {
            return Err("no credentials".into());
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(s), None) => out.push((p.to_string(), s.to_string())),
            _ => return Err(format!("line {}: expected 'principal secret'", n + 1)),
        }
    }
    if out.is_empty() {
        return Err("no credentials".into());
    }
    Ok(out)
}

/// Agent `--credential`: JSON `{"principal": .., "secret": ..}` or one line `principal secret`.
pub fn load_credential(v: &str) -> Result<(String, String), String> {
    let path = v.strip_prefix("file://").unwrap_or(v);
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
        return principal_secret(&v);
    }
    let list = parse_credentials(&text)?;
    match list.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err("an agent credential holds exactly one 'principal secret'".into()),
    }
}

fn principal_secret(v: &Value) -> Result<(String, String), String> {
    let p = v
        .get("principal")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let s = v
        .get("secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (p, s) {
        (Some(p), Some(s)) => Ok((p.to_string(), s.to_string())),
        _ => Err("a credential needs a non-empty 'principal' and 'secret'".into()),
    }
}

/// `k:v;k2:v2` → `{"k": "v", "k2": 2}` (scalars become numbers, ranges stay text), as
/// /master/state shows them. Text values: letters, digits, `-_/.`.
pub fn parse_attributes(s: &str) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once(':')
            .ok_or_else(|| format!("'{item}' is not 'name:value'"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(format!("invalid attribute name '{k}'"));
        }
        if v.is_empty() {
            return Err(format!("attribute '{k}' has no value"));
        }
        let value = if let Ok(n) = v.parse::<f64>() {
            json!(n)
        } else if v.starts_with('[') {
            parse_ranges(v)?;
            json!(v)
        } else if v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            json!(v)
        } else {
            return Err(format!(
                "attribute '{k}' value '{v}': text may only hold letters, digits, '-', '_', '/' and '.'"
            ));
        };
        if out.insert(k.to_string(), value).is_some() {
            return Err(format!("attribute '{k}' is given twice"));
        }
    }
    Ok(out)
}

/// `cpus:4;mem:2048;disk(role):100;ports:[31000-32000]` → `{"cpus": 4.0, ..., "ports":
/// "[31000-32000]"}`. Scalars, ranges (`[a-b,c-d]`) and sets (`{a,b}`); known resources must
/// have their type (cpus/mem/disk/gpus scalar, ports ranges). The role is dropped.
pub fn parse_resources(s: &str) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for item in s.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once(':')
            .ok_or_else(|| format!("'{item}' is not 'name:value'"))?;
        let (mut name, v) = (k.trim(), v.trim());
        if let Some(i) = name.find('(') {
            let role = name[i..]
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("'{name}': role must be written name(role)"))?;
            if role.is_empty()
                || !role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./*".contains(c))
            {
                return Err(format!("'{name}': invalid role"));
            }
            name = &name[..i];
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(format!("invalid resource name '{name}'"));
        }
        let value = if v.starts_with('[') {
            parse_ranges(v)?;
            json!(v)
        } else if v.starts_with('{') {
            let inner = v
                .strip_prefix('{')
                .and_then(|x| x.strip_suffix('}'))
                .ok_or_else(|| format!("'{v}' is not a set {{a,b}}"))?;
            if inner.split(',').any(|e| e.trim().is_empty()) {
                return Err(format!("'{v}' has an empty set element"));
            }
            json!(v)
        } else {
            match v.parse::<f64>() {
                Ok(n) if n >= 0.0 && n.is_finite() => json!(n),
                _ => {
                    return Err(format!(
                        "resource '{name}': '{v}' is not a scalar, range or set"
                    ))
                }
            }
        };
        let want = match name {
            "cpus" | "mem" | "disk" | "gpus" => Some("a scalar"),
            "ports" => Some("ranges like [31000-32000]"),
            _ => None,
        };
        let ok = match name {
            "cpus" | "mem" | "disk" | "gpus" => value.is_number(),
            "ports" => v.starts_with('['),
            _ => true,
        };
        if let (false, Some(w)) = (ok, want) {
            return Err(format!("resource '{name}' must be {w}, not '{v}'"));
        }
        if let Some(n) = value.as_f64() {
            let sum = out.get(name).and_then(Value::as_f64).unwrap_or(0.0) + n;
            out.insert(name.to_string(), json!(sum));
        } else {
            out.insert(name.to_string(), value);
        }
    }
    Ok(out)
}

/// `[a-b,c-d]`: bounds are integers with a <= b.
pub fn parse_ranges(v: &str) -> Result<Vec<(u64, u64)>, String> {
    let inner = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("'{v}' is not a range list [a-b,...]"))?;
    let mut out = Vec::new();
    for r in inner.split(',').map(str::trim) {
        let (a, b) = r
            .split_once('-')
            .ok_or_else(|| format!("'{r}' in '{v}' is not a range a-b"))?;
        let a: u64 = a
            .trim()
            .parse()
            .map_err(|_| format!("'{r}' in '{v}' is not a range of integers"))?;
        let b: u64 = b
            .trim()
            .parse()
            .map_err(|_| format!("'{r}' in '{v}' is not a range of integers"))?;
        if a > b {
            return Err(format!("range '{r}' in '{v}' has its bounds reversed"));
        }
        out.push((a, b));
    }
    Ok(out)
}

/// What Mesos detects when `--resources` does not say: cpus and mem from the machine (mem minus
/// 1 GiB, as Mesos leaves for the system), a fixed disk, the default ports.
fn default_resources(r: &mut Map<String, Value>) {
    if !r.contains_key("cpus") {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        r.insert("cpus".into(), json!(n as f64));
    }
    if !r.contains_key("mem") {
        let total_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(2048.0);
        r.insert("mem".into(), json!((total_mb - 1024.0).max(512.0).floor()));
    }
    if !r.contains_key("disk") {
        r.insert("disk".into(), json!(10240.0));
    }
    if !r.contains_key("ports") {
        r.insert("ports".into(), json!("[31000-32000]"));
    }
}

/// Flags as /master/state and /state show them (strings), with zk passwords redacted.
pub fn flags_json(flags: &Flags) -> Value {
    let mut m = Map::new();
    for (k, v) in flags {
        let v = if k == "zk" || k == "master" {
            redact(v)
        } else {
            v.clone()
        };
        m.insert(k.clone(), Value::String(v));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> Flags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ZK3: &str = "zk://mesos:pw@m1:2181,m2:2181,m3:2181/mesos";

    fn good_master() -> Flags {
        flags(&[
            ("quorum", "2"),
            ("work_dir", "/var/lib/mesos"),
            ("cluster", "lab-1"),
            ("hostname", "master1"),
            ("ip", "10.0.0.11"),
            ("port", "5050"),
            ("offer_timeout", "2mins"),
        ])
    }

    #[test]
    fn reads_flag_files_and_boolean_presence() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("quorum"), "2\n").unwrap();
        std::fs::write(d.path().join("?hostname_lookup"), "").unwrap();
        let f = read_flags_dir(d.path()).unwrap();
        assert_eq!(f["quorum"], "2");
        assert_eq!(f["hostname_lookup"], "true");
    }

    #[test]
    fn good_master_flags_pass() {
        let c = master_config(good_master(), Some(ZK3.into())).unwrap();
        assert_eq!(c.quorum, 2);
        assert_eq!(c.port, 5050);
        assert_eq!(c.zk.servers.len(), 3);
        assert_eq!(c.cluster.as_deref(), Some("lab-1"));
        let j = flags_json(&c.flags);
        assert_eq!(j["zk"], "zk://mesos:********@m1:2181,m2:2181,m3:2181/mesos");
    }

    fn master_errors(f: Flags, zk: Option<&str>) -> String {
        master_config(f, zk.map(String::from))
            .unwrap_err()
            .join("\n")
    }

    #[test]
    fn master_rejections() {
        let mut f = good_master();
        f.insert("bogus".into(), "1".into());
        assert!(master_errors(f, Some(ZK3)).contains("unknown flag 'bogus'"));

        let mut f = good_master();
        f.remove("quorum");
        assert!(master_errors(f, Some(ZK3)).contains("--quorum"));
        for q in ["0", "-1", "two", "4", "1"] {
            let mut f = good_master();
            f.insert("quorum".into(), q.into());
            assert!(master_errors(f, Some(ZK3)).contains("quorum"), "quorum {q}");
        }
        let mut f = good_master();
        f.insert("quorum".into(), "3".into());
        assert!(master_config(f, Some(ZK3.into())).is_ok());

        let mut f = good_master();
        f.insert("port".into(), "50x".into());
        assert!(master_errors(f, Some(ZK3)).contains("--port"));
        let mut f = good_master();
        f.remove("work_dir");
        assert!(master_errors(f, Some(ZK3)).contains("--work_dir"));
        assert!(master_errors(good_master(), Some("zk://m1:2181")).contains("--zk"));
        assert!(master_errors(good_master(), None).contains("--zk"));
        let mut f = good_master();
        f.insert("cluster".into(), "my cluster!".into());
        assert!(master_errors(f, Some(ZK3)).contains("--cluster"));
        let mut f = good_master();
        f.insert("offer_timeout".into(), "2 minutes".into());
        assert!(master_errors(f, Some(ZK3)).contains("duration"));
        let mut f = good_master();
        f.insert("authenticate_agents".into(), "yes".into());
        let e = master_errors(f, Some(ZK3));
        assert!(e.contains("'true' or 'false'"), "{e}");
        let mut f = good_master();
        f.insert("authenticate_agents".into(), "true".into());
        assert!(master_errors(f, Some(ZK3)).contains("--credentials"));
        let mut f = good_master();
        f.insert("ip".into(), "10.0.0".into());
        assert!(master_errors(f, Some(ZK3)).contains("--ip"));
    }

    #[test]
    fn master_reports_every_error() {
        let f = flags(&[("quorum", "x"), ("port", "y"), ("nope", "1")]);
        let e = master_config(f, Some(ZK3.into())).unwrap_err();
        assert!(e.len() >= 4, "{e:?}");
    }

    #[test]
    fn credentials_files() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("c.json");
        std::fs::write(
            &j,
            r#"{"credentials":[{"principal":"agent","secret":"s"}]}"#,
        )
        .unwrap();
        assert_eq!(load_credentials(j.to_str().unwrap()).unwrap()[0].0, "agent");
        let t = d.path().join("c.txt");
        std::fs::write(&t, "agent s1\nfw s2\n").unwrap();
        assert_eq!(
            load_credentials(&format!("file://{}", t.display()))
                .unwrap()
                .len(),
            2
        );
        std::fs::write(&t, "agent\n").unwrap();
        assert!(load_credentials(t.to_str().unwrap()).is_err());
        let a = d.path().join("a.json");
        std::fs::write(&a, r#"{"principal":"agent","secret":"s"}"#).unwrap();
        assert_eq!(load_credential(a.to_str().unwrap()).unwrap().1, "s");
        std::fs::write(&a, r#"{"principal":"agent"}"#).unwrap();
        assert!(load_credential(a.to_str().unwrap()).is_err());

        let mut f = good_master();
        f.insert("authenticate_agents".into(), "true".into());
        f.insert("credentials".into(), j.display().to_string());
        assert!(master_config(f, Some(ZK3.into())).is_ok());
    }

    fn good_agent(cni: &Path) -> Flags {
        flags(&[
            ("master", ZK3),
            ("work_dir", "/var/lib/mesos"),
            ("containerizers", "mesos"),
            (
                "isolation",
                "filesystem/linux,docker/runtime,network/cni,cgroups/cpu,cgroups/mem",
            ),
            ("image_providers", "docker"),
            ("network_cni_config_dir", cni.to_str().unwrap()),
            ("network_cni_plugins_dir", cni.to_str().unwrap()),
            ("attributes", "rack:r1;zone:a;tier:2"),
            ("resources", "ports:[31000-32000];disk:4096;cpus(*):2"),
            ("hostname", "agent1"),
        ])
    }

    #[test]
    fn good_agent_flags_pass() {
        let d = tempfile::tempdir().unwrap();
        let c = agent_config(good_agent(d.path()), None).unwrap();
        assert_eq!(c.port, 5051);
        assert_eq!(c.attributes["rack"], "r1");
        assert_eq!(c.attributes["tier"], 2.0);
        assert_eq!(c.resources["ports"], "[31000-32000]");
        assert_eq!(c.resources["disk"], 4096.0);
        assert_eq!(c.resources["cpus"], 2.0);
        assert!(c.resources.contains_key("mem"));
    }

    #[test]
    fn agent_master_from_zk_file() {
        let d = tempfile::tempdir().unwrap();
        let mut f = good_agent(d.path());
        f.remove("master");
        let c = agent_config(f, Some(ZK3.into())).unwrap();
        assert_eq!(c.master.path, "/mesos");
    }

    #[test]
    fn agent_rejections() {
        let d = tempfile::tempdir().unwrap();
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("containerizers", Some("mesos,rkt"), "unknown containerizer"),
            ("containerizers", Some("mesos,mesos"), "twice"),
            ("containerizers", Some("mesos,docker"), "docker socket"),
            (
                "isolation",
                Some("posix/cpu,cgroups/magic"),
                "unknown isolator",
            ),
            ("isolation", Some("docker/runtime"), "filesystem/linux"),
            ("image_providers", Some("oci"), "unknown provider"),
            ("resources", Some("ports:31000-32000"), "ports"),
            ("resources", Some("ports:[32000-31000]"), "reversed"),
            ("resources", Some("cpus:lots"), "cpus"),
            ("resources", Some("mem"), "name:value"),
            ("attributes", Some("rack=r1"), "name:value"),
            ("attributes", Some("rack:r 1"), "text"),
            ("attributes", Some("rack:a;rack:b"), "twice"),
            (
                "network_cni_config_dir",
                Some("/nonexistent/cni"),
                "not a directory",
            ),
            (
                "network_cni_plugins_dir",
                None,
                "needs --network_cni_plugins_dir",
            ),
            ("work_dir", None, "--work_dir"),
            ("work_dir", Some("var/lib"), "absolute"),
            ("master", Some("zk://h:2181"), "--master"),
            ("port", Some("70000"), "--port"),
            ("frobnicate", Some("1"), "unknown flag"),
            ("hostname", Some("bad_host"), "--hostname"),
        ];
        for (k, v, want) in cases {
            let mut f = good_agent(d.path());
            match v {
                Some(v) => f.insert(k.to_string(), v.to_string()),
                None => f.remove(*k),
            };
            let e = match agent_config(f, None) {
                Ok(_) => panic!("{k}={v:?} accepted"),
                Err(e) => e.join("\n"),
            };
            assert!(e.contains(want), "{k}={v:?}: {e}");
        }
    }

    #[test]
    fn docker_containerizer_with_socket() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("docker.sock");
        std::fs::write(&sock, "").unwrap();
        let mut f = good_agent(d.path());
        f.insert("containerizers".into(), "docker,mesos".into());
        f.insert("docker_socket".into(), sock.display().to_string());
        f.insert("docker_config".into(), r#"{"auths":{}}"#.into());
        assert!(agent_config(f, None).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15secs").unwrap().as_secs(), 15);
        assert_eq!(parse_duration("2mins").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("15").is_none());
        assert!(parse_duration("15s").is_none());
    }

    #[test]
    fn resources_merge_scalars_across_roles() {
        let r = parse_resources("cpus:1;cpus(web):1.5;ports:[1-2,5-9];x:{a,b}").unwrap();
        assert_eq!(r["cpus"], 2.5);
        assert_eq!(r["x"], "{a,b}");
        assert_eq!(parse_ranges("[1-2, 5-9]").unwrap(), vec![(1, 2), (5, 9)]);
    }
}
