//! Responses: JSON bodies, `{"error": "..."}` for every refusal, and the refusals shared by
//! several endpoints (tokens, limits, unavailable brokers).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::auth::{token_from_parts, AuthError, Claims, ServiceScope};
use crate::limits::Refusal as LimitRefusal;
use crate::state::AppState;

pub type Body = Full<Bytes>;

pub fn json_response(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    json_bytes(status, Bytes::from(body))
}

/// A body that is JSON already (built from frames that are).
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// `503` with `Retry-After: 1`: the broker cannot do it now.
pub fn unavailable(message: &str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn auth_error(st: &AppState, e: &AuthError) -> Response<Body> {
    st.metrics.auth_failure(e);
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut r = error(status, &e.message());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The service token of a request (`Authorization: Bearer`), which must allow `scope`.
pub async fn service_token(st: &AppState, parts: &Parts, scope: ServiceScope) -> Result<Claims, Response<Body>> {
    let token = token_from_parts(parts, false).unwrap_or_default();
    st.auth.verify_service_async(&token, scope).await.map_err(|e| auth_error(st, &e))
}

pub fn limit_refusal(st: &AppState, r: LimitRefusal) -> Response<Body> {
    st.metrics.limit_refused(r.label());
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let mut resp = error(status, &r.message(st.conn_limits.limits()));
    let retry = match r {
        LimitRefusal::UpgradeRate(wait) => Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        LimitRefusal::Full => Some(1),
        LimitRefusal::PerUser | LimitRefusal::PerIp => None,
    };
    if let Some(secs) = retry {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

pub fn static_file(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
