//! Protocol edge cases, against the real binary, with frames and requests written by hand
//! where a WebSocket or HTTP library would refuse to send them. Each test asserts the exact
//! answer: the close code and reason (RFC 6455 §7.4.1: 1002 for a protocol error, 1007 for
//! a text frame that is not UTF-8), or the HTTP status and JSON body.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
const CONTINUATION: u8 = 0x0;

/// A raw client of user `alice`, its `connected` frame read.
async fn raw_client(gw: &Gateway) -> RawClient {
    let mut c = RawClient::connect(gw, &user_token(&gw.secret, "alice", 3600), None).await;
    let first = c.next_frame(STEP).await.expect("the connected frame");
    assert_eq!(first.json()["type"], "connected", "first frame: {first:?}");
    c
}

/// Sends `frame` and insists that the gateway closes with exactly `(code, reason)`, counted in
/// `wsgate_disconnects_total{reason}`, and then ends the connection once we answer the close.
async fn expect_failed_with(frame: &[u8], code: u16, reason: &str) {
    let gw = Gateway::start(&[]).await;
    let mut c = raw_client(&gw).await;
    c.send_raw(frame).await;
    assert_eq!(c.expect_close_frame(STEP).await, (code, reason.to_owned()), "answer to {frame:02x?}");
    // The closing handshake: our close frame, then the server closes the TCP connection.
    c.send_raw(&raw_frame(FIN | RawFrame::CLOSE, MASK, &code.to_be_bytes())).await;
    assert_eq!(c.next_frame(STEP).await, None, "nothing after the close frame; the connection ends");
    gw.wait_metric(&format!("wsgate_disconnects_total{{reason=\"{reason}\"}}"), 1.0).await;
    gw.wait_metric("wsgate_connections", 0.0).await;
}

// ---------------------------------------------------------------------------------------------
// Frames

#[tokio::test]
async fn a_binary_frame_gets_an_unsupported_error_frame_and_the_connection_stays_open() {
    let gw = Gateway::start(&[]).await;
    let mut c = raw_client(&gw).await;
    c.send_raw(&raw_frame(FIN | RawFrame::BINARY, MASK, b"\x00\x01binary")).await;
    let reply = c.next_frame(STEP).await.expect("an answer to the binary frame");
    assert_eq!(
        reply.json(),
        json!({"type": "error", "error": "unsupported", "message": "binary frames are not supported; send JSON text"})
    );
    // Still served: a ping is answered, and a published event arrives.
    c.send_raw(&raw_frame(FIN | RawFrame::TEXT, MASK, br#"{"type":"ping"}"#)).await;
    assert_eq!(c.next_frame(STEP).await.expect("pong").json(), json!({"type": "pong"}));
    publish_ok(&gw, &publish_token(&gw.secret), json!({"type": "after-binary"})).await;
    assert_eq!(c.next_frame(STEP).await.expect("the event").json()["type"], "after-binary");
    assert_eq!(gw.metric("wsgate_connections").await, 1.0);
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    // 0xC3 0x28 is an invalid two-byte sequence.
    expect_failed_with(&raw_frame(FIN | RawFrame::TEXT, MASK, b"{\"type\":\"\xc3\x28\"}"), 1007, "invalid_payload")
        .await;
}

#[tokio::test]
async fn invalid_utf8_across_the_fragments_of_a_text_message_closes_1007() {
    // Each fragment on its own is not text; the whole message is checked: here it ends inside
    // a three-byte sequence (0xE2 0x82 of the euro sign, without its 0xAC).
    let mut bytes = raw_frame(RawFrame::TEXT, MASK, b"{\"type\":\"ping\",\"x\":\"\xe2");
    bytes.extend(raw_frame(FIN | CONTINUATION, MASK, b"\x82\"}"));
    expect_failed_with(&bytes, 1007, "invalid_payload").await;
}

#[tokio::test]
async fn each_reserved_bit_closes_1002() {
    for rsv in [RSV1, RSV2, RSV3] {
        expect_failed_with(&raw_frame(FIN | rsv | RawFrame::TEXT, MASK, br#"{"type":"ping"}"#), 1002, "protocol_error")
            .await;
    }
}

#[tokio::test]
async fn a_fragmented_ping_closes_1002() {
    expect_failed_with(&raw_frame(RawFrame::PING, MASK, b"half a ping"), 1002, "protocol_error").await;
}

#[tokio::test]
async fn a_continuation_frame_without_a_start_closes_1002() {
    expect_failed_with(&raw_frame(FIN | CONTINUATION, MASK, br#"{"type":"ping"}"#), 1002, "protocol_error").await;
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_1002() {
    expect_failed_with(&raw_frame(FIN | RawFrame::TEXT, None, br#"{"type":"ping"}"#), 1002, "protocol_error").await;
}

#[tokio::test]
async fn a_reserved_opcode_closes_1002() {
    expect_failed_with(&raw_frame(FIN | 0x3, MASK, b"?"), 1002, "protocol_error").await;
}

// ---------------------------------------------------------------------------------------------
// The upgrade request

/// Writes `request` on a fresh connection and reads everything until the server closes it.
async fn exchange(gw: &Gateway, request: &[u8]) -> String {
    let mut s = within("TCP connect", STEP, TcpStream::connect(gw.addr)).await.expect("connect");
    s.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    within("the server to answer and close the connection", STEP, s.read_to_end(&mut out)).await.expect("read answer");
    String::from_utf8(out).expect("an HTTP answer is text here")
}

/// `(status line, headers lowercased, body as JSON)` of one whole response.
fn parse_response(text: &str) -> (String, String, Value) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let status = head.lines().next().expect("status line").to_owned();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not one JSON value ({e}): {text:?}"));
    (status, head.to_ascii_lowercase(), body)
}

fn upgrade_request(gw: &Gateway, version: &str, ws_version: &str) -> String {
    format!(
        "GET /ws/tasks?token={} {version}\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: {ws_version}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        user_token(&gw.secret, "alice", 3600),
        gw.addr
    )
}

#[tokio::test]
async fn an_upgrade_with_sec_websocket_version_8_gets_426_naming_version_13() {
    let gw = Gateway::start(&[]).await;
    // Connection: close so that the server ends the exchange after its answer.
    let req = upgrade_request(&gw, "HTTP/1.1", "8").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let (status, head, body) = parse_response(&exchange(&gw, req.as_bytes()).await);
    assert_eq!(status, "HTTP/1.1 426 Upgrade Required");
    // RFC 6455 §4.4: the versions the server understands.
    assert!(head.contains("\r\nsec-websocket-version: 13\r\n"), "{head}");
    assert_eq!(body, json!({"error": "unsupported Sec-WebSocket-Version; use 13"}));
    assert_eq!(gw.metric("wsgate_connections").await, 0.0);
}

#[tokio::test]
async fn http_1_0_get_live_is_answered_then_the_connection_closes() {
    let gw = Gateway::start(&[]).await;
    let text = exchange(&gw, b"GET /live HTTP/1.0\r\n\r\n").await;
    let (status, head, body) = parse_response(&text);
    // hyper answers in the request's version; without keep-alive, 1.0 closes after one answer.
    assert_eq!(status, "HTTP/1.0 200 OK", "{text}");
    assert!(head.contains("\r\ncontent-type: application/json"), "{head}");
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn an_http_1_0_upgrade_attempt_is_refused_with_a_json_error() {
    // RFC 6455 §4.1: the opening handshake is HTTP/1.1 or later; HTTP/1.0 has no Upgrade.
    let gw = Gateway::start(&[]).await;
    let text = exchange(&gw, upgrade_request(&gw, "HTTP/1.0", "13").as_bytes()).await;
    let (status, _, body) = parse_response(&text);
    assert_eq!(status, "HTTP/1.0 400 Bad Request", "{text}");
    assert_eq!(body, json!({"error": "a WebSocket upgrade needs HTTP/1.1"}));
    assert_eq!(gw.metric("wsgate_connections").await, 0.0);
    assert_eq!(gw.metric("wsgate_connections_opened_total").await, 0.0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let gw = Gateway::start(&[]).await;
    let mut c = connect_user(&gw, "alice").await;
    let token = publish_token(&gw.secret);
    let host = gw.addr;
    let mut all =
        format!("GET /live HTTP/1.1\r\nHost: {host}\r\n\r\nGET /ready HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    all.extend(raw_publish_request(&gw, &token, r#"{"type":"pipelined","data":7}"#));
    all.extend(format!("GET /nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes());
    let mut http = RawHttp::connect(&gw).await;
    // One write: every request is in the server's buffer before it answers the first.
    http.send(&all).await;
    let live = http.read_response().await;
    assert_eq!((live.status, &live.body), (200, &json!({"status": "ok"})));
    let ready = http.read_response().await;
    assert_eq!((ready.status, &ready.body), (200, &json!({"status": "ready"})));
    let published = http.read_response().await;
    assert_eq!(published.status, 202, "{}", published.body);
    let id = published.body["id"].as_str().unwrap_or_else(|| panic!("202 without an id: {}", published.body));
    assert_eq!(published.body, json!({"id": id}));
    let missing = http.read_response().await;
    assert_eq!((missing.status, &missing.body), (404, &json!({"error": "no such endpoint: /nope"})));
    let event = c.expect_event("pipelined").await;
    assert_eq!((event["id"].as_str(), &event["data"]), (Some(id), &json!(7)));
    c.expect_quiet(Duration::from_millis(500)).await;
}
