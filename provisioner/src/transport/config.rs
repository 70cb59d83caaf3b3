//! `~/.ssh/config` (via ssh2-config): HostName, User, Port, IdentityFile, ProxyJump.
//!
//! Explicit [`ConnectTarget`] values (inventory vars, `ansible_ssh_*_args`) win over the config,
//! as `ssh -p/-l/-o` win over the config file in OpenSSH. Identity files add up: explicit ones
//! are tried first, then the config's.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use ssh2_config::{ParseRule, SshConfig};

use super::ConnectTarget;

/// The connection parameters after the ssh config was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// What to open the TCP connection to.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump` hops, as written (`[user@]host[:port]`). We support one.
    pub proxy_jump: Vec<String>,
}

/// Read an ssh config file. A missing file is an empty config.
pub fn load(path: &Path) -> Result<SshConfig, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SshConfig::default()),
        Err(e) => return Err(format!("cannot read ssh config {}: {e}", path.display())),
    };
    let mut reader = BufReader::new(file);
    SshConfig::default()
        .parse(
            &mut reader,
            ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
        )
        .map_err(|e| format!("cannot parse ssh config {}: {e}", path.display()))
}

/// The local user name, the default remote user (as OpenSSH does).
pub fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

/// Apply `cfg` to `target`. The config is looked up by `target.address` (what Ansible passes to
/// ssh: `ansible_host`, else the inventory name).
pub fn resolve(target: &ConnectTarget, cfg: &SshConfig) -> Resolved {
    let params = cfg.query(&target.address);
    let host = params
        .host_name
        .as_deref()
        .map(|h| h.replace("%h", &target.address))
        .unwrap_or_else(|| target.address.clone());
    let mut identity_files = target.identity_files.clone();
    for f in params.identity_file.unwrap_or_default() {
        if !identity_files.contains(&f) {
            identity_files.push(f);
        }
    }
    let proxy_jump = match &target.proxy_jump {
        Some(j) if j.eq_ignore_ascii_case("none") => Vec::new(),
        Some(j) => vec![j.clone()],
        None => params
            .proxy_jump
            .unwrap_or_default()
            .into_iter()
            .filter(|j| !j.eq_ignore_ascii_case("none"))
            .collect(),
    };
    Resolved {
        host,
        port: target.port.or(params.port).unwrap_or(22),
        user: target
            .user
            .clone()
            .or(params.user)
            .unwrap_or_else(local_user),
        identity_files,
        proxy_jump,
    }
}

/// A `ProxyJump` hop: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

pub fn parse_jump(spec: &str) -> Result<JumpSpec, String> {
    let s = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, s),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        // [v6addr]:port
        let Some((h, after)) = inner.split_once(']') else {
            return Err(format!("bad ProxyJump {spec:?}"));
        };
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
            _ => (rest.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("bad port in ProxyJump {spec:?}"))?,
        ),
        None => None,
    };
    if host.is_empty() {
        return Err(format!("bad ProxyJump {spec:?}: no host"));
    }
    Ok(JumpSpec { user, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> SshConfig {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config");
        std::fs::write(&p, text).unwrap();
        load(&p).unwrap()
    }

    const CONFIG: &str = "\
Host web*
    HostName %h.lab.example
    User deploy
    Port 2200
    IdentityFile /keys/web
    ProxyJump ops@bastion:2222
    ControlMaster auto

Host *
    User fallback
";

    #[test]
    fn ssh_config_supplies_what_the_target_leaves_open() {
        let c = cfg(CONFIG);
        let t = ConnectTarget::new("web1", "web1");
        let r = resolve(&t, &c);
        assert_eq!(r.host, "web1.lab.example");
        assert_eq!(r.port, 2200);
        assert_eq!(r.user, "deploy");
        assert_eq!(r.identity_files, vec![PathBuf::from("/keys/web")]);
        assert_eq!(r.proxy_jump, vec!["ops@bastion:2222".to_string()]);

        let other = resolve(&ConnectTarget::new("db1", "10.1.1.1"), &c);
        assert_eq!(
            (other.host.as_str(), other.port, other.user.as_str()),
            ("10.1.1.1", 22, "fallback")
        );
    }

    #[test]
    fn explicit_target_values_win_over_ssh_config() {
        let c = cfg(CONFIG);
        let mut t = ConnectTarget::new("web1", "web1");
        t.port = Some(22);
        t.user = Some("root".into());
        t.identity_files = vec![PathBuf::from("/keys/mine")];
        t.proxy_jump = Some("j2".into());
        let r = resolve(&t, &c);
        assert_eq!(r.port, 22);
        assert_eq!(r.user, "root");
        assert_eq!(
            r.identity_files,
            vec![PathBuf::from("/keys/mine"), PathBuf::from("/keys/web")]
        );
        assert_eq!(r.proxy_jump, vec!["j2".to_string()]);
    }

    #[test]
    fn missing_config_is_empty() {
        let c = load(Path::new("/nonexistent/ssh_config")).unwrap();
        let r = resolve(&ConnectTarget::new("a", "b"), &c);
        assert_eq!((r.host.as_str(), r.port), ("b", 22));
    }

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jump("ops@bastion:2222").unwrap(),
            JumpSpec {
                user: Some("ops".into()),
                host: "bastion".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            parse_jump("bastion").unwrap(),
            JumpSpec {
                user: None,
                host: "bastion".into(),
                port: None
            }
        );
        assert_eq!(parse_jump("[::1]:22").unwrap().host, "::1");
        assert!(parse_jump("h:notaport").is_err());
    }
}
