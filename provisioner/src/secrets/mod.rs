//! Secrets at rest: generated passwords and the cluster's TLS material, encrypted in the
//! inventory's state dir.
//!
//! - Store: `<inventory dir>/.<inventory stem>.state/secrets/`, one file per secret
//!   (`password/<name>.enc`, `tls/ca.enc`, `tls/hosts/<host>.enc`), each encrypted with
//!   XChaCha20-Poly1305 (see [`crypto`]), written atomically (temp file, fsync, rename), 0600.
//!   `.keycheck` proves at open time that the key is the store's; `.lock` serialises writers
//!   (an advisory lock held while a secret is created or replaced).
//! - Key: `$PROVISIONER_KEY_FILE`, default `~/.config/provisioner/key` (0600), generated on
//!   first use, outside the state dir, so the state dir can be committed and the key not.
//! - A store that exists with a missing or wrong key is an error that names the key file;
//!   a key is never generated for an existing store.
//!
//! Values leave this module as [`Secret`]s.

mod crypto;
pub mod password;
pub mod tls;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;

use crate::secret::Secret;
use crypto::{CryptoError, Key};
pub use password::PasswordSpec;
pub use tls::TlsHost;

const KEYCHECK: &str = ".keycheck";
const KEYCHECK_TEXT: &[u8] = b"provisioner secrets store v1";
const EXT: &str = "enc";

/// Why the store cannot be used. Every message names the files involved; none holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the secrets store {store} exists but its key file {key} does not: restore the key (or point PROVISIONER_KEY_FILE at it); nothing was run")]
    MissingKey { store: PathBuf, key: PathBuf },
    #[error("the key file {key} does not decrypt the secrets store {store} (wrong key?): point PROVISIONER_KEY_FILE at the key this store was created with; nothing was run")]
    WrongKey { store: PathBuf, key: PathBuf },
    #[error("the key file {key} is not a provisioner key (one line: base64 of 32 bytes)")]
    BadKey { key: PathBuf },
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<SecretsError> for crate::error::Error {
    fn from(e: SecretsError) -> Self {
        crate::error::Error::Usage(e.to_string())
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SecretsError + '_ {
    move |e| SecretsError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// `$PROVISIONER_KEY_FILE`, else `~/.config/provisioner/key`.
pub fn default_key_file() -> PathBuf {
    if let Some(p) = std::env::var_os("PROVISIONER_KEY_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config").join("provisioner").join("key")
}

/// What `rotate_tls` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotateReport {
    pub ca: bool,
    pub hosts: Vec<String>,
}

/// The encrypted secrets of one inventory.
pub struct SecretStore {
    dir: PathBuf,
    key_file: PathBuf,
    key: Mutex<Option<Key>>,
    /// Serialises get-or-create within this process (the file lock does across processes).
    write: Mutex<()>,
    cache: Mutex<HashMap<String, Secret>>,
    notices: Mutex<Vec<String>>,
    cluster: String,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("dir", &self.dir)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl SecretStore {
    /// The store of `inventory` with the default key file (see `crate::state::StateDir`).
    pub fn for_inventory(inventory: &Path) -> Result<SecretStore, SecretsError> {
        crate::state::StateDir::for_inventory(inventory).secrets()
    }

    /// The store in `dir` for the cluster named `cluster` (its TLS subjects).
    pub fn open_for_cluster(
        dir: PathBuf,
        key_file: PathBuf,
        cluster: &str,
    ) -> Result<SecretStore, SecretsError> {
        let mut s = SecretStore::open(dir, key_file)?;
        s.cluster = cluster.to_string();
        Ok(s)
    }

    /// Open the store in `dir` with the key in `key_file`. Checks the key against an existing
    /// store; generates nothing (the key is generated on the first write).
    pub fn open(dir: PathBuf, key_file: PathBuf) -> Result<SecretStore, SecretsError> {
        let exists = store_has_content(&dir);
        let key = if key_file.exists() {
            Some(read_key(&key_file)?)
        } else {
            None
        };
        match &key {
            None if exists => {
                return Err(SecretsError::MissingKey {
                    store: dir,
                    key: key_file,
                })
            }
            Some(k) => {
                let check = dir.join(KEYCHECK);
                if let Ok(data) = std::fs::read(&check) {
                    if k.open(KEYCHECK, &data).ok().as_deref() != Some(KEYCHECK_TEXT) {
                        return Err(SecretsError::WrongKey {
                            store: dir,
                            key: key_file,
                        });
                    }
                }
            }
            None => {}
        }
        Ok(SecretStore {
            dir,
            key_file,
            key: Mutex::new(key),
            write: Mutex::new(()),
            cache: Mutex::new(HashMap::new()),
            notices: Mutex::new(Vec::new()),
            cluster: String::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// One-line notices (a key was generated) not yet reported.
    pub fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{EXT}"))
    }

    /// The key, generating it (and the key check) on first use.
    fn key(&self, create: bool) -> Result<Option<Key>, SecretsError> {
        let mut slot = self
            .key
            .lock()
            .map_err(|_| SecretsError::Invalid("secrets store lock poisoned".into()))?;
        if slot.is_none() && !create && self.key_file.exists() {
            // Another store object (or process) created it since we opened.
            *slot = Some(read_key(&self.key_file)?);
        }
        if slot.is_none() && create {
            let k = load_or_create_key(&self.key_file)?;
            if k.1 {
                if let Ok(mut n) = self.notices.lock() {
                    n.push(format!(
                        "generated a new secrets key in {} (0600): back it up and keep it out of the repository; {} can be committed",
                        self.key_file.display(),
                        self.dir.display()
                    ));
                }
            }
            *slot = Some(k.0);
        }
        Ok(slot.clone())
    }

    fn ensure_keycheck(&self, key: &Key) -> Result<(), SecretsError> {
        let check = self.dir.join(KEYCHECK);
        if !check.exists() {
            let sealed = key.seal(KEYCHECK, KEYCHECK_TEXT).map_err(crypto_err)?;
            write_atomic(&check, &sealed)?;
        }
        Ok(())
    }

    /// The stored value of `name` (e.g. `password/zk`), if any.
    pub fn get(&self, name: &str) -> Result<Option<Secret>, SecretsError> {
        check_name(name)?;
        if let Some(v) = self.cache.lock().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(Some(v));
        }
        let path = self.path_of(name);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let Some(key) = self.key(false)? else {
            return Err(SecretsError::MissingKey {
                store: self.dir.clone(),
                key: self.key_file.clone(),
            });
        };
        let plain = key.open(name, &data).map_err(|e| match e {
            CryptoError::Decrypt => SecretsError::WrongKey {
                store: self.dir.clone(),
                key: self.key_file.clone(),
            },
            _ => SecretsError::Invalid(format!("{} is not a secrets file", path.display())),
        })?;
        let text = String::from_utf8(plain)
            .map_err(|_| SecretsError::Invalid(format!("{} is not text", path.display())))?;
        let s = Secret::new(text);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(name.to_string(), s.clone());
        }
        Ok(Some(s))
    }

    /// Read and decrypt every stored secret now, so a run's lookups are answered from memory
    /// (called before a run's walk: no file work or decryption on the async workers). A secret
    /// that cannot be read is left for its lookup to report. Returns how many were loaded.
    pub fn preload(&self) -> usize {
        fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(d) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else if p.extension().is_some_and(|x| x == EXT) {
                    if let Ok(rel) = p.with_extension("").strip_prefix(root) {
                        let parts: Vec<String> = rel
                            .components()
                            .map(|c| c.as_os_str().to_string_lossy().to_string())
                            .collect();
                        out.push(parts.join("/"));
                    }
                }
            }
        }
        let mut names = Vec::new();
        walk(&self.dir, &self.dir, &mut names);
        names
            .iter()
            .filter(|n| matches!(self.get(n), Ok(Some(_))))
            .count()
    }

    /// Store `value` as `name`, replacing what was there.
    pub fn put(&self, name: &str, value: &Secret) -> Result<(), SecretsError> {
        let _g = self
            .write
            .lock()
            .map_err(|_| SecretsError::Invalid("secrets store lock poisoned".into()))?;
        let _l = self.file_lock()?;
        self.put_locked(name, value)
    }

    fn put_locked(&self, name: &str, value: &Secret) -> Result<(), SecretsError> {
        check_name(name)?;
        let key = self.key(true)?.ok_or_else(|| SecretsError::MissingKey {
            store: self.dir.clone(),
            key: self.key_file.clone(),
        })?;
        self.ensure_keycheck(&key)?;
        let sealed = key
            .seal(name, value.expose().as_bytes())
            .map_err(crypto_err)?;
        write_atomic(&self.path_of(name), &sealed)?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(name.to_string(), value.clone());
        }
        Ok(())
    }

    /// The stored value of `name`, or `make()`'s, stored first. Safe against concurrent runs.
    pub fn get_or_create(
        &self,
        name: &str,
        make: impl FnOnce() -> Result<Secret, SecretsError>,
    ) -> Result<Secret, SecretsError> {
        if let Some(v) = self.get(name)? {
            return Ok(v);
        }
        let _g = self
            .write
            .lock()
            .map_err(|_| SecretsError::Invalid("secrets store lock poisoned".into()))?;
        let _l = self.file_lock()?;
        if let Ok(mut c) = self.cache.lock() {
            c.remove(name);
        }
        if let Some(v) = self.get(name)? {
            return Ok(v);
        }
        let v = make()?;
        self.put_locked(name, &v)?;
        Ok(v)
    }

    fn file_lock(&self) -> Result<std::fs::File, SecretsError> {
        create_private_dir(&self.dir)?;
        let path = self.dir.join(".lock");
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        f.lock().map_err(io(&path))?;
        Ok(f)
    }

    /// `lookup('password', term, **kwargs)`: the stored password, generated on first use.
    /// `/dev/null` gives a fresh password every time and stores nothing.
    pub fn password(
        &self,
        term: &str,
        kwargs: &[(String, String)],
    ) -> Result<Secret, SecretsError> {
        let spec = PasswordSpec::parse(term, kwargs).map_err(SecretsError::Invalid)?;
        if spec.ephemeral() {
            return spec.generate().map(Secret::new).map_err(crypto_err);
        }
        let name = format!("password/{}", password_key(&spec.name)?);
        self.get_or_create(&name, || {
            spec.generate().map(Secret::new).map_err(crypto_err)
        })
    }

    fn load_ca(&self) -> Result<Option<tls::StoredCa>, SecretsError> {
        match self.get("tls/ca")? {
            None => Ok(None),
            Some(s) => serde_json::from_str(s.expose())
                .map(Some)
                .map_err(|_| SecretsError::Invalid("tls/ca: unreadable".into())),
        }
    }

    fn ca(&self) -> Result<tls::StoredCa, SecretsError> {
        if let Some(ca) = self.load_ca()? {
            return Ok(ca);
        }
        let cluster = self.cluster.clone();
        let s = self.get_or_create("tls/ca", || {
            let ca = tls::new_ca(&cluster).map_err(SecretsError::Invalid)?;
            ca_secret(&ca)
        })?;
        serde_json::from_str(s.expose())
            .map_err(|_| SecretsError::Invalid("tls/ca: unreadable".into()))
    }

    /// The CA certificate (PEM) if the CA exists (no CA is created).
    pub fn existing_tls_ca(&self) -> Result<Option<String>, SecretsError> {
        Ok(self.load_ca()?.map(|c| c.cert_pem))
    }

    /// The CA certificate (PEM), created on first use.
    pub fn tls_ca(&self) -> Result<String, SecretsError> {
        Ok(self.ca()?.cert_pem)
    }

    /// The certificate (PEM) and key (PEM) of `host`, issued (or re-issued, see [`tls`]) as
    /// needed.
    pub fn tls_host(&self, host: &TlsHost) -> Result<(String, Secret), SecretsError> {
        let name = format!("tls/hosts/{}", host_key(&host.name)?);
        let ca = self.ca()?;
        let sans = host.sans();
        if let Some(h) = self.load_host(&name)? {
            if tls::needs_reissue(&h, &ca, &sans).is_none() {
                return Ok((h.cert_pem, Secret::new(h.key_pem)));
            }
        }
        let _g = self
            .write
            .lock()
            .map_err(|_| SecretsError::Invalid("secrets store lock poisoned".into()))?;
        let _l = self.file_lock()?;
        if let Ok(mut c) = self.cache.lock() {
            c.remove(&name);
        }
        if let Some(h) = self.load_host(&name)? {
            if tls::needs_reissue(&h, &ca, &sans).is_none() {
                return Ok((h.cert_pem, Secret::new(h.key_pem)));
            }
        }
        let h = tls::issue_host(&ca, &sans, &host.name).map_err(SecretsError::Invalid)?;
        self.put_locked(&name, &host_secret(&h)?)?;
        Ok((h.cert_pem, Secret::new(h.key_pem)))
    }

    fn load_host(&self, name: &str) -> Result<Option<tls::StoredHost>, SecretsError> {
        match self.get(name)? {
            None => Ok(None),
            Some(s) => serde_json::from_str(s.expose())
                .map(Some)
                .map_err(|_| SecretsError::Invalid(format!("{name}: unreadable"))),
        }
    }

    /// Re-issue every stored host certificate (same SANs), and first the CA with `ca`.
    pub fn rotate_tls(&self, ca: bool) -> Result<RotateReport, SecretsError> {
        let mut report = RotateReport::default();
        let _g = self
            .write
            .lock()
            .map_err(|_| SecretsError::Invalid("secrets store lock poisoned".into()))?;
        let _l = self.file_lock()?;
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
        let current = match self.load_ca()? {
            Some(c) if !ca => c,
            _ => {
                let new = tls::new_ca(&self.cluster).map_err(SecretsError::Invalid)?;
                self.put_locked("tls/ca", &ca_secret(&new)?)?;
                report.ca = true;
                new
            }
        };
        let hosts_dir = self.dir.join("tls").join("hosts");
        let mut names: Vec<String> = match std::fs::read_dir(&hosts_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(&format!(".{EXT}")))
                        .map(str::to_string)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        for host in names {
            let name = format!("tls/hosts/{host}");
            if let Some(h) = self.load_host(&name)? {
                let new =
                    tls::issue_host(&current, &h.sans, &host).map_err(SecretsError::Invalid)?;
                self.put_locked(&name, &host_secret(&new)?)?;
                report.hosts.push(host);
            }
        }
        Ok(report)
    }
}

fn ca_secret(ca: &tls::StoredCa) -> Result<Secret, SecretsError> {
    serde_json::to_string(ca)
        .map(Secret::new)
        .map_err(|e| SecretsError::Invalid(e.to_string()))
}

fn host_secret(h: &tls::StoredHost) -> Result<Secret, SecretsError> {
    serde_json::to_string(h)
        .map(Secret::new)
        .map_err(|e| SecretsError::Invalid(e.to_string()))
}

fn crypto_err(e: CryptoError) -> SecretsError {
    SecretsError::Invalid(match e {
        CryptoError::Random => "the OS random source failed".into(),
        _ => "encryption failed".into(),
    })
}

/// A password's store name from its lookup path: relative, no `..`, plain characters.
fn password_key(path: &str) -> Result<String, SecretsError> {
    let p = path.trim_start_matches('/');
    let ok = !p.is_empty()
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@'));
    if !ok {
        return Err(SecretsError::Invalid(format!(
            "password lookup: `{path}` is not a usable name (letters, digits, `_-.@/`, no `..`)"
        )));
    }
    Ok(p.to_string())
}

fn host_key(host: &str) -> Result<String, SecretsError> {
    if host.is_empty()
        || host.starts_with('.')
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(SecretsError::Invalid(format!(
            "provisioner_tls: `{host}` is not a host name"
        )));
    }
    Ok(host.to_string())
}

fn check_name(name: &str) -> Result<(), SecretsError> {
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(SecretsError::Invalid(format!("bad secret name `{name}`")));
    }
    Ok(())
}

fn store_has_content(dir: &Path) -> bool {
    if dir.join(KEYCHECK).exists() {
        return true;
    }
    fn walk(d: &Path) -> bool {
        let Ok(rd) = std::fs::read_dir(d) else {
            return false;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if walk(&p) {
                    return true;
                }
            } else if p.extension().is_some_and(|x| x == EXT) {
                return true;
            }
        }
        false
    }
    walk(dir)
}

fn read_key(path: &Path) -> Result<Key, SecretsError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| Key::from_bytes(&b))
        .ok_or_else(|| SecretsError::BadKey {
            key: path.to_path_buf(),
        })
}

/// Read the key, or create it (0600, parent 0700). Returns whether it was created.
fn load_or_create_key(path: &Path) -> Result<(Key, bool), SecretsError> {
    if path.exists() {
        return Ok((read_key(path)?, false));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    let key = Key::generate().map_err(crypto_err)?;
    let text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(key.bytes())
    );
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes()).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            Ok((key, true))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read_key(path)?, false)),
        Err(e) => Err(io(path)(e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), SecretsError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Temp file in the same directory (0600), fsync, rename, fsync the directory.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SecretsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    tmp.write_all(data).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
