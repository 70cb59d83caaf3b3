//! End-to-end tests of `provisioner lab` against a running lab (`.ci/test` brings it up).
//! Needs PROVISIONER_LAB_INVENTORY (the lab's inventory); without it every test fails.
//! Each test leaves the lab as it found it. Run with `--test-threads=1`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Lab {
    name: String,
    inventory: PathBuf,
    key: String,
    known_hosts: String,
    /// (hostname, address, group)
    hosts: Vec<(String, String, String)>,
}

fn lab() -> Lab {
    let inventory = std::env::var("PROVISIONER_LAB_INVENTORY").unwrap_or_else(|_| {
        panic!(
            "PROVISIONER_LAB_INVENTORY is not set: these end-to-end tests need a running lab. \
             Run `bash .ci/test`, or `provisioner lab up --name ci` and set \
             PROVISIONER_LAB_INVENTORY=inventories/ci.yml"
        )
    });
    let inventory = PathBuf::from(inventory);
    let doc = provisioner::yaml::load_single(&inventory)
        .unwrap_or_else(|e| panic!("cannot read {}: {e:?}", inventory.display()))
        .to_json();
    let vars = &doc["all"]["vars"];
    let key = vars["ansible_ssh_private_key_file"]
        .as_str()
        .unwrap()
        .to_string();
    let common = vars["ansible_ssh_common_args"].as_str().unwrap();
    let known_hosts = common
        .split_whitespace()
        .find_map(|w| w.strip_prefix("UserKnownHostsFile="))
        .expect("UserKnownHostsFile in ansible_ssh_common_args")
        .to_string();
    let name = std::env::var("PROVISIONER_LAB_NAME")
        .ok()
        .or_else(|| vars["lab_name"].as_str().map(str::to_string))
        .expect("lab_name");
    let mut hosts = Vec::new();
    for group in ["masters", "agents", "extra"] {
        if let Some(map) = doc["all"]["children"][group]["hosts"].as_object() {
            for (h, v) in map {
                let ip = v["ansible_host"].as_str().unwrap().to_string();
                hosts.push((h.clone(), ip, group.to_string()));
            }
        }
    }
    assert!(!hosts.is_empty(), "no hosts in {}", inventory.display());
    Lab {
        name,
        inventory,
        key,
        known_hosts,
        hosts,
    }
}

impl Lab {
    fn ip(&self, host: &str) -> &str {
        &self.hosts.iter().find(|h| h.0 == host).unwrap().1
    }

    fn first_of(&self, group: &str) -> String {
        self.hosts
            .iter()
            .find(|h| h.2 == group)
            .map(|h| h.0.clone())
            .unwrap_or_else(|| panic!("the lab has no {group}"))
    }

    fn ssh_output(&self, host: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .args(["-i", &self.key])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .args(["-o", &format!("UserKnownHostsFile={}", self.known_hosts)])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=5"])
            .arg(format!("ops@{}", self.ip(host)))
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Run on a host; panic with its output unless it exits 0. Returns stdout.
    fn ssh(&self, host: &str, cmd: &str) -> String {
        let out = self.ssh_output(host, cmd);
        assert!(
            out.status.success(),
            "{host}: `{cmd}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `provisioner lab ARGS… --name <this lab>`; its stdout, or a panic with its output.
    fn provisioner(&self, args: &[&str]) -> String {
        let mut args = args.to_vec();
        args.extend(["--name", &self.name]);
        run_lab_ok(&args)
    }

    fn status_of(&self, host: &str) -> String {
        let table = self.provisioner(&["status"]);
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("{host} not in status:\n{table}"))
            .to_string()
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// TCP connect from `from` to `ip:22`.
fn reach_cmd(ip: &str) -> String {
    format!("timeout 3 bash -c '</dev/tcp/{ip}/22' && echo yes || echo no")
}

#[test]
fn every_host_answers_ssh_as_ops_with_sudo_and_strict_host_keys() {
    let lab = lab();
    for (h, _, _) in &lab.hosts {
        assert_eq!(lab.ssh(h, "whoami").trim(), "ops");
        assert_eq!(lab.ssh(h, "sudo -n whoami").trim(), "root");
        assert_eq!(lab.ssh(h, "hostname").trim(), h.as_str());
    }
}

#[test]
fn systemd_is_running_with_no_failed_units_and_eth0_is_up() {
    let lab = lab();
    for (h, ip, _) in &lab.hosts {
        let state = lab.ssh_output(h, "systemctl is-system-running");
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        assert!(state == "running" || state == "degraded", "{h}: {state}");
        assert_eq!(
            lab.ssh(h, "systemctl --failed --no-legend").trim(),
            "",
            "{h}"
        );
        let addr = lab.ssh(h, "ip -4 -o addr show dev eth0");
        assert!(addr.contains(&format!("inet {ip}/")), "{h}: {addr}");
        assert_eq!(
            lab.ssh(h, "ls /sys/class/net | grep -c host0 || true")
                .trim(),
            "0"
        );
    }
}

#[test]
fn every_host_reaches_every_other() {
    let lab = lab();
    for (from, _, _) in &lab.hosts {
        let script: Vec<String> = lab.hosts.iter().map(|(_, ip, _)| reach_cmd(ip)).collect();
        let out = lab.ssh(from, &script.join("; "));
        assert!(!out.contains("no"), "{from} cannot reach some host:\n{out}");
    }
}

#[test]
fn fuse_device_is_usable_inside() {
    let lab = lab();
    let h = lab.first_of("agents");
    lab.ssh(&h, "sudo sh -c 'exec 3<>/dev/fuse' && echo open");
}

#[test]
fn apt_installs_through_the_lab_proxy() {
    let lab = lab();
    let h = lab.first_of("masters");
    lab.ssh(
        &h,
        "sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq",
    );
    assert_eq!(lab.ssh(&h, "echo '{\"a\":1}' | jq .a").trim(), "1");
    let proxy = lab.ssh(&h, "cat /etc/apt/apt.conf.d/01proxy");
    assert!(proxy.contains(":3142"), "{proxy}");
}

#[test]
fn docker_daemon_starts_on_an_agent() {
    let lab = lab();
    let h = lab.first_of("agents");
    lab.ssh(
        &h,
        "sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io",
    );
    wait_until("docker active", Duration::from_secs(60), || {
        lab.ssh_output(&h, "systemctl is-active docker")
            .status
            .success()
    });
    let info = lab.ssh(&h, "sudo docker info");
    assert!(info.contains("Server Version"), "{info}");
    assert_eq!(lab.ssh(&h, "systemctl --failed --no-legend").trim(), "");
}

#[test]
fn stop_and_start_power_one_host() {
    let lab = lab();
    let h = lab.hosts.last().unwrap().0.clone();
    lab.provisioner(&["stop", &h]);
    assert!(
        lab.status_of(&h).contains("stopped"),
        "{}",
        lab.status_of(&h)
    );
    assert!(!lab.ssh_output(&h, "true").status.success());
    lab.provisioner(&["start", &h]);
    assert!(
        lab.status_of(&h).contains("running"),
        "{}",
        lab.status_of(&h)
    );
    assert_eq!(lab.ssh(&h, "hostname").trim(), h);
}

#[test]
fn cut_partitions_one_host_and_heal_restores_it() {
    let lab = lab();
    let victim = lab.first_of("agents");
    let other = lab.first_of("masters");
    let ip = lab.ip(&victim).to_string();
    lab.provisioner(&["cut", &victim]);
    let healed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(lab.status_of(&victim).contains("cut"));
        assert_eq!(lab.ssh(&other, &reach_cmd(&ip)).trim(), "no");
        assert!(!lab.ssh_output(&victim, "true").status.success());
    }));
    lab.provisioner(&["heal", &victim]);
    if let Err(p) = healed {
        std::panic::resume_unwind(p);
    }
    wait_until("healed host reachable", Duration::from_secs(30), || {
        lab.ssh_output(&victim, "true").status.success()
    });
    assert_eq!(lab.ssh(&other, &reach_cmd(&ip)).trim(), "yes");
    assert!(lab.status_of(&victim).contains("running"));
}

#[test]
fn a_second_up_changes_nothing() {
    let lab = lab();
    let before = std::fs::read_to_string(&lab.inventory).unwrap();
    let out = lab.provisioner(&["up"]);
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(std::fs::read_to_string(&lab.inventory).unwrap(), before);
}

#[test]
fn ansible_reads_the_inventory_with_the_expected_groups() {
    let lab = lab();
    let out = Command::new("ansible-inventory")
        .args(["-i", &lab.inventory.display().to_string(), "--list"])
        .output()
        .expect("ansible-inventory (ansible-core) is installed by .ci/test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let masters = v["masters"]["hosts"].as_array().unwrap().len();
    assert_eq!(v["zookeeper"]["hosts"].as_array().unwrap().len(), masters);
    assert_eq!(v["monitoring"]["hosts"].as_array().unwrap().len(), 1);
    assert!(!v["agents"]["hosts"].as_array().unwrap().is_empty());
}

/// `provisioner lab ARGS…` for any lab; returns (success, stdout, stderr).
fn run_lab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("lab")
        .args(args)
        .env_remove("PROVISIONER_LAB_NAME")
        .stdin(Stdio::null())
        .output()
        .expect("run provisioner");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_lab_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_lab(args);
    assert!(ok, "provisioner lab {args:?} failed:\n{stdout}{stderr}");
    stdout
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Lines of `ps` naming this path (nspawn machines, the apt proxy).
fn processes_naming(path: &str) -> Vec<String> {
    let ps = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(path))
        .map(str::to_string)
        .collect()
}

/// A second lab beside the test lab: both work at once, through the one apt proxy; `down` powers
/// it off and keeps its disks; `up` boots the same disks again; `destroy` removes its hosts,
/// bridge, state, inventory and its hold on the proxy, and leaves the first lab running.
#[test]
fn a_second_lab_runs_beside_this_one_and_destroy_removes_all_of_it() {
    const SIDE: &str = "e2e-side";
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("side.yml").display().to_string();
    let subnet = common::free_subnet((200..240).rev());
    let state_dir = format!("/var/lib/provisioner/labs/{SIDE}");
    run_lab(&["destroy", "--name", SIDE]); // leftovers of an interrupted run

    let body = std::panic::catch_unwind(|| {
        run_lab_ok(&[
            "up",
            "--name",
            SIDE,
            "--subnet",
            &subnet,
            "--masters",
            "1",
            "--agents",
            "1",
            "--bare",
            "--inventory",
            &inventory,
        ]);
        let ssh = |host: &str, cmd: &str| run_lab(&["ssh", "--name", SIDE, host, cmd]);
        // Both labs answer at the same time, each with its own hosts and proxy.
        assert_eq!(ssh("master1", "hostname").1.trim(), "master1");
        assert_eq!(
            lab.ssh(&lab.first_of("masters"), "hostname").trim(),
            "master1"
        );
        let side_inv = std::fs::read_to_string(&inventory).unwrap();
        let prefix = subnet.trim_end_matches("0.0/24");
        assert!(side_inv.contains(&format!("{prefix}0.11")), "{side_inv}");
        // One apt proxy for both labs: the side lab joins the one the test lab uses.
        let proxy = ssh(
            "agent1",
            "timeout 3 bash -c '</dev/tcp/10.255.255.254/3142' && echo up",
        );
        assert_eq!(
            proxy.1.trim(),
            "up",
            "the apt proxy from the side lab: {proxy:?}"
        );
        let daemons = processes_naming("apt-cacher-ng -c /var/lib/provisioner/apt-proxy");
        assert_eq!(
            daemons.len(),
            1,
            "one apt-cacher-ng for every lab: {daemons:?}"
        );
        let status = run_lab_ok(&["status", "--name", SIDE]);
        assert!(
            status.contains("http://10.255.255.254:3142 running")
                && status.contains("lab-e2e-side"),
            "{status}"
        );

        // down: everything off, the disks kept; the side lab leaves the proxy, which goes on
        // serving the test lab.
        ssh("master1", "echo kept | sudo tee /var/tmp/marker");
        run_lab_ok(&["down", "--name", SIDE]);
        let status = run_lab_ok(&["status", "--name", SIDE]);
        assert!(
            status.contains("running") && !status.contains("lab-e2e-side"),
            "{status}"
        );
        assert_eq!(
            processes_naming("apt-cacher-ng -c /var/lib/provisioner/apt-proxy"),
            daemons,
            "the same daemon goes on serving the test lab"
        );
        let first = lab.first_of("masters");
        assert_eq!(
            lab.ssh(
                &first,
                "timeout 3 bash -c '</dev/tcp/10.255.255.254/3142' && echo up"
            )
            .trim(),
            "up"
        );
        for host in ["master1", "agent1"] {
            let line = status
                .lines()
                .find(|l| l.split_whitespace().next() == Some(host))
                .unwrap_or_else(|| panic!("{host} not in status:\n{status}"));
            assert!(line.contains("stopped"), "{line}");
        }
        assert!(!ssh("master1", "true").0, "a powered-off host answered ssh");
        assert!(processes_naming(&format!("{state_dir}/machines")).is_empty());

        // up again: the same disks boot.
        let again = run_lab_ok(&["up", "--name", SIDE]);
        assert!(again.contains("booted [master1 agent1]"), "{again}");
        // A lab made --bare stays bare.
        assert!(
            again.contains("is bare") && !again.contains("applying the stack"),
            "{again}"
        );
        assert_eq!(ssh("master1", "cat /var/tmp/marker").1.trim(), "kept");

        // add / rebuild / remove: the lab's hosts change one at a time.
        let playbook = dir.path().join("hostname.yml");
        std::fs::write(
            &playbook,
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: hostname\n      changed_when: false\n",
        )
        .unwrap();
        let play = || {
            let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
                .args(["play", "-i", &inventory])
                .arg(&playbook)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        run_lab_ok(&["add", "agent2", "--group", "agents", "--name", SIDE]);
        assert_eq!(ssh("agent2", "hostname").1.trim(), "agent2");
        let side_inv = std::fs::read_to_string(&inventory).unwrap();
        assert!(
            side_inv.contains(&format!("agent2:\n          ansible_host: {prefix}0.13")),
            "{side_inv}"
        );
        assert_eq!(play().0, Some(0), "{}", play().1);
        // A rebuilt machine: same name and address, new host keys; known_hosts keeps the old
        // ones, so a run refuses it and shows both fingerprints.
        ssh("agent1", "echo old | sudo tee /var/tmp/marker");
        let rebuilt = run_lab_ok(&["rebuild", "agent1", "--name", SIDE]);
        assert!(rebuilt.contains("SHA256:"), "{rebuilt}");
        let (code, out) = play();
        assert_eq!(code, Some(3), "{out}");
        assert!(
            out.contains("agent1")
                && out.contains("host key changed")
                && out.matches("SHA256:").count() >= 2,
            "{out}"
        );
        let offered = out
            .split("the host offered ")
            .nth(1)
            .and_then(|t| t.split(|c: char| c.is_whitespace() || c == '.').next())
            .unwrap_or_default()
            .to_string();
        assert!(
            !offered.is_empty() && rebuilt.contains(&offered),
            "the offered key {offered:?} is one of the rebuilt ones: {rebuilt}\n{out}"
        );
        run_lab_ok(&["up", "--name", SIDE]);
        assert_eq!(play().0, Some(0), "lab up accepts the rebuilt host's keys");
        assert_eq!(
            ssh("agent1", "cat /var/tmp/marker 2>/dev/null || echo fresh")
                .1
                .trim(),
            "fresh",
            "a rebuilt host has a fresh disk"
        );
        run_lab_ok(&["remove", "agent2", "--name", SIDE]);
        let side_inv = std::fs::read_to_string(&inventory).unwrap();
        assert!(!side_inv.contains("agent2"), "{side_inv}");
        assert!(!run_lab_ok(&["status", "--name", SIDE]).contains("agent2"));
        assert!(
            !run_lab(&["remove", "agent1", "--name", SIDE]).0,
            "the last agent stays"
        );
        assert_eq!(play().0, Some(0));
    });

    let destroyed = run_lab(&["destroy", "--name", SIDE]);
    if let Err(p) = body {
        std::panic::resume_unwind(p);
    }
    assert!(destroyed.0, "destroy failed: {destroyed:?}");
    assert!(!link_exists("pl-e2e-side"), "the bridge is left");
    assert!(
        !std::path::Path::new(&state_dir).exists(),
        "{state_dir} is left"
    );
    assert!(
        !std::path::Path::new(&inventory).exists(),
        "the inventory is left"
    );
    assert_eq!(processes_naming(&state_dir), Vec::<String>::new());
    assert!(
        !std::path::Path::new("/var/lib/provisioner/apt-proxy/users/lab-e2e-side").exists(),
        "the side lab still holds the apt proxy"
    );
    let (ok, _, err) = run_lab(&["status", "--name", SIDE]);
    assert!(!ok && err.contains(SIDE), "{err}");
    // The first lab is untouched.
    for (h, _, _) in &lab.hosts {
        assert_eq!(lab.ssh(h, "hostname").trim(), h.as_str());
    }
}

/// Without root, `lab up` stops before it touches anything and says how to run it.
#[test]
fn lab_up_without_root_says_so_and_creates_nothing() {
    const NAME: &str = "e2e-noroot";
    // A copy of the binary that an unprivileged user may run, wherever the checkout lives.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("provisioner");
    std::fs::copy(env!("CARGO_BIN_EXE_provisioner"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["lab", "up", "--name", NAME, "--bare"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("must run as root") && err.contains("sudo"),
        "{err}"
    );
    assert!(!std::path::Path::new(&format!("/var/lib/provisioner/labs/{NAME}")).exists());
    assert!(!link_exists(&format!("pl-{NAME}")));
}
