//! `uri` (ansible-core 2.14 `uri.py` + `module_utils/urls.py` `fetch_url`), run on the host as one
//! python3 urllib script. The arguments (URL, body, headers, credentials) travel as JSON on
//! stdin, so nothing is quoted into the command line and the password never appears in it.
//! The script prints one JSON line: `info` (fetch_url's dict: url, status, msg, lower-cased
//! headers, cookies), `content` (the decoded body), `maybe_json` and `json`.
//!
//! `finish` builds Ansible's result: `redirected`, `url`, `status`, `msg` (`OK (N bytes)` or the
//! error), every response header with `-` → `_`, `cookies`/`cookies_string` on success,
//! `elapsed`, `json` for a JSON (or `+json`/javascript) response, `content` with
//! `return_content`; a status outside `status_code` fails with
//! `Status code was S and not [..]: MSG`. `changed` is always false (no `dest`), as in Ansible.
//!
//! Check mode: GET/HEAD requests are read-only ([`Module::read_only`]), so they run in check mode
//! too (a deliberate difference: Ansible's uri does not support check mode and is skipped).
//! Other methods are skipped in check mode with Ansible's message.
//!
//! Supported: url, method, body, body_format (json/raw/form-urlencoded), headers, status_code,
//! return_content, timeout, validate_certs, follow_redirects, url_username/user,
//! url_password/password, force_basic_auth, http_agent, ca_path, client_cert, client_key. Not
//! supported: dest, src, creates, removes, unix_socket, form-multipart.

use super::args::{p, pa, req, A};
use crate::facts::Facts;
use crate::modules::{
    Action, ActionOutput, Args, Mode, Module, ModuleResult, OpError, ParamSpec, Planned,
};
use crate::shell::quote;
use serde_json::{json, Map, Value};

pub struct Uri;
pub static URI: Uri = Uri;

const PARAMS: &[ParamSpec] = &[
    req("url", &[]),
    p("method"),
    p("body"),
    p("body_format"),
    p("headers"),
    p("status_code"),
    p("return_content"),
    p("timeout"),
    p("validate_certs"),
    p("follow_redirects"),
    pa("url_username", &["user"]),
    pa("url_password", &["password"]),
    p("force_basic_auth"),
    p("http_agent"),
    p("ca_path"),
    p("client_cert"),
    p("client_key"),
];

/// The request, run on the host. Reads the JSON arguments on stdin, prints one JSON line.
pub const SCRIPT: &str = r#"import base64, json, ssl, sys, time, socket, http.client
import urllib.request as U, urllib.error as E, urllib.parse as P, http.cookiejar as C
a = json.load(sys.stdin)
url, method, fr = a["url"], a["method"], a["follow_redirects"]
body = a["body"]
if a["body_format"] == "json" and body is not None and not isinstance(body, str):
    body = json.dumps(body)
elif a["body_format"] == "form-urlencoded" and isinstance(body, (dict, list)):
    items = body.items() if isinstance(body, dict) else body
    pairs = []
    for k, vs in items:
        if isinstance(vs, str) or not isinstance(vs, (dict, list)):
            vs = [vs]
        for v in vs:
            if v is not None:
                pairs.append((str(k), str(v)))
    body = P.urlencode(pairs, doseq=True)
elif body is not None and not isinstance(body, str):
    body = json.dumps(body)
data = body.encode("utf-8") if body is not None else None
headers = dict(a["headers"])
class Req(U.Request):
    def __init__(self, u, method=None, **kw):
        self._m = method
        U.Request.__init__(self, u, **kw)
    def get_method(self):
        return self._m or U.Request.get_method(self)
class Redir(U.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, hdrs, newurl):
        if fr == "urllib2":
            return U.HTTPRedirectHandler.redirect_request(self, req, fp, code, msg, hdrs, newurl)
        if fr in ("no", "none"):
            raise E.HTTPError(newurl, code, msg, hdrs, fp)
        m = req.get_method()
        if fr in ("all", "yes"):
            if code < 300 or code >= 400:
                raise E.HTTPError(req.get_full_url(), code, msg, hdrs, fp)
        elif fr == "safe":
            if code < 300 or code >= 400 or m not in ("GET", "HEAD"):
                raise E.HTTPError(req.get_full_url(), code, msg, hdrs, fp)
        else:
            raise E.HTTPError(req.get_full_url(), code, msg, hdrs, fp)
        d = req.data
        newurl = newurl.replace(" ", "%20")
        if code in (307, 308):
            h = dict(req.headers)
        else:
            d = None
            h = dict((k, v) for k, v in req.headers.items() if k.lower() not in ("content-length", "content-type", "transfer-encoding"))
            if code in (302, 303) and m != "HEAD":
                m = "GET"
            if code == 301 and m == "POST":
                m = "GET"
        return Req(newurl, method=m, headers=h, data=d, origin_req_host=req.origin_req_host, unverifiable=True)
jar = C.LWPCookieJar()
handlers = [Redir(), U.HTTPCookieProcessor(jar)]
if url.lower().startswith("https:"):
    ctx = ssl.create_default_context(cafile=a["ca_path"]) if a["validate_certs"] else ssl._create_unverified_context()
    if a["client_cert"]:
        ctx.load_cert_chain(a["client_cert"], a["client_key"])
    handlers.append(U.HTTPSHandler(context=ctx))
if a["user"] is not None:
    pw = a["password"] or ""
    if a["force_basic_auth"]:
        headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % (a["user"], pw)).encode()).decode()
    else:
        mgr = U.HTTPPasswordMgrWithDefaultRealm()
        mgr.add_password(None, url, a["user"], pw)
        handlers.append(U.HTTPBasicAuthHandler(mgr))
opener = U.build_opener(*handlers)
req = Req(url, method=method, headers=headers, data=data)
req.add_header("User-agent", a["http_agent"])
info = {"url": url, "status": -1}
r = None
content = b""
start = time.time()
try:
    r = opener.open(req, timeout=a["timeout"])
    hd = {}
    for k, v in r.headers.items():
        k = k.lower()
        hd[k] = ", ".join((hd[k], v)) if k in hd else v
    info.update(hd)
    info["cookies_string"] = "; ".join("%s=%s" % (c.name, c.value) for c in jar)
    info["cookies"] = dict((c.name, c.value) for c in jar)
    info.update(msg="OK (%s bytes)" % r.headers.get("Content-Length", "unknown"), url=r.geturl(), status=r.code)
    content = r.read()
except E.HTTPError as e:
    r = e
    try:
        content = e.read()
    except Exception:
        content = b""
    try:
        info.update(dict((k.lower(), v) for k, v in e.info().items()))
    except Exception:
        pass
    info.update(msg=str(e), status=e.code)
except E.URLError as e:
    info.update(msg="Request failed: %s" % e, status=int(getattr(e, "code", -1)))
except http.client.BadStatusLine as e:
    info.update(msg="Connection failure: connection was closed before a valid response was received: %s" % e.line, status=-1)
except socket.error as e:
    info.update(msg="Connection failure: %s" % e, status=-1)
except Exception as e:
    info.update(msg="An unknown error occurred: %s" % e, status=-1)
elapsed = int(time.time() - start)
if r is not None and getattr(r, "headers", None) is not None:
    ctype = r.headers.get_content_type()
    charset = r.headers.get_content_charset("utf-8")
else:
    ctype, charset = "application/octet-stream", "utf-8"
sub = ctype.partition("/")[2]
if "+" in sub:
    sub = sub.partition("+")[2]
maybe_json = sub.lower() in ("json", "javascript")
try:
    text = content.decode(charset, "replace")
except LookupError:
    text = content.decode("utf-8", "replace")
out = {"info": info, "content": text, "maybe_json": maybe_json, "elapsed": elapsed}
if maybe_json:
    try:
        out["json"] = json.loads(text)
    except Exception:
        pass
print(json.dumps(out))
"#;

struct R {
    url: String,
    method: String,
    body: Option<Value>,
    body_format: String,
    headers: Map<String, Value>,
    status_code: Vec<i64>,
    return_content: bool,
    timeout: i64,
    validate_certs: bool,
    follow_redirects: String,
    user: Option<String>,
    password: Option<String>,
    force_basic_auth: bool,
    http_agent: String,
    ca_path: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

fn parse(args: &Args) -> Result<R, OpError> {
    let a = A::new(args, PARAMS)?;
    let method = a.str_or("method", "GET")?.to_uppercase();
    if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(OpError::new(
            "Parameter 'method' needs to be a single word in uppercase, like GET or POST.",
        ));
    }
    let body_format = a.str_or("body_format", "raw")?.to_lowercase();
    if !["form-urlencoded", "json", "raw"].contains(&body_format.as_str()) {
        if body_format == "form-multipart" {
            return Err(OpError::new(
                "uri: body_format=form-multipart is not supported by provisioner",
            ));
        }
        return Err(OpError::new(format!(
            "value of body_format must be one of: form-urlencoded, json, raw, form-multipart, got: {body_format}"
        )));
    }
    let mut headers: Map<String, Value> = a
        .dict("headers")?
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = super::args::to_str(&v).unwrap_or_else(|| v.to_string());
            (k, Value::String(v))
        })
        .collect();
    let has_ct = headers.keys().any(|k| k.to_lowercase() == "content-type");
    if !has_ct {
        match body_format.as_str() {
            "json" => {
                headers.insert("Content-Type".into(), json!("application/json"));
            }
            "form-urlencoded" => {
                headers.insert(
                    "Content-Type".into(),
                    json!("application/x-www-form-urlencoded"),
                );
            }
            _ => {}
        }
    }
    let status_code = match a.list("status_code")? {
        None => vec![200],
        Some(l) => l
            .iter()
            .map(|s| {
                s.trim().parse::<i64>().map_err(|_| {
                    OpError::new(format!(
                        "Elements value for option 'status_code' is of type <class 'str'> and we \
                         were unable to convert to int: invalid literal for int() with base 10: '{s}'"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let follow_redirects = a
        .choice(
            "follow_redirects",
            &["all", "no", "none", "safe", "urllib2", "yes"],
            Some("safe"),
        )?
        .unwrap_or_default();
    Ok(R {
        url: a.str("url")?.unwrap_or_default(),
        method,
        body: a.raw("body").cloned(),
        body_format,
        headers,
        status_code,
        return_content: a.bool_or("return_content", false)?,
        timeout: a.int_or("timeout", 30)?,
        validate_certs: a.bool_or("validate_certs", true)?,
        follow_redirects,
        user: a.str("url_username")?,
        password: a.str("url_password")?,
        force_basic_auth: a.bool_or("force_basic_auth", false)?,
        http_agent: a.str_or("http_agent", "ansible-httpget")?,
        ca_path: a.str("ca_path")?,
        client_cert: a.str("client_cert")?,
        client_key: a.str("client_key")?,
    })
}

/// The action for `args` (tests run it locally).
pub fn action_for(args: &Args) -> Result<Action, OpError> {
    let r = parse(args)?;
    let input = json!({
        "url": r.url, "method": r.method, "body": r.body, "body_format": r.body_format,
        "headers": r.headers, "timeout": r.timeout, "validate_certs": r.validate_certs,
        "follow_redirects": r.follow_redirects, "user": r.user, "password": r.password,
        "force_basic_auth": r.force_basic_auth, "http_agent": r.http_agent,
        "ca_path": r.ca_path, "client_cert": r.client_cert, "client_key": r.client_key,
    });
    Ok(Action::Exec {
        script: format!("exec python3 -c {}", quote(SCRIPT)),
        stdin: Some(input.to_string().into_bytes()),
    })
}

/// `absolute_location` from uri.py.
fn absolute_location(url: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else if location.starts_with('/') {
        // url.replace(urlsplit(url).path, '')
        let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
        let rest = &url[after_scheme..];
        let path_start = rest.find('/').map(|i| after_scheme + i);
        let path = path_start
            .map(|s| {
                let end = url[s..]
                    .find(['?', '#'])
                    .map(|e| s + e)
                    .unwrap_or(url.len());
                &url[s..end]
            })
            .unwrap_or("");
        let base = if path.is_empty() {
            url.to_string()
        } else {
            url.replace(path, "")
        };
        format!("{base}{location}")
    } else {
        let base = match url.rfind('/') {
            Some(i) => url[..i].to_string(),
            None => String::new(),
        };
        format!("{base}/{location}")
    }
}

/// Python's repr of a list of ints: `[200, 201]`.
fn py_list(v: &[i64]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl Module for Uri {
    fn names(&self) -> &'static [&'static str] {
        &["uri", "ansible.builtin.uri", "ansible.legacy.uri"]
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn read_only(&self, args: &Args) -> bool {
        parse(args).is_ok_and(|r| r.method == "GET" || r.method == "HEAD")
    }
    fn plan(&self, args: &Args, _facts: &Facts, _mode: Mode) -> Result<Planned, OpError> {
        Ok(Planned::Change {
            actions: vec![action_for(args)?],
            diffs: Vec::new(),
            result: Map::new(),
        })
    }
    fn finish(&self, args: &Args, _planned: &Planned, outputs: &[ActionOutput]) -> ModuleResult {
        let r = match parse(args) {
            Ok(r) => r,
            Err(e) => {
                return ModuleResult {
                    failed: true,
                    msg: Some(e.0),
                    ..Default::default()
                }
            }
        };
        let Some(out) = outputs.first() else {
            return ModuleResult {
                skipped: true,
                msg: Some("remote module (uri) does not support check mode".into()),
                ..Default::default()
            };
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed: Option<Value> = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok());
        let Some(res) = parsed.filter(|_| out.rc == 0) else {
            return ModuleResult {
                failed: true,
                msg: Some(format!(
                    "uri could not run on the host (rc {}): {}",
                    out.rc,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                ..Default::default()
            };
        };
        let info = res["info"].as_object().cloned().unwrap_or_default();
        let status = info.get("status").and_then(Value::as_i64).unwrap_or(-1);
        let ok = r.status_code.contains(&status);
        let maybe_json = res["maybe_json"].as_bool().unwrap_or(false);
        let mut data = Map::new();
        let final_url = info.get("url").and_then(Value::as_str).unwrap_or("");
        data.insert("redirected".into(), json!(final_url != r.url));
        for (k, v) in info {
            data.insert(k.replace('-', "_").to_lowercase(), v);
        }
        // Ansible pops the error body into `content` whenever it reads the output; otherwise the
        // body of an accepted error status stays in the result as `body`.
        if !(maybe_json || r.return_content || !ok) && status >= 400 {
            data.insert("body".into(), res["content"].clone());
        }
        data.insert("elapsed".into(), res["elapsed"].clone());
        data.insert("status".into(), json!(status));
        if let Some(Value::String(loc)) = data.get("location").cloned() {
            data.insert("location".into(), json!(absolute_location(&r.url, &loc)));
        }
        if let Some(j) = res.get("json") {
            data.insert("json".into(), j.clone());
        }
        if r.return_content {
            data.insert("content".into(), res["content"].clone());
        }
        let info_msg = data
            .remove("msg")
            .and_then(|m| m.as_str().map(str::to_string))
            .unwrap_or_default();
        if !ok {
            return ModuleResult {
                failed: true,
                msg: Some(format!(
                    "Status code was {status} and not {}: {info_msg}",
                    py_list(&r.status_code)
                )),
                data,
                ..Default::default()
            };
        }
        ModuleResult {
            msg: Some(info_msg),
            data,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn args(v: Value) -> Args {
        v.as_object().unwrap().clone()
    }

    fn run(a: &Args) -> ModuleResult {
        let Action::Exec { script, stdin } = action_for(a).unwrap() else {
            panic!()
        };
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&stdin.unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let outputs = [ActionOutput {
            rc: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        }];
        let planned = URI.plan(a, &Facts::default(), Mode::Apply).unwrap();
        URI.finish(a, &planned, &outputs)
    }

    /// A one-request-per-connection HTTP server on 127.0.0.1 answering from `reply(request)`.
    fn serve(n: usize, reply: fn(&str) -> String) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..n {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let k = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= h + 4 + len || k == 0 {
                            break;
                        }
                    }
                    if k == 0 {
                        break;
                    }
                }
                let req = String::from_utf8_lossy(&buf).to_string();
                s.write_all(reply(&req).as_bytes()).unwrap();
                seen.push(req);
            }
            seen
        });
        (port, t)
    }

    #[test]
    fn get_json_reports_status_json_and_headers() {
        let (port, t) = serve(1, |_| {
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\nX-Mesos-Leader: m1\r\n\r\n{\"a\": 1}".into()
        });
        let a = args(json!({"url": format!("http://127.0.0.1:{port}/state")}));
        assert!(URI.read_only(&a));
        let r = run(&a);
        assert!(!r.failed && !r.changed, "{r:?}");
        assert_eq!(r.msg.as_deref(), Some("OK (8 bytes)"));
        assert_eq!(r.data["status"], json!(200));
        assert_eq!(r.data["json"], json!({"a": 1}));
        assert_eq!(r.data["x_mesos_leader"], json!("m1"));
        assert_eq!(r.data["redirected"], json!(false));
        assert_eq!(r.data["cookies"], json!({}));
        assert!(r.data.get("content").is_none());
        let req = t.join().unwrap().remove(0);
        assert!(req.starts_with("GET /state HTTP/1.1"), "{req}");
        assert!(req.contains("User-Agent: ansible-httpget"), "{req}");
    }

    #[test]
    fn post_json_body_with_basic_auth_and_accepted_status() {
        let (port, t) = serve(1, |_| {
            "HTTP/1.0 201 Created\r\nContent-Type: text/plain\r\n\r\ndone".into()
        });
        let a = args(json!({
            "url": format!("http://127.0.0.1:{port}/v1"), "method": "post",
            "body": {"k": [1, 2]}, "body_format": "json", "status_code": "200,201",
            "return_content": true, "user": "ops", "password": "s3cret", "force_basic_auth": true
        }));
        assert!(!URI.read_only(&a));
        let Action::Exec { script, .. } = action_for(&a).unwrap() else {
            panic!()
        };
        assert!(!script.contains("s3cret"));
        let r = run(&a);
        assert!(!r.failed && !r.changed, "{r:?}");
        assert_eq!(r.msg.as_deref(), Some("OK (unknown bytes)"));
        assert_eq!(r.data["content"], json!("done"));
        let req = t.join().unwrap().remove(0);
        assert!(req.starts_with("POST /v1 HTTP/1.1"), "{req}");
        assert!(req.contains("Content-Type: application/json"), "{req}");
        // base64("ops:s3cret")
        assert!(
            req.contains("Authorization: Basic b3BzOnMzY3JldA=="),
            "{req}"
        );
        assert!(req.ends_with("{\"k\": [1, 2]}"), "{req}");
    }

    #[test]
    fn an_unexpected_status_fails_with_ansibles_message() {
        let (port, t) = serve(1, |_| {
            "HTTP/1.0 404 File not found\r\nContent-Type: text/html\r\nContent-Length: 3\r\n\r\nno!"
                .into()
        });
        let a = args(
            json!({"url": format!("http://127.0.0.1:{port}/nope"), "status_code": [200, 201]}),
        );
        let r = run(&a);
        assert!(r.failed && !r.changed);
        assert_eq!(
            r.msg.as_deref(),
            Some("Status code was 404 and not [200, 201]: HTTP Error 404: File not found")
        );
        assert_eq!(r.data["content_length"], json!("3"));
        t.join().unwrap();
    }

    #[test]
    fn a_refused_connection_is_status_minus_one() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = run(&args(json!({"url": format!("http://127.0.0.1:{port}/")})));
        assert!(r.failed);
        assert_eq!(r.data["status"], json!(-1));
        assert_eq!(
            r.msg.as_deref(),
            Some("Status code was -1 and not [200]: Request failed: <urlopen error [Errno 111] Connection refused>")
        );
    }

    #[test]
    fn safe_redirects_are_followed_for_get() {
        let (port, t) = serve(2, |req| {
            if req.starts_with("GET /old") {
                "HTTP/1.0 302 Found\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n".into()
            } else {
                "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".into()
            }
        });
        let r = run(&args(
            json!({"url": format!("http://127.0.0.1:{port}/old")}),
        ));
        assert!(!r.failed, "{r:?}");
        assert_eq!(r.data["redirected"], json!(true));
        assert_eq!(r.data["url"], json!(format!("http://127.0.0.1:{port}/new")));
        t.join().unwrap();
    }

    #[test]
    fn absolute_location_matches_uri_py() {
        assert_eq!(
            absolute_location("http://h:1/a/b?x=1", "/c"),
            "http://h:1?x=1/c"
        );
        assert_eq!(absolute_location("http://h/a/b", "c"), "http://h/a/c");
        assert_eq!(
            absolute_location("http://h/a", "https://x/y"),
            "https://x/y"
        );
    }
}
