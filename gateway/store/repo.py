"""The :class:`Store`: synchronous persistence for API keys, agents, calls and transcripts.

Every method opens its own short transaction from a thread-safe ``sessionmaker``, so one
``Store`` is shared by the whole process; async code calls it through
``asyncio.to_thread``. Methods return the frozen records of :mod:`gateway.store.records`,
never ORM objects.

Status changes are conditional ``UPDATE … WHERE status IN (…)`` statements, so two racing
writers (two sockets using one stream URL, two finalisers) cannot both win, on SQLite and
PostgreSQL alike.

Secrets: API keys and stream tokens are returned in plaintext once, at creation; only their
SHA-256 hex digests are stored. Nothing here logs a key or a token.
"""

# The helpers below are re-exported (noqa: F401) for code that used them from this module
# before it was split.
from gateway.store.accounts import AgentsMixin, ApiKeysMixin
from gateway.store.calls import CallsMixin, log  # noqa: F401
from gateway.store.calls_query import CallsQueryMixin
from gateway.store.carrier_accounts import CarrierAccountsMixin
from gateway.store.leases import LeasesMixin
from gateway.store.postcall import PostCallMixin
from gateway.store.retention import RetentionMixin
from gateway.store.transfers import TransfersMixin
from gateway.store.webhook_delivery import WebhookDeliveryMixin
from gateway.store.webhook_endpoints import WebhookEndpointsMixin
from gateway.store.helpers import (  # noqa: F401
    API_KEY_PREFIX,
    CONNECTION_TYPES,
    _agent_record,
    _api_key_record,
    _call_record,
    _details,
    _event_rows,
    _make_engine,
    _record,
    _rowcount,
    _turn_rows,
    _utcnow,
    hash_secret,
    new_id,
)

__all__ = ["Store", "hash_secret", "new_id", "CONNECTION_TYPES"]


class Store(
    ApiKeysMixin, AgentsMixin, CarrierAccountsMixin, CallsMixin, CallsQueryMixin, LeasesMixin, WebhookEndpointsMixin,
    WebhookDeliveryMixin, PostCallMixin, TransfersMixin, RetentionMixin,
):
    """Persistence for the gateway, over one SQLAlchemy engine.

    Args:
        database_url: SQLAlchemy URL, e.g. ``sqlite:///gateway.db`` (the default setting),
            ``sqlite://`` (in memory) or ``postgresql+psycopg://…``. A SQLite file's parent
            directory is created.
        clock: returns the current aware UTC time; injectable for tests.
        echo: log SQL statements (debugging).

    Thread safety: methods may be called concurrently from any thread.

    The methods live in per-area mixins: :class:`~gateway.store.base.StoreBase` (engine,
    sessions, clock, ``create_all``/``close``), :mod:`gateway.store.accounts` (API keys,
    agents), :mod:`gateway.store.carrier_accounts` (carrier accounts) and
    :mod:`gateway.store.calls` (calls, stream tokens, transcripts, events),
    :mod:`gateway.store.calls_query` (listing calls), :mod:`gateway.store.leases` (call
    leases, lost and lapsed calls), :mod:`gateway.store.webhook_endpoints` and
    :mod:`gateway.store.webhook_delivery` (webhook endpoints, the outbox's deliveries),
    :mod:`gateway.store.postcall` (post-call results: claims and finish).
    """
