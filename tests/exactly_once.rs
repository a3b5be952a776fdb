//! Exactly once, or told: black-box fault tests of the contract's "Start-up, Redis data loss and
//! `recovered`". Every event carries a unique `data.seq`; the oracle in `support::faults`
//! checks that every client got every event accepted after its `connected` frame exactly once
//! and in order, unless it was told (a `resync` frame, or `recovered: false` on a resume).
//!
//! The `chaos_*` tests are `#[ignore]`d: they loop the same scenarios with random timing
//! (`CHAOS_ROUNDS`, default 50; `CHAOS_SEED`), see `benches/chaos.sh`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::Rng;
use support::faults::*;
use support::*;

const HB: &str = "200"; // heartbeat period, ms

/// `n` instances sharing `redis` (one secret, ids gw0..), once each reports Redis connected.
async fn fleet(redis: &RedisServer, n: usize) -> Vec<Gateway> {
    let url = redis.url();
    let gws = start_fleet(n, &[("HEARTBEAT_INTERVAL_MS", HB), ("REDIS_URL", url.as_str())]).await;
    wait_all_connected(&gws).await;
    gws
}

/// Polls `GET /live` until it answers 200; returns when it did.
async fn wait_live(gw: &Gateway) -> Instant {
    let http = publish_client();
    let url = gw.http_url("/live");
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(&url).send().await {
            if r.status() == 200 {
                return Instant::now();
            }
        }
        assert!(start.elapsed() < STEP, "{url} did not answer 200 within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `GET /ready` until 200; returns whether it answered 503 before, and when it turned 200.
async fn wait_ready(gw: &Gateway) -> (bool, Instant) {
    let http = publish_client();
    let url = gw.http_url("/ready");
    let (start, mut saw_503) = (Instant::now(), false);
    loop {
        if let Ok(r) = http.get(&url).send().await {
            match r.status().as_u16() {
                200 => return (saw_503, Instant::now()),
                503 => saw_503 = true,
                other => panic!("{url} answered {other}"),
            }
        }
        assert!(start.elapsed() < STEP * 2, "{url} still not 200 after {:?} (503 seen: {saw_503})", STEP * 2);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Start-up

/// The first instance to answer `/live` takes the sender and hands its index, address and live
/// time to the publisher.
type FirstLive = std::sync::Mutex<Option<tokio::sync::oneshot::Sender<(usize, SocketAddr, Instant)>>>;

/// Starts instance `i` of a fleet, waits for `/live`, tells `first` if it is the first to
/// answer, then connects two clients at once while polling `/ready`.
async fn start_instance(
    i: usize,
    secret: &str,
    url: &str,
    first: &FirstLive,
) -> (Gateway, Instant, Vec<Tracked>, (bool, Instant)) {
    let id = format!("gw{i}");
    let gw = Gateway::start(&[
        ("JWT_SECRET", secret),
        ("INSTANCE_ID", &id),
        ("REDIS_URL", url),
        ("HEARTBEAT_INTERVAL_MS", HB),
    ])
    .await;
    let live = wait_live(&gw).await;
    if let Some(tx) = first.lock().unwrap().take() {
        let _ = tx.send((i, gw.addr, live));
    }
    let clients = join_all((0..2).map(|c| Tracked::connect(format!("c{c}@gw{i}"), format!("u{i}{c}"), i, &gw)));
    let (clients, ready) = tokio::join!(clients, wait_ready(&gw));
    (gw, live, clients, ready)
}

/// Fresh Redis, three instances started at once, two clients on each as soon as its `/live`
/// answers (not waiting for `/ready`); 20 ms after the first `/live` answer one event is POSTed
/// to that instance, once: it must get 202 (possibly after waiting), and every client whose
/// `connected` came before the 202 must get it exactly once. `/ready` must turn 200 and
/// `/health` say mode redis, state connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_within_50ms_of_live_reaches_every_instance() {
    let redis = RedisServer::start().await;
    let (url, secret) = (redis.url(), random_hex());
    let token = publish_token(&secret);
    let ledger = Ledger::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let first: FirstLive = std::sync::Mutex::new(Some(tx));
    let t0 = Instant::now();
    let publisher = async {
        let (via, addr, live) = rx.await.expect("an instance live");
        tokio::time::sleep_until((live + Duration::from_millis(20)).into()).await;
        (via, publish_once(&publish_client(), &ledger, addr, via, &token, 0, 0).await)
    };
    let (a, b, c, (via, outcome)) =
        within("three instances starting, two clients each, one publish", STEP * 3, async {
            tokio::join!(
                start_instance(0, &secret, &url, &first),
                start_instance(1, &secret, &url, &first),
                start_instance(2, &secret, &url, &first),
                publisher
            )
        })
        .await;
    let mut gws = Vec::new();
    let mut clients = Vec::new();
    let mut lives = Vec::new();
    let mut readies = Vec::new();
    for (gw, live, cs, ready) in [a, b, c] {
        gws.push(gw);
        lives.push(live);
        clients.extend(cs);
        readies.push(ready);
    }
    let refs: Vec<&Gateway> = gws.iter().collect();
    let first_live = *lives.iter().min().unwrap();
    let attempt = ledger.attempts().pop().expect("the publish was recorded");
    assert!(
        matches!(outcome, Outcome::Accepted(_)),
        "the POST sent {}ms after gw{via}'s /live answered (the first) must get 202 (it may wait), got {outcome:?}; logs:\n{}",
        (attempt.sent_at - lives[via]).as_millis(),
        fleet_warnings(&refs, 20)
    );
    settle(&ledger, &clients, Duration::from_millis(1000), Duration::from_secs(5)).await;
    tokio::time::sleep(QUIET_WINDOW).await; // late duplicates
    let records = stop_all(&mut clients).await;

    // Which clients were connected before the POST was sent, or while it was in flight.
    let timeline: Vec<String> = records
        .iter()
        .map(|r| {
            let at = r.conns[0].connected_at;
            let when = if at < attempt.sent_at {
                "before the POST was sent"
            } else if at < attempt.answered_at {
                "while the POST was in flight"
            } else {
                "after the 202"
            };
            format!(
                "{} connected {}ms after the first /live ({when}), got {:?}",
                r.name,
                (at - first_live).as_millis(),
                r.events.iter().map(|g| g.seq).collect::<Vec<_>>()
            )
        })
        .collect();
    let verdict = judge(&ledger, &records, Rule::AnsweredAfterConnected, t0);
    println!("{}", verdict.line("startup_publish", "0"));
    println!(
        "POST to gw{via} sent {}ms after the first /live answer, answered after {}ms; live at {:?}ms; \
         /ready 503 seen per instance: {:?}; ready {:?}ms after live",
        (attempt.sent_at - first_live).as_millis(),
        (attempt.answered_at - attempt.sent_at).as_millis(),
        lives.iter().map(|l| (*l - first_live).as_millis()).collect::<Vec<_>>(),
        readies.iter().map(|r| r.0).collect::<Vec<_>>(),
        readies.iter().zip(&lives).map(|(r, l)| (r.1 - *l).as_millis()).collect::<Vec<_>>()
    );
    for l in &timeline {
        println!("  {l}");
    }
    verdict.assert_ok(
        "publish_within_50ms_of_live",
        &format!(
            "a client that had `connected` before the 202 must get the event once\n{}\n{}",
            timeline.join("\n"),
            fleet_warnings(&refs, 20)
        ),
    );
    for g in &gws {
        let (_, health) = g.get_json("/health").await;
        assert_eq!(health["mode"], "redis", "{} /health: {health}", g.addr);
        g.wait_redis_state("connected").await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Joining under load

/// Two instances, one sequential publisher on each (100/s each) for 6 s; after 2 s a third
/// instance starts and three clients connect to it as soon as `/live` answers. Every client
/// (old instances' too) gets every event published after its `connected`, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joining_a_fleet_under_load_misses_nothing() {
    let t0 = Instant::now();
    let redis = RedisServer::start().await;
    let url = redis.url();
    let gws = fleet(&redis, 2).await;
    let token = publish_token(&gws[0].secret);
    let mut clients = Vec::new();
    for (i, g) in gws.iter().enumerate() {
        for c in 0..2 {
            clients.push(Tracked::connect(format!("c{c}@gw{i}"), format!("u{i}{c}"), i, g).await);
        }
    }
    let ledger = Ledger::new();
    let next = AtomicU64::new(0);
    // One sequential publisher per old instance, 100/s each, for 6 s.
    let publisher = |i: usize| {
        let (ledger, next, token, addr) = (&ledger, &next, &token, gws[i].addr);
        async move {
            let http = publish_client();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let end = Instant::now() + Duration::from_secs(6);
            while Instant::now() < end {
                tick.tick().await;
                let seq = next.fetch_add(1, Ordering::SeqCst);
                publish_once(&http, ledger, addr, i, token, seq, 20).await;
            }
        }
    };
    let secret = gws[0].secret.clone();
    let joiner = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let gw = Gateway::start(&[
            ("JWT_SECRET", secret.as_str()),
            ("INSTANCE_ID", "gw2"),
            ("REDIS_URL", url.as_str()),
            ("HEARTBEAT_INTERVAL_MS", HB),
        ])
        .await;
        wait_live(&gw).await;
        let cs = join_all((0..3).map(|c| Tracked::connect(format!("c{c}@gw2"), format!("u2{c}"), 2, &gw))).await;
        (gw, cs)
    };
    let ((), (), (gw2, late)) = within("6 s of publishing with an instance joining", Duration::from_secs(30), async {
        tokio::join!(publisher(0), publisher(1), joiner)
    })
    .await;
    clients.extend(late);
    settle(&ledger, &clients, Duration::from_millis(1000), Duration::from_secs(8)).await;
    tokio::time::sleep(QUIET_WINDOW).await; // late duplicates
    let records = stop_all(&mut clients).await;
    let verdict = judge(&ledger, &records, Rule::SentAfterConnected, t0);
    println!("{}", verdict.line("joining_under_load", "0"));
    let refused = ledger.attempts().iter().filter(|a| !matches!(a.outcome, Outcome::Accepted(_))).count();
    let refs = [&gws[0], &gws[1], &gw2];
    verdict.assert_ok(
        "an_instance_joining_a_fleet_under_load",
        &format!("{refused} publishes not accepted\n{}", fleet_warnings(&refs, 20)),
    );
    assert!(verdict.accepted > 500, "too few events accepted to mean anything: {}", verdict.accepted);
    wait_ready(&gw2).await;
}

// ---------------------------------------------------------------------------------------------
// 3-5. Redis killed mid-burst

/// One round of "Redis SIGKILLed during a burst".
#[derive(Clone, Debug)]
struct Outage {
    /// Redis keeps every acknowledged write (`--appendonly yes --appendfsync always`), or
    /// comes back empty.
    persist: bool,
    total: usize,
    /// Redis is killed once this many publishes have been answered.
    kill_after: usize,
    /// How long Redis stays away.
    outage: Duration,
    in_flight: usize,
    interval: Duration,
    /// SIGKILL this instance halfway through the outage; its clients resume on the next one.
    kill_instance: Option<usize>,
}

impl Outage {
    fn default_with(persist: bool, kill_instance: Option<usize>, rng: &mut StdRng) -> Outage {
        Outage {
            persist,
            total: 300,
            kill_after: 100,
            outage: Duration::from_millis(rng.random_range(100..=800)),
            in_flight: 8,
            interval: Duration::from_millis(3),
            kill_instance,
        }
    }

    fn random(persist: bool, kill_instance: Option<usize>, rng: &mut StdRng) -> Outage {
        Outage {
            persist,
            total: 300,
            kill_after: rng.random_range(20..=200),
            outage: Duration::from_millis(rng.random_range(50..=1500)),
            in_flight: rng.random_range(1..=12),
            interval: Duration::from_millis(rng.random_range(0..=6)),
            kill_instance,
        }
    }
}

/// 3 instances, 2 clients each, `p.total` broadcast events round-robin with `p.in_flight` in
/// flight; Redis SIGKILLed after `p.kill_after` answers and restarted after `p.outage` (empty
/// or from its AOF); optionally an instance SIGKILLed during the outage. The last client goes
/// offline just before Redis dies. Then every client resumes on the next instance with
/// `since=<last id>`.
async fn redis_outage_round(p: Outage) -> RoundResult {
    let t0 = Instant::now();
    let mut redis = if p.persist {
        RedisServer::start_args(&["--appendonly", "yes", "--appendfsync", "always"]).await
    } else {
        RedisServer::start().await
    };
    let gws = fleet(&redis, 3).await;
    let token = publish_token(&gws[0].secret);
    let mut clients = Vec::new();
    for (i, g) in gws.iter().enumerate() {
        for c in 0..2 {
            clients.push(Tracked::connect(format!("c{c}@gw{i}"), format!("u{i}{c}"), i, g).await);
        }
    }
    let refs: Vec<&Gateway> = gws.iter().collect();
    let targets = Targets::new(&refs);
    let ledger = Ledger::new();
    let healed = AtomicBool::new(false);
    let instance_killed = AtomicBool::new(false);
    let load =
        Load { first: 0, total: p.total, in_flight: p.in_flight, interval: p.interval, pad: 20, retries_503: 100 };
    let tail = p.total.saturating_sub(50) as u64;
    let mut timeline = Vec::new();

    // One client goes offline just before Redis dies and resumes only at the end: its `since`
    // is from before the loss, so a replay from the restarted Redis cannot be complete.
    let mut offline = clients.pop().expect("clients");
    let chaos = async {
        wait_until(&format!("publish #{} answered", p.kill_after), Duration::from_secs(30), || {
            std::future::ready(ledger.answered() >= p.kill_after)
        })
        .await;
        offline.stop().await;
        let killed = Instant::now();
        redis.kill();
        let mut events = vec![format!(
            "{} went offline after {} events, redis killed at +{}ms",
            offline.name,
            offline.received(),
            (killed - t0).as_millis()
        )];
        if let Some(k) = p.kill_instance {
            tokio::time::sleep(p.outage / 2).await;
            gws[k].proc.signal(libc::SIGKILL);
            targets.kill(k);
            instance_killed.store(true, Ordering::SeqCst);
            events.push(format!("gw{k} killed at +{}ms", (Instant::now() - t0).as_millis()));
        }
        tokio::time::sleep_until((killed + p.outage).into()).await;
        redis.restart().await;
        events.push(format!("redis back at +{}ms", (Instant::now() - t0).as_millis()));
        healed.store(true, Ordering::SeqCst);
        events
    };
    // The killed instance's clients resume on the next one as soon as their connection ends
    // (while Redis may still be away; the upgrade may wait).
    let mover = async {
        let Some(k) = p.kill_instance else { return };
        wait_until("the instance to be killed", Duration::from_secs(40), || {
            std::future::ready(instance_killed.load(Ordering::SeqCst))
        })
        .await;
        let (targets, gws) = (&targets, &gws);
        let moving: Vec<&mut Tracked> = clients.iter_mut().filter(|c| c.gw == k).collect();
        join_all(moving.into_iter().map(|c| async move {
            let name = c.name.clone();
            wait_until(&format!("{name}'s connection to end after its instance was killed"), STEP, || {
                std::future::ready(c.ended())
            })
            .await;
            let n = next_alive(targets, k);
            c.resume(n, &gws[n]).await;
        }))
        .await;
    };
    let ((), chaos_events, ()) = within("the burst with Redis killed", Duration::from_secs(60), async {
        tokio::join!(run_load(&ledger, &targets, &token, &load, Some((tail, &healed))), chaos, mover)
    })
    .await;
    timeline.extend(chaos_events);
    clients.push(offline);
    timeline.push(format!("publishing done at +{}ms", (Instant::now() - t0).as_millis()));

    for (i, g) in gws.iter().enumerate() {
        if targets.is_alive(i) {
            g.wait_redis_state("connected").await;
        }
    }
    settle(&ledger, &clients, Duration::from_millis(300), Duration::from_secs(3)).await;
    resume_all_elsewhere(&mut clients, &gws, &targets, &ledger).await;
    let records = stop_all(&mut clients).await;
    let verdict = judge(&ledger, &records, Rule::SentAfterConnected, t0);

    let xlen = redis.cli(&["XLEN", "websocket:stream:all"]).await;
    let context = format!(
        "params {p:?}\ntimeline: {}\n{}; stream length after the round: {xlen}\n{}",
        timeline.join(", "),
        ledger.summary(),
        fleet_warnings(&refs, 15)
    );
    RoundResult { verdict, context }
}

/// 300 publishes, 8 in flight; Redis SIGKILLed after #100 is answered and restarted empty
/// 100-800 ms later; everybody resumes elsewhere. No silent gap or duplicate, and somebody must
/// have been told (Redis did lose data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_burst_restarted_empty() {
    let (_, mut rng) = seeded("redis_killed_mid_burst_restarted_empty");
    let r =
        within("one round", Duration::from_secs(90), redis_outage_round(Outage::default_with(false, None, &mut rng)))
            .await;
    println!("{}", r.verdict.line("restart_empty", "0"));
    println!("{}", r.context);
    r.verdict.assert_ok("redis_killed_mid_burst_restarted_empty", &r.context);
    assert!(
        r.verdict.clients_told > 0,
        "Redis restarted empty, yet no client was told (no resync frame, every resume recovered:true): \
         the loss went unnoticed or the scenario lost nothing\n{}\n{}",
        r.verdict.line("restart_empty", "0"),
        r.context
    );
}

/// The same with a Redis that loses nothing it acknowledged (AOF, fsync always): no silent
/// gap or duplicate, and some resumes must answer `recovered: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_burst_with_aof_always() {
    let (_, mut rng) = seeded("redis_killed_mid_burst_with_aof_always");
    let r =
        within("one round", Duration::from_secs(90), redis_outage_round(Outage::default_with(true, None, &mut rng)))
            .await;
    println!("{}", r.verdict.line("aof_always", "0"));
    println!("{}", r.context);
    r.verdict.assert_ok("redis_killed_mid_burst_with_aof_always", &r.context);
    assert!(
        r.verdict.recovered_true > 0,
        "Redis kept every write, yet no resume answered recovered:true ({} answered false)\n{}",
        r.verdict.recovered_false,
        r.context
    );
}

/// Restarted empty, and gw1 SIGKILLed halfway through the outage: its clients resume on gw2
/// at once (while Redis is still away). No silent gap or duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_killed_during_the_outage() {
    let (_, mut rng) = seeded("instance_killed_during_the_outage");
    let r = within(
        "one round",
        Duration::from_secs(90),
        redis_outage_round(Outage::default_with(false, Some(1), &mut rng)),
    )
    .await;
    println!("{}", r.verdict.line("instance_killed", "0"));
    println!("{}", r.context);
    r.verdict.assert_ok("instance_killed_during_the_outage", &r.context);
}

// ---------------------------------------------------------------------------------------------
// Chaos: the same rounds, looped with random timing (benches/chaos.sh)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos loop: benches/chaos.sh"]
async fn chaos_restart_empty() {
    chaos_loop("restart_empty", |rng| Outage::random(false, None, rng), redis_outage_round).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos loop: benches/chaos.sh"]
async fn chaos_aof_always() {
    chaos_loop("aof_always", |rng| Outage::random(true, None, rng), redis_outage_round).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos loop: benches/chaos.sh"]
async fn chaos_instance_killed_in_outage() {
    let make = |rng: &mut StdRng| {
        let k = rng.random_range(0..3);
        Outage::random(false, Some(k), rng)
    };
    chaos_loop("instance_killed", make, redis_outage_round).await;
}
