"""examples/task-progress/app.py without a browser: its tokens are the gateway's, its jobs
publish every step to the user who started them and to nobody else. (The browser test is
clients/e2e/test/task-progress.test.mjs.)"""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time

import httpx
import pytest

from conftest import REPO_ROOT, SECRET, spawn
from wsgate_client import Listener, publish

APP = REPO_ROOT / "examples" / "task-progress" / "app.py"
LISTENING = re.compile(r"task-progress listening on (http://127\.0\.0\.1:\d+)")


@pytest.fixture
def backend(gateway):
    proc = spawn(
        [sys.executable, str(APP)],
        env={"PATH": "/usr/bin:/bin", "JWT_SECRET": SECRET, "WSGATE_URL": gateway.base_url, "PORT": "0"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = b""
    deadline = time.monotonic() + 15
    url = None
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            out += proc.stdout.read1(4096)
            m = LISTENING.search(out.decode(errors="replace"))
            url = m.group(1) if m else None
    if url is None:
        proc.kill()
        proc.wait(5)
        pytest.fail(f"app.py did not start; its output:\n{out.decode(errors='replace')}")
    yield url
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def test_a_job_reaches_only_its_user(gateway, backend, publish_token, watch):
    async with httpx.AsyncClient(base_url=backend, timeout=10) as http:
        alice = (await http.post("/login", json={"name": "alice"})).json()
        bob = (await http.post("/login", json={"name": "bob"})).json()
        assert alice["user"] == "alice" and alice["ws_url"] == gateway.base_url.replace("http", "ws") + "/ws/tasks"
        a = await watch(Listener(gateway.base_url, alice["token"]))
        b = await watch(Listener(gateway.base_url, bob["token"]))
        assert a.listener.connected["user"] == "alice" and b.listener.connected["user"] == "bob"

        r = await http.post("/jobs", json={"steps": 4, "delay_ms": 20}, headers={"Authorization": f"Bearer {alice['token']}"})
        assert r.status_code == 202
        job = r.json()["job_id"]
        got = [await a.event() for _ in range(5)]
        assert [(e["type"], e["data"]) for e in got] == [
            *(("job.progress", {"job_id": job, "step": s, "of": 4}) for s in range(1, 5)),
            ("job.done", {"job_id": job, "of": 4}),
        ]
        marker = await publish(gateway.base_url, publish_token, "marker")
        assert (await b.event())["id"] == marker, "bob got none of alice's events"
        await b.no_event()

        assert (await http.post("/jobs", json={"steps": 1})).status_code == 401
        forged = alice["token"][:-4] + ("AAAA" if not alice["token"].endswith("AAAA") else "BBBB")
        assert (await http.post("/jobs", json={"steps": 1}, headers={"Authorization": f"Bearer {forged}"})).status_code == 401
        assert (await http.post("/jobs", json={"steps": 101}, headers={"Authorization": f"Bearer {bob['token']}"})).status_code == 400
        assert (await http.post("/login", json={"name": ""})).status_code == 400
        page = await http.get("/")
        assert page.status_code == 200 and 'import { connect } from "/wsgate.js"' in page.text
        js = await http.get("/wsgate.js")
        assert js.status_code == 200 and js.text == (REPO_ROOT / "clients" / "js" / "wsgate.js").read_text()
