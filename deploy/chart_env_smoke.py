#!/usr/bin/env python3
"""Start the real wsgate binary with exactly the environment a rendered Helm chart gives
its container, and check it comes up and drains.

  chart_env_smoke.py --wsgate BIN --workdir DIR [--admin-split] [--redis-server BIN] MANIFESTS.yaml

The environment is what the kubelet would build: the ConfigMap of envFrom, the literal
env entries, secretKeyRef values decoded from the rendered Secret, INSTANCE_ID from a
made-up pod name, and Secret volumes written to files (JWT_PUBLIC_KEY_FILE is moved into
the work dir). LISTEN_ADDR and ADMIN_LISTEN_ADDR are moved to free 127.0.0.1 ports;
REDIS_URL's host becomes a closed loopback port (the gateway must start without Redis), and
JWT_JWKS_URL an empty key set served on loopback (the gateway must fetch it). Nothing is
sent off the machine. With --redis-server and a render that has the bundled Redis, a real
redis-server on loopback stands in for it, with the requirepass the rendered Redis gets
from the Secret; REDIS_URL then points there and the gateway must connect (/health
redis.state "connected"), authenticating with its REDIS_PASSWORD_FILE.

Checks: the binary accepts every setting (an invalid one stops it at start-up), /live and
/ready answer 200 on the port the probes use, and SIGTERM makes it exit 0 within
DRAIN_TIMEOUT_MS. With --admin-split also: the operators' endpoints answer on the admin
port and not on the public one, and /live and /ready answer on both. Only the process it
starts is signalled; all traffic goes to 127.0.0.1.
"""

import argparse
import base64
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import threading
import urllib.request

import yaml


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JwksServer:
    """An empty JSON Web Key Set on 127.0.0.1; counts the GETs the gateway makes."""

    def __init__(self):
        outer = self
        self.gets = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.gets += 1
                body = b'{"keys": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wsgate", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--admin-split", action="store_true",
                    help="check that ADMIN_LISTEN_ADDR takes the operators' endpoints off LISTEN_ADDR")
    ap.add_argument("--redis-server", help="stand in for the bundled Redis with this redis-server")
    ap.add_argument("manifests")
    a = ap.parse_args()
    # Stopped from outside (e.g. by `timeout`): still run the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{os.path.basename(__file__)}: terminated"))
    wd = os.path.abspath(a.workdir)
    os.makedirs(wd, exist_ok=True)

    docs = [d for d in yaml.safe_load_all(open(a.manifests)) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    dep = next(d for d in docs if d["kind"] == "Deployment"
               and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]

    def secret_value(name, key):
        s = by.get(("Secret", name))
        if s is None:
            raise SystemExit(f"  SKIP Secret {name} is not rendered (an existing Secret): cannot build the env")
        return base64.b64decode(s["data"][key]).decode()

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            env.update(by[("ConfigMap", ef["configMapRef"]["name"])].get("data") or {})
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[e["name"]] = f"{dep['metadata']['name']}-7d9f8b6c5-x2k4q"
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secret_value(ref["name"], ref["key"])
    # Secret and projected volumes -> files under the work dir (as the kubelet writes them:
    # the value as is), and paths in env rewritten to them.
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = vols[m["name"]]
        if "secret" in v:
            sources = [(v["secret"]["secretName"], v["secret"].get("items", []))]
        else:
            sources = [(src["secret"]["name"], src["secret"].get("items", []))
                       for src in v.get("projected", {}).get("sources", []) if "secret" in src]
        for secret_name, items in sources:
            for item in items:
                local = os.path.join(wd, "mnt", m["mountPath"].strip("/"), item["path"])
                os.makedirs(os.path.dirname(local), exist_ok=True)
                open(local, "w").write(secret_value(secret_name, item["key"]))
                for k, val in env.items():
                    if val == os.path.join(m["mountPath"], item["path"]):
                        env[k] = local
    for k in ("JWT_SECRET_FILE", "JWT_PUBLIC_KEY_FILE", "REDIS_PASSWORD_FILE"):
        if k in env:
            assert env[k].startswith(wd), f"{k}={env[k]} is not a file of a mounted Secret volume"

    # No traffic leaves the machine: REDIS_URL's host becomes a closed loopback port (the
    # gateway must start and answer its probes without Redis), and JWT_JWKS_URL a key set
    # served here on loopback (the gateway allows http:// for a loopback host only).
    redis_proc, redis_port = None, None
    bundled = by.get(("Deployment", f"{dep['metadata']['name']}-redis"))
    if a.redis_server and bundled and "REDIS_URL" in env:
        rc = bundled["spec"]["template"]["spec"]["containers"][0]
        renv = {e["name"]: e for e in rc.get("env", [])}
        ref = renv["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        redis_port = closed_port()
        redis_proc = subprocess.Popen(
            [a.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--requirepass", secret_value(ref["name"], ref["key"])],
            stdout=open(os.path.join(wd, "redis.log"), "w"), stderr=subprocess.STDOUT, cwd=wd)
        env["REDIS_URL"] = re.sub(r"^([a-z-]+://(?:[^@/]*@)?)[^/?]+", lambda m: m.group(1) + f"127.0.0.1:{redis_port}",
                                  env["REDIS_URL"])
        print(f"  --   bundled Redis stood in for by redis-server on 127.0.0.1:{redis_port} with the rendered requirepass")
    elif "REDIS_URL" in env:
        env["REDIS_URL"] = re.sub(r"^([a-z-]+://(?:[^@/]*@)?)[^/?]+", lambda m: m.group(1) + f"127.0.0.1:{closed_port()}",
                                  env["REDIS_URL"])
    jwks = None
    if "JWT_JWKS_URL" in env:
        jwks = JwksServer()
        env["JWT_JWKS_URL"] = jwks.url

    port_by_name = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env.get("LISTEN_ADDR", "0.0.0.0:8000").rsplit(":", 1)[1] == str(port_by_name["http"]), \
        "LISTEN_ADDR port differs from the container port the probes use"
    # Each port is held until this script exits (bound with SO_REUSEADDR, not listening):
    # nobody else gets it meanwhile, and wsgate (SO_REUSEADDR too) binds it beside the hold.
    holds = []

    def free_port():
        hold = socket.socket()
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hold.bind(("127.0.0.1", 0))
        holds.append(hold)
        return hold.getsockname()[1]

    port = free_port()
    env["LISTEN_ADDR"] = f"127.0.0.1:{port}"
    admin_port = None
    if "ADMIN_LISTEN_ADDR" in env:
        assert env["ADMIN_LISTEN_ADDR"].rsplit(":", 1)[1] == str(port_by_name.get("admin")), \
            "ADMIN_LISTEN_ADDR port differs from the container port named admin"
        admin_port = free_port()
        env["ADMIN_LISTEN_ADDR"] = f"127.0.0.1:{admin_port}"
    elif a.admin_split:
        print("  FAIL --admin-split, but the render sets no ADMIN_LISTEN_ADDR")
        return 1
    shown = {k: ("***" if k == "JWT_SECRET" else re.sub(r":[^:@/]*@", ":***@", v) if k == "REDIS_URL" else v)
             for k, v in sorted(env.items()) if k != "PATH"}
    print(f"  env: {shown}")

    log = open(os.path.join(wd, "wsgate.log"), "w")
    proc = subprocess.Popen([os.path.abspath(a.wsgate)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=wd)
    try:
        def get(path, on=None):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{on or port}{path}", timeout=2) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
            except OSError:
                return None

        deadline = time.time() + 20
        while time.time() < deadline and proc.poll() is None and get(c["readinessProbe"]["httpGet"]["path"]) != 200:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise AssertionError(f"wsgate exited at start-up with {proc.returncode}")
        for probe in ("livenessProbe", "readinessProbe"):
            path = c[probe]["httpGet"]["path"]
            status = get(path)
            assert status == 200, f"{probe} GET {path}: {status}"
            print(f"  ok   {probe}: GET {path} -> 200")
        if a.admin_split:
            for path in ("/live", "/ready"):
                status = get(path, admin_port)
                assert status == 200, f"admin port GET {path}: {status} (want 200 on both listeners)"
                print(f"  ok   admin port: GET {path} -> 200 (on both listeners)")
            for path in ("/metrics", "/ws/stats", "/health", "/api/openapi.json"):
                on_admin, on_public = get(path, admin_port), get(path)
                assert on_admin == 200, f"admin port GET {path}: {on_admin} (want 200)"
                assert on_public not in (200, None), f"public port GET {path}: {on_public} (want it refused)"
                print(f"  ok   {path}: admin port 200, public port {on_public}")
        if redis_proc:
            import json
            deadline, state = time.time() + 15, None
            while time.time() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port or port}/health", timeout=2) as r:
                        state = json.loads(r.read())["redis"]["state"]
                except (OSError, ValueError, KeyError):
                    try:  # a binary without the admin listener serves /health on the public port
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                            state = json.loads(r.read())["redis"]["state"]
                    except (OSError, ValueError, KeyError):
                        pass
                if state == "connected":
                    break
                time.sleep(0.2)
            assert state == "connected", f"the gateway did not authenticate to the password-protected Redis (state {state})"
            print("  ok   connected to the password-protected Redis with REDIS_PASSWORD_FILE (/health: connected)")
        if jwks:
            deadline = time.time() + 10
            while jwks.gets == 0 and time.time() < deadline:
                time.sleep(0.1)
            assert jwks.gets > 0, "the gateway never fetched JWT_JWKS_URL"
            print(f"  ok   JWT_JWKS_URL fetched ({jwks.gets} GET)")
        drain_ms = int(env.get("DRAIN_TIMEOUT_MS", "10000"))
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=drain_ms / 1000 + 5)
        assert rc == 0, f"exit code after SIGTERM: {rc}"
        print(f"  ok   SIGTERM: exit 0 in {time.time() - t0:.1f} s (DRAIN_TIMEOUT_MS {drain_ms})")
        return 0
    except (AssertionError, subprocess.TimeoutExpired) as e:
        print(f"  FAIL {e}")
        log.flush()
        print("".join(open(os.path.join(wd, "wsgate.log")).readlines()[-20:]))
        return 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if redis_proc is not None:
            redis_proc.terminate()
            try:
                redis_proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                redis_proc.kill()
                redis_proc.wait()


if __name__ == "__main__":
    sys.exit(main())
