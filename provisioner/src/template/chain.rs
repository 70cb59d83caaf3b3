//! Ansible's undefined values chain: `a.b.c | default(x)` and `a.b.c is defined` work even when
//! `a` or `a.b` is missing. minijinja's strict mode errors on the attribute access of an
//! undefined value, and its chainable mode would also print undefined values as empty strings
//! (hiding typos). So only these two idioms are rewritten before compiling: the chain becomes
//! `__chain(a, "b", "c")`, which walks it and yields undefined at the first missing step; every
//! other use of an undefined value stays a strict error.

use std::borrow::Cow;
use std::sync::OnceLock;

use minijinja::value::{Rest, Value};
use regex::Regex;

/// The function behind the rewrite: `__chain(base, key, key, ...)`.
pub(crate) fn chain(base: Value, keys: Rest<Value>) -> Value {
    let mut cur = base;
    for k in keys.iter() {
        if cur.is_undefined() || cur.is_none() {
            return Value::UNDEFINED;
        }
        cur = cur.get_item(k).unwrap_or(Value::UNDEFINED);
    }
    cur
}

fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"(?x)
            (?P<chain>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\[\]]*\])+)
            (?P<guard>\s*(?:\|\s*(?:default|d)\b|is\s+(?:not\s+)?(?:defined|undefined)\b))
            "#,
        )
        .unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
    })
}

/// Rewrite guarded attribute chains of an expression (a `when:` condition).
pub(crate) fn rewrite_expr(src: &str) -> Cow<'_, str> {
    rewrite_in(src, false)
}

/// Rewrite guarded attribute chains inside the `{{ }}`/`{% %}` blocks of a template.
pub(crate) fn rewrite(src: &str) -> Cow<'_, str> {
    rewrite_in(src, true)
}

/// Whether `prefix` ends inside an open `{{` or `{%` block.
fn inside_block(prefix: &str) -> bool {
    let open = prefix.rfind("{{").max(prefix.rfind("{%"));
    let close = prefix.rfind("}}").max(prefix.rfind("%}"));
    match (open, close) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

fn rewrite_in(src: &str, template: bool) -> Cow<'_, str> {
    if !src.contains('.') && !src.contains('[') {
        return Cow::Borrowed(src);
    }
    let re = pattern();
    let mut out = String::new();
    let mut last = 0;
    let mut changed = false;
    for cap in re.captures_iter(src) {
        let (Some(chain), Some(guard)) = (cap.name("chain"), cap.name("guard")) else {
            continue;
        };
        // Only whole chains: not the tail of `f(x).a.b`, `x.y` after a dot, or inside a literal.
        let before = src[..chain.start()].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | ')' | ']' | '_')) {
            continue;
        }
        if (template && !inside_block(&src[..chain.start()]))
            || in_string_literal(&src[..chain.start()])
        {
            continue;
        }
        let Some(call) = to_call(chain.as_str()) else {
            continue;
        };
        out.push_str(&src[last..chain.start()]);
        out.push_str(&call);
        out.push_str(guard.as_str());
        last = guard.end();
        changed = true;
    }
    if !changed {
        return Cow::Borrowed(src);
    }
    out.push_str(&src[last..]);
    Cow::Owned(out)
}

/// Whether the text up to here leaves a quote open (inside `{{ }}`/`{% %}` or a bare expression).
fn in_string_literal(prefix: &str) -> bool {
    // Count quotes since the last expression opener; outside expressions quotes are text.
    let start = prefix
        .rfind("{{")
        .max(prefix.rfind("{%"))
        .map(|i| i + 2)
        .unwrap_or(0);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in prefix[start..].chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            _ => {}
        }
    }
    quote.is_some()
}

/// `a.b[c]['d']` → `__chain(a, "b", (c), ('d'))`.
fn to_call(chain: &str) -> Option<String> {
    let base_end = chain.find(['.', '['])?;
    let mut call = format!("__chain({}", &chain[..base_end]);
    let mut rest = &chain[base_end..];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            call.push_str(&format!(", \"{}\"", &r[..end]));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            call.push_str(&format!(", ({})", &r[..end]));
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    call.push(')');
    Some(call)
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn guarded_chains_become_safe_calls() {
        assert_eq!(
            rewrite("{{ bundle.components.zk.ports.client | default(2181) }}"),
            "{{ __chain(bundle, \"components\", \"zk\", \"ports\", \"client\") | default(2181) }}"
        );
        assert_eq!(
            super::rewrite_expr("hostvars[h]['ansible_eth0'].ipv4 is defined"),
            "__chain(hostvars, (h), ('ansible_eth0'), \"ipv4\") is defined"
        );
        assert_eq!(
            super::rewrite_expr("a.b is not defined and c"),
            "__chain(a, \"b\") is not defined and c"
        );
    }

    #[test]
    fn everything_else_is_left_alone() {
        for s in [
            "{{ a.b }}",
            "{{ a | default(1) }}",
            "{{ 'x.y | default(1)' }}",
            "{{ f(x).a.b | default(1) }}",
            "plain text a.b | default",
        ] {
            assert_eq!(rewrite(s), s, "{s}");
        }
    }
}
