//! Host patterns (`--limit`, a play's `hosts:`) and host address syntax, as Ansible reads them.
//!
//! A pattern is split on `,` (or on `:` outside brackets when there is no comma). Each part is
//! `all`, a group or host name, a glob (`web*`), a regex (`~web\d+`), optionally with a
//! subscript (`web[0]`, `web[1:3]`), and optionally prefixed with `&` (intersection) or `!`
//! (exclusion). Whatever their position, all plain parts are applied first (union), then the
//! intersections, then the exclusions. The result is in inventory order of each match.

use std::sync::OnceLock;

use indexmap::IndexSet;
use regex::Regex;

use crate::diag::Diagnostic;
use crate::model::inventory::Inventory;

/// The hosts a pattern selects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Host names, deduplicated, in Ansible's order.
    pub hosts: Vec<String>,
    /// Parts of the pattern that matched no group and no host (Ansible warns
    /// "Could not match supplied host pattern, ignoring: ...").
    pub unmatched: Vec<String>,
}

impl Selection {
    /// True when nothing was selected (Ansible: "No hosts matched").
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

impl Inventory {
    /// The hosts `pattern` selects, restricted to `limit` when given (`--limit`), in order.
    pub fn select(&self, pattern: &str, limit: Option<&str>) -> Result<Selection, Diagnostic> {
        let mut unmatched = Vec::new();
        let mut hosts = self.evaluate(&split_host_pattern(pattern), &mut unmatched)?;
        if let Some(limit) = limit {
            let allowed: IndexSet<String> = self
                .evaluate(&split_host_pattern(limit), &mut unmatched)?
                .into_iter()
                .collect();
            hosts.retain(|h| allowed.contains(h));
        }
        Ok(Selection { hosts, unmatched })
    }

    /// Ansible's `_evaluate_patterns`.
    fn evaluate(
        &self,
        patterns: &[String],
        unmatched: &mut Vec<String>,
    ) -> Result<Vec<String>, Diagnostic> {
        let mut hosts: IndexSet<String> = IndexSet::new();
        for p in order_patterns(patterns) {
            if self.hosts.contains_key(p.as_str()) {
                hosts.insert(p.clone());
                continue;
            }
            let that = self.match_one(&p, unmatched)?;
            if p.starts_with('!') {
                let that: IndexSet<&str> = that.iter().map(String::as_str).collect();
                hosts.retain(|h| !that.contains(h.as_str()));
            } else if p.starts_with('&') {
                let that: IndexSet<&str> = that.iter().map(String::as_str).collect();
                hosts.retain(|h| that.contains(h.as_str()));
            } else {
                hosts.extend(that);
            }
        }
        Ok(hosts.into_iter().collect())
    }

    /// One part without its `&`/`!`: enumerate matches, then apply the subscript.
    fn match_one(
        &self,
        pattern: &str,
        unmatched: &mut Vec<String>,
    ) -> Result<Vec<String>, Diagnostic> {
        let pattern = pattern
            .strip_prefix('&')
            .or_else(|| pattern.strip_prefix('!'))
            .unwrap_or(pattern);
        let (expr, sub) = split_subscript(pattern);
        let hosts = self.enumerate(expr, unmatched)?;
        apply_subscript(hosts, sub).ok_or_else(|| {
            Diagnostic::new(
                None,
                format!("No hosts matched the subscripted pattern '{pattern}'"),
            )
        })
    }

    /// Ansible's `_enumerate_matches`: groups whose name matches contribute all their hosts;
    /// hosts are matched by name too when no group matched or the pattern has `~ . ? * [`.
    fn enumerate(
        &self,
        pattern: &str,
        unmatched: &mut Vec<String>,
    ) -> Result<Vec<String>, Diagnostic> {
        let re = compile(pattern)?;
        let mut results: IndexSet<String> = IndexSet::new();
        let mut any_group = false;
        for g in self.groups.keys() {
            if re.is_match(g) {
                any_group = true;
                results.extend(self.group_hosts(g).into_iter().map(str::to_string));
            }
        }
        if !any_group || pattern.starts_with('~') || pattern.contains(['.', '?', '*', '[']) {
            for h in self.hosts.keys() {
                if re.is_match(h) {
                    results.insert(h.clone());
                }
            }
        }
        if results.is_empty() && !any_group && pattern != "all" {
            unmatched.push(pattern.to_string());
        }
        Ok(results.into_iter().collect())
    }
}

/// Plain parts first, then `&`, then `!` (Ansible's `order_patterns`). No plain part means `all`.
fn order_patterns(patterns: &[String]) -> Vec<String> {
    let mut regular: Vec<String> = Vec::new();
    let mut and = Vec::new();
    let mut not = Vec::new();
    for p in patterns.iter().filter(|p| !p.is_empty()) {
        if p.starts_with('!') {
            not.push(p.clone());
        } else if p.starts_with('&') {
            and.push(p.clone());
        } else {
            regular.push(p.clone());
        }
    }
    if regular.is_empty() {
        regular.push("all".to_string());
    }
    regular.into_iter().chain(and).chain(not).collect()
}

/// Ansible's `split_host_pattern`.
pub fn split_host_pattern(pattern: &str) -> Vec<String> {
    let parts: Vec<String> = if pattern.contains(',') {
        pattern.split(',').map(str::to_string).collect()
    } else if parse_address(pattern).is_some() {
        vec![pattern.to_string()]
    } else {
        // Runs of non-space, non-`:` characters, where a `[...]` counts as one.
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '[' {
                let mut group = String::from('[');
                let mut closed = false;
                for n in chars.by_ref() {
                    group.push(n);
                    if n == ']' {
                        closed = true;
                        break;
                    }
                }
                if closed {
                    cur.push_str(&group);
                } else if !cur.is_empty() {
                    // An unclosed bracket cannot be part of a match.
                    out.push(std::mem::take(&mut cur));
                }
            } else if c.is_whitespace() || c == ':' || c == ']' {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(c);
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    };
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscript {
    Index(i64),
    /// `start`, `end` (inclusive; `None` for `[x:]`).
    Range(usize, Option<usize>),
}

/// `pattern[idx]`, `pattern[start:end]`, `pattern[start:]`. Regexes have no subscript.
fn split_subscript(pattern: &str) -> (&str, Option<Subscript>) {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    if pattern.starts_with('~') {
        return (pattern, None);
    }
    let re = RE.get_or_init(|| Regex::new(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$").ok());
    let Some(c) = re.as_ref().and_then(|re| re.captures(pattern)) else {
        return (pattern, None);
    };
    let base = c.get(1).map_or(pattern, |m| m.as_str());
    if let Some(idx) = c.get(2).and_then(|m| m.as_str().parse().ok()) {
        return (base, Some(Subscript::Index(idx)));
    }
    let start = c.get(3).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
    let end = c
        .get(5)
        .and_then(|m| (!m.as_str().is_empty()).then(|| m.as_str().parse().ok()))
        .flatten();
    (base, Some(Subscript::Range(start, end)))
}

/// `None` when an index is out of range (Ansible raises an error then).
fn apply_subscript(hosts: Vec<String>, sub: Option<Subscript>) -> Option<Vec<String>> {
    let Some(sub) = sub else {
        return Some(hosts);
    };
    if hosts.is_empty() {
        return Some(hosts);
    }
    let n = hosts.len() as i64;
    match sub {
        Subscript::Index(i) => {
            let i = if i < 0 { n + i } else { i };
            (0..n).contains(&i).then(|| vec![hosts[i as usize].clone()])
        }
        // Python: `end` of 0 is falsy, so `[x:0]` means `[x]` (and may raise).
        Subscript::Range(s, Some(0)) => hosts.get(s).map(|h| vec![h.clone()]),
        Subscript::Range(s, end) => {
            let end = end.map_or(hosts.len(), |e| (e + 1).min(hosts.len()));
            Some(
                hosts
                    .get(s..end)
                    .map(<[String]>::to_vec)
                    .unwrap_or_default(),
            )
        }
    }
}

/// A pattern as a regex matched against names: `~re` is a Python regex matched at the start,
/// anything else is an `fnmatch` glob matched against the whole name.
fn compile(pattern: &str) -> Result<Regex, Diagnostic> {
    let src = match pattern.strip_prefix('~') {
        Some(re) => format!("^(?:{re})"),
        None => glob_to_regex(pattern),
    };
    Regex::new(&src)
        .map_err(|_| Diagnostic::new(None, format!("Invalid host list pattern: {pattern}")))
}

/// Python's `fnmatch.translate`: `*`, `?`, `[seq]`, `[!seq]`; an unclosed `[` is literal.
fn glob_to_regex(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::from("^(?s:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str("\\[");
                } else {
                    let mut body: String = chars[i..j].iter().collect();
                    i = j + 1;
                    let negate = body.starts_with('!');
                    if negate {
                        body.remove(0);
                    }
                    let mut class = String::from("[");
                    if negate {
                        class.push('^');
                    }
                    for ch in body.chars() {
                        if matches!(ch, '\\' | '[' | ']' | '&' | '~' | '^') {
                            class.push('\\');
                        }
                        class.push(ch);
                    }
                    class.push(']');
                    out.push_str(&class);
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push_str(")$");
    out
}

// ---------------------------------------------------------------------------------------------
// Host addresses (Ansible's parsing/utils/addresses.py) and range expansion.

/// bracketed host:port, host:port, IPv4, IPv6, host name.
type AddressRegexes = (Regex, Regex, Regex, Regex, Regex);

fn address_regexes() -> Option<&'static AddressRegexes> {
    static RES: OnceLock<Option<AddressRegexes>> = OnceLock::new();
    RES.get_or_init(|| {
        let numeric_range = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]";
        let hex_range = r"\[(?:[0-9a-fA-F]+:[0-9a-fA-F]+)(?::[0-9]+)?\]";
        let alnum_range = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]";
        let i6 = format!("(?:[0-9a-fA-F]{{1,4}}|{hex_range})");
        let i4 = format!("(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{numeric_range})");
        // `(?<![_-])` (a label does not end in `_` or `-`) without look-behind.
        let label = format!(
            "(?:(?:[^\\W_]|{r})|(?:\\w|{r})(?:[\\w-]|{r})*(?:[^\\W_]|{r}))",
            r = alnum_range
        );
        let ipv6 = [
            format!("(?:{i6}:){{7}}{i6}"),
            format!("(?:{i6}:){{1,6}}:"),
            format!("(?:{i6}:)(?::{i6}){{1,6}}"),
            format!("(?:{i6}:){{2}}(?::{i6}){{1,5}}"),
            format!("(?:{i6}:){{3}}(?::{i6}){{1,4}}"),
            format!("(?:{i6}:){{4}}(?::{i6}){{1,3}}"),
            format!("(?:{i6}:){{5}}(?::{i6}){{1,2}}"),
            format!("(?:{i6}:){{6}}(?::{i6})"),
            format!(":(?::{i6}){{1,6}}"),
            format!("{i6}?::"),
            format!("(?:0:){{6}}(?:{i6}\\.){{3}}{i6}"),
            format!("::(?:ffff:)?(?:{i6}\\.){{3}}{i6}"),
            format!("(?:0:){{5}}ffff:(?:{i6}\\.){{3}}{i6}"),
        ]
        .join("|");
        Some((
            Regex::new(r"^\[(.+)\]:([0-9]+)$").ok()?,
            Regex::new(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$").ok()?,
            Regex::new(&format!("^(?:{i4}\\.){{3}}{i4}$")).ok()?,
            Regex::new(&format!("^(?i:{ipv6})$")).ok()?,
            Regex::new(&format!("^(?i:{label}(?:\\.{label})*)$")).ok()?,
        ))
    })
    .as_ref()
}

/// Ansible's `parse_address(address, allow_ranges=True)`: `(host, port)`, or `None` when the
/// text is not a host name, IPv4 or IPv6 address (optionally with ranges and a port).
pub fn parse_address(address: &str) -> Option<(String, Option<u64>)> {
    let (bracketed, hostport, ipv4, ipv6, hostname) = address_regexes()?;
    let mut host = address.to_string();
    let mut port = None;
    for re in [bracketed, hostport] {
        if let Some(c) = re.captures(&host.clone()) {
            host = c.get(1)?.as_str().to_string();
            port = Some(c.get(2)?.as_str().parse::<u64>().ok()?);
        }
    }
    [ipv4, ipv6, hostname]
        .iter()
        .any(|re| re.is_match(&host))
        .then_some((host, port))
}

/// An IPv4 or IPv6 address (no ranges): `inventory_hostname_short` keeps those whole.
pub fn is_ip_address(name: &str) -> bool {
    address_regexes().is_some_and(|(_, _, v4, v6, _)| {
        !name.contains('[') && (v4.is_match(name) || v6.is_match(name))
    })
}

/// The most host names one pattern may expand to. Ansible has no limit, but `h[0:99999999999]`
/// would exhaust memory before anything could be reported.
pub const MAX_RANGE_HOSTS: usize = 100_000;

/// The most ranges one pattern may hold: each is one level of recursion below, and 16 ranges of
/// two names each are already 65,536 hosts.
pub const MAX_RANGES: usize = 16;

fn too_many_hosts(line: &str) -> String {
    format!("host range `{line}` expands to more than {MAX_RANGE_HOSTS} hosts")
}

/// Ansible's `expand_hostname_range`: `web[01:03]`, `db-[a:c]`, `h[0:10:5]`, nested left to
/// right. An `Err` carries Ansible's message (or says the range is over [`MAX_RANGE_HOSTS`]).
pub fn expand_hostname_range(line: &str) -> Result<Vec<String>, String> {
    if !line.contains('[') {
        return Ok(vec![line.to_string()]);
    }
    if line.matches('[').count() > MAX_RANGES {
        return Err(format!(
            "host pattern `{line}` has more than {MAX_RANGES} ranges"
        ));
    }
    let replaced = line.replacen('[', "|", 1).replacen(']', "|", 1);
    let parts: Vec<&str> = replaced.split('|').collect();
    if parts.len() != 3 {
        return Err(format!("invalid host range in `{line}`"));
    }
    let (head, nrange, tail) = (parts[0], parts[1], parts[2]);
    let bounds: Vec<&str> = nrange.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err("host range must be begin:end or begin:end:step".into());
    }
    let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    let step: i64 = match bounds.get(2) {
        None => 1,
        Some(s) => s
            .parse()
            .map_err(|_| format!("invalid step `{s}` in host range"))?,
    };
    if end.is_empty() {
        return Err("host range must specify end value".into());
    }
    if step <= 0 {
        return Err("host range step must be a positive integer".into());
    }
    let width = (beg.starts_with('0') && beg.len() > 1).then_some(beg.len());
    if width.is_some_and(|w| w != end.len()) {
        return Err("host range must specify equal-length begin and end formats".into());
    }
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let single_letter = |s: &str| {
        let mut cs = s.chars();
        match (cs.next(), cs.next()) {
            (Some(c), None) => letters.iter().position(|l| *l == c),
            _ => None,
        }
    };
    let seq: Vec<String> = match (single_letter(beg), single_letter(end)) {
        (Some(b), Some(e)) => {
            if b > e {
                return Err("host range must have begin <= end".into());
            }
            letters[b..=e]
                .iter()
                .step_by(step as usize)
                .map(|c| c.to_string())
                .collect()
        }
        _ => {
            let b: i64 = beg
                .parse()
                .map_err(|_| format!("invalid literal for int() with base 10: '{beg}'"))?;
            let e: i64 = end
                .parse()
                .map_err(|_| format!("invalid literal for int() with base 10: '{end}'"))?;
            let count = if b > e {
                0
            } else {
                (i128::from(e) - i128::from(b)) / i128::from(step) + 1
            };
            if count > MAX_RANGE_HOSTS as i128 {
                return Err(too_many_hosts(line));
            }
            (b..=e)
                .step_by(step as usize)
                .map(|i| match width {
                    Some(w) => format!("{i:0w$}"),
                    None => i.to_string(),
                })
                .collect()
        }
    };
    let mut out = Vec::new();
    for r in seq {
        let name = format!("{head}{r}{tail}");
        if name.contains('[') {
            out.extend(expand_hostname_range(&name)?);
        } else {
            out.push(name);
        }
        if out.len() > MAX_RANGE_HOSTS {
            return Err(too_many_hosts(line));
        }
    }
    Ok(out)
}

/// A host key or INI host token: its host names and optional port, as Ansible's
/// `_expand_hostpattern` reads it.
pub fn expand_host_pattern(pattern: &str) -> Result<(Vec<String>, Option<u64>), String> {
    let (host, port) = parse_address(pattern).unwrap_or_else(|| (pattern.to_string(), None));
    if pattern.trim().ends_with(':') && port.is_none() {
        return Err(format!("Invalid host pattern '{pattern}' supplied, ending in ':' is not allowed, this character is reserved to provide a port."));
    }
    let names = expand_hostname_range(&host)?;
    if names.iter().any(|n| n.trim() == "---") {
        return Err(format!("Invalid host pattern '{pattern}' supplied, '---' is normally a sign this is a YAML file."));
    }
    Ok((names, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_with_padding_letters_steps_and_nesting() {
        assert_eq!(
            expand_hostname_range("web[01:03].x").unwrap(),
            vec!["web01.x", "web02.x", "web03.x"]
        );
        assert_eq!(
            expand_hostname_range("db-[a:c]").unwrap(),
            vec!["db-a", "db-b", "db-c"]
        );
        assert_eq!(
            expand_hostname_range("h[0:10:5]").unwrap(),
            vec!["h0", "h5", "h10"]
        );
        assert_eq!(expand_hostname_range("h[:1]").unwrap(), vec!["h0", "h1"]);
        assert_eq!(
            expand_hostname_range("r[1:2]n[a:b]").unwrap(),
            vec!["r1na", "r1nb", "r2na", "r2nb"]
        );
        assert_eq!(
            expand_hostname_range("h[3:1]").unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert!(expand_hostname_range("h[01:3]").is_err());
        assert!(expand_hostname_range("h[z:a]").is_err());
        assert!(expand_hostname_range("h[1:]").is_err());
        assert!(expand_hostname_range("h[1:2:3:4]").is_err());
        assert!(expand_hostname_range("h[x:10]").is_err());
    }

    #[test]
    fn host_range_over_the_limit_is_an_error_not_an_allocation() {
        let e = expand_hostname_range("h[0:9223372036854775807]").unwrap_err();
        assert!(e.contains("more than 100000 hosts"), "{e}");
        // Nested ranges multiply: 1000 x 1000 is over the limit too.
        let e = expand_hostname_range("a[0:999]b[0:999]").unwrap_err();
        assert!(e.contains("more than 100000 hosts"), "{e}");
        assert_eq!(expand_hostname_range("h[1:100000]").unwrap().len(), 100_000);
        // Thousands of one-name ranges: one recursion level each, refused before recursing.
        let e = expand_hostname_range(&format!("db-{}", "[a:a]".repeat(5000))).unwrap_err();
        assert!(e.contains("more than 16 ranges"), "{e}");
        assert_eq!(
            expand_hostname_range(&format!("db-{}", "[a:a]".repeat(16))).unwrap(),
            vec![format!("db-{}", "a".repeat(16))]
        );
        assert_eq!(
            expand_hostname_range(
                "h[-9223372036854775808:9223372036854775807:9223372036854775807]"
            )
            .unwrap()
            .len(),
            3
        );
    }

    #[test]
    fn addresses_split_off_ports() {
        assert_eq!(parse_address("db:2200"), Some(("db".into(), Some(2200))));
        assert_eq!(parse_address("[::1]:22"), Some(("::1".into(), Some(22))));
        assert_eq!(parse_address("fe80::1"), Some(("fe80::1".into(), None)));
        assert_eq!(
            parse_address("web[01:03]:22"),
            Some(("web[01:03]".into(), Some(22)))
        );
        assert_eq!(parse_address("web:db"), None);
        assert_eq!(parse_address("bad_"), None);
        assert!(expand_host_pattern("h:").is_err());
    }

    #[test]
    fn patterns_split_on_commas_or_colons_outside_brackets() {
        assert_eq!(
            split_host_pattern("a,b[1], c[2:3] , d"),
            vec!["a", "b[1]", "c[2:3]", "d"]
        );
        assert_eq!(split_host_pattern("web:&db:!x"), vec!["web", "&db", "!x"]);
        assert_eq!(split_host_pattern("web[0:2]:db"), vec!["web[0:2]", "db"]);
        assert_eq!(split_host_pattern("fe80::1"), vec!["fe80::1"]);
    }

    #[test]
    fn globs_translate_like_fnmatch() {
        let m = |g: &str, s: &str| Regex::new(&glob_to_regex(g)).unwrap().is_match(s);
        assert!(m("web*", "web01"));
        assert!(!m("web*", "xweb"));
        assert!(m("w?b", "web"));
        assert!(m("w[ae]b", "web"));
        assert!(!m("w[!e]b", "web"));
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "axb"));
        assert!(m("x[", "x["));
    }
}
