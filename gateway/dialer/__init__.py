"""Outbound calls through a carrier account's REST API (one module per carrier).

The contract and the shared machinery are in :mod:`gateway.dialer.base`; :func:`make_dialer`
returns the dialer of a carrier kind.
"""

from gateway.dialer.base import (
    CALL_STATUSES,
    CREDENTIAL_KEYS,
    DIALER_KINDS,
    TERMINAL_STATUSES,
    CallbackEvent,
    CallStatus,
    CarrierError,
    Credentials,
    Dialer,
    NotSupported,
    OutboundRequest,
    PlacedCall,
    make_dialer,
)

__all__ = [
    "CALL_STATUSES",
    "CREDENTIAL_KEYS",
    "DIALER_KINDS",
    "TERMINAL_STATUSES",
    "CallbackEvent",
    "CallStatus",
    "CarrierError",
    "Credentials",
    "Dialer",
    "NotSupported",
    "OutboundRequest",
    "PlacedCall",
    "make_dialer",
]
