//! Each host's session (opened once, one cell per host) and its commands; fact gathering.

use super::*;

impl Runner {
    /// The host's session, opened on first use.
    pub(super) async fn connection(
        &self,
        host: &str,
    ) -> Result<Arc<dyn Connection>, TransportError> {
        let cell = {
            let mut conns = match self.conns.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            conns.entry(host.to_string()).or_default().clone()
        };
        // Steps of this host wait for its handshake; other hosts do not. A failed connect
        // leaves the cell empty: the next step tries again.
        cell.get_or_try_init(|| async {
            let target = self.connect_target(host)?;
            // Any failure to open the session (including a handshake timeout) means
            // unreachable.
            self.connector.connect(&target).await.map_err(|e| match e {
                TransportError::Timeout { host, what, after } => TransportError::Connect {
                    host,
                    address: target.address.clone(),
                    reason: format!("timed out after {after:?} while {what}"),
                },
                other => other,
            })
        })
        .await
        .cloned()
    }

    pub(super) fn connect_target(&self, host: &str) -> Result<ConnectTarget, TransportError> {
        let bad = |reason: String| TransportError::Connect {
            host: host.to_string(),
            address: host.to_string(),
            reason,
        };
        let conn = self
            .inventory
            .connection(host)
            .map_err(|d| bad(d.to_string().trim().to_string()))?;
        let conn = if conn.templated.is_empty() {
            conn
        } else {
            let vars = self.task_vars(host, 0, None);
            let rendered = self
                .templar
                .render_value(&Value::Object(self.inventory.host_vars(host)), &vars)
                .map_err(|e| bad(e.to_string()))?;
            let Value::Object(rendered) = rendered else {
                return Err(bad("connection vars did not template to a mapping".into()));
            };
            let home = std::env::var_os("HOME").map(PathBuf::from);
            crate::model::inventory::HostConnection::from_vars(
                host,
                None,
                &rendered,
                home.as_deref(),
            )
            .map_err(|d| bad(d.to_string().trim().to_string()))?
        };
        // Options we do not act on (e.g. ControlMaster) are ignored, as Ansible's ssh would.
        let built = self.cfg.defaults.connect.build(conn.target, &conn.ssh_args);
        Ok(built.map_err(bad)?.target)
    }

    pub(super) async fn exec(
        &self,
        host: &str,
        script: String,
        stdin: Option<Vec<u8>>,
        become_: Option<Become>,
        no_log: bool,
    ) -> Result<ExecOutput, TransportError> {
        let conn = self.connection(host).await?;
        if self.cfg.verbose {
            let command = if no_log {
                "(output hidden: no_log)".to_string()
            } else {
                script.clone()
            };
            self.emit(RunEvent::Command {
                host: host.to_string(),
                command,
            });
        }
        conn.exec(ExecRequest {
            script,
            stdin,
            become_,
            timeout: self.cfg.command_timeout,
        })
        .await
    }

    /// Gather `ansible_*` facts.
    pub(super) async fn gather_facts(&self, host: &str, play: usize) -> StepOutcome {
        let started = std::time::Instant::now();
        let current = self.with_state(host, |s| s.facts_current);
        let report = |status: TaskStatus, msg: Option<String>| {
            self.emit(RunEvent::TaskFinished(TaskReport {
                host: host.to_string(),
                play,
                task: "Gathering Facts".into(),
                loc: self.plays[play].loc.to_string(),
                status,
                changed: false,
                item: None,
                msg,
                output: false,
                diffs: vec![],
                handler: false,
                duration_ms: started.elapsed().as_millis() as u64,
            }))
        };
        if current {
            report(TaskStatus::Ok, None);
            return StepOutcome::Ok;
        }
        let out = self
            .exec(
                host,
                facts::host::gather_script().to_string(),
                None,
                None,
                false,
            )
            .await;
        match out {
            Err(e) => {
                report(TaskStatus::Unreachable, Some(e.to_string()));
                StepOutcome::Unreachable
            }
            Ok(o) if o.exit_status != 0 => {
                report(
                    TaskStatus::Failed,
                    Some(format!(
                        "fact gathering failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                );
                StepOutcome::Failed
            }
            Ok(o) => match facts::host::parse_host_facts(&String::from_utf8_lossy(&o.stdout)) {
                Ok(f) => {
                    self.with_state(host, |s| {
                        s.facts = Arc::new(f);
                        s.facts_current = true;
                    });
                    report(TaskStatus::Ok, None);
                    StepOutcome::Ok
                }
                Err(e) => {
                    report(TaskStatus::Failed, Some(format!("cannot parse facts: {e}")));
                    StepOutcome::Failed
                }
            },
        }
    }
}
