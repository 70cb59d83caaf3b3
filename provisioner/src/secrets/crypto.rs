//! Encryption at rest: XChaCha20-Poly1305 with a 32-byte key, a random 24-byte nonce per file,
//! and the secret's name as associated data (a file renamed to another secret's name does not
//! decrypt).
//!
//! File format: `PSEC1\n` + nonce (24 bytes) + ciphertext with its 16-byte tag.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const MAGIC: &[u8] = b"PSEC1\n";
const NONCE_LEN: usize = 24;

/// The store's key. Never formatted.
#[derive(Clone)]
pub(crate) struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(********)")
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CryptoError {
    /// Not a file of ours.
    Format,
    /// The tag does not verify: wrong key, or the file was changed.
    Decrypt,
    /// The OS random source failed.
    Random,
}

pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Random)
}

impl Key {
    pub(crate) fn generate() -> Result<Key, CryptoError> {
        let mut k = [0u8; 32];
        random_bytes(&mut k)?;
        Ok(Key(k))
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Key> {
        <[u8; 32]>::try_from(b).ok().map(Key)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Random)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub(crate) fn open(&self, aad: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rest = data.strip_prefix(MAGIC).ok_or(CryptoError::Format)?;
        if rest.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Format);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = Key::generate().unwrap();
        let sealed = k.seal("password/a", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.open("password/a", &sealed).unwrap(), b"hunter2");
        assert_eq!(k.open("password/b", &sealed), Err(CryptoError::Decrypt));
        let other = Key::generate().unwrap();
        assert_eq!(other.open("password/a", &sealed), Err(CryptoError::Decrypt));
        assert_eq!(k.open("x", b"garbage"), Err(CryptoError::Format));
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.bytes())));
    }
}
