//! The russh implementation of [`Connector`]: one SSH session per host, one channel per command.
//!
//! - Commands run as `/bin/sh -c '<script>'` (exec request), whatever the remote login shell.
//! - Auth: ssh-agent (`SSH_AUTH_SOCK`), then key files: the target's, ssh config's, then
//!   `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
//! - Host keys: [`HostKeyPolicy`] against known_hosts (see `known_hosts.rs`); never disabled.
//! - Every remote wait has a timeout: TCP connect + handshake, auth and channel open use
//!   `ConnectTarget::connect_timeout`; a command uses `ExecRequest::timeout`. Keepalives make a
//!   dead peer end the session (and so every wait on it).
//! - Reconnect: if the session has dropped, the next `exec` opens a new one, once. A command that
//!   was already sent when the session dropped is not re-sent (see [`Connection`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelWriteHalf, Disconnect, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

use super::config::{self, Resolved};
use super::known_hosts::{self, HostKeyStatus};
use super::{
    BoxFuture, ConnectTarget, Connection, Connector, ExecOutput, ExecRequest, HostKeyPolicy,
    StreamIn, TransportError,
};
use crate::shell::quote;

/// Connector-wide settings. [`SshOptions::default`] is what the CLI uses; tests use
/// [`SshOptions::hermetic`] so nothing from the user's `~/.ssh` or agent leaks in.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// The ssh config file to read (`~/.ssh/config`); `None` reads none.
    pub ssh_config: Option<PathBuf>,
    /// Try the keys of the agent at `SSH_AUTH_SOCK`.
    pub use_agent: bool,
    /// Also try `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` (when they exist).
    pub default_identities: bool,
    /// The home directory for `~/.ssh/...` defaults; `None` means `$HOME`.
    pub home: Option<PathBuf>,
    /// Send a keepalive after this long without traffic from the server...
    pub keepalive_interval: Duration,
    /// ...and drop the session after this many unanswered keepalives.
    pub keepalive_max: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        SshOptions {
            ssh_config: home.as_ref().map(|h| h.join(".ssh/config")),
            use_agent: true,
            default_identities: true,
            home,
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
        }
    }
}

impl SshOptions {
    /// No ssh config, no agent, no default keys: only what the [`ConnectTarget`] names.
    pub fn hermetic() -> Self {
        SshOptions {
            ssh_config: None,
            use_agent: false,
            default_identities: false,
            home: None,
            ..SshOptions::default()
        }
    }

    fn home(&self) -> Option<PathBuf> {
        self.home
            .clone()
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
    }
}

/// Opens russh sessions. Cheap to clone; share one for all hosts.
#[derive(Clone, Debug, Default)]
pub struct SshConnector {
    options: Arc<SshOptions>,
}

impl SshConnector {
    pub fn new(options: SshOptions) -> Self {
        SshConnector {
            options: Arc::new(options),
        }
    }
}

impl Connector for SshConnector {
    fn connect<'a>(
        &'a self,
        target: &'a ConnectTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(async move {
            let session = open_session(target, &self.options).await?;
            let conn: Arc<dyn Connection> = Arc::new(SshConnection {
                target: target.clone(),
                options: Arc::clone(&self.options),
                session: Mutex::new(Some(Arc::new(session))),
                password_refused: std::sync::atomic::AtomicBool::new(false),
            });
            Ok(conn)
        })
    }
}

/// One live SSH session (and the jump host's session it runs over, if any).
struct Session {
    handle: Handle<ClientHandler>,
    _jump: Option<Handle<ClientHandler>>,
}

/// A connection to one host. Commands may run concurrently, each on its own channel.
pub struct SshConnection {
    target: ConnectTarget,
    options: Arc<SshOptions>,
    session: Mutex<Option<Arc<Session>>>,
    /// sudo refused the become password once: it is not sent again in this run (each try is a
    /// failed attempt in the host's auth log, and may lock the account).
    password_refused: std::sync::atomic::AtomicBool,
}

impl SshConnection {
    /// The current session, or a new one if it has dropped (or `fresh` asks for one).
    async fn session(&self, fresh: bool) -> Result<Arc<Session>, TransportError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if !fresh && !s.handle.is_closed() {
                return Ok(Arc::clone(s));
            }
        }
        *slot = None;
        tracing::debug!(host = %self.target.name, "opening a new SSH session");
        let s = Arc::new(open_session(&self.target, &self.options).await?);
        *slot = Some(Arc::clone(&s));
        Ok(s)
    }

    async fn exec_inner(
        &self,
        req: ExecRequest,
        input: Option<StreamIn>,
        output: Option<&mut (dyn AsyncWrite + Send + Unpin)>,
    ) -> Result<ExecOutput, TransportError> {
        use std::sync::atomic::Ordering;
        let with_password = req.become_.is_some() && self.target.become_password.is_some();
        if with_password && self.password_refused.load(Ordering::Relaxed) {
            return Err(TransportError::Become {
                host: self.target.name.clone(),
                reason: format!(
                    "{INCORRECT_PASSWORD} (refused earlier in this run; not sent again)"
                ),
            });
        }
        let out = self.exec_once(req, input, output).await;
        if let Err(TransportError::Become { reason, .. }) = &out {
            if with_password && reason.starts_with(INCORRECT_PASSWORD) {
                self.password_refused.store(true, Ordering::Relaxed);
            }
        }
        out
    }

    async fn exec_once(
        &self,
        req: ExecRequest,
        mut input: Option<StreamIn>,
        mut output: Option<&mut (dyn AsyncWrite + Send + Unpin)>,
    ) -> Result<ExecOutput, TransportError> {
        let host = &self.target.name;
        let mut retried = false;
        loop {
            let session = self.session(false).await?;
            let opened = tokio::time::timeout(
                self.target.connect_timeout,
                session.handle.channel_open_session(),
            )
            .await;
            match opened {
                Err(_) => {
                    return Err(TransportError::Timeout {
                        host: host.clone(),
                        what: "opening a channel".into(),
                        after: self.target.connect_timeout,
                    })
                }
                Ok(Ok(channel)) => {
                    let io = Streams {
                        input: input.take(),
                        output: output.take(),
                    };
                    return run(channel, &self.target, &req, io).await;
                }
                Ok(Err(e)) => {
                    // The command was not sent yet, so one retry on a new session is safe.
                    if retried {
                        return Err(TransportError::Disconnected {
                            host: host.clone(),
                            reason: format!("cannot open a channel: {e}"),
                        });
                    }
                    tracing::debug!(host = %host, "channel open failed ({e}); reconnecting once");
                    retried = true;
                    let mut slot = self.session.lock().await;
                    if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                        *slot = None;
                    }
                }
            }
        }
    }
}

impl Connection for SshConnection {
    fn exec(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecOutput, TransportError>> {
        Box::pin(self.exec_inner(req, None, None))
    }

    fn exec_streaming<'a>(
        &'a self,
        req: ExecRequest,
        input: Option<StreamIn>,
        output: &'a mut (dyn AsyncWrite + Send + Unpin),
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        Box::pin(self.exec_inner(req, input, Some(output)))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let taken = self.session.lock().await.take();
            if let Some(s) = taken {
                let _ = s
                    .handle
                    .disconnect(Disconnect::ByApplication, "", "en")
                    .await;
                if let Some(j) = &s._jump {
                    let _ = j.disconnect(Disconnect::ByApplication, "", "en").await;
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Session setup
// ---------------------------------------------------------------------------------------------

fn connect_error(
    target: &ConnectTarget,
    address: String,
    reason: impl Into<String>,
) -> TransportError {
    TransportError::Connect {
        host: target.name.clone(),
        address,
        reason: reason.into(),
    }
}

async fn open_session(
    target: &ConnectTarget,
    options: &SshOptions,
) -> Result<Session, TransportError> {
    let cfg = match &options.ssh_config {
        Some(p) => config::load(p).map_err(|e| connect_error(target, target.address.clone(), e))?,
        None => ssh2_config::SshConfig::default(),
    };
    let r = config::resolve(target, &cfg);
    let address = format!("{}:{}", r.host, r.port);
    let known_hosts = target
        .known_hosts
        .clone()
        .unwrap_or_else(|| options.home().unwrap_or_default().join(".ssh/known_hosts"));
    match r.proxy_jump.as_slice() {
        [] => {
            let stream = tokio::time::timeout(
                target.connect_timeout,
                tokio::net::TcpStream::connect((r.host.as_str(), r.port)),
            )
            .await
            .map_err(|_| TransportError::Timeout {
                host: target.name.clone(),
                what: format!("connecting to {address}"),
                after: target.connect_timeout,
            })?
            .map_err(|e| connect_error(target, address.clone(), e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let handle = establish(stream, target, &r, &known_hosts, options).await?;
            Ok(Session {
                handle,
                _jump: None,
            })
        }
        [jump] => {
            let spec =
                config::parse_jump(jump).map_err(|e| connect_error(target, address.clone(), e))?;
            let mut jt = ConnectTarget::new(
                format!("{} (via jump host {})", target.name, spec.host),
                spec.host.clone(),
            );
            jt.port = spec.port;
            jt.user = spec.user.clone();
            // The jump host gets its own ssh config lookup, plus the keys found for the target.
            jt.identity_files = r.identity_files.clone();
            jt.known_hosts = Some(known_hosts.clone());
            jt.host_key_policy = match &target.host_key_policy {
                // A pinned fingerprint is the target's, not the jump host's.
                HostKeyPolicy::Pinned(_) => HostKeyPolicy::Strict,
                p => p.clone(),
            };
            jt.connect_timeout = target.connect_timeout;
            jt.proxy_jump = Some("none".into());
            let jump_session = Box::pin(open_session(&jt, options)).await?;
            let channel = tokio::time::timeout(
                target.connect_timeout,
                jump_session.handle.channel_open_direct_tcpip(
                    r.host.clone(),
                    u32::from(r.port),
                    "127.0.0.1",
                    0,
                ),
            )
            .await
            .map_err(|_| TransportError::Timeout {
                host: target.name.clone(),
                what: format!("opening a tunnel to {address} through {}", spec.host),
                after: target.connect_timeout,
            })?
            .map_err(|e| {
                connect_error(
                    target,
                    address.clone(),
                    format!("jump host {} cannot reach it: {e}", spec.host),
                )
            })?;
            let handle =
                establish(channel.into_stream(), target, &r, &known_hosts, options).await?;
            Ok(Session {
                handle,
                _jump: Some(jump_session.handle),
            })
        }
        more => Err(connect_error(
            target,
            address,
            format!(
                "ProxyJump has {} hops ({}); only one jump host is supported",
                more.len(),
                more.join(",")
            ),
        )),
    }
}

/// SSH handshake (host key check) and authentication over an open stream.
async fn establish<S>(
    stream: S,
    target: &ConnectTarget,
    r: &Resolved,
    known_hosts: &Path,
    options: &SshOptions,
) -> Result<Handle<ClientHandler>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let address = format!("{}:{}", r.host, r.port);
    let mut preferred = russh::Preferred::default();
    // Ask first for the key types known_hosts has for this host, as OpenSSH does, so a host
    // with several keys is checked against the one we know.
    // known_hosts is read off the async workers (a blocking read).
    let known = {
        let (path, host, port) = (known_hosts.to_path_buf(), r.host.clone(), r.port);
        tokio::task::spawn_blocking(move || known_hosts::known_algorithms(&path, &host, port))
            .await
            .unwrap_or_default()
    };
    if !known.is_empty() {
        let same = |a: &Algorithm, b: &Algorithm| {
            a == b || (matches!(a, Algorithm::Rsa { .. }) && matches!(b, Algorithm::Rsa { .. }))
        };
        let mut keys: Vec<Algorithm> = preferred.key.to_vec();
        keys.sort_by_key(|a| !known.iter().any(|k| same(a, k)));
        preferred.key = Cow::Owned(keys);
    }
    // ServerAliveInterval=0 turns keepalives off, as in OpenSSH.
    let keepalive =
        Some(target.alive_interval.unwrap_or(options.keepalive_interval)).filter(|d| !d.is_zero());
    let keepalive_max = target.alive_count_max.unwrap_or(options.keepalive_max);
    let config = Arc::new(client::Config {
        keepalive_interval: keepalive,
        keepalive_max,
        // While a write to the socket is blocked (a peer cut off mid-transfer: the send buffer
        // stays full), the session loop waits in that write and no keepalive timer runs: only
        // the inactivity timeout ends it. It is as long as the keepalives' own limit, and every
        // answer (to a keepalive too) restarts it, so an idle live session is never cut.
        inactivity_timeout: keepalive
            .filter(|_| keepalive_max > 0)
            .map(|d| d * (keepalive_max as u32 + 1)),
        nodelay: true,
        preferred,
        ..client::Config::default()
    });
    let verdict: Arc<std::sync::Mutex<Option<TransportError>>> = Arc::default();
    let learned: Arc<std::sync::Mutex<Option<PublicKey>>> = Arc::default();
    let handler = ClientHandler {
        target_name: target.name.clone(),
        host: r.host.clone(),
        port: r.port,
        policy: target.host_key_policy.clone(),
        known_hosts: known_hosts.to_path_buf(),
        verdict: Arc::clone(&verdict),
        learned: Arc::clone(&learned),
    };
    let connected = tokio::time::timeout(
        target.connect_timeout,
        client::connect_stream(config, stream, handler),
    )
    .await;
    let mut handle = match connected {
        Err(_) => {
            return Err(TransportError::Timeout {
                host: target.name.clone(),
                what: format!("the SSH handshake with {address}"),
                after: target.connect_timeout,
            })
        }
        Ok(Err(e)) => {
            let stored = verdict.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(match (stored, e) {
                (Some(v), _) | (None, HandlerError::HostKey(v)) => v,
                (None, HandlerError::Ssh(e)) => connect_error(target, address, e.to_string()),
            });
        }
        Ok(Ok(h)) => h,
    };
    let to_learn = learned.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(key) = to_learn {
        let (path, host, port) = (known_hosts.to_path_buf(), r.host.clone(), r.port);
        tokio::task::spawn_blocking(move || known_hosts::append(&path, &host, port, &key))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|e| {
                connect_error(
                    target,
                    address.clone(),
                    format!(
                        "cannot record the host key in {}: {e}",
                        known_hosts.display()
                    ),
                )
            })?;
        tracing::debug!(host = %target.name, "recorded a new host key (accept-new)");
    }
    tokio::time::timeout(
        target.connect_timeout,
        authenticate(&mut handle, target, r, options),
    )
    .await
    .map_err(|_| TransportError::Timeout {
        host: target.name.clone(),
        what: "authenticating".into(),
        after: target.connect_timeout,
    })??;
    Ok(handle)
}

#[derive(Debug)]
enum HandlerError {
    Ssh(russh::Error),
    HostKey(TransportError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

struct ClientHandler {
    target_name: String,
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    known_hosts: PathBuf,
    /// Why the host key was refused, kept here as well because a handler error can reach the
    /// caller of `connect_stream` as a generic error.
    verdict: Arc<std::sync::Mutex<Option<TransportError>>>,
    /// A key to add to known_hosts once the handshake succeeded (accept-new).
    learned: Arc<std::sync::Mutex<Option<PublicKey>>>,
}

impl ClientHandler {
    fn host_label(&self) -> String {
        let entry = known_hosts::host_entry_name(&self.host, self.port);
        if entry == self.target_name {
            entry
        } else {
            format!("{} ({entry})", self.target_name)
        }
    }

    /// `checked`: the key looked up in known_hosts (`None` for a pinned key, which needs no
    /// file).
    fn verify(
        &self,
        key: &PublicKey,
        checked: Option<std::io::Result<HostKeyStatus>>,
    ) -> Result<(), TransportError> {
        let actual = known_hosts::fingerprint(key);
        if let HostKeyPolicy::Pinned(pinned) = &self.policy {
            let norm = |s: &str| {
                let s = s.trim();
                s.strip_prefix("SHA256:")
                    .unwrap_or(s)
                    .trim_end_matches('=')
                    .to_string()
            };
            return if norm(pinned) == norm(&actual) {
                Ok(())
            } else {
                Err(TransportError::HostKeyMismatch {
                    host: self.host_label(),
                    expected: format!("{} (pinned)", pinned.trim()),
                    actual,
                })
            };
        }
        let status = checked
            .unwrap_or_else(|| Err(std::io::Error::other("not read")))
            .map_err(|e| TransportError::Connect {
                host: self.target_name.clone(),
                address: format!("{}:{}", self.host, self.port),
                reason: format!("cannot read {}: {e}", self.known_hosts.display()),
            })?;
        match status {
            HostKeyStatus::Known => Ok(()),
            HostKeyStatus::Revoked => Err(TransportError::Connect {
                host: self.target_name.clone(),
                address: format!("{}:{}", self.host, self.port),
                reason: format!(
                    "host key {actual} is marked @revoked in {}",
                    self.known_hosts.display()
                ),
            }),
            HostKeyStatus::Changed { expected } => Err(TransportError::HostKeyMismatch {
                host: self.host_label(),
                expected: expected.join(", "),
                actual,
            }),
            HostKeyStatus::Unknown => match self.policy {
                HostKeyPolicy::AcceptNew => {
                    *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
                    Ok(())
                }
                _ => Err(TransportError::UnknownHostKey {
                    host: self.host_label(),
                    fingerprint: actual,
                    known_hosts: self.known_hosts.display().to_string(),
                }),
            },
        }
    }
}

impl client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => PublicKey::from(c.public_key().clone()),
        };
        let checked = match self.policy {
            HostKeyPolicy::Pinned(_) => None,
            _ => {
                let (path, host, port, k) = (
                    self.known_hosts.clone(),
                    self.host.clone(),
                    self.port,
                    key.clone(),
                );
                Some(
                    tokio::task::spawn_blocking(move || known_hosts::check(&path, &host, port, &k))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
                )
            }
        };
        match self.verify(&key, checked) {
            Ok(()) => Ok(true),
            Err(e) => {
                *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                Err(HandlerError::HostKey(e))
            }
        }
    }
}

async fn rsa_hash(handle: &Handle<ClientHandler>, key: &PublicKey) -> Option<russh::keys::HashAlg> {
    if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
        handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten()
    } else {
        None
    }
}

async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    target: &ConnectTarget,
    r: &Resolved,
    options: &SshOptions,
) -> Result<(), TransportError> {
    let user = r.user.clone();
    let auth_error = |reason: String| TransportError::Auth {
        host: target.name.clone(),
        user: user.clone(),
        reason,
    };
    let mut tried: Vec<String> = Vec::new();
    let mut offered: Vec<PublicKey> = Vec::new();

    if options.use_agent {
        if std::env::var_os("SSH_AUTH_SOCK").is_none() {
            tried.push("ssh-agent: SSH_AUTH_SOCK is not set".into());
        } else {
            match AgentClient::connect_env().await {
                Err(e) => tried.push(format!("ssh-agent: {e}")),
                Ok(mut agent) => match agent.request_identities().await {
                    Err(e) => tried.push(format!("ssh-agent: {e}")),
                    Ok(ids) => {
                        let keys: Vec<PublicKey> = ids
                            .into_iter()
                            .filter_map(|id| match id {
                                AgentIdentity::PublicKey { key, .. } => Some(key),
                                AgentIdentity::Certificate { .. } => None,
                            })
                            .collect();
                        if keys.is_empty() {
                            tried.push("ssh-agent: no keys".into());
                        }
                        for key in keys {
                            let hash = rsa_hash(handle, &key).await;
                            let fp = known_hosts::fingerprint(&key);
                            offered.push(key.clone());
                            match handle
                                .authenticate_publickey_with(user.clone(), key, hash, &mut agent)
                                .await
                            {
                                Ok(res) if res.success() => return Ok(()),
                                Ok(_) => tried.push(format!("ssh-agent key {fp}: rejected")),
                                Err(e) => tried.push(format!("ssh-agent key {fp}: {e}")),
                            }
                        }
                    }
                },
            }
        }
    }

    // Key files: explicit and ssh config ones (reported if missing), then the defaults.
    let mut files: Vec<(PathBuf, bool)> =
        r.identity_files.iter().map(|p| (p.clone(), true)).collect();
    if options.default_identities {
        if let Some(home) = options.home() {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = home.join(".ssh").join(name);
                if !files.iter().any(|(f, _)| *f == p) {
                    files.push((p, false));
                }
            }
        }
    }
    for (path, explicit) in files {
        let shown = path.display();
        if !path.exists() {
            if explicit {
                tried.push(format!("{shown}: no such file"));
            }
            continue;
        }
        let key = match russh::keys::load_secret_key(&path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                tried.push(format!(
                    "{shown}: encrypted with a passphrase, and there is no way to decrypt it \
                     here (load it into ssh-agent with `ssh-add {shown}`)"
                ));
                continue;
            }
            Err(e) => {
                tried.push(format!("{shown}: cannot read the key: {e}"));
                continue;
            }
        };
        let public = key.public_key().clone();
        if offered.iter().any(|k| k.key_data() == public.key_data()) {
            continue;
        }
        offered.push(public.clone());
        let hash = rsa_hash(handle, &public).await;
        match handle
            .authenticate_publickey(
                user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
        {
            Ok(res) if res.success() => return Ok(()),
            Ok(_) => tried.push(format!("{shown}: rejected")),
            Err(e) => {
                tried.push(format!("{shown}: {e}"));
                if handle.is_closed() {
                    break;
                }
            }
        }
    }
    if tried.is_empty() {
        return Err(auth_error(
            "no key to try: no ssh-agent and no identity file (set ansible_ssh_private_key_file \
             or IdentityFile in ~/.ssh/config)"
                .into(),
        ));
    }
    Err(auth_error(format!("tried {}", tried.join("; "))))
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// Why sudo did not let us in when it asked for the password a second time.
const INCORRECT_PASSWORD: &str = "incorrect sudo password";

/// Markers used to follow sudo: its password prompt, and a line printed by the become shell
/// once sudo has let us in.
struct BecomeMarkers {
    prompt: String,
    ok: String,
}

impl BecomeMarkers {
    fn new() -> Self {
        let id = format!("{:032x}", rand::random::<u128>());
        BecomeMarkers {
            prompt: format!("[provisioner-sudo-{id}] password:"),
            ok: format!("PROVISIONER-BECOME-OK-{id}"),
        }
    }
}

/// The exec request's command line.
fn command_line(req: &ExecRequest, markers: Option<&BecomeMarkers>, with_password: bool) -> String {
    match (&req.become_, markers) {
        (Some(b), Some(m)) => {
            let inner = format!(
                "printf '%s\\n' {} >&2; exec /bin/sh -c {}",
                quote(&m.ok),
                quote(&req.script)
            );
            let prompt = if with_password {
                format!("-p {}", quote(&m.prompt))
            } else {
                "-n".to_string()
            };
            format!(
                "sudo -H -S {prompt} -u {} -- /bin/sh -c {}",
                quote(&b.user),
                quote(&inner)
            )
        }
        _ => format!("/bin/sh -c {}", quote(&req.script)),
    }
}

enum WriterSignal {
    /// sudo asks for the password.
    Password,
    /// The command runs: send stdin, then EOF.
    Start,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn signal_number(sig: &Sig) -> u32 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 127,
    }
}

/// A command's streamed ends (see [`Connection::exec_streaming`]); `None`: buffered.
struct Streams<'a> {
    input: Option<StreamIn>,
    output: Option<&'a mut (dyn AsyncWrite + Send + Unpin)>,
}

async fn run(
    channel: russh::Channel<Msg>,
    target: &ConnectTarget,
    req: &ExecRequest,
    io: Streams<'_>,
) -> Result<ExecOutput, TransportError> {
    let Streams {
        input,
        output: mut stdout_to,
    } = io;
    let host = target.name.clone();
    let password = if req.become_.is_some() {
        target.become_password.clone()
    } else {
        None
    };
    let markers = req.become_.as_ref().map(|_| BecomeMarkers::new());
    let command = command_line(req, markers.as_ref(), password.is_some());
    let (mut rx, tx) = channel.split();
    let tx: Arc<ChannelWriteHalf<Msg>> = Arc::new(tx);

    // The writer runs beside the reader, so a command that reads and writes a lot never
    // deadlocks on full windows. It sends the password only when sudo prompts for it, and
    // the request's stdin only once the command itself runs.
    let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<WriterSignal>();
    let writer = {
        let tx = Arc::clone(&tx);
        let stdin = req.stdin.clone().unwrap_or_default();
        let mut input = input;
        tokio::spawn(async move {
            while let Some(sig) = sig_rx.recv().await {
                match sig {
                    WriterSignal::Password => {
                        if let Some(pw) = &password {
                            let mut line = pw.expose().as_bytes().to_vec();
                            line.push(b'\n');
                            if tx.data(&line[..]).await.is_err() {
                                return;
                            }
                        }
                    }
                    WriterSignal::Start => {
                        // A streamed input goes in the channel's window-sized chunks (russh
                        // reads it as the peer's window opens), never whole in memory.
                        if let Some(reader) = input.take() {
                            if tx.data(reader).await.is_err() {
                                // Closed without EOF: the command is not told a cut input is
                                // whole; the reader sees no exit status and fails.
                                let _ = tx.close().await;
                                return;
                            }
                        } else if !stdin.is_empty() && tx.data(&stdin[..]).await.is_err() {
                            return;
                        }
                        let _ = tx.eof().await;
                        return;
                    }
                }
            }
        })
    };

    let work = async {
        tx.exec(true, command.into_bytes())
            .await
            .map_err(|e| TransportError::Disconnected {
                host: host.clone(),
                reason: format!("cannot start the command: {e}"),
            })?;
        if markers.is_none() {
            let _ = sig_tx.send(WriterSignal::Start);
        }
        let mut out = ExecOutput::default();
        let mut exit: Option<u32> = None;
        // Before the become shell reports in, stderr is sudo's: kept apart, markers removed.
        let mut sudo_stderr: Vec<u8> = Vec::new();
        let mut started = markers.is_none();
        let mut prompts = 0;
        let mut become_failure: Option<String> = None;
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => match stdout_to.as_mut() {
                    // Written before the next message is read: a slow writer holds the
                    // channel's window, so the host waits rather than memory filling up.
                    Some(w) => w
                        .write_all(&data)
                        .await
                        .map_err(|e| TransportError::Local {
                            host: host.clone(),
                            reason: format!("writing the command's output: {e}"),
                        })?,
                    None => out.stdout.extend_from_slice(&data),
                },
                ChannelMsg::ExtendedData { data, .. } if started => {
                    out.stderr.extend_from_slice(&data)
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    let Some(m) = markers.as_ref() else { continue };
                    sudo_stderr.extend_from_slice(&data);
                    while let Some(pos) = find(&sudo_stderr, m.prompt.as_bytes()) {
                        sudo_stderr.drain(pos..pos + m.prompt.len());
                        prompts += 1;
                        if prompts == 1 {
                            let _ = sig_tx.send(WriterSignal::Password);
                        }
                    }
                    if prompts > 1 {
                        become_failure = Some(INCORRECT_PASSWORD.into());
                        let _ = tx.eof().await;
                        let _ = tx.close().await;
                        break;
                    }
                    let ok_line = format!("{}\n", m.ok);
                    if let Some(pos) = find(&sudo_stderr, ok_line.as_bytes()) {
                        out.stderr
                            .extend_from_slice(&sudo_stderr[pos + ok_line.len()..]);
                        sudo_stderr.truncate(pos);
                        started = true;
                        let _ = sig_tx.send(WriterSignal::Start);
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    exit = Some(128 + signal_number(&signal_name))
                }
                ChannelMsg::Failure => {
                    return Err(TransportError::Disconnected {
                        host: host.clone(),
                        reason: "the server refused to run the command".into(),
                    })
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        if !started {
            let said = String::from_utf8_lossy(&sudo_stderr).trim().to_string();
            let reason = match (become_failure, said.is_empty(), exit) {
                (Some(f), true, _) => f,
                (Some(f), false, _) => format!("{f} ({said})"),
                (None, false, _) => said,
                (None, true, Some(code)) => format!("sudo exited with status {code}"),
                (None, true, None) => {
                    return Err(TransportError::Disconnected {
                        host: host.clone(),
                        reason: "the session ended while sudo was starting".into(),
                    })
                }
            };
            return Err(TransportError::Become {
                host: host.clone(),
                reason,
            });
        }
        if let Some(w) = stdout_to.as_mut() {
            w.flush().await.map_err(|e| TransportError::Local {
                host: host.clone(),
                reason: format!("writing the command's output: {e}"),
            })?;
        }
        match exit {
            Some(code) => {
                out.exit_status = code;
                Ok(out)
            }
            None => Err(TransportError::Disconnected {
                host: host.clone(),
                reason: "the command ended without an exit status (connection lost?)".into(),
            }),
        }
    };
    let result = tokio::time::timeout(req.timeout, work).await;
    writer.abort();
    match result {
        Ok(r) => r,
        Err(_) => {
            // Best effort: ask the server to stop the command and drop the channel.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = tx.signal(Sig::KILL).await;
                let _ = tx.close().await;
            })
            .await;
            Err(TransportError::Timeout {
                host,
                what: "running a command".into(),
                after: req.timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Become;

    fn req(script: &str, become_: Option<&str>) -> ExecRequest {
        ExecRequest {
            script: script.into(),
            stdin: None,
            become_: become_.map(|u| Become { user: u.into() }),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn plain_commands_run_under_sh_c() {
        assert_eq!(
            command_line(&req("echo 'hi'", None), None, false),
            "/bin/sh -c 'echo '\\''hi'\\'''"
        );
    }

    #[test]
    fn become_without_password_is_non_interactive_sudo() {
        let m = BecomeMarkers::new();
        let c = command_line(&req("id -u", Some("root")), Some(&m), false);
        assert!(c.starts_with("sudo -H -S -n -u root -- /bin/sh -c "), "{c}");
        assert!(c.contains(&m.ok));
        let c = command_line(&req("id -u", Some("zk")), Some(&m), true);
        assert!(c.starts_with("sudo -H -S -p '[provisioner-sudo-"), "{c}");
        assert!(c.contains("-u zk --"), "{c}");
    }
}
