//! Wires the hub, the broker and the HTTP server together; owns start-up, shutdown and drain.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, Fleet};
use crate::config::Config;
use crate::disconnect::Disconnect;
use crate::error::StartError;
use crate::event::IdGenerator;
use crate::http::Listener;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::session::SessionSettings;
pub use crate::state::{ws_config, AppState};

impl AppState {
    /// Builds the state with the broker the config asks for: Redis when `REDIS_URL` is set,
    /// memory otherwise. Must run inside the runtime (the Redis broker starts tasks).
    pub fn new(cfg: Config) -> Result<Arc<AppState>, StartError> {
        Self::new_on(cfg, None)
    }

    /// Like [`AppState::new`], with the Redis clients' tasks on `control_rt` (the HTTP
    /// runtime) when given: a PUBLISH, its answer and the subscription must not wait behind
    /// thousands of session tasks woken by a fan-out (measured: ~20 ms per publish at 5k
    /// subscribers per instance when they shared the session runtime).
    pub fn new_on(cfg: Config, control_rt: Option<&tokio::runtime::Handle>) -> Result<Arc<AppState>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(cfg.outbox, metrics.clone(), &cfg.instance.id);
        hub.spawn_dispatcher();
        let (broker, fleet): (Arc<dyn Broker>, Arc<dyn Fleet>) = match &cfg.redis {
            Some(redis) => {
                let _on_control = control_rt.map(|h| h.enter());
                let b = RedisBroker::start(
                    redis,
                    &cfg.instance,
                    cfg.history,
                    cfg.publish.idempotency_window,
                    &hub,
                    metrics.clone(),
                )?;
                (b.clone(), b)
            }
            None => {
                let b = Arc::new(MemoryBroker::new(hub.clone(), cfg.history, cfg.publish.idempotency_window));
                (b.clone(), b)
            }
        };
        Self::with_broker(cfg, hub, broker, fleet, metrics)
    }

    /// The state around a broker built by the caller. Each component gets its part of `cfg`.
    pub fn with_broker(
        cfg: Config,
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        fleet: Arc<dyn Fleet>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<AppState>, StartError> {
        let auth = Authenticator::new(&cfg.auth)?;
        let limiter = NonZeroU32::new(cfg.publish.rate_per_sec).map(|rate| {
            let burst = NonZeroU32::new(cfg.publish.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Ok(Arc::new(AppState {
            dev_mode: cfg.dev_mode(),
            session_settings: SessionSettings::new(&cfg.session, cfg.process.drain_timeout),
            ws_config: ws_config(&cfg.session, cfg.publish.max_body_bytes),
            listen: cfg.listen,
            publish: cfg.publish,
            drain_timeout: cfg.process.drain_timeout,
            leeway: cfg.auth.leeway,
            hub,
            broker,
            fleet,
            auth,
            metrics,
            ids: IdGenerator::new(),
            limiter,
            conn_limits: crate::limits::Limiter::new(cfg.limits),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            sessions: TaskTracker::new(),
            session_rt: tokio::runtime::Handle::current(),
        }))
    }
}

/// Where an instance listens: `LISTEN_ADDR`, and `ADMIN_LISTEN_ADDR` when set (operators'
/// endpoints then move there; see [`crate::http::router`]).
pub struct Listeners {
    pub public: TcpListener,
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Listeners {
        Listeners { public, admin: None }
    }
}

/// Runs an instance on `listeners` until `shutdown` resolves, then drains and returns.
/// `http_rt`: where the HTTP server runs (see [`run_with`]); `None` = the current runtime.
pub async fn run(
    cfg: Config,
    listeners: impl Into<Listeners>,
    http_rt: Option<tokio::runtime::Handle>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let st = AppState::new_on(cfg, http_rt.as_ref())?;
    run_with(st, listeners.into(), http_rt, shutdown).await
}

/// Like [`run`], with a state built by the caller (another broker, tests).
///
/// The binary gives the HTTP server a runtime of its own (one thread) apart from the sessions:
/// a fan-out wakes thousands of session tasks at once, and on a shared runtime the publisher's
/// next request, and the health probes, would wait behind all of them (a sequential publisher
/// measured ~370 events/s at 1,000 subscribers that way). Upgraded sockets move to the
/// session runtime.
pub async fn run_with(
    st: Arc<AppState>,
    listeners: Listeners,
    http_rt: Option<tokio::runtime::Handle>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let status = st.broker.status();
    tracing::info!(
        instance_id = %st.hub.instance_id(),
        mode = status.mode,
        version = env!("CARGO_PKG_VERSION"),
        "wsgate starting ({} mode)",
        status.mode
    );
    if st.dev_mode {
        announce_dev_mode(&st);
    }

    let stop_http = CancellationToken::new();
    let http_rt = http_rt.unwrap_or_else(tokio::runtime::Handle::current);
    let mut servers = Vec::new();
    let public_routes = if listeners.admin.is_some() { Listener::Public } else { Listener::All };
    let all = std::iter::once((listeners.public, public_routes, "LISTEN_ADDR", st.listen.addr)).chain(
        listeners
            .admin
            .map(|l| (l, Listener::Admin, "ADMIN_LISTEN_ADDR", st.listen.admin_addr.unwrap_or(st.listen.addr))),
    );
    for (listener, routes, setting, configured) in all {
        let listen_error = |source| StartError::Listen { setting, addr: configured, source };
        let addr = listener.local_addr().map_err(listen_error)?;
        // A listener belongs to the reactor it was created on: hand it over as a std socket.
        let listener = listener.into_std().map_err(listen_error)?;
        let (st, stop) = (st.clone(), stop_http.clone());
        servers.push(http_rt.spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(l) => crate::http::serve(l, st, routes, stop).await,
                Err(e) => tracing::error!(error = %e, "cannot serve HTTP"),
            }
        }));
        match routes {
            Listener::Admin => tracing::info!("admin endpoints on http://{addr}"),
            _ => tracing::info!("listening on http://{addr}"),
        }
    }
    let stop_janitor = CancellationToken::new();
    let janitor = tokio::spawn(janitor(st.clone(), stop_janitor.clone()));

    shutdown.await;
    drain(&st).await;
    // The HTTP servers next: in-flight requests finish (a publish accepted now still reaches
    // the broker, which is running), new ones are not taken.
    stop_http.cancel();
    for server in servers {
        let _ = server.await;
    }
    // Then the broker, last: nothing can publish any more.
    st.broker.shutdown().await;
    stop_janitor.cancel();
    let _ = janitor.await;
    tracing::info!("stopped");
    Ok(())
}

/// The first half of the shutdown sequence, in this order:
/// 1. refuse new upgrades and report not-ready, so load balancers stop sending clients here;
/// 2. close every socket with 1001 (through the hub, so sessions registering concurrently
///    are closed too);
/// 3. wait, up to `DRAIN_TIMEOUT_MS`, for the sessions' closing handshakes.
///
/// Then [`run_with`] stops the HTTP server and, last, the broker (its heartbeat key goes).
async fn drain(st: &AppState) {
    st.draining.store(true, Ordering::Release);
    let n = st.hub.close_all(Disconnect::Shutdown);
    tracing::info!(connections = n, timeout_ms = st.drain_timeout.as_millis() as u64, "draining");
    st.sessions.close();
    if tokio::time::timeout(st.drain_timeout, st.sessions.wait()).await.is_err() {
        tracing::warn!(left = st.hub.connection_count(), "drain timeout reached; dropping remaining sockets");
    }
}

/// Periodic housekeeping: forget idle rate-limit buckets so the limiter's memory follows the
/// number of active publishers, not every subject ever seen.
async fn janitor(st: Arc<AppState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Some(l) = &st.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
        st.conn_limits.tidy();
    }
}

fn announce_dev_mode(st: &AppState) {
    let day = Duration::from_secs(24 * 3600);
    tracing::warn!(
        "DEV MODE: no JWT_SECRET, JWT_SECRET_FILE, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL is set; tokens are signed with a random \
         key that dies with this process. Never run like this in production."
    );
    if let (Some(user), Some(publisher)) =
        (st.auth.mint("dev-user", None, day), st.auth.mint("dev-publisher", Some("publish"), day))
    {
        tracing::warn!("dev user token: {user}");
        tracing::warn!("dev publish token: {publisher}");
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
