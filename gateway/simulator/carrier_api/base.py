"""The carrier simulator: each carrier's REST API (the subset the dialers use) and the callee.

:class:`CarrierSimulator` is one ASGI app (Starlette) serving every carrier's API paths at once
(they do not collide: Twilio ``/2010-04-01/…``, Plivo ``/v1/Account/…``, Telnyx ``/v2/…``,
Vonage ``/v1/calls``), so one ``api_base_url`` serves every dialer (:func:`gateway.dialer.
make_dialer`). The SDKs are pointed at it by base URL: the real SDK code builds, authenticates
and parses each request.

When a call is created, the carrier's module calls :meth:`CarrierSimulator.place`; the
simulator then **plays the callee** on its own task, per the script the callee's number has in
the :class:`~gateway.simulator.carrier_api.scripts.ScriptBook`:

1. status callbacks, each signed as the carrier signs them, in the neutral vocabulary
   ``initiated`` → ``ringing`` (sent twice when ``script.duplicate``) → then either an
   outcome without media (``busy`` / ``no_answer`` / ``failed`` / ``declined``) or
   ``answered``;
2. when answered: the carrier module resolves the stream URL (Twilio reads it from the TwiML
   given at create; Plivo fetches the answer URL and reads ``<Stream>``), and a
   :class:`~gateway.simulator.caller.SimulatedCaller` speaking the carrier's dialect opens the
   media stream and plays the script (what it heard is kept in :attr:`SimCall.report`);
3. ``completed`` when the stream ends (either side hung up, or the REST API's hang-up, which
   makes the caller hang up at once); ``canceled`` if hung up while ringing;
4. when ``script.late``: an earlier callback (``ringing``, or ``answered`` for an answered call)
   is delivered again after the final one (out of order).

Duplicates and late ones are *retries*: the very request sent before (same fields, same
signature), as a carrier re-delivers a callback it thinks was lost.

Writing a carrier module (``gateway/simulator/carrier_api/<kind>.py``, see ``twilio.py``):
expose ``create(sim) -> CarrierBackend`` and add the module to :data:`_MODULES`. A backend has

* ``kind`` (str) and ``routes() -> list[starlette.routing.BaseRoute]``: the REST paths exactly
  as the SDK calls them; they check the account's auth, validate the request, look the ``to``
  number up with :meth:`CarrierSimulator.script_for` (an :class:`ApiFault` becomes the
  carrier's error response), build a :class:`SimCall` and hand it to :meth:`~CarrierSimulator.
  place`; hang-up routes call :meth:`CarrierSimulator.hang_up`;
* ``async stream_target(call) -> (url, parameters)``: where the callee's media stream goes;
* ``dialect(call) -> CallerDialect``: the carrier's media dialect
  (:mod:`gateway.simulator.dialects`);
* ``signed_callback(call, event) -> Callback | None``: the carrier's status callback for a
  neutral event (one of :data:`EVENTS`), signed with the account's credentials, or ``None``
  when the call asked not to hear about that event;
* optionally ``stream_headers(call, url) -> dict[str, str]``: headers on the media WebSocket's
  upgrade request (Twilio signs it: ``X-Twilio-Signature`` over the ``wss://`` URL).

Credentials: ``accounts[kind]`` is the mapping the dialer gets (:data:`gateway.dialer.base.
CREDENTIAL_KEYS`) plus whatever the simulator needs to sign (Telnyx: an Ed25519 private key).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from gateway.simulator.caller import CallerReport, SimulatedCaller
from gateway.simulator.carrier_api.scripts import ApiFault, CalleeScript, ScriptBook
from gateway.simulator.dialects import CallerDialect

__all__ = ["CarrierSimulator", "SimCall", "Callback", "Form", "json_object", "new_id", "CarrierBackend", "EVENTS",
           "SENT_LIMIT_S"]

log = logging.getLogger(__name__)

#: The neutral events a backend turns into its carrier's callbacks.
EVENTS = ("initiated", "ringing", "answered", "completed", "busy", "no_answer", "failed", "declined", "canceled")
#: Time limit (s) on delivering one callback and on fetching an answer URL.
SENT_LIMIT_S = 5.0

_MODULES = {
    "twilio": "gateway.simulator.carrier_api.twilio",
    "plivo": "gateway.simulator.carrier_api.plivo",
    "telnyx": "gateway.simulator.carrier_api.telnyx",
    "vonage": "gateway.simulator.carrier_api.vonage",
}


@dataclass(frozen=True)
class Callback:
    """One HTTP request to the gateway: ``method`` to ``url`` with ``headers`` and ``body``."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass
class SimCall:
    """One call the simulator placed.

    Attributes:
        carrier: the carrier kind.
        carrier_call_id: the id the API returned (Twilio ``CA…``, Plivo request UUID, …).
        to, from_: the numbers as the request gave them.
        script: what the callee does.
        request: the create request's fields as the carrier module read them (carrier names);
            the simulator itself reads ``ring_timeout_s`` (a ``no_answer`` callee rings no longer)
            and ``time_limit_s`` (the carrier ends an answered call after that long, in s).
        status: the last neutral event (``queued`` until the first).
        callbacks: ``(event, HTTP status or None if undelivered)`` in the order sent.
        report: what the callee's media stream measured and heard (answered calls).
        hung_up_by_api: the REST API's hang-up was called while the call was live.
        dtmf: digits sent to the callee through the REST API, one string per request.
        transferred_to: where the REST API transferred the answered call (E.164): the media
            stream then ends, as the carrier moves the callee's leg to the new party.
        ended_at: monotonic time the call ended.
    """

    carrier: str
    carrier_call_id: str
    to: str
    from_: str
    script: CalleeScript
    request: dict = field(default_factory=dict)
    status: str = "queued"
    callbacks: list[tuple[str, int | None]] = field(default_factory=list)
    report: CallerReport | None = None
    hung_up_by_api: bool = False
    ended_at: float | None = None
    sequence: int = 0
    caller: SimulatedCaller | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    hang_up_event: asyncio.Event = field(default_factory=asyncio.Event)
    sent: dict[str, Callback | None] = field(default_factory=dict)
    dtmf: list[str] = field(default_factory=list)
    transferred_to: str | None = None
    error: str | None = None

    @property
    def live(self) -> bool:
        return not self.done.is_set()

    def next_sequence(self) -> int:
        """The next callback sequence number (0, 1, …)."""
        n = self.sequence
        self.sequence += 1
        return n


class CarrierBackend(Protocol):
    """One carrier's REST API and callee behaviour (see the module docstring)."""

    kind: str

    def routes(self) -> list[BaseRoute]: ...

    async def stream_target(self, call: SimCall) -> tuple[str, dict[str, str]]: ...

    def dialect(self, call: SimCall) -> CallerDialect: ...

    def signed_callback(self, call: SimCall, event: str) -> Callback | None: ...


class Form:
    """Fields of a form-encoded body (without python-multipart): ``get`` gives the first value."""

    def __init__(self, body: bytes) -> None:
        self._fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self._fields.get(name, []))

    @classmethod
    async def read(cls, request) -> Form:
        """The form of a Starlette request."""
        return cls(await request.body())


async def json_object(request) -> dict | None:
    """The JSON object body of a Starlette request (an empty body is ``{}``); ``None`` when the
    body is not JSON or not an object (the backend answers with its carrier's 400)."""
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        return None
    return body if type(body) is dict else None


def new_id(prefix: str = "") -> str:
    """A fresh id: ``prefix`` + 32 hex digits (Twilio SIDs: ``CA`` + 32 hex)."""
    return prefix + uuid.uuid4().hex


class CarrierSimulator:
    """The simulated carriers (see the module docstring).

    Args:
        accounts: per carrier kind, the account's credentials (the same mapping the dialer
            gets); a carrier without an account is not served.
        scripts: number → callee script or API fault.
        callback_timeout_s: limit on each callback delivery and answer-URL fetch (s).
    """

    def __init__(self, accounts: Mapping[str, Mapping[str, str]], *, scripts: ScriptBook | None = None,
                 callback_timeout_s: float = SENT_LIMIT_S) -> None:
        self.accounts = {k: dict(v) for k, v in accounts.items()}
        self.scripts = scripts or ScriptBook()
        self.callback_timeout_s = callback_timeout_s
        self.calls: dict[str, SimCall] = {}
        self._tasks: set[asyncio.Task] = set()
        self._http: httpx.AsyncClient | None = None
        self.backends: dict[str, CarrierBackend] = {}
        for kind in self.accounts:
            try:
                module = importlib.import_module(_MODULES[kind])
            except KeyError:
                raise ValueError(f"no simulated API for {kind!r}; choose from {', '.join(_MODULES)}") from None
            self.backends[kind] = module.create(self)
        routes: list[BaseRoute] = [r for b in self.backends.values() for r in b.routes()]
        self.app = Starlette(routes=routes)

    # ------------------------------------------------------------------ for carrier modules
    def script_for(self, number: str) -> CalleeScript | ApiFault:
        """The script (or API fault) of the callee at ``number``."""
        return self.scripts.lookup(number)

    def place(self, call: SimCall) -> None:
        """Register ``call`` and start playing its callee (returns at once)."""
        self.calls[call.carrier_call_id] = call
        task = asyncio.get_running_loop().create_task(self._callee(call), name=f"sim-callee-{call.carrier_call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hang_up(self, carrier_call_id: str) -> bool:
        """End a live call as the REST API's hang-up does. ``False``: unknown or already ended."""
        call = self.calls.get(carrier_call_id)
        if call is None or not call.live:
            return False
        call.hung_up_by_api = True
        call.hang_up_event.set()
        if call.caller is not None:
            call.caller.request_hang_up()
        return True

    def transfer(self, carrier_call_id: str, to: str) -> bool:
        """Transfer an answered, live call to ``to`` as the REST API's transfer does: the callee
        leaves the media stream (the simulated caller closes it) for the new party, and the call
        completes. ``False``: unknown, not answered, or already ended."""
        call = self.calls.get(carrier_call_id)
        if call is None or not call.live or call.status != "answered" or call.caller is None:
            return False
        call.transferred_to = to
        call.caller.request_hang_up()
        return True

    @property
    def http(self) -> httpx.AsyncClient:
        """The client the simulator uses to reach the gateway (callbacks, answer URLs)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.callback_timeout_s)
        return self._http

    # ------------------------------------------------------------------ the callee
    async def _callee(self, call: SimCall) -> None:
        backend = self.backends[call.carrier]
        script = call.script
        try:
            await self._send(backend, call, "initiated")
            await self._send(backend, call, "ringing")
            if script.duplicate:
                await self._send(backend, call, "ringing", resend=True)
            ring_s = script.ring_ms / 1000
            if script.kind == "no_answer":
                ring_s = min(ring_s, float(call.request.get("ring_timeout_s", ring_s)))
            if await self._hung_up_within(call, ring_s):
                await self._send(backend, call, "canceled")
                return
            if not script.answers:
                await self._send(backend, call, script.kind)
                if script.late:
                    await self._send(backend, call, "ringing", resend=True)
                return
            await self._answered(backend, call)
        except Exception as exc:  # a simulator fault is reported on the call, not raised into the loop
            log.exception("simulated callee failed for %s", call.carrier_call_id)
            call.error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._send(backend, call, "failed")
        finally:
            call.ended_at = time.monotonic()
            call.done.set()

    async def _answered(self, backend: CarrierBackend, call: SimCall) -> None:
        await self._send(backend, call, "answered")
        url, parameters = await backend.stream_target(call)
        dialect = backend.dialect(call)
        stream_headers = getattr(backend, "stream_headers", None)
        headers = stream_headers(call, url) if stream_headers is not None else {}
        caller = SimulatedCaller(url, dialect, parameters=parameters, headers=headers)
        call.caller = caller
        limit = call.request.get("time_limit_s")
        timer = asyncio.get_running_loop().call_later(float(limit), caller.request_hang_up) if limit else None
        try:
            if not call.hang_up_event.is_set():
                call.report = await caller.run(call.script.steps(dialect.audio_format.sample_rate))
        finally:
            if timer is not None:
                timer.cancel()
        await self._send(backend, call, "completed")
        if call.script.duplicate:
            await self._send(backend, call, "completed", resend=True)
        if call.script.late:  # the latest earlier callback the carrier sent (Plivo has no "answered")
            late = "answered" if call.sent.get("answered") is not None else "ringing"
            await self._send(backend, call, late, resend=True)

    async def _hung_up_within(self, call: SimCall, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.hang_up_event.wait(), seconds)
        return call.hang_up_event.is_set()

    async def _send(self, backend: CarrierBackend, call: SimCall, event: str, *, resend: bool = False) -> None:
        """Deliver ``event``'s signed callback (if the call asked for it); note the answer.

        ``resend``: deliver again the very request sent for ``event`` before (a carrier's retry:
        same fields, same signature), as a duplicate or, after the final status, a late one."""
        if resend:
            cb = call.sent.get(event)
        else:
            call.status = event
            cb = call.sent[event] = backend.signed_callback(call, event)
        if cb is None:
            return
        try:
            r = await self.http.request(cb.method, cb.url, headers=dict(cb.headers), content=cb.body)
            call.callbacks.append((event, r.status_code))
        except httpx.HTTPError as exc:
            log.warning("callback %s for %s undelivered: %s", event, call.carrier_call_id, exc)
            call.callbacks.append((event, None))

    # ------------------------------------------------------------------ control
    async def wait_done(self, carrier_call_id: str, timeout_s: float = 60.0) -> SimCall:
        """The call once its callee has finished (every callback sent).

        Raises:
            KeyError: no such call. TimeoutError: not finished in ``timeout_s``.
        """
        call = self.calls[carrier_call_id]
        await asyncio.wait_for(call.done.wait(), timeout_s)
        return call

    async def aclose(self) -> None:
        """Stop every callee (their calls hang up) and close the HTTP client."""
        for call in self.calls.values():
            self.hang_up(call.carrier_call_id)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve the simulated APIs with uvicorn in this event loop; yields the base URL
        (``http://127.0.0.1:<port>``). On exit the callees stop and the server shuts down."""
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", log_config=None,
                                lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                if task.done():
                    task.result()
                if time.monotonic() > deadline:
                    raise TimeoutError("carrier simulator did not start in 10 s")
                await asyncio.sleep(0.02)
            yield f"http://{host}:{port}"
        finally:
            await self.aclose()
            server.should_exit = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(task, 10)
