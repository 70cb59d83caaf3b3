//! `zk://[user:pass@]host:port[,host:port...]/path` as Mesos accepts it (`--zk`, `--master`,
//! `/etc/mesos/zk`). Mesos also accepts `file:///path` pointing to a file that holds the URL.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `user:pass` for the `digest` scheme, if the URL carries credentials.
    pub credentials: Option<(String, String)>,
    pub servers: Vec<(String, u16)>,
    /// Absolute znode path, never ending with `/` (except the root itself).
    pub path: String,
}

// The credentials never print.
impl fmt::Debug for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkUrl")
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "********")),
            )
            .field("servers", &self.servers)
            .field("path", &self.path)
            .finish()
    }
}

impl ZkUrl {
    pub fn parse(raw: &str) -> Result<ZkUrl, String> {
        let s = raw.trim();
        let rest = s
            .strip_prefix("zk://")
            .ok_or_else(|| format!("'{s}' is not a zk:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(format!("zk URL '{}' has no znode path", redact(s))),
        };
        let (credentials, hosts) = match authority.rfind('@') {
            Some(i) => {
                let (user, pass) = authority[..i]
                    .split_once(':')
                    .ok_or_else(|| "zk URL credentials must be 'user:password'".to_string())?;
                if user.is_empty() || pass.is_empty() {
                    return Err("zk URL credentials must be 'user:password'".into());
                }
                (
                    Some((user.to_string(), pass.to_string())),
                    &authority[i + 1..],
                )
            }
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err(format!("zk URL '{}' names no servers", redact(s)));
        }
        let mut servers = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| format!("zk server '{h}' has no port"))?;
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
            {
                return Err(format!("zk server '{h}' has an invalid host"));
            }
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("zk server '{h}' has an invalid port"))?;
            servers.push((host.to_string(), port));
        }
        if path.len() > 1 && path.ends_with('/') {
            return Err(format!("zk path '{path}' must not end with '/'"));
        }
        if path.contains("//") || path.split('/').skip(1).any(|c| c == "." || c == "..") {
            return Err(format!("zk path '{path}' is not a valid znode path"));
        }
        Ok(ZkUrl {
            credentials,
            servers,
            path: path.to_string(),
        })
    }

    /// `h1:2181,h2:2181` for the client.
    pub fn connect_string(&self) -> String {
        self.servers
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The digest auth payload `user:pass`.
    pub fn auth(&self) -> Option<Vec<u8>> {
        self.credentials
            .as_ref()
            .map(|(u, p)| format!("{u}:{p}").into_bytes())
    }

    /// Child path under the URL's path.
    pub fn child(&self, name: &str) -> String {
        if self.path == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.path)
        }
    }
}

/// A URL with its password replaced, for messages.
pub fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => match s[a + 3..b].split_once(':') {
            Some((u, _)) => format!("{}{u}:********{}", &s[..a + 3], &s[b..]),
            None => s.to_string(),
        },
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials_servers_and_path() {
        let u = ZkUrl::parse("zk://mesos:s3cr:et@h1:2181,h2:2181,10.0.0.3:2182/mesos\n").unwrap();
        assert_eq!(u.credentials, Some(("mesos".into(), "s3cr:et".into())));
        assert_eq!(u.servers.len(), 3);
        assert_eq!(u.servers[2], ("10.0.0.3".into(), 2182));
        assert_eq!(u.path, "/mesos");
        assert_eq!(u.connect_string(), "h1:2181,h2:2181,10.0.0.3:2182");
        assert_eq!(u.child("json.info_"), "/mesos/json.info_");
        assert!(!format!("{u:?}").contains("s3cr"));
    }

    #[test]
    fn parses_without_credentials() {
        let u = ZkUrl::parse("zk://localhost:2181/").unwrap();
        assert_eq!(u.credentials, None);
        assert_eq!(u.child("x"), "/x");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "http://h:2181/mesos",
            "zk://h1:2181",
            "zk:///mesos",
            "zk://h1/mesos",
            "zk://h1:abc/mesos",
            "zk://h1:0/mesos",
            "zk://h1:2181,/mesos",
            "zk://user@h1:2181/mesos",
            "zk://:pw@h1:2181/mesos",
            "zk://h1:2181/mesos/",
            "zk://h1:2181//mesos",
            "zk://h 1:2181/mesos",
        ] {
            assert!(ZkUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("zk://u:p@h:1/m"),
            "zk://u:********@h:1/m".to_string()
        );
        assert_eq!(redact("zk://h:1/m"), "zk://h:1/m".to_string());
    }
}
