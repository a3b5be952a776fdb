"""The HTTP API without a transport: what to send, how to read the answer, when to retry.

Every call of the gateway's HTTP API is written once here, as a *flow*: a generator that yields
:class:`Call` (send this request and send me its ``httpx.Response``) or :class:`Wait` (sleep
this long, then send me ``None``) and returns the call's result (or raises its
:class:`~wsgate_client.ApiError`). :func:`run_async` drives a flow with an
``httpx.AsyncClient`` and ``asyncio.sleep``, :func:`run_sync` with an ``httpx.Client`` and
``time.sleep``; the async and the sync clients are those two drivers over the same flows.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, Union
from urllib.parse import quote, urlencode

import httpx

from .errors import ApiError, PublishError

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
# Statuses that mean "nothing (more) was published, come back after Retry-After": 429 (rate
# limited) and 503 (the gateway could not keep the event). Both are safe to retry (a batch
# only with an Idempotency-Key, see batch_flow).
_RETRYABLE = (429, 503)
# The largest batch the gateway takes (more: 400).
MAX_BATCH = 1000
_BATCH_ITEM = re.compile(r"events\[(\d+)\]")


@dataclass(frozen=True)
class Call:
    """One HTTP request. ``json`` is the body (``None``: no body)."""

    method: str
    url: str
    headers: dict[str, str]
    json: Any = None


@dataclass(frozen=True)
class Wait:
    """Sleep ``seconds`` before the next :class:`Call`."""

    seconds: float


Flow = Generator[Union[Call, Wait], Union[httpx.Response, None], T]


@dataclass(frozen=True)
class History:
    """An answer of ``GET /api/history``: ``events`` (frames as clients receive them, oldest
    first) and ``last_id`` (the id of the newest event in the stream, ``None`` when it is
    empty). Unpacks as a pair: ``events, last_id = admin.history(...)``."""

    events: list[dict] = field(default_factory=list)
    last_id: str | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.events, self.last_id))


# --- drivers ------------------------------------------------------------------------------


def _send_sync(client: httpx.Client, call: Call) -> httpx.Response:
    # json= sets Content-Type: application/json.
    if call.json is None:
        return client.request(call.method, call.url, headers=call.headers)
    return client.request(call.method, call.url, headers=call.headers, json=call.json)


async def _send_async(client: httpx.AsyncClient, call: Call) -> httpx.Response:
    if call.json is None:
        return await client.request(call.method, call.url, headers=call.headers)
    return await client.request(call.method, call.url, headers=call.headers, json=call.json)


def run_sync(client: httpx.Client, flow: Flow[T]) -> T:
    """Runs ``flow`` with a blocking ``httpx.Client``."""
    reply: httpx.Response | None = None
    try:
        step = next(flow)
        while True:
            if isinstance(step, Wait):
                time.sleep(step.seconds)
                reply = None
            else:
                reply = _send_sync(client, step)
            step = flow.send(reply)
    except StopIteration as done:
        return done.value


async def run_async(client: httpx.AsyncClient, flow: Flow[T]) -> T:
    """Runs ``flow`` with an ``httpx.AsyncClient``."""
    reply: httpx.Response | None = None
    try:
        step = next(flow)
        while True:
            if isinstance(step, Wait):
                await asyncio.sleep(step.seconds)
                reply = None
            else:
                reply = await _send_async(client, step)
            step = flow.send(reply)
    except StopIteration as done:
        return done.value


# --- answers ------------------------------------------------------------------------------


def parse_retry_after(value: str | None) -> float | None:
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


def error_message(response: httpx.Response) -> str:
    """The gateway's ``{"error": ...}`` text, else the raw body, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip()
    return text or response.reason_phrase or "no error message"


def _json_object(response: httpx.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _request(
    call: Call,
    expect: int,
    parse: Callable[[httpx.Response], T],
    *,
    error: type[ApiError] = ApiError,
    retries: int = 0,
    max_retry_wait: float = 60.0,
) -> Flow[T]:
    """Sends ``call`` until it is answered ``expect`` (then returns ``parse(response)``) or
    with an error not worth retrying (then raises ``error``). A 429 or 503 is retried up to
    ``retries`` times after ``Retry-After`` seconds (1 s for a 503 without it), unless that is
    more than ``max_retry_wait``; a 429 without ``Retry-After`` (a batch larger than the
    gateway's burst: waiting will not help) is not retried."""
    attempt = 0
    while True:
        response = yield call
        assert response is not None
        if response.status_code == expect:
            return parse(response)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        message = error_message(response)
        exc = error(response.status_code, message, retry_after)
        m = _BATCH_ITEM.match(message)
        if m and response.status_code == 400:
            exc.item = int(m.group(1))
        if response.status_code not in _RETRYABLE or attempt >= retries:
            raise exc
        if retry_after is None:
            if response.status_code == 429:
                raise exc
            retry_after = 1.0
        if retry_after > max_retry_wait:
            raise exc
        attempt += 1
        yield Wait(retry_after)


def _headers(token: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if idempotency_key is not None:
        # Sent unchanged with every retry: the gateway answers a repeat with the first id(s).
        headers["Idempotency-Key"] = idempotency_key
    return headers


def _root(base_url: str) -> str:
    return base_url.rstrip("/")


# --- publishing ---------------------------------------------------------------------------


def event_body(type: str, data: Any = None, users: Sequence[str] | None = None, channel: str | None = None) -> dict[str, Any]:
    """The body of ``POST /api/events``."""
    body: dict[str, Any] = {"type": type, "data": data}
    if users is not None:
        if isinstance(users, str):
            raise TypeError("users must be a list of user ids, not a string")
        body["users"] = list(users)
    if channel is not None:
        # With users too, the gateway answers 400: an event goes to users or to a channel.
        body["channel"] = channel
    return body


def _batch_item(i: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise TypeError(f"events[{i}] must be a mapping like {{\"type\": ..., \"data\": ...}}, not {item!r}")
    out = dict(item)
    if isinstance(out.get("users"), str):
        raise TypeError(f"events[{i}].users must be a list of user ids, not a string")
    if isinstance(out.get("users"), (tuple, set, frozenset)):
        out["users"] = list(out["users"])
    return out


def _event_id(response: httpx.Response) -> str:
    body = _json_object(response)
    event_id = body.get("id") if body else None
    if not isinstance(event_id, str):
        raise PublishError(response.status_code, f"gateway answered 202 without an event id: {response.text!r}")
    return event_id


def publish_flow(
    base_url: str,
    token: str,
    body: dict[str, Any],
    *,
    retries: int = 0,
    max_retry_wait: float = 60.0,
    idempotency_key: str | None = None,
) -> Flow[str]:
    """``POST /api/events`` → the event id."""
    call = Call("POST", _root(base_url) + "/api/events", _headers(token, idempotency_key), body)
    return _request(call, 202, _event_id, error=PublishError, retries=retries, max_retry_wait=max_retry_wait)


def batch_flow(
    base_url: str,
    token: str,
    events: Sequence[Mapping[str, Any]],
    *,
    retries: int = 0,
    max_retry_wait: float = 60.0,
    idempotency_key: str | None = None,
) -> Flow[list[str]]:
    """``POST /api/events/batch`` → the ids, in item order.

    A 503 may come after the gateway accepted the first items: a retry is safe only with an
    ``Idempotency-Key`` (the gateway then publishes only the items still missing). So when
    retries are allowed and the caller gave no key, a random one is sent, the same on every
    attempt of this call."""
    if isinstance(events, (str, bytes, Mapping)):
        raise TypeError("events must be a list of events (mappings), not a single value")
    items = [_batch_item(i, item) for i, item in enumerate(events)]
    if idempotency_key is None and retries > 0:
        idempotency_key = f"batch-{uuid.uuid4()}"
    n = len(items)

    def ids(response: httpx.Response) -> list[str]:
        body = _json_object(response)
        got = body.get("ids") if body else None
        if not isinstance(got, list) or len(got) != n or not all(isinstance(i, str) for i in got):
            raise PublishError(response.status_code, f"gateway answered 202 without {n} event ids: {response.text!r}")
        return got

    call = Call("POST", _root(base_url) + "/api/events/batch", _headers(token, idempotency_key), {"events": items})
    return _request(call, 202, ids, error=PublishError, retries=retries, max_retry_wait=max_retry_wait)


# --- reading and operating ----------------------------------------------------------------


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty str, not {value!r}")
    return quote(value, safe="")


def presence_flow(base_url: str, token: str, channel: str) -> Flow[dict[str, Any]]:
    """``GET /api/channels/{channel}/presence`` → ``{"channel", "users": [...]}``."""
    url = f"{_root(base_url)}/api/channels/{_segment(channel, 'channel')}/presence"

    def parse(response: httpx.Response) -> dict[str, Any]:
        body = _json_object(response)
        if body is None or not isinstance(body.get("users"), list):
            raise ApiError(200, f"presence answer is not {{\"channel\", \"users\"}}: {response.text!r}")
        return body

    return _request(Call("GET", url, _headers(token)), 200, parse)


def disconnect_flow(
    base_url: str, token: str, user: str, reconnect: bool = False, *, retries: int = 0, max_retry_wait: float = 60.0
) -> Flow[int]:
    """``POST /api/users/{user}/disconnect`` → how many connections were closed."""
    if not isinstance(reconnect, bool):
        raise TypeError(f"reconnect must be a bool, not {reconnect!r}")
    url = f"{_root(base_url)}/api/users/{_segment(user, 'user')}/disconnect"

    def parse(response: httpx.Response) -> int:
        body = _json_object(response)
        n = body.get("disconnected") if body else None
        if not isinstance(n, int) or isinstance(n, bool):
            raise ApiError(200, f"disconnect answer is not {{\"user\", \"disconnected\"}}: {response.text!r}")
        return n

    call = Call("POST", url, _headers(token), {"reconnect": reconnect})
    return _request(call, 200, parse, retries=retries, max_retry_wait=max_retry_wait)


def _query(params: dict[str, Any]) -> str:
    q = urlencode({k: v for k, v in params.items() if v is not None})
    return "?" + q if q else ""


def channels_flow(
    base_url: str, token: str, prefix: str | None = None, *, retries: int = 0, max_retry_wait: float = 60.0
) -> Flow[list[dict[str, Any]]]:
    """``GET /api/channels[?prefix=]`` → ``[{"channel", "subscribers"}, ...]``."""
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {prefix!r}")
    url = f"{_root(base_url)}/api/channels{_query({'prefix': prefix})}"

    def parse(response: httpx.Response) -> list[dict[str, Any]]:
        body = _json_object(response)
        got = body.get("channels") if body else None
        if not isinstance(got, list):
            raise ApiError(200, f"channels answer is not {{\"channels\": [...]}}: {response.text!r}")
        return got

    return _request(Call("GET", url, _headers(token)), 200, parse, retries=retries, max_retry_wait=max_retry_wait)


def history_flow(
    base_url: str,
    token: str,
    channel: str | None = None,
    since: str | None = None,
    limit: int = 100,
    *,
    retries: int = 0,
    max_retry_wait: float = 60.0,
) -> Flow[History]:
    """``GET /api/history?channel=&since=&limit=`` → :class:`History`."""
    for name, value in (("channel", channel), ("since", since)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {value!r}")
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise TypeError(f"limit must be an int, not {limit!r}")
    url = f"{_root(base_url)}/api/history{_query({'channel': channel, 'since': since, 'limit': limit})}"

    def parse(response: httpx.Response) -> History:
        body = _json_object(response)
        events = body.get("events") if body else None
        last_id = body.get("last_id") if body else None
        if not isinstance(events, list) or not (last_id is None or isinstance(last_id, str)):
            raise ApiError(200, f"history answer is not {{\"events\", \"last_id\"}}: {response.text!r}")
        return History(events, last_id)

    return _request(Call("GET", url, _headers(token)), 200, parse, retries=retries, max_retry_wait=max_retry_wait)


# --- what the sync and the async clients share --------------------------------------------


class PublisherBase:
    """The configuration of a publisher and the flows of its calls; :class:`Publisher` runs
    them with an ``httpx.AsyncClient``, :class:`SyncPublisher` with an ``httpx.Client``."""

    def __init__(self, base_url: str, token: str, *, admin_url: str | None, retries: int, max_retry_wait: float) -> None:
        self.base_url = base_url
        #: Where ``presence`` goes: the admin listener when the gateway has one
        #: (``ADMIN_LISTEN_ADDR``), else ``base_url``.
        self.admin_url = admin_url or base_url
        self.token = token
        self.retries = retries
        self.max_retry_wait = max_retry_wait

    def _publish_flow(
        self,
        type: str,
        data: Any,
        users: Sequence[str] | None,
        retries: int | None,
        idempotency_key: str | None,
        channel: str | None,
    ) -> Flow[str]:
        return publish_flow(
            self.base_url,
            self.token,
            event_body(type, data, users, channel),
            retries=self.retries if retries is None else retries,
            max_retry_wait=self.max_retry_wait,
            idempotency_key=idempotency_key,
        )

    def _batch_flow(
        self, events: Sequence[Mapping[str, Any]], retries: int | None, idempotency_key: str | None
    ) -> Flow[list[str]]:
        return batch_flow(
            self.base_url,
            self.token,
            events,
            retries=self.retries if retries is None else retries,
            max_retry_wait=self.max_retry_wait,
            idempotency_key=idempotency_key,
        )

    def _presence_flow(self, channel: str) -> Flow[dict[str, Any]]:
        return presence_flow(self.admin_url, self.token, channel)


class AdminBase:
    """The configuration of an admin client and the flows of its calls (see
    :class:`PublisherBase`)."""

    def __init__(self, base_url: str, token: str, *, retries: int, max_retry_wait: float) -> None:
        #: The admin listener (``ADMIN_LISTEN_ADDR``) or, when the gateway has none, its one
        #: listener.
        self.base_url = base_url
        self.token = token
        self.retries = retries
        self.max_retry_wait = max_retry_wait

    def _opts(self) -> dict[str, Any]:
        return {"retries": self.retries, "max_retry_wait": self.max_retry_wait}

    def _disconnect_flow(self, user: str, reconnect: bool) -> Flow[int]:
        return disconnect_flow(self.base_url, self.token, user, reconnect, **self._opts())

    def _channels_flow(self, prefix: str | None) -> Flow[list[dict[str, Any]]]:
        return channels_flow(self.base_url, self.token, prefix, **self._opts())

    def _history_flow(self, channel: str | None, since: str | None, limit: int) -> Flow[History]:
        return history_flow(self.base_url, self.token, channel, since, limit, **self._opts())

    def _presence_flow(self, channel: str) -> Flow[dict[str, Any]]:
        return presence_flow(self.base_url, self.token, channel)
