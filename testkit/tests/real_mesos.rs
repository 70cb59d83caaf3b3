//! REAL Apache Mesos on loopback (feature `mesos`): unpacks the tarball named by
//! `PROVISIONER_MESOS_ARTIFACT`, starts a master and an agent on 127.0.0.1 with libprocess TLS
//! (an ECDSA P-256 CA and host certificate from rcgen, like the provisioner's cluster CA), HTTP
//! framework authentication and agent authentication, then proves with `testkit::framework`:
//! a task runs to TASK_FINISHED on the named agent, a task is killed, bad credentials get a 401,
//! and the Mesos-DNS stand-in builds its records from the real master.
//!
//! It fails (never skips) when the variable is unset. Timeouts are only upper bounds on waits.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use serde_json::{json, Value};
use testkit::framework::{Framework, Options};
use testkit::http::{self, Endpoint};

/// libprocess's default cipher list has no ECDHE suites: rustls (this framework, the DNS
/// stand-in) and ECDSA certificates need these.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384";
const AGENT: &str = "agent-one";
const WAIT: Duration = Duration::from_secs(90);

/// A child process, killed when dropped.
struct Proc {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "---- last lines of the {} log ({}) ----\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn check_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("{} exited ({st})\n{}", self.name, self.tail());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// An ECDSA P-256 CA and a certificate for 127.0.0.1 (IP SAN) for both master and agent.
fn certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subjects: with rcgen's default DN on both, subject == issuer and OpenSSL 1.0.2
    // (libprocess) rejects the host certificate as self-signed (X509 error 18).
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "testkit loopback CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut host = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    host.distinguished_name = DistinguishedName::new();
    host.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    host.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = host.signed_by(&key, &issuer).unwrap();
    (
        write(dir, "ca.crt", &ca_cert.pem()),
        write(dir, "host.crt", &cert.pem()),
        write(dir, "host.key", &key.serialize_pem()),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn real_mesos_runs_tasks_over_tls_with_authentication() {
    let started = Instant::now();
    let artifact = std::env::var("PROVISIONER_MESOS_ARTIFACT").expect(
        "PROVISIONER_MESOS_ARTIFACT must name the Mesos tarball (e.g. /work/shared/mesos/mesos-1.11.0-debian12-amd64.tar.gz) when the `mesos` feature is on",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = d.join("mesos");
    std::fs::create_dir_all(&prefix).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&artifact)
        .arg("-C")
        .arg(&prefix)
        .status()
        .unwrap();
    assert!(st.success(), "cannot unpack {artifact}: {st}");
    eprintln!("unpacked in {:?}", started.elapsed());

    let (ca, cert, key) = certs(d);
    let secret = "fw-secret-1";
    let creds = write(
        d,
        "credentials.json",
        &json!({"credentials": [{"principal": "fw", "secret": secret},
                                {"principal": "agent", "secret": "agent-secret-1"}]})
        .to_string(),
    );
    let agent_cred = write(
        d,
        "agent-credential.json",
        &json!({"principal": "agent", "secret": "agent-secret-1"}).to_string(),
    );
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let ssl: Vec<(&str, String)> = vec![
        ("LIBPROCESS_SSL_ENABLED", "true".into()),
        ("LIBPROCESS_SSL_CERT_FILE", path(&cert)),
        ("LIBPROCESS_SSL_KEY_FILE", path(&key)),
        ("LIBPROCESS_SSL_CA_FILE", path(&ca)),
        ("LIBPROCESS_SSL_VERIFY_SERVER_CERT", "true".into()),
        // The legacy scheme checks the peer's reverse-resolved name (127.0.0.1 -> localhost)
        // against the certificate; ours has an IP SAN only.
        (
            "LIBPROCESS_SSL_HOSTNAME_VALIDATION_SCHEME",
            "openssl".into(),
        ),
        ("LIBPROCESS_SSL_VERIFY_IPADD", "true".into()),
        ("LIBPROCESS_SSL_CIPHERS", CIPHERS.into()),
    ];
    // Executors do not inherit LIBPROCESS_SSL_*: without them the command executor talks plain
    // HTTP to the agent and the task fails ("Executor terminated").
    let mut exec_env = serde_json::Map::new();
    exec_env.insert(
        "PATH".into(),
        json!("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    for (k, v) in &ssl {
        exec_env.insert((*k).into(), json!(v));
    }
    let exec_env = write(d, "executor-env.json", &Value::Object(exec_env).to_string());

    let (mport, aport) = (free_port(), free_port());
    let master_addr = format!("127.0.0.1:{mport}");
    let mut master = Proc::spawn(
        "master",
        Command::new(prefix.join("usr/sbin/mesos-master"))
            .envs(ssl.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("--ip=127.0.0.1")
            .arg(format!("--port={mport}"))
            .arg("--hostname_lookup=false")
            .arg("--registry=in_memory")
            .arg(format!("--work_dir={}", path(&d.join("master"))))
            .arg("--authenticate_http_frameworks")
            .arg("--http_framework_authenticators=basic")
            .arg("--authenticate_agents")
            .arg(format!("--credentials={}", path(&creds))),
        d.join("master.log"),
    );
    let libexec = prefix.join("usr/libexec/mesos");
    let mut agent = Proc::spawn(
        "agent",
        Command::new(prefix.join("usr/sbin/mesos-agent"))
            .envs(ssl.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("--ip=127.0.0.1")
            .arg(format!("--port={aport}"))
            .arg(format!("--hostname={AGENT}"))
            .arg(format!("--master={master_addr}"))
            .arg("--launcher=posix")
            .arg("--isolation=filesystem/posix,posix/cpu,posix/mem")
            .arg("--systemd_enable_support=false")
            .arg(format!("--launcher_dir={}", path(&libexec)))
            .arg(format!("--work_dir={}", path(&d.join("agent"))))
            .arg(format!("--credential={}", path(&agent_cred)))
            .arg(format!(
                "--executor_environment_variables=file://{}",
                path(&exec_env)
            )),
        d.join("agent.log"),
    );
    let logs = |m: &Proc, a: &Proc| format!("{}\n{}", m.tail(), a.tail());

    // Wait (upper bound) until the master, over HTTPS, lists the agent as active.
    let rt = runtime();
    let client = Arc::new(testkit::tls::client_config(&ca, None).unwrap());
    let ep = Endpoint {
        host: "127.0.0.1".into(),
        port: mport,
        tls: Some(client.clone()),
    };
    let deadline = Instant::now() + WAIT;
    loop {
        master.check_running();
        agent.check_running();
        let state = rt
            .block_on(http::request_to(
                &ep,
                "GET",
                "/master/state",
                &[],
                None,
                Duration::from_secs(5),
            ))
            .ok()
            .filter(|(s, _, _)| *s == 200)
            .and_then(|(_, _, b)| serde_json::from_slice::<Value>(&b).ok());
        let registered = state.as_ref().is_some_and(|s| {
            s["slaves"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["hostname"] == AGENT && x["active"] == true)
            })
        });
        if registered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not register\n{}",
            logs(&master, &agent)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("master and agent up after {:?}", started.elapsed());

    // A single (leading) master's /master/redirect: scheme-relative, the leader's --hostname
    // (the IP with --hostname_lookup=false) and port, no path.
    let (status, headers, _) = rt
        .block_on(http::request_to(
            &ep,
            "GET",
            "/master/redirect",
            &[],
            None,
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(status, 307);
    assert_eq!(
        http::header(&headers, "Location"),
        Some(format!("//127.0.0.1:{mport}").as_str())
    );

    let mut opts = Options::new(vec![master_addr.clone()], "fw", secret);
    opts.tls = Some(ca.clone());
    opts.offer_timeout = WAIT;
    let fw = Framework::subscribe(&opts)
        .unwrap_or_else(|e| panic!("subscribe: {e}\n{}", logs(&master, &agent)));
    let fail = |what: &str, e: String| -> ! {
        panic!(
            "{what}: {e}\nevents:\n{}\n{}",
            fw.events_text(),
            logs(&master, &agent)
        )
    };

    // A command task on the named agent, to TASK_FINISHED.
    let task = fw
        .launch(
            Some(AGENT),
            "echo hello-from-real-mesos; test -d \"$MESOS_SANDBOX\"",
            0.1,
            32.0,
        )
        .unwrap_or_else(|e| fail("launch", e));
    let end = fw
        .wait_terminal(&task, WAIT)
        .unwrap_or_else(|e| fail("wait", e));
    if end.state != "TASK_FINISHED" {
        fail("the task did not finish", end.to_string());
    }
    let states: Vec<String> = fw.statuses(&task).into_iter().map(|s| s.state).collect();
    assert!(states.contains(&"TASK_RUNNING".to_string()), "{states:?}");

    // A long task, killed.
    let sleeper = fw
        .launch(None, "sleep 600", 0.1, 32.0)
        .unwrap_or_else(|e| fail("launch", e));
    fw.wait_for_states(&sleeper, &["TASK_RUNNING"], WAIT)
        .unwrap_or_else(|e| fail("wait for running", e));
    fw.kill(&sleeper).unwrap_or_else(|e| fail("kill", e));
    let end = fw
        .wait_terminal(&sleeper, WAIT)
        .unwrap_or_else(|e| fail("wait for killed", e));
    assert_eq!(end.state, "TASK_KILLED", "{end}");
    // Every update with a uuid was acknowledged without error.
    assert!(
        !fw.events().iter().any(|e| e.get("client_error").is_some()),
        "{}",
        fw.events_text()
    );
    fw.teardown().unwrap_or_else(|e| fail("teardown", e));

    // Bad credentials: refused with a 401 at subscription.
    for (principal, secret) in [("fw", "wrong-secret"), ("nobody", secret)] {
        let mut bad = opts.clone();
        bad.principal = principal.into();
        bad.secret = secret.into();
        let err = Framework::subscribe(&bad)
            .err()
            .expect("bad credentials were accepted");
        assert!(err.contains("401"), "{err}");
        assert!(!err.contains(secret), "the secret leaked: {err}");
    }
    // Plain HTTP to a TLS master: no subscription.
    let mut plain = opts.clone();
    plain.tls = None;
    plain.timeout = Duration::from_secs(10);
    assert!(Framework::subscribe(&plain).is_err());

    // The Mesos-DNS stand-in reads the real master over HTTPS.
    let cfg = testkit::dns::parse_config(
        &json!({"masters": [master_addr], "domain": "mesos", "mesosHTTPSOn": true,
                "caCertFile": path(&ca), "port": 8053})
        .to_string(),
    )
    .unwrap();
    testkit::tls::install(testkit::dns::client_tls(&cfg).unwrap().unwrap());
    let records = rt.block_on(testkit::dns::refresh(&cfg)).unwrap();
    let lo = vec![std::net::Ipv4Addr::LOCALHOST];
    assert_eq!(records.get("leader.mesos"), Some(&lo), "{records:?}");
    assert_eq!(records.get("master.mesos"), Some(&lo), "{records:?}");
    assert_eq!(
        records.get(&format!("{AGENT}.agent.mesos")),
        Some(&lo),
        "{records:?}"
    );

    master.check_running();
    agent.check_running();
    eprintln!("real Mesos test done in {:?}", started.elapsed());
}
