//! Why an instance could not start. Every variant names the setting to fix, and keeps the
//! error it came from as its `source()`; `main` prints it and exits with status 1 (2 for a
//! setting rejected while parsing).

use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::jwt_key::NotAPublicKey;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid setting {setting}: cannot listen on {addr}: {source}")]
    Listen {
        setting: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the runtimes: {0}")]
    Runtime(#[source] std::io::Error),
    /// `url` with its password hidden.
    #[error("invalid setting REDIS_URL ({url}): {source}")]
    RedisUrl {
        url: String,
        #[source]
        source: fred::error::Error,
    },
    #[error("invalid setting JWT_PUBLIC_KEY_FILE: {0}")]
    PublicKey(#[from] NotAPublicKey),
    #[error("invalid setting JWT_JWKS_URL: cannot set up the HTTP client: {0}")]
    JwksClient(#[source] reqwest::Error),
    /// A component that starts tasks was built outside a Tokio runtime (a bug of the caller).
    #[error("{0} starts tasks and must be built inside a Tokio runtime")]
    NoRuntime(&'static str),
}
