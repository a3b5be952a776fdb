//! Events published one after another reach each client in that order, none lost or doubled.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sequential_events_arrive_in_order_at_every_client() {
    const N: usize = 1000;
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut readers = Vec::new();
    for i in 0..3 {
        let mut c = connect_user(&gw, &format!("reader-{i}")).await;
        // Reading while publishing, as a browser would. The marker published last must come
        // right after the N events: nothing doubled at the tail either.
        readers.push(tokio::spawn(async move {
            let seqs = c.read_seqs(N).await;
            c.expect_event("marker").await;
            seqs
        }));
    }
    publish_many(&gw, &token, N, |i| seq_event("seq", i, 16)).await;
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    for (i, r) in readers.into_iter().enumerate() {
        let seqs = r.await.expect("reader task");
        let first_wrong = seqs.iter().enumerate().find(|(k, s)| **s != *k as u64);
        assert_eq!(first_wrong, None, "reader {i}: (position, seq) of the first event out of place");
    }
}
