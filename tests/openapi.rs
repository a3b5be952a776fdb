//! `docs/openapi.yaml`, as the gateway serves it at `/api/openapi.json`, against the gateway
//! itself: every example in the spec fits its schema, and the real answers of every endpoint
//! (successes and refusals) have a status the spec documents and a body that fits its schema.
//! (That every route is in the spec and every spec path is a route is checked next to the
//! route table, in `src/http/router.rs`.)

mod support;

use serde_json::{json, Value};
use support::*;

/// Follows a `$ref` (`#/components/...`) within the spec.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').unwrap_or_else(|| panic!("only local refs: {r}"));
            resolve(spec, spec.pointer(ptr).unwrap_or_else(|| panic!("dangling $ref {r}")))
        }
        None => v,
    }
}

/// Validates `instance` against `schema`, whose `$ref`s point into the spec's components.
fn check(spec: &Value, schema: &Value, instance: &Value, what: &str) {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{what}: bad schema: {e}"));
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{what}: {instance} does not fit its schema: {errors:?}");
}

async fn the_spec(gw: &Gateway) -> Value {
    let (status, spec) = gw.get_json("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    spec
}

#[tokio::test]
async fn every_example_fits_its_schema() {
    let gw = Gateway::start(&[]).await;
    let spec = the_spec(&gw).await;
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let mut media: Vec<(String, &Value)> = Vec::new();
            if let Some(body) = op.get("requestBody") {
                for (ct, m) in resolve(&spec, body)["content"].as_object().unwrap() {
                    media.push((format!("{method} {path} request {ct}"), m));
                }
            }
            for (status, resp) in op["responses"].as_object().unwrap() {
                if let Some(content) = resolve(&spec, resp).get("content") {
                    for (ct, m) in content.as_object().unwrap() {
                        media.push((format!("{method} {path} {status} {ct}"), m));
                    }
                }
            }
            for (what, m) in media {
                if let Some(example) = m.get("example") {
                    check(&spec, &m["schema"], example, &what);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "only {checked} examples found");
}

/// The spec's answer for `method path` with `status`, and the body against its schema.
fn conforms(spec: &Value, template: &str, method: &str, status: u16, body: &Value) {
    let op = &spec["paths"][template][method];
    assert!(op.is_object(), "{method} {template} is not in the spec");
    let resp = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {template} answered {status}, which the spec does not document: {body}"));
    let resp = resolve(spec, resp);
    if let Some(schema) = resp.get("content").and_then(|c| c.get("application/json")).map(|m| &m["schema"]) {
        check(spec, schema, body, &format!("{method} {template} {status}"));
    }
}

#[tokio::test]
async fn real_answers_have_documented_statuses_and_fit_the_schemas() {
    let gw = Gateway::start(&[("MAX_BODY_BYTES", "1024")]).await;
    let spec = the_spec(&gw).await;
    let publish = publish_token(&gw.secret);
    let admin = admin_token(&gw.secret);
    let user = channel_token(&gw.secret, "alice", &["room:*"]);
    let _alice = connect_channels(&gw, &user, "room:1").await;
    let http = gw.http();
    let send = |req: reqwest::RequestBuilder| async move { response_json(req.send().await.expect("request")).await };

    for path in ["/live", "/ready", "/health", "/ws/stats", "/api/openapi.json"] {
        let (status, body) = gw.get_json(path).await;
        conforms(&spec, path, "get", status, &body);
    }
    assert_eq!(gw.get("/metrics").await.status(), 200);

    let events = gw.http_url("/api/events");
    let id = publish_ok(&gw, &publish, json!({"type": "t", "data": {"x": 1}})).await;
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (http.post(&events).bearer_auth(&publish).json(&json!({"type": "t", "channel": "room:1"})), 202),
        (http.post(&events).bearer_auth(&publish).json(&json!({"data": 1})), 400),
        (http.post(&events).json(&json!({"type": "t"})), 401),
        (http.post(&events).bearer_auth(&user).json(&json!({"type": "t"})), 403),
        (http.post(&events).bearer_auth(&publish).json(&json!({"type": "x".repeat(2000)})), 413),
        (http.post(&events).bearer_auth(&publish).header("content-type", "text/plain").body("{}"), 415),
    ];
    for (req, want) in cases {
        let (status, body) = send(req).await;
        assert_eq!(status, want, "{body}");
        conforms(&spec, "/api/events", "post", status, &body);
    }
    let keyed = |body: Value| http.post(&events).bearer_auth(&publish).header("idempotency-key", "k1").json(&body);
    assert_eq!(send(keyed(json!({"type": "a"}))).await.0, 202);
    let (status, body) = send(keyed(json!({"type": "b"}))).await;
    assert_eq!(status, 422);
    conforms(&spec, "/api/events", "post", status, &body);

    let batch = gw.http_url("/api/events/batch");
    for (body, want) in [
        (json!({"events": [{"type": "a"}, {"type": "b", "users": ["alice"]}]}), 202),
        (json!({"events": [{"type": "a"}, {"type": ""}]}), 400),
    ] {
        let (status, v) = send(http.post(&batch).bearer_auth(&publish).json(&body)).await;
        assert_eq!(status, want, "{v}");
        conforms(&spec, "/api/events/batch", "post", status, &v);
    }
    let (status, v) = send(http.post(&batch).bearer_auth(&user).json(&json!({"events": [{"type": "a"}]}))).await;
    conforms(&spec, "/api/events/batch", "post", status, &v);

    let disconnect = "/api/users/{sub}/disconnect";
    let url = gw.admin_url("/api/users/nobody/disconnect");
    for (req, want) in [
        (http.post(&url).bearer_auth(&admin), 200),
        (http.post(&url).bearer_auth(&admin).json(&json!({"reconnect": 1})), 400),
        (http.post(&url), 401),
        (http.post(&url).bearer_auth(&publish), 403),
    ] {
        let (status, v) = send(req).await;
        assert_eq!(status, want, "{v}");
        conforms(&spec, disconnect, "post", status, &v);
    }

    for (path, token, want) in
        [("/api/channels", &admin, 200), ("/api/channels?prefix=a%20b", &admin, 400), ("/api/channels", &publish, 403)]
    {
        let (status, v) = send(http.get(gw.admin_url(path)).bearer_auth(token)).await;
        assert_eq!(status, want, "{v}");
        conforms(&spec, "/api/channels", "get", status, &v);
    }
    let since = format!("/api/history?since={id}&limit=5");
    for (path, want) in [
        (since.as_str(), 200),
        ("/api/history", 200),
        ("/api/history?channel=room:1", 200),
        ("/api/history?limit=0", 400),
    ] {
        let (status, v) = send(http.get(gw.admin_url(path)).bearer_auth(&admin)).await;
        assert_eq!(status, want, "{path}: {v}");
        conforms(&spec, "/api/history", "get", status, &v);
    }
    for (name, want) in [("room:1", 200), ("a%20b", 400)] {
        let (status, v) = presence(&gw, Some(&publish), name).await;
        assert_eq!(status, want, "{v}");
        conforms(&spec, "/api/channels/{name}/presence", "get", status, &v);
    }

    // The WebSocket endpoint's refusals.
    let ws = gw.http_url("/ws/tasks");
    let many: Vec<String> = (0..250).map(|i| format!("c{i}")).collect();
    let too_many = format!("{ws}?token={user}&channels={}", many.join(","));
    for (req, want) in [(http.get(&ws), 401), (http.get(&ws).bearer_auth(&user), 426), (http.get(&too_many), 400)] {
        let (status, v) = send(req).await;
        assert_eq!(status, want, "{v}");
        conforms(&spec, "/ws/tasks", "get", status, &v);
    }
}
