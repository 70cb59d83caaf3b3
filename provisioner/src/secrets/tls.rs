//! The cluster CA and per-host certificates (ECDSA P-256, rcgen).
//!
//! The CA is valid 10 years, host certificates 1 year. A host certificate is re-issued when
//! its SANs differ from the wanted ones, when fewer than [`RENEW_BEFORE_DAYS`] days remain, or
//! when it was not signed by the current CA.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use time::{Duration, OffsetDateTime};

use super::crypto::random_bytes;

pub const CA_DAYS: i64 = 3650;
pub const HOST_DAYS: i64 = 365;
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// Who a host certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsHost {
    /// The inventory hostname.
    pub name: String,
    /// `ansible_host`, when it differs from the name.
    pub address: Option<String>,
    /// `dns_domain` (default `mesos`).
    pub dns_domain: String,
}

impl TlsHost {
    /// The SANs: the name, `<name>.<dns_domain>`, the address.
    pub fn sans(&self) -> Vec<String> {
        let mut out = vec![self.name.clone()];
        let domain = self.dns_domain.trim_matches('.');
        if !domain.is_empty() {
            out.push(format!("{}.{domain}", self.name));
        }
        if let Some(a) = &self.address {
            let a = a.trim();
            if !a.is_empty() {
                out.push(a.to_string());
            }
        }
        let mut seen = Vec::new();
        out.retain(|s| {
            let dup = seen.contains(s);
            seen.push(s.clone());
            !dup
        });
        out
    }
}

/// The CA as stored (inside the encrypted file). Not `Debug`: it holds the CA key.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: i64,
}

/// A host certificate as stored. Not `Debug`: it holds the host key.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredHost {
    pub cert_pem: String,
    pub key_pem: String,
    pub sans: Vec<String>,
    pub not_after: i64,
    /// SHA-256 (hex) of the CA certificate that signed it.
    pub ca_sha256: String,
}

pub(crate) fn fingerprint(pem: &str) -> String {
    let d = sha2::Sha256::digest(pem.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn serial() -> Result<SerialNumber, String> {
    let mut b = [0u8; 16];
    random_bytes(&mut b).map_err(|_| "the OS random source failed".to_string())?;
    b[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&b))
}

fn rc(e: rcgen::Error) -> String {
    format!("certificate generation failed: {e}")
}

pub(crate) fn new_ca(cluster: &str) -> Result<StoredCa, String> {
    let key = KeyPair::generate().map_err(rc)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, format!("provisioner CA {cluster}"));
    p.distinguished_name
        .push(DnType::OrganizationName, "provisioner");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(CA_DAYS);
    p.serial_number = Some(serial()?);
    let cert = p.self_signed(&key).map_err(rc)?;
    Ok(StoredCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: p.not_after.unix_timestamp(),
    })
}

pub(crate) fn issue_host(ca: &StoredCa, sans: &[String], cn: &str) -> Result<StoredHost, String> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rc)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(rc)?;
    let key = KeyPair::generate().map_err(rc)?;
    let mut p = CertificateParams::new(sans.to_vec()).map_err(rc)?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(HOST_DAYS);
    p.serial_number = Some(serial()?);
    let cert = p.signed_by(&key, &issuer).map_err(rc)?;
    Ok(StoredHost {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        sans: sans.to_vec(),
        not_after: p.not_after.unix_timestamp(),
        ca_sha256: fingerprint(&ca.cert_pem),
    })
}

/// Why a stored host certificate must be re-issued, if it must.
pub(crate) fn needs_reissue(h: &StoredHost, ca: &StoredCa, sans: &[String]) -> Option<String> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if h.sans != sans {
        return Some(format!(
            "its names changed ({} -> {})",
            h.sans.join(","),
            sans.join(",")
        ));
    }
    if h.not_after - now < RENEW_BEFORE_DAYS * 86400 {
        return Some(format!("fewer than {RENEW_BEFORE_DAYS} days remain"));
    }
    if h.ca_sha256 != fingerprint(&ca.cert_pem) {
        return Some("the CA changed".into());
    }
    None
}
