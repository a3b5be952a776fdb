"""Channels: publish(channel=...), Listener(channels=[...]) joining at connect and rejoining
(with the missed channel events replayed) on reconnection, and presence()."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

from conftest import mint
from wsgate_client import ApiError, Listener, PublishError, Publisher, presence, publish

FAST = (0.05, 0.5)  # backoff for tests: base, cap
GRANTS = ["project:*", "news"]


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


async def test_publish_to_a_channel_reaches_its_subscribers_only(gateway, publish_token, watch):
    member = await watch(Listener(gateway.base_url, mint("alice", channels=GRANTS), channels=["project:42"]))
    outsider = await watch(Listener(gateway.base_url, mint("bob", channels=GRANTS)))
    assert "channels=project:42" in member.listener._url(None)

    event_id = await publish(gateway.base_url, publish_token, "task.updated", {"id": 42}, channel="project:42")
    event = await member.event()
    assert (event["id"], event["type"], event["channel"], event["data"]) == (event_id, "task.updated", "project:42", {"id": 42})
    # A broadcast marker after it: bob's first event must be the marker, then nothing.
    marker = await publish(gateway.base_url, publish_token, "marker")
    assert (await outsider.event())["id"] == marker
    assert (await member.event())["id"] == marker
    await outsider.no_event()
    assert member.listener.subscribed == {"project:42"}

    async with Publisher(gateway.base_url, publish_token) as pub:
        await pub.publish("elsewhere", channel="project:7")
        second = await pub.publish("task.updated", 2, channel="project:42")
        assert (await member.event())["id"] == second
        await member.no_event()

        with pytest.raises(PublishError) as e:
            await pub.publish("both", users=["alice"], channel="project:42")
        assert e.value.status == 400 and "channel" in e.value.message
        with pytest.raises(PublishError) as e:
            await pub.publish("bad", channel="no spaces")
        assert e.value.status == 400 and "channel" in e.value.message


async def test_refused_channels_are_recorded_and_not_asked_again(gateway_factory, publish_token, watch):
    gw = gateway_factory(MAX_CHANNELS_PER_CONNECTION="3")
    listener = Listener(
        gw.base_url,
        mint("alice", channels=GRANTS),
        channels=["news", "secret", "user:alice", "project:1", "project:2"],
        backoff=FAST,
    )
    w = await watch(listener)
    # The answers come right after the `connected` frame, before any event.
    event_id = await publish(gw.base_url, publish_token, "headline", channel="news")
    assert (await w.event())["id"] == event_id
    assert listener.subscribed == {"news", "user:alice", "project:1"}
    assert {name: frame["error"] for name, frame in listener.refused.items()} == {
        "secret": "forbidden",
        "project:2": "too_many_channels",
    }
    assert listener.channels == ["news", "user:alice", "project:1"]
    assert "secret" not in listener._url("1-0")

    with pytest.raises(ValueError):
        Listener(gw.base_url, mint("alice"), channels=["a,b"])
    with pytest.raises(TypeError):
        Listener(gw.base_url, mint("alice"), channels="news")


async def test_rejoins_on_reconnection_and_replays_the_missed_channel_events_once(gateway, publish_token, watch):
    # The gateway closes at the token's exp (1008); get_token() holds the reconnection while
    # events are published, so they are missed and must be replayed with the channel rejoined.
    release = asyncio.Event()

    async def get_token() -> str:
        await release.wait()
        return mint("alice", channels=GRANTS)

    resyncs = []
    w = await watch(
        Listener(
            gateway.base_url,
            mint("alice", ttl=2, channels=GRANTS),
            get_token=get_token,
            on_resync=resyncs.append,
            channels=["project:42"],
            backoff=FAST,
        )
    )
    base, token = gateway.base_url, publish_token
    first = await publish(base, token, "before", channel="project:42")
    assert (await w.event())["id"] == first

    await _until(lambda: w.listener.last_close is not None, 8, "the close at exp")
    assert w.listener.last_close[0] == 1008
    missed = [await publish(base, token, "missed", 1, channel="project:42")]
    await publish(base, token, "missed", "not joined", channel="project:7")
    missed.append(await publish(base, token, "missed", 2, users=["alice"]))
    missed.append(await publish(base, token, "missed", 3, channel="project:42"))
    release.set()

    hello = await w.connect(timeout=8)
    assert hello["recovered"] is True
    got = [await w.event() for _ in range(3)]
    assert [e["id"] for e in got] == missed
    assert [e.get("channel") for e in got] == ["project:42", None, "project:42"]
    live = await publish(base, token, "live", channel="project:42")
    assert (await w.event())["id"] == live
    await w.no_event()
    assert resyncs == []
    assert w.listener.connections == 2
    assert w.listener.subscribed == {"project:42"}


async def test_presence(gateway, publish_token, watch):
    token = mint("alice", channels=GRANTS)
    await watch(Listener(gateway.base_url, token, channels=["project:42"]))
    await watch(Listener(gateway.base_url, token, channels=["project:42", "news"]))
    await watch(Listener(gateway.base_url, mint("bob", channels=GRANTS), channels=["project:42"]))

    expected = {"channel": "project:42", "users": [{"user": "alice", "connections": 2}, {"user": "bob", "connections": 1}]}

    async def current():
        answer = await presence(gateway.base_url, publish_token, "project:42")
        return answer if answer == expected else None

    assert await _until(current, 10, "presence of project:42") == expected
    async with Publisher(gateway.base_url, publish_token) as pub:
        assert await pub.presence("news") == {"channel": "news", "users": [{"user": "alice", "connections": 1}]}
        assert await pub.presence("empty") == {"channel": "empty", "users": []}
        with pytest.raises(ApiError) as e:
            await pub.presence("no spaces")
        assert e.value.status == 400

    with pytest.raises(ApiError) as e:
        await presence(gateway.base_url, token, "project:42")  # a user token: no publish scope
    assert e.value.status == 403
    assert not isinstance(e.value, PublishError)
