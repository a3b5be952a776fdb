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
        (&["--jwt-public-key-file", pem, "--jwt-jwks-url", "https://idp/j"], "JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL"),
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
    let e = parse(&["--redis-url", "redis://:inline@cache", "--redis-password-file", f.to_str().unwrap()]).unwrap_err();
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
