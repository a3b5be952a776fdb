//! soak: churn and reconnect-storm benchmarks for wsgate (issue 7, item 4).
//!
//! soak : soak --mode soak  --addr 127.0.0.1:9520 --gateway-pids PID --conns 15000 --procs 2
//!             --churn 200 --rate 2 --duration-s 600 --warmup-s 60 --secret S
//! storm: soak --mode storm --addr A --pub-addr B --reconnect-addrs B,C --gateway-pids A,B,C
//!             --conns 10000 --procs 2 --rate 2 --secret S
//! resume: soak --mode resume --addr A --gateway-pids A --redis-pid R --conns 10000 --procs 2
//!             --backlog 1000 --conc 5000 --secret S
//!
//! The process started by the script is the *orchestrator*: it holds no client socket. It
//! starts `--procs` worker processes (copies of itself, `--mode worker`) that hold the
//! connections, publishes the broadcast stream (`POST /api/events`, `{"type":"soak","data":
//! {"seq":N}}`, N = 1, 2, … at `--rate` per second, on a thread and runtime of its own), reads
//! the gateways' /proc entries and /metrics, and drives the workers over their stdin:
//!
//! * soak: `GO` starts the churn (each second `--churn` clients in all, spread over the workers
//!   and over the second, close — alternately with a close handshake and by dropping the TCP
//!   connection — and reconnect at once with `since=<last id>`); `STOP` ends it and waits until
//!   every client is connected again; `END L` (L = last published seq) waits until every client
//!   has seen L, then the worker prints its `RESULT` line and exits.
//! * storm: every client connects to `--addr` (instance A); after `--settle-s` of broadcasts
//!   through `--pub-addr` (B) the orchestrator SIGKILLs `--kill-pid` (A) and tells the workers
//!   `KILLED <ns>`; each client, on losing its connection, reconnects with the JS client's
//!   backoff (full jitter: uniform in [0, min(max, initial·2^attempt)), attempt reset by a
//!   `connected` frame, 15 s connect timeout) to `--reconnect-addrs`, alternating between them
//!   (first choice by client index, then the other on each failed attempt), resuming with
//!   `since=`. Workers say `BACK` once all their clients are connected again.
//! * resume (issue 14, item 5): the orchestrator first publishes `--backlog` + 1 events
//!   (seq 1 … L) with no client connected, then starts the workers with `since=<id of seq 1>`;
//!   on `GO <ns>` every client connects at once (`--conc` handshakes in flight per worker) and
//!   must get `connected` with `"recovered": true` and then seqs 2 … L from the replay. Workers
//!   say `BACK` once every client has seen seq L; the figures are the time from GO until then
//!   (per client and for all), and the CPU seconds of the gateway and of redis-server meanwhile.
//!
//! Every client checks its own sequence across its reconnects: each seq must be the previous
//! one + 1 (a jump is a gap, a repeat or a lower seq a duplicate), every connection after the
//! first must answer `"recovered": true`, and at the end every client must have every seq
//! 1..=L (all clients connect before the first publish, so each must see all L events).
//!
//! CLOCK_MONOTONIC is system-wide: times taken in the workers and the orchestrator compare.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use wsgate_loadgen::sys::now_ns;
use wsgate_loadgen::{emit, find, hist, http, kv, now_unix, run_and_exit, sys, ws_config};

type Ws = WebSocketStream<TcpStream>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Soak,
    Storm,
    /// Every client resumes at once with a `since` `--backlog` events old (one gateway).
    Resume,
    #[value(hide = true)]
    Worker,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "soak", about = "Churn (soak) and reconnect-storm benchmarks for wsgate")]
struct Cli {
    #[arg(long, value_enum, default_value = "soak")]
    mode: Mode,
    /// Where the clients connect first (soak: the gateway; storm: instance A).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Where the broadcasts are published; default --addr (storm: instance B).
    #[arg(long)]
    pub_addr: Option<SocketAddr>,
    /// Storm: where clients reconnect after losing A (comma-separated; alternated).
    #[arg(long, value_delimiter = ',')]
    reconnect_addrs: Vec<SocketAddr>,
    /// Gateway PIDs to watch (soak: the gateway; storm: A,B,C), for RSS, fds, threads, CPU.
    #[arg(long, value_delimiter = ',')]
    gateway_pids: Vec<u32>,
    /// Storm: the PID to SIGKILL (instance A).
    #[arg(long, default_value_t = 0)]
    kill_pid: u32,
    /// Resume: redis-server's PID, for its CPU seconds during the resume.
    #[arg(long, default_value_t = 0)]
    redis_pid: u32,
    /// Resume: events published before the clients connect, after the one they resume from.
    #[arg(long, default_value_t = 1000)]
    backlog: u64,
    /// Client connections over all worker processes.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Worker processes holding the connections (at least 2 here: 20,000 open files each).
    #[arg(long, default_value_t = 2)]
    procs: usize,
    #[arg(long, default_value = "loadgen-secret-0123456789abcdef-0123")]
    secret: String,
    /// First source address 127.0.0.<src-base>; each worker gets --src-ips of its own.
    #[arg(long, default_value_t = 2)]
    src_base: u32,
    #[arg(long, default_value_t = 8)]
    src_ips: u32,
    /// Handshakes in flight per worker during the initial connect.
    #[arg(long, default_value_t = 256)]
    conc: usize,
    /// Runtime threads per worker process.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Soak: clients per second (over all workers) that disconnect and reconnect.
    #[arg(long, default_value_t = 200.0)]
    churn: f64,
    /// Soak: a churned client stays away for a random time in [0, this) before it reconnects,
    /// so that events published meanwhile must come back through the resume replay.
    #[arg(long, default_value_t = 2000)]
    offline_ms: u64,
    /// Soak: run length from the start of churn and broadcasts, warm-up included.
    #[arg(long, default_value_t = 600)]
    duration_s: u64,
    /// Soak: the "after warm-up" sample is taken this long after the start.
    #[arg(long, default_value_t = 60)]
    warmup_s: u64,
    /// Soak: a SAMPLE line every this many seconds.
    #[arg(long, default_value_t = 30)]
    sample_s: u64,
    /// Storm: seconds of broadcasts before the kill.
    #[arg(long, default_value_t = 5)]
    settle_s: u64,
    /// Storm: seconds of broadcasts after every client is back, before the end.
    #[arg(long, default_value_t = 5)]
    after_s: u64,
    /// Storm: bound on the wait for every client to be back.
    #[arg(long, default_value_t = 300)]
    recover_timeout_s: u64,
    /// JS client's backoff.initialMs / backoff.maxMs / connectTimeoutMs.
    #[arg(long, default_value_t = 500)]
    backoff_initial_ms: u64,
    #[arg(long, default_value_t = 30_000)]
    backoff_max_ms: u64,
    #[arg(long, default_value_t = 15_000)]
    connect_timeout_ms: u64,
    /// Bound on every other wait (initial connect progress, STOP, END), seconds.
    #[arg(long, default_value_t = 90)]
    timeout: u64,
    /// Internal (worker).
    #[arg(long, default_value_t = 0, hide = true)]
    conn_offset: usize,
    #[arg(long, default_value_t = 0, hide = true)]
    worker_id: usize,
    #[arg(long, default_value_t = false, hide = true)]
    storm: bool,
    /// Internal (worker, resume): the id every client resumes from, the first seq it must
    /// get, and the seq that completes its replay.
    #[arg(long, hide = true)]
    since: Option<String>,
    #[arg(long, default_value_t = 1, hide = true)]
    first_seq: u64,
    #[arg(long, default_value_t = 0, hide = true)]
    upto: u64,
}

fn main() {
    let cli = Cli::parse();
    sys::raise_nofile();
    if cli.mode == Mode::Worker {
        sys::die_with_parent();
    }
    let threads = if cli.mode == Mode::Worker { cli.threads.max(1) } else { 2 };
    run_and_exit("soak", threads, async move {
        match cli.mode {
            Mode::Worker => worker(cli).await,
            Mode::Soak | Mode::Storm | Mode::Resume => orchestrate(cli).await,
        }
    })
}

fn token(key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::default(), &claims, key).unwrap_or_default()
}

/// Small xorshift generator: the backoff jitter and the churn picks need no more.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The JS client's `backoffDelay(attempt)`: floor(random() * min(maxMs, initialMs * 2^attempt)).
fn backoff_ms(attempt: u32, initial: u64, max: u64, rng: &mut Rng) -> u64 {
    let cap = (initial as f64 * 2f64.powi(attempt.min(1023) as i32)).min(max as f64);
    (rng.unit() * cap).floor() as u64
}

// ---------------------------------------------------------------------------------------------
// Worker: the clients
// ---------------------------------------------------------------------------------------------

/// One client's state visible to the worker's control tasks.
#[derive(Default)]
struct Slot {
    kick: Notify,
    kick_abrupt: AtomicBool,
    connected: AtomicBool,
    /// Highest seq seen (0: none yet).
    last_seq: AtomicU64,
    /// Distinct seqs seen, in order (a gap's missing seqs are not counted).
    unique: AtomicU64,
    first_seq: AtomicU64,
    /// Storm: when the connection to A was lost / when the client got `connected` again.
    lost_ns: AtomicU64,
    back_ns: AtomicU64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    ready_ok: AtomicUsize,
    ready_failed_attempts: AtomicUsize,
    kicks_graceful: AtomicU64,
    kicks_abrupt: AtomicU64,
    resumes: AtomicU64,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    events: AtomicU64,
    events_unpositioned: AtomicU64,
    gaps: AtomicU64,
    gap_missing: AtomicU64,
    dupes: AtomicU64,
    first_not_1: AtomicU64,
    other_frames: AtomicU64,
    err_refused: AtomicU64,
    err_timeout: AtomicU64,
    err_other: AtomicU64,
    lost_unexpected: AtomicU64,
    http_codes: Mutex<BTreeMap<u16, u64>>,
    close_codes: Mutex<BTreeMap<u16, u64>>,
    first_errors: Mutex<Vec<String>>,
}

impl Counters {
    fn note_error(&self, e: String) {
        let mut v = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 5 {
            v.push(e);
        }
    }
}

struct W {
    cli: Cli,
    slots: Vec<Slot>,
    c: Counters,
    key: EncodingKey,
    sem: Semaphore,
    progress: Notify,
    churn_on: AtomicBool,
    killed_ns: AtomicU64,
}

enum ConnErr {
    Refused,
    Http(u16),
    Timeout,
    Other(String),
}

struct Hello {
    recovered: Option<bool>,
    last_id: Option<String>,
}

async fn open(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    token: &str,
    since: Option<&str>,
) -> Result<(Ws, Hello), ConnErr> {
    let sock = TcpSocket::new_v4().map_err(|e| ConnErr::Other(format!("socket: {e}")))?;
    if let Some(ip) = src {
        sys::bind_source(&sock, ip).map_err(|e| ConnErr::Other(format!("bind {ip}: {e}")))?;
    }
    let stream = sock.connect(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ConnErr::Refused
        } else {
            ConnErr::Other(format!("connect: {e}"))
        }
    })?;
    let _ = stream.set_nodelay(true);
    let mut url = format!("ws://{addr}/ws/tasks?token={token}");
    if let Some(s) = since {
        let _ = write!(url, "&since={s}");
    }
    let (mut ws, _) = client_async_with_config(url, stream, Some(ws_config())).await.map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => ConnErr::Http(r.status().as_u16()),
        e => ConnErr::Other(format!("handshake: {e}")),
    })?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["type"] != "connected" {
                    return Err(ConnErr::Other(format!("first frame is not `connected`: {}", t.as_str())));
                }
                let hello =
                    Hello { recovered: v["recovered"].as_bool(), last_id: v["last_id"].as_str().map(str::to_string) };
                return Ok((ws, hello));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Err(ConnErr::Other(format!("first frame is not `connected`: {m:?}"))),
            Some(Err(e)) => return Err(ConnErr::Other(format!("before `connected`: {e}"))),
            None => return Err(ConnErr::Other("closed before `connected`".into())),
        }
    }
}

fn number(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b.iter().skip_while(|c| **c == b' ') {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// A stream position `<digits>-<digits>` (the form `since=` takes).
fn is_position(id: &[u8]) -> bool {
    match id.iter().position(|&c| c == b'-') {
        Some(i) => i > 0 && i + 1 < id.len() && id.iter().enumerate().all(|(j, c)| j == i || c.is_ascii_digit()),
        None => false,
    }
}

/// Per-connection view of the client's sequence.
struct Seq<'a> {
    slot: &'a Slot,
    c: &'a Counters,
    last_id: &'a mut Option<String>,
    last_seq: u64,
    /// The first seq this client must get (1, or the first one a resume replays).
    first: u64,
    /// Resume: the seq that completes the replay (its arrival time is `back_ns`); 0 = none.
    upto: u64,
}

impl Seq<'_> {
    fn on_text(&mut self, b: &[u8]) {
        let Some(rest) = b.strip_prefix(b"{\"id\":\"") else {
            self.c.other_frames.fetch_add(1, Relaxed);
            return;
        };
        let Some(end) = rest.iter().position(|&c| c == b'"') else {
            self.c.other_frames.fetch_add(1, Relaxed);
            return;
        };
        let id = &rest[..end];
        if is_position(id) {
            let s = self.last_id.get_or_insert_with(String::new);
            s.clear();
            s.push_str(std::str::from_utf8(id).unwrap_or_default());
        } else {
            self.c.events_unpositioned.fetch_add(1, Relaxed);
        }
        let Some(seq) = find(b, b"\"seq\":").and_then(|i| number(&b[i + 6..])) else {
            self.c.other_frames.fetch_add(1, Relaxed);
            return;
        };
        self.c.events.fetch_add(1, Relaxed);
        let last = self.last_seq;
        if last == 0 {
            self.slot.first_seq.store(seq, Relaxed);
            if seq != self.first {
                self.c.first_not_1.fetch_add(1, Relaxed);
            }
        } else if seq <= last {
            self.c.dupes.fetch_add(1, Relaxed);
            return;
        } else if seq > last + 1 {
            self.c.gaps.fetch_add(1, Relaxed);
            self.c.gap_missing.fetch_add(seq - last - 1, Relaxed);
        }
        self.last_seq = seq;
        self.slot.last_seq.store(seq, Relaxed);
        self.slot.unique.fetch_add(1, Relaxed);
        if self.upto > 0 && seq >= self.upto && self.slot.back_ns.load(Relaxed) == 0 {
            self.slot.back_ns.store(now_ns(), Relaxed);
        }
    }
}

enum End {
    Kicked,
    Lost,
}

async fn serve(mut ws: Ws, seq: &mut Seq<'_>) -> End {
    let (slot, c) = (seq.slot, seq.c);
    loop {
        tokio::select! {
            biased;
            _ = slot.kick.notified() => {
                if slot.kick_abrupt.load(Relaxed) {
                    c.kicks_abrupt.fetch_add(1, Relaxed);
                    drop(ws); // FIN without a close frame
                    return End::Kicked;
                }
                c.kicks_graceful.fetch_add(1, Relaxed);
                let _ = timeout(Duration::from_secs(5), async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(m)) = ws.next().await {
                        if let Message::Text(t) = m {
                            seq.on_text(t.as_bytes());
                        }
                    }
                })
                .await;
                return End::Kicked;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => seq.on_text(t.as_bytes()),
                Some(Ok(Message::Close(f))) => {
                    let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                    *c.close_codes.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
                    c.lost_unexpected.fetch_add(1, Relaxed);
                    return End::Lost;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    *c.close_codes.lock().unwrap_or_else(|p| p.into_inner()).entry(1006).or_default() += 1;
                    c.lost_unexpected.fetch_add(1, Relaxed);
                    return End::Lost;
                }
            }
        }
    }
}

async fn client(w: Arc<W>, i: usize) {
    let cli = &w.cli;
    let slot = &w.slots[i];
    let gidx = cli.conn_offset + i;
    let tok = token(&w.key, serde_json::json!({ "sub": format!("u{gidx}"), "exp": now_unix() + 86_400 }));
    let src = (cli.src_ips > 0).then(|| Ipv4Addr::new(127, 0, 0, (cli.src_base + i as u32 % cli.src_ips) as u8));
    let mut rng = Rng::new(now_ns() ^ (gidx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut last_id: Option<String> = cli.since.clone();
    let mut last_seq = 0u64;
    let mut attempt = 0u32; // backoff exponent, reset by `connected` (as in the JS client)
    let mut since_loss = 0usize; // attempts since the connection was lost (target alternation)
    let mut lost = false; // storm: the connection to A is gone
    let mut first = true;
    let connect_tmo = Duration::from_millis(cli.connect_timeout_ms.max(1));
    loop {
        let addr = if lost && !cli.reconnect_addrs.is_empty() {
            cli.reconnect_addrs[(gidx + since_loss) % cli.reconnect_addrs.len()]
        } else {
            cli.addr
        };
        let permit = if first { w.sem.acquire().await.ok() } else { None };
        let r = match timeout(connect_tmo, open(addr, src, &tok, last_id.as_deref())).await {
            Ok(r) => r,
            Err(_) => Err(ConnErr::Timeout),
        };
        drop(permit);
        match r {
            Ok((ws, hello)) => {
                if first {
                    first = false;
                    w.c.ready_ok.fetch_add(1, Relaxed);
                    w.progress.notify_one();
                }
                attempt = 0;
                since_loss = 0;
                w.c.connects.fetch_add(1, Relaxed);
                if last_id.is_some() {
                    w.c.resumes.fetch_add(1, Relaxed);
                    if hello.recovered == Some(true) {
                        w.c.recovered.fetch_add(1, Relaxed);
                    } else {
                        w.c.not_recovered.fetch_add(1, Relaxed);
                    }
                }
                // As the JS client: unless the resume was recovered, continue from `last_id`.
                if hello.recovered != Some(true) {
                    if let Some(id) = hello.last_id {
                        last_id = Some(id);
                    }
                }
                if lost && slot.back_ns.load(Relaxed) == 0 {
                    slot.back_ns.store(now_ns(), Relaxed);
                }
                slot.connected.store(true, Relaxed);
                let mut seq =
                    Seq { slot, c: &w.c, last_id: &mut last_id, last_seq, first: cli.first_seq, upto: cli.upto };
                let end = serve(ws, &mut seq).await;
                last_seq = seq.last_seq;
                slot.connected.store(false, Relaxed);
                match end {
                    End::Kicked => {
                        let away = (rng.unit() * cli.offline_ms as f64) as u64;
                        sleep(Duration::from_millis(away)).await;
                        continue;
                    }
                    End::Lost => {
                        if cli.storm && !lost {
                            lost = true;
                            slot.lost_ns.store(now_ns(), Relaxed);
                        }
                    }
                }
            }
            Err(e) => {
                if first {
                    w.c.ready_failed_attempts.fetch_add(1, Relaxed);
                }
                since_loss += 1;
                match e {
                    ConnErr::Refused => {
                        w.c.err_refused.fetch_add(1, Relaxed);
                    }
                    ConnErr::Http(s) => {
                        *w.c.http_codes.lock().unwrap_or_else(|p| p.into_inner()).entry(s).or_default() += 1;
                    }
                    ConnErr::Timeout => {
                        w.c.err_timeout.fetch_add(1, Relaxed);
                    }
                    ConnErr::Other(m) => {
                        w.c.err_other.fetch_add(1, Relaxed);
                        w.c.note_error(format!("{addr}: {m}"));
                    }
                }
            }
        }
        let d = backoff_ms(attempt, cli.backoff_initial_ms, cli.backoff_max_ms, &mut rng);
        attempt += 1;
        sleep(Duration::from_millis(d)).await;
    }
}

fn connected_count(w: &W) -> usize {
    w.slots.iter().filter(|s| s.connected.load(Relaxed)).count()
}

async fn churn(w: Arc<W>, per_sec: f64) {
    let mut rng = Rng::new(now_ns() ^ ((w.cli.worker_id as u64 + 1) * 0x2545_F491_4F6C_DD1D));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut quota, mut abrupt) = (0.0f64, false);
    let n = w.slots.len();
    while w.churn_on.load(Relaxed) {
        tick.tick().await;
        quota += per_sec / 10.0;
        while quota >= 1.0 && n > 0 {
            quota -= 1.0;
            for _ in 0..32 {
                let s = &w.slots[(rng.next() % n as u64) as usize];
                if s.connected.load(Relaxed) {
                    s.kick_abrupt.store(abrupt, Relaxed);
                    abrupt = !abrupt;
                    s.connected.store(false, Relaxed); // not picked twice before it reconnects
                    s.kick.notify_one();
                    break;
                }
            }
        }
    }
}

fn map_str(m: &Mutex<BTreeMap<u16, u64>>) -> String {
    let m = m.lock().unwrap_or_else(|p| p.into_inner());
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",")
}

async fn worker(cli: Cli) -> i32 {
    let n = cli.conns;
    let w = Arc::new(W {
        key: EncodingKey::from_secret(cli.secret.as_bytes()),
        sem: Semaphore::new(cli.conc.max(1)),
        slots: (0..n).map(|_| Slot::default()).collect(),
        c: Counters::default(),
        progress: Notify::new(),
        churn_on: AtomicBool::new(false),
        killed_ns: AtomicU64::new(0),
        cli,
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    if w.cli.since.is_some() {
        // Resume: every client starts on GO, so that they all arrive at once.
        emit("WAITING\n");
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l.starts_with("GO") => {
                    let ns = l.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(now_ns);
                    w.killed_ns.store(ns, Relaxed);
                    break;
                }
                Ok(Some(_)) => {}
                _ => return 1,
            }
        }
        watch_back(w.clone());
    }
    let t = Instant::now();
    for i in 0..n {
        tokio::spawn(client(w.clone(), i));
    }
    // READY once every client has connected, or nothing progressed for --timeout.
    let tmo = Duration::from_secs(w.cli.timeout);
    let mut last = (0usize, Instant::now());
    loop {
        let ok = w.c.ready_ok.load(Relaxed);
        if ok >= n {
            break;
        }
        if ok != last.0 {
            last = (ok, Instant::now());
        } else if last.1.elapsed() > tmo {
            break;
        }
        let _ = timeout(Duration::from_millis(200), w.progress.notified()).await;
    }
    emit(&format!(
        "READY conns={} failed_attempts={} connect_secs={:.2} client_rss_kib={}\n",
        w.c.ready_ok.load(Relaxed),
        w.c.ready_failed_attempts.load(Relaxed),
        t.elapsed().as_secs_f64(),
        sys::rss_kib(0)
    ));

    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            _ => return 1, // the orchestrator is gone
        };
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("GO") => {
                let per_sec: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
                if per_sec > 0.0 {
                    w.churn_on.store(true, Relaxed);
                    tokio::spawn(churn(w.clone(), per_sec));
                }
            }
            Some("STOP") => {
                w.churn_on.store(false, Relaxed);
                let t = Instant::now();
                sleep(Duration::from_millis(300)).await;
                while connected_count(&w) < n && t.elapsed() < tmo {
                    sleep(Duration::from_millis(100)).await;
                }
                emit(&format!("STOPPED connected={} secs={:.2}\n", connected_count(&w), t.elapsed().as_secs_f64()));
            }
            Some("KILLED") => {
                let k: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                w.killed_ns.store(k, Relaxed);
                watch_back(w.clone());
            }
            Some("END") => {
                let l: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                w.churn_on.store(false, Relaxed);
                let t = Instant::now();
                let grace = Duration::from_secs(30);
                while t.elapsed() < grace
                    && w.slots.iter().any(|s| s.connected.load(Relaxed) && s.last_seq.load(Relaxed) < l)
                {
                    sleep(Duration::from_millis(100)).await;
                }
                emit(&result_line(&w, l));
                return 0;
            }
            _ => {}
        }
    }
}

/// Says `BACK` once every client is back (storm: connected again; resume: replay complete),
/// or after --recover-timeout-s; `PROG` lines every second meanwhile.
fn watch_back(w: Arc<W>) {
    let n = w.slots.len();
    let limit = Duration::from_secs(w.cli.recover_timeout_s);
    tokio::spawn(async move {
        let t = Instant::now();
        let mut next_prog = Duration::from_secs(1);
        loop {
            let back = w.slots.iter().filter(|s| s.back_ns.load(Relaxed) != 0).count();
            if back >= n || t.elapsed() > limit {
                let max = w.slots.iter().map(|s| s.back_ns.load(Relaxed)).max().unwrap_or(0);
                emit(&format!("BACK back={back} of={n} max_back_ns={max}\n"));
                return;
            }
            if t.elapsed() >= next_prog {
                next_prog += Duration::from_secs(1);
                let lostn = w.slots.iter().filter(|s| s.lost_ns.load(Relaxed) != 0).count();
                emit(&format!("PROG t={:.1} lost={lostn} back={back}\n", t.elapsed().as_secs_f64()));
            }
            sleep(Duration::from_millis(20)).await;
        }
    });
}

fn result_line(w: &W, l: u64) -> String {
    let c = &w.c;
    let n = w.slots.len() as u64;
    let (mut unique, mut behind, mut not_connected) = (0u64, 0u64, 0u64);
    for s in &w.slots {
        unique += s.unique.load(Relaxed).min(l);
        if s.last_seq.load(Relaxed) < l {
            behind += 1;
        }
        if !s.connected.load(Relaxed) {
            not_connected += 1;
        }
    }
    // Seqs first_seq ..= l (a resume's clients never see the events up to `since`).
    let expected = n * (l + 1).saturating_sub(w.cli.first_seq);
    let mut line = format!(
        "RESULT proc={} clients={n} connected={} not_connected={not_connected} connects={} kicks_graceful={} \
         kicks_abrupt={} resumes={} recovered={} not_recovered={} published={l} expected={expected} \
         received={unique} missing={} events={} gaps={} gap_missing={} dupes={} first_not_1={} behind_at_end={behind} \
         lost_unexpected={} close_codes={} err_refused={} err_http={} err_timeout={} err_other={} \
         events_unpositioned={} other_frames={} client_rss_kib={} client_cpu_s={:.1}",
        w.cli.worker_id,
        n - not_connected,
        c.connects.load(Relaxed),
        c.kicks_graceful.load(Relaxed),
        c.kicks_abrupt.load(Relaxed),
        c.resumes.load(Relaxed),
        c.recovered.load(Relaxed),
        c.not_recovered.load(Relaxed),
        expected - unique,
        c.events.load(Relaxed),
        c.gaps.load(Relaxed),
        c.gap_missing.load(Relaxed),
        c.dupes.load(Relaxed),
        c.first_not_1.load(Relaxed),
        c.lost_unexpected.load(Relaxed),
        map_str(&c.close_codes),
        c.err_refused.load(Relaxed),
        map_str(&c.http_codes),
        c.err_timeout.load(Relaxed),
        c.err_other.load(Relaxed),
        c.events_unpositioned.load(Relaxed),
        c.other_frames.load(Relaxed),
        sys::rss_kib(0),
        sys::cpu_secs(0),
    );
    let killed = w.killed_ns.load(Relaxed);
    if killed > 0 {
        let mut times: Vec<u64> = w
            .slots
            .iter()
            .filter_map(|s| {
                let b = s.back_ns.load(Relaxed);
                (b != 0).then(|| b.saturating_sub(killed) / 1_000_000)
            })
            .collect();
        let lostn = w.slots.iter().filter(|s| s.lost_ns.load(Relaxed) != 0).count();
        times.sort_unstable();
        let _ = write!(
            line,
            " lost={lostn} back={} recon_p50_ms={} recon_p99_ms={} recon_max_ms={}",
            times.len(),
            hist::pct_sorted(&times, 0.5),
            hist::pct_sorted(&times, 0.99),
            times.last().copied().unwrap_or(0)
        );
        line.push_str("\nTIMES");
        for t in &times {
            let _ = write!(line, " {t}");
        }
    }
    let errs = c.first_errors.lock().unwrap_or_else(|p| p.into_inner());
    for e in errs.iter() {
        let _ = write!(line, "\nERRSAMPLE {e}");
    }
    line.push_str("\nDONE\n");
    line
}

// ---------------------------------------------------------------------------------------------
// Orchestrator
// ---------------------------------------------------------------------------------------------

struct Proc {
    child: Child,
    stdin: ChildStdin,
}

/// Lines from all workers: (worker id, line).
type Lines = mpsc::UnboundedReceiver<(usize, String)>;

fn spawn_workers(cli: &Cli, storm: bool, resume_from: Option<&str>) -> Result<(Vec<Proc>, Lines), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let procs = cli.procs.max(1);
    let mut out = Vec::new();
    let mut offset = 0;
    for id in 0..procs {
        let n = cli.conns / procs + usize::from(id < cli.conns % procs);
        let mut args: Vec<String> = vec![
            "--mode".into(),
            "worker".into(),
            "--addr".into(),
            cli.addr.to_string(),
            "--conns".into(),
            n.to_string(),
            "--conn-offset".into(),
            offset.to_string(),
            "--worker-id".into(),
            id.to_string(),
            "--secret".into(),
            cli.secret.clone(),
            "--src-base".into(),
            (cli.src_base + id as u32 * cli.src_ips).to_string(),
            "--src-ips".into(),
            cli.src_ips.to_string(),
            "--conc".into(),
            cli.conc.to_string(),
            "--threads".into(),
            cli.threads.to_string(),
            "--timeout".into(),
            cli.timeout.to_string(),
            "--recover-timeout-s".into(),
            cli.recover_timeout_s.to_string(),
            "--backoff-initial-ms".into(),
            cli.backoff_initial_ms.to_string(),
            "--backoff-max-ms".into(),
            cli.backoff_max_ms.to_string(),
            "--connect-timeout-ms".into(),
            cli.connect_timeout_ms.to_string(),
            "--offline-ms".into(),
            cli.offline_ms.to_string(),
        ];
        if let Some(since) = resume_from {
            args.extend(["--since".into(), since.to_string(), "--first-seq".into(), "2".into()]);
            args.extend(["--upto".into(), (cli.backlog + 1).to_string()]);
        }
        if storm {
            args.push("--storm".into());
            args.push("--reconnect-addrs".into());
            args.push(cli.reconnect_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","));
        }
        offset += n;
        let mut child = Command::new(&exe)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send((id, l)).is_err() {
                    break;
                }
            }
        });
        out.push(Proc { child, stdin });
    }
    Ok((out, rx))
}

async fn send_all(procs: &mut [Proc], line: &str) {
    for p in procs.iter_mut() {
        let _ = p.stdin.write_all(format!("{line}\n").as_bytes()).await;
        let _ = p.stdin.flush().await;
    }
}

/// Waits until every worker has sent a line starting with `prefix`; returns them by worker.
/// Other lines are kept in `extra` (RESULT/TIMES/ERRSAMPLE lines come before DONE).
async fn wait_all(
    rx: &mut Lines,
    procs: usize,
    prefix: &str,
    tmo: Duration,
    extra: &mut Vec<(usize, String)>,
) -> Vec<Option<String>> {
    let mut got: Vec<Option<String>> = vec![None; procs];
    // A line may have come in while an earlier wait ran (resume: BACK before READY).
    extra.retain(|(id, l)| {
        if l.starts_with(prefix) && *id < procs && got[*id].is_none() {
            got[*id] = Some(l.clone());
            return false;
        }
        true
    });
    let deadline = Instant::now() + tmo;
    while got.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Some((id, l))) => {
                if l.starts_with(prefix) {
                    got[id] = Some(l);
                } else if l.starts_with("PROG") {
                    eprintln!("worker {id}: {l}");
                } else {
                    extra.push((id, l));
                }
            }
            _ => break,
        }
    }
    got
}

fn kvu(line: &str, k: &str) -> u64 {
    kv(line).get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Default)]
struct GwSample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    cpu_s: f64,
}

fn gw_sample(pid: u32) -> GwSample {
    let count = |d: &str| std::fs::read_dir(format!("/proc/{pid}/{d}")).map(|r| r.count() as u64).unwrap_or(0);
    GwSample { rss_kib: sys::rss_kib(pid), fds: count("fd"), threads: count("task"), cpu_s: sys::cpu_secs(pid) }
}

/// The kernel's TcpExtListenOverflows (system-wide): connection attempts dropped because a
/// listen socket's accept queue was full; each costs that client a SYN retransmission (1 s).
fn listen_overflows() -> u64 {
    let t = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = t.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(k), Some(v)) = (rows.next(), rows.next()) else { return 0 };
    k.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `/metrics` as (name with labels → value), `wsgate_` lines only.
async fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut http = http::Http::new(addr);
    let mut m = BTreeMap::new();
    if let Ok(Ok(r)) = timeout(Duration::from_secs(5), http.request("GET", "/metrics", "", b"")).await {
        for l in String::from_utf8_lossy(&r.body).lines() {
            if l.starts_with("wsgate_") {
                if let Some((k, v)) = l.rsplit_once(' ') {
                    if let Ok(v) = v.parse() {
                        m.insert(k.to_string(), v);
                    }
                }
            }
        }
    }
    m
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(-1.0)
}

/// `wsgate_disconnects_total{reason="x"} 3` … as `x:3,…`; likewise any labelled family.
fn family(m: &BTreeMap<String, f64>, name: &str) -> String {
    let prefix = format!("{name}{{");
    let v: Vec<String> = m
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| {
            let label = k[prefix.len()..].trim_end_matches('}');
            let label = label.split_once('=').map(|(_, v)| v.trim_matches('"')).unwrap_or(label);
            format!("{label}:{v}")
        })
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

/// The broadcast stream on a thread and runtime of its own.
struct Publisher {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<(u64, u64, u64)>,
}

fn start_publisher(addr: SocketAddr, rate: f64, key: &EncodingKey) -> Publisher {
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let tok = token(key, serde_json::json!({ "sub": "soak", "scope": "publish", "exp": now_unix() + 86_400 }));
    let (stop2, last2) = (stop.clone(), last.clone());
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("publisher runtime");
        rt.block_on(async move {
            let headers = format!("Authorization: Bearer {tok}\r\nContent-Type: application/json\r\n");
            let mut http = http::Http::new(addr);
            let (mut errors, mut uncertain, mut seq) = (0u64, 0u64, 1u64);
            let start = Instant::now();
            let mut k = 0u64;
            let mut last_use = Instant::now();
            while !stop2.load(Relaxed) {
                tokio::time::sleep_until((start + Duration::from_secs_f64(k as f64 / rate.max(0.001))).into()).await;
                k += 1;
                // The gateway closes a keep-alive connection idle for 10 s (hyper's header read
                // timeout): never send on one idle for 5 s, or the request may meet the close.
                if last_use.elapsed() > Duration::from_secs(5) {
                    http = http::Http::new(addr);
                }
                last_use = Instant::now();
                let body = format!(r#"{{"type":"soak","data":{{"seq":{seq}}}}}"#);
                match timeout(Duration::from_secs(10), http.request("POST", "/api/events", &headers, body.as_bytes()))
                    .await
                {
                    Ok(Ok(r)) if r.status == 202 => {
                        last2.store(seq, Relaxed);
                        seq += 1;
                    }
                    Ok(Ok(r)) => {
                        // Refused: not accepted, publish the same seq again next tick.
                        errors += 1;
                        if errors <= 5 {
                            eprintln!("publish seq={seq}: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
                        }
                    }
                    Ok(Err(e)) => {
                        // May or may not have been accepted: go on (a gap or a dupe may follow).
                        uncertain += 1;
                        eprintln!("publish seq={seq}: I/O error {e}");
                        last2.store(seq, Relaxed);
                        seq += 1;
                    }
                    Err(_) => {
                        uncertain += 1;
                        eprintln!("publish seq={seq}: no answer within 10 s");
                        last2.store(seq, Relaxed);
                        seq += 1;
                    }
                }
            }
            (seq - 1, errors, uncertain)
        })
    });
    Publisher { stop, last, handle }
}

async fn stop_publisher(p: Publisher) -> (u64, u64, u64) {
    p.stop.store(true, Relaxed);
    tokio::task::spawn_blocking(move || p.handle.join().unwrap_or((0, 0, 0))).await.unwrap_or((0, 0, 0))
}

async fn wait_procs(procs: Vec<Proc>) {
    for mut p in procs {
        drop(p.stdin);
        if timeout(Duration::from_secs(10), p.child.wait()).await.is_err() {
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
        }
    }
}

fn print_results(extra: &[(usize, String)]) -> Vec<String> {
    let mut results = Vec::new();
    for (id, l) in extra {
        if l.starts_with("RESULT") {
            println!("{l}");
            results.push(l.clone());
        } else if l.starts_with("ERRSAMPLE") {
            eprintln!("worker {id}: {l}");
        }
    }
    results
}

fn sum(results: &[String], k: &str) -> u64 {
    results.iter().map(|l| kvu(l, k)).sum()
}

fn merge_codes(results: &[String], k: &str) -> String {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for l in results {
        if let Some(v) = kv(l).get(k) {
            for p in v.split(',').filter(|p| *p != "-") {
                if let Some((c, n)) = p.split_once(':') {
                    *m.entry(c.to_string()).or_default() += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    if m.is_empty() {
        "-".into()
    } else {
        m.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",")
    }
}

const CLIENT_KEYS: &[&str] = &[
    "clients",
    "connected",
    "connects",
    "kicks_graceful",
    "kicks_abrupt",
    "resumes",
    "recovered",
    "not_recovered",
    "expected",
    "received",
    "missing",
    "gaps",
    "gap_missing",
    "dupes",
    "first_not_1",
    "behind_at_end",
    "lost_unexpected",
    "err_refused",
    "err_timeout",
    "err_other",
    "events_unpositioned",
];

fn client_totals(results: &[String]) -> String {
    let mut s = String::new();
    for k in CLIENT_KEYS {
        let _ = write!(s, " {k}={}", sum(results, k));
    }
    let _ =
        write!(s, " err_http={} close_codes={}", merge_codes(results, "err_http"), merge_codes(results, "close_codes"));
    s
}

async fn orchestrate(cli: Cli) -> i32 {
    let storm = cli.mode == Mode::Storm;
    if cli.procs < 1 || cli.conns / cli.procs.max(1) > 19_000 {
        eprintln!("soak: at most 19,000 connections per process: raise --procs");
        return 2;
    }
    if storm && (cli.reconnect_addrs.is_empty() || cli.kill_pid == 0 || cli.gateway_pids.len() < 3) {
        eprintln!("soak: storm needs --reconnect-addrs, --kill-pid and --gateway-pids A,B,C");
        return 2;
    }
    let key = EncodingKey::from_secret(cli.secret.as_bytes());
    let base = cli.gateway_pids.first().map(|p| gw_sample(*p)).unwrap_or_default();
    if cli.mode == Mode::Resume {
        return run_resume(&cli, &key).await;
    }
    let (mut procs, mut rx) = match spawn_workers(&cli, storm, None) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("soak: {e}");
            return 1;
        }
    };
    let worker_pids: Vec<u32> = procs.iter().filter_map(|p| p.child.id()).collect();
    let mut extra = Vec::new();
    let t_connect = Instant::now();
    let ready = wait_all(&mut rx, procs.len(), "READY", Duration::from_secs(cli.timeout + 600), &mut extra).await;
    let ready_conns: u64 = ready.iter().flatten().map(|l| kvu(l, "conns")).sum();
    println!(
        "CONNECTED conns={ready_conns} of={} secs={:.1} workers={}",
        cli.conns,
        t_connect.elapsed().as_secs_f64(),
        ready.iter().flatten().map(|l| l.trim_start_matches("READY ").to_string()).collect::<Vec<_>>().join(" | ")
    );
    if ready.iter().any(Option::is_none) || ready_conns < cli.conns as u64 {
        eprintln!("soak: not every client connected ({ready_conns} of {})", cli.conns);
        wait_procs(procs).await;
        return 2;
    }
    let code = if storm {
        run_storm(&cli, &key, &mut procs, &mut rx, &mut extra).await
    } else {
        run_soak(&cli, &key, base, &mut procs, &mut rx, &mut extra, &worker_pids).await
    };
    wait_procs(procs).await;
    code
}

#[allow(clippy::too_many_arguments)]
async fn run_soak(
    cli: &Cli,
    key: &EncodingKey,
    base: GwSample,
    procs: &mut [Proc],
    rx: &mut Lines,
    extra: &mut Vec<(usize, String)>,
    worker_pids: &[u32],
) -> i32 {
    let pid = cli.gateway_pids.first().copied().unwrap_or(0);
    let m0 = metrics(cli.addr).await;
    let s_ready = gw_sample(pid);
    println!(
        "SAMPLE t=ready rss_kib={} fds={} threads={} wsgate_connections={}",
        s_ready.rss_kib,
        s_ready.fds,
        s_ready.threads,
        metric(&m0, "wsgate_connections")
    );
    let publisher = start_publisher(cli.pub_addr.unwrap_or(cli.addr), cli.rate, key);
    // Spread the churn over the workers in proportion to their clients.
    let procs_n = procs.len();
    for (i, p) in procs.iter_mut().enumerate() {
        let n = cli.conns / procs_n + usize::from(i < cli.conns % procs_n);
        let share = cli.churn * n as f64 / cli.conns as f64;
        let _ = p.stdin.write_all(format!("GO {share}\n").as_bytes()).await;
        let _ = p.stdin.flush().await;
    }
    let start = Instant::now();
    let client_cpu0: f64 = worker_pids.iter().map(|p| sys::cpu_secs(*p)).sum();
    let (busy0, self0) = (sys::machine_busy_secs(), sys::cpu_secs(0));
    let (mut warm, mut end) = (None, None);
    let mut warm_m = BTreeMap::new();
    let mut tick = 0u64;
    while tick < cli.duration_s {
        tick += 1;
        tokio::time::sleep_until((start + Duration::from_secs(tick)).into()).await;
        let take = tick == cli.warmup_s || tick == cli.duration_s || tick.is_multiple_of(cli.sample_s.max(1));
        if !take {
            continue;
        }
        let s = gw_sample(pid);
        let m = metrics(cli.addr).await;
        println!(
            "SAMPLE t={tick} rss_kib={} fds={} threads={} wsgate_connections={} deliveries={} published={} cpu_pct={:.0}",
            s.rss_kib,
            s.fds,
            s.threads,
            metric(&m, "wsgate_connections"),
            metric(&m, "wsgate_deliveries_total"),
            publisher.last.load(Relaxed),
            (s.cpu_s - s_ready.cpu_s) * 100.0 / start.elapsed().as_secs_f64()
        );
        if tick == cli.warmup_s {
            warm = Some(s);
            warm_m = m.clone();
        }
        if tick == cli.duration_s {
            end = Some((s, m));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let client_cpu_pct = (worker_pids.iter().map(|p| sys::cpu_secs(*p)).sum::<f64>() - client_cpu0) * 100.0 / wall;
    let own = (sys::cpu_secs(0) - self0) * 100.0 / wall;
    let busy_pct = (sys::machine_busy_secs() - busy0) * 100.0 / wall;
    let warm = warm.unwrap_or(s_ready);
    let (end, end_m) = end.unwrap_or_else(|| (gw_sample(pid), BTreeMap::new()));

    // Churn off; every client connected again; then compare with the gateway's count.
    send_all(procs, "STOP").await;
    let stopped = wait_all(rx, procs.len(), "STOPPED", Duration::from_secs(cli.timeout + 10), extra).await;
    let clients_connected: u64 = stopped.iter().flatten().map(|l| kvu(l, "connected")).sum();
    sleep(Duration::from_millis(500)).await;
    let m_stop = metrics(cli.addr).await;
    let (published, pub_errors, pub_uncertain) = stop_publisher(publisher).await;
    send_all(procs, &format!("END {published}")).await;
    let done = wait_all(rx, procs.len(), "DONE", Duration::from_secs(60), extra).await;
    let results = print_results(extra);
    let clean_exit = done.iter().all(Option::is_some);

    // After the clients leave: every session must go, and fds fall back to the baseline.
    let t = Instant::now();
    let mut m_after = metrics(cli.addr).await;
    while metric(&m_after, "wsgate_connections") > 0.0 && t.elapsed() < Duration::from_secs(30) {
        sleep(Duration::from_millis(500)).await;
        m_after = metrics(cli.addr).await;
    }
    sleep(Duration::from_secs(2)).await;
    let after = gw_sample(pid);
    let m_after = metrics(cli.addr).await;

    let ratio = end.rss_kib as f64 / warm.rss_kib.max(1) as f64;
    let mut s = format!(
        "SUMMARY mode=soak conns={} procs={} churn_per_s={} rate={} duration_s={} warmup_s={} published={published} \
         pub_errors={pub_errors} pub_uncertain={pub_uncertain} \
         gw_rss_base_kib={} gw_rss_ready_kib={} gw_rss_warm_kib={} gw_rss_end_kib={} rss_end_over_warm={ratio:.3} \
         gw_fds_base={} gw_fds_warm={} gw_fds_end={} gw_fds_minus_conns_warm={} gw_fds_minus_conns_end={} gw_threads_base={} gw_threads_warm={} gw_threads_end={} \
         gw_cpu_pct={:.0} client_cpu_pct={client_cpu_pct:.0} orchestrator_cpu_pct={own:.0} other_cpu_pct={:.0} \
         wsgate_connections_end={} clients_connected_end={clients_connected} \
         gw_after_exit_connections={} gw_after_exit_fds={} gw_after_exit_threads={} gw_after_exit_rss_kib={} \
         deliveries_warm_to_end={} replayed_events={} resumes={} disconnects={} workers_done={clean_exit}",
        cli.conns,
        procs.len(),
        cli.churn,
        cli.rate,
        cli.duration_s,
        cli.warmup_s,
        base.rss_kib,
        s_ready.rss_kib,
        warm.rss_kib,
        end.rss_kib,
        base.fds,
        warm.fds,
        end.fds,
        warm.fds as f64 - metric(&warm_m, "wsgate_connections"),
        end.fds as f64 - metric(&end_m, "wsgate_connections"),
        base.threads,
        warm.threads,
        end.threads,
        (end.cpu_s - s_ready.cpu_s) * 100.0 / wall,
        busy_pct - (end.cpu_s - s_ready.cpu_s) * 100.0 / wall - client_cpu_pct - own,
        metric(&m_stop, "wsgate_connections"),
        metric(&m_after, "wsgate_connections"),
        after.fds,
        after.threads,
        after.rss_kib,
        metric(&end_m, "wsgate_deliveries_total") - metric(&warm_m, "wsgate_deliveries_total"),
        metric(&m_after, "wsgate_replayed_events_total"),
        family(&m_after, "wsgate_resumes_total"),
        family(&m_after, "wsgate_disconnects_total"),
    );
    s.push_str(&client_totals(&results));
    println!("{s}");
    let missing = sum(&results, "missing") + sum(&results, "dupes") + sum(&results, "not_recovered");
    if !clean_exit || results.len() != procs.len() {
        return 5;
    }
    if missing > 0 || clients_connected != cli.conns as u64 {
        return 4;
    }
    0
}

/// Picks one gateway's CPU seconds out of a (time, B, C) sample.
type Pick = fn(&(u64, f64, f64)) -> f64;

async fn run_storm(
    cli: &Cli,
    key: &EncodingKey,
    procs: &mut [Proc],
    rx: &mut Lines,
    extra: &mut Vec<(usize, String)>,
) -> i32 {
    let (pid_b, pid_c) = (cli.gateway_pids[1], cli.gateway_pids[2]);
    let m_a = metrics(cli.addr).await;
    println!("BEFORE instance_a_connections={}", metric(&m_a, "wsgate_connections"));
    let publisher = start_publisher(cli.pub_addr.unwrap_or(cli.reconnect_addrs[0]), cli.rate, key);
    sleep(Duration::from_secs(cli.settle_s)).await;

    // CPU of B and C every 100 ms, from 2 s before the kill to the end.
    let sampling = Arc::new(AtomicBool::new(true));
    let samples: Arc<Mutex<Vec<(u64, f64, f64)>>> = Arc::default();
    let (sm, sp) = (sampling.clone(), samples.clone());
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while sm.load(Relaxed) {
            tick.tick().await;
            let v = (now_ns(), sys::cpu_secs(pid_b), sys::cpu_secs(pid_c));
            sp.lock().unwrap_or_else(|p| p.into_inner()).push(v);
        }
    });
    sleep(Duration::from_secs(2)).await;
    let published_at_kill = publisher.last.load(Relaxed);
    let overflows0 = listen_overflows();
    let kill_ns = now_ns();
    // SAFETY: kill(2) with a PID the script started and passed in.
    let rc = unsafe { libc::kill(cli.kill_pid as libc::pid_t, libc::SIGKILL) };
    if rc != 0 {
        eprintln!("soak: kill {} failed: {}", cli.kill_pid, std::io::Error::last_os_error());
    }
    send_all(procs, &format!("KILLED {kill_ns}")).await;
    println!("KILLED pid={} published_before_kill={published_at_kill}", cli.kill_pid);
    let back = wait_all(rx, procs.len(), "BACK", Duration::from_secs(cli.recover_timeout_s + 10), extra).await;
    let all_back_ns = back.iter().flatten().map(|l| kvu(l, "max_back_ns")).max().unwrap_or(0);
    let back_n: u64 = back.iter().flatten().map(|l| kvu(l, "back")).sum();
    let all_back = back.iter().all(Option::is_some) && back_n == cli.conns as u64;
    let overflows = listen_overflows().saturating_sub(overflows0);
    sleep(Duration::from_secs(cli.after_s)).await;
    sampling.store(false, Relaxed);
    let _ = sampler.await;
    let m_b = metrics(cli.reconnect_addrs[0]).await;
    let m_c = metrics(*cli.reconnect_addrs.get(1).unwrap_or(&cli.reconnect_addrs[0])).await;
    let (gb, gc) = (gw_sample(pid_b), gw_sample(pid_c));
    let (published, pub_errors, pub_uncertain) = stop_publisher(publisher).await;
    send_all(procs, &format!("END {published}")).await;
    let done = wait_all(rx, procs.len(), "DONE", Duration::from_secs(60), extra).await;
    let results = print_results(extra);

    let mut times: Vec<u64> = Vec::new();
    for (_, l) in extra.iter() {
        if let Some(rest) = l.strip_prefix("TIMES") {
            times.extend(rest.split_whitespace().filter_map(|w| w.parse::<u64>().ok()));
        }
    }
    times.sort_unstable();

    // Peak CPU over 100 ms and over 1 s windows, and the mean from the kill until all are back.
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let peak = |win: usize, pick: fn(&(u64, f64, f64)) -> f64| -> f64 {
        samples
            .windows(win + 1)
            .filter(|w| w[win].0 > kill_ns)
            .map(|w| (pick(&w[win]) - pick(&w[0])) * 100.0 / ((w[win].0 - w[0].0) as f64 / 1e9))
            .fold(0.0, f64::max)
    };
    let mean_recovery = |pick: Pick| -> f64 {
        let end_ns = if all_back_ns > kill_ns { all_back_ns } else { now_ns() };
        let a = samples.iter().rfind(|s| s.0 <= kill_ns);
        let b = samples.iter().find(|s| s.0 >= end_ns);
        match (a, b) {
            (Some(a), Some(b)) if b.0 > a.0 => (pick(b) - pick(a)) * 100.0 / ((b.0 - a.0) as f64 / 1e9),
            _ => 0.0,
        }
    };
    let before = |pick: Pick| -> f64 {
        let pre: Vec<_> = samples.iter().filter(|s| s.0 <= kill_ns).collect();
        match (pre.first(), pre.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => (pick(b) - pick(a)) * 100.0 / ((b.0 - a.0) as f64 / 1e9),
            _ => 0.0,
        }
    };
    let (fb, fc): (Pick, Pick) = (|s| s.1, |s| s.2);
    let mut s = format!(
        "SUMMARY mode=storm conns={} procs={} rate={} backoff_initial_ms={} backoff_max_ms={} all_back={all_back} \
         back={back_n} all_back_s={:.3} recon_over_1s={} listen_overflows={overflows} recon_p50_ms={} recon_p90_ms={} recon_p99_ms={} recon_max_ms={} \
         cpu_b_before_pct={:.0} cpu_c_before_pct={:.0} peak_cpu_b_100ms_pct={:.0} peak_cpu_c_100ms_pct={:.0} \
         peak_cpu_b_1s_pct={:.0} peak_cpu_c_1s_pct={:.0} mean_cpu_b_recovery_pct={:.0} mean_cpu_c_recovery_pct={:.0} \
         conns_b={} conns_c={} gw_b_rss_kib={} gw_c_rss_kib={} gw_b_fds={} gw_c_fds={} \
         resumes_b={} resumes_c={} replayed_b={} replayed_c={} published={published} pub_errors={pub_errors} pub_uncertain={pub_uncertain} \
         workers_done={}",
        cli.conns,
        procs.len(),
        cli.rate,
        cli.backoff_initial_ms,
        cli.backoff_max_ms,
        all_back_ns.saturating_sub(kill_ns) as f64 / 1e9,
        times.iter().filter(|t| **t >= 1000).count(),
        hist::pct_sorted(&times, 0.5),
        hist::pct_sorted(&times, 0.9),
        hist::pct_sorted(&times, 0.99),
        times.last().copied().unwrap_or(0),
        before(fb),
        before(fc),
        peak(1, fb),
        peak(1, fc),
        peak(10, fb),
        peak(10, fc),
        mean_recovery(fb),
        mean_recovery(fc),
        metric(&m_b, "wsgate_connections"),
        metric(&m_c, "wsgate_connections"),
        gb.rss_kib,
        gc.rss_kib,
        gb.fds,
        gc.fds,
        family(&m_b, "wsgate_resumes_total"),
        family(&m_c, "wsgate_resumes_total"),
        metric(&m_b, "wsgate_replayed_events_total"),
        metric(&m_c, "wsgate_replayed_events_total"),
        done.iter().all(Option::is_some),
    );
    s.push_str(&client_totals(&results));
    println!("{s}");
    // CPU trace: one line, percent per 100 ms from 2 s before the kill (B/C).
    let mut trace = String::from("CPUTRACE t_ms:b/c");
    for w in samples.windows(2) {
        let dt = (w[1].0 - w[0].0) as f64 / 1e9;
        let _ = write!(
            trace,
            " {}:{:.0}/{:.0}",
            (w[1].0 as i64 - kill_ns as i64) / 1_000_000,
            (w[1].1 - w[0].1) * 100.0 / dt,
            (w[1].2 - w[0].2) * 100.0 / dt
        );
    }
    println!("{trace}");
    if !all_back || results.len() != procs.len() {
        return 5;
    }
    if sum(&results, "missing") + sum(&results, "dupes") + sum(&results, "not_recovered") > 0 {
        return 4;
    }
    0
}

/// Publishes seqs 1 ..= n one request at a time; returns the id of seq 1.
async fn publish_backlog(addr: SocketAddr, n: u64, key: &EncodingKey) -> Result<String, String> {
    let tok = token(key, serde_json::json!({ "sub": "soak", "scope": "publish", "exp": now_unix() + 86_400 }));
    let headers = format!("Authorization: Bearer {tok}\r\nContent-Type: application/json\r\n");
    let mut http = http::Http::new(addr);
    let mut first = None;
    for seq in 1..=n {
        let body = format!(r#"{{"type":"soak","data":{{"seq":{seq}}}}}"#);
        let r = timeout(Duration::from_secs(10), http.request("POST", "/api/events", &headers, body.as_bytes()))
            .await
            .map_err(|_| format!("publish seq={seq}: no answer within 10 s"))?
            .map_err(|e| format!("publish seq={seq}: {e}"))?;
        if r.status != 202 {
            return Err(format!("publish seq={seq}: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        if seq == 1 {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            first = v["id"].as_str().map(str::to_string);
        }
    }
    first.ok_or_else(|| "the first publish's answer has no id".into())
}

/// Resume: `--backlog` + 1 events, then every client resumes at once from the first one.
async fn run_resume(cli: &Cli, key: &EncodingKey) -> i32 {
    let gw = cli.gateway_pids.first().copied().unwrap_or(0);
    let upto = cli.backlog + 1;
    let since = match publish_backlog(cli.pub_addr.unwrap_or(cli.addr), upto, key).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("soak: {e}");
            return 1;
        }
    };
    println!("PUBLISHED events={upto} since={since} (every client resumes from seq 1: {} to replay)", cli.backlog);
    let (mut procs, mut rx) = match spawn_workers(cli, false, Some(&since)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("soak: {e}");
            return 1;
        }
    };
    let worker_pids: Vec<u32> = procs.iter().filter_map(|p| p.child.id()).collect();
    let mut extra = Vec::new();
    let waiting = wait_all(&mut rx, procs.len(), "WAITING", Duration::from_secs(30), &mut extra).await;
    if waiting.iter().any(Option::is_none) {
        eprintln!("soak: a worker did not start");
        wait_procs(procs).await;
        return 1;
    }
    let m0 = metrics(cli.addr).await;
    let clients = |pids: &[u32]| pids.iter().map(|p| sys::cpu_secs(*p)).sum::<f64>();
    let (g0, r0, c0) = (sys::cpu_secs(gw), sys::cpu_secs(cli.redis_pid), clients(&worker_pids));
    let (busy0, self0, overflows0) = (sys::machine_busy_secs(), sys::cpu_secs(0), listen_overflows());
    let go = now_ns();
    send_all(&mut procs, &format!("GO {go}")).await;
    let ready = wait_all(&mut rx, procs.len(), "READY", Duration::from_secs(cli.recover_timeout_s), &mut extra).await;
    let connected_ns = now_ns();
    let back =
        wait_all(&mut rx, procs.len(), "BACK", Duration::from_secs(cli.recover_timeout_s + 10), &mut extra).await;
    let (g1, r1, c1) = (sys::cpu_secs(gw), sys::cpu_secs(cli.redis_pid), clients(&worker_pids));
    let (busy1, self1, t1) = (sys::machine_busy_secs(), sys::cpu_secs(0), now_ns());
    let overflows = listen_overflows().saturating_sub(overflows0);
    let all_back_ns = back.iter().flatten().map(|l| kvu(l, "max_back_ns")).max().unwrap_or(0);
    let back_n: u64 = back.iter().flatten().map(|l| kvu(l, "back")).sum();
    let all_back = back.iter().all(Option::is_some) && back_n == cli.conns as u64;
    let m1 = metrics(cli.addr).await;
    send_all(&mut procs, &format!("END {upto}")).await;
    let done = wait_all(&mut rx, procs.len(), "DONE", Duration::from_secs(60), &mut extra).await;
    let results = print_results(&extra);
    let mut times: Vec<u64> = Vec::new();
    for (_, l) in extra.iter() {
        if let Some(rest) = l.strip_prefix("TIMES") {
            times.extend(rest.split_whitespace().filter_map(|w| w.parse::<u64>().ok()));
        }
    }
    times.sort_unstable();
    let wall = (t1 - go) as f64 / 1e9;
    let (gw_cpu, redis_cpu, client_cpu, own) = (g1 - g0, r1 - r0, c1 - c0, self1 - self0);
    let other = ((busy1 - busy0) - gw_cpu - redis_cpu - client_cpu - own) * 100.0 / wall;
    let delta = |k: &str| metric(&m1, k) - metric(&m0, k);
    let mut s = format!(
        "SUMMARY mode=resume conns={} procs={} backlog={} conc={} all_back={all_back} back={back_n} all_back_s={:.3} \
         all_connected_s={:.3} recover_p50_ms={} recover_p90_ms={} recover_p99_ms={} recover_max_ms={} \
         listen_overflows={overflows} gw_cpu_s={gw_cpu:.2} redis_cpu_s={redis_cpu:.2} client_cpu_s={client_cpu:.2} \
         wall_s={wall:.2} gw_cpu_pct={:.0} redis_cpu_pct={:.0} other_cpu_pct={other:.0} gw_rss_kib={} \
         replayed_events={} deliveries={} resumes={} workers_done={} ready_workers={}",
        cli.conns,
        procs.len(),
        cli.backlog,
        cli.conc,
        all_back_ns.saturating_sub(go) as f64 / 1e9,
        connected_ns.saturating_sub(go) as f64 / 1e9,
        hist::pct_sorted(&times, 0.5),
        hist::pct_sorted(&times, 0.9),
        hist::pct_sorted(&times, 0.99),
        times.last().copied().unwrap_or(0),
        gw_cpu * 100.0 / wall,
        redis_cpu * 100.0 / wall,
        sys::rss_kib(gw),
        delta("wsgate_replayed_events_total"),
        delta("wsgate_deliveries_total"),
        family(&m1, "wsgate_resumes_total"),
        done.iter().all(Option::is_some),
        ready.iter().flatten().count(),
    );
    s.push_str(&client_totals(&results));
    println!("{s}");
    wait_procs(procs).await;
    if !all_back || results.len() != cli.procs.max(1) {
        return 5;
    }
    if sum(&results, "missing") + sum(&results, "dupes") + sum(&results, "not_recovered") > 0 {
        return 4;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_capped() {
        let mut rng = Rng::new(42);
        for attempt in 0..20 {
            for _ in 0..200 {
                let d = backoff_ms(attempt, 500, 30_000, &mut rng);
                assert!(d < (500u64 << attempt.min(6)).min(30_000));
            }
        }
    }

    #[test]
    fn sequence_checks() {
        let slot = Slot::default();
        let c = Counters::default();
        let mut id = None;
        let mut s = Seq { slot: &slot, c: &c, last_id: &mut id, last_seq: 0, first: 1, upto: 0 };
        for (i, seq) in [1u64, 2, 2, 3, 5, 4, 6].iter().enumerate() {
            s.on_text(
                format!(r#"{{"id":"1700000000000-{i}","type":"soak","data":{{"seq":{seq}}},"ts":1}}"#).as_bytes(),
            );
        }
        s.on_text(br#"{"type":"pong"}"#);
        assert_eq!(id.as_deref(), Some("1700000000000-6"));
        assert_eq!(c.dupes.load(Relaxed), 2);
        assert_eq!(c.gaps.load(Relaxed), 1);
        assert_eq!(c.gap_missing.load(Relaxed), 1);
        assert_eq!(slot.unique.load(Relaxed), 5);
        assert_eq!(slot.last_seq.load(Relaxed), 6);
        assert_eq!(c.other_frames.load(Relaxed), 1);
        assert!(is_position(b"1-0") && !is_position(b"01J9ZQ3S4Y8W6M2K7T5R1V0XAB") && !is_position(b"-1"));
    }
}
