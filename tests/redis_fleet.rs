//! Many instances, one audience: real gateways sharing a real Redis.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const HB: &str = "200"; // heartbeat period for these tests, ms
/// For the test that times the heartbeat's expiry.
const SLOW_HB: &str = "700";

/// `n` instances of one fleet: one shared `JWT_SECRET`, instance ids `gw0`.., a fast heartbeat,
/// plus `env` (at least `REDIS_URL`).
async fn fleet(n: usize, env: &[(&str, &str)]) -> Vec<Gateway> {
    let mut all = vec![("HEARTBEAT_INTERVAL_MS", HB)];
    all.extend_from_slice(env);
    start_fleet(n, &all).await
}

async fn gateways(redis_url: &str, n: usize) -> Vec<Gateway> {
    fleet(n, &[("REDIS_URL", redis_url)]).await
}

async fn all_connected(gws: &[Gateway]) {
    wait_all_connected(gws).await
}

/// An event of type `kind` published on `from` reaches a user connected to `to`.
async fn crosses(from: &Gateway, to: &Gateway, kind: &str) {
    let mut client = connect_user(to, "crossing").await;
    publish_ok(from, &publish_token(&from.secret), json!({"type": kind})).await;
    client.expect_event(kind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_three_instances_exactly_once() {
    let redis = RedisServer::start().await;
    let gws = gateways(&redis.url(), 3).await;
    all_connected(&gws).await;
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for g in &gws {
        alices.push(connect_user(g, "alice").await);
        bobs.push(connect_user(g, "bob").await);
    }
    // One publish token for the whole fleet (the instances share their secret).
    let token = publish_token(&gws[0].secret);
    // A broadcast from gw0, then a targeted event and a broadcast marker from gw1.
    publish_ok(&gws[0], &token, json!({"type": "everyone"})).await;
    // Each instance delivers its own events at once and others' when its subscriber hands them
    // over, so events from two instances have no order unless one causally follows the other:
    // gw1 publishes only once the broadcast has reached every client (as its first event).
    for c in alices.iter_mut().chain(bobs.iter_mut()) {
        c.expect_event("everyone").await;
    }
    publish_ok(&gws[1], &token, json!({"type": "alice-only", "users": ["alice"]})).await;
    publish_ok(&gws[1], &token, json!({"type": "marker"})).await;
    for a in &mut alices {
        assert_eq!(a.types_until("marker").await, ["alice-only", "marker"]);
    }
    for b in &mut bobs {
        assert_eq!(b.types_until("marker").await, ["marker"]);
    }
    // Nothing arrives twice.
    let mut all: Vec<&mut WsClient> = alices.iter_mut().chain(bobs.iter_mut()).collect();
    expect_all_quiet(&mut all, QUIET_WINDOW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_sum_the_fleet_and_a_killed_instance_drops_out() {
    let redis = RedisServer::start().await;
    // A heartbeat slow enough that "within 3 periods" (2.1 s) is not a race with two loaded
    // cores; the other tests keep the fast one.
    let mut gws = fleet(3, &[("REDIS_URL", &redis.url()), ("HEARTBEAT_INTERVAL_MS", SLOW_HB)]).await;
    all_connected(&gws).await;
    let _c = [connect_user(&gws[0], "a").await, connect_user(&gws[1], "b").await, connect_user(&gws[1], "c").await];
    let _d = [connect_user(&gws[2], "d").await, connect_user(&gws[2], "d").await, connect_user(&gws[2], "e").await];
    for g in &gws {
        let s = g
            .wait_stats("6 connections on 3 instances", |s| s["total_connections"] == 6 && s["total_instances"] == 3)
            .await;
        assert_eq!(s["redis_enabled"], true, "{s}");
    }
    let (status, local) = gws[2].get_json("/ws/stats").await;
    assert_eq!(status, 200, "{local}");
    assert_eq!(local["local_connections"], 3, "{local}");
    assert_eq!(local["local_users"], 2, "{local}");
    // The heartbeat key of the contract holds the counts as JSON.
    let hb: serde_json::Value = serde_json::from_str(&redis.cli(&["GET", "websocket:instance:gw2"]).await).unwrap();
    assert_eq!(hb["connections"], 3, "{hb}");

    let killed_at = Instant::now();
    gws[2].sigkill().await;
    let s = gws[0].wait_stats("the killed instance gone", |s| s["total_instances"] == 2).await;
    assert_eq!(s["total_connections"], 3, "{s}");
    // Within 3 heartbeat periods (plus the stats cache and the poll).
    let hb: u64 = SLOW_HB.parse().unwrap();
    assert!(killed_at.elapsed() < Duration::from_millis(3 * hb + 500), "{:?}", killed_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_the_heartbeat_at_once() {
    let redis = RedisServer::start().await;
    let mut gws = gateways(&redis.url(), 2).await;
    all_connected(&gws).await;
    gws[0].wait_stats("2 instances", |s| s["total_instances"] == 2).await;
    assert_eq!(redis.cli(&["EXISTS", "websocket:instance:gw1"]).await, "1");
    gws[1].sigterm();
    assert!(gws[1].wait_exit(STEP).await.expect("exit after SIGTERM").success());
    assert_eq!(redis.cli(&["EXISTS", "websocket:instance:gw1"]).await, "0", "heartbeat key left behind");
    assert_eq!(redis.cli(&["HEXISTS", "websocket:instances", "gw1"]).await, "0");
    // And out of the totals.
    let s = gws[0].wait_stats("1 instance", |s| s["total_instances"] == 1).await;
    assert_eq!(s["total_connections"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_local_delivery_and_resumes_cross_instance() {
    let mut redis = RedisServer::start().await;
    let gws = gateways(&redis.url(), 2).await;
    all_connected(&gws).await;
    let token = publish_token(&gws[0].secret);
    let mut a = connect_user(&gws[0], "a").await;
    let mut b = connect_user(&gws[1], "b").await;

    redis.kill();
    gws[0].wait_redis_state("disconnected").await;
    gws[0].wait_log("Redis connection lost, delivering locally").await;
    // Local delivery goes on during the outage; the other instance gets the event once Redis
    // is back (the outbox), and the local client does not get it twice.
    publish_ok(&gws[0], &token, json!({"type": "during-outage"})).await;
    a.expect_event("during-outage").await;
    b.expect_quiet(QUIET_WINDOW).await;
    let (_, h) = gws[0].get_json("/health").await;
    assert_eq!((h["mode"].as_str(), h["redis"]["state"].as_str()), (Some("redis"), Some("disconnected")), "{h}");

    redis.restart().await;
    all_connected(&gws).await;
    gws[1].wait_log("Redis reconnected, cross-instance delivery resumed").await;
    // Cross-instance delivery is back, in both directions, with no restart.
    publish_ok(&gws[0], &token, json!({"type": "after-0"})).await;
    publish_ok(&gws[1], &token, json!({"type": "after-1"})).await;
    // This Redis keeps nothing: it came back empty, so both connections are told to resync
    // (events accepted just before the kill may be gone), then everything after arrives once.
    assert_eq!(a.types_until("after-1").await, ["resync", "after-0", "after-1"]);
    assert_eq!(b.types_until("after-1").await, ["resync", "during-outage", "after-0", "after-1"]);
    assert_eq!(gws[0].metric("wsgate_redis_publish_failures_total").await, 1.0);
    // Every transition is logged once.
    assert_eq!(gws[0].logs().matches("Redis connection lost").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_started_before_redis_join_when_it_appears() {
    // Held (connections to it are refused) until Redis starts on it.
    let hold = PortHold::new();
    let url = format!("redis://127.0.0.1:{}", hold.port());
    let gws = gateways(&url, 2).await;
    for g in &gws {
        let (_, h) = g.get_json("/health").await;
        assert_eq!(h["redis"]["state"], "connecting", "{h}");
    }
    // Not ready during the start-up wait (the instance does not follow the fleet yet)...
    assert_eq!(gws[0].get_json("/ready").await.0, 503);
    // ...but serving: a connection waits for its `connected` until the wait is over, then the
    // instance serves local clients.
    let token = publish_token(&gws[0].secret);
    let mut a = connect_user(&gws[0], "a").await;
    publish_ok(&gws[0], &token, json!({"type": "local"})).await;
    a.expect_event("local").await;
    gws[0].wait_log("Redis unreachable at start-up").await;
    let (_, h) = gws[0].get_json("/health").await;
    assert_eq!((h["redis"]["state"].as_str(), &h["redis"]["local_only"]), (Some("connecting"), &json!(true)), "{h}");
    assert_eq!(gws[0].get_json("/ready").await.0, 200, "serving local-only after the start-up wait");

    let _redis = RedisServer::start_on(hold, &[]).await;
    all_connected(&gws).await;
    gws[0].wait_log("Redis pub/sub initialized").await;
    let (_, h) = gws[0].get_json("/health").await;
    assert_eq!(h["redis"]["local_only"], false, "{h}");
    let mut b = connect_user(&gws[1], "b").await;
    publish_ok(&gws[0], &token, json!({"type": "shared"})).await;
    b.expect_event("shared").await;
    // `a` was served while its instance could not see other instances' events: told once.
    let told = a.next_json(STEP).await;
    assert_eq!((&told["type"], &told["reason"]), (&json!("resync"), &json!("redis_unavailable")), "{told}");
    a.expect_event("shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password() {
    // The least a deployment must grant (README "Redis ACL"): these commands, these keys and
    // this channel.
    let acl = [
        "--user",
        "default",
        "off",
        "--user",
        "wsgate",
        "on",
        ">s3cret",
        "~websocket:*",
        "resetchannels",
        "&websocket:broadcast:all",
        "&websocket:ch:*",
        "-@all",
        "+publish",
        "+subscribe",
        "+unsubscribe",
        "+evalsha",
        "+eval",
        "+script|load",
        "+xadd",
        "+xrange",
        "+xrevrange",
        "+xtrim",
        "+time",
        "+get",
        "+set",
        "+del",
        "+hset",
        "+hgetall",
        "+hdel",
        "+ping",
        "+client",
        "+info",
        "+quit",
        "+pexpire",
        "+exists",
        "+xinfo",
        "+ssubscribe",
        "+sunsubscribe",
        "+spublish",
    ];
    let redis = RedisServer::start_args(&acl).await;
    // Wrong password: the gateway still starts and serves locally, and never shows the password.
    let bad = Gateway::start(&[("REDIS_URL", &format!("redis://wsgate:nope@127.0.0.1:{}", redis.port))]).await;
    let good_url = format!("redis://wsgate:s3cret@127.0.0.1:{}", redis.port);
    let gws = gateways(&good_url, 2).await;
    all_connected(&gws).await;
    crosses(&gws[0], &gws[1], "with-acl").await;
    // A channel (its own stream, Redis channel and presence key) works under the same ACL.
    let token = user_token(&gws[1].secret, "b", 3600);
    let mut b = try_connect(ws_request(&gws[1], &format!("/ws/tasks?token={token}&channels=user:b"), &[]))
        .await
        .expect("upgrade");
    assert_eq!(b.next_json(STEP).await["type"], "subscribed");
    publish_ok(&gws[0], &publish_token(&gws[0].secret), json!({"type": "in-channel", "channel": "user:b"})).await;
    assert_eq!(b.expect_event("in-channel").await["channel"], "user:b");
    // Presence written by gw1 is read through gw0 (HSET, PEXPIRE, HGETALL under the ACL).
    wait_until("presence of b across the fleet", STEP, || async {
        let r = gws[0]
            .http()
            .get(gws[0].http_url("/api/channels/user:b/presence"))
            .bearer_auth(publish_token(&gws[0].secret))
            .send()
            .await
            .expect("presence");
        let (status, v) = response_json(r).await;
        status == 200 && v["users"] == json!([{"user": "b", "connections": 1}])
    })
    .await;
    assert!(!gws[1].logs().contains("NOPERM"), "{}", gws[1].logs());
    assert!(gws[0].logs().contains("redis://wsgate:***@127.0.0.1"), "{}", gws[0].logs());
    assert!(!gws[0].logs().contains("s3cret"), "{}", gws[0].logs());
    let (_, h) = bad.get_json("/health").await;
    assert_eq!(h["redis"]["state"], "connecting", "{h}");
    assert!(!bad.logs().contains("nope"), "{}", bad.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass() {
    let redis = RedisServer::start_args(&["--requirepass", "pw"]).await;
    let url = format!("redis://:pw@127.0.0.1:{}", redis.port);
    let gws = gateways(&url, 2).await;
    all_connected(&gws).await;
    crosses(&gws[1], &gws[0], "pw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_of_three_masters() {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(RedisServer::start_cluster_node().await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    nodes[0].cli(&create).await;
    // Wait for the cluster to agree on its slots.
    wait_until("cluster_state:ok", STEP, || async {
        nodes[0].cli(&["CLUSTER", "INFO"]).await.contains("cluster_state:ok")
    })
    .await;
    let url = format!("redis-cluster://{}?node={}&node={}", addrs[0], addrs[1], addrs[2]);
    let gws = gateways(&url, 3).await;
    all_connected(&gws).await;
    let mut clients = Vec::new();
    for g in &gws {
        clients.push(connect_user(g, "u").await);
    }
    publish_ok(&gws[2], &publish_token(&gws[2].secret), json!({"type": "clustered"})).await;
    for c in &mut clients {
        c.expect_event("clustered").await;
    }
    let mut all: Vec<&mut WsClient> = clients.iter_mut().collect();
    expect_all_quiet(&mut all, QUIET_WINDOW).await;
    gws[0].wait_stats("3 instances in the cluster", |s| s["total_instances"] == 3 && s["total_connections"] == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_over_tls() {
    let dir = TempDir::new("tls");
    let tls = make_tls_files(dir.path()).await;
    let (ca, cert, key) = (tls.ca.to_str().unwrap(), tls.cert.to_str().unwrap(), tls.key.to_str().unwrap());
    let tls_args =
        [["--tls-cert-file", cert], ["--tls-key-file", key], ["--tls-ca-cert-file", ca], ["--tls-auth-clients", "no"]];
    let redis = RedisServer::start_tls(tls_args.as_flattened()).await;
    let url = format!("rediss://127.0.0.1:{}", redis.tls_port().expect("a TLS port"));
    // The system CA store is read through SSL_CERT_FILE: point it at the test CA.
    let gws = fleet(2, &[("REDIS_URL", &url), ("SSL_CERT_FILE", ca)]).await;
    all_connected(&gws).await;
    crosses(&gws[0], &gws[1], "over-tls").await;
}
