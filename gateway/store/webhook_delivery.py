"""The delivery side of the webhook outbox: claims with a lease, and each attempt's outcome.

A worker claims due rows (``pending``, ``next_attempt_at`` past, no live lease) by a
conditional ``UPDATE`` that sets its own ``lease_owner`` and ``lease_until``; two workers
(two nodes, or a restart overlapping the old process) cannot both hold a row. Every outcome
is written only while the worker still holds the lease (``WHERE lease_owner = me``): a
worker whose lease lapsed (it hung past the lease) has its late result dropped, the row
having gone to whoever claimed it next. A worker that dies holding leases loses nothing:
the rows become claimable when the leases lapse (at-least-once: a request the receiver got
but whose answer was never recorded is sent again, with the same ``webhook-id``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, not_, or_, select, update

from gateway.store.base import StoreBase
from gateway.store.helpers import _rowcount
from gateway.store.outbox import OutboxMessage, WebhookEndpoint, write_call_report

__all__ = ["OutboxDelivery", "OutboxRecord", "WebhookDeliveryMixin", "url_origin"]


@dataclass(frozen=True, slots=True)
class OutboxDelivery:
    """A claimed row, with where it goes and the key that signs it.

    Attributes:
        id: the ``webhook-id`` (``msg_…``).
        url: the destination (the endpoint's, or the call's ``webhookUrl``); ``None``: the
            endpoint was deleted or disabled meanwhile.
        secret: the signing key (``whsec_…``); ``None``: none (a per-call URL of a tenant
            with no call-URL secret). Not in ``repr``.
        payload: the body to send; ``None``: a ``call.report`` still to render.
        attempts: attempts made before this one.
    """

    id: str
    tenant: str
    call_id: str | None
    endpoint_id: str | None
    event_type: str
    url: str | None
    payload: dict[str, Any] | None
    attempts: int
    secret: str | None = field(default=None, repr=False)

    @property
    def destination(self) -> tuple[str, str]:
        """Where it goes, for per-destination limits: ``("endpoint", id)`` or ``("origin",
        url_origin(url))`` for a call's own ``webhookUrl``."""
        if self.endpoint_id is not None:
            return "endpoint", self.endpoint_id
        return "origin", url_origin(self.url or "")


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An outbox row as tests and tools read it (its state, not its secret)."""

    id: str
    call_id: str | None
    endpoint_id: str | None
    url: str | None
    event_type: str
    payload: dict[str, Any] | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


_LIVE = (WebhookEndpoint.disabled_at.is_(None), WebhookEndpoint.deleted_at.is_(None))


def url_origin(url: str) -> str:
    """A per-call URL's destination key: the URL as written up to its path, query or fragment
    (``https://user@Host:8443/x?y`` → ``https://user@Host:8443``). A string prefix, so the
    claim can match it in SQL exactly as the worker computes it."""
    start = url.find("://")
    start = start + 3 if start >= 0 else 0
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    return url[: min(ends)] if ends else url


def _has_origin(origin: str) -> Any:
    """SQL: the row's ``url`` has ``origin`` (:func:`url_origin`)."""
    head = func.substr(OutboxMessage.url, 1, len(origin) + 1)
    return or_(OutboxMessage.url == origin, head.in_([origin + "/", origin + "?", origin + "#"]))


class WebhookDeliveryMixin(StoreBase):
    """Claim due webhook deliveries and record their outcomes."""

    def claim_webhooks(
        self, owner: str, *, lease_s: float, limit: int = 50, skip_endpoints: Collection[str] = (),
        skip_origins: Collection[str] = (),
    ) -> list[OutboxDelivery]:  # fmt: skip
        """Lease up to ``limit`` due rows to ``owner`` for ``lease_s`` seconds, oldest due first.

        Args:
            skip_endpoints: endpoint ids whose rows are left alone (the worker's saturated
                destinations).
            skip_origins: per-call URL origins (:func:`url_origin`) whose rows are left alone.

        Raises:
            ValueError: ``lease_s`` or ``limit`` not positive.
        """
        if lease_s <= 0 or limit <= 0:
            raise ValueError("lease_s and limit must be positive")
        now = self.now()
        until = now + timedelta(seconds=lease_s)
        free = or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until <= now)
        wanted = [OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now, free]
        if skip_endpoints:
            wanted.append(or_(OutboxMessage.endpoint_id.is_(None), OutboxMessage.endpoint_id.not_in(skip_endpoints)))
        for origin in skip_origins:
            wanted.append(or_(OutboxMessage.endpoint_id.is_not(None), not_(_has_origin(origin))))
        with self._session() as s, s.begin():
            ids = list(s.scalars(
                select(OutboxMessage.id)
                .where(*wanted)
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.created_at, OutboxMessage.id).limit(limit)
            ))  # fmt: skip
            if not ids:
                return []
            s.execute(
                update(OutboxMessage).where(OutboxMessage.id.in_(ids), OutboxMessage.status == "pending",
                                            OutboxMessage.next_attempt_at <= now, free)
                .values(lease_owner=owner, lease_until=until).execution_options(synchronize_session=False)
            )  # fmt: skip
            rows = s.scalars(
                select(OutboxMessage).where(OutboxMessage.id.in_(ids), OutboxMessage.lease_owner == owner,
                                            OutboxMessage.lease_until == until)
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.created_at, OutboxMessage.id)
            ).all()  # fmt: skip
            return [self._delivery(s, row) for row in rows]

    def _delivery(self, s: Any, row: OutboxMessage) -> OutboxDelivery:
        if row.endpoint_id is not None:
            ep = s.execute(select(WebhookEndpoint.url, WebhookEndpoint.secret)
                           .where(WebhookEndpoint.id == row.endpoint_id, *_LIVE)).one_or_none()  # fmt: skip
            url, secret = (ep.url, ep.secret) if ep is not None else (None, None)
        else:
            url = row.url
            secret = s.scalar(
                select(WebhookEndpoint.secret).where(WebhookEndpoint.tenant == row.tenant,
                                                     WebhookEndpoint.kind == "call_url", *_LIVE)
                .order_by(WebhookEndpoint.created_at.desc()).limit(1)
            )  # fmt: skip
        return OutboxDelivery(
            id=row.id, tenant=row.tenant, call_id=row.call_id, endpoint_id=row.endpoint_id,
            event_type=row.event_type, url=url, payload=row.payload, attempts=row.attempts, secret=secret,
        )  # fmt: skip

    def release_webhooks(self, message_ids: Collection[str], owner: str) -> int:
        """Give back rows claimed but not attempted (their destination was busy): the lease
        is dropped, no attempt counted. Returns how many ``owner`` still held."""
        if not message_ids:
            return 0
        with self._session() as s, s.begin():
            res = s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(list(message_ids)), OutboxMessage.lease_owner == owner,
                       OutboxMessage.status == "pending")
                .values(lease_owner=None, lease_until=None).execution_options(synchronize_session=False)
            )  # fmt: skip
            return _rowcount(res)

    def save_webhook_payload(self, message_id: str, owner: str, payload: dict[str, Any]) -> bool:
        """Store a rendered ``call.report`` body (once: only while it is NULL and leased to
        ``owner``). ``False``: not saved (lease lost, or already rendered)."""
        with self._session() as s, s.begin():
            res = s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id, OutboxMessage.lease_owner == owner,
                       OutboxMessage.payload.is_(None))
                .values(payload=payload).execution_options(synchronize_session=False)
            )  # fmt: skip
            return _rowcount(res) == 1

    def finish_webhook(
        self, message_id: str, owner: str, *, status: str, http_status: int | None = None,
        error: str | None = None, next_attempt_at: datetime | None = None,
    ) -> bool:  # fmt: skip
        """Record an attempt's outcome and release the lease (only while ``owner`` holds it).

        Args:
            status: ``delivered``, ``pending`` (retry at ``next_attempt_at``), ``failed`` or
                ``disabled``.
            http_status, error: the response's status (``None``: no response) and what went wrong.

        Returns:
            ``False``: ``owner`` no longer held the lease (nothing written).

        Raises:
            ValueError: an unknown ``status``, or ``pending`` without ``next_attempt_at``.
        """
        if status not in ("delivered", "pending", "failed", "disabled"):
            raise ValueError(f"unknown outbox status {status!r}")
        if status == "pending" and next_attempt_at is None:
            raise ValueError("a retry needs next_attempt_at")
        now = self.now()
        values: dict[str, Any] = {
            "status": status, "attempts": OutboxMessage.attempts + 1, "last_status": http_status,
            "last_error": error, "lease_owner": None, "lease_until": None,
        }  # fmt: skip
        if status == "delivered":
            values["delivered_at"] = now
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        with self._session() as s, s.begin():
            res = s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id, OutboxMessage.lease_owner == owner,
                       OutboxMessage.status == "pending")
                .values(**values).execution_options(synchronize_session=False)
            )  # fmt: skip
            return _rowcount(res) == 1

    def disable_webhook_target(self, delivery: OutboxDelivery, reason: str) -> int:
        """A destination answered 410 Gone: stop sending to it.

        An endpoint is disabled (``disabled_at``, ``disabled_reason``) and its pending rows
        become ``disabled``; a per-call URL gets no more rows for its call (see
        :func:`gateway.store.outbox.call_targets`), and that call's pending rows to it become
        ``disabled``. Returns how many pending rows were disabled.
        """
        now = self.now()
        if delivery.endpoint_id is not None:
            same = OutboxMessage.endpoint_id == delivery.endpoint_id
        else:
            same = (OutboxMessage.call_id == delivery.call_id) & OutboxMessage.endpoint_id.is_(None)
        with self._session() as s, s.begin():
            if delivery.endpoint_id is not None:
                s.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == delivery.endpoint_id, WebhookEndpoint.disabled_at.is_(None))
                    .values(disabled_at=now, disabled_reason=reason).execution_options(synchronize_session=False)
                )  # fmt: skip
            res = s.execute(
                update(OutboxMessage).where(same, OutboxMessage.status == "pending")
                .values(status="disabled", last_status=410, last_error=reason, lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            return _rowcount(res)

    def enqueue_call_report(self, call_id: str) -> int:
        """Write a call's ``call.report`` rows in a transaction of their own (for a step
        that has none; the post-call results write them in theirs). Returns how many."""
        with self._session() as s, s.begin():
            return write_call_report(s, call_id, at=self.now())

    def list_outbox(self, *, call_id: str | None = None, tenant: str | None = None) -> list[OutboxRecord]:
        """Outbox rows (of a call, or a tenant), oldest first."""
        query = select(OutboxMessage)
        if call_id is not None:
            query = query.where(OutboxMessage.call_id == call_id)
        if tenant is not None:
            query = query.where(OutboxMessage.tenant == tenant)
        with self._session() as s:
            rows = s.scalars(query.order_by(OutboxMessage.created_at, OutboxMessage.id)).all()
            return [
                OutboxRecord(
                    id=r.id, call_id=r.call_id, endpoint_id=r.endpoint_id, url=r.url, event_type=r.event_type,
                    payload=r.payload, status=r.status, attempts=r.attempts, next_attempt_at=r.next_attempt_at,
                    last_status=r.last_status, last_error=r.last_error, delivered_at=r.delivered_at,
                )  # fmt: skip
                for r in rows
            ]
