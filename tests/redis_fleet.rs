//! Many instances, one audience: real gateways sharing a real Redis.

mod harness;

use std::time::Duration;

use harness::{wait_stats, Gateway, Redis};
use serde_json::json;

const HB: &str = "200"; // heartbeat period for these tests, ms

fn gateways(redis_url: &str, n: usize) -> Vec<Gateway> {
    (0..n)
        .map(|i| {
            let id = format!("gw{i}");
            Gateway::start(&[("REDIS_URL", redis_url), ("INSTANCE_ID", &id), ("HEARTBEAT_INTERVAL_MS", HB)])
        })
        .collect()
}

async fn all_connected(gws: &[Gateway]) {
    for g in gws {
        g.wait_redis_state("connected").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_three_instances_exactly_once() {
    let redis = Redis::start();
    let gws = gateways(&redis.url(), 3);
    all_connected(&gws).await;
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for g in &gws {
        alices.push(g.connect("alice").await);
        bobs.push(g.connect("bob").await);
    }
    // A broadcast from gw0, a targeted event from gw1, then a broadcast marker from gw2.
    gws[0].publish(json!({"type": "everyone"})).await;
    gws[1].publish(json!({"type": "alice-only", "users": ["alice"]})).await;
    gws[1].publish(json!({"type": "marker"})).await;
    for a in &mut alices {
        assert_eq!(a.types_until("marker").await, ["everyone", "alice-only", "marker"]);
    }
    for b in &mut bobs {
        assert_eq!(b.types_until("marker").await, ["everyone", "marker"]);
    }
    // Nothing arrives twice.
    for c in alices.iter_mut().chain(bobs.iter_mut()) {
        assert!(c.next_within(Duration::from_millis(300)).await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_sum_the_fleet_and_a_killed_instance_drops_out() {
    let redis = Redis::start();
    let mut gws = gateways(&redis.url(), 3);
    all_connected(&gws).await;
    let _c = [gws[0].connect("a").await, gws[1].connect("b").await, gws[1].connect("c").await];
    let _d = [gws[2].connect("d").await, gws[2].connect("d").await, gws[2].connect("e").await];
    for g in &gws {
        let s =
            wait_stats(g, "6 connections on 3 instances", |s| s["total_connections"] == 6 && s["total_instances"] == 3)
                .await;
        assert_eq!(s["redis_enabled"], true);
    }
    assert_eq!(gws[2].get("/ws/stats").await["local_connections"], 3);
    assert_eq!(gws[2].get("/ws/stats").await["local_users"], 2);
    // The heartbeat key of the contract holds the counts as JSON.
    let hb: serde_json::Value = serde_json::from_str(&redis.cli(&["GET", "websocket:instance:gw2"])).unwrap();
    assert_eq!(hb["connections"], 3);

    let killed_at = std::time::Instant::now();
    gws[2].sigkill();
    let s = wait_stats(&gws[0], "the killed instance gone", |s| s["total_instances"] == 2).await;
    assert_eq!(s["total_connections"], 3);
    // Within 3 heartbeat periods (plus the stats cache and the poll).
    assert!(killed_at.elapsed() < Duration::from_millis(3 * 200 + 500), "{:?}", killed_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_the_heartbeat_at_once() {
    let redis = Redis::start();
    let mut gws = gateways(&redis.url(), 2);
    all_connected(&gws).await;
    wait_stats(&gws[0], "2 instances", |s| s["total_instances"] == 2).await;
    assert!(redis.cli(&["EXISTS", "websocket:instance:gw1"]).ends_with('1'));
    gws[1].sigterm();
    assert!(gws[1].wait_exit(harness::WAIT).expect("exit").success());
    assert!(redis.cli(&["EXISTS", "websocket:instance:gw1"]).ends_with('0'), "heartbeat key left behind");
    assert_eq!(redis.cli(&["HEXISTS", "websocket:instances", "gw1"]), "0");
    // And out of the totals.
    let s = wait_stats(&gws[0], "1 instance", |s| s["total_instances"] == 1).await;
    assert_eq!(s["total_connections"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_local_delivery_and_resumes_cross_instance() {
    let mut redis = Redis::start();
    let gws = gateways(&redis.url(), 2);
    all_connected(&gws).await;
    let mut a = gws[0].connect("a").await;
    let mut b = gws[1].connect("b").await;

    redis.kill();
    gws[0].wait_redis_state("disconnected").await;
    gws[0].wait_log("Redis connection lost, delivering locally").await;
    // Local delivery goes on during the outage; the other instance cannot get it.
    gws[0].publish(json!({"type": "during-outage"})).await;
    assert_eq!(a.next().await.unwrap()["type"], "during-outage");
    assert!(b.next_within(Duration::from_millis(300)).await.is_none());
    let h = gws[0].get("/health").await;
    assert_eq!((h["mode"].as_str(), h["redis"]["state"].as_str()), (Some("redis"), Some("disconnected")));

    redis.restart();
    all_connected(&gws).await;
    gws[1].wait_log("Redis reconnected, cross-instance delivery resumed").await;
    // Cross-instance delivery is back, in both directions, with no restart.
    gws[0].publish(json!({"type": "after-0"})).await;
    gws[1].publish(json!({"type": "after-1"})).await;
    assert_eq!(a.types_until("after-1").await, ["after-0", "after-1"]);
    assert_eq!(b.types_until("after-1").await, ["after-0", "after-1"]);
    let m = reqwest::get(format!("http://{}/metrics", gws[0].addr)).await.unwrap().text().await.unwrap();
    let failures = m.lines().find(|l| l.starts_with("wsgate_redis_publish_failures_total")).unwrap();
    assert!(failures.ends_with(" 1"), "{failures}");
    // Every transition is logged once.
    assert_eq!(gws[0].logs().matches("Redis connection lost").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_started_before_redis_join_when_it_appears() {
    let port = harness::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let gws = gateways(&url, 2);
    for g in &gws {
        assert_eq!(g.get("/health").await["redis"]["state"], "connecting");
    }
    // Serving local clients meanwhile.
    let mut a = gws[0].connect("a").await;
    gws[0].publish(json!({"type": "local"})).await;
    assert_eq!(a.next().await.unwrap()["type"], "local");
    gws[0].wait_log("Redis unreachable at start-up").await;

    let _redis = Redis::start_with(port, &[]);
    all_connected(&gws).await;
    gws[0].wait_log("Redis pub/sub initialized").await;
    let mut b = gws[1].connect("b").await;
    gws[0].publish(json!({"type": "shared"})).await;
    assert_eq!(b.next().await.unwrap()["type"], "shared");
    assert_eq!(a.next().await.unwrap()["type"], "shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password() {
    let redis = Redis::start_with(
        harness::free_port(),
        &["--user", "default", "off", "--user", "wsgate", "on", ">s3cret", "~websocket:*", "&websocket:*", "+@all"],
    );
    // Wrong password: the gateway still starts and serves locally, and never shows the password.
    let bad = Gateway::start(&[("REDIS_URL", &format!("redis://wsgate:nope@127.0.0.1:{}", redis.port))]);
    let good_url = format!("redis://wsgate:s3cret@127.0.0.1:{}", redis.port);
    let gws = [
        Gateway::start(&[("REDIS_URL", &good_url), ("HEARTBEAT_INTERVAL_MS", HB)]),
        Gateway::start(&[("REDIS_URL", &good_url), ("HEARTBEAT_INTERVAL_MS", HB)]),
    ];
    all_connected(&gws).await;
    let mut b = gws[1].connect("b").await;
    gws[0].publish(json!({"type": "with-acl"})).await;
    assert_eq!(b.next().await.unwrap()["type"], "with-acl");
    assert!(gws[0].logs().contains("redis://wsgate:***@127.0.0.1"), "{}", gws[0].logs());
    assert!(!gws[0].logs().contains("s3cret"));
    assert_eq!(bad.get("/health").await["redis"]["state"], "connecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass() {
    let redis = Redis::start_with(harness::free_port(), &["--requirepass", "pw"]);
    let url = format!("redis://:pw@127.0.0.1:{}", redis.port);
    let gws = gateways(&url, 2);
    all_connected(&gws).await;
    let mut a = gws[0].connect("a").await;
    gws[1].publish(json!({"type": "pw"})).await;
    assert_eq!(a.next().await.unwrap()["type"], "pw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_of_three_masters() {
    let nodes: Vec<Redis> = (0..3)
        .map(|_| {
            let port = harness::free_port();
            let conf = format!("nodes-{port}.conf");
            Redis::start_with(port, &["--cluster-enabled", "yes", "--cluster-config-file", &conf])
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Wait for the cluster to agree on its slots.
    let deadline = std::time::Instant::now() + harness::WAIT;
    while !nodes[0].cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
        assert!(std::time::Instant::now() < deadline, "cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("redis-cluster://{}?node={}&node={}", addrs[0], addrs[1], addrs[2]);
    let gws = gateways(&url, 3);
    all_connected(&gws).await;
    let mut clients = Vec::new();
    for g in &gws {
        clients.push(g.connect("u").await);
    }
    gws[2].publish(json!({"type": "clustered"})).await;
    for c in &mut clients {
        assert_eq!(c.next().await.unwrap()["type"], "clustered");
        assert!(c.next_within(Duration::from_millis(200)).await.is_none());
    }
    wait_stats(&gws[0], "3 instances in the cluster", |s| s["total_instances"] == 3 && s["total_connections"] == 3)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_over_tls() {
    let dir = std::env::temp_dir().join(format!("wsgate-tls-{}", std::process::id()));
    let (ca, cert, key) = harness::make_tls_files(&dir);
    let tls_port = harness::free_port();
    let redis = Redis::start_with(
        harness::free_port(),
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{tls_port}");
    // The system CA store is read through SSL_CERT_FILE: point it at the test CA.
    let ca_path = ca.to_str().unwrap().to_string();
    let gws: Vec<Gateway> = (0..2)
        .map(|_| Gateway::start(&[("REDIS_URL", &url), ("SSL_CERT_FILE", &ca_path), ("HEARTBEAT_INTERVAL_MS", HB)]))
        .collect();
    all_connected(&gws).await;
    let mut a = gws[1].connect("a").await;
    gws[0].publish(json!({"type": "over-tls"})).await;
    assert_eq!(a.next().await.unwrap()["type"], "over-tls");
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}
