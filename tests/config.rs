//! Settings: bad values stop the process at once with a message naming the variable, flags win
//! over the environment, `--help` lists every variable, JSON logs are JSON, and dev mode
//! (no key configured) prints two tokens that work.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use support::*;

const ENV_NAMES: [&str; 21] = [
    "LISTEN_ADDR",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY_SECS",
    "INSTANCE_ID",
    "LOG_FORMAT",
    "ALLOWED_ORIGINS",
    "MAX_MESSAGE_BYTES",
    "OUTBOX_MAX_MESSAGES",
    "OUTBOX_MAX_BYTES",
    "PING_INTERVAL_MS",
    "PONG_TIMEOUT_MS",
    "MAX_BODY_BYTES",
    "PUBLISH_RATE_PER_SEC",
    "PUBLISH_BURST",
    "DRAIN_TIMEOUT_MS",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "HEARTBEAT_INTERVAL_MS",
];

/// Runs `wsgate` to its exit (bounded) and returns (exit code, stdout, stderr).
async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut p = Process::spawn(wsgate_command(args, env));
    let status = p.wait_exit(Duration::from_secs(5)).await;
    let status = status.unwrap_or_else(|| panic!("wsgate {args:?} {env:?} still running after 5 s:\n{}", p.stderr()));
    (status.code(), p.stdout(), p.stderr())
}

#[tokio::test]
async fn an_invalid_setting_exits_non_zero_naming_the_variable() {
    let cases: [(&str, &str); 9] = [
        ("LISTEN_ADDR", "nonsense"),
        ("LOG_FORMAT", "xml"),
        ("OUTBOX_MAX_BYTES", "0"),
        ("OUTBOX_MAX_MESSAGES", "many"),
        ("JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
        ("MAX_MESSAGE_BYTES", "-1"),
        ("MAX_BODY_BYTES", "lots"),
        ("PUBLISH_RATE_PER_SEC", "fast"),
        ("PING_INTERVAL_MS", "soon"),
    ];
    let runs = cases.iter().map(|&(name, value)| async move {
        let mut env = vec![("LISTEN_ADDR", "127.0.0.1:0"), (name, value)];
        if name != "JWT_PUBLIC_KEY_FILE" {
            env.push(("JWT_SECRET", "config-test-secret-0123456789abcdef"));
        }
        (name, value, run_to_exit(&[], &env).await)
    });
    for (name, value, (code, _, stderr)) in join_all(runs).await {
        assert!(code.is_some_and(|c| c != 0), "{name}={value}: exit code {code:?}");
        assert!(stderr.contains(name), "{name}={value}: stderr does not name {name}:\n{stderr}");
    }
}

#[tokio::test]
async fn a_flag_wins_over_its_environment_variable() {
    let gw = Gateway::start_with_args(&["--listen-addr", "127.0.0.1:0"], &[("LISTEN_ADDR", "nonsense")]).await;
    assert_eq!(gw.get("/live").await.status(), 200);
}

#[tokio::test]
async fn help_lists_every_environment_variable() {
    let (code, stdout, stderr) = run_to_exit(&["--help"], &[]).await;
    assert_eq!(code, Some(0), "--help exit code; stderr:\n{stderr}");
    let missing: Vec<_> = ENV_NAMES.iter().filter(|n| !stdout.contains(*n)).collect();
    assert!(missing.is_empty(), "--help does not mention {missing:?}:\n{stdout}");
}

#[tokio::test]
async fn json_log_format_writes_json_lines() {
    let gw = Gateway::start(&[("LOG_FORMAT", "json")]).await;
    let logs = gw.logs();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object(), "log line is not an object: {line}");
    }
}

#[tokio::test]
async fn dev_mode_warns_and_prints_a_user_and_a_publish_token_that_work() {
    let gw = Gateway::start(&[("JWT_SECRET", "")]).await;
    let user = gw.wait_log("dev user token: ").await;
    let publisher = gw.wait_log("dev publish token: ").await;
    let token_after = |line: &str, label: &str| {
        let rest = &line[line.find(label).unwrap() + label.len()..];
        rest.split_whitespace().next().expect("a token after the label").to_owned()
    };
    let (user, publisher) = (token_after(&user, "dev user token: "), token_after(&publisher, "dev publish token: "));
    let warning = gw.logs().lines().any(|l| l.contains("WARN") && !l.contains(" token: "));
    assert!(warning, "dev mode should log a warning besides the tokens:\n{}", gw.logs());

    let mut client = connect(&gw, &user).await;
    publish_ok(&gw, &publisher, json!({"type": "dev", "data": "hi"})).await;
    assert_eq!(client.expect_event("dev").await["data"], "hi");
    // The user token is not a publish token.
    assert_error("user token publishing", &publish(&gw, &user, json!({"type": "dev"})).await, 403);
}
