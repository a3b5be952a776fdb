//! The operations endpoints: `/health`, `/ws/stats` and `/metrics` report what is going on.

mod support;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn health_reports_memory_mode_version_uptime_and_redis_disabled() {
    let gw = Gateway::start(&[("INSTANCE_ID", "ops-health-1")]).await;
    let (status, h) = gw.get_json("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["mode"], "memory", "{h}");
    assert_eq!(h["instance_id"], "ops-health-1", "{h}");
    assert!(h["version"].as_str().is_some_and(|v| !v.is_empty()), "version: {h}");
    assert!(h["uptime_secs"].is_u64(), "uptime_secs: {h}");
    // `"redis": "disabled"` or `"redis": {"state": "disabled", ...}`.
    let redis = if h["redis"].is_object() { &h["redis"]["state"] } else { &h["redis"] };
    assert_eq!(redis, "disabled", "{h}");
}

async fn stats(gw: &Gateway) -> Value {
    let (status, s) = gw.get_json("/ws/stats").await;
    assert_eq!(status, 200, "{s}");
    s
}

#[tokio::test]
async fn stats_count_connections_and_users_and_follow_closes() {
    let gw = Gateway::start(&[("INSTANCE_ID", "ops-stats-1")]).await;
    let _a1 = connect_user(&gw, "alice").await;
    let _a2 = connect_user(&gw, "alice").await;
    let mut bob = connect_user(&gw, "bob").await;
    assert_eq!(bob.connected["instance_id"], "ops-stats-1");
    let expected = json!({
        "instance_id": "ops-stats-1", "local_connections": 3, "local_users": 2,
        "redis_enabled": false, "total_instances": 1, "total_connections": 3,
    });
    let s = stats(&gw).await;
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&s[k], v, "/ws/stats {k}: {s}");
    }

    bob.ws.close(None).await.expect("close");
    wait_until("bob's close to show in /ws/stats", STEP, || async {
        let s = stats(&gw).await;
        s["local_connections"] == 2 && s["local_users"] == 1 && s["total_connections"] == 2
    })
    .await;
    assert_eq!(gw.metric("wsgate_connections").await, 2.0);
    assert_eq!(gw.metric("wsgate_users").await, 1.0);
    gw.wait_metric("wsgate_disconnects_total{reason=\"client_closed\"}", 1.0).await;
}

#[tokio::test]
async fn metrics_expose_every_series_and_count_a_publish() {
    let gw = Gateway::start(&[]).await;
    let text = gw.metrics_text().await;
    let mut series: Vec<String> = ["wsgate_connections", "wsgate_users", "wsgate_events_published_total"]
        .into_iter()
        .chain(["wsgate_deliveries_total", "wsgate_slow_consumer_closes_total", "wsgate_publish_enqueue_seconds_count"])
        .map(str::to_owned)
        .collect();
    let auth = ["missing", "malformed", "bad_signature", "expired", "not_yet_valid", "bad_issuer", "bad_audience"];
    let auth = auth.into_iter().chain(["missing_claim", "forbidden"]);
    series.extend(auth.map(|r| format!("wsgate_auth_failures_total{{reason=\"{r}\"}}")));
    let gone = ["client_closed", "shutdown", "slow", "token_expired", "protocol_error", "invalid_payload"];
    let gone = gone.into_iter().chain(["message_rate", "message_too_big", "ping_timeout", "error"]);
    series.extend(gone.map(|r| format!("wsgate_disconnects_total{{reason=\"{r}\"}}")));
    // Every series is there from the start, at zero, so dashboards and alerts see it.
    for s in &series {
        assert_eq!(metric_value(&text, s), Some(0.0), "{s} in a fresh /metrics:\n{text}");
    }
    assert!(text.contains("wsgate_publish_enqueue_seconds histogram"), "enqueue time is a histogram:\n{text}");

    let _a = connect_user(&gw, "alice").await;
    let _b = connect_user(&gw, "bob").await;
    publish_ok(&gw, &publish_token(&gw.secret), json!({"type": "m"})).await;
    // The 202 means "queued for fan-out"; the dispatcher counts the deliveries just after.
    gw.wait_metric("wsgate_publish_enqueue_seconds_count", 1.0).await;
    let text = gw.metrics_text().await;
    for (s, v) in [
        ("wsgate_connections", 2.0),
        ("wsgate_users", 2.0),
        ("wsgate_events_published_total", 1.0),
        ("wsgate_deliveries_total", 2.0),
        ("wsgate_publish_enqueue_seconds_count", 1.0),
        ("wsgate_publish_enqueue_seconds_bucket{le=\"+Inf\"}", 1.0),
    ] {
        assert_eq!(metric_value(&text, s), Some(v), "{s} after one publish to two clients:\n{text}");
    }
    assert!(metric_value(&text, "wsgate_publish_enqueue_seconds_sum").is_some_and(|s| s >= 0.0), "{text}");
}

/// Every `wsgate_*` series a file refers to.
fn series_in(path: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path);
    let mut found = std::collections::BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("wsgate_") {
        let name: String =
            rest[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        // "wsgate_*" in prose is not a series.
        if name.len() > "wsgate_".len() {
            found.insert(name);
        }
    }
    found
}

#[tokio::test]
async fn every_series_the_dashboard_and_the_alerts_query_exists() {
    let redis = RedisServer::start().await;
    let gw = Gateway::start(&[("REDIS_URL", redis.url().as_str())]).await;
    gw.wait_redis_state("connected").await;
    let text = gw.metrics_text().await;
    let exposed = |name: &str| text.lines().any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])));
    for (file, at_least) in [("deploy/grafana/wsgate-dashboard.json", 20), ("helm/wsgate/files/wsgate-alerts.yaml", 8)]
    {
        let wanted = series_in(file);
        assert!(wanted.len() >= at_least, "{file}: only {} series found: {wanted:?}", wanted.len());
        let missing: Vec<_> = wanted.iter().filter(|s| !exposed(s)).collect();
        assert!(missing.is_empty(), "{file} queries series /metrics lacks: {missing:?}\n{text}");
    }
    // The state gauges say what /health says.
    for (series, value) in
        [("wsgate_redis_enabled", 1.0), ("wsgate_redis_connected", 1.0), ("wsgate_redis_local_only", 0.0)]
    {
        assert_eq!(metric_value(&text, series), Some(value), "{series}:\n{text}");
    }
    gw.wait_metric("wsgate_ready", 1.0).await;
    let version = format!("wsgate_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(metric_value(&text, &version), Some(1.0), "{text}");
    drop(redis);
    gw.wait_metric("wsgate_redis_connected", 0.0).await;
}
