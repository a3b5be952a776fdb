"""The backend side: ``POST /api/events`` and ``GET /api/channels/{name}/presence``."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ApiError, PublishError

__all__ = ["Publisher", "presence", "publish"]

DEFAULT_TIMEOUT = 10.0
# Statuses that mean "nothing was published, come back after Retry-After": 429 (rate
# limited) and 503 (the gateway could not keep the event). Both are safe to retry.
_RETRYABLE = (429, 503)


def _events_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/api/events"


def _presence_url(base_url: str, channel: str) -> str:
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, not {channel!r}")
    return f"{base_url.rstrip('/')}/api/channels/{quote(channel, safe='')}/presence"


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip()
    return text or response.reason_phrase or "no error message"


def _body(type: str, data: Any, users: Sequence[str] | None, channel: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type, "data": data}
    if users is not None:
        if isinstance(users, str):
            raise TypeError("users must be a list of user ids, not a string")
        body["users"] = list(users)
    if channel is not None:
        # With users too, the gateway answers 400: an event goes to users or to a channel.
        body["channel"] = channel
    return body


async def _post(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    body: dict[str, Any],
    retries: int,
    max_retry_wait: float,
    idempotency_key: str | None = None,
) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    if idempotency_key is not None:
        # Sent unchanged with every retry: the gateway answers a repeat with the first id.
        headers["Idempotency-Key"] = idempotency_key
    attempt = 0
    while True:
        # json= sets Content-Type: application/json.
        response = await client.post(url, json=body, headers=headers)
        if response.status_code == 202:
            try:
                event_id = response.json().get("id")
            except (ValueError, AttributeError):
                event_id = None
            if not isinstance(event_id, str):
                raise PublishError(202, f"gateway answered 202 without an event id: {response.text!r}")
            return event_id
        retry_after = _parse_retry_after(response.headers.get("retry-after"))
        error = PublishError(response.status_code, _error_message(response), retry_after)
        if response.status_code not in _RETRYABLE or attempt >= retries:
            raise error
        wait = 1.0 if retry_after is None else retry_after
        if wait > max_retry_wait:
            raise error
        attempt += 1
        await asyncio.sleep(wait)


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
    waiting ``Retry-After`` seconds (1 s when the header is missing), unless the wait exceeds
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
    body = _body(type, data, users, channel)
    url = _events_url(base_url)
    if client is not None:
        return await _post(client, url, token, body, retries, max_retry_wait, idempotency_key)
    async with httpx.AsyncClient(timeout=timeout) as own:
        return await _post(own, url, token, body, retries, max_retry_wait, idempotency_key)


async def _get_presence(client: httpx.AsyncClient, base_url: str, token: str, channel: str) -> dict[str, Any]:
    response = await client.get(_presence_url(base_url, channel), headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        retry_after = _parse_retry_after(response.headers.get("retry-after"))
        raise ApiError(response.status_code, _error_message(response), retry_after)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("users"), list):
        raise ApiError(200, f"presence answer is not {{\"channel\", \"users\"}}: {response.text!r}")
    return body


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
    needs the ``publish`` scope, like :func:`publish`. Any answer other than 200 raises
    :class:`~wsgate_client.ApiError` (400 bad channel name, 401 bad token, 403 no ``publish``
    scope). ``client`` reuses an ``httpx.AsyncClient`` (see :meth:`Publisher.presence`).
    """
    if client is not None:
        return await _get_presence(client, base_url, token, channel)
    async with httpx.AsyncClient(timeout=timeout) as own:
        return await _get_presence(own, base_url, token, channel)


class Publisher:
    """Publishes through one ``httpx.AsyncClient``, so every call reuses one keep-alive
    HTTP/1.1 connection (as the gateway recommends).

    ::

        async with Publisher("http://wsgate:8000", service_token) as pub:
            event_id = await pub.publish("task.updated", {"id": 42}, users=["alice"])
            await pub.publish("task.updated", {"id": 42}, channel="project:42")
            who = await pub.presence("project:42")
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        client: httpx.AsyncClient | None = None,
        retries: int = 0,
        max_retry_wait: float = 60.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._url = _events_url(base_url)
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
        return await _post(
            self._client,
            self._url,
            self.token,
            _body(type, data, users, channel),
            self.retries if retries is None else retries,
            self.max_retry_wait,
            idempotency_key,
        )

    async def presence(self, channel: str) -> dict[str, Any]:
        """Who is in ``channel`` across the fleet; see :func:`presence`."""
        return await _get_presence(self._client, self.base_url, self.token, channel)

    async def aclose(self) -> None:
        """Closes the HTTP client if this publisher opened it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
