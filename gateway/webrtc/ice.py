"""ICE set-up of the gateway's peer connections: loopback host candidates and ICE servers.

aioice (aiortc's ICE agent) gathers host candidates from
:func:`aioice.ice.get_host_addresses`, which leaves out ``127.0.0.1``. A browser on the same
machine as the gateway (a developer's laptop; Chromium with
``--allow-loopback-in-peer-connection`` in tests) may offer only loopback candidates, and a
Python peer on loopback needs one too, so :func:`include_loopback` wraps that function once per
process to add ``127.0.0.1`` (IPv4 only: Chromium's loopback candidates are IPv4) after the
machine's own addresses. ``Connection.gather_candidates`` looks the function up in its module
at each call, so the wrapper takes effect for every connection made afterwards, the gateway's
and any test peer's in the same process. A loopback candidate offered to a browser on another
machine only fails its connectivity check (its own 127.0.0.1 has no such port): harmless, the
LAN and STUN/TURN candidates connect.

mDNS: Chromium hides host addresses behind ``<uuid>.local`` names by default; aioice resolves
``.local`` candidates itself (multicast DNS), and tests run Chromium with
``--disable-features=WebRtcHideLocalIpsWithMdns``.

Source: aioice ``ice.py`` (``get_host_addresses``, ``Connection.gather_candidates``), aiortc
``rtcicetransport.py`` (``RTCIceGatherer`` builds the ``Connection``).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["include_loopback", "ice_servers", "LOOPBACK"]

LOOPBACK = "127.0.0.1"


def include_loopback() -> None:
    """Make aioice gather a ``127.0.0.1`` host candidate too (idempotent; see the module doc)."""
    import aioice.ice

    current: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(current, "gateway_loopback", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        """aioice's host addresses, and ``127.0.0.1`` when IPv4 is used (gateway.webrtc.ice)."""
        addresses = current(use_ipv4, use_ipv6)
        if use_ipv4 and LOOPBACK not in addresses:
            addresses.append(LOOPBACK)
        return addresses

    get_host_addresses.gateway_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


def ice_servers(settings) -> list:
    """The gateway's own ``RTCIceServer`` list from ``GATEWAY_WEBRTC_STUN_URLS`` and
    ``GATEWAY_WEBRTC_TURN_URLS`` (with ``…_TURN_USERNAME`` / ``…_TURN_CREDENTIAL``); empty: host
    candidates only. aiortc takes the first STUN and the first TURN URL it supports."""
    from aiortc import RTCIceServer

    servers = []
    if settings.webrtc_stun_urls:
        servers.append(RTCIceServer(urls=list(settings.webrtc_stun_urls)))
    if settings.webrtc_turn_urls:
        servers.append(RTCIceServer(urls=list(settings.webrtc_turn_urls),
                                    username=settings.webrtc_turn_username or None,
                                    credential=settings.webrtc_turn_credential.get_secret_value() or None))
    return servers
