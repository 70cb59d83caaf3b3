//! The stack's health gates as one program the hosts run: the roles' rolling restarts (and
//! handlers) call it instead of re-deriving ZooKeeper's modes, the quorum rule or Mesos's
//! readiness in Jinja and shell.
//!
//! [`gate_program`] is a POSIX sh script (bash's `/dev/tcp` for ZooKeeper's four-letter words,
//! curl for Mesos), written from this module's Rust so its modes, its majority and its Mesos
//! signal are those of [`crate::health`]. A stack run hands it to the roles as
//! `bundle.gate_program`; role `gate` installs it on every host as `provisioner_gate`
//! (`/usr/local/libexec/provisioner/gate`). Ports and addresses are its arguments: it knows no
//! cluster facts.
//!
//! Every gate exits 0 when green; otherwise it prints one line saying why and exits 1 (2 for
//! bad arguments):
//!
//! | subcommand | green when |
//! |---|---|
//! | `zk-serves PORT SIZE [HOST]` | the member at HOST (127.0.0.1) serves as a member of an ensemble of SIZE does ([`serving_modes`]) |
//! | `zk-leader PORT` | the local member is the leader |
//! | `zk-quorum PORT HOST...` | at least [`crate::health::majority`] of the listed members serve |
//! | `mesos-master-ready SCHEME://ADDR:PORT CAFILE\|-` | `/metrics/snapshot` has `registrar/log/recovered` = 1, `/master/redirect` answers 307 (the master knows a leader), and that leader answers `/master/roles` itself (200: it is elected, not a stopped master's contender) |
//! | `mesos-master-elected SCHEME://ADDR:PORT CAFILE\|-` | that master is the elected one: it answers `/master/roles` itself (200) |
//! | `majority N` | prints the majority of N members |

use crate::health::ZkMode;

/// Seconds each probe of a gate may take (connect and answer).
pub const PROBE_TIMEOUT_SECS: u32 = 5;

/// The `/metrics/snapshot` key that says a master's replica of the registry's replicated log
/// has recovered (1), as [`crate::health::MasterView::from_metrics`] reads it.
pub const RECOVERED_METRIC: &str = "registrar/log/recovered";

/// What `/master/redirect` answers on a master that knows the leader (the leader included);
/// 503 while there is none.
pub const REDIRECT_STATUS: u16 = 307;

/// An endpoint a master answers itself (200) only while it is elected; any other master
/// redirects it to the leader it knows (307), or answers 503 when it knows none.
///
/// Mesos does not close its ZooKeeper session when it stops: the contender of a stopped master
/// stays in the election group until its session expires (`zk_session_timeout`), and until then
/// the others follow it as their leader, and `/master/redirect` names it. A master restarted at
/// the same address therefore looks like the leader to `/master/redirect`; this endpoint tells
/// the two apart. A rolling restart that moved on while the leader was such a ghost would stop
/// the next master too and chain the ghosts: measured on the lab, 23 s without an elected master
/// for three restarts.
pub const ELECTED_ENDPOINT: &str = "/master/roles";

/// What [`ELECTED_ENDPOINT`] answers on the elected master.
pub const ELECTED_STATUS: u16 = 200;

/// The modes a serving member of an ensemble of `size` reports ([`ZkMode::serving`]): a
/// one-member ensemble runs standalone; in a larger one a standalone member serves no quorum
/// (Debian's package starts it so before its configuration names the ensemble), and an
/// observer does not vote.
pub fn serving_modes(size: usize) -> &'static [ZkMode] {
    if size > 1 {
        &[ZkMode::Leader, ZkMode::Follower]
    } else {
        &[ZkMode::Standalone]
    }
}

/// A mode as `srvr` prints it (`Mode: follower`): health's own names for it.
fn mode_name(m: ZkMode) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `leader|follower`: a sh `case` pattern of the serving modes of an ensemble of `size`.
fn case_pattern(size: usize) -> String {
    serving_modes(size)
        .iter()
        .map(|m| mode_name(*m))
        .collect::<Vec<_>>()
        .join("|")
}

/// An ERE matching `"KEY"` in JSON, where Mesos writes each `/` of a key as `\/`.
fn json_key_ere(key: &str) -> String {
    format!("\"{}\"", key.replace('/', "\\\\?/"))
}

const PROGRAM: &str = r#"#!/bin/sh
# provisioner gate: the stack's health gates, written by cluster-core (cluster_core::gates).
# Do not edit: the roles install it from the `bundle` variable. Each gate exits 0 when green,
# otherwise prints one line saying why and exits 1 (2: bad arguments).
#   zk-serves PORT SIZE [HOST]       HOST's member (127.0.0.1) serves as one of SIZE members does
#   zk-leader PORT                   the local member is the leader
#   zk-quorum PORT HOST...           a majority of the listed members serve
#   mesos-master-ready URL CAFILE|-  URL/metrics/snapshot: %%RECOVERED%% = 1,
#                                    URL/master/redirect answers %%REDIRECT%% to a LEADER, and
#                                    LEADER%%ELECTED%% answers %%ELECTED_STATUS%% (it is elected, not
#                                    a stopped master's contender) (CAFILE: - for none)
#   mesos-master-elected URL CAFILE|-  URL%%ELECTED%% answers %%ELECTED_STATUS%%: URL is the elected master
#   majority N                       prints floor(N/2)+1
set -u
T=%%TIMEOUT%%

usage() {
  echo "usage: gate zk-serves PORT SIZE [HOST] | zk-leader PORT | zk-quorum PORT HOST... | mesos-master-ready URL CAFILE|- | mesos-master-elected URL CAFILE|- | majority N" >&2
  exit 2
}

number() {
  case "$1" in '' | *[!0-9]*) usage ;; esac
}

majority() {
  echo $(($1 / 2 + 1))
}

# The mode HOST PORT's member reports to srvr: its Mode line, "not serving" when it answers
# without one, "no answer" when it does not answer. `printf srvr`, no newline: one sent after
# ZooKeeper has answered and closed draws a reset that can lose the answer.
zk_mode() {
  out=$(timeout "$T" bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf srvr >&3 && cat <&3' gate "$1" "$2" 2>/dev/null)
  if [ -z "$out" ]; then
    echo "no answer"
    return
  fi
  m=$(printf '%s\n' "$out" | sed -n 's/^Mode:[[:space:]]*\([^[:space:]]*\).*/\1/p' | head -n 1)
  echo "${m:-not serving}"
}

# The modes that serve in an ensemble of SIZE.
zk_serving_modes() {
  if [ "$1" -gt 1 ]; then echo "%%SERVING_MANY%%"; else echo "%%SERVING_ONE%%"; fi
}

# Does a member in MODE serve, in an ensemble of SIZE?
zk_serving() {
  if [ "$1" -gt 1 ]; then
    case "$2" in %%SERVING_MANY%%) return 0 ;; esac
  else
    case "$2" in %%SERVING_ONE%%) return 0 ;; esac
  fi
  return 1
}

zk_serves() {
  { [ $# -eq 2 ] || [ $# -eq 3 ]; } || usage
  number "$1"
  number "$2"
  h=${3:-127.0.0.1}
  m=$(zk_mode "$h" "$1")
  zk_serving "$2" "$m" && exit 0
  echo "ZooKeeper $h:$1: $m, not $(zk_serving_modes "$2") (an ensemble of $2)"
  exit 1
}

zk_leader() {
  [ $# -eq 1 ] || usage
  number "$1"
  m=$(zk_mode 127.0.0.1 "$1")
  [ "$m" = leader ] && exit 0
  echo "ZooKeeper 127.0.0.1:$1: $m, not the leader"
  exit 1
}

zk_quorum() {
  [ $# -ge 2 ] || usage
  number "$1"
  port=$1
  shift
  n=$#
  need=$(majority "$n")
  serving=0
  others=""
  for h in "$@"; do
    m=$(zk_mode "$h" "$port")
    if zk_serving "$n" "$m"; then
      serving=$((serving + 1))
    else
      others="$others, $h: $m"
    fi
  done
  [ "$serving" -ge "$need" ] && exit 0
  echo "ZooKeeper: $serving of $n members serve, $need needed (${others#, })"
  exit 1
}

# curl with the CA file, or without one for -.
get() {
  ca=$1
  shift
  if [ "$ca" = - ]; then
    curl -sS -m "$T" "$@"
  else
    curl -sS -m "$T" --cacert "$ca" "$@"
  fi
}

# The status URL's master answers %%ELECTED%% with (%%ELECTED_STATUS%%: it is elected).
elected_code() {
  get "$2" -o /dev/null -w '%{http_code}' "${1%/}%%ELECTED%%" 2>/dev/null
}

mesos_master_ready() {
  [ $# -eq 2 ] || usage
  url=${1%/}
  if ! snap=$(get "$2" "$url/metrics/snapshot" 2>&1); then
    echo "$url/metrics/snapshot: $(printf '%s\n' "$snap" | head -n 1)"
    exit 1
  fi
  v=$(printf '%s\n' "$snap" | grep -Eo '%%RECOVERED_ERE%%[[:space:]]*:[[:space:]]*[^,}[:space:]]*' | head -n 1 | sed 's/.*:[[:space:]]*//')
  if ! printf '%s\n' "$v" | grep -Eq '^1(\.0*)?$'; then
    echo "$url: %%RECOVERED%% is ${v:-missing}, not 1: this master's replica of the registry's log has not recovered"
    exit 1
  fi
  # curl resolves the Location (//host:port) against the URL asked.
  out=$(get "$2" -o /dev/null -w '%{http_code} %{redirect_url}' "$url/master/redirect" 2>/dev/null)
  code=${out% *}
  leader=${out#* }
  leader=${leader%/}
  case "$code" in
    %%REDIRECT%%) ;;
    '' | 000)
      echo "$url/master/redirect: no answer"
      exit 1
      ;;
    *)
      echo "$url/master/redirect answered $code, not %%REDIRECT%%: this master knows no leader"
      exit 1
      ;;
  esac
  if [ -z "$leader" ]; then
    echo "$url/master/redirect answered %%REDIRECT%% without a Location"
    exit 1
  fi
  lcode=$(elected_code "$leader" "$2")
  [ "$lcode" = %%ELECTED_STATUS%% ] && exit 0
  echo "$url follows $leader, which is not elected ($leader%%ELECTED%% answered ${lcode:-nothing}): a stopped master's contender, until its ZooKeeper session expires"
  exit 1
}

mesos_master_elected() {
  [ $# -eq 2 ] || usage
  url=${1%/}
  code=$(elected_code "$url" "$2")
  [ "$code" = %%ELECTED_STATUS%% ] && exit 0
  case "$code" in
    '' | 000) echo "$url%%ELECTED%%: no answer, not the elected master" ;;
    *) echo "$url%%ELECTED%% answered $code, not %%ELECTED_STATUS%%: not the elected master" ;;
  esac
  exit 1
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  zk-serves) zk_serves "$@" ;;
  zk-leader) zk_leader "$@" ;;
  zk-quorum) zk_quorum "$@" ;;
  mesos-master-ready) mesos_master_ready "$@" ;;
  mesos-master-elected) mesos_master_elected "$@" ;;
  majority)
    [ $# -eq 1 ] || usage
    number "$1"
    majority "$1"
    ;;
  *) usage ;;
esac
"#;

/// The gate program (see the module's documentation), installed on every host by the `common`
/// role. It holds no Jinja delimiters: Ansible templates the values of variables it reads.
pub fn gate_program() -> String {
    PROGRAM
        .replace("%%TIMEOUT%%", &PROBE_TIMEOUT_SECS.to_string())
        .replace("%%SERVING_MANY%%", &case_pattern(3))
        .replace("%%SERVING_ONE%%", &case_pattern(1))
        .replace("%%RECOVERED_ERE%%", &json_key_ere(RECOVERED_METRIC))
        .replace("%%RECOVERED%%", RECOVERED_METRIC)
        .replace("%%REDIRECT%%", &REDIRECT_STATUS.to_string())
        .replace("%%ELECTED_STATUS%%", &ELECTED_STATUS.to_string())
        .replace("%%ELECTED%%", ELECTED_ENDPOINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health;
    use std::process::Command;
    use testkit::fake::{FakeHttp, FakeZk};
    use testkit::http::Response;

    /// Runs the program with `sh`: (exit code, stdout).
    fn gate(args: &[&str]) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate");
        std::fs::write(&path, gate_program()).unwrap();
        let out = Command::new("sh").arg(&path).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn assert_red(args: &[&str], says: &str) {
        let (rc, out) = gate(args);
        assert_eq!(rc, 1, "{args:?}: {out}");
        assert_eq!(out.lines().count(), 1, "{args:?}: one line: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
    }

    fn green(args: &[&str]) -> bool {
        let (rc, out) = gate(args);
        assert!(rc == 0 || rc == 1, "{args:?}: {rc} {out}");
        rc == 0
    }

    /// A port nothing listens on.
    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    }

    #[test]
    fn the_program_is_plain_sh_without_jinja_or_placeholders() {
        let p = gate_program();
        for bad in ["{{", "{%", "{#", "%%"] {
            assert!(!p.contains(bad), "{bad}");
        }
        // sh -n: it parses.
        let out = Command::new("sh").args(["-n", "-c", &p]).output().unwrap();
        let syntax = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{syntax}");
        let (rc, _) = gate(&["nonsense"]);
        assert_eq!(rc, 2);
        assert_eq!(gate(&["zk-serves", "x", "3"]).0, 2);
    }

    #[test]
    fn its_majority_is_healths() {
        for n in 1..=9 {
            let (rc, out) = gate(&["majority", &n.to_string()]);
            assert_eq!(rc, 0);
            assert_eq!(out.trim(), health::majority(n).to_string(), "n={n}");
            assert_eq!(
                Some(health::majority(n)),
                crate::topology::mesos_quorum(n),
                "n={n}"
            );
        }
    }

    #[test]
    fn its_serving_modes_are_the_ones_health_reads_as_serving() {
        for size in 1..=5 {
            for m in serving_modes(size) {
                assert!(m.serving(), "{m:?}");
                let (parsed, _) = health::parse_srvr(&format!("Mode: {}\n", mode_name(*m)));
                assert_eq!(parsed, *m);
            }
        }
        assert_eq!(case_pattern(3), "leader|follower");
        assert_eq!(case_pattern(1), "standalone");
    }

    #[test]
    fn zookeeper_gates_read_srvr() {
        let zk = FakeZk::start(Some("follower")).unwrap();
        let port = zk.port().to_string();
        let p = port.as_str();
        assert!(green(&["zk-serves", p, "3"]));
        assert!(green(&["zk-serves", p, "3", "127.0.0.1"]));
        assert_red(&["zk-serves", p, "1"], "follower");
        assert_red(&["zk-leader", p], "follower, not the leader");
        zk.set_mode(Some("leader"));
        assert!(green(&["zk-leader", p]));
        // Debian starts a fresh member standalone: it serves no ensemble of 3.
        zk.set_mode(Some("standalone"));
        assert_red(
            &["zk-serves", p, "3"],
            &format!("127.0.0.1:{p}: standalone"),
        );
        assert!(green(&["zk-serves", p, "1"]));
        zk.set_mode(None);
        assert_red(&["zk-serves", p, "3"], "not serving");
        let closed = closed_port();
        assert_red(&["zk-serves", &closed, "3"], "no answer");
        assert_red(&["zk-leader", &closed], "no answer, not the leader");
    }

    #[test]
    fn the_quorum_gate_counts_a_majority_of_the_listed_members() {
        // Three members on one address: the gate asks each listed host on the same port, so
        // three fakes need three addresses; 127.0.0.x all reach loopback.
        let zk = FakeZk::start(Some("follower")).unwrap();
        let p = zk.port().to_string();
        let (a, b, c) = ("127.0.0.1", "127.0.0.2", "127.0.0.3");
        // The fake listens on 127.0.0.1 only: b and c do not answer.
        assert_red(
            &["zk-quorum", &p, a, b, c],
            "1 of 3 members serve, 2 needed (127.0.0.2: no answer, 127.0.0.3: no answer)",
        );
        assert!(green(&["zk-quorum", &p, a, a, c]));
        assert!(!green(&["zk-quorum", &p, a]));
        zk.set_mode(Some("standalone"));
        assert!(green(&["zk-quorum", &p, a]));
        assert_red(&["zk-quorum", &p, a, a, a], "0 of 3 members serve");
        zk.set_mode(Some("leader"));
        assert!(!green(&["zk-quorum", &p, a, a, b, c, c]));
        assert!(green(&["zk-quorum", &p, a, a, a, c, c]));
        assert_eq!(gate(&["zk-quorum", &p]).0, 2);
    }

    fn snapshot(body: &str) -> Response {
        Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A master at the address a redirect names: elected (it answers the elected endpoint
    /// itself), or a restarted master at a ghost's address (it redirects that endpoint).
    fn leader(elected: bool) -> FakeHttp {
        let answer = if elected {
            Response::text(ELECTED_STATUS, "{}")
        } else {
            Response::redirect("//127.0.0.1:1")
        };
        FakeHttp::start(vec![(ELECTED_ENDPOINT.into(), answer)]).unwrap()
    }

    /// `/master/redirect`'s answer naming `l` (Mesos writes `//host:port`).
    fn to(l: &FakeHttp) -> Response {
        Response::redirect(l.url().trim_start_matches("http:"))
    }

    fn master(snap: Response, redirect: Response) -> FakeHttp {
        FakeHttp::start(vec![
            ("/metrics/snapshot".into(), snap),
            ("/master/redirect".into(), redirect),
        ])
        .unwrap()
    }

    #[test]
    fn the_mesos_gate_agrees_with_health_on_recovered() {
        let elected = leader(true);
        // Mesos writes `\/` in its keys; serde_json (and so health) reads both forms.
        for (body, recovered) in [
            (
                r#"{"master\/elected":1.0,"registrar\/log\/recovered":1.0}"#,
                true,
            ),
            (r#"{"registrar/log/recovered": 1, "x": 0}"#, true),
            (r#"{"registrar\/log\/recovered":0.0}"#, false),
            (r#"{"registrar\/log\/recovered":1.5}"#, false),
            (r#"{"master\/elected":1.0}"#, false),
        ] {
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            let view = health::MasterView::from_metrics("m1", Some(&json), None);
            assert_eq!(view.recovered, recovered, "{body}");
            let m = master(snapshot(body), to(&elected));
            assert_eq!(
                green(&["mesos-master-ready", &m.url(), "-"]),
                recovered,
                "{body}"
            );
        }
    }

    #[test]
    fn the_mesos_gate_needs_a_known_leader() {
        let ok = r#"{"registrar\/log\/recovered":1.0}"#;
        let elected = leader(true);
        let m = master(snapshot(ok), to(&elected));
        assert!(green(&[
            "mesos-master-ready",
            &format!("{}/", m.url()),
            "-"
        ]));
        let m = master(snapshot(ok), Response::text(503, "no leader"));
        assert_red(
            &["mesos-master-ready", &m.url(), "-"],
            "answered 503, not 307: this master knows no leader",
        );
        let m = master(
            snapshot(r#"{"registrar\/log\/recovered":0.0}"#),
            to(&elected),
        );
        assert_red(
            &["mesos-master-ready", &m.url(), "-"],
            "registrar/log/recovered is 0.0, not 1",
        );
        let url = format!("http://127.0.0.1:{}", closed_port());
        assert_red(
            &["mesos-master-ready", &url, "-"],
            "/metrics/snapshot: curl:",
        );
        // A CA file that does not exist: curl fails, the gate says so.
        assert_red(
            &[
                "mesos-master-ready",
                &url.replace("http:", "https:"),
                "/nonexistent/ca.crt",
            ],
            "/metrics/snapshot: curl:",
        );
    }

    #[test]
    fn the_elected_gate_asks_the_master_itself() {
        let elected = leader(true);
        assert!(green(&["mesos-master-elected", &elected.url(), "-"]));
        let follower = leader(false);
        assert_red(
            &["mesos-master-elected", &follower.url(), "-"],
            "answered 307, not 200: not the elected master",
        );
        let url = format!("http://127.0.0.1:{}", closed_port());
        assert_red(
            &["mesos-master-elected", &url, "-"],
            "no answer, not the elected master",
        );
        assert_eq!(gate(&["mesos-master-elected", &url]).0, 2);
    }

    #[test]
    fn a_stopped_masters_contender_is_not_a_leader() {
        // Regression: the masters' rolling restart moved on while every master followed the
        // contender of a stopped master (Mesos keeps it in ZooKeeper until its session
        // expires), and the ghosts chained: 23 s without an elected master on the lab.
        let ok = r#"{"registrar\/log\/recovered":1.0}"#;
        let ghost = leader(false);
        let m = master(snapshot(ok), to(&ghost));
        assert_red(
            &["mesos-master-ready", &m.url(), "-"],
            &format!(
                "follows {0}, which is not elected ({0}{ELECTED_ENDPOINT} answered 307)",
                ghost.url()
            ),
        );
        // A leader that does not answer at all (its host is down).
        let gone = format!("//127.0.0.1:{}", closed_port());
        let m = master(snapshot(ok), Response::redirect(&gone));
        assert_red(&["mesos-master-ready", &m.url(), "-"], "answered 000");
        // A 307 without a Location names no leader.
        let bare = Response {
            status: REDIRECT_STATUS,
            headers: vec![],
            body: vec![],
        };
        let m = master(snapshot(ok), bare);
        assert_red(&["mesos-master-ready", &m.url(), "-"], "without a Location");
    }
}
