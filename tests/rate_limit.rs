//! The per-subject publish rate limit: a burst passes, the next publish gets 429 with
//! `Retry-After`, other subjects are unaffected, the budget refills, and 0 turns it off.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

fn publisher(gw: &Gateway, sub: &str) -> String {
    token_with(&gw.secret, json!({"sub": sub, "exp": now_secs() + 600, "scope": "publish"}))
}

async fn try_publish(gw: &Gateway, token: &str) -> reqwest::Response {
    post_events_response(gw, Some(token), Some("application/json"), br#"{"type": "r"}"#.to_vec()).await
}

#[tokio::test]
async fn the_publish_after_the_burst_gets_429_with_retry_after() {
    let gw = Gateway::start(&[("PUBLISH_RATE_PER_SEC", "1"), ("PUBLISH_BURST", "2")]).await;
    let a = publisher(&gw, "service-a");
    for i in 0..2 {
        assert_eq!(try_publish(&gw, &a).await.status(), 202, "publish {i} is within the burst");
    }
    let refused = try_publish(&gw, &a).await;
    let retry_after = refused.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let retry_after: u64 = retry_after.expect("429 without Retry-After").parse().expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}s for a 1/s rate");
    assert_error("third publish", &response_json(refused).await, 429);

    // The budget is per subject: another service is not held back by this one.
    assert_eq!(try_publish(&gw, &publisher(&gw, "service-b")).await.status(), 202);

    // And it refills: within Retry-After (plus slack) service-a may publish again.
    let limit = Duration::from_secs(retry_after) + Duration::from_secs(2);
    wait_until("service-a's budget to refill", limit, || async { try_publish(&gw, &a).await.status() == 202 }).await;
}

#[tokio::test]
async fn rate_zero_turns_the_limit_off() {
    let gw = Gateway::start(&[("PUBLISH_RATE_PER_SEC", "0"), ("PUBLISH_BURST", "1")]).await;
    let a = publisher(&gw, "service-a");
    for i in 0..30 {
        assert_eq!(try_publish(&gw, &a).await.status(), 202, "publish {i}");
    }
}
