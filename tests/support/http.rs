//! HTTP against the gateway: answers as JSON, a hand-driven HTTP/1.1 connection ([`RawHttp`]),
//! `POST /api/events` in its forms (plain, raw, with headers, idempotent: [`Reply`]), the
//! bodies and ids of events, and the presence endpoint.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{within, Gateway, POLL, STEP};

// ---------------------------------------------------------------------------------------------
// Answers

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
// Raw HTTP/1.1 (for what reqwest hides: chunked bodies, one explicit keep-alive connection)

/// Reads up to and including the blank line ending a response head; returns the head and the
/// bytes read past it.
pub(super) async fn read_head(stream: &mut TcpStream, mut buf: Vec<u8>) -> (String, Vec<u8>) {
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

/// `{"type": kind, "channel": channel}`: a publish body for one channel.
pub fn channel_event(channel: &str, kind: &str) -> Value {
    json!({"type": kind, "channel": channel})
}

/// [`seq_event`] addressed to `channel`.
pub fn channel_seq_event(channel: &str, kind: &str, i: usize) -> Value {
    json!({"type": kind, "channel": channel, "data": {"seq": i}})
}

// ---------------------------------------------------------------------------------------------
// Event ids

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

/// An event id is a stream position `<ms>-<seq>` (two decimal u64); returns `(ms, seq)`, which
/// orders ids. Panics on anything else.
pub fn stream_id(id: &str) -> (u64, u64) {
    let parsed = id.split_once('-').and_then(|(ms, seq)| {
        let num = |p: &str| p.bytes().all(|b| b.is_ascii_digit()).then(|| p.parse::<u64>().ok()).flatten();
        Some((num(ms)?, num(seq)?))
    });
    parsed.unwrap_or_else(|| panic!("id {id:?} is not a stream id <ms>-<seq>"))
}

// ---------------------------------------------------------------------------------------------
// Publishing with headers (idempotency keys)

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

// ---------------------------------------------------------------------------------------------
// Presence

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
