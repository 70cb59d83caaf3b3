//! libprocess TLS for the stand-in: the `LIBPROCESS_SSL_*` environment Mesos reads (docs
//! "SSL in Mesos", 1.10+ names plus the deprecated `VERIFY_CERT`/`REQUIRE_CERT` aliases),
//! checked the way libprocess refuses to start, and turned into rustls server and client
//! configurations for [`crate::http`].
//!
//! Deviation, on purpose: with `LIBPROCESS_SSL_VERIFY_SERVER_CERT=false` libprocess accepts any
//! server certificate; the stand-in still verifies against the CA file, so it needs one whenever
//! TLS is on (it has no system CA store to fall back to).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The `LIBPROCESS_SSL_*` settings of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslEnv {
    pub enabled: bool,
    pub support_downgrade: bool,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub verify_server_cert: bool,
    pub require_client_cert: bool,
}

/// A libprocess boolean: `true|1|false|0`, as libprocess parses it.
fn boolean(name: &str, v: Option<String>, errs: &mut Vec<String>) -> Option<bool> {
    match v.as_deref().map(str::trim) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(other) => {
            errs.push(format!(
                "{name}={other:?} is not a boolean (true, false, 1 or 0)"
            ));
            None
        }
    }
}

/// Reads the settings through `get` (the process environment in production) and rejects what
/// libprocess would refuse at startup.
pub fn parse_env(get: &dyn Fn(&str) -> Option<String>) -> Result<SslEnv, Vec<String>> {
    let mut errs = Vec::new();
    let var = |k: &str| get(&format!("LIBPROCESS_SSL_{k}")).filter(|v| !v.is_empty());
    let path = |k: &str| var(k).map(PathBuf::from);
    let flag = |k: &str, old: Option<&str>, errs: &mut Vec<String>| {
        let new = boolean(&format!("LIBPROCESS_SSL_{k}"), var(k), errs);
        let old = old.and_then(|o| boolean(&format!("LIBPROCESS_SSL_{o}"), var(o), errs));
        new.or(old).unwrap_or(false)
    };
    let env = SslEnv {
        enabled: flag("ENABLED", None, &mut errs),
        support_downgrade: flag("SUPPORT_DOWNGRADE", None, &mut errs),
        cert_file: path("CERT_FILE"),
        key_file: path("KEY_FILE"),
        ca_file: path("CA_FILE"),
        verify_server_cert: flag("VERIFY_SERVER_CERT", Some("VERIFY_CERT"), &mut errs),
        require_client_cert: flag("REQUIRE_CLIENT_CERT", Some("REQUIRE_CERT"), &mut errs),
    };
    if let Some(s) = var("HOSTNAME_VALIDATION_SCHEME") {
        if s != "legacy" && s != "openssl" {
            errs.push(format!(
                "LIBPROCESS_SSL_HOSTNAME_VALIDATION_SCHEME={s:?} must be 'legacy' or 'openssl'"
            ));
        }
    }
    if env.enabled {
        for (name, p) in [
            ("CERT_FILE", &env.cert_file),
            ("KEY_FILE", &env.key_file),
            ("CA_FILE", &env.ca_file),
        ] {
            match p {
                None => errs.push(format!(
                    "LIBPROCESS_SSL_ENABLED=true needs LIBPROCESS_SSL_{name}"
                )),
                Some(p) if !p.is_file() => errs.push(format!(
                    "LIBPROCESS_SSL_{name}={}: no such file",
                    p.display()
                )),
                Some(_) => {}
            }
        }
    }
    if errs.is_empty() {
        Ok(env)
    } else {
        Err(errs)
    }
}

/// The TLS side of one stand-in process.
pub struct Tls {
    /// Incoming connections (master and agent endpoints); `None` for a client-only process.
    pub server: Option<Arc<ServerConfig>>,
    /// Accept plain HTTP next to TLS on the same port (`LIBPROCESS_SSL_SUPPORT_DOWNGRADE`).
    pub downgrade: bool,
    pub client: Arc<ClientConfig>,
}

fn certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let v = CertificateDer::pem_file_iter(p)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if v.is_empty() {
        return Err(format!("{}: no PEM certificate in it", p.display()));
    }
    Ok(v)
}

fn key(p: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for c in certs(ca)? {
        store
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(Arc::new(store))
}

/// A client that verifies servers against `ca` and presents `identity` (cert, key) when given.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientConfig, String> {
    let b = ClientConfig::builder().with_root_certificates(roots(ca)?);
    match identity {
        Some((c, k)) => b
            .with_client_auth_cert(certs(c)?, key(k)?)
            .map_err(|e| format!("{} and {}: {e}", c.display(), k.display())),
        None => Ok(b.with_no_client_auth()),
    }
}

/// Server and client configurations for an enabled [`SslEnv`] (from [`parse_env`]).
pub fn build(env: &SslEnv) -> Result<Option<Tls>, String> {
    if !env.enabled {
        return Ok(None);
    }
    let (Some(cert), Some(key_file), Some(ca)) = (&env.cert_file, &env.key_file, &env.ca_file)
    else {
        return Err("TLS settings are incomplete".into());
    };
    let roots = roots(ca)?;
    let verifier = if env.require_client_cert {
        WebPkiClientVerifier::builder(roots.clone()).build()
    } else {
        WebPkiClientVerifier::builder(roots.clone())
            .allow_unauthenticated()
            .build()
    }
    .map_err(|e| format!("client certificate verifier: {e}"))?;
    let server = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_file)?)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key_file.display()))?;
    Ok(Some(Tls {
        server: Some(Arc::new(server)),
        downgrade: env.support_downgrade,
        client: Arc::new(client_config(ca, Some((cert, key_file)))?),
    }))
}

static INSTALLED: OnceLock<Tls> = OnceLock::new();

/// Makes `tls` the process's TLS: [`crate::http`] serves and requests through it from now on.
/// Once per process (a stand-in process is one master, agent or Mesos-DNS).
pub fn install(tls: Tls) {
    let _ = INSTALLED.set(tls);
}

pub fn installed() -> Option<&'static Tls> {
    INSTALLED.get()
}

/// The name a server certificate must carry for `host` (an IP SAN for an address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn off_by_default_and_bad_values_are_refused_like_libprocess() {
        assert_eq!(parse_env(&env_of(&[])).unwrap(), SslEnv::default());
        let errs = parse_env(&env_of(&[
            ("LIBPROCESS_SSL_ENABLED", "yes"),
            ("LIBPROCESS_SSL_HOSTNAME_VALIDATION_SCHEME", "strict"),
        ]))
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        let errs = parse_env(&env_of(&[
            ("LIBPROCESS_SSL_ENABLED", "true"),
            ("LIBPROCESS_SSL_CERT_FILE", "/nonexistent/host.crt"),
        ]))
        .unwrap_err();
        assert!(errs
            .iter()
            .any(|e| e.contains("needs LIBPROCESS_SSL_KEY_FILE")));
        assert!(errs
            .iter()
            .any(|e| e.contains("/nonexistent/host.crt: no such file")));
    }

    #[test]
    fn deprecated_names_still_count() {
        let e = parse_env(&env_of(&[
            ("LIBPROCESS_SSL_VERIFY_CERT", "1"),
            ("LIBPROCESS_SSL_REQUIRE_CERT", "true"),
        ]))
        .unwrap();
        assert!(e.verify_server_cert && e.require_client_cert);
    }
}
