//! Shared plumbing of the modules that edit a text file in place (lineinfile, blockinfile,
//! ini_file): which probes they need, and turning "the new content" into a plan. Like Ansible,
//! they write through symlinks (to the realpath), create missing parents when `create`, and
//! report `ownership, perms or SE linux context changed` when only attributes differ.

use super::common::{
    dirname, need_read, need_stat, plan_write, realpath, realpath_probe, FileAttrs, WriteFile,
    MAX_READ,
};
use crate::facts::{Facts, FileStat, Probe};
use crate::modules::{OpError, Planned};
use serde_json::{Map, Value};

/// Probes for editing `path`.
pub fn probes(path: &str) -> Vec<Probe> {
    let parent = dirname(path);
    vec![
        Probe::Stat {
            path: path.to_string(),
            follow: true,
        },
        Probe::Read {
            path: path.to_string(),
            max_bytes: MAX_READ,
        },
        realpath_probe(path),
        Probe::Stat {
            path: if parent.is_empty() { "." } else { parent }.to_string(),
            follow: true,
        },
    ]
}

/// The current file: `None` when missing; an error when it is a directory or too big.
pub fn current<'a>(
    facts: &'a Facts,
    path: &str,
) -> Result<Option<(&'a FileStat, Vec<u8>)>, OpError> {
    let st = need_stat(facts, path, true)?;
    if !st.exists {
        return Ok(None);
    }
    if st.kind == "directory" {
        return Err(OpError::new(format!("Path {path} is a directory !")));
    }
    if st.size > MAX_READ {
        return Err(OpError::new(format!(
            "{path} is larger than {MAX_READ} bytes; provisioner does not edit it"
        )));
    }
    let content =
        need_read(facts, path)?.ok_or_else(|| OpError::new(format!("{path} is not readable")))?;
    Ok(Some((st, content.to_vec())))
}

/// Plan the edit: `after` is `None` when the content does not change (then only attributes
/// may). `msg` is the module's message for a content change; the attribute message is
/// appended like Ansible's `check_file_attrs`.
/// The decided edit of one file.
pub struct Edit<'a> {
    pub path: &'a str,
    /// The current file and its content, `None` when missing.
    pub current: Option<(&'a FileStat, &'a [u8])>,
    /// The new content, `None` when unchanged.
    pub after: Option<Vec<u8>>,
    pub attrs: &'a FileAttrs,
    pub validate: Option<&'a str>,
    /// The module's message for a content change.
    pub msg: &'a str,
}

pub fn plan(
    facts: &Facts,
    e: Edit<'_>,
    mut result: Map<String, Value>,
) -> Result<Planned, OpError> {
    let Edit {
        path,
        current,
        after,
        attrs,
        validate,
        msg,
    } = e;
    let parent = dirname(path);
    let parent = if parent.is_empty() { "." } else { parent };
    let parent_missing = !facts.stat(parent, true).map(|s| s.exists).unwrap_or(true);
    let (st, before) = match current {
        Some((s, b)) => (Some(s), Some(b)),
        None => (None, None),
    };
    let content_changed = after.is_some();
    let new = match after {
        Some(a) => a,
        None => match before {
            Some(b) => b.to_vec(),
            // Missing file and nothing to write: nothing to do (and no attributes to set).
            None => {
                result.insert("msg".into(), msg.into());
                return Ok(Planned::NoChange { result });
            }
        },
    };
    let w = plan_write(WriteFile {
        after_sha1: None,
        path,
        write_path: realpath(facts, path),
        current: st,
        before,
        after: new,
        attrs,
        validate,
        mkdir: parent_missing.then(|| parent.to_string()),
    })?;
    let mut msg = if content_changed {
        msg.to_string()
    } else {
        String::new()
    };
    if w.attrs.changed() && st.is_some() {
        if !msg.is_empty() {
            msg.push_str(" and ");
        }
        msg.push_str("ownership, perms or SE linux context changed");
    }
    result.insert("msg".into(), msg.into());
    Ok(w.into_planned(result))
}

/// Lines split after each `\n` (Python's `readlines()` on a binary file).
pub fn readlines(data: &[u8]) -> Vec<Vec<u8>> {
    data.split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Python's `bytes.splitlines(True)`: split after `\n`, `\r\n` or a lone `\r`.
pub fn splitlines_keepends(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\n' => {
                out.push(data[start..=i].to_vec());
                start = i + 1;
            }
            b'\r' => {
                let end = if data.get(i + 1) == Some(&b'\n') {
                    i + 1
                } else {
                    i
                };
                out.push(data[start..=end].to_vec());
                i = end;
                start = end + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < data.len() {
        out.push(data[start..].to_vec());
    }
    out
}

/// Compile a Python regular expression for byte lines. Most of Python's syntax is the same in
/// the `regex` crate; look-around and backreferences inside the pattern are not supported and
/// are reported as such.
pub fn py_regex(param: &str, pattern: &str) -> Result<regex::bytes::Regex, OpError> {
    let translated = translate_py_regex(pattern);
    regex::bytes::Regex::new(&translated).map_err(|e| {
        OpError::new(format!(
            "{param}: cannot compile regular expression {pattern:?} (Python syntax that the regex crate lacks, e.g. look-around, is not supported): {e}"
        ))
    })
}

/// Python's `$` (without MULTILINE) matches at the end or before a final `\n`; the regex
/// crate's only at the end. Lines are matched with their newline, so `$` becomes `\n?\z`.
/// `\Z` becomes `\z`. Patterns with inline flags are left alone.
fn translate_py_regex(pattern: &str) -> String {
    if pattern.starts_with("(?") && pattern[2..].starts_with(|c: char| c.is_ascii_alphabetic()) {
        return pattern.replace("\\Z", "\\z");
    }
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let n = chars.next();
                match n {
                    Some('Z') if !in_class => out.push_str("\\z"),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push('\\'),
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` right after `[` or `[^` is literal.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '$' if !in_class => out.push_str("(?:\n?\\z)"),
            _ => out.push(c),
        }
    }
    out
}

/// Python's `match.expand(template)`: `\1`..`\99`, `\g<n>`, `\g<name>`, and the usual escapes.
pub fn py_expand(template: &[u8], caps: &regex::bytes::Captures<'_>) -> Result<Vec<u8>, OpError> {
    let mut out = Vec::new();
    let mut i = 0;
    let group = |out: &mut Vec<u8>, name: &str| -> Result<(), OpError> {
        let m = match name.parse::<usize>() {
            Ok(n) => {
                if n >= caps.len() {
                    return Err(OpError::new(format!("invalid group reference {n}")));
                }
                caps.get(n)
            }
            Err(_) => caps.name(name),
        };
        if let Some(m) = m {
            out.extend_from_slice(m.as_bytes());
        }
        Ok(())
    };
    while i < template.len() {
        let c = template[i];
        if c != b'\\' || i + 1 >= template.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = template[i + 1];
        match n {
            b'1'..=b'9' => {
                let mut j = i + 2;
                if j < template.len() && template[j].is_ascii_digit() {
                    j += 1;
                }
                let name = String::from_utf8_lossy(&template[i + 1..j]).into_owned();
                group(&mut out, &name)?;
                i = j;
            }
            b'g' if template.get(i + 2) == Some(&b'<') => {
                let close = template[i + 3..]
                    .iter()
                    .position(|b| *b == b'>')
                    .ok_or_else(|| OpError::new("missing >, unterminated name"))?;
                let name = String::from_utf8_lossy(&template[i + 3..i + 3 + close]).into_owned();
                group(&mut out, &name)?;
                i = i + 4 + close;
            }
            b'n' => {
                out.push(b'\n');
                i += 2;
            }
            b't' => {
                out.push(b'\t');
                i += 2;
            }
            b'r' => {
                out.push(b'\r');
                i += 2;
            }
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'0' => {
                out.push(0);
                i += 2;
            }
            _ => {
                out.push(b'\\');
                out.push(n);
                i += 2;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_splitting_matches_python() {
        assert_eq!(readlines(b"a\nb"), vec![b"a\n".to_vec(), b"b".to_vec()]);
        assert!(readlines(b"").is_empty());
        assert_eq!(
            splitlines_keepends(b"a\r\nb\rc\nd"),
            vec![
                b"a\r\n".to_vec(),
                b"b\r".to_vec(),
                b"c\n".to_vec(),
                b"d".to_vec()
            ]
        );
    }

    #[test]
    fn expand_supports_python_group_syntax() {
        let re = py_regex("regexp", r"^(?P<k>\w+)=(\d+)$").unwrap();
        let caps = re.captures(b"port=80").unwrap();
        assert_eq!(
            py_expand(br"\1 is \g<2> (\g<k>)\\", &caps).unwrap(),
            b"port is 80 (port)\\".to_vec()
        );
        assert!(py_expand(br"\5", &caps).is_err());
        let re = py_regex("regexp", r"^foo$").unwrap();
        assert!(re.is_match(b"foo\n") && re.is_match(b"foo") && !re.is_match(b"foo\n\n"));
        assert!(py_regex("r", r"[$]x").unwrap().is_match(b"$x"));
    }
}
