//! Throwaway `redis-server`s: [`RedisServer`] (plain, with a password or ACL users, with
//! TLS: [`make_tls_files`]), [`RedisCluster`], and what the tests ask Redis about pub/sub.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{run_ok, wait_until, PortHold, Process, TempDir, STEP};

// ---------------------------------------------------------------------------------------------
// One server

/// A throwaway `redis-server` on a loopback port (never 6379), no persistence, its own `--dir`
/// (removed on drop), killed on drop. It can be killed and restarted on the same port.
///
/// Ports: the constructors other than [`RedisServer::start_with`] hold theirs ([`PortHold`]) for
/// the server's whole life, so a restart finds its port free; should a port be taken all the
/// same (someone bound it explicitly before the hold), Redis exits with "Address already in
/// use" and the server is started again on other ports (up to [`PORT_TRIES`] times).
pub struct RedisServer {
    /// `None` while killed.
    pub proc: Option<Process>,
    /// The plain (non-TLS) port.
    pub port: u16,
    args: Vec<String>,
    tls_port: Option<u16>,
    /// Its `--dir` (Cluster config files and the like), kept across restarts.
    dir: TempDir,
    /// The ports it listens on, held while it lives (empty for [`RedisServer::start_with`]).
    holds: Vec<PortHold>,
}

/// How many sets of ports a constructor tries before it gives up.
pub const PORT_TRIES: usize = 5;

impl RedisServer {
    /// A plain server on a port of its own.
    pub async fn start() -> RedisServer {
        RedisServer::start_args(&[]).await
    }

    /// A server on a port of its own with `extra` arguments (`--requirepass pw`, `--user ...`
    /// ACL lines, `--appendonly yes`, `--replicaof ...`).
    pub async fn start_args(extra: &[&str]) -> RedisServer {
        RedisServer::launch(0, |_| extra.iter().map(|a| a.to_string()).collect()).await
    }

    /// A server that also serves TLS on a second port of its own (`--tls-port`, see
    /// [`RedisServer::tls_port`]); `tls_args` are the certificate arguments.
    pub async fn start_tls(tls_args: &[&str]) -> RedisServer {
        RedisServer::launch(1, |p| {
            let mut args = vec!["--tls-port".to_owned(), p[0].to_string()];
            args.extend(tls_args.iter().map(|a| a.to_string()));
            args
        })
        .await
    }

    /// A Cluster node (no slots yet), its cluster bus on a second port of its own.
    pub async fn start_cluster_node() -> RedisServer {
        RedisServer::launch(1, |p| {
            ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", &p[0].to_string()]
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .await
    }

    /// A server on the port `hold` holds (a test that points gateways at a port before Redis
    /// is there), with `extra` arguments. The hold moves into the server.
    pub async fn start_on(hold: PortHold, extra: &[&str]) -> RedisServer {
        let mut server = RedisServer::prepare(hold.port(), extra);
        server.holds.push(hold);
        if let Err(output) = server.try_restart().await {
            panic!("redis-server exited before serving on held port {}; output:\n{output}", server.port);
        }
        server
    }

    /// A server on `port` with `extra` arguments (`--requirepass pw`, `--user ...` ACL lines,
    /// `--cluster-enabled yes ...`, `--tls-port N --tls-cert-file ...`). The port is the caller's
    /// to choose and is not held: prefer the constructors above.
    pub async fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let mut server = RedisServer::prepare(port, extra);
        server.restart().await;
        server
    }

    /// Holds `1 + extra_ports` ports, starts a server with the arguments `make(<the extra
    /// ports>)`, and tries again on fresh ports when one was taken after all.
    async fn launch(extra_ports: usize, make: impl Fn(&[u16]) -> Vec<String>) -> RedisServer {
        let mut collisions = Vec::new();
        for _ in 0..PORT_TRIES {
            let holds: Vec<PortHold> = (0..=extra_ports).map(|_| PortHold::new()).collect();
            let ports: Vec<u16> = holds.iter().map(PortHold::port).collect();
            let extra = make(&ports[1..]);
            let mut server = RedisServer::prepare(ports[0], &extra.iter().map(String::as_str).collect::<Vec<_>>());
            server.holds = holds;
            match server.try_restart().await {
                Ok(()) => return server,
                Err(output) if output.contains("Address already in use") => collisions.push(ports),
                Err(output) => panic!("redis-server exited before serving; output:\n{output}"),
            }
        }
        panic!("redis-server found its ports taken {PORT_TRIES} times: {collisions:?}");
    }

    fn prepare(port: u16, extra: &[&str]) -> RedisServer {
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
        RedisServer { proc: None, port, args, tls_port, dir, holds: Vec::new() }
    }

    /// The TLS port, for a server started with `--tls-port` ([`RedisServer::start_tls`]).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
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
        if let Err(output) = self.try_restart().await {
            let held = if self.holds.is_empty() { "not held" } else { "held" };
            panic!("redis-server exited before serving on port {} ({held}); output:\n{output}", self.port);
        }
    }

    /// [`RedisServer::restart`], or the server's output if it exited before serving.
    async fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.proc.is_none(), "redis-server on port {} is still running", self.port);
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.args);
        let proc = self.proc.insert(Process::spawn(cmd));
        let (port, tls_port) = (self.port, self.tls_port);
        let what = format!("redis-server on port {port} to answer PING (and to accept on TLS port {tls_port:?})");
        let mut exited = None;
        wait_until(&what, STEP, || {
            if exited.is_none() && proc.try_exit().is_some() {
                exited = Some(format!("{}{}", proc.stdout(), proc.stderr()));
            }
            let gone = exited.is_some();
            async move {
                gone || (redis_answers(port).await
                    && match tls_port {
                        Some(p) => TcpStream::connect(("127.0.0.1", p)).await.is_ok(),
                        None => true,
                    })
            }
        })
        .await;
        match exited {
            None => Ok(()),
            Some(output) => {
                self.proc = None;
                Err(output)
            }
        }
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
            nodes.push(RedisServer::start_cluster_node().await);
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
