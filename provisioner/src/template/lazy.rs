//! The template context: variables templated when read (Ansible's `AnsibleJ2Vars`), and
//! `hostvars`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, ObjectRepr, ValueKind};
use minijinja::{Error, ErrorKind, Value};
use serde_json::Value as Json;

use super::{
    escape_backslashes, json_to_value, limits, pyfmt, restore_trailing_newlines, Shared,
    TemplateError, TemplateErrorKind, Vars,
};

/// Where `hostvars` comes from: the engine knows every host's variables. Each host's
/// variables are templated lazily in that host's own context.
pub trait HostVarsSource: Send + Sync {
    /// Every inventory host name.
    fn hosts(&self) -> Vec<String>;
    /// The raw variables of `host` (as for that host's own tasks), `None` for an unknown host.
    fn vars(&self, host: &str) -> Option<Arc<Vars>>;
}

/// The engine's own keys in a variable map (`__provisioner_...__`): never listed.
const INTERNAL_PREFIX: &str = "__provisioner_";

enum Slot {
    Busy,
    Done(Value),
    Undefined,
    /// Templating it failed (the error is recorded in `Shared`): the same error value again,
    /// not another attempt. minijinja may ask twice for a value that is an error, and a chain
    /// of variables that each fail would be tried 2^n times.
    Failed(Value),
}

/// One host's variables, templated on first access and memoised for one templating call.
pub(crate) struct LazyVars {
    raw: Arc<Vars>,
    /// Names whose values are used as they are, never templated (see `UNSAFE_VARS`).
    unsafe_names: std::collections::HashSet<String>,
    shared: Arc<Shared>,
    cache: Mutex<HashMap<String, Slot>>,
    hostvars: Mutex<Option<Value>>,
}

impl std::fmt::Debug for LazyVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyVars")
            .field("keys", &self.raw.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl LazyVars {
    pub(crate) fn new(raw: Arc<Vars>, shared: Arc<Shared>) -> Arc<Self> {
        let unsafe_names = match raw.get(super::UNSAFE_VARS) {
            Some(Json::Array(names)) => names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            _ => Default::default(),
        };
        Arc::new(LazyVars {
            raw,
            unsafe_names,
            shared,
            cache: Mutex::new(HashMap::new()),
            hostvars: Mutex::new(None),
        })
    }

    pub(crate) fn raw(&self, name: &str) -> Option<&Json> {
        self.raw.get(name)
    }

    fn hostvars_value(&self) -> Option<Value> {
        let source = self.shared.hostvars.clone()?;
        let mut slot = self.hostvars.lock().ok()?;
        if slot.is_none() {
            *slot = Some(Value::from_object(HostVars {
                source,
                shared: self.shared.clone(),
                cache: Mutex::new(HashMap::new()),
            }));
        }
        slot.clone()
    }

    fn lookup(self: &Arc<Self>, name: &str) -> Option<Value> {
        if name == super::lookups::ROOT_KEY {
            return Some(Value::from_dyn_object(self.clone()));
        }
        if name == super::UNSAFE_VARS {
            return None;
        }
        let Some(raw) = self.raw.get(name) else {
            if name == "hostvars" {
                return self.hostvars_value();
            }
            return None;
        };
        if self.unsafe_names.contains(name) {
            self.shared
                .read_unsafe
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Some(json_to_value(raw));
        }
        {
            let mut cache = self.cache.lock().ok()?;
            match cache.get(name) {
                Some(Slot::Done(v) | Slot::Failed(v)) => return Some(v.clone()),
                Some(Slot::Undefined) => return None,
                Some(Slot::Busy) => {
                    let e = TemplateError::new(
                        TemplateErrorKind::Recursion,
                        format!("recursive loop detected in template string: {name}"),
                    );
                    self.shared.record(e.clone());
                    return Some(Value::from(Error::new(
                        ErrorKind::InvalidOperation,
                        e.message,
                    )));
                }
                None => {
                    cache.insert(name.to_string(), Slot::Busy);
                }
            }
        }
        let result = template_json(raw, self);
        let mut cache = self.cache.lock().ok()?;
        match result {
            Ok(v) => {
                cache.insert(name.to_string(), Slot::Done(v.clone()));
                Some(v)
            }
            Err(e) if e.kind == TemplateErrorKind::Undefined => {
                // Like Ansible: the variable itself becomes undefined, and remembers why.
                cache.insert(name.to_string(), Slot::Undefined);
                let hint = match raw {
                    Json::String(s) => format!("{s}: {}", e.message),
                    _ => e.message.clone(),
                };
                if let Ok(mut hints) = self.shared.hints.lock() {
                    hints.entry(name.to_string()).or_insert(hint);
                }
                None
            }
            Err(e) => {
                let e = if e.kind == TemplateErrorKind::Recursion {
                    e
                } else {
                    TemplateError {
                        message: format!("while templating variable '{name}': {}", e.message),
                        ..e
                    }
                };
                self.shared.record(e.clone());
                let failed = Value::from(Error::new(ErrorKind::InvalidOperation, e.message));
                cache.insert(name.to_string(), Slot::Failed(failed.clone()));
                Some(failed)
            }
        }
    }
}

impl Object for LazyVars {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.lookup(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = self
            .raw
            .keys()
            .filter(|k| !k.starts_with(INTERNAL_PREFIX))
            .map(|k| Value::from(k.as_str()))
            .collect();
        if self.shared.hostvars.is_some() && !self.raw.contains_key("hostvars") {
            keys.push(Value::from("hostvars"));
        }
        Enumerator::Values(keys)
    }
}

/// `hostvars`: host name to that host's lazily templated variables.
struct HostVars {
    source: Arc<dyn HostVarsSource>,
    shared: Arc<Shared>,
    cache: Mutex<HashMap<String, Value>>,
}

impl std::fmt::Debug for HostVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hostvars")
    }
}

impl Object for HostVars {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let host = key.as_str()?;
        let mut cache = self.cache.lock().ok()?;
        if let Some(v) = cache.get(host) {
            return Some(v.clone());
        }
        let vars = self.source.vars(host)?;
        let v = Value::from_dyn_object(LazyVars::new(vars, self.shared.clone()));
        cache.insert(host.to_string(), v.clone());
        Some(v)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.source.hosts().into_iter().map(Value::from).collect())
    }
}

/// Template a raw value: strings by Ansible's rules, lists and maps item by item.
pub(crate) fn template_json(raw: &Json, ctx: &Arc<LazyVars>) -> Result<Value, TemplateError> {
    match raw {
        Json::String(s) => template_str(s, ctx, true),
        Json::Array(items) => Ok(Value::from(
            items
                .iter()
                .map(|v| template_json(v, ctx))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Json::Object(m) => {
            let mut pairs = Vec::with_capacity(m.len());
            for (k, v) in m {
                pairs.push((Value::from(k.as_str()), template_json(v, ctx)?));
            }
            Ok(Value::from_pairs(pairs))
        }
        other => Ok(json_to_value(other)),
    }
}

/// `{{ name }}` alone, as Ansible's `SINGLE_VAR` regex sees it.
fn single_var(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    let name = inner.trim_matches(|c: char| c.is_whitespace());
    if name.chars().all(|c| c.is_alphanumeric() || c == '_')
        && inner.len() - inner.trim_start().len() + name.len() + inner.len()
            - inner.trim_end().len()
            == inner.len()
    {
        Some(name)
    } else {
        None
    }
}

/// The expression of a string that is exactly one `{{ expr }}`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    Some(inner)
}

/// Template one string with Ansible's rules. `convert` applies Ansible's literal conversion
/// of the result (off for template files).
pub(crate) fn template_str(
    s: &str,
    ctx: &Arc<LazyVars>,
    convert: bool,
) -> Result<Value, TemplateError> {
    if !super::is_possibly_template(s) {
        return Ok(Value::from(s));
    }
    if let Some(name) = single_var(s) {
        match ctx.raw(name) {
            Some(v @ (Json::Bool(_) | Json::Number(_))) => return Ok(json_to_value(v)),
            Some(Json::Null) => return Ok(Value::from(())),
            _ => {}
        }
    }
    let shared = ctx.shared.clone();
    let env = shared.env.clone();
    let escaped = escape_backslashes(s);
    let data = super::chain::rewrite(&escaped).into_owned();
    limits::check_source(&data, false).map_err(limits::source_error)?;
    let _level = limits::enter(Some(shared.limits))?;
    let root = Value::from_dyn_object(ctx.clone());
    let syntax_err = |e: &minijinja::Error| {
        TemplateError::new(
            TemplateErrorKind::Syntax,
            format!(
                "template error while templating string: {}. String: {s}",
                e.detail().unwrap_or("syntax error")
            ),
        )
    };

    let single = match single_expression(&data).and_then(|e| env.compile_expression(e).ok()) {
        Some(expr) => {
            let v = expr.eval(root.clone()).map_err(|e| shared.convert(&e))?;
            if let Some(e) = shared.error.lock().ok().and_then(|mut s| s.take()) {
                return Err(e);
            }
            // an undefined result: render as a template, which reports the undefined name
            if v.is_undefined() {
                None
            } else {
                Some(finish_single(v, convert)?)
            }
        }
        None => None,
    };
    let value = match single {
        Some(v) => v,
        None => {
            let tmpl = env.template_from_str(&data).map_err(|e| {
                if e.kind() == ErrorKind::SyntaxError {
                    syntax_err(&e)
                } else {
                    shared.convert(&e)
                }
            })?;
            let out = match limits::render(&tmpl, root) {
                Ok(out) => out,
                Err(limits::RenderError::Output(n)) => return Err(limits::output_error(n)),
                Err(limits::RenderError::Engine(e)) => return Err(shared.convert(&e)),
            };
            if let Some(e) = shared.error.lock().ok().and_then(|mut s| s.take()) {
                return Err(e);
            }
            if convert {
                pyfmt::convert_rendered(out)
            } else {
                Value::from(out)
            }
        }
    };
    if let Some(text) = value.as_str() {
        // A single expression's value was never written out: its size is checked here.
        if text.len() > shared.limits.output {
            return Err(limits::output_error(shared.limits.output));
        }
        if value.kind() == ValueKind::String {
            let mut t = text.to_string();
            let before = t.len();
            restore_trailing_newlines(s, &mut t);
            if t.len() != before {
                return Ok(if value.is_safe() {
                    Value::from_safe_string(t)
                } else {
                    Value::from(t)
                });
            }
        }
    }
    Ok(value)
}

/// The value of a template that is one expression (`ansible_eval_concat` with one node).
fn finish_single(v: Value, convert: bool) -> Result<Value, TemplateError> {
    match v.kind() {
        ValueKind::Undefined => Err(TemplateError::new(
            TemplateErrorKind::Undefined,
            "the template evaluates to an undefined value",
        )),
        ValueKind::Invalid => Err(TemplateError::new(
            TemplateErrorKind::Invalid,
            v.to_string(),
        )),
        // finalize: None prints as ''
        ValueKind::None => Ok(Value::from("")),
        // string/to_json/to_yaml results (Ansible's NativeJinjaText) stay strings
        ValueKind::String if v.is_safe() => Ok(v),
        ValueKind::Bool if convert => Ok(v),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable if convert => {
            // Ansible prints and re-parses; for plain data that is the identity, except that
            // an undefined inside fails.
            check_defined(&v)?;
            Ok(v)
        }
        _ => {
            let text = pyfmt::to_text(&v);
            Ok(if convert {
                pyfmt::convert_rendered(text)
            } else {
                Value::from(text)
            })
        }
    }
}

fn check_defined(v: &Value) -> Result<(), TemplateError> {
    match v.kind() {
        ValueKind::Undefined => Err(TemplateError::new(
            TemplateErrorKind::Undefined,
            "an undefined value is part of the result",
        )),
        ValueKind::Seq | ValueKind::Iterable => {
            if let Ok(it) = v.try_iter() {
                for x in it {
                    check_defined(&x)?;
                }
            }
            Ok(())
        }
        ValueKind::Map => {
            if let Ok(it) = v.try_iter() {
                for k in it {
                    if let Ok(x) = v.get_item(&k) {
                        check_defined(&x)?;
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
