//! Ansible's `password` lookup arguments (`NAME length=32 chars=ascii_letters,digits`) and
//! password generation from the OS CSPRNG.

use super::crypto::{random_bytes, CryptoError};

/// Ansible's default length and character set.
pub const DEFAULT_LENGTH: usize = 20;
const DEFAULT_CHARS: &[&str] = &["ascii_letters", "digits", ".,:-_"];

/// A parsed `password` lookup term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordSpec {
    /// The term's path (`NAME`), or `/dev/null` for a fresh value every time.
    pub name: String,
    pub length: usize,
    /// The characters to draw from, deduplicated, in order.
    pub chars: Vec<char>,
}

impl PasswordSpec {
    /// Whether nothing is stored (`/dev/null`, as Ansible).
    pub fn ephemeral(&self) -> bool {
        self.name == "/dev/null"
    }

    /// Parse `NAME [length=N] [chars=a,b]`; `kwargs` are the lookup's keyword arguments
    /// (`lookup('password', 'x', length=8)`); parameters in the term win.
    pub fn parse(term: &str, kwargs: &[(String, String)]) -> Result<PasswordSpec, String> {
        let term = term.trim();
        let (name, rest) = match term.split_once(' ') {
            Some((n, r)) => (n, r.trim()),
            None => (term, ""),
        };
        if name.is_empty() {
            return Err("password lookup: the term names no password".into());
        }
        let mut params: Vec<(String, String)> = kwargs.to_vec();
        if !rest.is_empty() {
            let parsed = crate::raw::kv::parse_kv(rest, false)
                .map_err(|e| format!("password lookup: {e}"))?;
            for (k, v) in parsed {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                params.retain(|(pk, _)| pk != &k);
                params.push((k, v));
            }
        }
        let mut length = DEFAULT_LENGTH;
        let mut chars: Option<Vec<String>> = None;
        for (k, v) in params {
            match k.as_str() {
                "length" => {
                    length = v
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=4096).contains(n))
                        .ok_or_else(|| {
                            format!("password lookup: length must be 1..4096, not `{v}`")
                        })?
                }
                "chars" => chars = Some(split_chars(&v)),
                "encrypt" | "seed" | "ident" | "salt" => {
                    return Err(format!(
                        "password lookup: `{k}` is not supported (values are kept encrypted by the engine)"
                    ))
                }
                other => return Err(format!("password lookup: unknown parameter `{other}`")),
            }
        }
        let sets: Vec<String> =
            chars.unwrap_or_else(|| DEFAULT_CHARS.iter().map(|s| s.to_string()).collect());
        let mut out: Vec<char> = Vec::new();
        for s in &sets {
            for c in named_set(s).unwrap_or(s.as_str()).chars() {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        if out.is_empty() {
            return Err("password lookup: chars is empty".into());
        }
        Ok(PasswordSpec {
            name: name.to_string(),
            length,
            chars: out,
        })
    }

    /// A new password from the OS CSPRNG, each character uniform over `chars`.
    pub(crate) fn generate(&self) -> Result<String, CryptoError> {
        let n = u32::try_from(self.chars.len()).map_err(|_| CryptoError::Random)?;
        // Reject the top partial range so every character is equally likely.
        let limit = u32::MAX - (u32::MAX % n);
        let mut out = String::with_capacity(self.length);
        let mut buf = [0u8; 4];
        while out.chars().count() < self.length {
            random_bytes(&mut buf)?;
            let r = u32::from_le_bytes(buf);
            if r >= limit {
                continue;
            }
            out.push(self.chars[(r % n) as usize]);
        }
        Ok(out)
    }
}

/// Ansible's rule: `,,` anywhere adds a literal comma (and is removed); the rest splits on `,`.
fn split_chars(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.contains(",,") {
        out.push(",".to_string());
    }
    out.extend(
        v.replace(",,", "")
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    );
    out
}

/// Python's `string` module constants, which Ansible accepts by name.
fn named_set(name: &str) -> Option<&'static str> {
    const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
    const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const DIGITS: &str = "0123456789";
    const PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    Some(match name {
        "ascii_letters" => LETTERS,
        "ascii_lowercase" => LOWER,
        "ascii_uppercase" => UPPER,
        "digits" => DIGITS,
        "hexdigits" => "0123456789abcdefABCDEF",
        "octdigits" => "01234567",
        "punctuation" => PUNCT,
        "whitespace" => " \t\n\r\x0b\x0c",
        "printable" => {
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \t\n\r\x0b\x0c"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ansible_terms() {
        let s = PasswordSpec::parse("zk length=32 chars=ascii_letters,digits", &[]).unwrap();
        assert_eq!(s.name, "zk");
        assert_eq!(s.length, 32);
        assert_eq!(s.chars.len(), 62);
        let d = PasswordSpec::parse("creds/x", &[]).unwrap();
        assert_eq!(d.length, DEFAULT_LENGTH);
        assert!(d.chars.contains(&'.') && d.chars.contains(&',') && d.chars.contains(&'Z'));
        let lit = PasswordSpec::parse("x chars=digits,,,ab", &[]).unwrap();
        assert_eq!(lit.chars.iter().collect::<String>(), ",0123456789ab");
        let kw = PasswordSpec::parse("x", &[("length".into(), "8".into())]).unwrap();
        assert_eq!(kw.length, 8);
        assert!(PasswordSpec::parse("/dev/null length=4", &[])
            .unwrap()
            .ephemeral());
        assert!(PasswordSpec::parse("x encrypt=sha512_crypt", &[]).is_err());
        assert!(PasswordSpec::parse("x length=0", &[]).is_err());
    }

    #[test]
    fn generates_from_the_set() {
        let s = PasswordSpec::parse("x length=64 chars=hexdigits", &[]).unwrap();
        let a = s.generate().unwrap();
        let b = s.generate().unwrap();
        assert_eq!(a.chars().count(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
