//! Upgrade authentication: which tokens open a socket, and that every refusal is a 401 with a
//! JSON body, no upgrade, and a count under the right `reason` label.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;

const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "wsgate-tests";

/// Issuer and audience are configured so their checks can be exercised too.
async fn strict_gateway() -> Gateway {
    Gateway::start(&[("JWT_ISSUER", ISSUER), ("JWT_AUDIENCE", AUDIENCE)]).await
}

/// Claims that pass every check of [`strict_gateway`], with `change` merged over them
/// (a `null` removes the claim).
fn claims(change: Value) -> Value {
    let mut c = json!({"sub": "alice", "exp": now_secs() + 3600, "iss": ISSUER, "aud": AUDIENCE});
    for (k, v) in change.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

#[tokio::test]
async fn a_valid_token_in_the_query_or_a_bearer_header_upgrades() {
    let gw = strict_gateway().await;
    let token = token_with(&gw.secret, claims(json!({})));

    let by_query = connect(&gw, &token).await;
    assert_eq!(by_query.connected["user"], "alice");

    let bearer = format!("Bearer {token}");
    let by_header =
        try_connect(ws_request(&gw, "/ws/tasks", &[("Authorization", &bearer)])).await.expect("bearer upgrade");
    assert_eq!(by_header.connected["user"], "alice");
}

#[tokio::test]
async fn every_bad_token_gets_401_json_and_is_counted_by_reason() {
    let gw = strict_gateway().await;
    let now = now_secs();
    let sign = |c: Value| Some(token_with(&gw.secret, claims(c)));
    // (expected reason label, token or none)
    let cases = [
        ("missing", None),
        ("malformed", Some("not-a-jwt".to_owned())),
        ("malformed", Some("a.b.c".to_owned())),
        ("bad_signature", Some(token_with("some-other-secret", claims(json!({}))))),
        ("expired", sign(json!({"exp": now - 600}))),
        ("not_yet_valid", sign(json!({"nbf": now + 600}))),
        ("bad_issuer", sign(json!({"iss": "https://evil.example"}))),
        ("bad_audience", sign(json!({"aud": "someone-else"}))),
        ("missing_claim", sign(json!({"sub": null}))),
        // The contract requires `exp` as well as `sub`.
        ("missing_claim", sign(json!({"exp": null}))),
    ];
    let mut seen = std::collections::HashMap::<&str, f64>::new();
    for (reason, token) in cases {
        let path = token.as_ref().map_or("/ws/tasks".to_owned(), |t| format!("/ws/tasks?token={t}"));
        let refused =
            try_connect(ws_request(&gw, &path, &[])).await.err().unwrap_or_else(|| panic!("{reason}: upgraded"));
        assert_error(reason, &(refused.status, refused.body), 401);
        *seen.entry(reason).or_default() += 1.0;
        let series = format!("wsgate_auth_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(gw.metric(&series).await, seen[reason], "{series} after the {reason} case");
    }
    // A refused token never became a connection.
    assert_eq!(gw.metric("wsgate_connections").await, 0.0);
}

/// When an issuer and an audience are configured, a token that simply leaves the claim out must
/// not get through (the JWT library checks `iss`/`aud` only when present unless told otherwise).
/// Which reason label it counts under (bad_issuer or missing_claim) is left open.
#[tokio::test]
async fn a_token_without_iss_or_aud_is_refused_when_they_are_configured() {
    let gw = strict_gateway().await;
    let mut upgraded = Vec::new();
    for claim in ["iss", "aud"] {
        let token = token_with(&gw.secret, claims(json!({ claim: null })));
        match try_connect(ws_request(&gw, &format!("/ws/tasks?token={token}"), &[])).await {
            Ok(_) => upgraded.push(claim),
            Err(refused) => assert_error(claim, &(refused.status, refused.body), 401),
        }
    }
    assert!(upgraded.is_empty(), "tokens without these claims upgraded: {upgraded:?}");
}

#[tokio::test]
async fn a_bad_bearer_header_is_refused_like_a_bad_query_token() {
    let gw = Gateway::start(&[]).await;
    let bearer = format!("Bearer {}", user_token("some-other-secret", "alice", 3600));
    let refused =
        try_connect(ws_request(&gw, "/ws/tasks", &[("Authorization", &bearer)])).await.err().expect("refused");
    assert_error("bad bearer", &(refused.status, refused.body), 401);
    assert_eq!(gw.metric("wsgate_auth_failures_total{reason=\"bad_signature\"}").await, 1.0);
}

/// With `JWT_PUBLIC_KEY_FILE`, tokens signed by the matching private key connect, and an HS256
/// token "signed" with the public key's text (the classic algorithm-confusion forgery) does not.
async fn public_key_auth(alg: Algorithm, private_pem: &str, public_file: &str) {
    let public_path = format!("{}/tests/keys/{public_file}", env!("CARGO_MANIFEST_DIR"));
    let gw = Gateway::start(&[("JWT_SECRET", ""), ("JWT_PUBLIC_KEY_FILE", &public_path)]).await;
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
    }
    .expect("test private key");
    let claims = json!({"sub": "carol", "exp": now_secs() + 3600});
    let token = encode(&Header::new(alg), &claims, &key).expect("sign");
    assert_eq!(connect(&gw, &token).await.connected["user"], "carol");

    let public_pem = std::fs::read_to_string(&public_path).expect("public key");
    let forged = token_with(&public_pem, claims);
    let refused = try_connect(ws_request(&gw, &format!("/ws/tasks?token={forged}"), &[])).await.err().expect("refused");
    assert_error("HS256 token signed with the public key", &(refused.status, refused.body), 401);
}

#[tokio::test]
async fn es256_public_key_file_verifies_tokens() {
    public_key_auth(Algorithm::ES256, include_str!("keys/es256-private.pem"), "es256-public.pem").await;
}

#[tokio::test]
async fn rs256_public_key_file_verifies_tokens() {
    public_key_auth(Algorithm::RS256, include_str!("keys/rs256-private.pem"), "rs256-public.pem").await;
}
