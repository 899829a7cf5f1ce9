"""The ASGI application: REST API, per-call media-stream WebSockets, shared services.

``create_app(settings)`` builds the app: the REST API's FastAPI app
(:func:`gateway.api.create_api`) plus the media-stream WebSocket, ``/metrics`` and the MCP
endpoint ``/mcp`` (streamable HTTP behind the API key, :class:`gateway.mcp.McpHttp`). Its lifespan opens the store, finalises the
calls a previous run of this node left in progress (``node_lost``, see
:mod:`gateway.store.recovery`; its sweeper finalises later the calls whose process is gone and
whose lease lapsed, and it renews the leases of its own live calls), loads the VAD model (and the local agent's speech engines, in
the background), starts the webhook delivery worker (:mod:`gateway.webhooks`, the outbox) and
keeps the registry of live calls. On shutdown (SIGTERM, served by
:class:`gateway.serving.GatewayServer`) live calls end with reason ``shutdown`` and their
sockets close with 1001 "going away"; the gateway waits up to ``GATEWAY_SHUTDOWN_TIMEOUT_S``
for their records.

Stream URL: ``/stream/{carrier}/{call_id}/{token}``. The token is in the path because Twilio
drops query strings. Before a socket is served: the carrier must be known and match the call's
connection type, the call must exist, the token must match and not have expired, and the call
must not already be streaming (the rules, shared by every media listener, are in
:mod:`gateway.streams`). A refused socket is accepted and then closed at once with an
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

A WebRTC call (``connectionType: "webrtc"``) has an offer URL instead,
``POST /webrtc/{call_id}/{token}/offer`` (:mod:`gateway.webrtc.offer`): the same admission
rules, answered as HTTP errors; its call runs in a task of ``Services.webrtc``.

With ``GATEWAY_MEDIA_LISTENER=picows`` the lifespan also starts the picows media listener
(:mod:`gateway.picows_listener`) on ``GATEWAY_MEDIA_PORT``, and the API's stream URLs point at
it; this route keeps serving the same streams under the same rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.api.urls import media_base, public_url, stream_path
from gateway.config import Settings, check_public_url
from gateway.dialer.service import OutboundService
from gateway.llm.base import AgentConfig, ModelBridge
from gateway.llm.local.remote import LocalEngines
from gateway.mcp import McpHttp
from gateway.metrics import GatewayMetrics
from gateway.outbound import AppClients
from gateway.retention import RetentionPurger
from gateway.postcall import PostCallWorker
from gateway.session import CallSession
from gateway.store.spool import replay_spool
from gateway.store import Store, recover_lost_calls, sweep_lapsed_calls
from gateway.streams import CLOSE_CODES, StreamRequest, run_stream, twilio_signature_ok  # noqa: F401 - re-exported
from gateway.transport import StarletteChannel, StarletteTransport  # noqa: F401 - re-exported (it lived here)
from gateway.engine import MediaEngine
from gateway.vadrun import VadFactory
from gateway.webhooks import WebhookWorker, call_report_renderer
from gateway.webrtc.offer import offer_endpoint

if TYPE_CHECKING:
    from gateway.picows_listener import PicowsMediaListener
    from gateway.webrtc.offer import WebRtcCalls

__all__ = ["create_app", "Services", "CLOSE_CODES", "StarletteTransport"]

log = logging.getLogger("gateway.app")

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
    #: The picows media listener (``GATEWAY_MEDIA_LISTENER=picows``) while the app runs.
    media: PicowsMediaListener | None = None
    #: The shared HTTP clients (tools, the local agent's LLM endpoint), open while the app runs.
    clients: AppClients | None = None
    #: Outbound calls through tenants' carrier accounts (placing, callbacks, hang-up, DTMF).
    outbound: OutboundService | None = None
    #: Delivers the webhook outbox (:mod:`gateway.webhooks`) while the app runs.
    webhooks: WebhookWorker | None = None
    #: Computes ended calls' summaries and fields (:mod:`gateway.postcall`) while the app runs.
    postcall: PostCallWorker | None = None
    #: Deletes call data older than ``GATEWAY_RETENTION_DAYS`` (:mod:`gateway.retention`); ``None``: kept.
    retention: RetentionPurger | None = None
    #: The WebRTC calls' tasks (:mod:`gateway.webrtc.offer`), made at the first offer.
    webrtc: WebRtcCalls | None = None
    metrics: GatewayMetrics = field(init=False)
    #: This process's run id, recorded with each stream it claims and each lease renewal
    #: (:mod:`gateway.store.recovery`): a restart, or a twin with the same node id, never
    #: takes a call this run still renews.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.metrics = GatewayMetrics(lambda: len(self.live))
        if self.media_engine is not None:
            self.metrics.watch_engine(self.media_engine)
        self.metrics.watch_webhooks(lambda: self.webhooks.counts if self.webhooks is not None else {})

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


def public_stream_url(ws: WebSocket, settings: Settings) -> str:
    """The ``ws(s)://`` URL of this Starlette route's socket as the carrier was given it (what
    carriers sign), built by :func:`gateway.api.urls.public_url` from the path's parameters."""
    p = ws.path_params
    return public_url(settings, ws, stream_path(p["carrier"], p["call_id"], p["token"]), websocket=True)


async def stream_endpoint(ws: WebSocket) -> None:
    """Serve one carrier media stream: admit it (:func:`gateway.streams.run_stream`), then run
    the call to its end."""
    services: Services = ws.app.state.services
    p = ws.path_params
    req = StreamRequest(p["carrier"], p["call_id"], p["token"], ws.headers, public_stream_url(ws, services.settings))
    await run_stream(services, req, StarletteChannel(ws))


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
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that lands as
            # the renewal finishes, and this loop (so the app's shutdown) would never end.
            async with asyncio.timeout(every_s):
                await asyncio.to_thread(store.renew_leases, ids, run_id=services.run_id, lease_s=lease_s)
        except Exception:  # noqa: BLE001 - a timeout or a database error: the next renewal may land
            log.warning("renewing the leases of %d live calls failed", len(ids), exc_info=True)


def _services(settings: Settings, store: Store, engines: LocalEngines | None) -> Services:
    """The app's shared services from its settings (the VAD factory, the media engine, the pool)."""
    return Services(
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


async def _start_up(services: Services, *, warm_up: bool) -> tuple[asyncio.Task, asyncio.Task]:
    """The lifespan's start: schema, spooled records, lost calls, warm-up, the periodic tasks,
    the shared HTTP clients and (``GATEWAY_MEDIA_LISTENER=picows``) the picows listener."""
    settings, store = services.settings, services.store
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
    services.webhooks = WebhookWorker.from_settings(store, settings, render=call_report_renderer(store, settings))
    services.webhooks.start()
    services.postcall = PostCallWorker.from_settings(store, settings)
    services.postcall.start()
    services.retention = RetentionPurger.from_settings(store, settings)
    if services.retention is not None:
        services.retention.start()
    if settings.media_listener == "picows":
        from gateway.picows_listener import PicowsMediaListener

        services.media = PicowsMediaListener(services)
        await services.media.start()
    return expiry, renewal


async def _close(name: str, close: Callable[[], Awaitable[object]], timeout_s: float) -> None:
    """Await ``close()`` for at most ``timeout_s`` (then it is cancelled); a failure or an
    overrun is logged, never raised, so the rest of the shutdown still runs."""
    try:
        async with asyncio.timeout(timeout_s):
            await close()
    except TimeoutError:
        log.warning("shutdown: %s did not close within %g s; going on without it", name, timeout_s)
    except Exception:  # noqa: BLE001 - e.g. the database is down: the other parts still close
        log.exception("shutdown: closing %s failed; going on", name)


async def _shut_down(services: Services, tasks: tuple[asyncio.Task, asyncio.Task], *, owns_engines: bool) -> None:
    """The lifespan's end: live calls ended (``shutdown``), then the listener, the periodic tasks,
    the pool, the outbound service and the HTTP clients, in that order. From the post-call
    worker on, each part's close is bounded and a failing one is logged and passed over
    (:func:`_close`): a database down at shutdown does not leave the rest open."""
    settings = services.settings
    expiry, renewal = tasks
    expiry.cancel()
    if services.media is not None:
        services.media.stop_listening()  # no new streams while the calls end
    # uvicorn closes live sockets (1012) before this runs unless the server is a
    # gateway.serving.GatewayServer, which ends the calls first; this catches the rest.
    await services.end_live_calls("shutdown", timeout_s=settings.shutdown_timeout_s)
    if services.webrtc is not None:  # WebRTC calls still connecting end too; every task is awaited
        await services.webrtc.aclose(timeout_s=settings.shutdown_timeout_s)
    if services.media is not None:  # what is left (streams not yet live) closes with 1001
        await services.media.aclose(timeout_s=settings.shutdown_timeout_s)
    renewal.cancel()  # after the calls: their leases hold while they end
    await asyncio.gather(expiry, renewal, return_exceptions=True)  # both end at their next await
    if services.warm is not None and not services.warm.done():
        services.warm.cancel()  # the pool goes on loading; nothing waits for it here
    if owns_engines:
        services.engines.close()  # kills the worker processes (bounded: ~2 s at most)
    bound = settings.shutdown_timeout_s
    if services.postcall is not None:  # after the calls; work in flight is handed back for the next start
        await _close("the post-call worker", services.postcall.aclose, bound)
    if services.retention is not None:
        await _close("the retention purge", services.retention.aclose, bound)
    if services.webhooks is not None:  # after the calls: their last events are in the outbox
        # attempts in flight finish; the rest wait for the next start. Its own waits (loop,
        # attempts, threads) are each bounded by the attempt limit + 5 s.
        await _close("the webhook worker", services.webhooks.aclose, 3 * (settings.webhook_timeout_s + 5.0) + bound)
    # after the calls: their hang-ups are done (placements in flight: the dialer's limit + 1 s, then 5 s)
    await _close("the outbound service", services.outbound.aclose, settings.dialer_timeout_s + 6.0 + bound)
    clients, services.clients = services.clients, None
    if clients is not None:  # after the calls: their tool requests are done or cancelled
        await _close("the HTTP clients", clients.aclose, bound)


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
    if settings.media_listener == "picows":
        media_base(settings)  # raises ValueError: no base for its stream URLs
    store = store or Store(settings.database_url)
    services = _services(settings, store, engines)
    owns_engines = engines is None
    services.outbound = OutboundService(store, settings)

    mcp = McpHttp()  # the MCP endpoint (/mcp): its tools call this app's routes in process

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = await _start_up(services, warm_up=warm_up)
        try:
            async with mcp.lifespan():
                yield
        finally:
            await _shut_down(services, tasks, owns_engines=owns_engines)

    app = create_api(store, settings, live_view=services.live_view, live_calls=services.live_calls,
                     # outbound calls need the public URL carriers reach us at (never a Host header)
                     on_outbound_call=services.outbound.start if settings.public_url else None,
                     lifespan=lifespan)  # fmt: skip
    app.router.routes.append(WebSocketRoute("/stream/{carrier}/{call_id}/{token}", stream_endpoint))
    app.router.routes.append(Route("/webrtc/{call_id}/{token}/offer", offer_endpoint, methods=["POST"]))
    app.router.routes.append(Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]))
    app.add_route("/metrics", services.metrics.endpoint, methods=["GET"], include_in_schema=False)
    app.state.api.outbound = services.outbound
    app.state.api.live_session = services.live.get
    app.state.services = services
    return app
