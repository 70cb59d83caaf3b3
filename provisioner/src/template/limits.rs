//! What one templating call may cost, so that a template (a role's file, an inventory
//! variable, a value a host sent back) ends in a clear error, not a stack overflow or an
//! out-of-memory kill.
//!
//! minijinja bounds some of this itself: its parser stops at 150 nested levels and its runtime
//! at 500 (macros, includes); `range()` stops at 100,000 items; `*` on a string or a list at
//! 100,000,000 items. What it leaves open is bounded here:
//!
//! - the source's shape ([`check_source`], before minijinja parses it): operator chains
//!   (`1+1+...`, `not not ...`, `- - ...`, `x|f|f...`) recurse in its parser and compiler
//!   without its guard, and 150 nested brackets or calls are more than a 2 MiB thread stack
//!   holds in a debug build. At most [`MAX_BRACKETS`] nested brackets, [`MAX_BLOCKS`] nested
//!   block tags and [`MAX_EXPRESSION_TOKENS`] tokens in one `{{ }}` or `{% %}`;
//! - instructions per render, so loops: minijinja's fuel, [`Limits::fuel`];
//! - the output of one render: [`Limits::output`] bytes (what a `{% set %}` or
//!   `{% filter %}` block captures is bounded by the fuel only);
//! - renders within renders: each lazily templated variable that names the next, each
//!   `lookup('template')` and `hostvars` read starts minijinja's own counters afresh, so
//!   [`Limits::nesting`] levels;
//! - size arguments of filters: widths (`indent`, `tojson`/`to_nice_json`/`to_nice_yaml`
//!   indents, `format`'s widths and precisions) up to [`MAX_WIDTH`], counts (`batch`, `slice`)
//!   up to [`MAX_COUNT`].
//!
//! Not bounded: a value built in steps. `'x' * 100000000` is 100 MB (minijinja's cap), and a
//! loop that doubles a string (`{% set ns.s = ns.s ~ ns.s %}`) outgrows memory in a few dozen
//! steps, well within the fuel.

use std::cell::Cell;

use minijinja::value::{Kwargs, Rest, StringInput, Value, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State};

use super::{TemplateError, TemplateErrorKind};

/// At most this many brackets (`(`, `[`, `{`) open at once in one expression.
pub const MAX_BRACKETS: usize = 32;
/// At most this many block tags (`{% if %}`, `{% for %}`, ...) open at once.
pub const MAX_BLOCKS: usize = 64;
/// At most this many tokens in one `{{ ... }}` or `{% ... %}`.
pub const MAX_EXPRESSION_TOKENS: usize = 1000;
/// The largest width a filter takes (indents, `format` widths and precisions).
pub const MAX_WIDTH: usize = 1024;
/// The largest count a filter takes (`batch`, `slice`): minijinja's own `range()` limit.
pub const MAX_COUNT: usize = 100_000;

/// What one templating call (one `render_*` or `eval_when` of a [`super::Templar`]) may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// minijinja instructions per render (each nested render has its own).
    pub fuel: u64,
    /// Bytes of output per render.
    pub output: usize,
    /// Renders within renders (variables that name variables, template lookups).
    pub nesting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            output: 64 << 20,
            nesting: 64,
        }
    }
}

thread_local! {
    /// The limits of the templating call running on this thread, and how deep it is.
    static ACTIVE: Cell<Option<Limits>> = const { Cell::new(None) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// The limits of the templating call running on this thread (the defaults outside one).
pub(crate) fn current() -> Limits {
    ACTIVE.with(Cell::get).unwrap_or_default()
}

/// One render, maybe within another; dropping it leaves the level.
pub(crate) struct Level {
    outer: Option<Limits>,
}

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        ACTIVE.with(|a| a.set(self.outer));
    }
}

/// Enter one render. `limits`: the templating call's (a nested render keeps its caller's).
pub(crate) fn enter(limits: Option<Limits>) -> Result<Level, TemplateError> {
    let outer = ACTIVE.with(Cell::get);
    let limits = outer.or(limits).unwrap_or_default();
    let depth = DEPTH.with(Cell::get);
    if depth >= limits.nesting {
        return Err(TemplateError::new(
            TemplateErrorKind::Recursion,
            format!(
                "templates nest more than {} levels deep (variables whose values name the next \
                 one, template lookups, hostvars)",
                limits.nesting
            ),
        ));
    }
    DEPTH.with(|d| d.set(depth + 1));
    ACTIVE.with(|a| a.set(Some(limits)));
    Ok(Level { outer })
}

/// Refuse a source whose shape would exhaust the stack in minijinja (see the module docs).
/// `in_expr`: a bare expression (`when:`), not a template.
pub fn check_source(src: &str, in_expr: bool) -> Result<(), String> {
    use minijinja::machinery::{tokenize, Token};
    // Cheap for what cannot go over: few brackets and tags, fewer characters than tokens allowed.
    let brackets = src
        .bytes()
        .filter(|b| matches!(b, b'(' | b'[' | b'{'))
        .count();
    if brackets <= MAX_BRACKETS
        && src.matches("{%").count() <= MAX_BLOCKS
        && src.len() <= MAX_EXPRESSION_TOKENS
    {
        return Ok(());
    }
    let (mut brackets, mut blocks, mut tokens) = (0usize, 0usize, 0usize);
    let mut after_block_start = false;
    for tok in tokenize(src, in_expr, minijinja::syntax::SyntaxConfig::default()) {
        // A lexing error is for the parser to report.
        let Ok((tok, _)) = tok else { return Ok(()) };
        let block_start = matches!(tok, Token::BlockStart);
        match tok {
            Token::VariableStart | Token::BlockStart => tokens = 0,
            Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => brackets += 1,
            Token::ParenClose | Token::BracketClose | Token::BraceClose => {
                brackets = brackets.saturating_sub(1)
            }
            Token::Ident(name) if after_block_start => {
                if matches!(
                    name,
                    "if" | "for" | "macro" | "call" | "filter" | "with" | "block" | "autoescape"
                ) {
                    blocks += 1;
                } else if name.starts_with("end") {
                    blocks = blocks.saturating_sub(1);
                }
            }
            _ => {}
        }
        after_block_start = block_start;
        tokens += 1;
        if brackets > MAX_BRACKETS {
            return Err(format!(
                "the template nests brackets more than {MAX_BRACKETS} deep"
            ));
        }
        if blocks > MAX_BLOCKS {
            return Err(format!(
                "the template nests block tags more than {MAX_BLOCKS} deep"
            ));
        }
        if tokens > MAX_EXPRESSION_TOKENS {
            return Err(format!(
                "an expression of the template is longer than {MAX_EXPRESSION_TOKENS} tokens"
            ));
        }
    }
    Ok(())
}

/// The error for a source [`check_source`] refused.
pub(crate) fn source_error(msg: String) -> TemplateError {
    TemplateError::new(
        TemplateErrorKind::Syntax,
        format!("template syntax error: {msg}"),
    )
}

/// Collects a render's output, refusing to grow past a limit.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("template output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error for output over the limit.
pub(crate) fn output_error(limit: usize) -> TemplateError {
    TemplateError::new(
        TemplateErrorKind::Invalid,
        format!("the template's output is larger than {limit} bytes"),
    )
}

/// Why a bounded render failed.
pub(crate) enum RenderError {
    /// The output went over the limit.
    Output(usize),
    Engine(Error),
}

/// Render `tmpl` with the output bounded by the current limits.
pub(crate) fn render(
    tmpl: &minijinja::Template<'_, '_>,
    ctx: Value,
) -> Result<String, RenderError> {
    let limit = current().output;
    let mut w = Bounded {
        out: Vec::new(),
        limit,
        over: false,
    };
    let result = tmpl.render_captured_to(ctx, &mut w).map(|_| ());
    if w.over {
        return Err(RenderError::Output(limit));
    }
    result.map_err(RenderError::Engine)?;
    String::from_utf8(w.out)
        .map_err(|e| RenderError::Engine(Error::new(ErrorKind::WriteFailure, e.to_string())))
}

/// The message for minijinja's out-of-fuel error.
pub(crate) fn fuel_message() -> String {
    format!(
        "the template ran more than {} operations (a loop over too much?)",
        current().fuel
    )
}

fn too_big(filter: &str, what: &str, n: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{filter}: {what} {n} is over the limit of {max}"),
    )
}

/// A width argument of a filter, checked against [`MAX_WIDTH`].
pub(crate) fn width(filter: &str, n: usize) -> Result<usize, Error> {
    if n > MAX_WIDTH {
        return Err(too_big(filter, "width", n, MAX_WIDTH));
    }
    Ok(n)
}

fn count(filter: &str, n: usize) -> Result<usize, Error> {
    if n > MAX_COUNT {
        return Err(too_big(filter, "count", n, MAX_COUNT));
    }
    Ok(n)
}

/// Every number in a printf-style format's conversion specs (`%-10.3f`: 10 and 3).
fn format_numbers(fmt: &str) -> impl Iterator<Item = usize> + '_ {
    fmt.split('%').skip(1).flat_map(|spec| {
        let spec = spec.trim_start_matches(['-', '+', ' ', '#', '0', '(']);
        let end = spec
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(spec.len());
        spec[..end]
            .split('.')
            .map(|d| {
                if d.len() > 18 {
                    usize::MAX
                } else {
                    d.parse::<usize>().unwrap_or(0)
                }
            })
            .collect::<Vec<_>>()
    })
}

/// minijinja's filters that take a size, wrapped to check it first.
pub(crate) fn register(env: &mut Environment<'static>) {
    use minijinja::filters;
    env.add_filter(
        "indent",
        |value: StringInput<'_>,
         w: Option<usize>,
         first: Option<bool>,
         blank: Option<bool>,
         kwargs: Kwargs| {
            let given = match w {
                Some(w) => Some(w),
                None => kwargs.peek::<Option<usize>>("width")?,
            };
            if let Some(n) = given {
                width("indent", n)?;
            }
            filters::indent(value, w, first, blank, kwargs)
        },
    );
    env.add_filter(
        "tojson",
        |value: &Value, indent: Option<Value>, kwargs: Kwargs| {
            let given = match &indent {
                Some(i) => Some(i.clone()),
                None => kwargs.peek::<Option<Value>>("indent")?,
            };
            if let Some(n) = given.and_then(|i| usize::try_from(i).ok()) {
                width("tojson", n)?;
            }
            filters::tojson(value, indent, kwargs)
        },
    );
    env.add_filter(
        "slice",
        |state: &State, value: Value, n: usize, fill: Option<Value>| {
            filters::slice(state, value, count("slice", n)?, fill)
        },
    );
    env.add_filter(
        "batch",
        |state: &State, value: Value, n: usize, fill: Option<Value>| {
            filters::batch(state, value, count("batch", n)?, fill)
        },
    );
    env.add_filter(
        "format",
        |state: &mut State, fmt: &Value, args: Rest<ValueOrKwargs>| {
            if let Some(n) = fmt
                .as_str()
                .and_then(|f| format_numbers(f).find(|n| *n > MAX_WIDTH))
            {
                return Err(too_big("format", "width or precision", n, MAX_WIDTH));
            }
            filters::format(state, fmt, args)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_shapes_over_the_limits_are_refused() {
        assert!(check_source("{{ a + b }}", false).is_ok());
        let chain = format!("{{{{ {}1 }}}}", "1+".repeat(600));
        assert!(check_source(&chain, false)
            .unwrap_err()
            .contains("1000 tokens"));
        let nots = format!("{}x", "not ".repeat(2000));
        assert!(check_source(&nots, true)
            .unwrap_err()
            .contains("1000 tokens"));
        let calls = format!("{{{{ {}x{} }}}}", "f(".repeat(33), ")".repeat(33));
        assert!(check_source(&calls, false)
            .unwrap_err()
            .contains("brackets"));
        let ifs = "{% if x %}".repeat(65);
        assert!(check_source(&ifs, false)
            .unwrap_err()
            .contains("block tags"));
        // Long templates of short expressions, flat lists and closed blocks are fine.
        let flat = "{% if x %}{{ [1, 2, (3)] }}{% endif %}\n".repeat(500);
        assert!(check_source(&flat, false).is_ok());
    }

    #[test]
    fn format_widths_are_read_from_every_spec() {
        let all: Vec<usize> = format_numbers("%-10.3f and %5s and %% and %.2000d").collect();
        assert!(
            all.contains(&10) && all.contains(&3) && all.contains(&2000),
            "{all:?}"
        );
    }

    #[test]
    fn nesting_is_counted_per_thread_and_left_on_drop() {
        let limits = Limits {
            nesting: 2,
            ..Limits::default()
        };
        let a = enter(Some(limits)).unwrap();
        let b = enter(None).unwrap();
        assert!(enter(None).is_err());
        drop(b);
        let c = enter(None).unwrap();
        drop(c);
        drop(a);
        assert_eq!(DEPTH.with(Cell::get), 0);
        assert_eq!(current(), Limits::default());
    }
}
