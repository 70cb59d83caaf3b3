//! A deliberately small HTTP/1.1 server and client (one request per connection,
//! `Connection: close`, `Content-Length` bodies). Enough for the stand-in's JSON endpoints,
//! curl, the `uri` module and Prometheus-style probes; it keeps the test crate light.
//!
//! When the process has installed libprocess TLS ([`crate::tls::install`]), the server speaks
//! HTTPS (plain HTTP too with `LIBPROCESS_SSL_SUPPORT_DOWNGRADE`) and the client connects with
//! TLS, verifying the server's certificate against the cluster CA.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const MAX_BODY: usize = 4 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: v.to_string().into_bytes(),
        }
    }
    pub fn text(status: u16, s: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: s.as_bytes().to_vec(),
        }
    }
    pub fn redirect(location: &str) -> Response {
        Response {
            status: 307,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serves forever; each connection gets one request.
pub async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, accept(stream, handler.as_ref())).await;
        });
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

async fn accept<H, F>(stream: TcpStream, handler: &H)
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let Some((server, downgrade)) =
        crate::tls::installed().and_then(|t| Some((t.server.clone()?, t.downgrade)))
    else {
        return handle(stream, handler).await;
    };
    if downgrade {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] != TLS_HANDSHAKE => return handle(stream, handler).await,
            Ok(1) => {}
            _ => return,
        }
    }
    match TlsAcceptor::from(server).accept(stream).await {
        Ok(s) => handle(s, handler).await,
        // A plain-HTTP client (or one that does not trust our CA) gets no answer.
        Err(e) => tracing::debug!("TLS handshake refused: {e}"),
    }
}

async fn handle<S, H, F>(mut stream: S, handler: &H)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let resp = match read_request(&mut stream).await {
        Ok(req) => handler(req).await,
        Err(e) => Response::text(400, &e),
    };
    let _ = stream.write_all(&encode_response(&resp)).await;
    let _ = stream.shutdown().await;
}

pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    out
}

/// Reads head and body; returns (head text, body bytes).
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(String, Vec<u8>, bool), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err("head too large".into());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the end of the head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut body = buf[head_end + 4..].to_vec();
    let len = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    match len {
        Some(len) if len > MAX_BODY => return Err("body too large".into()),
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed inside the body".into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {}
    }
    Ok((head, body, len.is_some()))
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, String> {
    let (head, body, _) = read_message(stream).await?;
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Err(format!("bad request line '{line}'")),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Ok(Request {
        method,
        path,
        query,
        body,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// One request to `addr` (`host:port`); returns status, headers and body. Over TLS when the
/// process installed it.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        match crate::tls::installed() {
            None => exchange(tcp, addr, method, path, body).await,
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let name = crate::tls::server_name(host)?;
                let stream = TlsConnector::from(tls.client.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("{addr}: TLS: {e}"))?;
                exchange(stream, addr, method, path, body).await
            }
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{addr}{path}: timed out"))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let (head, mut resp_body, had_len) = read_message(&mut stream).await?;
    if !had_len {
        stream
            .read_to_end(&mut resp_body)
            .await
            .map_err(|e| e.to_string())?;
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line from {addr}"))?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers, resp_body))
}

/// GET and parse JSON.
pub async fn get_json(addr: &str, path: &str) -> Result<serde_json::Value, String> {
    let (status, _, body) = request(addr, "GET", path, None, Duration::from_secs(5)).await?;
    if status != 200 {
        return Err(format!("GET {addr}{path}: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {addr}{path}: {e}"))
}

pub async fn bind(ip: std::net::Ipv4Addr, port: u16) -> Result<TcpListener, String> {
    let addr = SocketAddr::from((ip, port));
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let l = bind(std::net::Ipv4Addr::LOCALHOST, 0).await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(serve(l, |req: Request| async move {
            Response::json(
                200,
                &serde_json::json!({"m": req.method, "p": req.path, "q": req.query, "n": req.body.len()}),
            )
        }));
        let (s, _, b) = request(
            &addr,
            "POST",
            "/x/y?z=1",
            Some(&[b'a'; 20000]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["m"], "POST");
        assert_eq!(v["p"], "/x/y");
        assert_eq!(v["q"], "z=1");
        assert_eq!(v["n"], 20000);
    }
}
