//! The russh transport against an in-process russh server on 127.0.0.1:0. The server
//! authenticates one public key and runs exec requests locally with `sh -c`, streaming
//! stdout/stderr/exit status and feeding stdin. Hermetic: temp files and loopback only.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use provisioner::secret::Secret;
use provisioner::transport::known_hosts::fingerprint;
use provisioner::transport::{
    Become, ConnectTarget, Connection, Connector, ExecRequest, HostKeyPolicy, SshConnector,
    SshOptions, TransportError,
};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{self, Auth, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

fn new_key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
}

// ------------------------------------------------------------------------------------------
// The test server
// ------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct ServerOpts {
    /// Put this directory first on the children's PATH (for a fake `sudo`).
    path_prefix: Option<PathBuf>,
    /// Allow direct-tcpip channels (act as a jump host).
    jump: bool,
}

struct TestServer {
    addr: SocketAddr,
    host_key: PrivateKey,
    connections: Arc<AtomicUsize>,
    sessions: Arc<std::sync::Mutex<Vec<server::Handle>>>,
}

impl TestServer {
    async fn start(authorized: PublicKey, opts: ServerOpts) -> TestServer {
        let host_key = new_key();
        let config = Arc::new(server::Config {
            keys: vec![host_key.clone()],
            auth_rejection_time: Duration::from_millis(1),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: None,
            ..Default::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let sessions: Arc<std::sync::Mutex<Vec<server::Handle>>> = Arc::default();
        {
            let (connections, sessions) = (Arc::clone(&connections), Arc::clone(&sessions));
            tokio::spawn(async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let handler = ExecHandler {
                        authorized: authorized.clone(),
                        opts: opts.clone(),
                        stdin: HashMap::new(),
                        kill: HashMap::new(),
                    };
                    let (config, sessions) = (Arc::clone(&config), Arc::clone(&sessions));
                    tokio::spawn(async move {
                        if let Ok(running) = server::run_stream(config, sock, handler).await {
                            sessions.lock().unwrap().push(running.handle());
                            let _ = running.await;
                        }
                    });
                }
            });
        }
        TestServer {
            addr,
            host_key,
            connections,
            sessions,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn public_key(&self) -> PublicKey {
        self.host_key.public_key().clone()
    }

    async fn drop_all_sessions(&self) {
        let handles: Vec<server::Handle> = self.sessions.lock().unwrap().drain(..).collect();
        for h in handles {
            let _ = h
                .disconnect(russh::Disconnect::ByApplication, "bye".into(), "en".into())
                .await;
        }
    }
}

struct ExecHandler {
    authorized: PublicKey,
    opts: ServerOpts,
    stdin: HashMap<ChannelId, mpsc::UnboundedSender<Vec<u8>>>,
    kill: HashMap<ChannelId, oneshot::Sender<()>>,
}

impl server::Handler for ExecHandler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if key.public_key.key_data() == self.authorized.key_data() {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.opts.jump {
            return Ok(()); // dropping `reply` refuses the channel
        }
        let Ok(mut sock) =
            tokio::net::TcpStream::connect((host_to_connect, port_to_connect as u16)).await
        else {
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut sock).await;
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(&command);
        if let Some(prefix) = &self.opts.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", prefix.display()));
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn sh");
        session.channel_success(channel)?;
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        self.stdin.insert(channel, in_tx);
        self.kill.insert(channel, kill_tx);
        let handle = session.handle();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            while let Some(bytes) = in_rx.recv().await {
                if stdin.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let h_out = handle.clone();
        let out_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if h_out.data(channel, buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let h_err = handle.clone();
        let err_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stderr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if h_err
                            .extended_data(channel, 1, buf[..n].to_vec())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = kill_rx => { let _ = child.kill().await; None }
            };
            let _ = out_task.await;
            let _ = err_task.await;
            if let Some(status) = status {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                let _ = handle.exit_status_request(channel, code as u32).await;
            }
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.stdin.get(&channel) {
            let _ = tx.send(data.to_vec());
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.stdin.remove(&channel);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.stdin.remove(&channel);
        if let Some(k) = self.kill.remove(&channel) {
            let _ = k.send(());
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// Client-side fixtures
// ------------------------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    client_key: PrivateKey,
    key_file: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let client_key = new_key();
        let key_file = dir.path().join("id_test");
        std::fs::write(
            &key_file,
            client_key.to_openssh(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        Fixture {
            dir: dir.path().to_path_buf(),
            _dir: dir,
            client_key,
            key_file,
        }
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    fn trust(&self, port: u16, key: &PublicKey) {
        let line = format!("[127.0.0.1]:{port} {}\n", key.to_openssh().unwrap());
        let mut text = std::fs::read_to_string(self.known_hosts()).unwrap_or_default();
        text.push_str(&line);
        std::fs::write(self.known_hosts(), text).unwrap();
    }

    fn target(&self, port: u16) -> ConnectTarget {
        let mut t = ConnectTarget::new("web1", "127.0.0.1");
        t.port = Some(port);
        t.user = Some("tester".into());
        t.identity_files = vec![self.key_file.clone()];
        t.known_hosts = Some(self.known_hosts());
        t.connect_timeout = Duration::from_secs(10);
        t
    }

    async fn server(&self, opts: ServerOpts) -> TestServer {
        TestServer::start(self.client_key.public_key().clone(), opts).await
    }

    /// A server whose key is already in known_hosts.
    async fn trusted_server(&self, opts: ServerOpts) -> TestServer {
        let s = self.server(opts).await;
        self.trust(s.port(), &s.public_key());
        s
    }
}

fn connector() -> SshConnector {
    SshConnector::new(SshOptions::hermetic())
}

fn req(script: &str) -> ExecRequest {
    ExecRequest {
        script: script.into(),
        stdin: None,
        become_: None,
        timeout: Duration::from_secs(60),
    }
}

async fn connect(t: &ConnectTarget) -> Arc<dyn Connection> {
    connector().connect(t).await.expect("connect")
}

// ------------------------------------------------------------------------------------------
// Commands
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn exit_codes_are_reported() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    assert_eq!(c.exec(req("true")).await.unwrap().exit_status, 0);
    assert_eq!(c.exec(req("exit 3")).await.unwrap().exit_status, 3);
    c.close().await;
}

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    let out = c
        .exec(req("echo out; echo err >&2; printf '%s' \"it's\""))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out\nit's");
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn stdin_round_trips_then_eof() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    let mut r = req("cat; echo done");
    r.stdin = Some(b"line1\n\0binary\xff".to_vec());
    let out = c.exec(r).await.unwrap();
    assert_eq!(out.stdout, b"line1\n\0binary\xffdone\n");
}

#[tokio::test]
async fn twenty_megabytes_each_way_do_not_deadlock() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    let out = c
        .exec(req(
            "head -c 5000000 /dev/zero >&2 & head -c 20000000 /dev/zero; wait",
        ))
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 20_000_000);
    assert_eq!(out.stderr.len(), 5_000_000);

    let input: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut r = req("cat");
    r.stdin = Some(input.clone());
    let out = c.exec(r).await.unwrap();
    assert_eq!(out.exit_status, 0);
    assert!(out.stdout == input, "stdin did not round-trip");
}

/// A writer that only counts and hashes what it is given, and remembers its largest write: a
/// streamed output arrives in channel-sized chunks, never as one buffer.
#[derive(Default)]
struct Counting {
    total: usize,
    largest: usize,
    sum: u64,
}

impl tokio::io::AsyncWrite for Counting {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.total += buf.len();
        self.largest = self.largest.max(buf.len());
        self.sum = buf.iter().fold(self.sum, |a, b| {
            a.wrapping_mul(31).wrapping_add(u64::from(*b))
        });
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn streamed_output_arrives_in_chunks_and_streamed_input_round_trips() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    let mut w = Counting::default();
    let out = c
        .exec_streaming(
            req("head -c 30000000 /dev/zero; echo err >&2"),
            None,
            &mut w,
        )
        .await
        .unwrap();
    assert_eq!((out.exit_status, w.total), (0, 30_000_000));
    assert!(out.stdout.is_empty(), "streamed output is not buffered too");
    assert_eq!(out.stderr, b"err\n");
    assert!(w.largest < 1_000_000, "one write of {} bytes", w.largest);

    // Input from a file, output to another: what went in comes out.
    let input: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
    let src = f.dir.join("in.bin");
    std::fs::write(&src, &input).unwrap();
    let dst = f.dir.join("out.bin");
    let mut to = tokio::fs::File::create(&dst).await.unwrap();
    let from: provisioner::transport::StreamIn =
        Box::new(tokio::fs::File::open(&src).await.unwrap());
    let out = c
        .exec_streaming(req("cat; echo done >&2"), Some(from), &mut to)
        .await
        .unwrap();
    drop(to);
    assert_eq!(
        (out.exit_status, out.stderr.as_slice()),
        (0, &b"done\n"[..])
    );
    assert!(
        std::fs::read(&dst).unwrap() == input,
        "input did not round-trip"
    );
}

#[tokio::test]
async fn one_session_serves_every_command_even_concurrent_ones() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    let runs: Vec<_> = (0..5)
        .map(|i| {
            let c = Arc::clone(&c);
            tokio::spawn(async move { c.exec(req(&format!("echo {i}"))).await })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        assert_eq!(
            run.await.unwrap().unwrap().stdout,
            format!("{i}\n").as_bytes()
        );
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn command_timeout_is_reported_as_timeout() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    let mut r = req("sleep 30");
    r.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    match c.exec(r).await {
        Err(TransportError::Timeout { host, .. }) => assert_eq!(host, "web1"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The session is still usable.
    assert_eq!(c.exec(req("echo ok")).await.unwrap().stdout, b"ok\n");
}

#[tokio::test]
async fn a_dropped_session_is_reopened_once_by_the_next_command() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let c = connect(&f.target(s.port())).await;
    assert_eq!(c.exec(req("echo 1")).await.unwrap().stdout, b"1\n");
    s.drop_all_sessions().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.exec(req("echo 2")).await.unwrap().stdout, b"2\n");
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}

// ------------------------------------------------------------------------------------------
// Host keys
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_host_key_is_refused_under_strict_policy() {
    let f = Fixture::new();
    let s = f.server(ServerOpts::default()).await;
    match connector().connect(&f.target(s.port())).await {
        Err(e @ TransportError::UnknownHostKey { .. }) => {
            let TransportError::UnknownHostKey {
                fingerprint: fp, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*fp, fingerprint(&s.public_key()));
            assert!(e.is_unreachable());
        }
        Err(other) => panic!("expected UnknownHostKey, got {other:?}"),
        Ok(_) => panic!("expected UnknownHostKey, connected"),
    }
}

#[tokio::test]
async fn changed_host_key_is_refused_with_both_fingerprints() {
    let f = Fixture::new();
    let s = f.server(ServerOpts::default()).await;
    let old = new_key();
    f.trust(s.port(), old.public_key());
    match connector().connect(&f.target(s.port())).await {
        Err(e @ TransportError::HostKeyMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("web1"), "{msg}");
            assert!(msg.contains(&fingerprint(old.public_key())), "{msg}");
            assert!(msg.contains(&fingerprint(&s.public_key())), "{msg}");
        }
        Err(other) => panic!("expected HostKeyMismatch, got {other:?}"),
        Ok(_) => panic!("expected HostKeyMismatch, connected"),
    }
}

#[tokio::test]
async fn accept_new_records_the_key_and_strict_then_accepts_it() {
    let f = Fixture::new();
    let s = f.server(ServerOpts::default()).await;
    let mut t = f.target(s.port());
    t.host_key_policy = HostKeyPolicy::AcceptNew;
    let c = connect(&t).await;
    assert_eq!(c.exec(req("echo hi")).await.unwrap().stdout, b"hi\n");
    let text = std::fs::read_to_string(f.known_hosts()).unwrap();
    assert!(
        text.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", s.port())),
        "{text}"
    );

    t.host_key_policy = HostKeyPolicy::Strict;
    let c = connect(&t).await;
    assert_eq!(c.exec(req("echo again")).await.unwrap().exit_status, 0);
}

#[tokio::test]
async fn accept_new_still_refuses_a_changed_key() {
    let f = Fixture::new();
    let s = f.server(ServerOpts::default()).await;
    f.trust(s.port(), new_key().public_key());
    let mut t = f.target(s.port());
    t.host_key_policy = HostKeyPolicy::AcceptNew;
    assert!(matches!(
        connector().connect(&t).await.err(),
        Some(TransportError::HostKeyMismatch { .. })
    ));
}

/// An inventory saying `StrictHostKeyChecking=no` and `UserKnownHostsFile=/dev/null`, through
/// the run's defaults: the key is recorded in the state dir on first contact, the next
/// connection checks it there, and another key for that name is refused, naming both.
#[tokio::test]
async fn checking_off_with_dev_null_records_in_the_state_dir_and_refuses_a_changed_key() {
    let f = Fixture::new();
    let s = f.server(ServerOpts::default()).await;
    let state_kh = f.dir.join(".prod.state/known_hosts");
    let defaults = provisioner::transport::ConnectDefaults {
        state_known_hosts: Some(state_kh.clone()),
        ..Default::default()
    };
    let mut base = f.target(s.port());
    base.known_hosts = None;
    let args = vec!["-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null".to_string()];
    let built = defaults.build(base.clone(), &args).unwrap();
    assert_eq!(
        built.target.known_hosts.as_deref(),
        Some(state_kh.as_path())
    );
    assert_eq!(built.checking_off.len(), 2, "{:?}", built.checking_off);

    // First contact: recorded in the state dir, not in ~/.ssh or /dev/null.
    let c = connect(&built.target).await;
    assert_eq!(c.exec(req("echo hi")).await.unwrap().stdout, b"hi\n");
    let text = std::fs::read_to_string(&state_kh).unwrap();
    assert!(
        text.contains(&format!("[127.0.0.1]:{} ssh-ed25519 ", s.port())),
        "{text}"
    );
    // The next run (same settings) connects against the recorded key.
    let again = defaults.build(base.clone(), &args).unwrap();
    connect(&again.target).await;

    // Another host's key in the state dir for this name: refused with both fingerprints.
    let other = new_key();
    std::fs::write(
        &state_kh,
        format!(
            "[127.0.0.1]:{} {}\n",
            s.port(),
            other.public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let again = defaults.build(base, &args).unwrap();
    match connector().connect(&again.target).await {
        Err(e @ TransportError::HostKeyMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&fingerprint(other.public_key())), "{msg}");
            assert!(msg.contains(&fingerprint(&s.public_key())), "{msg}");
        }
        Err(other) => panic!("expected HostKeyMismatch, got {other:?}"),
        Ok(_) => panic!("expected HostKeyMismatch, connected"),
    }
}

/// `host_key_checking = False` (ansible.cfg) is accept-new against the usual known_hosts.
#[tokio::test]
async fn host_key_checking_false_is_accept_new() {
    let f = Fixture::new();
    let s = f.server(ServerOpts::default()).await;
    let defaults = provisioner::transport::ConnectDefaults {
        checking_off: Some("host_key_checking = False in ansible.cfg:3".into()),
        ..Default::default()
    };
    let built = defaults.build(f.target(s.port()), &[]).unwrap();
    assert_eq!(built.target.host_key_policy, HostKeyPolicy::AcceptNew);
    connect(&built.target).await;
    assert!(std::fs::read_to_string(f.known_hosts())
        .unwrap()
        .contains("ssh-ed25519"));
    let mut t = built.target.clone();
    t.known_hosts = Some(f.dir.join("changed"));
    std::fs::write(
        f.dir.join("changed"),
        format!(
            "[127.0.0.1]:{} {}\n",
            s.port(),
            new_key().public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    assert!(matches!(
        connector().connect(&t).await.err(),
        Some(TransportError::HostKeyMismatch { .. })
    ));
}

#[tokio::test]
async fn pinned_fingerprint_must_match() {
    let f = Fixture::new();
    let s = f.server(ServerOpts::default()).await;
    let mut t = f.target(s.port());
    t.host_key_policy = HostKeyPolicy::Pinned(fingerprint(&s.public_key()));
    let c = connect(&t).await;
    assert_eq!(c.exec(req("true")).await.unwrap().exit_status, 0);

    let wrong = fingerprint(new_key().public_key());
    t.host_key_policy = HostKeyPolicy::Pinned(wrong.clone());
    match connector().connect(&t).await.err() {
        Some(TransportError::HostKeyMismatch {
            expected, actual, ..
        }) => {
            assert!(expected.contains(&wrong));
            assert_eq!(actual, fingerprint(&s.public_key()));
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Auth and reachability
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_key_fails_auth_listing_what_was_tried() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let other = f.dir.join("id_other");
    std::fs::write(
        &other,
        new_key().to_openssh(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let mut t = f.target(s.port());
    t.identity_files = vec![other.clone(), f.dir.join("missing_key")];
    match connector().connect(&t).await.err() {
        Some(e @ TransportError::Auth { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("tester"), "{msg}");
            assert!(
                msg.contains(&format!("{}: rejected", other.display())),
                "{msg}"
            );
            assert!(msg.contains("missing_key: no such file"), "{msg}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test]
async fn encrypted_key_without_agent_is_a_clear_auth_error() {
    let f = Fixture::new();
    let s = f.trusted_server(ServerOpts::default()).await;
    let enc = f
        .client_key
        .encrypt(&mut rand::rng(), "passphrase")
        .unwrap();
    let path = f.dir.join("id_encrypted");
    std::fs::write(&path, enc.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let mut t = f.target(s.port());
    t.identity_files = vec![path];
    match connector().connect(&t).await.err() {
        Some(e @ TransportError::Auth { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("encrypted with a passphrase"), "{msg}");
            assert!(msg.contains("ssh-add"), "{msg}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    let f = Fixture::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    match connector().connect(&f.target(port)).await.err() {
        Some(e @ TransportError::Connect { .. }) => assert!(e.is_unreachable()),
        other => panic!("expected Connect, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// ssh config and ProxyJump
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn ssh_config_and_one_proxy_jump_hop_are_followed() {
    let f = Fixture::new();
    let jump = f
        .trusted_server(ServerOpts {
            jump: true,
            ..Default::default()
        })
        .await;
    let target = f.trusted_server(ServerOpts::default()).await;
    let config = f.dir.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host app-behind-bastion\n  HostName 127.0.0.1\n  Port {}\n  User tester\n  IdentityFile {}\n  ProxyJump tester@127.0.0.1:{}\n",
            target.port(),
            f.key_file.display(),
            jump.port()
        ),
    )
    .unwrap();
    let mut t = ConnectTarget::new("app1", "app-behind-bastion");
    t.known_hosts = Some(f.known_hosts());
    let conn = SshConnector::new(SshOptions {
        ssh_config: Some(config),
        ..SshOptions::hermetic()
    })
    .connect(&t)
    .await
    .expect("connect through the jump host");
    let out = conn.exec(req("echo via-jump")).await.unwrap();
    assert_eq!(out.stdout, b"via-jump\n");
    assert_eq!(jump.connections.load(Ordering::SeqCst), 1);
    assert_eq!(target.connections.load(Ordering::SeqCst), 1);
}

// ------------------------------------------------------------------------------------------
// become (a fake sudo first on the server's PATH)
// ------------------------------------------------------------------------------------------

const FAKE_SUDO: &str = r#"#!/bin/sh
# Emulates sudo -H -S [-n | -p PROMPT] -u USER -- CMD...; behaviour from ./mode next to it.
prompt="Password:"; nonint=0
while [ $# -gt 0 ]; do
  case "$1" in
    -H|-S) shift;;
    -n) nonint=1; shift;;
    -p) prompt=$2; shift 2;;
    -u) shift 2;;
    --) shift; break;;
    *) echo "fake sudo: unexpected $1" >&2; exit 2;;
  esac
done
mode=$(cat "$(dirname "$0")/mode")
case "$mode" in
  nopasswd) exec "$@";;
  notsudoer) echo "tester is not in the sudoers file.  This incident will be reported." >&2; exit 1;;
  password\ *)
    want=${mode#password }
    if [ $nonint = 1 ]; then echo "sudo: a password is required" >&2; exit 1; fi
    tries=0
    while [ $tries -lt 3 ]; do
      printf '%s' "$prompt" >&2
      IFS= read -r pw || exit 1
      echo attempt >> "$(dirname "$0")/attempts"
      if [ "$pw" = "$want" ]; then exec "$@"; fi
      echo "Sorry, try again." >&2
      tries=$((tries+1))
    done
    echo "sudo: 3 incorrect password attempts" >&2; exit 1;;
esac
"#;

fn fake_sudo(dir: &Path, mode: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("sudo"), FAKE_SUDO).unwrap();
    std::fs::set_permissions(bin.join("sudo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(bin.join("mode"), mode).unwrap();
    bin
}

fn become_req(script: &str) -> ExecRequest {
    ExecRequest {
        become_: Some(Become {
            user: "root".into(),
        }),
        ..req(script)
    }
}

async fn become_setup(
    mode: &str,
    password: Option<&str>,
) -> (Fixture, TestServer, Arc<dyn Connection>) {
    let f = Fixture::new();
    let bin = fake_sudo(&f.dir, mode);
    let s = f
        .trusted_server(ServerOpts {
            path_prefix: Some(bin),
            ..Default::default()
        })
        .await;
    let mut t = f.target(s.port());
    t.become_password = password.map(Secret::new);
    let c = connect(&t).await;
    (f, s, c)
}

#[tokio::test]
async fn become_without_password_runs_through_sudo_and_strips_its_marker() {
    let (_f, _s, c) = become_setup("nopasswd", None).await;
    let mut r = become_req("echo out; echo err >&2; cat");
    r.stdin = Some(b"in".to_vec());
    let out = c.exec(r).await.unwrap();
    assert_eq!(out.stdout, b"out\nin");
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn become_password_is_sent_only_when_sudo_prompts_then_stdin_follows() {
    let (_f, _s, c) = become_setup("password s3cret", Some("s3cret")).await;
    let mut r = become_req("cat; echo err >&2; exit 4");
    r.stdin = Some(b"payload".to_vec());
    let out = c.exec(r).await.unwrap();
    assert_eq!(out.exit_status, 4);
    assert_eq!(out.stdout, b"payload");
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn streamed_input_through_sudo_follows_the_password() {
    let (f, _s, c) = become_setup("password s3cret", Some("s3cret")).await;
    let src = f.dir.join("in.bin");
    std::fs::write(&src, b"archive bytes").unwrap();
    let from: provisioner::transport::StreamIn =
        Box::new(tokio::fs::File::open(&src).await.unwrap());
    let mut out = Vec::new();
    let r = c
        .exec_streaming(become_req("cat"), Some(from), &mut out)
        .await
        .unwrap();
    assert_eq!(r.exit_status, 0);
    assert_eq!(out, b"archive bytes");
}

#[tokio::test]
async fn become_password_is_not_sent_when_sudo_does_not_ask() {
    let (_f, _s, c) = become_setup("nopasswd", Some("s3cret")).await;
    let mut r = become_req("cat");
    r.stdin = Some(b"only this".to_vec());
    let out = c.exec(r).await.unwrap();
    assert_eq!(out.stdout, b"only this");
}

#[tokio::test]
async fn wrong_become_password_is_a_become_error() {
    let (_f, _s, c) = become_setup("password s3cret", Some("nope")).await;
    match c.exec(become_req("true")).await {
        Err(TransportError::Become { reason, .. }) => {
            assert!(reason.contains("incorrect"), "{reason}");
            assert!(!reason.contains("nope"));
            assert!(!reason.contains("provisioner-sudo"), "{reason}");
        }
        other => panic!("expected Become, got {other:?}"),
    }
}

/// Issue 15: each task tried the refused password again, and each try is a failed attempt in
/// the host's auth log (enough of them lock the account).
#[tokio::test]
async fn a_refused_become_password_is_not_sent_again_in_the_run() {
    let (f, _s, c) = become_setup("password s3cret", Some("nope")).await;
    for _ in 0..3 {
        match c.exec(become_req("true")).await {
            Err(TransportError::Become { reason, .. }) => {
                assert!(reason.contains("incorrect sudo password"), "{reason}");
                assert!(!reason.contains("nope"), "{reason}");
            }
            other => panic!("expected Become, got {other:?}"),
        }
    }
    let attempts = std::fs::read_to_string(f.dir.join("fakebin/attempts")).unwrap();
    assert_eq!(
        attempts.lines().count(),
        1,
        "one password sent in all: {attempts:?}"
    );
    // Commands without become still run.
    assert_eq!(c.exec(req("echo ok")).await.unwrap().stdout, b"ok\n");
}

#[tokio::test]
async fn sudo_needing_a_password_we_do_not_have_is_a_become_error() {
    let (_f, _s, c) = become_setup("password s3cret", None).await;
    match c.exec(become_req("true")).await {
        Err(TransportError::Become { reason, .. }) => {
            assert!(reason.contains("a password is required"), "{reason}")
        }
        other => panic!("expected Become, got {other:?}"),
    }
}

#[tokio::test]
async fn not_in_sudoers_is_a_become_error() {
    let (_f, _s, c) = become_setup("notsudoer", None).await;
    match c.exec(become_req("true")).await {
        Err(TransportError::Become { reason, .. }) => {
            assert!(reason.contains("not in the sudoers file"), "{reason}")
        }
        other => panic!("expected Become, got {other:?}"),
    }
    // A failing command after sudo succeeded is not a become error.
}

#[tokio::test]
async fn a_silent_peer_times_out_during_the_handshake() {
    // Accepts TCP and never speaks SSH.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let f = Fixture::new();
    let mut t = f.target(port);
    t.connect_timeout = Duration::from_millis(300);
    match connector().connect(&t).await.err() {
        Some(TransportError::Timeout { what, after, .. }) => {
            assert!(what.contains("handshake"), "{what}");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}
