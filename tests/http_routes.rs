//! Routing: probes answer, unknown paths and wrong methods get JSON errors (405 with `Allow`),
//! a plain GET on the WebSocket path asks for an upgrade, and `/ws` is an alias.

mod support;

use support::*;

#[tokio::test]
async fn live_and_ready_answer_200() {
    let gw = Gateway::start(&[]).await;
    for path in ["/live", "/ready"] {
        assert_eq!(gw.get(path).await.status(), 200, "GET {path}");
    }
}

#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let gw = Gateway::start(&[]).await;
    for path in ["/live", "/ready", "/health", "/ws/stats", "/metrics"] {
        let r = gw.http().head(gw.http_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD {path}");
        assert!(r.bytes().await.unwrap().is_empty(), "HEAD {path} has a body");
    }
}

#[tokio::test]
async fn unknown_path_is_404_json() {
    let gw = Gateway::start(&[]).await;
    for path in ["/nope", "/api/event", "/ws/tasks/extra", "/api/events/1"] {
        assert_error(path, &gw.get_json(path).await, 404);
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_and_json() {
    let gw = Gateway::start(&[]).await;
    let cases = [
        ("POST", "/live", "GET"),
        ("DELETE", "/ws/stats", "GET"),
        ("PUT", "/metrics", "GET"),
        ("GET", "/api/events", "POST"),
    ];
    for (method, path, allow) in cases {
        let what = format!("{method} {path}");
        let r = gw.http().request(method.parse().unwrap(), gw.http_url(path)).send().await.expect(&what);
        let allowed = r.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
        let allowed = allowed.unwrap_or_else(|| panic!("{what}: 405 without Allow"));
        assert!(allowed.split(',').any(|m| m.trim() == allow), "{what}: Allow is {allowed:?}, wants {allow}");
        assert_error(&what, &response_json(r).await, 405);
    }
}

#[tokio::test]
async fn plain_get_on_the_websocket_path_is_426() {
    let gw = Gateway::start(&[]).await;
    let token = user_token(&gw.secret, "alice", 3600);
    for path in ["/ws/tasks", "/ws"] {
        assert_error(path, &gw.get_json(&format!("{path}?token={token}")).await, 426);
    }
    assert_eq!(gw.metric("wsgate_connections").await, 0.0);
}

#[tokio::test]
async fn ws_is_an_alias_of_ws_tasks() {
    let gw = Gateway::start(&[]).await;
    let path = format!("/ws?token={}", user_token(&gw.secret, "alice", 3600));
    let client = try_connect(ws_request(&gw, &path, &[])).await.expect("/ws upgrades");
    assert_eq!(client.connected["user"], "alice");
}
