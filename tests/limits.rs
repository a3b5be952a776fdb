//! Connection and rate limits: every refusal is precise (status + JSON, or close 1008) and
//! counted by reason; what is under the limit keeps working.

mod support;

use support::*;

async fn attempt(gw: &Gateway, sub: &str, headers: &[(&str, &str)]) -> Result<WsClient, Rejected> {
    let token = user_token(&gw.secret, sub, 3600);
    try_connect(ws_request(gw, &format!("/ws/tasks?token={token}"), headers)).await
}

async fn refused(gw: &Gateway, sub: &str, headers: &[(&str, &str)]) -> Rejected {
    match attempt(gw, sub, headers).await {
        Ok(_) => panic!("upgrade of {sub} with {headers:?} was accepted"),
        Err(r) => r,
    }
}

fn refusals(reason: &str) -> String {
    format!("wsgate_limit_refusals_total{{reason=\"{reason}\"}}")
}

#[tokio::test]
async fn a_full_instance_answers_503_and_admits_again_when_a_slot_frees() {
    let gw = Gateway::start(&[("MAX_CONNECTIONS", "2")]).await;
    let a = connect_user(&gw, "a").await;
    let _b = connect_user(&gw, "b").await;
    let r = refused(&gw, "c", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body["error"].as_str().unwrap().contains("full"), "{r:?}");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert_eq!(gw.metric(&refusals("max_connections")).await, 1.0);
    drop(a);
    wait_until("a freed slot", STEP, || async { attempt(&gw, "c", &[]).await.is_ok() }).await;
}

#[tokio::test]
async fn connections_per_user_are_capped() {
    let gw = Gateway::start(&[("MAX_CONNECTIONS_PER_USER", "2")]).await;
    let _a1 = connect_user(&gw, "a").await;
    let _a2 = connect_user(&gw, "a").await;
    let r = refused(&gw, "a", &[]).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.body["error"].as_str().unwrap().contains("user"), "{r:?}");
    let _b = connect_user(&gw, "b").await;
    assert_eq!(gw.metric(&refusals("per_user")).await, 1.0);
}

#[tokio::test]
async fn connections_per_ip_ignore_forwarded_headers_from_untrusted_peers() {
    let gw = Gateway::start(&[("MAX_CONNECTIONS_PER_IP", "2")]).await;
    let _a = attempt(&gw, "a", &[("x-forwarded-for", "203.0.113.1")]).await.unwrap();
    let _b = attempt(&gw, "b", &[("x-forwarded-for", "203.0.113.2")]).await.unwrap();
    // Both came from 127.0.0.1, which is not a trusted proxy: the header changes nothing.
    let r = refused(&gw, "c", &[("x-forwarded-for", "203.0.113.3")]).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.body["error"].as_str().unwrap().contains("address"), "{r:?}");
    assert_eq!(gw.metric(&refusals("per_ip")).await, 1.0);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_cap() {
    let gw = Gateway::start(&[("MAX_CONNECTIONS_PER_IP", "2"), ("TRUSTED_PROXIES", "127.0.0.0/8, ::1")]).await;
    let one = [("x-forwarded-for", "203.0.113.1")];
    let _a = attempt(&gw, "a", &one).await.unwrap();
    let _b = attempt(&gw, "b", &one).await.unwrap();
    assert_eq!(refused(&gw, "c", &one).await.status, 429);
    // Another client address behind the same proxy, and the Forwarded header form.
    let _c = attempt(&gw, "c", &[("x-forwarded-for", "203.0.113.2")]).await.unwrap();
    let _d = attempt(&gw, "d", &[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")]).await.unwrap();
    // A client cannot pose as another by prepending to the header: the proxy's entry counts.
    let spoof = [("x-forwarded-for", "198.51.100.9, 203.0.113.1")];
    assert_eq!(refused(&gw, "e", &spoof).await.status, 429);
}

#[tokio::test]
async fn upgrade_bursts_from_one_address_get_429_with_retry_after() {
    // 2 per second, bursts of 4.
    let gw = Gateway::start(&[("UPGRADES_PER_SEC_PER_IP", "2")]).await;
    let mut open = Vec::new();
    let mut refusal = None;
    for i in 0..8 {
        match attempt(&gw, &format!("u{i}"), &[]).await {
            Ok(c) => open.push(c),
            Err(r) => {
                refusal = Some(r);
                break;
            }
        }
    }
    let r = refusal.expect("8 upgrades in a burst were all accepted");
    assert!((4..8).contains(&open.len()), "refused after {} upgrades", open.len());
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)), "{r:?}");
    // The loop stopped at the first refusal.
    assert_eq!(gw.metric(&refusals("upgrade_rate")).await, 1.0);
    // The rate refills.
    wait_until("the upgrade budget to refill", STEP, || async { attempt(&gw, "later", &[]).await.is_ok() }).await;
}

#[tokio::test]
async fn a_client_flooding_messages_is_closed_with_1008_and_others_are_untouched() {
    let gw = Gateway::start(&[("CLIENT_MESSAGES_PER_SEC", "5")]).await;
    let mut flood = connect_user(&gw, "flood").await;
    let mut calm = connect_user(&gw, "calm").await;
    for _ in 0..40 {
        flood.send_json(&serde_json::json!({"type": "ping"})).await;
    }
    assert_eq!(flood.expect_close(STEP).await, 1008);
    assert_eq!(gw.metric(&refusals("message_rate")).await, 1.0);
    assert_eq!(gw.metric("wsgate_disconnects_total{reason=\"message_rate\"}").await, 1.0);
    // Within the budget: answered, connection open.
    for _ in 0..3 {
        calm.send_json(&serde_json::json!({"type": "ping"})).await;
        assert_eq!(calm.next_json(STEP).await["type"], "pong");
    }
    calm.expect_quiet(QUIET_WINDOW).await;
}

#[tokio::test]
async fn bad_limit_settings_stop_start_up_naming_the_setting() {
    for (k, v) in [("TRUSTED_PROXIES", "10.0.0.0/33"), ("TRUSTED_PROXIES", "proxy.local"), ("MAX_CONNECTIONS", "-1")] {
        let out = run_ok_or_fail(&[(k, v)]).await;
        assert!(out.contains(k), "{k}={v}: {out}");
    }
}

/// Runs the binary with `env` expecting it to exit with an error; returns its stderr.
async fn run_ok_or_fail(env: &[(&str, &str)]) -> String {
    let mut all = vec![("JWT_SECRET", "limits-test-secret-0123456789abcdef"), ("LISTEN_ADDR", "127.0.0.1:0")];
    all.extend_from_slice(env);
    let mut p = Process::spawn(wsgate_command(&[], &all));
    let status = p.wait_exit(STEP).await.expect("exits");
    assert!(!status.success(), "started with {env:?}");
    p.stderr()
}
