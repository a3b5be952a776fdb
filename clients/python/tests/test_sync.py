"""The blocking clients (wsgate_client.sync): SyncPublisher and sync.publish against the real
gateway, with the same errors, retries and Idempotency-Key as the asyncio ones. Blocking calls
run in a thread (as in a Django/Flask worker), so the listeners keep reading meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from conftest import mint, position
from wsgate_client import Listener, PublishError, SyncPublisher
from wsgate_client import sync as wsync


async def test_sync_publish_reaches_only_its_users(gateway, publish_token, watch):
    alice = await watch(Listener(gateway.base_url, mint("alice")))
    bob = await watch(Listener(gateway.base_url, mint("bob")))

    def backend() -> list[str]:
        with SyncPublisher(gateway.base_url, publish_token) as pub:
            return [
                pub.publish("job.progress", {"step": 1, "of": 2}, users=["alice"]),
                pub.publish("job.progress", {"step": 2, "of": 2}, users=["alice"]),
                pub.publish("notice", "all"),
                wsync.publish(gateway.base_url, publish_token, "fn", {"x": 1}, users=["bob"]),
            ]

    ids = await asyncio.to_thread(backend)
    got = [await alice.event() for _ in range(3)]
    assert [e["id"] for e in got] == ids[:3]
    assert [e["data"] for e in got] == [{"step": 1, "of": 2}, {"step": 2, "of": 2}, "all"]
    assert [(await bob.event())["id"] for _ in range(2)] == [ids[2], ids[3]]
    await alice.no_event()
    await bob.no_event()


def test_sync_publisher_keeps_one_connection_across_threads(gateway, publish_token):
    local_ports = set()

    def on_response(response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        if stream is not None:
            local_ports.add(stream.get_extra_info("client_addr")[1])

    with httpx.Client(event_hooks={"response": [on_response]}) as client:
        pub = SyncPublisher(gateway.base_url, publish_token, client=client)
        ids = [pub.publish("seq", n) for n in range(10)]
        pub.close()  # does not close a client it was given
        assert not client.is_closed
    assert ids == sorted(ids, key=position)
    assert len(local_ports) == 1, f"one keep-alive connection expected, saw {local_ports}"

    # one publisher shared by threads (httpx.Client is thread-safe)
    results: list[str] = []
    with SyncPublisher(gateway.base_url, publish_token) as pub:
        threads = [threading.Thread(target=lambda: results.append(pub.publish("t"))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert len(set(results)) == 8


def test_sync_error_statuses(gateway, publish_token):
    url = gateway.base_url
    with pytest.raises(PublishError) as e:
        wsync.publish(url, mint("alice"), "x")
    assert e.value.status == 403 and "publish" in e.value.message
    with pytest.raises(PublishError) as e:
        wsync.publish(url, "not-a-jwt", "x")
    assert e.value.status == 401
    with SyncPublisher(url, publish_token) as pub:
        with pytest.raises(PublishError) as e:
            pub.publish("")
        assert e.value.status == 400 and "type" in e.value.message
        with pytest.raises(PublishError) as e:
            pub.publish("ok", users=[])
        assert e.value.status == 400 and "users" in e.value.message
        with pytest.raises(PublishError) as e:
            pub.publish("big", "x" * 300_000)
        assert e.value.status == 413
        assert pub.publish("still.usable")
    with pytest.raises(TypeError):
        wsync.publish(url, publish_token, "x", users="alice")


def test_sync_rate_limit_retry_after(gateway_factory, publish_token):
    gw = gateway_factory(PUBLISH_RATE_PER_SEC="1", PUBLISH_BURST="1")
    with SyncPublisher(gw.base_url, publish_token) as pub:
        pub.publish("first")
        with pytest.raises(PublishError) as e:
            pub.publish("second")
        assert e.value.status == 429 and e.value.retry_after is not None and e.value.retry_after >= 1
        start = time.monotonic()
        assert pub.publish("third", retries=3)
        assert time.monotonic() - start >= 0.5
        slow = SyncPublisher(gw.base_url, publish_token, client=pub.client, retries=3, max_retry_wait=0.1)
        with pytest.raises(PublishError) as e:
            slow.publish("fourth")
        assert e.value.status == 429


async def test_sync_idempotency_key(gateway, publish_token, watch):
    w = await watch(Listener(gateway.base_url, mint("alice")))

    def backend():
        with SyncPublisher(gateway.base_url, publish_token) as pub:
            first = pub.publish("order.paid", {"order": 7}, idempotency_key="sync-7")
            again = pub.publish("order.paid", {"order": 7}, idempotency_key="sync-7")
            repeat = wsync.publish(gateway.base_url, publish_token, "order.paid", {"order": 7}, idempotency_key="sync-7")
            with pytest.raises(PublishError) as e:
                pub.publish("order.paid", {"order": 8}, idempotency_key="sync-7")
            return first, again, repeat, e.value.status

    first, again, repeat, status = await asyncio.to_thread(backend)
    assert again == first == repeat
    assert status == 422
    assert (await w.event())["id"] == first
    await w.no_event()


def test_sync_retries_keep_the_idempotency_key():
    seen = []
    answers = [
        httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "event not accepted"}),
        httpx.Response(429, headers={"Retry-After": "0.2"}, json={"error": "rate limited"}),
        httpx.Response(202, json={"id": "1700000000000-0"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((time.monotonic(), request.headers.get("idempotency-key"), request.content))
        return answers[len(seen) - 1]

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        pub = SyncPublisher("http://wsgate.test", "token", client=client, retries=2)
        assert pub.publish("t", {"n": 1}, idempotency_key="key-1") == "1700000000000-0"
    assert [k for _, k, _ in seen] == ["key-1"] * 3
    assert len({body for _, _, body in seen}) == 1
    assert seen[2][0] - seen[1][0] >= 0.2, "waited Retry-After"

    # with retries=0 a 503 raises at once, carrying the Retry-After it came with
    seen.clear()
    answers[:] = [httpx.Response(503, headers={"Retry-After": "7"}, json={"error": "event not accepted"})]
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(PublishError) as e:
            wsync.publish("http://wsgate.test", "token", "t", client=client)
    assert e.value.status == 503 and e.value.retry_after == 7 and len(seen) == 1
    assert seen[0][1] is None


async def test_sync_presence(gateway, publish_token, watch):
    await watch(Listener(gateway.base_url, mint("alice", channels=["room"]), channels=["room"]))
    for _ in range(50):
        who = await asyncio.to_thread(wsync.presence, gateway.base_url, publish_token, "room")
        if who["users"]:
            break
        await asyncio.sleep(0.05)
    assert who == {"channel": "room", "users": [{"user": "alice", "connections": 1}]}
    with SyncPublisher(gateway.base_url, publish_token) as pub:
        assert (await asyncio.to_thread(pub.presence, "room"))["users"][0]["user"] == "alice"
