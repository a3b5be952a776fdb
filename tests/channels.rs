//! Channels and presence on one instance (memory mode): subscribing and unsubscribing over the
//! socket, the refusals and their reasons, authorisation from the token's `channels` claim,
//! `channels=` at connect time, publishing to a channel, per-channel order, the metrics, the
//! presence endpoint, and resuming channel subscriptions with `since`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// After the last event that must arrive (or a marker): see [`expect_only_marker`].
const QUIET: Duration = QUIET_WINDOW;

/// A publish-scope service token for `gw`.
fn publisher(gw: &Gateway) -> String {
    publish_token(&gw.secret)
}

/// Reads frames up to and including the event of type `marker`; returns them all.
async fn frames_until(client: &mut WsClient, marker: &str) -> Vec<Value> {
    let mut frames: Vec<Value> = Vec::new();
    while frames.last().map(|f| f["type"] != marker).unwrap_or(true) {
        frames.push(client.next_json(STEP).await);
    }
    frames
}

// ---------------------------------------------------------------------------------------------
// Subscribe and unsubscribe

#[tokio::test]
async fn subscribe_and_unsubscribe_are_answered() {
    let gw = Gateway::start(&[]).await;
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["project:42"])).await;
    let v = c.subscribe("project:42").await;
    assert_eq!(v, json!({"type": "subscribed", "channel": "project:42"}));
    let v = c.unsubscribe("project:42").await;
    assert_eq!(v, json!({"type": "unsubscribed", "channel": "project:42"}));
    c.assert_alive().await;
}

#[tokio::test]
async fn subscribing_twice_and_unsubscribing_unjoined_channels_are_idempotent() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["room:*"])).await;
    c.expect_subscribed("room:1").await;
    c.expect_subscribed("room:1").await;
    // Joined once: one subscription, and one frame per event.
    gw.wait_metric("wsgate_channel_subscriptions", 1.0).await;
    publish_ok(&gw, &token, channel_event("room:1", "once")).await;
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    let types: Vec<Value> = frames_until(&mut c, "marker").await.iter().map(|f| f["type"].clone()).collect();
    assert_eq!(types, [json!("once"), json!("marker")], "a channel subscribed twice delivers once");
    // A single unsubscribe leaves it, a second one and one for a channel never joined are
    // answered all the same.
    c.expect_unsubscribed("room:1").await;
    c.expect_unsubscribed("room:1").await;
    c.expect_unsubscribed("room:never-joined").await;
    gw.wait_metric("wsgate_channel_subscriptions", 0.0).await;
    publish_ok(&gw, &token, channel_event("room:1", "after-leaving")).await;
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    assert_eq!(c.types_until("marker").await, ["marker"]);
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[tokio::test]
async fn a_channel_outside_the_claim_is_forbidden_and_the_connection_stays_usable() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["project:1"])).await;
    c.expect_refused("project:2", "forbidden").await;
    assert_eq!(gw.metric(r#"wsgate_channel_refusals_total{reason="forbidden"}"#).await, 1.0);
    // Still open and served: pings, allowed subscribes and events.
    c.assert_alive().await;
    c.expect_subscribed("project:1").await;
    publish_ok(&gw, &token, channel_event("project:2", "not-for-alice")).await;
    publish_ok(&gw, &token, channel_event("project:1", "for-alice")).await;
    let v = c.next_json(STEP).await;
    assert_eq!((&v["type"], &v["channel"]), (&json!("for-alice"), &json!("project:1")), "{v}");
    c.expect_quiet(QUIET).await;
}

#[tokio::test]
async fn invalid_channel_names_are_refused_and_the_connection_stays_usable() {
    let gw = Gateway::start(&[]).await;
    // The claim would allow every name starting with `a`: validity is checked regardless.
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["a*"])).await;
    let too_long = "a".repeat(201);
    let bad = ["", too_long.as_str(), "a b", "a/b", "a*", "a#b", "a,b", "aé", "a\u{0}b", "a\nb"];
    for name in bad {
        c.expect_refused(name, "invalid_channel").await;
    }
    // A subscribe without a string channel.
    c.send_json(&json!({"type": "subscribe"})).await;
    let v = c.next_json(STEP).await;
    assert_eq!((&v["type"], &v["error"]), (&json!("error"), &json!("invalid_channel")), "no channel: {v}");
    c.send_json(&json!({"type": "subscribe", "channel": 42})).await;
    let v = c.next_json(STEP).await;
    assert_eq!((&v["type"], &v["error"]), (&json!("error"), &json!("invalid_channel")), "numeric channel: {v}");
    c.send_json(&json!({"type": "subscribe", "channel": ["a:1"]})).await;
    let v = c.next_json(STEP).await;
    assert_eq!((&v["type"], &v["error"]), (&json!("error"), &json!("invalid_channel")), "array channel: {v}");
    assert_eq!(gw.metric(r#"wsgate_channel_refusals_total{reason="invalid_channel"}"#).await, (bad.len() + 3) as f64);
    // The boundaries are allowed: 200 characters, and every allowed character.
    c.assert_alive().await;
    c.expect_subscribed(&"a".repeat(200)).await;
    c.expect_subscribed("aAzZ09:_-.@x").await;
}

#[tokio::test]
async fn the_101st_channel_is_refused_by_default() {
    let gw = Gateway::start(&[]).await;
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["t:*"])).await;
    for i in 0..100 {
        c.expect_subscribed(&format!("t:{i}")).await;
    }
    c.expect_refused("t:100", "too_many_channels").await;
    // Re-joining one already held is not a new channel.
    c.expect_subscribed("t:99").await;
    assert_eq!(gw.metric("wsgate_channel_subscriptions").await, 100.0);
}

#[tokio::test]
async fn too_many_channels_with_a_limit_of_two_and_room_again_after_leaving_one() {
    let gw = Gateway::start(&[("MAX_CHANNELS_PER_CONNECTION", "2")]).await;
    let token = publisher(&gw);
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["t:*"])).await;
    c.expect_subscribed("t:a").await;
    c.expect_subscribed("t:b").await;
    c.expect_refused("t:c", "too_many_channels").await;
    assert_eq!(gw.metric(r#"wsgate_channel_refusals_total{reason="too_many_channels"}"#).await, 1.0);
    // Idempotent re-join of a held channel is fine; the limit is per connection.
    c.expect_subscribed("t:a").await;
    let mut other = connect(&gw, &channel_token(&gw.secret, "alice", &["t:*"])).await;
    other.expect_subscribed("t:c").await;
    // The refused channel delivers nothing to the refused connection.
    publish_ok(&gw, &token, channel_event("t:c", "c-event")).await;
    other.expect_event("c-event").await;
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    assert_eq!(c.types_until("marker").await, ["marker"]);
    // Leaving one makes room.
    c.expect_unsubscribed("t:b").await;
    c.expect_subscribed("t:c").await;
}

#[tokio::test]
async fn own_user_channel_is_always_allowed_and_other_users_channels_are_forbidden() {
    let gw = Gateway::start(&[]).await;
    // No `channels` claim at all.
    let mut c = connect_user(&gw, "alice").await;
    c.expect_subscribed("user:alice").await;
    c.expect_refused("user:bob", "forbidden").await;
    c.expect_refused("user:alice2", "forbidden").await;
    c.expect_refused("user:alice:x", "forbidden").await;
    c.expect_refused("user:", "forbidden").await;
    c.expect_refused("project:1", "forbidden").await;
    // A claim that does not mention it does not take it away.
    let mut d = connect(&gw, &channel_token(&gw.secret, "alice", &["project:1"])).await;
    d.expect_subscribed("user:alice").await;
    d.expect_refused("user:bob", "forbidden").await;
    assert_eq!(gw.metric(r#"wsgate_channel_refusals_total{reason="forbidden"}"#).await, 6.0);
}

#[tokio::test]
async fn prefix_patterns_and_exact_names_in_the_claim() {
    let gw = Gateway::start(&[]).await;
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["team:*", "exact:1"])).await;
    for ok in ["team:1", "team:x:y", "team::", "exact:1"] {
        c.expect_subscribed(ok).await;
    }
    for no in ["team", "teams:1", "tea", "exact:10", "exact:", "exact", "xteam:1"] {
        c.expect_refused(no, "forbidden").await;
    }
}

#[tokio::test]
async fn channels_in_the_query_are_answered_in_order_after_connected() {
    let gw = Gateway::start(&[]).await;
    let token = channel_token(&gw.secret, "alice", &["project:*"]);
    // `bad!name` percent-encoded is still `bad!name`: invalid.
    let mut c = connect_channels(&gw, &token, "project:1,user:alice,secret:1,bad%21name,project:2").await;
    assert_eq!(c.connected["user"], "alice", "{}", c.connected);
    c.expect_subscribed_frame("project:1").await;
    c.expect_subscribed_frame("user:alice").await;
    WsClient::assert_refusal(&c.next_json(STEP).await, "secret:1", "forbidden");
    WsClient::assert_refusal(&c.next_json(STEP).await, "bad!name", "invalid_channel");
    c.expect_subscribed_frame("project:2").await;
    // Joined for real.
    let pt = publisher(&gw);
    publish_ok(&gw, &pt, channel_event("project:2", "p2")).await;
    publish_ok(&gw, &pt, channel_event("user:alice", "mine")).await;
    publish_ok(&gw, &pt, channel_event("secret:1", "hidden")).await;
    publish_ok(&gw, &pt, json!({"type": "marker"})).await;
    assert_eq!(c.types_until("marker").await, ["p2", "mine", "marker"]);
}

#[tokio::test]
async fn channels_in_the_query_count_against_the_limit() {
    let gw = Gateway::start(&[("MAX_CHANNELS_PER_CONNECTION", "2")]).await;
    let token = channel_token(&gw.secret, "alice", &["t:*"]);
    let mut c = connect_channels(&gw, &token, "t:1,t:2,t:3").await;
    c.expect_subscribed_frame("t:1").await;
    c.expect_subscribed_frame("t:2").await;
    WsClient::assert_refusal(&c.next_json(STEP).await, "t:3", "too_many_channels");
    c.assert_alive().await;
}

// ---------------------------------------------------------------------------------------------
// Publishing to a channel

#[tokio::test]
async fn a_channel_event_reaches_only_its_subscribers_and_carries_the_channel() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let claim = ["project:*"];
    let mut sub = connect(&gw, &channel_token(&gw.secret, "alice", &claim)).await;
    sub.expect_subscribed("project:42").await;
    // The same user on another connection, not subscribed; another user on another channel.
    let mut same_user = connect(&gw, &channel_token(&gw.secret, "alice", &claim)).await;
    let mut elsewhere = connect(&gw, &channel_token(&gw.secret, "bob", &claim)).await;
    elsewhere.expect_subscribed("project:7").await;

    let data = json!({"n": 1, "nested": {"a": [1, 2, 3]}, "s": "é\u{1F600}"});
    let id = publish_ok(&gw, &token, json!({"type": "update", "channel": "project:42", "data": data})).await;
    let v = sub.expect_event("update").await;
    assert_eq!(v["channel"], "project:42", "{v}");
    assert_eq!(v["id"], id.as_str(), "{v}");
    assert_eq!(v["data"], data, "{v}");
    assert!(v["ts"].as_u64().is_some_and(|ts| ts.abs_diff(now_ms()) < 60_000), "ts in ms since the epoch: {v}");
    let keys: std::collections::BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["channel", "data", "id", "ts", "type"].into(), "{v}");

    // Broadcast and user-targeted events are unchanged: no `channel`, subscribers or not.
    publish_ok(&gw, &token, json!({"type": "to-bob", "users": ["bob"]})).await;
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    let got = frames_until(&mut same_user, "marker").await;
    assert_eq!(got.len(), 1, "a non-subscriber got {got:?}");
    let got = frames_until(&mut elsewhere, "marker").await;
    assert_eq!(got.iter().map(|f| f["type"].clone()).collect::<Vec<_>>(), ["to-bob", "marker"], "{got:?}");
    assert!(got.iter().all(|f| f.get("channel").is_none()), "broadcast/user frames carry no channel: {got:?}");
    let got = frames_until(&mut sub, "marker").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].get("channel").is_none(), "{got:?}");
}

#[tokio::test]
async fn after_unsubscribing_nothing_more_arrives_from_the_channel() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["news"])).await;
    c.expect_subscribed("news").await;
    publish_ok(&gw, &token, channel_event("news", "first")).await;
    c.expect_event("first").await;
    c.expect_unsubscribed("news").await;
    publish_ok(&gw, &token, channel_event("news", "second")).await;
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    assert_eq!(c.types_until("marker").await, ["marker"]);
    c.expect_quiet(QUIET).await;
}

#[tokio::test]
async fn two_hundred_events_per_channel_keep_their_order() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let claim = ["ord:*"];
    let mut both = connect(&gw, &channel_token(&gw.secret, "alice", &claim)).await;
    both.expect_subscribed("ord:a").await;
    both.expect_subscribed("ord:b").await;
    let mut only_b = connect(&gw, &channel_token(&gw.secret, "bob", &claim)).await;
    only_b.expect_subscribed("ord:b").await;
    const N: usize = 200;
    for i in 0..N {
        publish_ok(&gw, &token, channel_seq_event("ord:a", "a", i)).await;
        publish_ok(&gw, &token, channel_seq_event("ord:b", "b", i)).await;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..2 * N {
        let v = both.next_json(STEP).await;
        let seq = v["data"]["seq"].as_u64().unwrap_or_else(|| panic!("no data.seq: {v}"));
        match v["channel"].as_str() {
            Some("ord:a") => a.push(seq),
            Some("ord:b") => b.push(seq),
            _ => panic!("unexpected frame {v}"),
        }
    }
    let want: Vec<u64> = (0..N as u64).collect();
    assert_eq!(a, want, "channel ord:a out of order");
    assert_eq!(b, want, "channel ord:b out of order");
    assert_eq!(only_b.read_seqs(N).await, want, "channel ord:b out of order for its only subscriber");
    only_b.expect_quiet(QUIET).await;
}

#[tokio::test]
async fn publish_body_errors_name_the_channel_field() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let mut c = connect(&gw, &channel_token(&gw.secret, "alice", &["ok:*"])).await;
    c.expect_subscribed("ok:1").await;
    let bad_channels = [json!(""), json!("a b"), json!("a/b"), json!("x".repeat(201)), json!(42), json!(["ok:1"])];
    for ch in &bad_channels {
        let got = publish(&gw, &token, json!({"type": "t", "channel": ch})).await;
        assert_error(&format!("channel {ch}"), &got, 400);
        let msg = got.1["error"].as_str().unwrap();
        assert!(msg.contains("channel"), "the error for channel {ch} must name \"channel\": {msg}");
    }
    let got = publish(&gw, &token, json!({"type": "t", "channel": "ok:1", "users": ["alice"]})).await;
    assert_error("channel together with users", &got, 400);
    // None of them was delivered; a valid one is, also with no subscriber anywhere.
    publish_ok(&gw, &token, channel_event("ok:nobody", "unheard")).await;
    publish_ok(&gw, &token, json!({"type": "t", "channel": "x".repeat(200)})).await;
    publish_ok(&gw, &token, channel_event("ok:1", "marker")).await;
    let v = c.next_json(STEP).await;
    assert_eq!((&v["type"], &v["channel"]), (&json!("marker"), &json!("ok:1")), "{v}");
    assert_eq!(gw.metric(r#"wsgate_publish_rejected_total{status="400"}"#).await, (bad_channels.len() + 1) as f64);
}

// ---------------------------------------------------------------------------------------------
// Metrics and stats

#[tokio::test]
async fn channel_gauges_and_local_channels_follow_joins_and_leaves() {
    let gw = Gateway::start(&[]).await;
    let local_channels = |want: u64| move |s: &Value| s["local_channels"] == want;
    gw.wait_stats("no channels", local_channels(0)).await;
    assert_eq!(gw.metric("wsgate_channels").await, 0.0);
    assert_eq!(gw.metric("wsgate_channel_subscriptions").await, 0.0);

    let claim = ["m:*"];
    let mut c1 = connect(&gw, &channel_token(&gw.secret, "alice", &claim)).await;
    let mut c2 = connect(&gw, &channel_token(&gw.secret, "bob", &claim)).await;
    c1.expect_subscribed("m:a").await;
    c1.expect_subscribed("m:b").await;
    c2.expect_subscribed("m:a").await;
    assert_eq!(gw.metric("wsgate_channels").await, 2.0);
    assert_eq!(gw.metric("wsgate_channel_subscriptions").await, 3.0);
    gw.wait_stats("2 local channels", local_channels(2)).await;

    // m:a keeps a subscriber.
    c1.expect_unsubscribed("m:a").await;
    assert_eq!(gw.metric("wsgate_channels").await, 2.0);
    assert_eq!(gw.metric("wsgate_channel_subscriptions").await, 2.0);
    // A disconnect leaves every channel of the connection.
    drop(c2);
    gw.wait_metric("wsgate_channel_subscriptions", 1.0).await;
    assert_eq!(gw.metric("wsgate_channels").await, 1.0);
    gw.wait_stats("1 local channel", local_channels(1)).await;
    c1.expect_unsubscribed("m:b").await;
    assert_eq!(gw.metric("wsgate_channels").await, 0.0);
    assert_eq!(gw.metric("wsgate_channel_subscriptions").await, 0.0);
    gw.wait_stats("no channels again", local_channels(0)).await;
}

// ---------------------------------------------------------------------------------------------
// Presence

#[tokio::test]
async fn presence_lists_subscribed_users_with_their_connection_counts() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let t = |sub: &str| channel_token(&gw.secret, sub, &["room:*"]);
    // Users connected in an order that is not sorted.
    let mut carol = connect(&gw, &t("carol")).await;
    let mut alice1 = connect(&gw, &t("alice")).await;
    let mut alice2 = connect(&gw, &t("alice")).await;
    let _dave = connect(&gw, &t("dave")).await; // connected, not subscribed
    let mut erin = connect(&gw, &t("erin")).await; // subscribed elsewhere
    for c in [&mut carol, &mut alice1, &mut alice2] {
        c.expect_subscribed("room:1").await;
    }
    erin.expect_subscribed("room:2").await;

    let want = presence_body("room:1", &[("alice", 2), ("carol", 1)]);
    wait_presence(&gw, &token, "room:1", &want, STEP).await;
    let empty = presence_body("room:empty", &[]);
    assert_eq!(presence(&gw, Some(&token), "room:empty").await, (200, empty));

    // A connection leaving, and a user leaving.
    alice2.expect_unsubscribed("room:1").await;
    wait_presence(&gw, &token, "room:1", &presence_body("room:1", &[("alice", 1), ("carol", 1)]), STEP).await;
    drop(carol);
    wait_presence(&gw, &token, "room:1", &presence_body("room:1", &[("alice", 1)]), STEP).await;
}

#[tokio::test]
async fn presence_refuses_bad_tokens_and_invalid_names() {
    let gw = Gateway::start(&[]).await;
    let got = presence(&gw, None, "room:1").await;
    assert_error("presence without a token", &got, 401);
    let wrong_key = publish_token(&random_hex());
    assert_error("presence with a token signed by another key", &presence(&gw, Some(&wrong_key), "room:1").await, 401);
    assert_error("presence with garbage", &presence(&gw, Some("not.a.jwt"), "room:1").await, 401);
    let expired = token_with(&gw.secret, json!({"sub": "svc", "exp": now_secs() - 3600, "scope": "publish"}));
    assert_error("presence with an expired token", &presence(&gw, Some(&expired), "room:1").await, 401);
    let user = channel_token(&gw.secret, "alice", &["room:*"]);
    assert_error("presence with a user token", &presence(&gw, Some(&user), "room:1").await, 403);

    let token = publisher(&gw);
    for name in ["bad%21name".to_owned(), "a%20b".to_owned(), "x".repeat(201), "%C3%A9".to_owned()] {
        let got = presence(&gw, Some(&token), &name).await;
        assert_error(&format!("presence of {name:?}"), &got, 400);
    }
    // The longest valid name is fine.
    let longest = "x".repeat(200);
    assert_eq!(presence(&gw, Some(&token), &longest).await, (200, presence_body(&longest, &[])));
}

// ---------------------------------------------------------------------------------------------
// Resume

#[tokio::test]
async fn resume_with_channels_and_since_replays_missed_channel_events() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let alice = channel_token(&gw.secret, "alice", &["x", "y"]);
    let mut before = connect_channels(&gw, &alice, "x").await;
    before.expect_subscribed_frame("x").await;
    publish_ok(&gw, &token, channel_seq_event("x", "e", 0)).await;
    let last = before.expect_event("e").await["id"].as_str().expect("id").to_owned();
    drop(before);

    let x1 = publish_ok(&gw, &token, channel_seq_event("x", "e", 1)).await;
    publish_ok(&gw, &token, channel_seq_event("y", "e", 2)).await; // a channel alice does not resume
    let all = publish_ok(&gw, &token, json!({"type": "e", "data": {"seq": 3}})).await;
    let mine = publish_ok(&gw, &token, json!({"type": "e", "data": {"seq": 4}, "users": ["alice"]})).await;
    publish_ok(&gw, &token, json!({"type": "e", "data": {"seq": 5}, "users": ["bob"]})).await;
    let x6 = publish_ok(&gw, &token, channel_seq_event("x", "e", 6)).await;

    let mut c = connect_channels_since(&gw, &alice, "x", &last).await;
    assert_eq!(c.recovered(), Some(&json!(true)), "{}", c.connected);
    // The `subscribed` answer and the replay: the answer may come before or after the replay,
    // the replay itself is in id order.
    let (subscribed, replay) = c.read_resume("e", 4).await;
    assert_eq!(subscribed, [json!({"type": "subscribed", "channel": "x"})]);
    let got: Vec<(Value, Value, Value)> =
        replay.iter().map(|v| (v["id"].clone(), v["data"]["seq"].clone(), v["channel"].clone())).collect();
    let want = [
        (json!(x1), json!(1), json!("x")),
        (json!(all), json!(3), Value::Null),
        (json!(mine), json!(4), Value::Null),
        (json!(x6), json!(6), json!("x")),
    ];
    assert_eq!(got, want, "replayed frames: {replay:?}");
    // Then live, still subscribed to x.
    publish_ok(&gw, &token, channel_seq_event("x", "e", 7)).await;
    assert_eq!(c.read_seqs(1).await, [7]);
    c.expect_quiet(QUIET).await;
}

#[tokio::test]
async fn resume_from_a_channel_event_when_only_channel_events_were_missed() {
    let gw = Gateway::start(&[]).await;
    let token = publisher(&gw);
    let alice = channel_token(&gw.secret, "alice", &["x"]);
    let mut before = connect_channels(&gw, &alice, "x").await;
    before.expect_subscribed_frame("x").await;
    publish_ok(&gw, &token, json!({"type": "seen-before"})).await;
    before.expect_event("seen-before").await;
    publish_ok(&gw, &token, channel_seq_event("x", "e", 0)).await;
    let last = before.expect_event("e").await["id"].as_str().expect("id").to_owned();
    drop(before);
    let missed = [
        publish_ok(&gw, &token, channel_seq_event("x", "e", 1)).await,
        publish_ok(&gw, &token, channel_seq_event("x", "e", 2)).await,
    ];
    let mut c = connect_channels_since(&gw, &alice, "x", &last).await;
    assert_eq!(c.recovered(), Some(&json!(true)), "since={last}: {}", c.connected);
    let (_, events) = c.read_resume("e", 2).await;
    let replay: Vec<Value> = events.iter().map(|v| v["id"].clone()).collect();
    assert_eq!(replay, [json!(missed[0]), json!(missed[1])]);
    // No replayed event again, live: nothing before a marker, nothing after it.
    expect_only_marker(&gw, &mut [&mut c]).await;
}
