"""Persistence: API keys, agents, carrier accounts, calls, transcripts and events; call
recordings.

``Store(database_url)`` is the one entry point (SQLite by default, PostgreSQL for several
nodes); :class:`CallRecorder` writes a call's two-channel WAV as the call goes.
"""

from gateway.store.carrier_accounts import (
    CARRIER_KINDS,
    CREDENTIALS,
    CarrierAccountRecord,
    CarrierCredentials,
    CredentialsUnavailable,
    resolve_account_credentials,
)
from gateway.store.errors import (
    BadToken,
    CallNotConnectable,
    StoreError,
    StreamTokenError,
    TokenExpired,
    UnknownAgent,
    UnknownCall,
)
from gateway.store.models import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    CallStatus,
    IllegalTransition,
    check_transition,
)
from gateway.store.recording import CallRecorder, WavCheck, repair_wav
from gateway.store.recovery import NODE_LOST, RecoveredCall, recover_lost_calls, sweep_lapsed_calls
from gateway.store.records import (
    AgentRecord,
    ApiKeyRecord,
    CallConfig,
    CallRecord,
    EventRecord,
    TurnRecord,
)
from gateway.store.repo import CONNECTION_TYPES, Store, hash_secret
from gateway.store.transitions import CARRIER_STATUSES, CarrierResult

__all__ = [
    "Store",
    "CallConfig",
    "CallRecorder",
    "WavCheck",
    "repair_wav",
    "NODE_LOST",
    "RecoveredCall",
    "recover_lost_calls",
    "sweep_lapsed_calls",
    "CallStatus",
    "TRANSITIONS",
    "TERMINAL_STATUSES",
    "check_transition",
    "CARRIER_STATUSES",
    "CarrierResult",
    "CONNECTION_TYPES",
    "hash_secret",
    "ApiKeyRecord",
    "AgentRecord",
    "CarrierAccountRecord",
    "CARRIER_KINDS",
    "CREDENTIALS",
    "CarrierCredentials",
    "CredentialsUnavailable",
    "resolve_account_credentials",
    "CallRecord",
    "TurnRecord",
    "EventRecord",
    "StoreError",
    "IllegalTransition",
    "UnknownAgent",
    "UnknownCall",
    "StreamTokenError",
    "BadToken",
    "TokenExpired",
    "CallNotConnectable",
]
