//! History and resume across a fleet sharing a real Redis: resume on another instance, survive
//! an instance or Redis being SIGKILLed, trimming, fleet-wide idempotency, the bounded outbox
//! and gap filling.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use support::*;

const HB: &str = "200"; // heartbeat period for these tests, ms
/// After the last event that must arrive (or a marker): see [`expect_only_marker`].
const QUIET: Duration = QUIET_WINDOW;
const STREAM: &str = "websocket:stream:all";

/// `n` instances sharing `redis`: one `JWT_SECRET`, instance ids `gw0`.., a fast heartbeat,
/// plus `env`. Returns once every instance reports Redis connected.
async fn fleet(redis: &RedisServer, n: usize, env: &[(&str, &str)]) -> Vec<Gateway> {
    let url = redis.url();
    let mut all = vec![("HEARTBEAT_INTERVAL_MS", HB), ("REDIS_URL", url.as_str())];
    all.extend_from_slice(env);
    let gws = start_fleet(n, &all).await;
    wait_all_connected(&gws).await;
    gws
}

/// A Redis that writes every command to its append-only file before answering, so a SIGKILL
/// loses nothing it acknowledged.
async fn persistent_redis() -> RedisServer {
    RedisServer::start_args(&["--appendonly", "yes", "--appendfsync", "always"]).await
}

/// Reads `n` events' `data.seq`; on a timeout or the connection's end, panics with what it got
/// and the fleet's logs.
async fn read_seqs_logged(client: &mut WsClient, n: usize, gws: &[Gateway]) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match tokio::time::timeout(STEP, client.next_json_or_end(STEP * 2)).await {
            Ok(Some(v)) => seqs.push(seq_of(&v)),
            Ok(None) => panic!("connection ended after {seqs:?}; logs:\n{}", fleet_logs(gws)),
            Err(_) => panic!("timed out after {STEP:?} with {seqs:?} of {n} events; logs:\n{}", fleet_logs(gws)),
        }
    }
    seqs
}

/// What is wrong with a sequence that should be `0..n`: duplicates, missing, out of order.
fn describe_seqs(seqs: &[u64], n: u64) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in seqs {
        *counts.entry(*s).or_insert(0) += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).map(|(s, _)| *s).collect();
    let missing: Vec<_> = (0..n).filter(|s| !counts.contains_key(s)).collect();
    let backwards: Vec<_> = seqs.windows(2).filter(|w| w[1] <= w[0]).map(|w| (w[0], w[1])).collect();
    format!("{} events, duplicated {dups:?}, missing {missing:?}, backwards steps {backwards:?}", seqs.len())
}

/// The `data.seq` of every stream entry, in stream order.
async fn stream_seqs(redis: &RedisServer) -> Vec<u64> {
    let out = redis.cli(&["XRANGE", STREAM, "-", "+"]).await;
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).map(|v| seq_of(&v)).unwrap_or_else(|e| panic!("entry {l}: {e}")))
        .collect()
}

/// Appends an event entry of type `kind` (data `1`) to the broadcast stream behind the
/// gateways' backs, as the publish script would but without publishing it; returns its id.
async fn inject_entry(redis: &RedisServer, kind: &str) -> String {
    let time = redis.cli(&["TIME"]).await;
    let mut parts = time.lines();
    let secs: u64 = parts.next().unwrap().parse().unwrap();
    let micros: u64 = parts.next().unwrap().parse().unwrap();
    // A millisecond ahead of Redis's clock: after every id given so far.
    let id = format!("{}-0", secs * 1000 + micros / 1000 + 1);
    let frame = format!(r#"{{"id":"{id}","type":"{kind}","data":1,"ts":0}}"#);
    let got = redis.cli(&["XADD", STREAM, &id, "f", &frame, "i", "01TEST"]).await;
    assert_eq!(got, id);
    id
}

fn seq_of(v: &Value) -> u64 {
    v["data"]["seq"].as_u64().unwrap_or_else(|| panic!("event without data.seq: {v}"))
}

/// Publishes `seq_event("e", i, pad)`, retrying (bounded) while the gateway answers 503, which
/// must come with `Retry-After`. Returns the id.
async fn publish_retrying(gw: &Gateway, token: &str, i: usize, pad: usize) -> String {
    let body = seq_event("e", i, pad);
    for _ in 0..400 {
        let r = publish_with_headers(gw, token, &body, &[]).await;
        match r.status {
            202 => return r.id(),
            503 => {
                assert!(r.header("retry-after").is_some(), "503 without Retry-After: {}", r.body);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("publish {i} answered {other}: {}", r.body),
        }
    }
    panic!("publish {i} still refused after 400 tries; gateway logs:\n{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_instance_replays_500_events_exactly_once() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let mut before = connect_user(&gws[0], "alice").await;
    publish_ok(&gws[0], &token, seq_event("e", 0, 0)).await;
    let last = before.expect_event("e").await["id"].as_str().expect("id").to_owned();
    drop(before);

    publish_many(&gws[0], &token, 500, |i| seq_event("e", i + 1, 0)).await;
    let mut client = connect_since(&gws[1], "alice", &last).await;
    assert_eq!(client.recovered(), Some(&json!(true)), "{}", client.connected);
    assert_eq!(client.read_seqs(500).await, (1..=500).collect::<Vec<u64>>());
    publish_ok(&gws[0], &token, seq_event("e", 501, 0)).await;
    assert_eq!(client.read_seqs(1).await, [501]);
    client.expect_quiet(QUIET).await;
    assert_eq!(gws[1].metric(r#"wsgate_resumes_total{result="recovered"}"#).await, 1.0);
    assert_eq!(gws[1].metric("wsgate_replayed_events_total").await, 500.0);
    // gw1 delivered all 500 itself: it answered from its newest entries, not from Redis.
    assert_eq!(gws[1].metric(r#"wsgate_resume_reads_total{source="memory"}"#).await, 1.0);
    assert_eq!(gws[1].metric(r#"wsgate_resume_reads_total{source="redis"}"#).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_what_an_instance_keeps_is_read_from_redis_in_pages() {
    let redis = RedisServer::start().await;
    // gw1 keeps about 40 entries of ~250 bytes in memory; the resume below is 1,200 back.
    let gws = fleet(&redis, 1, &[]).await;
    let token = publish_token(&gws[0].secret);
    let first = publish_ok(&gws[0], &token, seq_event("e", 0, 0)).await;
    let url = redis.url();
    let small = [
        ("JWT_SECRET", gws[0].secret.as_str()),
        ("INSTANCE_ID", "small"),
        ("REDIS_URL", url.as_str()),
        ("HEARTBEAT_INTERVAL_MS", HB),
        ("HISTORY_MAX_BYTES", "12000"),
    ];
    let gw1 = Gateway::start(&small).await;
    gw1.wait_redis_state("connected").await;
    publish_many(&gws[0], &token, 1200, |i| seq_event("e", i + 1, 100)).await;
    // Wait until gw1's relay has delivered the last one (so its window is as far as it goes).
    let mut watcher = connect_user(&gw1, "watcher").await;
    publish_ok(&gws[0], &token, json!({"type": "marker"})).await;
    watcher.types_until("marker").await;
    let mut client = connect_since(&gw1, "alice", &first).await;
    assert_eq!(client.recovered(), Some(&json!(true)), "{}", client.connected);
    let seqs = read_seqs_logged(&mut client, 1200, std::slice::from_ref(&gw1)).await;
    assert_eq!(seqs, (1..=1200).collect::<Vec<u64>>(), "3 pages of 500, in order, once");
    assert_eq!(client.next_json(STEP).await["type"], "marker");
    assert_eq!(gw1.metric(r#"wsgate_resume_reads_total{source="redis"}"#).await, 1.0);
    assert_eq!(gw1.metric(r#"wsgate_resume_reads_total{source="memory"}"#).await, 0.0);
    // A resume within what gw1 keeps is answered from memory.
    let recent_id = client.connected["last_id"].as_str().map(str::to_owned);
    drop(client);
    let last = recent_id.expect("connected carries last_id");
    let mut again = connect_since(&gw1, "alice", &last).await;
    assert_eq!(again.recovered(), Some(&json!(true)), "{}", again.connected);
    assert_eq!(gw1.metric(r#"wsgate_resume_reads_total{source="memory"}"#).await, 1.0);
    publish_ok(&gws[0], &token, json!({"type": "after"})).await;
    assert_eq!(again.types_until("after").await, ["after"], "nothing replayed twice, nothing missed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_instance_resume_elsewhere_without_loss() {
    const N: u64 = 300;
    const CLIENTS: usize = 10;
    let redis = RedisServer::start().await;
    let [gw0, gw1, mut gw2]: [Gateway; 3] = fleet(&redis, 3, &[]).await.try_into().ok().expect("3 gateways");
    let token = publish_token(&gw0.secret);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(connect_user(&gw2, &format!("u{i}")).await);
    }
    let seen: Vec<AtomicU64> = (0..CLIENTS).map(|_| AtomicU64::new(0)).collect();

    // ~200 events a second through gw0.
    let publisher = async {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for i in 0..N as usize {
            tick.tick().await;
            publish_ok(&gw0, &token, seq_event("e", i, 50)).await;
        }
    };
    // gw2 dies once every client has some events behind it and many ahead.
    let killer = async {
        wait_until("every client on gw2 to see 50 events", STEP, || async {
            seen.iter().all(|s| s.load(Ordering::SeqCst) >= 50)
        })
        .await;
        gw2.sigkill().await;
    };
    let readers = join_all(clients.into_iter().enumerate().map(|(i, mut client)| {
        let (gw1, seen) = (&gw1, &seen[i]);
        async move {
            let (mut seqs, mut last, mut resumes) = (Vec::new(), String::new(), 0);
            while seqs.last() != Some(&(N - 1)) {
                match client.next_json_or_end(STEP).await {
                    Some(v) => {
                        seqs.push(seq_of(&v));
                        last = v["id"].as_str().unwrap_or_else(|| panic!("event without id: {v}")).to_owned();
                        seen.store(seqs.len() as u64, Ordering::SeqCst);
                    }
                    None => {
                        assert!(!last.is_empty() && resumes == 0, "client u{i}: unexpected end of connection");
                        resumes += 1;
                        client = connect_since(gw1, &format!("u{i}"), &last).await;
                        assert_eq!(client.recovered(), Some(&json!(true)), "u{i}: {}", client.connected);
                    }
                }
            }
            (i, seqs, resumes)
        }
    }));
    let ((), (), results) = within("the publish run with an instance killed", Duration::from_secs(40), async {
        tokio::join!(publisher, killer, readers)
    })
    .await;
    for (i, seqs, resumes) in results {
        assert_eq!(resumes, 1, "client u{i} should have resumed once");
        assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "client u{i}: every event exactly once, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sigkill_during_a_burst_loses_nothing() {
    const N: usize = 300;
    let mut redis = persistent_redis().await;
    let gws = fleet(&redis, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let mut clients = Vec::new();
    for g in &gws {
        for u in ["a", "b", "c"] {
            clients.push(connect_user(g, u).await);
        }
    }
    let published = AtomicU64::new(0);
    let publisher = async {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for i in 0..N {
            tick.tick().await;
            publish_retrying(&gws[0], &token, i, 50).await;
            published.store(i as u64 + 1, Ordering::SeqCst);
        }
    };
    let chaos = async {
        wait_until("100 events published", STEP, || async { published.load(Ordering::SeqCst) >= 100 }).await;
        redis.kill();
        gws[0].wait_redis_state("disconnected").await;
        wait_until("150 events published", STEP, || async { published.load(Ordering::SeqCst) >= 150 }).await;
        redis.restart().await;
    };
    let gws: &[Gateway] = &gws;
    // Readers collect (they do not assert) so that a failure can show the whole picture.
    let readers = join_all(clients.iter_mut().map(|client| async move {
        let mut seqs = Vec::new();
        while seqs.last() != Some(&(N as u64 - 1)) {
            match tokio::time::timeout(Duration::from_secs(20), client.next_json_or_end(STEP * 3)).await {
                Ok(Some(v)) => seqs.push(seq_of(&v)),
                _ => break,
            }
        }
        seqs
    }));
    let ((), (), results) = within("the burst with Redis killed", Duration::from_secs(45), async {
        tokio::join!(publisher, chaos, readers)
    })
    .await;
    let want: Vec<u64> = (0..N as u64).collect();
    if results.iter().any(|seqs| *seqs != want) {
        let report: String = results
            .iter()
            .enumerate()
            .filter(|(_, seqs)| **seqs != want)
            .map(|(i, seqs)| format!("client {i} on gw{}: {}\n", i / 3, describe_seqs(seqs, N as u64)))
            .collect();
        let stream = stream_seqs(&redis).await;
        panic!(
            "not every client got every event once, in order:\n{report}stream: {}\nlogs:\n{}",
            describe_seqs(&stream, N as u64),
            fleet_logs(gws)
        );
    }
    for c in &mut clients {
        c.expect_quiet(QUIET).await;
    }
    // Everything made it into the stream, once.
    assert_eq!(stream_seqs(&redis).await, want, "the stream");
    gws[0].wait_metric("wsgate_redis_outbox_events", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_older_than_the_trimmed_stream_is_not_recovered() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2, &[("HISTORY_MAX_EVENTS", "10")]).await;
    let token = publish_token(&gws[0].secret);
    let ids = publish_many(&gws[0], &token, 400, |i| seq_event("e", i, 0)).await;
    let len: u64 = redis.cli(&["XLEN", STREAM]).await.parse().expect("XLEN");
    assert!((10..400).contains(&len), "stream not trimmed to about 10 entries: XLEN {len}");

    let mut old = connect_since(&gws[1], "alice", &ids[0]).await;
    assert_eq!(old.recovered(), Some(&json!(false)), "{}", old.connected);
    let mut recent = connect_since(&gws[1], "alice", &ids[397]).await;
    assert_eq!(recent.recovered(), Some(&json!(true)), "{}", recent.connected);
    assert_eq!(recent.read_seqs(2).await, [398, 399]);
    publish_ok(&gws[0], &token, seq_event("e", 400, 0)).await;
    assert_eq!(old.read_seqs(1).await, [400], "not recovered: no replay, live events only");
    assert_eq!(recent.read_seqs(1).await, [400]);
    assert_eq!(gws[1].metric(r#"wsgate_resumes_total{result="not_recovered"}"#).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_older_than_the_max_age_is_not_recovered() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 1, &[("HISTORY_MAX_AGE_SECS", "1")]).await;
    let token = publish_token(&gws[0].secret);
    let old_id = publish_ok(&gws[0], &token, json!({"type": "old"})).await;
    publish_ok(&gws[0], &token, json!({"type": "old"})).await;
    // Let both age past the retention (set-up, not an assertion).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish_ok(&gws[0], &token, json!({"type": "new"})).await;
    let stream = redis.cli(&["XRANGE", STREAM, "-", "+"]).await;
    assert_eq!(redis.cli(&["XLEN", STREAM]).await, "1", "old entries trimmed on the next append: {stream}");
    // The client saw the first old event only: the second is gone, it cannot be made whole.
    let mut client = connect_since(&gws[0], "alice", &old_id).await;
    assert_eq!(client.recovered(), Some(&json!(false)), "{}; stream: {stream}", client.connected);
    publish_ok(&gws[0], &token, json!({"type": "live"})).await;
    client.expect_event("live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_through_another_instance_gets_the_same_id() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let mut clients = [connect_user(&gws[0], "a").await, connect_user(&gws[1], "b").await];
    let body = json!({"type": "once", "data": {"n": 1}});
    let id = publish_idempotent(&gws[0], &token, "retry-me", &body).await.id();
    for c in &mut clients {
        assert_eq!(c.expect_event("once").await["id"], id.as_str());
    }
    let retry = publish_idempotent(&gws[1], &token, "retry-me", &body).await;
    assert_eq!(retry.id(), id, "a retry through gw1 answers with gw0's id");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let changed = publish_idempotent(&gws[1], &token, "retry-me", &json!({"type": "once", "data": {"n": 2}})).await;
    assert_eq!(changed.status, 422, "{}", changed.body);
    assert_eq!(redis.cli(&["XLEN", STREAM]).await, "1");
    let [a, b] = &mut clients;
    expect_only_marker(&gws[1], &mut [a, b]).await;
    assert_eq!(redis.cli(&["XLEN", STREAM]).await, "2", "the event and the marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_answers_503_and_drains_after_redis_returns() {
    // A Redis that keeps its data: the outbox is the subject here, not data loss.
    let mut redis = persistent_redis().await;
    let gws = fleet(&redis, 2, &[("REDIS_OUTBOX_MAX_EVENTS", "5")]).await;
    let token = publish_token(&gws[0].secret);
    let mut a = connect_user(&gws[0], "a").await;
    let mut b = connect_user(&gws[1], "b").await;

    redis.kill();
    gws[0].wait_redis_state("disconnected").await;
    for i in 0..5 {
        publish_ok(&gws[0], &token, seq_event("e", i, 0)).await;
        assert_eq!(a.read_seqs(1).await, [i as u64], "local clients get outage events at once");
    }
    assert_eq!(gws[0].metric("wsgate_redis_outbox_events").await, 5.0);
    let full = publish_with_headers(&gws[0], &token, &seq_event("e", 99, 0), &[]).await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.header("retry-after").is_some_and(|v| !v.is_empty()), "503 without Retry-After: {:?}", full.headers);
    assert!(full.error().contains("outbox"), "{}", full.body);
    // Redis is away and the outbox full: no marker can be published; both listen at once.
    expect_all_quiet(&mut [&mut a, &mut b], QUIET).await;

    redis.restart().await;
    for g in &gws {
        g.wait_redis_state("connected").await;
    }
    let got = read_seqs_logged(&mut b, 5, &gws).await;
    assert_eq!(got, [0, 1, 2, 3, 4], "the outbox reaches the other instance, in order");
    gws[0].wait_metric("wsgate_redis_outbox_events", 0.0).await;
    publish_ok(&gws[0], &token, seq_event("e", 5, 0)).await;
    assert_eq!(a.read_seqs(1).await, [5], "the publishing instance's clients get nothing twice");
    assert_eq!(b.read_seqs(1).await, [5]);
    expect_all_quiet(&mut [&mut a, &mut b], QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_entry_missed_on_pubsub_is_filled_in_before_later_events() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let mut clients = [connect_user(&gws[0], "a").await, connect_user(&gws[1], "b").await];
    publish_ok(&gws[0], &token, json!({"type": "first"})).await;
    for c in &mut clients {
        c.expect_event("first").await;
    }
    // An entry that was appended but never published.
    let injected_id = inject_entry(&redis, "injected").await;
    let normal = publish_ok(&gws[0], &token, json!({"type": "normal"})).await;
    assert!(stream_id(&injected_id) < stream_id(&normal), "{injected_id} then {normal}");
    for c in &mut clients {
        let v = c.expect_event("injected").await;
        assert_eq!((v["id"].as_str(), &v["data"]), (Some(injected_id.as_str()), &json!(1)), "{v}");
        assert_eq!(c.expect_event("normal").await["id"], normal.as_str());
        c.expect_quiet(QUIET).await;
    }
    for g in &gws {
        let gaps = g.metric("wsgate_history_gaps_total").await;
        // One entry missed on pub/sub: one gap of one event, on every instance.
        assert_eq!(gaps, 1.0, "{}: wsgate_history_gaps_total", g.addr);
        assert_eq!(g.metric("wsgate_history_gap_events_total").await, 1.0, "{}", g.addr);
    }
}

/// The same, on instances that have not delivered any event yet: the first event an instance
/// gets on its subscription still tells it what it missed since it subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_fills_a_gap_before_its_first_event() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let mut clients = [connect_user(&gws[0], "a").await, connect_user(&gws[1], "b").await];
    inject_entry(&redis, "injected").await;
    publish_ok(&gws[0], &token, json!({"type": "normal"})).await;
    for (i, c) in clients.iter_mut().enumerate() {
        let v = c.next_json(STEP).await;
        assert_eq!(v["type"], "injected", "client on gw{i}: {v}; logs:\n{}", fleet_logs(&gws));
        c.expect_event("normal").await;
    }
}

/// An event accepted while Redis is away has no stream position yet: the publishing
/// instance's clients get it at once with a provisional id (its ULID), the fleet gets it with
/// a stream id once the outbox is appended, and resuming from the provisional id is honestly
/// refused (`recovered: false`) rather than guessed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_accepted_during_an_outage_has_a_provisional_id() {
    let mut redis = persistent_redis().await;
    let gws = fleet(&redis, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let mut a = connect_user(&gws[0], "a").await;
    let mut b = connect_user(&gws[1], "b").await;
    redis.kill();
    gws[0].wait_redis_state("disconnected").await;
    let id = publish_ok(&gws[0], &token, seq_event("e", 0, 0)).await;
    assert_eq!(a.expect_event("e").await["id"], id.as_str(), "the frame carries the id the 202 gave");
    assert!(!id.contains('-') && id.len() == 26, "a provisional id is the event's ULID, got {id:?}");
    drop(a);

    redis.restart().await;
    for g in &gws {
        g.wait_redis_state("connected").await;
    }
    gws[0].wait_metric("wsgate_redis_outbox_events", 0.0).await;
    // The other instance gets it from the stream, with its stream id.
    let fleet_copy = b.expect_event("e").await;
    stream_id(fleet_copy["id"].as_str().expect("id"));
    publish_ok(&gws[0], &token, seq_event("e", 1, 0)).await;
    let mut again = connect_since(&gws[1], "a", &id).await;
    assert_eq!(again.recovered(), Some(&json!(false)), "{}", again.connected);
    // Live events still follow.
    publish_ok(&gws[0], &token, seq_event("e", 2, 0)).await;
    assert_eq!(again.read_seqs(1).await, [2]);
    // Resuming from the stream id the fleet saw works.
    let mut from_stream = connect_since(&gws[1], "a", fleet_copy["id"].as_str().unwrap()).await;
    assert_eq!(from_stream.recovered(), Some(&json!(true)), "{}", from_stream.connected);
    assert_eq!(from_stream.read_seqs(2).await, [1, 2]);
}

/// Redis loses entries without a new data set (what a Sentinel failover to a replica that
/// lacked the newest writes does): the stream's entries vanish, the epoch stays. Each
/// instance finds on its next (re)connect that the entry it delivered last is gone, writes a
/// loss marker, and every connection is told to resync; the id clock moves past the lost
/// ids, a resume from before the loss is refused, one from after it recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_lost_without_a_new_epoch_are_marked_and_told() {
    let redis = RedisServer::start().await;
    let gws = fleet(&redis, 2, &[]).await;
    let token = publish_token(&gws[0].secret);
    let mut clients = [connect_user(&gws[0], "a").await, connect_user(&gws[1], "b").await];
    let first = publish_ok(&gws[0], &token, seq_event("e", 0, 0)).await;
    let lost = publish_ok(&gws[1], &token, seq_event("e", 1, 0)).await;
    for c in &mut clients {
        assert_eq!(c.read_seqs(2).await, [0, 1]);
    }
    // The stream loses its entries, the epoch key stays; then every connection is dropped, so
    // the instances reconnect and check.
    assert_eq!(redis.cli(&["DEL", STREAM]).await, "1");
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    for (i, c) in clients.iter_mut().enumerate() {
        let v = c.next_json(STEP).await;
        assert_eq!((&v["type"], &v["reason"]), (&json!("resync"), &json!("redis_data_lost")), "client {i}: {v}");
    }
    for g in &gws {
        g.wait_redis_state("connected").await;
        // Once per stream and instance (README), not per connection.
        let resyncs = g.metric("wsgate_resyncs_total{reason=\"redis_data_lost\"}").await;
        assert_eq!(resyncs, 1.0, "{}: wsgate_resyncs_total{{reason=\"redis_data_lost\"}}", g.addr);
    }
    let markers: f64 = join_all(gws.iter().map(|g| g.metric("wsgate_redis_loss_markers_total"))).await.iter().sum();
    assert!(markers >= 1.0, "no loss marker written");
    // New ids come after the lost ones, and the fleet carries on.
    let next = publish_ok(&gws[0], &token, seq_event("e", 2, 0)).await;
    assert!(stream_id(&next) > stream_id(&lost), "{next} reuses the lost range (lost {lost})");
    for c in &mut clients {
        let v = c.next_json(STEP).await;
        assert_eq!(v["data"]["seq"], 2, "{v}");
        c.expect_quiet(QUIET).await;
    }
    // Ids from before the loss cannot be resumed from; an id after it can.
    for since in [&first, &lost] {
        let c = connect_since(&gws[1], "a", since).await;
        assert_eq!(c.recovered(), Some(&json!(false)), "since={since}: {}", c.connected);
    }
    publish_ok(&gws[1], &token, seq_event("e", 3, 0)).await;
    let mut c = connect_since(&gws[1], "a", &next).await;
    assert_eq!(c.recovered(), Some(&json!(true)), "since={next}: {}", c.connected);
    assert_eq!(c.read_seqs(1).await, [3]);
}

/// A publish in the first moment after the process starts waits for Redis instead of being
/// held like an outage: it gets a stream id, and `/ready` said 503 until the instance followed
/// the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_at_start_up_waits_for_redis_and_gets_a_stream_id() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let gw = Gateway::start(&[("REDIS_URL", url.as_str()), ("HEARTBEAT_INTERVAL_MS", HB)]).await;
    let token = publish_token(&gw.secret);
    let id = publish_ok(&gw, &token, seq_event("e", 0, 0)).await;
    stream_id(&id);
    assert_eq!(gw.metric("wsgate_redis_outbox_flushed_total").await, 0.0, "the start-up publish was held");
    assert_eq!(gw.get_json("/ready").await.0, 200);
    assert!(!gw.logs().contains("Redis connection lost"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_off_by_a_full_outbox_is_completed_exactly_once_by_its_retry() {
    let mut redis = persistent_redis().await;
    let gws = fleet(&redis, 2, &[("REDIS_OUTBOX_MAX_EVENTS", "2")]).await;
    let token = publish_token(&gws[0].secret);
    let mut a = connect_user(&gws[0], "a").await;
    let mut b = connect_user(&gws[1], "b").await;
    redis.kill();
    gws[0].wait_redis_state("disconnected").await;
    let body = json!({"events": (0..5).map(|i| seq_event("e", i, 0)).collect::<Vec<_>>()});
    let send = || async {
        let r = gws[0]
            .http()
            .post(gws[0].http_url("/api/events/batch"))
            .bearer_auth(&token)
            .header("idempotency-key", "batch-7")
            .json(&body)
            .send()
            .await
            .expect("POST /api/events/batch");
        response_json(r).await
    };
    // Two items fit the outbox; the third does not: 503 naming what was kept.
    let (status, v) = send().await;
    assert_eq!(status, 503, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("events[2] not accepted") && msg.contains("events[0..2] were"), "{v}");
    assert_eq!(a.read_seqs(2).await, [0, 1], "the kept items reach local clients at once");

    redis.restart().await;
    for g in &gws {
        g.wait_redis_state("connected").await;
    }
    gws[0].wait_metric("wsgate_redis_outbox_events", 0.0).await;
    // The retry with the same key publishes only items 2..5, and answers all five ids.
    let (status, v) = send().await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["ids"].as_array().map(Vec::len), Some(5), "{v}");
    assert_eq!(a.read_seqs(3).await, [2, 3, 4]);
    assert_eq!(read_seqs_logged(&mut b, 5, &gws).await, [0, 1, 2, 3, 4], "every item once, in order, elsewhere too");
    // A second retry publishes nothing at all.
    let (status, again) = send().await;
    assert_eq!((status, &again["ids"]), (202, &v["ids"]), "{again}");
    expect_only_marker(&gws[0], &mut [&mut a, &mut b]).await;
}
