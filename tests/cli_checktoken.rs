//! `wsgate checktoken`: the exact report for a good token, an expired one, a bad signature, a
//! wrong issuer, a token without `sub`, a publish token, an admin token and a token signed with
//! the wrong algorithm; exit code 0 when the gateway would accept it, 1 when it would refuse it,
//! 2 when the settings cannot say. No gateway runs: the verdict is the gateway's own code
//! (`Authenticator`) on the same settings.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use support::*;

const SECRET: &str = "checktoken-test-secret-0123456789abcdef";

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn checktoken(token: &str, env: &[(&str, &str)]) -> Out {
    let mut p = Process::spawn(wsgate_command(&["checktoken", token], env));
    let status = p.wait_exit(STEP).await.expect("checktoken ends");
    Out { code: status.code(), stdout: p.stdout(), stderr: p.stderr() }
}

/// `2026-05-09T12:34:56Z`, as the report prints times.
fn at(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// The report: label padded to 10 columns, then the value.
fn report(lines: &[(&str, String)]) -> String {
    lines.iter().map(|(l, v)| format!("{l:<10}{v}\n")).collect()
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The decoded part of the report for `claims` with no kid, nbf, iss, aud.
fn head(sub: &str, exp: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("alg", s("HS256")),
        ("kid", s("(none)")),
        ("sub", s(sub)),
        ("exp", s(exp)),
        ("nbf", s("(none)")),
        ("iss", s("(none)")),
        ("aud", s("(none)")),
        ("scope", s(scope)),
        ("channels", s("(none)")),
    ]
}

#[tokio::test]
async fn a_good_user_token_is_accepted_and_what_it_may_do_is_said() {
    let exp = now_secs() + 3600;
    let t = token_with(SECRET, json!({"sub": "alice", "exp": exp}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    let mut want = head("\"alice\"", &format!("{} (expires in 1h)", at(exp)), "(none)");
    want.push(("verdict", s("accepted")));
    want.push(("user", s("connects to /ws/tasks as \"alice\"; may join user:alice")));
    want.push(("service", s("none: the scope has neither \"publish\" nor \"admin\"")));
    assert_eq!(out.stdout, report(&want), "stderr:\n{}", out.stderr);
    assert_eq!(out.code, Some(0));
}

#[tokio::test]
async fn a_publish_token_lists_the_endpoints_its_scope_allows() {
    let exp = now_secs() + 12 * 60;
    let t = token_with(SECRET, json!({"sub": "billing", "exp": exp, "scope": "publish", "channels": ["team:*"]}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    let mut want = head("\"billing\"", &format!("{} (expires in 12m)", at(exp)), "\"publish\"");
    want[8] = ("channels", s("[\"team:*\"]"));
    want.push(("verdict", s("accepted")));
    want.push(("user", s("connects to /ws/tasks as \"billing\"; may join user:billing, team:*")));
    want.push((
        "service",
        s("may call POST /api/events, POST /api/events/batch, GET /api/channels/{name}/presence (not the admin \
           API: no \"admin\" scope)"),
    ));
    assert_eq!(out.stdout, report(&want), "stderr:\n{}", out.stderr);
    assert_eq!(out.code, Some(0));

    let t = token_with(SECRET, json!({"sub": "ops", "exp": exp, "scope": "admin"}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    assert_eq!(out.code, Some(0));
    let service = out.stdout.lines().last().unwrap();
    assert_eq!(
        service,
        "service   may call every endpoint (admin): POST /api/events, POST /api/events/batch, \
         GET /api/channels/{name}/presence, GET /api/channels, GET /api/history, POST /api/users/{sub}/disconnect"
    );
}

#[tokio::test]
async fn an_expired_token_says_when_it_expired() {
    let exp = now_secs() - 3 * 3600;
    let t = token_with(SECRET, json!({"sub": "alice", "exp": exp}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    let mut want = head("\"alice\"", &format!("{} (expired 3h ago)", at(exp)), "(none)");
    want.push(("verdict", format!("refused: expired at {} (3h ago; JWT_LEEWAY_SECS=5)", at(exp))));
    want.push(("gateway", s(r#"401 {"error":"token expired"}"#)));
    assert_eq!(out.stdout, report(&want), "stderr:\n{}", out.stderr);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("wsgate: the gateway would refuse this token: expired at"), "{}", out.stderr);
}

#[tokio::test]
async fn a_bad_signature_and_a_wrong_algorithm_are_told_apart() {
    let exp = now_secs() + 3600;
    let t = token_with("another-secret-of-at-least-32-bytes!!", json!({"sub": "alice", "exp": exp}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    let last: Vec<&str> = out.stdout.lines().rev().take(2).collect();
    assert_eq!(
        last,
        [
            "gateway   401 {\"error\":\"invalid token signature\"}",
            "verdict   refused: bad signature: not signed with the key of JWT_SECRET"
        ],
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(1));

    // An RS256 token facing an HS256 secret.
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let t = encode(&Header::new(Algorithm::RS256), &json!({"sub": "alice", "exp": exp}), &key).unwrap();
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    assert!(out.stdout.starts_with("alg       RS256\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "verdict   refused: wrong algorithm for the key: the token is signed RS256, JWT_SECRET verifies HS256 only\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(1));
    // ...and a good RS256 token against the public key.
    let public = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-public.pem");
    let out = checktoken(&t, &[("JWT_PUBLIC_KEY_FILE", public)]).await;
    assert!(out.stdout.contains("verdict   accepted\n"), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(0));
    let t = token_with(SECRET, json!({"sub": "alice", "exp": exp}));
    let out = checktoken(&t, &[("JWT_PUBLIC_KEY_FILE", public)]).await;
    assert!(
        out.stdout.contains(
            "verdict   refused: wrong algorithm for the key: the token is signed HS256, JWT_PUBLIC_KEY_FILE verifies RS256 only\n"
        ),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_wrong_issuer_names_both() {
    let exp = now_secs() + 3600;
    let t = token_with(SECRET, json!({"sub": "alice", "exp": exp, "iss": "https://evil.example"}));
    let env = [("JWT_SECRET", SECRET), ("JWT_ISSUER", "https://idp.example")];
    let out = checktoken(&t, &env).await;
    let mut want = head("\"alice\"", &format!("{} (expires in 1h)", at(exp)), "(none)");
    want[5] = ("iss", s("\"https://evil.example\""));
    want.push(("verdict", s("refused: iss \"https://evil.example\" not \"https://idp.example\" (JWT_ISSUER)")));
    want.push(("gateway", s(r#"401 {"error":"token issuer (iss) not accepted"}"#)));
    assert_eq!(out.stdout, report(&want), "stderr:\n{}", out.stderr);
    assert_eq!(out.code, Some(1));
    // No iss at all.
    let t = token_with(SECRET, json!({"sub": "alice", "exp": exp}));
    let out = checktoken(&t, &env).await;
    assert!(
        out.stdout.contains("verdict   refused: missing iss (JWT_ISSUER requires \"https://idp.example\")\n"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn a_token_without_sub_is_refused_for_it() {
    let exp = now_secs() + 3600;
    let t = token_with(SECRET, json!({"exp": exp, "scope": "publish"}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    let mut want = head("(missing)", &format!("{} (expires in 1h)", at(exp)), "\"publish\"");
    want.push(("verdict", s("refused: missing sub")));
    want.push(("gateway", s(r#"401 {"error":"token lacks required claim \"sub\""}"#)));
    assert_eq!(out.stdout, report(&want), "stderr:\n{}", out.stderr);
    assert_eq!(out.code, Some(1));
    let t = token_with(SECRET, json!({"sub": "", "exp": exp}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    assert!(out.stdout.contains("verdict   refused: missing sub (it is \"\")\n"), "{}", out.stdout);
}

#[tokio::test]
async fn unreadable_tokens_and_missing_settings() {
    let out = checktoken("not-a-jwt", &[("JWT_SECRET", SECRET)]).await;
    assert_eq!(
        out.stdout,
        "token     unreadable: a JWT has 3 parts separated by '.', this has 1\n\
         verdict   refused: malformed: a JWT has 3 parts separated by '.', this has 1\n\
         gateway   401 {\"error\":\"malformed token\"}\n"
    );
    assert_eq!(out.code, Some(1));
    // A claim of the wrong type: shown, and the gateway's reading of it named.
    let t = token_with(SECRET, json!({"sub": "alice", "exp": "tomorrow"}));
    let out = checktoken(&t, &[("JWT_SECRET", SECRET)]).await;
    assert!(out.stdout.contains("exp       \"tomorrow\" (not a number of seconds)\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("verdict   refused: malformed: the claims do not read as the gateway's ("),
        "{}",
        out.stdout
    );
    // No key: the settings cannot say (exit 2); a short secret is refused naming the setting.
    let t = token_with(SECRET, json!({"sub": "alice", "exp": now_secs() + 60}));
    let out = checktoken(&t, &[]).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("no key configured"), "{}", out.stderr);
    let out = checktoken(&t, &[("JWT_SECRET", &SECRET[..31])]).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("invalid setting JWT_SECRET"), "{}", out.stderr);
    // Server settings do not matter.
    let out = checktoken(&t, &[("JWT_SECRET", SECRET), ("REDIS_URL", "garbage"), ("LISTEN_ADDR", "x")]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// A key set endpoint on a held loopback port (http:// is allowed there): answers every request
/// with `body`, one request per connection.
async fn jwks_server(body: String) -> (PortHold, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hold = PortHold::new();
    let listener = hold.listen();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    (hold, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_jwks_an_unknown_kid_and_a_wrong_algorithm_are_named() {
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-private.pem")).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap()).unwrap();
    // Its "alg": "RS256" narrows the key to that one algorithm.
    jwk["kid"] = "k1".into();
    let (hold, _server) = jwks_server(json!({ "keys": [jwk] }).to_string()).await;
    let url = format!("http://127.0.0.1:{}/jwks.json", hold.port());
    let env = [("JWT_JWKS_URL", url.as_str())];
    let claims = json!({"sub": "alice", "exp": now_secs() + 3600});
    let sign = |alg: Algorithm, kid: &str, key: &EncodingKey| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.to_owned());
        encode(&h, &claims, key).unwrap()
    };

    let out = checktoken(&sign(Algorithm::RS256, "k1", &rsa), &env).await;
    assert!(out.stdout.starts_with("alg       RS256\nkid       \"k1\"\n"), "{}", out.stdout);
    assert!(out.stdout.contains("verdict   accepted\n"), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(0));

    let out = checktoken(&sign(Algorithm::RS256, "k2", &rsa), &env).await;
    assert!(
        out.stdout.contains("verdict   refused: no key for kid \"k2\" in JWT_JWKS_URL (its kids: \"k1\")\n"),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(1));

    let ec = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/es256-private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&ec).unwrap();
    let out = checktoken(&sign(Algorithm::ES256, "k1", &ec), &env).await;
    assert!(
        out.stdout.contains(
            "verdict   refused: wrong algorithm for the key: the token is signed ES256, the JWT_JWKS_URL key \"k1\" \
             verifies RS256 only\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(1));
}
