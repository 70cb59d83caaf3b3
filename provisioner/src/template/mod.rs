//! Templating with minijinja in strict-undefined mode, with the Ansible filters and tests that
//! roles use, and `when:` expressions.
//!
//! The goal is Ansible 2.14's behaviour (jinja2_native off, its default) for the subset roles
//! use. The rules, each checked against `ansible-core` 2.14 (see
//! `tests/fixtures/template/oracle.py`):
//!
//! - A string without `{{`, `{%` or `{#` is returned as is.
//! - `{{ name }}` where `name` is a plain bool, number or null variable returns that value.
//! - Anything else is rendered to text, Python style (`True`, `None`, `[1, 'a']`); then, if the
//!   text starts with `[` or `{`, or is `True`/`False`, it is parsed back as a Python literal
//!   (Ansible's `ansible_eval_concat`). So `"{{ [1, 2] }}"` is a list, but `"{{ 1 + 1 }}"` is the
//!   string `"2"`. A single expression whose value comes from `string`, `to_json`,
//!   `to_nice_json`, `to_yaml` or `to_nice_yaml` stays a string.
//! - Trailing newlines of the source are kept.
//! - Variables are templated lazily, when read, recursively, with cycle detection.
//! - A variable whose template reads an undefined variable is itself undefined (so `default`
//!   and `is defined` work on it); using it reports the inner undefined name.
//! - Inside `{{ }}` of inline strings (not template files), backslashes in string literals are
//!   doubled first, so `regex_replace('\\d', ..)` in YAML means what Ansible means.

mod filters;
mod lazy;
pub mod limits;
pub mod lookups;
pub mod names;
pub mod pyfmt;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::ValueKind;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde_json::Value as Json;

use crate::diag::{Diagnostic, Loc};

pub use lazy::HostVarsSource;
pub use limits::Limits;

/// Set by the runner while a `with_<lookup>` loop runs its lookup: the subdirectory Ansible
/// searches for the task's module (`vars`, `templates`, `files`); `first_found` reads it.
pub const LOOKUP_SUBDIR: &str = "__provisioner_lookup_subdir__";

/// Names the variables of a [`Vars`] whose values are *unsafe* (Ansible's `!unsafe`): data a
/// host returned (facts, registered results) or that came from it (a `set_fact` that read
/// such data, loop items). An unsafe value is used as it is and never templated again, so a
/// host that prints `{{ lookup('pipe', ...) }}` cannot make the control node run anything.
/// Its value is a list of names; [`mark_unsafe`] adds to it. Templating hides the key.
pub const UNSAFE_VARS: &str = "__provisioner_unsafe__";

/// Mark variables of `vars` unsafe (see [`UNSAFE_VARS`]).
pub fn mark_unsafe<I, S>(vars: &mut Vars, names: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let entry = vars
        .entry(UNSAFE_VARS.to_string())
        .or_insert_with(|| Json::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Json::Array(Vec::new());
    }
    if let Json::Array(list) = entry {
        for n in names {
            let n = Json::String(n.into());
            if !list.contains(&n) {
                list.push(n);
            }
        }
    }
}

/// Variables a render reads: a shared map is used as it is, a plain one is copied once.
pub trait SharedVars {
    fn shared(&self) -> Arc<Vars>;
}

impl SharedVars for Vars {
    fn shared(&self) -> Arc<Vars> {
        Arc::new(self.clone())
    }
}

impl SharedVars for Arc<Vars> {
    fn shared(&self) -> Arc<Vars> {
        self.clone()
    }
}

/// A rendered value, and whether rendering read an unsafe variable (then the value is
/// unsafe too: Ansible's unsafe-ness spreads through templating).
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub value: Json,
    pub unsafe_: bool,
}

mod chain;

/// Serves the `password` and `provisioner_tls` lookups. The template module stays pure: the
/// engine plugs its encrypted store in with [`Templar::with_secrets`]. Values come back as
/// [`Secret`](crate::secret::Secret)s; the implementation is responsible for registering them
/// with whatever redacts output.
pub trait SecretProvider: Send + Sync {
    /// `lookup('password', term, **kwargs)` (Ansible's syntax: `NAME length=N chars=...`).
    fn password(
        &self,
        term: &str,
        kwargs: &[(String, String)],
    ) -> Result<crate::secret::Secret, String>;
    /// `lookup('provisioner_tls', 'ca')`: the cluster CA certificate (PEM).
    fn tls_ca(&self) -> Result<String, String>;
    /// `lookup('provisioner_tls', 'cert'|'key', host=H)`: the host's certificate and key (PEM).
    fn tls_host(
        &self,
        host: &crate::secrets::TlsHost,
    ) -> Result<(String, crate::secret::Secret), String>;
}

/// A variable map, as the engine holds it: names to raw (untemplated) values.
pub type Vars = serde_json::Map<String, Json>;

/// The placeholder `omit` renders to. A module argument whose rendered value is this string
/// is dropped (see [`is_omit`] and [`strip_omitted`]). Ansible uses
/// `__omit_place_holder__<sha1>`; we use a fixed one.
pub const OMIT: &str = "__omit_place_holder__8f3bd8bc0b1f4d1b9b0d6a57c0ffee00";

/// The default `ansible_managed` string (Ansible's `DEFAULT_MANAGED_STR`).
pub const ANSIBLE_MANAGED: &str = "Ansible managed";

/// What kind of templating failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateErrorKind {
    /// The template does not parse.
    Syntax,
    /// A variable (or attribute) used by the template is undefined.
    Undefined,
    /// A variable's value refers back to itself.
    Recursion,
    /// Anything else: a failing filter, a bad operation, a missing file for `lookup`.
    Invalid,
}

/// A templating failure, with a message that names what went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub kind: TemplateErrorKind,
    pub message: String,
    /// 1-based line within the template source, when known.
    pub line: Option<usize>,
}

impl TemplateError {
    pub fn new(kind: TemplateErrorKind, message: impl Into<String>) -> Self {
        TemplateError {
            kind,
            message: message.into(),
            line: None,
        }
    }

    fn from_mj(e: &minijinja::Error, hints: &HashMap<String, String>) -> Self {
        let detail = e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        if e.kind() == ErrorKind::OutOfFuel {
            return TemplateError::new(TemplateErrorKind::Invalid, limits::fuel_message());
        }
        let kind = match e.kind() {
            ErrorKind::SyntaxError => TemplateErrorKind::Syntax,
            ErrorKind::UndefinedError => TemplateErrorKind::Undefined,
            _ => TemplateErrorKind::Invalid,
        };
        let mut message = match kind {
            TemplateErrorKind::Undefined => detail.replace('`', "'"),
            TemplateErrorKind::Syntax => format!("template syntax error: {detail}"),
            _ => detail,
        };
        // An include that failed says only "error in X": the cause is at the chain's end.
        if let Some(cause) = root_cause(e) {
            if !message.contains(&cause) {
                message = format!("{message}: {cause}");
            }
        }
        if kind == TemplateErrorKind::Undefined {
            if let Some(name) = undefined_name(e) {
                let root = root_name(&name);
                if let Some(hint) = hints.get(root) {
                    message = format!("{message}: {hint}");
                }
            }
        }
        TemplateError {
            kind,
            message,
            line: e.line(),
        }
    }
}

/// The innermost minijinja error behind `e`, when there is one.
fn root_cause(e: &minijinja::Error) -> Option<String> {
    let mut cause: Option<&minijinja::Error> = None;
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        if let Some(m) = s.downcast_ref::<minijinja::Error>() {
            cause = Some(m);
        }
        next = s.source();
    }
    cause.map(|c| {
        c.detail()
            .map_or_else(|| c.kind().to_string(), str::to_string)
    })
}

/// The name in "`x.y` is undefined".
fn undefined_name(e: &minijinja::Error) -> Option<String> {
    let d = e.detail()?;
    let start = d.find('`')? + 1;
    let end = start + d[start..].find('`')?;
    Some(d[start..end].to_string())
}

fn root_name(path: &str) -> &str {
    let end = path.find(['.', '[']).unwrap_or(path.len());
    &path[..end]
}

/// Options for [`Templar::render_file_with`]: the `template` module's arguments that change
/// rendering, and where `{% include %}` looks.
#[derive(Clone, Debug, Default)]
pub struct FileOptions {
    /// Directories `{% include %}`/`{% import %}` search, in order. The template's own
    /// directory is always searched last.
    pub search_path: Vec<PathBuf>,
    /// The `src` argument as written in the task (`template_path`); defaults to the path.
    pub src_arg: Option<String>,
    /// The `dest` argument (`template_destpath`).
    pub dest: Option<String>,
    /// `lstrip_blocks` (default false, like the template module).
    pub lstrip_blocks: bool,
    /// `trim_blocks` false (the template module's default is true).
    pub no_trim_blocks: bool,
}

/// The template engine: one minijinja environment configured like Ansible's Jinja2.
#[derive(Clone)]
pub struct Templar {
    env: Arc<Environment<'static>>,
    base_dir: Arc<Path>,
    hostvars: Option<Arc<dyn HostVarsSource>>,
    secrets: Option<Arc<dyn SecretProvider>>,
    limits: Limits,
}

impl std::fmt::Debug for Templar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templar")
            .field("base_dir", &self.base_dir)
            .finish_non_exhaustive()
    }
}

/// State shared by one top-level templating call: the environment, the hostvars source,
/// the first hard error met while templating a variable, and why variables were undefined.
pub(crate) struct Shared {
    pub(crate) env: Arc<Environment<'static>>,
    pub(crate) hostvars: Option<Arc<dyn HostVarsSource>>,
    pub(crate) error: Mutex<Option<TemplateError>>,
    pub(crate) hints: Mutex<HashMap<String, String>>,
    pub(crate) limits: Limits,
    /// An unsafe variable was read (see [`UNSAFE_VARS`]).
    pub(crate) read_unsafe: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl Shared {
    pub(crate) fn record(&self, e: TemplateError) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
    }

    fn take_error(&self) -> Option<TemplateError> {
        self.error.lock().ok().and_then(|mut s| s.take())
    }

    fn convert(&self, e: &minijinja::Error) -> TemplateError {
        if let Some(inner) = self.take_error() {
            return inner;
        }
        let hints = self.hints.lock().map(|h| h.clone()).unwrap_or_default();
        TemplateError::from_mj(e, &hints)
    }
}

pub(crate) fn build_env(
    base_dir: Arc<Path>,
    trim_blocks: bool,
    lstrip_blocks: bool,
    secrets: Option<Arc<dyn SecretProvider>>,
    limits: &Limits,
) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(limits.fuel));
    env.add_function("__chain", chain::chain);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.trim_blocks(trim_blocks);
    syntax.lstrip_blocks(lstrip_blocks);
    // Jinja's default: drop one trailing newline; Ansible then restores the source's count.
    syntax.keep_trailing_newline(false);
    if let Ok(cfg) = syntax.build() {
        env.set_syntax(cfg);
    }
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            return Ok(());
        }
        if value.is_undefined() {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = pyfmt::to_text(value);
        out.write_str(&text)
            .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "write failed"))
    });
    env.add_global("omit", Value::from(OMIT));
    filters::register(&mut env, base_dir, secrets);
    limits::register(&mut env);
    env
}

impl Templar {
    /// A templar whose `lookup('file', ..)` resolves relative paths against `base_dir`
    /// (first `base_dir/files/PATH`, then `base_dir/PATH`, like a role's lookup).
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        let base_dir: Arc<Path> = Arc::from(base_dir.into().as_path());
        let limits = Limits::default();
        Templar {
            env: Arc::new(build_env(base_dir.clone(), true, false, None, &limits)),
            base_dir,
            hostvars: None,
            secrets: None,
            limits,
        }
    }

    /// The same templar with other [`Limits`] (the defaults suit every role; tests and the
    /// fuzz suite lower them).
    pub fn with_limits(&self, limits: Limits) -> Self {
        Templar {
            env: Arc::new(build_env(
                self.base_dir.clone(),
                true,
                false,
                self.secrets.clone(),
                &limits,
            )),
            limits,
            ..self.clone()
        }
    }

    /// The same templar, with the `password` and `provisioner_tls` lookups served by
    /// `secrets` (without it they fail with a clear message).
    pub fn with_secrets(&self, secrets: Arc<dyn SecretProvider>) -> Self {
        Templar {
            env: Arc::new(build_env(
                self.base_dir.clone(),
                true,
                false,
                Some(secrets.clone()),
                &self.limits,
            )),
            secrets: Some(secrets),
            ..self.clone()
        }
    }

    /// The same templar, with `hostvars` served by `source` (each host's variables templated
    /// lazily in that host's own context). A `hostvars` key in the variables wins.
    pub fn with_hostvars(&self, source: Arc<dyn HostVarsSource>) -> Self {
        Templar {
            hostvars: Some(source),
            ..self.clone()
        }
    }

    fn shared(&self, env: Arc<Environment<'static>>) -> Arc<Shared> {
        Arc::new(Shared {
            env,
            hostvars: self.hostvars.clone(),
            error: Mutex::new(None),
            hints: Mutex::new(HashMap::new()),
            limits: self.limits,
            read_unsafe: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Template every string in `value` (recursively through lists and maps; keys are kept)
    /// with Ansible's rules, reading `vars` lazily (a shared map without copying it).
    pub fn render_value(
        &self,
        value: &Json,
        vars: &(impl SharedVars + ?Sized),
    ) -> Result<Json, TemplateError> {
        self.render_marked(value, vars.shared()).map(|r| r.value)
    }

    /// [`Templar::render_value`], saying whether the result is unsafe (it read an unsafe
    /// variable): whoever stores it as a variable must mark it (`set_fact`).
    pub fn render_marked(&self, value: &Json, vars: Arc<Vars>) -> Result<Rendered, TemplateError> {
        let shared = self.shared(self.env.clone());
        let ctx = lazy::LazyVars::new(vars, shared.clone());
        let v = lazy::template_json(value, &ctx)?;
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        Ok(Rendered {
            value: to_json(&v)?,
            unsafe_: shared
                .read_unsafe
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Template one string (see [`Templar::render_value`]).
    pub fn render_str(
        &self,
        s: &str,
        vars: &(impl SharedVars + ?Sized),
    ) -> Result<Json, TemplateError> {
        self.render_value(&Json::String(s.to_string()), vars)
    }

    /// Template one string and return its text: a non-string result is shown as Ansible's
    /// `debug` would print it inside a string.
    pub fn render_string(
        &self,
        s: &str,
        vars: &(impl SharedVars + ?Sized),
    ) -> Result<String, TemplateError> {
        match self.render_str(s, vars)? {
            Json::String(s) => Ok(s),
            other => Ok(pyfmt::to_text(&json_to_value(&other))),
        }
    }

    /// Evaluate `when:` (also `changed_when`, `failed_when`, `until`): every condition must
    /// hold. Each is a bare Jinja expression; a bare variable name tests its truthiness (a
    /// non-empty string is true, whatever it says: use `| bool`).
    pub fn eval_when(
        &self,
        conditions: &[String],
        vars: &(impl SharedVars + ?Sized),
    ) -> Result<bool, TemplateError> {
        let vars = vars.shared();
        for c in conditions {
            if !self.eval_condition(c, vars.clone())? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn eval_condition(&self, cond: &str, vars: Arc<Vars>) -> Result<bool, TemplateError> {
        let shared = self.shared(self.env.clone());
        let ctx = lazy::LazyVars::new(vars, shared.clone());
        let wrap = |e: TemplateError| TemplateError {
            message: format!("error while evaluating conditional ({cond}): {}", e.message),
            ..e
        };
        let trimmed = cond.trim();
        if trimmed.is_empty() {
            return Ok(true);
        }
        // First pass: a condition written with {{ }} is templated first (Ansible warns).
        let mut expr = cond.to_string();
        if is_possibly_template(cond) {
            let v = lazy::template_str(cond, &ctx, true).map_err(wrap)?;
            // Its text is about to be evaluated as an expression: never text a host sent.
            if shared
                .read_unsafe
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(wrap(TemplateError::new(
                    TemplateErrorKind::Invalid,
                    "Conditional is marked as unsafe, and cannot be evaluated: it reads data \
                     a host returned inside {{ }}, which is never evaluated as an expression \
                     (write the condition without {{ }})",
                )));
            }
            match v.as_str() {
                Some(s) if !s.is_empty() => expr = s.to_string(),
                _ => return Ok(python_truth(&v)),
            }
        }
        let expr = chain::rewrite_expr(&expr);
        limits::check_source(&expr, true).map_err(|m| wrap(limits::source_error(m)))?;
        let _level = limits::enter(Some(self.limits)).map_err(wrap)?;
        let presented = format!("{{% if {expr} %}} True {{% else %}} False {{% endif %}}");
        let tmpl = self.env.template_from_str(&presented).map_err(|e| {
            wrap(TemplateError::new(
                TemplateErrorKind::Syntax,
                format!(
                    "template syntax error: {}",
                    e.detail().unwrap_or("invalid expression")
                ),
            ))
        })?;
        let root = Value::from_dyn_object(ctx.clone());
        match limits::render(&tmpl, root) {
            Err(limits::RenderError::Output(n)) => Err(wrap(limits::output_error(n))),
            Ok(out) => {
                if let Some(e) = shared.take_error() {
                    return Err(wrap(e));
                }
                match out.trim() {
                    "True" => Ok(true),
                    "False" => Ok(false),
                    _ => Err(TemplateError::new(
                        TemplateErrorKind::Invalid,
                        format!("unable to evaluate conditional: {cond}"),
                    )),
                }
            }
            Err(limits::RenderError::Engine(e)) => {
                let err = shared.convert(&e);
                if err.kind == TemplateErrorKind::Undefined {
                    if let Some(name) = undefined_name(&e) {
                        if let Some(b) = defined_fallback(&expr, &name) {
                            return Ok(b);
                        }
                    }
                }
                Err(wrap(err))
            }
        }
    }

    /// Render a template file (the `template` module's `src`) with Ansible's extra variables
    /// (`ansible_managed`, `template_path`, `template_fullpath`, `template_host`,
    /// `template_uid`, `template_destpath`). `{% include %}` resolves next to the file.
    pub fn render_file(&self, path: &Path, vars: &Vars) -> Result<String, TemplateError> {
        self.render_file_with(path, &FileOptions::default(), vars)
    }

    /// [`Templar::render_file`] with the template module's options.
    pub fn render_file_with(
        &self,
        path: &Path,
        opts: &FileOptions,
        vars: &Vars,
    ) -> Result<String, TemplateError> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            TemplateError::new(
                TemplateErrorKind::Invalid,
                format!("could not read template {}: {e}", path.display()),
            )
        })?;
        let mut search: Vec<PathBuf> = opts.search_path.clone();
        if let Some(dir) = path.parent() {
            search.push(dir.to_path_buf());
        }
        limits::check_source(&src, false).map_err(limits::source_error)?;
        let _level = limits::enter(Some(self.limits))?;
        let mut env = build_env(
            self.base_dir.clone(),
            !opts.no_trim_blocks,
            opts.lstrip_blocks,
            self.secrets.clone(),
            &self.limits,
        );
        env.set_loader(search_loader(search));
        let mut all = vars.clone();
        for (k, v) in template_file_vars(path, opts) {
            all.insert(k, v);
        }
        let shared = self.shared(self.env.clone());
        let ctx = lazy::LazyVars::new(Arc::new(all), shared.clone());
        let name = path.display().to_string();
        let tmpl = env
            .template_from_named_str(&name, &src)
            .map_err(|e| shared.convert(&e))?;
        let mut out = match limits::render(&tmpl, Value::from_dyn_object(ctx)) {
            Ok(out) => out,
            Err(limits::RenderError::Output(n)) => return Err(limits::output_error(n)),
            Err(limits::RenderError::Engine(e)) => return Err(shared.convert(&e)),
        };
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        restore_trailing_newlines(&src, &mut out);
        Ok(out)
    }
}

/// What `{% include %}` and `{% import %}` read: the first `dirs/<name>` that is a file, its
/// source refused when [`limits::check_source`] refuses it.
pub(crate) fn search_loader(
    dirs: Vec<PathBuf>,
) -> impl Fn(&str) -> Result<Option<String>, minijinja::Error> + Send + Sync + 'static {
    move |name: &str| {
        for dir in &dirs {
            let p = dir.join(name);
            if p.is_file() {
                let src = std::fs::read_to_string(&p).map_err(|e| {
                    minijinja::Error::new(
                        ErrorKind::TemplateNotFound,
                        format!("could not read {}: {e}", p.display()),
                    )
                })?;
                limits::check_source(&src, false).map_err(|m| {
                    minijinja::Error::new(ErrorKind::SyntaxError, format!("{}: {m}", p.display()))
                })?;
                return Ok(Some(src));
            }
        }
        Ok(None)
    }
}

/// The variables Ansible's template action adds for a template file.
fn template_file_vars(path: &Path, opts: &FileOptions) -> Vars {
    let mut v = Vars::new();
    let src_arg = opts
        .src_arg
        .clone()
        .unwrap_or_else(|| path.display().to_string());
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let uid = file_owner(path).unwrap_or_default();
    v.insert("template_host".into(), Json::String(host));
    v.insert("template_path".into(), Json::String(src_arg));
    v.insert(
        "template_fullpath".into(),
        Json::String(full.display().to_string()),
    );
    v.insert("template_uid".into(), Json::String(uid));
    v.insert(
        "template_destpath".into(),
        opts.dest.clone().map(Json::String).unwrap_or(Json::Null),
    );
    v.insert(
        "ansible_managed".into(),
        Json::String(ANSIBLE_MANAGED.to_string()),
    );
    v
}

/// The owner's user name of `path` (Ansible's `template_uid`), or the numeric uid.
fn file_owner(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 2 && f[2] == uid.to_string() {
            return Some(f[0].to_string());
        }
    }
    Some(uid.to_string())
}

fn count_trailing_newlines(s: &str) -> usize {
    s.bytes().rev().take_while(|&b| b == b'\n').count()
}

/// Ansible's `preserve_trailing_newlines`: the output ends with at least as many newlines
/// as the source.
fn restore_trailing_newlines(src: &str, out: &mut String) {
    let want = count_trailing_newlines(src);
    let have = count_trailing_newlines(out);
    for _ in have..want {
        out.push('\n');
    }
}

/// Whether a string contains a Jinja start marker (Ansible's `is_possibly_template`).
pub fn is_possibly_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Whether `v` is the `omit` placeholder.
pub fn is_omit(v: &Json) -> bool {
    v.as_str() == Some(OMIT)
}

/// Drop the map entries whose value is the `omit` placeholder (module arguments).
pub fn strip_omitted(args: &mut serde_json::Map<String, Json>) {
    args.retain(|_, v| !is_omit(v));
}

/// Python truthiness.
fn python_truth(v: &Value) -> bool {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => false,
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => v.len().unwrap_or(0) > 0,
        _ => v.is_true(),
    }
}

/// Ansible's fallback when a condition fails on an undefined variable: if the condition
/// tests that very name with `is defined`/`is undefined`, that test decides. We also accept
/// a dotted path below the undefined name (Ansible's undefined values chain through
/// attribute access, minijinja's strict ones do not).
fn defined_fallback(cond: &str, undefined: &str) -> Option<bool> {
    let re = regex::Regex::new(
        r#"(?:^|[\s(])((?:hostvars\[[^\]]+\]|[\w_]+)(?:\.[\w_]+|\[[^\]]+\])*)\s+(is(?:\s+not)?)\s+(defined|undefined)"#,
    )
    .ok()?;
    let root = root_name(undefined);
    for cap in re.captures_iter(cond) {
        let var = cap.get(1)?.as_str();
        let logic = cap.get(2)?.as_str();
        let state = cap.get(3)?.as_str();
        let norm = |s: &str| s.replace('\'', "\"");
        let var_root = root_name(var);
        if norm(var) == norm(undefined) || (var_root == root && var.len() > root.len()) {
            let should_exist = logic.contains("not") != (state == "defined");
            return Some(!should_exist);
        }
    }
    None
}

/// Ansible's `_escape_backslashes`: inside `{{ }}`, double every backslash in string
/// literals, because YAML already unescaped them once.
pub(crate) fn escape_backslashes(data: &str) -> String {
    if !data.contains('\\') || !data.contains("{{") {
        return data.to_string();
    }
    let mut out = String::with_capacity(data.len() + 8);
    let mut rest = data;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start + 2]);
        rest = &rest[start + 2..];
        // inside a variable block until an unquoted `}}`
        let mut quote: Option<char> = None;
        let mut end = rest.len();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match quote {
                Some(q) => {
                    if c == '\\' {
                        out.push_str("\\\\");
                        if let Some((_, n)) = chars.next() {
                            if n == '\\' {
                                out.push_str("\\\\");
                            } else {
                                out.push(n);
                            }
                        }
                        continue;
                    }
                    if c == q {
                        quote = None;
                    }
                    out.push(c);
                }
                None => {
                    if c == '}' && rest[i..].starts_with("}}") {
                        end = i;
                        break;
                    }
                    if c == '\'' || c == '"' {
                        quote = Some(c);
                    }
                    out.push(c);
                }
            }
        }
        rest = &rest[end..];
        if end == rest.len() && rest.is_empty() {
            break;
        }
    }
    out.push_str(rest);
    out
}

/// A `serde_json` value as a template value.
pub fn json_to_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        Json::Object(m) => Value::from_pairs(
            m.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                .collect::<Vec<_>>(),
        ),
    }
}

/// A template value as `serde_json`. Undefined values are an error (Ansible fails on them
/// anywhere in a result); map keys become strings the way Python prints them.
pub fn to_json(v: &Value) -> Result<Json, TemplateError> {
    Ok(match v.kind() {
        ValueKind::Undefined => {
            return Err(TemplateError::new(
                TemplateErrorKind::Undefined,
                "an undefined value is part of the result",
            ))
        }
        ValueKind::None => Json::Null,
        ValueKind::Bool => Json::Bool(v.is_true()),
        ValueKind::Number => {
            if v.is_integer() {
                match i64::try_from(v.clone()) {
                    Ok(i) => Json::from(i),
                    Err(_) => u64::try_from(v.clone())
                        .map(Json::from)
                        .unwrap_or_else(|_| Json::String(v.to_string())),
                }
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Json::Number)
                    .unwrap_or_else(|| Json::String(pyfmt::float_repr(f)))
            }
        }
        ValueKind::String => Json::String(v.as_str().unwrap_or_default().to_string()),
        ValueKind::Bytes => {
            Json::String(String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into())
        }
        ValueKind::Map => {
            let mut m = serde_json::Map::new();
            let iter = v.try_iter().map_err(|e| mj_err(&e))?;
            for k in iter {
                let val = v.get_item(&k).map_err(|e| mj_err(&e))?;
                m.insert(pyfmt::to_text(&k), to_json(&val)?);
            }
            Json::Object(m)
        }
        ValueKind::Invalid => {
            return Err(TemplateError::new(
                TemplateErrorKind::Invalid,
                v.to_string(),
            ))
        }
        _ => {
            let iter = v.try_iter().map_err(|e| mj_err(&e))?;
            Json::Array(iter.map(|x| to_json(&x)).collect::<Result<_, _>>()?)
        }
    })
}

fn mj_err(e: &minijinja::Error) -> TemplateError {
    TemplateError::from_mj(e, &HashMap::new())
}

fn syntax_env() -> Environment<'static> {
    let mut env = Environment::new();
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.trim_blocks(true);
    if let Ok(cfg) = syntax.build() {
        env.set_syntax(cfg);
    }
    env
}

/// Check that a template parses. `loc` is where the template comes from: for a template
/// file pass `Loc::file(path)` and the error gets the file's line; for an inline string pass
/// its YAML node's location, which the diagnostic keeps.
pub fn check_syntax(template_src: &str, loc: &Loc) -> Result<(), Diagnostic> {
    if let Err(m) = limits::check_source(template_src, false) {
        return Err(Diagnostic::at(loc, format!("template syntax error: {m}")));
    }
    let env = syntax_env();
    match env.template_from_str(template_src) {
        Ok(_) => Ok(()),
        Err(e) => Err(syntax_diag(&e, loc)),
    }
}

/// Check that a `when:`-style expression (no braces) parses.
pub fn check_expr_syntax(expr: &str, loc: &Loc) -> Result<(), Diagnostic> {
    if is_possibly_template(expr) {
        return check_syntax(expr, loc);
    }
    if let Err(m) = limits::check_source(expr, true) {
        return Err(Diagnostic::at(loc, format!("template syntax error: {m}")));
    }
    let env = syntax_env();
    match env.compile_expression(expr) {
        Ok(_) => Ok(()),
        Err(e) => Err(syntax_diag(&e, loc)),
    }
}

fn syntax_diag(e: &minijinja::Error, loc: &Loc) -> Diagnostic {
    let detail = e.detail().unwrap_or("invalid template");
    let at = if loc.line == 0 {
        Loc::new(
            loc.file.clone(),
            e.line().and_then(|l| u32::try_from(l).ok()).unwrap_or(0),
            0,
        )
    } else {
        loc.clone()
    };
    Diagnostic::at(&at, format!("template syntax error: {detail}"))
}

/// Names the template engine provides itself; not variables.
const BUILTIN_NAMES: &[&str] = &[
    "range",
    "lookup",
    "query",
    "q",
    "omit",
    "dict",
    "namespace",
    "debug",
    "loop",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "self",
    "super",
    "varargs",
    "kwargs",
    "caller",
];

/// The top-level variable names a template reads (unparseable templates read nothing).
pub fn referenced_variables(src: &str) -> BTreeSet<String> {
    if limits::check_source(src, false).is_err() {
        return BTreeSet::new();
    }
    let env = syntax_env();
    let names = match env.template_from_str(src) {
        Ok(t) => t.undeclared_variables(false),
        Err(_) => return BTreeSet::new(),
    };
    names
        .into_iter()
        .filter(|n| !BUILTIN_NAMES.contains(&n.as_str()))
        .collect()
}

/// The top-level variable names a `when:`-style expression reads.
pub fn referenced_variables_expr(expr: &str) -> BTreeSet<String> {
    if is_possibly_template(expr) {
        return referenced_variables(expr);
    }
    if limits::check_source(expr, true).is_err() {
        return BTreeSet::new();
    }
    let env = syntax_env();
    let names = match env.compile_expression(expr) {
        Ok(e) => e.undeclared_variables(false),
        Err(_) => return BTreeSet::new(),
    };
    names
        .into_iter()
        .filter(|n| !BUILTIN_NAMES.contains(&n.as_str()))
        .collect()
}

#[cfg(test)]
mod tests;
