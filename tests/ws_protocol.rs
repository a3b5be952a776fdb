//! The socket-level protocol: JSON ping → pong, WebSocket ping → pong frame, an oversized
//! inbound message → 1009, and the server's own pings: a peer that never answers is dropped,
//! one that keeps reading stays.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn json_ping_gets_json_pong() {
    let gw = Gateway::start(&[]).await;
    let mut c = connect_user(&gw, "alice").await;
    for _ in 0..3 {
        c.send_json(&json!({"type": "ping"})).await;
        assert_eq!(c.next_json(STEP).await, json!({"type": "pong"}));
    }
}

#[tokio::test]
async fn websocket_ping_frame_gets_a_pong_frame_with_its_payload() {
    let gw = Gateway::start(&[]).await;
    let mut c = connect_user(&gw, "alice").await;
    c.send(Message::Ping(b"are you there".to_vec().into())).await;
    match c.next_message(STEP).await {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected a pong frame, got {other:?}"),
    }
}

#[tokio::test]
async fn an_inbound_message_over_max_message_bytes_closes_1009() {
    let gw = Gateway::start(&[("MAX_MESSAGE_BYTES", "1024")]).await;
    let mut c = connect_user(&gw, "alice").await;
    // Just under the limit is served normally (extra fields on a ping are ignored).
    c.send_json(&json!({"type": "ping", "pad": "x".repeat(900)})).await;
    c.expect_event("pong").await;

    c.send_json(&json!({"type": "ping", "pad": "x".repeat(2000)})).await;
    assert_eq!(c.expect_close(STEP).await, 1009);
    gw.wait_metric("wsgate_disconnects_total{reason=\"message_too_big\"}", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_pings_is_dropped_and_a_reading_one_stays() {
    // Dropped after PING_INTERVAL_MS + PONG_TIMEOUT_MS = 600 ms of silence.
    let gw = Gateway::start(&[("PING_INTERVAL_MS", "300"), ("PONG_TIMEOUT_MS", "300")]).await;
    let mut silent = RawClient::connect(&gw, &user_token(&gw.secret, "silent", 3600), None).await;
    let started = Instant::now();
    let mut reading = connect_user(&gw, "reading").await;

    // The reading client does nothing but read (its library answers pings) for well past the
    // point where the silent one is dropped.
    let (pings, ()) = tokio::join!(reading.expect_quiet(Duration::from_millis(2000)), async {
        silent.expect_dropped(Duration::from_secs(5)).await;
        let after = started.elapsed();
        assert!(after >= Duration::from_millis(550), "dropped after {after:?}, before interval + timeout");
    });
    assert!(pings >= 2, "the server should ping an idle client every 300 ms; saw {pings} pings in 2 s");
    reading.assert_alive().await;
    assert_eq!(gw.metric("wsgate_disconnects_total{reason=\"ping_timeout\"}").await, 1.0);
    assert_eq!(gw.metric("wsgate_connections").await, 1.0);
}
