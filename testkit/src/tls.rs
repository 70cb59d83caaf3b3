//! TLS clients for testkit: the Mesos-DNS stand-in reading masters over HTTPS
//! (`mesosHTTPSOn`, `caCertFile`) and the test framework. Servers are verified against a CA
//! file; an IP address as the server name is checked against the certificate's IP SANs.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The TLS of one process's outgoing requests ([`crate::http::request`]).
pub struct Tls {
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

static INSTALLED: OnceLock<Tls> = OnceLock::new();

/// Makes `tls` the process's TLS: [`crate::http::request`] uses it from now on.
/// Once per process.
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
