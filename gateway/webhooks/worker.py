"""The webhook delivery worker: claims due outbox rows, signs and POSTs them, records outcomes.

One worker per process, started by the app's lifespan. Each pass claims due rows with a
lease (:meth:`~gateway.store.webhook_delivery.WebhookDeliveryMixin.claim_webhooks`; the
lease covers the request's time limit twice over, plus rendering and writes), delivers
them concurrently (at most ``concurrency`` at once) and polls again every ``poll_s``.

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
  with no call-URL secret): retried on the Standard Webhooks schedule
  (:func:`~gateway.webhooks.schedule.retry_delay_s`), ``failed`` once it is spent.

Shutdown (:meth:`WebhookWorker.aclose`) stops claiming and lets attempts in flight finish
(each bounded by ``timeout_s``), so a restart neither repeats nor loses one; a process
killed mid-attempt leaves its rows leased, and they are retried when the lease lapses.
Logs name the row, event, endpoint id and status, never a URL (it may carry a token) or a
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

from gateway.netpolicy import OutboundPolicy, OutboundRefused
from gateway.outbound import outbound_client
from gateway.store.webhook_delivery import OutboxDelivery
from gateway.webhooks.schedule import encode_body, retry_delay_s, signed_request

__all__ = ["WebhookWorker", "ReportRenderer"]

log = logging.getLogger("gateway.webhooks")

#: ``await render(call_id)`` → the ``data`` of a ``call.report`` (the call's full record as
#: JSON), or ``None`` when the call no longer exists.
ReportRenderer = Callable[[str], "Awaitable[dict[str, Any] | None]"]

_USER_AGENT = "gateway-webhooks/1 (Standard Webhooks)"


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
        lease_s: how long a claim holds (s); default twice ``timeout_s`` plus 10 s.
        rng: jitter source (tests seed one).
    """

    def __init__(
        self, store: Any, policy: OutboundPolicy, *, render: ReportRenderer, retry_scale: float = 1.0,
        timeout_s: float = 10.0, poll_s: float = 1.0, concurrency: int = 16, lease_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self._store = store
        self._render = render
        self._scale = retry_scale
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._rng = rng or random.Random()
        self.owner = f"whw_{uuid.uuid4().hex}"
        self.lease_s = lease_s or 2 * timeout_s + 10.0
        self._client = outbound_client(policy, timeout=httpx.Timeout(timeout_s))
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
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
        """Claim and deliver until :meth:`aclose`. A failing pass is logged; the loop goes on."""
        while not self._stopping.is_set():
            claimed = 0
            free = self._concurrency - len(self._inflight)
            if free > 0:
                try:
                    items = await asyncio.to_thread(self._store.claim_webhooks, self.owner,
                                                    lease_s=self.lease_s, limit=free)  # fmt: skip
                except Exception:  # noqa: BLE001 - a database error: the next pass may work
                    log.warning("claiming webhook deliveries failed", exc_info=True)
                    items = []
                claimed = len(items)
                for item in items:
                    task = asyncio.create_task(self._attempt(item), name=f"webhook-{item.id}")
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
            if claimed == 0 or claimed == free:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._poll_s)
            else:
                await asyncio.sleep(0)

    async def aclose(self, *, timeout_s: float | None = None) -> None:
        """Stop claiming, let attempts in flight finish (at most ``timeout_s``, default the
        attempt limit plus 5 s), cancel what is left, close the HTTP client. Idempotent."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight:
            done, pending = await asyncio.wait(set(self._inflight), timeout=timeout_s or self._timeout_s + 5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._client.aclose()

    # -- one attempt ---------------------------------------------------------------------

    async def _attempt(self, item: OutboxDelivery) -> None:
        try:
            await self._deliver(item)
        except Exception:  # noqa: BLE001 - the lease lapses and the row is tried again
            log.warning("webhook %s (%s): attempt failed unexpectedly", item.id, item.event_type, exc_info=True)

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
        body = encode_body(payload)
        headers = {**signed_request(item.id, item.secret, body), "user-agent": _USER_AGENT}
        status, error = await self._post(item.url, body, headers)
        if status is not None and 200 <= status < 300:
            await self._finish(item, "delivered", http_status=status)
        elif status == 410:
            await self._finish(item, "disabled", http_status=410, error="410 Gone")
            n = await asyncio.to_thread(self._store.disable_webhook_target, item, "the endpoint answered 410 Gone")
            log.warning("webhook %s: %s answered 410 Gone; disabled (%d pending deliveries dropped)",
                        item.id, item.endpoint_id or f"call {item.call_id}'s webhookUrl", n)  # fmt: skip
        else:
            await self._retry(item, status, error or f"HTTP {status}")

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """``(status, None)`` for a response, ``(None, error)`` for none (time limit included)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream("POST", url, content=body, headers=headers) as resp:
                    return resp.status_code, None
        except TimeoutError:
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
        data = await self._render(item.call_id) if item.call_id else None
        if data is None:
            await self._finish(item, "failed", error="the call no longer exists")
            return None
        payload = {"type": item.event_type, "timestamp": self._store.now().isoformat(), "data": data}
        if not await asyncio.to_thread(self._store.save_webhook_payload, item.id, self.owner, payload):
            return None
        return payload

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
        done = await asyncio.to_thread(self._store.finish_webhook, item.id, self.owner, status=status, **kw)
        key = count or status
        self.counts[key] = self.counts.get(key, 0) + 1
        if not done:
            log.warning("webhook %s: lease lost before its outcome (%s) was recorded", item.id, status)

