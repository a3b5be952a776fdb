//! The `wsgate` binary: parse the command line, then run an operator subcommand, or start
//! logging and run the gateway until SIGTERM/SIGINT (see `wsgate::runtime`).

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
    wsgate::logging::init(cfg.process.log_format);
    match wsgate::runtime::run_server(cfg, wsgate::app::shutdown_signal()) {
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
