//! Ansible-style argument coercion for the system modules (AnsibleModule's `type=` conversions).
//!
//! Arguments arrive as JSON values after templating. Ansible converts them per the module's
//! argument spec: `bool` accepts `yes`/`no`/`true`/`1`/`on`..., `list` splits a string on commas,
//! `str` renders numbers and booleans, `int` parses numeric strings. Aliases are resolved through
//! the module's [`ParamSpec`] table, so callers ask by canonical name.
//!
//! The file-modules family has its own copy; the lead deduplicates later.

use crate::modules::{Args, OpError, ParamSpec};
use serde_json::{Map, Value};

/// Shorthand for building a static [`ParamSpec`] table.
pub const fn p(name: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        aliases: &[],
        required: false,
    }
}

/// A parameter with aliases.
pub const fn pa(name: &'static str, aliases: &'static [&'static str]) -> ParamSpec {
    ParamSpec {
        name,
        aliases,
        required: false,
    }
}

/// A required parameter.
pub const fn req(name: &'static str, aliases: &'static [&'static str]) -> ParamSpec {
    ParamSpec {
        name,
        aliases,
        required: true,
    }
}

/// Typed access to one task's arguments, resolving aliases through the module's spec.
#[derive(Clone, Copy)]
pub struct A<'a> {
    args: &'a Args,
    spec: &'static [ParamSpec],
}

/// Ansible's `boolean()` (one implementation for every module's arguments).
pub use crate::modules::files::args::to_bool;

/// Render a scalar the way Ansible's `type='str'` conversion does.
pub fn to_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        // Python renders booleans as `True`/`False`.
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        _ => None,
    }
}

impl<'a> A<'a> {
    pub fn new(args: &'a Args, spec: &'static [ParamSpec]) -> Result<Self, OpError> {
        let a = A { args, spec };
        let mut unknown: Vec<&str> = args
            .keys()
            .map(String::as_str)
            .filter(|k| !k.starts_with("_ansible"))
            .filter(|k| !spec.iter().any(|s| s.name == *k || s.aliases.contains(k)))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            let mut names: Vec<&str> = spec.iter().map(|s| s.name).collect();
            names.sort_unstable();
            return Err(OpError::new(format!(
                "Unsupported parameters for module: {}. Supported parameters include: {}.",
                unknown.join(", "),
                names.join(", ")
            )));
        }
        for ps in spec {
            if ps.required && a.raw(ps.name).is_none() {
                return Err(OpError::new(format!(
                    "missing required arguments: {}",
                    ps.name
                )));
            }
        }
        Ok(a)
    }

    pub fn args(&self) -> &'a Args {
        self.args
    }

    /// The value for `name` or one of its aliases; JSON `null` counts as absent.
    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        let aliases: &[&str] = self
            .spec
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.aliases)
            .unwrap_or(&[]);
        std::iter::once(name)
            .chain(aliases.iter().copied())
            .find_map(|k| self.args.get(k))
            .filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    pub fn str(&self, name: &str) -> Result<Option<String>, OpError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => to_str(v).map(Some).ok_or_else(|| {
                OpError::new(format!(
                    "argument '{name}' is of type {} and we were unable to convert to str",
                    type_name(v)
                ))
            }),
        }
    }

    pub fn str_or(&self, name: &str, default: &str) -> Result<String, OpError> {
        Ok(self.str(name)?.unwrap_or_else(|| default.to_string()))
    }

    /// A `type='path'` argument: `~` is left to the remote shell where we expand it.
    pub fn path(&self, name: &str) -> Result<Option<String>, OpError> {
        self.str(name)
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, OpError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => to_bool(v).map(Some).ok_or_else(|| {
                OpError::new(format!(
                    "argument '{name}' is of type {} and we were unable to convert to bool: \
                     The value '{}' is not a valid boolean.  Valid booleans include: \
                     'yes', 'no', 'true', 'false', 'on', 'off', '1', '0', 'y', 'n', 't', 'f'",
                    type_name(v),
                    to_str(v).unwrap_or_default()
                ))
            }),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, OpError> {
        Ok(self.bool(name)?.unwrap_or(default))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, OpError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 => Ok(Some(f as i64)),
                _ => Err(int_error(name, &Value::Number(n.clone()))),
            },
            Some(v @ Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| int_error(name, v)),
            Some(v) => Err(int_error(name, v)),
        }
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, OpError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A `type='float'` argument.
    pub fn float(&self, name: &str) -> Result<Option<f64>, OpError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v @ Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
                OpError::new(format!(
                    "argument '{name}' is of type {} and we were unable to convert to float",
                    type_name(v)
                ))
            }),
            Some(v) => Err(OpError::new(format!(
                "argument '{name}' is of type {} and we were unable to convert to float",
                type_name(v)
            ))),
        }
    }

    /// A `type='list', elements='str'` argument: a list, or a string split on commas
    /// (`check_type_list`; the pieces are not trimmed, like Ansible).
    pub fn list(&self, name: &str) -> Result<Option<Vec<String>>, OpError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    to_str(v).ok_or_else(|| {
                        OpError::new(format!(
                            "Elements value for option '{name}' is of type {} and we were unable \
                             to convert to str",
                            type_name(v)
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Value::String(s)) => Ok(Some(s.split(',').map(str::to_string).collect())),
            Some(Value::Number(n)) => Ok(Some(vec![n.to_string()])),
            Some(v) => Err(OpError::new(format!(
                "argument '{name}' is of type {} and we were unable to convert to list: {} \
                 cannot be converted to a list",
                type_name(v),
                type_name(v)
            ))),
        }
    }

    /// A `type='dict'` argument (also accepts a JSON object in a string, or `k=v k2=v2`).
    pub fn dict(&self, name: &str) -> Result<Option<Map<String, Value>>, OpError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(Value::String(s)) if s.trim_start().starts_with('{') => {
                match serde_json::from_str::<Value>(s) {
                    Ok(Value::Object(m)) => Ok(Some(m)),
                    _ => Err(OpError::new(format!(
                        "argument '{name}' is of type <class 'str'> and we were unable to convert \
                         to dict: unable to evaluate string as dictionary"
                    ))),
                }
            }
            Some(Value::String(s)) => {
                let mut m = Map::new();
                for part in s.split(|c: char| c == ',' || c.is_whitespace()) {
                    if part.is_empty() {
                        continue;
                    }
                    let (k, v) = part.split_once('=').ok_or_else(|| {
                        OpError::new(format!(
                            "argument '{name}' is of type <class 'str'> and we were unable to \
                             convert to dict: dictionary requested, could not parse JSON or \
                             key=value"
                        ))
                    })?;
                    m.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
                }
                Ok(Some(m))
            }
            Some(v) => Err(OpError::new(format!(
                "argument '{name}' is of type {} and we were unable to convert to dict",
                type_name(v)
            ))),
        }
    }

    /// A string argument restricted to `choices` (Ansible's message on mismatch).
    pub fn choice(
        &self,
        name: &str,
        choices: &[&str],
        default: Option<&str>,
    ) -> Result<Option<String>, OpError> {
        let v = match self.str(name)? {
            Some(v) => v,
            None => return Ok(default.map(str::to_string)),
        };
        if choices.contains(&v.as_str()) {
            Ok(Some(v))
        } else {
            Err(OpError::new(format!(
                "value of {name} must be one of: {}, got: {v}",
                choices.join(", ")
            )))
        }
    }

    /// Ansible's `mutually_exclusive`.
    pub fn exclusive(&self, names: &[&str]) -> Result<(), OpError> {
        let given: Vec<&str> = names.iter().copied().filter(|n| self.has(n)).collect();
        if given.len() > 1 {
            return Err(OpError::new(format!(
                "parameters are mutually exclusive: {}",
                names.join("|")
            )));
        }
        Ok(())
    }
}

fn int_error(name: &str, v: &Value) -> OpError {
    OpError::new(format!(
        "argument '{name}' is of type {} and we were unable to convert to int",
        type_name(v)
    ))
}

/// The Python type name Ansible's messages show.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<class 'NoneType'>",
        Value::Bool(_) => "<class 'bool'>",
        Value::Number(n) if n.is_f64() => "<class 'float'>",
        Value::Number(_) => "<class 'int'>",
        Value::String(_) => "<class 'str'>",
        Value::Array(_) => "<class 'list'>",
        Value::Object(_) => "<class 'dict'>",
    }
}

/// Python's `str.splitlines()` (what Ansible uses for `stdout_lines`).
pub fn split_lines(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(std::mem::take(&mut cur));
            }
            '\n' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `split_lines` as a JSON array.
pub fn lines_value(s: &str) -> Value {
    Value::Array(split_lines(s).into_iter().map(Value::String).collect())
}

/// Python's `shlex.split(s)` (POSIX mode, no comments), as Ansible's command module uses it.
pub fn shlex_split(s: &str) -> Result<Vec<String>, OpError> {
    #[derive(PartialEq)]
    enum St {
        Between,
        Word,
        Single,
        Double,
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut st = St::Between;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match st {
            St::Between | St::Word => match c {
                c if c.is_whitespace() => {
                    if st == St::Word {
                        words.push(std::mem::take(&mut cur));
                        st = St::Between;
                    }
                }
                '\'' => st = St::Single,
                '"' => st = St::Double,
                '\\' => {
                    let n = chars
                        .next()
                        .ok_or_else(|| OpError::new("No escaped character"))?;
                    cur.push(n);
                    st = St::Word;
                }
                c => {
                    cur.push(c);
                    st = St::Word;
                }
            },
            St::Single => {
                if c == '\'' {
                    st = St::Word;
                } else {
                    cur.push(c);
                }
            }
            St::Double => match c {
                '"' => st = St::Word,
                '\\' => {
                    let n = chars
                        .next()
                        .ok_or_else(|| OpError::new("No closing quotation"))?;
                    // Inside double quotes a backslash only escapes `"` and `\`.
                    if n != '"' && n != '\\' {
                        cur.push('\\');
                    }
                    cur.push(n);
                }
                c => cur.push(c),
            },
        }
    }
    match st {
        St::Single | St::Double => Err(OpError::new("No closing quotation")),
        St::Word => {
            words.push(cur);
            Ok(words)
        }
        St::Between => Ok(words),
    }
}

/// A shell test that prints `yes` when the glob `pattern` matches an existing path (or a dangling
/// symlink), like Python's `glob.glob`, and `no` otherwise. Runs in `chdir` first when given.
/// Patterns with `~`, `$` or glob characters go through python3 (hosts have it) so expansion
/// matches Ansible's `type='path'` (`expanduser(expandvars(..))`) and `glob.glob` exactly.
pub fn glob_probe(pattern: &str, chdir: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(d) = chdir {
        s.push_str(&format!("cd {} || exit 3; ", crate::shell::quote(d)));
    }
    if pattern.contains(['*', '?', '[', '~', '$']) {
        s.push_str(&format!(
            "python3 -c 'import glob,os,sys; print(\"yes\" if glob.glob(os.path.expanduser(os.path.expandvars(sys.argv[1]))) else \"no\")' {}",
            crate::shell::quote(pattern)
        ));
    } else {
        let q = crate::shell::quote(pattern);
        s.push_str(&format!(
            "if [ -e {q} ] || [ -L {q} ]; then echo yes; else echo no; fi"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn booleans_follow_ansible_words() {
        for v in [
            json!("yes"),
            json!("True"),
            json!(" on "),
            json!(1),
            json!(true),
        ] {
            assert_eq!(to_bool(&v), Some(true), "{v}");
        }
        for v in [
            json!("no"),
            json!("FALSE"),
            json!("off"),
            json!(0),
            json!("0"),
        ] {
            assert_eq!(to_bool(&v), Some(false), "{v}");
        }
        assert_eq!(to_bool(&json!("maybe")), None);
        assert_eq!(to_bool(&json!(2)), None);
    }

    #[test]
    fn lists_split_a_string_on_commas_without_trimming() {
        const SPEC: &[ParamSpec] = &[pa("name", &["pkg"])];
        let args = json!({"pkg": "a,b, c"}).as_object().unwrap().clone();
        let a = A::new(&args, SPEC).unwrap();
        assert_eq!(
            a.list("name").unwrap().unwrap(),
            vec!["a".to_string(), "b".into(), " c".into()]
        );
    }

    #[test]
    fn shlex_matches_python_posix_mode() {
        // Expected values from python3 -c 'import shlex; print(shlex.split(...))'.
        assert_eq!(
            shlex_split(r#"echo hi "a b" | wc"#).unwrap(),
            vec!["echo", "hi", "a b", "|", "wc"]
        );
        assert_eq!(shlex_split("a '' b").unwrap(), vec!["a", "", "b"]);
        assert_eq!(shlex_split(r#""a\"b\$c""#).unwrap(), vec![r#"a"b\$c"#]);
        assert_eq!(shlex_split(r"a\ b 'c\d'").unwrap(), vec!["a b", r"c\d"]);
        assert_eq!(shlex_split("x'y'\"z\"").unwrap(), vec!["xyz"]);
        assert!(shlex_split("echo 'oops").is_err());
        assert_eq!(shlex_split("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn splitlines_matches_python() {
        assert_eq!(split_lines("a\nb\r\nc\rd"), vec!["a", "b", "c", "d"]);
        assert_eq!(split_lines("a\n"), vec!["a"]);
        assert_eq!(split_lines("a\n\nb"), vec!["a", "", "b"]);
        assert!(split_lines("").is_empty());
    }

    #[test]
    fn glob_probe_answers_yes_or_no_locally() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.txt"), "x").unwrap();
        let d = dir.path().to_str().unwrap();
        let run = |script: String| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        assert_eq!(run(glob_probe(&format!("{d}/f.txt"), None)), "yes");
        assert_eq!(run(glob_probe(&format!("{d}/g.txt"), None)), "no");
        assert_eq!(run(glob_probe("f.txt", Some(d))), "yes");
        assert_eq!(run(glob_probe(&format!("{d}/*.txt"), None)), "yes");
        assert_eq!(run(glob_probe(&format!("{d}/*.log"), None)), "no");
    }
}
