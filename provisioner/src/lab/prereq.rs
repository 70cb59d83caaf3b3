//! Prerequisites on the control machine: root, and the programs the lab runs.

use std::path::Path;

use super::sys;
use crate::error::{Error, Result};

/// (program, Debian package that provides it).
pub const PROGRAMS: &[(&str, &str)] = &[
    ("systemd-nspawn", "systemd-container"),
    ("debootstrap", "debootstrap"),
    ("apt-cacher-ng", "apt-cacher-ng"),
    ("ssh-keygen", "openssh-client"),
    ("ssh", "openssh-client"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("setsid", "util-linux"),
    ("chroot", "coreutils"),
];

/// Debian packages whose programs are missing (each once, in a stable order).
pub fn missing_packages(have: impl Fn(&str) -> bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (prog, pkg) in PROGRAMS {
        if !have(prog) && !out.contains(pkg) {
            out.push(pkg);
        }
    }
    out
}

pub fn install_command(pkgs: &[&str]) -> String {
    format!("apt-get install -y {}", pkgs.join(" "))
}

pub fn check_root() -> Result<()> {
    if sys::euid() == Some(0) {
        Ok(())
    } else {
        Err(Error::Usage(
            "provisioner lab must run as root (it makes bridges, cgroups and containers): run it with sudo".into(),
        ))
    }
}

/// Check everything; one message naming the exact install command.
pub fn check() -> Result<()> {
    check_root()?;
    let missing = missing_packages(sys::which);
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "provisioner lab needs packages that are not installed. Install them with:\n  {}\nor run `provisioner lab up --install-deps`",
        install_command(&missing)
    )))
}

/// The packages `lab up` needs that are not installed.
pub fn missing() -> Vec<&'static str> {
    missing_packages(sys::which)
}

/// `apt-get update` then install what is missing. Returns the packages installed. Package
/// scripts may not start services meanwhile (a system apt-cacher-ng would take port 3142): a
/// `policy-rc.d` that refuses is in place for the install, unless the machine has one.
pub fn install() -> Result<Vec<&'static str>> {
    check_root()?;
    let missing = missing_packages(sys::which);
    if missing.is_empty() {
        return Ok(missing);
    }
    let apt = |args: &[&str]| {
        let mut c = sys::cmd("apt-get", args);
        c.env("DEBIAN_FRONTEND", "noninteractive");
        sys::run(&mut c)
    };
    apt(&["update"])?;
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        sys::write(
            policy,
            "#!/bin/sh\n# provisioner lab: no service starts during its install\nexit 101\n",
        )?;
        sys::set_mode(policy, 0o755)?;
    }
    let mut args = vec!["install", "-y"];
    args.extend(missing.iter().copied());
    let res = apt(&args);
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    res?;
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_map_to_one_install_command() {
        let missing = missing_packages(|p| !matches!(p, "ssh" | "ssh-keygen" | "debootstrap"));
        assert_eq!(missing, ["debootstrap", "openssh-client"]);
        assert_eq!(
            install_command(&missing),
            "apt-get install -y debootstrap openssh-client"
        );
        assert!(missing_packages(|_| true).is_empty());
    }
}
