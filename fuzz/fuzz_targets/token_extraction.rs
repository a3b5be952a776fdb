//! Token extraction from request parts and token verification:
//! `auth::token_from_parts`, `auth::query_param` and `Authenticator::verify`/`verify_publisher`.
//!
//! Input format (so seeds are readable and the fuzzer can splice them):
//!
//! ```text
//! <request target: path and query>\n
//! <header name>:<header value>\n     (any number of lines)
//! \n                                 (optional: a blank line, then)
//! <JWT header JSON>\n<JWT claims JSON>
//! ```
//!
//! Inputs whose request target `http` refuses are skipped; header lines `http` refuses are
//! dropped one by one. The part after the blank line is signed with the test secret (HS256) so
//! that claim validation (exp, nbf, sub, the `scope` and `channels` claims) is reached, not only
//! signature checks: that token is verified too, as well as the token extracted from the parts.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use wsgate::auth::{query_param, token_from_parts, AuthError, Authenticator};
use wsgate::config::Config;

const SECRET: &str = "fuzz-secret-0123456789abcdef-0123";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| Authenticator::new(&Config::for_tests(SECRET).auth).unwrap())
}

fn check(token: &str) {
    let auth = authenticator();
    match auth.verify(token) {
        Ok(claims) => assert!(!claims.sub.is_empty(), "accepted a token without sub"),
        Err(e) => {
            // Every refusal maps to a metric label and a status.
            assert!(AuthError::REASONS.contains(&e.reason()));
            assert!(matches!(e.status(), 401 | 403));
            let _ = e.message();
        }
    }
    if let Ok(c) = auth.verify_publisher(token) {
        assert!(c.scope.contains("publish"));
    }
}

fuzz_target!(|data: &[u8]| {
    let (head, signed) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], Some(&data[i + 2..])),
        None => (data, None),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let Ok(uri) = http::Uri::try_from(target) else { return };
    let mut builder = http::Request::builder().uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else { continue };
        builder = builder.header(name, value);
    }
    let Ok(req) = builder.body(()) else { return };
    let (parts, ()) = req.into_parts();

    let from_header_only = token_from_parts(&parts, false);
    let with_query = token_from_parts(&parts, true);
    let query_token = parts.uri.query().and_then(|q| query_param(q, "token"));
    if parts.headers.contains_key(AUTHORIZATION) {
        // The header wins when present, whatever the query says.
        assert_eq!(from_header_only, with_query);
    } else {
        assert_eq!(from_header_only, None);
        assert_eq!(with_query, query_token);
    }
    for token in [&from_header_only, &with_query, &query_token].into_iter().flatten() {
        check(token);
    }

    if let Some(signed) = signed {
        let (h, c) = match signed.iter().position(|&b| b == b'\n') {
            Some(i) => (&signed[..i], &signed[i + 1..]),
            None => (signed, &b""[..]),
        };
        let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(c));
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC signs anything");
        check(&format!("{message}.{sig}"));
    }
});
