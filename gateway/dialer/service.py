"""Outbound calls through the tenant's own carrier account: place, hang up, DTMF, callbacks.

:class:`OutboundService` is the I/O around the dialers (:mod:`gateway.dialer.base`); the REST
API hands it each call it stores (``POST /calls/outbound``) and the carrier callback routes
(:mod:`gateway.api.carrier_callbacks`) hand it each callback. The lifecycle it drives lives in
the store (:meth:`~gateway.store.Store.mark_call_placed`,
:meth:`~gateway.store.Store.apply_carrier_status`, ``finalise_call``):

1. :meth:`OutboundService.start` builds the :class:`~gateway.dialer.base.OutboundRequest` (the
   per-call stream URL, the status-callback URL ``/carriers/<kind>/status/<callId>``, the answer
   URL ``/carriers/<kind>/answer/<callId>`` for carriers that fetch instructions on answer) and
   places it on a task of its own, so the API answers 201 at once;
2. the carrier accepted: ``queued → initiated`` with the carrier's call id; the carrier refused
   (or its API timed out, or the account's credentials no longer resolve): the call is
   finalised ``failed`` with the carrier's own code and message (``carrier_<code>``), never an
   exception;
3. callbacks move it on (``ringing``, ``in_progress``, or a no-media outcome: ``busy``,
   ``no_answer``, ``declined``, ``failed``, ``canceled``); the media stream claims it;
4. when the gateway ends a call that came through an account (agent, ``maxDuration``,
   voicemail policy, a control request, shutdown), :meth:`OutboundService.hang_up` ends it
   through the carrier's REST API; "already ended" is success there.

Credentials are resolved per request from the account's secret references, within the call's
tenant's grant, and never logged. Every carrier request is bounded by the dialer's time limit
(``GATEWAY_DIALER_TIMEOUT_S``); where each carrier's API lives is the operator's setting
``GATEWAY_CARRIER_API_URLS`` (the carrier simulator in tests and the demo), never a request's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from starlette.requests import HTTPConnection

from gateway.carriers.instructions import stream_format
from gateway.config import Settings
from gateway.dialer.base import (
    CarrierError,
    Credentials,
    Dialer,
    NotSupported,
    OutboundRequest,
    Transfer,
    check_digits,
    make_dialer,
)
from gateway.store import TERMINAL_STATUSES, CallRecord, Store, StoreError
from gateway.store.carrier_accounts import CarrierAccountRecord, CredentialsUnavailable, resolve_account_credentials
from gateway.tenants import SecretGrants

__all__ = ["OutboundService", "CallbackTarget", "callback_path", "answer_path", "transfer_path", "CARRIER_ENDED_REASONS",
           "TRANSFER_URL_KINDS", "TRANSFERRED"]

log = logging.getLogger("gateway.dialer")

#: End reason of a call the API transferred: the carrier call goes on with the new party.
TRANSFERRED = "transferred"
#: End reasons of calls the carrier (or the callee) ended, or that left the gateway for another
#: party: no hang-up request is sent for them.
CARRIER_ENDED_REASONS = frozenset({"carrier_stop", TRANSFERRED})
#: Extra seconds the carrier's own limit on a call gets over its ``maxDuration`` (the gateway's
#: timer ends it first; the carrier's is the backstop if the gateway is gone).
CARRIER_LIMIT_MARGIN_S = 60
#: A placed call must reach a media stream or a final callback within its ring timeout plus
#: this (s), and a call the carrier says was answered must stream within :data:`ANSWER_GRACE_S`;
#: otherwise the watchdog hangs it up through the carrier and ends it ``failed``.
WATCH_MARGIN_S = 30.0
ANSWER_GRACE_S = 20.0
#: How often (s) the watchdog looks at the calls it watches.
WATCH_EVERY_S = 2.0


def callback_path(kind: str, call_id: str) -> str:
    """``/carriers/<kind>/status/<callId>``: where the carrier posts call-progress callbacks."""
    return f"/carriers/{kind}/status/{call_id}"


def answer_path(kind: str, call_id: str) -> str:
    """``/carriers/<kind>/answer/<callId>``: the answer URL (Plivo fetches its XML there)."""
    return f"/carriers/{kind}/answer/{call_id}"


def transfer_path(kind: str, call_id: str, to: str) -> str:
    """``/carriers/<kind>/transfer/<callId>?to=<E.164>``: where a carrier that fetches a
    transfer's instructions (Plivo's ``aleg_url``) gets its ``<Dial>`` (the URL is signed)."""
    return f"/carriers/{kind}/transfer/{call_id}?to={urllib.parse.quote(to, safe='')}"


#: Carriers that fetch a transfer's instructions from a gateway URL.
TRANSFER_URL_KINDS = frozenset({"plivo"})


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """What a callback route needs to check and apply a callback: the call, its dialer and the
    account's resolved credentials (secret values: never log them)."""

    call: CallRecord
    dialer: Dialer
    creds: Credentials


class OutboundService:
    """Places and steers outbound calls (see the module docstring).

    Args:
        store: the gateway's store.
        settings: ``carrier_api_urls``, ``dialer_timeout_s``, ``public_url``,
            ``tenant_secrets`` (the grants credentials resolve within).
        environ: where secret references are read (default ``os.environ``).
        dialers: dialers by kind (tests); by default made on first use with
            :func:`~gateway.dialer.base.make_dialer`.
    """

    def __init__(self, store: Store, settings: Settings, *, environ: Mapping[str, str] | None = None,
                 dialers: Mapping[str, Dialer] | None = None) -> None:
        self.store = store
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self._grants = SecretGrants.from_settings(settings)
        self._dialers: dict[str, Dialer] = dict(dialers or {})
        self._tasks: set[asyncio.Task[None]] = set()
        #: Placements in flight in this process: call id → set once the carrier answered.
        self._placing: dict[str, asyncio.Event] = {}
        #: Calls whose hang-up was asked for while they were being placed.
        self._cancel: set[str] = set()
        #: Placed calls not yet streaming or final: call id → watchdog deadline (monotonic s).
        self._watch: dict[str, float] = {}
        self._watchdog: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ parts
    def dialer(self, kind: str) -> Dialer:
        """The dialer for ``kind`` (made once, pointed at ``carrier_api_urls[kind]`` if set).

        Raises:
            ValueError: no dialer for ``kind``.
        """
        dialer = self._dialers.get(kind)
        if dialer is None:
            dialer = make_dialer(kind, api_base_url=self.settings.carrier_api_urls.get(kind),
                                 timeout_s=self.settings.dialer_timeout_s)  # fmt: skip
            self._dialers[kind] = dialer
        return dialer

    async def _account(self, call: CallRecord) -> tuple[CarrierAccountRecord, dict[str, str]]:
        """The call's account (deleted ones too: a call placed before the delete is still
        steered) and its credentials.

        Raises:
            CredentialsUnavailable: the account is gone or a required credential no longer
                resolves within the call's tenant's grant.
        """
        account_id = call.carrier_account_id
        account = None
        if account_id:
            account = await asyncio.to_thread(self.store.get_carrier_account, account_id,
                                              tenant=call.tenant, include_deleted=True)  # fmt: skip
        if account is None:
            raise CredentialsUnavailable(account_id or "-", ("account",))
        creds = resolve_account_credentials(account, call.tenant, grants=self._grants, environ=self._environ)
        return account, creds

    async def credentials(self, call: CallRecord) -> dict[str, str] | None:
        """The resolved credentials of the call's carrier account, or ``None`` (no account, or
        they no longer resolve). Secret values: never log them."""
        try:
            return (await self._account(call))[1]
        except CredentialsUnavailable:
            return None

    def request_for(self, call: CallRecord, token: str, conn: HTTPConnection) -> OutboundRequest:
        """The :class:`OutboundRequest` for a stored outbound call (URLs built with
        :func:`~gateway.api.urls.public_url` and :func:`~gateway.api.urls.stream_url`, the functions the routes check signatures against).

        Raises:
            ValueError: the record lacks its numbers (not an outbound call).
        """
        # Deferred: importing gateway.api.urls runs gateway/api/__init__.py, which imports every
        # router, and the routers import this module (a cycle when this module loads first).
        from gateway.api.urls import public_url, stream_url

        kind, settings = call.connection_type, self.settings
        details = call.outbound or {}
        config = call.call_config()
        codec, rate = stream_format(kind)  # as the inbound instruction documents ask
        return OutboundRequest(
            call_id=call.id,
            to=call.to_number or "",
            from_=call.from_number or "",
            stream_url=stream_url(settings, conn, kind, call.id, token),
            status_callback_url=public_url(settings, conn, callback_path(kind, call.id)),
            answer_url=public_url(settings, conn, answer_path(kind, call.id)),
            ring_timeout_s=int(details.get("ringTimeout", 30)),
            max_duration_s=int(config.max_duration_s) + CARRIER_LIMIT_MARGIN_S,
            codec=codec,
            sample_rate=rate,
            parameters={"callId": call.id},
        )

    # ------------------------------------------------------------------ placing
    async def start(self, call: CallRecord, token: str, conn: HTTPConnection) -> None:
        """Place ``call`` on a task of its own and return at once (the API's 201 does not wait
        for the carrier). The request is built now, while ``conn`` (the API request) is there.

        Raises:
            ValueError: the record is not a placeable outbound call (a bug of the caller).
        """
        req = self.request_for(call, token, conn)
        self._placing[call.id] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._place(call, req), name=f"place-{call.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _place(self, call: CallRecord, req: OutboundRequest) -> None:
        """Place the call; every failure ends as a ``failed`` record, never an exception (a
        cancellation at shutdown too: the record is written, then the cancellation goes on)."""
        try:
            placed = await self._dial(call, req)
            if placed is not None:
                await self._placed(call, req, placed)
        except asyncio.CancelledError:
            await asyncio.shield(self._fail(call.id, "shutdown", "the gateway shut down while placing the call"))
            raise
        finally:
            self._cancel.discard(call.id)
            event = self._placing.pop(call.id, None)
            if event is not None:
                event.set()

    async def _dial(self, call: CallRecord, req: OutboundRequest) -> str | None:
        """The carrier's id for the placed call, or ``None`` (the record is then ``failed``)."""
        try:
            _account, creds = await self._account(call)
            return (await self.dialer(call.connection_type).place(req, creds)).carrier_call_id
        except CredentialsUnavailable as exc:
            await self._fail(call.id, "credentials", f"carrier account credentials unavailable: {', '.join(exc.missing)}")
        except CarrierError as exc:
            log.warning("call %s: %s refused the call: %s %s", call.id, call.connection_type, exc.code, exc.message)
            await self._fail(call.id, exc.code, exc.message, status=exc.status)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: the record still ends
            log.exception("call %s: placing it failed", call.id)
            await self._fail(call.id, "internal_error", type(exc).__name__)
        return None

    async def _placed(self, call: CallRecord, req: OutboundRequest, carrier_call_id: str) -> None:
        """Record the carrier's id (retried once), then watch the call until it streams or ends;
        a hang-up asked for meanwhile is carried out now."""
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(self.store.mark_call_placed, call.id, carrier_call_id)
                break
            except StoreError:
                log.warning("call %s placed as %s; the store did not take it (attempt %d)", call.id,
                            carrier_call_id, attempt, exc_info=True)  # fmt: skip
                await asyncio.sleep(0.5)
        log.info("call %s placed through %s as %s", call.id, call.connection_type, carrier_call_id)
        if call.id in self._cancel:
            placed = await asyncio.to_thread(self.store.get_call, call.id)
            await self.hang_up(placed or call, carrier_call_id=carrier_call_id)
            return
        self._watch[call.id] = time.monotonic() + req.ring_timeout_s + WATCH_MARGIN_S
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_loop(), name="outbound-watchdog")

    async def _fail(self, call_id: str, code: str, message: str, *, status: int | None = None,
                    reason: str = "carrier_error") -> None:
        """Finalise a call the carrier never connected to the gateway: ``failed``."""
        detail = f"{message} (HTTP {status})" if status else message
        try:
            await asyncio.to_thread(
                self.store.finalise_call, call_id, status="failed", end_reason=reason,
                duration_ms=0, error_code=f"carrier_{code}"[:64] if reason == "carrier_error" else code,
                error_message=detail[:500],
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - e.g. callbacks finalised it meanwhile; logged
            log.warning("call %s: could not record why it failed", call_id, exc_info=True)

    # ------------------------------------------------------------------ watchdog
    async def _watch_loop(self) -> None:
        """Every :data:`WATCH_EVERY_S`: a watched call that streams or ended leaves the watch; one
        past its deadline is hung up through the carrier and ended ``failed``."""
        while self._watch:
            await asyncio.sleep(WATCH_EVERY_S)
            now = time.monotonic()
            for call_id in [c for c, deadline in self._watch.items() if deadline <= now]:
                try:
                    await self._check_watched(call_id, now)
                except Exception:  # noqa: BLE001 - one call's fault never stops the watch
                    log.warning("call %s: watchdog check failed", call_id, exc_info=True)
                    self._watch.pop(call_id, None)

    async def _check_watched(self, call_id: str, now: float) -> None:
        call = await asyncio.to_thread(self.store.get_call, call_id)
        if call is None or call.status in TERMINAL_STATUSES or call.started_at is not None:
            self._watch.pop(call_id, None)
            return
        if call.answered_at is not None:
            since = (datetime.now(timezone.utc) - call.answered_at).total_seconds()
            if since < ANSWER_GRACE_S:  # answered just now: give its stream time to arrive
                self._watch[call_id] = now + ANSWER_GRACE_S - since
                return
        self._watch.pop(call_id, None)
        answered = call.status.value == "in_progress"
        log.warning("call %s: %s, and no media stream came: hanging up", call_id,
                    "answered" if answered else "no final word from the carrier")  # fmt: skip
        await self.hang_up(call)
        await self._fail(call_id, "no_stream" if answered else "no_callback",
                         "the carrier answered but no media stream reached the gateway" if answered
                         else "the carrier sent no final status within the ring timeout",
                         reason="no_stream" if answered else "carrier_silent")  # fmt: skip

    # ------------------------------------------------------------------ steering
    async def hang_up(self, call: CallRecord, *, carrier_call_id: str | None = None) -> dict[str, Any]:
        """End ``call`` through its carrier (already ended counts as success).

        Args:
            carrier_call_id: the carrier's id to hang up (default the record's; e.g. the id a
                stream's ``start`` or a callback gave when the record has none).

        Returns:
            ``{"ok": True}`` or ``{"ok": False, "code", "message"}`` (for the record).
        """
        carrier_id = carrier_call_id or call.carrier_call_id
        if not carrier_id:
            return {"ok": False, "code": "not_placed", "message": "the carrier has no id for this call yet"}
        try:
            _account, creds = await self._account(call)
            await self.dialer(call.connection_type).hang_up(carrier_id, creds)
        except CredentialsUnavailable as exc:
            return {"ok": False, "code": "credentials", "message": str(exc)}
        except CarrierError as exc:
            log.warning("call %s: hang-up through %s failed: %s %s", call.id, call.connection_type, exc.code, exc.message)
            return {"ok": False, "code": exc.code, "message": exc.message[:200]}
        return {"ok": True}

    def request_cancel(self, call_id: str) -> bool:
        """Hang up a call whose placement is in flight here as soon as the carrier answers with
        its id (then its callbacks end it ``canceled``). ``False``: no placement in flight."""
        if call_id not in self._placing:
            return False
        self._cancel.add(call_id)
        return True

    async def placed_id(self, call: CallRecord, wait_s: float) -> str | None:
        """The carrier's id for ``call``: the record's, or (a placement in flight here) the one
        the carrier is about to answer with, waited for up to ``wait_s``; ``None`` if unknown."""
        event = self._placing.get(call.id)
        if call.carrier_call_id or event is None:
            return call.carrier_call_id
        try:
            await asyncio.wait_for(event.wait(), wait_s)
        except TimeoutError:
            return None
        fresh = await asyncio.to_thread(self.store.get_call, call.id)
        return fresh.carrier_call_id if fresh is not None else None

    def hang_up_ended_soon(self, call_id: str) -> None:
        """:meth:`hang_up_ended` on a task of its own (awaited at :meth:`aclose`)."""
        task = asyncio.get_running_loop().create_task(self.hang_up_ended(call_id), name=f"hang-up-{call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def hang_up_ended(self, call_id: str) -> None:
        """A stream came for a call that has ended (e.g. a placement that timed out but went
        through): hang it up through the carrier, so it does not stay up in silence."""
        call = await asyncio.to_thread(self.store.get_call, call_id)
        if call is not None and call.carrier_account_id and call.status in TERMINAL_STATUSES:
            try:
                result = await self.hang_up(call)
            except Exception:  # noqa: BLE001 - best effort; logged
                log.warning("call %s: hang-up of its late stream's call failed", call_id, exc_info=True)
                return
            log.info("call %s had ended; its late stream's carrier call hung up: %s", call_id, result)

    async def send_dtmf(self, call: CallRecord, digits: str) -> Literal["carrier", "in_band"]:
        """Send ``digits`` through the carrier's REST API when it has a way; ``in_band`` when it
        has none (the caller then plays ITU-T Q.23 tones on the media stream).

        Raises:
            ValueError: bad digits (:func:`~gateway.dialer.base.check_digits`).
            CarrierError: the carrier refused (``credentials`` when they do not resolve).
        """
        check_digits(digits)
        if not call.carrier_call_id or not call.carrier_account_id:
            return "in_band"
        try:
            _account, creds = await self._account(call)
        except CredentialsUnavailable as exc:
            raise CarrierError("credentials", str(exc)) from None
        try:
            await self.dialer(call.connection_type).send_dtmf(call.carrier_call_id, digits, creds)
        except NotSupported:
            return "in_band"
        return "carrier"

    async def transfer(self, call: CallRecord, to: str, conn: HTTPConnection) -> None:
        """Transfer a live outbound call's callee to ``to`` (E.164) through its carrier: the
        callee leaves the media stream (which ends) for ``to``, who sees the call's own number.

        Args:
            conn: the API request, for the public URL of Plivo's ``aleg_url``.

        Raises:
            CarrierError: the carrier refused (``credentials`` when they do not resolve,
                ``not_placed`` when the carrier has no id for the call yet); :class:`NotSupported`
                when its API has no way.
        """
        if not call.carrier_call_id or not call.carrier_account_id:
            raise CarrierError("not_placed", "the carrier has no id for this call")
        try:
            _account, creds = await self._account(call)
        except CredentialsUnavailable as exc:
            raise CarrierError("credentials", str(exc)) from None
        from gateway.api.urls import public_url  # deferred: see request_for (an import cycle)

        kind = call.connection_type
        url = public_url(self.settings, conn, transfer_path(kind, call.id, to)) if kind in TRANSFER_URL_KINDS else None
        transfer = Transfer(to=to, caller_id=call.from_number, instructions_url=url)
        await self.dialer(kind).transfer(call.carrier_call_id, transfer, creds)
        log.info("call %s transferred through %s", call.id, kind)

    async def callback_target(self, kind: str, call_id: str) -> CallbackTarget | None:
        """The call a callback route names, with its dialer and credentials; ``None`` when there
        is no such outbound call of ``kind`` or its credentials do not resolve (then nothing
        can be verified: the route answers 403)."""
        call = await asyncio.to_thread(self.store.get_call, call_id)
        if call is None or call.connection_type != kind or not call.carrier_account_id:
            return None
        try:
            _account, creds = await self._account(call)
            return CallbackTarget(call, self.dialer(kind), creds)
        except (CredentialsUnavailable, ValueError):
            log.warning("call %s: a %s callback cannot be verified (credentials unavailable)", call_id, kind)
            return None

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Wait for placements in flight (up to ``timeout_s``, default the dialer's limit + 1 s),
        then cancel the rest (their records end ``failed`` / ``shutdown``), stop the watchdog
        and close the dialers."""
        limit = self.settings.dialer_timeout_s + 1.0 if timeout_s is None else timeout_s
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=limit)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        for dialer in self._dialers.values():
            dialer.close()
        self._dialers.clear()
