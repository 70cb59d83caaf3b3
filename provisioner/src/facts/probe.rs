//! The probe script: every [`Probe`] of one task answered by ONE POSIX `sh` script, in one round
//! trip, and the parser of its output.
//!
//! Framing. The script writes one header line per probe, `@@ <index> <tag>`, followed by
//! `<key> <value>` lines where every value that comes from the host (names, paths, contents,
//! command output) is base64 without line wrapping (`base64 -w0`), so it can never contain a
//! newline, a space or a fake header. Numbers are written as decimal digits. The last line is
//! `@@ end`. The parser checks that every probe was answered, in order.
//!
//! When the host has python3 (Ansible's own requirement), one python3 process answers every
//! probe: a no-op run of a large play then costs one process instead of hundreds of `stat`,
//! `sha1sum` and `base64` forks. Otherwise the POSIX `sh` version answers, using only coreutils
//! (`stat`, `head`, `sha1sum`, `base64`, `readlink`), and `dpkg-query` / `systemctl` for the
//! package and unit probes. Both write the same bytes (tested).

use super::{CommandOutput, Facts, FileStat, PackageState, Probe, ProbeResult, UnitState};
use crate::shell::quote;
use base64::Engine as _;

const B64: &str = "base64 -w0";

/// The python3 answerer: the same framing as the shell version, byte for byte. It imports only
/// modules built into the interpreter (no `json`, `base64`, `hashlib` or `subprocess`, which
/// pull in `re` and OpenSSL and doubled its start-up) and reads the probes as lines of
/// space-separated fields (see [`py_probes`]). It answers `stat` and `read` itself. The probes
/// that run a program (`dpkg`, `unit`, `command`: their command lines come from [`program`], as
/// for the sh answerer) go to ONE `sh` started once, which runs each into files of a private
/// directory: forking python per command cost 2-3 ms each on a lab host, a shell's fork+exec
/// about 1 ms.
const PY: &str = r#"import binascii, grp, os, pwd, sys
try:
    from _sha1 import sha1
except ImportError:
    from hashlib import sha1
SUMS = {}
def checksum(path, st):
    # One file is often probed twice (with and without following links): hash it once.
    # Large files go through hashlib (OpenSSL: about 3x _sha1 on a 30 MB tarball).
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in SUMS:
        if st.st_size > (1 << 20):
            import hashlib
            h = hashlib.sha1()
        else:
            h = sha1()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""): h.update(chunk)
        SUMS[key] = h.hexdigest()
    return SUMS[key]
o = sys.stdout.buffer
def w(s): o.write(s.encode())
def b(data): return binascii.b2a_base64(data, newline=False).decode()
def d(field): return os.fsdecode(binascii.a2b_base64(field))
def vialink(p):
    while p:
        if os.path.islink(p): return True
        if "/" not in p: return False
        p = p.rsplit("/", 1)[0]
    return False
def uname(u):
    try: return pwd.getpwuid(u).pw_name
    except KeyError: return "UNKNOWN"
def gname(g):
    try: return grp.getgrgid(g).gr_name
    except KeyError: return "UNKNOWN"
A = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
P = [l.split(" ") for l in A.split("\n")] if A else []
S = {}
for i, f in enumerate(P):
    if f[0] in ("dpkg", "unit", "command") and len(f) > 1: S[i] = "exec " + d(f[1])
D = None
if S:
    for base in (os.environ.get("TMPDIR"), "/tmp", "/var/tmp", "/dev/shm"):
        if not base: continue
        D = os.path.join(base, ".provisioner-probe-" + binascii.hexlify(os.urandom(8)).decode())
        try:
            os.mkdir(D, 0o700)
            break
        except OSError:
            D = None
    if D is None: sys.exit("probe: cannot create a private directory for command output (TMPDIR, /tmp, /var/tmp, /dev/shm)")
    argv = ["/bin/sh", "-c", 'd=$1; shift; for i; do eval "s=\\$S$i"; ( eval "$s" ) </dev/null >"$d/$i.o" 2>"$d/$i.e"; echo $? >"$d/$i.rc"; done', "sh", D] + [str(i) for i in S]
    env = dict(os.environ)
    for i, script in S.items(): env["S%d" % i] = script
    o.flush()
    try:
        pid = os.posix_spawn(argv[0], argv, env)
    except AttributeError:
        pid = os.fork()
        if pid == 0:
            try: os.execve(argv[0], argv, env)
            finally: os._exit(127)
    os.waitpid(pid, 0)
def result(i, ext):
    try:
        with open("%s/%d.%s" % (D, i, ext), "rb") as fh: return fh.read()
    except OSError:
        if ext == "rc": sys.exit("probe: command %d did not run" % i)
        return b""
def answer():
    for i, f in enumerate(P):
        k = f[0]
        w("@@ %d %s\n" % (i, k))
        if k in ("stat", "read") and vialink(d(f[1])): w("link 1\n")
        if k == "stat":
            path, follow = d(f[1]), f[2] == "1"
            if os.path.exists(path) if follow else os.path.lexists(path):
                st = os.stat(path) if follow else os.lstat(path)
                meta = "%x %d %d %d %d %s %s\n" % (st.st_mode, st.st_uid, st.st_gid, st.st_size, int(st.st_mtime), uname(st.st_uid), gname(st.st_gid))
                w("meta %s\n" % b(meta.encode()))
                link = os.path.islink(path)
                if not follow and link:
                    w("target %s\n" % b(os.fsencode(os.readlink(path)) + b"\n"))
                if os.path.isfile(path) and os.access(path, os.R_OK) and (not link or follow):
                    w("sha1 %s\n" % checksum(path, st))
            else:
                w("absent\n")
        elif k == "read":
            path = d(f[1])
            if os.path.isfile(path) and os.access(path, os.R_OK):
                with open(path, "rb") as fh: w("content %s\n" % b(fh.read(int(f[2]))))
            else:
                w("missing\n")
        elif k in ("dpkg", "unit"):
            if i in S: w("out %s\n" % b(result(i, "o")))
        elif k == "command":
            w("rc %s\n" % result(i, "rc").strip().decode())
            w("stdout %s\nstderr %s\n" % (b(result(i, "o")), b(result(i, "e"))))
    w("@@ end\n")
    o.flush()
try:
    answer()
finally:
    if D:
        for n in os.listdir(D): os.unlink(os.path.join(D, n))
        os.rmdir(D)
"#;

/// The probes for [`PY`]: one line each, fields separated by one space, every string from the
/// task (paths, and the command lines of [`program`]) in base64 so it holds no space or newline.
fn py_probes(probes: &[Probe]) -> String {
    let e = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let with_program = |tag: &str, p: &Probe| {
        program(p).map_or(tag.to_string(), |cmd| format!("{tag} {}", e(&cmd)))
    };
    probes
        .iter()
        .map(|p| match p {
            Probe::Stat { path, follow } => format!("stat {} {}", e(path), u8::from(*follow)),
            Probe::Read { path, max_bytes } => format!("read {} {max_bytes}", e(path)),
            Probe::Dpkg { .. } => with_program("dpkg", p),
            Probe::Unit { .. } => with_program("unit", p),
            Probe::Command { .. } => with_program("command", p),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Build the script that answers `probes`, in order: python3 when the host has it, else sh.
pub fn probe_script(probes: &[Probe]) -> String {
    // python3 starts in ~40 ms on a lab host, sh with a few forks in ~7 ms: a task's own few
    // probes (after an earlier change) are answered by sh, a play's prefetch by python3.
    if probes.len() <= SH_ONLY_MAX {
        return probe_script_sh(probes);
    }
    let mut s = String::new();
    s.push_str("LC_ALL=C; export LC_ALL\n");
    s.push_str(&format!(
        "if command -v python3 >/dev/null 2>&1; then exec python3 -c {} {}; fi\n",
        quote(PY),
        quote(&py_probes(probes))
    ));
    s.push_str(&shell_body(probes));
    s
}

/// A play's prefetch: (command, stdin). The probes travel on stdin, so their number is not
/// bounded by the kernel's 128 KiB limit on one argument (a whole run's probes on one host
/// exceed it), and sudo logs a short command line. python3 only: a host without it answers
/// 127, and its tasks probe on their own ([`probe_script`], sh for a few).
pub fn prefetch_script(probes: &[Probe]) -> (String, Vec<u8>) {
    (
        format!("LC_ALL=C; export LC_ALL\nexec python3 -c {}\n", quote(PY)),
        py_probes(probes).into_bytes(),
    )
}

/// Probe sets up to this size are answered by sh alone (both answerers print the same bytes).
const SH_ONLY_MAX: usize = 4;

/// The POSIX sh answerer (the fallback), without the locale line.
pub fn probe_script_sh(probes: &[Probe]) -> String {
    format!("LC_ALL=C; export LC_ALL\n{}", shell_body(probes))
}

/// The command line a probe runs, the same for both answerers: `dpkg-query` for a `Dpkg` probe
/// (none without packages), `systemctl show` for a `Unit`, the script under `/bin/sh -c` for a
/// `Command` (its own shell: `exit` and `$$` are its own). Only stdout is the answer for the
/// first two.
fn program(probe: &Probe) -> Option<String> {
    match probe {
        Probe::Dpkg { packages } if !packages.is_empty() => {
            let names: Vec<String> = packages.iter().map(|n| quote(n)).collect();
            Some(format!(
                "dpkg-query -W -f='${{Package}}\\t${{binary:Package}}\\t${{db:Status-Status}}\\t${{Version}}\\n' -- {} 2>/dev/null",
                names.join(" ")
            ))
        }
        Probe::Unit { name } => Some(format!(
            "systemctl show -p LoadState,ActiveState,SubState,UnitFileState -- {} 2>/dev/null",
            quote(name)
        )),
        Probe::Command { script } => Some(command_line(script)),
        _ => None,
    }
}

fn command_line(script: &str) -> String {
    format!("/bin/sh -c {}", quote(script))
}

fn shell_body(probes: &[Probe]) -> String {
    let mut s = String::new();
    s.push_str("__t=$(mktemp -d 2>/dev/null || echo /tmp/.provisioner-probe.$$)\n");
    // Whether the path or one of its parents is a symlink (shell builtins only).
    s.push_str("__vialink() { __p=$1; while [ -n \"$__p\" ]; do [ -L \"$__p\" ] && return 0; case $__p in */*) __p=${__p%/*};; *) return 1;; esac; done; return 1; }\n");
    s.push_str("mkdir -p \"$__t\" 2>/dev/null; trap 'rm -rf \"$__t\"' EXIT\n");
    for (i, p) in probes.iter().enumerate() {
        match p {
            Probe::Stat { path, follow } => stat_snippet(&mut s, i, path, *follow),
            Probe::Read { path, max_bytes } => {
                let q = quote(path);
                s.push_str(&format!("echo '@@ {i} read'\n"));
                s.push_str(&format!("__vialink {q} && echo 'link 1'\n"));
                s.push_str(&format!(
                    "if [ -f {q} ] && [ -r {q} ]; then printf 'content '; head -c {max_bytes} -- {q} | {B64}; echo; else echo missing; fi\n"
                ));
            }
            Probe::Dpkg { .. } | Probe::Unit { .. } => {
                let tag = if matches!(p, Probe::Dpkg { .. }) {
                    "dpkg"
                } else {
                    "unit"
                };
                s.push_str(&format!("echo '@@ {i} {tag}'\n"));
                if let Some(cmd) = program(p) {
                    s.push_str(&format!("printf 'out '; {cmd} | {B64}; echo\n"));
                }
            }
            Probe::Command { script } => {
                s.push_str(&format!("echo '@@ {i} command'\n"));
                s.push_str(&format!(
                    "{} </dev/null >\"$__t/o\" 2>\"$__t/e\"; echo \"rc $?\"\n",
                    command_line(script)
                ));
                s.push_str(&format!(
                    "printf 'stdout '; {B64} <\"$__t/o\"; echo; printf 'stderr '; {B64} <\"$__t/e\"; echo\n"
                ));
            }
        }
    }
    s.push_str("echo '@@ end'\n");
    s
}

fn stat_snippet(s: &mut String, i: usize, path: &str, follow: bool) {
    let q = quote(path);
    let l = if follow { "-L " } else { "" };
    s.push_str(&format!("echo '@@ {i} stat'\n"));
    s.push_str(&format!("__vialink {q} && echo 'link 1'\n"));
    // With follow, a dangling symlink does not exist (like os.stat); without, it does (lstat).
    let exists = if follow {
        format!("[ -e {q} ]")
    } else {
        format!("{{ [ -e {q} ] || [ -L {q} ]; }}")
    };
    s.push_str(&format!("if {exists}; then\n"));
    s.push_str(&format!(
        "  printf 'meta '; stat {l}-c '%f %u %g %s %Y %U %G' -- {q} | {B64}; echo\n"
    ));
    if !follow {
        s.push_str(&format!(
            "  if [ -L {q} ]; then printf 'target '; readlink -- {q} | {B64}; echo; fi\n"
        ));
    }
    s.push_str(&format!(
        "  if [ -f {q} ] && [ -r {q} ] && {{ [ ! -L {q} ] || [ {} = 1 ]; }}; then printf 'sha1 '; sha1sum < {q} | cut -d' ' -f1; fi\n",
        u8::from(follow)
    ));
    s.push_str("else echo absent; fi\n");
}

fn b64(v: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|e| format!("probe output: bad base64: {e}"))
}

fn b64_text(v: &str) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&b64(v)?).into_owned())
}

/// One probe's answer: index, tag, `key value` fields.
type Section = (usize, String, Vec<(String, String)>);

/// Parse the output of [`probe_script`] for the same `probes`.
pub fn parse_probe_output(probes: &[Probe], stdout: &[u8]) -> Result<Facts, String> {
    let text = String::from_utf8_lossy(stdout);
    // Split into sections per header.
    let mut sections: Vec<Section> = Vec::new();
    let mut ended = false;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("@@ ") {
            if h == "end" {
                ended = true;
                break;
            }
            let (idx, tag) = h
                .split_once(' ')
                .ok_or_else(|| format!("probe output: bad header {line:?}"))?;
            let idx: usize = idx
                .parse()
                .map_err(|_| format!("probe output: bad header {line:?}"))?;
            sections.push((idx, tag.to_string(), Vec::new()));
        } else if let Some((_, _, fields)) = sections.last_mut() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            fields.push((k.to_string(), v.to_string()));
        }
    }
    if !ended {
        return Err("probe output: truncated (no end marker)".to_string());
    }
    if sections.len() != probes.len() {
        return Err(format!(
            "probe output: {} answers for {} probes",
            sections.len(),
            probes.len()
        ));
    }
    let mut answers = Vec::with_capacity(probes.len());
    let mut via_link = Vec::new();
    for (i, (probe, (idx, tag, fields))) in probes.iter().zip(sections).enumerate() {
        if idx != i {
            return Err(format!("probe output: answer {idx} where {i} was expected"));
        }
        let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        if let (Some(path), Some("1")) = (probe.path(), field("link")) {
            via_link.push(path.to_string());
        }
        let result = match (probe, tag.as_str()) {
            (Probe::Stat { .. }, "stat") => ProbeResult::Stat(parse_stat(&field)?),
            (Probe::Read { .. }, "read") => ProbeResult::Read(match field("content") {
                Some(v) => Some(b64(v)?),
                None => None,
            }),
            (Probe::Dpkg { packages }, "dpkg") => {
                ProbeResult::Dpkg(parse_dpkg(packages, &b64_text(field("out").unwrap_or(""))?))
            }
            (Probe::Unit { name }, "unit") => {
                ProbeResult::Unit(parse_unit(name, &b64_text(field("out").unwrap_or(""))?))
            }
            (Probe::Command { .. }, "command") => ProbeResult::Command(CommandOutput {
                rc: field("rc")
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| format!("probe output: command {i} has no exit code"))?,
                stdout: b64_text(field("stdout").unwrap_or(""))?,
                stderr: b64_text(field("stderr").unwrap_or(""))?,
            }),
            (_, t) => {
                return Err(format!(
                    "probe output: answer {i} is a {t}, not for {probe:?}"
                ))
            }
        };
        answers.push((probe.clone(), result));
    }
    Ok(Facts { answers, via_link })
}

fn parse_stat<'a>(field: &dyn Fn(&str) -> Option<&'a str>) -> Result<FileStat, String> {
    let Some(meta) = field("meta") else {
        return Ok(FileStat::default());
    };
    let meta = b64_text(meta)?;
    let w: Vec<&str> = meta.split_whitespace().collect();
    if w.len() < 7 {
        return Err(format!("probe output: bad stat line {meta:?}"));
    }
    let bad = |what: &str| format!("probe output: bad {what} in stat line {meta:?}");
    let raw = u32::from_str_radix(w[0], 16).map_err(|_| bad("mode"))?;
    let kind = match raw & 0o170000 {
        0o100000 => "file",
        0o040000 => "directory",
        0o120000 => "link",
        _ => "other",
    };
    Ok(FileStat {
        exists: true,
        kind: kind.to_string(),
        mode: raw & 0o7777,
        uid: w[1].parse().map_err(|_| bad("uid"))?,
        gid: w[2].parse().map_err(|_| bad("gid"))?,
        size: w[3].parse().map_err(|_| bad("size"))?,
        mtime: w[4].parse().map_err(|_| bad("mtime"))?,
        owner: w[5].to_string(),
        group: w[6].to_string(),
        link_target: field("target")
            .map(b64_text)
            .transpose()?
            .map(|t| t.strip_suffix('\n').map(str::to_string).unwrap_or(t)),
        checksum_sha1: field("sha1")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
    })
}

fn parse_dpkg(packages: &[String], out: &str) -> Vec<PackageState> {
    packages
        .iter()
        .map(|want| {
            let version = out.lines().find_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                if f.len() < 4 {
                    return None;
                }
                let name_matches = f[0] == want || f[1] == want;
                (name_matches && f[2] == "installed").then(|| f[3].to_string())
            });
            PackageState {
                name: want.clone(),
                version,
            }
        })
        .collect()
}

fn parse_unit(name: &str, out: &str) -> UnitState {
    let mut u = UnitState {
        name: name.to_string(),
        ..Default::default()
    };
    for l in out.lines() {
        if let Some((k, v)) = l.split_once('=') {
            let v = v.to_string();
            match k {
                "LoadState" => u.load_state = v,
                "ActiveState" => u.active_state = v,
                "SubState" => u.sub_state = v,
                "UnitFileState" => u.unit_file_state = v,
                _ => {}
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn run(probes: &[Probe]) -> Facts {
        let script = probe_script(probes);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        parse_probe_output(probes, &out.stdout).unwrap()
    }

    #[test]
    fn a_large_file_probed_twice_has_the_same_right_checksum() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&f, &data).unwrap();
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let p = |x: &std::path::Path, follow| Probe::Stat {
            path: x.to_str().unwrap().to_string(),
            follow,
        };
        let facts = run(&[p(&f, false), p(&f, true), p(&l, true)]);
        let want = crate::modules::files::sha1::sha1_hex(&data);
        for (_, r) in &facts.answers {
            match r {
                ProbeResult::Stat(s) => assert_eq!(s.checksum_sha1.as_deref(), Some(&*want)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn stat_reports_files_dirs_links_and_absence() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("we ird'name\n$x");
        std::fs::write(&f, b"hello\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink("/nonexistent/x", &dangling).unwrap();
        let p = |x: &std::path::Path, follow| Probe::Stat {
            path: x.to_str().unwrap().to_string(),
            follow,
        };
        let probes = vec![
            p(&f, false),
            p(&l, false),
            p(&l, true),
            p(d.path(), false),
            p(&d.path().join("missing"), false),
            p(&dangling, true),
            p(&dangling, false),
        ];
        let facts = run(&probes);
        let get = |i: usize| match &facts.answers[i].1 {
            ProbeResult::Stat(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        let file = get(0);
        assert!(file.exists);
        assert_eq!(file.kind, "file");
        assert_eq!(file.mode, 0o640);
        assert_eq!(file.size, 6);
        assert_eq!(
            file.checksum_sha1.as_deref(),
            Some("f572d396fae9206628714fb2ce00f72e94f2258f")
        );
        assert!(file.mtime > 0);
        let link = get(1);
        assert_eq!(link.kind, "link");
        assert_eq!(link.link_target.as_deref(), f.to_str());
        assert_eq!(link.checksum_sha1, None);
        let followed = get(2);
        assert_eq!(followed.kind, "file");
        assert_eq!(followed.checksum_sha1, file.checksum_sha1);
        assert_eq!(get(3).kind, "directory");
        assert!(!get(4).exists);
        assert!(
            !get(5).exists,
            "a dangling link does not exist when followed"
        );
        assert_eq!(get(6).kind, "link");
    }

    #[test]
    fn read_returns_bytes_up_to_the_limit_and_none_when_missing() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"\x00\x01binary\nno newline").unwrap();
        let empty = d.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let r = |x: &std::path::Path, max_bytes| Probe::Read {
            path: x.to_str().unwrap().to_string(),
            max_bytes,
        };
        let probes = vec![
            r(&f, 1 << 20),
            r(&f, 3),
            r(&empty, 10),
            r(&d.path().join("nope"), 10),
            r(d.path(), 10),
        ];
        let facts = run(&probes);
        let got: Vec<_> = facts.answers.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(
            got,
            vec![
                ProbeResult::Read(Some(b"\x00\x01binary\nno newline".to_vec())),
                ProbeResult::Read(Some(b"\x00\x01b".to_vec())),
                ProbeResult::Read(Some(Vec::new())),
                ProbeResult::Read(None),
                ProbeResult::Read(None),
            ]
        );
        assert_eq!(
            facts.read(f.to_str().unwrap()),
            Some(Some(&b"\x00\x01binary\nno newline"[..]))
        );
    }

    /// The python3 answerer (a play's prefetch) and the sh one (few probes, or no python3 on
    /// the host) must print the same bytes for every kind of probe.
    #[test]
    fn python_and_sh_answerers_print_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f ile'\n$x");
        std::fs::write(&f, b"\x00bin\nary").unwrap();
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let path = |x: &std::path::Path| x.to_str().unwrap().to_string();
        let probes = vec![
            Probe::Stat {
                path: path(&f),
                follow: false,
            },
            Probe::Stat {
                path: path(&l),
                follow: false,
            },
            Probe::Stat {
                path: path(&l),
                follow: true,
            },
            Probe::Stat {
                path: path(&d.path().join("none")),
                follow: true,
            },
            Probe::Read {
                path: path(&f),
                max_bytes: 4,
            },
            Probe::Read {
                path: path(d.path()),
                max_bytes: 4,
            },
            Probe::Dpkg {
                packages: vec!["dpkg".into(), "no-such-package-xyz".into()],
            },
            Probe::Dpkg { packages: vec![] },
            Probe::Unit {
                name: "ssh.service".into(),
            },
            Probe::Command {
                script: "printf 'a b\\n@@ end\\n'; echo e >&2; exit 7".into(),
            },
            Probe::Command {
                script: "read x; echo \"[$x]\"; pwd >/dev/null".into(),
            },
            Probe::Command {
                script: "if then; echo $$ is not the batch shell".into(),
            },
        ];
        // An unusable TMPDIR: the python answerer falls back to /tmp for command output.
        let run = |script: &str| {
            std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .env("TMPDIR", "/nonexistent/tmp")
                .output()
                .unwrap()
                .stdout
        };
        let py = run(&probe_script(&probes));
        let sh = run(&probe_script_sh(&probes));
        assert_eq!(String::from_utf8_lossy(&py), String::from_utf8_lossy(&sh));
        let facts = parse_probe_output(&probes, &py).unwrap();
        // Both stats of the symlink, and nothing else, are reported as read through a link.
        assert_eq!(facts.via_link, [path(&l), path(&l)]);
        assert_eq!(
            facts.answers[9].1,
            ProbeResult::Command(CommandOutput {
                rc: 7,
                stdout: "a b\n@@ end\n".into(),
                stderr: "e\n".into(),
            })
        );
        // A command killed by a signal: rc 128 + signal, as sh reports it (sh also writes
        // "Terminated" to the probe's stderr, hence not in the comparison above).
        let mut probes = probes;
        probes.push(Probe::Command {
            script: "kill -TERM $$".into(),
        });
        let facts = parse_probe_output(&probes, &run(&probe_script(&probes))).unwrap();
        assert!(matches!(&facts.answers[12].1, ProbeResult::Command(c) if c.rc == 143));
    }

    #[test]
    fn a_prefetch_larger_than_one_argument_travels_on_stdin() {
        // Regression: a run's probes on one host made a 141 KB script, and the kernel refused
        // it as one argument ("Argument list too long"): every task probed on its own.
        let d = tempfile::tempdir().unwrap();
        let probes: Vec<Probe> = (0..3000)
            .map(|i| Probe::Stat {
                path: d
                    .path()
                    .join(format!("a-longer-file-name-as-the-stack-has-{i:04}"))
                    .display()
                    .to_string(),
                follow: i % 2 == 0,
            })
            .chain([Probe::Command {
                script: "cat; echo after".into(),
            }])
            .collect();
        assert!(py_probes(&probes).len() > 128 << 10);
        let (cmd, stdin) = prefetch_script(&probes);
        assert!(cmd.len() < 32 << 10, "{}", cmd.len());
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&stdin).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let facts = parse_probe_output(&probes, &out.stdout).unwrap();
        assert_eq!(facts.answers.len(), probes.len());
        assert!(matches!(&facts.answers[0].1, ProbeResult::Stat(st) if !st.exists));
        // A probe's command reads no probe data: stdin is spent before it runs.
        assert!(
            matches!(&facts.answers[3000].1, ProbeResult::Command(c) if c.rc == 0 && c.stdout == "after\n"),
            "{:?}",
            facts.answers[3000].1
        );
    }

    #[test]
    fn command_output_cannot_break_the_framing() {
        let probes = vec![
            Probe::Command {
                script: "echo '@@ 5 stat'; echo '@@ end'; echo err >&2; exit 3".into(),
            },
            Probe::Command {
                script: "printf 'no newline'; read x; echo \"[$x]\"".into(),
            },
        ];
        let facts = run(&probes);
        assert_eq!(
            facts.answers[0].1,
            ProbeResult::Command(CommandOutput {
                rc: 3,
                stdout: "@@ 5 stat\n@@ end\n".into(),
                stderr: "err\n".into(),
            })
        );
        assert_eq!(
            facts.answers[1].1,
            ProbeResult::Command(CommandOutput {
                rc: 0,
                stdout: "no newline[]\n".into(),
                stderr: String::new(),
            })
        );
    }

    #[test]
    fn dpkg_reports_installed_versions_and_absent_packages() {
        let probes = vec![Probe::Dpkg {
            packages: vec!["dpkg".into(), "no-such-package-xyz".into()],
        }];
        let facts = run(&probes);
        let ProbeResult::Dpkg(states) = &facts.answers[0].1 else {
            panic!()
        };
        assert_eq!(states[0].name, "dpkg");
        assert!(states[0].version.as_deref().unwrap().starts_with("1."));
        assert_eq!(states[1].version, None);
    }

    #[test]
    fn unit_probe_parses_systemctl_show() {
        // This machine may not run systemd: the probe must still answer.
        let probes = vec![Probe::Unit {
            name: "ssh.service".into(),
        }];
        let facts = run(&probes);
        assert!(matches!(facts.answers[0].1, ProbeResult::Unit(ref u) if u.name == "ssh.service"));
        let u = parse_unit(
            "x.service",
            "LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n",
        );
        assert_eq!(
            (
                u.load_state.as_str(),
                u.active_state.as_str(),
                u.sub_state.as_str(),
                u.unit_file_state.as_str()
            ),
            ("loaded", "active", "running", "enabled")
        );
    }

    #[test]
    fn dpkg_output_parser_handles_multiarch_and_config_files() {
        let out = "libc6\tlibc6:amd64\tinstalled\t2.36\nfoo\tfoo\tconfig-files\t1.0\n";
        let s = parse_dpkg(&["libc6:amd64".into(), "foo".into(), "libc6".into()], out);
        assert_eq!(s[0].version.as_deref(), Some("2.36"));
        assert_eq!(s[1].version, None);
        assert_eq!(s[2].version.as_deref(), Some("2.36"));
    }

    #[test]
    fn truncated_or_mismatched_output_is_an_error() {
        let probes = vec![Probe::Read {
            path: "/x".into(),
            max_bytes: 1,
        }];
        assert!(parse_probe_output(&probes, b"@@ 0 read\nmissing\n").is_err());
        assert!(parse_probe_output(&probes, b"@@ 0 stat\nabsent\n@@ end\n").is_err());
        assert!(parse_probe_output(&probes, b"@@ end\n").is_err());
        assert!(parse_probe_output(&[], b"@@ end\n")
            .unwrap()
            .answers
            .is_empty());
    }
}
