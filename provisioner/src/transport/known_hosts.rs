//! known_hosts, as OpenSSH reads it: plain and hashed (`|1|salt|hash`) host patterns, `[host]:port`
//! for non-default ports, `*`/`?` wildcards, `!negation`, and the `@revoked` / `@cert-authority`
//! markers. russh's own helpers skip markers, negation and wildcards, so this is a small parser of
//! our own.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

/// What known_hosts says about a host's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line for this host has exactly this key.
    Known,
    /// The host is listed, but with other keys (their fingerprints, `SHA256:...`).
    Changed { expected: Vec<String> },
    /// No line names this host.
    Unknown,
    /// The key is marked `@revoked`.
    Revoked,
}

/// The fingerprint as `ssh-keygen -l` prints it: `SHA256:` + unpadded base64.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// How a host is named in known_hosts: `host`, or `[host]:port` when the port is not 22.
pub fn host_entry_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

struct Line {
    marker: Option<String>,
    patterns: String,
    key: PublicKey,
}

fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let marker = if first.starts_with('@') {
            let m = first.to_string();
            first = fields.next().unwrap_or("");
            Some(m)
        } else {
            None
        };
        let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
            tracing::debug!(line = n + 1, "known_hosts: skipping a malformed line");
            continue;
        };
        match PublicKey::from_openssh(&format!("{kind} {b64}")) {
            Ok(key) => out.push(Line {
                marker,
                patterns: first.to_string(),
                key,
            }),
            Err(e) => tracing::debug!(line = n + 1, "known_hosts: skipping a bad key: {e}"),
        }
    }
    out
}

/// `*` and `?` glob, as in OpenSSH's `match_pattern`. Iterative, retrying from the last `*`
/// only: at most len(pattern) x len(s) steps (a recursive matcher is exponential in the number
/// of `*`s, and a known_hosts line is not ours to trust).
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where the last `*` was (the pattern index after it) and the text index it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, i));
            }
            Some(&c) if c == b'?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte, and retry after it.
                Some((after, upto)) => {
                    p = after;
                    i = upto + 1;
                    star = Some((after, upto + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

fn hashed_matches(entry: &str, name: &str) -> bool {
    let mut parts = entry.trim_start_matches("|1|").split('|');
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(Ok(salt)), Some(Ok(hash))) = (
        parts.next().map(|p| b64.decode(p)),
        parts.next().map(|p| b64.decode(p)),
    ) else {
        return false;
    };
    let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// OpenSSH semantics: some positive pattern matches and no negated one does.
fn patterns_match(patterns: &str, name: &str) -> bool {
    let mut positive = false;
    for p in patterns.split(',') {
        if p.starts_with("|1|") {
            if hashed_matches(p, name) {
                positive = true;
            }
        } else if let Some(neg) = p.strip_prefix('!') {
            if glob(neg.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(p.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            positive = true;
        }
    }
    positive
}

fn read(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Check `key` for `host`:`port` against the known_hosts file at `path` (a missing file is empty).
pub fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<HostKeyStatus> {
    Ok(check_text(&read(path)?, host, port, key))
}

fn check_text(text: &str, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
    let name = host_entry_name(host, port);
    let lines = parse(text);
    if lines
        .iter()
        .any(|l| l.marker.as_deref() == Some("@revoked") && l.key.key_data() == key.key_data())
    {
        return HostKeyStatus::Revoked;
    }
    let mut expected = Vec::new();
    for l in lines.iter().filter(|l| l.marker.is_none()) {
        if patterns_match(&l.patterns, &name) {
            if l.key.key_data() == key.key_data() {
                return HostKeyStatus::Known;
            }
            let fp = fingerprint(&l.key);
            if !expected.contains(&fp) {
                expected.push(fp);
            }
        }
    }
    if expected.is_empty() {
        HostKeyStatus::Unknown
    } else {
        HostKeyStatus::Changed { expected }
    }
}

/// The key algorithms known_hosts has for this host, so the client can ask the server for one
/// of those first (as OpenSSH does) instead of tripping over a key of another type.
pub fn known_algorithms(path: &Path, host: &str, port: u16) -> Vec<Algorithm> {
    let name = host_entry_name(host, port);
    let mut algs = Vec::new();
    for l in parse(&read(path).unwrap_or_default()) {
        if l.marker.is_none() && patterns_match(&l.patterns, &name) {
            let a = l.key.algorithm();
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
    }
    algs
}

/// Serialises read-modify-write of known_hosts files within this process.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// Record `key` for `host`:`port`: the file is rewritten atomically (temp file in the same
/// directory, fsync, rename), so a crash never leaves a truncated known_hosts.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
    let _guard = APPEND_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = read(path)?;
    if check_text(&text, host, port, key) == HostKeyStatus::Known {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let mut line = key
        .to_openssh()
        .map_err(|e| io::Error::other(format!("cannot encode the host key: {e}")))?;
    // `to_openssh` appends the key's comment, if any; known_hosts wants `name type base64`.
    line = line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    text.push_str(&format!("{} {line}\n", host_entry_name(host, port)));
    write_atomic(path, &dir, &text)
}

/// Temp file in `dir`, fsync, rename over `path`, keeping its mode (0644 for a new file).
fn write_atomic(path: &Path, dir: &Path, text: &str) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".known_hosts.")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::Permissions::from_mode(0o644)
        });
    tmp.as_file().set_permissions(mode)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Remove every plain line naming `host`:`port` (a replaced machine's old keys; `@revoked` and
/// `@cert-authority` lines stay), atomically. Returns how many lines went.
pub fn forget(path: &Path, host: &str, port: u16) -> io::Result<usize> {
    let _guard = APPEND_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let text = read(path)?;
    let name = host_entry_name(host, port);
    let mut kept = String::new();
    let mut gone = 0;
    for raw in text.lines() {
        let line = raw.trim();
        let patterns = line.split_whitespace().next().unwrap_or("");
        if !line.is_empty()
            && !line.starts_with('#')
            && !patterns.starts_with('@')
            && patterns_match(patterns, &name)
        {
            gone += 1;
            continue;
        }
        kept.push_str(raw);
        kept.push('\n');
    }
    if gone > 0 {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        write_atomic(path, &dir, &kept)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;

    #[test]
    fn forget_removes_only_that_hosts_plain_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("known_hosts");
        let (a, b) = (key(), key());
        append(&p, "10.0.0.5", 22, &a).unwrap();
        append(&p, "10.0.0.6", 22, &b).unwrap();
        assert_eq!(forget(&p, "10.0.0.5", 22).unwrap(), 1);
        assert_eq!(
            check(&p, "10.0.0.5", 22, &a).unwrap(),
            HostKeyStatus::Unknown
        );
        assert_eq!(check(&p, "10.0.0.6", 22, &b).unwrap(), HostKeyStatus::Known);
        assert_eq!(forget(&p, "10.0.0.5", 22).unwrap(), 0);
    }

    fn key() -> PublicKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone()
    }

    fn entry(k: &PublicKey) -> String {
        k.to_openssh().unwrap()
    }

    fn hashed(name: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = [7u8; 20];
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt)
            .unwrap()
            .chain_update(name.as_bytes())
            .finalize()
            .into_bytes();
        format!("|1|{}|{}", b64.encode(salt), b64.encode(mac))
    }

    #[test]
    fn plain_bracketed_and_hashed_entries_match() {
        let k = key();
        let text = format!(
            "# comment\n\nweb1,10.0.0.5 {}\n[db1]:2222\t{}\n{} {}\n",
            entry(&k),
            entry(&k),
            hashed("[lb1]:2200"),
            entry(&k)
        );
        assert_eq!(check_text(&text, "web1", 22, &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, "10.0.0.5", 22, &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, "DB1", 2222, &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, "db1", 22, &k), HostKeyStatus::Unknown);
        assert_eq!(check_text(&text, "lb1", 2200, &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, "lb1", 22, &k), HostKeyStatus::Unknown);
    }

    #[test]
    fn wildcards_and_negation() {
        let k = key();
        let text = format!("*.lab,!bad.lab {}\n", entry(&k));
        assert_eq!(check_text(&text, "a.lab", 22, &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, "bad.lab", 22, &k), HostKeyStatus::Unknown);
    }

    /// The recursive definition of `*`/`?` matching (exponential; the reference only).
    fn glob_reference(pattern: &[u8], s: &[u8]) -> bool {
        match (pattern.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                glob_reference(&pattern[1..], s)
                    || (!s.is_empty() && glob_reference(pattern, &s[1..]))
            }
            (Some(b'?'), Some(_)) => glob_reference(&pattern[1..], &s[1..]),
            (Some(p), Some(c)) if p == c => glob_reference(&pattern[1..], &s[1..]),
            _ => false,
        }
    }

    fn words(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..max {
            let next: Vec<Vec<u8>> = last
                .iter()
                .flat_map(|w| {
                    alphabet.iter().map(move |c| {
                        let mut w = w.clone();
                        w.push(*c);
                        w
                    })
                })
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    #[test]
    fn glob_agrees_with_the_recursive_definition() {
        let texts = words(b"ab", 5);
        for p in words(b"ab*?", 5) {
            for t in &texts {
                assert_eq!(glob(&p, t), glob_reference(&p, t), "{p:?} {t:?}");
            }
        }
    }

    #[test]
    fn known_hosts_glob_with_many_stars_does_not_hang() {
        // 30 `*a` against 60 `a`s: the recursive matcher takes C(60, 30) steps.
        let pattern = format!("{}b", "*a".repeat(30));
        let k = key();
        let text = format!("{pattern} {}\n", entry(&k));
        assert_eq!(
            check_text(&text, &"a".repeat(60), 22, &k),
            HostKeyStatus::Unknown
        );
        assert!(glob(
            pattern.as_bytes(),
            format!("{}b", "a".repeat(60)).as_bytes()
        ));
    }

    #[test]
    fn another_key_for_the_host_is_a_change_naming_the_recorded_fingerprint() {
        let (old, new) = (key(), key());
        let text = format!("web1 {}\n", entry(&old));
        assert_eq!(
            check_text(&text, "web1", 22, &new),
            HostKeyStatus::Changed {
                expected: vec![fingerprint(&old)]
            }
        );
        assert!(fingerprint(&old).starts_with("SHA256:"));
    }

    #[test]
    fn markers_are_honoured() {
        let (k, ca) = (key(), key());
        let text = format!(
            "@cert-authority *.lab {}\n@revoked * {}\n",
            entry(&ca),
            entry(&k)
        );
        assert_eq!(check_text(&text, "a.lab", 22, &k), HostKeyStatus::Revoked);
        // A CA line does not make the host known with a plain key.
        assert_eq!(check_text(&text, "a.lab", 22, &ca), HostKeyStatus::Unknown);
    }

    #[test]
    fn append_adds_one_line_and_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/known_hosts");
        let k = key();
        append(&p, "web1", 2222, &k).unwrap();
        append(&p, "web1", 2222, &k).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("[web1]:2222 ssh-ed25519 "));
        assert_eq!(check(&p, "web1", 2222, &k).unwrap(), HostKeyStatus::Known);
        assert_eq!(known_algorithms(&p, "web1", 2222), vec![Algorithm::Ed25519]);
    }
}
