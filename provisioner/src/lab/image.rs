//! The cached base image: Debian 12 (bookworm) built once with debootstrap, keyed by a hash of
//! its recipe, under /var/cache/provisioner/images/.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::sys::{self, cmd};
use crate::error::Result;

pub const SUITE: &str = "bookworm";

/// Packages in the base image. python3-apt and cron: Ansible's apt, package_facts and cron
/// modules need them, and Ansible is our differential oracle.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    "ca-certificates",
    "cron",
    "iproute2",
    "procps",
    "iputils-ping",
    "less",
    "gnupg",
];

/// Bump when the customisation below changes in a way the file texts do not show.
const RECIPE_VERSION: &str = "1";

/// nspawn names the container's uplink `host0`; real servers and playbooks expect `eth0`.
pub const RENAME_UNIT_NAME: &str = "lab-host0-to-eth0.service";
pub const RENAME_UNIT: &str = "\
[Unit]
Description=Rename the container uplink host0 to eth0 (provisioner lab)
DefaultDependencies=no
ConditionPathExists=/sys/class/net/host0
Before=network-pre.target systemd-networkd.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link set host0 name eth0

[Install]
WantedBy=sysinit.target
";

const SUDOERS: &str = "ops ALL=(ALL:ALL) NOPASSWD: ALL\n";

const SSHD_CONF: &str = "\
# provisioner lab: key-only logins
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
";

const RESOLV_CONF: &str =
    "# provisioner lab: no DNS on the lab bridge; lab names are in /etc/hosts.\n";

/// The text whose hash names the image: everything that decides its content.
pub fn recipe() -> String {
    format!(
        "recipe {RECIPE_VERSION}\nsuite {SUITE}\nvariant minbase\npackages {}\n--unit\n{RENAME_UNIT}--sudoers\n{SUDOERS}--sshd\n{SSHD_CONF}--resolv\n{RESOLV_CONF}",
        PACKAGES.join(",")
    )
}

pub fn recipe_hash() -> String {
    let digest = Sha256::digest(recipe().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Where the image with this recipe lives; `rootfs/` inside is the tree to copy.
pub fn image_dir(cache_root: &Path) -> PathBuf {
    cache_root
        .join("images")
        .join(format!("{SUITE}-{}", recipe_hash()))
}

pub fn rootfs(cache_root: &Path) -> PathBuf {
    image_dir(cache_root).join("rootfs")
}

pub fn is_ready(cache_root: &Path) -> bool {
    image_dir(cache_root).join("READY").is_file()
}

/// Build the image unless it is cached. Builds in a temporary directory and renames it into
/// place, so an interrupted build never leaves a half image behind.
pub fn ensure(cache_root: &Path, mirror: &str) -> Result<bool> {
    if is_ready(cache_root) {
        return Ok(false);
    }
    let final_dir = image_dir(cache_root);
    let parent = final_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cache_root.to_path_buf());
    std::fs::create_dir_all(&parent).map_err(|e| sys::io_err("cannot create", &parent, e))?;
    let tmp = parent.join(format!(".build-{}-{}", recipe_hash(), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| sys::io_err("cannot remove", &tmp, e))?;
    }
    let root = tmp.join("rootfs");
    std::fs::create_dir_all(&root).map_err(|e| sys::io_err("cannot create", &root, e))?;
    let result = build(&root, mirror);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sys::write(&tmp.join("RECIPE"), &recipe())?;
    sys::write(&tmp.join("READY"), "")?;
    if final_dir.exists() {
        // Another build finished first; keep that one.
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(|e| sys::io_err("cannot rename", &tmp, e))?;
    }
    Ok(true)
}

fn build(root: &Path, mirror: &str) -> Result<()> {
    let root_s = root.display().to_string();
    sys::run(&mut cmd(
        "debootstrap",
        &[
            "--variant=minbase",
            &format!("--include={}", PACKAGES.join(",")),
            SUITE,
            &root_s,
            mirror,
        ],
    ))?;
    customise(root)
}

fn customise(root: &Path) -> Result<()> {
    let root_s = root.display().to_string();
    let chroot = |args: &[&str]| {
        let mut c = cmd("chroot", &[root_s.as_str()]);
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        sys::run(&mut c)
    };
    // The operator user: passwordless sudo, key logins only ('*' = no password, not locked).
    chroot(&["useradd", "--create-home", "--shell", "/bin/bash", "ops"])?;
    chroot(&["usermod", "--password", "*", "ops"])?;
    let sudoers = root.join("etc/sudoers.d/ops");
    sys::write(&sudoers, SUDOERS)?;
    sys::set_mode(&sudoers, 0o440)?;
    sys::write(&root.join("etc/ssh/sshd_config.d/lab.conf"), SSHD_CONF)?;
    sys::write(
        &root.join("etc/systemd/system").join(RENAME_UNIT_NAME),
        RENAME_UNIT,
    )?;
    chroot(&[
        "systemctl",
        "enable",
        "systemd-networkd.service",
        "ssh.service",
        RENAME_UNIT_NAME,
    ])?;
    // Per-host identity is made when a host is created: host keys, machine-id.
    for e in std::fs::read_dir(root.join("etc/ssh"))
        .map_err(|e| sys::io_err("cannot read", &root.join("etc/ssh"), e))?
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    sys::write(&root.join("etc/machine-id"), "")?;
    let _ = std::fs::remove_file(root.join("var/lib/dbus/machine-id"));
    // debootstrap copied this machine's resolver config; the lab has no DNS.
    let _ = std::fs::remove_file(root.join("etc/resolv.conf"));
    sys::write(&root.join("etc/resolv.conf"), RESOLV_CONF)?;
    // Sources are written per host (the mirror can differ between machines).
    let _ = std::fs::remove_file(root.join("etc/apt/sources.list"));
    chroot(&["apt-get", "clean"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_hash_is_stable_and_names_the_image_dir() {
        assert_eq!(recipe_hash(), recipe_hash());
        assert_eq!(recipe_hash().len(), 16);
        let dir = image_dir(Path::new("/var/cache/provisioner"));
        assert!(dir
            .to_string_lossy()
            .starts_with("/var/cache/provisioner/images/bookworm-"));
        assert!(recipe().contains("python3-apt") && recipe().contains("cron"));
    }

    #[test]
    fn rename_unit_runs_before_networking() {
        assert!(RENAME_UNIT.contains("Before=network-pre.target"));
        assert!(RENAME_UNIT.contains("ip link set host0 name eth0"));
    }
}
