//! A client that stops reading is closed with 1013 once its outbox overflows, while a client
//! that keeps reading gets every event, in order.

mod support;

use support::*;

const EVENTS: usize = 2000;
/// ~16 KiB per event: 32 MiB in all, far past the stuck client's 64 KiB outbox and the few MiB
/// the kernel buffers for it.
const PAD: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_gets_1013_and_a_reading_client_gets_everything() {
    let gw = Gateway::start(&[("OUTBOX_MAX_BYTES", "65536"), ("PUBLISH_RATE_PER_SEC", "0")]).await;
    let token = publish_token(&gw.secret);
    // A raw socket that does not read, with a small receive buffer so the kernel does not
    // soak up the flood on its behalf.
    let stuck = RawClient::connect(&gw, &user_token(&gw.secret, "stuck", 3600), Some(4096)).await;
    let mut reader = connect_user(&gw, "reader").await;
    let reading = tokio::spawn(async move { reader.read_seqs(EVENTS).await });

    // The stuck client starts reading as soon as the gateway has given up on it: the gateway
    // holds the socket only a few seconds for the closing handshake, so waiting for the end of
    // the flood could miss the close frame.
    let stuck_close = async {
        gw.wait_metric("wsgate_slow_consumer_closes_total", 1.0).await;
        stuck.into_ws().await.expect_close(STEP).await
    };
    let flood = publish_many(&gw, &token, EVENTS, |i| seq_event("bulk", i, PAD));
    let (code, _) = tokio::join!(stuck_close, flood);
    assert_eq!(code, 1013, "close code of the stuck client");

    let seqs = reading.await.expect("the reader was closed or fell behind");
    let first_wrong = seqs.iter().enumerate().find(|(k, s)| **s != *k as u64);
    assert_eq!(first_wrong, None, "(position, seq) of the reader's first event out of place");
    // Exactly one slow close: the reader was never taken for slow.
    assert_eq!(gw.metric("wsgate_slow_consumer_closes_total").await, 1.0);
    assert_eq!(gw.metric("wsgate_disconnects_total{reason=\"slow\"}").await, 1.0);
}
