//! The HTTP side: the accept loop of each listener, and dispatch through the route table.
//!
//! - [`router`]: every endpoint in one table, and which listener serves which
//!   (`ADMIN_LISTEN_ADDR`);
//! - [`upgrade`]: `GET /ws/tasks`, the WebSocket upgrade;
//! - [`publish`]: `POST /api/events` and `POST /api/events/batch`;
//! - [`admin`]: the admin API (disconnect, channels, history) and presence;
//! - [`ops`]: probes, health, stats, metrics, the OpenAPI description, the demo page;
//! - [`respond`]: JSON bodies and the refusals several endpoints share.
//!
//! HTTP/1.1 only (keep-alive for publishers, upgrades for browsers): an upgraded connection is
//! downcast back to its `TcpStream`, which lets the session gate reads on socket readiness and
//! drops hyper's per-connection buffers. HTTP/2 would need hyper's auto builder, whose rewind
//! wrapper hides the TcpStream.

mod admin;
mod ops;
mod publish;
mod respond;
pub mod router;
mod upgrade;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::respond::{error, Body};
pub use self::router::Listener;
use self::router::{Resolved, Route, Router};
use crate::state::AppState;

/// How long a client may take to send request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight HTTP requests get to finish once the server stops.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// Accepts connections on `listener` (serving the routes of `which`) until `shutdown` is
/// cancelled, then gives in-flight HTTP requests a short grace period. Upgraded WebSockets are
/// not HTTP connections any more: the app closes them (with 1001) through the hub before
/// cancelling this loop.
pub async fn serve(listener: TcpListener, st: Arc<AppState>, which: Listener, shutdown: CancellationToken) {
    let router = Arc::new(Router::new(which, st.listen.demo_page));
    // hyper-util's GracefulShutdown does not take upgradeable connections, so each connection
    // task watches `shutdown` itself and the tracker waits for them.
    let conns = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the limit may clear.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (st, router) = (st.clone(), router.clone());
        let peer = peer.ip();
        let svc = service_fn(move |req| {
            let (st, router) = (st.clone(), router.clone());
            async move { Ok::<_, Infallible>(dispatch(req, st, &router, peer).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            // Publishers that pipeline requests get their answers in one write.
            .pipeline_flush(true)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    conns.close();
    let _ = tokio::time::timeout(HTTP_GRACE, conns.wait()).await;
}

async fn dispatch(req: Request<Incoming>, st: Arc<AppState>, router: &Router, peer: IpAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (spec, params) = match router.resolve(req.method(), &path) {
        Resolved::Found(spec, params) => (spec, params),
        Resolved::WrongMethod(allow) => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, &format!("{path} accepts {allow} only"));
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            return r;
        }
        Resolved::NotFound => return error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    };
    let param = |name: &str| params.get(name).unwrap_or_default().to_string();
    match spec.route {
        Route::Upgrade => upgrade::upgrade(req, &st, peer).await,
        Route::Publish => publish::publish(req, &st).await,
        Route::PublishBatch => publish::publish_batch(req, &st).await,
        Route::Live => ops::live(),
        Route::Ready => ops::ready(&st),
        Route::Health => ops::health(&st),
        Route::Metrics => ops::metrics(&st),
        Route::Stats => ops::ws_stats(&st).await,
        Route::OpenApi => ops::openapi(),
        Route::Demo => ops::demo(),
        Route::DemoClient => ops::demo_client(),
        Route::Presence => admin::presence(req, &param("name"), &st).await,
        Route::Channels => admin::channels(req, &st).await,
        Route::History => admin::history(req, &st).await,
        Route::Disconnect => admin::disconnect(req, &param("sub"), &st).await,
    }
}
