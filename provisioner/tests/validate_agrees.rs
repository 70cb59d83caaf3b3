//! `validate` and `apply` agree: for every kind of expression a playbook has, an unknown
//! filter, test or lookup (or a missing template file) that would fail when the task runs
//! already fails validation, with its file and line, before any host is touched.
//!
//! Each case puts one bad expression in one place. Two checks per case: the engine's
//! templating fails on that expression (what the run would meet), and `session::prepare`
//! (what `validate`, `plan` and `apply` do first) reports it at the expected place.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use provisioner::exec::session::{self, RunRequest};
use provisioner::exec::Mode;
use provisioner::template::Templar;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn request(dir: &Path) -> RunRequest {
    RunRequest {
        inventory: vec![dir.join("inventory.ini")],
        playbook: dir.join("site.yml"),
        inline: None,
        limit: None,
        mode: Mode::Check,
        diff: false,
        verbose: false,
        forks: 1,
        extra_vars: Default::default(),
        roles_path: vec![],
        command_timeout: Duration::from_secs(10),
        tags: vec![],
        skip_tags: vec![],
        stack: None,
        defaults: Default::default(),
    }
}

/// The play around a case: `{CASE}` is replaced by the case's lines (at line 6).
const PLAY: &str = "- hosts: all
  gather_facts: false
  vars:
    x: 1
  tasks:
{CASE}
    - debug: msg=done
  handlers:
    - name: restart
      debug: msg=restarted
";

struct Case {
    what: &'static str,
    /// Lines inserted at line 6 (4-space indented task list items), or a whole playbook.
    yaml: &'static str,
    /// Files of the project besides the playbook.
    files: &'static [(&'static str, &'static str)],
    /// The expression the run would template, and whether it is a bare `when:`-style one.
    runtime: (&'static str, bool),
    /// `file:line` (relative to the project) and a word the diagnostic must contain.
    at: &'static str,
    says: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "task argument",
        yaml: "    - debug: msg=\"{{ x | nofilter }}\"",
        files: &[],
        runtime: ("{{ x | nofilter }}", false),
        at: "site.yml:6",
        says: "no filter named `nofilter`",
    },
    Case {
        what: "when",
        yaml: "    - debug: msg=hi\n      when: x is notatest",
        files: &[],
        runtime: ("x is notatest", true),
        at: "site.yml:6",
        says: "no test named `notatest`",
    },
    Case {
        what: "loop",
        yaml: "    - debug: msg={{ item }}\n      loop: \"{{ lookup('nosuch', 'a') }}\"",
        files: &[],
        runtime: ("{{ lookup('nosuch', 'a') }}", false),
        at: "site.yml:6",
        says: "lookup plugin `nosuch` is not supported",
    },
    Case {
        what: "task vars",
        yaml: "    - debug: msg={{ y }}\n      vars:\n        y: \"{{ x | nofilter }}\"",
        files: &[],
        runtime: ("{{ x | nofilter }}", false),
        at: "site.yml:6",
        says: "nofilter",
    },
    Case {
        what: "template file",
        yaml: "    - template: src=t.j2 dest=/tmp/t",
        files: &[("templates/t.j2", "line one\n{{ x | nofilter }}\n")],
        runtime: ("line one\n{{ x | nofilter }}\n", false),
        at: "templates/t.j2:2",
        says: "no filter named `nofilter`",
    },
    Case {
        what: "missing template file",
        yaml: "    - template: src=missing.j2 dest=/tmp/t",
        files: &[],
        runtime: ("{{ lookup('template', 'missing.j2') }}", false),
        at: "site.yml:6",
        says: "template `missing.j2` not found",
    },
    Case {
        what: "template lookup",
        yaml: "    - copy: dest=/tmp/t content=\"{{ lookup('template', 'l.j2') }}\"",
        files: &[("templates/l.j2", "a\nb\n{{ x is nottest }}\n")],
        runtime: ("a\nb\n{{ x is nottest }}\n", false),
        at: "templates/l.j2:3",
        says: "no test named `nottest`",
    },
    Case {
        what: "handler argument",
        yaml: "    - debug: msg=hi\n      notify: restart",
        files: &[],
        runtime: ("{{ x | nofilter }}", false),
        at: "site.yml:10",
        says: "no filter named `nofilter`",
    },
    Case {
        what: "changed_when",
        yaml: "    - command: 'true'\n      changed_when: x | nofilter",
        files: &[],
        runtime: ("x | nofilter", true),
        at: "site.yml:6",
        says: "changed_when: no filter named `nofilter`",
    },
    Case {
        what: "failed_when",
        yaml: "    - command: 'true'\n      failed_when: x is notatest",
        files: &[],
        runtime: ("x is notatest", true),
        at: "site.yml:6",
        says: "failed_when: no test named `notatest`",
    },
    Case {
        what: "until",
        yaml: "    - command: 'true'\n      register: r\n      until: r.rc | nofilter",
        files: &[],
        runtime: ("x | nofilter", true),
        at: "site.yml:6",
        says: "until: no filter named `nofilter`",
    },
    Case {
        what: "notify name",
        yaml: "    - command: 'true'\n      notify: \"{{ 'restart' | nofilter }}\"",
        files: &[],
        runtime: ("{{ 'restart' | nofilter }}", false),
        at: "site.yml:6",
        says: "notify: no filter named `nofilter`",
    },
    Case {
        what: "task name",
        yaml: "    - name: \"step {{ x | nofilter }}\"\n      debug: msg=hi",
        files: &[],
        runtime: ("step {{ x | nofilter }}", false),
        at: "site.yml:6",
        says: "name: no filter named `nofilter`",
    },
    Case {
        what: "role default",
        yaml: "    - include_tasks: noop.yml",
        files: &[
            ("noop.yml", "- debug: msg=hi\n"),
            ("roles/r/defaults/main.yml", "z: \"{{ x | nofilter }}\"\n"),
            ("roles/r/tasks/main.yml", "- debug: msg={{ z }}\n"),
        ],
        runtime: ("{{ x | nofilter }}", false),
        at: "roles/r/defaults/main.yml",
        says: "nofilter",
    },
];

#[test]
fn what_fails_at_run_time_fails_validation_first() {
    for case in CASES {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        write(dir, "inventory.ini", "h1 ansible_host=127.0.0.1\n");
        let mut play = PLAY.replace("{CASE}", case.yaml);
        if case.what == "role default" {
            play = play.replace("  tasks:\n", "  roles: [r]\n  tasks:\n");
        }
        if case.what == "handler argument" {
            play = play.replace("debug: msg=restarted", "debug: msg=\"{{ x | nofilter }}\"");
        }
        write(dir, "site.yml", &play);
        for (rel, text) in case.files {
            write(dir, rel, text);
        }

        // The run would fail on it.
        let mut vars = serde_json::Map::new();
        vars.insert("x".into(), serde_json::json!(1));
        vars.insert(
            "playbook_dir".into(),
            serde_json::json!(dir.display().to_string()),
        );
        let templar = Templar::new(dir);
        let (src, is_expr) = case.runtime;
        let runtime = if is_expr {
            templar.eval_when(&[src.to_string()], &vars).map(|_| ())
        } else {
            templar.render_str(src, &vars).map(|_| ())
        };
        assert!(
            runtime.is_err(),
            "{}: the run would not fail on {src:?}",
            case.what
        );

        // Validation fails first, at the right place.
        let err = match session::prepare(&request(dir)) {
            Ok(_) => panic!("{}: validate passed\n{play}", case.what),
            Err(e) => e.to_string(),
        };
        let at = format!("{}/{}", dir.display(), case.at);
        let line = err
            .lines()
            .find(|l| l.contains(&at))
            .unwrap_or_else(|| panic!("{}: nothing at {at}:\n{err}", case.what));
        assert!(line.contains(case.says), "{}: {line}\n{err}", case.what);
    }
}

#[test]
fn an_unknown_module_argument_fails_validation() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "inventory.ini", "h1\n");
    write(
        d.path(),
        "site.yml",
        &PLAY.replace("{CASE}", "    - copy: dest=/tmp/x content=y nosuchparam=1"),
    );
    let err = session::prepare(&request(d.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("site.yml:6") && err.contains("nosuchparam"),
        "{err}"
    );
}

#[test]
fn known_lookups_filters_and_template_files_validate() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "inventory.ini", "h1\n");
    write(
        d.path(),
        "templates/ok.j2",
        "{{ x | to_json }} {{ lookup('env', 'HOME') }}\n",
    );
    write(
        d.path(),
        "site.yml",
        &PLAY.replace(
            "{CASE}",
            "    - copy: dest=/tmp/x content=\"{{ lookup('template', 'ok.j2') }}{{ query('fileglob', '*.j2') | length }}\"\n    - template: src=ok.j2 dest=/tmp/y\n      when: x is defined and x | int > 0",
        ),
    );
    if let Err(e) = session::prepare(&request(d.path())) {
        panic!("{e}");
    }
}
