//! A minimal HTTP/1.1 keep-alive client over one TcpStream: the whole request in one write,
//! responses read back in order by Content-Length or chunked coding; one request at a time
//! ([`Http`]) or pipelined (write with [`encode_request`], read with [`ResponseReader`]).
//! Enough for `POST /api/events` and `GET /ws/stats`, and cheaper than a general client.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::find;

/// Status and body of one response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parsed response head: status, body framing, whether the server closes after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
}

/// Parses a response head (without the final blank line).
pub fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line: {status_line:?}")));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status code"))?;
    let mut h = Head { status, content_length: None, chunked: false, close: version == "HTTP/1.0" };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            h.content_length = Some(value.parse().map_err(|_| bad("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                h.close = true;
            } else if v.contains("keep-alive") {
                h.close = false;
            }
        }
    }
    Ok(h)
}

/// Appends one request (head and body) to `out`.
pub fn encode_request(out: &mut Vec<u8>, host: &SocketAddr, method: &str, path: &str, headers: &str, body: &[u8]) {
    out.extend_from_slice(
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    );
    out.extend_from_slice(body);
}

/// Reads responses, one after the other, from the read side of a connection.
pub struct ResponseReader<R> {
    rd: R,
    buf: Vec<u8>,
    /// The server said it closes the connection after the last response.
    pub closed: bool,
}

impl<R: AsyncRead + Unpin> ResponseReader<R> {
    pub fn new(rd: R) -> Self {
        ResponseReader { rd, buf: Vec::with_capacity(8192), closed: false }
    }

    /// Reads more bytes into the buffer; EOF is an error.
    async fn fill(&mut self) -> io::Result<()> {
        self.buf.reserve(4096);
        let n = self.rd.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
        }
        Ok(())
    }

    /// Reads the next complete response.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(bad("response head too large"));
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        self.buf.drain(..head_end + 4);
        let body = if head.chunked {
            self.read_chunked().await?
        } else if let Some(n) = head.content_length {
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.buf.drain(..n).collect()
        } else if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
            Vec::new()
        } else {
            // Delimited by EOF.
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            self.closed = true;
            std::mem::take(&mut self.buf)
        };
        if head.close {
            self.closed = true;
        }
        Ok(Response { status: head.status, body })
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end]).map_err(|_| bad("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers (if any) end with an empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                        continue;
                    }
                    self.fill().await?;
                }
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// One keep-alive connection, one request at a time.
pub struct Http {
    addr: SocketAddr,
    conn: Option<(OwnedWriteHalf, ResponseReader<OwnedReadHalf>)>,
    req: Vec<u8>,
}

/// Opens a connection with Nagle off (each request is one write).
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Http { addr, conn: None, req: Vec::with_capacity(1024) }
    }

    /// Sends one request and reads its response. `headers` are extra header lines, each
    /// ending in `\r\n`. On any I/O error the connection is dropped (the next request opens a
    /// new one); the request is not retried, so a publish is never sent twice.
    pub async fn request(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> io::Result<Response> {
        let r = self.request_inner(method, path, headers, body).await;
        if r.is_err() || self.conn.as_ref().is_some_and(|c| c.1.closed) {
            self.conn = None;
        }
        r
    }

    async fn request_inner(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> io::Result<Response> {
        if self.conn.is_none() {
            let (rd, wr) = connect(self.addr).await?.into_split();
            self.conn = Some((wr, ResponseReader::new(rd)));
        }
        self.req.clear();
        encode_request(&mut self.req, &self.addr, method, path, headers, body);
        let (wr, rd) = self.conn.as_mut().ok_or_else(|| bad("not connected"))?;
        wr.write_all(&self.req).await?;
        rd.read_response().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 38").unwrap();
        assert_eq!(h, Head { status: 202, content_length: Some(38), chunked: false, close: false });
        let h =
            parse_head(b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nConnection: close").unwrap();
        assert_eq!(h, Head { status: 429, content_length: None, chunked: true, close: true });
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
    }

    #[tokio::test]
    async fn pipelined_responses_read_in_order() {
        let wire: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}\
HTTP/1.1 429 Too Many Requests\r\ncontent-length: 13\r\nretry-after: 1\r\n\r\n{\"error\":\"x\"}\
HTTP/1.1 202 Accepted\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let mut rr = ResponseReader::new(wire);
        assert_eq!(rr.read_response().await.unwrap().status, 202);
        let r = rr.read_response().await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (429, &b"{\"error\":\"x\"}"[..]));
        assert!(!rr.closed);
        assert_eq!(rr.read_response().await.unwrap().status, 202);
        assert!(rr.closed);
        assert!(rr.read_response().await.is_err());
        let mut req = Vec::new();
        encode_request(&mut req, &"127.0.0.1:1".parse().unwrap(), "POST", "/api/events", "X: y\r\n", b"{}");
        assert_eq!(req, b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX: y\r\nContent-Length: 2\r\n\r\n{}");
    }

    #[tokio::test]
    async fn keep_alive_round_trips() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let mut answered = 0;
            while answered < 2 {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                while let Some(i) = find(&seen, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&seen[..i]).to_string();
                    let cl: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map(|v| v.parse().unwrap())
                        .unwrap_or(0);
                    if seen.len() < i + 4 + cl {
                        break;
                    }
                    seen.drain(..i + 4 + cl);
                    let reply: &[u8] = if answered == 0 {
                        b"HTTP/1.1 202 Accepted\r\ncontent-length: 9\r\n\r\n{\"id\":1}\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    };
                    s.write_all(reply).await.unwrap();
                    answered += 1;
                }
            }
        });
        let mut c = Http::new(addr);
        let r = c.request("POST", "/api/events", "Content-Type: application/json\r\n", b"{}").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (202, &b"{\"id\":1}\n"[..]));
        let r = c.request("GET", "/ws/stats", "", b"").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
    }
}
