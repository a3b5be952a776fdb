"""Client for the wsgate WebSocket fan-out gateway, asyncio and blocking.

- :func:`publish` / :func:`publish_batch` / :class:`Publisher`: ``POST /api/events`` and
  ``POST /api/events/batch`` (backend side), to everyone, some users or a channel;
  :func:`presence`: who is in a channel.
- :class:`Admin`: the operator's API (disconnect a user, list channels, read history).
- :mod:`wsgate_client.sync`: the same, blocking (:class:`SyncPublisher`, :class:`SyncAdmin`),
  for Django/Flask-style backends.
- :func:`listen` / :class:`Listener`: ``GET /ws/tasks`` as an async iterator of events that
  reconnects with backoff, refreshes expired tokens and rejoins its channels (browser side,
  from Python).
"""

from ._core import History
from .admin import Admin
from .errors import ApiError, ConnectionClosed, ListenError, PublishError, Revoked, UpgradeRefused, WsgateError
from .listen import Listener, listen, ws_url
from .publish import Publisher, presence, publish, publish_batch
from .sync import SyncAdmin, SyncPublisher

__all__ = [
    "Admin",
    "ApiError",
    "ConnectionClosed",
    "History",
    "ListenError",
    "Listener",
    "PublishError",
    "Publisher",
    "Revoked",
    "SyncAdmin",
    "SyncPublisher",
    "UpgradeRefused",
    "WsgateError",
    "listen",
    "presence",
    "publish",
    "publish_batch",
    "ws_url",
]
__version__ = "0.2.0"
