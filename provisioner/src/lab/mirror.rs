//! The Debian mirror this machine uses, read from its apt sources at run time. The lab's hosts
//! and its apt proxy use the same mirror; no registry host name is written in this code.

use std::path::Path;

use crate::error::{Error, Result};

/// The control machine's Debian mirrors: the main archive and the security archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrors {
    /// e.g. `http://<host>/debian`, without a trailing slash.
    pub debian: String,
    /// e.g. `http://<host>/debian-security`, without a trailing slash.
    pub security: String,
}

/// One apt source: its URI and suites.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    uri: String,
    suites: Vec<String>,
}

/// Parse deb822 `.sources` text (stanzas separated by blank lines).
fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut is_deb = true;
        let mut enabled = true;
        for line in stanza.lines() {
            let line = line.trim_end();
            if line.starts_with('#') || line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let words = value.split_whitespace().map(str::to_string);
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => is_deb = value.split_whitespace().any(|t| t == "deb"),
                "uris" => uris.extend(words),
                "suites" => suites.extend(words),
                "enabled" => enabled = value.trim() != "no",
                _ => {}
            }
        }
        if is_deb && enabled {
            for uri in uris {
                out.push(Source {
                    uri,
                    suites: suites.clone(),
                });
            }
        }
    }
    out
}

/// Parse one-line `sources.list` text: `deb [options] URI SUITE COMPONENTS...`.
fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source {
                uri: uri.to_string(),
                suites: vec![suite.to_string()],
            });
        }
    }
    out
}

fn pick(sources: &[Source]) -> Result<Mirrors> {
    let is_security = |s: &Source| s.suites.iter().any(|x| x.ends_with("-security"));
    let main = sources
        .iter()
        .find(|s| !is_security(s) && s.uri.trim_end_matches('/').ends_with("/debian"))
        .or_else(|| sources.iter().find(|s| !is_security(s)))
        .ok_or_else(|| {
            Error::Environment(
                "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/"
                    .into(),
            )
        })?;
    let debian = main.uri.trim_end_matches('/').to_string();
    if !debian.starts_with("http://") {
        return Err(Error::Environment(format!(
            "the lab's apt proxy needs a plain http:// Debian mirror, and this machine uses {debian}"
        )));
    }
    let security = sources
        .iter()
        .find(|s| is_security(s) && s.uri.starts_with("http://"))
        .map(|s| s.uri.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("{debian}-security"));
    Ok(Mirrors { debian, security })
}

/// Read this machine's apt sources (deb822 files first, then one-line lists).
pub fn detect() -> Result<Mirrors> {
    detect_in(Path::new("/etc/apt"))
}

pub fn detect_in(etc_apt: &Path) -> Result<Mirrors> {
    let mut sources = Vec::new();
    let dir = etc_apt.join("sources.list.d");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            Some("list") => sources.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    if let Ok(text) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        sources.extend(parse_one_line(&text));
    }
    pick(&sources)
}

/// `http://host/path` -> `host/path` (how apt-cacher-ng writes a match pattern).
pub fn host_path(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";

    #[test]
    fn deb822_sources_give_both_mirrors() {
        let m = pick(&parse_deb822(DEB822)).unwrap();
        assert_eq!(m.debian, "http://mirror.example/debian");
        assert_eq!(m.security, "http://mirror.example/debian-security");
        assert_eq!(host_path(&m.debian), "mirror.example/debian");
    }

    #[test]
    fn one_line_sources_with_options_and_no_security() {
        let text = "# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main\n";
        let m = pick(&parse_one_line(text)).unwrap();
        assert_eq!(m.debian, "http://m.example/debian");
        assert_eq!(m.security, "http://m.example/debian-security");
    }

    #[test]
    fn https_or_missing_mirrors_are_clear_errors() {
        assert!(pick(&parse_one_line(
            "deb https://m.example/debian bookworm main"
        ))
        .is_err());
        assert!(pick(&[]).is_err());
        let disabled = "Types: deb\nEnabled: no\nURIs: http://m.example/debian\nSuites: bookworm\n";
        assert!(pick(&parse_deb822(disabled)).is_err());
    }

    #[test]
    fn reads_a_directory_of_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(dir.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
        let m = detect_in(dir.path()).unwrap();
        assert_eq!(m.debian, "http://mirror.example/debian");
    }
}
