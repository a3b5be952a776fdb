//! The operator subcommands against a real gateway: `token`, `publish`, `listen`, `stats`.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

/// Runs `wsgate <args>` with the gateway's secret and URL (bounded by [`STEP`]); returns
/// (success, stdout, stderr).
fn run(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let url = gw.http_url("");
    let cmd: Command = wsgate_command(args, &[("JWT_SECRET", gw.secret.as_str()), ("WSGATE_URL", url.as_str())]);
    let (status, out, err) = run_bounded(cmd, STEP);
    (status.success(), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_publish_stats_and_listen() {
    let gw = Gateway::start(&[]).await;

    // A minted user token connects as that user; a publish token publishes.
    let (ok, token, err) = run(&gw, &["token", "--sub", "alice", "--ttl", "2h"]);
    assert!(ok, "{err}");
    let mut alice = connect(&gw, token.trim()).await;
    assert_eq!(alice.connected["user"], "alice");

    let (ok, out, err) = run(&gw, &["publish", "--type", "cli.hello", "--data", r#"{"n":1}"#, "--user", "alice"]);
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(out.trim()).expect("publish prints the gateway's JSON answer");
    let e = alice.expect_event("cli.hello").await;
    assert_eq!((e["id"].clone(), e["data"]["n"].clone()), (answer["id"].clone(), Value::from(1)));

    let (ok, out, _) = run(&gw, &["stats"]);
    assert!(ok);
    let stats: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stats["local_connections"], 1);

    // listen prints every frame as one JSON line.
    let url = gw.http_url("");
    let listener = Process::spawn(wsgate_command(
        &["listen", "--sub", "bob"],
        &[("JWT_SECRET", &gw.secret), ("WSGATE_URL", &url)],
    ));
    // alice and bob: exactly two connections.
    wait_until("the listener to connect", STEP, || async { gw.metric("wsgate_connections").await == 2.0 }).await;
    let (ok, _, err) = run(&gw, &["publish", "--type", "for.bob", "--user", "bob"]);
    assert!(ok, "{err}");
    wait_until("the listener to print the event", STEP, || std::future::ready(listener.stdout().contains("for.bob")))
        .await;
    let lines: Vec<Value> = listener.stdout().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 2, "connected, then the one event: {lines:?}");
    assert_eq!(lines[0]["type"], "connected");
    assert_eq!(lines[1]["type"], "for.bob");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message() {
    let gw = Gateway::start(&[]).await;
    let (ok, _, err) = run(&gw, &["publish", "--type", "t", "--data", "{not json"]);
    assert!(!ok && err.contains("--data"), "{err}");
    let (ok, _, err) = run(&gw, &["token", "--sub", "a", "--ttl", "1w"]);
    assert!(!ok && err.contains("unit"), "{err}");
    // Without a key there is nothing to mint with.
    let (status, _, err) = run_bounded(wsgate_command(&["token", "--sub", "a"], &[]), STEP);
    assert!(!status.success());
    assert!(err.contains("JWT_SECRET"), "{err}");
    // A publish the gateway refuses exits non-zero and shows the gateway's error.
    let (ok, out, _) = run(&gw, &["publish", "--type", ""]);
    assert!(!ok && out.contains("type") && out.contains("1 to 128"), "{out}");
}
