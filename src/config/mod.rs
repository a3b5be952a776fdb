//! Flags and environment variables → a validated [`Config`].
//!
//! Every setting is a clap flag with an environment variable behind it (the flag wins). The
//! value name of each flag *is* its environment name, so clap's own error for a bad value
//! ("invalid value 'x' for '--listen-addr <LISTEN_ADDR>'") names the setting the operator has
//! to fix. Checks clap cannot express (ranges, files that must exist, key parsing) happen in
//! [`Config::from_args`] and name the setting too.

//!
//! One file a part: [`args`] (the clap flags), [`auth`] (the one key source), [`listen`]
//! (addresses, origins, proxies), [`redis`] (the URL and its password file); the small parts
//! (session, outbox, history, publish, limits, instance, process) are here. A leaf: it
//! imports nothing of the app but [`crate::jwt_key`] (to check a PEM key at start-up).

mod args;
mod auth;
mod listen;
mod redis;
#[cfg(test)]
mod tests;

use std::time::Duration;

use clap::Parser;

pub use self::args::{Args, AuthArgs, ClientIpHeader, LogFormat};
pub use self::auth::{auth_config, check_secret, AuthConfig, JwksSettings, JwtKey, MIN_SECRET_BYTES};
use self::listen::{allowed_origins, trusted_proxies};
pub use self::listen::{ClientIpConfig, IpNet, ListenConfig};
use self::redis::redis_config;
pub use self::redis::{redact_url, RedisConfig};

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

#[derive(Clone, Copy, Debug)]
pub struct ProcessConfig {
    pub log_format: LogFormat,
    /// 0 = one per core.
    pub worker_threads: usize,
    pub drain_timeout: Duration,
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

impl Config {
    /// Validates parsed arguments. Reads the key and secret files that are set.
    pub fn from_args(a: Args) -> Result<Config, ConfigError> {
        Ok(Config {
            auth: auth_config(&a.auth)?,
            listen: ListenConfig {
                addr: a.listen_addr,
                admin_addr: match a.admin_listen_addr {
                    // Port 0 twice is two ephemeral ports, not one.
                    Some(admin) if admin == a.listen_addr && admin.port() != 0 => {
                        return Err(bad(
                            "ADMIN_LISTEN_ADDR",
                            "must differ from LISTEN_ADDR (unset it to serve everything there)",
                        ));
                    }
                    other => other,
                },
                allowed_origins: allowed_origins(a.allowed_origins.as_deref())?,
                client_ip: ClientIpConfig {
                    trusted: trusted_proxies(a.trusted_proxies.as_deref())?,
                    header: a.client_ip_header,
                },
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
