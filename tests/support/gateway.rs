//! The `wsgate` binary as a child process: [`Process`] (any child, its output collected),
//! [`Gateway`] (one instance on port 0, its HTTP endpoints, logs, metrics and stats) and a
//! fleet of instances sharing one secret.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{random_hex, response_json, wait_until, POLL, STEP};

/// How long the gateway may take to print its listening line.
const STARTUP: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process whose stdout and stderr are collected by background threads (so its pipes
/// never fill and block it) and which is killed with SIGKILL on drop unless it has exited.
pub struct Process {
    child: Child,
    pub pid: u32,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The collector threads, joined once the process has exited so its last words are in.
    collectors: Vec<std::thread::JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Starts `cmd` so that it cannot outlive this test process: it gets SIGKILL from the
    /// kernel when the process dies, however it dies (see [`spawn_bound`]).
    pub fn spawn(mut cmd: Command) -> Process {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("{cmd:?}");
        let mut child = spawn_bound(cmd).unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (stdout, out_thread) = collect(child.stdout.take().expect("piped stdout"));
        let (stderr, err_thread) = collect(child.stderr.take().expect("piped stderr"));
        Process { pid: child.id(), child, stdout, stderr, collectors: vec![out_thread, err_thread], exited: None }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The exit status, if the process has exited (reaps it, and waits for the collectors to
    /// read the pipes to their end).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("waitpid");
            if self.exited.is_some() {
                // The pipes end when the last holder closes them: the process, or a child it
                // forked (Redis's background saves). Bounded, so that such a straggler cannot
                // hold the test; what it writes later is lost.
                let deadline = Instant::now() + Duration::from_secs(2);
                while self.collectors.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                for t in self.collectors.drain(..) {
                    if t.is_finished() {
                        let _ = t.join();
                    }
                }
            }
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.exited.is_none(), "process {} already exited", self.pid);
        // SAFETY: plain kill(2) on our own, not yet reaped, child: its PID cannot be reused.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.signal(libc::SIGKILL);
            // Bounded: a SIGKILLed process is gone at once unless the kernel holds it (D state).
            if self.wait_exit_blocking(STEP).is_none() {
                eprintln!("warning: process {} still not reaped {STEP:?} after SIGKILL", self.pid);
            }
        }
    }
}

impl Process {
    /// Like [`Process::wait_exit`], for code that is not async (`Drop`, sync helpers).
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Runs `cmd` to its end, at most `timeout` (then it is killed and the test fails); returns
/// (exit status, stdout, stderr). For sync code; async code has [`run_ok`].
pub fn run_bounded(cmd: Command, timeout: Duration) -> (ExitStatus, String, String) {
    let what = format!("{cmd:?}");
    let mut p = Process::spawn(cmd);
    let status = p.wait_exit_blocking(timeout).unwrap_or_else(|| panic!("{what} still running after {timeout:?}"));
    (status, p.stdout(), p.stderr())
}

// ---------------------------------------------------------------------------------------------
// Children that die with the test process

/// A spawn request for the spawner thread, and where its answer goes.
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` so that it dies with this process:
///
/// - in the child, before `exec`, `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills it
///   when its parent dies, a SIGKILLed test process included (no destructor runs then). The
///   signal fires when the *thread* that forked the child ends, not the process, so every
///   child is forked by one thread that lives as long as the process (the test threads and
///   tokio's blocking threads come and go);
/// - that thread also watches the runner: when this process's parent (cargo test) dies, the
///   test process exits, and its children with it.
///
/// `tests/orphans.rs` proves both.
pub fn spawn_bound(mut cmd: Command) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only prctl, getppid and _exit,
    // which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl took effect: no signal will come, so go now.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner().send((cmd, reply)).expect("the spawner thread lives as long as the process");
    answer.recv_timeout(STEP).unwrap_or_else(|e| panic!("the spawner thread did not answer within {STEP:?}: {e}"))
}

fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (jobs, inbox) = mpsc::channel::<SpawnJob>();
        // SAFETY: getppid cannot fail.
        let runner = unsafe { libc::getppid() };
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || loop {
                match inbox.recv_timeout(Duration::from_millis(250)) {
                    Ok((mut cmd, reply)) => {
                        let _ = reply.send(cmd.spawn());
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                // SAFETY: as above.
                if unsafe { libc::getppid() } != runner {
                    eprintln!("test process {}: its runner (pid {runner}) is gone; exiting", std::process::id());
                    std::process::exit(101);
                }
            })
            .expect("start the spawner thread");
        jobs
    })
}

/// Runs `cmd` to its end (within [`STEP`]), insists on exit status 0, and returns its stdout.
pub async fn run_ok(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let mut p = Process::spawn(cmd);
    let status = p.wait_exit(STEP).await.unwrap_or_else(|| panic!("{what} still running after {STEP:?}"));
    assert!(status.success(), "{what} failed ({status}); stdout:\n{}stderr:\n{}", p.stdout(), p.stderr());
    p.stdout()
}

fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, thread)
}

// ---------------------------------------------------------------------------------------------
// The gateway

/// The `wsgate` command with a clean environment: the test's own settings only, so a
/// `REDIS_URL` or `JWT_SECRET` in the developer's shell cannot leak in. An empty value in `env`
/// removes that variable (e.g. `("JWT_SECRET", "")` for dev mode).
pub fn wsgate_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    cmd.env_clear().args(args);
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

/// A running gateway, killed (SIGKILL) on drop unless the test stopped it.
pub struct Gateway {
    pub proc: Process,
    pub addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR`'s address, when the test set one (`127.0.0.1:0`).
    pub admin_addr: Option<SocketAddr>,
    pub pid: u32,
    /// The HS256 secret this instance verifies tokens with.
    pub secret: String,
    http: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway on 127.0.0.1:0 with a fresh random `JWT_SECRET`; `env` adds to or
    /// overrides those defaults. A non-empty `JWT_SECRET` in `env` becomes [`Gateway::secret`]
    /// (so the instances of one fleet can share theirs).
    pub async fn start(env: &[(&str, &str)]) -> Gateway {
        Gateway::start_with_args(&[], env).await
    }

    pub async fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let secret = match env.iter().rev().find(|(k, _)| *k == "JWT_SECRET") {
            Some((_, v)) if !v.is_empty() => v.to_string(),
            _ => random_hex(),
        };
        let mut all = vec![
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("JWT_SECRET", secret.as_str()),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "info"),
        ];
        all.extend_from_slice(env);
        let mut proc = Process::spawn(wsgate_command(args, &all));
        let start = Instant::now();
        let wants_admin = all.iter().any(|(k, v)| *k == "ADMIN_LISTEN_ADDR" && !v.is_empty());
        let (port, admin_port) = loop {
            let logs = proc.stderr();
            if let Some(port) = listening_port(&logs, "listening on http://127.0.0.1:") {
                let admin = listening_port(&logs, "admin endpoints on http://127.0.0.1:");
                if admin.is_some() || !wants_admin {
                    break (port, admin);
                }
            }
            if let Some(status) = proc.try_exit() {
                panic!("wsgate exited ({status}) before listening; stderr:\n{}", proc.stderr());
            }
            assert!(start.elapsed() < STARTUP, "wsgate did not print its listening line; stderr:\n{}", proc.stderr());
            tokio::time::sleep(POLL).await;
        };
        // no_proxy: a proxy variable in the environment must not reroute loopback requests.
        let http = reqwest::Client::builder().no_proxy().build().expect("reqwest client");
        let pid = proc.pid;
        let admin_addr = admin_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        Gateway { proc, addr: SocketAddr::from(([127, 0, 0, 1], port)), admin_addr, pid, secret, http }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener (`ADMIN_LISTEN_ADDR`), or on the one listener without it.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr.unwrap_or(self.addr))
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Everything the gateway has logged so far (stderr).
    pub fn logs(&self) -> String {
        self.proc.stderr()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(&format!("a log line containing {needle:?}"), STEP, || {
            found = self.logs().lines().find(|l| l.contains(needle)).map(str::to_owned);
            std::future::ready(found.is_some())
        })
        .await;
        found.expect("found by wait_until")
    }

    pub fn sigterm(&self) {
        self.proc.signal(libc::SIGTERM);
    }

    /// Kills the gateway with SIGKILL (no clean-up of any kind) and reaps it.
    pub async fn sigkill(&mut self) {
        self.proc.signal(libc::SIGKILL);
        let status = self.wait_exit(STEP).await;
        assert!(status.is_some(), "wsgate {} still running after SIGKILL", self.pid);
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout).await
    }

    /// Resident memory of the gateway process, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.http_url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` → (status, body as JSON; `Null` when the body is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        response_json(self.get(path).await).await
    }

    pub async fn metrics_text(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.expect("metrics body")
    }

    /// The value of one series, e.g. `wsgate_connections` or
    /// `wsgate_auth_failures_total{reason="expired"}`; panics if it is not exposed.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        metric_value(&text, series).unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }

    /// Waits until `series` equals `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        wait_until(&format!("{series} == {value}"), STEP, || async { self.metric(series).await == value }).await;
    }

    /// Waits until `/health` reports the Redis state `want` (`connecting`, `connected`, ...).
    pub async fn wait_redis_state(&self, want: &str) {
        let what = format!("{} /health to report Redis state {want:?}", self.addr);
        wait_until(&what, STEP, || async { self.get_json("/health").await.1["redis"]["state"] == want }).await;
    }

    /// Polls `/ws/stats` until `pred` holds; returns the stats that satisfied it.
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = Mutex::new(Value::Null);
        wait_until(&format!("{} /ws/stats to show {what}", self.addr), STEP, || async {
            let (status, stats) = self.get_json("/ws/stats").await;
            let ok = status == 200 && pred(&stats);
            *found.lock().unwrap() = stats;
            ok
        })
        .await;
        found.into_inner().unwrap()
    }
}

fn listening_port(logs: &str, line: &str) -> Option<u16> {
    let rest = &logs[logs.find(line)? + line.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One series' value in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, rest) = l.split_once(' ')?;
        (name == series).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

// ---------------------------------------------------------------------------------------------
// A fleet

/// `n` gateways sharing one random JWT secret, named gw0, gw1, ..., each with `env` (later
/// entries win). Does not wait for Redis: see [`wait_all_connected`].
pub async fn start_fleet(n: usize, env: &[(&str, &str)]) -> Vec<Gateway> {
    let secret = random_hex();
    let ids: Vec<String> = (0..n).map(|i| format!("gw{i}")).collect();
    futures_util::future::join_all(ids.iter().map(|id| {
        let mut all = vec![("JWT_SECRET", secret.as_str()), ("INSTANCE_ID", id.as_str())];
        all.extend_from_slice(env);
        async move { Gateway::start(&all).await }
    }))
    .await
}

/// Waits until every gateway reports Redis `connected`.
pub async fn wait_all_connected(gws: &[Gateway]) {
    for g in gws {
        g.wait_redis_state("connected").await;
    }
}

/// Every gateway's logs, labelled, for failure messages.
pub fn fleet_logs(gws: &[Gateway]) -> String {
    gws.iter().enumerate().map(|(i, g)| format!("--- gw{i} ---\n{}", g.logs())).collect()
}
