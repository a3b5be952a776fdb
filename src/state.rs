//! The state every request handler and session shares: one per instance. Built and wired by
//! [`crate::app`]; read by [`crate::http`] and [`crate::stats`] (which is why it lives apart
//! from both: no module here imports the app).

use std::num::NonZeroU32;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::broker::{Broker, Fleet};
use crate::config::{ListenConfig, PublishConfig, SessionConfig};
use crate::event::IdGenerator;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::session::SessionSettings;

pub(crate) type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Everything a request handler needs; one per instance.
pub struct AppState {
    /// The listeners' settings: origins, trusted proxies, the demo page.
    pub listen: ListenConfig,
    /// `POST /api/events`: body cap (the rate limit is `limiter`).
    pub publish: PublishConfig,
    /// Dev mode: tokens signed with a random per-process key.
    pub dev_mode: bool,
    /// How long the drain waits for sockets to close (`DRAIN_TIMEOUT_MS`).
    pub drain_timeout: Duration,
    /// Clock skew allowed on `exp` (`JWT_LEEWAY_SECS`): a session lives until `exp` + this.
    pub leeway: Duration,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// Presence and fleet totals (the same object as `broker`, seen from the other side).
    pub fleet: Arc<dyn Fleet>,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub ids: IdGenerator,
    /// Per token subject; `None` when `PUBLISH_RATE_PER_SEC=0`.
    pub(crate) limiter: Option<KeyedLimiter>,
    /// Connection caps and the upgrade rate per client IP.
    pub conn_limits: Arc<crate::limits::Limiter>,
    /// Set on SIGTERM: `/ready` answers 503 and upgrades are refused.
    pub draining: AtomicBool,
    pub started: Instant,
    /// Every WebSocket session task, so the drain can wait for their closing handshakes.
    pub sessions: TaskTracker,
    pub session_settings: SessionSettings,
    pub ws_config: WebSocketConfig,
    /// The runtime that runs sessions, the dispatcher and the broker: the one `AppState::new`
    /// was called on. HTTP may run on another (see [`crate::app::run_with`]).
    pub session_rt: tokio::runtime::Handle,
}

impl AppState {
    /// `None` when `subject` may publish `n` events now; `Some(Some(wait))` when it has used up
    /// its budget; `Some(None)` when `n` is more than the burst allows at all.
    pub fn rate_limited(&self, subject: &str, n: usize) -> Option<Option<Duration>> {
        let limiter = self.limiter.as_ref()?;
        let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&subject.to_string(), n) {
            Ok(Ok(())) => None,
            Ok(Err(not_until)) => Some(Some(not_until.wait_time_from(DefaultClock::default().now()))),
            Err(_insufficient_capacity) => Some(None),
        }
    }
}

/// tungstenite's buffers, sized for many mostly idle sockets. Its defaults (128 KiB read and
/// write buffers) cost ~137 KB per socket once a frame has been read. The read buffer is
/// allocated for every socket: 256 bytes (`WS_READ_BUFFER_BYTES`) measured 4.8 KB of gateway
/// memory per idle connection, 2 KiB 6.7 KB, 4 KiB 7.8 KB. The write buffer only grows while writing; the
/// cap lets it hold one event as large as a publisher may send, plus the frame envelope.
pub fn ws_config(session: &SessionConfig, max_body_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(session.ws_read_buffer_bytes)
        .write_buffer_size(session.ws_write_buffer_bytes)
        .max_write_buffer_size(session.ws_write_buffer_bytes + max_body_bytes + 64 * 1024)
        .max_message_size(Some(session.max_message_bytes))
        .max_frame_size(Some(session.max_message_bytes))
}
