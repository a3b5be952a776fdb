//! One test suite for the [`Broker`] contract, run against every implementation: the memory
//! broker, and the Redis broker with several instances sharing a real `redis-server` that the
//! test starts on a port it holds.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::memory::MemoryBroker;
use super::redis::RedisBroker;
use super::{Broker, Fleet, PublishError, PublishOptions, Published};
use clap::Parser;

use crate::config::{Args, Config};

const TEST_SECRET: &str = "conformance-test-secret-32-bytes-long";
use crate::event::{now_ms, Audience, Event, IdGenerator};
use crate::history::{Replay, StreamId};
use crate::hub::{Hub, Registration};
use crate::idempotency::parse_key;
use crate::metrics::Metrics;
use crate::outbox::{Drained, Limits};

const WAIT: Duration = Duration::from_secs(5);

/// One gateway instance without HTTP: a hub and its broker.
struct Instance {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    fleet: Arc<dyn Fleet>,
}

fn hub(id: &str) -> Arc<Hub> {
    let h = Hub::new(Limits { max_messages: 10_000, max_bytes: 64 << 20 }, Arc::new(Metrics::new()), id);
    h.spawn_dispatcher();
    h
}

fn event(ids: &IdGenerator, kind: &str, audience: Audience) -> Event {
    let data = serde_json::value::RawValue::from_string(format!("{{\"k\":{:?}}}", kind)).unwrap();
    Event { id: ids.next_id(), kind: kind.to_string(), data, ts: now_ms(), audience }
}

fn now() -> PublishOptions {
    PublishOptions { accepted_at: Instant::now(), idempotency: None }
}

fn keyed(key: &str, body: &str) -> PublishOptions {
    PublishOptions {
        accepted_at: Instant::now(),
        idempotency: Some(parse_key("svc", key.as_bytes(), body.as_bytes()).unwrap().single()),
    }
}

/// The types of the replayed events, or `None` when not recovered.
fn replayed(r: Replay) -> Option<Vec<String>> {
    match r {
        Replay::Recovered { frames, .. } => Some(
            frames
                .iter()
                .map(|f| serde_json::from_str::<serde_json::Value>(f).unwrap()["type"].as_str().unwrap().to_string())
                .collect(),
        ),
        Replay::NotRecovered => None,
    }
}

/// Frames received by `reg` until `n` have arrived or `WAIT` passes.
async fn receive(reg: &Registration, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        let mut q = VecDeque::new();
        match reg.outbox.drain(&mut q) {
            Drained::Closed(d) => panic!("outbox closed: {d:?}"),
            Drained::Frames => got.extend(q.iter().map(|f| {
                let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
                v["type"].as_str().unwrap().to_string()
            })),
        }
        if got.len() >= n || tokio::time::timeout_at(deadline.into(), reg.outbox.ready()).await.is_err() {
            break;
        }
    }
    got
}

/// Nothing more arrives at `reg` for a while.
async fn quiet(reg: &Registration) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut q = VecDeque::new();
    let _ = reg.outbox.drain(&mut q);
    q.iter().map(|f| f.as_str().to_string()).collect()
}

/// The contract, for a fleet of one or more instances sharing one transport.
async fn suite(fleet: &[Instance]) {
    let ids = IdGenerator::new();
    // Two connections of alice and one of bob on every instance.
    let regs: Vec<(Registration, Registration, Registration)> =
        fleet.iter().map(|i| (i.hub.register("alice"), i.hub.register("alice"), i.hub.register("bob"))).collect();

    // Broadcast from each instance: every connection everywhere, exactly once.
    for (n, inst) in fleet.iter().enumerate() {
        inst.broker.publish(event(&ids, &format!("all-{n}"), Audience::All), now()).await.unwrap();
    }
    for (a1, a2, b) in &regs {
        for r in [a1, a2, b] {
            let mut got = receive(r, fleet.len()).await;
            got.sort();
            let want: Vec<String> = (0..fleet.len()).map(|n| format!("all-{n}")).collect();
            assert_eq!(got, want);
            assert!(quiet(r).await.is_empty(), "a broadcast arrived twice");
        }
    }

    // Targeted from the last instance: alice's connections everywhere, nobody else.
    let last = fleet.last().unwrap();
    last.broker.publish(event(&ids, "for-alice", Audience::Users(vec!["alice".into()])), now()).await.unwrap();
    for (a1, a2, b) in &regs {
        assert_eq!(receive(a1, 1).await, ["for-alice"]);
        assert_eq!(receive(a2, 1).await, ["for-alice"]);
        assert!(quiet(b).await.is_empty(), "bob got alice's event");
    }

    // Order: sequential publishes through one instance arrive in order everywhere.
    let first = &fleet[0];
    let n = 300;
    let mut published = Vec::new();
    for i in 0..n {
        let p = first.broker.publish(event(&ids, &format!("seq-{i:04}"), Audience::All), now()).await.unwrap();
        published.push(p.id.parse::<StreamId>().expect("ids are stream positions"));
    }
    assert!(published.windows(2).all(|w| w[0] < w[1]), "ids do not increase with publish order");
    let want: Vec<String> = (0..n).map(|i| format!("seq-{i:04}")).collect();
    for (a1, a2, b) in &regs {
        for r in [a1, a2, b] {
            assert_eq!(receive(r, n).await, want);
        }
    }

    // One order for all: events published concurrently through every instance arrive in the
    // same order at every connection, the order of their ids.
    let sends = fleet.iter().enumerate().flat_map(|(k, inst)| {
        let ids = &ids;
        (0..20).map(move |i| inst.broker.publish(event(ids, &format!("mix-{k}-{i}"), Audience::All), now()))
    });
    let mut mixed: Vec<(StreamId, String)> = Vec::new();
    for (j, r) in futures_util::future::join_all(sends).await.into_iter().enumerate() {
        mixed.push((r.unwrap().id.parse().unwrap(), format!("mix-{}-{}", j / 20, j % 20)));
    }
    mixed.sort();
    let want: Vec<String> = mixed.into_iter().map(|(_, k)| k).collect();
    for (a1, a2, b) in &regs {
        for r in [a1, a2, b] {
            assert_eq!(receive(r, want.len()).await, want, "connections disagree on the order");
        }
    }

    // Resume: every instance can replay what followed an id, for the user it is asked for.
    let since = published[n - 3].to_string();
    last.broker.publish(event(&ids, "for-bob", Audience::Users(vec!["bob".into()])), now()).await.unwrap();
    for inst in fleet {
        let got = replayed(inst.broker.replay(&since, "alice", &[]).await).expect("recent history is recoverable");
        assert_eq!(got[..2], ["seq-0298", "seq-0299"]);
        assert_eq!(got.len(), 2 + want.len(), "alice's replay: {got:?}");
        let got = replayed(inst.broker.replay(&since, "bob", &[]).await).unwrap();
        assert_eq!(got.last().map(String::as_str), Some("for-bob"));
        assert_eq!(replayed(inst.broker.replay("not-an-id", "bob", &[]).await), None);
        assert_eq!(replayed(inst.broker.replay("1-0", "bob", &[]).await), None, "ids older than the history");
    }
    for (a1, a2, b) in &regs {
        assert_eq!(receive(b, 1).await, ["for-bob"]);
        assert!(quiet(a1).await.is_empty() && quiet(a2).await.is_empty());
    }

    // Idempotency: a retry (through any instance) gets the first id and publishes nothing.
    let p1 = first.broker.publish(event(&ids, "once", Audience::All), keyed("k1", "body")).await.unwrap();
    assert!(!p1.replayed);
    let p2 = last.broker.publish(event(&ids, "once", Audience::All), keyed("k1", "body")).await.unwrap();
    assert_eq!(p2, Published { id: p1.id.clone(), replayed: true });
    let p3 = last.broker.publish(event(&ids, "once", Audience::All), keyed("k1", "other body")).await;
    assert_eq!(p3, Err(PublishError::KeyReused));
    for (a1, a2, b) in &regs {
        for r in [a1, a2, b] {
            assert_eq!(receive(r, 1).await, ["once"]);
            assert!(quiet(r).await.is_empty(), "an idempotent retry was delivered again");
        }
    }

    // Channels: an event for a channel reaches the connections in it on every instance, and
    // nobody else; the channel's history is replayed to those who ask with the channel.
    for (inst, (a1, _, _)) in fleet.iter().zip(&regs) {
        assert!(inst.hub.subscribe(a1.id, &a1.user, "room:1", 10).is_ok());
        inst.broker.join("room:1").await;
    }
    let before = first.broker.position(&["room:1".to_string()]).await;
    last.broker.publish(event(&ids, "in-room", Audience::Channel("room:1".into())), now()).await.unwrap();
    for (a1, a2, b) in &regs {
        assert_eq!(receive(a1, 1).await, ["in-room"]);
        assert!(quiet(a2).await.is_empty() && quiet(b).await.is_empty(), "a channel event left its channel");
    }
    if let Some(before) = before {
        let with = replayed(first.broker.replay(&before, "bob", &["room:1".to_string()]).await).unwrap();
        assert_eq!(with, ["in-room"]);
        let without = replayed(first.broker.replay(&before, "bob", &[]).await).unwrap();
        assert!(without.is_empty(), "{without:?}");
    }

    // Fleet totals: every instance sees every connection (heartbeats may lag a period).
    let total = 3 * fleet.len();
    for inst in fleet {
        let deadline = Instant::now() + WAIT;
        loop {
            let f = inst.fleet.fleet_stats().await;
            if (f.total_instances, f.total_connections) == (fleet.len(), total) {
                break;
            }
            assert!(Instant::now() < deadline, "fleet stats {f:?}, want {} instances {total} connections", fleet.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for inst in fleet {
        inst.broker.shutdown().await;
    }
}

#[tokio::test]
async fn memory_broker_meets_the_contract() {
    let h = hub("solo");
    let cfg = Config::for_tests(TEST_SECRET);
    let broker = Arc::new(MemoryBroker::new(h.clone(), cfg.history, cfg.publish.idempotency_window));
    suite(&[Instance { hub: h, broker: broker.clone(), fleet: broker }]).await;
}

/// A `redis-server` of our own, killed on drop and when the test process dies. Its port is
/// held by a socket bound (with SO_REUSEADDR, not listening) before redis-server binds it, so
/// no one else can take it in between; readiness is redis-server's own "Ready" line, not a
/// connect that could reach some other server.
struct TestRedis {
    child: Child,
    port: u16,
    _hold: std::net::TcpListener,
}

/// A port bound but not listening: `bind(0)` never hands it out while we hold it.
fn hold_port() -> (std::net::TcpListener, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2)/setsockopt(2)/bind(2) on a new descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let one: libc::c_int = 1;
        let len = std::mem::size_of_val(&one) as libc::socklen_t;
        assert_eq!(
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), len),
            0
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let alen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), alen), 0, "bind");
        let socket = std::net::TcpListener::from_raw_fd(fd);
        let port = socket.local_addr().expect("local_addr").port();
        (socket, port)
    }
}

impl TestRedis {
    fn start() -> TestRedis {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let (hold, port) = loop {
            let (hold, port) = hold_port();
            if port != 6379 {
                break (hold, port);
            }
        };
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the child dies with this (long-lived test) thread.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("redis-server must be installed (bash .ci/test.sh installs it)");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(WAIT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server on port {port} did not say it was ready within {WAIT:?}");
        }
        TestRedis { child, port, _hold: hold }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_meets_the_contract_across_three_instances() {
    let redis = TestRedis::start();
    let mut fleet = Vec::new();
    for name in ["a", "b", "c"] {
        let url = format!("redis://127.0.0.1:{}", redis.port);
        let args =
            Args::parse_from(["wsgate", "--jwt-secret", TEST_SECRET, "--redis-url", &url, "--instance-id", name]);
        let mut cfg = Config::from_args(args).unwrap();
        cfg.instance.heartbeat_interval = Duration::from_millis(100);
        let redis_cfg = cfg.redis.as_ref().unwrap();
        let h = hub(name);
        let window = cfg.publish.idempotency_window;
        let broker =
            RedisBroker::start(redis_cfg, &cfg.instance, cfg.history, window, &h, Arc::new(Metrics::new())).unwrap();
        fleet.push(Instance { hub: h, broker: broker.clone(), fleet: broker });
    }
    let deadline = Instant::now() + WAIT;
    while fleet.iter().any(|i| i.broker.status().redis_state != "connected") {
        assert!(Instant::now() < deadline, "brokers did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    suite(&fleet).await;
}
