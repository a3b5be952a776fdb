//! A stuck client costs the gateway at most its outbox bound: flooding it with 40 MiB does not
//! grow the gateway's resident memory by anything like that.

mod support;

use std::time::Duration;

use support::*;

const PAD: usize = 16 * 1024;
/// 2,560 events of 16 KiB: 40 MiB addressed to a client that reads nothing.
const EVENTS: usize = 2560;
/// Growth allowed over the flood. An unbounded queue would grow by ~40 MiB.
const MAX_GROWTH_KIB: u64 = 20 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_a_stuck_client_keeps_gateway_memory_bounded() {
    // History is bounded separately (HISTORY_MAX_BYTES); kept small so it does not hide the outbox.
    let gw = Gateway::start(&[
        ("OUTBOX_MAX_BYTES", "65536"),
        ("PUBLISH_RATE_PER_SEC", "0"),
        ("HISTORY_MAX_BYTES", "1048576"),
    ])
    .await;
    let token = publish_token(&gw.secret);
    let _stuck = RawClient::connect(&gw, &user_token(&gw.secret, "stuck", 3600), Some(4096)).await;
    // Warm-up, so buffers and allocator pools reach their working size before the baseline.
    publish_many(&gw, &token, 20, |i| seq_event("warm", i, PAD)).await;
    let baseline = gw.rss_kib();

    let flood = publish_many(&gw, &token, EVENTS, |i| seq_event("bulk", i, PAD));
    tokio::pin!(flood);
    let mut peak = baseline;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        tokio::select! {
            _ = &mut flood => break,
            _ = tick.tick() => peak = peak.max(gw.rss_kib()),
        }
    }
    peak = peak.max(gw.rss_kib());

    // The flood did reach the stuck client and overflow its outbox.
    assert_eq!(gw.metric("wsgate_slow_consumer_closes_total").await, 1.0);
    let growth = peak.saturating_sub(baseline);
    assert!(growth < MAX_GROWTH_KIB, "gateway RSS grew by {growth} KiB (baseline {baseline} KiB, peak {peak} KiB)");
}
