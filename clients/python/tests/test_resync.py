"""The gateway's ``resync`` frame (Redis lost events an open connection may not have received):
``on_resync`` gets it, it is not yielded, ``last_event_id`` does not move, the connection stays.

First against a small local ``websockets`` server that plays the gateway, then end to end
against the real gateway in Redis mode with Redis restarted empty (``test_resync_e2e_...``:
needs a gateway that sends ``resync`` frames)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from websockets.asyncio.server import serve

from conftest import mint
from wsgate_client import Listener, publish


async def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _event(n: int, **extra) -> dict:
    return {"id": f"1700000000000-{n}", "type": "task.updated", "data": {"n": n}, "ts": 1700000000000, **extra}


class FakeGateway:
    """Sends ``connected`` to each connection, then whatever :meth:`send` is given."""

    def __init__(self) -> None:
        self.connections = 0
        self.outbox: asyncio.Queue = asyncio.Queue()

    async def handler(self, ws) -> None:
        self.connections += 1
        await ws.send(json.dumps({"type": "connected", "connection_id": "c", "user": "alice", "instance_id": "fake-gw"}))
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            while True:
                get = asyncio.ensure_future(self.outbox.get())
                await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    return  # the client went away: the handler must end for the server to close
                await ws.send(json.dumps(get.result()))
        finally:
            closed.cancel()

    def send(self, frame: dict) -> None:
        self.outbox.put_nowait(frame)


async def test_a_resync_frame_calls_on_resync_and_is_not_yielded(watch):
    fake = FakeGateway()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        resyncs = []
        w = await watch(Listener(f"http://127.0.0.1:{port}", "t", on_resync=resyncs.append))
        fake.send(_event(1))
        assert (await w.event())["id"] == _event(1)["id"]

        fake.send({"type": "resync", "reason": "redis_data_lost"})
        fake.send(_event(2))
        # The frame after the resync is the next thing yielded: the resync itself is not.
        assert (await w.event())["id"] == _event(2)["id"]
        assert resyncs == [
            {"reason": "redis_data_lost", "since": None, "frame": {"type": "resync", "reason": "redis_data_lost"}}
        ]
        assert w.listener.last_event_id == _event(2)["id"]

        # Between two events the resync leaves last_event_id alone.
        fake.send({"type": "resync", "reason": "some_future_reason", "detail": 1})
        await _until(lambda: len(resyncs) == 2, 5, "the second resync")
        assert w.listener.last_event_id == _event(2)["id"]
        assert (resyncs[1]["reason"], resyncs[1]["since"], resyncs[1]["frame"]["detail"]) == ("some_future_reason", None, 1)

        # No reason in the frame: "unknown". An async callback works too.
        got = []

        async def on_resync(info):
            got.append(info)

        w.listener.on_resync = on_resync
        fake.send({"type": "resync"})
        await _until(lambda: len(got) == 1, 5, "the async callback")
        assert got[0]["reason"] == "unknown"

        await w.no_event()
        assert fake.connections == 1, "the connection stayed open"
        assert w.listener.connections == 1
        assert w.listener.last_close is None
        await w.close()


async def test_an_application_event_of_type_resync_is_yielded(watch):
    fake = FakeGateway()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        resyncs = []
        w = await watch(Listener(f"http://127.0.0.1:{port}", "t", on_resync=resyncs.append))
        app_event = _event(7, type="resync", data={"reason": "the app's own"})
        fake.send(app_event)
        assert await w.event() == app_event
        assert w.listener.last_event_id == app_event["id"]
        assert resyncs == []
        await w.close()


async def _redis_state(base_url: str) -> str | None:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{base_url}/ws/stats")).json().get("redis_state")


async def _until_async(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_resync_e2e_redis_restarted_empty_calls_on_resync(gateway_factory, redis_server, publish_token, watch):
    """resync e2e: needs a gateway that sends ``resync`` frames (fails within 10 s otherwise)."""
    gw = gateway_factory(REDIS_URL=redis_server.url, INSTANCE_ID="gw-resync-e2e")
    await _until_async(lambda: _state_is(gw.base_url, "connected"), 10, "Redis connected")
    resyncs = []

    def on_resync(info):
        resyncs.append({**info, "at": time.monotonic()})

    w = await watch(Listener(gw.base_url, mint("alice"), on_resync=on_resync, backoff=(0.05, 0.5)))
    ids = [await publish(gw.base_url, publish_token, "before", n) for n in range(3)]
    assert [(await w.event())["id"] for _ in range(3)] == ids
    assert resyncs == []

    # Redis dies with everything in it; a fresh, empty one takes its port.
    await redis_server.akill()
    await redis_server.astart()
    restarted_at = time.monotonic()

    await _until(lambda: resyncs, 10, "on_resync after Redis came back empty (needs a gateway that sends `resync` frames)")
    info = resyncs[0]
    assert info["frame"]["type"] == "resync", f"a resync frame, not a reconnection: {info['frame']}"
    assert isinstance(info["reason"], str) and info["reason"]
    assert info["reason"] == info["frame"]["reason"]
    assert info["since"] is None
    assert info["at"] - restarted_at <= 10

    # Not yielded, no reconnection: the same connection carries live events.
    assert w.events.empty(), "the resync frame is not yielded"
    assert w.listener.last_event_id == ids[-1]
    assert w.listener.connections == 1, "the connection stayed open"
    assert w.listener.last_close is None

    await _until_async(lambda: _state_is(gw.base_url, "connected"), 10, "Redis reconnected")
    live = await publish(gw.base_url, publish_token, "after", "live")
    assert (await w.event(timeout=10))["id"] == live
    assert w.listener.last_event_id == live
    assert w.listener.connections == 1
    assert all(r["frame"]["type"] == "resync" for r in resyncs)


async def _state_is(base_url: str, state: str) -> bool:
    try:
        return await _redis_state(base_url) == state
    except httpx.HTTPError:
        return False
