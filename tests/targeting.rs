//! `users` targeting: the event reaches every connection of the named users and nobody else.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_users_get_it_on_every_connection_and_nobody_else_does() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut clients = Vec::new();
    for i in 0..15 {
        let user = format!("u{}", i % 5);
        clients.push((user.clone(), connect_user(&gw, &user).await));
    }
    // "u1" twice and a user with no connection: still once per connection, and no error.
    let id =
        publish_ok(&gw, &token, json!({"type": "private", "data": 1, "users": ["u1", "u3", "u1", "nobody"]})).await;
    // A broadcast marker: anyone who got "private" sees it first; the others see the marker first.
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    for (user, c) in &mut clients {
        if user == "u1" || user == "u3" {
            assert_eq!(c.expect_event("private").await["id"], id.as_str(), "{user}");
        }
        c.expect_event("marker").await;
    }
    // 6 targeted connections + 15 marker deliveries.
    // Counted by the dispatcher once the whole fan-out is queued, which can be just after a
    // client has its frame: wait for the count, then check it is exact.
    gw.wait_metric("wsgate_deliveries_total", 21.0).await;
    assert_eq!(gw.metric("wsgate_deliveries_total").await, 21.0);
}
