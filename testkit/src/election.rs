//! Leader election and detection through ZooKeeper, the way Mesos does it: every master creates
//! an ephemeral sequential znode `<path>/json.info_<seq>` holding its `MasterInfo` as JSON; the
//! lowest sequence number leads. With credentials in the zk URL the session authenticates with
//! the `digest` scheme and znodes get Mesos's ACL (everyone may read, the creator has all).

use std::net::{Ipv4Addr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use serde_json::{json, Value};
use zookeeper_client as zk;

use crate::zkurl::ZkUrl;

pub const PREFIX: &str = "json.info_";

static EVERYONE_READ_CREATOR_ALL: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
];

fn acls(url: &ZkUrl) -> zk::Acls<'static> {
    if url.credentials.is_some() {
        zk::Acls::new(&EVERYONE_READ_CREATOR_ALL)
    } else {
        zk::Acls::anyone_all()
    }
}

/// Opens a session (digest auth when the URL has credentials).
pub async fn connect(url: &ZkUrl, session_timeout: Duration) -> Result<zk::Client, String> {
    let mut c = zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(Duration::from_secs(5));
    if let Some(auth) = url.auth() {
        c = c.with_auth("digest", &auth);
    }
    c.connect(&url.connect_string())
        .await
        .map_err(|e| format!("zookeeper {}: {e}", url.connect_string()))
}

/// The candidate's znode: creates the path (with ACLs) if needed, then the ephemeral sequential
/// child. Returns the child's name (`json.info_0000000003`).
pub async fn contend(client: &zk::Client, url: &ZkUrl, info: &Value) -> Result<String, String> {
    let acls = acls(url);
    if url.path != "/" {
        client
            .mkdir(&url.path, &zk::CreateMode::Persistent.with_acls(acls))
            .await
            .map_err(|e| format!("create {}: {e}", url.path))?;
    }
    let data = info.to_string();
    let (_, seq) = client
        .create(
            &url.child(PREFIX),
            data.as_bytes(),
            &zk::CreateMode::EphemeralSequential.with_acls(acls),
        )
        .await
        .map_err(|e| format!("create {}: {e}", url.child(PREFIX)))?;
    Ok(format!("{PREFIX}{seq}"))
}

/// What ZooKeeper says now: the contenders in sequence order, each with its MasterInfo.
#[derive(Debug, Clone, Default)]
pub struct Contenders {
    /// (znode name, MasterInfo), lowest sequence first; the first one leads.
    pub list: Vec<(String, Value)>,
}

impl Contenders {
    pub fn leader(&self) -> Option<&(String, Value)> {
        self.list.first()
    }
}

/// Sequence number of a `json.info_<seq>` child.
pub fn sequence(name: &str) -> Option<i64> {
    name.strip_prefix(PREFIX)?.parse().ok()
}

/// Orders contender names by sequence, dropping other children (Mesos also keeps `log_replicas`).
pub fn order(children: Vec<String>) -> Vec<String> {
    let mut c: Vec<(i64, String)> = children
        .into_iter()
        .filter_map(|n| sequence(&n).map(|s| (s, n)))
        .collect();
    c.sort();
    c.into_iter().map(|(_, n)| n).collect()
}

pub async fn contenders(client: &zk::Client, url: &ZkUrl) -> Result<Contenders, String> {
    let children = match client.list_children(&url.path).await {
        Ok(c) => c,
        Err(zk::Error::NoNode) => return Ok(Contenders::default()),
        Err(e) => return Err(format!("list {}: {e}", url.path)),
    };
    let mut list = Vec::new();
    for name in order(children) {
        match client.get_data(&url.child(&name)).await {
            Ok((data, _)) => {
                let v = serde_json::from_slice(&data).unwrap_or(Value::Null);
                list.push((name, v));
            }
            Err(zk::Error::NoNode) => continue, // went away between list and get
            Err(e) => return Err(format!("get {}: {e}", url.child(&name))),
        }
    }
    Ok(Contenders { list })
}

/// Mesos's `MasterInfo` JSON (the znode's content and /master/state's `leader_info`).
pub fn master_info(id: &str, hostname: &str, ip: Ipv4Addr, port: u16, version: &str) -> Value {
    json!({
        "id": id,
        "pid": format!("master@{ip}:{port}"),
        // Mesos stores the address as a uint32 in network byte order.
        "ip": u32::from_le_bytes(ip.octets()),
        "port": port,
        "hostname": hostname,
        "version": version,
        "address": {"hostname": hostname, "ip": ip.to_string(), "port": port},
    })
}

/// `(ip, port)` of a MasterInfo.
pub fn info_addr(info: &Value) -> Option<(String, u16)> {
    let a = info.get("address")?;
    let ip = a.get("ip")?.as_str()?.to_string();
    let port = u16::try_from(a.get("port")?.as_u64()?).ok()?;
    Some((ip, port))
}

/// The local address used to reach `host:port` (no packet is sent), for `--ip 0.0.0.0`.
pub fn local_ip_towards(host: &str, port: u16) -> Option<Ipv4Addr> {
    let target = (host, port).to_socket_addrs().ok()?.find(|a| a.is_ipv4())?;
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect(target).ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// A random id shaped like Mesos's UUIDs.
pub fn new_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{:032x}", t ^ u128::from(std::process::id()))
        })
}

/// Watches the session; returns when it is lost for good (expired, closed, auth failed).
pub async fn session_lost(client: &zk::Client) -> zk::SessionState {
    let mut w = client.state_watcher();
    loop {
        let s = w.changed().await;
        if s.is_terminated() {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_sequence_and_ignores_others() {
        let o = order(vec![
            "json.info_0000000012".into(),
            "log_replicas".into(),
            "json.info_0000000003".into(),
            "info_0000000001".into(),
        ]);
        assert_eq!(o, vec!["json.info_0000000003", "json.info_0000000012"]);
    }

    #[test]
    fn master_info_shape() {
        let i = master_info("abc", "master1", Ipv4Addr::new(127, 0, 0, 1), 5050, "v");
        assert_eq!(i["ip"], 16777343u32);
        assert_eq!(i["pid"], "master@127.0.0.1:5050");
        assert_eq!(i["address"]["ip"], "127.0.0.1");
        assert_eq!(info_addr(&i), Some(("127.0.0.1".into(), 5050)));
    }
}
