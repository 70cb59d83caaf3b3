//! The stand-in's HTTP over libprocess TLS: a client trusting the cluster CA gets answers, a
//! plain-HTTP client gets none, and a server certificate without the address is refused.
//! Hermetic: loopback only, certificates generated here. One process installs TLS once, so
//! every check lives in this one test.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use testkit::http::{self, Request, Response};
use testkit::tls;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libprocess_tls_serves_https_to_ca_clients_and_nothing_to_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let host_key = KeyPair::generate().unwrap();
    let mut host = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    host.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let host_cert = host.signed_by(&host_key, &issuer).unwrap();
    let ca_file = write(dir.path(), "ca.crt", &ca_cert.pem());
    let cert_file = write(dir.path(), "host.crt", &host_cert.pem());
    let key_file = write(dir.path(), "host.key", &host_key.serialize_pem());

    let env = [
        ("LIBPROCESS_SSL_ENABLED", "true"),
        ("LIBPROCESS_SSL_CERT_FILE", cert_file.to_str().unwrap()),
        ("LIBPROCESS_SSL_KEY_FILE", key_file.to_str().unwrap()),
        ("LIBPROCESS_SSL_CA_FILE", ca_file.to_str().unwrap()),
        ("LIBPROCESS_SSL_VERIFY_SERVER_CERT", "true"),
        ("LIBPROCESS_SSL_REQUIRE_CLIENT_CERT", "true"),
    ];
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let settings = tls::parse_env(&get).unwrap();
    tls::install(tls::build(&settings).unwrap().unwrap());

    let l = http::bind(std::net::Ipv4Addr::LOCALHOST, 0).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(http::serve(l, |req: Request| async move {
        Response::json(200, &serde_json::json!({"path": req.path}))
    }));

    // Over TLS, both sides presenting certificates from the CA.
    let v = http::get_json(&format!("127.0.0.1:{port}"), "/health")
        .await
        .unwrap();
    assert_eq!(v["path"], "/health");

    // The certificate names 127.0.0.1, not localhost: verification refuses the name.
    let err = http::get_json(&format!("localhost:{port}"), "/health")
        .await
        .unwrap_err();
    assert!(err.contains("TLS"), "{err}");

    // Plain HTTP gets no HTTP answer (no downgrade).
    let plain = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).to_string()
    })
    .await
    .unwrap();
    assert!(!plain.contains("HTTP/1.1 200"), "{plain}");
}
