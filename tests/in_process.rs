//! The library's server in this process, beside the subprocess tests: `app::run` on an
//! ephemeral listener with a shutdown future the test resolves (mini-redis style), so start-up,
//! delivery and the drain are driven without signals.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_the_injected_shutdown_then_drains() {
    let secret = random_hex();
    let cfg = wsgate::config::Config::for_tests(&secret);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(wsgate::app::run(cfg, listener, None, async {
        let _ = stopped.await;
    }));

    let url = format!("ws://{addr}/ws/tasks?token={}", user_token(&secret, "alice", 3600));
    let (mut ws, _) = within("the handshake", STEP, tokio_tungstenite::connect_async(url)).await.expect("upgrade");
    let hello = next_text(&mut ws).await;
    assert_eq!((&hello["type"], &hello["user"]), (&json!("connected"), &json!("alice")), "{hello}");

    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{addr}/api/events"))
        .bearer_auth(publish_token(&secret))
        .json(&json!({"type": "in.process", "data": {"n": 1}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 202);
    let event = next_text(&mut ws).await;
    assert_eq!((&event["type"], &event["data"]), (&json!("in.process"), &json!({"n": 1})), "{event}");

    // The shutdown the test injects: the socket is closed with 1001 and `run` returns Ok.
    stop.send(()).expect("server still running");
    let close = within("the close frame", STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close, Some(1001));
    let _ = ws.close(None).await;
    let done = within("run() to return", STEP, server).await.expect("server task");
    assert!(done.is_ok(), "{done:?}");
    // Nothing listens any more.
    assert!(tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_or(true, |r| r.is_err()));
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    within("a text frame", STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break serde_json::from_str(&t).expect("JSON"),
                Some(Ok(_)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
}
