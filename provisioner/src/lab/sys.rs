//! Small helpers over std::process and /proc for the lab (sync code; no async runtime).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Run a command to completion; its stdout on success, an error with its stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Environment(format!("cannot run `{shown}`: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(Error::Environment(format!(
            "`{shown}` failed ({}):\n{}",
            out.status,
            tail.join("\n")
        )))
    }
}

/// Run a command; true when it exits 0. Output is discarded.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    crate::shell::join(words)
}

pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Is `name` an executable in PATH (or in the sbin dirs, which a non-login root shell may miss)?
pub fn which(name: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|dir| Path::new(dir).join(name).is_file());
    found
}

/// Effective uid of this process, from /proc.
pub fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The NUL-separated command line of a process, if it is alive.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // zombie or kernel thread
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Is `pid` alive (not a zombie) and does its command line contain `needle` as a word?
pub fn alive_with_arg(pid: u32, needle: &str) -> bool {
    cmdline(pid).is_some_and(|words| words.iter().any(|w| w == needle))
}

/// Is the process alive (exists and is not a zombie)? Unlike [`cmdline`], this never reads as
/// dead while the process is in the middle of an exec.
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// (pid, ppid, comm) of every process.
pub fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let _state = rest.next();
        if let Some(ppid) = rest.next().and_then(|p| p.parse().ok()) {
            out.push((pid, ppid, comm));
        }
    }
    out
}

/// The container's init: the first descendant of `root` named `systemd` in another PID namespace.
pub fn container_init(root: u32) -> Option<u32> {
    let procs = processes();
    let my_ns = std::fs::read_link("/proc/self/ns/pid").ok();
    let mut frontier = vec![root];
    let mut depth = 0;
    while !frontier.is_empty() && depth < 5 {
        let mut next = Vec::new();
        for (pid, ppid, comm) in &procs {
            if frontier.contains(ppid) {
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
                if comm == "systemd" && ns != my_ns {
                    return Some(*pid);
                }
                next.push(*pid);
            }
        }
        frontier = next;
        depth += 1;
    }
    None
}

/// Send a signal with kill(1) (no unsafe code in this crate).
pub fn signal(pid: u32, sig: &str) -> bool {
    succeeds(&mut cmd("kill", &[&format!("-{sig}"), &pid.to_string()]))
}

/// Poll `f` every `every` until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

pub fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Environment(format!("{what} {}: {e}", path.display()))
}

pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| io_err("cannot write", path, e))
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("cannot chmod", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_stderr_on_failure() {
        let err = run(&mut cmd("sh", &["-c", "echo boom >&2; exit 3"])).unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(run(&mut cmd("echo", &["hi"])).unwrap(), "hi\n");
    }

    #[test]
    fn this_process_is_visible_in_proc() {
        let me = std::process::id();
        assert!(processes().iter().any(|(p, _, _)| *p == me));
        assert!(cmdline(me).is_some());
        assert!(is_alive(me));
        assert!(euid().is_some());
    }
}
