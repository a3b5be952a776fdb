//! Broadcast: every connection of every user gets one event exactly once.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_of_ten_users_get_a_broadcast_exactly_once() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut clients = Vec::new();
    for i in 0..50 {
        clients.push(connect_user(&gw, &format!("user-{}", i % 10)).await);
    }
    assert_eq!(gw.metric("wsgate_connections").await, 50.0);
    assert_eq!(gw.metric("wsgate_users").await, 10.0);

    let data = json!({"task": 7, "tags": ["a", "b"]});
    let id = publish_ok(&gw, &token, json!({"type": "hello", "data": data})).await;
    // A second broadcast as a marker: a duplicate of the first would arrive before it.
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    for (i, c) in clients.iter_mut().enumerate() {
        let event = c.expect_event("hello").await;
        assert_eq!((&event["id"], &event["data"]), (&json!(id), &data), "client {i}");
        c.expect_event("marker").await;
    }
    // Counted by the dispatcher once the whole fan-out is queued, which can be just after a
    // client has its frame: wait for the count, then check it is exact.
    gw.wait_metric("wsgate_deliveries_total", 100.0).await;
    assert_eq!(gw.metric("wsgate_deliveries_total").await, 100.0);
}
