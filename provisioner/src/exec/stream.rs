//! Streamed commands on one host, for the day-2 commands that move archives (`backup`,
//! `restore`): a command's stdout goes to a local file, or a local file goes to its stdin,
//! chunk by chunk through [`Connection::exec_streaming`], never whole in memory.
//!
//! The hosts are reached exactly as a run reaches them: the inventory's connection vars, the
//! Ansible config's defaults and the state dir's known_hosts, with become as the inventory says.
//! This is the only blocking face of it (day-2 code is synchronous); the runtime is private.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;
use crate::model::inventory::Inventory;
use crate::transport::{
    Become, ConnectDefaults, Connection, Connector, ExecRequest, SshConnector, SshOptions,
    StreamIn, TransportError,
};

/// Opens (and keeps) one session per host of an inventory, for streamed commands.
pub struct Streamer {
    rt: tokio::runtime::Runtime,
    inv: Inventory,
    connect: ConnectDefaults,
    connector: Arc<dyn Connector>,
    conns: Mutex<BTreeMap<String, Arc<dyn Connection>>>,
}

impl Streamer {
    /// For the hosts of `inventory`, over SSH.
    pub fn new(inventory: &[PathBuf]) -> Result<Streamer, Error> {
        let connector: Arc<dyn Connector> = Arc::new(SshConnector::new(SshOptions::default()));
        Streamer::with_connector(inventory, connector)
    }

    /// With another transport (tests).
    pub fn with_connector(
        inventory: &[PathBuf],
        connector: Arc<dyn Connector>,
    ) -> Result<Streamer, Error> {
        let inv = crate::resolve::inventory::load_sources(inventory).map_err(Error::Invalid)?;
        let env = crate::config::ansible_cfg::Env::current();
        let cfg = crate::config::ansible_cfg::discover(&env).map_err(Error::Invalid)?;
        let defaults = crate::config::RunDefaults::from_config(&cfg);
        let connect = crate::config::connect::with_state_dir(&defaults.connect, inventory);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Environment(format!("cannot start the runtime: {e}")))?;
        Ok(Streamer {
            rt,
            inv,
            connect,
            connector,
            conns: Mutex::new(BTreeMap::new()),
        })
    }

    fn connection(&self, host: &str) -> Result<(Arc<dyn Connection>, Option<Become>), String> {
        let conn = self.inv.connection(host).map_err(|d| d.to_string())?;
        if !conn.templated.is_empty() {
            return Err(format!(
                "{host}: its connection vars are templates ({}); backup and restore need them plain",
                conn.templated.join(", ")
            ));
        }
        let become_ = conn.become_.clone().map(|user| Become { user });
        let cached = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .cloned();
        if let Some(c) = cached {
            return Ok((c, become_));
        }
        let target = self.connect.build(conn.target, &conn.ssh_args)?.target;
        let c = self
            .rt
            .block_on(self.connector.connect(&target))
            .map_err(|e| e.to_string())?;
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), Arc::clone(&c));
        Ok((c, become_))
    }

    fn exec(
        &self,
        host: &str,
        script: &str,
        input: Option<StreamIn>,
        output: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        timeout: Duration,
    ) -> Result<String, String> {
        let (conn, become_) = self.connection(host)?;
        let req = ExecRequest {
            script: script.to_string(),
            stdin: None,
            become_,
            timeout,
        };
        let out = self
            .rt
            .block_on(conn.exec_streaming(req, input, output))
            .map_err(|e| match e {
                TransportError::Local { reason, .. } => format!("{host}: {reason}"),
                other => other.to_string(),
            })?;
        if out.exit_status != 0 {
            return Err(format!(
                "{host}: exit {}: {}",
                out.exit_status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Run `script` on `host` and write its stdout to `to` as it arrives; returns its stderr.
    /// `Err` names the host and says what failed (its stderr on a non-zero exit).
    pub fn download(
        &self,
        host: &str,
        script: &str,
        to: std::fs::File,
        timeout: Duration,
    ) -> Result<String, String> {
        let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(to));
        let r = self.exec(host, script, None, &mut w, timeout);
        let flushed = self.rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            w.flush().await?;
            w.into_inner().sync_all().await
        });
        let stderr = r?;
        flushed.map_err(|e| format!("{host}: writing the download: {e}"))?;
        Ok(stderr)
    }

    /// Run `script` on `host` with `from` as its stdin, streamed; its stdout is returned.
    pub fn upload(
        &self,
        host: &str,
        script: &str,
        from: std::fs::File,
        timeout: Duration,
    ) -> Result<String, String> {
        let input: StreamIn = Box::new(tokio::io::BufReader::with_capacity(
            256 * 1024,
            tokio::fs::File::from_std(from),
        ));
        let mut out: Vec<u8> = Vec::new();
        self.exec(host, script, Some(input), &mut out, timeout)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Close every session.
    pub fn close(&self) {
        let conns: Vec<_> =
            std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()))
                .into_values()
                .collect();
        self.rt.block_on(async {
            for c in conns {
                c.close().await;
            }
        });
    }
}
