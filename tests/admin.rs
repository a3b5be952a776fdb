//! The admin API and batch publishing (CONTRACT "Admin API"), in memory mode and over a
//! 3-instance Redis fleet: every endpoint, its errors and its scope; and the admin listener
//! (`ADMIN_LISTEN_ADDR`) that keeps operators' endpoints off the public port.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

async fn admin_post(gw: &Gateway, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = gw.http().post(gw.admin_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    response_json(req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"))).await
}

async fn admin_get(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = gw.http().get(gw.admin_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    response_json(req.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))).await
}

async fn batch(gw: &Gateway, token: &str, body: Value, key: Option<&str>) -> (u16, Value, Option<String>) {
    let mut req = gw.http().post(gw.http_url("/api/events/batch")).bearer_auth(token).json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.expect("POST /api/events/batch");
    let replayed = r.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_string());
    let (status, v) = response_json(r).await;
    (status, v, replayed)
}

fn ids_of(v: &Value) -> Vec<String> {
    v["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {v}"))
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// POST /api/events/batch

#[tokio::test]
async fn a_batch_reaches_clients_in_item_order_and_answers_every_id() {
    let gw = Gateway::start(&[]).await;
    let mut alice = connect_user(&gw, "alice").await;
    let mut bob = connect_user(&gw, "bob").await;
    let events: Vec<Value> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                json!({"type": "step", "data": {"i": i}})
            } else {
                json!({"type": "step", "data": {"i": i}, "users": ["alice"]})
            }
        })
        .collect();
    let (status, v, replayed) = batch(&gw, &publish_token(&gw.secret), json!({ "events": events }), None).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(replayed, None);
    let ids = ids_of(&v);
    assert_eq!(ids.len(), 20);
    assert!(ids.windows(2).all(|w| stream_id(&w[0]) < stream_id(&w[1])), "ids in item order: {ids:?}");
    for i in 0..20u64 {
        let e = alice.expect_event("step").await;
        assert_eq!((e["data"]["i"].as_u64(), e["id"].as_str()), (Some(i), Some(ids[i as usize].as_str())), "{e}");
    }
    for i in (0..20u64).step_by(2) {
        assert_eq!(bob.expect_event("step").await["data"]["i"], i, "bob gets the broadcasts only, in order");
    }
    assert_eq!(gw.metric("wsgate_events_published_total").await, 20.0);
}

#[tokio::test]
async fn a_bad_item_is_named_and_nothing_of_the_batch_is_published() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut alice = connect_user(&gw, "alice").await;
    let cases = [
        (json!({"events": [{"type": "ok"}, {"type": 5}]}), "events[1].type"),
        (json!({"events": [{"type": "ok"}, {"type": "ok"}, {"type": "x", "users": []}]}), "events[2].users"),
        (json!({"events": [{"type": "ok"}, {"type": "t", "extra": 1}]}), "events[1].extra"),
        (json!({"events": [{"type": "ok"}, [1]]}), "events[1]"),
        (json!({"events": []}), "\"events\" must hold 1 to 1000"),
        (json!({"events": (0..1001).map(|_| json!({"type": "t"})).collect::<Vec<_>>()}), "got 1001"),
        (json!({"items": [{"type": "t"}]}), "{\"events\""),
        (json!([{"type": "t"}]), "{\"events\""),
    ];
    for (body, named) in cases {
        let (status, v, _) = batch(&gw, &token, body.clone(), None).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(named), "{body}: the error names {named}: {v}");
    }
    // Nothing of those reached anyone: the next event alice gets is this marker.
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    assert_eq!(alice.next_json(STEP).await["type"], "marker");
    assert_eq!(gw.metric("wsgate_events_published_total").await, 1.0);
    // Not JSON, wrong content type, no token, a user token.
    let r =
        gw.http().post(gw.http_url("/api/events/batch")).bearer_auth(&token).header("content-type", "application/json");
    let (status, v) = response_json(r.body("{").send().await.unwrap()).await;
    assert_error("invalid JSON", &(status, v), 400);
    let r = gw.http().post(gw.http_url("/api/events/batch")).bearer_auth(&token).header("content-type", "text/plain");
    assert_eq!(r.body("{}").send().await.unwrap().status(), 415);
    let r = gw.http().post(gw.http_url("/api/events/batch")).json(&json!({"events": [{"type": "t"}]}));
    assert_eq!(r.send().await.unwrap().status(), 401);
    let user = user_token(&gw.secret, "alice", 60);
    let (status, v, _) = batch(&gw, &user, json!({"events": [{"type": "t"}]}), None).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"publish\""), "403 names the scope: {v}");
}

#[tokio::test]
async fn an_idempotency_key_covers_the_whole_batch() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut alice = connect_user(&gw, "alice").await;
    let body = json!({"events": [{"type": "a"}, {"type": "b"}, {"type": "c"}]});
    let (status, first, replayed) = batch(&gw, &token, body.clone(), Some("batch-1")).await;
    assert_eq!((status, replayed), (202, None), "{first}");
    let (status, again, replayed) = batch(&gw, &token, body.clone(), Some("batch-1")).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")), "{again}");
    assert_eq!(ids_of(&again), ids_of(&first), "a retry answers the first ids");
    let (status, v, _) = batch(&gw, &token, json!({"events": [{"type": "other"}]}), Some("batch-1")).await;
    assert_eq!(status, 422, "same key, another body: {v}");
    // The same key on a single publish is another use: no collision with the batch's items.
    let r = publish_idempotent(&gw, &token, "batch-1", &json!({"type": "single"})).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("idempotent-replayed"), None);
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    let types = alice.types_until("marker").await;
    assert_eq!(types, ["a", "b", "c", "single", "marker"], "each item once");
    assert_eq!(gw.metric("wsgate_idempotent_replays_total").await, 3.0);
}

// ---------------------------------------------------------------------------------------------
// POST /api/users/{sub}/disconnect

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_with_4001_and_no_one_else() {
    let gw = Gateway::start(&[]).await;
    let admin = admin_token(&gw.secret);
    let mut a1 = connect_user(&gw, "alice").await;
    let mut a2 = connect_user(&gw, "alice").await;
    let mut bob = connect_user(&gw, "bob").await;
    let started = Instant::now();
    let (status, v) = admin_post(&gw, "/api/users/alice/disconnect", Some(&admin), None).await;
    assert_eq!((status, v.clone()), (200, json!({"user": "alice", "disconnected": 2})), "{v}");
    assert_eq!(a1.expect_close(STEP).await, 4001);
    assert_eq!(a2.expect_close(STEP).await, 4001);
    assert!(started.elapsed() < Duration::from_secs(2), "closed within 2 s: {:?}", started.elapsed());
    bob.assert_alive().await;
    gw.wait_metric("wsgate_disconnects_total{reason=\"revoked\"}", 2.0).await;
    // Nobody left: 0, not an error.
    let (status, v) = admin_post(&gw, "/api/users/alice/disconnect", Some(&admin), None).await;
    assert_eq!((status, v), (200, json!({"user": "alice", "disconnected": 0})));
}

#[tokio::test]
async fn disconnect_with_reconnect_closes_with_1012_and_the_same_token_works() {
    let gw = Gateway::start(&[]).await;
    let token = user_token(&gw.secret, "carol", 600);
    let mut c = connect(&gw, &token).await;
    let body = json!({"reconnect": true});
    let (status, v) = admin_post(&gw, "/api/users/carol/disconnect", Some(&admin_token(&gw.secret)), Some(body)).await;
    assert_eq!((status, v["disconnected"].clone()), (200, json!(1)), "{v}");
    assert_eq!(c.expect_close(STEP).await, 1012);
    let mut again = connect(&gw, &token).await;
    again.assert_alive().await;
    gw.wait_metric("wsgate_disconnects_total{reason=\"reconnect\"}", 1.0).await;
}

#[tokio::test]
async fn disconnect_refuses_what_it_cannot_do() {
    let gw = Gateway::start(&[]).await;
    let admin = admin_token(&gw.secret);
    let mut alice = connect_user(&gw, "alice").await;
    let (status, v) = admin_post(&gw, "/api/users/alice/disconnect", Some(&publish_token(&gw.secret)), None).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "token lacks the \"admin\" scope");
    assert_eq!(admin_post(&gw, "/api/users/alice/disconnect", None, None).await.0, 401);
    let (status, v) =
        admin_post(&gw, "/api/users/alice/disconnect", Some(&admin), Some(json!({"reconnect": "yes"}))).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = admin_post(&gw, "/api/users/alice/disconnect", Some(&admin), Some(json!({"other": 1}))).await;
    assert_eq!(status, 400, "{v}");
    let long = "u".repeat(257);
    let (status, v) = admin_post(&gw, &format!("/api/users/{long}/disconnect"), Some(&admin), None).await;
    assert_eq!(status, 400, "{v}");
    let r = gw.http().get(gw.admin_url("/api/users/alice/disconnect")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 405);
    // None of that closed anyone.
    alice.assert_alive().await;
    // A user id with a slash, percent-encoded.
    let mut odd = connect_user(&gw, "team/alice").await;
    let (status, v) = admin_post(&gw, "/api/users/team%2Falice/disconnect", Some(&admin), None).await;
    assert_eq!((status, v), (200, json!({"user": "team/alice", "disconnected": 1})));
    assert_eq!(odd.expect_close(STEP).await, 4001);
}

// ---------------------------------------------------------------------------------------------
// GET /api/channels, GET /api/history

#[tokio::test]
async fn channels_lists_channels_with_subscribers_and_filters_by_prefix() {
    let gw = Gateway::start(&[]).await;
    let admin = admin_token(&gw.secret);
    let token = channel_token(&gw.secret, "alice", &["project:*", "news"]);
    let mut a = connect_channels(&gw, &token, "project:1,news").await;
    a.expect_subscribed_frame("project:1").await;
    a.expect_subscribed_frame("news").await;
    let mut b = connect_channels(&gw, &token, "project:1,project:2").await;
    b.expect_subscribed_frame("project:1").await;
    b.expect_subscribed_frame("project:2").await;
    let (status, v) = admin_get(&gw, "/api/channels", Some(&admin)).await;
    assert_eq!(status, 200, "{v}");
    let want = json!({"channels": [
        {"channel": "news", "subscribers": 1},
        {"channel": "project:1", "subscribers": 2},
        {"channel": "project:2", "subscribers": 1},
    ]});
    assert_eq!(v, want);
    let (_, v) = admin_get(&gw, "/api/channels?prefix=project:", Some(&admin)).await;
    assert_eq!(v["channels"].as_array().unwrap().len(), 2, "{v}");
    b.expect_unsubscribed("project:2").await;
    let (_, v) = admin_get(&gw, "/api/channels?prefix=project:2", Some(&admin)).await;
    assert_eq!(v, json!({"channels": []}), "a channel without subscribers is not listed");
    assert_eq!(admin_get(&gw, "/api/channels?prefix=a%20b", Some(&admin)).await.0, 400);
    assert_eq!(admin_get(&gw, "/api/channels?nope=1", Some(&admin)).await.0, 400);
    assert_eq!(admin_get(&gw, "/api/channels", Some(&publish_token(&gw.secret))).await.0, 403);
    assert_eq!(admin_get(&gw, "/api/channels", None).await.0, 401);
}

#[tokio::test]
async fn history_pages_a_stream_oldest_first_as_clients_received_it() {
    let gw = Gateway::start(&[]).await;
    let admin = admin_token(&gw.secret);
    let token = publish_token(&gw.secret);
    let mut alice = connect_user(&gw, "alice").await;
    let ids = publish_many(&gw, &token, 5, |i| seq_event("h", i, 0)).await;
    let cid = publish_ok(&gw, &token, channel_event("room:1", "in.room")).await;
    let frames: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(alice.expect_event("h").await);
        }
        v
    };
    let (status, v) = admin_get(&gw, "/api/history?limit=2", Some(&admin)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["events"], json!([frames[3], frames[4]]), "the newest two, byte for byte what clients got");
    assert_eq!(v["last_id"], ids[4].as_str());
    let (_, v) = admin_get(&gw, &format!("/api/history?since={}&limit=3", ids[0]), Some(&admin)).await;
    assert_eq!(v["events"], json!([frames[1], frames[2], frames[3]]));
    let (_, v) = admin_get(&gw, &format!("/api/history?since={}", ids[4]), Some(&admin)).await;
    assert_eq!(v, json!({"events": [], "last_id": ids[4]}));
    let (_, v) = admin_get(&gw, "/api/history?channel=room:1", Some(&admin)).await;
    assert_eq!(v["last_id"], cid.as_str());
    assert_eq!(v["events"][0]["channel"], "room:1", "{v}");
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    let (_, v) = admin_get(&gw, "/api/history?channel=empty", Some(&admin)).await;
    assert_eq!(v, json!({"events": [], "last_id": null}));
    for bad in ["since=x", "since=1-", "limit=0", "limit=1001", "limit=ten", "channel=a%20b", "other=1"] {
        let (status, v) = admin_get(&gw, &format!("/api/history?{bad}"), Some(&admin)).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    assert_eq!(admin_get(&gw, "/api/history", Some(&token)).await.0, 403);
}

// ---------------------------------------------------------------------------------------------
// ADMIN_LISTEN_ADDR

#[tokio::test]
async fn the_admin_listener_takes_operators_endpoints_off_the_public_port() {
    let gw = Gateway::start(&[("ADMIN_LISTEN_ADDR", "127.0.0.1:0")]).await;
    let admin_addr = gw.admin_addr.expect("the admin listener's address is logged");
    assert_ne!(admin_addr, gw.addr);
    let admin = admin_token(&gw.secret);
    for path in ["/metrics", "/ws/stats", "/health", "/api/channels", "/api/history", "/api/openapi.json"] {
        let (status, v) = gw.get_json(path).await;
        assert_eq!(status, 404, "{path} on the public port: {v}");
        let r = gw.http().get(gw.admin_url(path)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin port");
    }
    for probe in ["/live", "/ready"] {
        assert_eq!(gw.get(probe).await.status(), 200, "{probe} public");
        assert_eq!(gw.http().get(gw.admin_url(probe)).send().await.unwrap().status(), 200, "{probe} admin");
    }
    // Publishing and WebSockets stay on the public port, and only there.
    publish_ok(&gw, &publish_token(&gw.secret), json!({"type": "t"})).await;
    let r =
        gw.http().post(gw.admin_url("/api/events")).bearer_auth(publish_token(&gw.secret)).json(&json!({"type": "t"}));
    assert_eq!(r.send().await.unwrap().status(), 404);
    let mut alice = connect_user(&gw, "alice").await;
    let (status, v) = admin_post(&gw, "/api/users/alice/disconnect", Some(&admin), None).await;
    assert_eq!((status, v["disconnected"].clone()), (200, json!(1)));
    assert_eq!(alice.expect_close(STEP).await, 4001);
}

// ---------------------------------------------------------------------------------------------
// A 3-instance Redis fleet

/// Three instances on `redis`, each seeing the other two.
async fn fleet_of_three(redis: &RedisServer) -> Vec<Gateway> {
    let url = redis.url();
    let gws = start_fleet(3, &[("REDIS_URL", url.as_str()), ("HEARTBEAT_INTERVAL_MS", "200")]).await;
    wait_all_connected(&gws).await;
    for gw in &gws {
        gw.wait_stats("3 instances", |s| s["total_instances"] == 3).await;
    }
    gws
}

#[tokio::test]
async fn in_a_fleet_disconnect_reaches_every_instance_and_counts_them_all() {
    let redis = RedisServer::start().await;
    let gws = fleet_of_three(&redis).await;
    let mut alice = Vec::new();
    for (i, n) in [(0, 1), (1, 1), (2, 2)] {
        for _ in 0..n {
            alice.push(connect_user(&gws[i], "alice").await);
        }
    }
    let mut bob = connect_user(&gws[1], "bob").await;
    let admin = admin_token(&gws[0].secret);
    let started = Instant::now();
    let (status, v) = admin_post(&gws[0], "/api/users/alice/disconnect", Some(&admin), None).await;
    assert_eq!((status, v.clone()), (200, json!({"user": "alice", "disconnected": 4})), "{}", fleet_logs(&gws));
    for c in &mut alice {
        assert_eq!(c.expect_close(STEP).await, 4001);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "every instance closed within 2 s: {:?}", started.elapsed());
    bob.assert_alive().await;
    // Asked of another instance, with reconnect.
    let mut again = connect_user(&gws[0], "alice").await;
    let body = json!({"reconnect": true});
    let (status, v) = admin_post(&gws[2], "/api/users/alice/disconnect", Some(&admin), Some(body)).await;
    assert_eq!((status, v["disconnected"].clone()), (200, json!(1)), "{v}");
    assert_eq!(again.expect_close(STEP).await, 1012);
}

#[tokio::test]
async fn in_a_fleet_channels_sum_every_instance_and_history_reads_the_shared_stream() {
    let redis = RedisServer::start().await;
    let gws = fleet_of_three(&redis).await;
    let secret = gws[0].secret.clone();
    let token = channel_token(&secret, "alice", &["room:*"]);
    let mut c0 = connect_channels(&gws[0], &token, "room:1").await;
    c0.expect_subscribed_frame("room:1").await;
    let mut c1 = connect_channels(&gws[1], &token, "room:1,room:2").await;
    c1.expect_subscribed_frame("room:1").await;
    c1.expect_subscribed_frame("room:2").await;
    let mut c2 = connect_channels(&gws[2], &token, "room:1").await;
    c2.expect_subscribed_frame("room:1").await;
    let admin = admin_token(&secret);
    let want = json!({"channels": [{"channel": "room:1", "subscribers": 3}, {"channel": "room:2", "subscribers": 1}]});
    wait_until("every instance's channel counts in /api/channels", STEP, || async {
        admin_get(&gws[2], "/api/channels?prefix=room:", Some(&admin)).await.1 == want
    })
    .await;
    c1.expect_unsubscribed("room:2").await;
    let want = json!({"channels": [{"channel": "room:1", "subscribers": 3}]});
    wait_until("room:2 to leave /api/channels", STEP, || async {
        admin_get(&gws[0], "/api/channels?prefix=room:", Some(&admin)).await.1 == want
    })
    .await;

    // A batch through gw0 reaches a client of gw2 in order; gw1's history shows it.
    let mut reader = connect_user(&gws[2], "reader").await;
    let events: Vec<Value> = (0..10).map(|i| json!({"type": "b", "data": {"i": i}})).collect();
    let (status, v, _) = batch(&gws[0], &publish_token(&secret), json!({ "events": events }), None).await;
    assert_eq!(status, 202, "{v}");
    let ids = ids_of(&v);
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(reader.expect_event("b").await);
    }
    let seen: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(seen, ids.iter().map(String::as_str).collect::<Vec<_>>(), "the batch in order on another instance");
    let (status, h) = admin_get(&gws[1], "/api/history?limit=10", Some(&admin)).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["events"], Value::Array(got), "history on another instance: the frames clients got");
    assert_eq!(h["last_id"], ids[9].as_str());
    let (_, h) = admin_get(&gws[1], &format!("/api/history?since={}&limit=3", ids[6]), Some(&admin)).await;
    let page: Vec<&str> = h["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(page, [ids[7].as_str(), ids[8].as_str(), ids[9].as_str()]);
}
