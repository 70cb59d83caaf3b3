//! Ansible's argument handling for module args: unknown and missing parameters, aliases,
//! choices, and the type coercions of `AnsibleModule` (`bool`, `int`, `str`, `path`, `list`,
//! `raw`). Args arrive templated but loosely typed (YAML `0644` is the int 420, `"yes"` is a
//! string), exactly as Ansible's modules receive them.

use crate::modules::{Args, OpError, ParamSpec};
use serde_json::Value;
use std::collections::BTreeMap;

/// The type a parameter is coerced to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// A string; `~` is NOT expanded (the engine does not know the remote home).
    Path,
    Bool,
    Int,
    /// A list of strings; a string is split on commas (Ansible's `list` with `elements=str`).
    List,
    /// Left as given (e.g. `mode`, which may be an int or a string).
    Raw,
}

/// One parameter with its type; [`specs`] turns a table of these into the [`ParamSpec`]s of
/// `Module::params`.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub required: bool,
    pub kind: Kind,
    /// Allowed values (after coercion to string); empty means any.
    pub choices: &'static [&'static str],
}

impl Param {
    pub const fn new(name: &'static str, kind: Kind) -> Param {
        Param {
            name,
            aliases: &[],
            required: false,
            kind,
            choices: &[],
        }
    }
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Param {
        self.aliases = aliases;
        self
    }
    pub const fn required(mut self) -> Param {
        self.required = true;
        self
    }
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Param {
        self.choices = choices;
        self
    }
}

/// `ParamSpec`s for a `Param` table, at compile time.
pub const fn specs<const N: usize>(params: &[Param]) -> [ParamSpec; N] {
    const EMPTY: ParamSpec = ParamSpec {
        name: "",
        aliases: &[],
        required: false,
    };
    let mut out = [EMPTY; N];
    let mut i = 0;
    while i < N {
        out[i] = ParamSpec {
            name: params[i].name,
            aliases: params[i].aliases,
            required: params[i].required,
        };
        i += 1;
    }
    out
}

/// The file attribute arguments every file module takes (`add_file_common_args=True`).
pub const FILE_COMMON: [Param; 9] = [
    Param::new("mode", Kind::Raw),
    Param::new("owner", Kind::Str),
    Param::new("group", Kind::Str),
    Param::new("seuser", Kind::Str),
    Param::new("serole", Kind::Str),
    Param::new("setype", Kind::Str),
    Param::new("selevel", Kind::Str),
    Param::new("unsafe_writes", Kind::Bool),
    Param::new("attributes", Kind::Str).aliases(&["attr"]),
];

/// Validated, coerced arguments, keyed by canonical parameter name. Unset (or null) parameters
/// are absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<&'static str, Value>,
}

/// Python's `str()` of a JSON value, as Ansible's `str` coercion does.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "<class 'str'>",
        Value::Bool(_) => "<class 'bool'>",
        Value::Number(n) if n.is_f64() => "<class 'float'>",
        Value::Number(_) => "<class 'int'>",
        Value::Array(_) => "<class 'list'>",
        Value::Object(_) => "<class 'dict'>",
        Value::Null => "<class 'NoneType'>",
    }
}

/// Ansible's `boolean()` (see [`cluster_core::boolean`]).
pub use cluster_core::boolean as to_bool;

fn coerce(name: &str, kind: Kind, v: &Value) -> Result<Value, String> {
    let fail = |target: &str, why: String| {
        format!(
            "argument '{name}' is of type {} and we were unable to convert to {target}: {why}",
            py_type(v)
        )
    };
    match kind {
        Kind::Raw => Ok(v.clone()),
        Kind::Str | Kind::Path => match v {
            Value::Array(_) | Value::Object(_) => Err(fail(
                "str",
                format!("'{}' cannot be converted to a str", py_str(v)),
            )),
            _ => Ok(Value::String(py_str(v))),
        },
        Kind::Bool => to_bool(v).map(Value::Bool).ok_or_else(|| {
            fail(
                "bool",
                format!(
                    "The value '{}' is not a valid boolean.  Valid booleans include: 'yes', 'on', 'true', '1', 'no', 'off', 'false', '0'",
                    py_str(v)
                ),
            )
        }),
        Kind::Int => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| fail("int", format!("invalid literal for int() with base 10: '{s}'"))),
            _ => Err(fail("int", format!("'{}' cannot be converted to an int", py_str(v)))),
        },
        Kind::List => match v {
            Value::Array(items) => Ok(Value::Array(
                items.iter().map(|i| Value::String(py_str(i))).collect(),
            )),
            Value::String(s) => Ok(Value::Array(
                s.split(',').map(|p| Value::String(p.to_string())).collect(),
            )),
            Value::Number(_) | Value::Bool(_) => Ok(Value::Array(vec![Value::String(py_str(v))])),
            _ => Err(fail("list", format!("'{}' cannot be converted to a list", py_str(v)))),
        },
    }
}

/// Check and coerce `args` against `spec` like `AnsibleModule` does. All problems are reported
/// at once, joined with `; `.
pub fn parse(module: &str, spec: &[Param], args: &Args) -> Result<Params, OpError> {
    let mut errors = Vec::new();
    let mut unknown = Vec::new();
    let mut out = Params::default();
    for (key, value) in args {
        let Some(p) = spec
            .iter()
            .find(|p| p.name == key || p.aliases.contains(&key.as_str()))
        else {
            unknown.push(key.clone());
            continue;
        };
        if value.is_null() || out.values.contains_key(p.name) {
            continue;
        }
        match coerce(p.name, p.kind, value) {
            Ok(v) => {
                if !p.choices.is_empty() {
                    let s = py_str(&v);
                    if !p.choices.contains(&s.as_str()) {
                        errors.push(format!(
                            "value of {} must be one of: {}, got: {s}",
                            p.name,
                            p.choices.join(", ")
                        ));
                        continue;
                    }
                }
                out.values.insert(p.name, v);
            }
            Err(e) => errors.push(e),
        }
    }
    if !unknown.is_empty() {
        let mut supported: Vec<&str> = spec
            .iter()
            .flat_map(|p| std::iter::once(p.name).chain(p.aliases.iter().copied()))
            .filter(|n| !n.starts_with('_'))
            .collect();
        supported.sort_unstable();
        unknown.sort();
        errors.insert(
            0,
            format!(
                "Unsupported parameters for ({module}) module: {}. Supported parameters include: {}.",
                unknown.join(", "),
                supported.join(", ")
            ),
        );
    }
    let mut missing: Vec<&str> = spec
        .iter()
        .filter(|p| p.required && !out.values.contains_key(p.name))
        .map(|p| p.name)
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        errors.push(format!(
            "missing required arguments: {}",
            missing.join(", ")
        ));
    }
    for name in ["seuser", "serole", "setype", "selevel", "attributes"] {
        if out.values.contains_key(name) && spec.iter().any(|p| p.name == name) {
            errors.push(format!(
                "{name}: SELinux contexts and file attributes are not supported by provisioner"
            ));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(OpError::new(errors.join("; ")))
    }
}

impl Params {
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(Value::as_str)
    }
    pub fn str_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.str(name).unwrap_or(default)
    }
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        self.values
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.values.get(name).and_then(Value::as_i64)
    }
    pub fn list(&self, name: &str) -> Vec<String> {
        match self.values.get(name) {
            Some(Value::Array(a)) => a.iter().map(py_str).collect(),
            _ => Vec::new(),
        }
    }
    /// Set a value (e.g. a default computed by the module).
    pub fn set(&mut self, name: &'static str, v: Value) {
        self.values.insert(name, v);
    }
    /// Unset a value.
    pub fn remove(&mut self, name: &str) {
        self.values.remove(name);
    }
    /// Fail with Ansible's message when more than one of `names` is set.
    pub fn mutually_exclusive(&self, names: &[&str]) -> Result<(), OpError> {
        let set: Vec<&str> = names.iter().copied().filter(|n| self.has(n)).collect();
        if set.len() > 1 {
            return Err(OpError::new(format!(
                "parameters are mutually exclusive: {}",
                names.join("|")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: [Param; 5] = [
        Param::new("path", Kind::Path).aliases(&["dest"]).required(),
        Param::new("create", Kind::Bool),
        Param::new("state", Kind::Str).choices(&["present", "absent"]),
        Param::new("n", Kind::Int),
        Param::new("l", Kind::List),
    ];

    fn args(v: Value) -> Args {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn coerces_like_ansible() {
        let p = parse(
            "x",
            &SPEC,
            &args(json!({"dest": 42, "create": "yes", "n": "7", "l": "a,b"})),
        )
        .unwrap();
        assert_eq!(p.str("path"), Some("42"));
        assert!(p.bool_or("create", false));
        assert_eq!(p.int("n"), Some(7));
        assert_eq!(p.list("l"), vec!["a", "b"]);
        let p = parse("x", &SPEC, &args(json!({"path": true, "create": 0}))).unwrap();
        assert_eq!(p.str("path"), Some("True"));
        assert!(!p.bool_or("create", true));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = parse(
            "x",
            &SPEC,
            &args(json!({"bogus": 1, "create": "maybe", "state": "gone"})),
        )
        .unwrap_err()
        .0;
        assert!(e.starts_with("Unsupported parameters for (x) module: bogus. Supported parameters include: create, dest, l, n, path, state."), "{e}");
        assert!(e.contains("unable to convert to bool: The value 'maybe' is not a valid boolean"));
        assert!(e.contains("value of state must be one of: present, absent, got: gone"));
        assert!(e.ends_with("missing required arguments: path"));
    }
}
