//! System modules: apt, package, apt_repository, apt_key, service, systemd, sysctl, user, group,
//! cron, command, shell, wait_for, uri, package_facts.

use super::Module;

/// Every module of this family.
pub fn modules() -> Vec<&'static dyn Module> {
    Vec::new()
}
