"""Blocking clients for backends without an event loop (Django, Flask, scripts, threads).

The same calls, arguments, errors and retries as the asyncio ones (:func:`wsgate_client.publish`,
:class:`wsgate_client.Publisher`, :class:`wsgate_client.Admin`), over ``httpx.Client``::

    from wsgate_client.sync import SyncPublisher, publish

    event_id = publish("http://wsgate:8000", service_token, "task.updated", {"id": 42})

    with SyncPublisher("http://wsgate:8000", service_token, retries=3) as pub:
        pub.publish("job.progress", {"step": 1}, users=["alice"])
        ids = pub.publish_batch([{"type": "a"}, {"type": "b", "channel": "project:42"}])

An ``httpx.Client`` may be shared between threads, so one :class:`SyncPublisher` can serve a
whole process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ._core import (
    DEFAULT_TIMEOUT,
    AdminBase,
    History,
    PublisherBase,
    batch_flow,
    event_body,
    presence_flow,
    publish_flow,
    run_sync,
)

__all__ = ["History", "SyncAdmin", "SyncPublisher", "presence", "publish", "publish_batch"]


def _run(client: httpx.Client | None, timeout: float, flow):
    if client is not None:
        return run_sync(client, flow)
    with httpx.Client(timeout=timeout) as own:
        return run_sync(own, flow)


def publish(
    base_url: str,
    token: str,
    type: str,
    data: Any = None,
    users: Sequence[str] | None = None,
    *,
    client: httpx.Client | None = None,
    retries: int = 0,
    max_retry_wait: float = 60.0,
    timeout: float = DEFAULT_TIMEOUT,
    idempotency_key: str | None = None,
    channel: str | None = None,
) -> str:
    """Publishes one event and returns its id, blocking; see :func:`wsgate_client.publish`."""
    flow = publish_flow(
        base_url,
        token,
        event_body(type, data, users, channel),
        retries=retries,
        max_retry_wait=max_retry_wait,
        idempotency_key=idempotency_key,
    )
    return _run(client, timeout, flow)


def publish_batch(
    base_url: str,
    token: str,
    events: Sequence[Mapping[str, Any]],
    *,
    client: httpx.Client | None = None,
    retries: int = 0,
    max_retry_wait: float = 60.0,
    timeout: float = DEFAULT_TIMEOUT,
    idempotency_key: str | None = None,
) -> list[str]:
    """Publishes 1 to 1,000 events at once and returns their ids, blocking; see
    :func:`wsgate_client.publish_batch`."""
    flow = batch_flow(
        base_url, token, events, retries=retries, max_retry_wait=max_retry_wait, idempotency_key=idempotency_key
    )
    return _run(client, timeout, flow)


def presence(
    base_url: str, token: str, channel: str, *, client: httpx.Client | None = None, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    """Who is in ``channel``, blocking; see :func:`wsgate_client.presence`."""
    return _run(client, timeout, presence_flow(base_url, token, channel))


class SyncPublisher(PublisherBase):
    """:class:`wsgate_client.Publisher`, blocking: one ``httpx.Client``, one keep-alive
    connection. A context manager; :meth:`close` closes the client if it opened it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        admin_url: str | None = None,
        client: httpx.Client | None = None,
        retries: int = 0,
        max_retry_wait: float = 60.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(base_url, token, admin_url=admin_url, retries=retries, max_retry_wait=max_retry_wait)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)

    @property
    def client(self) -> httpx.Client:
        return self._client

    def publish(
        self,
        type: str,
        data: Any = None,
        users: Sequence[str] | None = None,
        *,
        retries: int | None = None,
        idempotency_key: str | None = None,
        channel: str | None = None,
    ) -> str:
        """Publishes one event and returns its id; see :func:`wsgate_client.publish`."""
        return run_sync(self._client, self._publish_flow(type, data, users, retries, idempotency_key, channel))

    def publish_batch(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        retries: int | None = None,
        idempotency_key: str | None = None,
    ) -> list[str]:
        """Publishes 1 to 1,000 events and returns their ids; see :func:`wsgate_client.publish_batch`."""
        return run_sync(self._client, self._batch_flow(events, retries, idempotency_key))

    def presence(self, channel: str) -> dict[str, Any]:
        """Who is in ``channel`` (asked at ``admin_url``); see :func:`wsgate_client.presence`."""
        return run_sync(self._client, self._presence_flow(channel))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncAdmin(AdminBase):
    """:class:`wsgate_client.Admin`, blocking (same arguments, same errors)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        client: httpx.Client | None = None,
        retries: int = 0,
        max_retry_wait: float = 60.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(base_url, token, retries=retries, max_retry_wait=max_retry_wait)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)

    @property
    def client(self) -> httpx.Client:
        return self._client

    def disconnect(self, user: str, reconnect: bool = False) -> int:
        """Closes every connection of ``user`` (4001, or 1012 with ``reconnect=True``) and
        returns how many; see :meth:`wsgate_client.Admin.disconnect`."""
        return run_sync(self._client, self._disconnect_flow(user, reconnect))

    def channels(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """``[{"channel", "subscribers"}, ...]``; see :meth:`wsgate_client.Admin.channels`."""
        return run_sync(self._client, self._channels_flow(prefix))

    def history(self, channel: str | None = None, since: str | None = None, limit: int = 100) -> History:
        """``History(events, last_id)``; see :meth:`wsgate_client.Admin.history`."""
        return run_sync(self._client, self._history_flow(channel, since, limit))

    def presence(self, channel: str) -> dict[str, Any]:
        """Who is in ``channel``; see :func:`wsgate_client.presence`."""
        return run_sync(self._client, self._presence_flow(channel))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SyncAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
