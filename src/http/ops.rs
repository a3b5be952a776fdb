//! What operators and load balancers read: probes, health, stats, metrics, the API's own
//! description, and the demo page.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::respond::{json_response, static_file, Body};
use crate::state::AppState;
use crate::stats;

/// `docs/openapi.yaml` as JSON (converted by `build.rs`).
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));
/// The live demo page and the JS client it loads, built into the binary.
const DEMO_HTML: &str = include_str!("../../clients/demo/index.html");
const JS_CLIENT: &str = include_str!("../../clients/js/wsgate.js");

pub fn live() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

pub fn ready(st: &AppState) -> Response<Body> {
    if st.draining.load(Ordering::Acquire) {
        json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "draining"}))
    } else if !st.broker.status().ready {
        // Redis mode, start-up: not yet following the fleet's events (bounded wait).
        json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "starting"}))
    } else {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    }
}

pub fn health(st: &AppState) -> Response<Body> {
    json_response(StatusCode::OK, &stats::health(st))
}

pub async fn ws_stats(st: &Arc<AppState>) -> Response<Body> {
    json_response(StatusCode::OK, &stats::ws_stats(st).await)
}

pub fn metrics(st: &AppState) -> Response<Body> {
    let status = st.broker.status();
    let ready = status.ready && !st.draining.load(Ordering::Acquire);
    let connected = status.redis_state == "connected";
    st.metrics.set_status(status.redis_enabled, connected, status.local_only, ready);
    let mut r = Response::new(Full::new(Bytes::from(st.metrics.render())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

pub fn openapi() -> Response<Body> {
    static_file(OPENAPI_JSON, "application/json")
}

pub fn demo() -> Response<Body> {
    static_file(DEMO_HTML, "text/html; charset=utf-8")
}

pub fn demo_client() -> Response<Body> {
    static_file(JS_CLIENT, "text/javascript; charset=utf-8")
}
