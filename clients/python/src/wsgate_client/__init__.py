"""asyncio client for the wsgate WebSocket fan-out gateway.

- :func:`publish` / :class:`Publisher`: ``POST /api/events`` (backend side).
- :func:`listen` / :class:`Listener`: ``GET /ws/tasks`` as an async iterator of events that
  reconnects with backoff and refreshes expired tokens (browser side, from Python).
"""

from .errors import ConnectionClosed, ListenError, PublishError, UpgradeRefused, WsgateError
from .listen import Listener, listen, ws_url
from .publish import Publisher, publish

__all__ = [
    "ConnectionClosed",
    "ListenError",
    "Listener",
    "PublishError",
    "Publisher",
    "UpgradeRefused",
    "WsgateError",
    "listen",
    "publish",
    "ws_url",
]
__version__ = "0.1.0"
