"""The admin API through Admin / SyncAdmin against the real gateway: disconnect (and what the
Listener does with 4001 and 1012), channels, history, the admin scope, and a gateway whose admin
endpoints are on a separate listener (ADMIN_LISTEN_ADDR)."""

from __future__ import annotations

import asyncio
import inspect
import random
import time

import pytest

from conftest import mint
from wsgate_client import Admin, ApiError, History, Listener, Publisher, Revoked, SyncAdmin, SyncPublisher, publish

FAST = (0.05, 0.5)


async def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.05)


# --- disconnect and the listener ----------------------------------------------------------


async def test_disconnect_revokes_the_user_and_the_listener_stops(gateway, publish_token, admin_token, watch):
    calls = []

    def get_token():
        calls.append(1)
        return mint("alice")

    a1 = await watch(Listener(gateway.base_url, mint("alice"), get_token=get_token, backoff=FAST))
    a2 = await watch(Listener(gateway.base_url, mint("alice"), reconnect=False))
    bob = await watch(Listener(gateway.base_url, mint("bob"), backoff=FAST))

    async with Admin(gateway.base_url, admin_token) as admin:
        started = time.monotonic()
        assert await admin.disconnect("alice") == 2
    for w in (a1, a2):
        with pytest.raises(Revoked) as e:
            await w.event(timeout=3)
        assert e.value.code == 4001 and e.value.reason == "revoked"
        assert w.listener.last_close == (4001, "revoked")
        assert w.listener.connections == 1
    assert time.monotonic() - started < 3
    # not reconnected, no new token asked for; iterating again ends at once
    await asyncio.sleep(0.5)
    assert calls == [] and a1.listener.connections == 1
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(a1.listener.__anext__(), 1)
    # bob is untouched: same connection, still receives
    marker = await publish(gateway.base_url, publish_token, "marker")
    assert (await bob.event())["id"] == marker
    assert bob.listener.connections == 1 and bob.listener.last_close is None
    await bob.no_event()

    # nobody connected: 0; a sub with a slash is percent-encoded into one path segment
    odd = await watch(Listener(gateway.base_url, mint("team/carol"), backoff=FAST))
    async with Admin(gateway.base_url, admin_token) as admin:
        assert await admin.disconnect("alice") == 0
        assert await admin.disconnect("team/carol") == 1
    with pytest.raises(Revoked):
        await odd.event(timeout=3)


async def test_disconnect_with_reconnect_reconnects_at_once_with_the_same_token(
    gateway, publish_token, admin_token, watch, monkeypatch
):
    # Any backoff would be its full 5 s: a reconnection within 2.5 s was not a backoff.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    calls = []
    token = mint("alice")
    w = await watch(Listener(gateway.base_url, token, get_token=lambda: calls.append(1) or mint("alice"), backoff=(5.0, 5.0)))
    first = w.listener.connected["connection_id"]
    before = await publish(gateway.base_url, publish_token, "before")
    assert (await w.event())["id"] == before

    async with Admin(gateway.base_url, admin_token) as admin:
        started = time.monotonic()
        assert await admin.disconnect("alice", reconnect=True) == 1
        hello = await w.connect(timeout=3)
        # at once: not the 0..5 s backoff of this listener
        assert time.monotonic() - started < 2.5
    assert hello["connection_id"] != first
    assert w.listener.last_close == (1012, "reconnect")
    assert w.listener.connections == 2
    assert calls == [] and w.listener.token == token, "1012 keeps the token"
    assert hello.get("recovered") is True, "it resumed from the last event"
    after = await publish(gateway.base_url, publish_token, "after")
    assert (await w.event())["id"] == after
    await w.no_event()


async def test_reconnect_close_ends_a_listener_without_reconnect(gateway, admin_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice"), reconnect=False))
    with SyncAdmin(gateway.base_url, admin_token) as admin:
        assert await asyncio.to_thread(admin.disconnect, "alice", True) == 1
    await asyncio.wait_for(w.task, 5)  # ended, no exception
    assert w.listener.last_close == (1012, "reconnect") and w.listener.connections == 1


# --- scopes and errors --------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_admin_calls_need_the_admin_scope(gateway, publish_token, flavour):
    calls = [
        ("disconnect", ("alice",)),
        ("channels", ()),
        ("history", ()),
    ]
    for token, status in ((publish_token, 403), (mint("alice"), 403), ("not-a-jwt", 401)):
        for name, args in calls:
            with pytest.raises(ApiError) as e:
                if flavour == "async":
                    async with Admin(gateway.base_url, token) as admin:
                        await getattr(admin, name)(*args)
                else:
                    with SyncAdmin(gateway.base_url, token) as admin:
                        await asyncio.to_thread(getattr(admin, name), *args)
            assert e.value.status == status, (name, token[:10])
            if status == 403:
                assert e.value.message == 'token lacks the "admin" scope'


async def test_an_admin_token_may_publish(gateway, admin_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice")))
    async with Publisher(gateway.base_url, admin_token) as pub:
        event_id = await pub.publish("by.admin", 1, users=["alice"])
        ids = await pub.publish_batch([{"type": "batch.by.admin"}])
    assert [(await w.event())["id"] for _ in range(2)] == [event_id, *ids]


# --- channels and history -----------------------------------------------------------------


async def test_channels(gateway, admin_token, watch):
    grants = ["project:*", "news"]
    await watch(Listener(gateway.base_url, mint("alice", channels=grants), channels=["project:1", "project:2"]))
    await watch(Listener(gateway.base_url, mint("bob", channels=grants), channels=["project:1", "news"]))
    everything = [
        {"channel": "news", "subscribers": 1},
        {"channel": "project:1", "subscribers": 2},
        {"channel": "project:2", "subscribers": 1},
    ]
    async with Admin(gateway.base_url + "/", admin_token) as admin:

        async def listed():
            return sorted(await admin.channels(), key=lambda c: c["channel"])

        assert await _until(lambda: _eq(listed(), everything), 5, "the channels") is True
        projects = sorted(await admin.channels(prefix="project:"), key=lambda c: c["channel"])
        assert projects == everything[1:]
        assert await admin.channels(prefix="nothing-like-it") == []
    with SyncAdmin(gateway.base_url, admin_token) as admin:
        got = await asyncio.to_thread(admin.channels, "news")
        assert got == everything[:1]


async def _eq(awaitable, want):
    return (await awaitable) == want


async def test_history(gateway, publish_token, admin_token, watch):
    async with Admin(gateway.base_url, admin_token) as admin:
        assert tuple(await admin.history()) == ([], None), "an empty stream"

    w = await watch(Listener(gateway.base_url, mint("alice", channels=["c"]), channels=["c"]))
    async with Publisher(gateway.base_url, publish_token) as pub:
        ids = [await pub.publish("h", {"n": n}) for n in range(5)]
        chan = await pub.publish_batch([{"type": "in.c", "data": n, "channel": "c"} for n in range(2)])
    received = [await w.event() for _ in range(7)]

    async with Admin(gateway.base_url, admin_token) as admin:
        page = await admin.history(limit=3)
        assert isinstance(page, History)
        events, last_id = page
        # without since: the newest `limit`, oldest first; frames as the clients received them
        assert [e["id"] for e in events] == ids[2:]
        assert events == received[2:5]
        assert last_id == ids[-1]
        # with since: the first `limit` after it
        after = await admin.history(since=ids[0], limit=2)
        assert [e["id"] for e in after.events] == ids[1:3] and after.last_id == ids[-1]
        assert (await admin.history(since=ids[-1])).events == []
        # a channel's own stream
        c = await admin.history(channel="c")
        assert [e["id"] for e in c.events] == chan
        assert all(e["channel"] == "c" for e in c.events)
        assert c.events == received[5:]
        # bad parameters: 400 naming them
        for kwargs, word in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"since": "yesterday"}, "since")):
            with pytest.raises(ApiError) as e:
                await admin.history(**kwargs)
            assert e.value.status == 400 and word in e.value.message, e.value.message
        with pytest.raises(TypeError):
            await admin.history(limit="10")

    with SyncAdmin(gateway.base_url, admin_token) as admin:
        events, last_id = await asyncio.to_thread(admin.history, None, ids[2], 1000)
        assert [e["id"] for e in events] == ids[3:] and last_id == ids[-1]


# --- a separate admin listener ------------------------------------------------------------


async def test_split_admin_listener(gateway_factory, publish_token, admin_token, watch):
    gw = gateway_factory(admin=True)
    assert gw.admin_url != gw.base_url
    assert f"admin endpoints on {gw.admin_url}" in gw.log()
    w = await watch(Listener(gw.base_url, mint("alice", channels=["room"]), channels=["room"], backoff=FAST))

    # the public listener does not serve the admin endpoints, nor presence
    async with Admin(gw.base_url, admin_token) as public:
        for call in (public.channels(), public.history(), public.disconnect("alice"), public.presence("room")):
            with pytest.raises(ApiError) as e:
                await call
            assert e.value.status == 404
    async with Publisher(gw.base_url, publish_token) as pub:
        with pytest.raises(ApiError) as e:
            await pub.presence("room")
        assert e.value.status == 404

    # publishing on the public one, presence at admin_url, the admin API on the admin one
    async with Publisher(gw.base_url, publish_token, admin_url=gw.admin_url) as pub, Admin(gw.admin_url, admin_token) as admin:
        event_id = await pub.publish("split", channel="room")
        assert (await w.event())["id"] == event_id
        assert (await pub.presence("room"))["users"] == [{"user": "alice", "connections": 1}]
        assert await admin.channels() == [{"channel": "room", "subscribers": 1}]
        assert [e["id"] for e in (await admin.history(channel="room")).events] == [event_id]
        assert await admin.disconnect("alice") == 1
    with pytest.raises(Revoked):
        await w.event(timeout=3)

    with SyncPublisher(gw.base_url, publish_token, admin_url=gw.admin_url) as pub, SyncAdmin(gw.admin_url, admin_token) as admin:
        assert await asyncio.to_thread(pub.publish, "sync.split")
        assert (await asyncio.to_thread(pub.presence, "room"))["users"] == []
        assert (await asyncio.to_thread(admin.history)).events[-1]["type"] == "sync.split"
