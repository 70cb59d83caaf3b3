//! SSH transport (async). One session per host, one channel per command.
//!
//! The executor talks to hosts only through [`Connector`] and [`Connection`], so tests can use a
//! fake transport and the real one is russh (see `ssh.rs`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub mod args;
pub mod config;
pub mod defaults;
pub mod files;
pub mod known_hosts;
pub mod ssh;

pub use args::apply_ssh_args;
pub use defaults::ConnectDefaults;
pub use files::atomic_write_script;
pub use ssh::{SshConnector, SshOptions};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A streamed command's standard input (see [`Connection::exec_streaming`]).
pub type StreamIn = Box<dyn AsyncRead + Send + Unpin>;

/// How a host's SSH key is checked.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// The key must already be in known_hosts. The default.
    #[default]
    Strict,
    /// An unknown host's key is added to known_hosts; a changed key is still refused.
    AcceptNew,
    /// The key must have this fingerprint (`SHA256:...`, as `ssh-keygen -l` prints it).
    Pinned(String),
}

/// Privilege escalation for one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Become {
    /// The user to become (`root` by default in Ansible).
    pub user: String,
}

/// Everything needed to open a session to one host. Built from inventory connection vars and
/// `~/.ssh/config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTarget {
    /// The inventory name, used in every message about this host.
    pub name: String,
    /// Address or DNS name to connect to (`ansible_host`, else the inventory name).
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Explicit key files (`ansible_ssh_private_key_file`); ssh config and the agent add to these.
    pub identity_files: Vec<PathBuf>,
    /// The known_hosts file to check against; `None` means `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    /// The sudo password, if become needs one. Never logged.
    pub become_password: Option<crate::secret::Secret>,
    /// One jump host, `[user@]host[:port]` (`ProxyJump`, `-J`); `None` means ssh config decides.
    pub proxy_jump: Option<String>,
    /// `ServerAliveInterval` (zero: no keepalives); `None` keeps the connector's default.
    pub alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`; `None` keeps the connector's default.
    pub alive_count_max: Option<usize>,
}

impl ConnectTarget {
    /// A target with defaults: port, user and keys come from ssh config, strict host-key
    /// checking against `~/.ssh/known_hosts`, a 10 s connect timeout.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        ConnectTarget {
            name: name.into(),
            address: address.into(),
            port: None,
            user: None,
            identity_files: Vec::new(),
            known_hosts: None,
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            become_password: None,
            proxy_jump: None,
            alive_interval: None,
            alive_count_max: None,
        }
    }
}

/// One command to run on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    /// A POSIX shell script, run with `/bin/sh -c`.
    pub script: String,
    /// Bytes fed to the command's standard input, then EOF.
    pub stdin: Option<Vec<u8>>,
    pub become_: Option<Become>,
    /// The longest the command may run before it is abandoned with [`TransportError::Timeout`].
    pub timeout: Duration,
}

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why a transport operation failed. Host failures are data for the executor; these become a
/// host's `Unreachable` or `Failed` status, never a panic.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    #[error("{host}: cannot connect to {address}: {reason}")]
    Connect {
        host: String,
        address: String,
        reason: String,
    },
    #[error("{host}: host key changed! known_hosts has {expected}, the host offered {actual}. Refusing to connect. If the machine was replaced, `provisioner node replace {host} -i INVENTORY` shows the new key and accepts it; otherwise remove the old key with `ssh-keygen -R` after checking the new one")]
    HostKeyMismatch {
        host: String,
        expected: String,
        actual: String,
    },
    #[error("{host}: host key {fingerprint} is not in {known_hosts} (strict host-key checking). Add it (ssh-keyscan, then verify it), or set `-o StrictHostKeyChecking=accept-new` in ansible_ssh_common_args")]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        known_hosts: String,
    },
    #[error("{host}: authentication failed for user {user}: {reason}")]
    Auth {
        host: String,
        user: String,
        reason: String,
    },
    #[error("{host}: become (sudo) failed: {reason}")]
    Become { host: String, reason: String },
    #[error("{host}: timed out after {after:?} while {what}")]
    Timeout {
        host: String,
        what: String,
        after: Duration,
    },
    #[error("{host}: connection lost: {reason}")]
    Disconnected { host: String, reason: String },
    /// A streamed command's local end failed (reading its input, writing its output).
    #[error("{host}: {reason}")]
    Local { host: String, reason: String },
}

impl TransportError {
    /// Errors where the host was never reached (as opposed to a command failing on it).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::Auth { .. }
                | TransportError::HostKeyMismatch { .. }
                | TransportError::UnknownHostKey { .. }
                | TransportError::Disconnected { .. }
        )
    }
}

/// An open session to one host.
///
/// Reconnects: when the session has dropped, the next [`Connection::exec`] opens a new session
/// once before failing. A command that was already sent when the session dropped is never
/// re-sent here: it fails with [`TransportError::Disconnected`] (it may or may not have run), and
/// only the executor decides to re-send it, for requests that are safe to retry (probes,
/// idempotent checks).
pub trait Connection: Send + Sync {
    fn exec(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecOutput, TransportError>>;

    /// [`Connection::exec`] with streams: the command's stdin is read from `input` chunk by
    /// chunk (then EOF; `req.stdin` is ignored when `input` is given), and its stdout is written
    /// to `output` as it arrives (the returned [`ExecOutput::stdout`] stays empty). Neither is
    /// ever held whole in memory by the SSH transport, so an archive of any size can cross.
    ///
    /// The default buffers both (for in-memory test transports); the SSH transport streams.
    fn exec_streaming<'a>(
        &'a self,
        req: ExecRequest,
        input: Option<StreamIn>,
        output: &'a mut (dyn AsyncWrite + Send + Unpin),
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        Box::pin(async move {
            let mut req = req;
            if let Some(mut r) = input {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf)
                    .await
                    .map_err(|e| TransportError::Local {
                        host: String::new(),
                        reason: format!("reading the command's input: {e}"),
                    })?;
                req.stdin = Some(buf);
            }
            let mut out = self.exec(req).await?;
            output
                .write_all(&out.stdout)
                .await
                .map_err(|e| TransportError::Local {
                    host: String::new(),
                    reason: format!("writing the command's output: {e}"),
                })?;
            out.stdout.clear();
            Ok(out)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Opens sessions.
pub trait Connector: Send + Sync {
    fn connect<'a>(
        &'a self,
        target: &'a ConnectTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>>;
}
