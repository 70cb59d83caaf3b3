//! The raw INI of `ansible.cfg`, as Python's `configparser` reads it for Ansible: `[section]`
//! headers, `key = value` or `key: value`, whole-line comments (`#`, `;`), inline comments
//! after whitespace and `;`, indented continuation lines, keys folded to lower case. No
//! interpolation (Ansible reads values raw). What `configparser` refuses (a key before any
//! section, a line without `=`/`:`, a duplicate section or key) is an error with file:line.

use std::sync::Arc;

use crate::diag::{Diagnostics, Loc};

/// One parsed file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ini {
    pub file: Arc<str>,
    pub sections: Vec<Section>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: u32,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Lower case, as `configparser` folds it.
    pub key: String,
    pub value: String,
    pub line: u32,
}

impl Entry {
    pub fn loc(&self, file: &Arc<str>) -> Loc {
        Loc::new(file.clone(), self.line, 0)
    }
}

/// Parse `text` (named `file` in every diagnostic), collecting every problem.
pub fn parse(text: &str, file: &str) -> Result<Ini, Diagnostics> {
    let file: Arc<str> = Arc::from(file);
    let mut diags = Diagnostics::new();
    let mut sections: Vec<Section> = Vec::new();
    // Whether the last line was a `key = value` a continuation line may extend.
    let mut open = false;
    for (i, raw) in text.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let loc = Loc::new(file.clone(), line, 0);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            open = false;
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let value = strip_inline_comment(trimmed);
        if raw.starts_with([' ', '\t']) && open {
            if let Some(e) = sections.last_mut().and_then(|s| s.entries.last_mut()) {
                if !e.value.is_empty() {
                    e.value.push('\n');
                }
                e.value.push_str(value);
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            open = false;
            let Some(name) = rest.find(']').map(|end| &rest[..end]) else {
                diags.error(
                    &loc,
                    format!("`{trimmed}`: a section header needs a closing `]`"),
                );
                continue;
            };
            if let Some(first) = sections.iter().find(|s| s.name == name) {
                diags.error(
                    &loc,
                    format!(
                        "section [{name}] appears twice (first at line {})",
                        first.line
                    ),
                );
            }
            sections.push(Section {
                name: name.to_string(),
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(pos) = value.find(['=', ':']) else {
            diags.error(&loc, format!("`{trimmed}` is not `key = value`"));
            open = false;
            continue;
        };
        let key = value[..pos].trim().to_ascii_lowercase();
        let val = value[pos + 1..].trim().to_string();
        let Some(section) = sections.last_mut() else {
            diags.error(
                &loc,
                format!("`{key}` comes before any [section] header (e.g. [defaults])"),
            );
            open = false;
            continue;
        };
        if let Some(first) = section.entries.iter().find(|e| e.key == key) {
            diags.error(
                &loc,
                format!(
                    "`{key}` is set twice in [{}] (first at line {})",
                    section.name, first.line
                ),
            );
        }
        section.entries.push(Entry {
            key,
            value: val,
            line,
        });
        open = true;
    }
    diags.into_result(Ini { file, sections })
}

/// `configparser(inline_comment_prefixes=(';',))`: a `;` after whitespace starts a comment.
fn strip_inline_comment(s: &str) -> &str {
    let b = s.as_bytes();
    for i in 1..b.len() {
        if b[i] == b';' && b[i - 1].is_ascii_whitespace() {
            return s[..i].trim_end();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_continuations() {
        let ini = parse(
            "# top\n[defaults]\nInventory = hosts.ini ; inline\nroles_path: roles:\n  more_roles\n\n; c\n[privilege_escalation]\nbecome=True\n",
            "ansible.cfg",
        )
        .unwrap();
        assert_eq!(ini.sections.len(), 2);
        let d = &ini.sections[0];
        assert_eq!(d.name, "defaults");
        assert_eq!(d.entries[0].key, "inventory");
        assert_eq!(d.entries[0].value, "hosts.ini");
        assert_eq!(d.entries[0].line, 3);
        assert_eq!(d.entries[1].value, "roles:\nmore_roles");
        assert_eq!(ini.sections[1].entries[0].value, "True");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let err = parse(
            "forks = 5\n[defaults]\nnonsense\nforks=1\nforks=2\n[defaults]\n",
            "p/ansible.cfg",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p/ansible.cfg:1: `forks` comes before any [section]"),
            "{err}"
        );
        assert!(
            err.contains("p/ansible.cfg:3: `nonsense` is not `key = value`"),
            "{err}"
        );
        assert!(
            err.contains("p/ansible.cfg:5: `forks` is set twice in [defaults] (first at line 4)"),
            "{err}"
        );
        assert!(
            err.contains("p/ansible.cfg:6: section [defaults] appears twice"),
            "{err}"
        );
    }

    #[test]
    fn a_semicolon_inside_a_word_is_kept() {
        let ini = parse("[defaults]\nx = a;b ;c\n", "f").unwrap();
        assert_eq!(ini.sections[0].entries[0].value, "a;b");
    }
}
