//! Ansible's `ansible_ssh_common_args` / `ansible_ssh_extra_args`: the ssh command-line options we
//! understand, applied to a [`ConnectTarget`].

use std::path::PathBuf;
use std::time::Duration;

use super::{ConnectTarget, HostKeyPolicy};

/// Apply OpenSSH command-line options (as in `ansible_ssh_common_args`) to `target`.
///
/// Understood: `-o UserKnownHostsFile=PATH`, `-o StrictHostKeyChecking=yes|accept-new`,
/// `-o Port=N`, `-o User=NAME`, `-o IdentityFile=PATH`, `-o ProxyJump=SPEC`,
/// `-o ConnectTimeout=S`, `-o ServerAliveInterval=S`, `-o ServerAliveCountMax=N`, `-i PATH`,
/// `-p PORT`, `-l USER`, `-J SPEC` (also written `-oKey=Value`, `-o "Key Value"`, `-pPORT`).
/// Returns what the caller must still act on ([`SshArgs`]): the options that were ignored (not
/// understood), in order, so the caller can warn, and whether the options asked to turn
/// host-key checking off.
///
/// Host-key checking is never off: `StrictHostKeyChecking=no` is applied as `accept-new` (a
/// new host's key is recorded, a changed key is refused), and `UserKnownHostsFile=/dev/null`
/// leaves `known_hosts` untouched and is reported, for the caller to point it at a file that
/// persists (see [`super::defaults::ConnectDefaults`]). Errors are for values we refuse: bad
/// ports, unbalanced quotes, a missing argument, an unknown `StrictHostKeyChecking` value.
pub fn apply_ssh_args(target: &mut ConnectTarget, args: &str) -> Result<SshArgs, String> {
    let words = split(args)?;
    let mut out = SshArgs::default();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        let Some(flag) = w.strip_prefix('-').and_then(|f| f.chars().next()) else {
            out.ignored.push(w.clone());
            continue;
        };
        // Options that take an argument: attached (`-p22`) or the next word.
        const WITH_ARG: &str = "bcDEeFIiJLlmOopQRSWw";
        if !WITH_ARG.contains(flag) {
            out.ignored.push(w.clone());
            continue;
        }
        let attached = &w[1 + flag.len_utf8()..];
        let arg = if attached.is_empty() {
            let Some(next) = words.get(i) else {
                return Err(format!("ssh option -{flag} needs an argument"));
            };
            i += 1;
            next.clone()
        } else {
            attached.to_string()
        };
        match flag {
            'o' => {
                if let Some(unknown) = apply_option(target, &arg, &mut out.checking_off)? {
                    out.ignored.push(format!("-o {unknown}"));
                }
            }
            'i' => target.identity_files.push(expand_tilde(&arg)),
            'p' => target.port = Some(parse_port(&arg)?),
            'l' => target.user = Some(arg),
            'J' => target.proxy_jump = jump(&arg),
            _ => out.ignored.push(format!("-{flag} {arg}")),
        }
    }
    Ok(out)
}

/// What [`apply_ssh_args`] leaves to its caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshArgs {
    /// Options not understood, in order (e.g. `-o ControlMaster=auto`).
    pub ignored: Vec<String>,
    /// The options that asked to turn host-key checking off (`-o StrictHostKeyChecking=no`,
    /// `-o UserKnownHostsFile=/dev/null`), as written. `StrictHostKeyChecking=no` was applied
    /// as accept-new.
    pub checking_off: Vec<String>,
}

impl SshArgs {
    /// Whether `UserKnownHostsFile` named no file that keeps keys (`/dev/null`, `none`).
    pub fn null_known_hosts(&self) -> bool {
        self.checking_off
            .iter()
            .any(|o| o.to_ascii_lowercase().starts_with("userknownhostsfile"))
    }
}

/// One `-o` option. Returns it back when it is not one we understand.
fn apply_option(
    target: &mut ConnectTarget,
    opt: &str,
    checking_off: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let (key, value) = match opt.find(['=', ' ', '\t']) {
        Some(pos) => (
            &opt[..pos],
            opt[pos + 1..].trim_start_matches(['=', ' ', '\t']).trim(),
        ),
        None => return Err(format!("ssh option -o {opt} has no value")),
    };
    match key.to_ascii_lowercase().as_str() {
        "stricthostkeychecking" => {
            target.host_key_policy = match value.to_ascii_lowercase().as_str() {
                "yes" | "ask" => HostKeyPolicy::Strict,
                "accept-new" => HostKeyPolicy::AcceptNew,
                // Never off: recorded on first contact, a changed key still refused.
                "no" | "off" => {
                    checking_off.push(format!("StrictHostKeyChecking={value}"));
                    HostKeyPolicy::AcceptNew
                }
                other => {
                    return Err(format!(
                        "StrictHostKeyChecking={other} is not a valid value (yes, accept-new, no)"
                    ))
                }
            }
        }
        "userknownhostsfile" => {
            // OpenSSH allows several files; the first one is where keys are recorded.
            let first = value.split_whitespace().next().unwrap_or("");
            if first.is_empty() || first == "/dev/null" || first.eq_ignore_ascii_case("none") {
                // Keys kept nowhere would make every key look new: the caller keeps them.
                checking_off.push(format!("UserKnownHostsFile={value}"));
            } else {
                target.known_hosts = Some(expand_tilde(first));
            }
        }
        "port" => target.port = Some(parse_port(value)?),
        "user" => target.user = Some(value.to_string()),
        "identityfile" => target.identity_files.push(expand_tilde(value)),
        "proxyjump" => target.proxy_jump = jump(value),
        "connecttimeout" => {
            target.connect_timeout = Duration::from_secs(seconds(key, value)?.max(1));
        }
        "serveraliveinterval" => {
            target.alive_interval = Some(Duration::from_secs(seconds(key, value)?));
        }
        "serveralivecountmax" => target.alive_count_max = Some(seconds(key, value)? as usize),
        _ => return Ok(Some(opt.to_string())),
    }
    Ok(None)
}

/// A whole number of seconds (or a count), as OpenSSH takes for these options.
fn seconds(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("ssh option -o {key}={value}: a whole number is needed"))
}

fn jump(spec: &str) -> Option<String> {
    if spec.eq_ignore_ascii_case("none") {
        None
    } else {
        Some(spec.to_string())
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("ssh port {s:?} is not a port number (1-65535)")),
    }
}

/// `~` and `~/...` against `$HOME`; other paths as given.
pub(crate) fn expand_tilde(p: &str) -> PathBuf {
    if p == "~" || p.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(p.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    PathBuf::from(p)
}

/// Split like a POSIX shell (and Python's `shlex.split`, which Ansible uses): whitespace
/// separates words, single quotes are literal, double quotes allow `\"` `\\` `\$` `` \` ``.
fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unbalanced ' in ssh args: {s}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unbalanced \" in ssh args: {s}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unbalanced \" in ssh args: {s}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => cur.push(c),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ConnectTarget {
        ConnectTarget::new("web1", "10.0.0.5")
    }

    #[test]
    fn understood_options_are_applied_and_the_rest_reported() {
        let mut t = target();
        let ignored = apply_ssh_args(
            &mut t,
            "-o UserKnownHostsFile=/etc/prov/known_hosts -o StrictHostKeyChecking=accept-new \
             -o ControlMaster=auto -C -p 2222 -i /keys/a -oIdentityFile=/keys/b \
             -o 'User deploy' -J bastion@jump:2200 -4",
        )
        .unwrap();
        assert_eq!(t.known_hosts, Some(PathBuf::from("/etc/prov/known_hosts")));
        assert_eq!(t.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(t.port, Some(2222));
        assert_eq!(
            t.identity_files,
            vec![PathBuf::from("/keys/a"), PathBuf::from("/keys/b")]
        );
        assert_eq!(t.user.as_deref(), Some("deploy"));
        assert_eq!(t.proxy_jump.as_deref(), Some("bastion@jump:2200"));
        assert_eq!(ignored.ignored, vec!["-o ControlMaster=auto", "-C", "-4"]);
        assert!(ignored.checking_off.is_empty());
    }

    #[test]
    fn keepalive_and_connect_timeout_options_are_applied_per_host() {
        let mut t = target();
        let a = apply_ssh_args(
            &mut t,
            "-o ServerAliveInterval=2 -oServerAliveCountMax=3 -o ConnectTimeout=7",
        )
        .unwrap();
        assert!(a.ignored.is_empty(), "{:?}", a.ignored);
        assert_eq!(t.alive_interval, Some(Duration::from_secs(2)));
        assert_eq!(t.alive_count_max, Some(3));
        assert_eq!(t.connect_timeout, Duration::from_secs(7));
        let e = apply_ssh_args(&mut target(), "-o ServerAliveInterval=2s").unwrap_err();
        assert!(e.contains("ServerAliveInterval=2s"), "{e}");
    }

    #[test]
    fn attached_and_equals_forms_work() {
        let mut t = target();
        apply_ssh_args(
            &mut t,
            "-p2200 -oPort=2201 -o ProxyJump=j1 -lroot -o StrictHostKeyChecking=yes",
        )
        .unwrap();
        assert_eq!(t.port, Some(2201));
        assert_eq!(t.proxy_jump.as_deref(), Some("j1"));
        assert_eq!(t.user.as_deref(), Some("root"));
        assert_eq!(t.host_key_policy, HostKeyPolicy::Strict);
    }

    #[test]
    fn turning_host_key_checking_off_is_accept_new_and_reported() {
        let mut t = target();
        let a = apply_ssh_args(
            &mut t,
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        )
        .unwrap();
        assert_eq!(t.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(t.known_hosts, None, "/dev/null is left to the caller");
        assert_eq!(
            a.checking_off,
            vec!["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]
        );
        assert!(a.null_known_hosts());
        let a = apply_ssh_args(&mut target(), "-o StrictHostKeyChecking=off").unwrap();
        assert!(!a.null_known_hosts());
        assert!(apply_ssh_args(&mut target(), "-o StrictHostKeyChecking=maybe").is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        let mut t = target();
        assert!(apply_ssh_args(&mut t, "-p").is_err());
        assert!(apply_ssh_args(&mut t, "-p 99999").is_err());
        assert!(apply_ssh_args(&mut t, "-o 'User=x").is_err());
    }

    #[test]
    fn shell_like_splitting() {
        assert_eq!(
            split(r#"a 'b c' "d \"e\"" f\ g"#).unwrap(),
            vec!["a", "b c", "d \"e\"", "f g"]
        );
    }
}
