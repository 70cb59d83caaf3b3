//! Secrets through the whole engine with a local fake transport: the `password` and
//! `provisioner_tls` lookups generate once, store encrypted next to the inventory, reach the
//! hosts, and never reach an event; a wrong key stops the run before any host is contacted.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provisioner::exec::events::Collector;
use provisioner::exec::events::RunEvent;
use provisioner::exec::Mode;
use provisioner::report::recap::Recap;
use provisioner::run::{self as api, RunIo, RunSpec, Target};
use provisioner::transport::{
    BoxFuture, ConnectTarget, Connection, Connector, ExecOutput, ExecRequest, TransportError,
};

struct Local {
    log: Arc<Mutex<Vec<String>>>,
}

impl Connection for Local {
    fn exec(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecOutput, TransportError>> {
        Box::pin(async move {
            self.log.lock().unwrap().push(req.script.clone());
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
    log: Arc<Mutex<Vec<String>>>,
}

impl Connector for LocalConnector {
    fn connect<'a>(
        &'a self,
        _target: &'a ConnectTarget,
    ) -> BoxFuture<'a, Result<Arc<dyn Connection>, TransportError>> {
        Box::pin(async move {
            let c: Arc<dyn Connection> = Arc::new(Local {
                log: self.log.clone(),
            });
            Ok(c)
        })
    }
}

fn request(dir: &Path) -> RunSpec {
    let mut spec = RunSpec::new(
        "test",
        vec![dir.join("inventory.ini")],
        Target::Playbook(dir.join("site.yml")),
        Mode::Apply,
    );
    spec.diff = true;
    spec.verbose = true;
    spec.forks = 4;
    spec.command_timeout = Duration::from_secs(60);
    spec
}

fn run(dir: &Path) -> (Result<(), String>, Vec<RunEvent>, Vec<String>) {
    let spec = request(dir);
    let events = Collector::default();
    let connector = LocalConnector::default();
    let log = connector.log.clone();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let io = RunIo {
        sinks: vec![Box::new(events.clone())],
        connector: Some(Arc::new(connector)),
        cancel: Some(rx),
    };
    let r = api::run(&spec, io).map(|_| ()).map_err(|e| {
        // A bad key is bad input, found before anything runs.
        assert_eq!(e.exit_code(), provisioner::error::ExitCode::BadInput);
        e.to_string()
    });
    let events = events.events();
    let log = log.lock().unwrap().clone();
    (r, events, log)
}

fn fixture(key: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("hosts");
    for h in ["h1", "h2"] {
        std::fs::create_dir_all(root.join(h)).unwrap();
    }
    std::fs::write(
        dir.path().join("inventory.ini"),
        format!(
            "[web]\nh1 ansible_host=10.9.0.1\nh2 ansible_host=10.9.0.2\n\n[all:vars]\nroot={}\ndns_domain=example\n",
            root.display()
        ),
    )
    .unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/storage-secrets/site.yml");
    std::fs::copy(src, dir.path().join("site.yml")).unwrap();
    let _ = key;
    (dir, root)
}

#[test]
fn generated_secrets_reach_hosts_never_events_and_need_their_key() {
    // One test: PROVISIONER_KEY_FILE is process-wide.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key");
    std::env::set_var("PROVISIONER_KEY_FILE", &key);
    let (dir, root) = fixture(&key);

    let (r, events, _) = run(dir.path());
    r.unwrap();
    let mut recap = Recap::default();
    events.iter().for_each(|e| recap.observe(e));
    assert!(!recap.any_failed(), "{events:#?}");

    let conf = std::fs::read_to_string(root.join("h1/app.conf")).unwrap();
    let pw = conf.trim().strip_prefix("password=").unwrap().to_string();
    assert_eq!(pw.len(), 24);
    assert_eq!(
        std::fs::read_to_string(root.join("h2/app.conf")).unwrap(),
        conf
    );
    let host_key = std::fs::read_to_string(root.join("h1/host.key")).unwrap();
    assert!(host_key.contains("BEGIN PRIVATE KEY"));
    let key_body: Vec<&str> = host_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(std::fs::read_to_string(root.join("h1/host.crt"))
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // Nothing secret in any event (JSON is what --output json would print).
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&pw), "password leaked");
    for l in &key_body {
        assert!(!all.contains(l), "key line leaked: {l}");
    }
    assert!(all.contains("********"));
    // Nor in the history: it is fed behind the same redactor (learned values included).
    let db = dir.path().join(".inventory.state/history.db");
    let stored: Vec<u8> = ["", "-wal"]
        .iter()
        .flat_map(|s| std::fs::read(format!("{}{s}", db.display())).unwrap_or_default())
        .collect();
    assert!(!stored.is_empty(), "the run was recorded");
    let stored = String::from_utf8_lossy(&stored);
    assert!(!stored.contains(&pw), "password reached the history");
    for l in &key_body {
        assert!(!stored.contains(l), "key line reached the history: {l}");
    }
    // The key was generated, with a notice naming it.
    assert!(events.iter().any(|e| matches!(e, RunEvent::Notice { message } if message.contains(&key.display().to_string()))));
    assert!(key.exists());

    // Stored encrypted next to the inventory.
    let store = dir.path().join(".inventory.state/secrets");
    let enc = std::fs::read(store.join("password/app/db.enc")).unwrap();
    assert!(!String::from_utf8_lossy(&enc).contains(&pw));
    assert!(store.join("tls/ca.enc").exists());
    assert!(store.join("tls/hosts/h1.enc").exists());

    // Second run: same values, no new notice.
    let (r, events2, _) = run(dir.path());
    r.unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("h1/app.conf")).unwrap(),
        conf
    );
    assert_eq!(
        std::fs::read_to_string(root.join("h1/host.key")).unwrap(),
        host_key
    );
    assert!(!events2.iter().any(|e| matches!(e, RunEvent::Notice { .. })));

    // A wrong key: refused before any host is contacted, naming the key file.
    let wrong = keys.path().join("other");
    std::fs::write(&wrong, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    std::env::set_var("PROVISIONER_KEY_FILE", &wrong);
    let (r, _, log) = run(dir.path());
    let e = r.unwrap_err();
    assert!(e.contains(&wrong.display().to_string()), "{e}");
    assert!(log.is_empty());
    // A missing key: the same.
    let missing = keys.path().join("missing");
    std::env::set_var("PROVISIONER_KEY_FILE", &missing);
    let (r, _, log) = run(dir.path());
    assert!(r.unwrap_err().contains(&missing.display().to_string()));
    assert!(log.is_empty());
    assert!(!missing.exists());
}
