//! System modules: apt, package, apt_repository, apt_key, service, systemd, sysctl, user, group,
//! cron, command, shell, wait_for, uri, package_facts.
//!
//! Every module here is pure (see `modules/mod.rs`). Shared argument coercion lives in `args.rs`.
//! Fixtures (facts in → plan out, outputs in → result out) are under
//! `tests/fixtures/ops/system/`, run by `tests/ops_system_fixtures.rs`.

use super::Module;

pub mod apt;
pub mod apt_key;
pub mod apt_repository;
pub mod args;
pub mod command;
pub mod cron;
pub mod group;
pub mod sysctl;
pub mod systemd;
pub mod uri;
pub mod user;
pub mod wait_for;

/// Every module of this family.
pub fn modules() -> Vec<&'static dyn Module> {
    vec![
        &command::COMMAND,
        &command::SHELL,
        &apt::APT,
        &apt::PACKAGE,
        &apt::PACKAGE_FACTS,
        &apt_repository::APT_REPOSITORY,
        &systemd::SYSTEMD,
        &systemd::SERVICE,
        &sysctl::SYSCTL,
        &wait_for::WAIT_FOR,
        &group::GROUP,
        &user::USER,
        &cron::CRON,
        &uri::URI,
        &apt_key::APT_KEY,
    ]
}
