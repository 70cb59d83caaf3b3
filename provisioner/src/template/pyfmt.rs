//! Python's view of values, which is what Ansible's templating shows and parses:
//! `to_text()` of a value (`True`, `None`, `[1, 'a']`, `2.0`) and `ast.literal_eval` of a
//! rendered string (Ansible converts a rendered `[..]`, `{..}`, `True` or `False` back into a
//! value).

use minijinja::value::ValueKind;
use minijinja::Value;

/// How Python's `repr()` prints a float.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..16).contains(&exp) {
        // Python: shortest round-trip digits in exponent form, e.g. 1e+16, 1.5e-05.
        let s = format!("{f:e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", e.abs());
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Python `repr()` of a string: single quotes unless the string contains a single quote and
/// no double quote.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python `str()` of a value (what Jinja prints for `{{ value }}`). `None` prints as `None`
/// here; Ansible's finalize turns a top-level `None` into an empty string before this.
pub fn to_text(v: &Value) -> String {
    match v.kind() {
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        _ => repr(v),
    }
}

/// Python `repr()` of a value.
pub fn repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => "None".into(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number => {
            if v.is_integer() {
                v.to_string()
            } else {
                f64::try_from(v.clone())
                    .map(float_repr)
                    .unwrap_or_else(|_| v.to_string())
            }
        }
        ValueKind::String => str_repr(v.as_str().unwrap_or_default()),
        ValueKind::Map => {
            let mut parts = Vec::new();
            if let Ok(iter) = v.try_iter() {
                for k in iter {
                    let val = v.get_item(&k).unwrap_or_default();
                    parts.push(format!("{}: {}", repr(&k), repr(&val)));
                }
            }
            format!("{{{}}}", parts.join(", "))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let parts: Vec<String> = match v.try_iter() {
                Ok(iter) => iter.map(|x| repr(&x)).collect(),
                Err(_) => Vec::new(),
            };
            format!("[{}]", parts.join(", "))
        }
        _ => v.to_string(),
    }
}

/// Ansible's `ansible_eval_concat` conversion of a rendered string: when it looks like a
/// list, dict or bool, parse it as a Python literal (with JSON's `true`/`false`/`null`
/// accepted too). Anything else, or anything that fails to parse, stays a string.
pub fn convert_rendered(out: String) -> Value {
    if out.starts_with('{') || out.starts_with('[') || out == "True" || out == "False" {
        if let Some(v) = literal_eval(&out) {
            return v;
        }
    }
    Value::from(out)
}

/// Parse a Python literal expression (`ast.literal_eval`), or `None` when it is not one.
pub fn literal_eval(s: &str) -> Option<Value> {
    let mut p = Parser {
        s: s.as_bytes(),
        src: s,
        i: 0,
    };
    let v = p.expr()?;
    p.ws();
    if p.i == p.s.len() {
        Some(v)
    } else {
        None
    }
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Option<Value> {
        self.ws();
        match self.peek()? {
            b'[' => {
                self.i += 1;
                let items = self.items(b']')?;
                Some(Value::from(items))
            }
            b'(' => {
                self.i += 1;
                // a parenthesised expression or a tuple
                self.ws();
                if self.peek() == Some(b')') {
                    self.i += 1;
                    return Some(Value::from(Vec::<Value>::new()));
                }
                let first = self.expr()?;
                if self.eat(b')') {
                    return Some(first);
                }
                if !self.eat(b',') {
                    return None;
                }
                let mut items = vec![first];
                items.extend(self.items(b')')?);
                Some(Value::from(items))
            }
            b'{' => {
                self.i += 1;
                if self.eat(b'}') {
                    return Some(Value::from_pairs(Vec::<(Value, Value)>::new()));
                }
                let mut pairs = Vec::new();
                loop {
                    let k = self.expr()?;
                    if !self.eat(b':') {
                        return None; // sets are not supported
                    }
                    let v = self.expr()?;
                    pairs.push((k, v));
                    if self.eat(b',') {
                        if self.eat(b'}') {
                            break;
                        }
                        continue;
                    }
                    if self.eat(b'}') {
                        break;
                    }
                    return None;
                }
                Some(Value::from_pairs(pairs))
            }
            b'\'' | b'"' => {
                // adjacent string literals concatenate
                let mut out = self.string()?;
                loop {
                    self.ws();
                    match self.peek() {
                        Some(b'\'' | b'"') => out.push_str(&self.string()?),
                        _ => break,
                    }
                }
                Some(Value::from(out))
            }
            b'-' | b'+' | b'0'..=b'9' | b'.' => self.number(),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.i += 1;
                }
                match &self.src[start..self.i] {
                    "True" | "true" => Some(Value::from(true)),
                    "False" | "false" => Some(Value::from(false)),
                    "None" | "null" => Some(Value::from(())),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn items(&mut self, close: u8) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Some(items);
        }
        loop {
            items.push(self.expr()?);
            if self.eat(b',') {
                if self.eat(close) {
                    return Some(items);
                }
                continue;
            }
            if self.eat(close) {
                return Some(items);
            }
            return None;
        }
    }

    fn number(&mut self) -> Option<Value> {
        let mut neg = false;
        while let Some(c @ (b'-' | b'+')) = self.peek() {
            if c == b'-' {
                neg = !neg;
            }
            self.i += 1;
            self.ws();
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
            || (self.i > start
                && matches!(self.peek(), Some(b'+' | b'-'))
                && matches!(self.s[self.i - 1], b'e' | b'E'))
        {
            self.i += 1;
        }
        let text: String = self.src[start..self.i].replace('_', "");
        let lower = text.to_ascii_lowercase();
        let int = if let Some(h) = lower.strip_prefix("0x") {
            i64::from_str_radix(h, 16).ok()
        } else if let Some(o) = lower.strip_prefix("0o") {
            i64::from_str_radix(o, 8).ok()
        } else if let Some(b) = lower.strip_prefix("0b") {
            i64::from_str_radix(b, 2).ok()
        } else if lower.bytes().all(|c| c.is_ascii_digit()) && !lower.is_empty() {
            if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|c| c != b'0') {
                return None; // Python 3 rejects 0644
            }
            lower.parse::<i64>().ok()
        } else {
            None
        };
        if let Some(n) = int {
            return Some(Value::from(if neg { -n } else { n }));
        }
        if lower.is_empty() || lower.bytes().any(|c| c.is_ascii_alphabetic() && c != b'e') {
            return None;
        }
        let f: f64 = lower.parse().ok()?;
        Some(Value::from(if neg { -f } else { f }))
    }

    fn string(&mut self) -> Option<String> {
        let q = self.peek()?;
        self.i += 1;
        let mut out = String::new();
        let rest = &self.src[self.i..];
        let mut chars = rest.char_indices();
        while let Some((off, c)) = chars.next() {
            if c as u32 == q as u32 {
                self.i += off + 1;
                return Some(out);
            }
            match c {
                '\n' => return None,
                '\\' => {
                    let (_, e) = chars.next()?;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'a' => out.push('\x07'),
                        'b' => out.push('\x08'),
                        'f' => out.push('\x0c'),
                        'v' => out.push('\x0b'),
                        '\\' | '\'' | '"' => out.push(e),
                        '\n' => {}
                        'x' | 'u' | 'U' => {
                            let n = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let mut code = String::new();
                            for _ in 0..n {
                                code.push(chars.next()?.1);
                            }
                            out.push(char::from_u32(u32::from_str_radix(&code, 16).ok()?)?);
                        }
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                c => out.push(c),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        assert_eq!(float_repr(2.0), "2.0");
        assert_eq!(float_repr(1.5), "1.5");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(1.5e-5), "1.5e-05");
        assert_eq!(float_repr(0.0001), "0.0001");
    }

    #[test]
    fn strings_repr_like_python() {
        assert_eq!(str_repr("a"), "'a'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("a'\""), "'a\\'\"'");
        assert_eq!(str_repr("x\ny"), "'x\\ny'");
    }

    #[test]
    fn literal_eval_parses_python_and_json_literals() {
        let v = literal_eval("[1, 'a', True, None, 2.5, -3, {'k': (1, 2)}, null, true]")
            .map(|v| repr(&v));
        assert_eq!(
            v.as_deref(),
            Some("[1, 'a', True, None, 2.5, -3, {'k': [1, 2]}, None, True]")
        );
        assert!(literal_eval("[1").is_none());
        assert!(literal_eval("[x]").is_none());
        assert!(literal_eval("{1, 2}").is_none());
        assert_eq!(
            literal_eval("'a' \"b\"").map(|v| to_text(&v)),
            Some("ab".into())
        );
    }
}
