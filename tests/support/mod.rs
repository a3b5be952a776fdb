//! Helpers shared by every integration test: start the real `wsgate` binary on port 0, mint
//! tokens, connect WebSocket clients (a real one and a raw socket that never reads), publish,
//! read metrics, and start throwaway `redis-server`s (plain, with a password or ACL users, as a
//! Cluster node, or with TLS).
//!
//! Every wait here is bounded: a test that hangs tells nobody anything, a test that fails with
//! "timed out waiting for X" does.

// Each test file is its own crate and uses a different subset of these helpers.
#![allow(dead_code)]

/// The exactly-once oracle and the Sentinel/replica processes of the fault tests.
pub mod faults;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one expected frame, response or state change may take. Generous: the suite runs
/// debug builds on two shared cores.
pub const STEP: Duration = Duration::from_secs(10);
/// How long the gateway may take to print its listening line.
const STARTUP: Duration = Duration::from_secs(20);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `cond` until it holds, or panics naming `what` after `timeout`. Returns how long it took.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// `fut` must finish within `timeout`; panics naming `what` otherwise.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| panic!("timed out after {timeout:?}: {what}"))
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// A random hex string (std's hasher keys are random per process and per `RandomState`).
pub fn random_hex() -> String {
    format!("{:016x}{:016x}", RandomState::new().hash_one(1u8), RandomState::new().hash_one(2u8))
}

/// A free loopback port (never 6379, the default Redis port).
pub fn free_port() -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().unwrap().port();
    assert_ne!(port, 6379, "never touch the default Redis port");
    port
}

/// A fresh directory under the system temp dir, removed with its contents on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("wsgate-{label}-{}-{}", std::process::id(), random_hex()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process whose stdout and stderr are collected by background threads (so its pipes
/// never fill and block it) and which is killed with SIGKILL on drop unless it has exited.
pub struct Process {
    child: Child,
    pub pid: u32,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The collector threads, joined once the process has exited so its last words are in.
    collectors: Vec<std::thread::JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl Process {
    pub fn spawn(mut cmd: Command) -> Process {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (stdout, out_thread) = collect(child.stdout.take().expect("piped stdout"));
        let (stderr, err_thread) = collect(child.stderr.take().expect("piped stderr"));
        Process { pid: child.id(), child, stdout, stderr, collectors: vec![out_thread, err_thread], exited: None }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The exit status, if the process has exited (reaps it, and waits for the collectors to
    /// read the pipes to their end).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("waitpid");
            if self.exited.is_some() {
                for t in self.collectors.drain(..) {
                    let _ = t.join();
                }
            }
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.exited.is_none(), "process {} already exited", self.pid);
        // SAFETY: plain kill(2) on our own, not yet reaped, child: its PID cannot be reused.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to its end (within [`STEP`]), insists on exit status 0, and returns its stdout.
pub async fn run_ok(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let mut p = Process::spawn(cmd);
    let status = p.wait_exit(STEP).await.unwrap_or_else(|| panic!("{what} still running after {STEP:?}"));
    assert!(status.success(), "{what} failed ({status}); stdout:\n{}stderr:\n{}", p.stdout(), p.stderr());
    p.stdout()
}

fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, thread)
}

// ---------------------------------------------------------------------------------------------
// The gateway

/// The `wsgate` command with a clean environment: the test's own settings only, so a
/// `REDIS_URL` or `JWT_SECRET` in the developer's shell cannot leak in. An empty value in `env`
/// removes that variable (e.g. `("JWT_SECRET", "")` for dev mode).
pub fn wsgate_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    cmd.env_clear().args(args);
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

/// A running gateway, killed (SIGKILL) on drop unless the test stopped it.
pub struct Gateway {
    pub proc: Process,
    pub addr: SocketAddr,
    pub pid: u32,
    /// The HS256 secret this instance verifies tokens with.
    pub secret: String,
    http: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway on 127.0.0.1:0 with a fresh random `JWT_SECRET`; `env` adds to or
    /// overrides those defaults. A non-empty `JWT_SECRET` in `env` becomes [`Gateway::secret`]
    /// (so the instances of one fleet can share theirs).
    pub async fn start(env: &[(&str, &str)]) -> Gateway {
        Gateway::start_with_args(&[], env).await
    }

    pub async fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let secret = match env.iter().rev().find(|(k, _)| *k == "JWT_SECRET") {
            Some((_, v)) if !v.is_empty() => v.to_string(),
            _ => random_hex(),
        };
        let mut all = vec![
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("JWT_SECRET", secret.as_str()),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "info"),
        ];
        all.extend_from_slice(env);
        let mut proc = Process::spawn(wsgate_command(args, &all));
        let start = Instant::now();
        let port = loop {
            if let Some(port) = listening_port(&proc.stderr()) {
                break port;
            }
            if let Some(status) = proc.try_exit() {
                panic!("wsgate exited ({status}) before listening; stderr:\n{}", proc.stderr());
            }
            assert!(start.elapsed() < STARTUP, "wsgate did not print its listening line; stderr:\n{}", proc.stderr());
            tokio::time::sleep(POLL).await;
        };
        // no_proxy: a proxy variable in the environment must not reroute loopback requests.
        let http = reqwest::Client::builder().no_proxy().build().expect("reqwest client");
        let pid = proc.pid;
        Gateway { proc, addr: SocketAddr::from(([127, 0, 0, 1], port)), pid, secret, http }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Everything the gateway has logged so far (stderr).
    pub fn logs(&self) -> String {
        self.proc.stderr()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(&format!("a log line containing {needle:?}"), STEP, || {
            found = self.logs().lines().find(|l| l.contains(needle)).map(str::to_owned);
            std::future::ready(found.is_some())
        })
        .await;
        found.expect("found by wait_until")
    }

    pub fn sigterm(&self) {
        self.proc.signal(libc::SIGTERM);
    }

    /// Kills the gateway with SIGKILL (no clean-up of any kind) and reaps it.
    pub async fn sigkill(&mut self) {
        self.proc.signal(libc::SIGKILL);
        let status = self.wait_exit(STEP).await;
        assert!(status.is_some(), "wsgate {} still running after SIGKILL", self.pid);
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout).await
    }

    /// Resident memory of the gateway process, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.http_url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` → (status, body as JSON; `Null` when the body is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        response_json(self.get(path).await).await
    }

    pub async fn metrics_text(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.expect("metrics body")
    }

    /// The value of one series, e.g. `wsgate_connections` or
    /// `wsgate_auth_failures_total{reason="expired"}`; panics if it is not exposed.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        metric_value(&text, series).unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }

    /// Waits until `series` equals `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        wait_until(&format!("{series} == {value}"), STEP, || async { self.metric(series).await == value }).await;
    }

    /// Waits until `/health` reports the Redis state `want` (`connecting`, `connected`, ...).
    pub async fn wait_redis_state(&self, want: &str) {
        let what = format!("{} /health to report Redis state {want:?}", self.addr);
        wait_until(&what, STEP, || async { self.get_json("/health").await.1["redis"]["state"] == want }).await;
    }

    /// Polls `/ws/stats` until `pred` holds; returns the stats that satisfied it.
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = Mutex::new(Value::Null);
        wait_until(&format!("{} /ws/stats to show {what}", self.addr), STEP, || async {
            let (status, stats) = self.get_json("/ws/stats").await;
            let ok = status == 200 && pred(&stats);
            *found.lock().unwrap() = stats;
            ok
        })
        .await;
        found.into_inner().unwrap()
    }
}

fn listening_port(logs: &str) -> Option<u16> {
    let rest = &logs[logs.find("listening on http://127.0.0.1:")? + "listening on http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One series' value in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, rest) = l.split_once(' ')?;
        (name == series).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

pub async fn response_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body = r.bytes().await.expect("response body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Asserts an error answer: `status`, and a JSON body `{"error": "<non-empty string>"}`.
pub fn assert_error(what: &str, got: &(u16, Value), status: u16) {
    assert_eq!(got.0, status, "{what}: status (body {})", got.1);
    let msg = got.1["error"].as_str().unwrap_or_else(|| panic!("{what}: no \"error\" string in {}", got.1));
    assert!(!msg.is_empty(), "{what}: empty error message");
}

// ---------------------------------------------------------------------------------------------
// Tokens (HS256)

pub fn token_with(secret: &str, claims: Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encode JWT")
}

/// A user token `{sub, exp: now + ttl_secs}` (a negative ttl gives an expired token).
pub fn user_token(secret: &str, sub: &str, ttl_secs: i64) -> String {
    token_with(secret, json!({"sub": sub, "exp": now_secs() as i64 + ttl_secs}))
}

/// A service token with `scope: "publish"`, valid for an hour.
pub fn publish_token(secret: &str) -> String {
    token_with(secret, json!({"sub": "test-publisher", "exp": now_secs() + 3600, "scope": "publish"}))
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client on a real WebSocket library. It answers pings whenever it is reading.
pub struct WsClient {
    pub ws: Ws,
    /// The `connected` frame (`Null` for a client adopted from a raw socket).
    pub connected: Value,
}

/// An upgrade the gateway refused.
#[derive(Debug)]
pub struct Rejected {
    pub status: u16,
    pub body: Value,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

/// An upgrade request for `path` (with its query) plus extra headers.
pub fn ws_request(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Request {
    let mut req = gw.ws_url(path).into_client_request().expect("ws request");
    for (k, v) in headers {
        req.headers_mut().insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    req
}

/// Connects; on success waits for the `connected` frame, which must come first.
pub async fn try_connect(req: Request) -> Result<WsClient, Rejected> {
    let (ws, _) = match within("WebSocket handshake", STEP, tokio_tungstenite::connect_async(req)).await {
        Ok(ok) => ok,
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            return Err(Rejected { status: resp.status().as_u16(), body, retry_after });
        }
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    };
    let mut client = WsClient { ws, connected: Value::Null };
    let first = client.next_json(STEP).await;
    assert_eq!(first["type"], "connected", "first frame must be `connected`, got {first}");
    client.connected = first;
    Ok(client)
}

/// Connects to `/ws/tasks?token=...` and returns once the `connected` frame is in.
pub async fn connect(gw: &Gateway, token: &str) -> WsClient {
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}"), &[]))
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {r:?}"))
}

/// Connects a user with a fresh hour-long token.
pub async fn connect_user(gw: &Gateway, sub: &str) -> WsClient {
    connect(gw, &user_token(&gw.secret, sub, 3600)).await
}

impl WsClient {
    /// The next message of any kind; panics on timeout, end of stream or error.
    pub async fn next_message(&mut self, timeout: Duration) -> Message {
        match within("a WebSocket message", timeout, self.ws.next()).await {
            Some(Ok(m)) => m,
            Some(Err(e)) => panic!("WebSocket error while waiting for a message: {e}"),
            None => panic!("WebSocket ended while waiting for a message"),
        }
    }

    /// The next text frame as JSON, skipping control frames; panics on a close frame.
    pub async fn next_json(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_message(deadline.saturating_duration_since(Instant::now())).await {
                Message::Text(t) => {
                    return serde_json::from_str(&t).unwrap_or_else(|e| panic!("text frame is not JSON ({e}): {t}"))
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a JSON text frame, got {other:?}"),
            }
        }
    }

    /// The next frame must be an event of type `kind`; returns it.
    pub async fn expect_event(&mut self, kind: &str) -> Value {
        let v = self.next_json(STEP).await;
        assert_eq!(v["type"], kind, "expected a {kind:?} event, got {v}");
        v
    }

    /// Reads until a close frame and returns its code, skipping everything before it.
    /// Panics if the connection ends without one or `timeout` passes.
    pub async fn expect_close(&mut self, timeout: Duration) -> u16 {
        within("a close frame", timeout, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                    Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                    None => panic!("connection ended without a close frame"),
                }
            }
        })
        .await
    }

    /// Keeps reading for `how_long` (so pings are answered) and fails on any data or close
    /// frame. Returns the number of pings the server sent meanwhile.
    pub async fn expect_quiet(&mut self, how_long: Duration) -> usize {
        let mut pings = 0;
        let deadline = tokio::time::Instant::now() + how_long;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return pings,
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Pong(_)))) => {}
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    pub async fn send(&mut self, m: Message) {
        within("sending a frame", STEP, self.ws.send(m)).await.expect("send frame");
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send(Message::text(v.to_string())).await;
    }

    /// The application-level ping must be answered with `{"type":"pong"}`.
    pub async fn assert_alive(&mut self) {
        self.send_json(&json!({"type": "ping"})).await;
        self.expect_event("pong").await;
    }

    /// Reads events up to and including the first of type `marker`; returns their types in
    /// arrival order.
    pub async fn types_until(&mut self, marker: &str) -> Vec<String> {
        let mut types = Vec::new();
        while types.last().map(String::as_str) != Some(marker) {
            let v = self.next_json(STEP).await;
            let kind = v["type"].as_str().unwrap_or_else(|| panic!("event without a type: {v}"));
            types.push(kind.to_owned());
        }
        types
    }

    /// Reads `n` events and returns their `data.seq` values in arrival order.
    pub async fn read_seqs(&mut self, n: usize) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(n);
        for _ in 0..n {
            let v = self.next_json(STEP).await;
            seqs.push(v["data"]["seq"].as_u64().unwrap_or_else(|| panic!("event without data.seq: {v}")));
        }
        seqs
    }
}

/// A client that does the upgrade by hand on a plain socket and then reads nothing (so it
/// answers no ping and lets its receive window fill), until the test adopts it as a [`WsClient`].
pub struct RawClient {
    pub stream: TcpStream,
    /// Bytes read past the end of the 101 response (the start of the first frames).
    leftover: Vec<u8>,
}

impl RawClient {
    /// Upgrades `/ws/tasks?token=...`. A small `recv_buffer` keeps the kernel from absorbing
    /// megabytes on the client's behalf, so back-pressure reaches the gateway sooner.
    pub async fn connect(gw: &Gateway, token: &str, recv_buffer: Option<u32>) -> RawClient {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        let mut stream = within("TCP connect", STEP, socket.connect(gw.addr)).await.expect("connect");
        let req = format!(
            "GET /ws/tasks?token={token} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            gw.addr
        );
        stream.write_all(req.as_bytes()).await.expect("write upgrade request");
        let (head, leftover) = read_head(&mut stream, Vec::new()).await;
        assert!(head.starts_with("HTTP/1.1 101"), "raw upgrade refused:\n{head}");
        RawClient { stream, leftover }
    }

    /// Starts reading: hands the socket to a WebSocket library. The first frame it yields is
    /// whatever the gateway sent first (normally `connected`).
    pub async fn into_ws(self) -> WsClient {
        let ws =
            WebSocketStream::from_partially_read(MaybeTlsStream::Plain(self.stream), self.leftover, Role::Client, None)
                .await;
        WsClient { ws, connected: Value::Null }
    }

    /// Reads (discarding) until the gateway drops the connection; panics if it does not
    /// within `timeout`.
    pub async fn expect_dropped(&mut self, timeout: Duration) {
        within("the gateway to drop the connection", timeout, async {
            let mut buf = [0u8; 4096];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 (for what reqwest hides: chunked bodies, one explicit keep-alive connection)

/// Reads up to and including the blank line ending a response head; returns the head and the
/// bytes read past it.
async fn read_head(stream: &mut TcpStream, mut buf: Vec<u8>) -> (String, Vec<u8>) {
    within("a response head", STEP, async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = buf.split_off(end + 4);
                return (String::from_utf8_lossy(&buf).into_owned(), rest);
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed before a full response head: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// One HTTP/1.1 connection driven by hand.
pub struct RawHttp {
    stream: TcpStream,
    buf: Vec<u8>,
}

pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Value,
}

impl RawHttp {
    pub async fn connect(gw: &Gateway) -> RawHttp {
        let stream = within("TCP connect", STEP, TcpStream::connect(gw.addr)).await.expect("connect");
        RawHttp { stream, buf: Vec::new() }
    }

    pub async fn send(&mut self, request: &[u8]) {
        self.stream.write_all(request).await.expect("write request");
    }

    /// Reads one response with a `Content-Length` body (what the gateway sends).
    pub async fn read_response(&mut self) -> RawResponse {
        let (head, mut rest) = read_head(&mut self.stream, std::mem::take(&mut self.buf)).await;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
        let len: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .map(|(_, v)| v.trim().parse().expect("numeric Content-Length"))
            .unwrap_or_else(|| panic!("response without Content-Length:\n{head}"));
        within("a response body", STEP, async {
            while rest.len() < len {
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "connection closed inside a response body");
                rest.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        self.buf = rest.split_off(len);
        RawResponse { status, head, body: serde_json::from_slice(&rest).unwrap_or(Value::Null) }
    }
}

/// A `POST /api/events` request as raw bytes, with `Content-Length`.
pub fn raw_publish_request(gw: &Gateway, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        gw.addr,
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Publishing

/// `POST /api/events` with optional bearer token and Content-Type, and raw body bytes.
pub async fn post_events_response(
    gw: &Gateway,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = gw.http().post(gw.http_url("/api/events")).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.expect("POST /api/events")
}

/// [`post_events_response`] → (status, response JSON).
pub async fn post_events(gw: &Gateway, token: Option<&str>, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    response_json(post_events_response(gw, token, content_type, body).await).await
}

/// Publishes a JSON body; returns (status, response JSON).
pub async fn publish(gw: &Gateway, token: &str, body: Value) -> (u16, Value) {
    post_events(gw, Some(token), Some("application/json"), serde_json::to_vec(&body).unwrap()).await
}

/// Publishes and insists on 202; returns the event id.
pub async fn publish_ok(gw: &Gateway, token: &str, body: Value) -> String {
    let (status, resp) = publish(gw, token, body).await;
    assert_eq!(status, 202, "publish answered {resp}");
    resp["id"].as_str().unwrap_or_else(|| panic!("202 without an id: {resp}")).to_owned()
}

/// Publishes `n` events one after another (each waits for its 202), the i-th with body
/// `make(i)`; returns their ids in order.
pub async fn publish_many(gw: &Gateway, token: &str, n: usize, make: impl Fn(usize) -> Value) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(publish_ok(gw, token, make(i)).await);
    }
    ids
}

/// `{"type": kind, "data": {"seq": i, "pad": <pad bytes>}}`: numbered events of a chosen size.
pub fn seq_event(kind: &str, i: usize, pad: usize) -> Value {
    json!({"type": kind, "data": {"seq": i, "pad": "x".repeat(pad)}})
}

/// Event ids are stream positions: `<ms>-<seq>`, two decimal numbers.
pub fn assert_event_id(id: &str) {
    let parts: Vec<&str> = id.split('-').collect();
    assert!(
        parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "id {id:?} is not <ms>-<seq>"
    );
}

/// `(ms, seq)` of an event id, for comparing ids.
pub fn event_position(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or_else(|| panic!("id {id:?} is not <ms>-<seq>"));
    (ms.parse().unwrap(), seq.parse().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A throwaway `redis-server` on a loopback port (never 6379), no persistence, its own `--dir`
/// (removed on drop), killed on drop. It can be killed and restarted on the same port.
pub struct RedisServer {
    /// `None` while killed.
    pub proc: Option<Process>,
    /// The plain (non-TLS) port.
    pub port: u16,
    args: Vec<String>,
    tls_port: Option<u16>,
    /// Its `--dir` (Cluster config files and the like), kept across restarts.
    dir: TempDir,
}

impl RedisServer {
    /// A plain server on a free port.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(free_port(), &[]).await
    }

    /// A server on `port` with `extra` arguments (`--requirepass pw`, `--user ...` ACL lines,
    /// `--cluster-enabled yes ...`, `--tls-port N --tls-cert-file ...`).
    pub async fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        assert_ne!(port, 6379, "never touch the default Redis port");
        let dir = TempDir::new("redis");
        let mut args: Vec<String> =
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .into_iter()
                .map(str::to_owned)
                .collect();
        args.extend(["--dir".to_owned(), dir.path().display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let tls_port = extra.iter().position(|a| *a == "--tls-port").map(|i| {
            let port = extra.get(i + 1).and_then(|p| p.parse().ok()).expect("--tls-port takes a port number");
            assert_ne!(port, 6379, "never touch the default Redis port");
            port
        });
        let mut server = RedisServer { proc: None, port, args, tls_port, dir };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server (no shutdown, no clean-up) and reaps it; the port is free again.
    pub fn kill(&mut self) {
        self.proc = None; // Process::drop: SIGKILL and wait
    }

    /// Starts the (killed) server again on the same port(s), with the same arguments and
    /// directory, and waits until it serves.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "redis-server on port {} is still running", self.port);
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.args);
        let proc = self.proc.insert(Process::spawn(cmd));
        let (port, tls_port) = (self.port, self.tls_port);
        let what = format!("redis-server on port {port} to answer PING (and to accept on TLS port {tls_port:?})");
        wait_until(&what, STEP, || {
            if let Some(status) = proc.try_exit() {
                panic!("redis-server exited ({status}) before serving; output:\n{}{}", proc.stdout(), proc.stderr());
            }
            async move {
                redis_answers(port).await
                    && match tls_port {
                        Some(p) => TcpStream::connect(("127.0.0.1", p)).await.is_ok(),
                        None => true,
                    }
            }
        })
        .await;
    }

    /// Runs `redis-cli` against the plain port with `args`; returns its output, trimmed (no
    /// tty, so replies are raw: `1`, not `(integer) 1`).
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args);
        run_ok(cmd).await.trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Before `dir` goes: the server must not write into a removed directory.
        self.kill();
    }
}

/// Whether a Redis server answers on `port`: `+PONG`, or `-NOAUTH` when it wants a password.
async fn redis_answers(port: u16) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n") {
            let mut chunk = [0u8; 64];
            let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            reply.extend_from_slice(&chunk[..n]);
        }
        Some(reply.starts_with(b"+PONG\r\n") || reply.starts_with(b"-NOAUTH "))
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().unwrap_or(false)
}

/// The files of a TLS set-up made with openssl: a throwaway CA and a server certificate for
/// 127.0.0.1 / localhost signed by it.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes [`TlsFiles`] (and openssl's by-products) into `dir`.
pub async fn make_tls_files(dir: &Path) -> TlsFiles {
    // Arguments split on whitespace: none of them contains any.
    let openssl = |args: &str| {
        let mut cmd = Command::new("openssl");
        cmd.args(args.split_whitespace()).current_dir(dir);
        run_ok(cmd)
    };
    openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=wsgate-test-ca").await;
    openssl("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1").await;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write ext.cnf");
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf",
    )
    .await;
    TlsFiles { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") }
}

// ---------------------------------------------------------------------------------------------
// History, resume and idempotent publishing

/// An event id is a stream position `<ms>-<seq>` (two decimal u64); returns `(ms, seq)`, which
/// orders ids. Panics on anything else.
pub fn stream_id(id: &str) -> (u64, u64) {
    let parsed = id.split_once('-').and_then(|(ms, seq)| {
        let num = |p: &str| p.bytes().all(|b| b.is_ascii_digit()).then(|| p.parse::<u64>().ok()).flatten();
        Some((num(ms)?, num(seq)?))
    });
    parsed.unwrap_or_else(|| panic!("id {id:?} is not a stream id <ms>-<seq>"))
}

/// Connects user `sub` (fresh hour-long token) with `since=<since>`; returns once the
/// `connected` frame is in. `since` goes into the URL as is (ids and the test's malformed
/// values need no escaping).
pub async fn connect_since(gw: &Gateway, sub: &str, since: &str) -> WsClient {
    let token = user_token(&gw.secret, sub, 3600);
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}&since={since}"), &[]))
        .await
        .unwrap_or_else(|r| panic!("upgrade with since={since} refused: {r:?}"))
}

/// A publish answer with its headers.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap_or_else(|_| panic!("header {name} is not visible ASCII")))
    }

    /// The `id` of a 202 answer; panics on anything else.
    pub fn id(&self) -> String {
        assert_eq!(self.status, 202, "publish answered {}", self.body);
        self.body["id"].as_str().unwrap_or_else(|| panic!("202 without an id: {}", self.body)).to_owned()
    }

    /// The `error` string of an error answer; panics if there is none.
    pub fn error(&self) -> &str {
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("status {} without an error string: {}", self.status, self.body))
    }
}

/// `POST /api/events` with a JSON body and extra headers (values as raw bytes, so a test can
/// send what a `&str` cannot hold). Bounded by [`STEP`].
pub async fn publish_with_headers(gw: &Gateway, token: &str, body: &Value, headers: &[(&str, &[u8])]) -> Reply {
    let mut req = gw
        .http()
        .post(gw.http_url("/api/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    for (k, v) in headers {
        let value = reqwest::header::HeaderValue::from_bytes(v).unwrap_or_else(|e| panic!("header value {v:?}: {e}"));
        req = req.header(*k, value);
    }
    let r = within("POST /api/events", STEP, req.send()).await.expect("POST /api/events");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let bytes = within("the publish answer's body", STEP, r.bytes()).await.expect("response body");
    Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers }
}

/// Publishes with an `Idempotency-Key`.
pub async fn publish_idempotent(gw: &Gateway, token: &str, key: &str, body: &Value) -> Reply {
    publish_with_headers(gw, token, body, &[("idempotency-key", key.as_bytes())]).await
}

impl WsClient {
    /// The `recovered` field of the `connected` frame (`None` when absent).
    pub fn recovered(&self) -> Option<&Value> {
        self.connected.get("recovered")
    }

    /// The next text frame as JSON (skipping control frames), or `None` once the connection
    /// has ended (close frame, end of stream or error: what a client sees when its instance
    /// dies). Panics on timeout.
    pub async fn next_json_or_end(&mut self, timeout: Duration) -> Option<Value> {
        within("a WebSocket frame or the end of the connection", timeout, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Some(
                            serde_json::from_str(&t).unwrap_or_else(|e| panic!("text frame is not JSON ({e}): {t}")),
                        )
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                    Some(Ok(other)) => panic!("expected a JSON text frame, got {other:?}"),
                }
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Channels and presence

/// A user token `{sub, exp: now + 1h, channels}`: the `channels` claim lists the names and
/// prefix patterns (`team:*`) the user may join.
pub fn channel_token(secret: &str, sub: &str, channels: &[&str]) -> String {
    token_with(secret, json!({"sub": sub, "exp": now_secs() + 3600, "channels": channels}))
}

/// The Redis pub/sub channel that carries a wsgate channel's events (default key prefix):
/// `websocket:ch:{<name>}`, braces included (a Cluster hash tag).
pub fn redis_channel(name: &str) -> String {
    format!("websocket:ch:{{{name}}}")
}

/// `{"type": kind, "channel": channel}`: a publish body for one channel.
pub fn channel_event(channel: &str, kind: &str) -> Value {
    json!({"type": kind, "channel": channel})
}

/// [`seq_event`] addressed to `channel`.
pub fn channel_seq_event(channel: &str, kind: &str, i: usize) -> Value {
    json!({"type": kind, "channel": channel, "data": {"seq": i}})
}

/// Connects with `channels=<channels>` (a comma-separated list, put into the URL as given:
/// callers percent-encode what needs it) and returns once `connected` is in; the answers for
/// the channels follow it.
pub async fn connect_channels(gw: &Gateway, token: &str, channels: &str) -> WsClient {
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}&channels={channels}"), &[]))
        .await
        .unwrap_or_else(|r| panic!("upgrade with channels={channels} refused: {r:?}"))
}

/// [`connect_channels`] resuming from `since`.
pub async fn connect_channels_since(gw: &Gateway, token: &str, channels: &str, since: &str) -> WsClient {
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}&channels={channels}&since={since}"), &[]))
        .await
        .unwrap_or_else(|r| panic!("upgrade with channels={channels}&since={since} refused: {r:?}"))
}

/// `GET /api/channels/{name}/presence` with an optional bearer token → (status, JSON body).
/// `name` goes into the path as given.
pub async fn presence(gw: &Gateway, token: Option<&str>, name: &str) -> (u16, Value) {
    let path = format!("/api/channels/{name}/presence");
    let mut req = gw.http().get(gw.http_url(&path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = within(&format!("GET {path}"), STEP, req.send()).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    within("the presence body", STEP, response_json(r)).await
}

/// The presence answer a channel with these `(user, connections)` entries must give.
pub fn presence_body(name: &str, users: &[(&str, u64)]) -> Value {
    let users: Vec<Value> = users.iter().map(|(u, n)| json!({"user": u, "connections": n})).collect();
    json!({"channel": name, "users": users})
}

/// Polls the presence endpoint until it answers 200 with exactly `want`; returns how long that
/// took. Panics with the last answer after `timeout`.
pub async fn wait_presence(gw: &Gateway, token: &str, name: &str, want: &Value, timeout: Duration) -> Duration {
    let last = Mutex::new(Value::Null);
    let start = Instant::now();
    let ok = tokio::time::timeout(timeout, async {
        loop {
            let (status, body) = presence(gw, Some(token), name).await;
            let done = status == 200 && &body == want;
            *last.lock().unwrap() = json!({"status": status, "body": body});
            if done {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "timed out after {timeout:?} waiting for presence of {name} on {} to be {want}; last answer {}",
        gw.addr,
        last.lock().unwrap()
    );
    start.elapsed()
}

impl WsClient {
    /// Sends `{"type": "subscribe", "channel": channel}` and returns the next frame (the answer).
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send_json(&json!({"type": "subscribe", "channel": channel})).await;
        self.next_json(STEP).await
    }

    /// Sends `{"type": "unsubscribe", "channel": channel}` and returns the next frame.
    pub async fn unsubscribe(&mut self, channel: &str) -> Value {
        self.send_json(&json!({"type": "unsubscribe", "channel": channel})).await;
        self.next_json(STEP).await
    }

    /// Subscribes and insists on `{"type": "subscribed", "channel": channel}`.
    pub async fn expect_subscribed(&mut self, channel: &str) {
        let v = self.subscribe(channel).await;
        assert_eq!(v, json!({"type": "subscribed", "channel": channel}), "subscribe {channel:?}");
    }

    /// Unsubscribes and insists on `{"type": "unsubscribed", "channel": channel}`.
    pub async fn expect_unsubscribed(&mut self, channel: &str) {
        let v = self.unsubscribe(channel).await;
        assert_eq!(v, json!({"type": "unsubscribed", "channel": channel}), "unsubscribe {channel:?}");
    }

    /// The next frame must be the answer `subscribed` for `channel` (e.g. after `channels=`).
    pub async fn expect_subscribed_frame(&mut self, channel: &str) {
        let v = self.next_json(STEP).await;
        assert_eq!(v, json!({"type": "subscribed", "channel": channel}), "answer for {channel:?}");
    }

    /// `v` must be a channel refusal `{"type": "error", "channel": channel, "error": reason,
    /// "message": "<non-empty>"}`.
    pub fn assert_refusal(v: &Value, channel: &str, reason: &str) {
        assert_eq!(v["type"], "error", "expected a refusal of {channel:?}, got {v}");
        assert_eq!(v["error"], reason, "refusal of {channel:?}: {v}");
        assert_eq!(v["channel"], channel, "a refusal names the channel as sent: {v}");
        let msg = v["message"].as_str().unwrap_or_else(|| panic!("refusal without a message string: {v}"));
        assert!(!msg.is_empty(), "refusal with an empty message: {v}");
    }

    /// Subscribes and insists on a refusal with `reason`.
    pub async fn expect_refused(&mut self, channel: &str, reason: &str) {
        let v = self.subscribe(channel).await;
        WsClient::assert_refusal(&v, channel, reason);
    }
}

/// `PUBSUB NUMSUB <channel>` on one server: how many connections subscribe `channel`.
pub async fn numsub(redis: &RedisServer, channel: &str) -> u64 {
    pubsub_count(redis, "NUMSUB", channel).await
}

async fn pubsub_count(redis: &RedisServer, which: &str, channel: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", which, channel]).await;
    out.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB {which} {channel} answered {out:?}"))
}

/// Three (or `masters`) `redis-server`s in Cluster mode, their slots assigned, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// `redis-cluster://host:port?node=host:port&node=...`, every node named.
    pub url: String,
}

impl RedisCluster {
    pub async fn start(masters: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..masters {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            nodes.push(
                RedisServer::start_with(port, &["--cluster-enabled", "yes", "--cluster-config-file", &conf]).await,
            );
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        nodes[0].cli(&create).await;
        // Every node must agree the slots are covered before a client is let loose on them.
        for n in &nodes {
            wait_until(&format!("cluster_state:ok on port {}", n.port), STEP, || async {
                n.cli(&["CLUSTER", "INFO"]).await.contains("cluster_state:ok")
            })
            .await;
        }
        let rest: Vec<String> = addrs[1..].iter().map(|a| format!("node={a}")).collect();
        let url = format!("redis-cluster://{}?{}", addrs[0], rest.join("&"));
        RedisCluster { nodes, url }
    }

    /// `PUBSUB SHARDNUMSUB <channel>` summed over the nodes (only the slot's owner counts
    /// sharded subscribers; the others answer 0).
    pub async fn shard_numsub(&self, channel: &str) -> u64 {
        let mut sum = 0;
        for n in &self.nodes {
            sum += pubsub_count(n, "SHARDNUMSUB", channel).await;
        }
        sum
    }

    /// `PUBSUB NUMSUB <channel>` (classic pub/sub) summed over the nodes.
    pub async fn numsub(&self, channel: &str) -> u64 {
        let mut sum = 0;
        for n in &self.nodes {
            sum += pubsub_count(n, "NUMSUB", channel).await;
        }
        sum
    }
}

impl WsClient {
    /// After a resume with `channels=`: reads until `n` events of type `kind` and at least one
    /// `subscribed` answer are in (the answers may come before or after the replayed events);
    /// returns (answers, events). Any other frame fails the test.
    pub async fn read_resume(&mut self, kind: &str, n: usize) -> (Vec<Value>, Vec<Value>) {
        let (mut answers, mut events) = (Vec::new(), Vec::new());
        while events.len() < n || answers.is_empty() {
            let v = self.next_json(STEP).await;
            match v["type"].as_str() {
                Some("subscribed") => answers.push(v),
                Some(k) if k == kind => events.push(v),
                _ => panic!("unexpected frame {v}; so far events {events:?}, answers {answers:?}"),
            }
        }
        (answers, events)
    }
}

/// `n` gateways sharing one random JWT secret, named gw0, gw1, ..., each with `env` (later
/// entries win). Does not wait for Redis: see [`wait_all_connected`].
pub async fn start_fleet(n: usize, env: &[(&str, &str)]) -> Vec<Gateway> {
    let secret = random_hex();
    let ids: Vec<String> = (0..n).map(|i| format!("gw{i}")).collect();
    futures_util::future::join_all(ids.iter().map(|id| {
        let mut all = vec![("JWT_SECRET", secret.as_str()), ("INSTANCE_ID", id.as_str())];
        all.extend_from_slice(env);
        async move { Gateway::start(&all).await }
    }))
    .await
}

/// Waits until every gateway reports Redis `connected`.
pub async fn wait_all_connected(gws: &[Gateway]) {
    for g in gws {
        g.wait_redis_state("connected").await;
    }
}

/// Every gateway's logs, labelled, for failure messages.
pub fn fleet_logs(gws: &[Gateway]) -> String {
    gws.iter().enumerate().map(|(i, g)| format!("--- gw{i} ---\n{}", g.logs())).collect()
}
