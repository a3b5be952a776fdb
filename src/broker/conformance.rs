//! One test suite for the [`Broker`] contract, run against every implementation: the memory
//! broker, and the Redis broker with several instances sharing a real `redis-server` that the
//! test starts on a free port.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::memory::MemoryBroker;
use super::redis::RedisBroker;
use super::Broker;
use crate::config::Config;
use crate::event::{now_ms, Audience, Event, IdGenerator};
use crate::hub::{Hub, Registration};
use crate::metrics::Metrics;
use crate::outbox::{Drained, Limits};

const WAIT: Duration = Duration::from_secs(5);

/// One gateway instance without HTTP: a hub and its broker.
struct Instance {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
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
        inst.broker.publish(event(&ids, &format!("all-{n}"), Audience::All), Instant::now()).await.unwrap();
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
    last.broker.publish(event(&ids, "for-alice", Audience::Users(vec!["alice".into()])), Instant::now()).await.unwrap();
    for (a1, a2, b) in &regs {
        assert_eq!(receive(a1, 1).await, ["for-alice"]);
        assert_eq!(receive(a2, 1).await, ["for-alice"]);
        assert!(quiet(b).await.is_empty(), "bob got alice's event");
    }

    // Order: sequential publishes through one instance arrive in order everywhere.
    let first = &fleet[0];
    let n = 300;
    for i in 0..n {
        first.broker.publish(event(&ids, &format!("seq-{i:04}"), Audience::All), Instant::now()).await.unwrap();
    }
    let want: Vec<String> = (0..n).map(|i| format!("seq-{i:04}")).collect();
    for (_, _, b) in &regs {
        assert_eq!(receive(b, n).await, want);
    }

    // Fleet totals: every instance sees every connection (heartbeats may lag a period).
    let total = 3 * fleet.len();
    for inst in fleet {
        let deadline = Instant::now() + WAIT;
        loop {
            let f = inst.broker.fleet_stats().await;
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
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(h.clone()));
    suite(&[Instance { hub: h, broker }]).await;
}

/// A `redis-server` of our own on a free port, killed on drop.
struct TestRedis {
    child: Child,
    port: u16,
}

impl TestRedis {
    fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (bash .ci/test.sh installs it)");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestRedis { child, port }
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
        let mut cfg = Config::for_tests("s");
        cfg.redis_url = Some(format!("redis://127.0.0.1:{}", redis.port));
        cfg.instance_id = name.to_string();
        cfg.heartbeat_interval = Duration::from_millis(100);
        let h = hub(name);
        let broker: Arc<dyn Broker> = RedisBroker::start(&cfg, h.clone(), Arc::new(Metrics::new())).unwrap();
        fleet.push(Instance { hub: h, broker });
    }
    let deadline = Instant::now() + WAIT;
    while fleet.iter().any(|i| i.broker.status().redis_state != "connected") {
        assert!(Instant::now() < deadline, "brokers did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    suite(&fleet).await;
}
