//! Ansible projects as they are: ansible.cfg, host-key settings that ask for no checking.
//! Hermetic: temp dirs, the provisioner binary, no host contacted.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `provisioner ARGS` run in `cwd` with a private HOME and key, no ANSIBLE_* from outside.
fn provisioner(cwd: &Path, home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("PROVISIONER_KEY_FILE", home.join("key"))
        .env_remove("ANSIBLE_CONFIG")
        .env_remove("ANSIBLE_HOST_KEY_CHECKING")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn project() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let proj = d.path().join("proj");
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    write(
        &proj,
        "ansible.cfg",
        "[defaults]\ninventory = inventory/hosts.ini\nroles_path = ../shared_roles\n\
         remote_user = deploy\nhost_key_checking = False\nstdout_callback = yaml\n\
         [privilege_escalation]\nbecome = True\n",
    );
    write(
        &proj,
        "inventory/hosts.ini",
        "[web]\nweb1 ansible_host=10.0.0.5\nweb2 ansible_host=10.0.0.6\n",
    );
    write(
        &proj,
        "site.yml",
        "- hosts: web\n  gather_facts: false\n  roles:\n    - motd\n",
    );
    write(
        d.path(),
        "shared_roles/motd/tasks/main.yml",
        "- name: motd\n  copy:\n    dest: /etc/motd\n    content: hello\n",
    );
    (d, proj, home)
}

#[test]
fn a_project_with_ansible_cfg_validates_with_no_flags() {
    let (_d, proj, home) = project();
    let (code, out, err) = provisioner(&proj, &home, &["validate", "site.yml"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 task(s), 2 host(s)"), "{out}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("[WARNING]")).collect();
    assert_eq!(warnings.len(), 1, "one warning line per run: {err}");
    assert!(
        warnings[0].contains("host_key_checking = False in")
            && warnings[0].contains("ansible.cfg:5")
            && warnings[0].contains("accept-new"),
        "{err}"
    );
    // -v names the file and the keys it does not use.
    let (code, _, err) = provisioner(&proj, &home, &["validate", "-v", "site.yml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("as config file"), "{err}");
    assert!(err.contains("[defaults] stdout_callback"), "{err}");
}

#[test]
fn flags_override_ansible_cfg_and_bad_values_name_file_and_line() {
    let (_d, proj, home) = project();
    // -i wins over `inventory`: this one has no `web` group.
    write(&proj, "other.ini", "[db]\ndb1\n");
    let (code, out, err) = provisioner(&proj, &home, &["validate", "-i", "other.ini", "site.yml"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 host(s)"), "{out}");

    write(
        &proj,
        "ansible.cfg",
        "[defaults]\ninventory = inventory/hosts.ini\nforks = lots\n[privilege_escalation]\nbecome_method = su\n",
    );
    let (code, _, err) = provisioner(&proj, &home, &["validate", "site.yml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ansible.cfg:3: [defaults] forks = lots"),
        "{err}"
    );
    assert!(
        err.contains("ansible.cfg:5: [privilege_escalation] become_method = su"),
        "{err}"
    );

    std::fs::remove_file(proj.join("ansible.cfg")).unwrap();
    let (code, _, err) = provisioner(&proj, &home, &["validate", "site.yml"]);
    assert_eq!(code, 2);
    assert!(err.contains("no inventory"), "{err}");
}

#[test]
fn strict_host_key_checking_no_validates_with_one_warning_naming_the_state_dir() {
    let (_d, proj, home) = project();
    std::fs::remove_file(proj.join("ansible.cfg")).unwrap();
    write(
        &proj,
        "inventory/hosts.ini",
        "[web]\nweb1 ansible_host=10.0.0.5\nweb2 ansible_host=10.0.0.6\n\n[all:vars]\n\
         ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n",
    );
    write(
        &proj,
        "site.yml",
        "- hosts: web\n  gather_facts: false\n  tasks:\n    - debug: msg=hi\n",
    );
    let (code, out, err) = provisioner(
        &proj,
        &home,
        &["validate", "-i", "inventory/hosts.ini", "site.yml"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("[WARNING]")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("StrictHostKeyChecking=no")
            && warnings[0].contains("inventory/.hosts.state/known_hosts"),
        "{err}"
    );
}
