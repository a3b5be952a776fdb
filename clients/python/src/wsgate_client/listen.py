"""The browser side: ``GET /ws/tasks``, as an async iterator of events that reconnects."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Union
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as _WsClosed
from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

from .errors import ConnectionClosed, Revoked, UpgradeRefused

__all__ = ["Listener", "listen", "ws_url"]

log = logging.getLogger("wsgate_client")

TokenSource = Callable[[], Union[str, Awaitable[str]]]
ConnectedCallback = Callable[[dict], Union[None, Awaitable[None]]]
ResyncCallback = Callable[[dict], Union[None, Awaitable[None]]]

#: A connection that stayed up this long resets the backoff to its first step.
STABLE_AFTER = 10.0

# The gateway's channel names (so never a comma, the separator of ``channels=``).
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9:_\-.@]{1,200}")

# Close codes (RFC 6455 and the gateway's contract).
NORMAL = 1000
GOING_AWAY = 1001  # the instance shuts down
ABNORMAL = 1006  # no close frame: the network went away
POLICY = 1008  # the token expired (or the client broke protocol)
TOO_BIG = 1009  # we sent an oversized frame: reconnecting would not help
SERVICE_RESTART = 1012  # "reconnect": reconnect at once, the token stays good
TRY_AGAIN_LATER = 1013  # we read too slowly
REVOKED = 4001  # "revoked": an operator disconnected this user; never reconnect with this token


def ws_url(base_url: str, path: str = "/ws/tasks") -> str:
    """``http://host:8000[/prefix]`` → ``ws://host:8000[/prefix]/ws/tasks`` (https → wss)."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"base_url must be an http(s):// or ws(s):// URL, not {base_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _is_event(msg: Any) -> bool:
    # Events carry an id; control frames (connected, pong, error, ...) do not.
    return isinstance(msg, dict) and "id" in msg and "type" in msg


class Listener:
    """Events for one user, across reconnects.

    ::

        async with Listener(base_url, token, get_token=refresh) as events:
            async for event in events:
                print(event["id"], event["type"], event["data"])

    Yields each event frame (``{"id", "type", "data", "ts"}``) as a dict; ``connected`` and
    ``pong`` frames are not yielded: the last ``connected`` frame is in :attr:`connected`, and
    ``on_connected`` (sync or async) is called with each one.

    Resume: the id of the last event yielded is kept in :attr:`last_event_id` (``since`` until
    one is) and every connection after the first (the first too when ``since`` is given) asks
    for what it missed with ``since=<that id>``. When the gateway answers
    ``"recovered": true`` the missed events are yielded first, in order, then the live ones.
    Otherwise ``on_resync`` (sync or async) is called, after ``on_connected``, with
    ``{"reason", "since", "frame"}``: events may have been missed, reload your state. ``reason``
    is ``"not_recovered"`` (the gateway answered ``"recovered": false``: ``since`` unknown,
    malformed or older than its history), ``"unsupported"`` (no ``recovered`` field: a gateway
    without history) or ``"no_position"`` (a reconnection before any event was received).

    ``on_resync`` is also called, on an open connection, when the gateway sends
    ``{"type": "resync", "reason": ...}``: it found that Redis lost events this connection may
    not have received (Redis restarted empty, failed over, history trimmed). Then ``reason`` is
    the gateway's, as it came (e.g. ``"redis_data_lost"``, ``"history_trimmed"``,
    ``"redis_unavailable"``; an opaque string, ``"unknown"`` when the frame has none),
    ``since`` is ``None`` and ``frame`` is the ``resync`` frame (``frame["type"] == "resync"``).
    Reload your state; the connection stays open and live events follow. The frame is not
    yielded and does not change :attr:`last_event_id`.

    Reconnects (when ``reconnect`` is true) after close 1001 (shutdown), 1013 (too slow), a
    lost network or a refused connection, and after a 503 upgrade (draining), waiting
    ``uniform(0, min(cap, base * 2**n))`` seconds (exponential backoff with full jitter;
    ``backoff=(base, cap)``; ``n`` counts failures since the last connection that stayed up
    :data:`STABLE_AFTER` seconds). After 1008 (token expired) it asks ``get_token()`` (sync or
    async) for a new token and reconnects at once; without ``get_token`` it raises
    :class:`~wsgate_client.ConnectionClosed`. After 1012 (``reconnect``: an operator asked
    the user's clients to reconnect) it reconnects at once with the same token (and with
    backoff should that repeat within :data:`STABLE_AFTER` seconds). After 4001 (``revoked``:
    an operator revoked the user's connections) it stops and raises
    :class:`~wsgate_client.Revoked`, whatever ``reconnect`` and ``get_token`` say: the
    same token must not be used again. A 401 upgrade asks ``get_token()`` once, and
    raises :class:`~wsgate_client.UpgradeRefused` if that token is refused too (or if there is
    no ``get_token``); a 403 or another 4xx raises at once. An exception raised by
    ``get_token`` comes out of the iteration.

    With ``reconnect=False`` the iteration ends after a 1000/1001/1012 close and raises
    :class:`~wsgate_client.ConnectionClosed` (or the network error) otherwise.

    Channels: ``channels=["project:42", ...]`` joins them at connect (``channels=`` in the URL)
    on every connection, so a reconnection rejoins them and a resume replays their missed
    events too. Channel events are yielded like the others and carry ``"channel"``. The
    gateway answers each channel with a ``subscribed`` frame (kept in :attr:`subscribed`) or a
    refusal (``forbidden``, ``invalid_channel``, ``too_many_channels``): a refused channel is
    logged, kept in :attr:`refused` and not asked for again.

    The token goes in an ``Authorization: Bearer`` header, not in the URL. ``headers`` adds
    more (e.g. ``Origin``).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        reconnect: bool = True,
        get_token: TokenSource | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        on_connected: ConnectedCallback | None = None,
        since: str | None = None,
        on_resync: ResyncCallback | None = None,
        channels: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        max_size: int | None = 16 * 1024 * 1024,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        base, cap = backoff
        if base <= 0 or cap < base:
            raise ValueError("backoff must be (base, cap) with 0 < base <= cap")
        self.url = ws_url(base_url)
        self.token = token
        self.reconnect = reconnect
        self.get_token = get_token
        self.backoff = (float(base), float(cap))
        self.on_connected = on_connected
        self.on_resync = on_resync
        self.headers = dict(headers or {})
        if since is not None and not isinstance(since, str):
            raise TypeError(f"since must be an event id (a str), not {since!r}")
        #: The id of the last event yielded (``since`` until one is): the next connection's
        #: ``since=``. Control frames never change it.
        self.last_event_id: str | None = since or None
        if isinstance(channels, str):
            raise TypeError("channels must be a list of channel names, not a str")
        #: The channels joined at connect on every connection (refused ones are removed).
        self.channels: list[str] = []
        for name in channels:
            if not isinstance(name, str) or not _CHANNEL_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a channel name (1 to 200 of A-Z a-z 0-9 : _ - . @)")
            if name not in self.channels:
                self.channels.append(name)
        #: The channels the gateway confirmed (``subscribed``) on the current connection.
        self.subscribed: set[str] = set()
        #: Refused channels: name → the gateway's ``error`` frame (``"error"``: the reason).
        self.refused: dict[str, dict] = {}
        #: The ``recovered`` field of the last ``connected`` frame: ``True``/``False`` on a
        #: connection opened with ``since=``, ``None`` otherwise.
        self.recovered: bool | None = None
        #: The last ``connected`` frame, ``None`` before the first one.
        self.connected: dict | None = None
        #: How many connections were opened (1 after the first, +1 per reconnect).
        self.connections = 0
        #: ``(code, reason)`` of the last close, ``None`` before any.
        self.last_close: tuple[int, str] | None = None
        self._connect_kwargs: dict[str, Any] = {
            "open_timeout": open_timeout,
            "max_size": max_size,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": 5.0,
        }
        self._ws: ClientConnection | None = None
        self._opened_at = 0.0
        self._attempt = 0  # failures since the last stable connection
        self._delay = 0.0  # wait before the next connection attempt
        self._token_fresh = False  # get_token() was called and that token not yet accepted
        self._since_sent: str | None = None  # the since= of the current connection
        self._closed = asyncio.Event()

    # --- async iterator / context manager ---------------------------------------------

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> dict:
        while True:
            if self._closed.is_set():
                raise StopAsyncIteration
            if self._ws is None:
                await self._connect()
                continue
            try:
                raw = await self._ws.recv()
            except _WsClosed as e:
                await self._handle_close(e)
                continue
            try:
                msg = json.loads(raw)
            except (TypeError, ValueError):
                log.warning("wsgate: ignoring a frame that is not JSON: %.200r", raw)
                continue
            if _is_event(msg):
                if isinstance(msg["id"], str):
                    self.last_event_id = msg["id"]
                return msg
            await self._control(msg)

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection (code 1000) and ends the iteration."""
        self._closed.set()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def ping(self) -> None:
        """Sends the application-level ``{"type": "ping"}`` (answered by a ``pong`` frame that
        is not yielded). WebSocket pings are sent anyway every ``ping_interval``."""
        if self._ws is not None:
            await self._ws.send('{"type":"ping"}')

    # --- internals --------------------------------------------------------------------

    def _next_backoff(self) -> float:
        base, cap = self.backoff
        delay = random.uniform(0.0, min(cap, base * (2 ** min(self._attempt, 32))))
        self._attempt += 1
        return delay

    async def _sleep(self, delay: float) -> None:
        """Sleeps ``delay`` seconds, or until :meth:`close`."""
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(self._closed.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _refresh_token(self) -> None:
        if self.get_token is None:
            raise RuntimeError("no get_token")
        token = await _maybe_await(self.get_token())
        if not isinstance(token, str) or not token:
            raise TypeError(f"get_token() must return a non-empty str, not {token!r}")
        self.token = token
        self._token_fresh = True

    async def _connect(self) -> None:
        """Opens the next connection, waiting out the backoff and retrying what is worth it.
        Returns with ``self._ws`` set, or with the listener closed; raises when giving up."""
        while not self._closed.is_set():
            await self._sleep(self._delay)
            self._delay = 0.0
            if self._closed.is_set():
                return
            headers = {**self.headers, "Authorization": f"Bearer {self.token}"}
            since = self.last_event_id
            try:
                ws = await connect(self._url(since), additional_headers=headers, **self._connect_kwargs)
            except InvalidStatus as e:
                status = e.response.status_code
                message = _body_error(e.response.body)
                if status == 401 and self.get_token is not None and not self._token_fresh:
                    log.info("wsgate: upgrade refused (401: %s); asking get_token()", message)
                    await self._refresh_token()
                    continue
                if status in (408, 429) or status >= 500:
                    if not self.reconnect:
                        raise UpgradeRefused(status, message) from None
                    self._delay = self._next_backoff()
                    log.info("wsgate: upgrade refused (%s: %s); retrying in %.2fs", status, message, self._delay)
                    continue
                raise UpgradeRefused(status, message) from None
            except InvalidURI:
                raise
            except (OSError, asyncio.TimeoutError, TimeoutError, WebSocketException) as e:
                if not self.reconnect:
                    raise
                self._delay = self._next_backoff()
                log.info("wsgate: cannot connect (%s); retrying in %.2fs", str(e) or type(e).__name__, self._delay)
                continue
            if self._closed.is_set():
                await ws.close()
                return
            self._ws = ws
            self._opened_at = time.monotonic()
            self._token_fresh = False
            self._since_sent = since
            self.subscribed = set()
            self.connections += 1
            return

    def _url(self, since: str | None) -> str:
        """The URL of one attempt: with ``since=`` when there is a position to resume from, and
        ``channels=`` with the channels to (re)join."""
        params = []
        if since is not None:
            params.append(f"since={quote(since, safe='')}")
        if self.channels:
            params.append(f"channels={quote(','.join(self.channels), safe=',:@')}")
        if not params:
            return self.url
        sep = "&" if urlsplit(self.url).query else "?"
        return self.url + sep + "&".join(params)

    async def _handle_close(self, e: _WsClosed) -> None:
        """Decides what a close means: reconnect (setting the delay), stop, or raise."""
        self._ws = None
        if self._closed.is_set():
            return
        code = e.rcvd.code if e.rcvd is not None else ABNORMAL
        reason = e.rcvd.reason if e.rcvd is not None else ""
        self.last_close = (code, reason)
        if time.monotonic() - self._opened_at >= STABLE_AFTER:
            self._attempt = 0
        if code == POLICY:
            if self.get_token is None:
                raise ConnectionClosed(code, reason) from None
            log.info("wsgate: closed 1008 (%s); asking get_token()", reason)
            self._delay = 0.0 if self._attempt == 0 else self._next_backoff()
            if self._delay == 0.0:
                self._attempt += 1
            await self._refresh_token()
            return
        if code == REVOKED:
            log.warning("wsgate: closed 4001 (%s): this user's connections were revoked; not reconnecting", reason)
            self._closed.set()
            raise Revoked(code, reason) from None
        if code == TOO_BIG:
            raise ConnectionClosed(code, reason) from None
        if code == SERVICE_RESTART and self.reconnect:
            # Asked to reconnect: at once (the token is still good), unless it keeps happening.
            self._delay = 0.0 if self._attempt == 0 else self._next_backoff()
            if self._delay == 0.0:
                self._attempt += 1
            log.info("wsgate: closed 1012 (%s); reconnecting in %.2fs", reason, self._delay)
            return
        if not self.reconnect:
            if code in (NORMAL, GOING_AWAY, SERVICE_RESTART):
                self._closed.set()
                return
            raise ConnectionClosed(code, reason) from None
        self._delay = self._next_backoff()
        log.info("wsgate: closed %s (%s); reconnecting in %.2fs", code, reason, self._delay)

    async def _control(self, msg: Any) -> None:
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "connected":
            self.connected = msg
            self.recovered = msg.get("recovered")
            if self.on_connected is not None:
                await _maybe_await(self.on_connected(msg))
            await self._after_resume(msg)
        elif kind == "pong":
            pass
        elif kind == "resync":
            await self._resync_frame(msg)
        elif kind == "subscribed" and isinstance(msg.get("channel"), str):
            self.subscribed.add(msg["channel"])
        elif kind == "error" and isinstance(msg.get("channel"), str):
            name = msg["channel"]
            log.warning("wsgate: channel %r refused: %s (%s)", name, msg.get("error"), msg.get("message", ""))
            self.refused[name] = msg
            if name in self.channels:
                self.channels.remove(name)  # not asked for again on reconnection
        elif kind == "error":
            log.warning("wsgate: the gateway reported an error: %s", msg)
        else:
            log.debug("wsgate: ignoring frame %r", msg)

    async def _after_resume(self, hello: dict) -> None:
        """Calls ``on_resync`` when this connection may have missed events."""
        since = self._since_sent
        # Unless missed events follow, the stream position the gateway starts this connection
        # at is where the next reconnection resumes from (even if no event arrives before it).
        if hello.get("recovered") is not True and isinstance(hello.get("last_id"), str):
            self.last_event_id = hello["last_id"]
        if since is not None:
            if hello.get("recovered") is True:
                return
            reason = "not_recovered" if hello.get("recovered") is False else "unsupported"
        elif self.connections > 1:
            reason = "no_position"  # a reconnection with nothing to resume from
        else:
            return  # a first connection without since: nothing was missed yet
        log.info("wsgate: cannot resume after %s (%s): the application must resync", since, reason)
        if self.on_resync is not None:
            await _maybe_await(self.on_resync({"reason": reason, "since": since, "frame": hello}))

    async def _resync_frame(self, msg: dict) -> None:
        """The gateway's ``resync`` frame: Redis lost events this open connection may not have
        received. Not an event (no id): not yielded, ``last_event_id`` unchanged."""
        reason = msg.get("reason")
        if not isinstance(reason, str) or not reason:
            reason = "unknown"
        log.warning("wsgate: Redis lost events this connection may not have received (%s): the application must resync", reason)
        if self.on_resync is not None:
            await _maybe_await(self.on_resync({"reason": reason, "since": None, "frame": msg}))


def _body_error(body: bytes | None) -> str:
    if not body:
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return parsed["error"]
    return body.decode("utf-8", "replace").strip()


async def listen(
    base_url: str,
    token: str,
    *,
    reconnect: bool = True,
    get_token: TokenSource | None = None,
    backoff: tuple[float, float] = (0.5, 30.0),
    on_connected: ConnectedCallback | None = None,
    since: str | None = None,
    on_resync: ResyncCallback | None = None,
    channels: Iterable[str] = (),
    **options: Any,
) -> AsyncIterator[dict]:
    """Yields the events sent to ``token``'s user, reconnecting as :class:`Listener` does.

    ::

        async for event in listen("http://wsgate:8000", token, get_token=refresh):
            ...

    ``on_connected`` gets each ``connected`` frame and ``on_resync`` each connection that could
    not resume and each ``resync`` frame of the gateway, ``channels`` are joined at every connection (see :class:`Listener`); use :class:`Listener` directly to read the last
    ``connected`` frame and event id as attributes. ``options`` are :class:`Listener`'s other
    keyword arguments.
    """
    listener = Listener(
        base_url,
        token,
        reconnect=reconnect,
        get_token=get_token,
        backoff=backoff,
        on_connected=on_connected,
        since=since,
        on_resync=on_resync,
        channels=channels,
        **options,
    )
    try:
        async for event in listener:
            yield event
    finally:
        await listener.close()
