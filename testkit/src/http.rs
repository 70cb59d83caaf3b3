//! A deliberately small HTTP/1.1 server and client. The server (the Mesos-DNS stand-in's
//! `/v1/...` endpoints) answers one request per connection with `Content-Length` bodies. The
//! client reads `Content-Length`, chunked and close-delimited bodies, follows nothing by itself
//! (callers see 307s and their `Location`), and speaks TLS per [`Endpoint`]: the test framework
//! reads Mesos's streaming (chunked) scheduler API with it.
//!
//! [`request`] uses the process's installed TLS ([`crate::tls::install`]) when there is one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

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
            let _ = tokio::time::timeout(IO_TIMEOUT, handle(stream, handler.as_ref())).await;
        });
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

pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// A stream the client can speak HTTP over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where a client request goes: `host` (an IP address or a name) and `port`, over TLS when
/// `tls` is set. The server certificate must name `host` (an IP SAN for an address).
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.authority()
        )
    }
}

impl Endpoint {
    /// `host:port` (IPv6 hosts in brackets), also the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// An endpoint from `host:port`, with the process's installed TLS (if any).
    pub fn installed(addr: &str) -> Result<Endpoint, String> {
        let (host, port) = split_host_port(addr)?;
        Ok(Endpoint {
            host,
            port,
            tls: crate::tls::installed().map(|t| t.client.clone()),
        })
    }

    /// The same endpoint with a host name replaced by its first IPv4 address (system resolver),
    /// so that the server certificate is checked against the address connected to. Used for
    /// redirects: a Mesos master names the leader by its host name, lab certificates carry IP
    /// SANs.
    pub async fn resolved(self) -> Result<Endpoint, String> {
        if self.host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(self);
        }
        let ip = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{} has no IPv4 address", self.host))?
            .ip();
        Ok(Endpoint {
            host: ip.to_string(),
            ..self
        })
    }
}

/// `host:port` → (host, port); IPv6 in brackets.
pub fn split_host_port(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("'{addr}' is not host:port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("'{addr}': bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("'{addr}': no host"));
    }
    Ok((host.to_string(), port))
}

/// Where a `Location` header sends a request made to `from` for `path`: absolute
/// (`http://h:p/x`, `https://h:p/x`), scheme-relative (`//h:p/x`, what Mesos masters answer, the
/// path left out for `/master/redirect`) or absolute-path (`/x`, same server). The scheme of the
/// original request is kept: a scheme-relative redirect means "same scheme". Returns the host,
/// the port and the path (with query); an empty path means `/`.
pub fn resolve_location(
    location: &str,
    from: (&str, u16),
    tls: bool,
) -> Result<(String, u16, String), String> {
    let loc = location.trim();
    let rest = if let Some(r) = loc.strip_prefix("//") {
        r
    } else if let Some(r) = loc
        .strip_prefix("http://")
        .or_else(|| loc.strip_prefix("https://"))
    {
        r
    } else if loc.starts_with('/') {
        return Ok((from.0.to_string(), from.1, loc.to_string()));
    } else {
        return Err(format!("unsupported Location '{location}'"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, String::new()),
    };
    let path = match path {
        p if p.is_empty() => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p,
    };
    let default_port = if loc.starts_with("https://") || (loc.starts_with("//") && tls) {
        443
    } else {
        80
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, after) = h
            .split_once(']')
            .ok_or_else(|| format!("bad Location '{location}'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok(),
            None if after.is_empty() => Some(default_port),
            None => None,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()),
            None => (authority.to_string(), Some(default_port)),
        }
    };
    match (host.is_empty(), port) {
        (false, Some(port)) if port > 0 => Ok((host, port, path)),
        _ => Err(format!("bad Location '{location}'")),
    }
}

/// Decodes a `Transfer-Encoding: chunked` body fed in pieces of any size.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: Chunk,
    line: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

const MAX_CHUNK_LINE: usize = 4096;

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    /// The last chunk and the trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Appends the data bytes found in `input` to `out`. Bytes after the end are ignored.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match self.state {
                Chunk::Done => return Ok(()),
                Chunk::Data(n) => {
                    let take = input.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::Size | Chunk::DataEnd | Chunk::Trailer => {
                    let Some(nl) = input.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_CHUNK_LINE {
                            return Err("chunk line too long".into());
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches('\r');
                    self.state = match self.state {
                        Chunk::DataEnd if line.is_empty() => Chunk::Size,
                        Chunk::DataEnd => {
                            return Err(format!("chunk data followed by '{line}', not CRLF"))
                        }
                        Chunk::Trailer if line.is_empty() => Chunk::Done,
                        Chunk::Trailer => Chunk::Trailer,
                        _ => {
                            let hex = line.split(';').next().unwrap_or_default().trim();
                            match u64::from_str_radix(hex, 16) {
                                Ok(0) => Chunk::Trailer,
                                Ok(n) if n <= MAX_BODY as u64 * 16 => Chunk::Data(n),
                                Ok(n) => return Err(format!("chunk of {n} bytes is too large")),
                                Err(_) => return Err(format!("bad chunk size line '{line}'")),
                            }
                        }
                    };
                }
            }
        }
        Ok(())
    }
}

/// A response head: status and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.trim().parse().ok()
    }
}

/// The first header named `name` (any case) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses a response head (status line and headers, without the blank line).
pub fn parse_head(text: &str) -> Result<Head, String> {
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(s)) if v.starts_with("HTTP/") => s.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("bad status line '{status_line}'"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Head { status, headers })
}

/// Opens a connection to `ep`: TCP, then TLS verified against `ep.tls`'s roots with `ep.host`
/// as the server name.
pub async fn connect(ep: &Endpoint) -> Result<Box<dyn Io>, String> {
    let addr = ep.authority();
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match &ep.tls {
        None => Ok(Box::new(tcp)),
        Some(cfg) => {
            let name = crate::tls::server_name(&ep.host)?;
            let s = TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{addr}: TLS: {e}"))?;
            Ok(Box::new(s))
        }
    }
}

/// Writes one request. `headers` come after `Host`; `Content-Length` is added.
pub async fn write_request<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    ep: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), String> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", ep.authority());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// Reads a response head; returns it and the body bytes already read after it.
pub async fn read_head<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<(Head, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = parse_head(&String::from_utf8_lossy(&buf[..i]))?;
            return Ok((head, buf[i + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return Err("response head too large".into());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the end of the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the whole body of a response whose head was `head` (Content-Length, chunked or up to
/// the end of the connection); `already` is what [`read_head`] read past the head.
pub async fn read_body<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    head: &Head,
    already: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut chunk = [0u8; 8192];
    if head.chunked() {
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        dec.feed(&already, &mut out)?;
        while !dec.is_done() {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed inside a chunked body".into());
            }
            dec.feed(&chunk[..n], &mut out)?;
            if out.len() > MAX_BODY {
                return Err("body too large".into());
            }
        }
        return Ok(out);
    }
    let mut body = already;
    match head.content_length() {
        Some(len) if len > MAX_BODY => Err("body too large".into()),
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed inside the body".into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
            Ok(body)
        }
        None if head.status == 204 || head.status == 304 => Ok(Vec::new()),
        None => {
            stream
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            Ok(body)
        }
    }
}

/// One request on its own connection (`Connection: close`); redirects are not followed.
pub async fn request_to(
    ep: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, String> {
    let fut = async {
        let mut stream = connect(ep).await?;
        let mut all = vec![("Connection", "close")];
        all.extend_from_slice(headers);
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        write_request(
            &mut stream,
            ep,
            method,
            path,
            &all,
            body.unwrap_or_default(),
        )
        .await?;
        let (head, rest) = read_head(&mut stream).await?;
        let body = read_body(&mut stream, &head, rest).await?;
        Ok((head.status, head.headers, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{}{path}: timed out", ep.authority()))?
        .map_err(|e: String| format!("{method} {}{path}: {e}", ep.authority()))
}

/// One request to `addr` (`host:port`); returns status, headers and body. Over TLS when the
/// process installed it. Redirects are not followed.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, String> {
    request_to(
        &Endpoint::installed(addr)?,
        method,
        path,
        &[],
        body,
        timeout,
    )
    .await
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

    /// Feeds `wire` to a decoder in pieces of `step` bytes.
    fn dechunk(wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            d.feed(piece, &mut out).unwrap();
        }
        (out, d.is_done())
    }

    #[test]
    fn chunked_bodies_decode_across_any_read_boundary() {
        // Chunk sizes in hex, an extension, a trailer, then bytes of the next response.
        let wire =
            b"4\r\nWiki\r\n7;ext=1\r\npedia i\r\nB\r\nn \r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1";
        for step in 1..=wire.len() {
            let (out, done) = dechunk(wire, step);
            assert_eq!(out, b"Wikipedia in \r\nchunks.", "step {step}");
            assert!(done, "step {step}");
        }
        // Mesos's streaming answer: chunks that split RecordIO records anywhere, no end yet.
        let (out, done) = dechunk(b"3\r\n20\n\r\n14\r\n{\"type\":\"HEARTBEAT\"}\r\n", 5);
        assert_eq!(out, b"20\n{\"type\":\"HEARTBEAT\"}");
        assert!(!done);
        // Bare LF line ends are tolerated.
        assert_eq!(dechunk(b"2\nab\n0\n\n", 1), (b"ab".to_vec(), true));
    }

    #[test]
    fn chunked_garbage_is_an_error() {
        let mut out = Vec::new();
        assert!(ChunkedDecoder::new().feed(b"zz\r\n", &mut out).is_err());
        assert!(ChunkedDecoder::new()
            .feed(b"2\r\nabc\r\n", &mut out)
            .is_err());
        assert!(ChunkedDecoder::new()
            .feed(&[b'1'; MAX_CHUNK_LINE + 1], &mut out)
            .is_err());
        assert!(ChunkedDecoder::new()
            .feed(b"ffffffffffff\r\n", &mut out)
            .is_err());
    }

    #[test]
    fn locations_mesos_answers() {
        let from = ("10.0.0.11", 5050);
        // A non-leading master (master/http.cpp redirect()): scheme-relative, the leader's
        // host name (or IP) and port, then the request's path; /master/redirect has no path.
        assert_eq!(
            resolve_location("//10.0.0.12:5050/api/v1/scheduler", from, true).unwrap(),
            ("10.0.0.12".into(), 5050, "/api/v1/scheduler".into())
        );
        assert_eq!(
            resolve_location("//localhost:15050", from, false).unwrap(),
            ("localhost".into(), 15050, "/".into())
        );
        assert_eq!(
            resolve_location("https://m2.example:5443/master/state?x=1", from, false).unwrap(),
            ("m2.example".into(), 5443, "/master/state?x=1".into())
        );
        assert_eq!(
            resolve_location("http://m2", from, true).unwrap(),
            ("m2".into(), 80, "/".into())
        );
        assert_eq!(
            resolve_location("//m2", from, true).unwrap(),
            ("m2".into(), 443, "/".into())
        );
        assert_eq!(
            resolve_location("/master/state", from, true).unwrap(),
            ("10.0.0.11".into(), 5050, "/master/state".into())
        );
        assert_eq!(
            resolve_location("//[fd00::2]:5050/x", from, true).unwrap(),
            ("fd00::2".into(), 5050, "/x".into())
        );
        for bad in [
            "",
            "ftp://x/",
            "master/state",
            "//:5050/x",
            "//h:0/x",
            "//h:port/x",
        ] {
            assert!(resolve_location(bad, from, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn heads_and_host_ports() {
        let h = parse_head(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: //h:1/p\r\nTransfer-Encoding: chunked",
        )
        .unwrap();
        assert_eq!(h.status, 307);
        assert_eq!(h.header("Location"), Some("//h:1/p"));
        assert!(h.chunked());
        assert_eq!(h.content_length(), None);
        assert!(parse_head("garbage").is_err());
        assert_eq!(
            split_host_port("127.0.0.1:15050").unwrap(),
            ("127.0.0.1".into(), 15050)
        );
        assert_eq!(split_host_port("[::1]:5050").unwrap(), ("::1".into(), 5050));
        assert!(split_host_port("h").is_err());
        assert!(split_host_port("h:0").is_err());
        assert!(split_host_port(":5050").is_err());
    }

    #[tokio::test]
    async fn chunked_responses_over_a_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            for piece in [
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"[..],
                b"lo\r\n",
                b"0\r\n\r\n",
            ] {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: None,
        };
        let (status, _, body) = request_to(&ep, "GET", "/", &[], None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((status, body), (200, b"hello".to_vec()));
    }
}
