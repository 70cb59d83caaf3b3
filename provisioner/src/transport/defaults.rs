//! Run-wide connection defaults (ansible.cfg, the environment, the inventory's state dir),
//! applied to one host's [`ConnectTarget`] together with its `ansible_ssh_*_args`.
//!
//! Host-key checking is never off. What Ansible users write to turn it off
//! (`-o StrictHostKeyChecking=no`, `host_key_checking = False`,
//! `ANSIBLE_HOST_KEY_CHECKING=False`) becomes accept-new: a new host's key is recorded, a
//! changed key is refused. `-o UserKnownHostsFile=/dev/null` keeps the keys in the inventory's
//! state dir instead, so that the next run still notices a changed key.

use std::path::PathBuf;
use std::time::Duration;

use super::args::apply_ssh_args;
use super::{ConnectTarget, HostKeyPolicy};
use crate::secret::Secret;

/// Defaults below every inventory connection variable.
#[derive(Clone, Debug, Default)]
pub struct ConnectDefaults {
    /// `remote_user` (used when the inventory sets no `ansible_user`).
    pub remote_user: Option<String>,
    /// `private_key_file` (used when the inventory sets no `ansible_ssh_private_key_file`).
    pub private_key_file: Option<PathBuf>,
    /// `timeout`: the SSH connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Where host-key checking was asked off for every host (e.g. `host_key_checking = False
    /// in ./ansible.cfg`); `None` when it was not. Applied as accept-new.
    pub checking_off: Option<String>,
    /// Where keys go when the inventory says `UserKnownHostsFile=/dev/null`: the state dir's
    /// `known_hosts`. Without it, `/dev/null` is refused.
    pub state_known_hosts: Option<PathBuf>,
    /// The sudo password asked for once (`become_ask_pass`), for hosts without their own.
    pub become_password: Option<Secret>,
}

/// One host's target and what its settings asked for.
#[derive(Clone, Debug)]
pub struct Built {
    pub target: ConnectTarget,
    /// Options of `ansible_ssh_*_args` that were not understood.
    pub ignored: Vec<String>,
    /// Why this host's key is checked accept-new although strict checking was not asked
    /// for: the settings that asked for no checking at all. Empty when none did.
    pub checking_off: Vec<String>,
}

impl ConnectDefaults {
    /// Apply the defaults, then the host's `ansible_ssh_common_args`/`ansible_ssh_extra_args`
    /// (which win), to `target` (built from the host's inventory variables).
    pub fn build(&self, mut target: ConnectTarget, ssh_args: &[String]) -> Result<Built, String> {
        if target.user.is_none() {
            target.user = self.remote_user.clone();
        }
        if target.identity_files.is_empty() {
            target.identity_files.extend(self.private_key_file.clone());
        }
        if let Some(t) = self.connect_timeout {
            target.connect_timeout = t;
        }
        if target.become_password.is_none() {
            target.become_password = self.become_password.clone();
        }
        let mut checking_off = Vec::new();
        if let Some(why) = &self.checking_off {
            if target.host_key_policy == HostKeyPolicy::Strict {
                target.host_key_policy = HostKeyPolicy::AcceptNew;
            }
            checking_off.push(why.clone());
        }
        let mut ignored = Vec::new();
        let mut null_known_hosts = false;
        for args in ssh_args {
            let a = apply_ssh_args(&mut target, args)?;
            null_known_hosts |= a.null_known_hosts();
            ignored.extend(a.ignored);
            checking_off.extend(a.checking_off);
        }
        if null_known_hosts && target.known_hosts.is_none() {
            match &self.state_known_hosts {
                Some(p) => target.known_hosts = Some(p.clone()),
                None => {
                    return Err(
                        "UserKnownHostsFile=/dev/null: there is no state dir to keep \
                                host keys in instead; name a known_hosts file"
                            .into(),
                    )
                }
            }
        }
        // An explicit `StrictHostKeyChecking=yes` (after a default of "off") is strict: nothing
        // to warn about (a `/dev/null` file is still redirected to the state dir).
        if target.host_key_policy == HostKeyPolicy::Strict {
            checking_off.clear();
        }
        Ok(Built {
            target,
            ignored,
            checking_off,
        })
    }
}

/// The one warning a run prints when any host asked for no host-key checking.
pub fn checking_off_warning(settings: &[String], known_hosts: &[String]) -> String {
    format!(
        "host-key checking is never off: {} is treated as accept-new (a new host's key is \
         recorded in {}; a changed key is still refused)",
        settings.join(", "),
        known_hosts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ConnectTarget {
        ConnectTarget::new("web1", "10.0.0.5")
    }

    #[test]
    fn defaults_fill_only_what_the_inventory_left_open() {
        let d = ConnectDefaults {
            remote_user: Some("deploy".into()),
            private_key_file: Some(PathBuf::from("/keys/cfg")),
            connect_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let b = d.build(base(), &[]).unwrap();
        assert_eq!(b.target.user.as_deref(), Some("deploy"));
        assert_eq!(b.target.identity_files, vec![PathBuf::from("/keys/cfg")]);
        assert_eq!(b.target.connect_timeout, Duration::from_secs(30));
        assert_eq!(b.target.host_key_policy, HostKeyPolicy::Strict);
        assert!(b.checking_off.is_empty());

        let mut t = base();
        t.user = Some("ops".into());
        t.identity_files = vec![PathBuf::from("/keys/inv")];
        let b = d.build(t, &["-l root".into()]).unwrap();
        assert_eq!(b.target.user.as_deref(), Some("root"), "ssh args win");
        assert_eq!(b.target.identity_files, vec![PathBuf::from("/keys/inv")]);
    }

    #[test]
    fn checking_off_from_the_config_is_accept_new_unless_a_host_says_yes() {
        let d = ConnectDefaults {
            checking_off: Some("host_key_checking = False (ansible.cfg)".into()),
            ..Default::default()
        };
        let b = d.build(base(), &[]).unwrap();
        assert_eq!(b.target.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(b.checking_off.len(), 1);
        let b = d
            .build(base(), &["-o StrictHostKeyChecking=yes".into()])
            .unwrap();
        assert_eq!(b.target.host_key_policy, HostKeyPolicy::Strict);
        assert!(b.checking_off.is_empty());
    }

    #[test]
    fn dev_null_known_hosts_goes_to_the_state_dir_or_is_refused() {
        let args = vec!["-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null".to_string()];
        let d = ConnectDefaults {
            state_known_hosts: Some(PathBuf::from("/inv/.prod.state/known_hosts")),
            ..Default::default()
        };
        let b = d.build(base(), &args).unwrap();
        assert_eq!(
            b.target.known_hosts,
            Some(PathBuf::from("/inv/.prod.state/known_hosts"))
        );
        assert_eq!(b.target.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(
            b.checking_off,
            vec!["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]
        );
        let err = ConnectDefaults::default().build(base(), &args).unwrap_err();
        assert!(err.contains("state dir"), "{err}");
    }
}
