//! Every way a publish can be refused: the status, a JSON `{"error"}` naming the bad field, and
//! that nothing refused is ever delivered.

mod support;

use serde_json::json;
use support::*;

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field_and_deliver_nothing() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    let long_type = "t".repeat(129);
    // (body, a word the error must contain; "" where there is no field to name)
    let cases = [
        (r#"{"type": "x""#.to_owned(), ""),
        ("not json".to_owned(), ""),
        ("".to_owned(), ""),
        (r#"["type", "x"]"#.to_owned(), ""),
        (r#""just a string""#.to_owned(), ""),
        (r#"{"data": 1}"#.to_owned(), "type"),
        (r#"{"type": ""}"#.to_owned(), "type"),
        (format!(r#"{{"type": "{long_type}"}}"#), "type"),
        (r#"{"type": 5}"#.to_owned(), "type"),
        (r#"{"type": null}"#.to_owned(), "type"),
        (r#"{"type": "x", "users": "alice"}"#.to_owned(), "users"),
        (r#"{"type": "x", "users": []}"#.to_owned(), "users"),
        (r#"{"type": "x", "users": [""]}"#.to_owned(), "users"),
        (r#"{"type": "x", "users": ["alice", 7]}"#.to_owned(), "users"),
        (r#"{"type": "x", "colour": "red"}"#.to_owned(), "colour"),
    ];
    for (body, field) in &cases {
        let got = post_events(&gw, Some(&token), JSON, body.clone().into_bytes()).await;
        assert_error(body, &got, 400);
        let msg = got.1["error"].as_str().unwrap();
        assert!(msg.contains(field), "error for {body} should name {field:?}: {msg}");
    }
    assert_eq!(gw.metric("wsgate_events_published_total").await, 0.0);
    // Nothing refused reached the client: the first thing it sees is this marker.
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    client.expect_event("marker").await;
}

/// `"users": null` is not "no users": a publisher whose serialiser writes a missing list as
/// null must not turn a private event into a broadcast. Fail closed.
#[tokio::test]
async fn users_null_is_refused_not_broadcast() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut bystander = connect_user(&gw, "bystander").await;
    let got = publish(&gw, &token, json!({"type": "private", "users": null})).await;
    publish_ok(&gw, &token, json!({"type": "marker"})).await;
    let first = bystander.next_json(STEP).await;
    assert_eq!(first["type"], "marker", "a bystander received {first}");
    assert_error("users: null", &got, 400);
    assert!(got.1["error"].as_str().unwrap().contains("users"), "{}", got.1);
}

#[tokio::test]
async fn type_may_be_128_characters_and_not_129() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    publish_ok(&gw, &token, json!({"type": "t".repeat(128)})).await;
    // Characters, not bytes: 128 two-byte characters are fine too.
    publish_ok(&gw, &token, json!({"type": "\u{e9}".repeat(128)})).await;
    assert_error("129 chars", &publish(&gw, &token, json!({"type": "t".repeat(129)})).await, 400);
}

#[tokio::test]
async fn tokens_401_and_scope_403() {
    let gw = Gateway::start(&[]).await;
    let body = || br#"{"type": "x"}"#.to_vec();
    let secret = gw.secret.clone();
    let scoped =
        |sub: &str, scope: &str| token_with(&secret, json!({"sub": sub, "exp": now_secs() + 60, "scope": scope}));
    let unauthorized = [
        ("no token", None),
        ("garbage", Some("garbage".to_owned())),
        ("other secret", Some(publish_token("some-other-secret"))),
        ("expired", Some(token_with(&gw.secret, json!({"sub": "svc", "exp": now_secs() - 600, "scope": "publish"})))),
    ];
    for (what, token) in &unauthorized {
        assert_error(what, &post_events(&gw, token.as_deref(), JSON, body()).await, 401);
    }
    let forbidden = [
        ("user token without scope", user_token(&gw.secret, "alice", 60)),
        ("scope publisher is not publish", scoped("svc", "publisher")),
        ("scope read write", scoped("svc", "read write")),
    ];
    for (what, token) in &forbidden {
        assert_error(what, &post_events(&gw, Some(token), JSON, body()).await, 403);
    }
    assert_eq!(gw.metric("wsgate_auth_failures_total{reason=\"forbidden\"}").await, 3.0);
    // `publish` among other space-separated scopes is enough.
    let (status, resp) = post_events(&gw, Some(&scoped("svc", "read publish write")), JSON, body()).await;
    assert_eq!(status, 202, "{resp}");
}

#[tokio::test]
async fn content_type_must_be_json() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let body = || br#"{"type": "x"}"#.to_vec();
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonp")] {
        assert_error(&format!("{ct:?}"), &post_events(&gw, Some(&token), ct, body()).await, 415);
    }
    for ct in ["application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON"] {
        let (status, resp) = post_events(&gw, Some(&token), Some(ct), body()).await;
        assert_eq!(status, 202, "Content-Type {ct}: {resp}");
    }
}

#[tokio::test]
async fn bodies_over_max_body_bytes_get_413_whether_sized_or_chunked() {
    let gw = Gateway::start(&[("MAX_BODY_BYTES", "1024")]).await;
    let token = publish_token(&gw.secret);
    let body_of = |len: usize| {
        let fill = len - r#"{"type":"x","data":""}"#.len();
        format!(r#"{{"type":"x","data":"{}"}}"#, "a".repeat(fill))
    };
    // Just under the limit passes: the limit is not "refuse everything".
    let (status, resp) = post_events(&gw, Some(&token), JSON, body_of(1000).into_bytes()).await;
    assert_eq!(status, 202, "{resp}");
    assert_error(
        "2000 bytes with Content-Length",
        &post_events(&gw, Some(&token), JSON, body_of(2000).into_bytes()).await,
        413,
    );

    // Chunked: no Content-Length up front, so the limit must hold while reading.
    let big = body_of(2000);
    let (a, b) = big.split_at(1000);
    let mut conn = RawHttp::connect(&gw).await;
    let request = format!(
        "POST /api/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        gw.addr,
        a.len(),
        b.len()
    );
    conn.send(request.as_bytes()).await;
    let r = conn.read_response().await;
    assert_error("2000 bytes chunked", &(r.status, r.body), 413);
}
