//! Ansible's filters, tests and lookups, over minijinja values.

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use sha1::Digest as _;
use sha2::Digest as _;

use super::pyfmt;
use super::SecretProvider;

type R = Result<Value, Error>;

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn text(v: &Value) -> String {
    pyfmt::to_text(v)
}

/// Strings from the filters Ansible marks as text (`NativeJinjaText`): never re-parsed.
fn native_text(s: String) -> Value {
    Value::from_safe_string(s)
}

pub(crate) fn register(
    env: &mut Environment<'static>,
    base_dir: Arc<Path>,
    secrets: Option<Arc<dyn SecretProvider>>,
) {
    env.add_filter("bool", bool_filter);
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("mandatory", mandatory);
    env.add_filter("join", join);
    env.add_filter("to_json", to_json);
    env.add_filter("to_nice_json", to_nice_json);
    env.add_filter("from_json", from_json);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_nice_yaml", to_nice_yaml);
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("regex_escape", regex_escape);
    env.add_filter("b64encode", |s: Value| -> R {
        Ok(Value::from(
            base64::engine::general_purpose::STANDARD.encode(text(&s)),
        ))
    });
    env.add_filter("b64decode", |s: Value| -> R {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text(&s).trim())
            .map_err(|e| err(format!("b64decode: {e}")))?;
        Ok(Value::from(String::from_utf8_lossy(&bytes).into_owned()))
    });
    env.add_filter("basename", |s: Value| -> R {
        let s = text(&s);
        Ok(Value::from(match s.rfind('/') {
            Some(i) => s[i + 1..].to_string(),
            None => s,
        }))
    });
    env.add_filter("dirname", |s: Value| -> R {
        let s = text(&s);
        Ok(Value::from(match s.rfind('/') {
            Some(i) => {
                let head = &s[..=i];
                let trimmed = head.trim_end_matches('/');
                if trimmed.is_empty() {
                    head.to_string()
                } else {
                    trimmed.to_string()
                }
            }
            None => String::new(),
        }))
    });
    env.add_filter("int", int_filter);
    env.add_filter("float", float_filter);
    env.add_filter("string", |v: Value| -> R { Ok(native_text(text(&v))) });
    env.add_filter("unique", |v: Value| -> R {
        Ok(Value::from(unique(items(&v)?)))
    });
    env.add_filter("union", |a: Value, b: Value| -> R {
        let mut all = items(&a)?;
        all.extend(items(&b)?);
        Ok(Value::from(unique(all)))
    });
    env.add_filter("intersect", |a: Value, b: Value| -> R {
        let b = items(&b)?;
        Ok(Value::from(unique(
            items(&a)?.into_iter().filter(|x| b.contains(x)).collect(),
        )))
    });
    env.add_filter("difference", |a: Value, b: Value| -> R {
        let b = items(&b)?;
        Ok(Value::from(unique(
            items(&a)?.into_iter().filter(|x| !b.contains(x)).collect(),
        )))
    });
    env.add_filter("symmetric_difference", |a: Value, b: Value| -> R {
        let a = items(&a)?;
        let b = items(&b)?;
        let mut all: Vec<Value> = a.iter().filter(|x| !b.contains(x)).cloned().collect();
        all.extend(b.iter().filter(|x| !a.contains(x)).cloned());
        Ok(Value::from(unique(all)))
    });
    env.add_filter("flatten", flatten);
    env.add_filter("dict2items", dict2items);
    env.add_filter("items2dict", items2dict);
    env.add_filter("combine", combine);
    env.add_filter("hash", hash);
    env.add_filter("checksum", |v: Value| hash(v, Some("sha1".into())));
    env.add_filter("quote", |v: Value| -> R {
        Ok(Value::from(shlex_quote(&text(&v))))
    });
    env.add_filter("ternary", ternary);
    env.add_filter("zip", |a: Value, rest: Rest<Value>| -> R {
        let mut lists = vec![items(&a)?];
        for r in rest.0.iter() {
            lists.push(items(r)?);
        }
        let n = lists.iter().map(Vec::len).min().unwrap_or(0);
        Ok(Value::from(
            (0..n)
                .map(|i| Value::from(lists.iter().map(|l| l[i].clone()).collect::<Vec<_>>()))
                .collect::<Vec<_>>(),
        ))
    });
    env.add_filter("extract", extract);
    env.add_filter("type_debug", |v: Value| -> R {
        Ok(Value::from(match v.kind() {
            ValueKind::None => "NoneType",
            ValueKind::Bool => "bool",
            ValueKind::Number if v.is_integer() => "int",
            ValueKind::Number => "float",
            ValueKind::String if v.is_safe() => "NativeJinjaText",
            ValueKind::String => "str",
            ValueKind::Map => "dict",
            _ => "list",
        }))
    });
    env.add_filter("splitext", |v: Value| -> R {
        let s = text(&v);
        let base_start = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        let base = &s[base_start..];
        let dot = base.trim_start_matches('.');
        let lead = base.len() - dot.len();
        match dot.rfind('.') {
            Some(i) => {
                let at = base_start + lead + i;
                Ok(Value::from(vec![
                    Value::from(&s[..at]),
                    Value::from(&s[at..]),
                ]))
            }
            None => Ok(Value::from(vec![Value::from(s.as_str()), Value::from("")])),
        }
    });

    // tests
    env.add_test("succeeded", |v: Value| -> Result<bool, Error> {
        Ok(!result_flag(&v, "failed", "succeeded")?)
    });
    env.add_test("success", |v: Value| -> Result<bool, Error> {
        Ok(!result_flag(&v, "failed", "success")?)
    });
    env.add_test("failed", |v: Value| result_flag(&v, "failed", "failed"));
    env.add_test("failure", |v: Value| result_flag(&v, "failed", "failure"));
    env.add_test("changed", changed);
    env.add_test("change", changed);
    env.add_test("skipped", |v: Value| result_flag(&v, "skipped", "skipped"));
    env.add_test("skip", |v: Value| result_flag(&v, "skipped", "skip"));
    env.add_test("match", |v: Value, p: String, kw: Kwargs| {
        regex_test(v, p, kw, "match")
    });
    env.add_test("search", |v: Value, p: String, kw: Kwargs| {
        regex_test(v, p, kw, "search")
    });
    env.add_test("regex", |v: Value, p: String, kw: Kwargs| {
        let mt: Option<String> = kw.get("match_type")?;
        let mt = mt.unwrap_or_else(|| "search".into());
        regex_test(v, p, kw, &mt)
    });
    // minijinja's divisibleby computes `a % b` unchecked (a panic for 0, and for i128::MIN
    // by -1); Jinja raises ZeroDivisionError for 0.
    env.add_test("divisibleby", divisibleby);
    env.add_test("contains", |seq: Value, x: Value| -> Result<bool, Error> {
        Ok(items(&seq)?.contains(&x))
    });
    env.add_test("subset", |a: Value, b: Value| -> Result<bool, Error> {
        let b = items(&b)?;
        Ok(items(&a)?.iter().all(|x| b.contains(x)))
    });
    env.add_test("superset", |a: Value, b: Value| -> Result<bool, Error> {
        let a = items(&a)?;
        Ok(items(&b)?.iter().all(|x| a.contains(x)))
    });
    env.add_test(
        "version",
        |v: Value, other: Value, rest: Rest<Value>, kw: Kwargs| {
            version_filter(v, other, rest, kw).map(|r| r.is_true())
        },
    );
    env.add_test(
        "version_compare",
        |v: Value, other: Value, rest: Rest<Value>, kw: Kwargs| {
            version_filter(v, other, rest, kw).map(|r| r.is_true())
        },
    );

    // Python's dict() as Ansible's Jinja has it: dict(), dict(mapping), dict(pairs) (e.g.
    // `dict(keys | zip(values))`), plus keyword arguments. minijinja's builtin only takes keywords.
    env.add_function("dict", |args: Rest<Value>, kw: Kwargs| -> R {
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        match args.0.as_slice() {
            [] => {}
            [m] if m.kind() == ValueKind::Map => pairs = map_pairs(m)?,
            [seq] => {
                for item in seq.try_iter()? {
                    let kv: Vec<Value> = match item.kind() {
                        ValueKind::Seq | ValueKind::Iterable => item.try_iter()?.collect(),
                        _ => Vec::new(),
                    };
                    match <[Value; 2]>::try_from(kv) {
                        Ok([k, v]) => pairs.push((k, v)),
                        Err(kv) => {
                            return Err(err(format!(
                                "dictionary update sequence element has length {}; 2 is required",
                                kv.len()
                            )))
                        }
                    }
                }
            }
            more => {
                return Err(err(format!(
                    "dict expected at most 1 argument, got {}",
                    more.len()
                )))
            }
        }
        for k in kw.args() {
            pairs.push((Value::from(k), kw.get::<Value>(k)?));
        }
        // Python keeps the first position of a repeated key and the last value.
        let mut merged: Vec<(Value, Value)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match merged.iter_mut().find(|(mk, _)| *mk == k) {
                Some(slot) => slot.1 = v,
                None => merged.push((k, v)),
            }
        }
        Ok(Value::from_pairs(merged))
    });

    // lookups
    let dir = base_dir.clone();
    let sec = secrets.clone();
    env.add_function(
        "lookup",
        move |state: &State, name: String, terms: Rest<Value>, kw: Kwargs| {
            let found = match secret_lookup(state, sec.as_deref(), &name, &terms.0, &kw) {
                Some(r) => r?,
                None => run_lookup(state, &dir, &name, &terms.0, &kw)?,
            };
            let wantlist: Option<bool> = kw.get("wantlist")?;
            if wantlist.unwrap_or(false) {
                return Ok(Value::from(found));
            }
            if found.len() == 1 && found[0].is_safe() {
                return Ok(found[0].clone());
            }
            Ok(Value::from(
                found.iter().map(text).collect::<Vec<_>>().join(","),
            ))
        },
    );
    for name in ["query", "q"] {
        let dir = base_dir.clone();
        let sec = secrets.clone();
        env.add_function(
            name,
            move |state: &State, name: String, terms: Rest<Value>, kw: Kwargs| {
                let found = match secret_lookup(state, sec.as_deref(), &name, &terms.0, &kw) {
                    Some(r) => r?,
                    None => run_lookup(state, &dir, &name, &terms.0, &kw)?,
                };
                Ok(Value::from(found))
            },
        );
    }
    env.set_unknown_method_callback(python_methods);
}

/// Jinja's `bool` filter as Ansible 2.14 defines it (`to_bool`): `yes`, `on`, `1`, `true` (any
/// case) and 1 are true, everything else false. Not Ansible's `boolean()` (that is
/// `cluster_core::boolean`, used everywhere else): the filter must render as ansible-playbook's.
fn bool_filter(v: Value) -> R {
    Ok(match v.kind() {
        ValueKind::None | ValueKind::Bool => v,
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default().to_lowercase();
            Value::from(matches!(s.as_str(), "yes" | "on" | "1" | "true"))
        }
        ValueKind::Number => Value::from(
            v.is_integer() && i64::try_from(v.clone()).ok() == Some(1)
                || !v.is_integer() && f64::try_from(v.clone()).ok() == Some(1.0),
        ),
        _ => Value::from(false),
    })
}

fn default(v: Value, other: Option<Value>, boolean: Option<bool>) -> R {
    let use_default = if boolean.unwrap_or(false) {
        v.is_undefined() || !python_truth(&v)
    } else {
        v.is_undefined()
    };
    Ok(if use_default {
        other.unwrap_or_else(|| Value::from(""))
    } else {
        v
    })
}

fn python_truth(v: &Value) -> bool {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => false,
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => v.len().unwrap_or(0) > 0,
        _ => v.is_true(),
    }
}

fn mandatory(v: Value, msg: Option<String>) -> R {
    if v.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            msg.unwrap_or_else(|| "Mandatory variable not defined.".into()),
        ));
    }
    Ok(v)
}

fn items(v: &Value) -> Result<Vec<Value>, Error> {
    match v.kind() {
        ValueKind::Undefined => Err(Error::new(ErrorKind::UndefinedError, "undefined value")),
        ValueKind::String => Ok(v
            .as_str()
            .unwrap_or_default()
            .chars()
            .map(Value::from)
            .collect()),
        _ => Ok(v.try_iter()?.collect()),
    }
}

fn unique(v: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn join(v: Value, sep: Option<String>) -> R {
    let sep = sep.unwrap_or_default();
    Ok(Value::from(
        items(&v)?.iter().map(text).collect::<Vec<_>>().join(&sep),
    ))
}

// ---------------------------------------------------------------- JSON (Python's json.dumps)

fn json_str(s: &str, out: &mut String, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct JsonOpts {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn dump_json(v: &Value, o: &JsonOpts, level: usize, out: &mut String) -> Result<(), Error> {
    let (item_sep, nl) = match o.indent {
        Some(_) => (",", true),
        None => (", ", false),
    };
    let pad = |out: &mut String, l: usize| {
        if let Some(n) = o.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n.saturating_mul(l)));
        }
    };
    match v.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(ErrorKind::UndefinedError, "undefined value"))
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string())
            } else {
                let f = f64::try_from(v.clone())?;
                out.push_str(&if f.is_nan() {
                    "NaN".into()
                } else if f.is_infinite() {
                    if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
                } else {
                    pyfmt::float_repr(f)
                })
            }
        }
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), out, o.ensure_ascii),
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                keys.sort_by_key(text);
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                if nl {
                    pad(out, level + 1);
                }
                let ks = match k.kind() {
                    ValueKind::Bool => if k.is_true() { "true" } else { "false" }.to_string(),
                    ValueKind::None => "null".into(),
                    _ => text(k),
                };
                json_str(&ks, out, o.ensure_ascii);
                out.push_str(": ");
                dump_json(&v.get_item(k)?, o, level + 1, out)?;
            }
            if nl {
                pad(out, level);
            }
            out.push('}');
        }
        _ => {
            let all: Vec<Value> = v.try_iter()?.collect();
            if all.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in all.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                if nl {
                    pad(out, level + 1);
                }
                dump_json(x, o, level + 1, out)?;
            }
            if nl {
                pad(out, level);
            }
            out.push(']');
        }
    }
    Ok(())
}

fn to_json(v: Value, kw: Kwargs) -> R {
    let indent: Option<usize> = kw.get("indent")?;
    let indent = indent
        .map(|n| super::limits::width("to_json", n))
        .transpose()?;
    let sort_keys: Option<bool> = kw.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kw.get("ensure_ascii")?;
    let mut out = String::new();
    dump_json(
        &v,
        &JsonOpts {
            indent,
            sort_keys: sort_keys.unwrap_or(false),
            ensure_ascii: ensure_ascii.unwrap_or(true),
        },
        0,
        &mut out,
    )?;
    Ok(native_text(out))
}

fn to_nice_json(v: Value, indent: Option<usize>, kw: Kwargs) -> R {
    let kw_indent: Option<usize> = kw.get("indent")?;
    let sort_keys: Option<bool> = kw.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kw.get("ensure_ascii")?;
    let mut out = String::new();
    dump_json(
        &v,
        &JsonOpts {
            indent: Some(super::limits::width(
                "to_nice_json",
                kw_indent.or(indent).unwrap_or(4),
            )?),
            sort_keys: sort_keys.unwrap_or(true),
            ensure_ascii: ensure_ascii.unwrap_or(true),
        },
        0,
        &mut out,
    )?;
    Ok(native_text(out))
}

fn from_json(v: Value) -> R {
    let s = text(&v);
    let j: serde_json::Value =
        serde_json::from_str(&s).map_err(|e| err(format!("from_json: {e}")))?;
    Ok(super::json_to_value(&j))
}

// ---------------------------------------------------------------- YAML (PyYAML's dump, simple)

fn yaml_plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    if crate::yaml::load_str(s, "<to_yaml>")
        .ok()
        .and_then(|d| d.into_iter().next())
        .and_then(|n| n.as_str().map(|x| x == s))
        != Some(true)
    {
        return false;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    !(s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.contains('\n'))
        && s.chars().all(|c| !c.is_control())
}

fn yaml_scalar(v: &Value) -> String {
    match v.kind() {
        ValueKind::None | ValueKind::Undefined => "null".into(),
        ValueKind::Bool => if v.is_true() { "true" } else { "false" }.into(),
        ValueKind::Number => {
            if v.is_integer() {
                v.to_string()
            } else {
                f64::try_from(v.clone())
                    .map(pyfmt::float_repr)
                    .unwrap_or_default()
            }
        }
        _ => {
            let s = text(v);
            if yaml_plain_ok(&s) {
                s
            } else if !s.contains('\n') && s.chars().all(|c| !c.is_control()) {
                format!("'{}'", s.replace('\'', "''"))
            } else {
                let mut out = String::new();
                json_str(&s, &mut out, false);
                out
            }
        }
    }
}

/// PyYAML's dump sorts mapping keys.
fn sorted_keys(v: &Value) -> Result<Vec<Value>, Error> {
    let mut keys: Vec<Value> = v.try_iter()?.collect();
    keys.sort_by_key(text);
    Ok(keys)
}

fn is_collection(v: &Value) -> bool {
    matches!(
        v.kind(),
        ValueKind::Map | ValueKind::Seq | ValueKind::Iterable
    )
}

fn yaml_flow(v: &Value) -> Result<String, Error> {
    Ok(match v.kind() {
        ValueKind::Map => {
            let mut parts = Vec::new();
            for k in sorted_keys(v)? {
                parts.push(format!(
                    "{}: {}",
                    yaml_scalar(&k),
                    yaml_flow(&v.get_item(&k)?)?
                ));
            }
            format!("{{{}}}", parts.join(", "))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let parts: Result<Vec<_>, _> = v.try_iter()?.map(|x| yaml_flow(&x)).collect();
            format!("[{}]", parts?.join(", "))
        }
        _ => yaml_scalar(v),
    })
}

/// Block-style YAML. `flow_leaves`: collections of scalars go in flow style (PyYAML's
/// `default_flow_style=None`).
fn yaml_block(
    v: &Value,
    indent: usize,
    level: usize,
    flow_leaves: bool,
    out: &mut String,
) -> Result<(), Error> {
    let pad = " ".repeat(indent.saturating_mul(level));
    let leaf = |x: &Value| -> Result<bool, Error> {
        Ok(!is_collection(x)
            || x.len() == Some(0)
            || (flow_leaves
                && !x.try_iter()?.any(|i| {
                    let item = if x.kind() == ValueKind::Map {
                        x.get_item(&i).unwrap_or_default()
                    } else {
                        i
                    };
                    is_collection(&item)
                })))
    };
    match v.kind() {
        ValueKind::Map => {
            for k in sorted_keys(v)? {
                let val = v.get_item(&k)?;
                if leaf(&val)? {
                    let s = if is_collection(&val) {
                        yaml_flow(&val)?
                    } else {
                        yaml_scalar(&val)
                    };
                    out.push_str(&format!("{pad}{}: {s}\n", yaml_scalar(&k)));
                } else {
                    out.push_str(&format!("{pad}{}:\n", yaml_scalar(&k)));
                    let sub = if val.kind() == ValueKind::Map {
                        level + 1
                    } else {
                        level
                    };
                    yaml_block(&val, indent, sub, flow_leaves, out)?;
                }
            }
        }
        _ => {
            for x in v.try_iter()? {
                if leaf(&x)? {
                    let s = if is_collection(&x) {
                        yaml_flow(&x)?
                    } else {
                        yaml_scalar(&x)
                    };
                    out.push_str(&format!("{pad}- {s}\n"));
                } else {
                    let mut inner = String::new();
                    yaml_block(&x, indent, 0, flow_leaves, &mut inner)?;
                    let dash = format!("{pad}-{}", " ".repeat(indent.saturating_sub(1).max(1)));
                    let cont = " ".repeat(pad.len() + indent.max(2));
                    for (i, line) in inner.lines().enumerate() {
                        if i == 0 {
                            out.push_str(&format!("{dash}{line}\n"));
                        } else {
                            out.push_str(&format!("{cont}{line}\n"));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn dump_yaml(v: &Value, indent: usize, flow_leaves: bool) -> Result<String, Error> {
    if !is_collection(v) {
        let s = yaml_scalar(v);
        return Ok(
            if yaml_plain_ok(&s) || !matches!(v.kind(), ValueKind::String) {
                format!("{s}\n...\n")
            } else {
                format!("{s}\n")
            },
        );
    }
    if v.len() == Some(0)
        || (flow_leaves
            && !v.try_iter()?.any(|i| {
                let item = if v.kind() == ValueKind::Map {
                    v.get_item(&i).unwrap_or_default()
                } else {
                    i
                };
                is_collection(&item)
            }))
    {
        return Ok(format!("{}\n", yaml_flow(v)?));
    }
    let mut out = String::new();
    yaml_block(v, indent, 0, flow_leaves, &mut out)?;
    Ok(out)
}

fn to_yaml(v: Value, kw: Kwargs) -> R {
    let indent: Option<usize> = kw.get("indent")?;
    let flow: Option<Value> = kw.get("default_flow_style")?;
    let flow_leaves = flow.map(|f| f.is_none()).unwrap_or(true);
    Ok(native_text(dump_yaml(
        &v,
        super::limits::width("to_yaml", indent.unwrap_or(2))?,
        flow_leaves,
    )?))
}

fn to_nice_yaml(v: Value, indent: Option<usize>, kw: Kwargs) -> R {
    let kw_indent: Option<usize> = kw.get("indent")?;
    Ok(native_text(dump_yaml(
        &v,
        super::limits::width("to_nice_yaml", kw_indent.or(indent).unwrap_or(4))?,
        false,
    )?))
}

// ---------------------------------------------------------------- regex

fn build_regex(pattern: &str, ignorecase: bool, multiline: bool) -> Result<regex::Regex, Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(ignorecase)
        .multi_line(multiline)
        .build()
        .map_err(|e| err(format!("invalid regular expression {pattern:?}: {e}")))
}

fn flags(kw: &Kwargs) -> Result<(bool, bool), Error> {
    let i: Option<bool> = kw.get("ignorecase")?;
    let m: Option<bool> = kw.get("multiline")?;
    Ok((i.unwrap_or(false), m.unwrap_or(false)))
}

/// Python's replacement syntax (`\1`, `\g<1>`, `\g<name>`) in Rust's (`${1}`).
fn python_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                        if n.len() == 2 {
                            break;
                        }
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|&c| c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn regex_replace(v: Value, pattern: Option<String>, replacement: Option<String>, kw: Kwargs) -> R {
    let (i, m) = flags(&kw)?;
    let count: Option<usize> = kw.get("count")?;
    let re = build_regex(&pattern.unwrap_or_default(), i, m)?;
    let rep = python_replacement(&replacement.unwrap_or_default());
    let s = text(&v);
    Ok(Value::from(
        re.replacen(&s, count.unwrap_or(0), rep.as_str())
            .into_owned(),
    ))
}

fn regex_search(v: Value, pattern: String, groups: Rest<String>, kw: Kwargs) -> R {
    let (i, m) = flags(&kw)?;
    let re = build_regex(&pattern, i, m)?;
    let s = text(&v);
    let Some(caps) = re.captures(&s) else {
        return Ok(Value::from(()));
    };
    if groups.0.is_empty() {
        return Ok(Value::from(caps.get(0).map(|m| m.as_str()).unwrap_or("")));
    }
    let mut out = Vec::new();
    for g in &groups.0 {
        let g = g.trim_start_matches('\\');
        let m = if let Some(name) = g.strip_prefix("g<").and_then(|x| x.strip_suffix('>')) {
            caps.name(name)
        } else {
            g.parse::<usize>().ok().and_then(|n| caps.get(n))
        };
        out.push(
            m.map(|m| Value::from(m.as_str()))
                .unwrap_or(Value::from(())),
        );
    }
    Ok(Value::from(out))
}

fn regex_findall(v: Value, pattern: String, kw: Kwargs) -> R {
    let (i, m) = flags(&kw)?;
    let re = build_regex(&pattern, i, m)?;
    let s = text(&v);
    let groups = re.captures_len() - 1;
    let mut out = Vec::new();
    for caps in re.captures_iter(&s) {
        let g = |n: usize| Value::from(caps.get(n).map(|m| m.as_str()).unwrap_or(""));
        out.push(match groups {
            0 => g(0),
            1 => g(1),
            n => Value::from((1..=n).map(g).collect::<Vec<_>>()),
        });
    }
    Ok(Value::from(out))
}

fn regex_escape(v: Value) -> R {
    // Python's re.escape: escape everything but [A-Za-z0-9_] and non-ASCII
    let s = text(&v);
    let mut out = String::new();
    for c in s.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(Value::from(out))
}

fn regex_test(v: Value, p: String, kw: Kwargs, how: &str) -> Result<bool, Error> {
    let (i, m) = flags(&kw)?;
    let s = text(&v);
    let re = build_regex(&p, i, m)?;
    Ok(match how {
        "match" => {
            re.find(&s).is_some_and(|x| x.start() == 0)
                || build_regex(&format!("^(?:{p})"), i, m)?.is_match(&s)
        }
        "fullmatch" => build_regex(&format!("^(?:{p})$"), i, false)?.is_match(&s),
        _ => re.is_match(&s),
    })
}

// ---------------------------------------------------------------- numbers

fn divisibleby(v: &Value, by: &Value) -> Result<bool, Error> {
    let int = |x: &Value| match x.kind() {
        ValueKind::Bool => Some(i128::from(x.is_true())),
        ValueKind::Number if x.is_integer() => i128::try_from(x.clone()).ok(),
        _ => None,
    };
    let float = |x: &Value| match x.kind() {
        ValueKind::Bool | ValueKind::Number => f64::try_from(x.clone()).ok(),
        _ => None,
    };
    let zero = || err("divisibleby(0): integer division or modulo by zero");
    if let (Some(a), Some(b)) = (int(v), int(by)) {
        if b == 0 {
            return Err(zero());
        }
        // Only i128::MIN % -1 has no checked result, and it is 0.
        return Ok(a.checked_rem(b).unwrap_or(0) == 0);
    }
    match (float(v), float(by)) {
        (Some(a), Some(b)) => {
            if b == 0.0 {
                return Err(zero());
            }
            Ok(a % b == 0.0)
        }
        _ => Ok(false),
    }
}

fn int_filter(v: Value, default: Option<Value>, base: Option<u32>, kw: Kwargs) -> R {
    let kw_default: Option<Value> = kw.get("default")?;
    let kw_base: Option<u32> = kw.get("base")?;
    let default = kw_default.or(default).unwrap_or(Value::from(0));
    let base = kw_base.or(base).unwrap_or(10);
    Ok(match v.kind() {
        ValueKind::Bool => Value::from(i64::from(v.is_true())),
        ValueKind::Number => {
            if v.is_integer() {
                v
            } else {
                Value::from(f64::try_from(v)?.trunc() as i64)
            }
        }
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default().trim().replace('_', "");
            let lower = s.to_ascii_lowercase();
            // Python's int(s, base); base 0 reads the prefix. Any other base is Python's
            // ValueError (from_str_radix would panic on it).
            let (radix, digits) = match base {
                0 => [("0x", 16), ("0o", 8), ("0b", 2)]
                    .into_iter()
                    .find_map(|(p, r)| Some((r, lower.strip_prefix(p)?)))
                    .unwrap_or((10, lower.as_str())),
                16 => (16, lower.trim_start_matches("0x")),
                8 => (8, lower.trim_start_matches("0o")),
                2 => (2, lower.trim_start_matches("0b")),
                b => (b, lower.as_str()),
            };
            let parsed = (2..=36)
                .contains(&radix)
                .then(|| i64::from_str_radix(digits, radix).ok())
                .flatten();
            // Jinja's do_int falls back to int(float(s)), then to the default.
            match parsed {
                Some(i) => Value::from(i),
                None => match s.parse::<f64>() {
                    Ok(f) if f.is_finite() => Value::from(f.trunc() as i64),
                    _ => default,
                },
            }
        }
        _ => default,
    })
}

fn float_filter(v: Value, default: Option<Value>) -> R {
    let default = default.unwrap_or(Value::from(0.0));
    Ok(match v.kind() {
        ValueKind::Bool => Value::from(if v.is_true() { 1.0 } else { 0.0 }),
        ValueKind::Number => Value::from(f64::try_from(v)?),
        ValueKind::String => v
            .as_str()
            .unwrap_or_default()
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or(default),
        _ => default,
    })
}

// ---------------------------------------------------------------- collections

fn flatten(v: Value, levels: Option<Value>, kw: Kwargs) -> R {
    let levels: Option<i64> = match levels {
        Some(l) if !l.is_none() => Some(i64::try_from(l)?),
        _ => kw.get::<Option<i64>>("levels")?,
    };
    let skip_nulls: Option<bool> = kw.get("skip_nulls")?;
    let skip_nulls = skip_nulls.unwrap_or(true);
    fn go(
        v: &Value,
        levels: Option<i64>,
        skip_nulls: bool,
        out: &mut Vec<Value>,
    ) -> Result<(), Error> {
        for x in items(v)? {
            if skip_nulls && x.is_none() {
                continue;
            }
            if matches!(x.kind(), ValueKind::Seq | ValueKind::Iterable) && levels != Some(0) {
                go(&x, levels.map(|l| l - 1), skip_nulls, out)?;
            } else {
                out.push(x);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(&v, levels, skip_nulls, &mut out)?;
    Ok(Value::from(out))
}

fn dict2items(v: Value, kw: Kwargs) -> R {
    if v.kind() != ValueKind::Map {
        return Err(err(format!(
            "dict2items requires a dictionary, got {}",
            v.kind()
        )));
    }
    let kn: Option<String> = kw.get("key_name")?;
    let vn: Option<String> = kw.get("value_name")?;
    let kn = kn.unwrap_or_else(|| "key".into());
    let vn = vn.unwrap_or_else(|| "value".into());
    let mut out = Vec::new();
    for k in v.try_iter()? {
        let val = v.get_item(&k)?;
        out.push(Value::from_pairs(vec![
            (Value::from(kn.as_str()), k),
            (Value::from(vn.as_str()), val),
        ]));
    }
    Ok(Value::from(out))
}

fn items2dict(v: Value, kw: Kwargs) -> R {
    let kn: Option<String> = kw.get("key_name")?;
    let vn: Option<String> = kw.get("value_name")?;
    let kn = Value::from(kn.unwrap_or_else(|| "key".into()));
    let vn = Value::from(vn.unwrap_or_else(|| "value".into()));
    let mut pairs = Vec::new();
    for item in items(&v)? {
        let k = item.get_item(&kn)?;
        let val = item.get_item(&vn)?;
        if k.is_undefined() || val.is_undefined() {
            return Err(err(format!(
                "items2dict requires each item to have '{kn}' and '{vn}' keys"
            )));
        }
        pairs.push((k, val));
    }
    Ok(Value::from_pairs(pairs))
}

fn map_pairs(v: &Value) -> Result<Vec<(Value, Value)>, Error> {
    if v.kind() != ValueKind::Map {
        return Err(err(format!(
            "combine expects dictionaries, got {}",
            v.kind()
        )));
    }
    v.try_iter()?
        .map(|k| Ok((k.clone(), v.get_item(&k)?)))
        .collect()
}

fn merge(a: &Value, b: &Value, recursive: bool, list_merge: &str) -> R {
    let mut out = map_pairs(a)?;
    for (k, bv) in map_pairs(b)? {
        match out.iter_mut().find(|(ok, _)| *ok == k) {
            Some((_, av)) => {
                let both_maps = av.kind() == ValueKind::Map && bv.kind() == ValueKind::Map;
                let both_lists = av.kind() == ValueKind::Seq && bv.kind() == ValueKind::Seq;
                *av = if recursive && both_maps {
                    merge(av, &bv, recursive, list_merge)?
                } else if both_lists && list_merge != "replace" {
                    let x = items(av)?;
                    let y = items(&bv)?;
                    Value::from(match list_merge {
                        "keep" => x,
                        "append" => x.into_iter().chain(y).collect(),
                        "prepend" => y.into_iter().chain(x).collect(),
                        "append_rp" => {
                            let mut r: Vec<Value> =
                                x.into_iter().filter(|i| !y.contains(i)).collect();
                            r.extend(y);
                            r
                        }
                        "prepend_rp" => {
                            let mut r = y.clone();
                            r.extend(x.into_iter().filter(|i| !y.contains(i)));
                            r
                        }
                        other => return Err(err(format!("combine: unknown list_merge {other:?}"))),
                    })
                } else {
                    bv
                };
            }
            None => out.push((k, bv)),
        }
    }
    Ok(Value::from_pairs(out))
}

fn combine(first: Value, rest: Rest<Value>, kw: Kwargs) -> R {
    let recursive: Option<bool> = kw.get("recursive")?;
    let list_merge: Option<String> = kw.get("list_merge")?;
    let list_merge = list_merge.unwrap_or_else(|| "replace".into());
    let mut dicts = vec![first];
    for r in rest.0 {
        if matches!(r.kind(), ValueKind::Seq) {
            dicts.extend(r.try_iter()?);
        } else {
            dicts.push(r);
        }
    }
    let mut acc = Value::from_pairs(Vec::<(Value, Value)>::new());
    for d in &dicts {
        acc = merge(&acc, d, recursive.unwrap_or(false), &list_merge)?;
    }
    Ok(acc)
}

fn hash(v: Value, kind: Option<String>) -> R {
    let data = text(&v);
    let kind = kind.unwrap_or_else(|| "sha1".into());
    let hex = match kind.as_str() {
        "sha1" => hex(&sha1::Sha1::digest(data.as_bytes())),
        "md5" => format!("{:x}", md5::compute(data.as_bytes())),
        "sha256" => hex(&sha2::Sha256::digest(data.as_bytes())),
        "sha512" => hex(&sha2::Sha512::digest(data.as_bytes())),
        "sha224" => hex(&sha2::Sha224::digest(data.as_bytes())),
        "sha384" => hex(&sha2::Sha384::digest(data.as_bytes())),
        other => return Err(err(format!("hash: unsupported hash type {other:?}"))),
    };
    Ok(Value::from(hex))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Python's `shlex.quote`.
fn shlex_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

fn ternary(v: Value, t: Value, f: Value, none_val: Option<Value>) -> R {
    if v.is_none() {
        if let Some(n) = none_val {
            return Ok(n);
        }
    }
    Ok(if python_truth(&v) { t } else { f })
}

fn extract(item: Value, container: Value, morekeys: Option<Value>) -> R {
    let mut v = container.get_item(&item)?;
    if v.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            format!("`{}` is undefined in the container of extract", text(&item)),
        ));
    }
    if let Some(keys) = morekeys {
        let keys: Vec<Value> = if keys.kind() == ValueKind::Seq {
            keys.try_iter()?.collect()
        } else {
            vec![keys]
        };
        for k in keys {
            v = v.get_item(&k)?;
        }
    }
    Ok(v)
}

// ---------------------------------------------------------------- versions (LooseVersion)

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Num(u64),
    Str(String),
}

fn loose_parts(s: &str) -> Vec<Part> {
    let re = regex::Regex::new(r"(\d+|[a-zA-Z]+|\.)");
    let Ok(re) = re else { return Vec::new() };
    re.find_iter(s)
        .map(|m| m.as_str())
        .filter(|p| *p != "." && !p.is_empty())
        .map(|p| {
            p.parse::<u64>()
                .map(Part::Num)
                .unwrap_or_else(|_| Part::Str(p.to_string()))
        })
        .collect()
}

fn loose_cmp(a: &str, b: &str) -> Result<Ordering, Error> {
    let (x, y) = (loose_parts(a), loose_parts(b));
    for (p, q) in x.iter().zip(y.iter()) {
        let o = match (p, q) {
            (Part::Num(m), Part::Num(n)) => m.cmp(n),
            (Part::Str(m), Part::Str(n)) => m.cmp(n),
            _ => {
                return Err(err(format!(
                    "Version comparison failed: '<' not supported between instances of 'int' and 'str' ({a} vs {b})"
                )))
            }
        };
        if o != Ordering::Equal {
            return Ok(o);
        }
    }
    Ok(x.len().cmp(&y.len()))
}

fn version_filter(v: Value, other: Value, rest: Rest<Value>, kw: Kwargs) -> R {
    let op: Option<String> = match rest.0.first() {
        Some(o) => Some(text(o)),
        None => kw.get("operator")?,
    };
    let _strict: Option<bool> = kw.get("strict")?;
    let _vt: Option<String> = kw.get("version_type")?;
    let op = op.unwrap_or_else(|| "eq".into());
    let a = text(&v);
    let b = text(&other);
    if a.is_empty() {
        return Err(err("Input version value cannot be empty"));
    }
    if b.is_empty() {
        return Err(err("Version parameter to compare against cannot be empty"));
    }
    let o = loose_cmp(&a, &b)?;
    let r = match op.as_str() {
        "==" | "=" | "eq" => o == Ordering::Equal,
        "<" | "lt" => o == Ordering::Less,
        "<=" | "le" => o != Ordering::Greater,
        ">" | "gt" => o == Ordering::Greater,
        ">=" | "ge" => o != Ordering::Less,
        "!=" | "<>" | "ne" => o != Ordering::Equal,
        other => return Err(err(format!("Invalid operator type ({other})"))),
    };
    Ok(Value::from(r))
}

// ---------------------------------------------------------------- tests on results

fn result_flag(v: &Value, key: &str, test: &str) -> Result<bool, Error> {
    if v.kind() != ValueKind::Map {
        return Err(err(format!("The '{test}' test expects a dictionary")));
    }
    let f = v.get_item(&Value::from(key))?;
    Ok(!f.is_undefined() && python_truth(&f))
}

fn changed(v: Value) -> Result<bool, Error> {
    if v.kind() != ValueKind::Map {
        return Err(err("The 'changed' test expects a dictionary"));
    }
    let c = v.get_item(&Value::from("changed"))?;
    if !c.is_undefined() {
        return Ok(python_truth(&c));
    }
    let results = v.get_item(&Value::from("results"))?;
    if results.kind() == ValueKind::Seq {
        for r in results.try_iter()? {
            if r.kind() == ValueKind::Map {
                let c = r.get_item(&Value::from("changed"))?;
                if !c.is_undefined() && python_truth(&c) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------- lookups

/// The `password` and `provisioner_tls` lookups, served by the engine's secrets store;
/// `None` for any other lookup. Values are text Ansible would not re-parse.
fn secret_lookup(
    state: &State,
    secrets: Option<&dyn SecretProvider>,
    name: &str,
    terms: &[Value],
    kw: &Kwargs,
) -> Option<Result<Vec<Value>, Error>> {
    let short = name.strip_prefix("ansible.builtin.").unwrap_or(name);
    if short != "password" && name != "provisioner_tls" {
        return None;
    }
    Some((|| {
        let Some(secrets) = secrets else {
            return Err(err(format!(
                "lookup plugin ({name}) needs the engine's secrets store, which this run does not have"
            )));
        };
        let _: Option<Value> = kw.get("errors")?;
        let _: Option<bool> = kw.get("wantlist")?;
        if short == "password" {
            let mut params = Vec::new();
            for k in ["length", "chars", "encrypt", "seed", "ident", "salt"] {
                let v: Option<Value> = kw.get(k)?;
                if let Some(v) = v {
                    let t = match v.kind() {
                        ValueKind::Seq => v
                            .try_iter()
                            .map(|i| i.map(|x| text(&x)).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        _ => text(&v),
                    };
                    params.push((k.to_string(), t));
                }
            }
            let mut out = Vec::new();
            for t in terms {
                let s = secrets.password(&text(t), &params).map_err(err)?;
                out.push(native_text(s.expose().to_string()));
            }
            return Ok(out);
        }
        // provisioner_tls: 'ca' | 'cert' | 'key', host=H (default: inventory_hostname)
        let host: Option<String> = kw.get("host")?;
        let mut out = Vec::new();
        for t in terms {
            let what = text(t);
            match what.as_str() {
                "ca" => out.push(native_text(secrets.tls_ca().map_err(err)?)),
                "cert" | "key" => {
                    let h = tls_host(state, host.clone())?;
                    let (cert, key) = secrets.tls_host(&h).map_err(err)?;
                    out.push(native_text(if what == "cert" {
                        cert
                    } else {
                        key.expose().to_string()
                    }));
                }
                other => {
                    return Err(err(format!(
                        "provisioner_tls: unknown item `{other}` (ca, cert or key)"
                    )))
                }
            }
        }
        Ok(out)
    })())
}

/// Who a certificate is for: the host's name, `ansible_host` and `dns_domain` (default
/// `mesos`), read from `hostvars` (or from the current host's own variables).
fn tls_host(state: &State, host: Option<String>) -> Result<crate::secrets::TlsHost, Error> {
    let current = state
        .lookup("inventory_hostname")
        .and_then(|v| v.as_str().map(str::to_string));
    let name = host.or_else(|| current.clone()).ok_or_else(|| {
        err("provisioner_tls: say which host (host=...): there is no inventory_hostname here")
    })?;
    let defined = |v: Value| -> Option<String> {
        if v.is_undefined() || v.is_none() {
            None
        } else {
            Some(text(&v)).filter(|s| !s.is_empty())
        }
    };
    let vars: Option<Value> = state
        .lookup("hostvars")
        .and_then(|hv| hv.get_item(&Value::from(name.as_str())).ok())
        .filter(|v| !v.is_undefined());
    if vars.is_none() && current.as_deref() != Some(name.as_str()) {
        return Err(err(format!("provisioner_tls: unknown host `{name}`")));
    }
    let get = |attr: &str| -> Result<Option<String>, Error> {
        match vars.as_ref() {
            Some(v) => Ok(v.get_attr(attr).ok().and_then(defined)),
            None => Ok(state.lookup(attr).and_then(defined)),
        }
    };
    let address = get("ansible_host")?.filter(|a| a != &name);
    let dns_domain = get("dns_domain")?.unwrap_or_else(|| "mesos".to_string());
    Ok(crate::secrets::TlsHost {
        name,
        address,
        dns_domain,
    })
}

fn run_lookup(
    state: &State,
    base: &Path,
    name: &str,
    terms: &[Value],
    kw: &Kwargs,
) -> Result<Vec<Value>, Error> {
    let terms: Vec<Value> = terms
        .iter()
        .flat_map(|t| {
            if t.kind() == ValueKind::Seq {
                t.try_iter()
                    .map(|i| i.collect::<Vec<_>>())
                    .unwrap_or_default()
            } else {
                vec![t.clone()]
            }
        })
        .collect();
    let _: Option<Value> = kw.get("errors")?;
    let _: Option<bool> = kw.get("wantlist")?;
    if let Some(found) = super::lookups::run(state, base, name, &terms, kw) {
        return found;
    }
    match name {
        "env" | "ansible.builtin.env" => {
            let default: Option<String> = kw.get("default")?;
            Ok(terms
                .iter()
                .map(|t| {
                    Value::from(
                        std::env::var(text(t))
                            .ok()
                            .or_else(|| default.clone())
                            .unwrap_or_default(),
                    )
                })
                .collect())
        }
        "file" | "ansible.builtin.file" => {
            let rstrip: Option<bool> = kw.get("rstrip")?;
            let lstrip: Option<bool> = kw.get("lstrip")?;
            let mut out = Vec::new();
            for t in &terms {
                let p = text(t);
                let found = super::lookups::find(state, base, "files", &p)
                    .ok_or_else(|| err(format!("could not locate file in lookup: {p}")))?;
                let mut content = std::fs::read_to_string(&found)
                    .map_err(|e| err(format!("could not read {}: {e}", found.display())))?;
                if rstrip.unwrap_or(true) {
                    content = content.trim_end().to_string();
                }
                if lstrip.unwrap_or(false) {
                    content = content.trim_start().to_string();
                }
                out.push(Value::from(content));
            }
            Ok(out)
        }
        other => Err(err(format!("lookup plugin ({other}) not supported"))),
    }
}

// ---------------------------------------------------------------- Python methods

fn python_methods(_state: &mut State, v: &Value, name: &str, args: &[Value]) -> R {
    let arg_str = |i: usize| args.get(i).map(text);
    match v.kind() {
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            Ok(match name {
                "split" | "rsplit" => {
                    let sep = args.first().filter(|a| !a.is_none()).map(text);
                    let max: Option<i64> = args.get(1).and_then(|a| i64::try_from(a.clone()).ok());
                    let parts: Vec<String> = match (&sep, max) {
                        (None, _) => s.split_whitespace().map(str::to_string).collect(),
                        (Some(p), Some(n)) if n >= 0 => {
                            if name == "split" {
                                s.splitn(n as usize + 1, p.as_str())
                                    .map(str::to_string)
                                    .collect()
                            } else {
                                let mut v: Vec<String> = s
                                    .rsplitn(n as usize + 1, p.as_str())
                                    .map(str::to_string)
                                    .collect();
                                v.reverse();
                                v
                            }
                        }
                        (Some(p), _) => s.split(p.as_str()).map(str::to_string).collect(),
                    };
                    Value::from(parts)
                }
                "splitlines" => Value::from(s.lines().map(str::to_string).collect::<Vec<_>>()),
                "startswith" => Value::from(s.starts_with(&arg_str(0).unwrap_or_default())),
                "endswith" => Value::from(s.ends_with(&arg_str(0).unwrap_or_default())),
                "strip" | "lstrip" | "rstrip" => {
                    let chars: Option<Vec<char>> = arg_str(0).map(|c| c.chars().collect());
                    let f = |c: char| match &chars {
                        Some(cs) => cs.contains(&c),
                        None => c.is_whitespace(),
                    };
                    Value::from(match name {
                        "strip" => s.trim_matches(f),
                        "lstrip" => s.trim_start_matches(f),
                        _ => s.trim_end_matches(f),
                    })
                }
                "lower" => Value::from(s.to_lowercase()),
                "upper" => Value::from(s.to_uppercase()),
                "replace" => Value::from(s.replace(
                    &arg_str(0).unwrap_or_default(),
                    &arg_str(1).unwrap_or_default(),
                )),
                "find" => Value::from(
                    s.find(&arg_str(0).unwrap_or_default())
                        .map(|i| s[..i].chars().count() as i64)
                        .unwrap_or(-1),
                ),
                "count" => Value::from(s.matches(&arg_str(0).unwrap_or_default()).count()),
                "join" => Value::from(
                    items(args.first().unwrap_or(&Value::from(())))?
                        .iter()
                        .map(text)
                        .collect::<Vec<_>>()
                        .join(s),
                ),
                "isdigit" => Value::from(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
                _ => {
                    return Err(Error::new(
                        ErrorKind::UnknownMethod,
                        format!("str has no method named {name}"),
                    ))
                }
            })
        }
        ValueKind::Map => Ok(match name {
            "items" => Value::from(
                v.try_iter()?
                    .map(|k| Ok(Value::from(vec![k.clone(), v.get_item(&k)?])))
                    .collect::<Result<Vec<_>, Error>>()?,
            ),
            "keys" => Value::from(v.try_iter()?.collect::<Vec<_>>()),
            "values" => Value::from(
                v.try_iter()?
                    .map(|k| v.get_item(&k))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            "get" => {
                let k = args.first().cloned().unwrap_or_default();
                let x = v.get_item(&k)?;
                if x.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    x
                }
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::UnknownMethod,
                    format!("dict has no method named {name}"),
                ))
            }
        }),
        ValueKind::Seq => Ok(match name {
            "index" => {
                let x = args.first().cloned().unwrap_or_default();
                match items(v)?.iter().position(|i| *i == x) {
                    Some(p) => Value::from(p),
                    None => return Err(err(format!("{} is not in list", pyfmt::repr(&x)))),
                }
            }
            "count" => {
                let x = args.first().cloned().unwrap_or_default();
                Value::from(items(v)?.iter().filter(|i| **i == x).count())
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::UnknownMethod,
                    format!("list has no method named {name}"),
                ))
            }
        }),
        _ => Err(Error::new(
            ErrorKind::UnknownMethod,
            format!("{} has no method named {name}", v.kind()),
        )),
    }
}
