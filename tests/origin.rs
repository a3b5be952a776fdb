//! `ALLOWED_ORIGINS`: a listed Origin upgrades, any other is refused with 403, and a request
//! without Origin (a native client, not a browser) is allowed.

mod support;

use support::*;

#[tokio::test]
async fn only_listed_origins_and_origin_less_clients_upgrade() {
    let gw = Gateway::start(&[("ALLOWED_ORIGINS", "https://app.example,https://admin.example")]).await;
    let path = format!("/ws/tasks?token={}", user_token(&gw.secret, "alice", 3600));

    let mut open = Vec::new();
    for origin in [Some("https://app.example"), Some("https://admin.example"), None] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("Origin", *o)).collect();
        let client = try_connect(ws_request(&gw, &path, &headers)).await;
        let client = client.unwrap_or_else(|r| panic!("Origin {origin:?} refused: {r:?}"));
        assert_eq!(client.connected["user"], "alice");
        open.push(client);
    }

    // Scheme and host must match exactly; a suffix trick is not a match.
    for origin in ["https://evil.example", "http://app.example", "https://app.example.evil.example"] {
        let refused = try_connect(ws_request(&gw, &path, &[("Origin", origin)])).await.err();
        let refused = refused.unwrap_or_else(|| panic!("Origin {origin} upgraded"));
        assert_error(origin, &(refused.status, refused.body), 403);
    }
    // Only the three allowed upgrades became connections.
    assert_eq!(gw.metric("wsgate_connections").await, 3.0);
}
