//! Flags and environment variables → a validated [`Config`].
//!
//! Every setting is a clap flag with an environment variable behind it (the flag wins). The
//! value name of each flag *is* its environment name, so clap's own error for a bad value
//! ("invalid value 'x' for '--listen-addr <LISTEN_ADDR>'") names the setting the operator has
//! to fix. Checks clap cannot express (ranges, files that must exist, key parsing) happen in
//! [`Config::from_args`] and name the setting too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

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
    #[arg(long, env = "LISTEN_ADDR", value_name = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,

    /// Redis URL. Unset: single-instance in-memory mode. Forms: redis://[user:pass@]host:port[/db],
    /// rediss:// (TLS), redis-cluster://, redis-sentinel://.
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel the gateway uses.
    #[arg(long, env = "REDIS_KEY_PREFIX", value_name = "REDIS_KEY_PREFIX", default_value = "websocket:")]
    pub redis_key_prefix: String,

    /// HS256 secret for user and service tokens. Without it, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL
    /// the gateway runs in dev mode with a random key.
    #[arg(long, env = "JWT_SECRET", value_name = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA for RS256 or EC P-256 for ES256) instead of a secret.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", value_name = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim, checked when set.
    #[arg(long, env = "JWT_ISSUER", value_name = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, checked when set.
    #[arg(long, env = "JWT_AUDIENCE", value_name = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf` at connect/publish time, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECS", value_name = "JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,

    /// This instance's name in Redis and in /ws/stats. Default: host name + random suffix.
    #[arg(long, env = "INSTANCE_ID", value_name = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Heartbeat period; the heartbeat key lives 3 periods.
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", value_name = "HEARTBEAT_INTERVAL_MS", default_value_t = 5000)]
    pub heartbeat_interval_ms: u64,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Comma-separated list of Origins allowed to open WebSockets (e.g.
    /// https://app.example.com). Unset: any. Requests without an Origin header (non-browser
    /// clients) are always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", value_name = "ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,

    /// Largest inbound WebSocket message or frame, in bytes; larger closes the socket with 1009.
    #[arg(long, env = "MAX_MESSAGE_BYTES", value_name = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Per-connection outbound queue limit in messages; overflow closes the socket with 1013.
    #[arg(long, env = "OUTBOX_MAX_MESSAGES", value_name = "OUTBOX_MAX_MESSAGES", default_value_t = 4096)]
    pub outbox_max_messages: usize,

    /// Per-connection outbound queue limit in bytes; overflow closes the socket with 1013.
    #[arg(long, env = "OUTBOX_MAX_BYTES", value_name = "OUTBOX_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub outbox_max_bytes: usize,

    /// A connection silent for this long is sent a WebSocket ping.
    #[arg(long, env = "PING_INTERVAL_MS", value_name = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// After a ping, a connection that sends nothing for this long is dropped.
    #[arg(long, env = "PONG_TIMEOUT_MS", value_name = "PONG_TIMEOUT_MS", default_value_t = 10_000)]
    pub pong_timeout_ms: u64,

    /// Largest accepted POST /api/events body, in bytes (413 above).
    #[arg(long, env = "MAX_BODY_BYTES", value_name = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Sustained publishes per second allowed per token subject (429 above); 0 turns the limit off.
    #[arg(long, env = "PUBLISH_RATE_PER_SEC", value_name = "PUBLISH_RATE_PER_SEC", default_value_t = 1000)]
    pub publish_rate_per_sec: u32,

    /// Publishes a subject may make in a burst above the sustained rate.
    #[arg(long, env = "PUBLISH_BURST", value_name = "PUBLISH_BURST", default_value_t = 2000)]
    pub publish_burst: u32,

    /// On SIGTERM/SIGINT, how long to wait for sockets to close before exiting.
    #[arg(long, env = "DRAIN_TIMEOUT_MS", value_name = "DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,

    /// tungstenite read buffer per socket, in bytes. It is allocated (and zero-filled) for every
    /// socket, so it is a large part of what an idle connection costs: 2048 measured 6.7 KB of
    /// RSS per idle connection, 256 4.8 KB (19,000 connections). Clients send only small
    /// control messages, and a larger inbound message still fits (up to MAX_MESSAGE_BYTES),
    /// read in several chunks.
    #[arg(long, env = "WS_READ_BUFFER_BYTES", value_name = "WS_READ_BUFFER_BYTES", default_value_t = 256)]
    pub ws_read_buffer_bytes: usize,

    /// tungstenite write buffer per socket, in bytes: a burst of events is written in chunks of
    /// about this size. Allocated only while writing.
    #[arg(long, env = "WS_WRITE_BUFFER_BYTES", value_name = "WS_WRITE_BUFFER_BYTES", default_value_t = 4096)]
    pub ws_write_buffer_bytes: usize,

    /// Serve the live demo page at /demo (and the JS client at /demo/wsgate.js).
    #[arg(long, env = "DEMO_PAGE", value_name = "DEMO_PAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_page: bool,

    /// Tokio worker threads; 0 = one per core.
    #[arg(long, env = "WORKER_THREADS", value_name = "WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Events kept for resume (`since=`): the Redis stream is trimmed to about this many
    /// (MAXLEN ~), the memory ring to exactly this many. 0 turns history off.
    #[arg(long, env = "HISTORY_MAX_EVENTS", value_name = "HISTORY_MAX_EVENTS", default_value_t = 10_000)]
    pub history_max_events: usize,

    /// Events older than this are dropped from history (seconds).
    #[arg(long, env = "HISTORY_MAX_AGE_SECS", value_name = "HISTORY_MAX_AGE_SECS", default_value_t = 3600)]
    pub history_max_age_secs: u64,

    /// Memory mode only: the history ring's bound on event data, in bytes (Redis mode keeps
    /// history in Redis, bounded by count and age).
    #[arg(long, env = "HISTORY_MAX_BYTES", value_name = "HISTORY_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub history_max_bytes: usize,

    /// Redis mode: events accepted while Redis is unreachable, kept to append once it is back.
    /// When full, publishes get 503.
    #[arg(long, env = "REDIS_OUTBOX_MAX_EVENTS", value_name = "REDIS_OUTBOX_MAX_EVENTS", default_value_t = 10_000)]
    pub redis_outbox_max_events: usize,

    /// ...and their bound in bytes of event data.
    #[arg(
        long,
        env = "REDIS_OUTBOX_MAX_BYTES",
        value_name = "REDIS_OUTBOX_MAX_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub redis_outbox_max_bytes: usize,

    /// Most channels one connection may join.
    #[arg(
        long,
        env = "MAX_CHANNELS_PER_CONNECTION",
        value_name = "MAX_CHANNELS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_channels_per_connection: usize,

    /// Redis mode: how long after its last local subscriber left an instance stops receiving a
    /// channel (avoids flapping when clients reconnect), in ms.
    #[arg(
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
    #[arg(long, env = "REDIS_STARTUP_WAIT_MS", value_name = "REDIS_STARTUP_WAIT_MS", default_value_t = 3000)]
    pub redis_startup_wait_ms: u64,

    /// Most open WebSocket connections on this instance; more upgrades get 503. 0 = no limit.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Most open connections of one user (token subject) on this instance; more get 429. 0 = no limit.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", value_name = "MAX_CONNECTIONS_PER_USER", default_value_t = 0)]
    pub max_connections_per_user: usize,

    /// Most open connections from one client IP on this instance; more get 429. 0 = no limit.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", value_name = "MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Upgrades per second one client IP may make (burst: twice as many); more get 429. 0 = no limit.
    #[arg(long, env = "UPGRADES_PER_SEC_PER_IP", value_name = "UPGRADES_PER_SEC_PER_IP", default_value_t = 0)]
    pub upgrades_per_sec_per_ip: u32,

    /// Messages per second one connection may send (burst: twice as many); beyond, close 1008. 0 = no limit.
    #[arg(long, env = "CLIENT_MESSAGES_PER_SEC", value_name = "CLIENT_MESSAGES_PER_SEC", default_value_t = 0)]
    pub client_messages_per_sec: u32,

    /// Proxies whose X-Forwarded-For / Forwarded headers are believed, as IPs or CIDRs,
    /// comma-separated. From anyone else those headers are ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_name = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,

    /// A JWKS (JSON Web Key Set) URL to verify user and service tokens with, instead of
    /// JWT_SECRET / JWT_PUBLIC_KEY_FILE. Keys are picked by `kid`.
    #[arg(long, env = "JWT_JWKS_URL", value_name = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// How often the JWKS is fetched again (seconds).
    #[arg(long, env = "JWKS_REFRESH_SECS", value_name = "JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,

    /// Least time between two fetches caused by tokens with an unknown `kid` (seconds).
    #[arg(long, env = "JWKS_MIN_REFETCH_SECS", value_name = "JWKS_MIN_REFETCH_SECS", default_value_t = 10)]
    pub jwks_min_refetch_secs: u64,

    /// How long an `Idempotency-Key` is remembered (seconds).
    #[arg(long, env = "IDEMPOTENCY_WINDOW_SECS", value_name = "IDEMPOTENCY_WINDOW_SECS", default_value_t = 600)]
    pub idempotency_window_secs: u64,

    /// A file holding the HS256 secret (the form Kubernetes and Docker secrets are mounted in),
    /// instead of JWT_SECRET. One trailing newline is ignored.
    #[arg(long, env = "JWT_SECRET_FILE", value_name = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// A file holding the Redis password, put into REDIS_URL (which must then carry none).
    #[arg(long, env = "REDIS_PASSWORD_FILE", value_name = "REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// A second listener for operators: `/metrics`, `/ws/stats`, `/health` and the admin API
    /// move there, so the public LISTEN_ADDR carries only `/ws`, `/api/events` and the probes.
    /// Unset: everything on LISTEN_ADDR.
    #[arg(long, env = "ADMIN_LISTEN_ADDR", value_name = "ADMIN_LISTEN_ADDR")]
    pub admin_listen_addr: Option<SocketAddr>,
}

/// How tokens are verified.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with a shared secret.
    Secret(Vec<u8>),
    /// RS256 or ES256 public key, PEM-encoded.
    PublicKeyPem(Vec<u8>),
    /// Keys fetched from `JWT_JWKS_URL` ([`AuthConfig::jwks`]) and picked by `kid`.
    Jwks,
    /// No key configured: a random HS256 secret for this process only.
    Dev(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<redacted>)"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
            JwtKey::Jwks => f.write_str("Jwks"),
            JwtKey::Dev(_) => f.write_str("Dev(<random>)"),
        }
    }
}

/// The validated configuration the app is built from: one part per component, each handed
/// only to the component that uses it (see `app.rs`).
#[derive(Clone, Debug)]
pub struct Config {
    /// The HTTP listeners and who may reach them ([`crate::http`]).
    pub listen: ListenConfig,
    /// Token verification ([`crate::auth`]).
    pub auth: AuthConfig,
    /// The WebSocket connection loop ([`crate::session`]).
    pub session: SessionConfig,
    /// Each connection's outbound queue ([`crate::hub`], [`crate::outbox`]).
    pub outbox: OutboxLimits,
    /// What is kept for resume (the brokers).
    pub history: HistoryLimits,
    /// `POST /api/events` ([`crate::http`]).
    pub publish: PublishConfig,
    /// Connection caps per instance, user and IP ([`crate::limits`]).
    pub limits: ConnectionLimits,
    /// This instance's name and heartbeat (hub, fleet view).
    pub instance: InstanceConfig,
    /// `None`: in-memory mode.
    pub redis: Option<RedisConfig>,
    /// Logging, threads, shutdown ([`crate::runtime`], [`crate::app`]).
    pub process: ProcessConfig,
}

#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR`: operators' endpoints on their own listener.
    pub admin_addr: Option<SocketAddr>,
    /// `None` = any origin.
    pub allowed_origins: Option<Vec<String>>,
    pub trusted_proxies: Vec<IpNet>,
    pub demo_page: bool,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    /// Set exactly when `key` is [`JwtKey::Jwks`].
    pub jwks: Option<JwksSettings>,
}

impl AuthConfig {
    /// True when no key was configured and tokens are signed with a random per-process key.
    pub fn dev_mode(&self) -> bool {
        matches!(self.key, JwtKey::Dev(_))
    }
}

/// Where to fetch verification keys from, and how often.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    pub url: String,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// A connection that sent nothing for this long is pinged.
    pub ping_interval: Duration,
    /// After a ping, silence for this long drops the connection.
    pub pong_timeout: Duration,
    /// Most channels one connection may join.
    pub max_channels: usize,
    /// Messages per second a client may send (bursts of twice that); 0 = no limit.
    pub client_messages_per_sec: u32,
    /// Largest inbound message or frame.
    pub max_message_bytes: usize,
    pub ws_read_buffer_bytes: usize,
    pub ws_write_buffer_bytes: usize,
}

/// A connection's outbound queue bound; overflow closes it with 1013.
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct PublishConfig {
    /// Largest accepted body (413 above).
    pub max_body_bytes: usize,
    /// Per token subject; 0 = no limit.
    pub rate_per_sec: u32,
    pub burst: u32,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
}

/// Caps on connections and client traffic (0 = no limit).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub per_user: usize,
    pub per_ip: usize,
    pub upgrades_per_sec_per_ip: u32,
}

#[derive(Clone, Debug)]
pub struct InstanceConfig {
    pub id: String,
    pub heartbeat_interval: Duration,
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// With the password of `REDIS_PASSWORD_FILE` in it, when that is set.
    pub url: String,
    pub key_prefix: String,
    /// Events kept while Redis is away.
    pub outbox_max_events: usize,
    pub outbox_max_bytes: usize,
    pub channel_unsubscribe_delay: Duration,
    pub startup_wait: Duration,
}

#[derive(Clone, Copy, Debug)]
pub struct ProcessConfig {
    pub log_format: LogFormat,
    /// 0 = one per core.
    pub worker_threads: usize,
    pub drain_timeout: Duration,
}

/// An IP network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) counts as its IPv4 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// How much history is kept for resume.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// 0 = history off.
    pub max_events: usize,
    pub max_age: Duration,
    /// Memory mode only.
    pub max_bytes: usize,
}

/// A setting with a value the gateway cannot run with. Displays as
/// `invalid setting SETTING: why`.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

fn bad(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { setting, message: message.into() }
}

fn at_least<T: PartialOrd + std::fmt::Display>(setting: &'static str, v: T, min: T) -> Result<T, ConfigError> {
    if v < min {
        return Err(bad(setting, format!("must be at least {min}, got {v}")));
    }
    Ok(v)
}

/// Shortest HS256 secret accepted: 256 bits, the hash's own size (RFC 7518 §3.2). A shorter
/// one falls to an offline brute force from any token a client holds.
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks an HS256 secret's length; `setting` names where it came from.
pub fn check_secret(setting: &'static str, secret: &[u8]) -> Result<(), ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(bad(
            setting,
            format!(
                "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes, got {} (generate one with: openssl rand -base64 48)",
                secret.len()
            ),
        ));
    }
    Ok(())
}

/// A secret file's content without its trailing newline (editors and `echo` add one).
fn read_secret_file(setting: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let mut v = std::fs::read(path).map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))?;
    if v.ends_with(b"\n") {
        v.pop();
        if v.ends_with(b"\r") {
            v.pop();
        }
    }
    if v.is_empty() {
        return Err(bad(setting, format!("{} is empty", path.display())));
    }
    Ok(v)
}

impl Config {
    /// Validates parsed arguments. Reads the key and secret files that are set.
    pub fn from_args(a: Args) -> Result<Config, ConfigError> {
        Ok(Config {
            auth: auth_config(&a)?,
            listen: ListenConfig {
                addr: a.listen_addr,
                admin_addr: match a.admin_listen_addr {
                    Some(admin) if admin == a.listen_addr => {
                        return Err(bad(
                            "ADMIN_LISTEN_ADDR",
                            "must differ from LISTEN_ADDR (unset it to serve everything there)",
                        ));
                    }
                    other => other,
                },
                allowed_origins: allowed_origins(a.allowed_origins.as_deref())?,
                trusted_proxies: trusted_proxies(a.trusted_proxies.as_deref())?,
                demo_page: a.demo_page,
            },
            session: SessionConfig {
                ping_interval: Duration::from_millis(at_least("PING_INTERVAL_MS", a.ping_interval_ms, 50)?),
                pong_timeout: Duration::from_millis(at_least("PONG_TIMEOUT_MS", a.pong_timeout_ms, 50)?),
                max_channels: at_least("MAX_CHANNELS_PER_CONNECTION", a.max_channels_per_connection, 1)?,
                client_messages_per_sec: a.client_messages_per_sec,
                max_message_bytes: at_least("MAX_MESSAGE_BYTES", a.max_message_bytes, 128)?,
                ws_read_buffer_bytes: at_least("WS_READ_BUFFER_BYTES", a.ws_read_buffer_bytes, 256)?,
                ws_write_buffer_bytes: at_least("WS_WRITE_BUFFER_BYTES", a.ws_write_buffer_bytes, 256)?,
            },
            outbox: OutboxLimits {
                max_messages: at_least("OUTBOX_MAX_MESSAGES", a.outbox_max_messages, 1)?,
                max_bytes: at_least("OUTBOX_MAX_BYTES", a.outbox_max_bytes, 1024)?,
            },
            history: HistoryLimits {
                max_events: at_most("HISTORY_MAX_EVENTS", a.history_max_events as u64, 10_000_000)? as usize,
                max_age: Duration::from_secs(at_least("HISTORY_MAX_AGE_SECS", a.history_max_age_secs, 1)?),
                max_bytes: at_least("HISTORY_MAX_BYTES", a.history_max_bytes, 1024)?,
            },
            publish: PublishConfig {
                max_body_bytes: at_least("MAX_BODY_BYTES", a.max_body_bytes, 64)?,
                rate_per_sec: a.publish_rate_per_sec,
                burst: if a.publish_rate_per_sec > 0 {
                    at_least("PUBLISH_BURST", a.publish_burst, 1)?
                } else {
                    a.publish_burst
                },
                idempotency_window: Duration::from_secs(at_least(
                    "IDEMPOTENCY_WINDOW_SECS",
                    a.idempotency_window_secs,
                    1,
                )?),
            },
            limits: ConnectionLimits {
                max_connections: a.max_connections,
                per_user: a.max_connections_per_user,
                per_ip: a.max_connections_per_ip,
                upgrades_per_sec_per_ip: a.upgrades_per_sec_per_ip,
            },
            instance: InstanceConfig {
                id: instance_id(a.instance_id.clone())?,
                heartbeat_interval: Duration::from_millis(at_least(
                    "HEARTBEAT_INTERVAL_MS",
                    a.heartbeat_interval_ms,
                    100,
                )?),
            },
            redis: redis_config(&a)?,
            process: ProcessConfig {
                log_format: a.log_format,
                worker_threads: a.worker_threads,
                drain_timeout: Duration::from_millis(a.drain_timeout_ms),
            },
        })
    }

    /// A configuration for tests and benchmarks: every default, HS256 with `secret`, port 0.
    pub fn for_tests(secret: &str) -> Config {
        let args = Args::parse_from(["wsgate", "--listen-addr", "127.0.0.1:0", "--jwt-secret", secret]);
        Config::from_args(args).expect("default settings are valid")
    }

    /// True when no key was configured and tokens are signed with a random per-process key.
    pub fn dev_mode(&self) -> bool {
        self.auth.dev_mode()
    }
}

/// The key sources are exclusive: exactly one of JWT_SECRET, JWT_SECRET_FILE,
/// JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL, or none (dev mode).
fn auth_config(a: &Args) -> Result<AuthConfig, ConfigError> {
    let jwks_url = a.jwt_jwks_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let sources: Vec<&'static str> = [
        ("JWT_SECRET", a.jwt_secret.as_deref().is_some_and(|s| !s.is_empty())),
        ("JWT_SECRET_FILE", a.jwt_secret_file.is_some()),
        ("JWT_PUBLIC_KEY_FILE", a.jwt_public_key_file.is_some()),
        ("JWT_JWKS_URL", jwks_url.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if sources.len() > 1 {
        return Err(bad(
            sources[sources.len() - 1],
            format!(
                "set only one of JWT_SECRET, JWT_SECRET_FILE, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL (both {} are set)",
                sources.join(" and ")
            ),
        ));
    }
    let key = if let Some(s) = a.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
        check_secret("JWT_SECRET", s.as_bytes())?;
        JwtKey::Secret(s.as_bytes().to_vec())
    } else if a.jwt_secret.is_some() && sources.is_empty() {
        return Err(bad("JWT_SECRET", "must not be empty (unset it for dev mode)"));
    } else if let Some(path) = &a.jwt_secret_file {
        let s = read_secret_file("JWT_SECRET_FILE", path)?;
        check_secret("JWT_SECRET_FILE", &s)?;
        JwtKey::Secret(s)
    } else if let Some(path) = &a.jwt_public_key_file {
        let pem = std::fs::read(path)
            .map_err(|e| bad("JWT_PUBLIC_KEY_FILE", format!("cannot read {}: {e}", path.display())))?;
        crate::jwt_key::check_public_key(&pem).map_err(|e| bad("JWT_PUBLIC_KEY_FILE", e.to_string()))?;
        JwtKey::PublicKeyPem(pem)
    } else if jwks_url.is_some() {
        JwtKey::Jwks
    } else {
        let secret: [u8; 32] = rand::random();
        JwtKey::Dev(secret.to_vec())
    };
    let jwks = match jwks_url {
        None => None,
        Some(url) => {
            check_jwks_url(url)?;
            Some(JwksSettings {
                url: url.to_string(),
                refresh: Duration::from_secs(at_least("JWKS_REFRESH_SECS", a.jwks_refresh_secs, 1)?),
                // A floor: without it every token with an unknown `kid` could cause a fetch.
                min_refetch: Duration::from_secs(at_least("JWKS_MIN_REFETCH_SECS", a.jwks_min_refetch_secs, 1)?),
            })
        }
    };
    Ok(AuthConfig {
        key,
        issuer: a.jwt_issuer.clone().filter(|s| !s.is_empty()),
        audience: a.jwt_audience.clone().filter(|s| !s.is_empty()),
        leeway: Duration::from_secs(at_most("JWT_LEEWAY_SECS", a.jwt_leeway_secs, 3600)?),
        jwks,
    })
}

/// Keys fetched in plain text can be replaced by anyone on the path, who can then mint any
/// token: https only, except for a key server on this host.
fn check_jwks_url(url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad("JWT_JWKS_URL", "must be an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(bad(
            "JWT_JWKS_URL",
            format!("must be an https:// URL (http:// is allowed only for a loopback host, got {host:?})"),
        ));
    }
    Ok(())
}

fn allowed_origins(list: Option<&str>) -> Result<Option<Vec<String>>, ConfigError> {
    match list.map(str::trim) {
        None | Some("") | Some("*") => Ok(None),
        Some(list) => {
            let v: Vec<String> = list.split(',').map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase()).collect();
            if let Some(o) = v.iter().find(|o| !(o.starts_with("http://") || o.starts_with("https://"))) {
                return Err(bad("ALLOWED_ORIGINS", format!("{o:?} is not an origin like https://app.example.com")));
            }
            Ok(Some(v))
        }
    }
}

fn trusted_proxies(list: Option<&str>) -> Result<Vec<IpNet>, ConfigError> {
    match list.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Vec::new()),
        Some(list) => list
            .split(',')
            .map(|p| {
                IpNet::parse(p).ok_or_else(|| {
                    bad("TRUSTED_PROXIES", format!("{:?} is not an IP address or CIDR like 10.0.0.0/8", p.trim()))
                })
            })
            .collect(),
    }
}

fn instance_id(id: Option<String>) -> Result<String, ConfigError> {
    match id {
        Some(id) if id.trim().is_empty() => Err(bad("INSTANCE_ID", "must not be empty")),
        Some(id) if id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(bad("INSTANCE_ID", "at most 128 characters, no spaces or control characters"))
        }
        Some(id) => Ok(id),
        None => Ok(default_instance_id()),
    }
}

const REDIS_SCHEMES: [&str; 6] =
    ["redis://", "rediss://", "redis-cluster://", "rediss-cluster://", "redis-sentinel://", "rediss-sentinel://"];

fn redis_config(a: &Args) -> Result<Option<RedisConfig>, ConfigError> {
    if a.redis_key_prefix.chars().any(|c| c.is_whitespace()) {
        return Err(bad("REDIS_KEY_PREFIX", "must not contain white space"));
    }
    let Some(url) = a.redis_url.as_deref().filter(|u| !u.is_empty()) else {
        if a.redis_password_file.is_some() {
            return Err(bad("REDIS_PASSWORD_FILE", "is set but REDIS_URL is not"));
        }
        return Ok(None);
    };
    if !REDIS_SCHEMES.iter().any(|p| url.starts_with(p)) {
        return Err(bad(
            "REDIS_URL",
            "must start with redis://, rediss://, redis-cluster://, rediss-cluster:// or redis-sentinel://",
        ));
    }
    let url = match &a.redis_password_file {
        None => url.to_string(),
        Some(path) => {
            let password = read_secret_file("REDIS_PASSWORD_FILE", path)?;
            let password = String::from_utf8(password)
                .map_err(|_| bad("REDIS_PASSWORD_FILE", format!("{} is not UTF-8 text", path.display())))?;
            with_password(url, &password)?
        }
    };
    Ok(Some(RedisConfig {
        url,
        key_prefix: a.redis_key_prefix.clone(),
        outbox_max_events: at_least("REDIS_OUTBOX_MAX_EVENTS", a.redis_outbox_max_events, 1)?,
        outbox_max_bytes: at_least("REDIS_OUTBOX_MAX_BYTES", a.redis_outbox_max_bytes, 1024)?,
        channel_unsubscribe_delay: Duration::from_millis(a.channel_unsubscribe_delay_ms),
        startup_wait: Duration::from_millis(at_most("REDIS_STARTUP_WAIT_MS", a.redis_startup_wait_ms, 60_000)?),
    }))
}

/// `redis://user@host` + `pw` → `redis://user:pw@host` (the password percent-encoded). A URL
/// that already carries a password is a second source: refused, like two JWT key sources.
fn with_password(url: &str, password: &str) -> Result<String, ConfigError> {
    let (scheme, rest) = url.split_once("://").expect("scheme checked");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            return Err(bad("REDIS_PASSWORD_FILE", "REDIS_URL already carries a password: set it in one place only"));
        }
        Some((user, host)) => (user, host),
        None => ("", authority),
    };
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{host}{path}"))
}

fn at_most(setting: &'static str, v: u64, max: u64) -> Result<u64, ConfigError> {
    if v > max {
        return Err(bad(setting, format!("must be at most {max}, got {v}")));
    }
    Ok(v)
}

/// Host name plus a random suffix, so two instances on one host (or a restarted pod that
/// keeps its host name) never share a heartbeat key.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wsgate".to_string());
    let suffix: u32 = rand::random();
    format!("{host}-{:06x}", suffix & 0xff_ffff)
}

/// Hides the password of a Redis URL for logs: `redis://user:***@host:6379/0`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_string() };
            format!("{}://{masked}@{}", &url[..scheme_end], &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-unit-test-secret-of-32-bytes-or-more";

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["wsgate"];
        v.extend_from_slice(args);
        let a = Args::try_parse_from(v).map_err(|e| e.to_string())?;
        Config::from_args(a).map_err(|e| e.to_string())
    }

    fn temp_file(name: &str, content: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wsgate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn defaults_are_valid_and_dev_mode_without_keys() {
        let c = parse(&[]).unwrap();
        assert!(c.dev_mode());
        assert_eq!(c.listen.addr.to_string(), "0.0.0.0:8000");
        assert!(c.listen.admin_addr.is_none());
        assert!(c.redis.is_none());
        assert_eq!(c.instance.heartbeat_interval, Duration::from_secs(5));
        assert!(c.listen.allowed_origins.is_none());
        let c = parse(&["--redis-url", "redis://h:6379"]).unwrap();
        assert_eq!(c.redis.unwrap().key_prefix, "websocket:");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = parse(&["--listen-addr", "nonsense"]).unwrap_err();
        assert!(e.contains("LISTEN_ADDR"), "{e}");
        let e = parse(&["--outbox-max-bytes", "0"]).unwrap_err();
        assert!(e.contains("OUTBOX_MAX_BYTES"), "{e}");
        let e = parse(&["--allowed-origins", "example.com"]).unwrap_err();
        assert!(e.contains("ALLOWED_ORIGINS"), "{e}");
        let e = parse(&["--redis-url", "http://x"]).unwrap_err();
        assert!(e.contains("REDIS_URL"), "{e}");
        let e = parse(&["--jwt-public-key-file", "/nonexistent/key.pem"]).unwrap_err();
        assert!(e.contains("JWT_PUBLIC_KEY_FILE"), "{e}");
        let e = parse(&["--listen-addr", "127.0.0.1:9000", "--admin-listen-addr", "127.0.0.1:9000"]).unwrap_err();
        assert!(e.contains("ADMIN_LISTEN_ADDR"), "{e}");
    }

    #[test]
    fn a_short_secret_is_refused_naming_its_setting() {
        let e = parse(&["--jwt-secret", "x"]).unwrap_err();
        assert!(e.contains("JWT_SECRET") && e.contains("at least 32 bytes, got 1"), "{e}");
        let e = parse(&["--jwt-secret", &SECRET[..31]]).unwrap_err();
        assert!(e.contains("got 31"), "{e}");
        assert!(parse(&["--jwt-secret", &SECRET[..32]]).is_ok());
        let short = temp_file("short", b"0123456789\n");
        let e = parse(&["--jwt-secret-file", short.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("JWT_SECRET_FILE") && e.contains("got 10"), "{e}");
    }

    #[test]
    fn a_secret_file_is_read_without_its_trailing_newline() {
        let f = temp_file("secret", format!("{SECRET}\n").as_bytes());
        let c = parse(&["--jwt-secret-file", f.to_str().unwrap()]).unwrap();
        match c.auth.key {
            JwtKey::Secret(s) => assert_eq!(s, SECRET.as_bytes()),
            other => panic!("{other:?}"),
        }
        let e = parse(&["--jwt-secret-file", "/nonexistent/secret"]).unwrap_err();
        assert!(e.contains("JWT_SECRET_FILE") && e.contains("cannot read"), "{e}");
        let empty = temp_file("empty", b"\n");
        let e = parse(&["--jwt-secret-file", empty.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("JWT_SECRET_FILE") && e.contains("empty"), "{e}");
    }

    #[test]
    fn two_key_sources_are_one_clear_error() {
        let f = temp_file("secret2", SECRET.as_bytes());
        let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-public.pem");
        let cases: [(&[&str], &str); 4] = [
            (&["--jwt-secret", SECRET, "--jwt-secret-file", f.to_str().unwrap()], "JWT_SECRET and JWT_SECRET_FILE"),
            (&["--jwt-secret", SECRET, "--jwt-public-key-file", pem], "JWT_SECRET and JWT_PUBLIC_KEY_FILE"),
            (
                &["--jwt-secret-file", f.to_str().unwrap(), "--jwt-jwks-url", "https://idp/j"],
                "JWT_SECRET_FILE and JWT_JWKS_URL",
            ),
            (
                &["--jwt-public-key-file", pem, "--jwt-jwks-url", "https://idp/j"],
                "JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL",
            ),
        ];
        for (args, both) in cases {
            let e = parse(args).unwrap_err();
            assert!(e.contains("set only one of") && e.contains(both), "{args:?}: {e}");
        }
    }

    #[test]
    fn a_jwks_url_is_the_key_source_and_must_be_https_off_this_host() {
        let c = parse(&["--jwt-jwks-url", "https://idp.example/jwks.json"]).unwrap();
        assert!(!c.dev_mode());
        assert!(matches!(c.auth.key, JwtKey::Jwks));
        let s = c.auth.jwks.unwrap();
        assert_eq!((s.refresh, s.min_refetch), (Duration::from_secs(300), Duration::from_secs(10)));
        for plain in ["http://idp.example/jwks.json", "http://10.0.0.1/jwks", "http://127.0.0.1.evil.example/j"] {
            let e = parse(&["--jwt-jwks-url", plain]).unwrap_err();
            assert!(e.contains("JWT_JWKS_URL") && e.contains("https://"), "{plain}: {e}");
        }
        for local in ["http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:9/jwks"] {
            assert!(parse(&["--jwt-jwks-url", local]).is_ok(), "{local}");
        }
        let e = parse(&["--jwt-jwks-url", "ftp://idp.example/jwks.json"]).unwrap_err();
        assert!(e.contains("JWT_JWKS_URL"), "{e}");
        let e = parse(&["--jwt-jwks-url", "https://idp/j", "--jwks-min-refetch-secs", "0"]).unwrap_err();
        assert!(e.contains("JWKS_MIN_REFETCH_SECS"), "{e}");
    }

    #[test]
    fn a_redis_password_file_goes_into_the_url() {
        let f = temp_file("redis-pw", b"p@ss:w/rd\n");
        let c = parse(&["--redis-url", "redis://cache:6379/2", "--redis-password-file", f.to_str().unwrap()]).unwrap();
        assert_eq!(c.redis.unwrap().url, "redis://:p%40ss%3Aw%2Frd@cache:6379/2");
        let c = parse(&["--redis-url", "rediss://app@cache", "--redis-password-file", f.to_str().unwrap()]).unwrap();
        assert_eq!(c.redis.unwrap().url, "rediss://app:p%40ss%3Aw%2Frd@cache");
        let e =
            parse(&["--redis-url", "redis://:inline@cache", "--redis-password-file", f.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("REDIS_PASSWORD_FILE") && e.contains("already carries a password"), "{e}");
        let e = parse(&["--redis-password-file", f.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("REDIS_PASSWORD_FILE") && e.contains("REDIS_URL is not"), "{e}");
    }

    #[test]
    fn origins_are_normalised() {
        let c = parse(&["--allowed-origins", "https://App.example.com/, http://localhost:3000"]).unwrap();
        assert_eq!(
            c.listen.allowed_origins.unwrap(),
            vec!["https://app.example.com".to_string(), "http://localhost:3000".to_string()]
        );
    }

    #[test]
    fn redis_password_is_redacted() {
        assert_eq!(redact_url("redis://user:secret@h:6379/0"), "redis://user:***@h:6379/0");
        assert_eq!(redact_url("rediss://:secret@h:6380"), "rediss://:***@h:6380");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
