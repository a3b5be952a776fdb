//! The exactly-once oracle for fault tests, and the processes those tests need beyond a plain
//! `redis-server` (a replica, Sentinels).
//!
//! A fault test publishes numbered events (`data.seq`, unique within the test) and records, in
//! a [`Ledger`], when each `POST /api/events` was sent, when it was answered, through which
//! instance, and how (202, an error status, or no answer at all). Every client is a
//! [`Tracked`] connection whose reader task keeps a [`Record`]: the seqs it received in order,
//! each (re)connection with its `recovered` answer, and every time it was *told* that it may
//! have missed events (a `resync` frame, or a `connected` frame without `"recovered": true`).
//! [`judge`] then compares the two and gives a [`Verdict`]:
//!
//! - a seq received twice is a failure, told or not;
//! - an event accepted (202) after the client's first `connected` frame that the client never
//!   received is a *silent gap* (a failure) unless the client was told; then it is
//!   "missing, told";
//! - events published through one instance, the later one sent after the earlier one was
//!   answered, must arrive in that order.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::*;

// ---------------------------------------------------------------------------------------------
// The ledger of publishes

/// How one `POST /api/events` ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 202 with this id.
    Accepted(String),
    /// An error status (503 while Redis is away and the outbox is full, ...).
    Refused(u16),
    /// No answer (the instance died, the request timed out): it may or may not have been
    /// accepted, so it is neither required nor counted as accepted.
    Unknown(String),
}

/// One publish attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub seq: u64,
    /// Index of the instance it went through.
    pub via: usize,
    pub sent_at: Instant,
    pub answered_at: Instant,
    pub outcome: Outcome,
}

/// Every publish attempt of a test, and a count of the answered ones (for triggers such as
/// "kill Redis once #100 is answered").
#[derive(Default)]
pub struct Ledger {
    attempts: Mutex<Vec<Attempt>>,
    answered: AtomicUsize,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn record(&self, a: Attempt) {
        if !matches!(a.outcome, Outcome::Unknown(_)) {
            self.answered.fetch_add(1, Ordering::SeqCst);
        }
        self.attempts.lock().unwrap().push(a);
    }

    /// Publishes answered so far (any status).
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// How the publish attempts ended, for a round's failure context.
    pub fn summary(&self) -> String {
        let attempts = self.attempts();
        let count = |f: &dyn Fn(&Outcome) -> bool| attempts.iter().filter(|a| f(&a.outcome)).count();
        format!(
            "publish attempts: {} accepted, {} refused 503, {} refused otherwise, {} unanswered",
            count(&|o| matches!(o, Outcome::Accepted(_))),
            count(&|o| matches!(o, Outcome::Refused(503))),
            count(&|o| matches!(o, Outcome::Refused(s) if *s != 503)),
            count(&|o| matches!(o, Outcome::Unknown(_))),
        )
    }

    /// The accepted attempt of each seq (the first, if a seq was somehow accepted twice).
    pub fn accepted(&self) -> BTreeMap<u64, Attempt> {
        let mut out = BTreeMap::new();
        for a in self.attempts.lock().unwrap().iter() {
            if matches!(a.outcome, Outcome::Accepted(_)) {
                out.entry(a.seq).or_insert_with(|| a.clone());
            }
        }
        out
    }

    /// Seqs accepted more than once (a publisher retried an accepted event: a test bug).
    pub fn accepted_twice(&self) -> Vec<u64> {
        let mut n: BTreeMap<u64, usize> = BTreeMap::new();
        for a in self.attempts.lock().unwrap().iter() {
            if matches!(a.outcome, Outcome::Accepted(_)) {
                *n.entry(a.seq).or_default() += 1;
            }
        }
        n.into_iter().filter(|(_, c)| *c > 1).map(|(s, _)| s).collect()
    }
}

/// An HTTP client for publishing: no proxy, no connection reuse across a killed instance's
/// port being taken by another (fresh connections are cheap on loopback).
pub fn publish_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(STEP).build().expect("reqwest client")
}

/// POSTs `seq_event("e", seq, pad)` to `addr` once and records the attempt.
pub async fn publish_once(
    http: &reqwest::Client,
    ledger: &Ledger,
    addr: SocketAddr,
    via: usize,
    token: &str,
    seq: u64,
    pad: usize,
) -> Outcome {
    let body = serde_json::to_vec(&seq_event("e", seq as usize, pad)).unwrap();
    let sent_at = Instant::now();
    let res = http
        .post(format!("http://{addr}/api/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let outcome = match res {
        Err(e) => Outcome::Unknown(e.to_string()),
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Err(e) => Outcome::Unknown(format!("status {status}, body unreadable: {e}")),
                Ok(b) if status == 202 => {
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    let id = v["id"].as_str().unwrap_or_else(|| panic!("202 without an id: {v}")).to_owned();
                    Outcome::Accepted(id)
                }
                Ok(_) => Outcome::Refused(status),
            }
        }
    };
    ledger.record(Attempt { seq, via, sent_at, answered_at: Instant::now(), outcome: outcome.clone() });
    outcome
}

/// A publisher's settings.
#[derive(Clone, Debug)]
pub struct Load {
    /// Seqs `first..first + total`.
    pub first: u64,
    pub total: usize,
    /// Publishes in flight at once (1: strictly sequential).
    pub in_flight: usize,
    /// Pause between the starts of two publishes.
    pub interval: Duration,
    pub pad: usize,
    /// A 503 is retried (same seq) up to this many times, 50 ms apart.
    pub retries_503: usize,
}

/// Which instances a load may publish to. The test clears a flag when it kills an instance.
pub struct Targets {
    pub addrs: Vec<SocketAddr>,
    pub alive: Vec<AtomicBool>,
}

impl Targets {
    pub fn new(gws: &[&Gateway]) -> Targets {
        Targets {
            addrs: gws.iter().map(|g| g.addr).collect(),
            alive: gws.iter().map(|_| AtomicBool::new(true)).collect(),
        }
    }

    pub fn kill(&self, i: usize) {
        self.alive[i].store(false, Ordering::SeqCst);
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i].load(Ordering::SeqCst)
    }

    /// The `n`-th live instance round-robin (`n` modulo the live ones).
    fn pick(&self, n: u64) -> usize {
        let live: Vec<usize> = (0..self.addrs.len()).filter(|&i| self.is_alive(i)).collect();
        assert!(!live.is_empty(), "no live instance left to publish to");
        live[(n % live.len() as u64) as usize]
    }
}

/// Publishes `load.total` events round-robin over the live `targets`. Before starting seq
/// `hold.0` it waits (bounded) for `hold.1` to be set: "keep publishing after the fault healed".
pub async fn run_load(ledger: &Ledger, targets: &Targets, token: &str, load: &Load, hold: Option<(u64, &AtomicBool)>) {
    let http = publish_client();
    let start = tokio::time::Instant::now();
    let seqs = load.first..load.first + load.total as u64;
    futures_util::stream::iter(seqs)
        .map(|seq| {
            let http = &http;
            async move {
                tokio::time::sleep_until(start + load.interval * (seq - load.first) as u32).await;
                if let Some((from, flag)) = hold {
                    if seq >= from {
                        wait_until("the fault to heal before the last publishes", Duration::from_secs(60), || {
                            std::future::ready(flag.load(Ordering::SeqCst))
                        })
                        .await;
                    }
                }
                let mut tries = 0;
                loop {
                    let via = targets.pick(seq);
                    match publish_once(http, ledger, targets.addrs[via], via, token, seq, load.pad).await {
                        Outcome::Refused(503) if tries < load.retries_503 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => return,
                    }
                }
            }
        })
        .buffer_unordered(load.in_flight.max(1))
        .collect::<()>()
        .await;
}

// ---------------------------------------------------------------------------------------------
// Tracked clients

/// One (re)connection of a tracked client.
#[derive(Clone, Debug)]
pub struct Conn {
    pub gw: usize,
    pub connected_at: Instant,
    pub since: Option<String>,
    /// `recovered` in `connected`: `None` when absent.
    pub recovered: Option<bool>,
    /// Set when the server ended the connection (close frame, error, end of stream).
    pub ended: Option<Instant>,
}

/// An event as a client received it.
#[derive(Clone, Debug)]
pub struct Got {
    pub seq: u64,
    pub id: String,
    pub at: Instant,
    /// Index into [`Record::conns`].
    pub conn: usize,
}

/// A time the client was told it may have missed events.
#[derive(Clone, Debug)]
pub struct Tell {
    pub at: Instant,
    /// Events received before it.
    pub position: usize,
    pub why: String,
}

/// Everything one client saw.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub name: String,
    pub conns: Vec<Conn>,
    pub events: Vec<Got>,
    pub tells: Vec<Tell>,
    /// Frames that were neither events, `resync`, `pong` nor `subscribed`.
    pub other: Vec<Value>,
}

impl Record {
    pub fn told(&self) -> bool {
        !self.tells.is_empty()
    }

    pub fn last_id(&self) -> Option<String> {
        self.events.last().map(|g| g.id.clone())
    }

    fn first_connected(&self) -> Instant {
        self.conns.first().expect("a record has its first connection").connected_at
    }
}

/// A client whose frames a background task reads into its [`Record`] until it is stopped or
/// the connection ends.
pub struct Tracked {
    pub name: String,
    pub user: String,
    /// Index of the instance it is connected to now.
    pub gw: usize,
    rec: Arc<Mutex<Record>>,
    stop: Option<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Tracked {
    /// Connects `user` to `gw` (instance index `idx`) and starts reading.
    pub async fn connect(name: String, user: String, idx: usize, gw: &Gateway) -> Tracked {
        let client = connect_user(gw, &user).await;
        let connected_at = Instant::now();
        let mut t = Tracked {
            rec: Arc::new(Mutex::new(Record { name: name.clone(), ..Record::default() })),
            name,
            user,
            gw: idx,
            stop: None,
            task: None,
        };
        t.start(client, idx, connected_at, None);
        t
    }

    fn start(&mut self, client: WsClient, idx: usize, connected_at: Instant, since: Option<String>) {
        let recovered = client.connected.get("recovered").and_then(Value::as_bool);
        {
            let mut rec = self.rec.lock().unwrap();
            let position = rec.events.len();
            let why = match &since {
                Some(s) if recovered != Some(true) => {
                    Some(format!("connected on gw{idx} with since={s} answered recovered={recovered:?}"))
                }
                None if !rec.conns.is_empty() => {
                    Some(format!("reconnected to gw{idx} without since (no event received yet)"))
                }
                _ => None,
            };
            if let Some(why) = why {
                rec.tells.push(Tell { at: connected_at, position, why });
            }
            rec.conns.push(Conn { gw: idx, connected_at, since, recovered, ended: None });
        }
        self.gw = idx;
        let (stop_tx, stop_rx) = watch::channel(false);
        self.stop = Some(stop_tx);
        self.task = Some(tokio::spawn(read_frames(client, self.rec.clone(), stop_rx)));
    }

    /// Stops the reader and closes the connection (if it is still open).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(task) = self.task.take() {
            within(&format!("{}'s reader to stop", self.name), STEP, task).await.expect("reader task panicked");
        }
    }

    /// Stops reading, drops the connection, and reconnects to `gw` (index `idx`) with
    /// `since=<last id received>` (without `since` when nothing was received yet).
    pub async fn resume(&mut self, idx: usize, gw: &Gateway) {
        self.stop().await;
        let since = self.rec.lock().unwrap().last_id();
        let client = match &since {
            Some(id) => connect_since(gw, &self.user, id).await,
            None => connect_user(gw, &self.user).await,
        };
        let connected_at = Instant::now();
        self.start(client, idx, connected_at, since);
    }

    pub fn record(&self) -> Record {
        self.rec.lock().unwrap().clone()
    }

    pub fn received(&self) -> usize {
        self.rec.lock().unwrap().events.len()
    }

    /// The instant of the last frame of any kind received, or of the last (re)connection.
    fn last_activity(&self) -> Instant {
        let rec = self.rec.lock().unwrap();
        let ev = rec.events.last().map(|g| g.at);
        let conn = rec.conns.last().map(|c| c.connected_at);
        ev.into_iter().chain(conn).max().expect("connected once")
    }

    /// Whether the current connection has ended.
    pub fn ended(&self) -> bool {
        self.rec.lock().unwrap().conns.last().is_some_and(|c| c.ended.is_some())
    }
}

async fn read_frames(mut client: WsClient, rec: Arc<Mutex<Record>>, mut stop: watch::Receiver<bool>) {
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => return,
            m = client.ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(b))) => {
                rec.lock().unwrap().other.push(Value::String(format!("binary frame of {} bytes", b.len())));
                continue;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                let mut rec = rec.lock().unwrap();
                if let Some(c) = rec.conns.last_mut() {
                    c.ended = Some(Instant::now());
                }
                return;
            }
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.as_str().to_owned()));
        let at = Instant::now();
        let mut rec = rec.lock().unwrap();
        let conn = rec.conns.len() - 1;
        match (v["type"].as_str(), v["data"]["seq"].as_u64()) {
            (Some("resync"), _) => {
                let position = rec.events.len();
                let gw = rec.conns[conn].gw;
                rec.tells.push(Tell { at, position, why: format!("resync frame on gw{gw}: {v}") });
            }
            (Some("pong" | "subscribed"), _) => {}
            (Some(_), Some(seq)) => {
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                rec.events.push(Got { seq, id, at, conn });
            }
            _ => rec.other.push(v),
        }
    }
}

/// Waits until every client has received every event accepted after its first `connected`
/// frame, or no client has received anything for `quiet`, bounded by `max`.
pub async fn settle(ledger: &Ledger, clients: &[Tracked], quiet: Duration, max: Duration) {
    let start = Instant::now();
    loop {
        let accepted = ledger.accepted();
        let complete = clients.iter().all(|c| {
            let rec = c.record();
            let first = rec.first_connected();
            let got: std::collections::HashSet<u64> = rec.events.iter().map(|g| g.seq).collect();
            accepted.values().filter(|a| a.sent_at > first).all(|a| got.contains(&a.seq))
        });
        let last = clients.iter().map(Tracked::last_activity).max();
        let idle = match last {
            Some(l) => l.elapsed() >= quiet,
            None => true,
        };
        if complete || idle || start.elapsed() >= max {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The verdict

/// Which events a client must get.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Events whose publish was *sent* after the client's first `connected` frame (the safe
    /// reading: such an event was certainly accepted after it).
    SentAfterConnected,
    /// Events whose 202 came back after the client's first `connected` frame.
    AnsweredAfterConnected,
}

/// The counts of one round and its failures (empty when the oracle is satisfied).
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub accepted: usize,
    /// Event frames of accepted seqs received, all clients, first copies only.
    pub delivered: usize,
    pub missing_told: usize,
    pub missing_silent: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    /// Frames of seqs that were never accepted (refused or unanswered publishes).
    pub unaccepted_delivered: usize,
    pub recovered_true: usize,
    pub recovered_false: usize,
    pub resyncs: usize,
    /// Clients told at least once.
    pub clients_told: usize,
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn add(&mut self, o: &Verdict) {
        self.accepted += o.accepted;
        self.delivered += o.delivered;
        self.missing_told += o.missing_told;
        self.missing_silent += o.missing_silent;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unaccepted_delivered += o.unaccepted_delivered;
        self.recovered_true += o.recovered_true;
        self.recovered_false += o.recovered_false;
        self.resyncs += o.resyncs;
        self.clients_told += o.clients_told;
        self.failures.extend(o.failures.iter().cloned());
    }

    /// The one-line summary: `ROUND scenario=... round=... accepted=...`, parsed by
    /// `benches/chaos.sh`.
    pub fn line(&self, scenario: &str, round: &str) -> String {
        format!(
            "ROUND scenario={scenario} round={round} accepted={} delivered={} missing_told={} missing_silent={} \
             duplicated={} out_of_order={} recovered_true={} recovered_false={} resyncs={} clients_told={} \
             unaccepted_delivered={} failures={}",
            self.accepted,
            self.delivered,
            self.missing_told,
            self.missing_silent,
            self.duplicated,
            self.out_of_order,
            self.recovered_true,
            self.recovered_false,
            self.resyncs,
            self.clients_told,
            self.unaccepted_delivered,
            self.failures.len()
        )
    }

    /// Panics with every failure (and `context`) unless there is none.
    pub fn assert_ok(&self, scenario: &str, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{scenario}: {} failure(s):\n{}\n{}\n{context}",
            self.failures.len(),
            self.failures.join("\n"),
            self.line(scenario, "-")
        );
    }
}

/// `[1, 2, 3, 7, 9, 10]` → `1..=3, 7, 9..=10` (at most `max` items shown).
pub fn ranges(seqs: &[u64], max: usize) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { seqs[i].to_string() } else { format!("{}..={}", seqs[i], seqs[j]) });
        i = j + 1;
    }
    let more = parts.len().saturating_sub(max);
    parts.truncate(max);
    if more > 0 {
        parts.push(format!("... ({more} more ranges)"));
    }
    format!("[{}]", parts.join(", "))
}

fn ms(base: Instant, t: Instant) -> String {
    if t >= base {
        format!("+{}ms", (t - base).as_millis())
    } else {
        format!("-{}ms", (base - t).as_millis())
    }
}

/// Judges every client's record against the ledger. `t0` is the origin of the times printed
/// in failure messages.
pub fn judge(ledger: &Ledger, records: &[Record], rule: Rule, t0: Instant) -> Verdict {
    let accepted = ledger.accepted();
    let mut v = Verdict { accepted: accepted.len(), ..Verdict::default() };
    for s in ledger.accepted_twice() {
        v.failures.push(format!("test bug: seq {s} was published (and accepted) twice"));
    }
    for rec in records {
        let first = rec.first_connected();
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for g in &rec.events {
            *counts.entry(g.seq).or_default() += 1;
        }
        v.delivered += counts.keys().filter(|s| accepted.contains_key(s)).count();
        v.unaccepted_delivered += counts.keys().filter(|s| !accepted.contains_key(s)).count();
        for c in &rec.conns {
            match (c.since.is_some(), c.recovered) {
                (true, Some(true)) => v.recovered_true += 1,
                (true, _) => v.recovered_false += 1,
                _ => {}
            }
        }
        let resyncs = rec.tells.iter().filter(|t| t.why.starts_with("resync")).count();
        v.resyncs += resyncs;
        if rec.told() {
            v.clients_told += 1;
        }
        let conns: Vec<String> = rec
            .conns
            .iter()
            .map(|c| {
                format!(
                    "gw{} at {}{}{}{}",
                    c.gw,
                    ms(t0, c.connected_at),
                    c.since.as_ref().map(|s| format!(" since={s}")).unwrap_or_default(),
                    c.recovered.map(|r| format!(" recovered={r}")).unwrap_or_default(),
                    c.ended.map(|e| format!(" ended at {}", ms(t0, e))).unwrap_or_default()
                )
            })
            .collect();
        let tells: Vec<String> =
            rec.tells.iter().map(|t| format!("at {} after {} events: {}", ms(t0, t.at), t.position, t.why)).collect();
        let who = format!(
            "client {} (connections: {}; told: {})",
            rec.name,
            conns.join(" | "),
            if tells.is_empty() { "never".to_owned() } else { tells.join(" | ") }
        );

        // Duplicates: always a failure.
        let dups: Vec<u64> = counts.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
        v.duplicated += dups.len();
        if !dups.is_empty() {
            let detail: Vec<String> = dups
                .iter()
                .take(5)
                .map(|s| {
                    let copies: Vec<String> = rec
                        .events
                        .iter()
                        .filter(|g| g.seq == *s)
                        .map(|g| format!("id {} on conn {} at {}", g.id, g.conn, ms(t0, g.at)))
                        .collect();
                    format!("seq {s}: {}", copies.join(", "))
                })
                .collect();
            v.failures.push(format!(
                "{who}: DUPLICATED {} seqs {}; e.g. {}",
                dups.len(),
                ranges(&dups, 20),
                detail.join("; ")
            ));
        }

        // Missing events that were accepted after its first `connected`.
        let missing: Vec<u64> = accepted
            .values()
            .filter(|a| match rule {
                Rule::SentAfterConnected => a.sent_at > first,
                Rule::AnsweredAfterConnected => a.answered_at > first,
            })
            .filter(|a| !counts.contains_key(&a.seq))
            .map(|a| a.seq)
            .collect();
        if rec.told() {
            v.missing_told += missing.len();
        } else if !missing.is_empty() {
            v.missing_silent += missing.len();
            let detail: Vec<String> = missing
                .iter()
                .take(3)
                .map(|s| {
                    let a = &accepted[s];
                    let id = match &a.outcome {
                        Outcome::Accepted(id) => id.as_str(),
                        _ => "?",
                    };
                    format!(
                        "seq {s} via gw{} sent {} answered {} id {id}",
                        a.via,
                        ms(t0, a.sent_at),
                        ms(t0, a.answered_at)
                    )
                })
                .collect();
            v.failures.push(format!(
                "{who}: SILENT GAP: {} accepted events never received and never told: {}; e.g. {}; received {} events, last {:?}",
                missing.len(),
                ranges(&missing, 20),
                detail.join("; "),
                rec.events.len(),
                rec.events.last().map(|g| (g.seq, g.id.clone()))
            ));
        }

        // Order per publishing instance: an event must not arrive after one whose publish was
        // sent only once the former had been answered.
        let mut newest_sent: HashMap<usize, (Instant, u64, String, usize)> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut backwards = Vec::new();
        for g in &rec.events {
            if !seen.insert(g.seq) {
                continue;
            }
            let Some(a) = accepted.get(&g.seq) else { continue };
            if let Some((sent, later, later_id, later_conn)) = newest_sent.get(&a.via) {
                if *sent > a.answered_at {
                    backwards.push(format!(
                        "seq {} (id {} on conn {}) arrived after seq {later} (id {later_id} on conn {later_conn}) (both via gw{})",
                        g.seq, g.id, g.conn, a.via
                    ));
                }
            }
            let e = newest_sent.entry(a.via).or_insert((a.sent_at, g.seq, g.id.clone(), g.conn));
            if a.sent_at > e.0 {
                *e = (a.sent_at, g.seq, g.id.clone(), g.conn);
            }
        }
        v.out_of_order += backwards.len();
        if !backwards.is_empty() {
            let n = backwards.len();
            backwards.truncate(5);
            v.failures.push(format!(
                "{who}: OUT OF ORDER: {n} events arrived after an event published through the same instance after them: {}",
                backwards.join("; ")
            ));
        }
    }
    v
}

/// The warnings and errors in every gateway's log (at most `max` lines each), for failure
/// messages.
pub fn fleet_warnings(gws: &[&Gateway], max: usize) -> String {
    let mut out = String::new();
    for (i, g) in gws.iter().enumerate() {
        let logs = g.logs();
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        let skip = lines.len().saturating_sub(max);
        out.push_str(&format!("--- gw{i} ({} warnings/errors, last {}) ---\n", lines.len(), lines.len() - skip));
        for l in &lines[skip..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scenario steps shared by the fault tests

/// The next live instance after `i`.
pub fn next_alive(targets: &Targets, i: usize) -> usize {
    let n = targets.addrs.len();
    (1..=n).map(|d| (i + d) % n).find(|&j| targets.is_alive(j)).expect("a live instance")
}

/// Resumes every client on the next live instance, reads for 2 s, then until every client is
/// complete or quiet, then [`QUIET_WINDOW`] more (for duplicates).
pub async fn resume_all_elsewhere(clients: &mut [Tracked], gws: &[Gateway], targets: &Targets, ledger: &Ledger) {
    join_all(clients.iter_mut().map(|c| {
        let n = next_alive(targets, c.gw);
        c.resume(n, &gws[n])
    }))
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(ledger, clients, Duration::from_millis(500), Duration::from_secs(5)).await;
    // settle returns as soon as every client is complete: give a late copy time to show up.
    tokio::time::sleep(QUIET_WINDOW).await;
}

/// Stops every client's reader; returns their records.
pub async fn stop_all(clients: &mut [Tracked]) -> Vec<Record> {
    for c in clients.iter_mut() {
        c.stop().await;
    }
    clients.iter().map(Tracked::record).collect()
}

/// What a scenario round gives back: the verdict and what a failure message needs besides it
/// (parameters, timeline, publish outcomes, the gateways' warnings).
pub struct RoundResult {
    pub verdict: Verdict,
    pub context: String,
}

// ---------------------------------------------------------------------------------------------
// Chaos rounds

/// `CHAOS_SEED` from the environment, or one drawn from the clock; printed by the caller.
pub fn chaos_seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() ^ (std::process::id() as u64))
}

/// `CHAOS_ROUNDS` from the environment (default 50).
pub fn chaos_rounds() -> usize {
    std::env::var("CHAOS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50)
}

// ---------------------------------------------------------------------------------------------
// More Redis processes: a replica and Sentinels

/// Runs `redis-cli -p port args` and returns its trimmed output (no tty: raw replies).
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    run_ok(cmd).await.trim().to_owned()
}

/// Like [`redis_cli`] but bounded to 2 s and never panicking (for polling a server that may be
/// down): `None` when it failed or took too long.
pub async fn redis_cli_try(port: u16, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    // Process: killed on drop if it is still running.
    let mut p = Process::spawn(cmd);
    let status = p.wait_exit(Duration::from_secs(2)).await?;
    status.success().then(|| p.stdout().trim().to_owned())
}

/// A replica of the server on `primary_port` (no persistence, own dir), once its replication
/// link is up.
pub async fn start_replica(primary_port: u16) -> RedisServer {
    let primary = primary_port.to_string();
    let replica = RedisServer::start_args(&["--replicaof", "127.0.0.1", &primary]).await;
    let port = replica.port;
    wait_until(&format!("replica on {port} to sync from {primary_port}"), STEP, || async move {
        redis_cli_try(port, &["INFO", "replication"]).await.is_some_and(|i| i.contains("master_link_status:up"))
    })
    .await;
    replica
}

/// A Redis Sentinel on a loopback port of its own (held while it lives, another one tried when
/// it was taken after all) watching the primary `name` at 127.0.0.1:`primary` with quorum
/// `quorum`, `down-after-milliseconds 1000`, `failover-timeout 5000`. Its config file (which
/// Sentinel rewrites) lives in its own temp dir. Killed on drop.
pub struct Sentinel {
    pub proc: Option<Process>,
    pub port: u16,
    pub dir: TempDir,
    /// Its port, held while it lives.
    _hold: PortHold,
}

impl Sentinel {
    pub async fn start(name: &str, primary: u16, quorum: u32) -> Sentinel {
        for _ in 0..PORT_TRIES {
            let hold = PortHold::new();
            let port = hold.port();
            let dir = TempDir::new("sentinel");
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nsentinel resolve-hostnames no\n\
                 sentinel monitor {name} 127.0.0.1 {primary} {quorum}\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.path().display()
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel");
            let proc = Process::spawn(cmd);
            let mut s = Sentinel { proc: Some(proc), port, dir, _hold: hold };
            let mut exited = None;
            wait_until(&format!("sentinel on {port} to answer PING"), STEP, || {
                let p = s.proc.as_mut().unwrap();
                if exited.is_none() && p.try_exit().is_some() {
                    exited = Some(format!("{}{}", p.stdout(), p.stderr()));
                }
                let gone = exited.is_some();
                async move { gone || redis_cli_try(port, &["PING"]).await.as_deref() == Some("PONG") }
            })
            .await;
            match exited {
                None => return s,
                Some(out) if out.contains("Address already in use") => continue,
                Some(out) => panic!("sentinel exited; output:\n{out}"),
            }
        }
        panic!("sentinel found its port taken {PORT_TRIES} times");
    }

    /// `SENTINEL get-master-addr-by-name name` → the primary's port, if the sentinel answers.
    pub async fn primary_port(&self, name: &str) -> Option<u16> {
        let out = redis_cli_try(self.port, &["SENTINEL", "get-master-addr-by-name", name]).await?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    pub async fn cli(&self, args: &[&str]) -> Option<String> {
        redis_cli_try(self.port, args).await
    }

    pub fn kill(&mut self) {
        self.proc = None;
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three sentinels (quorum 2) watching `name` on `primary`, once every one of them knows the
/// other two and `replicas` replicas.
pub async fn start_sentinels(name: &str, primary: u16, replicas: usize) -> Vec<Sentinel> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(Sentinel::start(name, primary, 2).await);
    }
    for s in &out {
        let what = format!("sentinel {} to know 2 other sentinels and {replicas} replica(s)", s.port);
        wait_until(&what, Duration::from_secs(30), || async {
            let Some(info) = s.cli(&["SENTINEL", "master", name]).await else { return false };
            let field = |k: &str| {
                let lines: Vec<&str> = info.lines().collect();
                lines.iter().position(|l| l.trim() == k).and_then(|i| lines.get(i + 1)).map(|v| v.trim().to_owned())
            };
            field("num-other-sentinels").as_deref() == Some("2") && field("num-slaves") == Some(replicas.to_string())
        })
        .await;
    }
    out
}

/// A seed (see [`chaos_seed`]) and an RNG from it; prints the seed under `label`.
pub fn seeded(label: &str) -> (u64, StdRng) {
    let seed = chaos_seed();
    println!("{label}: seed {seed} (CHAOS_SEED={seed} repeats it)");
    (seed, StdRng::seed_from_u64(seed))
}

/// Runs `CHAOS_ROUNDS` rounds of `run(make(rng))`, the RNG of round `r` seeded with
/// `seed + r`, each round in its own task (a harness panic fails that round, not the loop).
/// Prints one `ROUND` line per round and a `TOTAL` line; fails at the end if any round had a
/// silent gap, a duplicate, an out-of-order event or a harness failure.
pub async fn chaos_loop<P, Fut>(scenario: &str, make: impl Fn(&mut StdRng) -> P, run: impl Fn(P) -> Fut)
where
    P: std::fmt::Debug,
    Fut: Future<Output = RoundResult> + Send + 'static,
{
    let (seed, _) = seeded(scenario);
    let rounds = chaos_rounds();
    let mut total = Verdict::default();
    let mut broken = Vec::new();
    for round in 0..rounds {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(round as u64));
        let p = make(&mut rng);
        let desc = format!("{p:?}");
        match tokio::spawn(run(p)).await {
            Ok(r) => {
                println!("{}", r.verdict.line(scenario, &round.to_string()));
                if !r.verdict.failures.is_empty() {
                    println!("  round {round} failures:\n  {}\n  {}", r.verdict.failures.join("\n  "), r.context);
                }
                total.add(&r.verdict);
            }
            Err(e) => {
                println!("ROUND scenario={scenario} round={round} harness_failure=1 params {desc}: {e}");
                broken.push(round);
            }
        }
    }
    println!("{}", total.line(scenario, "TOTAL"));
    println!("harness_failures={}", broken.len());
    assert!(
        total.missing_silent == 0 && total.duplicated == 0 && total.out_of_order == 0 && broken.is_empty(),
        "{scenario}: {} silent missing, {} duplicated, {} out of order over {rounds} rounds (seed {seed}); \
         harness failures in rounds {broken:?}",
        total.missing_silent,
        total.duplicated,
        total.out_of_order
    );
}
