//! testkit's HTTPS client (used by the Mesos-DNS stand-in and the test framework) against a TLS
//! server in this test: the certificate is checked against the CA and an IP address as the
//! server name must be in its IP SANs; a redirect naming the server by host name is followed by
//! its address; chunked bodies come through TLS. Hermetic: loopback only, certificates made here.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use testkit::http::{self, Endpoint};
use testkit::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    let pem = cert.pem();
    Ca {
        issuer: Issuer::from_ca_cert_pem(&pem, key).unwrap(),
        pem,
    }
}

fn server_config(ca: &Ca) -> ServerConfig {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
}

/// Serves `/data` chunked, and `/redirect` as a non-leading Mesos master does.
async fn serve(l: tokio::net::TcpListener, cfg: ServerConfig) {
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let port = l.local_addr().unwrap().port();
    loop {
        let (tcp, _) = l.accept().await.unwrap();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut s) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let resp = if req.starts_with("GET /redirect ") {
                format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: //localhost:{port}/data\r\nContent-Length: 0\r\n\r\n")
            } else {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n".to_string()
            };
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_client_checks_ca_and_ip_sans_and_follows_redirects_by_address() {
    let dir = tempfile::tempdir().unwrap();
    let good = ca();
    let other = ca();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &good.pem).unwrap();
    let other_file = dir.path().join("other.crt");
    std::fs::write(&other_file, &other.pem).unwrap();

    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(serve(l, server_config(&good)));

    let client = Arc::new(tls::client_config(&ca_file, None).unwrap());
    let ep = |host: &str, cfg: &Arc<_>| Endpoint {
        host: host.into(),
        port,
        tls: Some(Arc::clone(cfg)),
    };
    let t = Duration::from_secs(5);

    // The address is in the certificate's IP SANs; the chunked body is decoded.
    let (status, _, body) =
        http::request_to(&ep("127.0.0.1", &client), "GET", "/data", &[], None, t)
            .await
            .unwrap();
    assert_eq!((status, body), (200, b"{\"a\":1}\n".to_vec()));

    // The certificate names 127.0.0.1, not localhost.
    let err = http::request_to(&ep("localhost", &client), "GET", "/data", &[], None, t)
        .await
        .unwrap_err();
    assert!(err.contains("TLS"), "{err}");

    // A CA that did not sign the server's certificate.
    let wrong = Arc::new(tls::client_config(&other_file, None).unwrap());
    let err = http::request_to(&ep("127.0.0.1", &wrong), "GET", "/data", &[], None, t)
        .await
        .unwrap_err();
    assert!(err.contains("TLS"), "{err}");

    // A scheme-relative redirect naming the server by host name: followed by its address.
    let (status, headers, _) =
        http::request_to(&ep("127.0.0.1", &client), "GET", "/redirect", &[], None, t)
            .await
            .unwrap();
    assert_eq!(status, 307);
    let loc = http::header(&headers, "location").unwrap();
    let (host, p, path) = http::resolve_location(loc, ("127.0.0.1", port), true).unwrap();
    assert_eq!(
        (host.as_str(), p, path.as_str()),
        ("localhost", port, "/data")
    );
    let next = Endpoint {
        host,
        port: p,
        tls: Some(client.clone()),
    }
    .resolved()
    .await
    .unwrap();
    assert_eq!(next.host, "127.0.0.1");
    let (status, _, _) = http::request_to(&next, "GET", &path, &[], None, t)
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = Endpoint {
        host: "127.0.0.1".into(),
        port,
        tls: None,
    };
    assert!(http::request_to(&plain, "GET", "/data", &[], None, t)
        .await
        .is_err());
}
