//! Ansible's `key=value` argument strings (`copy: src=a dest=b mode=0644`).
//!
//! Quoting follows Ansible's `split_args`/`parse_kv`: single or double quotes group words, a
//! backslash escapes the next character inside quotes, and the quotes around a value are removed.
//! For free-form modules (`command`, `shell`) only the module's own options are taken as `k=v`;
//! everything else stays as the raw command (`_raw_params`).

/// Ansible's `_get_quote_state`: the quote still open after `token` (a quote preceded by a
/// backslash does not count).
fn quote_state(token: &str, mut quote: Option<char>) -> Option<char> {
    let mut prev: Option<char> = None;
    for c in token.chars() {
        if (c == '"' || c == '\'') && prev != Some('\\') {
            match quote {
                Some(q) if q == c => quote = None,
                Some(_) => {}
                None => quote = Some(c),
            }
        }
        prev = Some(c);
    }
    quote
}

/// Ansible's `_count_jinja2_blocks`.
fn jinja_depth(token: &str, depth: usize, open: &str, close: &str) -> usize {
    let (o, c) = (token.matches(open).count(), token.matches(close).count());
    if o == c {
        depth
    } else {
        (depth as isize + o as isize - c as isize).max(0) as usize
    }
}

/// Ansible's `split_args` (ansible-core 2.14, `parsing/splitter.py`), ported line by line:
/// split on spaces and newlines outside quotes and Jinja blocks, keeping quotes. Newlines
/// stay at the end of the word before them and runs of spaces stay as trailing spaces, so
/// `join_args` gives back the original text (a multi-line `shell: |` keeps its lines).
pub(crate) fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut params: Vec<String> = Vec::new();
    let items: Vec<&str> = s.split('\n').collect();
    let mut quote: Option<char> = None;
    let (mut print_depth, mut block_depth, mut comment_depth) = (0usize, 0usize, 0usize);
    for (itemidx, item) in items.iter().enumerate() {
        let tokens: Vec<&str> = item.split(' ').collect();
        let mut line_continuation = false;
        for (idx, &token) in tokens.iter().enumerate() {
            if token.is_empty() && idx != 0 {
                if let Some(last) = params.last_mut() {
                    last.push(' ');
                }
                continue;
            }
            if token == "\\" && quote.is_none() {
                line_continuation = true;
                continue;
            }
            let was_inside_quotes = quote.is_some();
            quote = quote_state(token, quote);
            let inside_quotes = quote.is_some();
            let in_block = print_depth > 0 || block_depth > 0 || comment_depth > 0;
            let mut appended = false;
            if inside_quotes && !was_inside_quotes && !in_block {
                params.push(token.to_string());
                appended = true;
            } else if in_block || inside_quotes || was_inside_quotes {
                let last = params
                    .last_mut()
                    .ok_or_else(|| format!("cannot split `{s}`"))?;
                if idx == 0 && was_inside_quotes {
                    last.push_str(token);
                } else if tokens.len() > 1 {
                    if idx > 0 {
                        last.push(' ');
                    }
                    last.push_str(token);
                } else {
                    last.push('\n');
                    last.push_str(token);
                }
                appended = true;
            }
            for (depth, open, close) in [
                (&mut print_depth, "{{", "}}"),
                (&mut block_depth, "{%", "%}"),
                (&mut comment_depth, "{#", "#}"),
            ] {
                let before = *depth;
                *depth = jinja_depth(token, before, open, close);
                if *depth != before && !appended {
                    params.push(token.to_string());
                    appended = true;
                }
            }
            let in_block = print_depth > 0 || block_depth > 0 || comment_depth > 0;
            if !in_block && !inside_quotes && !appended && !token.is_empty() {
                params.push(token.to_string());
            }
        }
        if items.len() > 1 && itemidx != items.len() - 1 && !line_continuation {
            if let Some(last) = params.last_mut() {
                last.push('\n');
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unbalanced quotes in `{s}`"));
    }
    if print_depth > 0 || block_depth > 0 || comment_depth > 0 {
        return Err(format!("unbalanced jinja2 block or expression in `{s}`"));
    }
    Ok(params)
}

/// Ansible's `join_args`: words joined by a space, except after a word that ends a line.
pub(crate) fn join_args(words: &[String]) -> String {
    let mut out = String::new();
    for w in words {
        if !(out.is_empty() || out.ends_with('\n')) {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
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
            serde_json::Value::String(join_args(&raw)),
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
    fn multi_line_shell_keeps_its_newlines_and_spacing() {
        // ansible-core 2.14: `cmd` of a `shell: |` block is the block's text, newlines,
        // indentation and trailing newline included.
        let text = "if [ -f /a ]; then echo v2\nelif [ -d /b ]; then\n  echo  v1\nfi\n";
        let m = parse_kv(text, true).unwrap();
        assert_eq!(m["_raw_params"], json!(text));
    }

    #[test]
    fn multi_line_shell_with_jinja_and_own_options() {
        let text = "{% for p in ports %}\nss -H 'sport = :{{ p }}'\n{% endfor %}\nchdir=/tmp\n";
        let m = parse_kv(text, true).unwrap();
        assert_eq!(
            m["_raw_params"],
            json!("{% for p in ports %}\nss -H 'sport = :{{ p }}'\n{% endfor %}\n")
        );
        assert_eq!(m["chdir"], json!("/tmp"));
    }

    #[test]
    fn key_value_lines_are_trimmed() {
        let m = parse_kv("src=a\ndest=b\n", false).unwrap();
        assert_eq!(
            serde_json::Value::Object(m),
            json!({"src": "a", "dest": "b"})
        );
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
