//! The publish success path: 202 with a stream id, the event reaches a client with `data` equal to
//! what was posted, ids are unique and increase, and one keep-alive connection carries many
//! publishes.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn the_posted_data_arrives_unchanged() {
    let gw = Gateway::start(&[]).await;
    let publisher = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    let values = [
        json!({"id": 42, "nested": {"list": [1, 2.5, -3e-7, "x"], "empty": {}, "none": null}}),
        json!([true, false, null, [], ""]),
        json!("plain string with \"quotes\", \\ backslash, \u{e9}\u{4e2d}\u{1f600} and \n newline"),
        json!(12345678901234_i64),
        json!(-0.5),
        json!(false),
        json!(null),
    ];
    for data in values {
        let before = now_ms();
        let id = publish_ok(&gw, &publisher, json!({"type": "task.updated", "data": data})).await;
        assert_event_id(&id);
        let event = client.expect_event("task.updated").await;
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["data"], data);
        let ts = event["ts"].as_u64().unwrap_or_else(|| panic!("ts is not a number: {event}"));
        assert!(ts + 1000 >= before && ts <= now_ms() + 1000, "ts {ts} is not the publish time ({before})");
    }
    // `data` may be left out and defaults to null.
    publish_ok(&gw, &publisher, json!({"type": "no.data"})).await;
    let event = client.expect_event("no.data").await;
    assert!(event.get("data").is_some_and(|d| d.is_null()), "data should be null: {event}");
}

#[tokio::test]
async fn ids_are_unique_and_increase_for_sequential_publishes() {
    let gw = Gateway::start(&[]).await;
    let ids = publish_many(&gw, &publish_token(&gw.secret), 300, |i| json!({"type": "n", "data": i})).await;
    for pair in ids.windows(2) {
        assert!(event_position(&pair[0]) < event_position(&pair[1]), "ids out of order: {} then {}", pair[0], pair[1]);
    }
}

#[tokio::test]
async fn one_keep_alive_connection_carries_many_publishes() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    let mut conn = RawHttp::connect(&gw).await;
    for i in 0..5 {
        conn.send(&raw_publish_request(&gw, &token, &format!(r#"{{"type":"k","data":{i}}}"#))).await;
        let r = conn.read_response().await;
        assert_eq!(r.status, 202, "publish {i} on the shared connection:\n{}", r.head);
        assert_event_id(r.body["id"].as_str().expect("id"));
        assert_eq!(client.expect_event("k").await["data"], i);
    }
}
