//! Verification keys from a JWK Set endpoint (`JWT_JWKS_URL`), picked by `kid`.
//!
//! One background task does every fetch, so there is never more than one request in flight:
//! - at start-up;
//! - `JWKS_REFRESH_SECS` after a fetch that worked;
//! - after a fetch that failed, again with backoff (1 s, doubling, at most 60 s and at most the
//!   refresh period), so a gateway that started while the endpoint was down gets its keys soon
//!   after it comes up;
//! - when [`Jwks::request_refetch`] asks (a token named a `kid` the set lacks: the issuer may
//!   have rotated its keys). That is granted at most once per `JWKS_MIN_REFETCH_SECS`, so
//!   tokens with made-up `kid`s cannot make the gateway hammer the identity provider; callers
//!   that ask while a granted fetch is pending wait for that one.
//!
//! A fetch that fails (unreachable, a non-2xx status, a body that is not a key set, or a set
//! without one usable key) changes nothing: the keys already held keep verifying tokens. The
//! first failure of a streak is logged at warn, the rest at debug; the fetch that ends it logs
//! "JWKS loaded N keys from <url>" at info, as do the first load and every change of the `kid`s.
//!
//! Usable keys: RSA (RS256/384/512, PS256/384/512; at least 2048 bits), EC P-256 (ES256) and
//! P-384 (ES384), OKP Ed25519 (EdDSA). A key's `alg`, when given, narrows it to that one
//! algorithm. Symmetric (`oct`) keys, encryption keys (`"use": "enc"`, `key_ops` without
//! `verify`) and keys of other types or curves are skipped with a warning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::config::{redact_url, JwksSettings};
use crate::error::StartError;

/// Largest key set accepted, in bytes (real ones are a few KB).
const MAX_BODY_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one whole fetch, body included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Shorter RSA moduli are refused.
const MIN_RSA_BITS: usize = 2048;

/// One usable key of the set, with the validation that goes with it: the configured claim
/// rules, and the algorithms the key may verify.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub validation: Validation,
}

/// The usable keys of one fetched set.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    /// The key, when the set has exactly one (what a token without `kid` may use).
    only: Option<Arc<VerifyKey>>,
    len: usize,
}

impl KeySet {
    /// The key for a token's `kid`; a token without one gets the set's only key, if it has one.
    pub fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => self.only.clone(),
        }
    }

    /// Usable keys (a key without `kid` counts, though only a `kid`-less token can use it).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `kid`s of the set, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_kid.keys().cloned().collect();
        v.sort();
        v
    }
}

/// A parsed set, and why the keys it left out were left out.
pub struct Parsed {
    pub keys: KeySet,
    pub skipped: Vec<String>,
}

/// Why a fetch brought no usable key set: the endpoint failed, or what it sent is not one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwksError(String);

/// Parses a JWK Set document (`{"keys": [...]}`), keeping the keys wsgate can verify with;
/// `base` is the claim validation every key gets. An error when the document is not a key set
/// or holds no usable key.
pub fn parse_key_set(body: &[u8], base: &Validation) -> Result<Parsed, JwksError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| JwksError(format!("not a JWK set ({e})")))?;
    let total = raw.keys.len();
    let mut keys = KeySet::default();
    let mut skipped = Vec::new();
    let mut last = None;
    for (i, v) in raw.keys.into_iter().enumerate() {
        let name = match v.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("key {kid:?}"),
            None => format!("key #{i} (no kid)"),
        };
        let key = match verify_key(v, base) {
            Ok(k) => Arc::new(k),
            Err(why) => {
                skipped.push(format!("{name}: {why}"));
                continue;
            }
        };
        if let Some(kid) = &key.kid {
            if keys.by_kid.contains_key(kid) {
                skipped.push(format!("{name}: a second key with this kid (the first is used)"));
                continue;
            }
            keys.by_kid.insert(kid.clone(), key.clone());
        }
        keys.len += 1;
        last = Some(key);
    }
    match keys.len {
        0 if total == 0 => Err(JwksError("the key set is empty".into())),
        0 => Err(JwksError(format!("none of its {total} keys is usable ({})", skipped.join("; ")))),
        1 => {
            keys.only = last;
            Ok(Parsed { keys, skipped })
        }
        _ => Ok(Parsed { keys, skipped }),
    }
}

/// One JWK → a key to verify with, or why it cannot be one.
fn verify_key(v: Value, base: &Validation) -> Result<VerifyKey, String> {
    let kty = v.get("kty").and_then(Value::as_str).unwrap_or_default().to_owned();
    let jwk: Jwk = serde_json::from_value(v).map_err(|e| format!("not a JWK ({e})"))?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err("an encryption key (\"use\": \"enc\")".into());
    }
    if jwk.common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return Err("its key_ops do not include \"verify\"".into());
    }
    use Algorithm::*;
    // The algorithms the key type allows, and for curves the length of the decoded public key.
    let (mut algorithms, point_len) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (vec![RS256, RS384, RS512, PS256, PS384, PS512], None),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            // 0x04 ‖ x ‖ y
            EllipticCurve::P256 => (vec![ES256], Some(1 + 2 * 32)),
            EllipticCurve::P384 => (vec![ES384], Some(1 + 2 * 48)),
            ref c => return Err(format!("EC curve {c:?} is not supported (P-256 and P-384 are)")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => (vec![EdDSA], Some(32)),
            ref c => return Err(format!("OKP curve {c:?} is not supported (Ed25519 is)")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (\"oct\") key; a JWKS must publish public keys".into());
        }
        _ => return Err(format!("key type {kty:?} is not supported (RSA, EC and OKP are)")),
    };
    if let Some(alg) = jwk.common.key_algorithm {
        match Algorithm::try_from(alg) {
            Ok(a) if algorithms.contains(&a) => algorithms = vec![a],
            _ => return Err(format!("its alg {alg} is not one a {kty} key can verify here")),
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key material ({e})"))?;
    match (key.kind(), point_len) {
        (DecodingKeyKind::RsaModulusExponent { n, e }, _) => {
            let bits = significant_bits(n);
            if bits < MIN_RSA_BITS {
                return Err(format!("an RSA modulus of {bits} bits (at least {MIN_RSA_BITS} needed)"));
            }
            if significant_bits(e) == 0 {
                return Err("an RSA exponent of 0".into());
            }
        }
        (DecodingKeyKind::SecretOrDer(point), Some(want)) if point.len() == want => {}
        (DecodingKeyKind::SecretOrDer(_), _) => return Err("coordinates of the wrong length for its curve".into()),
    }
    let mut validation = base.clone();
    validation.algorithms = algorithms;
    Ok(VerifyKey { kid: jwk.common.key_id, key, validation })
}

/// Bit length of a big-endian unsigned integer.
fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

/// The cached key set and the task that keeps it fresh. Dropping it stops the task.
pub struct Jwks {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    url: String,
    /// `url` without credentials, for logs.
    shown: String,
    keys: RwLock<Arc<KeySet>>,
    min_refetch: Duration,
    demand: Mutex<Demand>,
    /// Wakes the task for a granted refetch.
    wake: Notify,
    /// The latest demand ticket a finished fetch (good or not) has answered.
    served: watch::Sender<u64>,
}

/// Refetches asked for: tickets are numbered; the start-up fetch is ticket 1.
struct Demand {
    requested: u64,
    /// When the last refetch was granted (the rate limit).
    granted_at: Option<Instant>,
}

/// Redirects are followed only within the key set's own origin (scheme, host and port), at
/// most 3: a redirect elsewhere, or from https to http, would let whoever answers there
/// supply the keys, and so mint any token.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else { return attempt.follow() };
        if attempt.url().origin() != first.origin() {
            let why = format!(
                "a redirect to another origin ({}) is not followed",
                attempt.url().origin().ascii_serialization()
            );
            attempt.error(why)
        } else if attempt.previous().len() > 3 {
            attempt.error("more than 3 redirects")
        } else {
            attempt.follow()
        }
    })
}

impl Jwks {
    /// Starts the fetch task on the current Tokio runtime and returns at once, without keys:
    /// until the first fetch works, [`Jwks::find`] finds nothing. `base`: the claim validation
    /// every key gets (its algorithms are replaced by each key's own).
    pub fn start(settings: &JwksSettings, base: Validation) -> Result<Jwks, StartError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime("the JWKS fetcher"))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("wsgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .redirect(same_origin_redirects())
            .build()
            .map_err(StartError::JwksClient)?;
        let shared = Arc::new(Shared {
            url: settings.url.clone(),
            shown: redact_url(&settings.url),
            keys: RwLock::new(Arc::new(KeySet::default())),
            min_refetch: settings.min_refetch,
            demand: Mutex::new(Demand { requested: 1, granted_at: None }),
            wake: Notify::new(),
            served: watch::channel(0).0,
        });
        let task = rt.spawn(fetch_loop(shared.clone(), client, base, settings.refresh));
        Ok(Jwks { shared, task })
    }

    /// The current key for a token's `kid` (see [`KeySet::find`]).
    pub fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        self.current().find(kid)
    }

    /// True until a fetch has worked.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The key set now in use.
    pub fn current(&self) -> Arc<KeySet> {
        self.shared.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Asks for a refetch, for a token whose key was not found. `Some(ticket)` when one is
    /// granted now or already pending (pass it to [`Jwks::wait_for`]); `None` when the last one
    /// was granted less than `JWKS_MIN_REFETCH_SECS` ago.
    pub fn request_refetch(&self) -> Option<u64> {
        let sh = &self.shared;
        let mut d = sh.demand.lock().unwrap_or_else(PoisonError::into_inner);
        if *sh.served.borrow() < d.requested {
            return Some(d.requested);
        }
        if d.granted_at.is_some_and(|t| t.elapsed() < sh.min_refetch) {
            return None;
        }
        d.requested += 1;
        d.granted_at = Some(Instant::now());
        sh.wake.notify_one();
        tracing::debug!(url = %sh.shown, "JWKS refetch for an unknown kid");
        Some(d.requested)
    }

    /// Waits, at most `timeout`, for the fetch that answers `ticket` to finish (well or not).
    /// True if it did.
    pub async fn wait_for(&self, ticket: u64, timeout: Duration) -> bool {
        let mut served = self.shared.served.subscribe();
        let done = tokio::time::timeout(timeout, served.wait_for(|&s| s >= ticket)).await;
        matches!(done, Ok(Ok(_)))
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fetch_loop(sh: Arc<Shared>, client: reqwest::Client, base: Validation, refresh: Duration) {
    let mut failures: u32 = 0;
    loop {
        let ticket = sh.demand.lock().unwrap_or_else(PoisonError::into_inner).requested;
        match fetch(&client, &sh.url).await.and_then(|body| parse_key_set(&body, &base)) {
            Ok(parsed) => {
                sh.install(parsed, failures);
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                let held = sh.keys.read().unwrap_or_else(PoisonError::into_inner).len();
                if failures == 1 {
                    let keeping = match held {
                        0 => "no keys yet: tokens are refused until a fetch works".to_string(),
                        n => format!("keeping the {n} keys already loaded"),
                    };
                    tracing::warn!(url = %sh.shown, error = %e, "JWKS fetch from {} failed; {keeping}", sh.shown);
                } else {
                    tracing::debug!(url = %sh.shown, error = %e, failures, "JWKS fetch failed again");
                }
            }
        }
        sh.served.send_if_modified(|s| {
            let newer = ticket > *s;
            if newer {
                *s = ticket;
            }
            newer
        });
        let pause = if failures == 0 { refresh } else { backoff(failures, refresh) };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = sh.wake.notified() => {}
        }
    }
}

impl Shared {
    fn install(&self, parsed: Parsed, failures: u32) {
        let Parsed { keys, skipped } = parsed;
        let (n, kids) = (keys.len(), keys.kids());
        let changed = {
            let mut cur = self.keys.write().unwrap_or_else(PoisonError::into_inner);
            let changed = cur.is_empty() || cur.kids() != kids || cur.len() != n;
            *cur = Arc::new(keys);
            changed
        };
        if changed || failures > 0 {
            for why in &skipped {
                tracing::warn!(url = %self.shown, "JWKS {why}: skipped");
            }
            tracing::info!(url = %self.shown, keys = n, ?kids, failed_before = failures, "JWKS loaded {n} keys from {}", self.shown);
        } else {
            tracing::debug!(url = %self.shown, keys = n, "JWKS refreshed, unchanged");
        }
    }
}

/// The pause after the `failures`-th failed fetch in a row: 1 s doubling, capped at 60 s and at
/// the refresh period, ±10 % so a fleet does not retry in step.
fn backoff(failures: u32, refresh: Duration) -> Duration {
    let base = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(10));
    let capped = base.min(BACKOFF_MAX).min(refresh);
    capped.mul_f64(0.9 + rand::random::<f64>() * 0.2)
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, JwksError> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
        .send()
        .await
        .map_err(describe)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(JwksError(format!("HTTP {status}")));
    }
    let too_large = || JwksError(format!("body larger than {MAX_BODY_BYTES} bytes"));
    if resp.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its causes ("error sending request: connection refused"), without the
/// URL (which may hold credentials; the logs name the redacted one).
fn describe(e: reqwest::Error) -> JwksError {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    JwksError(s)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;

    /// A test key file (read at test time: test keys are never built into the binary).
    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).expect("test key")
    }

    /// The public JWK of a test private key, with `kid`.
    fn jwk(alg: Algorithm, kid: &str) -> Value {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem("rs256-private.pem")),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("es256-private.pem")),
            Algorithm::ES384 => EncodingKey::from_ec_pem(&pem("es384-private.pem")),
            _ => EncodingKey::from_ed_pem(&pem("ed25519-private.pem")),
        }
        .unwrap();
        let mut v = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        v["kid"] = kid.into();
        v
    }

    fn parse(keys: Vec<Value>) -> Result<Parsed, JwksError> {
        parse_key_set(json!({ "keys": keys }).to_string().as_bytes(), &Validation::new(Algorithm::RS256))
    }

    #[test]
    fn every_supported_key_type_is_kept_by_kid() {
        let p = parse(vec![
            jwk(Algorithm::RS256, "rsa"),
            jwk(Algorithm::ES256, "p256"),
            jwk(Algorithm::ES384, "p384"),
            jwk(Algorithm::EdDSA, "ed"),
        ])
        .unwrap();
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        assert_eq!(p.keys.kids(), ["ed", "p256", "p384", "rsa"]);
        assert_eq!(p.keys.find(Some("rsa")).unwrap().validation.algorithms, [Algorithm::RS256]);
        assert_eq!(p.keys.find(Some("p384")).unwrap().validation.algorithms, [Algorithm::ES384]);
        assert_eq!(p.keys.find(Some("ed")).unwrap().validation.algorithms, [Algorithm::EdDSA]);
        // Several keys: a token without kid has none.
        assert!(p.keys.find(None).is_none());
        assert!(p.keys.find(Some("nope")).is_none());
    }

    #[test]
    fn an_rsa_key_without_alg_allows_the_rsa_algorithms_only() {
        let mut k = jwk(Algorithm::RS256, "rsa");
        k.as_object_mut().unwrap().remove("alg");
        let p = parse(vec![k]).unwrap();
        let algs = &p.keys.find(Some("rsa")).unwrap().validation.algorithms;
        assert!(algs.contains(&Algorithm::RS512) && !algs.contains(&Algorithm::HS256), "{algs:?}");
        // The only key serves a token without kid.
        assert!(p.keys.find(None).is_some());
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        let mut enc = jwk(Algorithm::RS256, "enc");
        enc["use"] = "enc".into();
        let mut ops = jwk(Algorithm::RS256, "ops");
        ops["key_ops"] = json!(["encrypt"]);
        let mut wrong_alg = jwk(Algorithm::ES256, "wrong-alg");
        wrong_alg["alg"] = "RS256".into();
        let mut short = jwk(Algorithm::ES256, "short");
        short["x"] = "AAAA".into();
        let mut tiny_rsa = jwk(Algorithm::RS256, "tiny");
        tiny_rsa["n"] = "AQAB".into();
        let skipped = [
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"}),
            json!({"kty": "XYZ", "kid": "xyz"}),
            json!("not an object"),
            enc,
            ops,
            wrong_alg,
            short,
            tiny_rsa,
        ];
        let n = skipped.len();
        let mut keys = vec![jwk(Algorithm::ES256, "good")];
        keys.extend(skipped);
        keys.push(jwk(Algorithm::RS256, "good"));
        let p = parse(keys).unwrap();
        assert_eq!(p.keys.kids(), ["good"]);
        assert_eq!(p.keys.find(Some("good")).unwrap().validation.algorithms, [Algorithm::ES256], "first one wins");
        assert_eq!(p.skipped.len(), n + 1, "{:#?}", p.skipped);
        for kid in ["hmac", "p521", "k1", "xyz", "enc", "ops", "wrong-alg", "short", "tiny"] {
            let name = format!("key {kid:?}: ");
            assert!(p.skipped.iter().any(|s| s.starts_with(&name)), "{name} in {:#?}", p.skipped);
        }
        assert!(p.skipped.iter().any(|s| s.starts_with("key #5 (no kid): not a JWK")), "{:#?}", p.skipped);
        assert!(p.skipped.iter().any(|s| s.contains("a second key with this kid")), "{:#?}", p.skipped);
    }

    #[test]
    fn garbage_and_empty_sets_are_errors() {
        let base = Validation::new(Algorithm::RS256);
        for body in ["", "not json", "{}", "{\"keys\": {}}", "[]"] {
            assert!(parse_key_set(body.as_bytes(), &base).is_err(), "{body:?}");
        }
        assert_eq!(parse(vec![]).err().unwrap().to_string(), "the key set is empty");
        let e = parse(vec![json!({"kty": "oct", "k": "c2VjcmV0"})]).err().unwrap().to_string();
        assert!(e.contains("none of its 1 keys"), "{e}");
    }

    #[test]
    fn bit_length() {
        assert_eq!(significant_bits(&[0, 0, 1]), 1);
        assert_eq!(significant_bits(&[0x80, 0]), 16);
        assert_eq!(significant_bits(&[]), 0);
        let backoffs: Vec<u64> = (1..=9).map(|f| backoff(f, Duration::from_secs(300)).as_secs()).collect();
        assert!(backoffs[0] <= 1 && backoffs[3] >= 7 && backoffs[8] >= 54 && backoffs[8] <= 66, "{backoffs:?}");
        assert!(backoff(5, Duration::from_secs(2)) <= Duration::from_millis(2200));
    }
}
