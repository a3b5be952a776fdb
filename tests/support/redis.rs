//! Throwaway `redis-server`s: [`RedisServer`] (plain, with a password or ACL users, with
//! TLS: [`make_tls_files`]), [`RedisCluster`], and what the tests ask Redis about pub/sub.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{free_port, run_ok, wait_until, Process, TempDir, STEP};

// ---------------------------------------------------------------------------------------------
// One server

/// A throwaway `redis-server` on a loopback port (never 6379), no persistence, its own `--dir`
/// (removed on drop), killed on drop. It can be killed and restarted on the same port.
pub struct RedisServer {
    /// `None` while killed.
    pub proc: Option<Process>,
    /// The plain (non-TLS) port.
    pub port: u16,
    args: Vec<String>,
    tls_port: Option<u16>,
    /// Its `--dir` (Cluster config files and the like), kept across restarts.
    dir: TempDir,
}

impl RedisServer {
    /// A plain server on a free port.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(free_port(), &[]).await
    }

    /// A server on `port` with `extra` arguments (`--requirepass pw`, `--user ...` ACL lines,
    /// `--cluster-enabled yes ...`, `--tls-port N --tls-cert-file ...`).
    pub async fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        assert_ne!(port, 6379, "never touch the default Redis port");
        let dir = TempDir::new("redis");
        let mut args: Vec<String> =
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .into_iter()
                .map(str::to_owned)
                .collect();
        args.extend(["--dir".to_owned(), dir.path().display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let tls_port = extra.iter().position(|a| *a == "--tls-port").map(|i| {
            let port = extra.get(i + 1).and_then(|p| p.parse().ok()).expect("--tls-port takes a port number");
            assert_ne!(port, 6379, "never touch the default Redis port");
            port
        });
        let mut server = RedisServer { proc: None, port, args, tls_port, dir };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server (no shutdown, no clean-up) and reaps it; the port is free again.
    pub fn kill(&mut self) {
        self.proc = None; // Process::drop: SIGKILL and wait
    }

    /// Starts the (killed) server again on the same port(s), with the same arguments and
    /// directory, and waits until it serves.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "redis-server on port {} is still running", self.port);
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.args);
        let proc = self.proc.insert(Process::spawn(cmd));
        let (port, tls_port) = (self.port, self.tls_port);
        let what = format!("redis-server on port {port} to answer PING (and to accept on TLS port {tls_port:?})");
        wait_until(&what, STEP, || {
            if let Some(status) = proc.try_exit() {
                panic!("redis-server exited ({status}) before serving; output:\n{}{}", proc.stdout(), proc.stderr());
            }
            async move {
                redis_answers(port).await
                    && match tls_port {
                        Some(p) => TcpStream::connect(("127.0.0.1", p)).await.is_ok(),
                        None => true,
                    }
            }
        })
        .await;
    }

    /// Runs `redis-cli` against the plain port with `args`; returns its output, trimmed (no
    /// tty, so replies are raw: `1`, not `(integer) 1`).
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args);
        run_ok(cmd).await.trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Before `dir` goes: the server must not write into a removed directory.
        self.kill();
    }
}

/// Whether a Redis server answers on `port`: `+PONG`, or `-NOAUTH` when it wants a password.
async fn redis_answers(port: u16) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n") {
            let mut chunk = [0u8; 64];
            let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            reply.extend_from_slice(&chunk[..n]);
        }
        Some(reply.starts_with(b"+PONG\r\n") || reply.starts_with(b"-NOAUTH "))
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// TLS

/// The files of a TLS set-up made with openssl: a throwaway CA and a server certificate for
/// 127.0.0.1 / localhost signed by it.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes [`TlsFiles`] (and openssl's by-products) into `dir`.
pub async fn make_tls_files(dir: &Path) -> TlsFiles {
    // Arguments split on whitespace: none of them contains any.
    let openssl = |args: &str| {
        let mut cmd = Command::new("openssl");
        cmd.args(args.split_whitespace()).current_dir(dir);
        run_ok(cmd)
    };
    openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=wsgate-test-ca").await;
    openssl("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1").await;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write ext.cnf");
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf",
    )
    .await;
    TlsFiles { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") }
}

// ---------------------------------------------------------------------------------------------
// Pub/sub

/// The Redis pub/sub channel that carries a wsgate channel's events (default key prefix):
/// `websocket:ch:{<name>}`, braces included (a Cluster hash tag).
pub fn redis_channel(name: &str) -> String {
    format!("websocket:ch:{{{name}}}")
}

/// `PUBSUB NUMSUB <channel>` on one server: how many connections subscribe `channel`.
pub async fn numsub(redis: &RedisServer, channel: &str) -> u64 {
    pubsub_count(redis, "NUMSUB", channel).await
}

async fn pubsub_count(redis: &RedisServer, which: &str, channel: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", which, channel]).await;
    out.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB {which} {channel} answered {out:?}"))
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// Three (or `masters`) `redis-server`s in Cluster mode, their slots assigned, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// `redis-cluster://host:port?node=host:port&node=...`, every node named.
    pub url: String,
}

impl RedisCluster {
    pub async fn start(masters: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..masters {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            nodes.push(
                RedisServer::start_with(port, &["--cluster-enabled", "yes", "--cluster-config-file", &conf]).await,
            );
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        nodes[0].cli(&create).await;
        // Every node must agree the slots are covered before a client is let loose on them.
        for n in &nodes {
            wait_until(&format!("cluster_state:ok on port {}", n.port), STEP, || async {
                n.cli(&["CLUSTER", "INFO"]).await.contains("cluster_state:ok")
            })
            .await;
        }
        let rest: Vec<String> = addrs[1..].iter().map(|a| format!("node={a}")).collect();
        let url = format!("redis-cluster://{}?{}", addrs[0], rest.join("&"));
        RedisCluster { nodes, url }
    }

    /// `PUBSUB SHARDNUMSUB <channel>` summed over the nodes (only the slot's owner counts
    /// sharded subscribers; the others answer 0).
    pub async fn shard_numsub(&self, channel: &str) -> u64 {
        let mut sum = 0;
        for n in &self.nodes {
            sum += pubsub_count(n, "SHARDNUMSUB", channel).await;
        }
        sum
    }

    /// `PUBSUB NUMSUB <channel>` (classic pub/sub) summed over the nodes.
    pub async fn numsub(&self, channel: &str) -> u64 {
        let mut sum = 0;
        for n in &self.nodes {
            sum += pubsub_count(n, "NUMSUB", channel).await;
        }
        sum
    }
}
