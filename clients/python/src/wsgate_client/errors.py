"""Exceptions raised by the client."""

from __future__ import annotations


class WsgateError(Exception):
    """Base class of every error this package raises."""


class ApiError(WsgateError):
    """An HTTP API call of the gateway (``/api/...``) did not answer as expected.

    ``status`` is the HTTP status, ``message`` the gateway's ``{"error": ...}`` text (or the raw
    body when it was not JSON), ``retry_after`` the ``Retry-After`` header in seconds, if any.
    ``item`` is the index of the batch item a 400 names (``events[3].type: ...``), else ``None``.
    Raised as is by :func:`~wsgate_client.presence` and the :class:`~wsgate_client.Admin` calls
    (403 when the token lacks the ``admin`` scope).
    """

    what = "API call"

    def __init__(self, status: int, message: str, retry_after: float | None = None, item: int | None = None) -> None:
        super().__init__(f"{self.what} failed: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.item = item


class PublishError(ApiError):
    """``POST /api/events`` or ``POST /api/events/batch`` did not answer 202 (see
    :class:`ApiError` for the attributes)."""

    what = "publish"


class ListenError(WsgateError):
    """The WebSocket side failed in a way that reconnecting will not fix."""


class UpgradeRefused(ListenError):
    """The gateway refused the WebSocket upgrade with an HTTP status (401, 403, 404, 426...).

    401 means the token is missing, malformed, badly signed or expired; 403 that the
    ``Origin`` is not allowed. ``message`` is the gateway's ``{"error": ...}`` text.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"WebSocket upgrade refused: HTTP {status}: {message}")
        self.status = status
        self.message = message


class ConnectionClosed(ListenError):
    """The connection closed and the listener will not reconnect.

    Raised for closes that reconnecting cannot fix (1008 without ``get_token``, 1009), and for
    any abnormal close when ``reconnect=False``. ``code`` is the WebSocket close code (1006
    when the connection dropped without a close frame).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class Revoked(ConnectionClosed):
    """Close 4001 (``revoked``): an operator revoked this user's connections
    (``POST /api/users/{sub}/disconnect``). The listener stops and does not reconnect: the same
    token must not be used again. To let the user back in, open a new listener with a new
    token."""
