//! The `wsgate` binary: parse the config, start logging, run the app until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use wsgate::cli::Cli;
use wsgate::config::Config;

/// mimalloc instead of glibc malloc: see the commit that added it for the measurements.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let Cli { command, settings } = Cli::parse();
    let cfg = match Config::from_args(settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(cmd) = command {
        return run_command(cmd, &cfg);
    }
    wsgate::logging::init(cfg.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The HTTP server's own runtime: see `app::run_with` for why it is apart from the sessions.
    let http_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("wsgate-http")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsgate: cannot start the HTTP runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let http = http_rt.handle().clone();
    let result = rt.block_on(async {
        let listener = listen(cfg.listen_addr)
            .map_err(|e| format!("invalid setting LISTEN_ADDR: cannot listen on {}: {e}", cfg.listen_addr))?;
        wsgate::app::run(cfg, listener, Some(http), wsgate::app::shutdown_signal()).await
    });
    drop(http_rt);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An operator subcommand on a small single-threaded runtime; no logging set-up, so its
/// output is only what it prints.
fn run_command(cmd: wsgate::cli::Command, cfg: &Config) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(wsgate::cli::run(cmd, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Listens with a deep accept queue. `TcpListener::bind` asks for 128 (std's value): in a
/// reconnect storm (thousands of clients of a dead instance arriving at once) the kernel then
/// drops SYNs and those clients wait a full SYN retransmit (1 s); the storm benchmark counted
/// exactly as many late clients as listen overflows. The kernel caps this at somaxconn.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The accept queue asked for (Linux caps it at net.core.somaxconn, 4096 by default).
const LISTEN_BACKLOG: u32 = 4096;
