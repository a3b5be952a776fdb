//! The outside security review's findings (issue 15), each confirmed on a running binary and
//! each failing before its fix: unbounded `channels=`, idempotency keys of different
//! publishers colliding, a client choosing its own address behind a proxy, IPv6 clients
//! dodging per-IP limits, unsolicited pongs passing the message limit, and log injection
//! through `sub`. (Short secrets and the JWKS transport are in `tests/config.rs` and
//! `tests/jwks.rs`; the history entries' ULID is its own stream field, see `publish.lua`.)

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_huge_channels_list_is_refused_before_any_work_and_the_http_thread_stays_free() {
    let gw = Gateway::start(&[]).await;
    let token = channel_token(&gw.secret, "alice", &["*"]);
    // The audit's request: a 64 KB query naming ~17,000 channels (here 15,000 names of at most
    // three characters: the client library caps a URI at 64 KiB).
    let b36 = |i: usize| {
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut s = Vec::new();
        let mut n = i;
        loop {
            s.push(digits[n % 36]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        String::from_utf8(s).unwrap()
    };
    let names: Vec<String> = (0..15_000).map(b36).collect();
    let path = format!("/ws/tasks?token={token}&channels={}", names.join(","));
    let r = try_connect(ws_request(&gw, &path, &[])).await.err().expect("refused");
    assert_eq!(r.status, 414, "a query past the bound: {r:?}");
    // Past twice MAX_CHANNELS_PER_CONNECTION (100) but within the length bound: 400, named.
    let path = format!("/ws/tasks?token={token}&channels={}", names[..201].join(","));
    let r = try_connect(ws_request(&gw, &path, &[])).await.err().expect("refused");
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("too_many_channels")), "{r:?}");
    // Within twice the limit: connected; the first 100 joined, the rest refused one by one.
    let path = format!("/ws/tasks?token={token}&channels={}", names[..102].join(","));
    let mut c = try_connect(ws_request(&gw, &path, &[])).await.expect("connected");
    for n in &names[..100] {
        c.expect_subscribed_frame(n).await;
    }
    for n in &names[100..102] {
        WsClient::assert_refusal(&c.next_json(STEP).await, n, "too_many_channels");
    }
    assert_eq!(gw.get("/live").await.status(), 200);
}

#[tokio::test]
async fn idempotency_keys_of_different_publishers_never_collide() {
    let gw = Gateway::start(&[]).await;
    let mut alice = connect_user(&gw, "alice").await;
    let svc = service_token(&gw.secret, "svc", "publish");
    let svc_a = service_token(&gw.secret, "svc:a", "publish");
    let first = publish_idempotent(&gw, &svc, "a:b", &json!({"type": "one"})).await;
    let second = publish_idempotent(&gw, &svc_a, "b", &json!({"type": "two"})).await;
    assert_eq!(second.status, 202, "{}", second.body);
    assert_eq!(second.header("idempotent-replayed"), None, "another publisher's key is no retry");
    assert_ne!(first.id(), second.id());
    assert_eq!(alice.types_until("two").await, ["one", "two"], "both events delivered");
}

async fn upgrade_from(gw: &Gateway, sub: &str, headers: &[(&str, &str)]) -> Result<WsClient, Rejected> {
    let token = user_token(&gw.secret, sub, 3600);
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}"), headers)).await
}

#[tokio::test]
async fn behind_a_proxy_only_the_header_it_writes_names_the_client() {
    // The proxy (127.0.0.1) writes Forwarded; the client adds its own X-Forwarded-For each time.
    let env = [("TRUSTED_PROXIES", "127.0.0.1"), ("CLIENT_IP_HEADER", "forwarded"), ("UPGRADES_PER_SEC_PER_IP", "1")];
    let gw = Gateway::start(&env).await;
    let mut open = Vec::new();
    for i in 0..2 {
        let spoof = format!("192.0.2.{i}");
        let h = [("x-forwarded-for", spoof.as_str()), ("forwarded", "for=198.51.100.7")];
        open.push(upgrade_from(&gw, "a", &h).await.expect("within the burst of 2"));
    }
    let h = [("x-forwarded-for", "192.0.2.99"), ("forwarded", "for=198.51.100.7")];
    let r = upgrade_from(&gw, "a", &h).await.err().expect("the third upgrade of one client in a second");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(gw.metric("wsgate_limit_refusals_total{reason=\"upgrade_rate\"}").await, 1.0);
    // `for=unknown`: nothing the proxy was told can be believed, so the proxy's own address
    // (127.0.0.1) is charged, not an address the client picked.
    let gw = Gateway::start(&[
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("CLIENT_IP_HEADER", "forwarded"),
        ("MAX_CONNECTIONS_PER_IP", "1"),
    ])
    .await;
    let h = [("x-forwarded-for", "192.0.2.1"), ("forwarded", "for=192.0.2.1, for=unknown")];
    let _one = upgrade_from(&gw, "a", &h).await.expect("first");
    let h = [("x-forwarded-for", "192.0.2.2"), ("forwarded", "for=192.0.2.2, for=unknown")];
    assert_eq!(upgrade_from(&gw, "b", &h).await.err().expect("same (proxy) address").status, 429);
}

#[tokio::test]
async fn ipv6_clients_share_the_per_ip_limit_of_their_64() {
    let env =
        [("TRUSTED_PROXIES", "127.0.0.1"), ("CLIENT_IP_HEADER", "x-forwarded-for"), ("MAX_CONNECTIONS_PER_IP", "1")];
    let gw = Gateway::start(&env).await;
    let _one = upgrade_from(&gw, "a", &[("x-forwarded-for", "2001:db8:1:2::1")]).await.expect("first");
    let r = upgrade_from(&gw, "b", &[("x-forwarded-for", "2001:db8:1:2:ffff::2")]).await.err().expect("same /64");
    assert_eq!(r.status, 429, "{r:?}");
    let _other = upgrade_from(&gw, "c", &[("x-forwarded-for", "2001:db8:1:3::1")]).await.expect("another /64");
}

#[tokio::test]
async fn unsolicited_pongs_count_against_the_message_rate() {
    let gw = Gateway::start(&[("CLIENT_MESSAGES_PER_SEC", "10")]).await;
    let mut c = connect_user(&gw, "alice").await;
    // The audit sent 2,000 and the connection stayed open; the budget is 20 (twice the rate).
    for _ in 0..200 {
        if c.ws.send(Message::Pong(Default::default())).await.is_err() {
            break;
        }
    }
    assert_eq!(c.expect_close(STEP).await, 1008);
    gw.wait_metric("wsgate_limit_refusals_total{reason=\"message_rate\"}", 1.0).await;
}

#[tokio::test]
async fn a_sub_with_newlines_and_escapes_cannot_forge_log_lines() {
    let gw = Gateway::start(&[("LOG_FORMAT", "text")]).await;
    let evil = "mallory\n2026-12-08T00:00:00.000000Z  INFO wsgate: forged\u{1b}[31m";
    let mut c = connect(&gw, &user_token(&gw.secret, evil, 3600)).await;
    c.ws.close(None).await.expect("close");
    let line = gw.wait_log("disconnected").await;
    assert!(line.contains("mallory\\n2026"), "the sub is logged escaped: {line}");
    let logs = gw.logs();
    assert!(!logs.lines().any(|l| l.contains("INFO wsgate: forged") && !l.contains("mallory")), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no raw escape reaches the log: {logs:?}");
}
