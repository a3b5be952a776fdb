"""History and resume through Listener: since=, recovered, on_resync."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import mint, position
from wsgate_client import Listener, publish

FAST = (0.05, 0.5)  # backoff for tests: base, cap


async def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_resumes_after_the_gateway_closes_the_connection(gateway, publish_token, watch):
    # The gateway closes at the token's exp (1008); get_token() holds the reconnection while
    # events are published, so they are missed and must be replayed.
    release = asyncio.Event()

    async def get_token() -> str:
        await release.wait()
        return mint("alice")

    resyncs = []
    w = await watch(
        Listener(gateway.base_url, mint("alice", ttl=2), get_token=get_token, on_resync=resyncs.append, backoff=FAST)
    )
    assert "recovered" not in w.listener.connected
    assert w.listener.recovered is None
    first = await publish(gateway.base_url, publish_token, "before", 0)
    assert (await w.event())["id"] == first
    assert w.listener.last_event_id == first

    await _until(lambda: w.listener.last_close is not None, 8, "the close at exp")
    assert w.listener.last_close[0] == 1008
    missed = [
        await publish(gateway.base_url, publish_token, "missed", 1),
        await publish(gateway.base_url, publish_token, "missed", 2, users=["alice"]),
    ]
    await publish(gateway.base_url, publish_token, "missed", "not for alice", users=["bob"])
    missed.append(await publish(gateway.base_url, publish_token, "missed", 3))
    release.set()

    hello = await w.connect(timeout=8)
    assert hello["recovered"] is True
    assert w.listener.recovered is True
    got = [await w.event() for _ in range(3)]
    assert [e["id"] for e in got] == missed
    assert [e["data"] for e in got] == [1, 2, 3]
    live = await publish(gateway.base_url, publish_token, "live")
    assert (await w.event())["id"] == live
    await w.no_event()
    assert resyncs == []
    assert w.listener.last_event_id == live
    assert sorted([first, *missed, live], key=position) == [first, *missed, live]


@pytest.mark.parametrize("since", ["not-an-id", "1-0"], ids=["malformed", "too-old"])
async def test_a_since_that_cannot_be_replayed_calls_on_resync(gateway, publish_token, watch, since):
    resyncs = []
    w = await watch(Listener(gateway.base_url, mint("alice"), since=since, on_resync=resyncs.append))
    assert w.listener.connected["recovered"] is False
    assert w.listener.recovered is False
    assert [(r["reason"], r["since"], r["frame"]["recovered"]) for r in resyncs] == [("not_recovered", since, False)]
    event_id = await publish(gateway.base_url, publish_token, "live")
    assert (await w.event())["id"] == event_id
    assert w.listener.last_event_id == event_id


async def test_since_resumes_a_new_listener(gateway, publish_token, watch):
    first = await watch(Listener(gateway.base_url, mint("alice")))
    seen = await publish(gateway.base_url, publish_token, "seen")
    assert (await first.event())["id"] == seen
    saved = first.listener.last_event_id
    await first.close()
    missed = [
        await publish(gateway.base_url, publish_token, "missed", 1),
        await publish(gateway.base_url, publish_token, "missed", 2, users=["alice"]),
    ]

    async def on_resync(info):  # async callbacks work too
        raise AssertionError(f"unexpected resync {info}")

    w = await watch(Listener(gateway.base_url, mint("alice"), since=saved, on_resync=on_resync))
    assert w.listener.connected["recovered"] is True
    assert [(await w.event())["id"] for _ in range(2)] == missed
    await w.no_event()


async def test_memory_mode_restart_loses_history_and_calls_on_resync(gateway_factory, publish_token, watch):
    gw = gateway_factory(INSTANCE_ID="gw-one")
    resyncs = []
    w = await watch(Listener(gw.base_url, mint("alice"), backoff=FAST, on_resync=resyncs.append))
    event_id = await publish(gw.base_url, publish_token, "before")
    assert (await w.event())["id"] == event_id
    await gw.arestart(INSTANCE_ID="gw-two")
    hello = await w.connect(timeout=10)
    assert hello["instance_id"] == "gw-two"
    assert hello["recovered"] is False
    assert [(r["reason"], r["since"]) for r in resyncs] == [("not_recovered", event_id)]


async def test_a_reconnection_before_any_event_resumes_from_the_connected_position(gateway_factory, watch):
    gw = gateway_factory()
    resyncs = []
    listener = Listener(gw.base_url, mint("alice"), backoff=FAST, on_resync=resyncs.append)
    w = await watch(listener, wait_connected=False)
    first = await w.connect()
    # No event yet: the position `connected` gave is where a reconnection resumes from.
    assert isinstance(first["last_id"], str)
    assert listener.last_event_id == first["last_id"]
    await gw.arestart()
    hello = await w.connect(timeout=10)
    # A memory-mode restart loses the history: that position is unknown to the new process.
    assert hello["recovered"] is False
    assert [(r["reason"], r["since"]) for r in resyncs] == [("not_recovered", first["last_id"])]
