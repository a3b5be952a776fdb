//! An open connection whose token expires is closed with 1008 at expiry: `exp` plus the
//! JWT_LEEWAY_SECS the handshake allowed (so a token accepted within the leeway is not closed
//! the moment it connects).

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_with_1008_at_exp_and_spares_the_others() {
    let gw = Gateway::start(&[("JWT_LEEWAY_SECS", "0")]).await;
    let exp = now_secs() + 2;
    let mut short = connect(&gw, &token_with(&gw.secret, json!({"sub": "short", "exp": exp}))).await;
    let mut long = connect_user(&gw, "long").await;

    assert_eq!(short.expect_close(Duration::from_secs(6)).await, 1008);
    let closed_at = now_ms();
    let exp_ms = exp * 1000;
    assert!(closed_at >= exp_ms, "closed {} ms before exp", exp_ms - closed_at);
    // Waited for as an event (expect_close); the bound only tells "at exp" from "at exp plus a
    // leeway of seconds", with room for two loaded cores.
    assert!(closed_at < exp_ms + 2500, "closed {} ms after exp (leeway applied?)", closed_at - exp_ms);
    gw.wait_metric("wsgate_disconnects_total{reason=\"token_expired\"}", 1.0).await;
    long.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_leeway_also_holds_for_the_open_connection() {
    let gw = Gateway::start(&[("JWT_LEEWAY_SECS", "2")]).await;
    // Already expired by a second: accepted within the leeway, and kept until exp + leeway.
    let exp = now_secs() - 1;
    let mut c = connect(&gw, &token_with(&gw.secret, json!({"sub": "skewed", "exp": exp}))).await;
    assert_eq!(c.expect_close(Duration::from_secs(6)).await, 1008);
    let closed_at = now_ms();
    let deadline_ms = (exp + 2) * 1000;
    assert!(closed_at >= deadline_ms, "closed {} ms before exp + leeway", deadline_ms - closed_at);
    assert!(closed_at < deadline_ms + 2500, "closed {} ms after exp + leeway", closed_at - deadline_ms);
}
