"""POST /api/events/batch through publish_batch() and Publisher/SyncPublisher.publish_batch,
against the real gateway (and a mock transport for the retries)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from conftest import mint, position
from wsgate_client import Listener, PublishError, Publisher, SyncPublisher, publish_batch
from wsgate_client import sync as wsync


async def test_batch_round_trip_in_order(gateway, publish_token, watch):
    alice = await watch(Listener(gateway.base_url, mint("alice", channels=["project:*"]), channels=["project:1"]))
    bob = await watch(Listener(gateway.base_url, mint("bob")))
    events = [
        {"type": "all", "data": {"n": 0}},
        {"type": "mine", "data": [1, "ü"], "users": ("alice",)},
        {"type": "chan", "data": None, "channel": "project:1"},
        {"type": "bare"},  # data defaults to null
    ]
    async with Publisher(gateway.base_url, publish_token) as pub:
        ids = await pub.publish_batch(events)
    assert len(ids) == 4 and len(set(ids)) == 4
    assert ids == sorted(ids, key=position)

    got = [await alice.event() for _ in range(4)]
    assert [e["id"] for e in got] == ids
    assert [(e["type"], e["data"]) for e in got] == [("all", {"n": 0}), ("mine", [1, "ü"]), ("chan", None), ("bare", None)]
    assert got[2]["channel"] == "project:1"
    assert [(await bob.event())["id"] for _ in range(2)] == [ids[0], ids[3]]

    # the module-level functions, async and blocking
    one = await publish_batch(gateway.base_url, publish_token, [{"type": "fn"}])
    two = await asyncio.to_thread(wsync.publish_batch, gateway.base_url, publish_token, [{"type": "sync-fn", "users": ["alice"]}])
    assert [(await alice.event())["id"] for _ in range(2)] == one + two
    assert (await bob.event())["id"] == one[0]
    await alice.no_event()
    await bob.no_event()


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_batch_errors(gateway, publish_token, watch, flavour):
    w = await watch(Listener(gateway.base_url, mint("alice")))

    if flavour == "async":
        pub = Publisher(gateway.base_url, publish_token)
        user_pub = Publisher(gateway.base_url, mint("alice"))

        async def batch(p, events, **kw):
            return await p.publish_batch(events, **kw)
    else:
        pub = SyncPublisher(gateway.base_url, publish_token)
        user_pub = SyncPublisher(gateway.base_url, mint("alice"))

        async def batch(p, events, **kw):
            return await asyncio.to_thread(p.publish_batch, events, **kw)

    # A bad item: 400 naming it, nothing of the batch published.
    with pytest.raises(PublishError) as e:
        await batch(pub, [{"type": "ok"}, {"type": "ok"}, {"type": "ok"}, {"type": ""}])
    assert e.value.status == 400
    assert e.value.message.startswith("events[3].type"), e.value.message
    assert e.value.item == 3
    with pytest.raises(PublishError) as e:
        await batch(pub, [{"type": "ok"}, {"type": "both", "users": ["a"], "channel": "c"}])
    assert e.value.status == 400 and e.value.item == 1 and "events[1]" in e.value.message

    # 1 to 1000 items
    with pytest.raises(PublishError) as e:
        await batch(pub, [])
    assert e.value.status == 400 and "events" in e.value.message and e.value.item is None
    with pytest.raises(PublishError) as e:
        await batch(pub, [{"type": "x"}] * 1001)
    assert e.value.status == 400 and "1001" in e.value.message

    # 403: a user token has no publish scope
    with pytest.raises(PublishError) as e:
        await batch(user_pub, [{"type": "x"}])
    assert e.value.status == 403 and "publish" in e.value.message

    # Idempotency-Key covers the whole batch: a repeat answers the same ids; other items → 422.
    first = await batch(pub, [{"type": "k", "data": 1}, {"type": "k", "data": 2}], idempotency_key=f"b-{flavour}")
    again = await batch(pub, [{"type": "k", "data": 1}, {"type": "k", "data": 2}], idempotency_key=f"b-{flavour}")
    assert again == first
    with pytest.raises(PublishError) as e:
        await batch(pub, [{"type": "k", "data": 1}, {"type": "k", "data": 3}], idempotency_key=f"b-{flavour}")
    assert e.value.status == 422

    # Nothing of the refused batches arrived, the keyed one once.
    assert [(await w.event())["id"] for _ in range(2)] == first
    marker = await batch(pub, [{"type": "marker"}])
    assert (await w.event())["id"] == marker[0]
    await w.no_event()

    with pytest.raises(TypeError):
        await batch(pub, [{"type": "x", "users": "alice"}])
    with pytest.raises(TypeError):
        await batch(pub, {"type": "x"})
    with pytest.raises(TypeError):
        await batch(pub, ["x"])

    for p in (pub, user_pub):
        if flavour == "async":
            await p.aclose()
        else:
            p.close()


def _recorder(answers):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("idempotency-key"), request.content))
        return answers[len(seen) - 1]

    return seen, handler


def test_batch_retries_send_one_key_sync():
    # A 503 midway through a batch: some items were accepted. The retry must carry an
    # Idempotency-Key so the gateway publishes only the rest: the client makes one up when it
    # may retry and the caller gave none, the same on every attempt.
    seen, handler = _recorder(
        [
            httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "events[1] not accepted; events[0..1] were"}),
            httpx.Response(202, json={"ids": ["1-0", "1-1"]}),
        ]
    )
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        pub = SyncPublisher("http://wsgate.test", "token", client=client, retries=1)
        assert pub.publish_batch([{"type": "a"}, {"type": "b"}]) == ["1-0", "1-1"]
    assert [p for p, _, _ in seen] == ["/api/events/batch"] * 2
    keys = {k for _, k, _ in seen}
    assert len(keys) == 1 and next(iter(keys)).startswith("batch-")
    assert len({body for _, _, body in seen}) == 1

    # Without retries nothing is made up; a caller's key is sent as given.
    seen2, handler2 = _recorder([httpx.Response(202, json={"ids": ["2-0"]}), httpx.Response(202, json={"ids": ["2-1"]})])
    with httpx.Client(transport=httpx.MockTransport(handler2)) as client:
        wsync.publish_batch("http://wsgate.test", "token", [{"type": "a"}], client=client)
        wsync.publish_batch("http://wsgate.test", "token", [{"type": "a"}], client=client, retries=2, idempotency_key="mine")
    assert [k for _, k, _ in seen2] == [None, "mine"]


async def test_batch_retry_and_no_retry_async():
    # 429 with Retry-After is retried; 429 without it (a batch larger than PUBLISH_BURST) is
    # not: waiting would not help.
    seen, handler = _recorder(
        [
            httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "publish rate limit exceeded"}),
            httpx.Response(202, json={"ids": ["3-0"]}),
            httpx.Response(429, json={"error": "a batch of 5 events is larger than PUBLISH_BURST allows"}),
            httpx.Response(202, json={"ids": ["3-1"]}),  # never asked for
        ]
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        pub = Publisher("http://wsgate.test", "token", client=client, retries=3)
        assert await pub.publish_batch([{"type": "a"}]) == ["3-0"]
        with pytest.raises(PublishError) as e:
            await pub.publish_batch([{"type": "a"}] * 5)
        assert e.value.status == 429 and e.value.retry_after is None
    assert len(seen) == 3

    # A 202 without as many ids as items is an error, not a short list.
    _, bad = _recorder([httpx.Response(202, json={"ids": ["4-0"]})])
    async with httpx.AsyncClient(transport=httpx.MockTransport(bad)) as client:
        with pytest.raises(PublishError) as e:
            await publish_batch("http://wsgate.test", "token", [{"type": "a"}, {"type": "b"}], client=client)
        assert e.value.status == 202


async def test_batch_rate_limit_against_the_gateway(gateway_factory, publish_token):
    gw = gateway_factory(PUBLISH_RATE_PER_SEC="2", PUBLISH_BURST="2")
    async with Publisher(gw.base_url, publish_token) as pub:
        # larger than the burst: 429 without Retry-After, not retried
        with pytest.raises(PublishError) as e:
            await pub.publish_batch([{"type": "x"}] * 3, retries=3)
        assert e.value.status == 429 and e.value.retry_after is None and "PUBLISH_BURST" in e.value.message
        assert len(await pub.publish_batch([{"type": "x"}] * 2)) == 2
        # the burst is spent: 429 with Retry-After, retried after it
        ids = await pub.publish_batch([{"type": "y"}] * 2, retries=3)
        assert len(ids) == 2
