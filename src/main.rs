//! The `wsgate` binary: parse the command line, then run an operator subcommand (see
//! `wsgate::cli`), or start logging and run the gateway until SIGTERM/SIGINT (see
//! `wsgate::runtime`).

use std::process::ExitCode;

use wsgate::cli::Invocation;
use wsgate::config::Config;

/// mimalloc instead of glibc malloc: see the commit that added it for the measurements.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mimalloc.h` (v3, which libmimalloc-sys builds; it names no
/// constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed when connections close goes back to the OS at once. With mimalloc's default
/// (a 1 s delay, run only when the freeing thread allocates or frees again) the pages of
/// 15,000 closed connections stayed resident: RSS after they closed was 2.2x what it was before
/// they opened, with immediate purging 1.04x (benches/README.md, "Against the Node.js peer").
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options (an atomic store in its option table), before
        // any thread but this one runs.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    tune_allocator();
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

#[cfg(test)]
mod tests {
    /// The option index is mimalloc's: if a new version moved `mi_option_purge_delay`, this
    /// would read another option (its default in mimalloc v3 is 1,000 ms).
    #[test]
    fn option_15_is_the_purge_delay() {
        // SAFETY: reads one of mimalloc's options.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "mi_option_purge_delay moved");
    }
}
