#!/usr/bin/env python3
"""Task progress over wsgate: a backend that runs jobs and tells only their owner how far along
they are.

Python standard library plus the wsgate client's blocking publisher
(``pip install -e clients/python``). The browser gets events from the gateway, not from here:

1. ``POST /login {"name": "alice"}``: a *demo* login (no password, any name goes). The backend
   mints a user token ``{"sub": "alice"}`` signed with the gateway's ``JWT_SECRET`` and answers
   ``{"user", "token", "ws_url"}``; the page connects to the gateway's ``ws_url`` with it.
2. ``POST /jobs {"steps": 10, "delay_ms": 300}`` with ``Authorization: Bearer <that token>``
   starts a job in a thread for that user and answers ``202 {"job_id", "steps"}``.
3. The job publishes ``job.progress {"job_id", "step", "of"}`` after each step, then
   ``job.done {"job_id", "of"}``, through ``POST /api/events`` with ``users: [<sub>]``: only that
   user's connections get them.

``GET /`` serves the page, ``GET /wsgate.js`` the JS client (``clients/js/wsgate.js`` of this
checkout, else the gateway's own copy at ``/demo/wsgate.js``).

Run ``python3 app.py --help``; see README.md beside this file.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from wsgate_client import PublishError
from wsgate_client.sync import SyncPublisher

HERE = Path(__file__).resolve().parent
PAGE = HERE / "index.html"
REPO_JS = HERE.parent.parent / "clients" / "js" / "wsgate.js"
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
USER_TOKEN_TTL = 3600
SERVICE_TOKEN_TTL = 600
MAX_STEPS = 100
MAX_DELAY_MS = 5000

log = logging.getLogger("task-progress")


# --- HS256 tokens, as the gateway verifies them (stdlib only) ---------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: str, sub: str, ttl: int, **claims) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps({"sub": sub, "exp": int(time.time()) + ttl, **claims}, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def verify(secret: str, token: str) -> dict | None:
    """The claims of a token this backend minted (signature and ``exp`` checked), else None."""
    try:
        head, body, sig = token.split(".")
        want = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(want, _unb64(sig)):
            return None
        if json.loads(_unb64(head)).get("alg") != "HS256":
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        return None
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < time.time():
        return None
    return claims


# --- the application --------------------------------------------------------------------------


class App:
    def __init__(self, gateway: str, public_gateway: str, secret: str) -> None:
        self.gateway = gateway.rstrip("/")
        self.ws_url = _ws_url(public_gateway)
        self.secret = secret
        self._js: bytes | None = None
        self._js_lock = threading.Lock()

    def client_js(self) -> bytes:
        """The JS client: this checkout's, else the gateway's (fetched once)."""
        with self._js_lock:
            if self._js is None:
                if REPO_JS.is_file():
                    self._js = REPO_JS.read_bytes()
                else:
                    with urllib.request.urlopen(f"{self.gateway}/demo/wsgate.js", timeout=10) as r:
                        self._js = r.read()
            return self._js

    def login(self, name: str) -> dict:
        # A demo login: whoever types a name is that user. A real backend mints the token for
        # the user its own session has authenticated.
        token = mint(self.secret, name, USER_TOKEN_TTL)
        return {"user": name, "token": token, "ws_url": self.ws_url}

    def start_job(self, user: str, steps: int, delay_ms: int) -> str:
        job_id = f"job-{secrets.token_hex(4)}"
        threading.Thread(target=self._run_job, args=(job_id, user, steps, delay_ms), name=job_id, daemon=True).start()
        return job_id

    def _run_job(self, job_id: str, user: str, steps: int, delay_ms: int) -> None:
        # A fresh service token per job (it outlives no job), one keep-alive connection per job.
        # Each event has its own Idempotency-Key, so a retry after a 429/503 never doubles it.
        token = mint(self.secret, "task-progress", SERVICE_TOKEN_TTL, scope="publish")
        try:
            with SyncPublisher(self.gateway, token, retries=3, max_retry_wait=10) as pub:
                for step in range(1, steps + 1):
                    time.sleep(delay_ms / 1000)  # the "work"
                    data = {"job_id": job_id, "step": step, "of": steps}
                    pub.publish("job.progress", data, users=[user], idempotency_key=f"{job_id}-{step}")
                pub.publish("job.done", {"job_id": job_id, "of": steps}, users=[user], idempotency_key=f"{job_id}-done")
            log.info("%s for %s: %d steps done", job_id, user, steps)
        except PublishError as e:
            log.error("%s for %s: the gateway refused an event: %s", job_id, user, e)
        except Exception:  # noqa: BLE001 - a job thread must say why it died
            log.exception("%s for %s failed", job_id, user)


def _ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise SystemExit(f"not an http(s):// URL: {base!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/tasks", "", ""))


class Handler(BaseHTTPRequestHandler):
    app: App  # set on the subclass made in main()
    server_version = "task-progress"

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _body(self) -> dict | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length > 4096:
            return None
        try:
            value = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        elif path == "/wsgate.js":
            try:
                self._send(200, self.app.client_js(), "text/javascript; charset=utf-8")
            except OSError as e:
                self._json(HTTPStatus.BAD_GATEWAY, {"error": f"cannot get the JS client: {e}"})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        body = self._body()
        if body is None:
            return self._json(400, {"error": "body must be a JSON object (at most 4 KiB)"})
        if path == "/login":
            name = body.get("name")
            if not isinstance(name, str) or not NAME.fullmatch(name):
                return self._json(400, {"error": "name: 1 to 64 of A-Z a-z 0-9 _ . @ -"})
            return self._json(200, self.app.login(name))
        if path == "/jobs":
            auth = self.headers.get("Authorization", "")
            claims = verify(self.app.secret, auth[7:]) if auth.startswith("Bearer ") else None
            if claims is None:
                return self._json(401, {"error": "sign in first (Authorization: Bearer <token from /login>)"})
            steps, delay_ms = body.get("steps", 10), body.get("delay_ms", 300)
            if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
                return self._json(400, {"error": f"steps: a whole number from 1 to {MAX_STEPS}"})
            if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or not 0 <= delay_ms <= MAX_DELAY_MS:
                return self._json(400, {"error": f"delay_ms: a whole number from 0 to {MAX_DELAY_MS}"})
            job_id = self.app.start_job(claims["sub"], steps, delay_ms)
            return self._json(202, {"job_id": job_id, "steps": steps})
        return self._json(404, {"error": "not found"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="wsgate example: per-user task progress")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="listen address [HOST, 127.0.0.1]")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")), help="0: any free port [PORT, 8080]")
    parser.add_argument(
        "--gateway",
        default=os.environ.get("WSGATE_URL", "http://127.0.0.1:8000"),
        help="the gateway, as this backend reaches it (publishes) [WSGATE_URL, http://127.0.0.1:8000]",
    )
    parser.add_argument(
        "--public-gateway",
        default=os.environ.get("WSGATE_PUBLIC_URL"),
        help="the gateway as browsers reach it, if not the same [WSGATE_PUBLIC_URL]",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per event
    secret = os.environ.get("JWT_SECRET", "")
    if not secret:
        raise SystemExit(
            "JWT_SECRET is not set: give this backend the gateway's JWT_SECRET (it mints the user and "
            "service tokens the gateway checks). See README.md."
        )
    app = App(args.gateway, args.public_gateway or args.gateway, secret)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    # The one line a supervisor (or a test) waits for.
    print(f"task-progress listening on http://{host}:{port} (gateway {app.gateway})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
