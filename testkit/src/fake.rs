//! Blocking fakes of the stack's signals on 127.0.0.1, for hermetic tests of the gate program
//! (`cluster_core::gates`) and of the roles that run it: a ZooKeeper member that answers the
//! four-letter words, and an HTTP server with fixed answers per path (a Mesos master's
//! `/metrics/snapshot` and `/master/redirect`). Each serves on its own thread until dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::{encode_response, Response};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener on 127.0.0.1 whose thread answers each connection with `answer` until dropped.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(answer: impl Fn(&mut TcpStream) + Send + 'static) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = conn else { continue };
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                answer(&mut s);
            }
        });
        Ok(Server { port, stop })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A ZooKeeper member: reads a four-letter word and answers `srvr` with `Zxid` and the
/// current `mode` (`None`: "not currently serving requests", as a member without a quorum
/// says), then closes, as ZooKeeper does.
pub struct FakeZk {
    server: Server,
    mode: Arc<Mutex<Option<String>>>,
}

impl FakeZk {
    pub fn start(mode: Option<&str>) -> std::io::Result<FakeZk> {
        let mode = Arc::new(Mutex::new(mode.map(str::to_string)));
        let current = mode.clone();
        let server = Server::start(move |s| {
            let mut word = [0u8; 4];
            if s.read_exact(&mut word).is_err() {
                return;
            }
            let answer = match (&word, current.lock().map(|m| m.clone())) {
                (b"srvr", Ok(Some(m))) => format!(
                    "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.1/2\nReceived: 10\nSent: 9\nConnections: 1\nOutstanding: 0\nZxid: 0x100000002\nMode: {m}\nNode count: 5\n"
                ),
                _ => "This ZooKeeper instance is not currently serving requests\n".to_string(),
            };
            let _ = s.write_all(answer.as_bytes());
        })?;
        Ok(FakeZk { server, mode })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// What `srvr` says from now on.
    pub fn set_mode(&self, mode: Option<&str>) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode.map(str::to_string);
        }
    }
}

/// An HTTP/1.1 server answering each request by its path (without the query) from `routes`;
/// other paths get 404.
pub struct FakeHttp {
    server: Server,
}

impl FakeHttp {
    pub fn start(routes: Vec<(String, Response)>) -> std::io::Result<FakeHttp> {
        let server = Server::start(move |s| {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                match s.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => return,
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/");
            let resp = routes
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| Response::text(404, "not found"));
            let _ = s.write_all(&encode_response(&resp));
        })?;
        Ok(FakeHttp { server })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }
}
