"""Fixtures: the real wsgate binary on an ephemeral loopback port, tokens, a listener runner.

Only processes started here are ever signalled, by their own Popen handle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import jwt
import pytest

from wsgate_client import Listener

REPO_ROOT = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("WSGATE_BIN", REPO_ROOT / "target" / "debug" / "wsgate"))
SECRET = "python-client-test-secret-0123456789abcdef"
LISTENING = re.compile(r"listening on http://(127\.0\.0\.1):(\d+)")
ADMIN_LISTENING = re.compile(r"admin endpoints on http://(127\.0\.0\.1):(\d+)")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def mint(
    sub: str, *, ttl: float = 3600, scope: str | None = None, channels: list[str] | None = None, secret: str = SECRET
) -> str:
    claims: dict = {"sub": sub, "exp": int(time.time() + ttl)}
    if scope is not None:
        claims["scope"] = scope
    if channels is not None:
        claims["channels"] = channels
    return jwt.encode(claims, secret, algorithm="HS256")


def position(event_id: str) -> tuple[int, int]:
    """An event id ``<ms>-<seq>`` as ``(ms, seq)``, which orders ids; fails on anything else."""
    m = re.fullmatch(r"(\d+)-(\d+)", event_id)
    assert m, f"event id {event_id!r} is not a stream id <ms>-<seq>"
    return int(m.group(1)), int(m.group(2))


def free_port() -> int:
    """A port that was free a moment ago: racy (anyone may bind it before you do). The
    fixtures hold their ports instead (:class:`PortHold`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortHold:
    """A loopback port held by a socket that is bound but does not listen: connecting to it is
    refused (nothing serves there) and nobody else gets it, neither from ``bind(0)`` nor by
    binding it without ``SO_REUSEADDR``. wsgate and redis-server set ``SO_REUSEADDR`` and bind
    it while it is held, so one can be stopped and started again on it without a race."""

    def __init__(self) -> None:
        while True:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] != 6379:
                break
            s.close()
        self.socket = s
        self.port: int = s.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


# Every child is forked by this one thread, which lives as long as pytest, and gets SIGKILL from
# the kernel when pytest dies, however it dies (setpriv --pdeathsig: prctl(PR_SET_PDEATHSIG)
# before exec). The signal fires when the *thread* that forked the child ends, which is why the
# fixtures' own threads (asyncio.to_thread) do not fork. tests/test_orphans.py proves it.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="child-spawner")
SETPRIV = shutil.which("setpriv")


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **kwargs)`` for a child that dies with this process."""
    if SETPRIV is None:
        pytest.fail("setpriv (util-linux) is missing: it ties the test's children to its life")
    argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    return _SPAWNER.submit(subprocess.Popen, argv, **kwargs).result(timeout=30)


class Gateway:
    """One wsgate process. ``restart()`` starts a new one on the same port, which it holds
    (:class:`PortHold`) from construction on, unless a ``port`` is given. With ``admin=True``
    it also holds a second port for the admin listener (``ADMIN_LISTEN_ADDR``), at
    :attr:`admin_url`; without, :attr:`admin_url` is :attr:`base_url`."""

    def __init__(self, log_dir: Path, env: dict[str, str], port: int = 0, admin: bool = False) -> None:
        self.log_dir = log_dir
        self.extra_env = env
        self.hold = PortHold() if port == 0 else None
        self.port = self.hold.port if self.hold else port
        self.admin_hold = PortHold() if admin else None
        self.admin_port = self.admin_hold.port if self.admin_hold else None
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}" if self.admin_port else self.base_url

    def start(self, **env: str) -> Gateway:
        assert self.proc is None, "already running"
        self.extra_env.update(env)
        self.runs += 1
        self.log_path = self.log_dir / f"wsgate-{self.runs}.log"
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "JWT_SECRET": SECRET,
            "JWT_LEEWAY_SECS": "0",
            "RUST_LOG": "info",
            "LOG_FORMAT": "text",
            "DRAIN_TIMEOUT_MS": "3000",
            "WORKER_THREADS": "2",
            **({"ADMIN_LISTEN_ADDR": f"127.0.0.1:{self.admin_port}"} if self.admin_port else {}),
            **self.extra_env,
        }
        with open(self.log_path, "wb") as log:
            self.proc = spawn([str(BINARY)], env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = LISTENING.search(text)
            admin = ADMIN_LISTENING.search(text) if self.admin_port else True
            if m and admin:
                self.port = int(m.group(2))
                if self.admin_port:
                    self.admin_port = int(admin.group(2))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"wsgate did not start; its log:\n{self.log_path.read_text(errors='replace')}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signals our process and waits for it; SIGKILL if it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise RuntimeError("wsgate did not exit within the stop timeout after SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL: the sockets drop without close frames (a network loss to the client)."""
        self.stop(signal.SIGKILL)

    def restart(self, **env: str) -> Gateway:
        self.stop()
        return self.start(**env)

    # The blocking methods above must not run on the event loop of a test whose clients have
    # to answer the gateway's close frames meanwhile: these run them in a thread.
    async def astop(self, sig: int = signal.SIGTERM) -> int:
        return await asyncio.to_thread(self.stop, sig)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def astart(self, **env: str) -> Gateway:
        return await asyncio.to_thread(self.start, **env)

    async def arestart(self, **env: str) -> Gateway:
        return await asyncio.to_thread(self.restart, **env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@pytest.fixture
def gateway_factory(tmp_path):
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: run `cargo build -p wsgate` in {REPO_ROOT}")
    started: list[Gateway] = []

    def make(port: int = 0, start: bool = True, admin: bool = False, **env: str) -> Gateway:
        gw = Gateway(tmp_path, dict(env), port, admin)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        if gw.proc is not None:
            gw.proc.kill()
            gw.proc.wait(5)
        for hold in (gw.hold, gw.admin_hold):
            if hold is not None:
                hold.close()


class Redis:
    """A private redis-server on a loopback port (never 6379) that keeps nothing on disk.
    ``kill()`` (SIGKILL) loses everything; ``start()`` again brings up an empty one on the same
    port, held meanwhile (:class:`PortHold`). Should the first port be taken all the same
    (bound explicitly by someone before the hold), Redis says "Address already in use" and
    another port is tried."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.hold: PortHold | None = None
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> Redis:
        assert self.proc is None, "already running"
        first = self.hold is None
        for _ in range(5):
            if self.hold is None:
                self.hold = PortHold()
                self.port = self.hold.port
            self.runs += 1
            log_path = self.log_dir / f"redis-{self.runs}.log"
            with open(log_path, "wb") as log:
                self.proc = spawn(
                    ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if "Ready to accept connections" in log_path.read_text(errors="replace"):
                    return self
                time.sleep(0.02)
            self.kill()
            out = log_path.read_text(errors="replace")
            if "Address already in use" not in out or not first:
                raise RuntimeError(f"could not start redis-server on port {self.port}; its log:\n{out}")
            self.hold.close()  # taken after all: another port
            self.hold = None
        raise RuntimeError("redis-server found its port taken 5 times")

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(5)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def astart(self) -> Redis:
        return await asyncio.to_thread(self.start)


@pytest.fixture
def redis_server(tmp_path):
    """A running :class:`Redis`, killed after the test."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: apt-get install -y redis-server")
    r = Redis(tmp_path).start()
    yield r
    r.kill()
    if r.hold is not None:
        r.hold.close()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def publish_token() -> str:
    return mint("backend", scope="publish")


@pytest.fixture
def admin_token() -> str:
    return mint("ops", scope="admin")


class Watch:
    """Runs a Listener in a task: events into a queue, ``connected`` frames into another."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.events: asyncio.Queue = asyncio.Queue()
        self.connects: asyncio.Queue = asyncio.Queue()
        listener.on_connected = self.connects.put_nowait
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.listener:
            self.events.put_nowait(event)

    async def _get(self, queue: asyncio.Queue, timeout: float):
        get = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({get, self.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        if self.task in done:
            self.task.result()  # raises what the listener raised
            raise AssertionError("the listener ended")
        raise AssertionError(f"nothing arrived within {timeout}s")

    async def event(self, timeout: float = 5.0) -> dict:
        return await self._get(self.events, timeout)

    async def connect(self, timeout: float = 5.0) -> dict:
        return await self._get(self.connects, timeout)

    async def no_event(self, wait: float = 0.5) -> None:
        """Nothing (more) arrives. Call it after an event published after whatever must not
        arrive has come (a marker): then ``wait`` is time enough for a copy on its way."""
        await asyncio.sleep(wait)
        assert self.events.empty(), f"unexpected event {self.events.get_nowait()}"

    async def close(self) -> None:
        await self.listener.close()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def watch():
    """``await watch(Listener(...))`` runs it and waits for the first ``connected`` frame."""
    running: list[Watch] = []

    async def start(listener: Listener, wait_connected: bool = True) -> Watch:
        w = Watch(listener)
        running.append(w)
        if wait_connected:
            await w.connect()
        return w

    yield start
    for w in running:
        await w.listener.close()
        w.task.cancel()
        try:
            await asyncio.wait_for(w.task, 5)
        except BaseException:
            pass
