//! `user` (ansible-core 2.14 `user.py`, the generic Linux `User` class: useradd/usermod/userdel).
//!
//! Probe: one read-only script printing tagged lines (`passwd:`, `pw:LOCKED:SHA256`, `member:`,
//! `home:`, `parent:`, `group:QUERY<TAB>LINE`). The password hash never leaves the host in the
//! probe: only whether it is locked (`!` prefix) and the sha256 of the hash without leading `!`,
//! which `plan` compares with the sha256 of the wanted hash (Ansible compares
//! `current.lstrip('!') != password.lstrip('!')`). Memberships are the groups listing the user as
//! a member (`grp.getgrall()`, the primary group only when listed explicitly), like Ansible.
//!
//! Actions, in Ansible's order:
//! - create: [create the home when its parent is missing], `useradd [-u UID [-o]] [-g GROUP | -N]
//!   [-G G1,G2] [-c COMMENT] [-d HOME] [-s SHELL] [-p HASH] (-m | -M) [-r] NAME`,
//!   [chown the home], then a read-only `getent passwd NAME` for the result;
//! - modify: `usermod [-u UID [-o]] [-g GID] [-a] [-G ...] [-c ...] [-d HOME [-m]] [-s ...]
//!   [-L | -U] [-p HASH] NAME` when anything differs; then, when the home directory is missing and
//!   `create_home`, copy /etc/skel (or mkdir), chmod per `UMASK` of /etc/login.defs, chown -R;
//! - remove: `userdel [-f] [-r] NAME`.
//!
//! The hash is passed on stdin (`-p "$(cat)"`), so no action script, diff or message contains it;
//! the result shows `password: NOT_LOGGING_PASSWORD` like Ansible. Group order in `-G` is the
//! order given (Ansible joins a Python set, whose order is arbitrary).
//!
//! Result: `name`, `state`, `uid`, `group` (gid), `comment`, `home`, `shell`, `groups` (the
//! argument joined with `,`), `system`/`create_home` (on create), `append`/`move_home` (on
//! modify), `force`/`remove` (on removal). Check mode: creation and removal report only
//! `changed` (Ansible's early exit), a modification reports the current account.
//!
//! Not supported: ssh keys, expires, password_expire_*, local, seuser, skeleton, umask, login_class.

use super::args::{p, pa, req, A};
use super::group::parse_group_line;
use crate::facts::{Facts, Probe, ProbeResult};
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub struct User;
pub static USER: User = User;

const PARAMS: &[ParamSpec] = &[
    req("name", &["user"]),
    p("state"),
    p("uid"),
    p("non_unique"),
    p("group"),
    p("groups"),
    p("append"),
    p("system"),
    p("shell"),
    p("home"),
    pa("create_home", &["createhome"]),
    p("move_home"),
    p("comment"),
    p("password"),
    p("password_lock"),
    p("update_password"),
    p("remove"),
    p("force"),
];

struct U {
    name: String,
    present: bool,
    uid: Option<i64>,
    non_unique: bool,
    group: Option<String>,
    /// `','.join(groups)` as Ansible keeps it; `None` when not given.
    groups: Option<String>,
    append: bool,
    system: bool,
    shell: Option<String>,
    home: Option<String>,
    create_home: bool,
    move_home: bool,
    comment: Option<String>,
    password: Option<String>,
    password_lock: Option<bool>,
    update_always: bool,
    remove: bool,
    force: bool,
}

fn parse(args: &Args) -> Result<U, OpError> {
    let a = A::new(args, PARAMS)?;
    let state = a
        .choice("state", &["absent", "present"], Some("present"))?
        .unwrap_or_default();
    let update = a
        .choice("update_password", &["always", "on_create"], Some("always"))?
        .unwrap_or_default();
    Ok(U {
        name: a.str("name")?.unwrap_or_default(),
        present: state == "present",
        uid: a.int("uid")?,
        non_unique: a.bool_or("non_unique", false)?,
        group: a.str("group")?,
        groups: a.list("groups")?.map(|g| g.join(",")),
        append: a.bool_or("append", false)?,
        system: a.bool_or("system", false)?,
        shell: a.str("shell")?,
        home: a.path("home")?,
        create_home: a.bool_or("create_home", true)?,
        move_home: a.bool_or("move_home", false)?,
        comment: a.str("comment")?,
        password: a.str("password")?,
        password_lock: a.bool("password_lock")?,
        update_always: update == "always",
        remove: a.bool_or("remove", false)?,
        force: a.bool_or("force", false)?,
    })
}

impl U {
    /// `get_groups_set`: the wanted groups, stripped, empty pieces dropped, first order kept.
    fn groups_set(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in self.groups.as_deref().unwrap_or("").split(',') {
            if g.is_empty() {
                continue;
            }
            let g = g.trim().to_string();
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out
    }

    /// Every group whose existence or gid the plan needs.
    fn group_queries(&self) -> Vec<String> {
        let mut q: Vec<String> = Vec::new();
        for g in self
            .group
            .iter()
            .cloned()
            .chain(self.groups_set())
            .chain(std::iter::once(self.name.clone()))
        {
            if !q.contains(&g) {
                q.push(g);
            }
        }
        q
    }
}

/// Python's `os.path.dirname`.
fn dirname(path: &str) -> String {
    match path.rfind('/') {
        None => String::new(),
        Some(i) => {
            let head = &path[..=i];
            if head.chars().all(|c| c == '/') {
                head.to_string()
            } else {
                head.trim_end_matches('/').to_string()
            }
        }
    }
}

fn probe_script(u: &U) -> String {
    let q = quote(&u.name);
    let mut s = String::new();
    s.push_str(&format!(
        "if p=$(getent passwd {q}); then printf 'passwd:%s\\n' \"$p\"; \
         pw=$(printf '%s\\n' \"$p\" | cut -d: -f2); \
         if [ ${{#pw}} -le 1 ]; then pw=$(getent shadow {q} | cut -d: -f2); fi; \
         case \"$pw\" in '!'*) l=1;; *) l=0;; esac; \
         printf 'pw:%s:%s\\n' \"$l\" \"$(printf '%s' \"$pw\" | sed 's/^!*//' | sha256sum | cut -c1-64)\"; \
         getent group | awk -F: -v {} '{{n=split($4,m,\",\"); for(i=1;i<=n;i++) if(m[i]==u){{print \"member:\" $1; break}}}}'; ",
        quote(&format!("u={}", u.name))
    ));
    match &u.home {
        Some(h) => s.push_str(&format!("h={}; ", quote(h))),
        None => s.push_str("h=$(printf '%s\\n' \"$p\" | cut -d: -f6); "),
    }
    s.push_str("if [ -e \"$h\" ]; then echo home:1; else echo home:0; fi; fi; ");
    if let Some(h) = &u.home {
        s.push_str(&format!(
            "if [ -d {} ]; then echo parent:1; else echo parent:0; fi; ",
            quote(&dirname(h))
        ));
    }
    for g in u.group_queries() {
        let qg = quote(&g);
        s.push_str(&format!(
            "if l=$(getent group {qg}); then printf 'group:%s\\t%s\\n' {qg} \"$l\"; fi; "
        ));
    }
    s.push_str("true");
    s
}

struct Passwd {
    uid: i64,
    gid: i64,
    comment: String,
    home: String,
    shell: String,
}

fn parse_passwd(line: &str) -> Option<Passwd> {
    let f: Vec<&str> = line.trim_end_matches(['\n', '\r']).split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(Passwd {
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        comment: f[4].to_string(),
        home: f[5].to_string(),
        shell: f[6].to_string(),
    })
}

#[derive(Default)]
struct State {
    passwd: Option<Passwd>,
    locked: bool,
    pw_sha: String,
    members: Vec<String>,
    home_exists: bool,
    parent_is_dir: bool,
    /// query → gid
    groups: Vec<(String, i64)>,
}

fn read_state(u: &U, facts: &Facts) -> Result<State, OpError> {
    let out = match facts.get(&Probe::Command {
        script: probe_script(u),
    }) {
        Some(ProbeResult::Command(o)) if o.rc == 0 => o.stdout.clone(),
        Some(ProbeResult::Command(o)) => {
            return Err(OpError::new(format!(
                "could not read the account of {} (rc {}): {}",
                u.name,
                o.rc,
                o.stderr.trim()
            )))
        }
        _ => return Err(OpError::new("internal: user probe was not answered")),
    };
    let mut st = State::default();
    for line in out.lines() {
        if let Some(l) = line.strip_prefix("passwd:") {
            st.passwd = parse_passwd(l);
        } else if let Some(l) = line.strip_prefix("pw:") {
            let (lock, sha) = l.split_once(':').unwrap_or((l, ""));
            st.locked = lock == "1";
            st.pw_sha = sha.to_string();
        } else if let Some(g) = line.strip_prefix("member:") {
            st.members.push(g.to_string());
        } else if let Some(h) = line.strip_prefix("home:") {
            st.home_exists = h == "1";
        } else if let Some(h) = line.strip_prefix("parent:") {
            st.parent_is_dir = h == "1";
        } else if let Some(l) = line.strip_prefix("group:") {
            if let Some((q, entry)) = l.split_once('\t') {
                if let Some((_, gid, _)) = parse_group_line(entry) {
                    st.groups.push((q.to_string(), gid));
                }
            }
        }
    }
    Ok(st)
}

impl State {
    fn gid_of(&self, group: &str) -> Option<i64> {
        self.groups
            .iter()
            .find(|(q, _)| q == group)
            .map(|(_, g)| *g)
    }
    fn require(&self, group: &str) -> Result<i64, OpError> {
        self.gid_of(group)
            .ok_or_else(|| OpError::new(format!("Group {group} does not exist")))
    }
}

fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Ansible's `create_homedir` + `chown_homedir` as one script: copy /etc/skel (or mkdir),
/// chmod `0777 & ~UMASK` from /etc/login.defs, chown -R to the user and their primary group.
fn homedir_script(home: &str, owner: &str) -> String {
    let h = quote(home);
    format!(
        "if [ ! -e {h} ]; then mkdir -p \"$(dirname {h})\" && \
         if [ -e /etc/skel ]; then cp -a /etc/skel {h}; else mkdir -p {h}; fi || exit 1; \
         u=$(sed -n 's/^UMASK[[:space:]]\\{{1,\\}}\\([0-9]\\{{1,\\}}\\)$/\\1/p' /etc/login.defs 2>/dev/null | tail -n 1); \
         if [ -n \"$u\" ]; then chmod \"$(printf '%o' $((0777 & ~0$u)))\" {h} || exit 1; fi; fi; \
         chown -R {} {h}",
        quote(&format!("{owner}:"))
    )
}

fn exec(script: String) -> Action {
    Action::Exec {
        script,
        stdin: None,
    }
}

const MASK: &str = "NOT_LOGGING_PASSWORD";

impl Module for User {
    fn names(&self) -> &'static [&'static str] {
        &["user", "ansible.builtin.user", "ansible.legacy.user"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn probes(&self, args: &Args) -> Result<Vec<Probe>, OpError> {
        let u = parse(args)?;
        Ok(vec![Probe::Command {
            script: probe_script(&u),
        }])
    }

    fn plan(&self, args: &Args, facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let u = parse(args)?;
        let st = read_state(&u, facts)?;
        let mut result = Map::new();
        result.insert("name".into(), json!(u.name));
        result.insert(
            "state".into(),
            json!(if u.present { "present" } else { "absent" }),
        );
        if !u.present {
            if st.passwd.is_none() {
                return Ok(Planned::NoChange { result });
            }
            let mut cmd = vec!["userdel".to_string()];
            if u.force {
                cmd.push("-f".into());
            }
            if u.remove {
                cmd.push("-r".into());
            }
            cmd.push(u.name.clone());
            result.insert("force".into(), json!(u.force));
            result.insert("remove".into(), json!(u.remove));
            result.insert("_user_early".into(), json!(true));
            return Ok(Planned::Change {
                actions: vec![exec(crate::shell::join(&cmd))],
                diffs: Vec::new(),
                result,
            });
        }
        if u.password.is_some() {
            result.insert("password".into(), json!(MASK));
        }
        let stdin = u.password.as_ref().map(|pw| {
            if u.password_lock == Some(true) {
                format!("!{pw}").into_bytes()
            } else {
                pw.clone().into_bytes()
            }
        });
        let Some(info) = &st.passwd else {
            return plan_create(&u, &st, result, stdin);
        };
        // modify_user_usermod
        let mut cmd: Vec<String> = vec!["usermod".into()];
        let mut after_uid = info.uid;
        let mut after_gid = info.gid;
        if let Some(uid) = u.uid {
            if uid != info.uid {
                cmd.extend(["-u".into(), uid.to_string()]);
                if u.non_unique {
                    cmd.push("-o".into());
                }
                after_uid = uid;
            }
        }
        if let Some(g) = &u.group {
            let gid = st.require(g)?;
            if gid != info.gid {
                cmd.extend(["-g".into(), gid.to_string()]);
                after_gid = gid;
            }
        }
        if let Some(groups) = &u.groups {
            let current = &st.members;
            let mut need = false;
            let mut wanted: Vec<String> = Vec::new();
            if groups.is_empty() {
                if !current.is_empty() && !u.append {
                    need = true;
                }
            } else {
                wanted = u.groups_set();
                for g in &wanted {
                    st.require(g)?;
                }
                let differs = wanted.iter().any(|g| !current.contains(g))
                    || current.iter().any(|g| !wanted.contains(g));
                if differs {
                    if u.append {
                        if wanted.iter().any(|g| !current.contains(g)) {
                            cmd.push("-a".into());
                            need = true;
                        }
                    } else {
                        need = true;
                    }
                }
            }
            if need {
                cmd.extend(["-G".into(), wanted.join(",")]);
            }
        }
        let mut after_comment = info.comment.clone();
        if let Some(c) = &u.comment {
            if *c != info.comment {
                cmd.extend(["-c".into(), c.clone()]);
                after_comment = c.clone();
            }
        }
        let mut after_home = info.home.clone();
        if let Some(h) = &u.home {
            if *h != info.home {
                cmd.extend(["-d".into(), h.clone()]);
                if u.move_home {
                    cmd.push("-m".into());
                }
                after_home = h.clone();
            }
        }
        let mut after_shell = info.shell.clone();
        if let Some(s) = &u.shell {
            if *s != info.shell {
                cmd.extend(["-s".into(), s.clone()]);
                after_shell = s.clone();
            }
        }
        if u.password_lock == Some(true) && !st.locked {
            cmd.push("-L".into());
        } else if u.password_lock == Some(false) && st.locked {
            cmd.push("-U".into());
        }
        let mut use_stdin = None;
        if let Some(pw) = &u.password {
            if u.update_always && sha256_hex(pw.trim_start_matches('!')) != st.pw_sha {
                cmd.retain(|c| c != "-U" && c != "-L");
                use_stdin = stdin;
            }
        }
        let mut actions = Vec::new();
        if cmd.len() > 1 || use_stdin.is_some() {
            let mut script = crate::shell::join(&cmd);
            if use_stdin.is_some() {
                script.push_str(" -p \"$(cat)\"");
            }
            script.push(' ');
            script.push_str(&quote(&u.name));
            actions.push(Action::Exec {
                script,
                stdin: use_stdin,
            });
        }
        let has_main = !actions.is_empty();
        // "handle missing homedirs": the home after modification.
        if !st.home_exists && u.create_home {
            actions.push(exec(homedir_script(&after_home, &u.name)));
        }
        result.insert("append".into(), json!(u.append));
        result.insert("move_home".into(), json!(u.move_home));
        result.insert("uid".into(), json!(info.uid));
        result.insert("group".into(), json!(info.gid));
        result.insert("comment".into(), json!(info.comment));
        result.insert("home".into(), json!(info.home));
        result.insert("shell".into(), json!(info.shell));
        if let Some(g) = &u.groups {
            result.insert("groups".into(), json!(g));
        }
        if actions.is_empty() {
            return Ok(Planned::NoChange { result });
        }
        result.insert(
            "_user_after".into(),
            json!({"uid": after_uid, "group": after_gid, "comment": after_comment,
                   "home": after_home, "shell": after_shell}),
        );
        result.insert("_user_main".into(), json!(has_main));
        Ok(Planned::Change {
            actions,
            diffs: Vec::new(),
            result,
        })
    }

    fn finish(&self, args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let Planned::Change {
            actions, result, ..
        } = planned
        else {
            return crate::modules::default_finish(planned, outputs);
        };
        let mut data = result.clone();
        let early = data.remove("_user_early").is_some();
        let after = data.remove("_user_after");
        let main_idx = match data.remove("_user_main") {
            Some(Value::Bool(false)) => None,
            Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
            _ => Some(0),
        };
        let lookup = data.remove("_user_lookup").is_some();
        if outputs.is_empty() {
            if early {
                data = Map::new();
            }
            return ModuleResult {
                changed: true,
                data,
                ..Default::default()
            };
        }
        // The first failing action decides the failure.
        if let Some(out) = outputs.iter().find(|o| o.rc != 0) {
            let mut d = Map::new();
            d.insert("name".into(), data["name"].clone());
            d.insert("rc".into(), json!(out.rc));
            return ModuleResult {
                failed: true,
                msg: Some(String::from_utf8_lossy(&out.stderr).into_owned()),
                data: d,
                ..Default::default()
            };
        }
        if let Some(out) = main_idx.and_then(|i| outputs.get(i)) {
            let so = String::from_utf8_lossy(&out.stdout).into_owned();
            let se = String::from_utf8_lossy(&out.stderr).into_owned();
            if !so.is_empty() {
                data.insert("stdout".into(), json!(so));
            }
            if !se.is_empty() {
                data.insert("stderr".into(), json!(se));
            }
        }
        if let Some(Value::Object(a)) = after {
            data.extend(a);
        }
        if lookup && outputs.len() == actions.len() {
            let text = outputs
                .last()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            match text.lines().next().and_then(parse_passwd) {
                Some(pw) => {
                    data.insert("uid".into(), json!(pw.uid));
                    data.insert("group".into(), json!(pw.gid));
                    data.insert("comment".into(), json!(pw.comment));
                    data.insert("home".into(), json!(pw.home));
                    data.insert("shell".into(), json!(pw.shell));
                }
                None => {
                    let name = parse(args).map(|u| u.name).unwrap_or_default();
                    return ModuleResult {
                        changed: true,
                        failed: true,
                        msg: Some(format!("failed to look up user name: {name}")),
                        data,
                        ..Default::default()
                    };
                }
            }
        }
        ModuleResult {
            changed: true,
            data,
            ..Default::default()
        }
    }
}

fn plan_create(
    u: &U,
    st: &State,
    mut result: Map<String, Value>,
    stdin: Option<Vec<u8>>,
) -> Result<Planned, OpError> {
    let mut cmd: Vec<String> = vec!["useradd".into()];
    if let Some(uid) = u.uid {
        cmd.extend(["-u".into(), uid.to_string()]);
        if u.non_unique {
            cmd.push("-o".into());
        }
    }
    if let Some(g) = &u.group {
        st.require(g)?;
        cmd.extend(["-g".into(), g.clone()]);
    } else if st.gid_of(&u.name).is_some() {
        cmd.push("-N".into());
    }
    if u.groups.as_deref().is_some_and(|g| !g.is_empty()) {
        let set = u.groups_set();
        for g in &set {
            st.require(g)?;
        }
        cmd.extend(["-G".into(), set.join(",")]);
    }
    if let Some(c) = &u.comment {
        cmd.extend(["-c".into(), c.clone()]);
    }
    let mut actions = Vec::new();
    let needs_parents = u.home.is_some() && u.create_home && !st.parent_is_dir;
    if let Some(h) = &u.home {
        if needs_parents {
            // Ansible creates the home (and parents) itself before useradd, chowns it after.
            let hq = quote(h);
            actions.push(exec(format!(
                "mkdir -p \"$(dirname {hq})\" && if [ -e /etc/skel ]; then cp -a /etc/skel {hq}; else mkdir -p {hq}; fi && \
                 u=$(sed -n 's/^UMASK[[:space:]]\\{{1,\\}}\\([0-9]\\{{1,\\}}\\)$/\\1/p' /etc/login.defs 2>/dev/null | tail -n 1); \
                 if [ -n \"$u\" ]; then chmod \"$(printf '%o' $((0777 & ~0$u)))\" {hq}; fi"
            )));
        }
        cmd.extend(["-d".into(), h.clone()]);
    }
    if let Some(s) = &u.shell {
        cmd.extend(["-s".into(), s.clone()]);
    }
    let mut script = crate::shell::join(&cmd);
    if stdin.is_some() {
        script.push_str(" -p \"$(cat)\"");
    }
    script.push_str(if u.create_home { " -m" } else { " -M" });
    if u.system {
        script.push_str(" -r");
    }
    script.push(' ');
    script.push_str(&quote(&u.name));
    let main_idx = actions.len();
    actions.push(Action::Exec { script, stdin });
    if needs_parents {
        if let Some(h) = &u.home {
            actions.push(exec(format!(
                "chown -R {} {}",
                quote(&format!("{}:", u.name)),
                quote(h)
            )));
        }
    }
    actions.push(exec(format!("getent passwd {}", quote(&u.name))));
    result.insert("system".into(), json!(u.system));
    result.insert("create_home".into(), json!(u.create_home));
    if let Some(g) = &u.groups {
        result.insert("groups".into(), json!(g));
    }
    result.insert("_user_early".into(), json!(true));
    result.insert("_user_main".into(), json!(main_idx));
    result.insert("_user_lookup".into(), json!(true));
    Ok(Planned::Change {
        actions,
        diffs: Vec::new(),
        result,
    })
}
