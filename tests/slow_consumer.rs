//! A client that stops reading is closed with 1013 once its outbox overflows, while a client
//! that keeps reading gets every event, in order.

mod support;

use support::*;

const EVENTS: usize = 2000;
/// ~16 KiB per event: 32 MiB in all, far past the stuck client's 1 MiB outbox and the few MiB
/// the kernel buffers for it.
const PAD: usize = 16 * 1024;
/// The flood goes out in steps of this many events, each once the reader has the previous
/// ones: 512 KiB in flight at most, so a reader in a debug build on a busy machine is never
/// slow, while the stuck client still falls 32 MiB behind.
const STEP_EVENTS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_gets_1013_and_a_reading_client_gets_everything() {
    let gw = Gateway::start(&[("OUTBOX_MAX_BYTES", "1048576"), ("PUBLISH_RATE_PER_SEC", "0")]).await;
    let token = publish_token(&gw.secret);
    // A raw socket that does not read, with a small receive buffer so the kernel does not
    // soak up the flood on its behalf.
    let stuck = RawClient::connect(&gw, &user_token(&gw.secret, "stuck", 3600), Some(4096)).await;
    let mut reader = connect_user(&gw, "reader").await;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = received.clone();
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(EVENTS);
        for _ in 0..EVENTS {
            seqs.extend(reader.read_seqs(1).await);
            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        seqs
    });

    // The stuck client starts reading as soon as the gateway has given up on it: the gateway
    // holds the socket only a few seconds for the closing handshake, so waiting for the end of
    // the flood could miss the close frame.
    let stuck_close = async {
        gw.wait_metric("wsgate_slow_consumer_closes_total", 1.0).await;
        stuck.into_ws().await.expect_close(STEP).await
    };
    let flood = async {
        for start in (0..EVENTS).step_by(STEP_EVENTS) {
            let want = (start + STEP_EVENTS).min(EVENTS);
            for i in start..want {
                publish_ok(&gw, &token, seq_event("bulk", i, PAD)).await;
            }
            wait_until("the reader to keep up", STEP, || {
                std::future::ready(received.load(std::sync::atomic::Ordering::Relaxed) >= want)
            })
            .await;
        }
    };
    let (code, _) = tokio::join!(stuck_close, flood);
    assert_eq!(code, 1013, "close code of the stuck client");

    let seqs = reading.await.expect("the reader was closed or fell behind");
    let first_wrong = seqs.iter().enumerate().find(|(k, s)| **s != *k as u64);
    assert_eq!(first_wrong, None, "(position, seq) of the reader's first event out of place");
    // Exactly one slow close: the reader was never taken for slow.
    assert_eq!(gw.metric("wsgate_slow_consumer_closes_total").await, 1.0);
    assert_eq!(gw.metric("wsgate_disconnects_total{reason=\"slow\"}").await, 1.0);
}
