//! Ansible's `key=value` argument strings (`copy: src=a dest=b mode=0644`).
//!
//! Quoting follows Ansible's `split_args`/`parse_kv`: single or double quotes group words, a
//! backslash escapes the next character inside quotes, and the quotes around a value are removed.
//! For free-form modules (`command`, `shell`) only the module's own options are taken as `k=v`;
//! everything else stays as the raw command (`_raw_params`).

/// Split on whitespace outside quotes, keeping quotes (as Ansible's `split_args` does).
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    // Jinja blocks `{{ }}` and `{% %}` keep their spaces.
    let mut jinja_depth = 0usize;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            cur.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if (c == '{') && matches!(chars.peek(), Some('{') | Some('%')) {
            jinja_depth += 1;
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            in_word = true;
            continue;
        }
        if jinja_depth > 0 && matches!(c, '}' | '%') && chars.peek() == Some(&'}') {
            jinja_depth -= 1;
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            continue;
        }
        if c.is_whitespace() && jinja_depth == 0 {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
            continue;
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
        }
        cur.push(c);
        in_word = true;
    }
    if quote.is_some() {
        return Err(format!("unbalanced quotes in `{s}`"));
    }
    if jinja_depth > 0 {
        return Err(format!("unbalanced jinja2 block or expression in `{s}`"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Ansible's `unquote`: strip one pair of matching outer quotes (unless the closing one is
/// escaped); nothing inside changes.
fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    let quoted = b.len() > 1
        && (b[0] == b'"' || b[0] == b'\'')
        && b[b.len() - 1] == b[0]
        && b[b.len() - 2] != b'\\';
    if quoted {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// Ansible's `_decode_escapes`: Python's unicode-escape for `\\`, `\'`, `\"`, `\a \b \f \n
/// \r \t \v`, `\xHH`, `\uHHHH` and `\UHHHHHHHH`; anything else stays as written.
fn decode_escapes(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let next = chars[i + 1];
        let simple = match next {
            '\\' => Some('\\'),
            '\'' => Some('\''),
            '"' => Some('"'),
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            _ => None,
        };
        if let Some(ch) = simple {
            out.push(ch);
            i += 2;
            continue;
        }
        let width = match next {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => 0,
        };
        if width > 0 && i + 2 + width <= chars.len() {
            let hex: String = chars[i + 2..i + 2 + width].iter().collect();
            if let Some(ch) = hex
                .chars()
                .all(|h| h.is_ascii_hexdigit())
                .then(|| u32::from_str_radix(&hex, 16).ok())
                .flatten()
                .and_then(char::from_u32)
            {
                out.push(ch);
                i += 2 + width;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Free-form command modules' own options, recognised inside the free-form text.
pub const RAW_PARAM_KEYS: &[&str] = &[
    "creates",
    "removes",
    "chdir",
    "executable",
    "warn",
    "stdin",
    "stdin_add_newline",
    "strip_empty_ends",
];

/// Parse `k=v` words. With `free_form`, words that are not `known_key=...` are joined back
/// into `_raw_params`, as Ansible does for `command`/`shell`.
pub fn parse_kv(
    s: &str,
    free_form: bool,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut map = serde_json::Map::new();
    let mut raw: Vec<String> = Vec::new();
    for orig in split_args(s)? {
        // As Ansible: escapes are decoded first, then the word splits at the first `=` (after
        // its first character) that is not escaped.
        let x = decode_escapes(&orig);
        let pos = x
            .char_indices()
            .skip(1)
            .find(|&(i, c)| c == '=' && !x[..i].ends_with('\\'))
            .map(|(i, _)| i);
        match pos {
            Some(pos) => {
                let (k, v) = (&x[..pos], &x[pos + 1..]);
                if free_form && !RAW_PARAM_KEYS.contains(&k) {
                    raw.push(orig);
                } else {
                    map.insert(
                        k.trim().to_string(),
                        serde_json::Value::String(unquote(v.trim())),
                    );
                }
            }
            None if x.contains('=') => raw.push(x.replace("\\=", "=")),
            None => raw.push(orig),
        }
    }
    if !raw.is_empty() {
        if !free_form {
            return Err(format!(
                "`{}` is not a key=value argument (this module takes no free-form text)",
                raw.join(" ")
            ));
        }
        map.insert(
            "_raw_params".to_string(),
            serde_json::Value::String(raw.join(" ")),
        );
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_value_words_with_quotes() {
        let m = parse_kv(r#"dest=/etc/x line="a b c" mode='0644'"#, false).unwrap();
        assert_eq!(
            serde_json::Value::Object(m),
            json!({"dest": "/etc/x", "line": "a b c", "mode": "0644"})
        );
    }

    #[test]
    fn free_form_keeps_command_and_extracts_own_options() {
        let m = parse_kv("echo a=b 'x y' creates=/tmp/f chdir=/srv", true).unwrap();
        assert_eq!(
            serde_json::Value::Object(m),
            json!({"_raw_params": "echo a=b 'x y'", "creates": "/tmp/f", "chdir": "/srv"})
        );
    }

    #[test]
    fn jinja_expressions_keep_their_spaces() {
        let m = parse_kv("msg={{ a | default('x y') }} other=1", false).unwrap();
        assert_eq!(m["msg"], json!("{{ a | default('x y') }}"));
        assert_eq!(m["other"], json!("1"));
    }

    #[test]
    fn escapes_in_quoted_values_are_decoded_like_ansible() {
        // Regression: `content="{{ x }}\n"` wrote a literal backslash-n instead of a newline.
        let m = parse_kv(r#"content="{{ x }}\n" other='a\tb' path=/x\=y"#, false).unwrap();
        assert_eq!(m["content"], json!("{{ x }}\n"));
        assert_eq!(m["other"], json!("a\tb"));
        assert_eq!(m["path"], json!("/x\\=y"));
    }

    #[test]
    fn unbalanced_quote_is_an_error() {
        assert!(parse_kv("a='b", false).unwrap_err().contains("unbalanced"));
    }

    #[test]
    fn non_kv_word_is_rejected_for_non_free_form_modules() {
        assert!(parse_kv("path=/x oops", false)
            .unwrap_err()
            .contains("`oops`"));
    }
}
