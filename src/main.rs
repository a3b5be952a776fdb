//! The `wsgate` binary: parse the config, start logging, run the app until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use wsgate::config::{Args, Config};

fn main() -> ExitCode {
    let cfg = match Config::from_args(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
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
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.listen_addr)
            .await
            .map_err(|e| format!("invalid setting LISTEN_ADDR: cannot listen on {}: {e}", cfg.listen_addr))?;
        wsgate::app::run(cfg, listener, wsgate::app::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsgate: {e}");
            ExitCode::FAILURE
        }
    }
}
