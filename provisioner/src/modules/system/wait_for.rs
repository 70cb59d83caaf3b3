//! `wait_for`: a bounded wait, run on the host as one python3 script (hosts have python3).
//!
//! Read-only: [`Module::read_only`] is true, so the executor runs it in check mode too. The
//! result is never changed (Ansible reports ok). Failure messages and result keys follow
//! ansible-core 2.14's wait_for source: "Timeout when waiting for HOST:PORT",
//! "... for HOST:PORT to stop.", "... for file PATH", "... for PATH to be absent.",
//! "... for search string RX in HOST:PORT" / "in PATH"; `msg` overrides them.
//! Result: `state`, `port`, `path`, `search_regex`, `match_groups`, `match_groupdict`, `elapsed`.

use super::args::{p, A};
use crate::facts::Facts;
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

pub struct WaitFor;
pub static WAIT_FOR: WaitFor = WaitFor;

const PARAMS: &[ParamSpec] = &[
    p("host"),
    p("port"),
    p("path"),
    p("state"),
    p("search_regex"),
    p("delay"),
    p("timeout"),
    p("sleep"),
    p("connect_timeout"),
    p("msg"),
];

/// The loop run on the host. Arguments arrive as one JSON word; it prints one JSON line.
pub const SCRIPT: &str = r#"import json, os, re, socket, sys, time
a = json.loads(sys.argv[1])
host, port, path, state = a["host"], a["port"], a["path"], a["state"]
start = time.time()
end = start + a["timeout"]
def done(ok, groups=(), groupdict=None):
    print(json.dumps({"ok": ok, "elapsed": int(time.time() - start), "match_groups": list(groups), "match_groupdict": groupdict or {}}))
    sys.exit(0)
def connect():
    try:
        return socket.create_connection((host, port), a["connect_timeout"])
    except Exception:
        return None
if a["delay"]:
    time.sleep(a["delay"])
if port is None and path is None:
    time.sleep(a["timeout"])
    done(True)
rx = re.compile(a["search_regex"], re.MULTILINE) if a["search_regex"] else None
while time.time() < end:
    if state in ("absent", "stopped"):
        if path is not None:
            if not os.access(path, os.F_OK):
                done(True)
        else:
            s = connect()
            if s is None:
                done(True)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except Exception:
                pass
            s.close()
    elif path is not None:
        try:
            os.stat(path)
            if rx is None:
                done(True)
            with open(path, errors="replace") as f:
                m = rx.search(f.read())
            if m:
                done(True, m.groups(), m.groupdict())
        except OSError:
            pass
    else:
        s = connect()
        if s is not None:
            if rx is None:
                s.close()
                done(True)
            data = ""
            try:
                while time.time() < end:
                    s.settimeout(max(0.1, min(a["connect_timeout"], end - time.time())))
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    data += chunk.decode("utf-8", "replace")
                    m = rx.search(data)
                    if m:
                        s.close()
                        done(True, m.groups(), m.groupdict())
            except Exception:
                pass
            s.close()
    time.sleep(min(a["sleep"], max(0.0, end - time.time())))
done(False)
"#;

struct Wf {
    host: String,
    port: Option<i64>,
    path: Option<String>,
    state: String,
    search_regex: Option<String>,
    delay: f64,
    timeout: f64,
    sleep: f64,
    connect_timeout: f64,
    msg: Option<String>,
}

fn parse(args: &Args) -> Result<Wf, OpError> {
    let a = A::new(args, PARAMS)?;
    let state = a
        .choice(
            "state",
            &["absent", "drained", "present", "started", "stopped"],
            Some("started"),
        )?
        .unwrap_or_default();
    let port = a.int("port")?;
    let path = a.path("path")?;
    if port.is_some() && path.is_some() {
        return Err(OpError::new(
            "port and path parameter can not both be passed to wait_for",
        ));
    }
    if path.is_some() && state == "stopped" {
        return Err(OpError::new(
            "state=stopped should only be used for checking a port in the wait_for module",
        ));
    }
    if state == "drained" {
        return Err(OpError::new(
            "wait_for: state=drained is not supported by provisioner",
        ));
    }
    let search_regex = a.str("search_regex")?;
    if let Some(r) = &search_regex {
        regex::Regex::new(r)
            .map_err(|e| OpError::new(format!("Invalid regular expression: {e}")))?;
    }
    let num = |k: &str, d: f64| -> Result<f64, OpError> { Ok(a.float(k)?.unwrap_or(d)) };
    Ok(Wf {
        host: a.str_or("host", "127.0.0.1")?,
        port,
        path,
        state,
        search_regex,
        delay: num("delay", 0.0)?,
        timeout: num("timeout", 300.0)?,
        sleep: num("sleep", 1.0)?,
        connect_timeout: num("connect_timeout", 5.0)?,
        msg: a.str("msg")?,
    })
}

/// The action for `args` (also used by tests that run it locally).
pub fn script_for(args: &Args) -> Result<String, OpError> {
    let w = parse(args)?;
    let j = json!({
        "host": w.host, "port": w.port, "path": w.path, "state": w.state,
        "search_regex": w.search_regex, "delay": w.delay, "timeout": w.timeout,
        "sleep": w.sleep, "connect_timeout": w.connect_timeout,
    });
    Ok(format!(
        "exec python3 -c {} {}",
        quote(SCRIPT),
        quote(&j.to_string())
    ))
}

fn base(w: &Wf) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("state".into(), json!(w.state));
    r.insert("port".into(), json!(w.port));
    r.insert("path".into(), json!(w.path));
    r.insert("search_regex".into(), json!(w.search_regex));
    r.insert("match_groups".into(), json!([]));
    r.insert("match_groupdict".into(), json!({}));
    r
}

impl Module for WaitFor {
    fn names(&self) -> &'static [&'static str] {
        &[
            "wait_for",
            "ansible.builtin.wait_for",
            "ansible.legacy.wait_for",
        ]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn read_only(&self, _args: &Args) -> bool {
        true
    }
    fn plan(&self, args: &Args, _facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        let w = parse(args)?;
        Ok(Planned::Change {
            actions: vec![Action::Exec {
                script: script_for(args)?,
                stdin: None,
            }],
            diffs: Vec::new(),
            result: base(&w),
        })
    }
    fn finish(&self, args: &Args, planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let mut data = match planned {
            Planned::NoChange { result } | Planned::Change { result, .. } => result.clone(),
        };
        let Ok(w) = parse(args) else {
            return ModuleResult::default();
        };
        let Some(out) = outputs.first() else {
            // Not run (an executor that ignores read_only in check mode): report ok.
            return ModuleResult {
                data,
                ..Default::default()
            };
        };
        let line = String::from_utf8_lossy(&out.stdout);
        let parsed: Option<Value> = line
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok());
        let Some(r) = parsed.filter(|_| out.rc == 0) else {
            return ModuleResult {
                failed: true,
                msg: Some(format!(
                    "wait_for could not run on the host (rc {}): {}",
                    out.rc,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                ..Default::default()
            };
        };
        data.insert("elapsed".into(), r["elapsed"].clone());
        data.insert("match_groups".into(), r["match_groups"].clone());
        data.insert("match_groupdict".into(), r["match_groupdict"].clone());
        if r["ok"].as_bool() == Some(true) {
            return ModuleResult {
                data,
                ..Default::default()
            };
        }
        let target = match (&w.port, &w.path) {
            (Some(p), _) => format!("{}:{p}", w.host),
            (_, Some(p)) => p.clone(),
            _ => String::new(),
        };
        let msg =
            w.msg
                .clone()
                .unwrap_or_else(|| match (w.state.as_str(), &w.search_regex, &w.path) {
                    ("stopped", _, _) => format!("Timeout when waiting for {target} to stop."),
                    ("absent", _, _) => format!("Timeout when waiting for {target} to be absent."),
                    (_, Some(rx), _) => {
                        format!("Timeout when waiting for search string {rx} in {target}")
                    }
                    (_, None, Some(_)) => format!("Timeout when waiting for file {target}"),
                    _ => format!("Timeout when waiting for {target}"),
                });
        // Ansible's failure result carries only msg and elapsed.
        let mut fail = Map::new();
        fail.insert("elapsed".into(), r["elapsed"].clone());
        ModuleResult {
            failed: true,
            msg: Some(msg),
            data: fail,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(args: Value) -> ModuleResult {
        let args = args.as_object().unwrap().clone();
        let planned = WAIT_FOR
            .plan(&args, &Facts::default(), Mode::Apply)
            .unwrap();
        let Planned::Change { actions, .. } = &planned else {
            panic!()
        };
        let Action::Exec { script, .. } = &actions[0] else {
            panic!()
        };
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let outputs = [ActionOutput {
            rc: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        }];
        WAIT_FOR.finish(&args, &planned, &outputs)
    }

    #[test]
    fn started_succeeds_against_a_local_listener_and_reads_a_banner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            use std::io::Write;
            // Two connections: the plain check and the banner check.
            for _ in 0..2 {
                if let Ok((mut s, _)) = l.accept() {
                    let _ = s.write_all(b"SSH-2.0-test zk=ok\n");
                }
            }
        });
        let r = run(json!({"port": port, "timeout": 10}));
        assert!(!r.failed && !r.changed, "{r:?}");
        let r = run(json!({"port": port, "timeout": 10, "search_regex": "zk=(\\w+)"}));
        assert!(!r.failed, "{r:?}");
        assert_eq!(r.data["match_groups"], json!(["ok"]));
        t.join().unwrap();
    }

    #[test]
    fn started_times_out_on_a_closed_port_with_ansibles_message() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = run(json!({"port": port, "timeout": 1, "sleep": 0.2, "connect_timeout": 1}));
        assert!(r.failed && !r.changed);
        assert_eq!(
            r.msg.as_deref(),
            Some(format!("Timeout when waiting for 127.0.0.1:{port}").as_str())
        );
    }

    #[test]
    fn path_present_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ready");
        std::fs::write(&f, "state: ready\n").unwrap();
        let p = f.to_str().unwrap();
        assert!(!run(json!({"path": p, "timeout": 5, "search_regex": "ready"})).failed);
        let r = run(json!({"path": p, "state": "absent", "timeout": 1, "sleep": 0.2}));
        assert_eq!(
            r.msg.as_deref(),
            Some(format!("Timeout when waiting for {p} to be absent.").as_str())
        );
        let gone = dir.path().join("gone");
        assert!(
            !run(json!({"path": gone.to_str().unwrap(), "state": "absent", "timeout": 5})).failed
        );
    }

    #[test]
    fn it_is_read_only() {
        assert!(WAIT_FOR.read_only(&Args::new()));
    }
}
