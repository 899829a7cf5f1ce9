"""The webhook delivery worker: claims due outbox rows, signs and POSTs them, records outcomes.

One worker per process, started by the app's lifespan. Each pass claims due rows with a
lease (:meth:`~gateway.store.webhook_delivery.WebhookDeliveryMixin.claim_webhooks`; the
lease covers the request's time limit twice over, plus rendering and writes), delivers
them concurrently (at most ``concurrency`` at once, at most ``per_destination`` to one
endpoint or per-call URL origin, one while that destination's last attempt timed out: a
dead endpoint of one tenant cannot hold every slot), and claims again at once when a pass
filled every free slot, else when an attempt finishes or ``poll_s`` has passed. Blocking
store calls and report rendering run on the worker's own few threads (:func:`offload`),
not asyncio's default executor the media path uses; a ``call.report`` is rendered once
for all the call's destinations.

An attempt:

* the destination is resolved, every address checked with the operator's
  :class:`~gateway.netpolicy.OutboundPolicy`, and the connection made to a checked address
  (:func:`gateway.outbound.outbound_client`): private, loopback and link-local targets are
  refused unless ``GATEWAY_OUTBOUND_ALLOW`` names them; redirects are not followed;
* the body is the row's payload (a ``call.report`` is rendered at its first attempt and
  stored, so every attempt sends the same bytes), signed per attempt
  (:func:`~gateway.webhooks.schedule.signed_request`) with the destination's secret;
* the whole attempt (DNS, connect, request, response head) has ``timeout_s``; the
  response body is not read;
* 2xx: ``delivered``. 410: the destination is disabled
  (:meth:`~gateway.store.webhook_delivery.WebhookDeliveryMixin.disable_webhook_target`).
  Anything else (another status, a refused target, a timeout, a connection error, a tenant
  with no call-URL secret, an unexpected error such as the report failing to render):
  retried on the Standard Webhooks schedule
  (:func:`~gateway.webhooks.schedule.retry_delay_s`), ``failed`` once it is spent.

Shutdown (:meth:`WebhookWorker.aclose`) stops claiming and lets attempts in flight finish
(each bounded by ``timeout_s``; a claim stuck in the database is abandoned after the same
limit), so a restart neither repeats nor loses one; a process
killed mid-attempt leaves its rows leased, and they are retried when the lease lapses.
Logs name the row, event, endpoint id and status, never a URL (it may carry a token) or a
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, TypeVar

import httpx

from gateway.clock import iso_utc
from gateway.netpolicy import OutboundPolicy, OutboundRefused
from gateway.outbound import outbound_client
from gateway.store.webhook_delivery import OutboxDelivery
from gateway.webhooks.schedule import encode_body, retry_delay_s, signed_request

__all__ = ["WebhookWorker", "ReportRenderer", "offload"]

T = TypeVar("T")

log = logging.getLogger("gateway.webhooks")

#: ``await render(call_id)`` → the ``data`` of a ``call.report`` (the call's full record as
#: JSON), or ``None`` when the call no longer exists.
ReportRenderer = Callable[[str], "Awaitable[dict[str, Any] | None]"]

_USER_AGENT = "gateway-webhooks/1 (Standard Webhooks)"


#: How long (s) and for how many calls a rendered report is kept for its other destinations.
_RENDER_KEEP_S = 30.0
_RENDER_KEEP = 8
#: Destinations remembered as slow (their last attempt timed out) at most.
_SLOW_KEEP = 1024

_OFFLOAD: ContextVar[Executor | None] = ContextVar("webhook_offload", default=None)


async def offload(fn: Callable[..., T], /, *args: Any, **kw: Any) -> T:
    """``fn(*args, **kw)`` in a thread: the webhook worker's own pool when called from its
    tasks (so its blocking store calls never queue behind the media path's, nor it behind
    them), asyncio's default executor otherwise."""
    return await asyncio.get_running_loop().run_in_executor(_OFFLOAD.get(), functools.partial(fn, *args, **kw))


def _signed(message_id: str, secret: str, payload: Any) -> tuple[bytes, dict[str, str]]:
    body = encode_body(payload)
    return body, {**signed_request(message_id, secret, body), "user-agent": _USER_AGENT}


class WebhookWorker:
    """Delivers the outbox's rows (see the module docstring).

    Args:
        store: the :class:`~gateway.store.Store` (its outbox and endpoints).
        policy: where deliveries may connect.
        render: builds ``call.report`` bodies (:data:`ReportRenderer`).
        retry_scale: multiplies the retry schedule (1: the standard one).
        timeout_s: each attempt's time limit (s).
        poll_s: how often (s) the outbox is polled when idle.
        concurrency: attempts in flight at most.
        per_destination: attempts in flight at most per destination (an endpoint, or a
            per-call URL's origin); 1 while its last attempt timed out. Default
            ``concurrency // 4`` (at least 1).
        lease_s: how long a claim holds (s); default twice ``timeout_s`` plus 10 s.
        threads: the worker's own threads for its blocking store calls and report rendering.
        rng: jitter source (tests seed one).
    """

    def __init__(
        self, store: Any, policy: OutboundPolicy, *, render: ReportRenderer, retry_scale: float = 1.0,
        timeout_s: float = 10.0, poll_s: float = 1.0, concurrency: int = 16, per_destination: int | None = None,
        lease_s: float | None = None, threads: int = 4, rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self._store = store
        self._render = render
        self._scale = retry_scale
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._per_dest = per_destination or max(1, concurrency // 4)
        self._rng = rng or random.Random()
        self.owner = f"whw_{uuid.uuid4().hex}"
        self.lease_s = lease_s or 2 * timeout_s + 10.0
        self._client = outbound_client(policy, timeout=httpx.Timeout(timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhooks")
        self._inflight: set[asyncio.Task[None]] = set()
        self._busy: Counter[tuple[str, str]] = Counter()
        self._timeouts: dict[tuple[str, str], int] = {}
        self._renders: OrderedDict[str, tuple[float, asyncio.Future[dict[str, Any] | None]]] = OrderedDict()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Attempts made by this worker, by outcome (``delivered``, ``retry``, ``failed``, ``disabled``).
        self.counts: dict[str, int] = {}

    @classmethod
    def from_settings(cls, store: Any, settings: Any, *, render: ReportRenderer) -> WebhookWorker:
        """A worker with the settings' outbound policy (``outbound_allow``), retry scale,
        request time limit and poll interval."""
        return cls(
            store, OutboundPolicy.from_settings(settings), render=render, retry_scale=settings.webhook_retry_scale,
            timeout_s=settings.webhook_timeout_s, poll_s=settings.webhook_poll_s,
        )  # fmt: skip

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="webhook-worker")
        return self._task

    async def run(self) -> None:
        """Claim and deliver until :meth:`aclose`. A failing pass is logged; the loop goes on.

        A pass that filled every free slot is followed by another at once; otherwise the
        worker waits ``poll_s``, or less: until an attempt finishes (a slot, or a busy
        destination, came free) or :meth:`aclose`."""
        _OFFLOAD.set(self._pool)  # this task's attempts (and the renderer) use the worker's threads
        while not self._stopping.is_set():
            self._wake.clear()
            free = self._concurrency - len(self._inflight)
            if free > 0 and await self._claim(free) == free:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can drop a cancel
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()

    async def _claim(self, free: int) -> int:
        """Claim up to ``free`` rows, skipping busy destinations, and start their attempts;
        rows over a destination's limit are released. Returns how many were claimed."""
        skip: dict[str, list[str]] = {"skip_endpoints": [], "skip_origins": []}
        for dest, n in self._busy.items():
            if n >= self._limit(dest):
                skip["skip_endpoints" if dest[0] == "endpoint" else "skip_origins"].append(dest[1])
        try:
            items = await offload(self._store.claim_webhooks, self.owner, lease_s=self.lease_s, limit=free,
                                  **{k: v for k, v in skip.items() if v})  # fmt: skip
        except Exception:  # noqa: BLE001 - a database error: the next pass may work
            log.warning("claiming webhook deliveries failed", exc_info=True)
            return 0
        over = []
        for item in items:
            dest = item.destination
            if self._busy[dest] >= self._limit(dest):
                over.append(item.id)
                continue
            self._busy[dest] += 1
            task = asyncio.create_task(self._attempt(item), name=f"webhook-{item.id}")
            self._inflight.add(task)
            task.add_done_callback(functools.partial(self._attempt_done, dest))
        if over:
            try:
                await offload(self._store.release_webhooks, over, self.owner)
            except Exception:  # noqa: BLE001 - they come back when their leases lapse
                log.warning("releasing %d webhook deliveries failed", len(over), exc_info=True)
        return len(items)

    def _limit(self, dest: tuple[str, str]) -> int:
        return 1 if self._timeouts.get(dest) else self._per_dest

    def _attempt_done(self, dest: tuple[str, str], task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._busy[dest] -= 1
        if self._busy[dest] <= 0:
            del self._busy[dest]
        self._wake.set()

    async def aclose(self, *, timeout_s: float | None = None) -> None:
        """Stop claiming, let attempts in flight finish (at most ``timeout_s``, default the
        attempt limit plus 5 s), cancel what is left, close the HTTP client and the worker's
        threads. The claiming loop gets ``timeout_s`` too (a claim stuck in the database is
        abandoned). Idempotent."""
        limit = timeout_s or self._timeout_s + 5.0
        self._stopping.set()
        self._wake.set()
        if self._task is not None and not self._task.done():
            _, pending = await asyncio.wait({self._task}, timeout=limit)
            for task in pending:
                task.cancel()
                log.warning("the webhook worker's loop did not stop in %.3g s; cancelled", limit)
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            done, pending = await asyncio.wait(set(self._inflight), timeout=limit)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for _, render in self._renders.values():
            render.cancel()
        self._renders.clear()
        await self._client.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(TimeoutError):  # a thread stuck in the database is left behind
            await asyncio.wait_for(asyncio.to_thread(self._pool.shutdown, wait=True), limit)

    # -- one attempt ---------------------------------------------------------------------

    async def _attempt(self, item: OutboxDelivery) -> None:
        """One attempt; a bug (the renderer raising, say) is a failed attempt like any other,
        so the row backs off and ends ``failed`` instead of coming back at each lease."""
        try:
            await self._deliver(item)
        except Exception as exc:  # noqa: BLE001 - counted as a failed attempt
            log.warning("webhook %s (%s): attempt failed unexpectedly", item.id, item.event_type, exc_info=True)
            try:
                await self._retry(item, None, f"internal error ({type(exc).__name__}); see the gateway's log")
            except Exception:  # noqa: BLE001 - the lease lapses and the row is tried again
                log.warning("webhook %s: the failed attempt could not be recorded", item.id, exc_info=True)

    async def _deliver(self, item: OutboxDelivery) -> None:
        if item.url is None:
            await self._finish(item, "disabled", error="endpoint deleted or disabled")
            return
        if item.secret is None:
            await self._retry(item, None, "no signing secret for per-call webhook URLs (POST /webhook-call-secret)")
            return
        payload = item.payload if item.payload is not None else await self._report(item)
        if payload is None:
            return
        if item.event_type == "call.report":  # a whole record (~0.7 MB for an hour): off the loop
            body, headers = await offload(_signed, item.id, item.secret, payload)
        else:
            body, headers = _signed(item.id, item.secret, payload)
        status, error = await self._post(item.destination, item.url, body, headers)
        if status is not None and 200 <= status < 300:
            await self._finish(item, "delivered", http_status=status)
        elif status == 410:
            await self._finish(item, "disabled", http_status=410, error="410 Gone")
            n = await offload(self._store.disable_webhook_target, item, "the endpoint answered 410 Gone")
            log.warning("webhook %s: %s answered 410 Gone; disabled (%d pending deliveries dropped)",
                        item.id, item.endpoint_id or f"call {item.call_id}'s webhookUrl", n)  # fmt: skip
        else:
            await self._retry(item, status, error or f"HTTP {status}")

    async def _post(
        self, dest: tuple[str, str], url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None]:
        """``(status, None)`` for a response, ``(None, error)`` for none (time limit included).
        A time-out marks ``dest`` slow (one attempt in flight) until it answers again."""
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream("POST", url, content=body, headers=headers) as resp:
                    self._timeouts.pop(dest, None)
                    return resp.status_code, None
        except TimeoutError:
            if len(self._timeouts) >= _SLOW_KEEP:  # destinations gone quiet for good: forget them
                self._timeouts.clear()
            self._timeouts[dest] = self._timeouts.get(dest, 0) + 1
            return None, f"no response in {self._timeout_s:g} s"
        except httpx.HTTPError as exc:
            cause = exc.__cause__
            while cause is not None and not isinstance(cause, OutboundRefused):
                cause = cause.__cause__
            if isinstance(cause, OutboundRefused):
                return None, f"refused by the outbound policy: {cause}"
            return None, f"{type(exc).__name__}: {exc}"[:500]

    async def _report(self, item: OutboxDelivery) -> dict[str, Any] | None:
        """Render and store a ``call.report`` body; ``None``: not sent now (call gone: failed;
        lease lost: left to its new holder)."""
        data = await self._rendered(item.call_id) if item.call_id else None
        if data is None:
            await self._finish(item, "failed", error="the call no longer exists")
            return None
        payload = {"type": item.event_type, "timestamp": iso_utc(self._store.now()), "data": data}
        if not await offload(self._store.save_webhook_payload, item.id, self.owner, payload):
            return None
        return payload

    async def _rendered(self, call_id: str) -> dict[str, Any] | None:
        """The call's report data, rendered once for all its destinations: a render is shared
        while it runs and kept :data:`_RENDER_KEEP_S` after (at most :data:`_RENDER_KEEP` calls);
        one that raised is not kept."""
        now = time.monotonic()
        while self._renders:
            oldest = next(iter(self._renders.values()))
            if len(self._renders) < _RENDER_KEEP and oldest[0] > now - _RENDER_KEEP_S:
                break
            self._renders.popitem(last=False)
        kept = self._renders.get(call_id)
        if kept is None or (kept[1].done() and (kept[1].cancelled() or kept[1].exception() is not None)):
            kept = (now, asyncio.ensure_future(self._render(call_id)))
            self._renders[call_id] = kept
        return await asyncio.shield(kept[1])  # an attempt cancelled leaves the render to the others

    async def _retry(self, item: OutboxDelivery, status: int | None, error: str) -> None:
        delay = retry_delay_s(item.attempts + 1, scale=self._scale, rng=self._rng)
        if delay is None:
            await self._finish(item, "failed", http_status=status, error=error)
            log.warning("webhook %s (%s): failed after %d attempts: %s", item.id, item.event_type,
                        item.attempts + 1, error)  # fmt: skip
            return
        when = self._store.now() + timedelta(seconds=delay)
        await self._finish(item, "pending", http_status=status, error=error, next_attempt_at=when, count="retry")
        log.info("webhook %s (%s): attempt %d failed (%s); next in %.3g s", item.id, item.event_type,
                 item.attempts + 1, error, delay)  # fmt: skip

    async def _finish(self, item: OutboxDelivery, status: str, *, count: str | None = None, **kw: Any) -> None:
        done = await offload(self._store.finish_webhook, item.id, self.owner, status=status, **kw)
        key = count or status
        self.counts[key] = self.counts.get(key, 0) + 1
        if not done:
            log.warning("webhook %s: lease lost before its outcome (%s) was recorded", item.id, status)

