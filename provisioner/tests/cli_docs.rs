//! `provisioner completions SHELL` and `provisioner man`: hermetic checks through the binary.
//! Every completion script names every subcommand; bash's parses with `bash -n`; the man pages
//! are roff that names every subcommand (and, where groff is installed, formats without a
//! warning).

use std::process::{Command, Stdio};

use provisioner::manual::subcommand_paths;

fn provisioner(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run provisioner");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn top_level() -> Vec<String> {
    subcommand_paths()
        .into_iter()
        .filter(|p| p.len() == 1)
        .map(|p| p[0].clone())
        .collect()
}

#[test]
fn completions_for_every_shell_name_every_subcommand() {
    let top = top_level();
    for want in ["validate", "apply", "lab", "completions", "man", "tls"] {
        assert!(top.iter().any(|t| t == want), "{want} missing from {top:?}");
    }
    let nested: Vec<Vec<String>> = subcommand_paths()
        .into_iter()
        .filter(|p| p.len() == 2)
        .collect();
    assert!(!nested.is_empty());
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = provisioner(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for name in &top {
            assert!(
                out.contains(name.as_str()),
                "{shell}: no `{name}` in its script"
            );
        }
        for p in &nested {
            assert!(
                out.contains(p[1].as_str()),
                "{shell}: no `{}` in its script",
                p.join(" ")
            );
        }
    }
}

#[test]
fn bash_completion_parses_and_completes_subcommands() {
    let (_, script, _) = provisioner(&["completions", "bash"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("provisioner.bash");
    std::fs::write(&file, &script).expect("write");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash -n");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // Load it and call it as bash does (command, word, previous word) for the completions of `provisioner l` and `provisioner lab u`.
    let probe = format!(
        "source {f}\n\
         COMP_WORDS=(provisioner l); COMP_CWORD=1; _provisioner provisioner l provisioner; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(provisioner lab u); COMP_CWORD=2; _provisioner provisioner u lab; echo \"${{COMPREPLY[*]}}\"\n",
        f = file.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(probe)
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.first().map(|l| l.trim()), Some("lab"), "{text}");
    assert_eq!(lines.get(1).map(|l| l.trim()), Some("up"), "{text}");
}

#[test]
fn an_unknown_shell_is_refused() {
    let (code, out, err) = provisioner(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("tcsh"), "{err}");
}

#[test]
fn man_page_is_roff_naming_every_subcommand() {
    let (code, page, err) = provisioner(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.lines().any(|l| l.starts_with(".TH provisioner 1")),
        "{page}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "{section} missing");
    }
    for name in top_level() {
        assert!(
            page.contains(&format!("provisioner\\-{name}(1)")),
            "provisioner-{name}(1) not listed"
        );
    }
    // Every line is a roff request (a known macro), a comment, or text; never a stray escape.
    for line in page.lines() {
        if let Some(req) = line.strip_prefix('.') {
            let mac = req.split_whitespace().next().unwrap_or("");
            assert!(
                [
                    "TH", "SH", "SS", "TP", "PP", "RS", "RE", "IP", "B", "I", "br", "ie", "el",
                    "\\\""
                ]
                .contains(&mac)
                    || mac.starts_with("\\\""),
                "unexpected request {line:?}"
            );
        }
    }
    if std::path::Path::new("/usr/bin/groff").exists() {
        let mut child = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("groff");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(page.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("groff");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn man_page_of_a_subcommand_and_of_a_wrong_one() {
    let (code, page, err) = provisioner(&["man", "lab", "up"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.contains(".TH provisioner-lab-up 1"), "{page}");
    assert!(
        page.contains(&format!("\"provisioner {}\"", env!("CARGO_PKG_VERSION"))),
        "{page}"
    );
    assert!(page.contains("\\-\\-masters"), "lab up's flags: {page}");
    let (code, _, err) = provisioner(&["man", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("nope") && err.contains("apply"), "{err}");
}
