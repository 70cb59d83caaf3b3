//! Leader detection through ZooKeeper, the way Mesos publishes it (for the Mesos-DNS stand-in):
//! every master holds an ephemeral sequential znode `<path>/json.info_<seq>` with its
//! `MasterInfo` as JSON; the lowest sequence number leads. With credentials in the zk URL the
//! session authenticates with the `digest` scheme.

use std::time::Duration;

use serde_json::Value;
use zookeeper_client as zk;

use crate::zkurl::ZkUrl;

pub const PREFIX: &str = "json.info_";

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

/// `(ip, port)` of a MasterInfo: its `address`, else its `pid` (`master@IP:PORT`; the
/// `leader_info` in a real master's `/master/state` has no `address`).
pub fn info_addr(info: &Value) -> Option<(String, u16)> {
    if let Some(a) = info.get("address") {
        let ip = a.get("ip")?.as_str()?.to_string();
        let port = u16::try_from(a.get("port")?.as_u64()?).ok()?;
        return Some((ip, port));
    }
    pid_addr(info.get("pid")?.as_str()?)
}

/// `(ip, port)` of a libprocess pid `name@IP:PORT` (`master@10.0.0.1:5050`,
/// `slave(1)@10.0.0.21:5051`).
pub fn pid_addr(pid: &str) -> Option<(String, u16)> {
    let (_, addr) = pid.rsplit_once('@')?;
    let (ip, port) = addr.rsplit_once(':')?;
    Some((ip.to_string(), port.parse().ok()?))
}

/// What the e2e tests read from ZooKeeper, through a session that authenticates as the zk URL
/// says (digest): the contenders, and the ACL of the leader's znode as `scheme:id:perms`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub contenders: Contenders,
    pub leader_acl: Vec<String>,
}

/// Blocking [`Snapshot`] (its own current-thread runtime), for synchronous tests.
pub fn snapshot(url: &str, session_timeout: Duration) -> Result<Snapshot, String> {
    let url = ZkUrl::parse(url.trim())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let client = connect(&url, session_timeout).await?;
        let contenders = contenders(&client, &url).await?;
        let mut leader_acl = Vec::new();
        if let Some((name, _)) = contenders.leader() {
            let path = url.child(name);
            let (acl, _) = client
                .get_acl(&path)
                .await
                .map_err(|e| format!("getAcl {path}: {e}"))?;
            leader_acl = acl
                .iter()
                .map(|a| format!("{}:{}:{:?}", a.scheme(), a.id(), a.permission()))
                .collect();
        }
        Ok(Snapshot {
            contenders,
            leader_acl,
        })
    })
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
    fn master_info_addresses() {
        // The znode Mesos 1.11 writes (`json.info_*`), and a real `leader_info` (no address).
        let znode = serde_json::json!({"address": {"hostname": "m1", "ip": "10.0.0.11", "port": 5050},
            "hostname": "m1", "id": "x", "ip": 184549386u32, "pid": "master@10.0.0.11:5050",
            "port": 5050, "version": "1.11.0"});
        assert_eq!(info_addr(&znode), Some(("10.0.0.11".into(), 5050)));
        let leader_info = serde_json::json!({"hostname": "localhost", "id": "d5",
            "pid": "master@127.0.0.1:15050", "port": 15050});
        assert_eq!(info_addr(&leader_info), Some(("127.0.0.1".into(), 15050)));
        assert_eq!(
            pid_addr("slave(1)@10.0.0.21:5051"),
            Some(("10.0.0.21".into(), 5051))
        );
        assert_eq!(pid_addr("nonsense"), None);
    }
}
