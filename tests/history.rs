//! History and resume in memory mode: `since=<id>` replays what a client missed (only what was
//! addressed to it), `recovered` says whether that was possible, and `Idempotency-Key` makes a
//! retried publish a no-op.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use support::*;

/// After the last event that must arrive (or a marker): see [`expect_only_marker`].
const QUIET: Duration = QUIET_WINDOW;

/// Publishes `seq_event("e", i, 0)` for each `i` in `range`; returns the ids.
async fn publish_seqs(gw: &Gateway, token: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids = Vec::new();
    for i in range {
        ids.push(publish_ok(gw, token, seq_event("e", i, 0)).await);
    }
    ids
}

fn publisher_named(gw: &Gateway, sub: &str) -> String {
    token_with(&gw.secret, json!({"sub": sub, "exp": now_secs() + 3600, "scope": "publish"}))
}

#[tokio::test]
async fn ids_are_stream_ids_that_increase_numerically() {
    let gw = Gateway::start(&[]).await;
    let mut client = connect_user(&gw, "alice").await;
    let ids = publish_seqs(&gw, &publish_token(&gw.secret), 0..200).await;
    for pair in ids.windows(2) {
        assert!(stream_id(&pair[0]) < stream_id(&pair[1]), "ids out of order: {} then {}", pair[0], pair[1]);
    }
    for id in &ids {
        assert_eq!(client.expect_event("e").await["id"], id.as_str(), "the frame carries the id the 202 gave");
    }
}

#[tokio::test]
async fn without_since_connected_has_no_recovered_field() {
    let gw = Gateway::start(&[]).await;
    let client = connect_user(&gw, "alice").await;
    assert_eq!(client.recovered(), None, "{}", client.connected);
}

#[tokio::test]
async fn resume_replays_the_missed_events_in_order_then_live_ones() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut before = connect_user(&gw, "alice").await;
    publish_seqs(&gw, &token, 0..1).await;
    let last = before.expect_event("e").await["id"].as_str().expect("id").to_owned();
    drop(before);

    let missed = publish_seqs(&gw, &token, 1..6).await;
    let mut client = connect_since(&gw, "alice", &last).await;
    assert_eq!(client.recovered(), Some(&json!(true)), "{}", client.connected);
    for (i, id) in missed.iter().enumerate() {
        let v = client.expect_event("e").await;
        assert_eq!((v["data"]["seq"].as_u64(), v["id"].as_str()), (Some(i as u64 + 1), Some(id.as_str())), "{v}");
    }
    publish_seqs(&gw, &token, 6..7).await;
    assert_eq!(client.read_seqs(1).await, [6]);
    client.expect_quiet(QUIET).await;
    assert_eq!(gw.metric(r#"wsgate_resumes_total{result="recovered"}"#).await, 1.0);
    assert_eq!(gw.metric("wsgate_replayed_events_total").await, 5.0);
}

#[tokio::test]
async fn resume_with_nothing_missed_is_recovered_and_replays_nothing() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let ids = publish_seqs(&gw, &token, 0..3).await;
    let mut client = connect_since(&gw, "alice", &ids[2]).await;
    assert_eq!(client.recovered(), Some(&json!(true)), "{}", client.connected);
    publish_seqs(&gw, &token, 3..4).await;
    assert_eq!(client.read_seqs(1).await, [3], "the first frame after connected must be the live event");
}

#[tokio::test]
async fn resume_replays_only_what_was_addressed_to_the_user() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let since = publish_ok(&gw, &token, json!({"type": "start"})).await;
    for body in [
        json!({"type": "bob-only", "users": ["bob"]}),
        json!({"type": "everyone"}),
        json!({"type": "alice-only", "users": ["alice"]}),
        json!({"type": "bob-and-carol", "users": ["bob", "carol"]}),
        json!({"type": "alice-and-bob", "users": ["bob", "alice"]}),
    ] {
        publish_ok(&gw, &token, body).await;
    }
    let mut client = connect_since(&gw, "alice", &since).await;
    assert_eq!(client.recovered(), Some(&json!(true)), "{}", client.connected);
    publish_ok(&gw, &token, json!({"type": "live"})).await;
    assert_eq!(client.types_until("live").await, ["everyone", "alice-only", "alice-and-bob", "live"]);
}

#[tokio::test]
async fn malformed_since_is_not_recovered_and_live_events_follow() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    publish_seqs(&gw, &token, 0..3).await;
    for (i, since) in ["abc", "12-", "-5", "1-2-3", "1-x", "99999999999999999999-0"].into_iter().enumerate() {
        let mut client = connect_since(&gw, "alice", since).await;
        assert_eq!(client.recovered(), Some(&json!(false)), "since={since}: {}", client.connected);
        publish_ok(&gw, &token, json!({"type": "live", "data": i})).await;
        let v = client.expect_event("live").await;
        assert_eq!(v["data"], i, "{v}");
    }
    assert_eq!(gw.metric(r#"wsgate_resumes_total{result="not_recovered"}"#).await, 6.0);
}

#[tokio::test]
async fn since_older_than_the_retained_count_is_not_recovered() {
    let gw = Gateway::start(&[("HISTORY_MAX_EVENTS", "5")]).await;
    let token = publish_token(&gw.secret);
    let ids = publish_seqs(&gw, &token, 0..20).await;
    let mut old = connect_since(&gw, "alice", &ids[0]).await;
    assert_eq!(old.recovered(), Some(&json!(false)), "{}", old.connected);
    // Still within the last 5: recovered, with just what came after.
    let mut recent = connect_since(&gw, "alice", &ids[17]).await;
    assert_eq!(recent.recovered(), Some(&json!(true)), "{}", recent.connected);
    assert_eq!(recent.read_seqs(2).await, [18, 19]);
    publish_seqs(&gw, &token, 20..21).await;
    assert_eq!(old.read_seqs(1).await, [20], "not recovered: no replay, live events only");
    assert_eq!(recent.read_seqs(1).await, [20]);
}

#[tokio::test]
async fn since_older_than_the_retained_bytes_is_not_recovered() {
    let gw = Gateway::start(&[("HISTORY_MAX_BYTES", "65536")]).await;
    let token = publish_token(&gw.secret);
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(publish_ok(&gw, &token, seq_event("e", i, 2000)).await);
    }
    let old = connect_since(&gw, "alice", &ids[0]).await;
    assert_eq!(old.recovered(), Some(&json!(false)), "200 KB published, 64 KiB kept: {}", old.connected);
    let mut recent = connect_since(&gw, "alice", &ids[97]).await;
    assert_eq!(recent.recovered(), Some(&json!(true)), "{}", recent.connected);
    assert_eq!(recent.read_seqs(2).await, [98, 99]);
}

#[tokio::test]
async fn since_older_than_the_retained_age_is_not_recovered() {
    let gw = Gateway::start(&[("HISTORY_MAX_AGE_SECS", "1")]).await;
    let token = publish_token(&gw.secret);
    let old =
        [publish_ok(&gw, &token, json!({"type": "old"})).await, publish_ok(&gw, &token, json!({"type": "old"})).await];
    // Let both age past the retention (set-up, not an assertion).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish_ok(&gw, &token, json!({"type": "new"})).await;
    // The second old event is gone: a client that saw only the first cannot be made whole.
    let mut client = connect_since(&gw, "alice", &old[0]).await;
    assert_eq!(client.recovered(), Some(&json!(false)), "{}", client.connected);
    // A client that saw both missed only "new", which is still kept.
    let mut whole = connect_since(&gw, "alice", &old[1]).await;
    assert_eq!(whole.recovered(), Some(&json!(true)), "{}", whole.connected);
    whole.expect_event("new").await;
    publish_ok(&gw, &token, json!({"type": "live"})).await;
    client.expect_event("live").await;
    whole.expect_event("live").await;
}

#[tokio::test]
async fn history_off_is_never_recovered() {
    let gw = Gateway::start(&[("HISTORY_MAX_EVENTS", "0")]).await;
    let token = publish_token(&gw.secret);
    let ids = publish_seqs(&gw, &token, 0..3).await;
    stream_id(&ids[0]);
    let mut client = connect_since(&gw, "alice", &ids[0]).await;
    assert_eq!(client.recovered(), Some(&json!(false)), "{}", client.connected);
    publish_seqs(&gw, &token, 3..4).await;
    assert_eq!(client.read_seqs(1).await, [3]);
}

#[tokio::test]
async fn an_id_from_a_previous_process_is_not_recovered() {
    let secret = random_hex();
    let env = [("JWT_SECRET", secret.as_str())];
    let mut first = Gateway::start(&env).await;
    let token = publish_token(&secret);
    let ids = publish_seqs(&first, &token, 0..3).await;
    first.sigkill().await;

    let gw = Gateway::start(&env).await;
    let client = connect_since(&gw, "alice", &ids[0]).await;
    assert_eq!(client.recovered(), Some(&json!(false)), "empty history: {}", client.connected);
    publish_seqs(&gw, &token, 3..5).await;
    let mut client = connect_since(&gw, "alice", &ids[1]).await;
    assert_eq!(client.recovered(), Some(&json!(false)), "history of another process: {}", client.connected);
    publish_seqs(&gw, &token, 5..6).await;
    assert_eq!(client.read_seqs(1).await, [5]);
}

/// The seam between replay and live delivery: a client resumes while events keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_during_a_publish_stream_has_no_gap_and_no_duplicate() {
    const N: u64 = 400;
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    let published = AtomicU64::new(0);
    let publisher = async {
        for i in 0..N as usize {
            publish_ok(&gw, &token, seq_event("e", i, 100)).await;
            published.store(i as u64 + 1, Ordering::SeqCst);
        }
    };
    let reader = async {
        let mut seqs = Vec::new();
        let mut resumed = 0;
        while seqs.last() != Some(&(N - 1)) {
            let v = client.next_json(STEP).await;
            seqs.push(v["data"]["seq"].as_u64().unwrap_or_else(|| panic!("no data.seq: {v}")));
            // Three times while events flow: drop the connection and resume from the last id.
            if resumed < 3 && seqs.len() as u64 == (resumed + 1) * N / 4 {
                resumed += 1;
                let last = v["id"].as_str().expect("id").to_owned();
                client = connect_since(&gw, "alice", &last).await;
                assert_eq!(client.recovered(), Some(&json!(true)), "{}", client.connected);
            }
        }
        (seqs, resumed)
    };
    let ((), (seqs, resumed)) = tokio::join!(publisher, reader);
    assert_eq!(resumed, 3);
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "every event exactly once, in order");
    client.expect_quiet(QUIET).await;
    assert_eq!(published.load(Ordering::SeqCst), N);
}

// ---------------------------------------------------------------------------------------------
// Idempotency-Key

#[tokio::test]
async fn an_idempotent_retry_gets_the_same_id_and_is_delivered_once() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    let body = json!({"type": "charged", "data": {"amount": 5}});
    let first = publish_idempotent(&gw, &token, "order-42", &body).await;
    let id = first.id();
    assert_ne!(first.header("idempotent-replayed"), Some("true"), "a first publish is no replay");
    assert_eq!(client.expect_event("charged").await["id"], id.as_str());

    for _ in 0..2 {
        let retry = publish_idempotent(&gw, &token, "order-42", &body).await;
        assert_eq!(retry.id(), id, "a retry answers with the first event's id");
        assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    }
    expect_only_marker(&gw, &mut [&mut client]).await;
    assert_eq!(gw.metric("wsgate_idempotent_replays_total").await, 2.0);

    // Another key is another event.
    let other = publish_idempotent(&gw, &token, "order-43", &body).await.id();
    assert_ne!(other, id);
    assert_eq!(client.expect_event("charged").await["id"], other.as_str());
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    publish_idempotent(&gw, &token, "k", &json!({"type": "a", "data": 1})).await.id();
    client.expect_event("a").await;
    for body in [
        json!({"type": "a", "data": 2}),
        json!({"type": "b", "data": 1}),
        json!({"type": "a", "data": 1, "users": ["alice"]}),
    ] {
        let r = publish_idempotent(&gw, &token, "k", &body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert!(!r.error().is_empty());
    }
    expect_only_marker(&gw, &mut [&mut client]).await;
}

#[tokio::test]
async fn a_bad_idempotency_key_is_400() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    let long = "k".repeat(256);
    let bad: [&[u8]; 5] = [b"", long.as_bytes(), b"has space", b"tab\there", "cl\u{e9}".as_bytes()];
    for key in bad {
        let r = publish_with_headers(&gw, &token, &json!({"type": "x"}), &[("idempotency-key", key)]).await;
        assert_eq!(r.status, 400, "key {:?}: {}", String::from_utf8_lossy(key), r.body);
        assert!(r.error().contains("Idempotency-Key"), "the error names the header: {}", r.body);
    }
    expect_only_marker(&gw, &mut [&mut client]).await;
    // The bounds themselves are fine.
    let longest = "~".repeat(255);
    for key in ["a", longest.as_str(), "!#$%&'*+-.^_`|~:;<=>?@[]{}()/\\\"0Az"] {
        let r = publish_idempotent(&gw, &token, key, &json!({"type": "ok"})).await;
        assert_eq!(r.status, 202, "key {key:?}: {}", r.body);
        client.expect_event("ok").await;
    }
}

#[tokio::test]
async fn keys_belong_to_the_publisher_subject() {
    let gw = Gateway::start(&[]).await;
    let mut client = connect_user(&gw, "alice").await;
    let body = json!({"type": "x"});
    let a = publish_idempotent(&gw, &publisher_named(&gw, "svc-a"), "same", &body).await.id();
    let b = publish_idempotent(&gw, &publisher_named(&gw, "svc-b"), "same", &body).await.id();
    assert_ne!(a, b, "two subjects, two events");
    assert_eq!(client.expect_event("x").await["id"], a.as_str());
    assert_eq!(client.expect_event("x").await["id"], b.as_str());
    // And each subject's retry still finds its own event.
    let again = publish_idempotent(&gw, &publisher_named(&gw, "svc-b"), "same", &body).await;
    assert_eq!(again.id(), b);
    expect_only_marker(&gw, &mut [&mut client]).await;
}

#[tokio::test]
async fn a_key_is_forgotten_after_the_window() {
    let gw = Gateway::start(&[("IDEMPOTENCY_WINDOW_SECS", "1")]).await;
    let token = publish_token(&gw.secret);
    let mut client = connect_user(&gw, "alice").await;
    let body = json!({"type": "x"});
    let first = publish_idempotent(&gw, &token, "k", &body).await.id();
    assert_eq!(publish_idempotent(&gw, &token, "k", &body).await.id(), first, "within the window");
    // Let the window pass (set-up, not an assertion).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = publish_idempotent(&gw, &token, "k", &body).await;
    assert_ne!(later.id(), first, "after the window the key starts a new event");
    assert_ne!(later.header("idempotent-replayed"), Some("true"));
    assert_eq!(client.expect_event("x").await["id"], first.as_str());
    assert_eq!(client.expect_event("x").await["id"], later.id().as_str());
    client.expect_quiet(QUIET).await;
}
