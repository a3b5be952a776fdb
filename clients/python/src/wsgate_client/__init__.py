"""asyncio client for the wsgate WebSocket fan-out gateway.

- :func:`publish` / :class:`Publisher`: ``POST /api/events`` (backend side), to everyone,
  some users or a channel; :func:`presence`: who is in a channel.
- :func:`listen` / :class:`Listener`: ``GET /ws/tasks`` as an async iterator of events that
  reconnects with backoff, refreshes expired tokens and rejoins its channels (browser side,
  from Python).
"""

from .errors import ApiError, ConnectionClosed, ListenError, PublishError, UpgradeRefused, WsgateError
from .listen import Listener, listen, ws_url
from .publish import Publisher, presence, publish

__all__ = [
    "ApiError",
    "ConnectionClosed",
    "ListenError",
    "Listener",
    "PublishError",
    "Publisher",
    "UpgradeRefused",
    "WsgateError",
    "listen",
    "presence",
    "publish",
    "ws_url",
]
__version__ = "0.1.0"
