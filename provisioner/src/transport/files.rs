//! Atomic file writes on a remote host, as POSIX sh scripts (pure: this module runs nothing).
//!
//! The content arrives on the script's standard input. It goes to a temp file in the target's
//! own directory (so the final `mv` is a rename on one filesystem), is synced, gets its owner
//! and mode, and only then replaces the target. Readers see the old file or the complete new one,
//! never a half-written file or one with the wrong mode.

use std::path::Path;

use crate::shell::quote;

/// A script that atomically replaces `path` with the bytes on its standard input.
///
/// - `mode`: the file's permission bits (e.g. `0o644`). `None` keeps an existing file's mode, and
///   a new file gets the default of the remote umask (like `cat > file` would).
/// - `owner` / `group`: names or numeric ids. `None` keeps an existing file's owner/group, and a
///   new file belongs to the remote user (after become, to that user).
///
/// - `len`: how many bytes the standard input carries. Fewer (the connection dropped while
///   they were sent) fails the write and leaves `path` as it was.
///
/// On any failure the temp file is removed and the script exits 1 with a message on stderr
/// starting with `provisioner:`. The temp file's name holds the writing shell's pid; a temp file
/// of `path` whose writer is gone (the host lost power, the writer was killed) is removed by the
/// next write of `path`. Symlinks are not followed: a link at `path` is replaced by the file.
/// Needs `mktemp`, `stat -c` (GNU coreutils or busybox), `sync` and `/proc`.
pub fn atomic_write_script(
    path: &Path,
    len: usize,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> String {
    let target = path.to_string_lossy().into_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_string_lossy().into_owned(),
        _ => ".".to_string(),
    };
    let base = path
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());

    let mut s = String::new();
    s.push_str("set -u\n");
    s.push_str(&format!("target={}\n", quote(&target)));
    s.push_str(&format!("dir={}\n", quote(&dir)));
    s.push_str("tmp=\n");
    s.push_str("fail() { [ -n \"$tmp\" ] && rm -f -- \"$tmp\"; printf 'provisioner: %s\\n' \"$*\" >&2; exit 1; }\n");
    s.push_str("trap 'fail \"interrupted while writing $target\"' HUP INT TERM\n");
    s.push_str("if [ -d \"$target\" ]; then fail \"$target is a directory\"; fi\n");
    s.push_str(&format!("base={}\n", quote(&base)));
    // Temp files of this target whose writer is gone: an earlier write cut off by a power loss
    // or a kill (a write cut off by a dropped connection removes its own).
    s.push_str(
        "for old in \"$dir\"/.\"$base\".provisioner.*; do\n\
         \x20 [ -f \"$old\" ] || continue\n\
         \x20 pid=${old##*.provisioner.}; pid=${pid%%.*}\n\
         \x20 case $pid in ''|*[!0-9]*) continue;; esac\n\
         \x20 [ -d \"/proc/$pid\" ] || rm -f -- \"$old\"\n\
         done\n",
    );
    s.push_str(
        "tmp=$(mktemp \"$dir/.$base.provisioner.$$.XXXXXXXX\") || { tmp=; fail \"cannot create a temp file in $dir (does the directory exist, is it writable?)\"; }\n",
    );
    s.push_str("cat > \"$tmp\" || fail \"cannot write the new content of $target (disk full?)\"\n");
    s.push_str(&format!(
        "got=$(stat -c %s -- \"$tmp\") || fail \"cannot read the size of the new content of $target\"\n\
         [ \"$got\" = {len} ] || fail \"the new content of $target was cut short: $got of {len} bytes arrived\"\n"
    ));
    s.push_str(
        "sync -- \"$tmp\" 2>/dev/null || sync || fail \"cannot sync the new content of $target\"\n",
    );

    // Owner and group: explicit, else those of the existing file.
    let spec = match (owner, group) {
        (Some(o), Some(g)) => Some(quote(&format!("{o}:{g}"))),
        (Some(o), None) => Some(quote(o)),
        (None, Some(g)) => Some(quote(&format!(":{g}"))),
        (None, None) => None,
    };
    if owner.is_none() || group.is_none() {
        // Keep what the existing file has for whatever was not given.
        let keep = match (owner, group) {
            (None, None) => "$(stat -c %u:%g -- \"$target\")",
            (Some(_), None) => ":$(stat -c %g -- \"$target\")",
            (None, Some(_)) => "$(stat -c %u -- \"$target\")",
            (Some(_), Some(_)) => "",
        };
        s.push_str(&format!(
            "if [ -e \"$target\" ]; then chown -- \"{keep}\" \"$tmp\" || fail \"cannot keep the owner of $target\"; fi\n"
        ));
    }
    if let Some(spec) = spec {
        s.push_str(&format!(
            "chown -- {spec} \"$tmp\" || fail \"cannot set the owner of $target to \"{spec}\n"
        ));
    }

    // Mode: explicit, else the existing file's, else the umask default.
    match mode {
        Some(m) => s.push_str(&format!(
            "chmod -- {:o} \"$tmp\" || fail \"cannot set the mode of $target to {:04o}\"\n",
            m & 0o7777,
            m & 0o7777
        )),
        None => s.push_str(
            "if [ -e \"$target\" ]; then m=$(stat -c %a -- \"$target\"); \
             else m=$(printf '%o' $(( 0666 & ~0$(umask) ))); fi\n\
             chmod -- \"$m\" \"$tmp\" || fail \"cannot set the mode of $target to $m\"\n",
        ),
    }
    s.push_str(
        "mv -f -- \"$tmp\" \"$target\" || fail \"cannot move the new content over $target\"\n",
    );
    s.push_str("sync -- \"$dir\" 2>/dev/null || true\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    fn run(script: &str, input: &[u8]) -> std::process::Output {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A script that refuses early exits before reading its input: a broken pipe is fine.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".provisioner."))
            .collect()
    }

    #[test]
    fn new_file_gets_content_and_mode_and_no_temp_file_remains() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("it's a file.conf");
        let out = run(
            &atomic_write_script(&p, 5, Some(0o640), None, None),
            b"a\nb\0c",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"a\nb\0c");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn existing_file_is_replaced_and_keeps_its_mode_when_none_is_given() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o604)).unwrap();
        let out = run(&atomic_write_script(&p, 3, None, None, None), b"new");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o604);
    }

    #[test]
    fn new_file_without_mode_follows_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("y");
        let script = format!(
            "umask 027\n{}",
            atomic_write_script(&p, 1, None, None, None)
        );
        let out = run(&script, b"z");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn owner_and_group_are_applied_before_the_rename() {
        // Our own uid/gid: chown to them works without privileges.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("owned");
        let id = |flag: &str| {
            let o = Command::new("id").arg(flag).output().unwrap();
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        };
        let (u, g) = (id("-u"), id("-g"));
        let out = run(
            &atomic_write_script(&p, 1, Some(0o600), Some(&u), Some(&g)),
            b"k",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"k");
    }

    #[test]
    fn failure_removes_the_temp_file_and_leaves_the_target_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kept");
        std::fs::write(&p, "old").unwrap();
        let out = run(
            &atomic_write_script(&p, 3, Some(0o644), Some("no-such-user-xyz"), None),
            b"new",
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("provisioner: cannot set the owner"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope/file");
        let out = run(&atomic_write_script(&p, 1, None, None, None), b"x");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot create a temp file in"), "{err}");
    }

    #[test]
    fn a_directory_at_the_target_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = run(&atomic_write_script(d.path(), 1, None, None, None), b"x");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
    }

    /// Issue 15: a network cut while a large file was sent gave the script a short standard
    /// input, and `cat` ended without an error: the part that arrived replaced the file.
    #[test]
    fn content_cut_short_by_a_dropped_connection_leaves_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.bin");
        std::fs::write(&p, "old").unwrap();
        let out = run(
            &atomic_write_script(&p, 1000, None, None, None),
            &[7u8; 600],
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("was cut short: 600 of 1000 bytes arrived"),
            "{err}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn a_temp_file_left_by_a_dead_writer_is_removed_by_the_next_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.bin");
        // A writer that is gone (pid far above pid_max), one that is alive (us), and a
        // temp file of another target.
        let dead = d.path().join(".big.bin.provisioner.99999999.AbCdEfGh");
        let live = d.path().join(format!(
            ".big.bin.provisioner.{}.AbCdEfGh",
            std::process::id()
        ));
        let other = d.path().join(".other.provisioner.99999999.AbCdEfGh");
        for f in [&dead, &live, &other] {
            std::fs::write(f, "part").unwrap();
        }
        let out = run(&atomic_write_script(&p, 3, None, None, None), b"new");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!dead.exists(), "the dead writer's temp file is gone");
        assert!(live.exists(), "a live writer's temp file is kept");
        assert!(other.exists(), "another target's temp file is kept");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }
}
