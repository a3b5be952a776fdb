//! `--mode channels`: channel routing over a fleet.
//!
//! `--conns` subscribers, spread round-robin over `--sub-addrs` (connection i on gateway
//! i % n), each joining a few of `--channels` channels at connect
//! (`/ws/tasks?token=…&channels=c3,c17`, token claim `"channels": ["*"]`). Which channels a
//! connection joins is fixed by [`assign`] (deterministic, `--seed`):
//!
//! - popularity: channel `c<r>` (rank r, 0-based) gets about `C / (r+1)^s` subscribers
//!   (`--zipf` s, default 0.8), at least 1, the counts summing to conns × `--chans-per-conn`;
//! - placement: a channel's subscribers cluster on one *home* instance (the least loaded one
//!   when the channel is placed, so the instances end up equally loaded), as with sticky or
//!   tenant-aware load balancing: the first subscriber is at home, each further one is at home
//!   with probability `--locality` (0.9) and otherwise on one of the other instances, picked
//!   uniformly. So small channels live on one or two instances and the popular ones on all;
//! - within an instance the slots are dealt to its connections in turn, so every connection
//!   holds about the same number of channels, all distinct.
//!
//! Then `--broadcasts` events are published through `--addr` at `--rate` per second, one
//! request at a time on a thread of its own (`POST /api/events`
//! `{"type":"bench","channel":"c<r>","data":{"seq":N,"t0":<CLOCK_MONOTONIC ns>,"pad":…}}`),
//! each to a channel picked by `--pick`: `uniform` over all channels (default) or `zipf`
//! (proportional to the channel's subscribers, i.e. by the same distribution). Every connection
//! counts the events it receives; the expected count per connection follows from the
//! assignment and the picks, so `delivered`, `missing` (short connections), `dupes` and
//! `misrouted` (an event for a channel the connection did not join) are exact.
//!
//! Measured over the publish window (first publish → last expected delivery): CPU of each
//! `--server-pids` process and of `--redis-pid` (from /proc/<pid>/stat), of this process, and
//! of everything else on the machine (/proc/stat busy time minus those), and the deltas of
//! each gateway's `/metrics` counters (`wsgate_redis_messages_received_total`,
//! `wsgate_deliveries_total`, `wsgate_history_gaps_total`, ...). Prints `DIST …` (the
//! assignment), `READY …`, then one `RESULT …` line. Single process: at most ~19k sockets.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use wsgate_loadgen::sys::now_ns;
use wsgate_loadgen::{hist, http, now_unix, payload, sys, ws_config};

use crate::{http_error, publish_token, shorten, wait_stats, Cli, MAX_CONNS_PER_PROC};

// ---------------------------------------------------------------------------------------------
// Assignment
// ---------------------------------------------------------------------------------------------

/// Which connection joins which channel.
#[derive(Debug)]
pub struct Assignment {
    /// Per connection: the channels (ranks) it joins, ascending.
    pub subs: Vec<Vec<u16>>,
    /// Per channel: its subscribers.
    pub chan_subs: Vec<u32>,
    /// Per channel: bit j set when instance j has a subscriber.
    pub chan_inst: Vec<u32>,
    pub instances: usize,
}

impl Assignment {
    /// Instances a channel has subscribers on.
    pub fn spread(&self, ch: usize) -> usize {
        self.chan_inst[ch].count_ones() as usize
    }

    /// Channels with subscribers on exactly 1, 2, … `instances` instances.
    pub fn spread_hist(&self) -> Vec<usize> {
        let mut h = vec![0; self.instances + 1];
        for c in 0..self.chan_subs.len() {
            h[self.spread(c)] += 1;
        }
        h[1..].to_vec()
    }
}

/// splitmix64: small, deterministic, good enough for picking.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Subscriber counts per channel rank: `1 + (S − K)·w_r/Σw` with `w_r = (r+1)^−s`, rounded by
/// largest remainder so they sum to `S` exactly, each capped at `conns`.
pub fn zipf_counts(channels: usize, total: usize, s: f64, conns: usize) -> Vec<u32> {
    let w: Vec<f64> = (1..=channels).map(|k| (k as f64).powf(-s)).collect();
    let sum: f64 = w.iter().sum();
    let rest = total.saturating_sub(channels) as f64;
    let raw: Vec<f64> = w.iter().map(|x| rest * x / sum).collect();
    let mut c: Vec<u32> = raw.iter().map(|r| 1 + r.floor() as u32).collect();
    let mut short = total.saturating_sub(c.iter().map(|&x| x as usize).sum());
    let mut order: Vec<usize> = (0..channels).collect();
    order.sort_by(|&a, &b| (raw[b] - raw[b].floor()).total_cmp(&(raw[a] - raw[a].floor())).then(a.cmp(&b)));
    for &i in &order {
        if short == 0 {
            break;
        }
        c[i] += 1;
        short -= 1;
    }
    for x in &mut c {
        *x = (*x).min(conns as u32);
    }
    c
}

/// See the module docs. Connection i is on instance i % instances.
pub fn assign(
    conns: usize,
    instances: usize,
    channels: usize,
    per_conn: usize,
    zipf: f64,
    locality: f64,
    seed: u64,
) -> Result<Assignment, String> {
    if instances == 0 || instances > 32 {
        return Err("1 to 32 gateways".into());
    }
    if channels == 0 || channels > u16::MAX as usize {
        return Err("--channels must be 1..65535".into());
    }
    if conns < instances {
        return Err(format!("--conns {conns} is below the number of gateways {instances}"));
    }
    let total = conns * per_conn.max(1);
    if total < channels {
        return Err(format!(
            "conns × --chans-per-conn = {total} is below --channels {channels}: some channels would have no subscriber"
        ));
    }
    let counts = zipf_counts(channels, total, zipf, conns);
    // Connections of each instance.
    let members: Vec<Vec<usize>> = (0..instances).map(|j| (j..conns).step_by(instances).collect()).collect();
    let mut load = vec![0usize; instances];
    let mut cursor = vec![0usize; instances];
    let mut rng = Rng::new(seed);
    let mut subs: Vec<Vec<u16>> = vec![Vec::new(); conns];
    let mut chan_subs = vec![0u32; channels];
    let mut chan_inst = vec![0u32; channels];
    for (ch, &n) in counts.iter().enumerate() {
        // Home: the least loaded instance relative to its size (first on ties).
        let home = (0..instances)
            .min_by(|&a, &b| {
                (load[a] as f64 / members[a].len() as f64).total_cmp(&(load[b] as f64 / members[b].len() as f64))
            })
            .unwrap_or(0);
        let mut here = vec![0usize; instances];
        for slot in 0..n as usize {
            let mut j = if slot == 0 || instances == 1 || rng.f64() < locality {
                home
            } else {
                (home + 1 + rng.below(instances - 1)) % instances
            };
            // An instance cannot hold a channel more times than it has connections.
            if here[j] >= members[j].len() {
                match (0..instances).find(|&x| here[x] < members[x].len()) {
                    Some(x) => j = x,
                    None => break,
                }
            }
            // Consecutive turns of one instance's cursor: distinct connections, since
            // `here[j]` never exceeds the instance's size.
            let m = &members[j];
            let conn = m[cursor[j] % m.len()];
            cursor[j] += 1;
            here[j] += 1;
            load[j] += 1;
            subs[conn].push(ch as u16);
            chan_subs[ch] += 1;
            chan_inst[ch] |= 1 << j;
        }
    }
    for s in &mut subs {
        s.sort_unstable();
    }
    Ok(Assignment { subs, chan_subs, chan_inst, instances })
}

/// The channel of every event: uniform over the channels, or proportional to subscribers.
pub fn picks(a: &Assignment, events: usize, zipf_pick: bool, seed: u64) -> Vec<u16> {
    let k = a.chan_subs.len();
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_E7E4_7500);
    let cum: Vec<u64> = a
        .chan_subs
        .iter()
        .scan(0u64, |acc, &s| {
            *acc += s as u64;
            Some(*acc)
        })
        .collect();
    let total = cum.last().copied().unwrap_or(0).max(1);
    (0..events)
        .map(|_| {
            if zipf_pick {
                let x = rng.next_u64() % total;
                cum.partition_point(|&c| c <= x) as u16
            } else {
                rng.below(k) as u16
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

/// Counters shared by every receive task.
struct Shared {
    events: usize,
    warmup: usize,
    /// Channel of every seq.
    picks: Arc<Vec<u16>>,
    /// Per connection: events received (first copies of bench events of a joined channel).
    counts: Vec<AtomicU32>,
    delivered: AtomicU64,
    dupes: AtomicU64,
    misrouted: AtomicU64,
    other: AtomicU64,
    closed: AtomicU64,
}

/// `c<rank>` from a frame's `"channel":"c<rank>"`.
fn parse_channel(b: &[u8]) -> Option<u16> {
    const KEY: &[u8] = b"\"channel\":\"c";
    let at = b.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let mut v: u32 = 0;
    let mut i = at;
    while i < b.len() && b[i].is_ascii_digit() && v <= u16::MAX as u32 {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    (i > at && i < b.len() && b[i] == b'"' && v <= u16::MAX as u32).then_some(v as u16)
}

impl Shared {
    fn on_frame(&self, idx: usize, mine: &[u16], b: &[u8], seen: &mut [u64]) {
        let now = now_ns();
        let Some((seq, t0)) = payload::parse_seq_t0(b) else {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if seq >= self.events as u64 {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = seq as usize;
        // The frame must name the channel the event was published to, and this connection
        // must have joined it.
        let ch = parse_channel(b);
        if ch != Some(self.picks[seq]) || mine.binary_search(&self.picks[seq]).is_err() {
            self.misrouted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if seen[word] & bit != 0 {
            self.dupes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        seen[word] |= bit;
        if seq >= self.warmup {
            hist::record(now.saturating_sub(t0));
        }
        self.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

async fn recv_loop(mut ws: WebSocketStream<TcpStream>, idx: usize, mine: Vec<u16>, st: Arc<Shared>) {
    let mut seen = vec![0u64; st.events.div_ceil(64).max(1)];
    while let Some(r) = ws.next().await {
        match r {
            Ok(Message::Text(t)) => st.on_frame(idx, &mine, t.as_bytes(), &mut seen),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    st.closed.fetch_add(1, Ordering::Relaxed);
}

fn channel_token(key: &EncodingKey, sub: &str) -> Result<String, String> {
    let claims = serde_json::json!({ "sub": sub, "exp": now_unix() + 86_400, "channels": ["*"] });
    jsonwebtoken::encode(&Header::default(), &claims, key).map_err(|e| format!("jwt: {e}"))
}

/// Opens one subscriber with `channels=`, waits for `connected` and one `subscribed` frame per
/// channel (an `error` frame, e.g. too_many_channels, fails the connection).
async fn open(
    addr: std::net::SocketAddr,
    src: Option<std::net::Ipv4Addr>,
    token: &str,
    chans: &[u16],
) -> Result<WebSocketStream<TcpStream>, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = src {
        sys::bind_source(&sock, ip).map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = sock.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let list = chans.iter().map(|c| format!("c{c}")).collect::<Vec<_>>().join(",");
    let url = format!("ws://{addr}/ws/tasks?token={token}&channels={list}");
    let (mut ws, _) =
        client_async_with_config(url, stream, Some(ws_config())).await.map_err(|e| format!("handshake: {e}"))?;
    let mut connected = false;
    let mut pending: Vec<String> = chans.iter().map(|c| format!("c{c}")).collect();
    while !connected || !pending.is_empty() {
        let t = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Err(format!("unexpected frame: {}", shorten(&format!("{m:?}")))),
            Some(Err(e)) => return Err(format!("before ready: {e}")),
            None => return Err("closed before ready".into()),
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
        match v.get("type").and_then(|t| t.as_str()) {
            Some("connected") if !connected => connected = true,
            Some("subscribed") if connected => {
                let name = v.get("channel").and_then(|c| c.as_str()).unwrap_or("");
                match pending.iter().position(|p| p == name) {
                    Some(i) => {
                        pending.swap_remove(i);
                    }
                    None => return Err(format!("unexpected subscribed frame: {}", shorten(t.as_str()))),
                }
            }
            _ => return Err(format!("unexpected frame while joining: {}", shorten(t.as_str()))),
        }
    }
    Ok(ws)
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// The counters read from each gateway's /metrics.
const COUNTERS: [&str; 5] = [
    "wsgate_redis_messages_received_total",
    "wsgate_deliveries_total",
    "wsgate_history_gaps_total",
    "wsgate_history_gap_events_total",
    "wsgate_redis_messages_lost_total",
];

fn parse_counters(body: &str) -> [f64; COUNTERS.len()] {
    let mut out = [0.0; COUNTERS.len()];
    for line in body.lines() {
        let mut it = line.split_whitespace();
        let (Some(name), Some(v)) = (it.next(), it.next()) else { continue };
        if let Some(i) = COUNTERS.iter().position(|c| *c == name) {
            out[i] = v.parse().unwrap_or(0.0);
        }
    }
    out
}

async fn read_counters(addrs: &[std::net::SocketAddr]) -> Vec<[f64; COUNTERS.len()]> {
    let mut out = Vec::new();
    for &a in addrs {
        let mut h = http::Http::new(a);
        let r = timeout(Duration::from_secs(5), h.request("GET", "/metrics", "", b"")).await;
        out.push(match r {
            Ok(Ok(r)) if r.status == 200 => parse_counters(&String::from_utf8_lossy(&r.body)),
            _ => {
                eprintln!("GET http://{a}/metrics failed");
                [f64::NAN; COUNTERS.len()]
            }
        });
    }
    out
}

struct CpuSnap {
    servers: Vec<f64>,
    redis: f64,
    client: f64,
    machine: f64,
    at: Instant,
}

fn cpu_snap(server_pids: &[u32], redis_pid: u32) -> CpuSnap {
    CpuSnap {
        servers: server_pids.iter().map(|&p| sys::cpu_secs(p)).collect(),
        redis: if redis_pid > 0 { sys::cpu_secs(redis_pid) } else { 0.0 },
        client: sys::cpu_secs(0),
        machine: sys::machine_busy_secs(),
        at: Instant::now(),
    }
}

// ---------------------------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct PubOut {
    ok: Vec<bool>,
    rtt: Vec<u64>,
    errors: u64,
    first_ns: u64,
    last_ns: u64,
    stuck: bool,
}

fn publish_body(seq: u64, ch: u16, t0: u64, frame_bytes: usize) -> String {
    format!(
        r#"{{"type":"{}","channel":"c{ch}","data":{}}}"#,
        payload::EVENT_TYPE,
        payload::data_json(seq, t0, frame_bytes)
    )
}

async fn publish(
    addr: std::net::SocketAddr,
    headers: String,
    picks: Arc<Vec<u16>>,
    rate: f64,
    warmup: usize,
    frame_bytes: usize,
    tmo: Duration,
) -> PubOut {
    let mut http = http::Http::new(addr);
    let n = picks.len();
    let mut out = PubOut { ok: vec![false; n], ..Default::default() };
    let (mut consecutive, mut hinted) = (0u32, false);
    let start = Instant::now();
    for seq in 0..n {
        if rate > 0.0 {
            tokio::time::sleep_until((start + Duration::from_secs_f64(seq as f64 / rate)).into()).await;
        }
        let t0 = now_ns();
        if seq == 0 {
            out.first_ns = t0;
        }
        out.last_ns = t0;
        let body = publish_body(seq as u64, picks[seq], t0, frame_bytes);
        let err = match timeout(tmo, http.request("POST", "/api/events", &headers, body.as_bytes())).await {
            Ok(Ok(r)) if r.status == 202 => {
                if seq >= warmup {
                    out.rtt.push(now_ns() - t0);
                }
                out.ok[seq] = true;
                consecutive = 0;
                continue;
            }
            Ok(Ok(r)) => http_error(&r, &mut hinted),
            Ok(Err(e)) => format!("I/O error: {e}"),
            Err(_) => format!("no answer within {}s", tmo.as_secs()),
        };
        out.errors += 1;
        consecutive += 1;
        if out.errors <= 5 {
            eprintln!("publish seq={seq} failed: {err}");
        }
        if consecutive >= 50 {
            eprintln!("50 publishes in a row failed; giving up");
            out.stuck = true;
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

pub async fn run(cli: Cli) -> i32 {
    let addrs = if cli.sub_addrs.is_empty() { vec![cli.addr] } else { cli.sub_addrs.clone() };
    let n = cli.conns;
    if cli.procs > 1 || n > MAX_CONNS_PER_PROC {
        eprintln!("wsgate-loadgen: --mode channels runs in one process: at most {MAX_CONNS_PER_PROC} connections");
        return 1;
    }
    if !cli.server_pids.is_empty() && cli.server_pids.len() != addrs.len() {
        eprintln!("wsgate-loadgen: --server-pids must list one PID per --sub-addrs entry, in the same order");
        return 1;
    }
    if cli.broadcasts == 0 {
        eprintln!("wsgate-loadgen: --broadcasts (the number of events) must be at least 1");
        return 1;
    }
    let a = match assign(n, addrs.len(), cli.channels, cli.chans_per_conn, cli.zipf, cli.locality, cli.seed) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wsgate-loadgen: {e}");
            return 1;
        }
    };
    let k = cli.broadcasts;
    let warmup = cli.warmup();
    let picks = Arc::new(picks(&a, k, cli.pick_zipf(), cli.seed));

    // ---- the assignment, summarised
    let spread = a.spread_hist();
    let per_conn: Vec<usize> = a.subs.iter().map(|s| s.len()).collect();
    let mut sorted_subs = a.chan_subs.clone();
    sorted_subs.sort_unstable();
    let mut ev_spread = vec![0usize; addrs.len() + 1];
    for &p in picks.iter() {
        ev_spread[a.spread(p as usize)] += 1;
    }
    let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("/");
    println!(
        "DIST conns={n} instances={} channels={} subs={} chans_per_conn_min={} chans_per_conn_max={} \
subs_top5={} subs_median={} subs_min={} channels_on_1..{}={} events_on_1..{}={} pick={}",
        addrs.len(),
        cli.channels,
        a.chan_subs.iter().map(|&x| x as u64).sum::<u64>(),
        per_conn.iter().min().unwrap_or(&0),
        per_conn.iter().max().unwrap_or(&0),
        a.chan_subs.iter().take(5).map(|x| x.to_string()).collect::<Vec<_>>().join(","),
        sorted_subs[sorted_subs.len() / 2],
        sorted_subs[0],
        addrs.len(),
        join(&spread),
        addrs.len(),
        join(&ev_spread[1..]),
        if cli.pick_zipf() { "zipf" } else { "uniform" },
    );

    // ---- connect
    let st = Arc::new(Shared {
        events: k,
        warmup,
        picks: picks.clone(),
        counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
        delivered: AtomicU64::new(0),
        dupes: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        other: AtomicU64::new(0),
        closed: AtomicU64::new(0),
    });
    let tmo = cli.tmo();
    let t_conn = Instant::now();
    let key = Arc::new(EncodingKey::from_secret(cli.secret.as_bytes()));
    let sem = Arc::new(Semaphore::new(cli.conc.max(1)));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let users = cli.users();
    for i in 0..n {
        let Ok(permit) = sem.clone().acquire_owned().await else { break };
        let (st, ok, failed, key) = (st.clone(), ok.clone(), failed.clone(), key.clone());
        let src = (cli.src_ips > 0)
            .then(|| std::net::Ipv4Addr::new(127, 0, 0, (cli.src_base + i as u32 % cli.src_ips) as u8));
        let addr = addrs[i % addrs.len()];
        let mine = a.subs[i].clone();
        tokio::spawn(async move {
            let r = match channel_token(&key, &format!("u{}", i % users)) {
                Ok(token) => match timeout(tmo, open(addr, src, &token, &mine)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("not ready within {}s", tmo.as_secs())),
                },
                Err(e) => Err(e),
            };
            drop(permit);
            match r {
                Ok(ws) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    recv_loop(ws, i, mine, st).await;
                }
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("conn {i} failed: {e}");
                    }
                }
            }
        });
    }
    let mut last = (0u64, Instant::now());
    loop {
        let done = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if done >= n as u64 {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > tmo {
            eprintln!("connect phase: no progress for {}s, {done}/{n} attempts ended", tmo.as_secs());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = ok.load(Ordering::Relaxed);
    println!(
        "READY conns={ready} failed={} connect_secs={:.2} client_rss_kib={}",
        n as u64 - ready,
        t_conn.elapsed().as_secs_f64(),
        sys::rss_kib(0)
    );
    if ready != n as u64 {
        eprintln!("not all connections established ({ready}/{n}); aborting");
        return 2;
    }
    {
        let mut h = http::Http::new(cli.addr);
        let field = if addrs.len() > 1 { "total_connections" } else { "local_connections" };
        if let Err(e) = wait_stats(&mut h, field, cli.expect.unwrap_or(n), tmo).await {
            eprintln!("{e}");
            return 3;
        }
    }

    // ---- publish, measured from the first publish to the last expected delivery
    let key = EncodingKey::from_secret(cli.secret.as_bytes());
    let token = match publish_token(&key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let headers = format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");
    let m0 = read_counters(&addrs).await;
    let c0 = cpu_snap(&cli.server_pids, cli.redis_pid);
    let (tx, rx) = oneshot::channel();
    let (addr, p2, rate, bytes) = (cli.addr, picks.clone(), cli.rate, cli.payload_bytes);
    let spawned = std::thread::Builder::new().name("publisher".into()).spawn(move || {
        let out = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(publish(addr, headers, p2, rate, warmup, bytes, tmo)),
            Err(e) => {
                eprintln!("publisher runtime: {e}");
                PubOut { stuck: true, ..Default::default() }
            }
        };
        let _ = tx.send(out);
    });
    if let Err(e) = spawned {
        eprintln!("publisher thread: {e}");
        return 1;
    }
    let PubOut { ok: published, mut rtt, errors, first_ns, last_ns, mut stuck } =
        rx.await.unwrap_or(PubOut { stuck: true, ..Default::default() });

    // Expected deliveries, from the events that were accepted.
    let mut per_chan = vec![0u64; cli.channels];
    for (seq, &p) in picks.iter().enumerate() {
        if published.get(seq).copied().unwrap_or(false) {
            per_chan[p as usize] += 1;
        }
    }
    let events_ok = per_chan.iter().sum::<u64>();
    let expect_conn: Vec<u64> = a.subs.iter().map(|s| s.iter().map(|&c| per_chan[c as usize]).sum()).collect();
    let expected: u64 = expect_conn.iter().sum();

    // ---- wait for every expected delivery (bounded by --timeout without progress)
    let mut last = (st.delivered.load(Ordering::Relaxed), Instant::now());
    loop {
        let d = st.delivered.load(Ordering::Relaxed);
        if d >= expected {
            break;
        }
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed() > tmo {
            eprintln!("deliveries stopped at {d} of {expected} for {}s", tmo.as_secs());
            stuck = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c1 = cpu_snap(&cli.server_pids, cli.redis_pid);
    let t_done = now_ns();
    // A grace period for late duplicates or strays, then the counters.
    tokio::time::sleep(Duration::from_millis(cli.grace_ms)).await;
    let m1 = read_counters(&addrs).await;

    // ---- figures
    let wall = c1.at.duration_since(c0.at).as_secs_f64().max(1e-9);
    let pct = |secs: f64| 100.0 * secs / wall;
    let gw_cpu: Vec<f64> = c0.servers.iter().zip(&c1.servers).map(|(a, b)| pct(b - a)).collect();
    let redis_cpu = pct(c1.redis - c0.redis);
    let client_cpu = pct(c1.client - c0.client);
    let ours = gw_cpu.iter().sum::<f64>() + redis_cpu + client_cpu;
    let other_cpu = (pct(c1.machine - c0.machine) - ours).max(0.0);
    let delta = |i: usize| -> Vec<f64> { m0.iter().zip(&m1).map(|(a, b)| b[i] - a[i]).collect() };
    let (msgs, dels, gaps, gap_events, lost) = (delta(0), delta(1), delta(2), delta(3), delta(4));
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let fmt_list = |v: &[f64], prec: usize| v.iter().map(|x| format!("{x:.prec$}")).collect::<Vec<_>>().join(",");

    let counts: Vec<u64> = st.counts.iter().map(|c| c.load(Ordering::Relaxed) as u64).collect();
    let delivered: u64 = counts.iter().sum();
    let (mut short, mut over, mut missing) = (0u64, 0u64, 0u64);
    for (got, want) in counts.iter().zip(&expect_conn) {
        if got < want {
            short += 1;
            missing += want - got;
        } else if got > want {
            over += 1; // cannot happen: frames of channels not joined count as misrouted
        }
    }
    let inst_per_event =
        picks.iter().enumerate().filter(|(s, _)| published[*s]).map(|(_, &p)| a.spread(p as usize) as f64).sum::<f64>()
            / (events_ok.max(1) as f64);
    let h = hist::snapshot();
    rtt.sort_unstable();
    let us = |v: u64| v as f64 / 1000.0;
    let pub_span = (last_ns.saturating_sub(first_ns)) as f64 / 1e9;
    let pub_rate = if pub_span > 0.0 { (k.saturating_sub(1)) as f64 / pub_span } else { 0.0 };
    let (dupes, misrouted, other, closed) = (
        st.dupes.load(Ordering::Relaxed),
        st.misrouted.load(Ordering::Relaxed),
        st.other.load(Ordering::Relaxed),
        st.closed.load(Ordering::Relaxed),
    );
    println!(
        "RESULT mode=channels conns={n} instances={} channels={} subs={} pick={} events={events_ok} errors={errors} \
expected={expected} delivered={delivered} missing={missing} conns_short={short} conns_over={over} dupes={dupes} \
misrouted={misrouted} other_frames={other} closed={closed} stuck={stuck} \
lat_p50_us={:.1} lat_p99_us={:.1} lat_p999_us={:.1} lat_max_us={:.1} \
rate={} pub_rate={pub_rate:.1} pub_p50_us={:.1} pub_p99_us={:.1} wall_s={wall:.3} drain_ms={:.1} \
inst_per_event={inst_per_event:.3} redis_msgs={} redis_msgs_per_event={:.3} redis_msgs_by_gw={} \
gw_deliveries={} history_gaps={} history_gap_events={} redis_lost={} \
gw_cpu_pct={} gw_cpu_sum_pct={:.1} redis_cpu_pct={redis_cpu:.1} client_cpu_pct={client_cpu:.1} other_cpu_pct={other_cpu:.1}",
        addrs.len(),
        cli.channels,
        a.chan_subs.iter().map(|&x| x as u64).sum::<u64>(),
        if cli.pick_zipf() { "zipf" } else { "uniform" },
        us(hist::quantile(&h, 0.5)),
        us(hist::quantile(&h, 0.99)),
        us(hist::quantile(&h, 0.999)),
        us(hist::quantile(&h, 1.0)),
        cli.rate,
        us(hist::pct_sorted(&rtt, 0.5)),
        us(hist::pct_sorted(&rtt, 0.99)),
        t_done.saturating_sub(last_ns) as f64 / 1e6,
        sum(&msgs),
        sum(&msgs) / events_ok.max(1) as f64,
        fmt_list(&msgs, 0),
        sum(&dels),
        sum(&gaps),
        sum(&gap_events),
        sum(&lost),
        fmt_list(&gw_cpu, 1),
        sum(&gw_cpu),
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    if stuck || missing > 0 {
        5
    } else if errors > 0 {
        6
    } else if dupes > 0 || misrouted > 0 {
        7
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_counts_sum_and_shape() {
        let c = zipf_counts(1000, 12_000, 0.8, 6000);
        assert_eq!(c.iter().map(|&x| x as usize).sum::<usize>(), 12_000);
        assert!(c.iter().all(|&x| x >= 1));
        assert!(c.windows(2).all(|w| w[0] + 1 >= w[1]), "roughly non-increasing");
        // C / k^0.8: rank 10 has about 10^-0.8 = 0.16 of rank 1's subscribers.
        let r = c[9] as f64 / c[0] as f64;
        assert!((0.13..0.19).contains(&r), "{r}");
    }

    #[test]
    fn assignment_is_consistent() {
        let a = assign(6000, 3, 1000, 2, 0.8, 0.9, 1).unwrap();
        let b = assign(6000, 3, 1000, 2, 0.8, 0.9, 1).unwrap();
        assert_eq!(a.subs, b.subs, "deterministic");
        let mut per_chan = vec![0u32; 1000];
        let mut mask = vec![0u32; 1000];
        for (i, s) in a.subs.iter().enumerate() {
            assert!(!s.is_empty() && s.len() <= 4, "conn {i} has {} channels", s.len());
            assert!(s.windows(2).all(|w| w[0] < w[1]), "distinct, sorted");
            for &c in s {
                per_chan[c as usize] += 1;
                mask[c as usize] |= 1 << (i % 3);
            }
        }
        assert_eq!(per_chan, a.chan_subs);
        assert_eq!(mask, a.chan_inst);
        assert!(a.chan_subs.iter().all(|&x| x >= 1));
        let h = a.spread_hist();
        assert_eq!(h.iter().sum::<usize>(), 1000);
        // Most channels on one or two instances, the popular ones on all three.
        assert!(h[0] + h[1] > 700, "{h:?}");
        assert!((0..10).all(|c| a.spread(c) == 3));
    }

    #[test]
    fn small_and_single_instance() {
        let a = assign(10, 1, 10, 1, 0.8, 0.9, 7).unwrap();
        assert!(a.subs.iter().all(|s| s.len() == 1));
        assert_eq!(a.spread_hist(), vec![10]);
        assert!(assign(5, 3, 10, 1, 0.8, 0.9, 7).is_err());
        // A channel can never be joined twice by one connection, even when it wants more
        // subscribers than an instance has connections.
        let a = assign(6, 3, 2, 5, 2.0, 1.0, 3).unwrap();
        for s in &a.subs {
            assert!(s.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn picks_cover_channels() {
        let a = assign(600, 3, 100, 2, 0.8, 0.9, 1).unwrap();
        let u = picks(&a, 10_000, false, 1);
        assert!(u.iter().all(|&p| p < 100));
        let top_u = u.iter().filter(|&&p| p == 0).count();
        let z = picks(&a, 10_000, true, 1);
        let top_z = z.iter().filter(|&&p| p == 0).count();
        assert!(top_z > 3 * top_u, "zipf favours popular channels: {top_z} vs {top_u}");
        assert_eq!(u, picks(&a, 10_000, false, 1));
    }

    #[test]
    fn channel_frames() {
        let f = format!(
            r#"{{"id":"1700000000000-5","type":"bench","channel":"c123","data":{},"ts":1}}"#,
            payload::data_json(5, 99, 200)
        );
        assert_eq!(parse_channel(f.as_bytes()), Some(123));
        assert_eq!(payload::parse_seq_t0(f.as_bytes()), Some((5, 99)));
        assert_eq!(parse_channel(br#"{"channel":"x1"}"#), None);
        assert_eq!(parse_channel(br#"{"channel":"c1x"}"#), None);
        let body: serde_json::Value = serde_json::from_str(&publish_body(3, 7, 11, 200)).unwrap();
        assert_eq!(body["channel"], "c7");
        assert_eq!(body["data"]["seq"], 3);
        assert_eq!(body["data"]["t0"], 11);
    }

    #[test]
    fn counters_from_metrics() {
        let body = "# TYPE x counter\nwsgate_redis_messages_received_total 42\nwsgate_deliveries_total 7\n# EOF\n";
        let c = parse_counters(body);
        assert_eq!((c[0], c[1], c[2]), (42.0, 7.0, 0.0));
    }
}
