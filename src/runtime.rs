//! The runtimes an instance runs on, and which task runs where.
//!
//! - **Session runtime** (multi-threaded, `WORKER_THREADS`, default one per core): every
//!   WebSocket session task and the hub's dispatcher, the work that grows with connections and
//!   deliveries.
//! - **Control runtime** (one thread, `wsgate-http`): the HTTP accept loop and every request
//!   handler (publish, probes, stats), and in Redis mode the Redis clients and the broker's
//!   tasks (relay, heartbeat). A fan-out wakes thousands of session tasks at once; on a shared
//!   runtime a publisher's next request, a health probe or a PUBLISH round trip would wait
//!   behind all of them (measured: a sequential publisher managed ~370 events/s at 1,000
//!   subscribers that way, and each PUBLISH waited ~20 ms at 5,000 per instance).
//!
//! Upgraded sockets move from the control runtime to the session runtime (see
//! [`crate::app::run_with`]).

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::{Builder, Runtime};

use crate::config::Config;
use crate::error::StartError;

/// The accept queue asked for (Linux caps it at net.core.somaxconn, 4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

pub struct Runtimes {
    pub sessions: Runtime,
    pub control: Runtime,
}

impl Runtimes {
    /// `worker_threads`: the session runtime's threads (0: one per core).
    pub fn new(worker_threads: usize) -> std::io::Result<Runtimes> {
        let mut sessions = Builder::new_multi_thread();
        if worker_threads > 0 {
            sessions.worker_threads(worker_threads);
        }
        let sessions = sessions.enable_all().build()?;
        let control = Builder::new_multi_thread().worker_threads(1).thread_name("wsgate-http").enable_all().build()?;
        Ok(Runtimes { sessions, control })
    }
}

/// Runs the gateway as the binary does: listens on `LISTEN_ADDR` (and `ADMIN_LISTEN_ADDR`),
/// serves until `shutdown` resolves, drains, returns.
pub fn run_server(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let rts = Runtimes::new(cfg.process.worker_threads).map_err(StartError::Runtime)?;
    let control = rts.control.handle().clone();
    let result = rts.sessions.block_on(async {
        let bind = |setting: &'static str, addr: SocketAddr| {
            listen(addr).map_err(|source| StartError::Listen { setting, addr, source })
        };
        let public = bind("LISTEN_ADDR", cfg.listen.addr)?;
        let admin = cfg.listen.admin_addr.map(|a| bind("ADMIN_LISTEN_ADDR", a)).transpose()?;
        crate::app::run(cfg, crate::app::Listeners { public, admin }, Some(control), shutdown).await
    });
    drop(rts.control);
    result
}

/// Listens with a deep accept queue. `TcpListener::bind` asks for 128 (std's value): in a
/// reconnect storm (thousands of clients of a dead instance arriving at once) the kernel then
/// drops SYNs and those clients wait a full SYN retransmit (1 s); the storm benchmark counted
/// exactly as many late clients as listen overflows. The kernel caps this at somaxconn.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
