"""The backend side, asyncio: ``POST /api/events``, ``POST /api/events/batch`` and
``GET /api/channels/{name}/presence``. :mod:`wsgate_client.sync` has the same calls blocking;
both run the flows of :mod:`wsgate_client._core`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ._core import DEFAULT_TIMEOUT, PublisherBase, batch_flow, event_body, presence_flow, publish_flow, run_async

__all__ = ["Publisher", "presence", "publish", "publish_batch"]


async def _run(client: httpx.AsyncClient | None, timeout: float, flow):
    if client is not None:
        return await run_async(client, flow)
    async with httpx.AsyncClient(timeout=timeout) as own:
        return await run_async(own, flow)


async def publish(
    base_url: str,
    token: str,
    type: str,
    data: Any = None,
    users: Sequence[str] | None = None,
    *,
    client: httpx.AsyncClient | None = None,
    retries: int = 0,
    max_retry_wait: float = 60.0,
    timeout: float = DEFAULT_TIMEOUT,
    idempotency_key: str | None = None,
    channel: str | None = None,
) -> str:
    """Publishes one event and returns its id.

    ``token`` needs the ``publish`` scope. Without ``users`` or ``channel`` the event goes to
    every connected client; with ``users``, only to those users' connections; with ``channel``,
    only to that channel's subscribers (on every instance), and its frames carry ``"channel"``.
    ``users`` and ``channel`` together are refused (400). ``data`` is any JSON-serialisable
    value.

    A 429 (rate limited) or 503 (not accepted) answer is retried up to ``retries`` times after
    waiting ``Retry-After`` seconds (1 s for a 503 without it), unless the wait exceeds
    ``max_retry_wait``. Any other non-202 answer raises :class:`PublishError` at once. Network
    errors are raised as ``httpx`` exceptions and never retried (the event may have been
    accepted).

    ``idempotency_key`` (1 to 255 visible ASCII characters, e.g. a UUID) is sent as the
    ``Idempotency-Key`` header, with every retry too. A publish repeated with the same key and
    the same arguments within the gateway's window (10 minutes by default) returns the first
    event's id and publishes nothing, so after a network error it is safe to call again with
    the same key. The same key with other arguments raises :class:`PublishError` (422).

    Pass ``client`` to reuse an ``httpx.AsyncClient`` (and its keep-alive connections); without
    it a client is opened and closed for this one call. :class:`Publisher` does this for you.
    """
    flow = publish_flow(
        base_url,
        token,
        event_body(type, data, users, channel),
        retries=retries,
        max_retry_wait=max_retry_wait,
        idempotency_key=idempotency_key,
    )
    return await _run(client, timeout, flow)


async def publish_batch(
    base_url: str,
    token: str,
    events: Sequence[Mapping[str, Any]],
    *,
    client: httpx.AsyncClient | None = None,
    retries: int = 0,
    max_retry_wait: float = 60.0,
    timeout: float = DEFAULT_TIMEOUT,
    idempotency_key: str | None = None,
) -> list[str]:
    """Publishes 1 to 1,000 events in one request (``POST /api/events/batch``) and returns
    their ids, in item order; the items reach each client in that order.

    Each item is a mapping with the fields of one :func:`publish`: ``{"type": ..., "data":
    ..., "users": [...]}`` or ``{..., "channel": ...}``. All or nothing: a bad item raises
    :class:`PublishError` (400) whose message names it (``events[3].type: ...``) and whose
    ``item`` is its index, and nothing is published. An empty list or more than 1,000 items:
    400 too (the client does not split batches, since one ``Idempotency-Key`` covers the whole
    batch).

    Retries as :func:`publish`. A 503 may come after the gateway accepted the first items; a
    retry with the same ``Idempotency-Key`` publishes only the ones still missing. So when
    ``retries`` > 0 and no ``idempotency_key`` is given, a random key is sent, the same on
    every attempt of this call (to repeat the call itself after a network error, pass your
    own).
    """
    flow = batch_flow(
        base_url, token, events, retries=retries, max_retry_wait=max_retry_wait, idempotency_key=idempotency_key
    )
    return await _run(client, timeout, flow)


async def presence(
    base_url: str,
    token: str,
    channel: str,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Who is in ``channel``, across the fleet: ``GET /api/channels/{channel}/presence``.

    Returns the gateway's answer, ``{"channel": "project:42", "users": [{"user": "alice",
    "connections": 2}, ...]}`` (sorted by user; an empty list when nobody is in it). ``token``
    needs the ``publish`` (or ``admin``) scope. When the gateway has a separate admin listener
    (``ADMIN_LISTEN_ADDR``), presence is served there only: pass that URL as ``base_url``. Any
    answer other than 200 raises :class:`~wsgate_client.ApiError` (400 bad channel name, 401
    bad token, 403 no ``publish`` scope, 404 on a public listener when the admin one is
    separate). ``client`` reuses an ``httpx.AsyncClient`` (see :meth:`Publisher.presence`).
    """
    return await _run(client, timeout, presence_flow(base_url, token, channel))


class Publisher(PublisherBase):
    """Publishes through one ``httpx.AsyncClient``, so every call reuses one keep-alive
    HTTP/1.1 connection (as the gateway recommends).

    ::

        async with Publisher("http://wsgate:8000", service_token) as pub:
            event_id = await pub.publish("task.updated", {"id": 42}, users=["alice"])
            await pub.publish("task.updated", {"id": 42}, channel="project:42")
            ids = await pub.publish_batch([{"type": "a"}, {"type": "b", "users": ["bob"]}])
            who = await pub.presence("project:42")

    ``admin_url`` is where :meth:`presence` goes when the gateway serves it on a separate
    admin listener (``ADMIN_LISTEN_ADDR``); it defaults to ``base_url``.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        admin_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        retries: int = 0,
        max_retry_wait: float = 60.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(base_url, token, admin_url=admin_url, retries=retries, max_retry_wait=max_retry_wait)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    async def publish(
        self,
        type: str,
        data: Any = None,
        users: Sequence[str] | None = None,
        *,
        retries: int | None = None,
        idempotency_key: str | None = None,
        channel: str | None = None,
    ) -> str:
        """Publishes one event and returns its id; see :func:`publish`."""
        return await run_async(self._client, self._publish_flow(type, data, users, retries, idempotency_key, channel))

    async def publish_batch(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        retries: int | None = None,
        idempotency_key: str | None = None,
    ) -> list[str]:
        """Publishes 1 to 1,000 events at once and returns their ids; see :func:`publish_batch`."""
        return await run_async(self._client, self._batch_flow(events, retries, idempotency_key))

    async def presence(self, channel: str) -> dict[str, Any]:
        """Who is in ``channel`` across the fleet (asked at ``admin_url``); see :func:`presence`."""
        return await run_async(self._client, self._presence_flow(channel))

    async def aclose(self) -> None:
        """Closes the HTTP client if this publisher opened it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
