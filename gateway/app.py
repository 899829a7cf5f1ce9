"""The ASGI application: REST API, per-call media-stream WebSockets, shared services.

``create_app(settings)`` builds the app: the REST API's FastAPI app
(:func:`gateway.api.create_api`) plus the media-stream WebSocket and ``/metrics``. Its lifespan opens the store, finalises the
calls a previous run of this node left in progress (``node_lost``, see
:mod:`gateway.store.recovery`; its sweeper finalises later the calls whose process is gone and
whose lease lapsed, and it renews the leases of its own live calls), loads the VAD model (and the local agent's speech engines, in
the background), and keeps the registry of live calls. On shutdown (SIGTERM, served by
:class:`gateway.serving.GatewayServer`) live calls end with reason ``shutdown`` and their
sockets close with 1001 "going away"; the gateway waits up to ``GATEWAY_SHUTDOWN_TIMEOUT_S``
for their records.

Stream URL: ``/stream/{carrier}/{call_id}/{token}``. The token is in the path because Twilio
drops query strings. Before a socket is served: the carrier must be known and match the call's
connection type, the call must exist, the token must match and not have expired, and the call
must not already be streaming. A refused socket is accepted and then closed at once with an
application close code, so a client sees why:

====  =======================================================
4400  unknown carrier in the path, or not the call's carrier
4401  wrong token
4403  missing or invalid carrier signature (Twilio, when ``GATEWAY_TWILIO_AUTH_TOKEN`` is set)
4404  unknown call
4409  the call is already streaming, or has ended
4410  the stream token expired
1013  try again later: ``GATEWAY_MAX_CALLS`` calls are live (RFC 6455 §7.4.2 registry code)
====  =======================================================

A served call's socket is closed by its session when the call ends
(:func:`gateway.session.finish.close_code`, RFC 6455 §7.4.1):

====  =======================================================
1000  the call completed (the carrier's ``stop``, ``maxDuration``, inactivity)
1001  going away: the gateway is shutting down (reason ``shutdown``)
1008  policy violation: the adapter refused the ``start`` message (reason ``bad_start``)
1011  the call failed (a model error, the model connection lost, an internal error)
====  =======================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from gateway.api.urls import public_url, stream_path
from gateway.callsetup import build_session, recording_path
from gateway.carriers.registry import CARRIERS
from gateway.config import Settings, check_public_url
from gateway.dialer.service import OutboundService
from gateway.llm.base import AgentConfig, ModelBridge
from gateway.llm.local.remote import LocalEngines
from gateway.metrics import GatewayMetrics
from gateway.outbound import AppClients
from gateway.session import CallSession
from gateway.store.spool import replay_spool
from gateway.store import (
    BadToken,
    CallNotConnectable,
    CallRecord,
    IllegalTransition,
    Store,
    TokenExpired,
    UnknownCall,
    recover_lost_calls,
    sweep_lapsed_calls,
)
from gateway.transport import StarletteTransport  # noqa: F401 - re-exported (it lived here)
from gateway.engine import MediaEngine
from gateway.vadrun import VadFactory

__all__ = ["create_app", "Services", "CLOSE_CODES", "StarletteTransport"]

log = logging.getLogger("gateway.app")

CLOSE_CODES = {
    "bad_carrier": 4400,
    "bad_token": 4401,
    "bad_signature": 4403,
    "unknown_call": 4404,
    "not_connectable": 4409,
    "token_expired": 4410,
    "at_capacity": 1013,
}


@dataclass
class Services:
    """Process-wide services shared by every call (built in the lifespan)."""

    settings: Settings
    store: Store
    vad: VadFactory
    engines: LocalEngines
    live: dict[str, CallSession] = field(default_factory=dict)
    #: Streams admitted but not yet in :attr:`live` (their slot is held across the awaits).
    admitting: set[str] = field(default_factory=set)
    warm: asyncio.Task | None = None
    #: The per-tick media engine every call's caller audio goes through (``GATEWAY_MEDIA_ENGINE=tick``);
    #: ``None``: per frame, in each call's carrier task.
    media_engine: MediaEngine | None = None
    #: The shared HTTP clients (tools, the local agent's LLM endpoint), open while the app runs.
    clients: AppClients | None = None
    #: Outbound calls through tenants' carrier accounts (placing, callbacks, hang-up, DTMF).
    outbound: OutboundService | None = None
    metrics: GatewayMetrics = field(init=False)
    #: This process's run id, recorded with each stream it claims and each lease renewal
    #: (:mod:`gateway.store.recovery`): a restart, or a twin with the same node id, never
    #: takes a call this run still renews.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.metrics = GatewayMetrics(lambda: len(self.live))
        if self.media_engine is not None:
            self.metrics.watch_engine(self.media_engine)

    def live_calls(self) -> int:
        """Calls counted against ``Settings.max_calls``: served plus admitted streams."""
        return len(self.live) + len(self.admitting)

    def bridge_for(self, config: AgentConfig) -> ModelBridge:
        """The model bridge a call's config selects (``local`` by default)."""
        if config.model == "local":
            from gateway.llm.local.agent import LocalAgentBridge

            return LocalAgentBridge(engines=self.engines, responder=self.responder(config))
        from gateway.llm.registry import make_bridge

        tools = self.clients.tools if self.clients is not None else None
        return make_bridge(config, self.settings, tool_client=tools)

    def responder(self, config: AgentConfig):
        """The local agent's responder: a chat-completions endpoint if set, else echo."""
        from gateway.llm.local.responder import ChatCompletionsResponder, EchoResponder

        s = self.settings
        if s.llm_base_url:
            return ChatCompletionsResponder(
                s.llm_base_url,
                model=s.llm_model,
                api_key=s.llm_api_key.get_secret_value(),
                temperature=config.temperature,
                client=self.clients.operator if self.clients is not None else None,
            )
        return EchoResponder()

    async def end_live_calls(self, reason: str = "shutdown", *, timeout_s: float = 10.0) -> int:
        """End every live call with ``reason`` and wait until their records are finalised.

        Each session is asked to end (:meth:`CallSession.request_end`: reason ``shutdown``,
        the carrier socket closed with 1001); a stream that becomes live during the wait is
        asked too. Waits at most ``timeout_s`` seconds.

        Returns:
            How many calls were still live when the wait ended.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for session in list(self.live.values()):
                session.request_end(reason)
            left = len(self.live)
            if not left or loop.time() >= deadline:
                if left:
                    log.warning("%d calls still live after %.1f s of shutdown", left, timeout_s)
                return left
            await asyncio.sleep(0.02)

    def live_view(self, call_id: str) -> dict | None:
        """Transcript and events of a call in progress (for ``GET /calls/{id}``)."""
        session = self.live.get(call_id)
        if session is None:
            return None
        return {"transcript": list(session.transcript), "events": list(session.events)}


async def _refuse(ws: WebSocket, key: str, reason: str) -> None:
    await ws.accept()
    await ws.close(CLOSE_CODES[key], reason)


def public_stream_url(ws: WebSocket, settings: Settings) -> str:
    """The ``ws(s)://`` URL the carrier was given for this socket (what carriers sign).

    Built by :func:`gateway.api.urls.public_url` from the path's parameters, the same way the
    REST API built the URL it handed out.
    """
    p = ws.path_params
    return public_url(settings, ws, stream_path(p["carrier"], p["call_id"], p["token"]), websocket=True)


def twilio_signature_ok(ws: WebSocket, settings: Settings, token: str | None = None) -> bool:
    """Check Twilio's ``X-Twilio-Signature`` on the upgrade request with ``token`` (default
    ``GATEWAY_TWILIO_AUTH_TOKEN``; no token at all: True).

    Source: https://www.twilio.com/docs/usage/security#validating-requests (Media Streams
    sign the WebSocket request's URL with the account's auth token, no parameters).
    """
    token = token or settings.twilio_auth_token.get_secret_value()
    if not token:
        return True
    from twilio.request_validator import RequestValidator

    signature = ws.headers.get("x-twilio-signature", "")
    return bool(signature) and RequestValidator(token).validate(public_stream_url(ws, settings), {}, signature)


async def stream_endpoint(ws: WebSocket) -> None:
    """Serve one carrier media stream: check the URL, then run the call to its end."""
    services: Services = ws.app.state.services
    carrier = ws.path_params["carrier"]
    call_id = ws.path_params["call_id"]
    token = ws.path_params["token"]
    store = services.store
    if carrier not in CARRIERS:
        return await _refuse(ws, "bad_carrier", f"unknown carrier {carrier!r}")
    try:
        call = await asyncio.to_thread(store.check_stream_token, call_id, token)
    except UnknownCall:
        return await _refuse(ws, "unknown_call", "unknown call")
    except BadToken:
        return await _refuse(ws, "bad_token", "invalid stream token")
    except TokenExpired:
        return await _refuse(ws, "token_expired", "stream token expired")
    except CallNotConnectable:
        if services.outbound is not None:  # an ended outbound call must not stay up at the carrier
            services.outbound.hang_up_ended_soon(call_id)
        return await _refuse(ws, "not_connectable", "call already streaming or ended")
    if call.connection_type != carrier:
        return await _refuse(ws, "bad_carrier", f"this call streams over {call.connection_type}")
    if carrier == "twilio" and not await _twilio_stream_signed(services, ws, call):
        return await _refuse(ws, "bad_signature", "missing or invalid X-Twilio-Signature")
    if call_id in services.live or call_id in services.admitting:
        return await _refuse(ws, "not_connectable", "call already streaming")
    if services.live_calls() >= services.settings.max_calls:
        return await _refuse(ws, "at_capacity", "gateway at its live call limit; try again later")
    services.admitting.add(call_id)  # no await since the check: the slot is ours
    try:
        await _serve(services, ws, call, carrier)
    finally:
        services.admitting.discard(call_id)


async def _twilio_stream_signed(services: Services, ws: WebSocket, call: CallRecord) -> bool:
    """Twilio signs a stream's upgrade with the auth token of the account that placed the call:
    for a call placed through a carrier account, that account's token (credentials that no
    longer resolve: refused); otherwise ``GATEWAY_TWILIO_AUTH_TOKEN``."""
    token = None
    if call.carrier_account_id and services.outbound is not None:
        creds = await services.outbound.credentials(call)
        token = creds.get("auth_token") if creds else None
        if not token:
            return False
    return twilio_signature_ok(ws, services.settings, token)


async def _serve(services: Services, ws: WebSocket, call: CallRecord, carrier: str) -> None:
    """Start an admitted call and run it to its end (it leaves :attr:`Services.live` after).

    The call is claimed for this node (``GATEWAY_NODE_ID``) with its recording's path, so that
    if the process dies mid-call its next start-up finalises the call and links the file.
    """
    call_id = call.id
    wav = recording_path(services.settings, call_id) if call.call_config().recording_enabled else None
    try:
        await asyncio.to_thread(
            services.store.mark_call_started, call_id, node_id=services.settings.node_id,
            node_run=services.run_id, lease_s=services.settings.call_lease_s, recording_path=wav,
        )
    except IllegalTransition:
        return await _refuse(ws, "not_connectable", "call already streaming or ended")
    try:  # claimed: from here on the record is finalised whatever happens
        await ws.accept()
        session = build_session(services, call, carrier, ws)
    except BaseException as exc:  # the peer left during the handshake, a bug, or cancellation
        await _finalise_unserved(services, call_id, exc)
        raise
    services.live[call_id] = session
    services.admitting.discard(call_id)
    try:
        await session.run()
    finally:
        services.live.pop(call_id, None)


async def _finalise_unserved(services: Services, call_id: str, exc: BaseException, limit_s: float = 10.0) -> None:
    """Finalise a claimed call whose session never ran (``failed``, ``carrier_closed_before_start``).

    Shielded from a cancellation of the caller and bounded by ``limit_s``; a store error is
    logged (the start-up recovery of this node finalises the call then).
    """
    work = asyncio.ensure_future(asyncio.to_thread(
        services.store.finalise_call, call_id, status="failed", end_reason="carrier_closed_before_start",
        duration_ms=0, error_code="no_start", error_message=f"stream ended during the handshake ({type(exc).__name__})",
    ))
    try:
        await asyncio.shield(asyncio.wait_for(work, limit_s))
    except asyncio.CancelledError:
        pass  # the shielded write goes on; the caller re-raises its own cancellation
    except Exception:  # noqa: BLE001 - logged; recovery at the next start finalises it
        log.warning("could not finalise call %s after a failed handshake", call_id, exc_info=True)


async def _expire_calls(services: Services, every_s: float = 30.0) -> None:
    """The sweeper: every ``every_s``, the calls nobody connected to (stream token expired)
    become ``expired``, and calls whose process is gone are finalised as ``node_lost``: this
    node's calls from a run that stopped renewing them, and any node's whose lease lapsed
    (:mod:`gateway.store.recovery`). Each step's errors are logged; the loop goes on."""
    store, settings = services.store, services.settings
    while True:
        try:
            n = await asyncio.to_thread(store.expire_stale_calls)
            if n:
                log.info("expired %d calls nobody connected to", n)
        except Exception:  # noqa: BLE001 - keep the sweeper alive
            log.warning("expiring stale calls failed", exc_info=True)
        try:
            await asyncio.to_thread(recover_lost_calls, store, settings.node_id, run_id=services.run_id)
            await asyncio.to_thread(sweep_lapsed_calls, store, settings.node_id, lease_s=settings.call_lease_s,
                                    live=set(services.live) | services.admitting)  # fmt: skip
        except Exception:  # noqa: BLE001 - keep the sweeper alive
            log.warning("finalising lost calls failed", exc_info=True)
        await asyncio.sleep(every_s)


async def _renew_leases(services: Services) -> None:
    """Every third of ``GATEWAY_CALL_LEASE_S``, renew the leases of this process's live calls
    (one ``UPDATE`` for all of them, bounded by the interval; errors logged, never fatal)."""
    store, lease_s = services.store, services.settings.call_lease_s
    every_s = lease_s / 3
    while True:
        await asyncio.sleep(every_s)
        ids = set(services.live) | services.admitting
        if not ids:
            continue
        try:
            await asyncio.wait_for(
                asyncio.to_thread(store.renew_leases, ids, run_id=services.run_id, lease_s=lease_s), every_s
            )
        except Exception:  # noqa: BLE001 - a timeout or a database error: the next renewal may land
            log.warning("renewing the leases of %d live calls failed", len(ids), exc_info=True)


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               engines: LocalEngines | None = None, warm_up: bool = True) -> FastAPI:
    """Build the gateway's ASGI app.

    Args:
        settings: configuration (default: from ``GATEWAY_*`` environment variables).
        store: an open store (default: one on ``settings.database_url``).
        engines: the local agent's speech engines (default: a pool of ``GATEWAY_LOCAL_WORKERS``
            worker processes, owned and closed by this app; one passed in is left running).
        warm_up: load the local agent's models at start-up rather than on the first call.

    Raises:
        ValueError: ``settings.public_url`` is not ``http(s)://host[:port][/prefix]``.
    """
    from gateway.api import create_api

    settings = settings or Settings()
    check_public_url(settings.public_url)  # a model_copy(update=…) of settings skips validators
    store = store or Store(settings.database_url)
    services = Services(
        settings=settings,
        store=store,
        vad=VadFactory(
            settings.vad,
            threshold=settings.vad_threshold,
            webrtc_mode=settings.webrtc_mode,
            min_speech_ms=settings.vad_min_speech_ms,
            min_silence_ms=settings.vad_min_silence_ms,
            barge_in_min_speech_ms=settings.barge_in_min_speech_ms,
            energy_floor_dbfs=settings.vad_energy_floor_dbfs,
            pregate=settings.vad_pregate,
            batched=settings.media_engine == "frame",  # per tick, the engine batches Silero itself
        ),
        engines=engines or LocalEngines(workers=settings.local_workers),
        media_engine=MediaEngine(settings.engine_tick_ms) if settings.media_engine == "tick" else None,
    )
    owns_engines = engines is None
    services.outbound = OutboundService(store, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(store.create_all)
        replayed = await asyncio.to_thread(replay_spool, store.finalise_call, settings.spool_path)
        if replayed:
            log.warning("stored %d spooled call records", replayed)
        # before any stream; calls a live twin may still renew are left to the sweeper's checks
        lost = await asyncio.to_thread(recover_lost_calls, store, settings.node_id, run_id=services.run_id)
        if lost:
            log.warning("finalised %d calls a previous run of node %s left in progress", len(lost), settings.node_id)
        if warm_up and settings.warm_up:
            services.warm = asyncio.create_task(services.engines.ready())  # worker processes load
        expiry = asyncio.create_task(_expire_calls(services, min(30.0, settings.call_lease_s / 3)))
        renewal = asyncio.create_task(_renew_leases(services))
        services.clients = AppClients.from_settings(settings)  # one TLS context, not one per call
        try:
            yield
        finally:
            expiry.cancel()
            # uvicorn closes live sockets (1012) before this runs unless the server is a
            # gateway.serving.GatewayServer, which ends the calls first; this catches the rest.
            await services.end_live_calls("shutdown", timeout_s=settings.shutdown_timeout_s)
            renewal.cancel()  # after the calls: their leases hold while they end
            await asyncio.gather(expiry, renewal, return_exceptions=True)  # both end at their next await
            if services.warm is not None and not services.warm.done():
                services.warm.cancel()  # the pool goes on loading; nothing waits for it here
            if owns_engines:
                services.engines.close()  # kills the worker processes (bounded: ~2 s at most)
            await services.outbound.aclose()  # after the calls: their hang-ups are done
            clients, services.clients = services.clients, None
            if clients is not None:  # after the calls: their tool requests are done or cancelled
                await clients.aclose()

    app = create_api(store, settings, live_view=services.live_view, live_calls=services.live_calls,
                     # outbound calls need the public URL carriers reach us at (never a Host header)
                     on_outbound_call=services.outbound.start if settings.public_url else None,
                     lifespan=lifespan)  # fmt: skip
    app.router.routes.append(WebSocketRoute("/stream/{carrier}/{call_id}/{token}", stream_endpoint))
    app.add_route("/metrics", services.metrics.endpoint, methods=["GET"], include_in_schema=False)
    app.state.api.outbound = services.outbound
    app.state.api.live_session = services.live.get
    app.state.services = services
    return app
