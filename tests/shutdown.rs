//! SIGTERM: the instance stops taking clients (`/ready` 503, upgrades 503), closes every socket
//! with 1001 and exits 0 within the drain timeout, even if a client never answers the close.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use support::*;

/// Slack on top of DRAIN_TIMEOUT_MS for the HTTP grace period and process exit.
const MARGIN: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_with_1001_and_exits_0() {
    let mut gw = Gateway::start(&[("DRAIN_TIMEOUT_MS", "5000")]).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(connect_user(&gw, &format!("u{i}")).await);
    }
    gw.sigterm();
    let codes = join_all(clients.iter_mut().map(|c| c.expect_close(STEP))).await;
    assert_eq!(codes, [1001; 5]);
    let status = gw.wait_exit(Duration::from_millis(5000) + MARGIN).await.expect("exit within the drain timeout");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_ready_and_upgrades_answer_503() {
    // A client that does not answer the close keeps the instance draining long enough to look.
    let mut gw = Gateway::start(&[("DRAIN_TIMEOUT_MS", "8000")]).await;
    let token = user_token(&gw.secret, "late", 3600);
    let stuck = RawClient::connect(&gw, &token, None).await;
    gw.sigterm();

    wait_until("/ready to turn 503", STEP, || async { gw.get("/ready").await.status() == 503 }).await;
    assert_eq!(gw.get("/live").await.status(), 200, "/live stays 200 while the process runs");
    let refused = try_connect(ws_request(&gw, &format!("/ws/tasks?token={token}"), &[])).await.err();
    let refused = refused.expect("an upgrade during the drain must be refused");
    assert_error("upgrade while draining", &(refused.status, refused.body), 503);

    // The stuck client, reading at last, finds its 1001; answering it ends the drain.
    let mut ws = stuck.into_ws().await;
    assert_eq!(ws.next_json(STEP).await["type"], "connected");
    assert_eq!(ws.expect_close(STEP).await, 1001);
    let status = gw.wait_exit(Duration::from_millis(8000) + MARGIN).await.expect("exit within the drain timeout");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test]
async fn a_client_that_never_answers_cannot_hold_the_exit_past_the_drain_timeout() {
    let mut gw = Gateway::start(&[("DRAIN_TIMEOUT_MS", "1500")]).await;
    let _stuck = RawClient::connect(&gw, &user_token(&gw.secret, "stuck", 3600), None).await;
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_millis(1500) + MARGIN).await.expect("exit within the drain timeout");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
