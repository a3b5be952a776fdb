//! Channels across a fleet sharing a real Redis: an event reaches exactly its channel's
//! subscribers on every instance, Redis sends channel traffic only to instances with
//! subscribers (`PUBSUB NUMSUB`, the instances' own counters), the delayed unsubscribe,
//! presence across instances and its expiry after SIGKILL, per-channel order, a subscribe made
//! while Redis is away, and sharded pub/sub on a 3-master Cluster.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const HB: u64 = 200; // heartbeat period for these tests, ms
/// For the test that times presence's expiry.
const SLOW_HB: u64 = 700;
const DELAY: u64 = 300; // CHANNEL_UNSUBSCRIBE_DELAY_MS for these tests
/// After the last event that must arrive (or a marker): see [`expect_only_marker`].
const QUIET: Duration = QUIET_WINDOW;

/// `n` instances on `redis_url`: one `JWT_SECRET`, instance ids `gw0`.., a fast heartbeat, a
/// short unsubscribe delay, plus `env` (which wins). Returns once every instance reports
/// Redis connected.
async fn fleet_on(redis_url: &str, n: usize, env: &[(&str, &str)]) -> Vec<Gateway> {
    let (hb, delay) = (HB.to_string(), DELAY.to_string());
    let mut all = vec![
        ("HEARTBEAT_INTERVAL_MS", hb.as_str()),
        ("CHANNEL_UNSUBSCRIBE_DELAY_MS", delay.as_str()),
        ("REDIS_URL", redis_url),
    ];
    all.extend_from_slice(env);
    let gws = start_fleet(n, &all).await;
    wait_all_connected(&gws).await;
    gws
}

async fn fleet(redis: &RedisServer, n: usize) -> Vec<Gateway> {
    fleet_on(&redis.url(), n, &[]).await
}

/// Connects `sub` (allowed every channel of these tests) to `gw` and subscribes `channels`.
async fn subscriber(gw: &Gateway, sub: &str, channels: &[&str]) -> WsClient {
    let mut c = connect(gw, &member_token(gw, sub)).await;
    for ch in channels {
        c.expect_subscribed(ch).await;
    }
    c
}

fn member_token(gw: &Gateway, sub: &str) -> String {
    channel_token(&gw.secret, sub, &["project:*", "room:*", "ord:*", "late:*", "busy:*"])
}

/// The next frame must be the channel event `kind` of `channel`; returns it.
async fn expect_channel_event(c: &mut WsClient, channel: &str, kind: &str) -> Value {
    let v = c.next_json(STEP).await;
    assert_eq!((&v["type"], &v["channel"]), (&json!(kind), &json!(channel)), "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_event_reaches_exactly_its_subscribers_on_every_instance() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 3).await;
    let token = publish_token(&gws[0].secret);
    let mut subs = Vec::new();
    let mut others = Vec::new();
    for (i, g) in gws.iter().enumerate() {
        subs.push(subscriber(g, &format!("s{i}"), &["project:42"]).await);
        // The same user, not subscribed; and a subscriber of another channel.
        others.push(subscriber(g, &format!("s{i}"), &[]).await);
        others.push(subscriber(g, &format!("o{i}"), &["project:43"]).await);
    }
    // Every instance subscribed before answering `subscribed`.
    assert_eq!(numsub(&redis, &redis_channel("project:42")).await, 3);

    let data = json!({"k": [1, 2, {"x": null}]});
    let id = publish_ok(&gws[1], &token, json!({"type": "upd", "channel": "project:42", "data": data})).await;
    for s in &mut subs {
        let v = expect_channel_event(s, "project:42", "upd").await;
        assert_eq!((&v["id"], &v["data"]), (&json!(id), &data), "{v}");
    }
    // Nobody else, and nothing twice.
    let mut all: Vec<&mut WsClient> = subs.iter_mut().chain(others.iter_mut()).collect();
    expect_only_marker(&gws[1], &mut all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_user_events_still_reach_subscribers_and_others_alike() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2).await;
    let token = publish_token(&gws[0].secret);
    let mut a = subscriber(&gws[0], "alice", &["project:1"]).await;
    let mut b = subscriber(&gws[1], "bob", &[]).await;
    publish_ok(&gws[0], &token, json!({"type": "everyone"})).await;
    for c in [&mut a, &mut b] {
        let v = c.expect_event("everyone").await;
        assert!(v.get("channel").is_none(), "a broadcast carries no channel: {v}");
    }
    publish_ok(&gws[0], &token, json!({"type": "for-bob", "users": ["bob"]})).await;
    publish_ok(&gws[1], &token, json!({"type": "for-alice", "users": ["alice"]})).await;
    let v = b.expect_event("for-bob").await;
    assert!(v.get("channel").is_none(), "{v}");
    let v = a.expect_event("for-alice").await;
    assert!(v.get("channel").is_none(), "{v}");
    expect_only_marker(&gws[0], &mut [&mut a, &mut b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_subscribers_gets_no_redis_traffic_for_the_channel() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 3).await;
    let token = publish_token(&gws[0].secret);
    let mut s0 = subscriber(&gws[0], "a", &["busy:1"]).await;
    let mut s1 = subscriber(&gws[1], "b", &["busy:1"]).await;
    // gw2 has a client, subscribed to another channel only.
    let mut idle = subscriber(&gws[2], "c", &["busy:2"]).await;

    assert_eq!(numsub(&redis, &redis_channel("busy:1")).await, 2, "gw0 and gw1 only");
    assert_eq!(numsub(&redis, &redis_channel("busy:2")).await, 1, "gw2 only");
    assert_eq!(gws[2].metric("wsgate_redis_channel_subscriptions").await, 1.0);
    for g in &gws[..2] {
        assert_eq!(g.metric("wsgate_redis_channel_subscriptions").await, 1.0, "{}", g.addr);
    }
    let received = "wsgate_redis_messages_received_total";
    let before = [gws[0].metric(received).await, gws[2].metric(received).await];

    // 20 events to busy:1, published through gw2 itself.
    const N: usize = 20;
    for i in 0..N {
        publish_ok(&gws[2], &token, channel_seq_event("busy:1", "e", i)).await;
    }
    let want: Vec<u64> = (0..N as u64).collect();
    assert_eq!(s0.read_seqs(N).await, want);
    assert_eq!(s1.read_seqs(N).await, want);
    // gw0 received the events over Redis; gw2, which published them, received nothing at all.
    let after = [gws[0].metric(received).await, gws[2].metric(received).await];
    assert!(after[0] - before[0] >= N as f64, "gw0 received {} Redis messages for {N} events", after[0] - before[0]);
    assert_eq!(after[1], before[1], "gw2 has no subscriber of busy:1 but received Redis messages");
    // Nor did its client get any; the marker (a broadcast) is then gw2's one Redis message.
    expect_only_marker(&gws[2], &mut [&mut idle]).await;
    assert_eq!(gws[2].metric(received).await, before[1] + 1.0, "gw2: the marker only");
    assert_eq!(numsub(&redis, &redis_channel("busy:1")).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_local_subscriber_leaving_unsubscribes_after_the_delay() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 1).await;
    let ch = redis_channel("room:1");
    let mut a = subscriber(&gws[0], "a", &["room:1"]).await;
    let b = subscriber(&gws[0], "b", &["room:1"]).await;
    assert_eq!(numsub(&redis, &ch).await, 1);

    // One local subscriber left: the Redis subscription stays, well past the delay.
    a.expect_unsubscribed("room:1").await;
    tokio::time::sleep(Duration::from_millis(2 * DELAY)).await;
    assert_eq!(numsub(&redis, &ch).await, 1, "unsubscribed from Redis while a local subscriber remains");

    // The last one disconnects: unsubscribed, but not before the delay.
    let left = Instant::now();
    drop(b);
    wait_until("NUMSUB room:1 == 0", STEP, || async { numsub(&redis, &ch).await == 0 }).await;
    let took = left.elapsed();
    assert!(took >= Duration::from_millis(DELAY - 20), "unsubscribed {took:?} after the last leave (delay {DELAY} ms)");
    gws[0].wait_metric("wsgate_redis_channel_subscriptions", 0.0).await;

    // And an explicit unsubscribe of the last one does the same.
    a.expect_subscribed("room:1").await;
    assert_eq!(numsub(&redis, &ch).await, 1);
    a.expect_unsubscribed("room:1").await;
    wait_until("NUMSUB room:1 == 0 after unsubscribe", STEP, || async { numsub(&redis, &ch).await == 0 }).await;
}

/// Asserts, until `until`, that `ch` keeps exactly one Redis subscriber (gw's own).
async fn assert_subscribed_until(redis: &RedisServer, gw: &Gateway, ch: &str, until: Instant) {
    while Instant::now() < until {
        assert_eq!(numsub(redis, ch).await, 1, "the Redis subscription of {ch} flapped");
        assert_eq!(gw.metric("wsgate_redis_channel_subscriptions").await, 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_within_the_delay_keeps_the_redis_subscription() {
    let redis = RedisServer::start().await;
    let delay = 1000u64;
    let gws = fleet_on(&redis.url(), 1, &[("CHANNEL_UNSUBSCRIBE_DELAY_MS", &delay.to_string())]).await;
    let ch = redis_channel("room:flap");
    let mut a = subscriber(&gws[0], "a", &["room:flap"]).await;
    a.expect_unsubscribed("room:flap").await;
    let left = Instant::now();
    // Kept during the delay...
    assert_subscribed_until(&redis, &gws[0], &ch, left + Duration::from_millis(200)).await;
    a.expect_subscribed("room:flap").await;
    // ...and, once rejoined, through and past the moment the leave's delay ran out.
    assert_subscribed_until(&redis, &gws[0], &ch, left + Duration::from_millis(delay + 500)).await;
    // Still delivered.
    publish_ok(&gws[0], &publish_token(&gws[0].secret), channel_event("room:flap", "still")).await;
    expect_channel_event(&mut a, "room:flap", "still").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsubscribe_delay_counts_from_the_last_leave() {
    let redis = RedisServer::start().await;
    let delay = 600u64;
    let gws = fleet_on(&redis.url(), 1, &[("CHANNEL_UNSUBSCRIBE_DELAY_MS", &delay.to_string())]).await;
    let ch = redis_channel("room:again");
    let mut a = subscriber(&gws[0], "a", &["room:again"]).await;
    // Leave, rejoin late in the delay, leave again: the second leave starts a full delay.
    a.expect_unsubscribed("room:again").await;
    tokio::time::sleep(Duration::from_millis(delay * 2 / 3)).await;
    a.expect_subscribed("room:again").await;
    a.expect_unsubscribed("room:again").await;
    let left = Instant::now();
    wait_until("NUMSUB room:again == 0", STEP, || async { numsub(&redis, &ch).await == 0 }).await;
    let took = left.elapsed();
    assert!(
        took >= Duration::from_millis(delay - 20),
        "unsubscribed from Redis {took:?} after the last leave (delay {delay} ms): the first leave's timer fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_the_fleet_and_a_killed_instance_expires() {
    let redis = RedisServer::start().await;
    // A heartbeat slow enough that "within 3 periods" (2.1 s) is not a race with two loaded
    // cores.
    let slow_hb = SLOW_HB.to_string();
    let mut gws = fleet_on(&redis.url(), 3, &[("HEARTBEAT_INTERVAL_MS", &slow_hb)]).await;
    let token = publish_token(&gws[0].secret);
    let _carol = subscriber(&gws[2], "carol", &["room:p"]).await;
    let _alice = [
        subscriber(&gws[0], "alice", &["room:p"]).await,
        subscriber(&gws[1], "alice", &["room:p"]).await,
        subscriber(&gws[1], "alice", &["room:p"]).await,
    ];
    let _bob = subscriber(&gws[1], "bob", &["room:p"]).await;
    let _dave = subscriber(&gws[0], "dave", &["room:other"]).await;

    let all = presence_body("room:p", &[("alice", 3), ("bob", 1), ("carol", 1)]);
    for g in &gws {
        wait_presence(g, &token, "room:p", &all, STEP).await;
    }

    let killed_at = Instant::now();
    gws[2].sigkill().await;
    let without_carol = presence_body("room:p", &[("alice", 3), ("bob", 1)]);
    for g in &gws[..2] {
        wait_presence(g, &token, "room:p", &without_carol, STEP).await;
    }
    // Within about 3 heartbeat periods (plus polling and caches).
    let took = killed_at.elapsed();
    assert!(took < Duration::from_millis(3 * SLOW_HB + 1000), "a dead instance's presence lingered {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reflects_a_clean_leave_within_a_heartbeat() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2).await;
    let token = publish_token(&gws[0].secret);
    let mut alice0 = subscriber(&gws[0], "alice", &["room:q"]).await;
    let _alice1 = subscriber(&gws[1], "alice", &["room:q"]).await;
    let bob = subscriber(&gws[1], "bob", &["room:q"]).await;
    wait_presence(&gws[0], &token, "room:q", &presence_body("room:q", &[("alice", 2), ("bob", 1)]), STEP).await;

    let margin = Duration::from_millis(HB + 500);
    alice0.expect_unsubscribed("room:q").await;
    let took =
        wait_presence(&gws[1], &token, "room:q", &presence_body("room:q", &[("alice", 1), ("bob", 1)]), STEP).await;
    assert!(took < margin, "an unsubscribe took {took:?} to show in presence");
    drop(bob);
    let took = wait_presence(&gws[0], &token, "room:q", &presence_body("room:q", &[("alice", 1)]), STEP).await;
    assert!(took < margin, "a disconnect took {took:?} to show in presence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_order_holds_across_instances() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 3).await;
    let token = publish_token(&gws[0].secret);
    // ord:a is published through gw0, ord:b through gw1, at the same time; subscribers on every
    // instance, local and remote to each publisher.
    let mut both = subscriber(&gws[2], "x", &["ord:a", "ord:b"]).await;
    let mut b_on_0 = subscriber(&gws[0], "y", &["ord:b"]).await;
    let mut a_on_1 = subscriber(&gws[1], "z", &["ord:a"]).await;
    let mut a_on_0 = subscriber(&gws[0], "w", &["ord:a"]).await;
    const N: usize = 200;
    async fn publish_all(gw: &Gateway, token: &str, ch: &str) {
        for i in 0..N {
            publish_ok(gw, token, channel_seq_event(ch, "e", i)).await;
        }
    }
    tokio::join!(publish_all(&gws[0], &token, "ord:a"), publish_all(&gws[1], &token, "ord:b"));

    let want: Vec<u64> = (0..N as u64).collect();
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
    assert_eq!(a, want, "ord:a on gw2; logs:\n{}", fleet_logs(&gws));
    assert_eq!(b, want, "ord:b on gw2; logs:\n{}", fleet_logs(&gws));
    assert_eq!(b_on_0.read_seqs(N).await, want, "ord:b on gw0");
    assert_eq!(a_on_1.read_seqs(N).await, want, "ord:a on gw1");
    assert_eq!(a_on_0.read_seqs(N).await, want, "ord:a on gw0 (its publisher)");
    for c in [&mut both, &mut b_on_0, &mut a_on_1, &mut a_on_0] {
        c.expect_quiet(QUIET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_instance_replays_missed_channel_events_in_id_order() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2).await;
    let token = publish_token(&gws[0].secret);
    let alice = channel_token(&gws[0].secret, "alice", &["x", "y"]);
    let mut before = connect_channels(&gws[0], &alice, "x").await;
    before.expect_subscribed_frame("x").await;
    publish_ok(&gws[0], &token, json!({"type": "seen-before"})).await;
    before.expect_event("seen-before").await;
    publish_ok(&gws[0], &token, channel_seq_event("x", "e", 0)).await;
    let last = before.expect_event("e").await["id"].as_str().expect("id").to_owned();
    drop(before);

    // Missed: published through both instances, one after the other.
    let x1 = publish_ok(&gws[1], &token, channel_seq_event("x", "e", 1)).await;
    publish_ok(&gws[0], &token, channel_seq_event("y", "e", 2)).await; // not resumed
    let all = publish_ok(&gws[0], &token, json!({"type": "e", "data": {"seq": 3}})).await;
    let mine = publish_ok(&gws[1], &token, json!({"type": "e", "data": {"seq": 4}, "users": ["alice"]})).await;
    publish_ok(&gws[1], &token, json!({"type": "e", "data": {"seq": 5}, "users": ["bob"]})).await;
    let x6 = publish_ok(&gws[0], &token, channel_seq_event("x", "e", 6)).await;
    let ids = [&x1, &all, &mine, &x6];
    for w in ids.windows(2) {
        assert!(stream_id(w[0]) < stream_id(w[1]), "ids not ordered across channels: {} then {}", w[0], w[1]);
    }

    let mut c = connect_channels_since(&gws[1], &alice, "x", &last).await;
    assert_eq!(c.recovered(), Some(&json!(true)), "{}", c.connected);
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
    // Then live, from the other instance.
    publish_ok(&gws[0], &token, channel_seq_event("x", "e", 7)).await;
    assert_eq!(c.read_seqs(1).await, [7]);
    c.expect_quiet(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_a_channel_event_when_only_channel_events_were_missed() {
    // The common case on a busy channel: the last event the client saw, and every one it
    // missed, are channel events newer than the last broadcast.
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2).await;
    let token = publish_token(&gws[0].secret);
    let alice = channel_token(&gws[0].secret, "alice", &["x"]);
    let mut before = connect_channels(&gws[0], &alice, "x").await;
    before.expect_subscribed_frame("x").await;
    publish_ok(&gws[0], &token, json!({"type": "seen-before"})).await;
    before.expect_event("seen-before").await;
    publish_ok(&gws[0], &token, channel_seq_event("x", "e", 0)).await;
    let last = before.expect_event("e").await["id"].as_str().expect("id").to_owned();
    drop(before);
    let missed = [
        publish_ok(&gws[0], &token, channel_seq_event("x", "e", 1)).await,
        publish_ok(&gws[1], &token, channel_seq_event("x", "e", 2)).await,
    ];

    let mut c = connect_channels_since(&gws[1], &alice, "x", &last).await;
    assert_eq!(c.recovered(), Some(&json!(true)), "since={last}: {}", c.connected);
    let (_, events) = c.read_resume("e", 2).await;
    let replay: Vec<Value> = events.iter().map(|v| v["id"].clone()).collect();
    assert_eq!(replay, [json!(missed[0]), json!(missed[1])]);
    expect_only_marker(&gws[0], &mut [&mut c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_made_while_redis_is_away_takes_effect_on_reconnect() {
    let mut redis = RedisServer::start().await;
    let gws = fleet(&redis, 2).await;
    let token = publish_token(&gws[0].secret);
    let ch = redis_channel("late:1");
    let mut c = connect(&gws[1], &member_token(&gws[1], "alice")).await;

    redis.kill();
    for g in &gws {
        g.wait_redis_state("disconnected").await;
    }
    // Answered during the outage, and served locally meanwhile.
    c.expect_subscribed("late:1").await;
    publish_ok(&gws[1], &token, channel_event("late:1", "during")).await;
    expect_channel_event(&mut c, "late:1", "during").await;

    redis.restart().await;
    for g in &gws {
        g.wait_redis_state("connected").await;
    }
    wait_until("gw1 to subscribe late:1 in Redis after the reconnect", STEP, || async {
        numsub(&redis, &ch).await == 1
    })
    .await;
    publish_ok(&gws[0], &token, channel_event("late:1", "from-gw0")).await;
    let frames = within("the cross-instance event", STEP, async {
        let mut frames = Vec::new();
        while frames.last().map(|f: &Value| f["type"] != "from-gw0").unwrap_or(true) {
            frames.push(c.next_json(STEP).await);
        }
        frames
    })
    .await;
    // Redis came back empty (no persistence): the connection, open across the loss, is told
    // to resync once; then the event from gw0, and no second copy of `during`.
    let types: Vec<&Value> = frames.iter().map(|f| &f["type"]).collect();
    assert_eq!(types, [&json!("resync"), &json!("from-gw0")], "{frames:?}");
    assert_eq!(frames[0]["reason"], "redis_data_lost");
    assert_eq!(frames[1]["channel"], "late:1");
    c.expect_quiet(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_channel_events_cross_instances_over_sharded_pubsub() {
    let cluster = RedisCluster::start(3).await;
    let gws = fleet_on(&cluster.url, 3, &[]).await;
    let token = publish_token(&gws[0].secret);
    let ch = redis_channel("project:42");
    let mut s0 = subscriber(&gws[0], "a", &["project:42"]).await;
    let mut s1 = subscriber(&gws[1], "b", &["project:42"]).await;
    let mut idle = subscriber(&gws[2], "c", &[]).await;
    // Sharded subscriptions, on the node owning the slot of the hash tag; no classic ones.
    assert_eq!(cluster.shard_numsub(&ch).await, 2, "SHARDNUMSUB {ch} summed over the nodes");
    assert_eq!(cluster.numsub(&ch).await, 0, "classic SUBSCRIBE used for {ch}");

    // From the instance without subscribers, then (once that has arrived) from gw0.
    for (seq, from) in [(0, 2), (1, 0)] {
        publish_ok(&gws[from], &token, channel_seq_event("project:42", "e", seq)).await;
        for s in [&mut s0, &mut s1] {
            let v = s.next_json(STEP).await;
            assert_eq!((&v["channel"], &v["data"]["seq"]), (&json!("project:42"), &json!(seq)), "{v}");
        }
    }
    expect_only_marker(&gws[1], &mut [&mut s0, &mut s1, &mut idle]).await;
    // The last subscriber of gw1 leaving unsubscribes it there too.
    drop(s1);
    wait_until("SHARDNUMSUB to drop to 1", STEP, || async { cluster.shard_numsub(&ch).await == 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_channels_spread_over_the_shards_that_own_them() {
    let cluster = RedisCluster::start(3).await;
    let gws = fleet_on(&cluster.url, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let names: Vec<String> = (1..=6).map(|i| format!("project:{i}")).collect();
    let mut s = subscriber(&gws[0], "a", &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // Each channel's sharded subscription sits on exactly one node; together they use more
    // than one shard.
    let mut nodes_used = std::collections::BTreeSet::new();
    for name in &names {
        let mut owners = Vec::new();
        for (i, n) in cluster.nodes.iter().enumerate() {
            let out = n.cli(&["PUBSUB", "SHARDNUMSUB", &redis_channel(name)]).await;
            let count: u64 = out.lines().last().and_then(|l| l.trim().parse().ok()).expect("a count");
            if count > 0 {
                owners.push((i, count));
            }
        }
        assert_eq!(owners.len(), 1, "{name}: sharded subscriptions on nodes {owners:?}");
        assert_eq!(owners[0].1, 1, "{name}: one instance subscribes it");
        nodes_used.insert(owners[0].0);
    }
    assert!(nodes_used.len() > 1, "all channels on one shard: {nodes_used:?}");
    // And every one of them delivers (across shards, in any order between channels).
    for (i, name) in names.iter().enumerate() {
        publish_ok(&gws[1], &token, channel_seq_event(name, "e", i)).await;
    }
    let mut got = std::collections::BTreeMap::new();
    for _ in 0..names.len() {
        let v = s.next_json(STEP).await;
        got.insert(v["channel"].as_str().expect("channel").to_owned(), v["data"]["seq"].as_u64().expect("seq"));
    }
    let want: std::collections::BTreeMap<String, u64> =
        names.iter().enumerate().map(|(i, n)| (n.clone(), i as u64)).collect();
    assert_eq!(got, want);
    s.expect_quiet(QUIET).await;
}
