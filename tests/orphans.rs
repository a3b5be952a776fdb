//! Every `wsgate` and `redis-server` a test starts dies with the test process, also when that
//! process is SIGKILLed (no destructor runs) or its runner (`cargo test`) dies: see
//! `support::spawn_bound`. Each test runs this very test binary as a child, filtered to
//! [`orphan_helper`], which starts a gateway and a Redis, writes their PIDs to a file and
//! waits; the test then kills the child (or the shell standing in for its runner) and insists
//! that every process of it is gone within a few seconds. Without the mechanism they would
//! live on: the helper would sleep for its full minute, the gateway and Redis forever.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// Names the file the helper writes its PIDs to; set only for the child.
const HELPER_ENV: &str = "WSGATE_ORPHAN_HELPER_PIDS";
/// How long the helper waits to be killed before it ends on its own.
const HELPER_LIFE: Duration = Duration::from_secs(60);
/// How long the processes may take to die once their parent is gone.
const DEATH: Duration = Duration::from_secs(5);

/// One process as the helper saw it: its PID and its start time (field 22 of
/// `/proc/PID/stat`), so that a PID reused by an unrelated process does not count as ours.
#[derive(Clone, Debug, PartialEq)]
struct Proc {
    what: String,
    pid: i32,
    start: u64,
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is starttime.
    fields.get(22 - 3)?.parse().ok()
}

/// Whether the process still runs: present with the same start time and not a zombie.
fn running(p: &Proc) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
    state != Some('Z') && start_time(p.pid) == Some(p.start)
}

/// The child's body: runs only when [`HELPER_ENV`] names a file (the tests below set it).
/// Run as a plain test, it has nothing to do.
#[tokio::test]
async fn orphan_helper() {
    let Some(path) = std::env::var_os(HELPER_ENV) else {
        println!("orphan_helper: not started by a test of this file; nothing to do");
        return;
    };
    let gw = Gateway::start(&[]).await;
    let redis = RedisServer::start().await;
    let me = std::process::id() as i32;
    let lines: Vec<String> =
        [("helper", me), ("wsgate", gw.pid as i32), ("redis-server", redis.proc.as_ref().unwrap().pid as i32)]
            .iter()
            .map(|(what, pid)| format!("{what} {pid} {}", start_time(*pid).expect("own children have a /proc entry")))
            .collect();
    // Written whole, then renamed: the test never reads half a file.
    let tmp = Path::new(&path).with_extension("tmp");
    std::fs::write(&tmp, lines.join("\n")).expect("write the PID file");
    std::fs::rename(&tmp, &path).expect("rename the PID file");
    tokio::time::sleep(HELPER_LIFE).await;
}

/// Starts the helper through `cmd` (this test binary, or a shell that runs it) and returns the
/// processes it reports, once both children serve.
async fn start_helper(cmd: Command, dir: &TempDir) -> (Process, Vec<Proc>) {
    let proc = Process::spawn(cmd);
    let pids = dir.path().join("pids");
    let mut found = Vec::new();
    wait_until("the helper to report its processes", Duration::from_secs(60), || {
        if let Ok(text) = std::fs::read_to_string(&pids) {
            found = text
                .lines()
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    Proc { what: f[0].to_owned(), pid: f[1].parse().unwrap(), start: f[2].parse().unwrap() }
                })
                .collect();
        }
        std::future::ready(!found.is_empty())
    })
    .await;
    assert_eq!(found.iter().map(|p| p.what.as_str()).collect::<Vec<_>>(), ["helper", "wsgate", "redis-server"]);
    for p in &found {
        assert!(running(p), "{p:?} should be running; helper output:\n{}{}", proc.stdout(), proc.stderr());
    }
    (proc, found)
}

fn helper_command(dir: &TempDir) -> Command {
    let exe = std::env::current_exe().expect("this test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["orphan_helper", "--exact", "--nocapture", "--test-threads=1"]).env(HELPER_ENV, dir.path().join("pids"));
    cmd
}

/// Waits until none of `procs` runs; if some still do after [`DEATH`], kills them (ours: the
/// helper started them) and fails naming them.
async fn assert_all_die(procs: &[Proc], context: &str) {
    let deadline = std::time::Instant::now() + DEATH;
    while procs.iter().any(running) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivors: Vec<Proc> = procs.iter().filter(|p| running(p)).cloned().collect();
    for p in &survivors {
        // SAFETY: kill(2) on a PID whose start time we checked just now: the process we started.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
    assert!(survivors.is_empty(), "still running {DEATH:?} after {context}: {survivors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_test_process_takes_its_gateway_and_redis_with_it() {
    let dir = TempDir::new("orphans");
    let (mut helper, procs) = start_helper(helper_command(&dir), &dir).await;
    helper.signal(libc::SIGKILL);
    assert!(helper.wait_exit(STEP).await.is_some(), "the helper survived SIGKILL");
    assert_all_die(&procs, "the test process was SIGKILLed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_process_whose_runner_dies_exits_and_takes_its_children_with_it() {
    let dir = TempDir::new("orphans");
    // The shell stands in for `cargo test`: the helper is its child, and the shell is killed.
    let helper = helper_command(&dir);
    let mut runner = Command::new("sh");
    runner.arg("-c").arg("\"$@\" & wait").arg("sh").arg(helper.get_program()).args(helper.get_args());
    runner.envs(helper.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let (mut runner, procs) = start_helper(runner, &dir).await;
    runner.signal(libc::SIGKILL);
    assert!(runner.wait_exit(STEP).await.is_some(), "the runner survived SIGKILL");
    assert_all_die(&procs, "the test process's runner was SIGKILLed").await;
}
