"""The request/response layer both clients share: what each operation sends, how an answer
becomes a typed result or a :class:`GatewayError`, and how ``wait_for_call`` paces its polls.

Nothing here does I/O. An operation is an :class:`Op` (method, path, query, JSON body, the
status it succeeds with and the API's pydantic model of its answer); the sync and async
clients (:mod:`gateway.client.sync`, :mod:`gateway.client.aio`) send it with their own httpx
client and hand the response to :func:`parse`. :class:`WaitPlan` holds the polling rule of
``wait_for_call``: done when the call's status is terminal **and** its post-call results are
final (``postCall.status`` not ``pending`` / ``running``).

Request bodies are sent as given: a model instance is dumped with its wire names
(``exclude_unset``), a mapping is taken as wire JSON, and keyword arguments may use the
models' Python names (``system_prompt`` → ``systemPrompt``, ``from_`` → ``from``). They are
validated by the gateway (which knows the key's tenant and the operator's policies), so a
bad field is a :class:`GatewayError` ``validation_error`` naming it, never a local guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from gateway.api.calls_schemas import CallList
from gateway.api.control import ControlOut
from gateway.api.outbound_schemas import OutboundCallCreate, OutboundCallCreated
from gateway.api.schemas import CallCreate, CallCreated, CallOut, ErrorResponse, FieldError, InlineCallCreate
from gateway.store import TERMINAL_STATUSES

__all__ = [
    "Op",
    "GatewayError",
    "GatewayConnectionError",
    "CallWaitTimeout",
    "WaitPlan",
    "TERMINAL",
    "POST_CALL_BUSY",
    "DEFAULT_TIMEOUT_S",
    "wire_body",
    "parse",
    "transport_error",
    "create_call",
    "create_inline_call",
    "place_call",
    "get_call",
    "list_calls",
    "control",
]

T = TypeVar("T", bound=BaseModel)

#: Terminal call statuses (wire spelling), from the store's own set.
TERMINAL: frozenset[str] = frozenset(s.value for s in TERMINAL_STATUSES)
#: ``postCall.status`` values meaning the results are still being computed.
POST_CALL_BUSY: frozenset[str] = frozenset({"pending", "running"})
#: Default limit of every request (s): connect, read, write and pool wait each.
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One API request and how to read its answer.

    Attributes:
        method: HTTP method.
        path: path below the base URL, ids percent-encoded (``/calls/call_1``).
        model: the API's response model of a success.
        ok: the success status (201 for creations, 202 for control).
        json: the JSON body, or ``None``.
        params: query parameters (``None`` values left out).
    """

    method: str
    path: str
    model: type[T]
    ok: int = 200
    json: Any = None
    params: Mapping[str, Any] | None = None

    def request(self, client: httpx.Client | httpx.AsyncClient, timeout: float | None) -> httpx.Request:
        """The ``httpx.Request`` of this operation on ``client`` (timeout ``None``: the client's)."""
        params = {k: _query_value(v) for k, v in (self.params or {}).items() if v is not None}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return client.build_request(self.method, self.path, params=params, json=self.json, **extra)


class GatewayError(Exception):
    """An error answer of the gateway, in its API's shape ``{"error": {code, message, fields?}}``.

    Attributes:
        status: HTTP status (``None`` for :class:`GatewayConnectionError`).
        code: the API's stable code (``validation_error``, ``not_found``, ``not_live`` …); a
            response not in the API's shape gets ``http_<status>``.
        message: the API's message.
        fields: field errors of a ``validation_error`` (dotted wire paths), else empty.
        retry_after: seconds of a ``Retry-After`` header (503 at capacity), else ``None``.
    """

    def __init__(self, status: int | None, code: str, message: str, *,
                 fields: list[FieldError] | None = None, retry_after: float | None = None) -> None:  # fmt: skip
        self.status, self.code, self.message = status, code, message
        self.fields = list(fields or [])
        self.retry_after = retry_after
        where = "; ".join(f"{f.field}: {f.message}" for f in self.fields)
        head = f"{status} {code}" if status is not None else code
        super().__init__(f"{head}: {message}" + (f" ({where})" if where else ""))


class GatewayConnectionError(GatewayError):
    """The request got no answer: ``code`` ``timeout`` (a limit passed) or ``network``."""


class CallWaitTimeout(TimeoutError):
    """``wait_for_call`` ran out of time before the call and its post-call results were final.

    Attributes:
        call_id: the call waited for.
        timeout_s: the limit (s).
        last: the last record read (``None``: none could be read).
    """

    def __init__(self, call_id: str, timeout_s: float, last: CallOut | None) -> None:
        self.call_id, self.timeout_s, self.last = call_id, timeout_s, last
        if last is None:
            state = "no record could be read"
        else:
            post = post_call_status(last)
            state = f"status {last.status}" + (f", post-call {post}" if post else "")
        super().__init__(f"call {call_id!r} not finished after {timeout_s:g} s ({state})")


def _query_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _path_id(value: str) -> str:
    return quote(value, safe="")


def wire_body(
    model: type[BaseModel], body: BaseModel | Mapping[str, Any] | None, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body of a request for ``model`` (see the module docstring).

    Args:
        model: the API's request model (gives the wire names of keyword arguments).
        body: a model instance (dumped by alias, set fields only), wire JSON, or ``None``.
        fields: more fields by Python or wire name; they win over ``body``'s.
    """
    if isinstance(body, BaseModel):
        out = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    else:
        out = dict(body or {})
    for name, value in fields.items():
        info = model.model_fields.get(name)
        out[info.alias if info is not None and info.alias else name] = to_jsonable_python(value, by_alias=True)
    return out


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _error(response: httpx.Response) -> GatewayError:
    """The :class:`GatewayError` of an error answer (the API's shape, or ``http_<status>``)."""
    try:
        body = ErrorResponse.model_validate_json(response.content).error
    except ValidationError:
        text = response.text.strip().replace("\n", " ")[:300]
        return GatewayError(response.status_code, f"http_{response.status_code}", text or response.reason_phrase,
                            retry_after=_retry_after(response))  # fmt: skip
    return GatewayError(response.status_code, body.code, body.message, fields=body.fields,
                        retry_after=_retry_after(response))  # fmt: skip


def parse(op: Op[T], response: httpx.Response) -> T:
    """``response`` as ``op.model``.

    Raises:
        GatewayError: any other status than ``op.ok`` (the API's code, message and fields),
            or a success whose body is not ``op.model`` (code ``invalid_response``).
    """
    if response.status_code != op.ok:
        raise _error(response)
    try:
        return op.model.model_validate_json(response.content)
    except ValidationError as exc:
        what = f"{op.method} {op.path}: not a {op.model.__name__}: {exc.error_count()} errors"
        raise GatewayError(response.status_code, "invalid_response", what) from exc


def transport_error(op: Op[Any], exc: httpx.TransportError) -> GatewayConnectionError:
    """The :class:`GatewayConnectionError` of an httpx failure to get an answer."""
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "network"
    return GatewayConnectionError(None, code, f"{op.method} {op.path}: {type(exc).__name__}: {exc}")


# -- the operations ------------------------------------------------------------------------


def create_call(body: CallCreate | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> Op[CallCreated]:
    """``POST /calls/create``: a call running a stored agent (``agentId``)."""
    return Op("POST", "/calls/create", CallCreated, 201, wire_body(CallCreate, body, fields))


def create_inline_call(body: InlineCallCreate | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> Op[CallCreated]:
    """``POST /calls/inline``: a call with its agent configuration in the request."""
    return Op("POST", "/calls/inline", CallCreated, 201, wire_body(InlineCallCreate, body, fields))


def place_call(
    body: OutboundCallCreate | Mapping[str, Any] | None, fields: Mapping[str, Any]
) -> Op[OutboundCallCreated]:
    """``POST /calls/outbound``: dial ``to`` through a carrier account."""
    return Op("POST", "/calls/outbound", OutboundCallCreated, 201, wire_body(OutboundCallCreate, body, fields))


def get_call(call_id: str) -> Op[CallOut]:
    """``GET /calls/{callId}``: the call's record."""
    return Op("GET", f"/calls/{_path_id(call_id)}", CallOut)


def list_calls(*, limit: int | None = None, offset: int | None = None, status: str | None = None,
               direction: str | None = None, start_date: datetime | str | None = None,
               end_date: datetime | str | None = None) -> Op[CallList]:  # fmt: skip
    """``GET /calls``: a page of the key's calls, newest first (``None`` filters left out)."""
    params = {"limit": limit, "offset": offset, "status": status, "direction": direction,
              "start_date": start_date, "end_date": end_date}  # fmt: skip
    return Op("GET", "/calls", CallList, params=params)


def control(call_id: str, action: str, fields: Mapping[str, Any]) -> Op[ControlOut]:
    """``POST /calls/{callId}/control``: ``{"action": action, **fields}`` (e.g. ``digits``)."""
    body = {"action": action, **{k: to_jsonable_python(v) for k, v in fields.items()}}
    return Op("POST", f"/calls/{_path_id(call_id)}/control", ControlOut, 202, body)


# -- waiting -------------------------------------------------------------------------------


def post_call_status(rec: CallOut) -> str | None:
    """``rec``'s post-call status (``postCall.status``), ``None`` when it has none."""
    post = getattr(rec, "post_call", None)
    status = getattr(post, "status", None) if post is not None else None
    return None if status is None else str(status)


@dataclass
class WaitPlan:
    """When ``wait_for_call`` polls, and when it is done.

    Delays grow from ``first_s`` by ``factor`` up to ``max_s`` between polls and never pass
    the deadline (``timeout_s`` from creation on ``clock``, monotonic seconds).
    """

    call_id: str
    timeout_s: float
    first_s: float = 0.2
    factor: float = 1.5
    max_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    last: CallOut | None = None
    _delay: float = field(init=False, default=0.0)
    _deadline: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout must be positive seconds, not {self.timeout_s!r}")
        self._deadline = self.clock() + self.timeout_s

    def remaining(self) -> float:
        """Seconds left (0 once the deadline passed)."""
        return max(0.0, self._deadline - self.clock())

    def done(self, rec: CallOut) -> bool:
        """Whether ``rec`` is final: terminal status and post-call results not pending/running
        (a record without post-call results, from a gateway that computes none, is final once
        terminal)."""
        self.last = rec
        return rec.status in TERMINAL and post_call_status(rec) not in POST_CALL_BUSY

    def next_delay(self) -> float | None:
        """Seconds to sleep before the next poll, ``None`` when the time is up."""
        left = self.remaining()
        if left <= 0:
            return None
        self._delay = self.first_s if self._delay == 0 else min(self.max_s, self._delay * self.factor)
        return min(self._delay, left)

    def request_timeout(self, default_s: float) -> float:
        """The limit of the next poll: the client's, but not far past the deadline (≥ 0.5 s)."""
        return max(0.5, min(default_s, self.remaining() + 0.5))

    def expired(self) -> CallWaitTimeout:
        """The error to raise once the time is up."""
        return CallWaitTimeout(self.call_id, self.timeout_s, self.last)

    def retryable(self, exc: GatewayError) -> bool:
        """Whether a failed poll is worth another try (no answer, or a 5xx) while time is left."""
        transient = isinstance(exc, GatewayConnectionError) or (exc.status or 0) >= 500
        return transient and self.remaining() > 0
