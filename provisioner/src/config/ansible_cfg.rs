//! `ansible.cfg`: where it is found and the settings provisioner takes from it.
//!
//! Found as Ansible finds it (first that exists wins): `$ANSIBLE_CONFIG` (a file, or a directory
//! holding `ansible.cfg`), `./ansible.cfg` (skipped in a world-writable directory, as Ansible
//! does), `~/.ansible.cfg`. Read: `[defaults]` inventory, roles_path, remote_user,
//! private_key_file, forks, host_key_checking, timeout, gathering; `[privilege_escalation]`
//! become, become_method (sudo only), become_user, become_ask_pass. Every other key is listed
//! as ignored. Relative paths are relative to the file's directory, `~` is the home directory.
//! `ANSIBLE_HOST_KEY_CHECKING` overrides `host_key_checking`, as in Ansible.

use std::path::{Path, PathBuf};

use super::ini::Ini;
use crate::diag::{Diagnostics, Loc};

/// `gathering`: when plays gather facts without a `gather_facts:` of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gathering {
    /// Gather unless a play says `gather_facts: false` (Ansible's default).
    Implicit,
    /// Gather only where a play says `gather_facts: true`.
    Explicit,
    /// Gather once per host and run; provisioner gathers per play, as `implicit`.
    Smart,
}

/// The settings resolved from one `ansible.cfg` (and the environment). `None` or empty: not set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnsibleConfig {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    pub inventory: Vec<PathBuf>,
    pub roles_path: Vec<PathBuf>,
    pub remote_user: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub forks: Option<usize>,
    /// The value, and where it was set (`./ansible.cfg:7`, `ANSIBLE_HOST_KEY_CHECKING`).
    pub host_key_checking: Option<(bool, String)>,
    /// SSH connect timeout, seconds.
    pub timeout: Option<u64>,
    pub gathering: Option<Gathering>,
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    pub become_ask_pass: bool,
    /// Keys read but not used, as `[section] key (file:line)`.
    pub ignored: Vec<String>,
    /// What the search found or skipped, for `-v`.
    pub notes: Vec<String>,
}

/// What the process environment says, passed in so resolving stays a pure function.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub ansible_config: Option<PathBuf>,
    pub host_key_checking: Option<String>,
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
}

impl Env {
    /// The real environment of this process.
    pub fn current() -> Env {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Env {
            ansible_config: var("ANSIBLE_CONFIG").map(PathBuf::from),
            host_key_checking: var("ANSIBLE_HOST_KEY_CHECKING")
                .map(|v| v.to_string_lossy().to_string()),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            home: var("HOME").map(PathBuf::from),
        }
    }
}

/// The config file Ansible would read, and notes about candidates it skipped.
pub fn find(env: &Env) -> (Option<PathBuf>, Vec<String>) {
    let mut notes = Vec::new();
    let mut candidates = Vec::new();
    if let Some(p) = &env.ansible_config {
        let p = expand(p, env.home.as_deref(), &env.cwd);
        candidates.push(if p.is_dir() { p.join("ansible.cfg") } else { p });
    }
    let local = env.cwd.join("ansible.cfg");
    if world_writable(&env.cwd) {
        if local.is_file() {
            notes.push(format!(
                "{} is ignored: its directory is world writable (as Ansible does)",
                local.display()
            ));
        }
    } else {
        candidates.push(local);
    }
    if let Some(h) = &env.home {
        candidates.push(h.join(".ansible.cfg"));
    }
    if let Some(p) = &env.ansible_config {
        if !candidates.first().is_some_and(|c| c.is_file()) {
            notes.push(format!(
                "ANSIBLE_CONFIG={} names no file; looking further",
                p.display()
            ));
        }
    }
    (candidates.into_iter().find(|c| c.is_file()), notes)
}

fn world_writable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o002 != 0)
}

/// `~` and relative paths: Ansible resolves a config file's paths against its directory.
fn expand(p: &Path, home: Option<&Path>, base: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    let p = match (s.strip_prefix('~'), home) {
        (Some(rest), Some(h)) if rest.is_empty() || rest.starts_with('/') => {
            h.join(rest.trim_start_matches('/'))
        }
        _ => p.to_path_buf(),
    };
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Ansible's `boolean()` of a setting's text (the workspace's one truthiness,
/// [`cluster_core::boolean`]).
fn boolean(v: &str) -> Option<bool> {
    cluster_core::boolean(&serde_json::Value::String(v.to_string()))
}

/// Read and resolve `path`, then the environment overrides. Errors carry file:line.
pub fn load(path: &Path, env: &Env) -> Result<AnsibleConfig, Diagnostics> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![crate::diag::Diagnostic::at(
            &Loc::file(shown.as_str()),
            format!("cannot read: {e}"),
        )])
    })?;
    let ini = super::ini::parse(&text, &shown)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let mut cfg = resolve(&ini, base, env.home.as_deref())?;
    cfg.file = Some(path.to_path_buf());
    apply_env(&mut cfg, env)?;
    Ok(cfg)
}

/// Find and load the config file of this environment; no file is an empty config.
pub fn discover(env: &Env) -> Result<AnsibleConfig, Diagnostics> {
    let (found, notes) = find(env);
    let mut cfg = match &found {
        Some(p) => load(p, env)?,
        None => {
            let mut c = AnsibleConfig::default();
            apply_env(&mut c, env)?;
            c
        }
    };
    let mut all = notes;
    all.push(match &found {
        Some(p) => format!("Using {} as config file", p.display()),
        None => "No config file found; using defaults".to_string(),
    });
    all.append(&mut cfg.notes);
    cfg.notes = all;
    Ok(cfg)
}

fn apply_env(cfg: &mut AnsibleConfig, env: &Env) -> Result<(), Diagnostics> {
    if let Some(v) = &env.host_key_checking {
        match boolean(v) {
            Some(b) => cfg.host_key_checking = Some((b, "ANSIBLE_HOST_KEY_CHECKING".into())),
            None => {
                return Err(Diagnostics(vec![crate::diag::Diagnostic::new(
                    None,
                    format!("ANSIBLE_HOST_KEY_CHECKING={v} is not a boolean (True or False)"),
                )]))
            }
        }
    }
    Ok(())
}

/// The settings of a parsed file. `base` is the file's directory.
pub fn resolve(ini: &Ini, base: &Path, home: Option<&Path>) -> Result<AnsibleConfig, Diagnostics> {
    let mut cfg = AnsibleConfig::default();
    let mut diags = Diagnostics::new();
    let path = |v: &str| expand(Path::new(v.trim()), home, base);
    for section in &ini.sections {
        for e in &section.entries {
            let loc = e.loc(&ini.file);
            let mut bad = |what: &str| {
                diags.error(
                    &loc,
                    format!("[{}] {} = {}: {what}", section.name, e.key, e.value),
                )
            };
            let v = e.value.as_str();
            match (section.name.as_str(), e.key.as_str()) {
                ("defaults", "inventory" | "hostfile") => {
                    cfg.inventory = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(path)
                        .collect();
                }
                ("defaults", "roles_path") => {
                    cfg.roles_path = v
                        .split([':', '\n'])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(path)
                        .collect();
                }
                ("defaults", "remote_user") => cfg.remote_user = Some(v.to_string()),
                ("defaults", "private_key_file") => cfg.private_key_file = Some(path(v)),
                ("defaults", "forks") => match v.parse::<usize>() {
                    Ok(n) if n > 0 => cfg.forks = Some(n),
                    _ => bad("must be a whole number of at least 1"),
                },
                ("defaults", "timeout") => match v.parse::<u64>() {
                    Ok(n) if n > 0 => cfg.timeout = Some(n),
                    _ => bad("must be a number of seconds of at least 1"),
                },
                ("defaults", "host_key_checking") => match boolean(v) {
                    Some(b) => cfg.host_key_checking = Some((b, loc.to_string())),
                    None => bad("must be a boolean (True or False)"),
                },
                ("defaults", "gathering") => match v.to_ascii_lowercase().as_str() {
                    "implicit" => cfg.gathering = Some(Gathering::Implicit),
                    "explicit" => cfg.gathering = Some(Gathering::Explicit),
                    "smart" => cfg.gathering = Some(Gathering::Smart),
                    _ => bad("must be implicit, explicit or smart"),
                },
                ("privilege_escalation", "become") => match boolean(v) {
                    Some(b) => cfg.become_ = Some(b),
                    None => bad("must be a boolean (True or False)"),
                },
                ("privilege_escalation", "become_method") => {
                    if v != "sudo" && v != "ansible.builtin.sudo" {
                        bad("provisioner escalates with sudo only")
                    }
                }
                ("privilege_escalation", "become_user") => cfg.become_user = Some(v.to_string()),
                ("privilege_escalation", "become_ask_pass") => match boolean(v) {
                    Some(b) => cfg.become_ask_pass = b,
                    None => bad("must be a boolean (True or False)"),
                },
                (s, k) => cfg.ignored.push(format!("[{s}] {k} ({loc})")),
            }
        }
    }
    diags.into_result(cfg)
}

/// What `ansible.cfg` says for one run's entries the CLI did not set.
pub fn ignored_entries(cfg: &AnsibleConfig) -> impl Iterator<Item = String> + '_ {
    cfg.ignored
        .iter()
        .map(|i| format!("ansible.cfg: {i} is not used by provisioner; ignored"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AnsibleConfig, Diagnostics> {
        let ini = super::super::ini::parse(text, "/proj/ansible.cfg")?;
        resolve(&ini, Path::new("/proj"), Some(Path::new("/home/op")))
    }

    #[test]
    fn the_keys_people_set_are_read_and_paths_resolved_against_the_file() {
        let c = parse(
            "[defaults]\ninventory = hosts.ini, /etc/inv.yml\nroles_path = roles:~/shared_roles\n\
             remote_user = deploy\nprivate_key_file = ~/.ssh/deploy\nforks = 7\n\
             host_key_checking = False\ntimeout = 30\ngathering = explicit\n\
             stdout_callback = yaml\n[privilege_escalation]\nbecome = True\n\
             become_method = sudo\nbecome_user = admin\nbecome_ask_pass = no\n\
             [ssh_connection]\npipelining = True\n",
        )
        .unwrap();
        assert_eq!(
            c.inventory,
            vec![
                PathBuf::from("/proj/hosts.ini"),
                PathBuf::from("/etc/inv.yml")
            ]
        );
        assert_eq!(
            c.roles_path,
            vec![
                PathBuf::from("/proj/roles"),
                PathBuf::from("/home/op/shared_roles")
            ]
        );
        assert_eq!(c.remote_user.as_deref(), Some("deploy"));
        assert_eq!(
            c.private_key_file,
            Some(PathBuf::from("/home/op/.ssh/deploy"))
        );
        assert_eq!(c.forks, Some(7));
        assert_eq!(
            c.host_key_checking,
            Some((false, "/proj/ansible.cfg:7".to_string()))
        );
        assert_eq!(c.timeout, Some(30));
        assert_eq!(c.gathering, Some(Gathering::Explicit));
        assert_eq!(c.become_, Some(true));
        assert_eq!(c.become_user.as_deref(), Some("admin"));
        assert!(!c.become_ask_pass);
        assert_eq!(
            c.ignored,
            vec![
                "[defaults] stdout_callback (/proj/ansible.cfg:10)",
                "[ssh_connection] pipelining (/proj/ansible.cfg:17)"
            ]
        );
    }

    #[test]
    fn bad_values_are_errors_with_file_and_line() {
        let err = parse(
            "[defaults]\nforks = many\nhost_key_checking = maybe\ngathering = lazy\n\
             [privilege_escalation]\nbecome_method = su\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "/proj/ansible.cfg:2: [defaults] forks = many: must be a whole number",
            "/proj/ansible.cfg:3: [defaults] host_key_checking = maybe: must be a boolean",
            "/proj/ansible.cfg:4: [defaults] gathering = lazy: must be implicit",
            "/proj/ansible.cfg:6: [privilege_escalation] become_method = su: provisioner escalates with sudo only",
        ] {
            assert!(err.contains(want), "{want}\n{err}");
        }
    }

    #[test]
    fn search_order_is_ansible_config_then_cwd_then_home_and_env_overrides() {
        let d = tempfile::tempdir().unwrap();
        let (cwd, home, other) = (
            d.path().join("proj"),
            d.path().join("home"),
            d.path().join("o"),
        );
        for p in [&cwd, &home, &other] {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(home.join(".ansible.cfg"), "[defaults]\nforks = 1\n").unwrap();
        let mut env = Env {
            cwd: cwd.clone(),
            home: Some(home.clone()),
            ..Default::default()
        };
        assert_eq!(discover(&env).unwrap().forks, Some(1));
        std::fs::write(cwd.join("ansible.cfg"), "[defaults]\nforks = 2\n").unwrap();
        assert_eq!(discover(&env).unwrap().forks, Some(2));
        std::fs::write(other.join("ansible.cfg"), "[defaults]\nforks = 3\n").unwrap();
        env.ansible_config = Some(other.clone());
        let c = discover(&env).unwrap();
        assert_eq!(c.forks, Some(3));
        assert_eq!(c.file, Some(other.join("ansible.cfg")));
        assert!(
            c.notes.iter().any(|n| n.starts_with("Using ")),
            "{:?}",
            c.notes
        );
        env.ansible_config = Some(other.join("missing.cfg"));
        let c = discover(&env).unwrap();
        assert_eq!(c.forks, Some(2));
        assert!(c.notes[0].contains("names no file"), "{:?}", c.notes);

        env.host_key_checking = Some("False".into());
        let c = discover(&env).unwrap();
        assert_eq!(
            c.host_key_checking,
            Some((false, "ANSIBLE_HOST_KEY_CHECKING".into()))
        );
        env.host_key_checking = Some("perhaps".into());
        assert!(discover(&env).is_err());
    }
}
