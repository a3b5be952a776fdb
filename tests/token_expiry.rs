//! An open connection whose token expires is closed with 1008 at `exp`: no leeway once the
//! socket is open (JWT_LEEWAY_SECS only forgives clock skew at the handshake).

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_with_1008_at_exp_and_spares_the_others() {
    let gw = Gateway::start(&[]).await;
    let exp = now_secs() + 2;
    let mut short = connect(&gw, &token_with(&gw.secret, json!({"sub": "short", "exp": exp}))).await;
    let mut long = connect_user(&gw, "long").await;

    assert_eq!(short.expect_close(Duration::from_secs(6)).await, 1008);
    let closed_at = now_ms();
    let exp_ms = exp * 1000;
    assert!(closed_at >= exp_ms, "closed {} ms before exp", exp_ms - closed_at);
    assert!(closed_at < exp_ms + 1500, "closed {} ms after exp (leeway applied?)", closed_at - exp_ms);
    gw.wait_metric("wsgate_disconnects_total{reason=\"token_expired\"}", 1.0).await;
    long.assert_alive().await;
}
