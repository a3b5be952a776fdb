//! wsgate-loadgen: measures wsgate the way floor-client measures floor-server.
//!
//! idle : wsgate-loadgen --mode idle  --addr 127.0.0.1:8000 --conns 10000 --secret S [--hello] [--hold 300]
//! bench: wsgate-loadgen --mode bench --addr 127.0.0.1:8000 --conns 10000 --broadcasts 110
//!                       --warmup 10 --window 1 [--rate 0] [--server-pid PID] --secret S
//! channels: wsgate-loadgen --mode channels --addr A --sub-addrs A,B,C --conns 6000 --channels 1000
//!                       --broadcasts 4000 --rate 200 [--server-pids P,Q,R --redis-pid R] --secret S
//!           (channel routing over a fleet; see channels.rs)
//!
//! Subscribers open `ws://ADDR/ws/tasks?token=<JWT>` from source addresses 127.0.0.x
//! (IP_BIND_ADDRESS_NO_PORT) and count as ready once the `connected` frame has arrived. The
//! trigger of broadcast `seq` is `POST /api/events` (one keep-alive connection, sequential
//! requests) carrying `{"seq":seq,"t0":<CLOCK_MONOTONIC ns>}`; receivers record the time from
//! `t0` to arrival. With `--procs P` the connections are split over P processes (one holds
//! at most ~19.9k sockets here); workers report over stdout so the parent's figures are exact.
//! Output: `READY ...` once connected, and in bench mode one `RESULT key=value ...` line with
//! floor-client's keys plus errors, dupes, out_of_order, other_frames, closed, pub_p50_us,
//! pub_p99_us and procs.

mod channels;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use wsgate_loadgen::sys::now_ns;
use wsgate_loadgen::{emit, hist, http, kv, now_unix, payload, run_and_exit, sys, ws_config};

/// Most sockets one process may hold (RLIMIT_NOFILE hard limit 20000, minus some headroom).
const MAX_CONNS_PER_PROC: usize = 19_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Open the connections, print READY, hold them for --hold seconds.
    Idle,
    /// Open the connections, publish --broadcasts events, print RESULT.
    Bench,
    /// Subscribers join channels (Zipf-like, uneven over the fleet); events go to one channel
    /// each; prints DIST, READY and RESULT (see channels.rs).
    Channels,
    /// Internal: a child process holding a share of the connections.
    #[value(hide = true)]
    Worker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pick {
    /// Every channel equally likely.
    Uniform,
    /// Proportional to the channel's subscribers (the same distribution as the joins).
    Zipf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Publisher {
    Thread,
    Main,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "wsgate-loadgen", about = "Load generator for wsgate (floor-client compatible RESULT line)")]
struct Cli {
    #[arg(long, value_enum, default_value = "bench")]
    mode: Mode,
    /// Gateway address (HTTP and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Subscriber connections (over all processes).
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Broadcasts to publish, warm-up included.
    #[arg(long, default_value_t = 110)]
    broadcasts: usize,
    /// Leading broadcasts left out of every figure.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Broadcasts in flight: published but not yet received by every subscriber.
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Publishes per second; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// With --rate: publish for this many seconds after the warm-up (sets --broadcasts to
    /// warmup + rate × duration).
    #[arg(long, default_value_t = 0.0)]
    duration_s: f64,
    /// Gateway PID, to read its CPU time and VmRSS from /proc.
    #[arg(long, default_value_t = 0)]
    server_pid: u32,
    /// First source address 127.0.0.<src-base>.
    #[arg(long, default_value_t = 2)]
    src_base: u32,
    /// Source addresses per process (0 = let the kernel pick 127.0.0.1).
    #[arg(long, default_value_t = 8)]
    src_ips: u32,
    /// Connection attempts in flight per process.
    #[arg(long, default_value_t = 256)]
    conc: usize,
    /// HS256 secret the gateway runs with (JWT_SECRET).
    #[arg(long, default_value = "loadgen-secret-0123456789abcdef-0123")]
    secret: String,
    /// Distinct user ids (`sub` = u<i % users>); default = --conns.
    #[arg(long)]
    users: Option<usize>,
    /// Bound in seconds on every wait (connect, readiness, window, publish, final drain).
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Each subscriber sends {"type":"ping"} once after `connected` (the server reads once).
    #[arg(long)]
    hello: bool,
    /// Idle mode: seconds to hold the connections before exiting.
    #[arg(long, default_value_t = 300)]
    hold: u64,
    /// Processes sharing the connections (this one included); needed above ~19k conns.
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Size in bytes of each delivered frame.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Runtime worker threads per process.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Connections the gateway must report in /ws/stats before publishing; default = --conns.
    #[arg(long)]
    expect: Option<usize>,
    /// Subscribers spread round-robin over these gateway addresses (comma-separated; a fleet
    /// sharing Redis); publishes still go to --addr. Readiness then waits for the fleet's
    /// `total_connections`. Default: --addr only.
    #[arg(long, value_delimiter = ',')]
    sub_addrs: Vec<SocketAddr>,
    /// Where the publisher runs: `thread` = a thread and runtime of its own, so the 202 is
    /// read as soon as it arrives; `main` = the main thread on the shared runtime (like
    /// floor-client's control connection), where the answer's readiness waits behind the
    /// receive tasks and adds client-side delay to every sequential publish.
    #[arg(long, value_enum, default_value = "thread")]
    publisher: Publisher,
    /// Publish requests written ahead of their responses on the keep-alive connection
    /// (HTTP/1.1 pipelining); 1 = strictly one request at a time.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Channels mode: number of channels (`c0` … `c<N-1>`, c0 the most popular).
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// Channels mode: channels joined per connection, on average.
    #[arg(long, default_value_t = 2)]
    chans_per_conn: usize,
    /// Channels mode: channel of rank k gets about C / k^ZIPF subscribers.
    #[arg(long, default_value_t = 0.8)]
    zipf: f64,
    /// Channels mode: probability that a channel's next subscriber is on its home instance.
    #[arg(long, default_value_t = 0.9)]
    locality: f64,
    /// Channels mode: seed of the assignment and of the event picks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Channels mode: how each event's channel is picked.
    #[arg(long, value_enum, default_value = "uniform")]
    pick: Pick,
    /// Channels mode: gateway PIDs, in --sub-addrs order, for their CPU over the publish window.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Channels mode: redis-server PID, for its CPU over the publish window.
    #[arg(long, default_value_t = 0)]
    redis_pid: u32,
    /// Channels mode: ms to wait after the last expected delivery for strays and duplicates.
    #[arg(long, default_value_t = 500)]
    grace_ms: u64,
    /// Internal (worker): global index of this process's first connection.
    #[arg(long, default_value_t = 0, hide = true)]
    conn_offset: usize,
    /// Internal (worker): idle mode, exit when stdin closes or --hold expires.
    #[arg(long, hide = true)]
    idle_worker: bool,
}

impl Cli {
    fn tmo(&self) -> Duration {
        Duration::from_secs(self.timeout.max(1))
    }
    fn users(&self) -> usize {
        self.users.unwrap_or(self.conns).max(1)
    }
    /// Warm-up actually used (always leaves one measured broadcast), as floor-client does.
    fn warmup(&self) -> usize {
        self.warmup.min(self.broadcasts.saturating_sub(1))
    }
    fn pick_zipf(&self) -> bool {
        self.pick == Pick::Zipf
    }
}

fn main() {
    let mut cli = Cli::parse();
    if cli.duration_s > 0.0 && cli.rate > 0.0 {
        cli.broadcasts = cli.warmup + (cli.rate * cli.duration_s).ceil() as usize;
    }
    sys::raise_nofile();
    if cli.mode == Mode::Worker {
        sys::die_with_parent();
    }
    run_and_exit("wsgate-loadgen", cli.threads.max(1), async move {
        match cli.mode {
            Mode::Worker => worker(cli).await,
            Mode::Channels => channels::run(cli).await,
            Mode::Idle | Mode::Bench => parent(cli).await,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Completion tracking
// ---------------------------------------------------------------------------------------------

/// Broadcast completion over all processes (parent only).
struct Global {
    /// Processes that have not yet seen broadcast `seq` reach all of their subscribers.
    remaining: Vec<AtomicU32>,
    /// Broadcasts complete everywhere (or given up because their publish failed).
    completed: AtomicUsize,
    notify: Notify,
}

impl Global {
    fn new(k: usize, procs: usize) -> Self {
        Global {
            remaining: (0..k).map(|_| AtomicU32::new(procs as u32)).collect(),
            completed: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    /// One process has delivered `seq` to all of its subscribers.
    fn mark(&self, seq: usize) {
        let Some(r) = self.remaining.get(seq) else { return };
        if r.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1)) == Ok(1) {
            self.completed.fetch_add(1, Ordering::AcqRel);
            self.notify.notify_one();
        }
    }

    /// The publish of `seq` failed: it will never complete; stop waiting for it.
    fn fail(&self, seq: usize) {
        if self.remaining[seq].swap(0, Ordering::AcqRel) > 0 {
            self.completed.fetch_add(1, Ordering::AcqRel);
            self.notify.notify_one();
        }
    }

    fn completed(&self) -> usize {
        self.completed.load(Ordering::Acquire)
    }
}

/// Where a process reports that a broadcast reached all of its subscribers.
enum Sink {
    Global(Arc<Global>),
    /// Worker: the seq goes to the parent as a `C <seq>...` line.
    Pipe(mpsc::UnboundedSender<u32>),
}

/// Per-process receive state.
struct Local {
    n: usize,
    k: usize,
    warmup: usize,
    counts: Vec<AtomicU32>,
    last: Vec<AtomicU64>,
    dupes: AtomicU64,
    out_of_order: AtomicU64,
    other: AtomicU64,
    closed: AtomicU64,
    sink: Sink,
}

impl Local {
    fn new(n: usize, k: usize, warmup: usize, sink: Sink) -> Self {
        Local {
            n,
            k,
            warmup,
            counts: (0..k).map(|_| AtomicU32::new(0)).collect(),
            last: (0..k).map(|_| AtomicU64::new(0)).collect(),
            dupes: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            other: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            sink,
        }
    }

    /// One text frame on one connection. `seen` is that connection's bitset of received seqs,
    /// `max_seen` the highest seq it has received (-1 before the first).
    #[inline]
    fn on_frame(&self, b: &[u8], seen: &mut [u64], max_seen: &mut i64) {
        let now = now_ns();
        let Some((seq, t0)) = payload::parse_seq_t0(b) else {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if seq >= self.k as u64 {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = seq as usize;
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if seen[word] & bit != 0 {
            self.dupes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        seen[word] |= bit;
        if (seq as i64) < *max_seen {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        } else {
            *max_seen = seq as i64;
        }
        if seq >= self.warmup {
            hist::record(now.saturating_sub(t0));
        }
        let l = &self.last[seq];
        if l.load(Ordering::Relaxed) < now {
            l.fetch_max(now, Ordering::Relaxed);
        }
        if self.counts[seq].fetch_add(1, Ordering::AcqRel) as usize + 1 == self.n {
            match &self.sink {
                Sink::Global(g) => g.mark(seq),
                Sink::Pipe(tx) => {
                    let _ = tx.send(seq as u32);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers
// ---------------------------------------------------------------------------------------------

fn user_token(key: &EncodingKey, sub: &str) -> Result<String, String> {
    let claims = serde_json::json!({ "sub": sub, "exp": now_unix() + 86_400 });
    jsonwebtoken::encode(&Header::default(), &claims, key).map_err(|e| format!("jwt: {e}"))
}

fn publish_token(key: &EncodingKey) -> Result<String, String> {
    let claims = serde_json::json!({ "sub": "loadgen", "scope": "publish", "exp": now_unix() + 86_400 });
    jsonwebtoken::encode(&Header::default(), &claims, key).map_err(|e| format!("jwt: {e}"))
}

fn shorten(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Opens one subscriber and waits for its `connected` frame.
async fn open(addr: SocketAddr, src: Option<Ipv4Addr>, token: &str) -> Result<WebSocketStream<TcpStream>, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = src {
        sys::bind_source(&sock, ip).map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = sock.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{addr}/ws/tasks?token={token}");
    let (mut ws, _) =
        client_async_with_config(url, stream, Some(ws_config())).await.map_err(|e| format!("handshake: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if payload::is_connected_frame(t.as_bytes()) => return Ok(ws),
            Some(Ok(Message::Text(t))) => {
                return Err(format!("first frame is not `connected`: {}", shorten(t.as_str())));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Err(format!("first frame is not `connected`: {}", shorten(&format!("{m:?}")))),
            Some(Err(e)) => return Err(format!("before `connected`: {e}")),
            None => return Err("closed before `connected`".into()),
        }
    }
}

async fn recv_loop(mut ws: WebSocketStream<TcpStream>, st: Arc<Local>) {
    let mut seen = vec![0u64; st.k.div_ceil(64).max(1)];
    let mut max_seen: i64 = -1;
    while let Some(r) = ws.next().await {
        match r {
            Ok(Message::Text(t)) => st.on_frame(t.as_bytes(), &mut seen, &mut max_seen),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    st.closed.fetch_add(1, Ordering::Relaxed);
}

/// This process's share of the connections.
#[derive(Clone, Copy, Debug)]
struct Plan {
    n: usize,
    offset: usize,
    src_base: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Ready {
    ok: usize,
    failed: usize,
    secs: f64,
    rss_kib: u64,
}

/// Opens `plan.n` subscribers (at most `--conc` handshakes in flight); each one then runs its
/// receive loop. Returns once every attempt has ended, or nothing has progressed for --timeout.
async fn connect_all(cli: &Cli, plan: Plan, st: Arc<Local>) -> Ready {
    let t = Instant::now();
    let key = Arc::new(EncodingKey::from_secret(cli.secret.as_bytes()));
    let sem = Arc::new(Semaphore::new(cli.conc.max(1)));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let (tmo, users, hello) = (cli.tmo(), cli.users(), cli.hello);
    let addrs = if cli.sub_addrs.is_empty() { vec![cli.addr] } else { cli.sub_addrs.clone() };
    for i in 0..plan.n {
        let Ok(permit) = sem.clone().acquire_owned().await else { break };
        let (st, ok, failed, progress, key) = (st.clone(), ok.clone(), failed.clone(), progress.clone(), key.clone());
        let src = (cli.src_ips > 0).then(|| Ipv4Addr::new(127, 0, 0, (plan.src_base + i as u32 % cli.src_ips) as u8));
        let global_idx = plan.offset + i;
        let addr = addrs[global_idx % addrs.len()];
        tokio::spawn(async move {
            let r = match user_token(&key, &format!("u{}", global_idx % users)) {
                Ok(token) => match timeout(tmo, open(addr, src, &token)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no `connected` frame within {}s", tmo.as_secs())),
                },
                Err(e) => Err(e),
            };
            drop(permit);
            match r {
                Ok(mut ws) => {
                    if hello {
                        let _ = ws.send(Message::text(r#"{"type":"ping"}"#)).await;
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                    progress.notify_one();
                    recv_loop(ws, st).await;
                }
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("conn {global_idx} failed: {e}");
                    }
                    progress.notify_one();
                }
            }
        });
    }
    let mut last = (0, Instant::now());
    loop {
        let done = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if done >= plan.n {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > tmo {
            eprintln!("connect phase: no progress for {}s, {done}/{} attempts ended", tmo.as_secs(), plan.n);
            break;
        }
        let _ = timeout(Duration::from_millis(200), progress.notified()).await;
    }
    let ok = ok.load(Ordering::Relaxed);
    Ready { ok, failed: plan.n - ok, secs: t.elapsed().as_secs_f64(), rss_kib: sys::rss_kib(0) }
}

fn ready_line(r: &Ready) -> String {
    format!("READY conns={} failed={} connect_secs={:.2} client_rss_kib={}", r.ok, r.failed, r.secs, r.rss_kib)
}

fn parse_ready(line: &str) -> Option<Ready> {
    let m = kv(line);
    Some(Ready {
        ok: m.get("conns")?.parse().ok()?,
        failed: m.get("failed")?.parse().ok()?,
        secs: m.get("connect_secs")?.parse().ok()?,
        rss_kib: m.get("client_rss_kib")?.parse().ok()?,
    })
}

// ---------------------------------------------------------------------------------------------
// Worker process
// ---------------------------------------------------------------------------------------------

async fn worker(cli: Cli) -> i32 {
    let k = if cli.idle_worker { 0 } else { cli.broadcasts };
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let st = Arc::new(Local::new(cli.conns, k, cli.warmup(), Sink::Pipe(tx)));
    // Completion lines, batched: "C 12 13 14".
    tokio::spawn(async move {
        let mut line = String::new();
        while let Some(seq) = rx.recv().await {
            line.clear();
            let _ = write!(line, "C {seq}");
            while let Ok(seq) = rx.try_recv() {
                let _ = write!(line, " {seq}");
            }
            line.push('\n');
            emit(&line);
        }
    });
    let plan = Plan { n: cli.conns, offset: cli.conn_offset, src_base: cli.src_base };
    let ready = connect_all(&cli, plan, st.clone()).await;
    emit(&format!("{}\n", ready_line(&ready)));

    // Wait for the parent's END (bench) or for stdin to close / the hold to expire.
    let limit = Duration::from_secs(if cli.idle_worker { cli.hold + 5 } else { 3600 });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    match timeout(limit, lines.next_line()).await {
        Ok(Ok(Some(l))) if l.trim() == "END" => {}
        _ => return 0,
    }
    let mut s = String::with_capacity(32 * k + 1024);
    s.push_str("F counts");
    for c in &st.counts {
        let _ = write!(s, " {}", c.load(Ordering::Relaxed));
    }
    s.push_str("\nF last");
    for l in &st.last {
        let _ = write!(s, " {}", l.load(Ordering::Relaxed));
    }
    let _ = write!(
        s,
        "\nF hist {}\nF misc {} {} {} {}\nDONE\n",
        hist::encode(&hist::snapshot()),
        st.dupes.load(Ordering::Relaxed),
        st.out_of_order.load(Ordering::Relaxed),
        st.other.load(Ordering::Relaxed),
        st.closed.load(Ordering::Relaxed),
    );
    emit(&s);
    0
}

/// What a worker sends at the end of a bench.
#[derive(Debug, Default)]
struct Report {
    counts: Vec<u64>,
    last: Vec<u64>,
    hist: Vec<u64>,
    misc: [u64; 4],
    done: bool,
}

fn nums(s: &str) -> Vec<u64> {
    s.split_whitespace().map(|w| w.parse().unwrap_or(0)).collect()
}

/// Reads one worker's stdout: READY, completions, and the final report.
async fn read_child(
    out: ChildStdout,
    global: Arc<Global>,
    ready_tx: oneshot::Sender<Ready>,
    rep_tx: oneshot::Sender<Report>,
) {
    let mut lines = BufReader::new(out).lines();
    let mut ready_tx = Some(ready_tx);
    let mut rep = Report { hist: vec![0; hist::NBUCKETS], ..Default::default() };
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line.strip_prefix("C ") {
            for w in rest.split_whitespace() {
                if let Ok(seq) = w.parse::<usize>() {
                    global.mark(seq);
                }
            }
        } else if line.starts_with("READY ") {
            if let (Some(tx), Some(r)) = (ready_tx.take(), parse_ready(&line)) {
                let _ = tx.send(r);
            }
        } else if let Some(rest) = line.strip_prefix("F counts") {
            rep.counts = nums(rest);
        } else if let Some(rest) = line.strip_prefix("F last") {
            rep.last = nums(rest);
        } else if let Some(rest) = line.strip_prefix("F hist") {
            hist::merge_encoded(&mut rep.hist, rest);
        } else if let Some(rest) = line.strip_prefix("F misc") {
            for (m, v) in rep.misc.iter_mut().zip(nums(rest)) {
                *m = v;
            }
        } else if line == "DONE" {
            rep.done = true;
            break;
        }
    }
    let _ = rep_tx.send(rep);
}

struct Worker {
    child: Child,
    pid: u32,
    n: usize,
    stdin: Option<ChildStdin>,
    ready: Option<oneshot::Receiver<Ready>>,
    report: Option<oneshot::Receiver<Report>>,
}

fn worker_args(cli: &Cli, plan: &Plan) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--mode".into(),
        "worker".into(),
        "--addr".into(),
        cli.addr.to_string(),
        "--conns".into(),
        plan.n.to_string(),
        "--conn-offset".into(),
        plan.offset.to_string(),
        "--src-base".into(),
        plan.src_base.to_string(),
        "--src-ips".into(),
        cli.src_ips.to_string(),
        "--conc".into(),
        cli.conc.to_string(),
        "--secret".into(),
        cli.secret.clone(),
        "--users".into(),
        cli.users().to_string(),
        "--timeout".into(),
        cli.timeout.to_string(),
        "--broadcasts".into(),
        cli.broadcasts.to_string(),
        "--warmup".into(),
        cli.warmup().to_string(),
        "--threads".into(),
        cli.threads.to_string(),
        "--hold".into(),
        cli.hold.to_string(),
    ];
    if cli.hello {
        a.push("--hello".into());
    }
    if cli.mode == Mode::Idle {
        a.push("--idle-worker".into());
    }
    if !cli.sub_addrs.is_empty() {
        a.push("--sub-addrs".into());
        a.push(cli.sub_addrs.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","));
    }
    a
}

fn spawn_worker(cli: &Cli, plan: &Plan, global: Arc<Global>) -> Result<Worker, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .args(worker_args(cli, plan))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn worker: {e}"))?;
    let pid = child.id().unwrap_or(0);
    let stdin = child.stdin.take();
    let out = child.stdout.take().ok_or("worker stdout")?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (rep_tx, rep_rx) = oneshot::channel();
    tokio::spawn(read_child(out, global, ready_tx, rep_tx));
    Ok(Worker { child, pid, n: plan.n, stdin, ready: Some(ready_rx), report: Some(rep_rx) })
}

// ---------------------------------------------------------------------------------------------
// Parent process
// ---------------------------------------------------------------------------------------------

fn plans(cli: &Cli, procs: usize) -> Vec<Plan> {
    let (base, rem) = (cli.conns / procs, cli.conns % procs);
    let mut offset = 0;
    (0..procs)
        .map(|j| {
            let n = base + usize::from(j < rem);
            let p = Plan { n, offset, src_base: cli.src_base + j as u32 * cli.src_ips };
            offset += n;
            p
        })
        .collect()
}

fn validate(cli: &Cli) -> Result<usize, String> {
    let procs = cli.procs.max(1);
    if cli.conns < procs {
        return Err(format!("--conns {} is smaller than --procs {procs}", cli.conns));
    }
    let per = cli.conns.div_ceil(procs);
    if per > MAX_CONNS_PER_PROC {
        return Err(format!(
            "{per} connections per process is above {MAX_CONNS_PER_PROC} (open-files limit); use --procs {}",
            cli.conns.div_ceil(MAX_CONNS_PER_PROC)
        ));
    }
    if cli.src_ips > 0 && cli.src_base + procs as u32 * cli.src_ips > 255 {
        return Err("source addresses run past 127.0.0.254: lower --src-base, --src-ips or --procs".into());
    }
    if cli.mode == Mode::Bench {
        if cli.broadcasts == 0 {
            return Err("--broadcasts must be at least 1".into());
        }
        if cli.window == 0 {
            return Err("--window must be at least 1".into());
        }
    }
    Ok(procs)
}

/// Polls `GET /ws/stats` until `field >= expect` (`local_connections`, or the fleet's
/// `total_connections` when subscribers are spread over several instances).
async fn wait_stats(http: &mut http::Http, field: &str, expect: usize, tmo: Duration) -> Result<u64, String> {
    let t = Instant::now();
    loop {
        let last = match timeout(Duration::from_secs(5), http.request("GET", "/ws/stats", "", b"")).await {
            Ok(Ok(r)) if r.status == 200 => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                match v.get(field).and_then(|c| c.as_u64()) {
                    Some(c) if c >= expect as u64 => return Ok(c),
                    Some(c) => format!("{field}={c}"),
                    None => format!("no {field} in {}", shorten(&String::from_utf8_lossy(&r.body))),
                }
            }
            Ok(Ok(r)) => format!("HTTP {}", r.status),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "timed out".into(),
        };
        if t.elapsed() > tmo {
            return Err(format!("GET /ws/stats never reported {expect} connections (last: {last})"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client_cpu(workers: &[Worker]) -> f64 {
    client_cpu_pids(&workers.iter().map(|w| w.pid).collect::<Vec<_>>())
}

async fn stop_workers(workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        w.stdin = None; // EOF: the worker exits
    }
    for w in workers.iter_mut() {
        if timeout(Duration::from_secs(3), w.child.wait()).await.is_err() {
            let _ = w.child.start_kill();
            let _ = timeout(Duration::from_secs(2), w.child.wait()).await;
        }
    }
}

async fn parent(cli: Cli) -> i32 {
    let procs = match validate(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wsgate-loadgen: {e}");
            return 1;
        }
    };
    let bench = cli.mode == Mode::Bench;
    let k = if bench { cli.broadcasts } else { 0 };
    let warmup = cli.warmup();
    let tmo = cli.tmo();
    let plans = plans(&cli, procs);
    let global = Arc::new(Global::new(k, procs));

    let mut workers = Vec::new();
    for plan in &plans[1..] {
        match spawn_worker(&cli, plan, global.clone()) {
            Ok(w) => workers.push(w),
            Err(e) => {
                eprintln!("wsgate-loadgen: {e}");
                stop_workers(&mut workers).await;
                return 1;
            }
        }
    }
    let st = Arc::new(Local::new(plans[0].n, k, warmup, Sink::Global(global.clone())));
    let mut ready = connect_all(&cli, plans[0], st.clone()).await;
    for w in workers.iter_mut() {
        let rx = w.ready.take();
        // A worker's own connect phase is bounded by --timeout without progress.
        let r = match rx {
            Some(rx) => timeout(tmo * 4 + Duration::from_secs(60), rx).await.ok().and_then(|r| r.ok()),
            None => None,
        };
        let r = r.unwrap_or_else(|| {
            eprintln!("worker {} did not report READY", w.pid);
            Ready { ok: 0, failed: w.n, ..Default::default() }
        });
        ready.ok += r.ok;
        ready.failed += r.failed;
        ready.secs = ready.secs.max(r.secs);
        ready.rss_kib += r.rss_kib;
    }
    println!("{}", ready_line(&ready));
    let _ = std::io::stdout().flush();

    if !bench {
        tokio::time::sleep(Duration::from_secs(cli.hold)).await;
        stop_workers(&mut workers).await;
        return 0;
    }
    if ready.ok != cli.conns {
        eprintln!("not all connections established ({}/{}); aborting bench", ready.ok, cli.conns);
        stop_workers(&mut workers).await;
        return 2;
    }
    let code = run_bench(&cli, &global, &st, &mut workers).await;
    stop_workers(&mut workers).await;
    code
}

/// Everything the publisher needs; owned, so that it can run on a thread of its own.
struct PubParams {
    addr: SocketAddr,
    headers: String,
    expect: usize,
    /// The /ws/stats field that must reach `expect`.
    expect_field: &'static str,
    k: usize,
    warmup: usize,
    window: usize,
    rate: f64,
    tmo: Duration,
    payload_bytes: usize,
    server_pid: u32,
    worker_pids: Vec<u32>,
    pipeline: usize,
}

#[derive(Default)]
struct PubOutcome {
    /// Exit code when the bench could not start (readiness failed).
    abort: Option<i32>,
    t0s: Vec<u64>,
    pub_rtt: Vec<u64>,
    errors: u64,
    stuck: bool,
    cpu_s0: f64,
    cpu_c0: f64,
}

fn client_cpu_pids(pids: &[u32]) -> f64 {
    sys::cpu_secs(0) + pids.iter().map(|&p| sys::cpu_secs(p)).sum::<f64>()
}

fn http_error(r: &http::Response, hinted_429: &mut bool) -> String {
    if r.status == 429 && !*hinted_429 {
        *hinted_429 = true;
        eprintln!(
            "POST /api/events answered 429: the gateway's publish rate limit is on; \
             start it with PUBLISH_RATE_PER_SEC=0 (off) or raise PUBLISH_RATE_PER_SEC/PUBLISH_BURST"
        );
    }
    format!("HTTP {} {}", r.status, shorten(&String::from_utf8_lossy(&r.body)))
}

/// Readiness check, then the publish loop: `POST /api/events` for every seq on one keep-alive
/// connection, never more than `window` broadcasts in flight. With `pipeline` 1 each request
/// waits for its response; above 1, up to that many requests are written ahead (HTTP/1.1
/// pipelining: the server answers them in order, so publish order is kept).
async fn publish_phase(p: PubParams, global: Arc<Global>) -> PubOutcome {
    let mut out = PubOutcome::default();
    let mut http = http::Http::new(p.addr);
    if let Err(e) = wait_stats(&mut http, p.expect_field, p.expect, p.tmo).await {
        eprintln!("{e}");
        out.abort = Some(3);
        return out;
    }
    let (k, warmup, window, tmo) = (p.k, p.warmup, p.window, p.tmo);
    out.t0s.reserve(k);
    out.pub_rtt.reserve(k);

    // Pipelined mode: a reader task matches responses to seqs in order.
    let mut pipe = None;
    if p.pipeline > 1 {
        let stream = match http::connect(p.addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("publisher connect: {e}");
                out.abort = Some(4);
                return out;
            }
        };
        let (rd, wr) = stream.into_split();
        let permits = Arc::new(Semaphore::new(p.pipeline));
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u64)>();
        let (g, permits2) = (global.clone(), permits.clone());
        let reader = tokio::spawn(async move {
            let mut rr = http::ResponseReader::new(rd);
            let (mut errors, mut rtt, mut dead, mut hinted) = (0u64, Vec::new(), false, false);
            while let Some((seq, t0)) = rx.recv().await {
                let err = if dead {
                    None
                } else {
                    match timeout(tmo, rr.read_response()).await {
                        Ok(Ok(r)) if r.status == 202 => {
                            if seq >= warmup {
                                rtt.push(now_ns() - t0);
                            }
                            dead = rr.closed;
                            permits2.add_permits(1);
                            continue;
                        }
                        Ok(Ok(r)) => {
                            dead = rr.closed;
                            Some(http_error(&r, &mut hinted))
                        }
                        Ok(Err(e)) => {
                            dead = true;
                            Some(format!("I/O error: {e}"))
                        }
                        Err(_) => {
                            dead = true;
                            Some(format!("no answer within {}s", tmo.as_secs()))
                        }
                    }
                };
                errors += 1;
                if let Some(err) = err.filter(|_| errors <= 5) {
                    eprintln!("publish seq={seq} failed: {err}");
                }
                g.fail(seq);
                permits2.add_permits(1);
            }
            (errors, rtt)
        });
        pipe = Some((wr, permits, tx, reader, Vec::<u8>::with_capacity(4096)));
    }

    let (mut consecutive_errors, mut hinted_429) = (0u32, false);
    let start = Instant::now();
    'outer: for seq in 0..k {
        while seq >= global.completed() + window {
            if timeout(tmo, global.notify.notified()).await.is_err() && seq >= global.completed() + window {
                out.stuck = true;
                break 'outer;
            }
        }
        if seq == warmup {
            out.cpu_s0 = if p.server_pid > 0 { sys::cpu_secs(p.server_pid) } else { 0.0 };
            out.cpu_c0 = client_cpu_pids(&p.worker_pids);
        }
        if p.rate > 0.0 {
            tokio::time::sleep_until((start + Duration::from_secs_f64(seq as f64 / p.rate)).into()).await;
        }
        if let Some((wr, permits, tx, _, buf)) = pipe.as_mut() {
            match timeout(tmo, permits.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => {
                    eprintln!("no publish response for {}s", tmo.as_secs());
                    out.stuck = true;
                    break;
                }
            }
            let t0 = now_ns();
            out.t0s.push(t0);
            let body = payload::publish_body(seq as u64, t0, p.payload_bytes);
            buf.clear();
            http::encode_request(buf, &p.addr, "POST", "/api/events", &p.headers, body.as_bytes());
            if let Err(e) = wr.write_all(buf).await {
                eprintln!("publish seq={seq}: write failed: {e}");
                global.fail(seq);
                out.errors += 1;
                out.stuck = true;
                break;
            }
            let _ = tx.send((seq, t0));
            continue;
        }
        let t0 = now_ns();
        out.t0s.push(t0);
        let body = payload::publish_body(seq as u64, t0, p.payload_bytes);
        let res = timeout(tmo, http.request("POST", "/api/events", &p.headers, body.as_bytes())).await;
        let err = match res {
            Ok(Ok(r)) if r.status == 202 => {
                if seq >= warmup {
                    out.pub_rtt.push(now_ns() - t0);
                }
                consecutive_errors = 0;
                continue;
            }
            Ok(Ok(r)) => http_error(&r, &mut hinted_429),
            Ok(Err(e)) => format!("I/O error: {e}"),
            Err(_) => format!("no answer within {}s", tmo.as_secs()),
        };
        out.errors += 1;
        consecutive_errors += 1;
        if out.errors <= 5 {
            eprintln!("publish seq={seq} failed: {err}");
        }
        global.fail(seq);
        if consecutive_errors >= 50 {
            eprintln!("50 publishes in a row failed; giving up");
            out.stuck = true;
            break;
        }
    }
    if let Some((wr, _, tx, reader, _)) = pipe {
        drop(tx);
        match timeout(tmo, reader).await {
            Ok(Ok((errors, rtt))) => {
                out.errors += errors;
                out.pub_rtt = rtt;
            }
            _ => out.stuck = true,
        }
        drop(wr);
    }
    out
}

async fn run_bench(cli: &Cli, global: &Arc<Global>, st: &Local, workers: &mut [Worker]) -> i32 {
    let (k, warmup, window, rate, tmo, n) = (cli.broadcasts, cli.warmup(), cli.window, cli.rate, cli.tmo(), cli.conns);
    let key = EncodingKey::from_secret(cli.secret.as_bytes());
    let token = match publish_token(&key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let server_pid = cli.server_pid;
    let params = PubParams {
        addr: cli.addr,
        headers: format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        expect: cli.expect.unwrap_or(n),
        expect_field: if cli.sub_addrs.len() > 1 { "total_connections" } else { "local_connections" },
        k,
        warmup,
        window,
        rate,
        tmo,
        payload_bytes: cli.payload_bytes,
        server_pid,
        worker_pids: workers.iter().map(|w| w.pid).collect(),
        pipeline: cli.pipeline.max(1),
    };
    let out = if cli.publisher == Publisher::Thread {
        // The publisher on its own thread and runtime: its socket's readiness is not queued
        // behind thousands of receive tasks on the shared runtime.
        let (tx, rx) = oneshot::channel();
        let g = global.clone();
        let spawned = std::thread::Builder::new().name("publisher".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let out = match rt {
                Ok(rt) => rt.block_on(publish_phase(params, g)),
                Err(e) => {
                    eprintln!("publisher runtime: {e}");
                    PubOutcome { abort: Some(1), ..Default::default() }
                }
            };
            let _ = tx.send(out);
        });
        if let Err(e) = spawned {
            eprintln!("publisher thread: {e}");
            return 1;
        }
        rx.await.unwrap_or(PubOutcome { abort: Some(1), ..Default::default() })
    } else {
        publish_phase(params, global.clone()).await
    };
    if let Some(code) = out.abort {
        return code;
    }
    let PubOutcome { mut t0s, mut pub_rtt, errors, mut stuck, cpu_s0, cpu_c0, .. } = out;
    t0s.resize(k, 0);
    // ---- wait for everything to arrive
    let t_end = Instant::now();
    while !stuck && global.completed() < k {
        if t_end.elapsed() > tmo {
            stuck = true;
            break;
        }
        let _ = timeout(Duration::from_millis(100), global.notify.notified()).await;
    }
    let cpu_s1 = if server_pid > 0 { sys::cpu_secs(server_pid) } else { 0.0 };
    let cpu_c1 = client_cpu(workers);
    let server_rss = if server_pid > 0 { sys::rss_kib(server_pid) } else { 0 };
    let client_rss = sys::rss_kib(0) + workers.iter().map(|w| sys::rss_kib(w.pid)).sum::<u64>();

    // ---- gather exact figures from every process
    let mut counts: Vec<u64> = st.counts.iter().map(|c| c.load(Ordering::Relaxed) as u64).collect();
    let mut last: Vec<u64> = st.last.iter().map(|l| l.load(Ordering::Relaxed)).collect();
    let mut h = hist::snapshot();
    let mut misc = [
        st.dupes.load(Ordering::Relaxed),
        st.out_of_order.load(Ordering::Relaxed),
        st.other.load(Ordering::Relaxed),
        st.closed.load(Ordering::Relaxed),
    ];
    for w in workers.iter_mut() {
        if let Some(stdin) = w.stdin.as_mut() {
            let _ = stdin.write_all(b"END\n").await;
            let _ = stdin.flush().await;
        }
        let rep = match w.report.take() {
            Some(rx) => timeout(tmo, rx).await.ok().and_then(|r| r.ok()),
            None => None,
        };
        match rep {
            Some(rep) if rep.done && rep.counts.len() == k && rep.last.len() == k => {
                for i in 0..k {
                    counts[i] += rep.counts[i];
                    last[i] = last[i].max(rep.last[i]);
                }
                for (a, b) in h.iter_mut().zip(rep.hist.iter()) {
                    *a += b;
                }
                for (a, b) in misc.iter_mut().zip(rep.misc) {
                    *a += b;
                }
            }
            _ => {
                eprintln!("worker {} sent no complete report; its deliveries are missing", w.pid);
                stuck = true;
            }
        }
    }

    // ---- figures (warm-up excluded), computed like floor-client
    let m = warmup..k;
    let mut ttl: Vec<u64> =
        m.clone().filter(|&i| counts[i] >= n as u64).map(|i| last[i].saturating_sub(t0s[i])).collect();
    ttl.sort_unstable();
    pub_rtt.sort_unstable();
    let first_t0 = t0s[warmup];
    let last_rx = m.clone().map(|i| last[i]).max().unwrap_or(first_t0);
    let wall = last_rx.saturating_sub(first_t0) as f64 / 1e9;
    let per_s = |v: f64| if wall > 0.0 { v / wall } else { 0.0 };
    let delivered: u64 = m.clone().map(|i| counts[i]).sum();
    let expected = (n * (k - warmup)) as u64;
    let us = |v: u64| v as f64 / 1000.0;
    let ms = |v: u64| v as f64 / 1e6;
    println!(
        "RESULT conns={n} broadcasts={} window={window} rate={rate} delivered={delivered} expected={expected} \
stuck={stuck} wall_s={wall:.3} deliveries_per_s={:.0} msgs_per_s={:.1} \
ttl_p50_ms={:.3} ttl_p99_ms={:.3} ttl_max_ms={:.3} \
lat_p50_us={:.1} lat_p99_us={:.1} lat_p999_us={:.1} lat_max_us={:.1} \
server_cpu_pct={:.0} client_cpu_pct={:.0} server_cpu_s={:.3} cpu_us_per_delivery={:.3} \
server_rss_kib={server_rss} client_rss_kib={client_rss} errors={errors} dupes={} out_of_order={} other_frames={} closed={} \
pub_p50_us={:.1} pub_p99_us={:.1} procs={} pipeline={} publisher={}",
        k - warmup,
        per_s(delivered as f64),
        per_s((k - warmup) as f64),
        ms(hist::pct_sorted(&ttl, 0.5)),
        ms(hist::pct_sorted(&ttl, 0.99)),
        ms(ttl.last().copied().unwrap_or(0)),
        us(hist::quantile(&h, 0.5)),
        us(hist::quantile(&h, 0.99)),
        us(hist::quantile(&h, 0.999)),
        us(hist::quantile(&h, 1.0)),
        if server_pid > 0 { per_s(100.0 * (cpu_s1 - cpu_s0)) } else { 0.0 },
        per_s(100.0 * (cpu_c1 - cpu_c0)),
        cpu_s1 - cpu_s0,
        if delivered > 0 { (cpu_s1 - cpu_s0) * 1e6 / delivered as f64 } else { 0.0 },
        misc[0],
        misc[1],
        misc[2],
        misc[3],
        us(hist::pct_sorted(&pub_rtt, 0.5)),
        us(hist::pct_sorted(&pub_rtt, 0.99)),
        workers.len() + 1,
        cli.pipeline.max(1),
        if cli.publisher == Publisher::Thread { "thread" } else { "main" },
    );
    let _ = std::io::stdout().flush();
    if stuck {
        5
    } else if errors > 0 {
        6
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("wsgate-loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn plans_split_connections_and_sources() {
        let c = cli(&["--conns", "10001", "--procs", "3", "--src-base", "2", "--src-ips", "4"]);
        let p = plans(&c, 3);
        assert_eq!(p.iter().map(|p| p.n).collect::<Vec<_>>(), vec![3334, 3334, 3333]);
        assert_eq!(p.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![0, 3334, 6668]);
        assert_eq!(p.iter().map(|p| p.src_base).collect::<Vec<_>>(), vec![2, 6, 10]);
    }

    #[test]
    fn validation() {
        assert!(validate(&cli(&["--conns", "40000"])).unwrap_err().contains("--procs 3"));
        assert_eq!(validate(&cli(&["--conns", "40000", "--procs", "3"])), Ok(3));
        assert!(validate(&cli(&["--conns", "10", "--procs", "40", "--src-ips", "8"])).is_err());
        assert!(validate(&cli(&["--window", "0"])).is_err());
        assert_eq!(cli(&["--broadcasts", "5", "--warmup", "10"]).warmup(), 4);
    }

    #[test]
    fn global_completion() {
        let g = Global::new(3, 2);
        g.mark(0);
        assert_eq!(g.completed(), 0);
        g.mark(0);
        assert_eq!(g.completed(), 1);
        g.fail(1);
        g.mark(1); // a late delivery of a failed publish does not count twice
        assert_eq!(g.completed(), 2);
        g.mark(7); // out of range: ignored
        assert_eq!(g.completed(), 2);
    }

    #[test]
    fn frames_counted_once_and_in_order() {
        let g = Arc::new(Global::new(4, 1));
        let st = Local::new(1, 4, 1, Sink::Global(g.clone()));
        let mut seen = vec![0u64; 1];
        let mut max_seen = -1;
        let f = |seq: u64| {
            format!(r#"{{"id":"x","type":"bench","data":{},"ts":1}}"#, payload::data_json(seq, now_ns(), 200))
        };
        for seq in [0, 2, 1, 2] {
            st.on_frame(f(seq).as_bytes(), &mut seen, &mut max_seen);
        }
        st.on_frame(br#"{"type":"pong"}"#, &mut seen, &mut max_seen);
        st.on_frame(f(9).as_bytes(), &mut seen, &mut max_seen);
        assert_eq!(st.dupes.load(Ordering::Relaxed), 1);
        assert_eq!(st.out_of_order.load(Ordering::Relaxed), 1);
        assert_eq!(st.other.load(Ordering::Relaxed), 2);
        assert_eq!(g.completed(), 3);
        assert_eq!(st.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(), vec![1, 1, 1, 0]);
    }

    #[test]
    fn ready_line_round_trips() {
        let r = Ready { ok: 9, failed: 1, secs: 1.5, rss_kib: 1234 };
        let p = parse_ready(&ready_line(&r)).unwrap();
        assert_eq!((p.ok, p.failed, p.rss_kib), (9, 1, 1234));
    }
}
