//! `JWT_JWKS_URL`: tokens are verified with the key of a JWK Set that the gateway fetches,
//! caches and refreshes. Each test serves the set from a small HTTP server of its own (on a
//! free port) whose response it can change, stop and restart, and whose hits it counts.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;

// ---------------------------------------------------------------------------------------------
// The key set server

struct Served {
    response: Mutex<(u16, String)>,
    hits: AtomicUsize,
}

/// A JWKS endpoint: answers every request with the current (status, body) and counts them.
struct JwksServer {
    /// The server's port, held for its whole life (refused while it is down).
    hold: PortHold,
    port: u16,
    served: Arc<Served>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JwksServer {
    /// Serving `keys` on a free port.
    async fn start(keys: &[Value]) -> JwksServer {
        let mut s = JwksServer::not_started();
        s.serve_keys(keys);
        s.up().await;
        s
    }

    /// A server on a port of its own that does not listen yet (`up` starts it).
    fn not_started() -> JwksServer {
        let served = Arc::new(Served { response: Mutex::new((404, String::new())), hits: AtomicUsize::new(0) });
        let hold = PortHold::new();
        JwksServer { port: hold.port(), hold, served, task: None }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    fn hits(&self) -> usize {
        self.served.hits.load(Ordering::SeqCst)
    }

    fn serve(&self, status: u16, body: &str) {
        *self.served.response.lock().unwrap() = (status, body.to_owned());
    }

    fn serve_keys(&self, keys: &[Value]) {
        self.serve(200, &json!({ "keys": keys }).to_string());
    }

    async fn up(&mut self) {
        assert!(self.task.is_none(), "JWKS server already up");
        let listener = self.hold.listen();
        let served = self.served.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropped with this task when the server goes down: aborts the connections too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let served = served.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        let served = served.clone();
                        async move {
                            served.hits.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = served.response.lock().unwrap().clone();
                            let mut resp = Response::builder().status(status);
                            // A redirect: the body is where to.
                            resp = match status {
                                300..=399 => resp.header("location", body.as_str()),
                                _ => resp.header("content-type", "application/json"),
                            };
                            let resp = resp.body(Full::new(Bytes::from(body))).expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn = http1::Builder::new().keep_alive(false).serve_connection(TokioIo::new(stream), svc);
                    let _ = conn.await;
                });
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    /// Stops listening and drops every connection: fetches are refused.
    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and tokens

/// A test private key (tests/keys) and the algorithm it signs with.
struct TestKey {
    alg: Algorithm,
    enc: EncodingKey,
}

fn key(alg: Algorithm) -> TestKey {
    let enc = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(include_bytes!("keys/rs256-private.pem")),
        Algorithm::ES256 => EncodingKey::from_ec_pem(include_bytes!("keys/es256-private.pem")),
        Algorithm::ES384 => EncodingKey::from_ec_pem(include_bytes!("keys/es384-private.pem")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(include_bytes!("keys/ed25519-private.pem")),
        other => panic!("no test key for {other:?}"),
    }
    .expect("test private key");
    TestKey { alg, enc }
}

impl TestKey {
    /// The public JWK (n/e, x/y or x, derived from the private key) under `kid`.
    fn jwk(&self, kid: &str) -> Value {
        let mut v = serde_json::to_value(Jwk::from_encoding_key(&self.enc, self.alg).expect("JWK")).unwrap();
        v["kid"] = kid.into();
        v["use"] = "sig".into();
        v
    }

    /// A token with `claims`, its header naming `kid` (none for `None`).
    fn sign(&self, kid: Option<&str>, claims: Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = kid.map(str::to_owned);
        encode(&h, &claims, &self.enc).expect("sign")
    }

    fn user(&self, kid: Option<&str>, sub: &str) -> String {
        self.sign(kid, json!({"sub": sub, "exp": now_secs() + 3600}))
    }

    fn publisher(&self, kid: Option<&str>) -> String {
        self.sign(kid, json!({"sub": "svc", "exp": now_secs() + 3600, "scope": "publish"}))
    }
}

/// A gateway that takes its keys from `server` (no JWT_SECRET), with `env` added.
async fn gateway(server: &JwksServer, env: &[(&str, &str)]) -> Gateway {
    let url = server.url();
    let mut all = vec![("JWT_SECRET", ""), ("JWT_JWKS_URL", url.as_str())];
    all.extend_from_slice(env);
    Gateway::start(&all).await
}

/// The upgrade's answer: 101, or the refusal's status and JSON body.
async fn upgrade(gw: &Gateway, token: &str) -> Result<WsClient, Rejected> {
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}"), &[])).await
}

async fn upgrade_status(gw: &Gateway, token: &str) -> u16 {
    match upgrade(gw, token).await {
        Ok(_) => 101,
        Err(r) => r.status,
    }
}

/// Waits until `token` opens a socket.
async fn wait_accepted(gw: &Gateway, token: &str, what: &str) -> Duration {
    wait_until(what, STEP, || async { upgrade_status(gw, token).await == 101 }).await
}

/// Waits until `token` is refused with 401.
async fn wait_refused(gw: &Gateway, token: &str, what: &str) {
    wait_until(what, STEP, || async { upgrade_status(gw, token).await == 401 }).await;
}

/// The gateway's warnings about failed fetches.
fn fetch_warnings(gw: &Gateway) -> usize {
    gw.logs().lines().filter(|l| l.contains("WARN") && l.contains("JWKS fetch from")).count()
}

fn assert_not_dev_mode(gw: &Gateway) {
    let logs = gw.logs();
    assert!(!logs.contains("DEV MODE") && !logs.contains("dev user token"), "JWKS mode is not dev mode:\n{logs}");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tokens_signed_with_a_key_of_the_set_connect_and_publish() {
    let keys = [key(Algorithm::RS256), key(Algorithm::ES256), key(Algorithm::ES384), key(Algorithm::EdDSA)];
    let kids = ["rsa-1", "p256-1", "p384-1", "ed-1"];
    let set: Vec<Value> = keys.iter().zip(kids).map(|(k, kid)| k.jwk(kid)).collect();
    let server = JwksServer::start(&set).await;
    let gw = gateway(&server, &[("JWT_ISSUER", "https://idp.example"), ("JWT_AUDIENCE", "wsgate")]).await;
    gw.wait_log("JWKS loaded 4 keys from").await;
    assert_not_dev_mode(&gw);

    let claims = |c: Value| {
        let mut base = json!({"sub": "alice", "exp": now_secs() + 3600, "iss": "https://idp.example", "aud": "wsgate"});
        for (k, v) in c.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    for (k, kid) in keys.iter().zip(kids) {
        let mut ws =
            upgrade(&gw, &k.sign(Some(kid), claims(json!({})))).await.unwrap_or_else(|r| panic!("{kid}: {r:?}"));
        assert_eq!(ws.connected["user"], "alice", "{kid}");
        let publisher = k.sign(Some(kid), claims(json!({"sub": "svc", "scope": "publish"})));
        publish_ok(&gw, &publisher, json!({"type": "hello", "data": {"kid": kid}})).await;
        assert_eq!(ws.expect_event("hello").await["data"]["kid"], kid);
    }

    // Every existing rule still holds; and a key is used only for its own kid and algorithm.
    let rsa = &keys[0];
    let rsa_public_jwk = set[0].to_string();
    let cases = [
        ("expired", rsa.sign(Some("rsa-1"), claims(json!({"exp": now_secs() - 600})))),
        ("not_yet_valid", rsa.sign(Some("rsa-1"), claims(json!({"nbf": now_secs() + 600})))),
        ("bad_issuer", rsa.sign(Some("rsa-1"), claims(json!({"iss": "https://evil.example"})))),
        ("bad_audience", rsa.sign(Some("rsa-1"), claims(json!({"aud": "other"})))),
        ("missing_claim", rsa.sign(Some("rsa-1"), claims(json!({"sub": null})))),
        ("missing_claim", rsa.sign(Some("rsa-1"), claims(json!({"exp": null})))),
        // The P-256 key's token presented under the RSA key's kid.
        ("bad_signature", keys[1].sign(Some("rsa-1"), claims(json!({})))),
        // HS256 "signed" with the public JWK's text: the algorithm-confusion forgery.
        (
            "bad_signature",
            encode(
                &Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::HS256) },
                &claims(json!({})),
                &EncodingKey::from_secret(rsa_public_jwk.as_bytes()),
            )
            .unwrap(),
        ),
        // No kid, and the set has four keys.
        ("no_key", rsa.sign(None, claims(json!({})))),
        ("no_key", rsa.sign(Some("nobody"), claims(json!({})))),
        ("malformed", "not.a.jwt".to_owned()),
    ];
    for (reason, token) in &cases {
        let refused = upgrade(&gw, token).await.err().unwrap_or_else(|| panic!("{reason}: upgraded"));
        assert_error(reason, &(refused.status, refused.body), 401);
    }
    for reason in ["expired", "bad_signature", "no_key", "missing_claim"] {
        let n = cases.iter().filter(|(r, _)| r == &reason).count() as f64;
        assert_eq!(gw.metric(&format!("wsgate_auth_failures_total{{reason=\"{reason}\"}}")).await, n, "{reason}");
    }
    // A user token cannot publish.
    let (status, body) = publish(&gw, &rsa.sign(Some("rsa-1"), claims(json!({}))), json!({"type": "x"})).await;
    assert_error("publish without the scope", &(status, body), 403);
    let (status, body) = publish(&gw, &rsa.sign(Some("nobody"), claims(json!({"scope": "publish"}))), json!({})).await;
    assert_error("publish with an unknown kid", &(status, body), 401);
}

#[tokio::test]
async fn a_token_without_kid_is_accepted_only_when_the_set_has_one_key() {
    let rsa = key(Algorithm::RS256);
    let server = JwksServer::start(&[rsa.jwk("only")]).await;
    let gw = gateway(&server, &[("JWKS_REFRESH_SECS", "1")]).await;
    gw.wait_log("JWKS loaded 1 keys from").await;
    assert_eq!(upgrade_status(&gw, &rsa.user(None, "bob")).await, 101);
    publish_ok(&gw, &rsa.publisher(None), json!({"type": "x"})).await;

    server.serve_keys(&[rsa.jwk("only"), key(Algorithm::ES256).jwk("second")]);
    wait_refused(&gw, &rsa.user(None, "bob"), "a kid-less token to be refused once the set has two keys").await;
    assert_eq!(upgrade_status(&gw, &rsa.user(Some("only"), "bob")).await, 101);
}

#[tokio::test]
async fn a_new_kid_is_fetched_when_first_seen() {
    let (old, new) = (key(Algorithm::RS256), key(Algorithm::ES256));
    let server = JwksServer::start(&[old.jwk("2024")]).await;
    // No scheduled refresh during the test: only a token can bring the new key.
    let gw = gateway(&server, &[("JWKS_REFRESH_SECS", "3600"), ("JWKS_MIN_REFETCH_SECS", "1")]).await;
    gw.wait_log("JWKS loaded 1 keys from").await;
    assert_eq!(server.hits(), 1);
    assert_eq!(upgrade_status(&gw, &old.user(Some("2024"), "alice")).await, 101);

    // The issuer rotates: the new key is published, then tokens signed with it appear.
    server.serve_keys(&[old.jwk("2024"), new.jwk("2025")]);
    let took = wait_accepted(&gw, &new.user(Some("2025"), "alice"), "the new kid to be accepted").await;
    assert_eq!(server.hits(), 2, "one refetch brought the new key (after {took:?})");
    publish_ok(&gw, &new.publisher(Some("2025")), json!({"type": "x"})).await;
    assert_eq!(upgrade_status(&gw, &old.user(Some("2024"), "alice")).await, 101, "the old key is still in the set");
    gw.wait_log("JWKS loaded 2 keys from").await;
}

#[tokio::test]
async fn a_key_removed_from_the_set_stops_working_after_the_next_refresh() {
    let (old, new) = (key(Algorithm::RS256), key(Algorithm::EdDSA));
    let server = JwksServer::start(&[old.jwk("old"), new.jwk("new")]).await;
    let gw = gateway(&server, &[("JWKS_REFRESH_SECS", "1"), ("JWKS_MIN_REFETCH_SECS", "3600")]).await;
    gw.wait_log("JWKS loaded 2 keys from").await;
    let mut connected = upgrade(&gw, &old.user(Some("old"), "alice")).await.expect("old key accepted");
    assert_eq!(upgrade_status(&gw, &new.user(Some("new"), "alice")).await, 101);

    server.serve_keys(&[new.jwk("new")]);
    let hits = server.hits();
    wait_refused(&gw, &old.user(Some("old"), "alice"), "the removed key to be refused").await;
    assert!(server.hits() > hits, "a scheduled refresh removed it");
    assert_eq!(upgrade_status(&gw, &new.user(Some("new"), "alice")).await, 101);
    let (status, body) = publish(&gw, &old.publisher(Some("old")), json!({"type": "x"})).await;
    assert_error("publish with the removed key", &(status, body), 401);
    // A socket opened with the old key is not cut by the rotation.
    connected.assert_alive().await;
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_min_refetch() {
    let rsa = key(Algorithm::RS256);
    let server = JwksServer::start(&[rsa.jwk("real")]).await;
    let gw = gateway(&server, &[("JWKS_REFRESH_SECS", "3600"), ("JWKS_MIN_REFETCH_SECS", "2")]).await;
    gw.wait_log("JWKS loaded 1 keys from").await;
    assert_eq!(server.hits(), 1);

    // A burst of tokens with made-up kids, over WebSocket and POST.
    let burst = |round: usize| {
        let (gw, rsa) = (&gw, &rsa);
        async move {
            for i in 0..20 {
                let kid = format!("bogus-{round}-{i}");
                if i % 2 == 0 {
                    assert_eq!(upgrade_status(gw, &rsa.user(Some(&kid), "mallory")).await, 401);
                } else {
                    assert_eq!(publish(gw, &rsa.publisher(Some(&kid)), json!({"type": "x"})).await.0, 401);
                }
            }
        }
    };
    let start = Instant::now();
    burst(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elapsed = start.elapsed();
    let refetches = server.hits() - 1;
    // One refetch per started 2 s window at most (one, unless this machine is very slow).
    let allowed = 1 + (elapsed.as_secs() / 2) as usize;
    assert!((1..=allowed).contains(&refetches), "{refetches} refetches for 20 bogus kids in {elapsed:?}");
    // The real key works throughout.
    assert_eq!(upgrade_status(&gw, &rsa.user(Some("real"), "alice")).await, 101);

    // Once the window has passed, an unknown kid may refetch again, once.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = server.hits();
    let start = Instant::now();
    burst(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elapsed = start.elapsed();
    let refetches = server.hits() - before;
    let allowed = 1 + (elapsed.as_secs() / 2) as usize;
    assert!((1..=allowed).contains(&refetches), "{refetches} refetches for the second burst in {elapsed:?}");
}

#[tokio::test]
async fn the_cached_keys_keep_working_while_the_endpoint_fails_or_is_down() {
    let (rsa, ec) = (key(Algorithm::RS256), key(Algorithm::ES256));
    let mut server = JwksServer::start(&[rsa.jwk("k1")]).await;
    let gw = gateway(&server, &[("JWKS_REFRESH_SECS", "1"), ("JWKS_MIN_REFETCH_SECS", "1")]).await;
    gw.wait_log("JWKS loaded 1 keys from").await;
    let user = rsa.user(Some("k1"), "alice");
    let publisher = rsa.publisher(Some("k1"));

    // Errors, garbage, a set without a usable key, an empty set: each is a failed fetch.
    let bad: [(u16, &str); 4] = [
        (500, "{\"error\": \"boom\"}"),
        (200, "<html>maintenance</html>"),
        (200, "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"k1\", \"k\": \"c2VjcmV0\"}]}"),
        (200, "{\"keys\": []}"),
    ];
    for (status, body) in bad {
        server.serve(status, body);
        let hits = server.hits();
        wait_until(&format!("two fetches answered {status} {body}"), STEP, || async { server.hits() >= hits + 2 })
            .await;
        assert_eq!(upgrade_status(&gw, &user).await, 101, "cached key after {status} {body}");
        publish_ok(&gw, &publisher, json!({"type": "x"})).await;
    }

    // The server goes away altogether.
    server.down().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(upgrade_status(&gw, &user).await, 101, "cached key with the endpoint down");
    publish_ok(&gw, &publisher, json!({"type": "x"})).await;
    // A new kid cannot be found meanwhile, and the request is not stuck waiting for long.
    let start = Instant::now();
    assert_eq!(upgrade_status(&gw, &ec.user(Some("k2"), "alice")).await, 401);
    assert!(start.elapsed() < Duration::from_secs(5), "refused after {:?}", start.elapsed());

    // One warning for the whole failure streak.
    assert_eq!(fetch_warnings(&gw), 1, "logs:\n{}", gw.logs());

    // Back, with a rotated set.
    server.serve_keys(&[rsa.jwk("k1"), ec.jwk("k2")]);
    server.up().await;
    wait_accepted(&gw, &ec.user(Some("k2"), "alice"), "the new key once the endpoint is back").await;
    gw.wait_log("JWKS loaded 2 keys from").await;
    assert_eq!(upgrade_status(&gw, &user).await, 101);
    assert_eq!(fetch_warnings(&gw), 1);
}

#[tokio::test]
async fn the_gateway_starts_while_the_endpoint_is_unreachable_and_loads_the_keys_later() {
    let rsa = key(Algorithm::RS256);
    let mut server = JwksServer::not_started();
    server.serve_keys(&[rsa.jwk("k1")]);
    let gw = gateway(&server, &[("JWKS_MIN_REFETCH_SECS", "1")]).await;
    gw.wait_log("JWKS fetch from").await;
    assert_not_dev_mode(&gw);

    let user = rsa.user(Some("k1"), "alice");
    let refused = upgrade(&gw, &user).await.err().expect("no keys yet: refused");
    assert_error("no keys yet", &(refused.status, refused.body.clone()), 401);
    assert!(refused.body["error"].as_str().unwrap().contains("no verification key"), "{}", refused.body);
    let (status, body) = publish(&gw, &rsa.publisher(Some("k1")), json!({"type": "x"})).await;
    assert_error("publish, no keys yet", &(status, body), 401);
    // The upgrade and the publish: two refusals, each counted once.
    assert_eq!(gw.metric("wsgate_auth_failures_total{reason=\"no_key\"}").await, 2.0);
    // The gateway itself is up and ready.
    assert_eq!(gw.get_json("/ready").await.0, 200);

    server.up().await;
    wait_accepted(&gw, &user, "the keys once the endpoint is up").await;
    gw.wait_log("JWKS loaded 1 keys from").await;
    publish_ok(&gw, &rsa.publisher(Some("k1")), json!({"type": "x"})).await;
    assert_eq!(fetch_warnings(&gw), 1, "one warning for the streak:\n{}", gw.logs());
}

#[tokio::test]
async fn a_jwks_url_with_a_secret_or_a_public_key_file_is_a_start_up_error() {
    let pem = format!("{}/tests/keys/rs256-public.pem", env!("CARGO_MANIFEST_DIR"));
    for (other, value) in [("JWT_SECRET", "jwks-test-secret-0123456789abcdef"), ("JWT_PUBLIC_KEY_FILE", pem.as_str())] {
        let env = [("LISTEN_ADDR", "127.0.0.1:0"), ("JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json"), (other, value)];
        let mut p = Process::spawn(wsgate_command(&[], &env));
        let status = p.wait_exit(STEP).await.expect("wsgate exits");
        assert_eq!(status.code(), Some(2), "{other}: {}", p.stderr());
        let err = p.stderr();
        assert!(err.contains("JWT_JWKS_URL") && err.contains(other), "{other}: {err}");
    }
    // Keys fetched in plain text from another host could be anyone's: https only (loopback
    // excepted, as the other tests here use).
    for url in ["file:///etc/jwks.json", "http://idp.example/jwks.json"] {
        let mut p = Process::spawn(wsgate_command(&[], &[("JWT_JWKS_URL", url)]));
        assert_eq!(p.wait_exit(STEP).await.expect("wsgate exits").code(), Some(2), "{url}");
        assert!(p.stderr().contains("JWT_JWKS_URL") && p.stderr().contains("https://"), "{url}: {}", p.stderr());
    }
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed() {
    let rsa = key(Algorithm::RS256);
    // The keys a man in the middle would offer, on another origin (another port).
    let elsewhere = JwksServer::start(&[rsa.jwk("k1")]).await;
    let server = JwksServer::start(&[]).await;
    server.serve(302, &elsewhere.url());
    let gw = gateway(&server, &[("JWKS_MIN_REFETCH_SECS", "1")]).await;
    let warning = gw.wait_log("JWKS fetch from").await;
    assert!(warning.contains("another origin"), "{warning}");
    assert!(server.hits() >= 1);
    assert_eq!(upgrade_status(&gw, &rsa.user(Some("k1"), "alice")).await, 401);
    assert_eq!(elsewhere.hits(), 0, "the redirect was followed");
}

/// In process: `verify_async` (what a handler that can wait uses) lets a token with a new kid
/// wait for the refetch, so it is accepted on its first use; `verify` refuses it but starts the
/// refetch for the next try.
#[tokio::test]
async fn verify_async_accepts_a_rotated_key_on_first_use() {
    use clap::Parser;
    use wsgate::auth::{AuthError, Authenticator};
    use wsgate::config::{Args, Config};

    let (k1, k2, k3) = (key(Algorithm::RS256), key(Algorithm::ES256), key(Algorithm::EdDSA));
    let server = JwksServer::start(&[k1.jwk("k1")]).await;
    let url = server.url();
    let args = ["wsgate", "--jwt-jwks-url", &url, "--jwks-refresh-secs", "3600", "--jwks-min-refetch-secs", "1"];
    let cfg = Config::from_args(Args::try_parse_from(args).expect("args")).expect("config");
    assert!(!cfg.dev_mode());
    let auth = Authenticator::new(&cfg.auth).expect("authenticator");
    assert!(auth.mint("x", None, Duration::from_secs(60)).is_none(), "a JWKS cannot mint");

    // The first fetch runs in the background; a token that arrives first waits for it.
    let t1 = k1.user(Some("k1"), "alice");
    assert_eq!(auth.verify_async(&t1).await.expect("k1 after the first fetch").sub, "alice");
    assert_eq!(server.hits(), 1);

    server.serve_keys(&[k1.jwk("k1"), k2.jwk("k2")]);
    let t2 = k2.user(Some("k2"), "bob");
    assert_eq!(auth.verify_async(&t2).await.expect("k2 on first use").sub, "bob");
    assert_eq!(server.hits(), 2);
    assert!(auth.verify_publisher_async(&k2.publisher(Some("k2"))).await.is_ok());

    // Within JWKS_MIN_REFETCH_SECS of that refetch, an unknown kid is refused at once.
    let start = Instant::now();
    assert_eq!(auth.verify_async(&k3.user(Some("k3"), "eve")).await.unwrap_err(), AuthError::NoKey);
    // No fetch (the hit count), and no wait for one: a waiting request waits up to 3 s.
    assert_eq!(server.hits(), 2);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

    // `verify` cannot wait: it refuses, and the refetch it started serves the retry.
    server.serve_keys(&[k1.jwk("k1"), k2.jwk("k2"), k3.jwk("k3")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t3 = k3.user(Some("k3"), "carol");
    assert_eq!(auth.verify(&t3).unwrap_err(), AuthError::NoKey);
    wait_until("k3 to verify", STEP, || std::future::ready(auth.verify(&t3).is_ok())).await;
    assert_eq!(server.hits(), 3);
}
