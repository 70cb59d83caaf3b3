//! Filters, tests and lookups a template names, found without rendering it, so `validate`
//! rejects what the engine does not have (minijinja only notices an unknown filter when it
//! reaches it, mid-run).
//!
//! The template is tokenized with minijinja's own lexer (strings, comments and raw blocks are
//! handled as when rendering) and scanned for `| name`, `is [not] name`, `{% filter name %}`,
//! `select('name')`/`reject('name')`, `selectattr('a', 'name')`/`rejectattr(...)`,
//! `map('name')`, and `lookup('name')`/`query('name')`/`q('name')`. Whether a filter or test
//! exists is asked of the engine's real environment.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use minijinja::machinery::{tokenize, Token};
use minijinja::ErrorKind;

/// What kind of name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Filter,
    Test,
    Lookup,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Test => "test",
            Kind::Lookup => "lookup",
        }
    }
}

/// A name the engine does not have, with its 1-based line in the template source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub kind: Kind,
    pub name: String,
    pub line: u32,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Lookup => write!(
                f,
                "lookup plugin `{}` is not supported (supported: {})",
                self.name,
                super::lookups::KNOWN.join(", ")
            ),
            k => write!(f, "no {} named `{}`", k.word(), self.name),
        }
    }
}

/// Every filter, test and lookup `src` names (`is_expr`: a bare `when:`-style expression).
/// A template that does not tokenize yields what was read before the error (the syntax
/// check reports the error itself).
pub fn used(src: &str, is_expr: bool) -> Vec<(Kind, String, u32)> {
    let expr = is_expr && !super::is_possibly_template(src);
    let toks: Vec<(Token<'_>, u32)> =
        tokenize(src, expr, minijinja::syntax::SyntaxConfig::default())
            .map_while(Result::ok)
            .map(|(t, span)| (t, u32::from(span.start_line)))
            .collect();
    let ident = |i: usize| match toks.get(i) {
        Some((Token::Ident(n), _)) => Some(*n),
        _ => None,
    };
    let string = |i: usize| match toks.get(i) {
        Some((Token::Str(s), _)) => Some(s.to_string()),
        Some((Token::String(s), _)) => Some(s.to_string()),
        _ => None,
    };
    let is = |i: usize, t: &Token<'_>| {
        toks.get(i)
            .is_some_and(|(x, _)| std::mem::discriminant(x) == std::mem::discriminant(t))
    };
    let mut out = Vec::new();
    for (i, (tok, line)) in toks.iter().enumerate() {
        let line = *line;
        match tok {
            Token::Pipe => {
                if let Some(n) = ident(i + 1) {
                    out.push((Kind::Filter, n.to_string(), line));
                    if n == "map" && is(i + 2, &Token::ParenOpen) {
                        if let Some(f) = string(i + 3) {
                            out.push((Kind::Filter, f, line));
                        }
                    }
                    if matches!(n, "select" | "reject") && is(i + 2, &Token::ParenOpen) {
                        if let Some(t) = string(i + 3) {
                            out.push((Kind::Test, t, line));
                        }
                    }
                    if matches!(n, "selectattr" | "rejectattr")
                        && is(i + 2, &Token::ParenOpen)
                        && string(i + 3).is_some()
                        && is(i + 4, &Token::Comma)
                    {
                        if let Some(t) = string(i + 5) {
                            out.push((Kind::Test, t, line));
                        }
                    }
                }
            }
            Token::Ident("is") => {
                let at = if ident(i + 1) == Some("not") {
                    i + 2
                } else {
                    i + 1
                };
                if let Some(n) = ident(at) {
                    out.push((Kind::Test, n.to_string(), line));
                }
            }
            Token::Ident("filter") if i > 0 && is(i - 1, &Token::BlockStart) => {
                if let Some(n) = ident(i + 1) {
                    out.push((Kind::Filter, n.to_string(), line));
                }
            }
            Token::Ident("lookup" | "query" | "q") if is(i + 1, &Token::ParenOpen) => {
                if let Some(n) = string(i + 2) {
                    out.push((Kind::Lookup, n, line));
                }
            }
            _ => {}
        }
    }
    out
}

/// The literal file names `src` passes to `lookup('template', ...)` (for validation to check
/// those files too).
pub fn template_lookup_files(src: &str, is_expr: bool) -> Vec<String> {
    let expr = is_expr && !super::is_possibly_template(src);
    let toks: Vec<Token<'_>> = tokenize(src, expr, minijinja::syntax::SyntaxConfig::default())
        .map_while(Result::ok)
        .map(|(t, _)| t)
        .collect();
    let mut out = Vec::new();
    for w in toks.windows(5) {
        if let [Token::Ident("lookup" | "query" | "q"), Token::ParenOpen, Token::Str(kind), Token::Comma, Token::Str(file)] =
            w
        {
            if matches!(*kind, "template" | "ansible.builtin.template") {
                out.push(file.to_string());
            }
        }
    }
    out
}

/// Whether the engine's environment has this filter or test (asked by rendering a probe and
/// looking for minijinja's "unknown filter/test" error, so the answer is the engine's own).
fn exists(kind: Kind, name: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<(Kind, String), bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(b) = cache
        .lock()
        .ok()
        .and_then(|c| c.get(&(kind, name.into())).copied())
    {
        return b;
    }
    let env = super::build_env(
        Arc::from(Path::new(".")),
        true,
        false,
        None,
        &super::Limits::default(),
    );
    let src = match kind {
        Kind::Filter => format!("{{{{ none | {name} }}}}"),
        Kind::Test => format!("{{{{ none is {name} }}}}"),
        Kind::Lookup => return super::lookups::is_known(name),
    };
    let unknown = match env.render_str(&src, ()) {
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ErrorKind::UnknownFilter | ErrorKind::UnknownTest),
    };
    if let Ok(mut c) = cache.lock() {
        c.insert((kind, name.into()), !unknown);
    }
    !unknown
}

/// The filters, tests and lookups `src` names that the engine does not have.
pub fn unknown(src: &str, is_expr: bool) -> Vec<Unknown> {
    let mut out: Vec<Unknown> = Vec::new();
    for (kind, name, line) in used(src, is_expr) {
        if !exists(kind, &name) && !out.iter().any(|u| u.kind == kind && u.name == name) {
            out.push(Unknown { kind, name, line });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str, expr: bool) -> Vec<String> {
        unknown(src, expr)
            .into_iter()
            .map(|u| format!("{}:{}:{}", u.kind.word(), u.name, u.line))
            .collect()
    }

    #[test]
    fn known_names_pass_and_unknown_ones_are_named_with_their_line() {
        assert!(names(
            "{{ x | default('a') | to_nice_json }} {% if y is defined and y is not none %}\
             {{ lookup('template', 'a.j2') }}{% endif %}{{ z | map('upper') | select('match', 'a') }}",
            false
        )
        .is_empty());
        assert_eq!(
            names(
                "line1\n{{ x | to_nice_jsn }}\n{% if y is definedd %}{% endif %}",
                false
            ),
            vec!["filter:to_nice_jsn:2", "test:definedd:3"]
        );
        assert_eq!(
            names("x is foo and lookup('nosuch', 'a')", true),
            vec!["test:foo:1", "lookup:nosuch:1"]
        );
        assert_eq!(
            names(
                "{{ l | selectattr('a', 'nomatch') | map('nofilter') | list }}",
                false
            ),
            vec!["test:nomatch:1", "filter:nofilter:1"]
        );
        assert_eq!(
            names("{% filter nofilt %}x{% endfilter %}", false),
            vec!["filter:nofilt:1"]
        );
    }

    #[test]
    fn strings_and_comments_are_not_scanned() {
        assert!(names("{{ 'a | nofilter' }} {# x | nofilter #} | nofilter", false).is_empty());
        assert!(names("{{ \"lookup('nosuch')\" }}", false).is_empty());
    }

    #[test]
    fn template_lookup_files_are_found() {
        assert_eq!(
            template_lookup_files(
                "{{ lookup('template', 'block.j2') }} {{ lookup('file', 'x') }}",
                false
            ),
            vec!["block.j2"]
        );
    }
}
