"""A tenant's webhook endpoints and its signing secret for per-call ``webhookUrl`` s.

Secrets are Standard Webhooks keys, ``whsec_`` + base64 of 32 random bytes
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md,
"Signature scheme"). The store keeps them because it signs with them; each is returned once,
by the method that makes it, and never logged.

Per-call URLs: a call's ``webhookUrl`` has no endpoint row of its own. Its deliveries are
signed with the tenant's **call-URL secret** (one per tenant, made or replaced by
:meth:`WebhookEndpointsMixin.rotate_call_url_secret`), read at each attempt: a rotation
applies to deliveries still pending. While a tenant has none, deliveries to its per-call
URLs fail their attempts (retried on the schedule) instead of going out unsigned.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.base import StoreBase
from gateway.store.helpers import _rowcount, new_id
from gateway.store.outbox import EVENT_TYPES, OutboxMessage, WebhookEndpoint

__all__ = ["WebhookEndpointRecord", "WebhookEndpointsMixin", "new_webhook_secret", "SECRET_PREFIX"]

SECRET_PREFIX = "whsec_"


def new_webhook_secret() -> str:
    """A new Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes (50 characters)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True, slots=True)
class WebhookEndpointRecord:
    """A webhook endpoint as the store returns it (never with its secret).

    Attributes:
        events: the event types it receives; ``None``: every type.
        disabled_at, disabled_reason: set once it answered 410 Gone.
    """

    id: str
    tenant: str
    kind: str
    url: str | None
    events: tuple[str, ...] | None
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


def _endpoint_record(row: WebhookEndpoint) -> WebhookEndpointRecord:
    return WebhookEndpointRecord(
        id=row.id, tenant=row.tenant, kind=row.kind, url=row.url,
        events=tuple(row.events) if row.events is not None else None, created_at=row.created_at,
        disabled_at=row.disabled_at, disabled_reason=row.disabled_reason,
    )  # fmt: skip


class WebhookEndpointsMixin(StoreBase):
    """Create, list and delete a tenant's webhook endpoints; its per-call URL secret."""

    def create_webhook_endpoint(
        self, url: str, *, tenant: str = "default", events: Sequence[str] | None = None
    ) -> tuple[WebhookEndpointRecord, str]:
        """Add an endpoint receiving the tenant's call events.

        Args:
            url: where events are POSTed (checked against the outbound policy by the caller,
                and again at each delivery).
            events: the types it receives (distinct, from :data:`EVENT_TYPES`); ``None``: all.

        Returns:
            ``(endpoint, secret)``: the secret (``whsec_…``) is returned this once.

        Raises:
            ValueError: ``url`` empty, or an unknown or empty ``events``.
        """
        if not url:
            raise ValueError("url is required")
        if events is not None:
            unknown = sorted(set(events) - set(EVENT_TYPES))
            if unknown or not events:
                raise ValueError(f"events must be a non-empty subset of {EVENT_TYPES}; unknown: {unknown}")
            events = list(dict.fromkeys(events))
        secret = new_webhook_secret()
        row = WebhookEndpoint(id=new_id("whe"), tenant=tenant, kind="endpoint", url=url,
                              events=events, secret=secret, created_at=self.now())  # fmt: skip
        with self._session() as s, s.begin():
            s.add(row)
        return _endpoint_record(row), secret

    def list_webhook_endpoints(self, *, tenant: str = "default") -> list[WebhookEndpointRecord]:
        """The tenant's endpoints not deleted (disabled ones included), oldest first."""
        with self._session() as s:
            rows = s.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.tenant == tenant, WebhookEndpoint.kind == "endpoint",
                    WebhookEndpoint.deleted_at.is_(None),
                ).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
            ).all()  # fmt: skip
            return [_endpoint_record(r) for r in rows]

    def delete_webhook_endpoint(self, endpoint_id: str, *, tenant: str = "default") -> bool:
        """Delete an endpoint: nothing more is written for it, and its pending deliveries
        become ``disabled``. ``False``: no such live endpoint of the tenant."""
        now = self.now()
        with self._session() as s, s.begin():
            res = s.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.tenant == tenant,
                       WebhookEndpoint.kind == "endpoint", WebhookEndpoint.deleted_at.is_(None))
                .values(deleted_at=now).execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) != 1:
                return False
            s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.endpoint_id == endpoint_id, OutboxMessage.status == "pending")
                .values(status="disabled", last_error="endpoint deleted", lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
        return True

    def rotate_call_url_secret(self, *, tenant: str = "default") -> tuple[datetime, str]:
        """Make (or replace) the tenant's secret for its calls' ``webhookUrl`` deliveries.

        Two rotations at once leave one live secret: a partial unique index
        (``uq_webhook_endpoints_call_url_live``) refuses a second live row, and the rotation
        that lost the race retires the winner's and inserts again (last one wins).

        Returns:
            ``(created_at, secret)``: the secret (``whsec_…``) is returned this once; the
            previous one stops signing at once (pending deliveries use the new one).

        Raises:
            sqlalchemy.exc.IntegrityError: still racing after a few tries.
        """
        for attempt in range(_ROTATE_TRIES):
            now = self.now()
            secret = new_webhook_secret()
            try:
                with self._session() as s, s.begin():
                    s.execute(
                        update(WebhookEndpoint)
                        .where(WebhookEndpoint.tenant == tenant, WebhookEndpoint.kind == "call_url",
                               WebhookEndpoint.deleted_at.is_(None))
                        .values(deleted_at=now).execution_options(synchronize_session=False)
                    )  # fmt: skip
                    s.add(WebhookEndpoint(id=new_id("whs"), tenant=tenant, kind="call_url", url=None,
                                          events=None, secret=secret, created_at=now))  # fmt: skip
                return now, secret
            except IntegrityError:
                if attempt == _ROTATE_TRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


#: Tries of a rotation racing others (each retry follows a committed rival).
_ROTATE_TRIES = 3
