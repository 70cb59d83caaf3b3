//! The lab's base image as a Docker image, for Vagrant's docker provider (`vagrant/Vagrantfile`),
//! and the lab's apt proxy started for such a cluster (`provisioner lab proxy`).
//!
//! The image is the cached debootstrapped base image (`image.rs`) plus a few files, streamed
//! with tar into `docker import`: no registry and no Dockerfile. The docker CLI talks to the
//! daemon named by `DOCKER_HOST` (the Vagrant setup runs a dockerd of its own; see the README).

use std::path::Path;
use std::process::Stdio;

use sha2::{Digest, Sha256};

use super::mirror::Mirrors;
use super::sys::{self, cmd};
use super::{image, machine, prereq, proxy, LabEvent, Sink};
use crate::error::{Error, Result};

pub const DEFAULT_TAG: &str = "provisioner/bookworm:latest";

pub const INIT_UNIT_NAME: &str = "provisioner-container-init.service";
pub const INIT_SCRIPT_PATH: &str = "usr/local/sbin/provisioner-container-init";

/// Runs at every boot, before sshd. Docker bind-mounts its own /etc/hosts, /etc/resolv.conf and
/// /etc/hostname over the container's; the stack manages these files (written by rename, which
/// a bind-mounted file refuses), so the container uses its own files. First boot: fresh SSH
/// host keys (the image has none: every machine is its own host; systemd makes the machine-id,
/// the image's is empty). Every boot: the cluster's key for `ops`, from the file Vagrant mounts.
pub const INIT_SCRIPT: &str = "\
#!/bin/sh
# provisioner: make this container its own host (vagrant docker provider).
set -eu
for f in /etc/hosts /etc/resolv.conf /etc/hostname; do
  if grep -q \" $f \" /proc/self/mountinfo; then umount \"$f\"; fi
done
name=$(hostname)
[ \"$(cat /etc/hostname 2>/dev/null)\" = \"$name\" ] || echo \"$name\" > /etc/hostname
grep -q '^127.0.0.1[[:space:]]*localhost' /etc/hosts 2>/dev/null || printf '127.0.0.1\\tlocalhost\\n' >> /etc/hosts
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
if [ -f /etc/provisioner/authorized_keys ]; then
  install -d -m 0700 -o ops -g ops /home/ops/.ssh
  install -m 0600 -o ops -g ops /etc/provisioner/authorized_keys /home/ops/.ssh/authorized_keys
fi
";

pub const INIT_UNIT: &str = "\
[Unit]
Description=Make this container its own host (provisioner, vagrant docker provider)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service systemd-networkd.service sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/provisioner-container-init

[Install]
WantedBy=sysinit.target
";

/// Files added to the base image: (path in the image, content, mode).
pub fn extra_files(m: &Mirrors) -> Vec<(String, String, u32)> {
    vec![
        (INIT_SCRIPT_PATH.into(), INIT_SCRIPT.into(), 0o755),
        (
            format!("etc/systemd/system/{INIT_UNIT_NAME}"),
            INIT_UNIT.into(),
            0o644,
        ),
        // The lab writes sources per host; a container image carries them (this machine's
        // mirror, reached through the cluster's apt proxy, which Vagrant configures).
        (
            "etc/apt/sources.list.d/debian.sources".into(),
            machine::sources_file(m),
            0o644,
        ),
    ]
}

/// Symlinks added to the base image: (path in the image, target). The boot unit is enabled;
/// systemd-networkd-wait-online is masked: docker configures the interfaces, networkd manages
/// none, and the wait would hold every unit ordered after network-online.target (the agents'
/// docker.service) for its two-minute timeout.
pub fn extra_links() -> Vec<(String, String)> {
    vec![
        (
            format!("etc/systemd/system/sysinit.target.wants/{INIT_UNIT_NAME}"),
            format!("/etc/systemd/system/{INIT_UNIT_NAME}"),
        ),
        (
            "etc/systemd/system/systemd-networkd-wait-online.service".into(),
            "/dev/null".into(),
        ),
    ]
}

/// `docker import --change` instructions: systemd as PID 1 (it stops on SIGRTMIN+3, which
/// Vagrant passes with `--stop-signal`: import cannot set STOPSIGNAL), and /var/lib/docker as a
/// volume (the agents' dockerd cannot put overlay2 on the container's overlay root; Vagrant
/// removes the volume with the container).
pub fn import_changes(stamp: &str) -> Vec<String> {
    vec![
        "CMD [\"/sbin/init\"]".into(),
        "ENV container=docker".into(),
        format!("ENV PROVISIONER_IMAGE={stamp}"),
        "VOLUME /var/lib/docker".into(),
    ]
}

/// What decides the image's content: the base image's recipe and the files added.
pub fn stamp(m: &Mirrors) -> String {
    let mut h = Sha256::new();
    h.update(image::recipe_hash().as_bytes());
    for (p, text, mode) in extra_files(m) {
        h.update(format!("{p}\n{mode:o}\n{text}\n").as_bytes());
    }
    for (p, target) in extra_links() {
        h.update(format!("{p} -> {target}\n").as_bytes());
    }
    for c in import_changes("") {
        h.update(c.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stamp of an image the daemon has under `tag`, if any.
fn existing_stamp(tag: &str) -> Option<String> {
    let out = sys::run(&mut cmd(
        "docker",
        &[
            "image",
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            tag,
        ],
    ))
    .ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix("PROVISIONER_IMAGE="))
        .map(str::to_string)
}

/// Build (or reuse) the base image, then import it into Docker as `tag` unless an image with
/// the same content is already there. Returns true when it imported.
pub fn ensure_image(tag: &str, sink: Sink<'_>) -> Result<bool> {
    if !sys::which("docker") {
        return Err(Error::Usage(
            "the docker CLI is not installed (and DOCKER_HOST must name a running dockerd)".into(),
        ));
    }
    let rootfs = super::image_path(sink)?;
    let mirrors = super::mirror::detect()?;
    let stamp = stamp(&mirrors);
    if existing_stamp(tag).as_deref() == Some(stamp.as_str()) {
        sink(LabEvent::Note(format!(
            "docker image {tag} is up to date ({stamp})"
        )));
        return Ok(false);
    }
    sink(LabEvent::Step(format!("importing {tag} into docker")));
    let extra = tempfile::tempdir()
        .map_err(|e| Error::Environment(format!("cannot make a temporary directory: {e}")))?;
    for (p, text, mode) in extra_files(&mirrors) {
        let path = extra.path().join(&p);
        sys::write(&path, &text)?;
        sys::set_mode(&path, mode)?;
    }
    for (p, target) in extra_links() {
        let link = extra.path().join(&p);
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).map_err(|e| sys::io_err("cannot create", dir, e))?;
        }
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| sys::io_err("cannot make the link", &link, e))?;
    }
    let mut paths: Vec<String> = extra_files(&mirrors).into_iter().map(|f| f.0).collect();
    paths.extend(extra_links().into_iter().map(|l| l.0));
    let clash: Vec<&String> = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(rootfs.join(p)).is_ok())
        .collect();
    if !clash.is_empty() {
        return Err(Error::Environment(format!(
            "the base image already has {clash:?}: the docker image cannot add them"
        )));
    }
    let entries = appended(&paths, |p| rootfs.join(p).exists());
    import(&rootfs, extra.path(), &entries, tag, &stamp)?;
    sink(LabEvent::Done(format!("docker image {tag} ({stamp})")));
    Ok(true)
}

/// The entries of `extra` to append to the rootfs's tar: its files and symlinks, and the
/// directories the rootfs lacks, parents first. `docker import` refuses a path twice.
pub fn appended(extra: &[String], in_rootfs: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in extra {
        let parts: Vec<&str> = p.split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if !in_rootfs(&dir) && !out.contains(&dir) {
                out.push(dir);
            }
        }
        out.push(p.clone());
    }
    out
}

/// tar of the rootfs, then the extra entries, into `docker import`.
fn import(rootfs: &Path, extra: &Path, entries: &[String], tag: &str, stamp: &str) -> Result<()> {
    let mut tar = cmd("tar", &["--numeric-owner", "-C"]);
    tar.arg(rootfs).args(["-cf", "-", "."]);
    tar.arg("-C")
        .arg(extra)
        .args(["--owner=0", "--group=0", "--no-recursion"]);
    tar.args(entries);
    let shown = sys::describe(&tar);
    let mut tar = tar
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::Environment(format!("cannot run `{shown}`: {e}")))?;
    let stdout = tar
        .stdout
        .take()
        .ok_or_else(|| Error::Environment("tar has no stdout".into()))?;
    let mut import = cmd("docker", &["import"]);
    for c in import_changes(stamp) {
        import.arg("--change").arg(c);
    }
    import.args(["-", tag]);
    let shown_import = sys::describe(&import);
    let out = import
        .stdin(stdout)
        .output()
        .map_err(|e| Error::Environment(format!("cannot run `{shown_import}`: {e}")))?;
    let tar_ok = tar.wait().map(|s| s.success()).unwrap_or(false);
    if !out.status.success() || !tar_ok {
        return Err(Error::Environment(format!(
            "`{shown} | {shown_import}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A Vagrant cluster joins the machine's one apt proxy (as a lab does, see [`proxy`]), as the
/// user named after `dir`; its machines reach it at [`proxy::url`] through their gateway.
/// Fetches the indexes once, as `lab up` does.
pub fn proxy_start(dir: &Path, sink: Sink<'_>) -> Result<()> {
    prereq::check()?;
    let mirrors = super::mirror::detect()?;
    let p = proxy::Proxy::shared();
    let user = proxy::User::dir(&super::absolute(dir)?);
    if p.acquire(&user, &mirrors)? {
        sink(LabEvent::Done(format!(
            "apt proxy on {} (backend {})",
            proxy::url(),
            mirrors.debian
        )));
    } else {
        sink(LabEvent::Note(format!(
            "apt proxy on {} already runs",
            proxy::url()
        )));
    }
    for problem in p.warm(&machine::index_urls(&mirrors)) {
        sink(LabEvent::Done(format!(
            "apt proxy: could not pre-fetch {problem} (hosts will fetch it themselves)"
        )));
    }
    Ok(())
}

/// The Vagrant cluster of `dir` leaves the apt proxy; the last user stops it.
pub fn proxy_stop(dir: &Path, sink: Sink<'_>) -> Result<()> {
    let p = proxy::Proxy::shared();
    let user = proxy::User::dir(&super::absolute(dir)?);
    if p.release(&user.name)? {
        sink(LabEvent::Done(format!(
            "apt proxy on {} stopped",
            proxy::url()
        )));
    } else {
        sink(LabEvent::Note(format!(
            "left the apt proxy on {}; it still serves {}",
            proxy::url(),
            p.user_names().join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors() -> Mirrors {
        Mirrors {
            debian: "http://m.example/debian".into(),
            security: "http://m.example/debian-security".into(),
        }
    }

    #[test]
    fn the_image_adds_its_init_and_the_mirrors_sources() {
        let files = extra_files(&mirrors());
        let paths: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                INIT_SCRIPT_PATH,
                "etc/systemd/system/provisioner-container-init.service",
                "etc/apt/sources.list.d/debian.sources"
            ]
        );
        assert!(files[2].1.contains("URIs: http://m.example/debian\n"));
        assert!(INIT_UNIT.contains("Before=ssh.service"));
        assert!(INIT_UNIT.contains(&format!("ExecStart=/{INIT_SCRIPT_PATH}")));
    }

    #[test]
    fn the_init_script_takes_back_dockers_files_and_makes_host_keys() {
        for f in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
            assert!(INIT_SCRIPT.contains(f), "{f}");
        }
        assert!(INIT_SCRIPT.contains("umount \"$f\""));
        assert!(INIT_SCRIPT.contains("ssh-keygen -A"));
        assert!(INIT_SCRIPT.contains("/etc/provisioner/authorized_keys"));
    }

    #[test]
    fn only_what_the_base_image_lacks_is_appended() {
        let have = ["etc", "etc/apt", "usr", "usr/local"];
        let got = appended(
            &["etc/apt/x.sources".into(), "usr/local/sbin/init".into()],
            |p| have.contains(&p),
        );
        assert_eq!(
            got,
            ["etc/apt/x.sources", "usr/local/sbin", "usr/local/sbin/init"]
        );
    }

    #[test]
    fn the_stamp_follows_the_content() {
        let a = stamp(&mirrors());
        assert_eq!(a, stamp(&mirrors()));
        assert_eq!(a.len(), 16);
        let other = Mirrors {
            debian: "http://n.example/debian".into(),
            ..mirrors()
        };
        assert_ne!(a, stamp(&other));
        assert!(import_changes(&a).contains(&format!("ENV PROVISIONER_IMAGE={a}")));
        assert!(import_changes(&a).contains(&"VOLUME /var/lib/docker".to_string()));
        assert!(extra_links()
            .iter()
            .any(|(p, t)| p.ends_with("systemd-networkd-wait-online.service") && t == "/dev/null"));
    }
}
