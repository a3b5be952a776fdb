//! Helpers shared by every integration test: start the real `wsgate` binary on port 0, mint
//! tokens, connect WebSocket clients (a real one and a raw socket that never reads), publish,
//! read metrics, and start throwaway `redis-server`s (plain, with a password or ACL users, as a
//! Cluster node, or with TLS).
//!
//! Every wait here is bounded: a test that hangs tells nobody anything, a test that fails with
//! "timed out waiting for X" does.
//!
//! By subject: [`gateway`] (the binary, its processes, logs, metrics and stats), [`ws`]
//! (WebSocket clients), [`http`] (publishing and the other HTTP calls), [`redis`] (throwaway
//! Redis servers, Cluster, TLS files), [`tokens`] (JWTs), [`faults`] (the fault tests' oracle
//! and processes). This file keeps the small utilities they share, and re-exports them all so
//! that `use support::*;` brings in everything.

// Each test file is its own crate and uses a different subset of these helpers.
#![allow(dead_code)]

/// The exactly-once oracle and the Sentinel/replica processes of the fault tests.
pub mod faults;
mod gateway;
mod http;
mod redis;
mod tokens;
mod ws;

pub use gateway::*;
pub use http::*;
pub use redis::*;
pub use tokens::*;
pub use ws::*;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one expected frame, response or state change may take. Generous: the suite runs
/// debug builds on two shared cores.
pub const STEP: Duration = Duration::from_secs(10);

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `cond` until it holds, or panics naming `what` after `timeout`. Returns how long it took.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// `fut` must finish within `timeout`; panics naming `what` otherwise.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| panic!("timed out after {timeout:?}: {what}"))
}

// ---------------------------------------------------------------------------------------------
// Small utilities

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// A random hex string (std's hasher keys are random per process and per `RandomState`).
pub fn random_hex() -> String {
    format!("{:016x}{:016x}", RandomState::new().hash_one(1u8), RandomState::new().hash_one(2u8))
}

/// A loopback port that was free a moment ago (never 6379, the default Redis port). Racy: by
/// the time something binds it, another process may have. Tests hold ports instead
/// ([`PortHold`], and [`RedisServer`]'s constructors retry on a collision); this stays for
/// what needs a number that nothing listens on.
pub fn free_port() -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().unwrap().port();
    assert_ne!(port, 6379, "never touch the default Redis port");
    port
}

/// A loopback port held for this test by a socket that is bound but does not listen: connecting
/// to it is refused (nothing serves there), and no one else gets it, neither from `bind(0)` nor
/// by binding it without `SO_REUSEADDR`. A server that sets `SO_REUSEADDR` (redis-server,
/// tokio's listeners) binds it while it is held, and may be stopped and started again on it
/// while the hold lasts: the port cannot be taken in between. Released on drop.
pub struct PortHold {
    socket: tokio::net::TcpSocket,
    port: u16,
}

impl PortHold {
    pub fn new() -> PortHold {
        loop {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            socket.bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0");
            let port = socket.local_addr().expect("local_addr").port();
            if port != 6379 {
                return PortHold { socket, port };
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A listener of our own on the held port (the hold stays: drop the listener and the port
    /// is refused again, still held).
    pub fn listen(&self) -> tokio::net::TcpListener {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(([127, 0, 0, 1], self.port).into()).unwrap_or_else(|e| panic!("bind held port {}: {e}", self.port));
        socket.listen(1024).unwrap_or_else(|e| panic!("listen on held port {}: {e}", self.port))
    }
}

impl Default for PortHold {
    fn default() -> PortHold {
        PortHold::new()
    }
}

impl std::fmt::Debug for PortHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortHold({}, {:?})", self.port, self.socket.local_addr().ok())
    }
}

/// A fresh directory under the system temp dir, removed with its contents on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("wsgate-{label}-{}-{}", std::process::id(), random_hex()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
