"""Every wsgate and redis-server the fixtures start dies with pytest, also when pytest is
SIGKILLed and no teardown runs (conftest.spawn: setpriv --pdeathsig KILL, from one long-lived
thread). The test runs a child Python that starts a gateway and a Redis with the fixtures'
classes, SIGKILLs that child, and insists both are gone within a few seconds. Without the
mechanism they would live on."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEATH = 5.0

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import conftest
    log_dir = Path(sys.argv[2])
    gw = conftest.Gateway(log_dir, {}).start()
    redis = conftest.Redis(log_dir).start()
    print(gw.proc.pid, redis.proc.pid, flush=True)
    time.sleep(60)
    """
)


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a reused PID from the process we saw."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[22 - 3])


def running(pid: int, start: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z" and start_time(pid) == start


def test_a_sigkilled_test_process_takes_its_gateway_and_redis_with_it(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(HERE), str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child did not report its processes within 30 s"
        line = child.stdout.readline()
        assert line, f"the child ended early: {child.stderr.read() if child.poll() is not None else ''}"
        procs = [(pid, start_time(pid)) for pid in map(int, line.split())]
        assert len(procs) == 2 and all(running(p, s) for p, s in procs), procs
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + DEATH
        while any(running(p, s) for p, s in procs) and time.monotonic() < deadline:
            time.sleep(0.02)
        survivors = [(p, s) for p, s in procs if running(p, s)]
        for p, _ in survivors:
            os.kill(p, signal.SIGKILL)  # ours: the child started them; the start time matched
        assert not survivors, f"still running {DEATH} s after the test process was SIGKILLed: {survivors}"
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
