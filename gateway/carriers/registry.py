"""Carrier adapter registry: the carrier names stream URLs use and a factory for each.

``make_adapter(name)`` returns a fresh adapter (one per call) implementing
:class:`gateway.carriers.events.CarrierAdapter`.
"""

from __future__ import annotations

from typing import Callable

from gateway.carriers.events import CarrierAdapter
from gateway.carriers.exotel import ExotelAdapter
from gateway.carriers.plivo import PlivoAdapter
from gateway.carriers.raw import RawAdapter
from gateway.carriers.telnyx import TelnyxAdapter
from gateway.carriers.twilio import TwilioAdapter
from gateway.carriers.vonage import VonageAdapter
from gateway.carriers.webrtc import WebRtcAdapter

__all__ = ["CARRIERS", "make_adapter", "UnknownCarrier"]

_FACTORIES: dict[str, Callable[[], CarrierAdapter]] = {
    "twilio": TwilioAdapter,
    "telnyx": TelnyxAdapter,
    "plivo": PlivoAdapter,
    "vonage": VonageAdapter,
    "exotel": ExotelAdapter,
    "raw": RawAdapter,
    "webrtc": WebRtcAdapter,
}

#: Every carrier name accepted by :func:`make_adapter`, in a stable order.
CARRIERS: tuple[str, ...] = tuple(_FACTORIES)


class UnknownCarrier(ValueError):
    """The carrier name is not one of :data:`CARRIERS`."""


def make_adapter(name: str) -> CarrierAdapter:
    """A new adapter for carrier ``name`` (one instance per call).

    Args:
        name: one of :data:`CARRIERS` (case-sensitive, as in stream URLs).

    Raises:
        UnknownCarrier: ``name`` is not a known carrier.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UnknownCarrier(f"unknown carrier {name!r}; expected one of {', '.join(CARRIERS)}")
    return factory()
