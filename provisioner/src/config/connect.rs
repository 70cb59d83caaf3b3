//! Connection settings of a run, checked before any host is contacted: the defaults with the
//! state dir's `known_hosts`, every selected host's ssh options, and the one warning a run
//! gives when host-key checking was asked off.

use std::path::PathBuf;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::inventory::{HostConnection, Inventory};
use crate::transport::ConnectDefaults;

/// The run's connection defaults, with the state dir's `known_hosts` for inventories that say
/// `UserKnownHostsFile=/dev/null`.
pub fn with_state_dir(defaults: &ConnectDefaults, inventory: &[PathBuf]) -> ConnectDefaults {
    let mut c = defaults.clone();
    if c.state_known_hosts.is_none() {
        c.state_known_hosts = inventory
            .first()
            .map(|inv| crate::state::state_dir(inv).join("known_hosts"));
    }
    c
}

/// Hosts whose settings ask for no host-key checking, for the run's one warning.
#[derive(Default)]
pub struct HostKeyLeniency {
    settings: std::collections::BTreeSet<String>,
    files: std::collections::BTreeSet<String>,
}

impl HostKeyLeniency {
    /// Check `host`'s ssh options (static ones; templated ones are checked when connecting).
    pub fn check(
        &mut self,
        inv: &Inventory,
        host: &str,
        connect: &ConnectDefaults,
        conn: HostConnection,
        diags: &mut Diagnostics,
    ) {
        if !conn.templated.is_empty() {
            return;
        }
        match connect.build(conn.target, &conn.ssh_args) {
            Ok(b) if !b.checking_off.is_empty() => {
                self.settings.extend(b.checking_off);
                self.files.insert(b.target.known_hosts.map_or_else(
                    || "~/.ssh/known_hosts".to_string(),
                    |p| p.display().to_string(),
                ));
            }
            Ok(_) => {}
            Err(e) => diags.push(Diagnostic::new(
                inv.host(host).and_then(|h| h.loc.clone()),
                format!("host `{host}`: ansible_ssh_common_args/ansible_ssh_extra_args: {e}"),
            )),
        }
    }

    pub fn warning(&self) -> Option<String> {
        (!self.settings.is_empty()).then(|| {
            crate::transport::defaults::checking_off_warning(
                &self.settings.iter().cloned().collect::<Vec<_>>(),
                &self.files.iter().cloned().collect::<Vec<_>>(),
            )
        })
    }
}
