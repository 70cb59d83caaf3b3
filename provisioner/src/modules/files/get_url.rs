//! `get_url`: download on the host with curl, wget or python3 (whichever exists, in that order).
//!
//! Decisions, as in ansible-core 2.14:
//! - dest exists, `checksum` given and matching, not `force`: no download ("file already
//!   exists"); only mode/owner/group may change.
//! - `checksum` given and not matching (or dest missing): download, verify the checksum, fail on a
//!   mismatch, then move into place.
//! - no `checksum` and dest exists: Ansible downloads (with If-Modified-Since) and replaces only
//!   if the content differs. We download to a temp file and compare with `cmp`; the result is
//!   only known after running, so `finish` reads the script's CHANGED/UNCHANGED marker. Check
//!   mode therefore reports such a task as a (possible) change.
//!
//! Not supported: checksum given as a URL, a directory `dest` named from Content-Disposition
//! (we use the URL's basename), url_username/url_password, client certificates.

use super::args::{parse, specs, Kind, Param, Params, FILE_COMMON};
use super::common::{basename, dirname, mode_str, need_stat, new_stat, FileAttrs};
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Diff, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{Map, Value};

pub struct GetUrl;

const P: [Param; 21] = [
    Param::new("url", Kind::Str).required(),
    Param::new("dest", Kind::Path).required(),
    Param::new("checksum", Kind::Str),
    Param::new("force", Kind::Bool).aliases(&["thirsty"]),
    Param::new("timeout", Kind::Int),
    Param::new("validate_certs", Kind::Bool),
    Param::new("headers", Kind::Raw),
    Param::new("use_proxy", Kind::Bool),
    Param::new("http_agent", Kind::Str),
    Param::new("tmp_dest", Kind::Path),
    Param::new("backup", Kind::Bool),
    Param::new("decompress", Kind::Bool),
    FILE_COMMON[0],
    FILE_COMMON[1],
    FILE_COMMON[2],
    FILE_COMMON[3],
    FILE_COMMON[4],
    FILE_COMMON[5],
    FILE_COMMON[6],
    FILE_COMMON[7],
    FILE_COMMON[8],
];
static SPECS: [ParamSpec; 21] = specs(&P);

const ALGOS: [&str; 6] = ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"];

struct Req {
    p: Params,
    url: String,
    dest: String,
    /// dest/basename(url), used when dest is a directory.
    dest_in_dir: String,
    checksum: Option<(String, String)>,
}

fn request(args: &Args) -> Result<Req, OpError> {
    let p = parse("get_url", &P, args)?;
    if p.bool_or("backup", false) {
        return Err(OpError::new(
            "get_url: backup=yes is not supported by provisioner",
        ));
    }
    FileAttrs::from_params(&p)?;
    let url = p.str_or("url", "").to_string();
    let checksum = match p.str("checksum").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let (algo, value) = c.split_once(':').ok_or_else(|| {
                OpError::new("The checksum parameter has to be in format <algorithm>:<checksum>")
            })?;
            let algo = algo.to_ascii_lowercase();
            if !ALGOS.contains(&algo.as_str()) {
                return Err(OpError::new(format!(
                    "Unsupported hash algorithm: {algo}. Supported: {}",
                    ALGOS.join(", ")
                )));
            }
            if value.contains("://") {
                return Err(OpError::new(
                    "get_url: a checksum given as a URL is not supported by provisioner; give the digest",
                ));
            }
            let value = value.trim().to_ascii_lowercase();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(OpError::new(format!("The checksum format is invalid: {c}")));
            }
            Some((algo, value))
        }
    };
    let dest = p.str_or("dest", "").to_string();
    let path_part = url.split(['?', '#']).next().unwrap_or("");
    let name = basename(path_part.trim_end_matches('/'));
    let name = if name.is_empty() || path_part.matches('/').count() < 3 {
        "index.html"
    } else {
        name
    };
    let dest_in_dir = format!("{}/{}", dest.trim_end_matches('/'), name);
    Ok(Req {
        p,
        url,
        dest,
        dest_in_dir,
        checksum,
    })
}

fn sum_probe(path: &str, algo: &str) -> Probe {
    Probe::Command {
        script: format!(
            "if [ -f {q} ]; then {algo}sum < {q} | cut -d' ' -f1; fi",
            q = quote(path)
        ),
    }
}

fn probes_for(r: &Req) -> Vec<Probe> {
    let mut v = Vec::new();
    for d in [&r.dest, &r.dest_in_dir] {
        v.push(Probe::Stat {
            path: d.clone(),
            follow: true,
        });
        if let Some((algo, _)) = &r.checksum {
            v.push(sum_probe(d, algo));
        }
    }
    v
}

fn download_script(
    r: &Req,
    dest: &str,
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> String {
    let timeout = r.p.int("timeout").unwrap_or(10);
    let insecure = !r.p.bool_or("validate_certs", true);
    let agent = r.p.str_or("http_agent", "ansible-httpget");
    let mut headers: Vec<String> = Vec::new();
    if let Some(Value::Object(h)) = r.p.raw("headers") {
        for (k, v) in h {
            headers.push(format!("{k}: {}", super::args::py_str(v)));
        }
    }
    let d = dirname(dest);
    let dir = if d.is_empty() { "." } else { d };
    let mut s = String::from("set -e\n");
    if !r.p.bool_or("use_proxy", true) {
        s.push_str("unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY\n");
    }
    s.push_str(&format!(
        "u={}\nd={}\nt=$(mktemp {}/.provisioner_dl.XXXXXXXX)\ntrap 'rm -f \"$t\"' EXIT\n",
        quote(&r.url),
        quote(dest),
        quote(dir)
    ));
    let curl_h: String = headers
        .iter()
        .map(|h| format!(" -H {}", quote(h)))
        .collect();
    let wget_h: String = headers
        .iter()
        .map(|h| format!(" --header={}", quote(h)))
        .collect();
    s.push_str(&format!(
        "if command -v curl >/dev/null 2>&1; then curl -fsSL --max-time {timeout}{} -A {}{curl_h} -o \"$t\" -- \"$u\"\n",
        if insecure { " -k" } else { "" },
        quote(agent)
    ));
    s.push_str(&format!(
        "elif command -v wget >/dev/null 2>&1; then wget -q -T {timeout}{} -U {}{wget_h} -O \"$t\" -- \"$u\"\n",
        if insecure { " --no-check-certificate" } else { "" },
        quote(agent)
    ));
    s.push_str(&format!(
        "elif command -v python3 >/dev/null 2>&1; then python3 -c 'import sys,ssl,urllib.request as r\nc=None if sys.argv[4]==\"1\" else ssl._create_unverified_context()\nq=r.Request(sys.argv[1],headers={{\"User-Agent\":sys.argv[5]}})\nopen(sys.argv[2],\"wb\").write(r.urlopen(q,timeout=float(sys.argv[3]),context=c).read())' \"$u\" \"$t\" {timeout} {} {}\n",
        if insecure { "0" } else { "1" },
        quote(agent)
    ));
    s.push_str("else echo 'get_url: no curl, wget or python3 on the host' >&2; exit 1; fi\n");
    if let Some((algo, want)) = &r.checksum {
        s.push_str(&format!(
            "got=$({algo}sum < \"$t\" | cut -d' ' -f1)\nif [ \"$got\" != {want} ]; then echo \"The checksum for $d did not match {want}; it was $got.\" >&2; exit 1; fi\n"
        ));
    }
    s.push_str("if [ -f \"$d\" ] && cmp -s \"$t\" \"$d\"; then echo UNCHANGED; exit 0; fi\n");
    s.push_str(&format!("chmod {} \"$t\"\n", mode_str(mode)));
    if let Some(o) = owner {
        s.push_str(&format!("chown {} \"$t\"\n", quote(o)));
    }
    if let Some(g) = group {
        s.push_str(&format!("chgrp {} \"$t\"\n", quote(g)));
    }
    s.push_str("mv -f \"$t\" \"$d\"\ntrap - EXIT\necho CHANGED\n");
    s
}

impl Module for GetUrl {
    fn names(&self) -> &'static [&'static str] {
        &[
            "get_url",
            "ansible.builtin.get_url",
            "ansible.legacy.get_url",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        &SPECS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        Ok(probes_for(&request(args)?))
    }
    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let r = request(args)?;
        let attrs = FileAttrs::from_params(&r.p)?;
        let mut dest = r.dest.clone();
        let mut st = need_stat(facts, &dest, true)?;
        if st.kind == "directory" {
            dest = r.dest_in_dir.clone();
            st = need_stat(facts, &dest, true)?;
        }
        let mut result = Map::new();
        result.insert("dest".into(), dest.clone().into());
        result.insert("url".into(), r.url.clone().into());
        let force = r.p.bool_or("force", false);
        if st.exists {
            if let Some((algo, want)) = &r.checksum {
                let have = match facts.get(&sum_probe(&dest, algo)) {
                    Some(ProbeResult::Command(o)) if o.rc == 0 => o.stdout.trim().to_string(),
                    _ => String::new(),
                };
                if !force && have == *want {
                    let ap = attrs.plan(&dest, st, false)?;
                    result.insert("checksum_dest".into(), st.checksum_sha1.clone().into());
                    ap.result(&mut result);
                    if !ap.changed() {
                        result.insert("msg".into(), "file already exists".into());
                        return Ok(Planned::NoChange { result });
                    }
                    result.insert(
                        "msg".into(),
                        "file already exists but file attributes changed".into(),
                    );
                    return Ok(Planned::Change {
                        actions: vec![Action::Exec {
                            script: ap.commands.join(" && "),
                            stdin: None,
                        }],
                        diffs: ap.diff(&dest).into_iter().collect(),
                        result,
                    });
                }
            }
        }
        let base = if st.exists {
            st.clone()
        } else {
            new_stat("file")
        };
        let ap = attrs.plan(&dest, &base, false)?;
        let owner = attrs
            .owner
            .clone()
            .or_else(|| st.exists.then(|| st.uid.to_string()));
        let group = attrs
            .group
            .clone()
            .or_else(|| st.exists.then(|| st.gid.to_string()));
        let mut actions = vec![Action::Exec {
            script: download_script(&r, &dest, ap.mode, owner.as_deref(), group.as_deref()),
            stdin: None,
        }];
        if st.exists && ap.changed() {
            // When the download turns out identical, the attributes still have to be right.
            actions.push(Action::Exec {
                script: ap.commands.join(" && "),
                stdin: None,
            });
        }
        ap.result(&mut result);
        result.insert("state".into(), "file".into());
        result.insert("msg".into(), "OK".into());
        Ok(Planned::Change {
            actions,
            diffs: vec![Diff {
                label: dest.clone(),
                before: if st.exists {
                    format!("sha1: {}\n", st.checksum_sha1.clone().unwrap_or_default())
                } else {
                    String::new()
                },
                after: format!("download of {}\n", r.url),
            }],
            result,
        })
    }
    fn finish(&self, _args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let mut res = super::super::default_finish(planned, outputs);
        if res.failed {
            return res;
        }
        if let (Planned::Change { actions, .. }, Some(first)) = (planned, outputs.first()) {
            let is_download = matches!(actions.first(), Some(Action::Exec { script, .. }) if script.contains("echo CHANGED"));
            if is_download {
                let downloaded = String::from_utf8_lossy(&first.stdout).contains("CHANGED")
                    && !String::from_utf8_lossy(&first.stdout).contains("UNCHANGED");
                res.changed = downloaded || actions.len() > 1;
            }
        }
        res
    }
}
