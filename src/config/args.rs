//! The command line's settings: every flag with the environment variable behind it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The header trusted proxies name the client in (`CLIENT_IP_HEADER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientIpHeader {
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    Forwarded,
    #[value(name = "x-real-ip")]
    XRealIp,
}

/// Log output format (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The gateway's settings, each a flag with an environment variable behind it (the flag
/// wins). The command line around them (subcommands, `--help` text) is [`crate::cli::Cli`].
#[derive(Parser, Debug, Clone)]
#[command(name = "wsgate", version)]
pub struct Args {
    /// HTTP and WebSocket listener address.
    #[arg(
        help_heading = "Listeners",
        long,
        env = "LISTEN_ADDR",
        value_name = "LISTEN_ADDR",
        default_value = "0.0.0.0:8000"
    )]
    pub listen_addr: SocketAddr,

    /// Redis URL. Unset: single-instance in-memory mode. Forms: redis://[user:pass@]host:port[/db],
    /// rediss:// (TLS), redis-cluster://, redis-sentinel://.
    #[arg(help_heading = "Redis (many instances)", long, env = "REDIS_URL", value_name = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel the gateway uses.
    #[arg(
        help_heading = "Redis (many instances)",
        long,
        env = "REDIS_KEY_PREFIX",
        value_name = "REDIS_KEY_PREFIX",
        default_value = "websocket:"
    )]
    pub redis_key_prefix: String,

    /// The token settings (key source, issuer, audience, leeway): one definition, which the
    /// operator subcommands flatten too.
    #[command(flatten)]
    pub auth: AuthArgs,

    /// This instance's name in Redis and in /ws/stats. Default: host name + random suffix.
    #[arg(help_heading = "Redis (many instances)", long, env = "INSTANCE_ID", value_name = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Heartbeat period; the heartbeat key lives 3 periods.
    #[arg(
        help_heading = "Redis (many instances)",
        long,
        env = "HEARTBEAT_INTERVAL_MS",
        value_name = "HEARTBEAT_INTERVAL_MS",
        default_value_t = 5000
    )]
    pub heartbeat_interval_ms: u64,

    /// Log format.
    #[arg(
        help_heading = "Process",
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Comma-separated list of Origins allowed to open WebSockets (e.g.
    /// https://app.example.com). Unset: any. Requests without an Origin header (non-browser
    /// clients) are always allowed.
    #[arg(help_heading = "Listeners", long, env = "ALLOWED_ORIGINS", value_name = "ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,

    /// Largest inbound WebSocket message or frame, in bytes; larger closes the socket with 1009.
    #[arg(help_heading = "Connections", long, env = "MAX_MESSAGE_BYTES", value_name = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Per-connection outbound queue limit in messages; overflow closes the socket with 1013.
    #[arg(
        help_heading = "Connections",
        long,
        env = "OUTBOX_MAX_MESSAGES",
        value_name = "OUTBOX_MAX_MESSAGES",
        default_value_t = 4096
    )]
    pub outbox_max_messages: usize,

    /// Per-connection outbound queue limit in bytes; overflow closes the socket with 1013.
    #[arg(help_heading = "Connections", long, env = "OUTBOX_MAX_BYTES", value_name = "OUTBOX_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub outbox_max_bytes: usize,

    /// A connection silent for this long is sent a WebSocket ping.
    #[arg(
        help_heading = "Connections",
        long,
        env = "PING_INTERVAL_MS",
        value_name = "PING_INTERVAL_MS",
        default_value_t = 25_000
    )]
    pub ping_interval_ms: u64,

    /// After a ping, a connection that sends nothing for this long is dropped.
    #[arg(
        help_heading = "Connections",
        long,
        env = "PONG_TIMEOUT_MS",
        value_name = "PONG_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub pong_timeout_ms: u64,

    /// Largest accepted POST /api/events body, in bytes (413 above).
    #[arg(help_heading = "Publishing", long, env = "MAX_BODY_BYTES", value_name = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Sustained publishes per second allowed per token subject (429 above); 0 turns the limit off.
    #[arg(
        help_heading = "Publishing",
        long,
        env = "PUBLISH_RATE_PER_SEC",
        value_name = "PUBLISH_RATE_PER_SEC",
        default_value_t = 1000
    )]
    pub publish_rate_per_sec: u32,

    /// Publishes a subject may make in a burst above the sustained rate.
    #[arg(
        help_heading = "Publishing",
        long,
        env = "PUBLISH_BURST",
        value_name = "PUBLISH_BURST",
        default_value_t = 2000
    )]
    pub publish_burst: u32,

    /// On SIGTERM/SIGINT, how long to wait for sockets to close before exiting.
    #[arg(
        help_heading = "Process",
        long,
        env = "DRAIN_TIMEOUT_MS",
        value_name = "DRAIN_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub drain_timeout_ms: u64,

    /// tungstenite read buffer per socket, in bytes. It is allocated (and zero-filled) for every
    /// socket, so it is a large part of what an idle connection costs: 2048 measured 6.7 KB of
    /// RSS per idle connection, 256 4.8 KB (19,000 connections). Clients send only small
    /// control messages, and a larger inbound message still fits (up to MAX_MESSAGE_BYTES),
    /// read in several chunks.
    #[arg(
        help_heading = "Connections",
        long,
        env = "WS_READ_BUFFER_BYTES",
        value_name = "WS_READ_BUFFER_BYTES",
        default_value_t = 256
    )]
    pub ws_read_buffer_bytes: usize,

    /// tungstenite write buffer per socket, in bytes: a burst of events is written in chunks of
    /// about this size. Allocated only while writing.
    #[arg(
        help_heading = "Connections",
        long,
        env = "WS_WRITE_BUFFER_BYTES",
        value_name = "WS_WRITE_BUFFER_BYTES",
        default_value_t = 4096
    )]
    pub ws_write_buffer_bytes: usize,

    /// Serve the live demo page at /demo (and the JS client at /demo/wsgate.js).
    #[arg(help_heading = "Listeners", long, env = "DEMO_PAGE", value_name = "DEMO_PAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_page: bool,

    /// Tokio worker threads; 0 = one per core.
    #[arg(help_heading = "Process", long, env = "WORKER_THREADS", value_name = "WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Events kept for resume (`since=`): the Redis stream is trimmed to about this many
    /// (MAXLEN ~), the memory ring to exactly this many. 0 turns history off.
    #[arg(
        help_heading = "History (resume)",
        long,
        env = "HISTORY_MAX_EVENTS",
        value_name = "HISTORY_MAX_EVENTS",
        default_value_t = 10_000
    )]
    pub history_max_events: usize,

    /// Events older than this are dropped from history (seconds).
    #[arg(
        help_heading = "History (resume)",
        long,
        env = "HISTORY_MAX_AGE_SECS",
        value_name = "HISTORY_MAX_AGE_SECS",
        default_value_t = 3600
    )]
    pub history_max_age_secs: u64,

    /// Memory mode only: the history ring's bound on event data, in bytes (Redis mode keeps
    /// history in Redis, bounded by count and age).
    #[arg(help_heading = "History (resume)", long, env = "HISTORY_MAX_BYTES", value_name = "HISTORY_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub history_max_bytes: usize,

    /// Redis mode: events accepted while Redis is unreachable, kept to append once it is back.
    /// When full, publishes get 503.
    #[arg(
        help_heading = "Redis (many instances)",
        long,
        env = "REDIS_OUTBOX_MAX_EVENTS",
        value_name = "REDIS_OUTBOX_MAX_EVENTS",
        default_value_t = 10_000
    )]
    pub redis_outbox_max_events: usize,

    /// ...and their bound in bytes of event data.
    #[arg(help_heading = "Redis (many instances)", 
        long,
        env = "REDIS_OUTBOX_MAX_BYTES",
        value_name = "REDIS_OUTBOX_MAX_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub redis_outbox_max_bytes: usize,

    /// Most channels one connection may join.
    #[arg(
        help_heading = "Connections",
        long,
        env = "MAX_CHANNELS_PER_CONNECTION",
        value_name = "MAX_CHANNELS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_channels_per_connection: usize,

    /// Redis mode: how long after its last local subscriber left an instance stops receiving a
    /// channel (avoids flapping when clients reconnect), in ms.
    #[arg(
        help_heading = "Redis (many instances)",
        long,
        env = "CHANNEL_UNSUBSCRIBE_DELAY_MS",
        value_name = "CHANNEL_UNSUBSCRIBE_DELAY_MS",
        default_value_t = 2000
    )]
    pub channel_unsubscribe_delay_ms: u64,

    /// Redis mode: how long an instance that has just started waits for Redis before it serves
    /// in local-only mode, in ms. Meanwhile `/ready` is 503, new connections wait for their
    /// `connected` frame and publishes wait, so no event slips past a connection that was told
    /// it is connected (at most 60,000).
    #[arg(
        help_heading = "Redis (many instances)",
        long,
        env = "REDIS_STARTUP_WAIT_MS",
        value_name = "REDIS_STARTUP_WAIT_MS",
        default_value_t = 3000
    )]
    pub redis_startup_wait_ms: u64,

    /// Most open WebSocket connections on this instance; more upgrades get 503. 0 = no limit.
    #[arg(help_heading = "Limits", long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Most open connections of one user (token subject) on this instance; more get 429. 0 = no limit.
    #[arg(
        help_heading = "Limits",
        long,
        env = "MAX_CONNECTIONS_PER_USER",
        value_name = "MAX_CONNECTIONS_PER_USER",
        default_value_t = 0
    )]
    pub max_connections_per_user: usize,

    /// Most open connections from one client IP on this instance; more get 429. 0 = no limit.
    #[arg(
        help_heading = "Limits",
        long,
        env = "MAX_CONNECTIONS_PER_IP",
        value_name = "MAX_CONNECTIONS_PER_IP",
        default_value_t = 0
    )]
    pub max_connections_per_ip: usize,

    /// Upgrades per second one client IP may make (burst: twice as many); more get 429. 0 = no limit.
    #[arg(
        help_heading = "Limits",
        long,
        env = "UPGRADES_PER_SEC_PER_IP",
        value_name = "UPGRADES_PER_SEC_PER_IP",
        default_value_t = 0
    )]
    pub upgrades_per_sec_per_ip: u32,

    /// Messages per second one connection may send (burst: twice as many); beyond, close 1008. 0 = no limit.
    #[arg(
        help_heading = "Limits",
        long,
        env = "CLIENT_MESSAGES_PER_SEC",
        value_name = "CLIENT_MESSAGES_PER_SEC",
        default_value_t = 0
    )]
    pub client_messages_per_sec: u32,

    /// Proxies whose X-Forwarded-For / Forwarded headers are believed, as IPs or CIDRs,
    /// comma-separated. From anyone else those headers are ignored.
    #[arg(help_heading = "Listeners", long, env = "TRUSTED_PROXIES", value_name = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,

    /// The one header TRUSTED_PROXIES write the client's address into: x-forwarded-for,
    /// forwarded (RFC 7239) or x-real-ip. Only that header is read (a client's own copy of
    /// another one is ignored), and only from a trusted proxy.
    #[arg(
        help_heading = "Listeners",
        long,
        env = "CLIENT_IP_HEADER",
        value_name = "CLIENT_IP_HEADER",
        value_enum,
        default_value = "x-forwarded-for"
    )]
    pub client_ip_header: ClientIpHeader,

    /// How long an `Idempotency-Key` is remembered (seconds).
    #[arg(
        help_heading = "Publishing",
        long,
        env = "IDEMPOTENCY_WINDOW_SECS",
        value_name = "IDEMPOTENCY_WINDOW_SECS",
        default_value_t = 600
    )]
    pub idempotency_window_secs: u64,

    /// A file holding the Redis password, put into REDIS_URL (which must then carry none).
    #[arg(
        help_heading = "Redis (many instances)",
        long,
        env = "REDIS_PASSWORD_FILE",
        value_name = "REDIS_PASSWORD_FILE"
    )]
    pub redis_password_file: Option<PathBuf>,

    /// A second listener for operators: `/metrics`, `/ws/stats`, `/health` and the admin API
    /// move there, so the public LISTEN_ADDR carries only `/ws`, `/api/events` and the probes.
    /// Unset: everything on LISTEN_ADDR.
    #[arg(help_heading = "Listeners", long, env = "ADMIN_LISTEN_ADDR", value_name = "ADMIN_LISTEN_ADDR")]
    pub admin_listen_addr: Option<SocketAddr>,
}

/// How tokens are verified: the key source (at most one of JWT_SECRET, JWT_SECRET_FILE,
/// JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL), issuer, audience and leeway. Part of the gateway's
/// [`Args`], and of the operator subcommands that mint or check tokens: they need these
/// settings and no other (see `crate::cli`).
#[derive(clap::Args, Debug, Clone)]
pub struct AuthArgs {
    /// HS256 secret for user and service tokens. Without it, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL
    /// the gateway runs in dev mode with a random key.
    #[arg(help_heading = "Tokens", long, env = "JWT_SECRET", value_name = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// A file holding the HS256 secret (the form Kubernetes and Docker secrets are mounted in),
    /// instead of JWT_SECRET. One trailing newline is ignored.
    #[arg(help_heading = "Tokens", long, env = "JWT_SECRET_FILE", value_name = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM public key (RSA for RS256 or EC P-256 for ES256) instead of a secret.
    #[arg(help_heading = "Tokens", long, env = "JWT_PUBLIC_KEY_FILE", value_name = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// A JWKS (JSON Web Key Set) URL to verify user and service tokens with, instead of
    /// JWT_SECRET / JWT_PUBLIC_KEY_FILE. Keys are picked by `kid`.
    #[arg(help_heading = "Tokens", long, env = "JWT_JWKS_URL", value_name = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// How often the JWKS is fetched again (seconds).
    #[arg(
        help_heading = "Tokens",
        long,
        env = "JWKS_REFRESH_SECS",
        value_name = "JWKS_REFRESH_SECS",
        default_value_t = 300
    )]
    pub jwks_refresh_secs: u64,

    /// Least time between two fetches caused by tokens with an unknown `kid` (seconds).
    #[arg(
        help_heading = "Tokens",
        long,
        env = "JWKS_MIN_REFETCH_SECS",
        value_name = "JWKS_MIN_REFETCH_SECS",
        default_value_t = 10
    )]
    pub jwks_min_refetch_secs: u64,

    /// Required `iss` claim, checked when set.
    #[arg(help_heading = "Tokens", long, env = "JWT_ISSUER", value_name = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, checked when set.
    #[arg(help_heading = "Tokens", long, env = "JWT_AUDIENCE", value_name = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf` at connect/publish time, in seconds.
    #[arg(help_heading = "Tokens", long, env = "JWT_LEEWAY_SECS", value_name = "JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,
}
