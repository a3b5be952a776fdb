"""POST /api/events through publish() and Publisher, against the real gateway."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from conftest import mint, position
from wsgate_client import Listener, PublishError, Publisher, listen, publish


async def test_round_trip(gateway, publish_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice")))
    hello = w.listener.connected
    assert hello["type"] == "connected"
    assert hello["user"] == "alice"
    assert hello["connection_id"] and hello["instance_id"]

    data = {"id": 42, "state": "done", "tags": ["ü", "✓"], "nested": {"x": None, "f": 1.5}}
    event_id = await publish(gateway.base_url, publish_token, "task.updated", data)
    event = await w.event()
    assert event["id"] == event_id
    assert event["type"] == "task.updated"
    assert event["data"] == data
    assert isinstance(event["ts"], int) and abs(event["ts"] - time.time() * 1000) < 60_000

    # data defaults to null
    event_id = await publish(gateway.base_url + "/", publish_token, "bare")
    event = await w.event()
    assert (event["id"], event["type"], event["data"]) == (event_id, "bare", None)


async def test_listen_generator_and_on_connected(gateway, publish_token):
    seen = []

    async def on_connected(frame):
        seen.append(frame)
        await publish(gateway.base_url, publish_token, "hello", [1, 2, 3])

    gen = listen(gateway.base_url, mint("carol"), on_connected=on_connected)
    try:
        event = await _first(gen)
    finally:
        await gen.aclose()
    assert event["type"] == "hello" and event["data"] == [1, 2, 3]
    assert len(seen) == 1 and seen[0]["user"] == "carol"


async def _first(gen):
    return await asyncio.wait_for(gen.__anext__(), 5)


async def test_targeting(gateway, publish_token, watch):
    alice = await watch(Listener(gateway.base_url, mint("alice")))
    bob = await watch(Listener(gateway.base_url, mint("bob")))
    carol = await watch(Listener(gateway.base_url, mint("carol")))
    async with Publisher(gateway.base_url, publish_token) as pub:
        only_alice = await pub.publish("private", {"to": "alice"}, users=["alice"])
        bob_carol = await pub.publish("pair", "hi", users=("bob", "carol", "nobody"))
        everyone = await pub.publish("public", None)

    assert [(await alice.event())["id"] for _ in range(2)] == [only_alice, everyone]
    assert [(await bob.event())["id"] for _ in range(2)] == [bob_carol, everyone]
    assert [(await carol.event())["id"] for _ in range(2)] == [bob_carol, everyone]
    for w in (alice, bob, carol):
        await w.no_event()


async def test_publisher_keeps_one_connection(gateway, publish_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice")))
    local_ports = set()

    async def on_response(response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        if stream is not None:
            local_ports.add(stream.get_extra_info("client_addr")[1])

    client = httpx.AsyncClient(event_hooks={"response": [on_response]})
    async with client:
        pub = Publisher(gateway.base_url, publish_token, client=client)
        ids = [await pub.publish("seq", {"n": n}) for n in range(20)]
        await pub.aclose()  # does not close a client it was given
        assert not client.is_closed
    assert len(set(ids)) == 20
    assert ids == sorted(ids, key=position), "ids (<ms>-<seq>) from one instance are in publish order"
    assert len(local_ports) == 1, f"expected one keep-alive connection, saw local ports {local_ports}"
    got = [await w.event() for _ in range(20)]
    assert [e["id"] for e in got] == ids
    assert [e["data"]["n"] for e in got] == list(range(20))


async def test_error_statuses(gateway, publish_token):
    url = gateway.base_url

    with pytest.raises(PublishError) as e:
        await publish(url, mint("alice"), "x")  # a user token: no publish scope
    assert e.value.status == 403
    assert e.value.message

    with pytest.raises(PublishError) as e:
        await publish(url, "not-a-jwt", "x")
    assert e.value.status == 401

    with pytest.raises(PublishError) as e:
        await publish(url, mint("backend", scope="publish", secret="another-secret-of-at-least-32-bytes!"), "x")
    assert e.value.status == 401

    async with Publisher(url, publish_token) as pub:
        with pytest.raises(PublishError) as e:
            await pub.publish("")
        assert e.value.status == 400 and "type" in e.value.message

        with pytest.raises(PublishError) as e:
            await pub.publish("t" * 129)
        assert e.value.status == 400 and "type" in e.value.message

        with pytest.raises(PublishError) as e:
            await pub.publish("ok", users=[])
        assert e.value.status == 400 and "users" in e.value.message

        with pytest.raises(PublishError) as e:
            await pub.publish("big", "x" * 300_000)
        assert e.value.status == 413

        # the connection is still usable after errors
        assert await pub.publish("t" * 128)

    with pytest.raises(TypeError):
        await publish(url, publish_token, "x", users="alice")


async def test_rate_limit_retry_after(gateway_factory, publish_token):
    gw = gateway_factory(PUBLISH_RATE_PER_SEC="1", PUBLISH_BURST="1")
    async with Publisher(gw.base_url, publish_token) as pub:
        await pub.publish("first")
        with pytest.raises(PublishError) as e:
            await pub.publish("second")
        assert e.value.status == 429
        assert e.value.retry_after is not None and e.value.retry_after >= 1

        start = time.monotonic()
        assert await pub.publish("third", retries=3)
        assert time.monotonic() - start >= 0.5

        # a Retry-After longer than max_retry_wait is not waited for
        slow = Publisher(gw.base_url, publish_token, client=pub.client, retries=3, max_retry_wait=0.1)
        with pytest.raises(PublishError) as e:
            await slow.publish("fourth")
        assert e.value.status == 429


async def test_idempotency_key(gateway, publish_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice")))
    async with Publisher(gateway.base_url, publish_token) as pub:
        first = await pub.publish("order.paid", {"order": 7}, idempotency_key="order-7-paid")
        again = await pub.publish("order.paid", {"order": 7}, idempotency_key="order-7-paid")
        assert again == first, "a repeat with the same key answers with the first id"
        repeat = await publish(gateway.base_url, publish_token, "order.paid", {"order": 7}, idempotency_key="order-7-paid")
        assert repeat == first, "publish() sends the key too"

        with pytest.raises(PublishError) as e:
            await pub.publish("order.paid", {"order": 8}, idempotency_key="order-7-paid")
        assert e.value.status == 422

        other = await pub.publish("order.paid", {"order": 8}, idempotency_key="order-8-paid")
        assert other != first
    assert [(await w.event())["id"] for _ in range(2)] == [first, other]
    await w.no_event()


async def test_retries_keep_the_idempotency_key():
    # 503 (the gateway could not keep the event), then 429, then 202: each attempt carries the
    # same key and the same body, after the Retry-After wait.
    seen = []
    answers = [
        httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "event not accepted"}),
        httpx.Response(429, headers={"Retry-After": "0.2"}, json={"error": "rate limited"}),
        httpx.Response(202, json={"id": "1700000000000-0"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((time.monotonic(), request.headers.get("idempotency-key"), request.content))
        return answers[len(seen) - 1]

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        pub = Publisher("http://wsgate.test", "token", client=client, retries=2)
        assert await pub.publish("t", {"n": 1}, idempotency_key="key-1") == "1700000000000-0"
    assert [k for _, k, _ in seen] == ["key-1"] * 3
    assert len({body for _, _, body in seen}) == 1
    assert seen[2][0] - seen[1][0] >= 0.2, "waited Retry-After"

    # without a key no header is sent
    seen.clear()
    answers[:] = [httpx.Response(202, json={"id": "1700000000000-1"})]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await publish("http://wsgate.test", "token", "t", client=client)
    assert seen[0][1] is None
