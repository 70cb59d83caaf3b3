//! The fuzz suites' harness (`provisioner/tests/fuzz.rs`, `cluster-core/tests/fuzz.rs`): proptest
//! on stable Rust, seeded so every CI run tries the same inputs, with a hang guard per case.
//!
//! - [`run`]: `cases()` inputs of a strategy through a check; the first panic or `Err` fails the
//!   test with the shrunk input. A case that runs longer than `hang_secs()` aborts the process
//!   after printing the input (a hang cannot be interrupted, only reported).
//! - [`Corpus`] + [`mutated`]: byte-level mutation of seed files (flip, set, insert, delete,
//!   dictionary tokens, line splices from other seeds, repeated chunks for deep nesting).
//! - Small strategies for structured documents: [`word`], [`scalar`], [`text`].
//!
//! Environment: `FUZZ_CASES` (default 10,000 per target), `FUZZ_SEED` (default fixed),
//! `FUZZ_HANG_SECS` (default 10), `FUZZ_SLOW_MS` (print every case slower than this),
//! `FUZZ_LAST_INPUT_DIR` (write each input to `<dir>/<target>.txt` before running it, for a
//! crash that kills the process). See docs/fuzzing.md.

use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRunner};

pub use proptest;

/// Cases per target in one CI run.
pub const DEFAULT_CASES: u32 = 10_000;
/// The seed every CI run uses (each target mixes in its name).
pub const DEFAULT_SEED: u64 = 0x5eed_f022_2024_0015;
/// A case running longer than this is a hang.
pub const DEFAULT_HANG_SECS: u64 = 10;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// `FUZZ_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    env_u64("FUZZ_CASES")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(DEFAULT_CASES)
}

/// `FUZZ_SEED`, else [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    env_u64("FUZZ_SEED").unwrap_or(DEFAULT_SEED)
}

/// `FUZZ_HANG_SECS`, else [`DEFAULT_HANG_SECS`].
pub fn hang_secs() -> u64 {
    env_u64("FUZZ_HANG_SECS").unwrap_or(DEFAULT_HANG_SECS)
}

/// FNV-1a: a target's name mixed into the seed, so targets do not share a random stream.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The case being run, for the watchdog: when it started (ms since the run began; 0 = idle)
/// and what it is.
struct Current {
    started_ms: AtomicU64,
    input: Mutex<String>,
}

/// Aborts the process when one case runs longer than `limit`, printing the case.
struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(name: &str, origin: Instant, current: Arc<Current>, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let started = current.started_ms.load(Ordering::Relaxed);
                if started == 0 {
                    continue;
                }
                let now = origin.elapsed().as_millis() as u64;
                if now.saturating_sub(started) > limit.as_millis() as u64 {
                    let input = current.input.lock().map(|s| s.clone()).unwrap_or_default();
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!(
                            "fuzz {name}: HANG: one case ran longer than {}s; input:\n{input}",
                            limit.as_secs()
                        );
                    }
                    std::process::abort();
                }
            }
        });
        Watchdog {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a run did: for the suite's timing report.
#[derive(Clone, Debug)]
pub struct Report {
    pub target: String,
    pub cases: u32,
    pub elapsed: Duration,
}

/// Run `check` on [`cases()`] inputs drawn from `strategy` with a seed fixed per target. A
/// panic inside `check` or an `Err` from it fails the run; proptest shrinks the input and this
/// panics with it. Prints (stderr) the number of cases and the time taken.
pub fn run<S>(name: &str, strategy: S, check: impl Fn(&S::Value) -> Result<(), String>) -> Report
where
    S: Strategy,
    S::Value: Debug,
{
    let cases = cases();
    let seed = seed();
    let config = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        rng_seed: RngSeed::Fixed(seed ^ fnv(name)),
        max_shrink_iters: 10_000,
        max_shrink_time: 120_000,
        max_global_rejects: cases.saturating_mul(4),
        max_local_rejects: u32::MAX,
        ..Config::default()
    };
    let origin = Instant::now();
    let current = Arc::new(Current {
        started_ms: AtomicU64::new(0),
        input: Mutex::new(String::new()),
    });
    let watchdog = Watchdog::start(
        name,
        origin,
        current.clone(),
        Duration::from_secs(hang_secs()),
    );
    let slow_ms = env_u64("FUZZ_SLOW_MS");
    let last_input_dir = std::env::var_os("FUZZ_LAST_INPUT_DIR").map(std::path::PathBuf::from);
    let in_checks = std::cell::Cell::new(Duration::ZERO);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |input| {
        if let Ok(mut slot) = current.input.lock() {
            slot.clear();
            let shown = format!("{input:?}");
            slot.push_str(&shown[..floor_char_boundary(&shown, 64 * 1024)]);
            // A stack overflow aborts without a word: the input is left in this file.
            if let Some(dir) = &last_input_dir {
                let _ = std::fs::write(dir.join(format!("{name}.txt")), &shown);
            }
        }
        current
            .started_ms
            .store(origin.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let started = Instant::now();
        let r = check(&input);
        current.started_ms.store(0, Ordering::Relaxed);
        in_checks.set(in_checks.get() + started.elapsed());
        if let Some(ms) = slow_ms {
            if started.elapsed() > Duration::from_millis(ms) {
                let shown = format!("{input:?}");
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "fuzz {name}: slow case ({} ms): {}",
                        started.elapsed().as_millis(),
                        &shown[..floor_char_boundary(&shown, 400)]
                    );
                }
            }
        }
        r.map_err(TestCaseError::fail)
    });
    drop(watchdog);
    let report = Report {
        target: name.to_string(),
        cases,
        elapsed: origin.elapsed(),
    };
    match result {
        Ok(()) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "fuzz {name}: {cases} cases in {:.1}s ({:.1}s in the code under test; FUZZ_SEED={seed})",
                    report.elapsed.as_secs_f64(),
                    in_checks.get().as_secs_f64(),
                );
            }
            report
        }
        Err(TestError::Fail(why, input)) => panic!(
            "fuzz {name}: {why}\nminimal input: {input:#?}\n(replay: FUZZ_SEED={seed} FUZZ_CASES={cases})"
        ),
        Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Seed inputs and a dictionary of tokens that mean something to the parser under test.
#[derive(Clone, Debug, Default)]
pub struct Corpus {
    pub seeds: Vec<Vec<u8>>,
    pub tokens: Vec<Vec<u8>>,
}

impl Corpus {
    pub fn new(tokens: &[&str]) -> Self {
        Corpus {
            seeds: Vec::new(),
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
        }
    }

    /// Add one seed.
    pub fn seed(mut self, s: impl AsRef<[u8]>) -> Self {
        self.seeds.push(s.as_ref().to_vec());
        self
    }

    /// Add every file under `root` (recursively, sorted) whose name `keep` accepts.
    pub fn files(mut self, root: &Path, keep: impl Fn(&Path) -> bool + Copy) -> Self {
        let mut found = Vec::new();
        collect_files(root, keep, &mut found);
        found.sort();
        for p in found {
            if let Ok(b) = std::fs::read(&p) {
                self.seeds.push(b);
            }
        }
        self
    }
}

fn collect_files(
    dir: &Path,
    keep: impl Fn(&Path) -> bool + Copy,
    out: &mut Vec<std::path::PathBuf>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        if dir.is_file() && keep(dir) {
            out.push(dir.to_path_buf());
        }
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, keep, out);
        } else if keep(&p) {
            out.push(p);
        }
    }
}

/// One byte-level edit of a seed. Positions are [`Index`]es, so they fit any length.
#[derive(Clone, Debug)]
pub enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// A dictionary token at a position.
    Token(Index, Index),
    /// A line of another seed, inserted at a line boundary.
    Splice(Index, Index, Index),
    DupLine(Index),
    DropLine(Index),
    SwapLines(Index, Index),
    /// A chunk repeated many times (deep nesting, long lines).
    Repeat(Index, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        3 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Edit::Delete(i, n)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Edit::Token(i, t)),
        2 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(s, l, at)| Edit::Splice(s, l, at)),
        1 => any::<Index>().prop_map(Edit::DupLine),
        2 => any::<Index>().prop_map(Edit::DropLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        1 => (any::<Index>(), 1usize..6, 2usize..3000)
            .prop_map(|(i, len, n)| Edit::Repeat(i, len, n)),
    ]
}

/// Line spans (start, end including the newline) of `b`.
fn lines(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in b.iter().enumerate() {
        if *c == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

/// Apply `edits` to `seed` (other seeds of `corpus` feed splices).
pub fn apply(corpus: &Corpus, seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    // Positions in 0..=len (an insertion may go at the end).
    let pos = |i: &Index, len: usize| i.index(len + 1);
    for e in edits {
        match e {
            Edit::Flip(i, bit) if !b.is_empty() => {
                let p = i.index(b.len());
                b[p] ^= 1 << bit;
            }
            Edit::Set(i, v) if !b.is_empty() => {
                let p = i.index(b.len());
                b[p] = *v;
            }
            Edit::Insert(i, bytes) => {
                let p = pos(i, b.len());
                b.splice(p..p, bytes.iter().copied());
            }
            Edit::Delete(i, n) if !b.is_empty() => {
                let p = i.index(b.len());
                let end = (p + n).min(b.len());
                b.drain(p..end);
            }
            Edit::Token(i, t) if !corpus.tokens.is_empty() => {
                let p = pos(i, b.len());
                let tok = t.get(&corpus.tokens);
                b.splice(p..p, tok.iter().copied());
            }
            Edit::Splice(s, l, at) if !corpus.seeds.is_empty() => {
                let other = s.get(&corpus.seeds);
                let other_lines = lines(other);
                if other_lines.is_empty() {
                    continue;
                }
                let (ls, le) = *l.get(&other_lines);
                let mut line = other[ls..le].to_vec();
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                let here = lines(&b);
                let p = if here.is_empty() {
                    0
                } else {
                    here[at.index(here.len())].0
                };
                b.splice(p..p, line);
            }
            Edit::DupLine(i) => {
                let here = lines(&b);
                if here.is_empty() {
                    continue;
                }
                let (s, e) = *i.get(&here);
                let mut line = b[s..e].to_vec();
                if line.last() != Some(&b'\n') {
                    line.insert(0, b'\n');
                }
                b.splice(e..e, line);
            }
            Edit::DropLine(i) => {
                let here = lines(&b);
                if here.is_empty() {
                    continue;
                }
                let (s, e) = *i.get(&here);
                b.drain(s..e);
            }
            Edit::SwapLines(x, y) => {
                let here = lines(&b);
                if here.len() < 2 {
                    continue;
                }
                let (a, c) = (x.index(here.len()), y.index(here.len()));
                let (a, c) = (a.min(c), a.max(c));
                if a == c {
                    continue;
                }
                let (la, lc) = (here[a], here[c]);
                let mut out = Vec::with_capacity(b.len() + 1);
                out.extend_from_slice(&b[..la.0]);
                out.extend_from_slice(&b[lc.0..lc.1]);
                if out.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
                out.extend_from_slice(&b[la.1..lc.0]);
                out.extend_from_slice(&b[la.0..la.1]);
                out.extend_from_slice(&b[lc.1..]);
                b = out;
            }
            Edit::Repeat(i, len, n) if !b.is_empty() => {
                let p = i.index(b.len());
                let end = (p + len).min(b.len());
                let chunk = b[p..end].to_vec();
                let rep: Vec<u8> = chunk
                    .iter()
                    .copied()
                    .cycle()
                    .take(chunk.len() * n)
                    .collect();
                b.splice(p..p, rep);
            }
            _ => {}
        }
    }
    b
}

/// A seed of `corpus` with 1 to 8 edits: which seed, and the edited bytes.
pub fn mutated_indexed(corpus: Arc<Corpus>) -> impl Strategy<Value = (usize, Vec<u8>)> {
    assert!(!corpus.seeds.is_empty(), "a corpus needs at least one seed");
    (any::<Index>(), proptest::collection::vec(edit(), 1..=8)).prop_map(move |(s, edits)| {
        let i = s.index(corpus.seeds.len());
        (i, apply(&corpus, &corpus.seeds[i], &edits))
    })
}

/// A seed of `corpus` with 1 to 8 edits: the bytes.
pub fn mutated_bytes(corpus: Arc<Corpus>) -> impl Strategy<Value = Vec<u8>> {
    mutated_indexed(corpus).prop_map(|(_, b)| b)
}

/// A seed of `corpus` with 1 to 8 edits, as text (invalid UTF-8 replaced).
pub fn mutated(corpus: Arc<Corpus>) -> impl Strategy<Value = String> {
    mutated_bytes(corpus).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An identifier-like word, sometimes with characters parsers split on.
pub fn word() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z_][a-z0-9_]{0,8}",
        1 => "[a-zA-Z0-9_.:@\\[\\]*?!,-]{1,12}",
        1 => "\\PC{1,6}",
    ]
    .boxed()
}

/// A plain scalar as a config or YAML author might write one, including the forms YAML 1.1 and
/// Python give meaning to (numbers in every base, signs, underscores, booleans, null).
pub fn scalar() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z][a-z0-9_.-]{0,10}",
        2 => "[-+]?(0[xob])?[0-9a-fA-F_]{0,22}",
        2 => "[-+]?[0-9_]{0,6}(\\.[0-9_]{0,4})?([eE][-+]?[0-9]{0,4})?",
        1 => prop::sample::select(vec![
            "yes", "No", "TRUE", "off", "On", "~", "null", "Null", ".inf", "-.inf", ".NaN", "0",
            "-0", "0x", "0o17", "0b", "-0b1", "1_000", "0644", "09", "1e3", "1.0e+3", "True",
            "None", "--5", "-0x-8000000000000000", "9223372036854775808", "-9223372036854775808",
            "", " ", "'q'", "\"q\"", "[1, 2]", "{a: 1}", "<<", "*a", "&a x", "!!int 3",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ]
    .boxed()
}

/// A number as a host or a config file might write one: mostly small, sometimes at the edges of
/// 64 bits, a float, or not a number at all.
pub fn number() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u64..300).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => scalar(),
    ]
    .boxed()
}

/// Short text of any characters, control characters included.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[ -~]{0,24}",
        1 => "\\PC{0,16}",
        1 => any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
    .boxed()
}

/// A document tree for structured generation: YAML (block or flow) is written from it.
#[derive(Clone, Debug)]
pub enum Tree {
    /// A scalar, already written as it appears in the file (plain or quoted).
    Leaf(String),
    /// Items; `true`: flow style (`[a, b]`).
    Seq(bool, Vec<Tree>),
    /// Pairs, keys as written; `true`: flow style (`{k: v}`).
    Map(bool, Vec<(String, Tree)>),
}

impl Tree {
    pub fn leaf(s: impl Into<String>) -> Tree {
        Tree::Leaf(s.into())
    }

    pub fn map(pairs: Vec<(String, Tree)>) -> Tree {
        Tree::Map(false, pairs)
    }

    pub fn seq(items: Vec<Tree>) -> Tree {
        Tree::Seq(false, items)
    }

    /// The tree as a YAML document.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Tree::Leaf(s) => {
                out.push_str(s);
                out.push('\n');
            }
            _ => self.block(0, &mut out),
        }
        out
    }

    fn flow(&self, out: &mut String) {
        match self {
            Tree::Leaf(s) => out.push_str(s),
            Tree::Seq(_, items) => {
                out.push('[');
                for (i, t) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    t.flow(out);
                }
                out.push(']');
            }
            Tree::Map(_, pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push_str(": ");
                    v.flow(out);
                }
                out.push('}');
            }
        }
    }

    /// Written after `key:` or `-`: inline (scalar, flow, empty) or on the next lines.
    fn value(&self, indent: usize, out: &mut String) {
        match self {
            Tree::Seq(false, items) if !items.is_empty() => {
                out.push('\n');
                self.block(indent + 2, out);
            }
            Tree::Map(false, pairs) if !pairs.is_empty() => {
                out.push('\n');
                self.block(indent + 2, out);
            }
            _ => {
                out.push(' ');
                self.flow(out);
                out.push('\n');
            }
        }
    }

    fn block(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Tree::Seq(false, items) if !items.is_empty() => {
                for t in items {
                    out.push_str(&pad);
                    out.push('-');
                    t.value(indent, out);
                }
            }
            Tree::Map(false, pairs) if !pairs.is_empty() => {
                for (k, v) in pairs {
                    out.push_str(&pad);
                    out.push_str(k);
                    out.push(':');
                    v.value(indent, out);
                }
            }
            _ => {
                out.push_str(&pad);
                self.flow(out);
                out.push('\n');
            }
        }
    }
}

/// A YAML scalar as written: plain, single- or double-quoted.
pub fn yaml_leaf() -> BoxedStrategy<String> {
    prop_oneof![
        6 => scalar(),
        2 => scalar().prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        1 => text().prop_map(|s| format!("{s:?}")),
        1 => word().prop_map(|w| format!("\"{{{{ {w} }}}}\"")),
    ]
    .boxed()
}

/// Any YAML tree: maps with keys from `keys` (or any word), sequences, leaves.
pub fn yaml_tree(keys: &'static [&'static str], depth: u32) -> BoxedStrategy<Tree> {
    let key = prop_oneof![
        3 => prop::sample::select(keys).prop_map(str::to_string),
        1 => word(),
    ];
    yaml_leaf()
        .prop_map(Tree::Leaf)
        .prop_recursive(depth, 64, 6, move |inner| {
            prop_oneof![
                (any::<bool>(), prop::collection::vec(inner.clone(), 0..5))
                    .prop_map(|(f, v)| Tree::Seq(f, v)),
                (
                    any::<bool>(),
                    prop::collection::vec((key.clone(), inner), 0..6)
                )
                    .prop_map(|(f, v)| Tree::Map(f, v)),
            ]
        })
        .boxed()
}
