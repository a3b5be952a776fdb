//! The `wsgate` binary: parse the command line, then run an operator subcommand (see
//! `wsgate::cli`), or start logging and run the gateway until SIGTERM/SIGINT (see
//! `wsgate::runtime`).

use std::process::ExitCode;

use wsgate::cli::Invocation;
use wsgate::config::Config;

/// mimalloc instead of glibc malloc: see the commit that added it for the measurements.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = match wsgate::cli::parse() {
        // A subcommand reads only its own settings, never the server's.
        Invocation::Run(cmd) => return wsgate::cli::run_blocking(*cmd),
        Invocation::Serve(settings) => settings,
    };
    let cfg = match Config::from_args(*settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
    wsgate::logging::init(cfg.process.log_format);
    match wsgate::runtime::run_server(cfg, wsgate::app::shutdown_signal()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsgate: {e}");
            ExitCode::FAILURE
        }
    }
}
