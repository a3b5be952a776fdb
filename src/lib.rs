//! wsgate: a WebSocket fan-out gateway.
//!
//! Backends `POST /api/events`; browsers connected to `GET /ws/tasks` receive them. One
//! instance needs nothing else; with Redis, many instances share one audience.
//!
//! The crate, one line a module, in the order an event flows through it:
//!
//! - [`config`]: flags and environment variables → a validated `Config` of one part per component
//!   (`listen`, `auth`, `session`, `outbox`, `history`, `publish`, `limits`, `instance`, `redis`,
//!   `process`); bad values name the setting. A leaf: it imports nothing but `jwt_key`.
//! - [`error`]: `StartError`, why an instance could not start (with its source).
//! - [`app`]: wires hub, broker and HTTP server; owns start-up, shutdown and drain.
//! - [`state`]: `AppState`, what every handler and session shares (apart from `app`, so HTTP
//!   depends on the state and not on the app).
//! - [`http`]: the accept loop of each listener (`LISTEN_ADDR`, `ADMIN_LISTEN_ADDR`) and
//!   `http/`: the route table (`router`, matchit), the WebSocket upgrade, publishing (single and
//!   batch), the admin API (disconnect, channels, history, presence), probes/stats/metrics and
//!   the OpenAPI description (`docs/openapi.yaml`), JSON errors.
//! - [`auth`]: JWT → `Claims`; typed `AuthError` whose reason is a metric label.
//! - [`jwt_key`]: PEM public keys (RS256/ES256), for the settings check and for verification.
//! - [`jwks`]: `JWT_JWKS_URL`: the key set, fetched, cached, refreshed, picked by `kid`.
//! - [`channel`]: channel names, who may join them (the token's `channels` claim), refusals.
//! - [`event`]: `Event`, its audience, the publish body parser, the frame encoding.
//! - [`idempotency`]: `Idempotency-Key` validation, body fingerprint, the local key store.
//! - [`broker`]: the `Broker` contract (its doc states the delivery guarantee and what `recovered: true`
//!   promises) and `Fleet` (presence, totals, channel counts, disconnects); the memory broker and the
//!   Redis broker (`broker/redis/`: one relay task owns delivery state; keys, wire format, Lua scripts,
//!   outbox, routing, the window of newest entries that answers resumes, fleet, presence, and the
//!   control channel for operators' disconnects).
//! - [`history`]: stream ids (`<ms>-<seq>`), the memory history ring, what a resume replays.
//! - [`hub`]: the local registry (user → connections), counts; brokers submit frames encoded once
//!   (where the event entered history) and the dispatcher queues the same bytes everywhere.
//! - [`limits`]: connection caps (instance, user, IP), upgrade and message rates, the client IP behind trusted proxies.
//! - [`outbox`]: the bounded per-connection queue; overflow closes with 1013.
//! - [`protocol`]: the client wire protocol: every frame the server sends, every message it accepts.
//! - [`session`]: one WebSocket connection: register, select over outbox/reads/timer, teardown.
//! - [`disconnect`]: why a connection ended → close code (1001, 1002, 1007, 1008, 1009, 1012, 1013,
//!   4001), reason text, metric label.
//! - [`stats`]: the `/ws/stats` and `/health` bodies.
//! - [`metrics`]: Prometheus metrics.
//! - [`logging`]: tracing set-up (text or JSON); outside strings escaped in text logs.
//! - [`runtime`]: the session and control runtimes, and which task runs where; `run_server`.
//! - [`cli`]: the command line: the gateway's settings or one operator subcommand (`publish`, `listen`,
//!   `token`, `checktoken`, `stats`, `channels`, `history`, `disconnect`), over http(s) and ws(s).

// The public surface: what the binary, the integration tests and the fuzz targets use.
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod logging;
pub mod runtime;

mod broker;
mod channel;
mod disconnect;
mod event;
mod history;
mod http;
mod hub;
mod idempotency;
mod jwks;
mod jwt_key;
mod limits;
mod metrics;
mod outbox;
mod protocol;
mod session;
mod state;
mod stats;

/// The decoders the fuzz targets (`fuzz/`) drive: every parser of untrusted input, and what
/// checks its output. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::broker::redis::decode_for_fuzzing as decode_redis_message;
    pub use crate::channel::valid_name;
    pub use crate::event::{Audience, Event, PublishRequest, MAX_TYPE_CHARS, MAX_USERS};
    pub use crate::protocol::{parse_request, ChannelOp, Request};
}
