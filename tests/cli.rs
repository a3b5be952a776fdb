//! The operator subcommands, run as the real binary against a real gateway: `token`, `publish`,
//! `listen`, `stats`, `channels`, `history`, `disconnect`; a subcommand reads only its own
//! settings; exit codes (2: usage or settings, 1: a failed request). `checktoken` is in
//! `tests/cli_checktoken.rs`, https:// and wss:// in `tests/cli_tls.rs`.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a `wsgate` subcommand ended.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Exit 0; stdout is one JSON document.
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "exit code; stderr:\n{}", self.stderr);
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `wsgate <args>` to its end (within [`STEP`]) with exactly `env`.
async fn wsgate(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut p = Process::spawn(wsgate_command(args, env));
    let status = p.wait_exit(STEP).await.unwrap_or_else(|| panic!("wsgate {args:?} still running after {STEP:?}"));
    Out { code: status.code(), stdout: p.stdout(), stderr: p.stderr() }
}

/// The gateway's secret and URL, as an operator's shell would have them.
fn env_of(gw: &Gateway) -> Vec<(&'static str, String)> {
    vec![("JWT_SECRET", gw.secret.clone()), ("WSGATE_URL", gw.http_url(""))]
}

/// Runs `wsgate <args>` against `gw`, plus `extra` environment.
async fn on(gw: &Gateway, args: &[&str], extra: &[(&str, &str)]) -> Out {
    let base = env_of(gw);
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    wsgate(args, &env).await
}

/// `wsgate listen <args>` against `gw`, left running; returns once it printed `connected`.
async fn listener(gw: &Gateway, args: &[&str]) -> Process {
    let mut all = vec!["listen"];
    all.extend_from_slice(args);
    let env = env_of(gw);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = Process::spawn(wsgate_command(&all, &env));
    wait_until("the listener's connected frame", STEP, || std::future::ready(p.stdout().contains("\"connected\"")))
        .await;
    p
}

fn lines(p: &Process) -> Vec<Value> {
    p.stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// Waits for the listener to print a frame of type `kind` and returns it.
async fn printed(p: &Process, kind: &str) -> Value {
    let mut found = None;
    wait_until(&format!("the listener to print a {kind:?} frame"), STEP, || {
        found = lines(p).into_iter().find(|v| v["type"] == kind);
        std::future::ready(found.is_some())
    })
    .await;
    found.expect("found")
}

// ---------------------------------------------------------------------------------------------
// token, publish, listen, stats

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_publish_stats_and_listen() {
    let gw = Gateway::start(&[]).await;

    // A minted user token connects as that user, for its lifetime.
    let out = on(&gw, &["token", "--sub", "alice", "--ttl", "1h 30m"], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let token = out.stdout.trim();
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims;
    let ttl = claims["exp"].as_u64().unwrap() - now_secs();
    assert!((5390..=5400).contains(&ttl), "1h 30m: {ttl} s left");
    let mut alice = connect(&gw, token).await;
    assert_eq!(alice.connected["user"], "alice");

    // A publish mints a publish token; the answer is the gateway's, the data byte for byte.
    let out = on(
        &gw,
        &["publish", "--type", "cli.hello", "--data", r#"{"n":1,"big":12345678901234567890}"#, "--user", "alice"],
        &[],
    )
    .await;
    let answer = out.json();
    let e = alice.expect_event("cli.hello").await;
    assert_eq!(e["id"], answer["id"]);
    assert_eq!(e["data"], json!({"n": 1, "big": 12345678901234567890u64}));

    let stats = on(&gw, &["stats"], &[]).await.json();
    assert_eq!(stats["local_connections"], 1);

    // listen prints every frame as one JSON line.
    let bob = listener(&gw, &["--sub", "bob"]).await;
    let out = on(&gw, &["publish", "--type", "for.bob", "--user", "bob"], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let e = printed(&bob, "for.bob").await;
    let frames = lines(&bob);
    assert_eq!(frames.len(), 2, "connected, then the one event: {frames:?}");
    assert_eq!((frames[0]["type"].clone(), frames[0]["user"].clone()), (json!("connected"), json!("bob")));
    assert_eq!(e["data"], Value::Null);
}

#[tokio::test]
async fn publish_reads_data_from_a_file_or_stdin_and_targets_a_channel() {
    let gw = Gateway::start(&[]).await;
    let mut news = connect_channels(&gw, &channel_token(&gw.secret, "ann", &["news"]), "news").await;
    news.expect_subscribed_frame("news").await;

    let dir = TempDir::new("cli-data");
    let file = dir.path().join("data.json");
    std::fs::write(&file, "{\"from\": \"file\"}\n").unwrap();
    let at_file = format!("@{}", file.display());
    let out = on(&gw, &["publish", "--type", "f", "--data", &at_file, "--channel", "news"], &[]).await;
    let id = out.json()["id"].clone();
    let e = news.expect_event("f").await;
    assert_eq!(
        (e["id"].clone(), e["channel"].clone(), e["data"].clone()),
        (id, json!("news"), json!({"from": "file"}))
    );

    // @-: standard input.
    let mut cmd = wsgate_command(&["publish", "--type", "s", "--data", "@-"], &[]);
    for (k, v) in env_of(&gw) {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_bound(cmd).expect("spawn wsgate");
    child.stdin.take().unwrap().write_all(b"[1, 2, 3]").unwrap();
    let deadline = Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wsgate publish --data @- still running after {STEP:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(news.expect_event("s").await["data"], json!([1, 2, 3]));

    // The same idempotency key twice: one event, one id.
    let first = on(&gw, &["publish", "--type", "once", "--idempotency-key", "k-1"], &[]).await.json();
    let again = on(&gw, &["publish", "--type", "once", "--idempotency-key", "k-1"], &[]).await.json();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(news.expect_event("once").await["id"], first["id"]);
    news.expect_quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn failures_exit_1_for_a_request_and_2_for_usage() {
    let gw = Gateway::start(&[]).await;
    // Usage: not JSON, --user with --channel, a bad URL, a bad duration.
    let out = on(&gw, &["publish", "--type", "t", "--data", "{not json"], &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--data is not JSON"), "{}", out.stderr);
    let out = on(&gw, &["publish", "--type", "t", "--user", "a", "--channel", "c"], &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
    let out = on(&gw, &["publish", "--type", "t", "--url", "gw.example.com"], &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--url"), "{}", out.stderr);
    let out = on(&gw, &["token", "--sub", "a", "--ttl", "1 fortnight"], &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("unknown time unit"), "{}", out.stderr);
    // Nothing to mint with.
    let out = wsgate(&["publish", "--type", "t"], &[("WSGATE_URL", &gw.http_url(""))]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("JWT_SECRET") && out.stderr.contains("--token"), "{}", out.stderr);

    // A refused publish: exit 1, the gateway's status and error on stderr, nothing on stdout.
    let out = on(&gw, &["publish", "--type", ""], &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("POST /api/events answered 400") && out.stderr.contains("1 to 128"), "{}", out.stderr);
    // A user token cannot publish: the gateway's 403.
    let user = user_token(&gw.secret, "alice", 60);
    let out = on(&gw, &["publish", "--type", "t", "--token", &user], &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("answered 403: token lacks the \"publish\" scope"), "{}", out.stderr);

    // Nobody there: exit 1, naming the URL.
    let hold = PortHold::new();
    let nowhere = format!("http://127.0.0.1:{}", hold.port());
    let out = on(&gw, &["publish", "--type", "t", "--url", &nowhere], &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach") && out.stderr.contains(&nowhere), "{}", out.stderr);
    let out = on(&gw, &["listen", "--url", &nowhere], &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// A subcommand reads only its own settings

#[tokio::test]
async fn token_ignores_the_server_settings_and_checks_its_own() {
    let gw = Gateway::start(&[]).await;
    let garbage =
        [("REDIS_URL", "not a url"), ("LISTEN_ADDR", "nonsense"), ("LOG_FORMAT", "xml"), ("OUTBOX_MAX_BYTES", "0")];
    let mut env = vec![("JWT_SECRET", gw.secret.as_str())];
    env.extend_from_slice(&garbage);
    let out = wsgate(&["token", "--sub", "carol"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(connect(&gw, out.stdout.trim()).await.connected["user"], "carol");
    // The same garbage stops the gateway itself (exit 2, naming a setting).
    let out = wsgate(&[], &env).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("invalid value"), "{}", out.stderr);

    // Its own settings are checked as the gateway checks them: a 31-byte secret is refused.
    let short = &gw.secret[..31];
    let out = wsgate(&["token", "--sub", "a"], &[("JWT_SECRET", short)]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("invalid setting JWT_SECRET") && out.stderr.contains("got 31"), "{}", out.stderr);
    // JWT_SECRET_FILE mints as well; two key sources are one error.
    let dir = TempDir::new("cli-secret");
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{}\n", gw.secret)).unwrap();
    let file = file.to_str().unwrap();
    let out = wsgate(&["token", "--sub", "dan", "--scope", "publish"], &[("JWT_SECRET_FILE", file)]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let (status, _) = publish(&gw, out.stdout.trim(), json!({"type": "t"})).await;
    assert_eq!(status, 202);
    let out = wsgate(&["token", "--sub", "a"], &[("JWT_SECRET_FILE", file), ("JWT_SECRET", &gw.secret)]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("set only one of"), "{}", out.stderr);
    // A public key verifies but cannot sign.
    let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-public.pem");
    let out = wsgate(&["token", "--sub", "a"], &[("JWT_PUBLIC_KEY_FILE", pem)]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("cannot sign"), "{}", out.stderr);
}

#[tokio::test]
async fn minted_tokens_carry_the_issuer_audience_scope_and_channels_the_gateway_wants() {
    let env = [("JWT_ISSUER", "https://idp.example"), ("JWT_AUDIENCE", "wsgate")];
    let gw = Gateway::start(&env).await;
    let out = on(&gw, &["token", "--sub", "eve", "--channels", "team:*,news", "--channels", "ops"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(out.stdout.trim()).unwrap().claims;
    assert_eq!(claims["iss"], "https://idp.example");
    assert_eq!(claims["aud"], "wsgate");
    assert_eq!(claims["channels"], json!(["team:*", "news", "ops"]));
    let mut eve = connect_channels(&gw, out.stdout.trim(), "team:1,ops").await;
    eve.expect_subscribed_frame("team:1").await;
    eve.expect_subscribed_frame("ops").await;
    // publish mints a publish token the gateway accepts (iss, aud).
    let out = on(&gw, &["publish", "--type", "to.team", "--channel", "team:1"], &env).await;
    assert_eq!(out.json()["id"], eve.expect_event("to.team").await["id"]);
    let out = on(&gw, &["token", "--sub", "a", "--channels", "bad name"], &env).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// listen

/// The upgrade request `listen` sends: the token in the Authorization header, not the query;
/// `since` and `channels` in the query. A refused upgrade shows the answer's status and error.
#[tokio::test]
async fn listen_sends_its_token_in_the_header_not_the_query() {
    let hold = PortHold::new();
    let server = hold.listen();
    let url = format!("http://127.0.0.1:{}", hold.port());
    let secret = random_hex();
    let mut p = Process::spawn(wsgate_command(
        &["listen", "--sub", "fay", "--since", "1732262400000-0", "--channels", "a,b"],
        &[("JWT_SECRET", &secret), ("WSGATE_URL", &url)],
    ));
    let (mut sock, _) = within("the listener to connect", STEP, server.accept()).await.unwrap();
    let mut head = Vec::new();
    within("the upgrade request", STEP, async {
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the listener hung up");
            head.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let head = String::from_utf8(head).unwrap();
    let first = head.lines().next().unwrap();
    assert_eq!(first, "GET /ws/tasks?since=1732262400000-0&channels=a%2Cb HTTP/1.1", "{head}");
    let bearer = head
        .lines()
        .find_map(|l| l.strip_prefix("authorization: Bearer ").or_else(|| l.strip_prefix("Authorization: Bearer ")))
        .unwrap_or_else(|| panic!("no Authorization: Bearer header in\n{head}"));
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(bearer.trim()).unwrap().claims;
    assert_eq!((claims["sub"].clone(), claims["channels"].clone()), (json!("fay"), json!(["a", "b"])));
    let body = r#"{"error":"token expired"}"#;
    let answer = format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(answer.as_bytes()).await.unwrap();
    let status = p.wait_exit(STEP).await.expect("listen exits after a refused upgrade");
    assert_eq!(status.code(), Some(1), "{}", p.stderr());
    assert!(p.stderr().contains("GET /ws/tasks answered 401: token expired"), "{}", p.stderr());
}

#[tokio::test]
async fn listen_resumes_since_an_id() {
    let gw = Gateway::start(&[]).await;
    let token = publish_token(&gw.secret);
    let first = publish_ok(&gw, &token, json!({"type": "one"})).await;
    publish_ok(&gw, &token, json!({"type": "two"})).await;
    let p = listener(&gw, &["--since", &first]).await;
    let e = printed(&p, "two").await;
    let frames = lines(&p);
    assert_eq!(frames[0]["recovered"], true, "{frames:?}");
    assert_eq!(frames.iter().filter(|f| f["type"] == "one").count(), 0, "{frames:?}");
    assert_eq!(e["type"], "two");
}

// ---------------------------------------------------------------------------------------------
// The admin API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_a_user_with_4001_or_1012_and_percent_encodes_the_sub() {
    let gw = Gateway::start(&[]).await;
    let mut carol = listener(&gw, &["--sub", "carol"]).await;
    let mut other = connect_user(&gw, "other").await;

    let out = on(&gw, &["disconnect", "carol"], &[]).await;
    assert_eq!(out.json(), json!({"user": "carol", "disconnected": 1}));
    let status = carol.wait_exit(STEP).await.expect("listen exits when the gateway closes");
    assert_eq!(status.code(), Some(1));
    assert!(carol.stderr().contains("the gateway closed the connection: 4001 revoked"), "{}", carol.stderr());

    let mut dave = connect_user(&gw, "dave").await;
    let out = on(&gw, &["disconnect", "dave", "--reconnect"], &[]).await;
    assert_eq!(out.json(), json!({"user": "dave", "disconnected": 1}));
    assert_eq!(dave.expect_close(STEP).await, 1012);

    // A sub that is not a plain path segment reaches the gateway whole.
    let odd = "team/a b?c%";
    let mut o = connect(&gw, &user_token(&gw.secret, odd, 3600)).await;
    let out = on(&gw, &["disconnect", odd], &[]).await;
    assert_eq!(out.json(), json!({"user": odd, "disconnected": 1}));
    assert_eq!(o.expect_close(STEP).await, 4001);
    // Nobody else was touched.
    other.assert_alive().await;
    let out = on(&gw, &["disconnect", "nobody"], &[]).await;
    assert_eq!(out.json(), json!({"user": "nobody", "disconnected": 0}));
}

#[tokio::test]
async fn channels_and_history() {
    let gw = Gateway::start(&[]).await;
    let p = listener(&gw, &["--sub", "gus", "--channels", "news,team:1"]).await;
    // Both joins are in: the listener printed both subscribed frames.
    wait_until("both subscriptions", STEP, || {
        std::future::ready(lines(&p).iter().filter(|f| f["type"] == "subscribed").count() == 2)
    })
    .await;
    let all = on(&gw, &["channels"], &[]).await.json();
    assert_eq!(
        all,
        json!({"channels": [{"channel": "news", "subscribers": 1}, {"channel": "team:1", "subscribers": 1}]})
    );
    let some = on(&gw, &["channels", "--prefix", "team:"], &[]).await.json();
    assert_eq!(some, json!({"channels": [{"channel": "team:1", "subscribers": 1}]}));

    let mut ids = Vec::new();
    for i in 0..3 {
        let data = format!("{{\"i\":{i}}}");
        ids.push(
            on(&gw, &["publish", "--type", "n", "--channel", "news", "--data", &data], &[]).await.json()["id"].clone(),
        );
    }
    on(&gw, &["publish", "--type", "everyone"], &[]).await.json();
    printed(&p, "everyone").await;
    let h = on(&gw, &["history", "--channel", "news"], &[]).await.json();
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.iter().map(|e| e["id"].clone()).collect::<Vec<_>>(), ids);
    assert_eq!(events[2]["data"], json!({"i": 2}));
    assert_eq!(events[0]["channel"], "news");
    let h = on(&gw, &["history", "--channel", "news", "--since", ids[0].as_str().unwrap(), "--limit", "1"], &[])
        .await
        .json();
    assert_eq!(h["events"].as_array().unwrap().len(), 1);
    assert_eq!(h["events"][0]["id"], ids[1]);
    // Without --channel: the events published without one.
    let h = on(&gw, &["history"], &[]).await.json();
    assert_eq!(
        h["events"].as_array().unwrap().iter().map(|e| e["type"].clone()).collect::<Vec<_>>(),
        [json!("everyone")]
    );
    let out = on(&gw, &["history", "--since", "yesterday"], &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("GET /api/history answered 400") && out.stderr.contains("since"), "{}", out.stderr);
}

#[tokio::test]
async fn admin_calls_need_the_admin_scope_and_go_to_the_admin_listener() {
    let gw = Gateway::start(&[("ADMIN_LISTEN_ADDR", "127.0.0.1:0")]).await;
    let admin = gw.admin_url("");
    // Everything on --admin-url (WSGATE_ADMIN_URL); the public listener does not serve them.
    let admin = admin.as_str();
    for args in [&["stats"][..], &["channels"][..], &["history"][..], &["disconnect", "x"][..]] {
        let out = on(&gw, args, &[("WSGATE_ADMIN_URL", admin)]).await;
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        out.json();
        let out = on(&gw, args, &[]).await;
        assert_eq!(out.code, Some(1), "{args:?} on the public listener: {}", out.stdout);
        assert!(out.stderr.contains("answered 404"), "{args:?}: {}", out.stderr);
    }
    let out = on(&gw, &["channels", "--admin-url", admin], &[]).await;
    assert_eq!(out.json(), json!({"channels": []}));
    // A publish token is not an admin token: the gateway's 403, exit 1.
    let token = publish_token(&gw.secret);
    let out = on(&gw, &["channels", "--token", &token], &[("WSGATE_ADMIN_URL", admin)]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("GET /api/channels answered 403: token lacks the \"admin\" scope"), "{}", out.stderr);
    // stats needs no key at all.
    let out = wsgate(&["stats"], &[("WSGATE_ADMIN_URL", admin)]).await;
    assert_eq!(out.json()["local_connections"], 0);
}

#[tokio::test]
async fn help_lists_the_subcommands_by_topic_and_each_has_its_own() {
    let out = wsgate(&["--help"], &[]).await;
    assert_eq!(out.code, Some(0));
    let text = out.stdout;
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("--help lacks {s:?}:\n{text}"));
    assert!(at("Events:") < at("  publish ") && at("  listen ") < at("Tokens:"), "{text}");
    assert!(at("Tokens:") < at("  checktoken ") && at("  checktoken ") < at("Operations"), "{text}");
    assert!(at("Operations") < at("  disconnect ") && at("  disconnect ") < at("Listeners:"), "{text}");
    for sub in ["publish", "listen", "token", "checktoken", "stats", "channels", "history", "disconnect"] {
        let out = wsgate(&["help", sub], &[]).await;
        assert_eq!(out.code, Some(0), "help {sub}");
        assert!(out.stdout.contains(&format!("Usage: wsgate {sub}")), "help {sub}:\n{}", out.stdout);
        assert!(
            !out.stdout.contains("--listen-addr") && !out.stdout.contains("--redis-url"),
            "help {sub}:\n{}",
            out.stdout
        );
    }
    let out = wsgate(&["help", "publish"], &[]).await;
    for flag in
        ["--type", "--data", "--user", "--channel", "--idempotency-key", "WSGATE_URL", "WSGATE_TOKEN", "JWT_SECRET"]
    {
        assert!(out.stdout.contains(flag), "help publish lacks {flag}:\n{}", out.stdout);
    }
}
