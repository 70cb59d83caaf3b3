use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use super::*;

fn store(dir: &Path) -> SecretStore {
    SecretStore::open(dir.join("state/secrets"), dir.join("cfg/key")).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn der(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    p.contents
}

#[test]
fn passwords_are_generated_once_and_kept_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let a = s
        .password("zk length=32 chars=ascii_letters,digits", &[])
        .unwrap();
    assert_eq!(a.expose().len(), 32);
    assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    let notices = s.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains(&tmp.path().join("cfg/key").display().to_string()));
    // Same value later, also from a new store object (another run); length ignored as Ansible.
    assert_eq!(s.password("zk length=8", &[]).unwrap(), a);
    let again = store(tmp.path());
    assert_eq!(again.password("zk", &[]).unwrap(), a);
    assert!(again.take_notices().is_empty());
    // At rest: encrypted, 0600; the key 0600 outside the state dir.
    let file = tmp.path().join("state/secrets/password/zk.enc");
    let bytes = std::fs::read(&file).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains(a.expose()));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&tmp.path().join("cfg/key")), 0o600);
    // /dev/null: fresh every time, nothing stored.
    let x = s.password("/dev/null length=16", &[]).unwrap();
    let y = s.password("/dev/null length=16", &[]).unwrap();
    assert_ne!(x, y);
    assert!(!tmp.path().join("state/secrets/password/dev").exists());
    assert!(s.password("../escape", &[]).is_err());
}

#[test]
fn wrong_or_missing_key_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    s.password("p", &[]).unwrap();
    // Missing key for an existing store.
    let missing = tmp.path().join("nokey");
    let e = SecretStore::open(tmp.path().join("state/secrets"), missing.clone()).unwrap_err();
    assert!(matches!(e, SecretsError::MissingKey { .. }));
    assert!(e.to_string().contains(&missing.display().to_string()));
    assert!(
        !missing.exists(),
        "never generates a key for an existing store"
    );
    // Wrong key.
    let other = tempfile::tempdir().unwrap();
    let o = store(other.path());
    o.password("q", &[]).unwrap();
    let e = SecretStore::open(
        tmp.path().join("state/secrets"),
        other.path().join("cfg/key"),
    )
    .unwrap_err();
    assert!(matches!(e, SecretsError::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("cfg/key"));
    assert_eq!(
        crate::error::Error::from(e).exit_code(),
        crate::error::ExitCode::BadInput
    );
}

#[test]
fn concurrent_first_use_yields_one_value() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Arc::new(store(tmp.path()));
    let s2 = Arc::new(store(tmp.path()));
    let mut handles = Vec::new();
    for i in 0..8 {
        let st = if i % 2 == 0 { s.clone() } else { s2.clone() };
        handles.push(std::thread::spawn(move || {
            st.password("shared length=24", &[]).unwrap()
        }));
    }
    let vals: Vec<Secret> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(vals.iter().all(|v| v == &vals[0]));
}

#[test]
fn host_certificates_verify_against_the_ca_with_the_right_names() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let host = TlsHost {
        name: "agent1".into(),
        address: Some("10.244.0.12".into()),
        dns_domain: "mesos".into(),
    };
    let ca = s.tls_ca().unwrap();
    let (cert, key) = s.tls_host(&host).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(key.expose().contains("PRIVATE KEY"));
    assert!(!format!("{key:?} {s:?}").contains("PRIVATE"));

    // Path validation (webpki, pure Rust over aws-lc-rs) against the CA, for server and
    // client use, and the names.
    let ca_der = rustls_pki_types::CertificateDer::from(der(&ca));
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
    let ee_der = rustls_pki_types::CertificateDer::from(der(&cert));
    let ee = webpki::EndEntityCert::try_from(&ee_der).unwrap();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            rustls_pki_types::UnixTime::now(),
            usage,
            None,
            None,
        )
        .unwrap();
    }
    for name in ["agent1", "agent1.mesos", "10.244.0.12"] {
        let sn = rustls_pki_types::ServerName::try_from(name).unwrap();
        ee.verify_is_valid_for_subject_name(&sn).unwrap();
    }
    let wrong = rustls_pki_types::ServerName::try_from("agent2.mesos").unwrap();
    assert!(ee.verify_is_valid_for_subject_name(&wrong).is_err());

    // Validity: 1 year for the host, 10 years for the CA; ECDSA P-256.
    let ee_der_bytes = der(&cert);
    let (_, x) = x509_parser::parse_x509_certificate(&ee_der_bytes).unwrap();
    let days = (x.validity().not_after.timestamp() - x.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 365);
    assert_eq!(
        x.signature_algorithm.algorithm,
        x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
    );
    let ca_der_bytes = der(&ca);
    let (_, c) = x509_parser::parse_x509_certificate(&ca_der_bytes).unwrap();
    let days = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 3650);
    assert!(c.is_ca());

    // Stable while nothing changes; re-issued when the address changes.
    assert_eq!(s.tls_host(&host).unwrap().0, cert);
    assert_eq!(store(tmp.path()).tls_host(&host).unwrap().0, cert);
    let moved = TlsHost {
        address: Some("10.244.0.99".into()),
        ..host.clone()
    };
    let (cert2, key2) = s.tls_host(&moved).unwrap();
    assert_ne!(cert2, cert);
    assert_ne!(key2, key);
    let ee2_der = rustls_pki_types::CertificateDer::from(der(&cert2));
    let ee2 = webpki::EndEntityCert::try_from(&ee2_der).unwrap();
    ee2.verify_is_valid_for_subject_name(
        &rustls_pki_types::ServerName::try_from("10.244.0.99").unwrap(),
    )
    .unwrap();
    assert!(ee2
        .verify_is_valid_for_subject_name(
            &rustls_pki_types::ServerName::try_from("10.244.0.12").unwrap()
        )
        .is_err());
}

#[test]
fn certificates_near_expiry_are_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let host = TlsHost {
        name: "m1".into(),
        address: None,
        dns_domain: "mesos".into(),
    };
    let (cert, _) = s.tls_host(&host).unwrap();
    // Age the stored certificate: 10 days left.
    let mut h = s.load_host("tls/hosts/m1").unwrap().unwrap();
    h.not_after = time::OffsetDateTime::now_utc().unix_timestamp() + 10 * 86400;
    s.put("tls/hosts/m1", &host_secret(&h).unwrap()).unwrap();
    let (renewed, _) = s.tls_host(&host).unwrap();
    assert_ne!(renewed, cert);
    assert_eq!(s.tls_host(&host).unwrap().0, renewed);
}

#[test]
fn rotate_reissues_hosts_and_optionally_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let host = TlsHost {
        name: "a1".into(),
        address: Some("10.0.0.5".into()),
        dns_domain: "mesos".into(),
    };
    let ca = s.tls_ca().unwrap();
    let (cert, _) = s.tls_host(&host).unwrap();
    let r = store(tmp.path()).rotate_tls(false).unwrap();
    assert_eq!(
        r,
        RotateReport {
            ca: false,
            hosts: vec!["a1".into()]
        }
    );
    let s = store(tmp.path());
    assert_eq!(s.tls_ca().unwrap(), ca);
    let (rotated, _) = s.tls_host(&host).unwrap();
    assert_ne!(rotated, cert);
    let r = store(tmp.path()).rotate_tls(true).unwrap();
    assert!(r.ca);
    let s = store(tmp.path());
    let new_ca = s.tls_ca().unwrap();
    assert_ne!(new_ca, ca);
    let (c3, _) = s.tls_host(&host).unwrap();
    let ca_der = rustls_pki_types::CertificateDer::from(der(&new_ca));
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
    let ee_der = rustls_pki_types::CertificateDer::from(der(&c3));
    let ee = webpki::EndEntityCert::try_from(&ee_der).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        rustls_pki_types::UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
}

/// The store behind the templates' lookups, as the runner plugs it in (minus redaction).
struct Provider(SecretStore);

impl crate::template::SecretProvider for Provider {
    fn password(&self, term: &str, kw: &[(String, String)]) -> Result<Secret, String> {
        self.0.password(term, kw).map_err(|e| e.to_string())
    }
    fn tls_ca(&self) -> Result<String, String> {
        self.0.tls_ca().map_err(|e| e.to_string())
    }
    fn tls_host(&self, h: &TlsHost) -> Result<(String, Secret), String> {
        self.0.tls_host(h).map_err(|e| e.to_string())
    }
}

#[test]
fn lookups_in_templates() {
    use crate::template::{Templar, Vars};
    let tmp = tempfile::tempdir().unwrap();
    let plain = Templar::new(tmp.path());
    let vars: Vars = serde_json::from_value(serde_json::json!({
        "inventory_hostname": "agent2",
        "ansible_host": "192.0.2.7",
        "dns_domain": "dc1",
        "pw": "{{ lookup('password', 'zk length=12 chars=digits') }}",
    }))
    .unwrap();
    let e = plain.render_string("{{ pw }}", &vars).unwrap_err();
    assert!(e.message.contains("secrets store"), "{}", e.message);

    let t = plain.with_secrets(Arc::new(Provider(store(tmp.path()))));
    let a = t.render_string("{{ pw }}", &vars).unwrap();
    assert_eq!(a.len(), 12);
    assert!(a.chars().all(|c| c.is_ascii_digit()));
    // A string of digits stays a string (never re-parsed as a number).
    assert!(t.render_str("{{ pw }}", &vars).unwrap().is_string());
    assert_eq!(t.render_string("{{ pw }}", &vars).unwrap(), a);
    let q = t
        .render_str("{{ query('password', 'zk') }}", &vars)
        .unwrap();
    assert_eq!(q, serde_json::json!([a]));

    let cert = t
        .render_string("{{ lookup('provisioner_tls', 'cert') }}", &vars)
        .unwrap();
    let d = der(&cert);
    let (_, x) = x509_parser::parse_x509_certificate(&d).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "DNSName(agent2)",
            "DNSName(agent2.dc1)",
            "IPAddress(c0:00:02:07)"
        ]
    );
    let key = t
        .render_string(
            "{{ lookup('provisioner_tls', 'key', host='agent2') }}",
            &vars,
        )
        .unwrap();
    assert!(key.contains("PRIVATE KEY"));
    let ca = t
        .render_string("{{ lookup('provisioner_tls', 'ca') }}", &vars)
        .unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE"));
    assert!(t
        .render_string(
            "{{ lookup('provisioner_tls', 'cert', host='nope') }}",
            &vars
        )
        .is_err());
}

#[test]
fn preload_decrypts_every_stored_secret_into_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let pw = s.password("zk", &[]).unwrap();
    s.tls_ca().unwrap();
    let fresh = store(tmp.path());
    assert_eq!(fresh.preload(), 2);
    // Answered from memory: the files may go.
    std::fs::remove_dir_all(tmp.path().join("state/secrets/password")).unwrap();
    assert_eq!(
        fresh.get("password/zk").unwrap().unwrap().expose(),
        pw.expose()
    );
}
