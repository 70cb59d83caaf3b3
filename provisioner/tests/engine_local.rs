//! The whole engine (validate → plan → walk → modules → probes → actions) against a fake
//! transport that runs each command locally with `sh`, inside a temp dir per "host".
//! Hermetic: nothing leaves the temp dir, nothing crosses a network.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provisioner::exec::events::Collector;
use provisioner::exec::events::{RunEvent, TaskStatus};
use provisioner::exec::Mode;
use provisioner::history;
use provisioner::report::recap::Recap;
use provisioner::run::{self as api, RunIo, RunSpec, Target};
use provisioner::transport::{
    BoxFuture, ConnectTarget, Connection, Connector, ExecOutput, ExecRequest, TransportError,
};

/// Runs scripts locally; `become_` is ignored (tests run as the current user).
struct Local {
    log: Arc<Mutex<Vec<(String, String)>>>,
    host: String,
}

impl Connection for Local {
    fn exec(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecOutput, TransportError>> {
        Box::pin(async move {
            // What the host was asked: the script, then what it reads on stdin (the probes).
            let stdin = String::from_utf8_lossy(req.stdin.as_deref().unwrap_or_default());
            self.log
                .lock()
                .unwrap()
                .push((self.host.clone(), format!("{}\n{stdin}", req.script)));
            let mut child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&req.script)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let input = req.stdin.clone().unwrap_or_default();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(&input).await;
            });
            let out = child.wait_with_output().await.unwrap();
            let _ = writer.await;
            Ok(ExecOutput {
                exit_status: out.status.code().unwrap_or(255) as u32,
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[derive(Default)]
struct LocalConnector {
    log: Arc<Mutex<Vec<(String, String)>>>,
    unreachable: Vec<String>,
}

impl Connector for LocalConnector {
    fn connect<'a>(
        &'a self,
        target: &'a ConnectTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(async move {
            if self.unreachable.contains(&target.name) {
                return Err(TransportError::Connect {
                    host: target.name.clone(),
                    address: target.address.clone(),
                    reason: "connection refused".into(),
                });
            }
            let c: Arc<dyn Connection> = Arc::new(Local {
                log: self.log.clone(),
                host: target.name.clone(),
            });
            Ok(c)
        })
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(playbook: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("hosts");
        std::fs::create_dir_all(root.join("h1")).unwrap();
        std::fs::create_dir_all(root.join("h2")).unwrap();
        std::fs::write(
            dir.path().join("inventory.ini"),
            format!(
                "[web]\nh1\nh2\n\n[all:vars]\nroot={}\nsecret_password=hunter2hunter2\n",
                root.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::write(
            dir.path().join("templates/app.conf.j2"),
            "host={{ inventory_hostname }}\nport={{ port }}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("site.yml"), playbook).unwrap();
        Fixture { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn host_file(&self, host: &str, f: &str) -> PathBuf {
        self.path("hosts").join(host).join(f)
    }

    /// The content of a file of a "host".
    fn read(&self, host: &str, f: &str) -> String {
        std::fs::read_to_string(self.host_file(host, f)).unwrap()
    }

    fn request(&self, mode: Mode) -> RunSpec {
        let mut spec = RunSpec::new(
            "test",
            vec![self.path("inventory.ini")],
            Target::Playbook(self.path("site.yml")),
            mode,
        );
        spec.diff = true;
        spec.forks = 4;
        spec.command_timeout = Duration::from_secs(60);
        spec
    }

    fn run(
        &self,
        mode: Mode,
        connector: LocalConnector,
    ) -> (Vec<RunEvent>, Recap, Vec<(String, String)>) {
        self.run_req(self.request(mode), connector)
    }

    fn run_req(
        &self,
        spec: RunSpec,
        connector: LocalConnector,
    ) -> (Vec<RunEvent>, Recap, Vec<(String, String)>) {
        run_spec(&spec, connector)
    }
}

/// Run `spec` through the run API, collecting its events.
fn run_spec(
    spec: &RunSpec,
    connector: LocalConnector,
) -> (Vec<RunEvent>, Recap, Vec<(String, String)>) {
    let events = Collector::default();
    let log = connector.log.clone();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let io = RunIo {
        sinks: vec![Box::new(events.clone())],
        connector: Some(Arc::new(connector)),
        cancel: Some(rx),
    };
    let outcome = api::run(spec, io).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.reporting_errors.is_empty());
    let log = log.lock().unwrap().clone();
    (events.events(), outcome.recap, log)
}

const CONVERGE: &str = r#"
- hosts: web
  gather_facts: false
  vars:
    port: 8080
  tasks:
    - name: config dir
      file: path={{ root }}/{{ inventory_hostname }}/etc state=directory mode=0755
    - name: config file
      template: src=app.conf.j2 dest={{ root }}/{{ inventory_hostname }}/etc/app.conf mode=0640
      notify: restart app
    - name: a line
      lineinfile:
        path: "{{ root }}/{{ inventory_hostname }}/etc/extra"
        line: "enabled = true"
        create: true
    - name: per-item files
      copy:
        dest: "{{ root }}/{{ inventory_hostname }}/{{ item }}.txt"
        content: "{{ item }}\n"
      loop: [a, b]
    - name: read it back
      command: cat {{ root }}/{{ inventory_hostname }}/a.txt
      register: out
      changed_when: false
    - name: assert on it
      assert:
        that: out.stdout == "a"
    - name: skipped on h2
      copy: dest={{ root }}/{{ inventory_hostname }}/only-h1 content=x
      when: inventory_hostname == "h1"
  handlers:
    - name: restart app
      shell: echo restarted >> {{ root }}/{{ inventory_hostname }}/handler.log
"#;

fn statuses(events: &[RunEvent], host: &str) -> Vec<(String, TaskStatus)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskFinished(r) if r.host == host && r.item.is_none() => {
                Some((r.task.clone(), r.status))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn apply_converges_and_the_second_run_changes_nothing() {
    let f = Fixture::new(CONVERGE);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(f.read("h1", "etc/app.conf"), "host=h1\nport=8080\n");
    assert_eq!(f.read("h2", "etc/extra"), "enabled = true\n");
    assert!(f.host_file("h1", "only-h1").exists());
    assert!(!f.host_file("h2", "only-h1").exists());
    assert_eq!(f.read("h1", "handler.log"), "restarted\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f.host_file("h1", "etc/app.conf"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);

    let (events2, recap2, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(
        recap2.total_changed(),
        0,
        "second run: {:#?}",
        statuses(&events2, "h1")
    );
    assert_eq!(
        f.read("h1", "handler.log"),
        "restarted\n",
        "handler did not fire again"
    );
}

#[test]
fn check_mode_reports_changes_with_diffs_and_sends_no_action() {
    let f = Fixture::new(CONVERGE);
    let (events, recap, log) = f.run(Mode::Check, LocalConnector::default());
    assert!(recap.total_changed() > 0);
    assert!(
        !f.host_file("h1", "etc").exists(),
        "check mode created a directory"
    );
    // Only probe scripts (read-only state queries) were sent: no action.
    assert!(!log.is_empty());
    for (_, script) in &log {
        assert!(
            script.starts_with("LC_ALL=C; export LC_ALL\n"),
            "a non-probe script ran in check mode:\n{script}"
        );
    }
    let diffs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskFinished(r) if !r.diffs.is_empty() => Some(r.diffs.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        diffs.iter().any(|d| d.after.contains("port=8080")),
        "{diffs:#?}\n{events:#?}"
    );
}

#[test]
fn unreachable_host_does_not_stop_the_other() {
    let f = Fixture::new(CONVERGE);
    let conn = LocalConnector {
        unreachable: vec!["h2".into()],
        ..Default::default()
    };
    let (_, recap, _) = f.run(Mode::Apply, conn);
    assert_eq!(recap.hosts["h2"].unreachable, 1);
    assert_eq!(recap.hosts["h1"].failed, 0);
    assert!(f.host_file("h1", "etc/app.conf").exists());
    assert_eq!(
        recap.exit_code(false),
        provisioner::error::ExitCode::Unreachable
    );
}

#[test]
fn failing_task_stops_that_host_keeps_its_handlers_pending_and_the_next_run_fires_them() {
    let pb = CONVERGE.replace(
        "    - name: a line\n",
        "    - name: fail on h2 when asked\n      fail: msg=boom\n      when: inventory_hostname == 'h2' and (fail_h2 | default(true))\n    - name: a line\n",
    );
    let f = Fixture::new(&pb);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.hosts["h2"].failed, 1);
    assert!(
        !f.host_file("h2", "etc/extra").exists(),
        "h2 stopped at the failure"
    );
    assert!(f.host_file("h1", "etc/extra").exists(), "h1 went on");
    assert!(
        !f.host_file("h2", "handler.log").exists(),
        "h2's handler did not run"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::HostStopped { host, .. } if host == "h2")));
    // The handler stays pending in the state dir; the next run (now passing) fires it.
    let mut req_vars = serde_json::Map::new();
    req_vars.insert("fail_h2".into(), serde_json::json!(false));
    let req = RunSpec {
        extra_vars: req_vars,
        ..f.request(Mode::Apply)
    };
    let _ = f.run_req(req, LocalConnector::default());
    assert_eq!(f.read("h2", "handler.log"), "restarted\n");
}

#[test]
fn secrets_never_reach_events() {
    let pb = r#"
- hosts: h1
  gather_facts: false
  tasks:
    - debug: msg="the password is {{ secret_password }}"
    - copy: dest={{ root }}/h1/s content="{{ secret_password }}"
      no_log: true
"#;
    let f = Fixture::new(pb);
    let (events, _, _) = f.run(Mode::Check, LocalConnector::default());
    let text = format!("{events:?}");
    assert!(!text.contains("hunter2hunter2"), "{text}");
    assert!(text.contains("********"));
    // The history is one more sink behind the same redactor: censored there too, to the byte.
    let db = f.path(".inventory.state/history.db");
    let stored: Vec<u8> = ["", "-wal"]
        .iter()
        .flat_map(|s| std::fs::read(format!("{}{s}", db.display())).unwrap_or_default())
        .collect();
    assert!(!stored.is_empty());
    assert!(!String::from_utf8_lossy(&stored).contains("hunter2hunter2"));
    let c = history::open_read(&db).unwrap();
    let run = history::resolve(&c, "last").unwrap();
    let json: String = c
        .query_row(
            "SELECT group_concat(json, ' ') FROM events WHERE run_id = ?1",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    assert!(json.contains("********"), "{json}");
}

/// Run `spec` through the run API; its outcome.
fn outcome_of(spec: &RunSpec) -> api::Outcome {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let io = RunIo {
        sinks: vec![],
        connector: Some(Arc::new(LocalConnector::default())),
        cancel: Some(rx),
    };
    api::run(spec, io).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_run_is_recorded_in_the_history_with_its_task_results() {
    let f = Fixture::new(CONVERGE);
    let applied = outcome_of(&f.request(Mode::Apply));
    assert_eq!(applied.exit, provisioner::error::ExitCode::Ok);
    assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
    let mut plan = f.request(Mode::Check);
    plan.command = "plan".into();
    let planned = outcome_of(&plan);
    assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);

    let c = history::open_read(&f.path(".inventory.state/history.db")).unwrap();
    let runs = history::list(&c, None).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, planned.run_id);
    assert_eq!(
        (runs[0].command.as_str(), runs[0].mode.as_str()),
        ("plan", "check")
    );
    assert_eq!(runs[0].hosts_changed, 0, "converged: nothing would change");
    assert_eq!(runs[1].id, applied.run_id);
    assert_eq!(runs[1].exit_code, Some(0));
    assert_eq!(runs[1].hosts_changed, 2);
    assert!(runs[1].ended.is_some());
    assert_eq!(
        runs[1].bundle_versions, None,
        "a playbook run has no bundle"
    );
    let shown = history::show(&c, &applied.run_id).unwrap();
    let config: Vec<_> = shown
        .tasks
        .iter()
        .filter(|t| t.task == "config file")
        .collect();
    assert_eq!(config.len(), 2, "one per host");
    assert!(config
        .iter()
        .all(|t| t.status == "changed" && t.diff_hash.is_some()));
    // What changed: the apply's tasks, none from the converged plan.
    let drift = history::drift(&c, None).unwrap();
    assert!(!drift.is_empty());
    assert!(drift.iter().all(|d| d.run == applied.run_id));
    let d = history::diff(&c, &applied.run_id, &planned.run_id).unwrap();
    assert!(d
        .tasks
        .iter()
        .any(|t| t.task == "config file" && t.b.as_ref().is_some_and(|b| b.status == "ok")));
}

#[test]
fn cli_history_reads_the_runs_back_as_tables_and_json() {
    let bin = env!("CARGO_BIN_EXE_provisioner");
    let f = Fixture::new(CONVERGE);
    let inv = f.path("inventory.ini");
    let history = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("history")
            .args(args)
            .arg("-i")
            .arg(&inv)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, _, err) = history(&["list"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no history yet in "), "{err}");

    let applied = outcome_of(&f.request(Mode::Apply));
    let planned = outcome_of(&f.request(Mode::Check));
    let (code, out, err) = history(&["list", "--output", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs[0]["id"], planned.run_id.as_str());
    assert_eq!(runs[1]["id"], applied.run_id.as_str());
    assert_eq!(runs[1]["exit_code"], 0);
    let (_, out, _) = history(&["list"]);
    assert!(out.starts_with("RUN "), "{out}");
    assert!(out.contains(&applied.run_id), "{out}");

    let (code, out, err) = history(&["show", "last", "--output", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["run"]["id"], planned.run_id.as_str());
    assert!(shown["tasks"].as_array().is_some_and(|t| !t.is_empty()));
    let (_, out, _) = history(&["show", &applied.run_id[..16]]);
    assert!(out.contains("config file"), "{out}");

    let (code, out, err) = history(&["diff", &applied.run_id, "last", "--output", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(d["tasks"].as_array().is_some_and(|t| !t.is_empty()));

    let (code, out, err) = history(&["drift", "--since", "1h", "--output", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(rows.as_array().is_some_and(|r| !r.is_empty()));
    let (code, _, err) = history(&["drift", "--since", "yesterday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--since yesterday"), "{err}");
}

#[test]
fn a_history_db_that_cannot_be_opened_leaves_the_exit_code_and_warns_once() {
    let f = Fixture::new(CONVERGE);
    // A directory where the database should be.
    std::fs::create_dir_all(f.path(".inventory.state/history.db")).unwrap();
    let o = outcome_of(&f.request(Mode::Apply));
    assert_eq!(o.exit, provisioner::error::ExitCode::Ok);
    assert!(o.reporting_errors.is_empty(), "{:?}", o.reporting_errors);
    assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
    assert!(
        o.warnings[0].starts_with("history: not recorded: "),
        "{:?}",
        o.warnings
    );
    assert_eq!(f.read("h1", "etc/app.conf"), "host=h1\nport=8080\n");
}

#[test]
fn invalid_playbook_is_rejected_before_any_host_is_contacted() {
    let f = Fixture::new(
        "- hosts: web\n  tasks:\n    - copy: dest=/x contnet=y\n    - shell: echo {{ unclosed\n",
    );
    let err = api::validate(&f.request(Mode::Apply)).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("site.yml:3:"), "{text}");
    assert!(text.contains("contnet"), "{text}");
    assert!(text.contains("site.yml:4:"), "{text}");
}

#[test]
fn prefetched_probes_do_not_outlive_an_earlier_action() {
    // The lineinfile probe is gathered up front (file absent); the shell task then creates the
    // file, so lineinfile must probe again and append instead of creating a new file.
    let pb = r#"
- hosts: h1
  gather_facts: false
  tasks:
    - shell: echo one > {{ root }}/h1/f
    - lineinfile: path={{ root }}/h1/f line=two create=yes
"#;
    let f = Fixture::new(pb);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(f.read("h1", "f"), "one\ntwo\n");
}

#[test]
fn a_file_change_drops_the_prefetched_answers_for_its_path_only() {
    // Answers for unrelated paths survive a file module's change (fewer round trips on a first
    // apply); answers for the changed path, below it or above it must not.
    let pb = r#"
- hosts: h1
  gather_facts: false
  tasks:
    - copy: dest={{ root }}/h1/f content="one\n" force=no
    - lineinfile: path={{ root }}/h1/f line=two
    - file: path={{ root }}/h1/d/sub state=directory
    - copy: dest={{ root }}/h1/d/sub/g content=x
    - stat: path={{ root }}/h1/d
      register: d
    - copy: dest={{ root }}/h1/other content="{{ d.stat.isdir }}"
"#;
    let f = Fixture::new(pb);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(f.read("h1", "f"), "one\ntwo\n");
    assert_eq!(f.read("h1", "other"), "True");
    // A second run changes nothing.
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.total_changed(), 0);
}

#[test]
fn a_change_to_a_symlinks_target_drops_the_prefetched_answers_read_through_the_link() {
    // Regression: answers were kept per path, so a stat read through a symlink (gathered up
    // front) survived a change to the file it points at, and reported the old content.
    let pb = r#"
- hosts: h1
  gather_facts: false
  tasks:
    - copy: dest={{ root }}/h1/real.conf content="new\n"
    - stat: path={{ root }}/h1/link.conf follow=yes
      register: via_link
    - stat: path={{ root }}/h1/dirlink/real.conf
      register: via_dir
    - copy: dest={{ root }}/h1/seen content="{{ via_link.stat.checksum }} {{ via_dir.stat.checksum }}"
"#;
    let f = Fixture::new(pb);
    std::fs::write(f.host_file("h1", "real.conf"), "old\n").unwrap();
    std::os::unix::fs::symlink("real.conf", f.host_file("h1", "link.conf")).unwrap();
    std::os::unix::fs::symlink(".", f.host_file("h1", "dirlink")).unwrap();
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    let sha1_new: String = {
        use sha1::Digest;
        let d = sha1::Sha1::digest(b"new\n");
        d.iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(f.read("h1", "seen"), format!("{sha1_new} {sha1_new}"));
}

#[test]
fn copy_src_is_planned_from_its_checksum_and_sent_only_when_it_differs() {
    // A large local artifact used to be base64-encoded into every host's task (420 MB peak on
    // a no-op of the stack); now an unchanged file is only compared by sha1.
    let pb = r#"
- hosts: web
  gather_facts: false
  tasks:
    - copy: src=blob.bin dest={{ root }}/{{ inventory_hostname }}/blob mode=0640
"#;
    let f = Fixture::new(pb);
    let blob = |seed: u8| -> Vec<u8> { (0..300_000u32).map(|i| (i as u8) ^ seed).collect() };
    std::fs::create_dir_all(f.path("files")).unwrap();
    std::fs::write(f.path("files/blob.bin"), blob(0)).unwrap();
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(recap.total_changed(), 2);
    assert_eq!(std::fs::read(f.host_file("h2", "blob")).unwrap(), blob(0));
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.total_changed(), 0, "unchanged by checksum");
    // A new local file: check mode shows the change and writes nothing, apply writes it.
    std::fs::write(f.path("files/blob.bin"), blob(7)).unwrap();
    let (_, recap, _) = f.run(Mode::Check, LocalConnector::default());
    assert_eq!(recap.total_changed(), 2);
    assert_eq!(std::fs::read(f.host_file("h1", "blob")).unwrap(), blob(0));
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.total_changed(), 2);
    assert_eq!(std::fs::read(f.host_file("h1", "blob")).unwrap(), blob(7));
}

#[test]
fn delegate_to_runs_on_the_delegated_host_with_the_original_hosts_vars() {
    let pb = r#"
- hosts: h1
  gather_facts: false
  tasks:
    - name: delegated
      shell: echo from-{{ inventory_hostname }} > {{ root }}/h2/delegated
      delegate_to: h2
"#;
    let f = Fixture::new(pb);
    let (events, recap, log) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(f.read("h2", "delegated"), "from-h1\n");
    assert!(
        log.iter().any(|(h, s)| h == "h2" && s.contains("from-h1")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|(h, _)| h == "h1"),
        "nothing ran on h1: {log:?}"
    );
}

#[test]
fn tags_select_tasks_and_block_tags_reach_their_children() {
    let pb = r#"
- hosts: h1
  gather_facts: false
  tasks:
    - copy: dest={{ root }}/h1/a content=a
      tags: [a]
    - copy: dest={{ root }}/h1/b content=b
      tags: [b]
    - copy: dest={{ root }}/h1/always content=x
      tags: [always]
    - block:
        - copy: dest={{ root }}/h1/in-block content=x
      tags: [a]
"#;
    let f = Fixture::new(pb);
    let req = RunSpec {
        tags: vec!["a".into()],
        ..f.request(Mode::Apply)
    };
    let _ = f.run_req(req, LocalConnector::default());
    assert!(f.host_file("h1", "a").exists());
    assert!(!f.host_file("h1", "b").exists());
    assert!(f.host_file("h1", "always").exists());
    assert!(f.host_file("h1", "in-block").exists());
}

#[test]
fn block_when_is_evaluated_for_each_task_in_it() {
    // As in Ansible: the first task changes the variable the block's `when` reads, so the
    // second task of the block is skipped.
    let pb = r#"
- hosts: h1
  gather_facts: false
  tasks:
    - block:
        - set_fact: go=false
        - copy: dest={{ root }}/h1/second content=x
      when: go | default(true) | bool
"#;
    let f = Fixture::new(pb);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert!(!f.host_file("h1", "second").exists());
}

#[test]
fn undefined_variables_are_reported_per_task_before_anything_runs() {
    let pb = r#"
- hosts: web
  gather_facts: false
  vars:
    greeting: "hello {{ nmae }}"
  tasks:
    - debug: msg="{{ greeting }}"
    - debug: msg="{{ typo_var }}"
    - debug: msg="{{ maybe | default('fine') }} {{ out.stdout }}"
      when: other is defined
    - command: echo hi
      register: out
    - debug: msg="{{ item }} {{ inventory_hostname }} {{ groups['web'] }}"
      loop: [1]
"#;
    let f = Fixture::new(pb);
    let err = api::validate(&f.request(Mode::Apply)).expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains("site.yml:7:7: `greeting` reads `nmae`, which is undefined for hosts h1, h2"),
        "{text}"
    );
    assert!(
        text.contains("site.yml:8:7: `typo_var` is undefined for hosts h1, h2"),
        "{text}"
    );
    assert_eq!(
        text.matches("undefined for").count(),
        2,
        "no false positives:\n{text}"
    );
}

#[test]
fn run_once_runs_on_the_first_running_host_of_the_batch() {
    // Regression: run_once ran on whichever host reached it first.
    let pb = r#"
- hosts: web
  gather_facts: false
  tasks:
    - fail: msg=down
      when: inventory_hostname == fail_host | default('none')
    - shell: echo {{ inventory_hostname }} > {{ root }}/once
      run_once: true
      register: once
    - copy: dest={{ root }}/{{ inventory_hostname }}/saw content="{{ once.cmd }}"
"#;
    for _ in 0..5 {
        let f = Fixture::new(pb);
        let (events, _, _) = f.run(Mode::Apply, LocalConnector::default());
        assert_eq!(
            std::fs::read_to_string(f.path("hosts/once")).unwrap(),
            "h1\n",
            "{events:#?}"
        );
        // Both hosts got the registered result.
        assert!(f.read("h2", "saw").contains("echo h1"));
    }
    let f = Fixture::new(pb);
    let mut extra = serde_json::Map::new();
    extra.insert("fail_host".into(), serde_json::json!("h1"));
    let req = RunSpec {
        extra_vars: extra,
        ..f.request(Mode::Apply)
    };
    let _ = f.run_req(req, LocalConnector::default());
    assert_eq!(
        std::fs::read_to_string(f.path("hosts/once")).unwrap(),
        "h2\n"
    );
}

#[test]
fn ansible_play_hosts_leaves_out_a_host_that_failed_in_an_earlier_play() {
    // Regression: a host that failed in the first play stayed in `ansible_play_hosts`, so a
    // cross-host check of the next play (`map('extract', hostvars, ...)`) failed on the hosts
    // that were still running (the CI lab: one agent's apt failed, the other failed on that).
    let pb = r#"
- hosts: web
  gather_facts: false
  tasks:
    - fail: msg=down
      when: inventory_hostname == 'h1'
- hosts: web
  gather_facts: false
  serial: 1
  tasks:
    - set_fact:
        mark: "{{ inventory_hostname }}"
    - copy:
        dest: "{{ root }}/{{ inventory_hostname }}/seen"
        content: "{{ ansible_play_hosts | map('extract', hostvars, 'mark') | join(',') }} {{ ansible_play_batch | join(',') }} {{ ansible_play_hosts_all | join(',') }}"
"#;
    let f = Fixture::new(pb);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.hosts["h1"].failed, 1);
    assert_eq!(recap.hosts["h2"].failed, 0, "{events:#?}");
    assert_eq!(f.read("h2", "seen"), "h2 h2 h1,h2");
}

#[test]
fn task_names_are_templated_with_the_first_hosts_vars_as_ansible_shows_them() {
    // Regression: `TASK [cni | bridge network {{ cni_network_name }}]` was shown raw.
    // ansible-playbook 2.14 shows "write the web config" and "on localhost" for these.
    let pb = r#"
- hosts: web
  gather_facts: false
  vars:
    what: the web config
  tasks:
    - name: write {{ what }}
      copy: dest={{ root }}/{{ inventory_hostname }}/a content=x
    - name: on {{ inventory_hostname }}
      copy: dest={{ root }}/{{ inventory_hostname }}/b content=x
"#;
    let f = Fixture::new(pb);
    let (events, _, _) = f.run(Mode::Apply, LocalConnector::default());
    // Every host's results carry the title the first host got (one header per task).
    for h in ["h1", "h2"] {
        let names: Vec<String> = statuses(&events, h).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "write the web config");
        assert!(names[1] == "on h1" || names[1] == "on h2", "{names:?}");
        assert_eq!(names[1], statuses(&events, "h1")[1].0);
    }
}

// ---------------------------------------------------------------- the bundled stack

/// A stack run of `tests/fixtures/stack` (a tiny site.yml) over the local transport.
struct StackFixture {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl StackFixture {
    fn new(inventory: &str) -> StackFixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("hosts");
        for h in ["m1", "m2", "m3", "a1"] {
            std::fs::create_dir_all(root.join(h)).unwrap();
        }
        std::fs::write(
            dir.path().join("inventory.ini"),
            format!("{inventory}\n[all:vars]\nroot={}\n", root.display()),
        )
        .unwrap();
        StackFixture {
            dir,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn stack_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stack")
    }

    fn request(&self, stack_dir: &std::path::Path) -> RunSpec {
        let mut spec = RunSpec::new(
            "test",
            vec![self.dir.path().join("inventory.ini")],
            Target::Stack {
                dir: Some(stack_dir.to_path_buf()),
                play: None,
            },
            Mode::Apply,
        );
        spec.forks = 4;
        spec.command_timeout = Duration::from_secs(60);
        spec
    }

    fn host_file(&self, host: &str, f: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("hosts").join(host).join(f)).ok()
    }
}

#[test]
fn a_stack_run_sees_the_bundle_and_the_default_groups() {
    let f = StackFixture::new("[masters]\nm1\nm2\nm3\n[agents]\na1\n");
    let req = f.request(&StackFixture::stack_dir());
    let validated = api::validate(&req).unwrap_or_else(|e| panic!("{e}"));
    // zookeeper = the masters, monitoring = the first master.
    assert_eq!(validated.play_hosts, [vec!["m1", "m2", "m3"], vec!["m1"]]);
    let _ = run_spec(&req, LocalConnector::default());
    let bundle = cluster_core::bundle::Bundle::builtin().unwrap();
    let zk = bundle.component("zookeeper").unwrap();
    for h in ["m1", "m2", "m3"] {
        assert_eq!(
            f.host_file(h, "zk").as_deref(),
            Some(
                format!(
                    "{} {} m1,m2,m3\n",
                    zk.version.value, zk.ports["client"].value
                )
                .as_str()
            ),
            "{h}"
        );
    }
    assert_eq!(f.host_file("a1", "zk"), None);
    assert_eq!(f.host_file("m1", "monitoring").as_deref(), Some("9090\n"));
    assert_eq!(f.host_file("m2", "monitoring"), None);
}

#[test]
fn a_stack_run_reports_topology_and_bundle_problems_together() {
    // An even ensemble, a colocated host, local Mesos without the artifact, a broken bundle:
    // all reported at once, nothing run.
    let stack = tempfile::tempdir().unwrap();
    let src = StackFixture::stack_dir();
    std::fs::copy(src.join("site.yml"), stack.path().join("site.yml")).unwrap();
    for d in ["probe/tasks", "probe/defaults"] {
        std::fs::create_dir_all(stack.path().join(d)).unwrap();
        std::fs::copy(
            src.join(d).join("main.yml"),
            stack.path().join(d).join("main.yml"),
        )
        .unwrap();
    }
    let bad_bundle = cluster_core::BUNDLE_YAML.replace("after: [zookeeper]", "after: [zookeper]");
    std::fs::write(stack.path().join("bundle.yaml"), bad_bundle).unwrap();
    let f = StackFixture::new(
        "[masters]\nm1\nm2\n[agents]\nm2\na1\n[zookeeper]\nm1\nm2\n[all:vars]\nmesos_source=local\n",
    );
    let req = f.request(stack.path());
    let err = match api::validate(&req) {
        Ok(_) => panic!("prepared an invalid stack run"),
        Err(e) => e,
    };
    assert_eq!(err.exit_code() as u8, 2);
    let text = err.to_string();
    let inv = f.dir.path().join("inventory.ini").display().to_string();
    for want in [
        format!("{inv}: the ZooKeeper ensemble has 2 members (m1, m2)"),
        format!("{inv}: m2 is in both `masters` and `agents`"),
        format!("{inv}: a1: mesos_source is `local` but mesos_local_artifact"),
        "bundle.yaml:".to_string(),
        "`after` names unknown component `zookeper`".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn cli_bundle_show_and_stack_validation() {
    let bin = env!("CARGO_BIN_EXE_provisioner");
    let out = std::process::Command::new(bin)
        .args(["bundle", "show"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ORDER COMPONENT"), "{text}");
    assert!(text.contains("zookeeper"), "{text}");
    assert!(text.contains("client=2181"), "{text}");

    let f = StackFixture::new("[masters]\nm1\n[agents]\na1\n");
    let inv = f.dir.path().join("inventory.ini");
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg("-i")
        .arg(&inv)
        .arg("--stack-dir")
        .arg(StackFixture::stack_dir())
        .env("XDG_CACHE_HOME", f.cache.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 play(s)"));
    // `play` still needs a playbook.
    let out = std::process::Command::new(bin)
        .arg("play")
        .arg("-i")
        .arg(&inv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`play` runs a playbook"));
    // An even ensemble through the CLI: exit 2, nothing run.
    let g = StackFixture::new("[masters]\nm1\nm2\n[agents]\na1\n");
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg("-i")
        .arg(g.dir.path().join("inventory.ini"))
        .arg("--stack-dir")
        .arg(StackFixture::stack_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be odd"));
}

/// Regression: the built-in stack's `mesos_install` read `mesos_local_artifact` in a task that
/// also runs for AVENTER installs, so `validate` refused every production inventory (which
/// does not set it). Both sources must validate with the real roles.
#[test]
fn the_builtin_stack_validates_for_aventer_and_for_a_local_artifact() {
    let bin = env!("CARGO_BIN_EXE_provisioner");
    let cache = tempfile::tempdir().unwrap();
    for extra in [
        "",
        "[all:vars]\nmesos_source=local\nmesos_local_artifact=/srv/mesos.tar.gz\nmesos_dns_local_artifact=/srv/mesos-dns\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.ini");
        std::fs::write(&inv, format!("[masters]\nm1\nm2\nm3\n[agents]\na1\n{extra}")).unwrap();
        let out = std::process::Command::new(bin)
            .arg("validate")
            .arg("-i")
            .arg(&inv)
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The order of play headers and task results in the event stream: (play index) for
/// `PlayStarted`, (play index, task) for `TaskFinished`.
fn play_order(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::PlayStarted { play, .. } => Some(format!("PLAY {play}")),
            RunEvent::TaskFinished(r) if r.host == "h1" => Some(format!("{} {}", r.play, r.task)),
            _ => None,
        })
        .collect()
}

#[test]
fn each_play_header_comes_when_the_play_begins_not_all_up_front() {
    // Regression: every PLAY header was printed before the first task of the run.
    let pb = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: one
      debug: msg=1
- hosts: nomatch
  tasks:
    - debug: msg=never
- hosts: web
  gather_facts: false
  tasks:
    - name: two
      debug: msg=2
- hosts: nomatch
  tasks:
    - debug: msg=never
"#;
    let f = Fixture::new(pb);
    let (events, _, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(
        play_order(&events),
        ["PLAY 0", "0 one", "PLAY 1", "PLAY 2", "2 two", "PLAY 3"]
    );

    // A run that stops (every host failed) announces no later play.
    let pb = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: down
      fail: msg=down
- hosts: web
  gather_facts: false
  tasks:
    - debug: msg=never
"#;
    let f = Fixture::new(pb);
    let (events, _, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(play_order(&events), ["PLAY 0", "0 down"]);
}

#[test]
fn meta_tasks_show_a_header_once_and_no_host_result_as_ansible_does() {
    // Regression: `meta: flush_handlers` reported `ok: [host]` and counted in the recap;
    // ansible-playbook 2.14 prints only `TASK [meta]` (then the handlers) and ok=3 here.
    let pb = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: touch
      copy: dest={{ root }}/{{ inventory_hostname }}/a content=x
      notify: h
    - meta: flush_handlers
    - name: flush now
      meta: flush_handlers
    - meta: noop
    - name: after
      copy: dest={{ root }}/{{ inventory_hostname }}/b content=x
  handlers:
    - name: h
      copy: dest={{ root }}/{{ inventory_hostname }}/h content=x
"#;
    let f = Fixture::new(pb);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::MetaTask { task, .. } => Some(format!("TASK {task}")),
            RunEvent::TaskFinished(r) if r.host == "h1" => Some(r.task.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        [
            "touch",
            "TASK meta",
            "h",
            "TASK flush now",
            "TASK meta",
            "after"
        ]
    );
    for h in ["h1", "h2"] {
        assert_eq!(recap.hosts[h].ok, 3, "{h}: {events:#?}");
        assert_eq!(recap.hosts[h].changed, 3);
    }
}

/// A sink that dies on the first event, as a buggy renderer would.
struct DyingSink;

impl provisioner::exec::events::Sink for DyingSink {
    fn event(&mut self, _: &provisioner::exec::events::Event) -> Result<(), String> {
        panic!("the renderer died")
    }
}

#[test]
fn a_reporting_failure_makes_plan_exit_code_exit_non_zero() {
    // Regression: the exit code came from the renderer task (`render.await.unwrap_or_default()`),
    // so a renderer that died gave an empty recap and exit 0: "no drift" while knowing nothing.
    let f = Fixture::new(
        "- hosts: web\n  gather_facts: false\n  tasks:\n    - copy: dest={{ root }}/{{ inventory_hostname }}/f content=x\n",
    );
    let _ = f.run(Mode::Apply, LocalConnector::default());
    let mut plan = f.request(Mode::Check);
    plan.changes_are_drift = true;
    let healthy = run_spec(&plan, LocalConnector::default());
    assert_eq!(
        healthy.1.exit_code(true),
        provisioner::error::ExitCode::Ok,
        "converged: no drift"
    );
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let io = RunIo {
        sinks: vec![Box::new(DyingSink)],
        connector: Some(Arc::new(LocalConnector::default())),
        cancel: Some(rx),
    };
    let outcome = api::run(&plan, io).unwrap();
    assert_eq!(outcome.reporting_errors.len(), 1, "{outcome:?}");
    assert!(outcome.reporting_errors[0].contains("the renderer died"));
    assert_ne!(outcome.exit, provisioner::error::ExitCode::Ok);
    // The recap is still the run's, folded from the events, not the dead renderer's.
    assert!(outcome.recap.hosts["h1"].ok > 0);
}

#[test]
fn an_inline_play_runs_one_tasks_file_of_a_stack_role_on_chosen_hosts() {
    let stack = tempfile::tempdir().unwrap();
    std::fs::write(
        stack.path().join("site.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks: []\n",
    )
    .unwrap();
    std::fs::create_dir_all(stack.path().join("r/tasks")).unwrap();
    std::fs::write(
        stack.path().join("r/tasks/main.yml"),
        "- copy: dest={{ root }}/{{ inventory_hostname }}/main content=x\n",
    )
    .unwrap();
    std::fs::write(
        stack.path().join("r/tasks/other.yml"),
        "- copy: dest={{ root }}/{{ inventory_hostname }}/other content={{ bundle.schema }}\n",
    )
    .unwrap();
    let f = StackFixture::new("[masters]\nm1\n[agents]\na1\n");
    let mut spec = f.request(stack.path());
    spec.target = Target::Stack {
        dir: Some(stack.path().to_path_buf()),
        play: Some(api::InlinePlay {
            tasks_from: Some("other".into()),
            become_: false,
            ..api::InlinePlay::role("r other", "agents", "r")
        }),
    };
    let (events, recap, _) = run_spec(&spec, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(f.host_file("a1", "other").as_deref(), Some("1"));
    assert_eq!(f.host_file("a1", "main"), None);
    // Roles before it (their main tasks) and its parameters, as a play's `roles:` gives them.
    std::fs::create_dir_all(stack.path().join("first/tasks")).unwrap();
    std::fs::write(
        stack.path().join("first/tasks/main.yml"),
        "- copy: dest={{ root }}/{{ inventory_hostname }}/first content=before\n",
    )
    .unwrap();
    std::fs::write(
        stack.path().join("r/tasks/other.yml"),
        "- copy: dest={{ root }}/{{ inventory_hostname }}/other content={{ phase }}\n",
    )
    .unwrap();
    let mut with_params = api::InlinePlay {
        tasks_from: Some("other".into()),
        become_: false,
        before: vec!["first".into()],
        ..api::InlinePlay::role("r other", "a1", "r")
    };
    with_params
        .params
        .insert("phase".into(), serde_json::json!("two"));
    spec.target = Target::Stack {
        dir: Some(stack.path().to_path_buf()),
        play: Some(with_params),
    };
    let (events, recap, _) = run_spec(&spec, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(f.host_file("a1", "first").as_deref(), Some("before"));
    assert_eq!(f.host_file("a1", "other").as_deref(), Some("two"));
    assert_eq!(f.host_file("m1", "other"), None);
    // A tasks file the role lacks is bad input, named.
    if let Target::Stack { play: Some(p), .. } = &mut spec.target {
        p.tasks_from = Some("nope".into());
    }
    let err = api::validate(&spec).expect_err("invalid");
    assert!(err.to_string().contains("no tasks file `nope`"), "{err}");
}

#[test]
fn every_event_has_an_envelope_and_handlers_announce_their_start() {
    let f = Fixture::new(CONVERGE);
    let events = Collector::default();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let io = RunIo {
        sinks: vec![Box::new(events.clone())],
        connector: Some(Arc::new(LocalConnector {
            unreachable: vec!["h2".into()],
            ..Default::default()
        })),
        cancel: Some(rx),
    };
    let outcome = api::run(&f.request(Mode::Apply), io).unwrap();
    let got = events.envelopes();
    assert!(got.len() > 10);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "gap-free");
        assert_eq!(&*e.run, outcome.run_id.as_str());
    }
    let json: Vec<serde_json::Value> = got
        .iter()
        .map(|e| serde_json::from_str(&provisioner::report::json_line(e)).unwrap())
        .collect();
    // Every finish event says how long it took.
    for j in &json {
        if j["event"] == "task_finished" || j["event"] == "run_finished" {
            assert!(j["duration_ms"].is_u64(), "{j}");
        }
    }
    // The handler announces its start like a task does.
    assert!(json.iter().any(|j| j["event"] == "task_started"
        && j["handler"] == true
        && j["task"] == "restart app"
        && j["host"] == "h1"));
    // Stop reasons are typed.
    assert!(json.iter().any(|j| j["event"] == "host_stopped"
        && j["host"] == "h2"
        && j["reason"] == "unreachable"));
    // The consumers' fields keep their names.
    let fin = json
        .iter()
        .find(|j| j["event"] == "task_finished" && j["host"] == "h1")
        .unwrap();
    for k in ["status", "task", "host", "version", "run", "seq", "time"] {
        assert!(fin.get(k).is_some(), "{k} missing in {fin}");
    }
}

#[test]
fn an_apply_refuses_while_another_run_holds_the_lock_and_plan_needs_none() {
    let f = Fixture::new(CONVERGE);
    let state = provisioner::state::StateDir::for_inventory(&f.path("inventory.ini"));
    let held = state.lock("apply", None).unwrap();
    let connector = LocalConnector::default();
    let log = connector.log.clone();
    let io = RunIo {
        connector: Some(Arc::new(connector)),
        ..Default::default()
    };
    let err = api::run(&f.request(Mode::Apply), io).unwrap_err();
    assert_eq!(err.exit_code(), provisioner::error::ExitCode::Locked);
    assert_eq!(err.exit_code() as u8, 5);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())) && msg.contains("`apply`"),
        "{msg}"
    );
    assert!(log.lock().unwrap().is_empty(), "no host was contacted");
    assert!(!f.host_file("h1", "etc").exists());
    // plan takes no lock.
    let (_, recap, _) = f.run(Mode::Check, LocalConnector::default());
    assert!(recap.total_changed() > 0);
    // Released, the apply runs.
    drop(held);
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed());
    assert!(f.host_file("h1", "etc/app.conf").exists());
}
/// The hermetic half of the `lookup('template')` + `blockinfile` differential: the role of
/// fixtures/e2e-lookup-template run through the whole engine on two local "hosts" gives the
/// files ansible-playbook 2.14 made of it (`expected/`, from that fixture's `regen.sh`), and a
/// second run changes nothing. e2e_engine.rs runs the same role on lab hosts against
/// ansible-playbook itself.
#[test]
fn blockinfile_blocks_from_template_lookups_match_ansible() {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e-lookup-template");
    let f = Fixture::new("");
    let base = f.path("hosts");
    // The inventory is copied: its state dir (run lock, history) must not land in the source
    // tree (it did, and every `cargo test` changed a tracked history.db).
    std::fs::copy(fixture.join("hosts.ini"), f.path("hosts.ini")).unwrap();
    let request = || {
        let mut req = f.request(Mode::Apply);
        req.inventory = vec![f.path("hosts.ini")];
        req.target = Target::Playbook(fixture.join("local.yml"));
        req.extra_vars
            .insert("lt_base".into(), base.display().to_string().into());
        req
    };
    let (events, recap, _) = f.run_req(request(), LocalConnector::default());
    for h in ["h1", "h2"] {
        assert_eq!(recap.hosts[h].failed, 0, "{h}: {events:#?}");
        for file in ["app.conf", "extra.conf"] {
            let want =
                std::fs::read_to_string(fixture.join("expected").join(h).join(file)).unwrap();
            assert_eq!(f.read(h, file), want, "{h}/{file}");
            let mode = std::fs::read_to_string(
                fixture
                    .join("expected")
                    .join(h)
                    .join(format!("{file}.mode")),
            )
            .unwrap();
            let meta = std::fs::metadata(f.host_file(h, file)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                format!("{:o}", meta.permissions().mode() & 0o7777),
                mode.trim(),
                "{h}/{file} mode"
            );
        }
    }
    let (events, recap, _) = f.run_req(request(), LocalConnector::default());
    for h in ["h1", "h2"] {
        assert_eq!(recap.hosts[h].changed, 0, "{h}, second run: {events:#?}");
    }
}

#[test]
fn member_identities_are_recorded_once_and_survive_removing_a_middle_member_and_agent() {
    // A stack of the real cluster_facts role and a role that writes what it derives.
    let stack = tempfile::tempdir().unwrap();
    let roles = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../roles/cluster_facts");
    for sub in ["defaults", "tasks", "meta"] {
        std::fs::create_dir_all(stack.path().join("cluster_facts").join(sub)).unwrap();
        std::fs::copy(
            roles.join(sub).join("main.yml"),
            stack
                .path()
                .join("cluster_facts")
                .join(sub)
                .join("main.yml"),
        )
        .unwrap();
    }
    std::fs::write(
        stack.path().join("site.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks: []\n",
    )
    .unwrap();
    std::fs::create_dir_all(stack.path().join("ids/tasks")).unwrap();
    std::fs::create_dir_all(stack.path().join("ids/meta")).unwrap();
    std::fs::write(
        stack.path().join("ids/meta/main.yml"),
        "dependencies: [cluster_facts]\n",
    )
    .unwrap();
    std::fs::write(
        stack.path().join("ids/tasks/main.yml"),
        "- copy:\n    dest: \"{{ root }}/{{ inventory_hostname }}/ids\"\n    content: \"{{ zookeeper_myid }} {{ cni_subnet }} {{ zookeeper_ensemble | map(attribute='id') | join(',') }}\\n\"\n",
    )
    .unwrap();
    let run = |inventory: &str| {
        let f = StackFixture::new(inventory);
        let mut spec = f.request(stack.path());
        spec.target = Target::Stack {
            dir: Some(stack.path().to_path_buf()),
            play: Some(api::InlinePlay {
                become_: false,
                ..api::InlinePlay::role("ids", "all", "ids")
            }),
        };
        (f, spec)
    };
    // One inventory file, edited between runs (the state dir sits beside it).
    let (f, spec) = run("[masters]\nm1\n[zookeeper]\nz1\nz2\nz3\n[agents]\na1\na2\na3\n");
    for h in ["z1", "z2", "z3", "a1", "a2", "a3"] {
        std::fs::create_dir_all(f.dir.path().join("hosts").join(h)).unwrap();
    }
    // The site playbook (not an in-memory play) is what checks and records the membership.
    let site = |spec: &RunSpec| {
        let mut s = spec.clone();
        s.target = Target::Stack {
            dir: Some(stack.path().to_path_buf()),
            play: None,
        };
        s
    };
    let (events, recap, _) = run_spec(&site(&spec), LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    let (events, recap, _) = run_spec(&spec, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    let ids = |h: &str| f.host_file(h, "ids").unwrap_or_default();
    // First run: today's positional values, recorded.
    assert_eq!(ids("z2"), "2  1,2,3\n");
    assert_eq!(ids("z3"), "3  1,2,3\n");
    assert_eq!(ids("a2"), "0 10.200.1.0/24 1,2,3\n");
    assert_eq!(ids("a3"), "0 10.200.2.0/24 1,2,3\n");
    let file = f.dir.path().join(".inventory.state/allocations.json");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(recorded["zookeeper"]["z3"], 3);
    assert_eq!(recorded["cni"]["a3"], "10.200.2.0/24");
    // Remove the middle ZooKeeper member (z4 joins to keep the ensemble odd) and the middle
    // agent: nobody else's id or subnet moves; z4 takes the freed id.
    std::fs::write(
        f.dir.path().join("inventory.ini"),
        format!(
            "[masters]\nm1\n[zookeeper]\nz1\nz3\nz4\n[agents]\na1\na3\n[all:vars]\nroot={}\n",
            f.dir.path().join("hosts").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(f.dir.path().join("hosts/z4")).unwrap();
    // A plain run of the site refuses to change the recorded quorum membership before touching
    // a host: that is `node add` / `node remove`'s (which mark their runs as a membership
    // change). In-memory plays (like `ids` here, or a probe) are not checked.
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let refused = api::run(
        &site(&spec),
        RunIo {
            connector: Some(Arc::new(LocalConnector::default())),
            cancel: Some(rx),
            ..Default::default()
        },
    )
    .map(|_| ())
    .expect_err("a plain run over a changed membership is refused")
    .to_string();
    assert!(
        refused.contains("node add z4") && refused.contains("node remove z2"),
        "{refused}"
    );
    assert!(f.host_file("z4", "ids").is_none(), "nothing ran");
    let mut marked = site(&spec);
    marked.extra_vars.insert(
        provisioner::stack::MEMBERSHIP_CHANGE_VAR.into(),
        serde_json::json!(true),
    );
    let (events, recap, _) = run_spec(&marked, LocalConnector::default());
    assert!(
        !recap.any_failed(),
        "a run marked as a membership change runs: {events:#?}"
    );
    let (events, recap, _) = run_spec(&spec, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(ids("z1"), "1  1,3,2\n");
    assert_eq!(ids("z3"), "3  1,3,2\n");
    assert_eq!(ids("z4"), "2  1,3,2\n");
    assert_eq!(ids("a1"), "0 10.200.0.0/24 1,3,2\n");
    assert_eq!(ids("a3"), "0 10.200.2.0/24 1,3,2\n");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(recorded["cni"].get("a2").is_none());
    assert_eq!(recorded["zookeeper"]["z4"], 2);
    // The membership record is `node`'s to change: still the first run's.
    assert_eq!(
        recorded["members"],
        serde_json::json!(["m1", "z1", "z2", "z3"])
    );
    // plan computes the same and records nothing new.
    let before = std::fs::read_to_string(&file).unwrap();
    let mut plan = spec.clone();
    plan.mode = Mode::Check;
    let _ = run_spec(&plan, LocalConnector::default());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

/// The first handshake asked for hangs until another host has connected (for at most 5 s,
/// then it says it timed out): a pool that serialises handshakes would let no other host in.
#[derive(Default)]
struct HangingFirst {
    inner: LocalConnector,
    first: Mutex<Option<String>>,
    others: std::sync::atomic::AtomicBool,
    timed_out: std::sync::atomic::AtomicBool,
}

impl Connector for HangingFirst {
    fn connect<'a>(
        &'a self,
        target: &'a ConnectTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            let first = {
                let mut f = self.first.lock().unwrap();
                f.get_or_insert_with(|| target.name.clone()) == &target.name
            };
            if first {
                let start = std::time::Instant::now();
                while !self.others.load(Ordering::SeqCst) {
                    if start.elapsed() > Duration::from_secs(5) {
                        self.timed_out.store(true, Ordering::SeqCst);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return self.inner.connect(target).await;
            }
            let c = self.inner.connect(target).await;
            self.others.store(true, Ordering::SeqCst);
            c
        })
    }
}

#[test]
fn one_hosts_handshake_never_waits_on_anothers() {
    let f = Fixture::new(
        "- hosts: web\n  gather_facts: false\n  tasks:\n    - copy: dest={{ root }}/{{ inventory_hostname }}/f content=x\n",
    );
    let events = Collector::default();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let connector = Arc::new(HangingFirst::default());
    let io = RunIo {
        sinks: vec![Box::new(events.clone())],
        connector: Some(connector.clone()),
        cancel: Some(rx),
    };
    let outcome = api::run(&f.request(Mode::Apply), io).unwrap();
    assert!(
        !connector
            .timed_out
            .load(std::sync::atomic::Ordering::SeqCst),
        "the other host's handshake waited for the hanging one"
    );
    assert!(
        !outcome.recap.any_unreachable() && !outcome.recap.any_failed(),
        "{:#?}",
        events.events()
    );
    assert_eq!(f.read("h1", "f"), "x");
    assert_eq!(f.read("h2", "f"), "x");
}

/// Writes `files` (path, content) under the fixture's directory.
fn write_files(f: &Fixture, files: &[(&str, &str)]) {
    for (p, content) in files {
        let p = f.path(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

const INCLUDE_VARS: &str = r#"
- hosts: web
  gather_facts: false
  vars:
    b: play
    os: Debian
  roles:
    - r
- hosts: web
  gather_facts: false
  tasks:
    - name: later play
      copy:
        dest: "{{ root }}/{{ inventory_hostname }}/later"
        content: "{{ a }} {{ ns.k }}"
"#;

#[test]
fn include_vars_loads_per_host_at_its_precedence_and_persists_for_the_run() {
    let f = Fixture::new(INCLUDE_VARS);
    write_files(
        &f,
        &[
            (
                "roles/r/defaults/main.yml",
                "a: default\nb: default\nc: default\ne: default\nf: default\n",
            ),
            (
                "roles/r/vars/Debian.yml",
                "a: included\nb: included\nc: included\ne: included\n",
            ),
            ("vars/extra.yml", "k: from-playbook-vars\n"),
            ("roles/r/vars/h1-only.yml", "f: first-found-h1\n"),
            ("roles/r/vars/default.yml", "f: first-found-default\n"),
            (
                "roles/r/tasks/main.yml",
                r#"
- set_fact:
    c: set_fact
- include_vars: "{{ os }}.yml"
- include_vars:
    file: extra.yml
    name: ns
- include_vars: "{{ item }}"
  with_first_found:
    - "{{ inventory_hostname }}-only.yml"
    - default.yml
- name: show
  copy:
    dest: "{{ root }}/{{ inventory_hostname }}/vars"
    content: "{{ a }} {{ b }} {{ c }} {{ e }} {{ f }} {{ ns.k }}"
"#,
            ),
        ],
    );
    let mut spec = f.request(Mode::Apply);
    spec.extra_vars
        .insert("e".into(), serde_json::json!("extra"));
    let (events, recap, _) = f.run_req(spec, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    // include_vars beats role defaults and play vars, loses to set_fact and -e.
    assert_eq!(
        f.read("h1", "vars"),
        "included included set_fact extra first-found-h1 from-playbook-vars"
    );
    assert_eq!(
        f.read("h2", "vars"),
        "included included set_fact extra first-found-default from-playbook-vars"
    );
    assert_eq!(f.read("h2", "later"), "included from-playbook-vars");
}

#[test]
fn include_vars_missing_literal_file_fails_validate_and_a_templated_one_fails_at_run_time() {
    let f = Fixture::new(
        r#"
- hosts: web
  gather_facts: false
  tasks:
    - include_vars: nope.yml
    - include_vars:
        dir: nodir
"#,
    );
    let err = api::validate(&f.request(Mode::Apply)).expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains("site.yml:5:21: include_vars: could not find file `nope.yml`"),
        "{text}"
    );
    assert!(
        text.contains("site.yml:7:9: include_vars: could not find dir `nodir`"),
        "{text}"
    );

    let f = Fixture::new(
        r#"
- hosts: web
  gather_facts: false
  tasks:
    - include_vars: "{{ inventory_hostname }}.yml"
"#,
    );
    write_files(&f, &[("vars/h1.yml", "x: 1\n")]);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskFinished(r) if r.status == TaskStatus::Failed => {
                Some((r.host.clone(), r.msg.clone().unwrap_or_default()))
            }
            _ => None,
        })
        .collect();
    assert!(recap.any_failed());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "h2");
    assert!(
        failed[0]
            .1
            .contains("site.yml:5:7: include_vars: could not find file `h2.yml`"),
        "{}",
        failed[0].1
    );
}

#[test]
fn with_lookup_loops_give_the_items_of_their_loop_lookup_equivalents() {
    let f = Fixture::new(
        r#"
- hosts: h1
  gather_facts: false
  vars:
    d: {b: 2, a: 1}
    xs: [1, 2, 3]
    ys: [a, b]
  tasks:
    - name: fileglob
      debug: msg={{ item }}
      with_fileglob: "*.conf"
    - name: fileglob
      debug: msg={{ item }}
      loop: "{{ lookup('fileglob', '*.conf', wantlist=True) }}"
    - name: first_found
      debug: msg={{ item }}
      with_first_found:
        - missing.conf
        - "b.{{ 'conf' }}"
    - name: first_found
      debug: msg={{ item }}
      loop: "{{ query('first_found', ['missing.conf', 'b.conf']) }}"
    - name: dict
      debug: msg={{ item.key }}={{ item.value }}
      with_dict: "{{ d }}"
    - name: dict
      debug: msg={{ item.key }}={{ item.value }}
      loop: "{{ d | dict2items }}"
    - name: list
      debug: msg={{ item }}
      with_list: [[1, 2], 3]
    - name: list
      debug: msg={{ item }}
      loop: [[1, 2], 3]
    - name: together
      debug: msg={{ item }}
      with_together: ["{{ xs }}", "{{ ys }}"]
    - name: together
      debug: msg={{ item }}
      loop: [[1, a], [2, b], [3, null]]
"#,
    );
    write_files(
        &f,
        &[
            ("files/a.conf", "a"),
            ("files/b.conf", "b"),
            ("files/c.txt", "c"),
        ],
    );
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    let mut items: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for e in &events {
        if let RunEvent::TaskFinished(r) = e {
            if let Some(i) = &r.item {
                items
                    .entry((r.task.clone(), r.loc.clone()))
                    .or_default()
                    .push(i.clone());
            }
        }
    }
    let mut by_name: std::collections::BTreeMap<String, Vec<Vec<String>>> = Default::default();
    for ((task, _), list) in items {
        by_name.entry(task).or_default().push(list);
    }
    for name in ["fileglob", "first_found", "dict", "list", "together"] {
        let lists = by_name.get(name).cloned().unwrap_or_default();
        assert_eq!(lists.len(), 2, "{name}: {lists:?}");
        assert!(!lists[0].is_empty(), "{name}: {lists:?}");
        assert_eq!(lists[0], lists[1], "{name}");
    }
    assert_eq!(by_name["fileglob"][0].len(), 2);
    assert!(by_name["first_found"][0][0].ends_with("files/b.conf"));
}

/// Copies the repository's `roles/<name>` into `stack`.
fn copy_role(name: &str, stack: &std::path::Path) {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let roles = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../roles");
    copy(&roles.join(name), &stack.join(name));
}

/// `host task` of each task that finished with `status`.
fn finished(events: &[RunEvent], status: TaskStatus) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskFinished(r) if r.status == status => {
                Some(format!("{} {}", r.host, r.task))
            }
            _ => None,
        })
        .collect()
}

/// The rolling restarts' health gates as the roles run them: the real `zookeeper` and
/// `mesos_master` rolling_restart tasks through the engine, the gate program installed from
/// the `bundle` variable (role `gate`), against a fake ZooKeeper member and a fake Mesos
/// master on 127.0.0.1 (every "host" is this machine).
#[test]
fn the_rolling_restarts_gate_on_the_gate_program() {
    use testkit::fake::{FakeHttp, FakeZk};
    use testkit::http::Response;

    let stack = tempfile::tempdir().unwrap();
    for r in ["cluster_facts", "gate", "zookeeper", "mesos_master"] {
        copy_role(r, stack.path());
    }
    std::fs::write(
        stack.path().join("site.yml"),
        "- hosts: all\n  gather_facts: false\n  roles: [cluster_facts, gate]\n\
         - hosts: zookeeper\n  gather_facts: false\n  serial: 1\n  any_errors_fatal: true\n  roles:\n    - cluster_facts\n    - role: zookeeper\n      zookeeper_phase: rolling_restart\n      zookeeper_restart_leader: false\n\
         - hosts: masters\n  gather_facts: false\n  serial: 1\n  any_errors_fatal: true\n  roles:\n    - cluster_facts\n    - role: mesos_master\n      mesos_master_phase: rolling_restart\n      mesos_master_restart_leader: false\n",
    )
    .unwrap();

    let zk = FakeZk::start(Some("follower")).unwrap();
    let ready = r#"{"master\/elected":0.0,"registrar\/log\/recovered":1.0}"#;
    // Every master of the fixture is this one server: it answers the elected endpoint itself
    // (so the followers' play leaves each marker alone) and follows `redirect`.
    let master = |redirect: Response| {
        FakeHttp::start(vec![
            ("/metrics/snapshot".into(), Response::text(200, ready)),
            ("/master/redirect".into(), redirect),
            (
                cluster_core::gates::ELECTED_ENDPOINT.into(),
                Response::text(cluster_core::gates::ELECTED_STATUS, "{}"),
            ),
        ])
        .unwrap()
    };
    // The master the others follow: elected (it answers the elected endpoint itself).
    let elected = FakeHttp::start(vec![(
        cluster_core::gates::ELECTED_ENDPOINT.into(),
        Response::text(cluster_core::gates::ELECTED_STATUS, "{}"),
    )])
    .unwrap();
    let follows = |l: &FakeHttp| Response::redirect(l.url().trim_start_matches("http:"));
    let run = |http: &FakeHttp, mode: Mode| {
        let port = http.url().rsplit(':').next().unwrap().to_string();
        let f = StackFixture::new(&format!(
            "[masters]\nm1\nm2\nm3\n[agents]\na1\n[all:vars]\nansible_host=127.0.0.1\n\
             provisioner_gate={{{{ root }}}}/{{{{ inventory_hostname }}}}/gate\n\
             zookeeper_client_port={}\nzookeeper_restart_marker_dir={{{{ root }}}}/{{{{ inventory_hostname }}}}\n\
             zookeeper_service=provisioner-test-no-such-unit\nzookeeper_health_retries=2\nzookeeper_health_delay=0\n\
             mesos_tls=false\nmesos_master_port={port}\nmesos_restart_marker_dir={{{{ root }}}}/{{{{ inventory_hostname }}}}\n\
             mesos_master_service=provisioner-test-no-such-unit\nmesos_master_health_retries=2\nmesos_master_health_delay=0\n",
            zk.port()
        ));
        // Applying, m1 has a pending ZooKeeper restart and a pending master restart, and it
        // leads both: the followers' plays leave them (zk-leader, mesos-master-elected), so
        // nothing restarts (a restart of the fixture's unit would fail).
        if mode == Mode::Apply {
            std::fs::write(f.dir.path().join("hosts/m1/zookeeper"), "pending\n").unwrap();
            std::fs::write(f.dir.path().join("hosts/m1/mesos-master"), "pending\n").unwrap();
        }
        let mut spec = f.request(stack.path());
        spec.mode = mode;
        let (events, recap, _) = run_spec(&spec, LocalConnector::default());
        let failed = finished(&events, TaskStatus::Failed);
        (f, recap, failed, events)
    };

    // Green: every gate passes; the leader keeps its marker.
    zk.set_mode(Some("leader"));
    let http = master(follows(&elected));
    let (f, recap, failed, events) = run(&http, Mode::Apply);
    assert!(failed.is_empty(), "{failed:?} {events:#?}");
    assert!(!recap.any_failed());
    let ran = finished(&events, TaskStatus::Ok);
    for gate in [
        "m1 zookeeper : zookeeper | is this member the leader?",
        "m3 zookeeper : zookeeper | this member serves (leader or follower)",
        "m3 zookeeper : zookeeper | the ensemble has a quorum",
        "m2 mesos_master : wait until this master has recovered its log and follows an elected leader",
    ] {
        assert!(ran.iter().any(|r| r == gate), "{gate}: {ran:#?}");
    }
    let gate = f.dir.path().join("hosts/m2/gate");
    assert_eq!(
        std::fs::read_to_string(&gate).unwrap(),
        cluster_core::gates::gate_program()
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&gate).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    assert!(f.host_file("m1", "zookeeper").is_some());
    assert!(f.host_file("m1", "mesos-master").is_some());
    assert!(
        ran.iter()
            .any(|r| r == "m1 mesos_master : is this master the elected one?"),
        "{ran:#?}"
    );

    // Members that serve no quorum: m1 (pending, no leader now) waits for a quorum before it
    // restarts, in vain; the play stops there.
    zk.set_mode(None);
    let (_f, _, failed, _) = run(&http, Mode::Apply);
    assert_eq!(
        failed,
        ["m1 zookeeper : zookeeper | ensemble has a quorum before this member restarts"]
    );

    // Plan: the gates are waits, skipped; nothing fails.
    let (_f, recap, failed, _) = run(&http, Mode::Check);
    assert!(failed.is_empty() && !recap.any_failed(), "{failed:?}");

    // A master that knows no leader: its play stops at the gate.
    zk.set_mode(Some("leader"));
    let http = master(Response::text(503, "no leader"));
    let (_f, _, failed, _) = run(&http, Mode::Apply);
    assert_eq!(
        failed,
        ["m1 mesos_master : wait until this master has recovered its log and follows an elected leader"]
    );
    // A master that follows a stopped master's contender (no master answers as elected):
    // the play stops there too, before the next master restarts.
    let ghost = FakeHttp::start(vec![(
        cluster_core::gates::ELECTED_ENDPOINT.into(),
        Response::redirect("//127.0.0.1:1"),
    )])
    .unwrap();
    let http = master(follows(&ghost));
    let (_f, _, failed, _) = run(&http, Mode::Apply);
    assert_eq!(
        failed,
        ["m1 mesos_master : wait until this master has recovered its log and follows an elected leader"]
    );

    // The handler of a changed config: a serving member is not restarted, it gets a marker.
    std::fs::write(
        stack.path().join("site.yml"),
        "- hosts: all\n  gather_facts: false\n  roles: [cluster_facts, gate]\n\
         - hosts: zookeeper\n  gather_facts: false\n  roles:\n    - cluster_facts\n    - role: zookeeper\n      zookeeper_phase: none\n  tasks:\n    - command: \"true\"\n      notify: zookeeper config changed\n",
    )
    .unwrap();
    zk.set_mode(Some("follower"));
    let (f, recap, failed, _) = run(&http, Mode::Apply);
    assert!(failed.is_empty() && !recap.any_failed(), "{failed:?}");
    // (m1's marker was there before.)
    for h in ["m2", "m3"] {
        assert_eq!(
            f.host_file(h, "zookeeper").as_deref(),
            Some(
                "config changed; roles/site.yml restarts it with the health gate (docs/stack.md)\n"
            ),
            "{h}"
        );
    }
}

/// A host that answers with template code: `{{ lookup('pipe', ...) }}` would run a command
/// on the control node if the engine templated what hosts send. ansible-playbook 2.14 run on
/// this playbook (`-c local`) writes exactly the files asserted below and refuses the condition
/// with the same words.
const HOSTILE_OUTPUT: &str = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: the host holds template code
      copy:
        dest: "{{ root }}/{{ inventory_hostname }}/hostile"
        content: "{{ '{{' }} lookup('pipe', 'touch {{ root }}/pwned') {{ '}}' }}\n{{ '{{' }} 6 * 7 {{ '}}' }}\n"
    - name: read it
      command: cat {{ root }}/{{ inventory_hostname }}/hostile
      register: r
      changed_when: false
    - name: keep it
      set_fact:
        kept: "{{ r.stdout_lines }}"
        plain: "{{ '{{' }} 6 * 7 {{ '}}' }}"
    - name: write it back
      copy:
        dest: "{{ root }}/{{ inventory_hostname }}/echo"
        content: "{{ r.stdout_lines[1] }}|{{ kept | join(',') }}|{{ plain }}|{{ hostvars['h1'].r.stdout_lines[1] }}\n"
    - name: per line
      lineinfile:
        path: "{{ root }}/{{ inventory_hostname }}/lines"
        line: "{{ item }}"
        create: true
      loop: "{{ r.stdout_lines }}"
    - name: per line, with_items
      lineinfile:
        path: "{{ root }}/{{ inventory_hostname }}/with"
        line: "{{ item }}"
        create: true
      with_items: "{{ r.stdout_lines }}"
    - name: a condition made of it
      debug: msg=never
      when: "{{ r.stdout_lines[1] }}"
      ignore_errors: true
"#;

#[test]
fn template_code_a_host_returns_is_data_never_run_on_the_control_node() {
    let f = Fixture::new(HOSTILE_OUTPUT);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    let root = f.path("hosts");
    assert!(
        !root.join("pwned").exists(),
        "the pipe lookup a host sent ran on the control node"
    );
    let pipe = format!("{{{{ lookup('pipe', 'touch {}/pwned') }}}}", root.display());
    let mult = "{{ 6 * 7 }}";
    for h in ["h1", "h2"] {
        assert_eq!(f.read(h, "hostile"), format!("{pipe}\n{mult}\n"));
        // registered, set_fact from it, and through hostvars: as sent. A set_fact of the
        // play's own text is templated on read, as Ansible does (42).
        assert_eq!(
            f.read(h, "echo"),
            format!("{mult}|{pipe},{mult}|42|{mult}\n")
        );
        assert_eq!(f.read(h, "lines"), format!("{pipe}\n{mult}\n"), "loop item");
        assert_eq!(f.read(h, "with"), format!("{pipe}\n{mult}\n"), "with_items");
    }
    let refused: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskFinished(r) if r.task == "a condition made of it" => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2);
    for r in refused {
        assert_eq!(r.status, TaskStatus::Ignored, "{r:?}");
        let msg = r.msg.as_deref().unwrap_or("");
        assert!(msg.contains("marked as unsafe"), "{msg}");
    }
    assert_eq!(recap.hosts["h1"].failed, 0);
}

/// Facts are gathered once per host and run, and again only after a task changed the host.
const THREE_PLAYS_WITH_FACTS: &str = r#"
- hosts: web
  tasks:
    - name: read only
      command: "true"
      changed_when: false
- hosts: web
  tasks:
    - name: change h1 when asked
      copy: dest={{ root }}/{{ inventory_hostname }}/marker content=x
      when: inventory_hostname == 'h1' and (change | default(false))
- hosts: web
  tasks:
    - name: facts are there
      assert:
        that: ansible_hostname is defined
"#;

fn gathers(log: &[(String, String)], host: &str) -> usize {
    log.iter()
        .filter(|(h, s)| h == host && s.contains("===uname==="))
        .count()
}

#[test]
fn facts_are_gathered_once_per_run_unless_a_task_changed_the_host() {
    let f = Fixture::new(THREE_PLAYS_WITH_FACTS);
    let (events, recap, log) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(gathers(&log, "h1"), 1);
    assert_eq!(gathers(&log, "h2"), 1);
    // every play still reports its "Gathering Facts" on every host, as Ansible prints it
    let reported = events
        .iter()
        .filter(|e| matches!(e, RunEvent::TaskFinished(r) if r.task == "Gathering Facts"))
        .count();
    assert_eq!(reported, 6);

    let mut extra = serde_json::Map::new();
    extra.insert("change".into(), serde_json::json!(true));
    let spec = RunSpec {
        extra_vars: extra,
        ..f.request(Mode::Apply)
    };
    let (_, recap, log) = f.run_req(spec, LocalConnector::default());
    assert!(!recap.any_failed());
    assert_eq!(
        gathers(&log, "h1"),
        2,
        "h1 changed in play 2: play 3 gathers again"
    );
    assert_eq!(gathers(&log, "h2"), 1);
}

/// A read-only command in the middle of a play, then tasks that probe files.
const READ_ONLY_COMMAND_THEN_FILES: &str = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: one
      copy: dest={{ root }}/{{ inventory_hostname }}/one content=1
    - name: look around
      command: "true"
      changed_when: false
    - name: two
      copy: dest={{ root }}/{{ inventory_hostname }}/two content=2
    - name: three
      copy: dest={{ root }}/{{ inventory_hostname }}/three content=3
    - name: four
      file: path={{ root }}/{{ inventory_hostname }}/four state=directory
"#;

/// Round trips that only read probe answers (the prefetch, or one task's live probe).
fn probe_round_trips(log: &[(String, String)], host: &str) -> usize {
    log.iter()
        .filter(|(h, s)| h == host && (s.contains("import binascii") || s.contains("__vialink")))
        .count()
}

#[test]
fn a_read_only_command_does_not_make_every_later_task_probe_on_its_own() {
    let f = Fixture::new(READ_ONLY_COMMAND_THEN_FILES);
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed());
    let (events, recap, log) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.total_changed(), 0, "{:#?}", statuses(&events, "h1"));
    // the play's prefetch, then once more after the command for the rest of the play
    assert_eq!(probe_round_trips(&log, "h1"), 2, "{log:#?}");
    // after a change, the next tasks probe live: what they read is after that change
    std::fs::remove_file(f.host_file("h1", "one")).unwrap();
    std::fs::write(f.host_file("h1", "two"), "stale").unwrap();
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.hosts["h1"].changed, 2);
    assert_eq!(f.read("h1", "two"), "2");
}

const STACK_TWO_PLAYS: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: one
      copy: dest={{ root }}/{{ inventory_hostname }}/one content=1
    - name: a read-only check (the stack's convention)
      command: cat {{ root }}/{{ inventory_hostname }}/one
      changed_when: false
    - name: a command that changes the host when the marker is missing
      shell: echo x > {{ root }}/{{ inventory_hostname }}/marker
      args:
        creates: "{{ root }}/{{ inventory_hostname }}/marker"
    - name: two
      copy: dest={{ root }}/{{ inventory_hostname }}/two content=2
- hosts: masters
  gather_facts: false
  tasks:
    - name: three
      copy: dest={{ root }}/{{ inventory_hostname }}/three content=3
    - name: four
      file: path={{ root }}/{{ inventory_hostname }}/four state=directory
"#;

#[test]
fn a_stack_run_reads_each_host_once_for_all_its_plays() {
    let stack = tempfile::tempdir().unwrap();
    std::fs::write(stack.path().join("site.yml"), STACK_TWO_PLAYS).unwrap();
    let f = StackFixture::new("[masters]\nm1\n[agents]\na1\n");
    let run = || run_spec(&f.request(stack.path()), LocalConnector::default());
    let (_, recap, _) = run();
    assert!(!recap.any_failed());
    // Unchanged: one round trip per host for both plays; the read-only command keeps the
    // answers (a playbook run gathers again after it).
    let (events, recap, log) = run();
    assert_eq!(recap.total_changed(), 0, "{:#?}", statuses(&events, "m1"));
    assert_eq!(probe_round_trips(&log, "m1"), 1, "{log:#?}");
    assert_eq!(probe_round_trips(&log, "a1"), 1, "{log:#?}");
    // A command that changes the host drops every answer: the rest of its play probes live
    // (task two), and the next play gathers again in one round trip, not one per task.
    std::fs::remove_file(f.dir.path().join("hosts/m1/marker")).unwrap();
    let (events, recap, log) = run();
    assert_eq!(
        recap.hosts["m1"].changed,
        1,
        "{:#?}",
        statuses(&events, "m1")
    );
    assert_eq!(probe_round_trips(&log, "m1"), 3, "{log:#?}");
    // What the later play reads is after the change: it sees a file removed meanwhile.
    std::fs::remove_file(f.dir.path().join("hosts/m1/three")).unwrap();
    std::fs::remove_file(f.dir.path().join("hosts/m1/marker")).unwrap();
    let (_, recap, _) = run();
    assert_eq!(recap.hosts["m1"].changed, 2);
    assert!(f.dir.path().join("hosts/m1/three").exists());
}

const WAIT_BETWEEN_FILES: &str = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: one
      copy: dest={{ root }}/{{ inventory_hostname }}/one content=1
    - name: wait for it (a read-only module that runs and changes nothing)
      wait_for: path={{ root }}/{{ inventory_hostname }}/one timeout=5
    - name: two
      copy: dest={{ root }}/{{ inventory_hostname }}/two content=2
"#;

#[test]
fn a_read_only_module_keeps_the_answers_gathered_before_it() {
    let f = Fixture::new(WAIT_BETWEEN_FILES);
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed());
    let (events, recap, log) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.total_changed(), 0, "{:#?}", statuses(&events, "h1"));
    assert_eq!(probe_round_trips(&log, "h1"), 1, "{log:#?}");
}

const TWO_PLAYS_SAME_FILES: &str = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: a file
      copy: dest={{ root }}/{{ inventory_hostname }}/a content=1
- hosts: web
  gather_facts: false
  tasks:
    - name: the same file again
      copy: dest={{ root }}/{{ inventory_hostname }}/a content=1
"#;

#[test]
fn a_later_play_reuses_the_file_answers_of_an_earlier_one() {
    let f = Fixture::new(TWO_PLAYS_SAME_FILES);
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed());
    let (_, recap, log) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.total_changed(), 0);
    assert_eq!(probe_round_trips(&log, "h1"), 1, "{log:#?}");
    // a change in between is seen by the later play
    let pb = TWO_PLAYS_SAME_FILES.replace(
        "    - name: the same file again\n      copy: dest={{ root }}/{{ inventory_hostname }}/a content=1",
        "    - name: the same file, other content\n      copy: dest={{ root }}/{{ inventory_hostname }}/a content=2",
    );
    std::fs::write(f.path("site.yml"), pb).unwrap();
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.hosts["h1"].changed, 1);
    let (_, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(
        recap.hosts["h1"].changed, 2,
        "play 1 writes 1, play 2 writes 2 again"
    );
    assert_eq!(f.read("h1", "a"), "2");
}

const WHEN_TURNS_TRUE: &str = r#"
- hosts: web
  gather_facts: false
  vars:
    wanted: false
  tasks:
    - name: one
      copy: dest={{ root }}/{{ inventory_hostname }}/one content=1
    - name: skipped
      copy: dest={{ root }}/{{ inventory_hostname }}/skipped content=1
      when: wanted | bool
    - name: wanted from here on, on h1
      set_fact:
        wanted: true
      when: inventory_hostname == 'h1'
    - name: later
      copy: dest={{ root }}/{{ inventory_hostname }}/later content=1
      when: wanted | bool
"#;

/// The prefetch's probe lines for `host`: each path is base64 there.
fn asked_about(log: &[(String, String)], host: &str, path: &std::path::Path) -> bool {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(path.display().to_string().as_bytes());
    log.iter()
        .any(|(h, s)| h == host && s.contains("import binascii") && s.contains(&encoded))
}

#[test]
fn a_task_its_when_skips_is_not_probed_ahead_and_asks_for_itself_once_true() {
    let f = Fixture::new(WHEN_TURNS_TRUE);
    let (events, recap, log) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert!(
        asked_about(&log, "h1", &f.host_file("h1", "one")),
        "{log:#?}"
    );
    for name in ["skipped", "later"] {
        assert!(
            !asked_about(&log, "h2", &f.host_file("h2", name)),
            "{log:#?}"
        );
        assert!(!f.host_file("h2", name).exists());
    }
    assert!(!f.host_file("h1", "skipped").exists());
    // h1's `when` became true after the prefetch: the task read the host itself.
    assert_eq!(f.read("h1", "later"), "1");
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert_eq!(recap.total_changed(), 0, "{:#?}", statuses(&events, "h1"));
}

const LOOP_THEN_TASK: &str = r#"
- hosts: web
  gather_facts: false
  tasks:
    - name: a loop
      copy: dest={{ root }}/{{ inventory_hostname }}/{{ item }} content={{ item }}
      loop: [a, b]
    - name: after the loop
      copy: dest={{ root }}/{{ inventory_hostname }}/after content="{{ item | default('none') }}"
"#;

#[test]
fn a_loop_item_does_not_leak_into_the_next_task_that_shares_its_variables() {
    let f = Fixture::new(LOOP_THEN_TASK);
    let (events, recap, _) = f.run(Mode::Apply, LocalConnector::default());
    assert!(!recap.any_failed(), "{events:#?}");
    assert_eq!(f.read("h1", "b"), "b");
    assert_eq!(f.read("h1", "after"), "none");
    assert_eq!(f.read("h2", "after"), "none");
}
