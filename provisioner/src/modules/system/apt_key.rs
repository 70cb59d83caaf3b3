//! `apt_key`, in the deb822 / `signed-by` style: keys live in dedicated keyring files
//! (e.g. `/etc/apt/keyrings/docker.gpg`) that a repository's `signed-by` names.
//!
//! **Deviation from Ansible.** ansible-core 2.14's apt_key drives the deprecated `apt-key`
//! (which imports into /etc/apt/trusted.gpg or `--keyring FILE`). We never call apt-key:
//! `keyring` is required, and the key material is written to that file directly —
//! dearmored with `gpg --dearmor` on the host when the keyring ends in `.gpg` (an already binary
//! key is copied as is), or as armored text for `.asc`. A key added to an existing `.gpg`
//! keyring is appended (concatenated binary keys are a valid keyring for apt); an `.asc` keyring
//! holds one armored key and is replaced. The file is written atomically with mode 0644.
//! Removing (`state: absent`) deletes the keyring file when the key is its only key, else
//! deletes the key with `gpg --no-default-keyring --keyring FILE --delete-keys FPR` (`.gpg` only).
//!
//! What follows Ansible: `id` parsing (8, 16 or more hex digits, optional `0x`; the last 16 are
//! compared, or the last 8 for an 8-digit id), the key list (`pub`/`sub` key ids that are not
//! expired), `changed` (present: the id is not in the keyring; absent: it is), the id of the
//! first key of the material when `id` is omitted, and the result keys `id`, `short_id`, `fp`,
//! `key_id`, `before`, `after` (after a change). The probe lists the keyring with
//! `gpg --show-keys --with-colons` (a throwaway GNUPGHOME, so nothing is written) and, without
//! `id`, the material (file, inline data or URL, downloaded by python3 urllib).
//! `keyserver` is not supported.

use super::args::{p, A};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

pub struct AptKey;
pub static APT_KEY: AptKey = AptKey;

const PARAMS: &[ParamSpec] = &[
    p("id"),
    p("url"),
    p("data"),
    p("file"),
    p("keyring"),
    p("validate_certs"),
    p("state"),
];

enum Src {
    Url(String),
    Data(String),
    File(String),
    None,
}

struct K {
    id: Option<String>,
    src: Src,
    keyring: String,
    validate_certs: bool,
    present: bool,
}

fn parse(args: &Args) -> Result<K, OpError> {
    let a = A::new(args, PARAMS)?;
    a.exclusive(&["data", "file", "url"])?;
    let state = a
        .choice("state", &["absent", "present"], Some("present"))?
        .unwrap_or_default();
    let keyring = a.path("keyring")?.ok_or_else(|| {
        OpError::new(
            "apt_key: provisioner requires keyring (e.g. /etc/apt/keyrings/NAME.gpg, named by \
             the repository's signed-by); apt-key's shared trusted.gpg is deprecated",
        )
    })?;
    if !(keyring.ends_with(".gpg") || keyring.ends_with(".asc")) {
        return Err(OpError::new(
            "apt_key: keyring must end in .gpg (binary) or .asc (armored)",
        ));
    }
    let src = if let Some(u) = a.str("url")? {
        Src::Url(u)
    } else if let Some(d) = a.str("data")? {
        Src::Data(d)
    } else if let Some(f) = a.path("file")? {
        Src::File(f)
    } else {
        Src::None
    };
    let present = state == "present";
    if present && matches!(src, Src::None) {
        return Err(OpError::new(
            "apt_key: one of url, data or file is required with state=present",
        ));
    }
    Ok(K {
        id: a.str("id")?.filter(|s| !s.is_empty()),
        src,
        keyring,
        validate_certs: a.bool_or("validate_certs", true)?,
        present,
    })
}

/// Downloads `argv[1]` to stdout (argv[2] = "0" disables certificate checks); exit 2 on error.
const FETCH: &str = r#"import ssl, sys, urllib.request as U
ctx = None if sys.argv[2] == "1" else ssl._create_unverified_context()
try:
    r = U.urlopen(U.Request(sys.argv[1], headers={"User-agent": "ansible-httpget"}), timeout=30, context=ctx)
    if r.status != 200:
        raise Exception("HTTP Error %s" % r.status)
    sys.stdout.buffer.write(r.read())
except Exception as e:
    sys.stderr.write("Failed to download key at %s: %s\n" % (sys.argv[1], e))
    sys.exit(2)
"#;

/// A shell command printing the key material on stdout (the data itself comes on stdin).
fn material_cmd(k: &K) -> String {
    match &k.src {
        Src::Url(u) => format!(
            "python3 -c {} {} {}",
            quote(FETCH),
            quote(u),
            if k.validate_certs { "1" } else { "0" }
        ),
        Src::File(f) => format!("cat {}", quote(f)),
        Src::Data(_) | Src::None => "cat".to_string(),
    }
}

const GNUPG_TMP: &str =
    "g=$(mktemp -d) || exit 1; trap 'rm -rf \"$g\"' EXIT; export GNUPGHOME=\"$g\"";

fn probe_script(k: &K) -> String {
    let kr = quote(&k.keyring);
    let mut s = format!(
        "{GNUPG_TMP}; echo '== keyring'; if [ -e {kr} ]; then gpg --batch --show-keys --with-colons {kr} 2>/dev/null; fi; "
    );
    if k.id.is_none() {
        let feed = match &k.src {
            Src::Data(d) => format!("printf '%s\\n' {}", quote(d)),
            _ => material_cmd(k),
        };
        s.push_str(&format!(
            "echo '== source'; {feed} | gpg --batch --show-keys --with-colons 2>/dev/null; "
        ));
    }
    s.push_str("true");
    s
}

/// Ansible's `parse_key_id`: (short id, compared id, full id).
fn parse_key_id(id: &str) -> Result<(String, String, String), OpError> {
    let invalid = || OpError::new("Invalid key_id");
    let mut k = id.to_uppercase();
    let hex = k.strip_prefix("0X").unwrap_or(&k);
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    if let Some(h) = k.strip_prefix("0X") {
        k = h.to_string();
    }
    let n = k.len();
    if n != 8 && n != 16 && n <= 16 {
        return Err(invalid());
    }
    let short = k[n - 8..].to_string();
    let fp = if n > 16 {
        k[n - 16..].to_string()
    } else {
        k.clone()
    };
    Ok((short, fp, k))
}

/// Key ids (`pub`/`sub`, not expired) and full fingerprints of primary keys, from with-colons.
fn keys_of(colons: &str) -> (Vec<String>, Vec<String>) {
    let mut ids = Vec::new();
    let mut fprs = Vec::new();
    let mut want_fpr = false;
    for line in colons.lines() {
        let f: Vec<&str> = line.split(':').collect();
        match f.first().copied() {
            Some(t @ ("pub" | "sub")) => {
                if f.get(1) != Some(&"e") {
                    if let Some(id) = f.get(4) {
                        ids.push(id.to_string());
                    }
                }
                want_fpr = t == "pub";
            }
            Some("fpr") => {
                if want_fpr {
                    if let Some(fp) = f.get(9) {
                        fprs.push(fp.to_string());
                    }
                }
                want_fpr = false;
            }
            _ => {}
        }
    }
    (ids, fprs)
}

impl Module for AptKey {
    fn names(&self) -> &'static [&'static str] {
        &[
            "apt_key",
            "ansible.builtin.apt_key",
            "ansible.legacy.apt_key",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let k = parse(args)?;
        Ok(vec![Probe::Command {
            script: probe_script(&k),
        }])
    }

    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let k = parse(args)?;
        let out = match facts.get(&Probe::Command {
            script: probe_script(&k),
        }) {
            Some(ProbeResult::Command(o)) => o.stdout.clone(),
            _ => return Err(OpError::new("internal: apt_key probe was not answered")),
        };
        let (ring_text, src_text) = match out.split_once("== source\n") {
            Some((a, b)) => (a, b),
            None => (out.as_str(), ""),
        };
        let (ring_ids, ring_fprs) = keys_of(ring_text);
        let id = match &k.id {
            Some(i) => i.clone(),
            None => keys_of(src_text).0.into_iter().next().ok_or_else(|| {
                OpError::new(match &k.src {
                    Src::Url(u) => format!("error getting key id from url: {u}"),
                    Src::File(f) => format!("Unable to extract key from '{f}'"),
                    _ => "Unable to extract key from 'inline data'".to_string(),
                })
            })?,
        };
        let (short, fp, key_id) = parse_key_id(&id)?;
        let short_format = key_id.len() == 8;
        let before: Vec<String> = if short_format {
            ring_ids
                .iter()
                .map(|i| i[i.len().saturating_sub(8)..].to_string())
                .collect()
        } else {
            ring_ids.clone()
        };
        let mut result = Map::new();
        result.insert("id".into(), json!(id));
        result.insert("short_id".into(), json!(short));
        result.insert("fp".into(), json!(fp));
        result.insert("key_id".into(), json!(key_id));
        result.insert("before".into(), json!(before));
        let has = if short_format {
            before.contains(&short)
        } else {
            before.contains(&fp)
        };
        let kr = quote(&k.keyring);
        if k.present {
            if has {
                return Ok(Planned::NoChange { result });
            }
            let armored_ring = k.keyring.ends_with(".asc");
            let convert = if armored_ring {
                "cp \"$m\" \"$m.out\"".to_string()
            } else {
                "if grep -q -- '-----BEGIN PGP' \"$m\"; then gpg --batch --dearmor < \"$m\" > \"$m.out\"; else cp \"$m\" \"$m.out\"; fi".to_string()
            };
            let keep = if armored_ring {
                String::new()
            } else {
                format!("if [ -e {kr} ]; then cat {kr}; fi; ")
            };
            let want = if short_format { &short } else { &fp };
            let script = format!(
                "set -e; {GNUPG_TMP}; m=\"$g/key\"; {} > \"$m\"; {convert}; \
                 {{ {keep}cat \"$m.out\"; }} > \"$g/ring\"; \
                 if ! gpg --batch --show-keys --with-colons \"$g/ring\" 2>/dev/null | \
                 grep -Eq '^(pub|sub):[^e:]*:[^:]*:[^:]*:[0-9A-F]*{want}:'; then \
                 echo 'apt-key did not return an error, but failed to add the key (check that the id is correct and *not* a subkey)' >&2; exit 1; fi; \
                 mkdir -p \"$(dirname {kr})\"; t=$(mktemp {}); cat \"$g/ring\" > \"$t\"; chmod 0644 \"$t\"; mv -f \"$t\" {kr}",
                material_cmd(&k),
                quote(&format!("{}.XXXXXX", k.keyring)),
            );
            let stdin = match &k.src {
                Src::Data(d) => Some(format!("{d}\n").into_bytes()),
                _ => None,
            };
            let mut after = before.clone();
            after.push(if short_format { short } else { fp });
            result.insert("_apt_key_after".into(), json!(after));
            return Ok(Planned::Change {
                actions: vec![Action::Exec { script, stdin }],
                diffs: Vec::new(),
                result,
            });
        }
        if !has {
            return Ok(Planned::NoChange { result });
        }
        let only_key = ring_fprs.len() <= 1;
        let script = if only_key {
            format!("rm -f {kr}")
        } else if k.keyring.ends_with(".asc") {
            return Err(OpError::new(
                "apt_key: cannot remove one key from an armored (.asc) keyring holding several keys",
            ));
        } else {
            let full = ring_fprs
                .iter()
                .find(|f| f.ends_with(&fp) || (short_format && f.ends_with(&short)))
                .cloned()
                .unwrap_or(fp.clone());
            format!(
                "{GNUPG_TMP}; gpg --batch --yes --no-default-keyring --keyring {kr} --delete-keys {} && rm -f {}",
                quote(&full),
                quote(&format!("{}~", k.keyring))
            )
        };
        let after: Vec<Value> = before
            .iter()
            .filter(|i| !(i.ends_with(&fp) || (short_format && **i == short)))
            .map(|i| json!(i))
            .collect();
        result.insert("_apt_key_after".into(), Value::Array(after));
        Ok(Planned::Change {
            actions: vec![Action::Exec {
                script,
                stdin: None,
            }],
            diffs: Vec::new(),
            result,
        })
    }

    fn finish(&self, _args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let Planned::Change { result, .. } = planned else {
            return crate::modules::default_finish(planned, outputs);
        };
        let mut data = result.clone();
        let after = data.remove("_apt_key_after");
        let Some(out) = outputs.first() else {
            return ModuleResult {
                changed: true,
                data,
                ..Default::default()
            };
        };
        if out.rc != 0 {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return ModuleResult {
                changed: true,
                failed: true,
                msg: Some(err),
                data,
                ..Default::default()
            };
        }
        if let Some(a) = after {
            data.insert("after".into(), a);
        }
        ModuleResult {
            changed: true,
            data,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_ids_parse_like_ansible() {
        assert_eq!(
            parse_key_id("0x9DC858229FC7DD38854AE2D88D81803C0EBFCD88").unwrap(),
            (
                "0EBFCD88".into(),
                "8D81803C0EBFCD88".into(),
                "9DC858229FC7DD38854AE2D88D81803C0EBFCD88".into()
            )
        );
        assert_eq!(parse_key_id("0ebfcd88").unwrap().1, "0EBFCD88");
        assert!(parse_key_id("12345").is_err());
        assert!(parse_key_id("xyz12345").is_err());
    }

    fn sh(script: &str, stdin: Option<&[u8]>) -> ActionOutput {
        use std::io::Write;
        let mut c = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut i = c.stdin.take().unwrap();
        if let Some(b) = stdin {
            i.write_all(b).unwrap();
        }
        drop(i);
        let o = c.wait_with_output().unwrap();
        ActionOutput {
            rc: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: o.stderr,
        }
    }

    fn run(args: &Args) -> (Planned, ModuleResult) {
        let probes = APT_KEY.probes(args).unwrap();
        let answers = probes
            .into_iter()
            .map(|p| {
                let Probe::Command { script } = &p else {
                    panic!()
                };
                let o = sh(script, None);
                let r = ProbeResult::Command(crate::facts::CommandOutput {
                    rc: o.rc,
                    stdout: String::from_utf8_lossy(&o.stdout).into(),
                    stderr: String::from_utf8_lossy(&o.stderr).into(),
                });
                (p, r)
            })
            .collect();
        let planned = APT_KEY
            .plan(
                args,
                &Facts {
                    answers,
                    ..Default::default()
                },
                Mode::Apply,
            )
            .unwrap();
        let mut outs = Vec::new();
        if let Planned::Change { actions, .. } = &planned {
            for a in actions {
                let Action::Exec { script, stdin } = a else {
                    panic!()
                };
                outs.push(sh(script, stdin.as_deref()));
            }
        }
        let r = APT_KEY.finish(args, &planned, &outs);
        (planned, r)
    }

    #[test]
    fn a_generated_key_is_dearmored_into_a_keyring_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        // A throwaway key in a throwaway GNUPGHOME.
        let gen = sh(
            &format!(
                "export GNUPGHOME={d}/home; mkdir -m 700 $GNUPGHOME && \
                 gpg --batch --passphrase '' --quick-gen-key 'Prov Test <t@example.invalid>' ed25519 sign never >/dev/null 2>&1 && \
                 gpg --batch --armor --export t@example.invalid > {d}/key.asc && \
                 gpg --batch --with-colons --list-keys t@example.invalid | awk -F: '/^fpr/ {{print $10; exit}}'; \\
                 r=$?; gpgconf --kill gpg-agent 2>/dev/null; exit $r"
            ),
            None,
        );
        if gen.rc != 0 {
            // gpg unavailable: nothing to check on this machine.
            return;
        }
        let fpr = String::from_utf8(gen.stdout).unwrap().trim().to_string();
        let armored = std::fs::read_to_string(format!("{d}/key.asc")).unwrap();
        let ring = format!("{d}/keyrings/test.gpg");
        let args = json!({"data": armored, "keyring": ring})
            .as_object()
            .unwrap()
            .clone();
        let (planned, r) = run(&args);
        assert!(matches!(planned, Planned::Change { .. }));
        assert!(r.changed && !r.failed, "{r:?}");
        assert_eq!(r.data["fp"], json!(fpr[fpr.len() - 16..]));
        assert_eq!(r.data["before"], json!([]));
        let bytes = std::fs::read(&ring).unwrap();
        assert_ne!(bytes.first(), Some(&b'-'), "the keyring must be binary");
        let (planned, r) = run(&args);
        assert!(matches!(planned, Planned::NoChange { .. }), "{planned:?}");
        assert!(!r.changed);
        // By id, from a file, into an armored keyring.
        let asc = format!("{d}/keyrings/test.asc");
        let args2 = json!({"id": fpr, "file": format!("{d}/key.asc"), "keyring": asc})
            .as_object()
            .unwrap()
            .clone();
        assert!(run(&args2).1.changed);
        assert!(std::fs::read_to_string(&asc)
            .unwrap()
            .starts_with("-----BEGIN PGP"));
        assert!(!run(&args2).1.changed);
        let absent = json!({"id": fpr, "keyring": ring, "state": "absent"})
            .as_object()
            .unwrap()
            .clone();
        let (_, r) = run(&absent);
        assert!(r.changed && !r.failed, "{r:?}");
        assert!(!std::path::Path::new(&ring).exists());
        assert!(!run(&absent).1.changed);
    }
}
