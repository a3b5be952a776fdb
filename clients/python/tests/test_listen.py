"""GET /ws/tasks through Listener: reconnects, token refresh, refused upgrades."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from conftest import mint
from wsgate_client import ConnectionClosed, Listener, UpgradeRefused, publish

FAST = (0.05, 0.5)  # backoff for tests: base, cap


async def test_control_frames_are_not_yielded(gateway, publish_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice")))
    await w.listener.ping()
    await w.listener.ping()
    event_id = await publish(gateway.base_url, publish_token, "after.ping")
    assert (await w.event())["id"] == event_id  # the two pongs were skipped
    await w.no_event()


async def test_reconnect_after_restart_on_same_port(gateway_factory, publish_token, watch):
    gw = gateway_factory(INSTANCE_ID="gw-one")
    w = await watch(Listener(gw.base_url, mint("alice"), backoff=FAST))
    assert w.listener.connected["instance_id"] == "gw-one"
    first = await publish(gw.base_url, publish_token, "before")
    assert (await w.event())["id"] == first

    port = gw.port
    await gw.arestart(INSTANCE_ID="gw-two")  # SIGTERM: close 1001, then a new process
    assert gw.port == port
    hello = await w.connect(timeout=10)
    assert hello["instance_id"] == "gw-two"
    assert w.listener.last_close[0] == 1001
    assert w.listener.connections == 2

    second = await publish(gw.base_url, publish_token, "after")
    assert (await w.event())["id"] == second
    await w.no_event()


async def test_reconnect_after_network_loss(gateway_factory, publish_token, watch):
    gw = gateway_factory(INSTANCE_ID="gw-one")
    w = await watch(Listener(gw.base_url, mint("alice"), backoff=FAST))
    await gw.akill()  # SIGKILL: no close frame
    await asyncio.sleep(0.5)  # a few refused connection attempts
    await gw.astart(INSTANCE_ID="gw-two")
    hello = await w.connect(timeout=10)
    assert hello["instance_id"] == "gw-two"
    assert w.listener.last_close[0] == 1006
    event_id = await publish(gw.base_url, publish_token, "back")
    assert (await w.event())["id"] == event_id


async def test_waits_for_a_gateway_that_is_not_up_yet(gateway_factory, publish_token, watch):
    gw = gateway_factory(start=False)  # its port is held: connecting is refused until it starts
    w = await watch(Listener(gw.base_url, mint("alice"), backoff=FAST), wait_connected=False)
    await asyncio.sleep(0.5)
    assert w.listener.connections == 0
    await gw.astart()
    await w.connect(timeout=10)
    event_id = await publish(gw.base_url, publish_token, "late")
    assert (await w.event())["id"] == event_id


async def test_token_expiry_asks_get_token(gateway, publish_token, watch):
    calls = []

    async def get_token() -> str:
        calls.append(time.monotonic())
        return mint("alice", ttl=3600)

    w = await watch(Listener(gateway.base_url, mint("alice", ttl=2), get_token=get_token, backoff=FAST))
    first_conn = w.listener.connected["connection_id"]
    hello = await w.connect(timeout=8)  # the gateway closes with 1008 at exp
    assert w.listener.last_close[0] == 1008
    assert len(calls) == 1
    assert hello["connection_id"] != first_conn
    event_id = await publish(gateway.base_url, publish_token, "fresh")
    assert (await w.event())["id"] == event_id


async def test_sync_get_token_works_too(gateway, watch):
    w = await watch(Listener(gateway.base_url, mint("alice", ttl=2), get_token=lambda: mint("alice")))
    await w.connect(timeout=8)
    assert w.listener.last_close[0] == 1008


async def test_token_expiry_without_get_token_raises(gateway, watch):
    w = await watch(Listener(gateway.base_url, mint("alice", ttl=2)))
    with pytest.raises(ConnectionClosed) as e:
        await w.event(timeout=8)
    assert e.value.code == 1008


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        mint("alice", secret="another-secret-of-at-least-32-bytes!"),
        mint("alice", ttl=-60),
    ],
    ids=["malformed", "bad-signature", "expired"],
)
async def test_refused_upgrade_raises(gateway, token):
    listener = Listener(gateway.base_url, token, backoff=FAST)
    start = time.monotonic()
    with pytest.raises(UpgradeRefused) as e:
        await asyncio.wait_for(listener.__anext__(), 5)
    assert e.value.status == 401
    assert e.value.message
    assert time.monotonic() - start < 2, "a 401 must raise, not loop with backoff"
    assert listener.connections == 0


async def test_refused_upgrade_asks_get_token_once(gateway):
    calls = []

    def get_token():
        calls.append(1)
        return "still-not-a-jwt"

    listener = Listener(gateway.base_url, mint("alice", ttl=-60), get_token=get_token, backoff=FAST)
    with pytest.raises(UpgradeRefused) as e:
        await asyncio.wait_for(listener.__anext__(), 5)
    assert e.value.status == 401
    assert calls == [1]


async def test_refused_upgrade_get_token_recovers(gateway, publish_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice", ttl=-60), get_token=lambda: mint("alice")))
    event_id = await publish(gateway.base_url, publish_token, "ok")
    assert (await w.event())["id"] == event_id


async def test_forbidden_origin_raises(gateway_factory, watch):
    gw = gateway_factory(ALLOWED_ORIGINS="https://app.example.com")
    listener = Listener(gw.base_url, mint("alice"), headers={"Origin": "https://evil.example.com"})
    with pytest.raises(UpgradeRefused) as e:
        await asyncio.wait_for(listener.__anext__(), 5)
    assert e.value.status == 403
    assert "origin" in e.value.message

    w = await watch(Listener(gw.base_url, mint("alice"), headers={"Origin": "https://app.example.com"}))
    assert w.listener.connected["user"] == "alice"


async def test_no_reconnect_ends_on_shutdown(gateway, watch):
    w = await watch(Listener(gateway.base_url, mint("alice"), reconnect=False))
    started = time.monotonic()
    assert await gateway.astop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 2, "the client answered the close frame: no full drain wait"
    await asyncio.wait_for(w.task, 5)  # iteration ended without an exception
    assert w.listener.last_close[0] == 1001
    assert w.listener.connections == 1


async def test_no_reconnect_raises_on_network_loss(gateway, watch):
    w = await watch(Listener(gateway.base_url, mint("alice"), reconnect=False))
    await gateway.akill()
    with pytest.raises(ConnectionClosed) as e:
        await asyncio.wait_for(w.task, 5)
    assert e.value.code == 1006


async def test_close_stops_a_listener_waiting_to_reconnect(gateway_factory, watch):
    gw = gateway_factory()
    w = await watch(Listener(gw.base_url, mint("alice"), backoff=(5.0, 5.0)))
    await gw.akill()
    await asyncio.sleep(0.3)  # now in a (up to 5 s) backoff sleep
    start = time.monotonic()
    await w.close()
    assert time.monotonic() - start < 1
