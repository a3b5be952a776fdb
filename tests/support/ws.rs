//! WebSocket clients: [`WsClient`] (a real WebSocket library, with the reads and checks the
//! tests make), [`RawClient`] (an upgrade by hand that then reads nothing) and the ways to
//! connect (plain, resuming with `since=`, with `channels=`).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::http::read_head;
use super::{user_token, within, Gateway, STEP};

// ---------------------------------------------------------------------------------------------
// Connecting

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

// ---------------------------------------------------------------------------------------------
// Reading and sending

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

// ---------------------------------------------------------------------------------------------
// "Nothing (else) arrives"

/// How long "nothing (more) arrives" listens, once a marker event (or the last of the events
/// that must arrive, published after the ones that must not) has proved the pipe flows: long
/// enough, on two loaded cores, for a copy already on its way to show up.
pub const QUIET_WINDOW: Duration = Duration::from_millis(500);

/// Every client listens for `how_long` at the same time and must get nothing but pings.
pub async fn expect_all_quiet(clients: &mut [&mut WsClient], how_long: Duration) {
    futures_util::future::join_all(clients.iter_mut().map(|c| c.expect_quiet(how_long))).await;
}

/// "Nothing (else) arrives", made to mean something: publishes a broadcast `{"type":
/// "marker"}` through `gw` after whatever must not arrive (again); the next frame of every
/// client must be that marker (events reach a client in stream order, so anything wrongly on its
/// way before it comes first), and then nothing for [`QUIET_WINDOW`].
pub async fn expect_only_marker(gw: &Gateway, clients: &mut [&mut WsClient]) {
    let id = super::publish_ok(gw, &super::publish_token(&gw.secret), json!({"type": "marker"})).await;
    for c in clients.iter_mut() {
        let v = c.next_json(STEP).await;
        assert_eq!((&v["type"], &v["id"]), (&json!("marker"), &json!(id)), "expected only the marker, got {v}");
    }
    expect_all_quiet(clients, QUIET_WINDOW).await;
}

// ---------------------------------------------------------------------------------------------
// A client that reads nothing

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
// History and resume

/// Connects user `sub` (fresh hour-long token) with `since=<since>`; returns once the
/// `connected` frame is in. `since` goes into the URL as is (ids and the test's malformed
/// values need no escaping).
pub async fn connect_since(gw: &Gateway, sub: &str, since: &str) -> WsClient {
    let token = user_token(&gw.secret, sub, 3600);
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}&since={since}"), &[]))
        .await
        .unwrap_or_else(|r| panic!("upgrade with since={since} refused: {r:?}"))
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
// Channels

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

// ---------------------------------------------------------------------------------------------
// Frames by hand (for what a WebSocket library refuses to send)

/// One WebSocket frame as the server sent it (a server never masks).
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;

    /// The payload of a text frame as JSON; panics on any other frame.
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, RawFrame::TEXT, "expected a text frame, got {self:?}");
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("text frame is not JSON ({e}): {}", String::from_utf8_lossy(&self.payload)))
    }

    /// `(code, reason)` of a close frame; panics on any other frame or a close frame without a code.
    pub fn close(&self) -> (u16, String) {
        assert_eq!(self.opcode, RawFrame::CLOSE, "expected a close frame, got {self:?}");
        assert!(self.payload.len() >= 2, "close frame without a code: {self:?}");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let reason = String::from_utf8(self.payload[2..].to_vec()).expect("close reason is UTF-8");
        (code, reason)
    }
}

/// A client frame by hand. `first` is the first byte as sent (FIN `0x80`, RSV1 `0x40`, RSV2
/// `0x20`, RSV3 `0x10`, and the opcode); `mask: None` sends the frame unmasked.
pub fn raw_frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masking key for [`raw_frame`] (any key will do; a fixed one keeps failures repeatable).
pub const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

impl RawClient {
    /// Writes `bytes` to the socket as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within("writing raw bytes", STEP, self.stream.write_all(bytes)).await.expect("write raw bytes");
    }

    /// The next frame the server sent, or `None` once the connection has ended (EOF or reset)
    /// before a whole frame came. Panics after `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        within("a WebSocket frame", timeout, async {
            loop {
                if let Some((frame, used)) = parse_server_frame(&self.leftover) {
                    self.leftover.drain(..used);
                    return Some(frame);
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.leftover.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads frames up to the server's close frame and returns its `(code, reason)`; the frames
    /// before it must be text frames (events, `connected`) or pings. Panics if the connection
    /// ends without a close frame.
    pub async fn expect_close_frame(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Some(f) if f.opcode == RawFrame::CLOSE => return f.close(),
                Some(f) if f.opcode == RawFrame::TEXT || f.opcode == RawFrame::PING => {}
                Some(f) => panic!("expected a close frame, got {f:?}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

/// One whole server frame at the start of `buf`, and its length in bytes.
fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    assert_eq!(b1 & 0x80, 0, "the server sent a masked frame: {buf:?}");
    let (len, mut at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((RawFrame { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0x0f, payload }, at))
}
