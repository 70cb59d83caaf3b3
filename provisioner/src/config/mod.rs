//! Run-wide settings that come from outside the inventory and the playbook: `ansible.cfg`
//! (raw INI in `ini`, resolved settings in `ansible_cfg`) and the environment. The CLI
//! overrides them; [`RunDefaults`] is what the engine sees.

pub mod ansible_cfg;
pub mod connect;
pub mod ini;

use std::time::Duration;

use crate::transport::ConnectDefaults;

/// Defaults below every playbook and inventory setting.
#[derive(Clone, Debug)]
pub struct RunDefaults {
    /// SSH user, key, timeout, host-key leniency and the asked sudo password.
    pub connect: ConnectDefaults,
    /// Whether a play without `gather_facts:` gathers facts (`gathering`).
    pub gather_facts: bool,
    /// `become` for tasks, plays and hosts that do not say.
    pub become_: bool,
    /// `become_user` for tasks, plays and hosts that do not say.
    pub become_user: Option<String>,
}

impl Default for RunDefaults {
    fn default() -> Self {
        RunDefaults {
            connect: ConnectDefaults::default(),
            gather_facts: true,
            become_: false,
            become_user: None,
        }
    }
}

impl RunDefaults {
    /// The defaults an `ansible.cfg` gives (the sudo password is asked for by the CLI).
    pub fn from_config(cfg: &ansible_cfg::AnsibleConfig) -> RunDefaults {
        RunDefaults {
            connect: ConnectDefaults {
                remote_user: cfg.remote_user.clone(),
                private_key_file: cfg.private_key_file.clone(),
                connect_timeout: cfg.timeout.map(Duration::from_secs),
                checking_off: match &cfg.host_key_checking {
                    Some((false, at)) if at.starts_with("ANSIBLE_") => Some(format!("{at}=False")),
                    Some((false, at)) => Some(format!("host_key_checking = False in {at}")),
                    _ => None,
                },
                state_known_hosts: None,
                become_password: None,
            },
            gather_facts: cfg.gathering != Some(ansible_cfg::Gathering::Explicit),
            become_: cfg.become_.unwrap_or(false),
            become_user: cfg.become_user.clone(),
        }
    }
}
