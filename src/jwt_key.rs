//! PEM public keys for token verification (`JWT_PUBLIC_KEY_FILE`). A leaf: the settings check
//! a key file with it and [`crate::auth`] verifies with it, without importing each other.

use jsonwebtoken::{Algorithm, DecodingKey};

/// The file holds no key jsonwebtoken can verify with.
#[derive(Debug, thiserror::Error)]
#[error("not a PEM-encoded RSA or EC (P-256) public key")]
pub struct NotAPublicKey;

/// Checks that a PEM holds an RSA or EC public key jsonwebtoken can use.
pub fn check_public_key(pem: &[u8]) -> Result<(), NotAPublicKey> {
    public_key(pem).map(|_| ())
}

/// The key in `pem` and the algorithm it verifies: RS256 for RSA, ES256 for EC (P-256).
pub fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), NotAPublicKey> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, Algorithm::ES256));
    }
    Err(NotAPublicKey)
}
