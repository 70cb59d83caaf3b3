//! YAML as Ansible reads it, with a source location on every node.
//!
//! Ansible parses YAML with PyYAML, which follows YAML 1.1: plain `yes`/`no`/`on`/`off` are
//! booleans, `0644` is an octal integer and `1e3` (no dot) is a string. saphyr parses the
//! syntax and gives us spans; we resolve plain scalars here with PyYAML's rules so that a
//! role means the same thing to us as to `ansible-playbook`.

use std::path::Path;
use std::sync::Arc;

use saphyr::{MarkedYamlOwned, ScalarOwned, YamlDataOwned};

use crate::diag::{Diagnostic, Loc};

/// A YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

/// A resolved YAML value. Mappings keep their source order.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn new(value: Value, loc: Loc) -> Self {
        Node { value, loc }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The value under string key `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.key_string().as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    /// A scalar rendered as the string Ansible would use as a mapping key or argument.
    pub fn key_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(python_float_repr(*f)),
            Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
            Value::Null => Some("None".to_string()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// A short name of this node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The node as JSON, which is what variables and templates work with.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(python_float_repr(*f))),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(pairs) => J::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.key_string().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// How Python prints a float, which is what Ansible shows for one.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// How deep sequences and mappings may nest. Nothing we read comes close; the bound keeps a line
/// like `- - - - ...` (each `- ` one level) from exhausting the stack: building, converting
/// and dropping a tree all recurse per level. (PyYAML stops at Python's recursion limit.)
pub const MAX_DEPTH: usize = 100;

fn too_deep(loc: &Loc) -> Diagnostic {
    Diagnostic::at(
        loc,
        format!("invalid YAML: collections nest deeper than {MAX_DEPTH} levels"),
    )
}

/// Passes events on to the loader until the nesting goes over [`MAX_DEPTH`]; from there on the
/// loader gets nothing, so no deep tree is ever built.
struct DepthLimit<R> {
    inner: R,
    depth: usize,
    too_deep: Option<saphyr_parser::Span>,
}

impl<R> DepthLimit<R> {
    fn on_event<'input>(&mut self, ev: saphyr_parser::Event<'input>, span: saphyr_parser::Span)
    where
        R: saphyr_parser::SpannedEventReceiver<'input>,
    {
        use saphyr_parser::Event;
        match ev {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH && self.too_deep.is_none() {
                    self.too_deep = Some(span);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if self.too_deep.is_none() {
            saphyr_parser::SpannedEventReceiver::on_event(&mut self.inner, ev, span);
        }
    }
}

/// Parse every document in `src`. `file` names the source in locations.
pub fn load_str(src: &str, file: &str) -> Result<Vec<Node>, Diagnostic> {
    let file: Arc<str> = Arc::from(file);
    let mut parser = saphyr_parser::Parser::new_from_str(src);
    let mut loader: saphyr::YamlLoader<'_, MarkedYamlOwned> = saphyr::YamlLoader::default();
    loader.early_parse(false);
    let mut limited = DepthLimit {
        inner: loader,
        depth: 0,
        too_deep: None,
    };
    // Event by event, not `Parser::load`: that recurses once per nesting level itself. (It also
    // forgets anchor names between documents, so an alias to an earlier document's anchor is an
    // error there; here it resolves. No playbook of ours has more than one document.)
    for event in parser.by_ref() {
        let (ev, span) = event.map_err(|e| scan_error(&file, &e))?;
        limited.on_event(ev, span);
        if let Some(span) = limited.too_deep {
            let m = span.start;
            return Err(too_deep(&Loc::new(
                file.clone(),
                m.line() as u32,
                m.col() as u32 + 1,
            )));
        }
    }
    let loader = limited.inner;
    if let Some(e) = loader.error() {
        return Err(scan_error(&file, e));
    }
    loader
        .into_documents()
        .into_iter()
        .map(|doc| convert(&file, doc, 0))
        .collect()
}

/// Parse a file. A file with no document at all yields an empty list.
pub fn load_file(path: &Path) -> Result<Vec<Node>, Diagnostic> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::at(&Loc::file(name.as_str()), format!("cannot read: {e}")))?;
    load_str(&src, &name)
}

/// Parse a file that must hold exactly one document (or none, which reads as null).
pub fn load_single(path: &Path) -> Result<Node, Diagnostic> {
    let name = path.display().to_string();
    let mut docs = load_file(path)?;
    match docs.len() {
        0 => Ok(Node::new(Value::Null, Loc::new(name.as_str(), 1, 1))),
        1 => Ok(docs.remove(0)),
        n => Err(Diagnostic::at(
            &docs[1].loc,
            format!("expected one YAML document, found {n}"),
        )),
    }
}

fn scan_error(file: &Arc<str>, e: &saphyr::ScanError) -> Diagnostic {
    let m = e.marker();
    Diagnostic::at(
        &Loc::new(file.clone(), m.line() as u32, m.col() as u32 + 1),
        format!("invalid YAML: {}", e.info()),
    )
}

fn loc_of(file: &Arc<str>, n: &MarkedYamlOwned) -> Loc {
    Loc::new(
        file.clone(),
        n.span.start.line() as u32,
        n.span.start.col() as u32 + 1,
    )
}

/// `depth`: how many collections hold `n` (aliases can nest what the text does not: an anchor
/// that holds an alias of another anchor, and so on).
fn convert(file: &Arc<str>, n: MarkedYamlOwned, depth: usize) -> Result<Node, Diagnostic> {
    let loc = loc_of(file, &n);
    if depth > MAX_DEPTH {
        return Err(too_deep(&loc));
    }
    let value = match n.data {
        YamlDataOwned::Representation(text, style, tag) => {
            let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
            resolve_scalar(&text, style, tag.as_deref(), &loc)?
        }
        YamlDataOwned::Value(s) => match s {
            ScalarOwned::Null => Value::Null,
            ScalarOwned::Boolean(b) => Value::Bool(b),
            ScalarOwned::Integer(i) => Value::Int(i),
            ScalarOwned::FloatingPoint(f) => Value::Float(f.into_inner()),
            ScalarOwned::String(s) => Value::Str(s),
        },
        YamlDataOwned::Sequence(items) => Value::Seq(
            items
                .into_iter()
                .map(|i| convert(file, i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        YamlDataOwned::Mapping(map) => {
            let mut pairs: Vec<(Node, Node)> = Vec::with_capacity(map.len());
            let mut merged: Vec<(Node, Node)> = Vec::new();
            for (k, v) in map {
                let k = convert(file, k, depth + 1)?;
                let v = convert(file, v, depth + 1)?;
                if k.as_str() == Some("<<") {
                    merge_into(&mut merged, v)?;
                } else {
                    pairs.push((k, v));
                }
            }
            // Explicit keys win over merged ones, as in PyYAML.
            for (mk, mv) in merged {
                if !pairs.iter().any(|(k, _)| k.value == mk.value) {
                    pairs.push((mk, mv));
                }
            }
            Value::Map(pairs)
        }
        YamlDataOwned::Tagged(tag, inner) => {
            let name = format!("{}{}", tag.handle, tag.suffix);
            match name.as_str() {
                "!!str" | "tag:yaml.org,2002:str" | "!!map" | "!!seq" | "!!int" | "!!bool"
                | "!!float" | "!!null" => return convert(file, *inner, depth),
                _ => {
                    return Err(Diagnostic::at(
                        &loc,
                        format!("the YAML tag `{name}` is not supported (vaulted and unsafe values are outside the subset)"),
                    ))
                }
            }
        }
        YamlDataOwned::Alias(_) => {
            return Err(Diagnostic::at(&loc, "unresolved YAML alias"));
        }
        YamlDataOwned::BadValue => {
            return Err(Diagnostic::at(&loc, "invalid YAML value"));
        }
    };
    Ok(Node { value, loc })
}

fn merge_into(out: &mut Vec<(Node, Node)>, v: Node) -> Result<(), Diagnostic> {
    match v.value {
        Value::Map(pairs) => {
            for (k, val) in pairs {
                if !out.iter().any(|(ok, _)| ok.value == k.value) {
                    out.push((k, val));
                }
            }
            Ok(())
        }
        Value::Seq(items) => {
            for i in items {
                merge_into(out, i)?;
            }
            Ok(())
        }
        _ => Err(Diagnostic::at(
            &v.loc,
            "a merge key `<<` needs a mapping or a list of mappings",
        )),
    }
}

/// Resolve one scalar by PyYAML's (YAML 1.1) implicit resolvers.
fn resolve_scalar(
    text: &str,
    style: saphyr::ScalarStyle,
    tag: Option<&str>,
    loc: &Loc,
) -> Result<Value, Diagnostic> {
    let bad = |what: &str| Diagnostic::at(loc, format!("`{text}` is not a valid {what}"));
    match tag {
        Some("!!str") => return Ok(Value::Str(text.to_string())),
        Some("!!int") => return parse_int(text).map(Value::Int).ok_or_else(|| bad("integer")),
        Some("!!float") => {
            return parse_float(text)
                .or_else(|| parse_int(text).map(|i| i as f64))
                .map(Value::Float)
                .ok_or_else(|| bad("float"))
        }
        Some("!!bool") => return parse_bool(text).map(Value::Bool).ok_or_else(|| bad("boolean")),
        Some("!!null") => return Ok(Value::Null),
        Some(other) => {
            return Err(Diagnostic::at(
                loc,
                format!("the YAML tag `{other}` is not supported (vaulted and unsafe values are outside the subset)"),
            ))
        }
        None => {}
    }
    if style != saphyr::ScalarStyle::Plain {
        return Ok(Value::Str(text.to_string()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = parse_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(i) = parse_int(text) {
        return Ok(Value::Int(i));
    }
    if let Some(f) = parse_float(text) {
        return Ok(Value::Float(f));
    }
    Ok(Value::Str(text.to_string()))
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn split_sign(t: &str) -> (bool, &str) {
    if let Some(r) = t.strip_prefix('-') {
        (true, r)
    } else if let Some(r) = t.strip_prefix('+') {
        (false, r)
    } else {
        (false, t)
    }
}

fn parse_int(t: &str) -> Option<i64> {
    let (neg, body) = split_sign(t);
    if body.is_empty() {
        return None;
    }
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    let (radix, ds) = if let Some(b) = digits.strip_prefix("0b") {
        (2, b)
    } else if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else if !body.starts_with('_') {
        (10, digits.as_str())
    } else {
        return None;
    };
    // Digits only: `from_str_radix` would read a sign of its own (`0x-1`, `0-7`).
    if ds.is_empty() || !ds.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // In i128 so that the sign applies without overflow; out of i64's range stays a string.
    let v = i128::from_str_radix(ds, radix).ok()?;
    i64::try_from(if neg { -v } else { v }).ok()
}

fn parse_float(t: &str) -> Option<f64> {
    let (neg, body) = split_sign(t);
    let v = match body {
        ".inf" | ".Inf" | ".INF" => f64::INFINITY,
        ".nan" | ".NaN" | ".NAN" if t == body => return Some(f64::NAN),
        _ => {
            // PyYAML requires a dot: `1e3` stays a string, `1.0e+3` is a float.
            if !body.contains('.') {
                return None;
            }
            let re_ok = body
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '_' | 'e' | 'E' | '+' | '-'));
            if !re_ok || body.starts_with('_') {
                return None;
            }
            let clean: String = body.chars().filter(|c| *c != '_').collect();
            clean.parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Node {
        load_str(src, "t.yml").unwrap().remove(0)
    }

    #[test]
    fn yaml11_scalars_resolve_like_pyyaml() {
        let n =
            one("a: yes\nb: off\nc: 0644\nd: '0644'\ne: 1e3\nf: 1.5\ng: ~\nh: 0x1F\ni: 10\nj: y\n");
        let j = n.to_json();
        assert_eq!(j["a"], serde_json::json!(true));
        assert_eq!(j["b"], serde_json::json!(false));
        assert_eq!(j["c"], serde_json::json!(420));
        assert_eq!(j["d"], serde_json::json!("0644"));
        assert_eq!(j["e"], serde_json::json!("1e3"));
        assert_eq!(j["f"], serde_json::json!(1.5));
        assert_eq!(j["g"], serde_json::Value::Null);
        assert_eq!(j["h"], serde_json::json!(31));
        assert_eq!(j["i"], serde_json::json!(10));
        assert_eq!(j["j"], serde_json::json!("y"));
    }

    #[test]
    fn integers_take_one_sign_and_stay_in_range() {
        let j = one(
            "a: -0x-8000000000000000\nb: 0x-1\nc: -0-1\nd: -9223372036854775808\ne: 9223372036854775808\nf: +0b101\ng: -0o17\n",
        )
        .to_json();
        assert_eq!(j["a"], serde_json::json!("-0x-8000000000000000"));
        assert_eq!(j["b"], serde_json::json!("0x-1"));
        assert_eq!(j["c"], serde_json::json!("-0-1"));
        assert_eq!(j["d"], serde_json::json!(i64::MIN));
        assert_eq!(j["e"], serde_json::json!("9223372036854775808"));
        assert_eq!(j["f"], serde_json::json!(5));
        assert_eq!(j["g"], serde_json::json!("-0o17"));
    }

    #[test]
    fn nesting_is_bounded_in_text_and_through_aliases() {
        let ok = format!("{}x\n", "- ".repeat(MAX_DEPTH));
        assert!(load_str(&ok, "t.yml").is_ok());
        let deep = format!("{}x\n", "- ".repeat(100_000));
        let e = load_str(&deep, "t.yml").unwrap_err().to_string();
        assert!(e.contains("nest deeper than 100 levels"), "{e}");
        // Each anchor holds the previous one: 150 levels from 150 short lines.
        let mut chain = String::from("a0: &a0 [x]\n");
        for i in 1..150 {
            chain.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let e = load_str(&chain, "t.yml").unwrap_err().to_string();
        assert!(e.contains("nest deeper than 100 levels"), "{e}");
    }

    #[test]
    fn nodes_carry_line_and_column() {
        let n = one("- name: x\n  shell: echo hi\n- name: y\n  debug: msg=z\n");
        let items = n.as_seq().unwrap();
        assert_eq!(items[1].loc.line, 3);
        assert_eq!(items[1].loc.col, 3);
        let v = items[1].get("debug").unwrap();
        assert_eq!((v.loc.line, v.loc.col), (4, 10));
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let e = load_str("a: [1, 2\nb: 3\n", "bad.yml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("bad.yml:"), "{s}");
        assert!(s.contains("invalid YAML"), "{s}");
    }

    #[test]
    fn merge_keys_apply_and_explicit_keys_win() {
        let n = one("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n");
        assert_eq!(n.to_json()["c"], serde_json::json!({"y": 3, "x": 1}));
    }

    #[test]
    fn vault_tag_is_rejected_with_location() {
        let e = load_str("pw: !vault |\n  abc\n", "v.yml").unwrap_err();
        assert!(e.to_string().contains("`!vault`"), "{e}");
        assert_eq!(e.loc.unwrap().line, 1);
    }

    #[test]
    fn quoted_strings_stay_strings() {
        let j = one("a: \"yes\"\nb: 'null'\nc: |\n  10\n").to_json();
        assert_eq!(j["a"], serde_json::json!("yes"));
        assert_eq!(j["b"], serde_json::json!("null"));
        assert_eq!(j["c"], serde_json::json!("10\n"));
    }
}
