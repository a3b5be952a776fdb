"""The operator's side, asyncio: ``POST /api/users/{sub}/disconnect``, ``GET /api/channels``,
``GET /api/history`` (and presence). :class:`wsgate_client.sync.SyncAdmin` has the same calls
blocking."""

from __future__ import annotations

from typing import Any

import httpx

from ._core import DEFAULT_TIMEOUT, AdminBase, History, run_async

__all__ = ["Admin", "History"]


class Admin(AdminBase):
    """The gateway's admin API through one ``httpx.AsyncClient``.

    ::

        async with Admin("http://wsgate-admin:9000", admin_token) as admin:
            n = await admin.disconnect("alice")                  # close 4001: revoked
            await admin.disconnect("bob", reconnect=True)        # close 1012: reconnect
            busy = await admin.channels(prefix="project:")       # [{"channel", "subscribers"}]
            events, last_id = await admin.history(channel="project:42", limit=50)

    ``base_url`` is the admin listener when the gateway has one (``ADMIN_LISTEN_ADDR``: the
    admin endpoints are then served there only), else its one listener. ``token`` is a service
    token with the ``admin`` scope. Any answer but 200 raises :class:`~wsgate_client.ApiError`
    (400 bad parameter, the message names it; 401 bad token; 403 no ``admin`` scope; 404 on a
    public listener when the admin one is separate). 429 and 503 are retried as by
    :class:`~wsgate_client.Publisher` when ``retries`` > 0.
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
        super().__init__(base_url, token, retries=retries, max_retry_wait=max_retry_wait)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    async def disconnect(self, user: str, reconnect: bool = False) -> int:
        """Closes every connection of ``user`` on every instance (within 2 s) and returns how
        many were closed, as far as the instances answered in time. The close code is 4001
        (``revoked``: the client must not reconnect with the same token) or, with
        ``reconnect=True``, 1012 (reconnect; the token stays good). Other users are untouched."""
        return await run_async(self._client, self._disconnect_flow(user, reconnect))

    async def channels(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """The channels with at least one subscriber across the fleet, as
        ``[{"channel": "project:42", "subscribers": 3}, ...]``; only those whose name starts
        with ``prefix`` when given."""
        return await run_async(self._client, self._channels_flow(prefix))

    async def history(self, channel: str | None = None, since: str | None = None, limit: int = 100) -> History:
        """Events kept in the gateway's history, as clients received them, oldest first:
        without ``since`` the newest ``limit``, with it the first ``limit`` after that id
        (``limit`` 1 to 1,000). Without ``channel``, the events published without a channel.
        Returns a :class:`History` (``events``, ``last_id``: the newest id of the stream, or
        ``None``), which unpacks as a pair. A malformed ``since`` or ``limit``: 400."""
        return await run_async(self._client, self._history_flow(channel, since, limit))

    async def presence(self, channel: str) -> dict[str, Any]:
        """Who is in ``channel`` across the fleet; see :func:`wsgate_client.presence`."""
        return await run_async(self._client, self._presence_flow(channel))

    async def aclose(self) -> None:
        """Closes the HTTP client if this object opened it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
