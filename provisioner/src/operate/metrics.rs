//! The operator's metrics (`prometheus-client`, OpenMetrics text) and the small blocking HTTP
//! server behind `--listen` that serves `/metrics` and `/healthz` on a thread of its own (no
//! runtime: two read-only GET endpoints do not need one, and exec/transport stay the only async
//! modules).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric the operator keeps; cheap to clone (each metric is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// 1 per (host, component, task) that the last plan found drifted.
    pub drift: Family<Labels, Gauge>,
    /// The number of drifted tasks in the last plan.
    pub drift_tasks: Gauge,
    /// The number of drifted hosts in the last plan.
    pub drift_hosts: Gauge,
    pub plan_duration: Gauge<f64, AtomicU64>,
    pub plan_timestamp: Gauge<f64, AtomicU64>,
    /// Remediations by result (`ok`, `failed`).
    pub remediations: Family<Labels, Counter>,
    /// Drifted hosts left alone by reason (`report_only`, `health_red`, `budget`, ...).
    pub skipped: Family<Labels, Counter>,
    /// Times a cycle found the run lock held by another run.
    pub lock_waits: Counter,
    /// 1 green, 0 red, per component.
    pub health_gate: Family<Labels, Gauge>,
    /// 1 when this instance is the active operator (always, until election).
    pub active: Gauge,
    /// Cycles by result (`ok`, `drift`, `failed`, `error`, `locked`).
    pub cycles: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("provisioner_operate");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            drift: Family::default(),
            drift_tasks: Gauge::default(),
            drift_hosts: Gauge::default(),
            plan_duration: Gauge::default(),
            plan_timestamp: Gauge::default(),
            remediations: Family::default(),
            skipped: Family::default(),
            lock_waits: Counter::default(),
            health_gate: Family::default(),
            active: Gauge::default(),
            cycles: Family::default(),
        };
        r.register(
            "drift",
            "Tasks that would change, per host, component (role) and task (1 each)",
            m.drift.clone(),
        );
        r.register(
            "drift_tasks",
            "Tasks that would change in the last plan",
            m.drift_tasks.clone(),
        );
        r.register(
            "drift_hosts",
            "Hosts with drift in the last plan",
            m.drift_hosts.clone(),
        );
        r.register(
            "plan_duration_seconds",
            "How long the last plan took",
            m.plan_duration.clone(),
        );
        r.register(
            "plan_timestamp_seconds",
            "When the last plan ended (Unix time)",
            m.plan_timestamp.clone(),
        );
        r.register(
            "remediations",
            "Remediations of a host, by result",
            m.remediations.clone(),
        );
        r.register(
            "skipped",
            "Drifted hosts left alone in a cycle, by reason",
            m.skipped.clone(),
        );
        r.register(
            "lock_waits",
            "Cycles that found the run lock held by another run",
            m.lock_waits.clone(),
        );
        r.register(
            "health_gate",
            "Health per component: 1 green, 0 red (a critical flag)",
            m.health_gate.clone(),
        );
        r.register(
            "active",
            "1 when this instance is the active operator",
            m.active.clone(),
        );
        r.register("cycles", "Cycles, by result", m.cycles.clone());
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The last plan's drift: host → [(component, task)].
    pub fn set_drift(&self, drift: &BTreeMap<String, Vec<(String, String)>>) {
        self.drift.clear();
        let mut n = 0;
        for (host, tasks) in drift {
            for (component, task) in tasks {
                self.drift
                    .get_or_create(&labels(&[
                        ("host", host),
                        ("component", component),
                        ("task", task),
                    ]))
                    .set(1);
                n += 1;
            }
        }
        self.drift_tasks.set(n);
        self.drift_hosts.set(drift.len() as i64);
    }

    pub fn remediation(&self, result: &str) {
        self.remediations
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    pub fn skip(&self, reason: &str) {
        self.skipped
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    pub fn cycle(&self, result: &str) {
        self.cycles
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// Each component's gate: green unless one of `red` names it.
    pub fn set_health(&self, components: &[String], red: &[String]) {
        self.health_gate.clear();
        for c in components {
            let v = if red.contains(c) { 0 } else { 1 };
            self.health_gate
                .get_or_create(&labels(&[("component", c)]))
                .set(v);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out = "# encoding failed\n# EOF\n".into();
        }
        out
    }
}

/// Bind `addr` now (so a bad address fails the command at once) and serve `/metrics` and
/// `/healthz` on a thread until the process ends.
pub fn serve(addr: &str, metrics: Metrics) -> Result<std::net::SocketAddr, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("--listen {addr}: cannot listen: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("operate-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // One request per connection, answered in turn: scrapes are rare and small.
                let _ = answer(stream, &metrics);
            }
        })
        .map_err(|e| format!("cannot start the metrics server: {e}"))?;
    Ok(local)
}

fn answer(mut s: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.text(),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: /metrics or /healthz\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".to_string(),
        ),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn metrics_and_healthz_are_served_and_drift_is_replaced_each_plan() {
        let m = Metrics::new();
        m.active.set(1);
        m.set_drift(
            &[(
                "agent1".to_string(),
                vec![("mesos_agent".to_string(), "mesos_agent : flags".to_string())],
            )]
            .into(),
        );
        m.remediation("ok");
        m.lock_waits.inc();
        m.set_health(&["zookeeper".into(), "dnsmasq".into()], &["dnsmasq".into()]);
        let addr = serve("127.0.0.1:0", m.clone()).unwrap();
        let text = get(addr, "/metrics");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        for line in [
            "provisioner_operate_drift{host=\"agent1\",component=\"mesos_agent\",task=\"mesos_agent : flags\"} 1",
            "provisioner_operate_drift_tasks 1",
            "provisioner_operate_remediations_total{result=\"ok\"} 1",
            "provisioner_operate_lock_waits_total 1",
            "provisioner_operate_health_gate{component=\"dnsmasq\"} 0",
            "provisioner_operate_health_gate{component=\"zookeeper\"} 1",
            "provisioner_operate_active 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        m.set_drift(&BTreeMap::new());
        let text = get(addr, "/metrics");
        assert!(text.contains("provisioner_operate_drift_tasks 0"), "{text}");
        assert!(!text.contains("agent1"), "{text}");
        assert!(get(addr, "/healthz").ends_with("ok\n"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_bad_listen_address_is_refused_clearly() {
        let e = serve("not-an-address", Metrics::new()).unwrap_err();
        assert!(e.contains("--listen not-an-address"), "{e}");
    }
}
