//! `provisioner lab`: local test clusters of real systemd hosts (systemd-nspawn + debootstrap).
