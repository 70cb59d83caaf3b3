//! Fuzzing on stable Rust, in every `cargo test` (docs/fuzzing.md): each parser that reads a
//! file we are given or an answer a host sends gets `FUZZ_CASES` inputs (10,000 by default), half
//! generated from a grammar of the format (valid-ish documents with random keys, values and
//! nesting), half byte-level mutations of our own fixtures. The seed is fixed, so a CI run is
//! reproducible; a panic fails with the shrunk input, a case that runs over 10 s aborts the run
//! with the input (testkit::fuzz).
//!
//! Hermetic: files go to temp dirs; the template target drops the `pipe` and `lines` lookups
//! (they run commands) and the ssh_config target drops `Include` (it reads other files).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::Arc;

use provisioner::diag::{Diagnostics, Loc};
use provisioner::raw::inventory::{
    parse_ini, py_literal_eval, shlex_split, RawInventory, RawInventoryFile, YamlFile,
};
use provisioner::raw::kv::parse_kv;
use provisioner::resolve::playbook::{self, BuiltinCatalog, Loader};
use provisioner::template::{self, names, Templar};
use provisioner::yaml;
use serde_json::{Map, Value};
use testkit::fuzz::proptest::prelude::*;
use testkit::fuzz::proptest::sample::select;
use testkit::fuzz::{
    mutated, mutated_bytes, mutated_indexed, number, run, scalar, text, word, yaml_leaf, yaml_tree,
    Corpus, Tree,
};

/// Jinja's delimiters: tokens for the mutators of everything that holds templates.
const JINJA_DELIMITERS: &[&str] = &["{{", "}}", "{%", "%}", "{#", "#}"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ext_is(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e))
}

fn is_yaml(p: &Path) -> bool {
    ext_is(p, &["yml", "yaml", "json"])
}

// ---------------------------------------------------------------------------------------------
// Inventories

/// What an inventory becomes, walked the way a run walks it: host selection by pattern and
/// every host's variables and connection settings.
fn exercise_inventory(raw: &RawInventory, pattern: &str) {
    let mut diags = Diagnostics::new();
    let inv = provisioner::resolve::inventory::resolve(raw, &mut diags);
    let _ = diags.to_string();
    let _ = inv.select(pattern, None);
    let _ = inv.select("all", Some(pattern));
    for h in inv.host_names().into_iter().take(16) {
        let _ = inv.host_vars(h);
        let _ = inv.magic_vars(h);
        let _ = inv.connection(h);
    }
}

/// A host pattern as `--limit` or `hosts:` write it.
fn host_selector() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::collection::vec(
            (select(vec!["", "&", "!"]), word(), select(vec!["", "[0]", "[1:]", "[-1]", "[0:2]", "*"])),
            1..4
        )
        .prop_map(|parts| {
            parts
                .into_iter()
                .map(|(op, w, slice)| format!("{op}{w}{slice}"))
                .collect::<Vec<_>>()
                .join(":")
        }),
        1 => "~[a-z.*+?()|\\[\\]]{0,10}",
        1 => text(),
    ]
    .boxed()
}

/// `[a:b]`, `[a:b:step]` (numbers, zero-padded, letters) or a broken range.
fn host_range() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u32..40, 0u32..40).prop_map(|(a, b)| format!("[{a}:{b}]")),
        2 => (0u32..9, 0u32..99).prop_map(|(a, b)| format!("[0{a}:{b:02}]")),
        2 => (select(vec!['a', 'c', 'x', 'Z']), select(vec!['b', 'f', 'z', 'A']))
            .prop_map(|(a, b)| format!("[{a}:{b}]")),
        1 => (0u32..50, 0u32..50, 0i64..9).prop_map(|(a, b, s)| format!("[{a}:{b}:{s}]")),
        1 => (any::<i64>(), any::<i64>()).prop_map(|(a, b)| format!("[{a}:{b}]")),
        1 => "\\[[0-9a-z:-]{0,8}\\]?",
    ]
    .boxed()
}

fn host_pattern() -> BoxedStrategy<String> {
    (
        word(),
        prop::option::of(host_range()),
        "[a-z0-9.-]{0,5}",
        prop::option::of(prop_oneof![0u32..70_000, Just(22)]),
    )
        .prop_map(|(h, r, tail, port)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{h}{}{tail}{port}", r.unwrap_or_default())
        })
        .boxed()
}

/// A value as Python's `ast.literal_eval` reads it (INI inventory values).
fn py_literal() -> BoxedStrategy<String> {
    let string = (
        select(vec!["", "r", "b", "u", "rb", "f", "B", "Rb"]),
        select(vec!["'", "\"", "'''", "\"\"\""]),
        prop_oneof![
            3 => "[ -&(-\\[\\]-~]{0,10}",
            1 => select(vec!["\\x41", "\\u00e9", "\\U0001F600", "\\777", "\\0", "\\N", "\\", "\\x", "\\uD800", "\\U00110000"]).prop_map(str::to_string),
        ],
    )
        .prop_map(|(p, q, body)| format!("{p}{q}{body}{q}"));
    let leaf = prop_oneof![
        3 => scalar(),
        2 => string,
        1 => select(vec!["True", "False", "None", "1j", "0x_1", "1__0", "0o", "1e", "1e+", ".", "-", "+5"]).prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("({},)", v.join(", "))),
            prop::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(|v| {
                let items: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", items.join(", "))
            }),
            inner.clone().prop_map(|v| format!("-{v}")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("{a} {b}")),
        ]
    })
    .boxed()
}

fn ini_inventory() -> BoxedStrategy<String> {
    let assignment = (
        prop_oneof![3 => word(), 1 => select(vec!["ansible_host", "ansible_port", "ansible_user", "ansible_ssh_common_args", "ansible_become", "ansible_connection", "ansible_ssh_private_key_file"]).prop_map(str::to_string)],
        prop_oneof![3 => py_literal(), 1 => text().prop_map(|t| format!("'{t}'")), 1 => text().prop_map(|t| format!("\"{t}\""))],
    );
    let host_line = (
        host_pattern(),
        prop::collection::vec(assignment.clone(), 0..4),
        prop::option::of(text()),
    )
        .prop_map(|(p, vars, comment)| {
            let mut l = p;
            for (k, v) in vars {
                l.push_str(&format!(" {k}={v}"));
            }
            if let Some(c) = comment {
                l.push_str(&format!(" # {c}"));
            }
            l
        });
    let var_line = assignment.prop_map(|(k, v)| format!("{k} = {v}"));
    let child_line = (word(), prop::option::of(text())).prop_map(|(w, c)| match c {
        Some(c) => format!("{w} # {c}"),
        None => w,
    });
    let line = prop_oneof![4 => host_line, 2 => var_line, 2 => child_line, 1 => text()];
    let section = (
        prop_oneof![3 => word(), 1 => select(vec!["all", "ungrouped"]).prop_map(str::to_string)],
        select(vec![
            "",
            ":vars",
            ":children",
            ":hosts",
            ":bogus",
            " :vars",
            ":",
        ]),
        prop::collection::vec(line, 0..6),
    )
        .prop_map(|(g, kind, lines)| format!("[{g}{kind}]\n{}\n", lines.join("\n")));
    (
        prop::collection::vec(section, 0..6),
        select(vec!["", "\n", "\r\n", "; c\n"]),
    )
        .prop_map(|(sections, tail)| format!("{}{tail}", sections.concat()))
        .boxed()
}

fn inventory_corpus(tokens: &[&str]) -> Corpus {
    Corpus::new(tokens)
        .files(&fixtures().join("inventory"), |p| {
            !ext_is(p, &["txt", "md", "sh", "json"]) || p.ends_with("magic.json")
        })
        .files(&root().join("inventories"), is_yaml)
}

const INI_TOKENS: &[&str] = &[
    "[",
    "]",
    ":vars",
    ":children",
    "=",
    "'",
    "\"",
    "\\",
    "#",
    ";",
    "[01:03]",
    "[a:z]",
    "[0:99:7]",
    ":2222",
    "ansible_host=",
    "ansible_port=x",
    "\n",
    " ",
    "{'k': [1, (2,)]}",
    "0x",
    "r'",
    "b'",
    "'''",
    "\\x4",
    "\\u12",
    "[all:vars]\n",
    "[g:children]\n",
    "---",
    "[::1]:22",
    "h[1:]",
];

/// Run `read` over generated and mutated inventories; what it reads is walked as a run would.
fn fuzz_inventory(
    name: &str,
    tokens: &[&str],
    generated: BoxedStrategy<String>,
    read: impl Fn(&str) -> Option<RawInventory>,
) {
    let corpus = Arc::new(inventory_corpus(tokens));
    let input = (prop_oneof![generated, mutated(corpus)], host_selector());
    run(name, input, |(src, pattern)| {
        if let Some(raw) = read(src) {
            exercise_inventory(&raw, pattern);
        }
        Ok(())
    });
}

#[test]
fn fuzz_inventory_ini() {
    fuzz_inventory("inventory_ini", INI_TOKENS, ini_inventory(), |src| {
        let mut diags = Diagnostics::new();
        let file = parse_ini(src, "fuzz.ini", &mut diags);
        Some(RawInventory {
            files: vec![RawInventoryFile::Ini(file)],
            vars_dirs: Vec::new(),
        })
    });
}

const INVENTORY_KEYS: &[&str] = &[
    "all",
    "hosts",
    "children",
    "vars",
    "ungrouped",
    "web",
    "db",
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_become",
    "h1",
    "h[1:3]",
    "<<",
];

const YAML_TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "hosts:",
    "children:",
    "vars:",
    "all:",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: ",
    "<<: *a",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!bool ",
    "!!null ",
    "!!map ",
    "!vault ",
    "!!binary ",
    "? ",
    "|",
    ">",
    "|-",
    "'",
    "\"",
    "\n  ",
    "\n    ",
    "\n- ",
    "---\n",
    "...\n",
    "~",
    "null",
    "0x1F",
    "0o17",
    "1e3",
    ".inf",
    "yes",
    "%YAML 1.1\n",
    "%TAG ! tag:x:\n",
    "\t",
    "#",
    "\\",
    "\"\\x",
    "\"\\u",
    "{{ x }}",
];

/// An inventory group: hosts, vars, children (nested groups).
fn yaml_inventory() -> BoxedStrategy<String> {
    let hostvars = prop::collection::vec(
        (
            prop_oneof![2 => select(INVENTORY_KEYS).prop_map(str::to_string), 1 => word()],
            yaml_leaf().prop_map(Tree::Leaf),
        ),
        0..4,
    );
    let hosts = prop::collection::vec(
        (
            host_pattern(),
            prop_oneof![
                1 => Just(Tree::leaf("")),
                1 => Just(Tree::leaf("null")),
                2 => hostvars.clone().prop_map(Tree::map),
                1 => yaml_leaf().prop_map(Tree::Leaf),
            ],
        ),
        0..4,
    )
    .prop_map(Tree::map);
    let leaf_group = (hosts.clone(), hostvars.clone())
        .prop_map(|(h, v)| Tree::map(vec![("hosts".into(), h), ("vars".into(), Tree::map(v))]));
    let group = leaf_group.prop_recursive(4, 24, 4, move |inner| {
        (
            prop::option::of(hosts.clone()),
            prop::option::of(hostvars.clone()),
            prop::collection::vec((word(), inner), 0..3),
            any::<bool>(),
        )
            .prop_map(|(h, v, children, flow)| {
                let mut m = Vec::new();
                if let Some(h) = h {
                    m.push(("hosts".to_string(), h));
                }
                if let Some(v) = v {
                    m.push(("vars".to_string(), Tree::map(v)));
                }
                if !children.is_empty() {
                    m.push(("children".to_string(), Tree::Map(flow, children)));
                }
                Tree::map(m)
            })
    });
    prop_oneof![
        4 => (select(vec!["all", "web", "ungrouped"]), group)
            .prop_map(|(top, g)| Tree::map(vec![(top.to_string(), g)]).to_yaml()),
        1 => yaml_tree(INVENTORY_KEYS, 4).prop_map(|t| t.to_yaml()),
    ]
    .boxed()
}

#[test]
fn fuzz_inventory_yaml() {
    fuzz_inventory("inventory_yaml", YAML_TOKENS, yaml_inventory(), |src| {
        let root = match yaml::load_str(src, "fuzz.yml") {
            Ok(mut docs) if !docs.is_empty() => Some(docs.remove(0)),
            Ok(_) => None,
            Err(d) => {
                let _ = d.to_string();
                return None;
            }
        };
        Some(RawInventory {
            files: vec![RawInventoryFile::Yaml(YamlFile {
                path: Arc::from("fuzz.yml"),
                root,
            })],
            vars_dirs: Vec::new(),
        })
    });
}

// ---------------------------------------------------------------------------------------------
// `k=v` arguments and YAML 1.1 scalars

fn kv_words() -> BoxedStrategy<String> {
    let value = prop_oneof![
        3 => scalar(),
        1 => text().prop_map(|t| format!("'{t}'")),
        1 => text().prop_map(|t| format!("\"{t}\"")),
        1 => select(vec!["\\'", "\\\"", "\\=", "\\\\", "\\x41", "\\u00e9", "\\U0001F600", "\\q", "\\"]).prop_map(str::to_string),
    ];
    let piece = prop_oneof![
        4 => (word(), value.clone()).prop_map(|(k, v)| format!("{k}={v}")),
        2 => value,
        1 => select(vec!["{{", "}}", "{%", "%}", "{#", "#}", "{{ x }}", "{% if a %}", "{% endif %}", "\\", "\n", "  ", "=", "'", "\""]).prop_map(str::to_string),
        1 => select(vec!["creates", "removes", "chdir", "executable", "stdin"]).prop_map(|k| format!("{k}=/tmp/x")),
    ];
    prop::collection::vec(
        (piece, select(vec![" ", " ", "  ", "\n", " \\\n", ""])),
        0..8,
    )
    .prop_map(|v| v.into_iter().map(|(p, sep)| format!("{p}{sep}")).collect())
    .boxed()
}

/// One line of every task file and default of the roles: free-form commands, `k=v` strings.
fn role_lines() -> Corpus {
    let files = Corpus::new(&[]).files(&root().join("roles"), is_yaml);
    let mut c = Corpus::new(
        &[
            JINJA_DELIMITERS,
            &[
                "=",
                " ",
                "'",
                "\"",
                "\\",
                "\n",
                "\\\n",
                "\\x",
                "\\u",
                "\\U",
                "creates=",
                "_raw_params=",
                "chdir=",
            ],
        ]
        .concat(),
    );
    for f in &files.seeds {
        for line in String::from_utf8_lossy(f).lines() {
            let t = line.trim().trim_start_matches("- ");
            if let Some((_, v)) = t.split_once(": ") {
                c.seeds.push(v.as_bytes().to_vec());
            }
        }
    }
    c.seeds.sort();
    c.seeds.dedup();
    c
}

#[test]
fn fuzz_kv_split() {
    let corpus = Arc::new(role_lines());
    run("kv_split", prop_oneof![kv_words(), mutated(corpus)], |s| {
        let _ = parse_kv(s, false);
        let _ = parse_kv(s, true);
        let _ = shlex_split(s);
        let _ = py_literal_eval(s);
        Ok(())
    });
}

/// A document of scalars: `key: scalar` lines, tagged or not, in flow and block sequences.
fn scalar_doc() -> BoxedStrategy<String> {
    let tagged = (
        select(vec![
            "",
            "",
            "",
            "!!str ",
            "!!int ",
            "!!float ",
            "!!bool ",
            "!!null ",
            "!x ",
            "!!binary ",
        ]),
        yaml_leaf(),
    )
        .prop_map(|(t, v)| format!("{t}{v}"));
    prop::collection::vec((word(), tagged, 0u8..3), 1..8)
        .prop_map(|lines| {
            lines
                .into_iter()
                .map(|(k, v, shape)| match shape {
                    0 => format!("{k}: {v}\n"),
                    1 => format!("{k}: [{v}, {v}]\n"),
                    _ => format!("{k}:\n  - {v}\n"),
                })
                .collect()
        })
        .boxed()
}

#[test]
fn fuzz_yaml_scalars() {
    let corpus = Arc::new(
        Corpus::new(YAML_TOKENS)
            .files(&root().join("roles"), |p| {
                is_yaml(p) && !p.to_string_lossy().contains("/tasks/")
            })
            .seed("a: 0644\nb: -0x1F\nc: 1_000\nd: .5\ne: +.inf\nf: 0b101\ng: 09\nh: 1.0e+3\n"),
    );
    run(
        "yaml_scalars",
        prop_oneof![scalar_doc(), mutated(corpus)],
        |src| {
            match yaml::load_str(src, "fuzz.yml") {
                Ok(docs) => {
                    for d in &docs {
                        let _ = d.to_json();
                        for (k, v) in d.as_map().unwrap_or_default() {
                            let _ = (k.key_string(), v.key_string(), v.kind());
                        }
                    }
                }
                Err(d) => {
                    let _ = d.to_string();
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Playbooks and roles

/// Fixture trees and the stack's roles, copied to a temp dir: playbooks and, for each YAML file
/// they reach, which playbook loads it (the seeds of the mutations).
struct Playbooks {
    _dir: tempfile::TempDir,
    books: Vec<PathBuf>,
    /// Each seed's playbook (index in `books`) and path, in `corpus.seeds` order.
    files: Vec<(usize, PathBuf)>,
    corpus: Arc<Corpus>,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if is_yaml(&p) {
            out.push(p);
        }
    }
}

const PLAYBOOK_TOKENS: &[&str] = &[
    "- name: x\n",
    "  hosts: all\n",
    "tasks:\n",
    "roles:\n",
    "block:\n",
    "rescue:\n",
    "always:\n",
    "handlers:\n",
    "when: ",
    "loop: ",
    "with_items: ",
    "notify: ",
    "register: ",
    "include_tasks: ",
    "import_tasks: ",
    "include_role: ",
    "import_playbook: ",
    "vars:\n",
    "tags: ",
    "become: ",
    "serial: ",
    "delegate_to: ",
    "until: ",
    "retries: ",
    "{{ ",
    " }}",
    "{% ",
    " %}",
    "'",
    "\"",
    ": ",
    "- ",
    "\n  ",
    "\n    ",
    "&a ",
    "*a",
    "<<: ",
    "meta: flush_handlers",
    "debug: msg=x",
    "command: echo",
    "shell: |\n  a\n",
    "dependencies:\n",
    "- role: ",
    "tasks_from: ",
    "../",
    "/etc/hostname",
    "main.yml",
    "args:\n",
    "loop_control:\n",
    "  loop_var: ",
];

fn playbooks() -> Playbooks {
    let dir = tempfile::tempdir().unwrap();
    let mut books = Vec::new();
    let mut files = Vec::new();
    let mut corpus = Corpus::new(PLAYBOOK_TOKENS);
    let mut add = |book: PathBuf, reach: &Path| {
        let mut found = Vec::new();
        yaml_files(reach, &mut found);
        for f in found {
            corpus.seeds.push(std::fs::read(&f).unwrap());
            files.push((books.len(), f));
        }
        books.push(book);
    };
    for (name, book) in [
        ("playbook/ok", "site.yml"),
        ("playbook/include-legacy", "site.yml"),
        ("playbook/errors", "site.yml"),
        ("playbook/cycle", "site.yml"),
        ("e2e", "site.yml"),
        ("e2e-keywords", "site.yml"),
        ("e2e-lookup-template", "site.yml"),
        ("roles-core", "preflight.yml"),
    ] {
        let from = fixtures().join(name);
        if !from.is_dir() {
            continue;
        }
        let to = dir.path().join(name);
        copy_tree(&from, &to);
        add(to.join(book), &to);
    }
    // The stack's own roles, one playbook per role.
    let stack = dir.path().join("stack");
    copy_tree(&root().join("roles"), &stack.join("roles"));
    let mut roles: Vec<String> = std::fs::read_dir(stack.join("roles"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    roles.sort();
    for r in roles {
        let book = stack.join(format!("play-{r}.yml"));
        std::fs::write(
            &book,
            format!("- name: {r}\n  hosts: all\n  gather_facts: false\n  roles:\n    - {r}\n"),
        )
        .unwrap();
        add(book, &stack.join("roles").join(&r));
    }
    Playbooks {
        _dir: dir,
        books,
        files,
        corpus: Arc::new(corpus),
    }
}

/// Every module the engine has (all names), the engine's own, and two it has not.
fn module_names() -> Vec<&'static str> {
    let real = provisioner::modules::files::modules()
        .into_iter()
        .chain(provisioner::modules::system::modules())
        .flat_map(|m| m.names().iter().copied());
    playbook::ENGINE_MODULES
        .iter()
        .copied()
        .chain(real)
        .chain(["nonexistent_module", "ansible.builtin.nonexistent"])
        .collect()
}

/// Keywords a task may not have, besides [`playbook::TASK_KEYS`].
const OTHER_TASK_KEYS: &[&str] = &["with_dict", "with_fileglob", "environment", "bogus"];

fn task() -> BoxedStrategy<Tree> {
    let module = (
        select(module_names()),
        prop_oneof![
            2 => kv_words().prop_map(|s| Tree::leaf(format!("{s:?}"))),
            2 => prop::collection::vec((word(), yaml_leaf().prop_map(Tree::Leaf)), 0..4).prop_map(Tree::map),
            1 => select(vec!["extra.yml", "setup.yml", "main.yml", "missing.yml", "/etc/hostname", "{{ f }}.yml", "flush_handlers"]).prop_map(Tree::leaf),
        ],
    );
    let keys: Vec<&str> = playbook::TASK_KEYS
        .iter()
        .chain(OTHER_TASK_KEYS)
        .copied()
        .collect();
    let keyword = (
        select(keys),
        prop_oneof![
            3 => yaml_leaf().prop_map(Tree::Leaf),
            1 => prop::collection::vec(yaml_leaf().prop_map(Tree::Leaf), 0..3).prop_map(Tree::seq),
            1 => prop::collection::vec((word(), yaml_leaf().prop_map(Tree::Leaf)), 0..3).prop_map(Tree::map),
        ],
    );
    let leaf = (module, prop::collection::vec(keyword, 0..4)).prop_map(|((m, args), kws)| {
        let mut pairs = vec![(m.to_string(), args)];
        pairs.extend(kws.into_iter().map(|(k, v)| (k.to_string(), v)));
        Tree::map(pairs)
    });
    leaf.prop_recursive(3, 16, 3, |inner| {
        (
            prop::collection::vec(inner.clone(), 0..3),
            prop::option::of(prop::collection::vec(inner.clone(), 0..2)),
            prop::option::of(prop::collection::vec(inner, 0..2)),
            prop::option::of(yaml_leaf()),
        )
            .prop_map(|(block, rescue, always, when)| {
                let mut pairs = vec![("block".to_string(), Tree::seq(block))];
                if let Some(r) = rescue {
                    pairs.push(("rescue".into(), Tree::seq(r)));
                }
                if let Some(a) = always {
                    pairs.push(("always".into(), Tree::seq(a)));
                }
                if let Some(w) = when {
                    pairs.push(("when".into(), Tree::Leaf(w)));
                }
                Tree::map(pairs)
            })
    })
    .boxed()
}

fn play() -> BoxedStrategy<Tree> {
    let role = prop_oneof![
        select(vec!["web", "base", "missing", "../web", "r"]).prop_map(Tree::leaf),
        (
            select(vec!["web", "base", "missing"]),
            prop::collection::vec((word(), yaml_leaf().prop_map(Tree::Leaf)), 0..3)
        )
            .prop_map(|(r, params)| {
                let mut pairs = vec![("role".to_string(), Tree::leaf(r))];
                pairs.extend(params);
                Tree::map(pairs)
            }),
    ];
    let key = select(
        playbook::PLAY_KEYS
            .iter()
            .copied()
            .chain(["bogus"])
            .collect::<Vec<_>>(),
    );
    (
        prop::collection::vec((key, yaml_leaf().prop_map(Tree::Leaf)), 0..4),
        prop::option::of(prop::collection::vec(role, 0..3)),
        prop::collection::vec(
            (
                select(vec!["tasks", "pre_tasks", "post_tasks", "handlers"]),
                prop::collection::vec(task(), 0..4),
            ),
            0..3,
        ),
    )
        .prop_map(|(kws, roles, sections)| {
            let mut pairs = vec![("hosts".to_string(), Tree::leaf("all"))];
            pairs.extend(kws.into_iter().map(|(k, v)| (k.to_string(), v)));
            if let Some(r) = roles {
                pairs.push(("roles".into(), Tree::seq(r)));
            }
            for (k, tasks) in sections {
                pairs.push((k.to_string(), Tree::seq(tasks)));
            }
            Tree::map(pairs)
        })
        .boxed()
}

#[derive(Clone, Debug)]
enum PlaybookCase {
    /// A generated playbook, run next to the `playbook/ok` fixture's roles.
    Generated(String),
    /// One file of a fixture tree or of a stack role, mutated.
    Mutated(usize, String),
}

#[test]
fn fuzz_playbook() {
    let books = playbooks();
    let ok_dir = books.books[0].parent().map(Path::to_path_buf).unwrap();
    let input = prop_oneof![
        prop::collection::vec(play(), 0..3)
            .prop_map(|plays| PlaybookCase::Generated(Tree::seq(plays).to_yaml())),
        mutated_indexed(books.corpus.clone())
            .prop_map(|(i, b)| PlaybookCase::Mutated(i, String::from_utf8_lossy(&b).into_owned())),
    ];
    let load = |book: &Path| match Loader::new(&BuiltinCatalog, Vec::new()).load_playbook(book) {
        Ok(pb) => {
            let dir = book.parent().unwrap_or(Path::new("."));
            let _ = provisioner::resolve::expressions::check(&pb, dir).to_string();
        }
        Err(d) => {
            let _ = d.to_string();
        }
    };
    run("playbook", input, |case| {
        match case {
            PlaybookCase::Generated(src) => {
                let book = ok_dir.join("generated.yml");
                std::fs::write(&book, src).map_err(|e| e.to_string())?;
                load(&book);
            }
            PlaybookCase::Mutated(i, src) => {
                let (book, path) = &books.files[*i];
                std::fs::write(path, src).map_err(|e| e.to_string())?;
                load(&books.books[*book]);
                std::fs::write(path, &books.corpus.seeds[*i]).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Templates

const FILTERS: &[&str] = &[
    "bool",
    "default",
    "d",
    "mandatory",
    "join",
    "to_json",
    "to_nice_json",
    "from_json",
    "to_yaml",
    "to_nice_yaml",
    "regex_replace",
    "regex_search",
    "regex_findall",
    "regex_escape",
    "b64encode",
    "b64decode",
    "basename",
    "dirname",
    "int",
    "float",
    "string",
    "unique",
    "union",
    "intersect",
    "difference",
    "symmetric_difference",
    "flatten",
    "dict2items",
    "items2dict",
    "combine",
    "hash",
    "checksum",
    "quote",
    "ternary",
    "zip",
    "extract",
    "type_debug",
    "splitext",
    "lower",
    "upper",
    "title",
    "replace",
    "length",
    "count",
    "dictsort",
    "items",
    "reverse",
    "trim",
    "split",
    "lines",
    "round",
    "abs",
    "first",
    "last",
    "min",
    "max",
    "sort",
    "list",
    "batch",
    "slice",
    "sum",
    "indent",
    "select",
    "reject",
    "map",
    "selectattr",
    "groupby",
    "chain",
    "pprint",
    "format",
    "tojson",
    "urlencode",
    "safe",
    "escape",
    "attr",
    "wordcount",
    "center",
];

const TESTS: &[&str] = &[
    "defined",
    "undefined",
    "none",
    "string",
    "number",
    "mapping",
    "sequence",
    "iterable",
    "succeeded",
    "failed",
    "changed",
    "skipped",
    "match",
    "search",
    "regex",
    "contains",
    "subset",
    "superset",
    "in",
    "odd",
    "even",
    "sameas",
    "eq",
    "true",
    "false",
    "divisibleby",
];

const METHODS: &[&str] = &[
    "split",
    "rsplit",
    "splitlines",
    "startswith",
    "endswith",
    "strip",
    "lstrip",
    "rstrip",
    "lower",
    "upper",
    "replace",
    "find",
    "count",
    "join",
    "isdigit",
    "items",
    "keys",
    "values",
    "get",
    "format",
    "center",
    "ljust",
    "zfill",
    "append",
    "index",
];

const VAR_NAMES: &[&str] = &[
    "a",
    "b",
    "c",
    "n",
    "s",
    "l",
    "d",
    "missing",
    "hostvars",
    "omit",
    "inventory_hostname",
    "item",
    "loop",
];

fn jinja_number() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (-20i64..200).prop_map(|i| i.to_string()),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => select(vec!["1e308", "0.5", "-0.0", "1e400", "99999999999999999999", "2**62", "10**18", "100000"]).prop_map(str::to_string),
    ]
    .boxed()
}

fn jinja_string() -> BoxedStrategy<String> {
    text()
        .prop_map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")))
        .boxed()
}

fn jinja_expr() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        4 => select(VAR_NAMES).prop_map(str::to_string),
        3 => jinja_number(),
        3 => jinja_string(),
        1 => select(vec!["true", "false", "none", "None", "True", "[]", "{}", "()", "loop.index", "range(3)"]).prop_map(str::to_string),
    ];
    leaf.prop_recursive(5, 48, 4, |e| {
        prop_oneof![
            4 => (e.clone(), select(FILTERS), prop::collection::vec(e.clone(), 0..3)).prop_map(|(x, f, args)| {
                if args.is_empty() { format!("{x} | {f}") } else { format!("{x} | {f}({})", args.join(", ")) }
            }),
            3 => (e.clone(), select(vec!["+", "-", "*", "/", "//", "%", "**", "~", "and", "or", "==", "!=", "<", ">=", "in", "not in"]), e.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            1 => prop::collection::vec(e.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            1 => prop::collection::vec((e.clone(), e.clone()), 0..3).prop_map(|v| {
                let items: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", items.join(", "))
            }),
            2 => (e.clone(), e.clone()).prop_map(|(a, b)| format!("{a}[{b}]")),
            1 => (e.clone(), e.clone(), e.clone()).prop_map(|(a, b, c)| format!("{a}[{b}:{c}]")),
            1 => (e.clone(), word()).prop_map(|(a, w)| format!("{a}.{w}")),
            2 => (e.clone(), select(vec!["is", "is not"]), select(TESTS), prop::option::of(e.clone()))
                .prop_map(|(a, is, t, arg)| match arg {
                    Some(x) => format!("({a} {is} {t}({x}))"),
                    None => format!("({a} {is} {t})"),
                }),
            1 => (e.clone(), e.clone(), e.clone()).prop_map(|(a, b, c)| format!("({a} if {b} else {c})")),
            2 => (select(vec!["range", "dict", "lookup", "query", "q"]), prop::collection::vec(e.clone(), 0..3))
                .prop_map(|(f, args)| match f {
                    "lookup" | "query" | "q" => format!("{f}('{}'{})", ["env", "vars", "file", "template", "first_found", "fileglob", "list", "dict", "together", "password"][args.len() * 3 % 10],
                        args.iter().map(|a| format!(", {a}")).collect::<String>()),
                    _ => format!("{f}({})", args.join(", ")),
                }),
            1 => (e.clone(), select(METHODS), prop::collection::vec(e.clone(), 0..2))
                .prop_map(|(a, m, args)| format!("{a}.{m}({})", args.join(", "))),
            1 => e.clone().prop_map(|a| format!("not {a}")),
            1 => e.prop_map(|a| format!("-{a}")),
        ]
    })
    .boxed()
}

fn jinja_template() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        3 => "[ -z\\n]{0,12}".prop_map(|s| s.replace(['{', '}', '%', '#'], "")),
        4 => jinja_expr().prop_map(|e| format!("{{{{ {e} }}}}")),
        1 => text().prop_map(|t| format!("{{# {} #}}", t.replace("#}", ""))),
        1 => select(vec!["{{", "}}", "{%", "%}", "{{-", "-}}", "{%+", "\n", "\\"]).prop_map(str::to_string),
    ];
    piece.prop_recursive(4, 32, 4, |t| {
        prop_oneof![
            3 => prop::collection::vec(t.clone(), 0..4).prop_map(|v| v.concat()),
            2 => (select(vec!["x", "item", "loop"]), jinja_expr(), t.clone(), prop::option::of(t.clone()))
                .prop_map(|(v, e, body, els)| match els {
                    Some(els) => format!("{{% for {v} in {e} %}}{body}{{% else %}}{els}{{% endfor %}}"),
                    None => format!("{{% for {v} in {e} %}}{body}{{% endfor %}}"),
                }),
            2 => (jinja_expr(), t.clone(), prop::option::of(t.clone()))
                .prop_map(|(e, a, b)| match b {
                    Some(b) => format!("{{% if {e} %}}{a}{{% else %}}{b}{{% endif %}}"),
                    None => format!("{{%- if {e} -%}}{a}{{%- endif -%}}"),
                }),
            1 => (select(VAR_NAMES), jinja_expr()).prop_map(|(v, e)| format!("{{% set {v} = {e} %}}")),
            1 => (t.clone(), jinja_expr()).prop_map(|(body, e)| format!("{{% macro m(x) %}}{body}{{% endmacro %}}{{{{ m({e}) }}}}")),
            1 => Just("{% macro r(n) %}{{ r(n) }}{% endmacro %}{{ r(1) }}".to_string()),
            1 => t.clone().prop_map(|b| format!("{{% raw %}}{b}{{% endraw %}}")),
            1 => (select(vec!["upper", "indent", "trim"]), t.clone()).prop_map(|(f, b)| format!("{{% filter {f} %}}{b}{{% endfilter %}}")),
            1 => (jinja_expr(), t.clone()).prop_map(|(e, b)| format!("{{% with x = {e} %}}{b}{{% endwith %}}")),
            1 => (jinja_expr(), select(vec!["break", "continue"])).prop_map(|(e, c)| format!("{{% for x in {e} %}}{{% {c} %}}{{% endfor %}}")),
            1 => select(vec!["self.j2", "part.j2", "missing.j2"]).prop_map(|f| format!("{{% include '{f}' %}}")),
        ]
    })
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        3 => text().prop_map(Value::String),
        2 => jinja_expr().prop_map(|e| Value::String(format!("{{{{ {e} }}}}"))),
    ];
    leaf.prop_recursive(3, 24, 4, |v| {
        prop_oneof![
            prop::collection::vec(v.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((word(), v), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
    .boxed()
}

fn template_vars() -> BoxedStrategy<Map<String, Value>> {
    prop::collection::vec((select(&VAR_NAMES[..7]), json_value()), 0..7)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        .boxed()
}

/// The template cases of the oracle fixtures: their sources, and their variables.
fn template_corpus() -> (Corpus, Vec<Map<String, Value>>) {
    let mut c = Corpus::new(
        &[
            JINJA_DELIMITERS,
            &[
                "{{-",
                "-}}",
                "|",
                "(",
                ")",
                "[",
                "]",
                "'",
                "\"",
                ",",
                " for x in ",
                " if ",
                " else ",
                " endif ",
                " endfor ",
                "range(100000)",
                "| indent(",
                "| to_nice_json(indent=",
                "loop.index",
                "hostvars",
                "lookup('env', 'HOME')",
                "* 100000",
                "{% macro m() %}",
                "{% endmacro %}",
                "{{ m() }}",
                "{% include 'self.j2' %}",
                "\\",
            ],
        ]
        .concat(),
    );
    let mut vars = vec![Map::new()];
    for name in ["cases.json", "when_cases.json"] {
        let text = std::fs::read_to_string(fixtures().join("template").join(name)).unwrap();
        let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
        for case in cases {
            if let Some(t) = case["t"].as_str() {
                c.seeds.push(t.as_bytes().to_vec());
            }
            for w in case["when"].as_array().into_iter().flatten() {
                c.seeds
                    .push(w.as_str().unwrap_or_default().as_bytes().to_vec());
            }
            if let Some(v) = case["vars"].as_object() {
                vars.push(v.clone());
            }
        }
    }
    let c = c
        .files(&root().join("roles"), |p| ext_is(p, &["j2"]))
        .files(&fixtures().join("template"), |p| ext_is(p, &["j2"]))
        .files(&fixtures().join("e2e-lookup-template"), |p| {
            ext_is(p, &["j2"])
        });
    (c, vars)
}

/// Lookups that run commands on the control node are left out of the fuzzed templates.
fn without_command_lookups(t: &str) -> String {
    t.replace("pipe", "pip_")
        .replace("'lines'", "'line_'")
        .replace("\"lines\"", "\"line_\"")
}

#[test]
fn fuzz_template() {
    let (corpus, seed_vars) = template_corpus();
    let corpus = Arc::new(corpus);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("part.j2"), "part {{ a | default(1) }}\n").unwrap();
    let self_path = dir.path().join("self.j2");
    let input = (
        prop_oneof![jinja_template(), mutated(corpus)],
        prop_oneof![template_vars(), select(seed_vars)],
    );
    // Smaller budgets than the defaults only to keep runaway cases short; the regression tests
    // below check the defaults.
    let templar = Templar::new(dir.path()).with_limits(template::Limits {
        fuel: 200_000,
        output: 1 << 20,
        ..template::Limits::default()
    });
    let loc = Loc::new("fuzz.j2", 1, 1);
    run("template", input, |(src, vars)| {
        let t = without_command_lookups(src);
        let vars: Map<String, Value> = serde_json::from_str(&without_command_lookups(
            &Value::Object(vars.clone()).to_string(),
        ))
        .unwrap_or_default();
        let _ = template::check_syntax(&t, &loc);
        let _ = template::check_expr_syntax(&t, &loc);
        let _ = names::used(&t, false);
        let _ = names::used(&t, true);
        let _ = names::unknown(&t, false);
        let _ = names::template_lookup_files(&t, false);
        let _ = template::referenced_variables(&t);
        let _ = template::referenced_variables_expr(&t);
        let _ = templar.render_str(&t, &vars);
        let _ = templar.eval_when(std::slice::from_ref(&t), &vars);
        std::fs::write(&self_path, &t).map_err(|e| e.to_string())?;
        let _ = templar.render_file(&self_path, &vars);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// known_hosts, ssh_config, ssh arguments, ansible.cfg

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=";

fn known_hosts_text() -> BoxedStrategy<String> {
    let pattern = prop_oneof![
        3 => "[a-z0-9.*?!-]{1,12}",
        1 => (word(), 1u32..70_000).prop_map(|(h, p)| format!("[{h}]:{p}")),
        1 => "\\|1\\|[A-Za-z0-9+/=]{0,30}\\|[A-Za-z0-9+/=]{0,30}",
        1 => (1usize..30).prop_map(|n| "*a".repeat(n) + "b"),
        1 => "[*?a]{1,40}",
    ];
    let key = prop_oneof![
        3 => select(vec![ED25519, ECDSA]).prop_map(str::to_string),
        1 => ("[a-z0-9-]{1,20}", "[A-Za-z0-9+/=]{0,60}").prop_map(|(k, b)| format!("{k} {b}")),
        1 => text(),
    ];
    let line = (
        select(vec!["", "", "", "@revoked ", "@cert-authority ", "@bogus "]),
        prop::collection::vec(pattern, 1..4),
        key,
        prop::option::of(text()),
    )
        .prop_map(|(m, pats, key, comment)| {
            format!(
                "{m}{} {key} {}",
                pats.join(","),
                comment.unwrap_or_default()
            )
        });
    prop::collection::vec(prop_oneof![6 => line, 1 => text()], 0..8)
        .prop_map(|l| l.join("\n"))
        .boxed()
}

#[test]
fn fuzz_known_hosts() {
    use provisioner::transport::known_hosts;
    use russh::keys::PublicKey;
    let key = PublicKey::from_openssh(ED25519).unwrap();
    let corpus = Arc::new(
        Corpus::new(&["@revoked ", "@cert-authority ", "|1|", "*", "?", "!", ",", "[", "]:2222", " ", "\n", "#"])
            .seed(format!("h1 {ED25519}\n[h2]:2222,10.0.0.2 {ECDSA}\n@revoked * {ED25519}\n|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= {ED25519}\n!bad,*.lab {ECDSA}\n")),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    let host = prop_oneof![3 => word(), 1 => "[a.]{0,48}", 1 => text()];
    let input = (
        prop_oneof![known_hosts_text(), mutated(corpus)],
        host,
        prop_oneof![Just(22u16), any::<u16>()],
    );
    run("known_hosts", input, |(text, host, port)| {
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let _ = known_hosts::check(&path, host, *port, &key);
        let _ = known_hosts::known_algorithms(&path, host, *port);
        let _ = known_hosts::forget(&path, host, *port);
        Ok(())
    });
}

const SSH_CONFIG_KEYS: &[&str] = &[
    "Host",
    "Match",
    "HostName",
    "User",
    "Port",
    "IdentityFile",
    "ProxyJump",
    "ProxyCommand",
    "StrictHostKeyChecking",
    "UserKnownHostsFile",
    "ControlMaster",
    "ConnectTimeout",
    "ServerAliveInterval",
    "Compression",
    "IgnoreUnknown",
    "LocalForward",
    "RemoteForward",
    "DynamicForward",
    "BindAddress",
    "Ciphers",
    "HostKeyAlgorithms",
    "KexAlgorithms",
    "MACs",
    "PubkeyAcceptedKeyTypes",
    "AddKeysToAgent",
    "ConnectionAttempts",
    "TCPKeepAlive",
    "Bogus",
];

fn ssh_config_text() -> BoxedStrategy<String> {
    let value = prop_oneof![
        3 => scalar(),
        2 => "[a-z0-9*?!.@:%\\[\\]-]{0,20}",
        1 => text(),
        1 => (0u32..70_000).prop_map(|p| p.to_string()),
        1 => text().prop_map(|t| format!("\"{t}\"")),
    ];
    let line = (
        select(vec!["", "  ", "\t"]),
        select(SSH_CONFIG_KEYS),
        select(vec![" ", "=", " = ", "\t"]),
        prop::collection::vec(value, 0..3),
    )
        .prop_map(|(indent, k, sep, vals)| format!("{indent}{k}{sep}{}", vals.join(" ")));
    prop::collection::vec(prop_oneof![8 => line, 1 => text()], 0..10)
        .prop_map(|l| l.join("\n"))
        .boxed()
}

fn ssh_args() -> BoxedStrategy<String> {
    let opt = prop_oneof![
        3 => (select(vec!["StrictHostKeyChecking", "UserKnownHostsFile", "Port", "User", "IdentityFile", "ProxyJump", "ControlMaster", "bogus"]),
              select(vec!["=", " ", "= ", "\t"]), scalar())
            .prop_map(|(k, sep, v)| format!("-o '{k}{sep}{v}'")),
        2 => (select(vec!["-p", "-l", "-i", "-J", "-o", "-C", "-v", "-F", "-", "-é"]), select(vec!["", " "]), scalar())
            .prop_map(|(f, sep, v)| format!("{f}{sep}{v}")),
        1 => text(),
        1 => select(vec!["'", "\"", "\\", "\\\"", "$", "`"]).prop_map(str::to_string),
    ];
    prop::collection::vec(opt, 0..6)
        .prop_map(|v| v.join(" "))
        .boxed()
}

#[test]
fn fuzz_ssh_config() {
    use provisioner::transport::{apply_ssh_args, config, ConnectTarget};
    let corpus = Arc::new(
        Corpus::new(&["Host ", "Match ", "\n  ", "=", "*", "!", "%h", "\"", "#", "ProxyJump ", "Port "])
            .seed("Host web*\n    HostName %h.lab.example\n    User deploy\n    Port 2200\n    IdentityFile /keys/web\n    ProxyJump ops@bastion:2222\n    ControlMaster auto\n\nHost *\n    User fallback\n")
            .seed("Host a b !c\nHostName=10.0.0.1\nPort=22\nMatch host x\n  User y\nProxyJump [::1]:22,u@h:1\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    let input = (
        prop_oneof![ssh_config_text(), mutated(corpus)],
        prop_oneof![word(), text()],
        ssh_args(),
    );
    run("ssh_config", input, |(text, address, args)| {
        // `Include` reads other files: the fuzzed config stays on its own.
        let text = text.to_ascii_lowercase().replace("include", "xnclude");
        std::fs::write(&path, &text).map_err(|e| e.to_string())?;
        let mut target = ConnectTarget::new("fuzz", address.as_str());
        let _ = apply_ssh_args(&mut target, args);
        if let Ok(cfg) = config::load(&path) {
            let r = config::resolve(&target, &cfg);
            for j in &r.proxy_jump {
                let _ = config::parse_jump(j);
            }
        }
        let _ = config::parse_jump(address);
        Ok(())
    });
}

#[test]
fn fuzz_ansible_cfg() {
    use provisioner::config::{ansible_cfg, ini};
    let corpus = Arc::new(
        Corpus::new(&["[defaults]\n", "[privilege_escalation]\n", " = ", ": ", "\n  ", ";", "#", "[", "]", "~/", ","])
            .seed("[defaults]\ninventory = hosts.ini, ~/other\nroles_path = roles:~/roles\nremote_user = ops\nforks = 10 ; inline\ntimeout: 30\nhost_key_checking = False\ngathering = smart\nprivate_key_file = ~/.ssh/id\n\n[privilege_escalation]\nbecome = True\nbecome_method = sudo\nbecome_user = root\nbecome_ask_pass = no\n\n[ssh_connection]\npipelining = True\n  continued\n"),
    );
    let entry = (
        select(vec![
            "inventory",
            "hostfile",
            "roles_path",
            "remote_user",
            "private_key_file",
            "forks",
            "timeout",
            "host_key_checking",
            "gathering",
            "become",
            "become_method",
            "become_user",
            "become_ask_pass",
            "bogus",
        ]),
        select(vec![" = ", "=", ": ", " : "]),
        scalar(),
    )
        .prop_map(|(k, s, v)| format!("{k}{s}{v}"));
    let generated = prop::collection::vec(
        (
            select(vec![
                "[defaults]",
                "[privilege_escalation]",
                "[ssh_connection]",
                "[x",
                "[]",
                "",
            ]),
            prop::collection::vec(
                prop_oneof![5 => entry, 1 => text().prop_map(|t| format!("  {t}"))],
                0..5,
            ),
        ),
        0..4,
    )
    .prop_map(|s| {
        s.into_iter()
            .map(|(h, e)| format!("{h}\n{}\n", e.join("\n")))
            .collect()
    });
    let home = PathBuf::from("/home/fuzz");
    run(
        "ansible_cfg",
        prop_oneof![generated, mutated(corpus)],
        |text: &String| {
            match ini::parse(text, "ansible.cfg") {
                Ok(parsed) => {
                    if let Ok(cfg) = ansible_cfg::resolve(&parsed, Path::new("/etc/x"), Some(&home))
                    {
                        let _ = provisioner::config::RunDefaults::from_config(&cfg);
                        let _: Vec<String> = ansible_cfg::ignored_entries(&cfg).collect();
                    }
                }
                Err(d) => {
                    let _ = d.to_string();
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// What hosts send: facts and probe answers

const FACT_SECTIONS: &[&str] = &[
    "uname",
    "fqdn",
    "os-release",
    "debian_version",
    "lsb",
    "route4",
    "link",
    "addr",
    "cpuinfo",
    "meminfo",
    "python",
    "init",
    "pkg",
    "date",
    "env",
    "user",
    "virt",
    "mounts",
    "end",
    "bogus",
];

fn fact_line(section: &'static str) -> BoxedStrategy<String> {
    match section {
        "date" => prop::collection::vec(prop_oneof![3 => number(), 1 => "\\PC{1,8}"], 0..15)
            .prop_map(|w| w.join(" "))
            .boxed(),
        "cpuinfo" => (
            select(vec![
                "processor",
                "physical id",
                "cpu cores",
                "siblings",
                "x",
            ]),
            number(),
        )
            .prop_map(|(k, v)| format!("{k}\t: {v}"))
            .boxed(),
        "meminfo" => (
            select(vec!["MemTotal", "MemFree", "SwapTotal", "SwapFree"]),
            number(),
        )
            .prop_map(|(k, v)| format!("{k}: {v} kB"))
            .boxed(),
        "addr" => (
            number(),
            word(),
            select(vec!["inet", "inet6", "x"]),
            word(),
            number(),
            text(),
        )
            .prop_map(|(n, dev, kind, a, p, rest)| {
                format!("{n}: {dev}    {kind} {a}.0.0.1/{p} brd {rest} scope {rest}")
            })
            .boxed(),
        "link" => (
            number(),
            word(),
            text(),
            number(),
            select(vec!["ether", "loopback", "none", "x"]),
            text(),
        )
            .prop_map(|(n, name, flags, mtu, k, mac)| {
                format!("{n}: {name}: <{flags}> mtu {mtu}\\    link/{k} {mac}")
            })
            .boxed(),
        "route4" => (word(), word(), word())
            .prop_map(|(gw, dev, src)| format!("8.8.8.8 via {gw} dev {dev} src {src}"))
            .boxed(),
        "mounts" => prop::collection::vec(prop_oneof![number(), text()], 0..8)
            .prop_map(|f| f.join("\t"))
            .boxed(),
        "user" => (number(), word(), number())
            .prop_map(|(u, n, g)| format!("uid={u}({n}) gid={g}({n}) groups={g}"))
            .boxed(),
        "os-release" | "env" | "virt" => (word(), text())
            .prop_map(|(k, v)| format!("{k}={v}"))
            .boxed(),
        _ => text().boxed(),
    }
}

fn host_facts_output() -> BoxedStrategy<String> {
    let section = prop::strategy::Union::new(FACT_SECTIONS.iter().map(|&name| {
        prop::collection::vec(fact_line(name), 0..5)
            .prop_map(move |lines| format!("==={name}===\n{}\n", lines.join("\n")))
    }));
    (
        "Linux [a-z0-9é.-]{0,10} [0-9.]{0,8} #1 SMP x86_64",
        prop::collection::vec(section, 0..12),
    )
        .prop_map(|(uname, s)| format!("===uname===\n{uname}\n{}===end===\n", s.concat()))
        .boxed()
}

#[test]
fn fuzz_host_facts() {
    use provisioner::facts::host::parse_host_facts;
    let corpus = Arc::new(
        Corpus::new(&[
            "===",
            "===end===\n",
            "===date===\n",
            ": ",
            "\t",
            " ",
            "\n",
            "/",
            "@",
            "<",
            ">",
            "é",
            "99999999999999999999",
        ])
        .files(&fixtures().join("facts/debian12_gather.txt"), |_| true),
    );
    run(
        "host_facts",
        prop_oneof![host_facts_output(), mutated(corpus)],
        |out| {
            let _ = parse_host_facts(out);
            Ok(())
        },
    );
}

fn probes() -> Vec<provisioner::facts::Probe> {
    use provisioner::facts::Probe;
    vec![
        Probe::Stat {
            path: "/etc/motd".into(),
            follow: false,
        },
        Probe::Read {
            path: "/etc/hosts".into(),
            max_bytes: 4096,
        },
        Probe::Dpkg {
            packages: vec!["mesos".into(), "zookeeper".into()],
        },
        Probe::Unit {
            name: "mesos-master".into(),
        },
        Probe::Command {
            script: "true".into(),
        },
        Probe::Stat {
            path: "/l".into(),
            follow: true,
        },
    ]
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A well-formed answer to `probes()`.
fn probe_answer_seed() -> String {
    format!(
        "@@ 0 stat\nlink 1\nmeta {}\ntarget {}\nsha1 da39a3ee5e6b4b0d3255bfef95601890afd80709\n@@ 1 read\ncontent {}\n@@ 2 dpkg\nout {}\n@@ 3 unit\nout {}\n@@ 4 command\nrc 0\nstdout {}\nstderr \n@@ 5 stat\nabsent\n@@ end\n",
        b64(b"81a4 0 0 6 1700000000 root root\n"),
        b64(b"/x\n"),
        b64(b"127.0.0.1 localhost\n"),
        b64(b"mesos\tmesos\tinstalled\t1.11.0\nzookeeper\tzookeeper\tnot-installed\t\n"),
        b64(b"LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n"),
        b64(b"ok\n"),
    )
}

fn probe_output() -> BoxedStrategy<Vec<u8>> {
    let field_value = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| b64(&b)),
        2 => (prop::collection::vec(prop_oneof![number(), word()], 0..9)).prop_map(|w| b64(w.join(" ").as_bytes())),
        2 => (number(), number(), number(), number(), number(), word(), word())
            .prop_map(|(m, u, g, s, t, o, gr)| b64(format!("{m} {u} {g} {s} {t} {o} {gr}").as_bytes())),
        1 => text(),
        1 => number(),
    ];
    let field = (
        select(vec![
            "meta", "target", "sha1", "link", "content", "out", "rc", "stdout", "stderr", "absent",
            "missing", "x",
        ]),
        field_value,
    )
        .prop_map(|(k, v)| format!("{k} {v}"));
    let section = (
        prop_oneof![5 => (0usize..7).prop_map(|i| i.to_string()), 1 => number()],
        select(vec!["stat", "read", "dpkg", "unit", "command", "bogus"]),
        prop::collection::vec(field, 0..5),
    )
        .prop_map(|(i, tag, fields)| format!("@@ {i} {tag}\n{}\n", fields.join("\n")));
    (
        prop::collection::vec(section, 0..8),
        select(vec!["@@ end\n", "", "@@ end", "@@  end\n"]),
    )
        .prop_map(|(s, end)| format!("{}{end}", s.concat()).into_bytes())
        .boxed()
}

#[test]
fn fuzz_probe_answers() {
    use provisioner::facts::probe::parse_probe_output;
    let all = probes();
    let corpus = Arc::new(
        Corpus::new(&[
            "@@ ", "@@ end\n", " stat\n", "meta ", "content ", "=", "\n", "\u{0}", "\u{ff}",
        ])
        .seed(probe_answer_seed()),
    );
    let input = (
        prop_oneof![probe_output(), mutated_bytes(corpus)],
        prop_oneof![Just(all.len()), 0..=all.len()],
    );
    run("probe_answers", input, |(out, n)| {
        let probes = &all[..*n];
        if let Ok(facts) = parse_probe_output(probes, out) {
            for p in probes {
                let _ = facts.get(p);
                if let Some(path) = p.path() {
                    let _ = facts.stat(path, true);
                    let _ = facts.stat(path, false);
                    let _ = facts.read(path);
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Regression tests: one per problem the fuzzers found (named after what broke).

// ---------------------------------------------------------------------------------------------
// Regression tests: one per problem the fuzzers found, named after what broke.

#[test]
fn inventory_with_huge_host_range_is_an_error_not_an_out_of_memory_abort() {
    let mut diags = Diagnostics::new();
    let file = parse_ini("[web]\nh[0:9223372036854775807]\n", "i.ini", &mut diags);
    let raw = RawInventory {
        files: vec![RawInventoryFile::Ini(file)],
        vars_dirs: Vec::new(),
    };
    let _ = provisioner::resolve::inventory::resolve(&raw, &mut diags);
    assert!(
        diags.to_string().contains("more than 100000 hosts"),
        "{diags}"
    );
}

#[test]
fn host_facts_with_huge_cpu_counts_do_not_overflow() {
    let out = "===uname===\nLinux h 6.1 #1 SMP x86_64\n===cpuinfo===\ncpu cores\t: 9223372036854775808\nsiblings\t: 18446744073709551615\nphysical id\t: 0\nphysical id\t: 1\n===end===\n";
    let facts = provisioner::facts::host::parse_host_facts(out).unwrap();
    assert_eq!(
        facts["ansible_processor_vcpus"],
        serde_json::json!(u64::MAX)
    );
}

#[test]
fn host_facts_with_a_multibyte_date_field_do_not_panic() {
    let out = "===uname===\nLinux h 6.1 #1 SMP x86_64\n===date===\n2024 01 02 03 04 05 1700000000 UTC +0000 Monday 1 01 a\u{e9}\u{e9}\u{e9}\u{e9}\n===end===\n";
    let facts = provisioner::facts::host::parse_host_facts(out).unwrap();
    assert_eq!(
        facts["ansible_date_time"]["iso8601_micro"],
        serde_json::json!("2023-11-14T22:13:20.a\u{e9}\u{e9}\u{e9}\u{e9}Z")
    );
}

#[test]
fn known_hosts_pattern_with_many_stars_does_not_hang() {
    use provisioner::transport::known_hosts;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    std::fs::write(&path, format!("{}b {ED25519}\n", "*a".repeat(30))).unwrap();
    let key = russh::keys::PublicKey::from_openssh(ED25519).unwrap();
    let status = known_hosts::check(&path, &"a".repeat(60), 22, &key).unwrap();
    assert_eq!(status, known_hosts::HostKeyStatus::Unknown);
}

#[test]
fn yaml_int_with_a_sign_after_the_base_prefix_does_not_panic() {
    let docs = yaml::load_str(
        "a: -0x-8000000000000000\nb: -0-1000000000000000000000\n",
        "t.yml",
    )
    .unwrap();
    let j = docs[0].to_json();
    assert_eq!(j["a"], serde_json::json!("-0x-8000000000000000"));
    assert_eq!(j["b"], serde_json::json!("-0-1000000000000000000000"));
}

#[test]
fn inventory_ini_value_nested_a_million_deep_does_not_overflow_the_stack() {
    let line = format!("[web]\nh1 x={}\n", "[".repeat(1_000_000));
    let mut diags = Diagnostics::new();
    let file = parse_ini(&line, "i.ini", &mut diags);
    assert!(diags.is_empty(), "{diags}");
    assert_eq!(file.lines.len(), 2);
}

#[test]
fn template_with_deeply_nested_calls_does_not_overflow_the_stack() {
    let t = format!("{{{{ 'foobar' is match({}'bar') }}}}", "'('(".repeat(3000));
    let templar = Templar::new(".");
    let e = templar.render_str(&t, &Map::new()).unwrap_err();
    assert!(
        e.message.contains("nests brackets more than 32 deep"),
        "{e}"
    );
    let e = template::check_syntax(&t, &Loc::new("t.j2", 1, 1)).unwrap_err();
    assert!(e.to_string().contains("more than 32 deep"), "{e}");
    for chain in ["not ", "- ", "1 + ", "x | string | "] {
        let expr = format!("{}1", chain.repeat(100_000));
        let e = templar.eval_when(&[expr], &Map::new()).unwrap_err();
        assert!(e.message.contains("longer than 1000 tokens"), "{e}");
    }
}

/// `v0` = `x{{ v1 }}`, ..., `v<n-1>` = `x{{ v<n> }}`, and `v<n>` = `last`.
fn var_chain(n: usize, last: &str) -> Map<String, Value> {
    let mut vars: Map<String, Value> = (0..n)
        .map(|i| {
            (
                format!("v{i}"),
                Value::String(format!("x{{{{ v{} }}}}", i + 1)),
            )
        })
        .collect();
    vars.insert(format!("v{n}"), Value::String(last.into()));
    vars
}

#[test]
fn template_variable_chain_deeper_than_the_limit_is_an_error() {
    let vars = var_chain(1000, "end");
    let e = Templar::new(".").render_str("{{ v0 }}", &vars).unwrap_err();
    assert!(e.message.contains("nest more than 64 levels"), "{e}");
    // 60 levels are fine.
    let ok = Templar::new(".").render_str("{{ v940 }}", &vars).unwrap();
    assert_eq!(ok, Value::String(format!("{}end", "x".repeat(60))));
}

#[test]
fn template_lookup_of_itself_is_an_error_not_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/self.j2"),
        "{{ lookup('template', 'self.j2') }}",
    )
    .unwrap();
    std::fs::write(dir.path().join("inc.j2"), "{% include 'inc.j2' %}").unwrap();
    let templar = Templar::new(dir.path());
    let e = templar
        .render_str("{{ lookup('template', 'self.j2') }}", &Map::new())
        .unwrap_err();
    assert!(e.message.contains("nest more than 64 levels"), "{e}");
    let e = templar
        .render_file(&dir.path().join("inc.j2"), &Map::new())
        .unwrap_err();
    assert!(e.message.contains("recursion limit exceeded"), "{e}");
}

#[test]
fn template_chain_of_failing_variables_is_not_retried_exponentially() {
    // Each failing variable used to be templated again by every reader: 2^40 renders.
    let vars = var_chain(40, "{{ 1 // 0 }}");
    let e = Templar::new(".").render_str("{{ v0 }}", &vars).unwrap_err();
    assert!(e.message.contains("while templating variable 'v40'"), "{e}");
}

#[test]
fn template_macro_recursion_stops_with_an_error() {
    let t = "{% macro r(n) %}{{ r(n) }}{% endmacro %}{{ r(1) }}";
    let e = Templar::new(".").render_str(t, &Map::new()).unwrap_err();
    assert!(e.message.contains("recursion"), "{e}");
}

#[test]
fn template_nested_loops_run_out_of_fuel_with_a_clear_error() {
    let t = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let templar = Templar::new(".").with_limits(template::Limits {
        fuel: 100_000,
        ..template::Limits::default()
    });
    let e = templar.render_str(t, &Map::new()).unwrap_err();
    assert_eq!(
        e.message,
        "the template ran more than 100000 operations (a loop over too much?)"
    );
    let e = templar.eval_when(&[format!("({t}) is defined")], &Map::new());
    assert!(e.is_err());
    // The default budget stops the same loops too.
    let e = Templar::new(".").render_str(t, &Map::new()).unwrap_err();
    assert!(e.message.contains("more than 10000000 operations"), "{e}");
}

#[test]
fn template_output_over_the_limit_is_an_error() {
    let templar = Templar::new(".").with_limits(template::Limits {
        output: 1000,
        ..template::Limits::default()
    });
    let t = "{% for i in range(2000) %}x{% endfor %}";
    let e = templar.render_str(t, &Map::new()).unwrap_err();
    assert_eq!(e.message, "the template's output is larger than 1000 bytes");
    let e = templar
        .render_str("{{ 'x' * 2000 }}", &Map::new())
        .unwrap_err();
    assert_eq!(e.message, "the template's output is larger than 1000 bytes");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.j2"), t).unwrap();
    let e = templar
        .render_file(&dir.path().join("big.j2"), &Map::new())
        .unwrap_err();
    assert_eq!(e.message, "the template's output is larger than 1000 bytes");
    // The default is 64 MiB.
    let e = Templar::new(".")
        .render_str("{{ 'x' * 70000000 }}", &Map::new())
        .unwrap_err();
    assert!(e.message.contains("larger than 67108864 bytes"), "{e}");
}

#[test]
fn template_filters_with_a_huge_size_are_errors_not_allocations() {
    let templar = Templar::new(".");
    for (t, want) in [
        (
            "{{ 'a\\nb' | indent(99999999999) }}",
            "indent: width 99999999999 is over the limit of 1024",
        ),
        (
            "{{ 'a\\nb' | indent(width=5000) }}",
            "indent: width 5000 is over the limit of 1024",
        ),
        (
            "{{ [[[[1]]]] | to_nice_json(indent=4611686018427387904) }}",
            "to_nice_json: width 4611686018427387904 is over the limit of 1024",
        ),
        (
            "{{ [[1]] | to_json(indent=5000) }}",
            "to_json: width 5000 is over the limit of 1024",
        ),
        (
            "{{ {'a': {'b': 1}} | to_nice_yaml(indent=5000) }}",
            "to_nice_yaml: width 5000 is over the limit of 1024",
        ),
        (
            "{{ [1] | tojson(indent=5000) }}",
            "tojson: width 5000 is over the limit of 1024",
        ),
        (
            "{{ [1] | slice(1000000000000) }}",
            "slice: count 1000000000000 is over the limit of 100000",
        ),
        (
            "{{ [1] | batch(1000000000000, 0) }}",
            "batch: count 1000000000000 is over the limit of 100000",
        ),
        (
            "{{ '%.99999999999f' | format(1.5) }}",
            "format: width or precision 99999999999 is over the limit of 1024",
        ),
        (
            "{{ '%-2000s|' | format('x') }}",
            "format: width or precision 2000 is over the limit of 1024",
        ),
    ] {
        let e = templar.render_str(t, &Map::new()).unwrap_err();
        assert!(e.message.contains(want), "{t}: {e}");
    }
    let vars: Map<String, Value> = [("s".to_string(), Value::String("a\nb".into()))]
        .into_iter()
        .collect();
    let ok = templar.render_str("{{ s | indent(2) }}|{{ '%5.1f' | format(1.25) }}", &vars);
    assert_eq!(ok.unwrap(), Value::String("a\n  b|  1.2".into()));
}

#[test]
fn template_int_filter_with_a_base_out_of_range_does_not_panic() {
    // Found with FUZZ_SEED=12345 FUZZ_CASES=40000: from_str_radix panics outside 2..=36.
    let t = "{% for x in {'' | int(a, 37): a} %}{% break %}{% endfor %}";
    let vars: Map<String, Value> = [("a".to_string(), Value::from(1))].into_iter().collect();
    assert!(Templar::new(".").render_str(t, &vars).is_ok());
    for base in [0, 1, 37, u32::MAX] {
        let t = format!("{{{{ '12' | int(0, {base}) }}}}");
        assert_eq!(
            Templar::new(".").render_str(&t, &Map::new()).unwrap(),
            Value::from("12")
        );
    }
}

#[test]
fn inventory_host_pattern_with_thousands_of_ranges_does_not_overflow_the_stack() {
    // Found with FUZZ_SEED=777 FUZZ_CASES=40000: one recursion level per range.
    let mut diags = Diagnostics::new();
    let src = format!("[dbs]\ndb-{}\n", "[a:c]".repeat(3000));
    let file = parse_ini(&src, "i.ini", &mut diags);
    let raw = RawInventory {
        files: vec![RawInventoryFile::Ini(file)],
        vars_dirs: Vec::new(),
    };
    let _ = provisioner::resolve::inventory::resolve(&raw, &mut diags);
    assert!(diags.to_string().contains("more than 16 ranges"), "{diags}");
}

#[test]
fn template_divisibleby_zero_is_an_error_not_a_panic() {
    // Found with FUZZ_SEED=777 FUZZ_CASES=40000: minijinja's divisibleby computes `a % 0`.
    let t = "{% set a = range((0 is divisibleby(false))) %}";
    let e = Templar::new(".").render_str(t, &Map::new()).unwrap_err();
    assert!(e.message.contains("division or modulo by zero"), "{e}");
}
