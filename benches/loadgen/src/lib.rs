//! What the load generator's binaries share: `wsgate-loadgen` (src/main.rs, with its
//! `--mode channels` in src/channels.rs) and `soak` (src/bin/soak.rs).
//!
//! - [`http`]: a minimal HTTP/1.1 keep-alive client (`POST /api/events`, `GET /ws/stats`,
//!   `GET /metrics`);
//! - [`hist`]: latency histograms and percentiles;
//! - [`payload`]: the bench events' bodies and the parsing of delivered frames;
//! - [`sys`]: CLOCK_MONOTONIC, /proc readings, source-address binding, process limits;
//! - here: starting and ending a binary, the `key=value` output lines, JWT expiry time, the
//!   subscribers' WebSocket settings.

pub mod hist;
pub mod http;
pub mod payload;
pub mod sys;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Runs `body` on a multi-threaded runtime with `threads` worker threads and exits the process
/// with the code it returns. `name` prefixes the message if the runtime cannot start.
pub fn run_and_exit(name: &str, threads: usize, body: impl Future<Output = i32>) -> ! {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(body);
    // Exit without tearing down thousands of sockets one by one.
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Writes `s` to stdout at once and flushes it (workers talk to their parent line by line).
pub fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// The `key=value` words of an output line.
pub fn kv(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace().filter_map(|w| w.split_once('=')).collect()
}

/// Seconds since the Unix epoch (for a token's `exp`).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The subscribers' WebSocket settings.
pub fn ws_config() -> WebSocketConfig {
    // Small buffers, like floor-client: thousands of client sockets stay cheap.
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(4096).max_write_buffer_size(64 * 1024)
}

/// The first position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
