#!/usr/bin/env python3
"""The compose topology without Docker: deploy/nginx.conf in front of three real wsgate
processes joined through a real redis-server, all on 127.0.0.1 and free ports.

  fleet_smoke.py --wsgate BIN --redis-server BIN --nginx BIN --workdir DIR

What it checks, through nginx unless said otherwise:
  - /lb-health answers (nginx itself), /ready and /ws/stats answer through the upstream;
  - /ws/stats reports total_instances == 3 (the instances see each other through Redis);
  - a WebSocket upgrade passes nginx (Upgrade/Connection headers) and the first frame is
    "connected";
  - an event POSTed directly to each instance reaches the client behind nginx, wherever
    nginx put it (cross-instance fan-out through Redis);
  - nginx's access log never holds the ?token= query string;
  - SIGTERM on the client's instance closes the socket with 1001 and the instance exits 0
    within DRAIN_TIMEOUT_MS; the client reconnects through nginx to another instance
    (nginx retries past the draining one); the rest stop cleanly too.

Every process it starts is its own child, stopped by PID at the end. All traffic goes to
127.0.0.1. Exits non-zero on the first failed check.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

SECRET = "fleet-smoke-secret-0123456789abcdef"
DRAIN_MS = 3000


_HOLDS = []


def free_port():
    """A loopback port held until this script exits: bound with SO_REUSEADDR but not listening,
    so nobody else gets it (bind(0) skips it) while redis-server, wsgate and nginx, which all
    set SO_REUSEADDR, bind it beside the hold. A port probed free and closed could be taken
    by any process before the server binds it."""
    while True:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        if s.getsockname()[1] != 6379:
            _HOLDS.append(s)
            return s.getsockname()[1]
        s.close()


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(sub, scope=None):
    claims = {"sub": sub, "exp": int(time.time()) + 600}
    if scope:
        claims["scope"] = scope
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def http(url, data=None, headers=None, timeout=3):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what, fn, timeout=20.0, every=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"{what} (waited {timeout:.0f} s; last: {last!r})")


def ok(what):
    print(f"  ok   {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wsgate", required=True)
    ap.add_argument("--redis-server", required=True)
    ap.add_argument("--nginx", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    # Stopped from outside (e.g. by `timeout`): still run the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{os.path.basename(__file__)}: terminated"))
    a.wsgate, a.redis_server, a.nginx = (os.path.abspath(x) for x in (a.wsgate, a.redis_server, a.nginx))
    wd = os.path.abspath(a.workdir)
    os.makedirs(wd, exist_ok=True)
    procs = {}

    def start(name, argv, env=None):
        log = open(os.path.join(wd, f"{name}.log"), "w")
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=wd)

    try:
        rport = free_port()
        start("redis", [a.redis_server, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", wd])
        # Its own log says when it serves (a connect alone could reach anything on that port).
        wait_for("redis-server starts", lambda: procs["redis"].poll() is None
                 and "Ready to accept connections" in open(os.path.join(wd, "redis.log")).read())

        ports = {}
        for i in (1, 2, 3):
            ports[i] = free_port()
            # Only these settings: nothing from the caller's environment leaks in.
            env = dict(PATH=os.environ.get("PATH", "/usr/bin:/bin"), LISTEN_ADDR=f"127.0.0.1:{ports[i]}", REDIS_URL=f"redis://127.0.0.1:{rport}",
                       JWT_SECRET=SECRET, INSTANCE_ID=f"smoke-{i}", LOG_FORMAT="json",
                       HEARTBEAT_INTERVAL_MS="500", DRAIN_TIMEOUT_MS=str(DRAIN_MS), RUST_LOG="info")
            start(f"wsgate{i}", [a.wsgate], env)
        for i, p in ports.items():
            wait_for(f"wsgate{i} /ready", lambda p=p: http(f"http://127.0.0.1:{p}/ready")[0] == 200)
        ok("three wsgate instances ready (REDIS_URL to one redis-server, distinct INSTANCE_IDs)")

        # deploy/nginx.conf with the compose host names replaced by the local instances,
        # its listener moved to a free port, and writable temp paths.
        lport = free_port()
        conf = open(os.path.join(os.path.dirname(__file__), "nginx.conf")).read()
        for i, p in ports.items():
            conf, n = re.subn(rf"\bserver\s+wsgate{i}:8000\b", f"server 127.0.0.1:{p}", conf)
            assert n == 1, f"upstream wsgate{i} not found in nginx.conf"
        conf, n = re.subn(r"\blisten\s+8000\s*;", f"listen 127.0.0.1:{lport};", conf)
        assert n == 1, "listen 8000 not found in nginx.conf"
        conf = conf.replace("access_log /dev/stdout", f"access_log {wd}/access.log")
        temps = "".join(f"    {k}_temp_path {wd}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = conf.replace("http {\n", "http {\n" + temps, 1)
        open(os.path.join(wd, "nginx.conf"), "w").write(conf)
        start("nginx", [a.nginx, "-p", wd + "/", "-c", f"{wd}/nginx.conf", "-e", f"{wd}/error.log",
                        "-g", f"daemon off; pid {wd}/nginx.pid;"])
        base = f"http://127.0.0.1:{lport}"
        wait_for("nginx answers /lb-health", lambda: http(f"{base}/lb-health")[0] == 200)
        ok(f"nginx runs deploy/nginx.conf (upstreams -> 127.0.0.1:{sorted(ports.values())})")

        status, _ = http(f"{base}/ready")
        assert status == 200, f"/ready through nginx: {status}"
        stats = wait_for("total_instances == 3 in /ws/stats through nginx",
                         lambda: (lambda s: s if s.get("total_instances") == 3 else None)(
                             json.loads(http(f"{base}/ws/stats")[1])), timeout=15)
        ok(f"/ws/stats through nginx: total_instances 3, redis_enabled {stats.get('redis_enabled')}")

        with connect(f"ws://127.0.0.1:{lport}/ws/tasks?token={token('alice')}", open_timeout=5) as ws:
            first = json.loads(ws.recv(timeout=5))
            assert first.get("type") == "connected" and first.get("user") == "alice", first
            home = first["instance_id"]
            ok(f"WebSocket upgrade through nginx: first frame 'connected' from {home}")

            pub = token("backend", "publish")
            for i, p in ports.items():
                body = json.dumps({"type": "smoke", "data": {"via": i}}).encode()
                status, text = http(f"http://127.0.0.1:{p}/api/events", body,
                                    {"Authorization": f"Bearer {pub}", "Content-Type": "application/json"})
                assert status == 202, f"publish via wsgate{i}: {status} {text}"
                frame = json.loads(ws.recv(timeout=5))
                assert frame.get("type") == "smoke" and frame.get("data") == {"via": i}, frame
            ok("events POSTed to each of the three instances reach the client behind nginx")

            status, text = http(f"{base}/api/events", json.dumps({"type": "via-lb"}).encode(),
                                {"Authorization": f"Bearer {pub}", "Content-Type": "application/json"})
            assert status == 202, f"publish through nginx: {status} {text}"
            assert json.loads(ws.recv(timeout=5)).get("type") == "via-lb"
            ok("POST /api/events through nginx: 202, delivered")

            # Drain: SIGTERM the client's instance.
            idx = int(home.rsplit("-", 1)[1])
            t0 = time.time()
            procs[f"wsgate{idx}"].send_signal(signal.SIGTERM)
            code = None
            try:
                while True:
                    ws.recv(timeout=DRAIN_MS / 1000 + 5)
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
            assert code == 1001, f"close code on SIGTERM: {code}"
            rc = procs.pop(f"wsgate{idx}").wait(timeout=DRAIN_MS / 1000 + 5)
            took = time.time() - t0
            assert rc == 0, f"wsgate{idx} exit code after SIGTERM: {rc}"
            ok(f"SIGTERM on {home}: client got 1001 through nginx, instance exited 0 in {took:.1f} s "
               f"(DRAIN_TIMEOUT_MS {DRAIN_MS})")

        with connect(f"ws://127.0.0.1:{lport}/ws/tasks?token={token('alice')}", open_timeout=5) as ws2:
            again = json.loads(ws2.recv(timeout=5))
        assert again.get("type") == "connected" and again["instance_id"] != home, again
        ok(f"reconnect through nginx lands on {again['instance_id']}")

        log = open(f"{wd}/access.log").read()
        assert "/ws/tasks" in log, "access log has no /ws/tasks line"
        assert "token=" not in log, "the access log holds ?token="
        ok("nginx access log lists /ws/tasks without its ?token= query")

        for name in [n for n in procs if n.startswith("wsgate")]:
            procs[name].send_signal(signal.SIGTERM)
            rc = procs.pop(name).wait(timeout=DRAIN_MS / 1000 + 5)
            assert rc == 0, f"{name} exit code after SIGTERM: {rc}"
        ok("remaining instances exit 0 on SIGTERM")
        return 0
    except (AssertionError, OSError, ValueError, TimeoutError, ConnectionClosed, subprocess.TimeoutExpired) as e:
        print(f"  FAIL {type(e).__name__}: {e}")
        for name in procs:
            print(f"  --- {name}.log (last lines)")
            print("".join(open(os.path.join(wd, f"{name}.log")).readlines()[-15:]))
        return 1
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=DRAIN_MS / 1000 + 5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
