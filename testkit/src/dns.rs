//! `mesos-standin dns` (TEST-ONLY stand-in for Mesos-DNS): Mesos-DNS's config file, a minimal DNS
//! wire format (A queries over UDP) and the record set built from the real masters: the leader
//! (the master that serves `/master/state`; the others answer 307 to it), the masters that are
//! up, and the agents in the leader's state:
//! `leader.<domain>`, `master.<domain>` (every master), `<agent host>.agent.<domain>`,
//! `agent.<domain>` and `slave.<domain>` (every active agent).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::election;
use crate::http::{self, Request, Response};
use crate::zkurl::ZkUrl;

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub zk: Option<ZkUrl>,
    pub masters: Vec<String>,
    pub domain: String,
    pub port: u16,
    pub listener: Ipv4Addr,
    pub resolvers: Vec<Ipv4Addr>,
    pub refresh: Duration,
    pub ttl: u32,
    pub httpon: bool,
    pub dnson: bool,
    pub httpport: u16,
    /// `mesosHTTPSOn`: read the masters' state over HTTPS, verifying them against `caCertFile`
    /// and presenting `certFile`/`keyFile` when set.
    pub mesos_https: bool,
    pub ca_cert_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// Keys Mesos-DNS does not know (it ignores them; we log them).
    pub unknown_keys: Vec<String>,
}

const KNOWN_KEYS: &[&str] = &[
    "zk",
    "masters",
    "refreshSeconds",
    "ttl",
    "domain",
    "port",
    "resolvers",
    "timeout",
    "listener",
    "SOAMname",
    "SOARname",
    "SOARefresh",
    "SOARetry",
    "SOAExpire",
    "SOAMinttl",
    "dnson",
    "httpon",
    "httpport",
    "externalon",
    "recurseon",
    "zkDetectionTimeout",
    "IPSources",
    "EnforceRFC952",
    "enforceRFC952",
    "email",
    "mname",
    "stateTimeoutSeconds",
    "SetTruncateBit",
    "ReverseZone",
    "mesosHTTPSOn",
    "caCertFile",
    "certFile",
    "keyFile",
];

pub fn load_config(path: &Path) -> Result<DnsConfig, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    parse_config(&text)
}

pub fn parse_config(text: &str) -> Result<DnsConfig, Vec<String>> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| vec![format!("config is not valid JSON: {e}")])?;
    let obj = v
        .as_object()
        .ok_or_else(|| vec!["config must be a JSON object".to_string()])?;
    let mut errs = Vec::new();
    let unknown_keys = obj
        .keys()
        .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    let str_of = |k: &str, errs: &mut Vec<String>| -> Option<String> {
        match obj.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                errs.push(format!("'{k}' must be a string, not {other}"));
                None
            }
        }
    };
    let int_of = |k: &str, default: i64, errs: &mut Vec<String>| -> i64 {
        match obj.get(k) {
            None => default,
            Some(v) => v.as_i64().unwrap_or_else(|| {
                errs.push(format!("'{k}' must be an integer, not {v}"));
                default
            }),
        }
    };
    let bool_of = |k: &str, default: bool, errs: &mut Vec<String>| -> bool {
        match obj.get(k) {
            None => default,
            Some(v) => v.as_bool().unwrap_or_else(|| {
                errs.push(format!("'{k}' must be true or false, not {v}"));
                default
            }),
        }
    };
    let zk = str_of("zk", &mut errs)
        .filter(|s| !s.is_empty())
        .and_then(|s| {
            ZkUrl::parse(&s)
                .map_err(|e| errs.push(format!("'zk': {e}")))
                .ok()
        });
    let masters: Vec<String> = match obj.get("masters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|m| match m.as_str() {
                Some(s)
                    if s.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
                {
                    Some(s.to_string())
                }
                _ => {
                    errs.push(format!("'masters' entry {m} is not \"host:port\""));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errs.push(format!("'masters' must be a list, not {other}"));
            Vec::new()
        }
    };
    if zk.is_none() && masters.is_empty() {
        errs.push("specify mesos masters or zookeeper in config.json ('zk' or 'masters')".into());
    }
    let domain = str_of("domain", &mut errs)
        .unwrap_or_else(|| "mesos".into())
        .to_ascii_lowercase();
    if !valid_hostname(&domain) {
        errs.push(format!("'domain' '{domain}' is not a valid domain name"));
    }
    let port_of = |k: &str, default: i64, errs: &mut Vec<String>| -> u16 {
        let p = int_of(k, default, errs);
        u16::try_from(p).ok().filter(|p| *p > 0).unwrap_or_else(|| {
            errs.push(format!("'{k}' must be a port between 1 and 65535, not {p}"));
            1
        })
    };
    let port = port_of("port", 53, &mut errs);
    let httpport = port_of("httpport", 8123, &mut errs);
    let listener = str_of("listener", &mut errs)
        .unwrap_or_else(|| "0.0.0.0".into())
        .parse()
        .unwrap_or_else(|_| {
            errs.push("'listener' must be an IPv4 address".into());
            Ipv4Addr::UNSPECIFIED
        });
    let resolvers = match obj.get("resolvers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(
                |r| match r.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                    Some(ip) => Some(ip),
                    None => {
                        errs.push(format!("'resolvers' entry {r} is not an IPv4 address"));
                        None
                    }
                },
            )
            .collect(),
        Some(other) => {
            errs.push(format!("'resolvers' must be a list, not {other}"));
            Vec::new()
        }
    };
    let refresh = int_of("refreshSeconds", 60, &mut errs);
    if refresh <= 0 {
        errs.push(format!("'refreshSeconds' must be positive, not {refresh}"));
    }
    let ttl = int_of("ttl", 60, &mut errs);
    if !(0..=i64::from(i32::MAX)).contains(&ttl) {
        errs.push(format!("'ttl' out of range: {ttl}"));
    }
    let httpon = bool_of("httpon", true, &mut errs);
    let dnson = bool_of("dnson", true, &mut errs);
    let mesos_https = bool_of("mesosHTTPSOn", false, &mut errs);
    let file_of = |k: &str, errs: &mut Vec<String>| {
        let p = str_of(k, errs)
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from);
        if let Some(p) = &p {
            if !p.is_file() {
                errs.push(format!("'{k}': {}: no such file", p.display()));
            }
        }
        p
    };
    let ca_cert_file = file_of("caCertFile", &mut errs);
    let cert_file = file_of("certFile", &mut errs);
    let key_file = file_of("keyFile", &mut errs);
    if mesos_https && ca_cert_file.is_none() {
        // Mesos-DNS would fall back to the system's CAs; the stand-in has none to trust.
        errs.push("'mesosHTTPSOn' needs 'caCertFile' (the cluster CA)".into());
    }
    if cert_file.is_some() != key_file.is_some() {
        errs.push("'certFile' and 'keyFile' go together".into());
    }
    if errs.is_empty() {
        Ok(DnsConfig {
            zk,
            masters,
            domain,
            port,
            listener,
            resolvers,
            refresh: Duration::from_secs(refresh.max(1) as u64),
            ttl: ttl.clamp(0, i64::from(i32::MAX)) as u32,
            httpon,
            dnson,
            httpport,
            mesos_https,
            ca_cert_file,
            cert_file,
            key_file,
            unknown_keys,
        })
    } else {
        Err(errs)
    }
}

/// The client TLS of a Mesos-DNS reading the masters over HTTPS (`mesosHTTPSOn`).
pub fn client_tls(cfg: &DnsConfig) -> Result<Option<crate::tls::Tls>, String> {
    let (true, Some(ca)) = (cfg.mesos_https, &cfg.ca_cert_file) else {
        return Ok(None);
    };
    let identity = cfg.cert_file.as_deref().zip(cfg.key_file.as_deref());
    Ok(Some(crate::tls::Tls {
        client: std::sync::Arc::new(crate::tls::client_config(ca, identity)?),
    }))
}

/// Name (lowercase, no trailing dot) → addresses.
pub type Records = BTreeMap<String, Vec<Ipv4Addr>>;

/// A DNS name: labels of letters, digits and `-` (not at either end), at most 253 characters.
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

/// The leader's IPv4 address from a leading master's `/master/state`: `leader_info`'s address
/// or pid (a real 1.11 `leader_info` has only `id`, `pid`, `port` and `hostname`), else the
/// master's own `pid` (only the leader serves the state).
pub fn leader_ip(state: &Value) -> Option<Ipv4Addr> {
    let from_info = state.get("leader_info").and_then(election::info_addr);
    let from_pid = || state["pid"].as_str().and_then(election::pid_addr);
    from_info
        .or_else(from_pid)
        .and_then(|(ip, _)| ip.parse().ok())
}

/// Records from the leader's address, the addresses of the masters that are up and the
/// leader's state (`slaves[]`: `hostname`, `pid` = `slave(1)@IP:PORT`, `active`).
pub fn build_records(
    domain: &str,
    leader: Option<Ipv4Addr>,
    masters: &[Ipv4Addr],
    state: Option<&Value>,
) -> Records {
    let mut r = Records::new();
    if let Some(ip) = leader {
        r.insert(format!("leader.{domain}"), vec![ip]);
    }
    let mut all: Vec<Ipv4Addr> = masters.iter().copied().chain(leader).collect();
    all.sort();
    all.dedup();
    if !all.is_empty() {
        r.insert(format!("master.{domain}"), all);
    }
    let mut agents = Vec::new();
    for s in state
        .and_then(|s| s["slaves"].as_array())
        .into_iter()
        .flatten()
    {
        if s["active"] == json!(false) {
            continue;
        }
        let ip = s["pid"]
            .as_str()
            .and_then(election::pid_addr)
            .and_then(|(ip, _)| ip.parse::<Ipv4Addr>().ok());
        let (Some(host), Some(ip)) = (s["hostname"].as_str(), ip) else {
            continue;
        };
        let name = format!("{}.agent.{domain}", host.to_ascii_lowercase());
        let list = r.entry(name).or_default();
        if !list.contains(&ip) {
            list.push(ip);
        }
        agents.push(ip);
    }
    agents.sort();
    agents.dedup();
    if !agents.is_empty() {
        r.insert(format!("agent.{domain}"), agents.clone());
        r.insert(format!("slave.{domain}"), agents);
    }
    r
}

// ---- wire format ----

pub const TYPE_A: u16 = 1;
pub const TYPE_ANY: u16 = 255;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The raw question section (name, type, class), echoed in the answer.
    pub question: Vec<u8>,
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
pub fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos).ok_or("name runs past the message")? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xC0 == 0xC0 {
            let lo = *msg.get(pos + 1).ok_or("truncated pointer")? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3F) << 8) | lo;
            jumps += 1;
            if jumps > 16 {
                return Err("compression loop".into());
            }
            continue;
        }
        if len > 63 {
            return Err("label too long".into());
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or("label runs past the message")?;
        labels.push(String::from_utf8_lossy(label).to_string());
        pos += 1 + len;
    }
    Ok((labels.join("."), end.unwrap_or(pos)))
}

pub fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(l.len().min(63) as u8);
        out.extend_from_slice(&l.as_bytes()[..l.len().min(63)]);
    }
    out.push(0);
}

pub fn parse_query(msg: &[u8]) -> Result<Query, (Option<u16>, String)> {
    if msg.len() < 12 {
        return Err((None, "shorter than a header".into()));
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if flags & 0x8000 != 0 {
        return Err((None, "not a query".into()));
    }
    if qd != 1 {
        return Err((Some(id), format!("{qd} questions")));
    }
    let (name, pos) = read_name(msg, 12).map_err(|e| (Some(id), e))?;
    let tail = msg
        .get(pos..pos + 4)
        .ok_or((Some(id), "question truncated".to_string()))?;
    Ok(Query {
        id,
        flags,
        name,
        qtype: u16::from_be_bytes([tail[0], tail[1]]),
        qclass: u16::from_be_bytes([tail[2], tail[3]]),
        question: msg[12..pos + 4].to_vec(),
    })
}

/// A query with one question (for tests and probes).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(name, &mut m);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

fn header(id: u16, qflags: u16, rcode: u8, aa: bool, qd: u16, an: u16) -> Vec<u8> {
    let opcode = qflags & 0x7800;
    let rd = qflags & 0x0100;
    let flags = 0x8000 | opcode | if aa { 0x0400 } else { 0 } | rd | u16::from(rcode & 0x0F);
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    for n in [qd, an, 0, 0] {
        h.extend_from_slice(&n.to_be_bytes());
    }
    h
}

/// Answers one query message; `None` when it should be dropped (not a query at all).
pub fn answer(msg: &[u8], domain: &str, records: &Records, ttl: u32) -> Option<Vec<u8>> {
    let q = match parse_query(msg) {
        Ok(q) => q,
        Err((Some(id), _)) => return Some(header(id, 0, RCODE_FORMERR, false, 0, 0)),
        Err((None, _)) => return None,
    };
    let name = q.name.to_ascii_lowercase();
    let in_domain = name == domain || name.ends_with(&format!(".{domain}"));
    let opcode = (q.flags >> 11) & 0xF;
    if !in_domain || q.qclass != 1 || opcode != 0 {
        let mut out = header(q.id, q.flags, RCODE_REFUSED, false, 1, 0);
        out.extend_from_slice(&q.question);
        return Some(out);
    }
    let ips = records.get(&name);
    let exists =
        ips.is_some() || records.keys().any(|k| k.ends_with(&format!(".{name}"))) || name == domain;
    let answers: Vec<Ipv4Addr> = match (q.qtype, ips) {
        (TYPE_A | TYPE_ANY, Some(ips)) => ips.iter().copied().take(30).collect(),
        _ => Vec::new(),
    };
    let rcode = if exists { 0 } else { RCODE_NXDOMAIN };
    let mut out = header(q.id, q.flags, rcode, true, 1, answers.len() as u16);
    out.extend_from_slice(&q.question);
    for ip in answers {
        out.extend_from_slice(&[0xC0, 12]); // pointer to the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

/// Decodes an answer: (id, rcode, A addresses).
pub fn parse_answer(msg: &[u8]) -> Result<(u16, u8, Vec<Ipv4Addr>), String> {
    if msg.len() < 12 {
        return Err("short".into());
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let rcode = msg[3] & 0x0F;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..an {
        pos = read_name(msg, pos)?.1;
        let f = msg.get(pos..pos + 10).ok_or("truncated record")?;
        let (t, len) = (
            u16::from_be_bytes([f[0], f[1]]),
            u16::from_be_bytes([f[8], f[9]]) as usize,
        );
        let data = msg.get(pos + 10..pos + 10 + len).ok_or("truncated rdata")?;
        if t == TYPE_A && len == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        pos += 10 + len;
    }
    Ok((id, rcode, ips))
}

// ---- the server ----

type SharedRecords = Arc<RwLock<Records>>;

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The IPv4 address of `host` (an address, or a name for the system resolver).
async fn ipv4_of(host: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    tokio::net::lookup_host((host, 0))
        .await
        .ok()?
        .find_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        })
}

/// One refresh: find the masters (ZooKeeper's `json.info_*` znodes, else `masters`), ask each
/// for `/master/state`: the leader answers it, the others answer 307 with
/// `Location: //<leader host>:<port>/master/state`, followed when no listed master leads.
pub async fn refresh(cfg: &DnsConfig) -> Result<Records, String> {
    let mut addrs: Vec<String> = Vec::new();
    if let Some(zk) = &cfg.zk {
        let client = election::connect(zk, Duration::from_secs(10)).await?;
        let c = election::contenders(&client, zk).await?;
        addrs = c
            .list
            .iter()
            .filter_map(|(_, info)| election::info_addr(info))
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
    }
    if addrs.is_empty() {
        addrs = cfg.masters.clone();
    }
    let mut up: Vec<Ipv4Addr> = Vec::new();
    let mut state: Option<Value> = None;
    let mut redirect: Option<(String, String)> = None;
    for a in &addrs {
        let answered = match http::request(a, "GET", "/master/state", None, HTTP_TIMEOUT).await {
            Ok((200, _, body)) => {
                if state.is_none() {
                    state = serde_json::from_slice(&body).ok();
                }
                true
            }
            Ok((307, headers, _)) => {
                if let Some(l) = http::header(&headers, "Location") {
                    redirect.get_or_insert((a.clone(), l.to_string()));
                }
                true
            }
            // No leader yet (503) or another answer: up if it is healthy.
            Ok(_) => matches!(
                http::request(a, "GET", "/health", None, HTTP_TIMEOUT).await,
                Ok((200, _, _))
            ),
            Err(e) => {
                tracing::debug!("master {a}: {e}");
                false
            }
        };
        if answered {
            if let Some(ip) = match http::split_host_port(a) {
                Ok((h, _)) => ipv4_of(&h).await,
                Err(_) => None,
            } {
                up.push(ip);
            }
        }
    }
    if state.is_none() {
        if let Some((from, loc)) = redirect {
            state = follow(&from, &loc).await;
        }
    }
    let leader = state.as_ref().and_then(leader_ip);
    Ok(build_records(&cfg.domain, leader, &up, state.as_ref()))
}

/// GETs the leader's state where a non-leading master's `Location` points.
async fn follow(from: &str, location: &str) -> Option<Value> {
    let (fh, fp) = http::split_host_port(from).ok()?;
    let base = http::Endpoint::installed(from).ok()?;
    let (host, port, path) = match http::resolve_location(location, (&fh, fp), base.tls.is_some()) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("master {from}: {e}");
            return None;
        }
    };
    let ep = http::Endpoint { host, port, ..base }
        .resolved()
        .await
        .ok()?;
    let path = if path == "/" {
        "/master/state".to_string()
    } else {
        path
    };
    match http::request_to(&ep, "GET", &path, &[], None, HTTP_TIMEOUT).await {
        Ok((200, _, body)) => serde_json::from_slice(&body).ok(),
        Ok((status, _, _)) => {
            tracing::warn!("leader {}{path}: HTTP {status}", ep.authority());
            None
        }
        Err(e) => {
            tracing::warn!("leader: {e}");
            None
        }
    }
}

pub async fn run(cfg: DnsConfig) -> Result<(), String> {
    for k in &cfg.unknown_keys {
        tracing::warn!("config key '{k}' is not a Mesos-DNS setting; ignored");
    }
    let records: SharedRecords = Arc::new(RwLock::new(Records::new()));
    if cfg.httpon {
        let listener = http::bind(cfg.listener, cfg.httpport).await?;
        let r = records.clone();
        let domain = cfg.domain.clone();
        tokio::spawn(http::serve(listener, move |req| {
            http_handle(r.clone(), domain.clone(), req)
        }));
    }
    if cfg.dnson {
        let sock = tokio::net::UdpSocket::bind((cfg.listener, cfg.port))
            .await
            .map_err(|e| format!("cannot listen on udp {}:{}: {e}", cfg.listener, cfg.port))?;
        let r = records.clone();
        let (domain, ttl) = (cfg.domain.clone(), cfg.ttl);
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = match sock.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("udp recv: {e}");
                        continue;
                    }
                };
                let reply = {
                    let recs = r.read().unwrap_or_else(|p| p.into_inner());
                    answer(&buf[..n], &domain, &recs, ttl)
                };
                if let Some(reply) = reply {
                    let _ = sock.send_to(&reply, from).await;
                }
            }
        });
    }
    tracing::info!(
        domain = cfg.domain,
        port = cfg.port,
        "mesos-dns stand-in up"
    );
    loop {
        match refresh(&cfg).await {
            Ok(new) => {
                let mut cur = records.write().unwrap_or_else(|p| p.into_inner());
                if *cur != new {
                    tracing::info!(records = ?new, "records updated");
                    *cur = new;
                }
            }
            Err(e) => tracing::warn!("refresh failed (keeping the last records): {e}"),
        }
        // Refresh at least every 5 s so a leader change shows quickly in the lab.
        tokio::time::sleep(cfg.refresh.min(Duration::from_secs(5))).await;
    }
}

async fn http_handle(records: SharedRecords, domain: String, req: Request) -> Response {
    let recs = records.read().unwrap_or_else(|p| p.into_inner()).clone();
    match req.path.as_str() {
        "/v1/version" => Response::json(
            200,
            &json!({"Service": "Mesos-DNS (stand-in)", "URL": "testkit/README.md", "Version": crate::VERSION}),
        ),
        p if p.starts_with("/v1/hosts/") => {
            let host = p["/v1/hosts/".len()..]
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let list: Vec<Value> = recs
                .get(&host)
                .into_iter()
                .flatten()
                .map(|ip| json!({"host": format!("{host}."), "ip": ip.to_string()}))
                .collect();
            if list.is_empty() {
                Response::json(200, &json!([{"host": "", "ip": ""}]))
            } else {
                Response::json(200, &Value::Array(list))
            }
        }
        "/v1/config" => Response::json(200, &json!({"domain": domain})),
        _ => Response::text(404, "not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn recs() -> Records {
        let state = json!({"pid": "master@10.0.0.12:5050", "slaves": [
            {"hostname": "Agent1", "pid": "slave(1)@10.0.0.21:5051", "active": true},
            {"hostname": "agent2", "pid": "slave(1)@10.0.0.22:5051", "active": true},
            {"hostname": "agent3", "pid": "slave(1)@10.0.0.23:5051", "active": false},
        ]});
        build_records(
            "mesos",
            leader_ip(&state),
            &[ip("10.0.0.12"), ip("10.0.0.11"), ip("10.0.0.13")],
            Some(&state),
        )
    }

    #[test]
    fn records_from_state() {
        let r = recs();
        assert_eq!(r["leader.mesos"], vec![Ipv4Addr::new(10, 0, 0, 12)]);
        assert_eq!(r["master.mesos"].len(), 3);
        assert_eq!(r["master.mesos"][0], Ipv4Addr::new(10, 0, 0, 11));
        assert_eq!(r["agent1.agent.mesos"], vec![Ipv4Addr::new(10, 0, 0, 21)]);
        assert!(!r.contains_key("agent3.agent.mesos"));
        assert_eq!(r["slave.mesos"].len(), 2);
    }

    /// `/master/state` of a real Mesos 1.11.0 master on loopback (trimmed): `leader_info` has
    /// no `address`, the agent's hostname is its reverse-resolved name.
    const REAL_STATE: &str = include_str!("../tests/fixtures/master-state-1.11.0.json");

    #[test]
    fn records_from_a_real_master_state() {
        let state: Value = serde_json::from_str(REAL_STATE).unwrap();
        assert!(state["leader_info"].get("address").is_none());
        assert_eq!(leader_ip(&state), Some(ip("127.0.0.1")));
        let r = build_records("mesos", leader_ip(&state), &[], Some(&state));
        assert_eq!(r["leader.mesos"], vec![ip("127.0.0.1")]);
        // The leader counts as a master even when no listed address answered.
        assert_eq!(r["master.mesos"], vec![ip("127.0.0.1")]);
        assert_eq!(r["localhost.agent.mesos"], vec![ip("127.0.0.1")]);
        assert_eq!(r["agent.mesos"], vec![ip("127.0.0.1")]);
        // A leader_info that names another master wins over the answering master's own pid.
        let mut s = state.clone();
        s["leader_info"]["pid"] = json!("master@10.0.0.9:5050");
        assert_eq!(leader_ip(&s), Some(ip("10.0.0.9")));
        s.as_object_mut().unwrap().remove("leader_info");
        assert_eq!(leader_ip(&s), Some(ip("127.0.0.1")));
    }

    #[test]
    fn answers_a_queries() {
        let r = recs();
        let q = build_query(0xBEEF, "Leader.MESOS", TYPE_A);
        let a = answer(&q, "mesos", &r, 60).unwrap();
        let (id, rcode, ips) = parse_answer(&a).unwrap();
        assert_eq!((id, rcode), (0xBEEF, 0));
        assert_eq!(ips, vec![Ipv4Addr::new(10, 0, 0, 12)]);
        assert_eq!(a[2] & 0x80, 0x80, "QR set");
        assert_eq!(a[2] & 0x04, 0x04, "AA set");
        assert_eq!(a[2] & 0x01, 0x01, "RD echoed");

        let (_, _, ips) = parse_answer(
            &answer(&build_query(1, "master.mesos.", TYPE_A), "mesos", &r, 60).unwrap(),
        )
        .unwrap();
        assert_eq!(ips.len(), 3);
        let (_, _, ips) = parse_answer(
            &answer(
                &build_query(1, "agent2.agent.mesos", TYPE_ANY),
                "mesos",
                &r,
                60,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(ips, vec![Ipv4Addr::new(10, 0, 0, 22)]);
    }

    #[test]
    fn negative_answers() {
        let r = recs();
        let (_, rcode, ips) = parse_answer(
            &answer(&build_query(2, "nothing.mesos", TYPE_A), "mesos", &r, 60).unwrap(),
        )
        .unwrap();
        assert_eq!((rcode, ips.len()), (RCODE_NXDOMAIN, 0));
        // An existing name asked for another type: NOERROR, no data.
        let (_, rcode, ips) =
            parse_answer(&answer(&build_query(3, "leader.mesos", 28), "mesos", &r, 60).unwrap())
                .unwrap();
        assert_eq!((rcode, ips.len()), (0, 0));
        // An intermediate name (agent.mesos exists, so does its parent zone): NOERROR.
        let (_, rcode, _) =
            parse_answer(&answer(&build_query(4, "mesos", TYPE_A), "mesos", &r, 60).unwrap())
                .unwrap();
        assert_eq!(rcode, 0);
        let (_, rcode, _) =
            parse_answer(&answer(&build_query(5, "example.com", TYPE_A), "mesos", &r, 60).unwrap())
                .unwrap();
        assert_eq!(rcode, RCODE_REFUSED);
        // Garbage after a header: FORMERR; shorter than a header: dropped.
        let mut bad = build_query(6, "leader.mesos", TYPE_A);
        bad.truncate(20);
        let (id, rcode, _) = parse_answer(&answer(&bad, "mesos", &r, 60).unwrap()).unwrap();
        assert_eq!((id, rcode), (6, RCODE_FORMERR));
        assert!(answer(&[1, 2, 3], "mesos", &r, 60).is_none());
    }

    #[test]
    fn compressed_names_and_loops() {
        // Header, then "mesos" at 12, then "leader" + pointer to 12 at 19.
        let mut m = vec![0u8; 12];
        m.extend_from_slice(b"\x05mesos\x00");
        m.extend_from_slice(b"\x06leader\xC0\x0C");
        assert_eq!(read_name(&m, 19).unwrap(), ("leader.mesos".to_string(), 28));
        let looped = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xC0, 12];
        assert!(read_name(&looped, 12).is_err());
    }

    #[test]
    fn config_parsing() {
        let c = parse_config(
            r#"{"zk": "zk://10.0.0.11:2181,10.0.0.12:2181/mesos", "masters": ["10.0.0.11:5050"],
                "domain": "Mesos", "port": 8053, "resolvers": ["10.0.0.1"], "refreshSeconds": 30,
                "listener": "0.0.0.0", "httpon": true, "httpport": 8123, "timeout": 5, "IPSources": ["host"]}"#,
        )
        .unwrap();
        assert_eq!(c.domain, "mesos");
        assert_eq!(c.port, 8053);
        assert_eq!(c.zk.unwrap().servers.len(), 2);
        assert!(c.unknown_keys.is_empty());

        for (bad, want) in [
            (r#"{"domain": "mesos"}"#, "masters or zookeeper"),
            (r#"{"masters": ["m1"]}"#, "host:port"),
            (r#"{"zk": "zk://h:2181"}"#, "'zk'"),
            (r#"{"zk": "zk://h:2181/mesos", "port": 70000}"#, "'port'"),
            (r#"{"zk": "zk://h:2181/mesos", "port": "53"}"#, "'port'"),
            (
                r#"{"zk": "zk://h:2181/mesos", "resolvers": ["dns.example"]}"#,
                "resolvers",
            ),
            (
                r#"{"zk": "zk://h:2181/mesos", "refreshSeconds": 0}"#,
                "refreshSeconds",
            ),
            (
                r#"{"zk": "zk://h:2181/mesos", "domain": "bad domain"}"#,
                "'domain'",
            ),
            (
                r#"{"zk": "zk://h:2181/mesos", "httpon": "yes"}"#,
                "'httpon'",
            ),
            ("not json", "JSON"),
        ] {
            let e = parse_config(bad).unwrap_err().join("\n");
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
