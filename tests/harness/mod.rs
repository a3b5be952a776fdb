//! Test harness: real `wsgate` binaries on ephemeral ports, real `redis-server` processes on
//! free ports (never 6379), real WebSocket clients, tokens, and small HTTP helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "fleet-test-secret";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` of the test's own, killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    pub dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(free_port(), &[])
    }

    /// Starts on `port` with extra arguments (e.g. `--requirepass x`).
    pub fn start_with(port: u16, extra: &[&str]) -> Redis {
        let dir = std::env::temp_dir().join(format!("wsgate-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> =
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].iter().map(|s| s.to_string()).collect();
        args.extend(["--dir".to_string(), dir.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut r = Redis { child: None, port, args, dir };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if !self.args.iter().any(|a| a == "--port") {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (bash .ci/test.sh installs it)");
        self.child = Some(child);
    }

    /// (Re)starts the server on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.spawn();
        let deadline = Instant::now() + WAIT;
        let port = if let Some(i) = self.args.iter().position(|a| a == "--tls-port") {
            self.args[i + 1].parse().unwrap()
        } else {
            self.port
        };
        while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a command with redis-cli and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `wsgate` process on an ephemeral port.
pub struct Gateway {
    child: Option<Child>,
    pub addr: String,
    logs: Arc<Mutex<String>>,
}

impl Gateway {
    pub fn start(env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        cmd.env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", SECRET)
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        // An empty value unsets the variable (e.g. `("JWT_SECRET", "")` for dev mode).
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            if let Some(a) = logs.lock().unwrap().split("listening on http://").nth(1) {
                break a.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect::<String>();
            }
            assert!(Instant::now() < deadline, "gateway did not start:\n{}", logs.lock().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        };
        Gateway { child: Some(child), addr, logs }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.logs().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the gateway process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    /// The value of one metric line, e.g. `wsgate_disconnects_total{reason="slow"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Polls a metric until it reaches at least `want`.
    pub async fn wait_metric(&self, series: &str, want: f64) {
        let deadline = Instant::now() + WAIT;
        while self.metric(series).await < want {
            assert!(Instant::now() < deadline, "{series} never reached {want}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws/tasks?token={token}", self.addr)
    }

    /// POSTs `body` to /api/events with `token`; returns status, headers and JSON body.
    pub async fn post_events(&self, token: &str, body: &str) -> Reply {
        let r = reqwest::Client::new()
            .post(self.url("/api/events"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        Reply::read(r).await
    }

    /// A WebSocket handshake that is expected to fail: returns the HTTP status and JSON body.
    pub async fn refused_upgrade(
        &self,
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> (u16, Value) {
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => panic!("upgrade unexpectedly accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp.body().clone().unwrap_or_default();
                (resp.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("http://{}{path}", self.addr)).await.unwrap().json().await.unwrap()
    }

    pub async fn publish(&self, body: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!("http://{}/api/events", self.addr))
            .bearer_auth(token(json!({"sub": "svc", "scope": "publish"})))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "publish failed: {:?}", r.text().await);
        r.json().await.unwrap()
    }

    /// Waits until `/health` reports the Redis state `want`.
    pub async fn wait_redis_state(&self, want: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let h = self.get("/health").await;
            if h["redis"]["state"] == want {
                return;
            }
            assert!(Instant::now() < deadline, "redis state {} != {want}\n{}", h["redis"]["state"], self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn connect(&self, user: &str) -> Client {
        self.connect_with(&token(json!({ "sub": user }))).await
    }

    /// Connects with `token` and waits for the `connected` frame.
    pub async fn connect_with(&self, token: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(token)).await.unwrap();
        let mut c = Client { ws, hello: Value::Null };
        c.hello = c.next().await.expect("connected frame");
        assert_eq!(c.hello["type"], "connected");
        c
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// An HS256 token with `claims`, and `exp` one hour ahead unless `claims` has one.
pub fn token(mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = (now_secs() + 3600).into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// An HTTP answer.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Reply {
    pub async fn read(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        Reply { status, headers, json }
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.json))
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn publish_token() -> String {
    token(json!({"sub": "svc", "scope": "publish"}))
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `connected` frame.
    pub hello: Value,
}

impl Client {
    /// The next JSON text frame, or `None` after `WAIT`.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(WAIT).await
    }

    pub async fn next_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline.into(), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Waits for the server's close frame and returns its code (reading past queued frames).
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline.into(), self.ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    pub async fn send(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The `type`s of the next events up to and including the one of type `marker`.
    pub async fn types_until(&mut self, marker: &str) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(v) = self.next().await {
            let t = v["type"].as_str().unwrap().to_string();
            let done = t == marker;
            got.push(t);
            if done {
                return got;
            }
        }
        panic!("marker {marker:?} never arrived; got {got:?}");
    }
}

/// Polls `/ws/stats` of `gw` until `pred` holds.
pub async fn wait_stats(gw: &Gateway, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = gw.get("/ws/stats").await;
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats never showed {what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A self-signed CA and a server certificate for 127.0.0.1, made with openssl.
pub fn make_tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=wsgate-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    let mut ext = std::fs::File::create(dir.join("ext.cnf")).unwrap();
    writeln!(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key"))
}

/// Reads a whole RESP reply line from a raw connection (for readiness probes).
pub fn raw_ping(port: u16) -> String {
    let mut s = StdTcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// A WebSocket upgrade done by hand on a socket with a small receive buffer, returning the
/// socket right after the 101 (nothing read past it). For clients that must not read or
/// answer (slow consumers, dead peers).
pub async fn raw_upgrade(addr: &str, token: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr.parse().unwrap()).await.unwrap();
    let req = format!(
        "GET /ws/tasks?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "EOF during the handshake");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// Turns a socket returned by [`raw_upgrade`] into a client that reads normally.
pub async fn into_client(s: TcpStream) -> Client {
    let ws = WebSocketStream::from_raw_socket(
        MaybeTlsStream::Plain(s),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    Client { ws, hello: Value::Null }
}
