"""Outbound network policy: where request-supplied URLs (tools, later webhooks) may point.

A URL from a request (an agent's tool URL) must not reach the gateway's own network: cloud
metadata (``169.254.169.254``), private ranges (``10/8``, ``192.168/16``, ``fc00::/7``),
loopback ports, link-local, multicast, reserved and unspecified addresses, nor any of these
wrapped in IPv4-mapped IPv6 (``::ffff:10.0.0.1``), NAT64 (``64:ff9b::/96``), 6to4
(``2002::/16``) or Teredo (``2001::/32``, server and client checked). Only an operator
allow-list (``GATEWAY_OUTBOUND_ALLOW``) opens such a target. Entries, comma-separated:

=====================  ========================================================
``tools.internal``     a host name (any port; every address it resolves to)
``tools.internal:8443`` a host name on one port
``10.1.2.3``           one address (``[::1]`` for IPv6), any port
``127.0.0.1:9000``     one address on one port (``[::1]:9000``)
``10.0.0.0/8``         a network (CIDR), any port
=====================  ========================================================

``https://`` is required; ``http://`` only to an allow-listed target. Checks run twice:

* at creation (:meth:`OutboundPolicy.check_static`, no DNS): scheme, and literal addresses
  (also the legacy IPv4 forms the resolver reads, ``127.1``, ``0x7f000001``, and
  ``localhost`` with or without its trailing dot) must be public or allow-listed; a 422 for
  the request;
* at connection (:mod:`gateway.outbound`, which does the I/O): the host is resolved,
  **every** address checked (:meth:`OutboundPolicy.check_addresses`), and the socket connects
  to a checked address (not to the name again), so DNS rebinding between check and connect
  cannot redirect it. TLS still verifies the host name (SNI).

This module is pure (no sockets, no DNS), so declaration parsers can use it.

Sources: RFC 6890 (special-purpose address registries), RFC 4291 §2.5.5.2 (IPv4-mapped),
RFC 6052 (NAT64 well-known prefix), RFC 3056 (6to4), RFC 4380 (Teredo); Python
:mod:`ipaddress` ``is_global``; ``inet_aton(3)`` (the a, a.b, a.b.c forms, hex and octal).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OutboundRefused", "OutboundPolicy", "is_public"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(ValueError):
    """A URL's target is not allowed (non-public address, scheme, or unresolvable host)."""


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, NAT64 or 6to4 IPv6 address, or a Teredo
    address's client, else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def _global_unicast(ip: IPAddress) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a globally routable unicast address (after unwrapping IPv4 in IPv6;
    a Teredo address needs its server and its client public)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.teredo is not None:
        return all(_global_unicast(v4) for v4 in ip.teredo)
    return _global_unicast(_unwrap(ip))


#: What ``inet_aton(3)`` (and so ``getaddrinfo``) reads as an IPv4 address: ``127.1``,
#: ``0x7f000001``, ``2130706433``, ``0177.0.0.1``.
_LEGACY_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


def _literal(host: str) -> IPAddress | None:
    """The address a host names without DNS: an IP literal, or an IPv4 in one of the legacy
    forms the system resolver accepts (``127.1``, ``0x7f000001`` …), trailing dot ignored."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    bare = host.lower().rstrip(".")
    value = _inet_aton(bare) if _LEGACY_V4.match(bare) else None
    return None if value is None else ipaddress.IPv4Address(value)


def _inet_aton(text: str) -> int | None:
    """``inet_aton(3)`` in Python: 1–4 parts (``a``: 32 bits; ``a.b``: 8+24; ``a.b.c``:
    8+8+16; ``a.b.c.d``), each decimal, octal (leading ``0``) or hex (``0x``)."""
    values: list[int] = []
    for part in text.split("."):
        if part.startswith("0x"):
            base, digits = 16, part[2:] or "0"
        elif len(part) > 1 and part.startswith("0"):
            base, digits = 8, part[1:]
        else:
            base, digits = 10, part
        try:
            values.append(int(digits, base))
        except ValueError:
            return None
    *head, last = values
    if len(values) > 4 or any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    out = last
    for i, v in enumerate(head):  # the leading parts are the top bytes
        out |= v << (24 - 8 * i)
    return out


def _split_host_port(entry: str) -> tuple[str, int | None]:
    """``"h:1"`` → ``("h", 1)``; ``"[::1]:9"`` → ``("::1", 9)``; a bare IPv6 has no port."""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(entry)
        return host, int(rest[1:]) if rest else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, None


@dataclass(frozen=True, slots=True)
class _Rule:
    host: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def matches(self, host: str, ip: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return host == self.host
        return ip is not None and self.network is not None and _unwrap(ip) in self.network


def _parse_rule(entry: str) -> _Rule:
    entry = entry.strip().lower()
    try:
        if "/" in entry:
            return _Rule(network=ipaddress.ip_network(entry, strict=False))
        host, port = _split_host_port(entry)
        if port is not None and not 0 < port < 65536:
            raise ValueError(port)
        ip = _literal(host)
        if ip is not None:
            return _Rule(network=ipaddress.ip_network(_unwrap(ip)), port=port)
        if not host or any(c in host for c in "/@?#[] "):
            raise ValueError(host)
        return _Rule(host=host.rstrip("."), port=port)
    except ValueError:
        raise ValueError(f"outbound allow-list entry {entry!r} is not a host, host:port or CIDR") from None


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Which non-public targets the operator allows (default: none).

    Args:
        allow: allow-list entries (see the module docstring).

    Raises:
        ValueError: an entry is malformed (at start-up, from settings).
    """

    allow: tuple[str, ...] = ()
    _rules: tuple[_Rule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", tuple(_parse_rule(e) for e in self.allow if e.strip()))

    @classmethod
    def from_settings(cls, settings: Any) -> OutboundPolicy:
        """The policy of ``settings.outbound_allow`` (a list of entries; missing: none)."""
        return cls(tuple(getattr(settings, "outbound_allow", None) or ()))

    def allowed(self, host: str, ip: IPAddress | None, port: int) -> bool:
        """Whether the allow-list names this target (host name, or address, and port)."""
        host = host.lower().rstrip(".").strip("[]")
        return any(r.matches(host, ip, port) for r in self._rules)

    def address_ok(self, host: str, ip: IPAddress, port: int) -> bool:
        """Whether a connection to ``ip`` (resolved from ``host``) on ``port`` may be made."""
        return is_public(ip) or self.allowed(host, ip, port)

    def check_static(self, url: str) -> tuple[str, int]:
        """Check what can be checked without DNS; return ``(host, port)``.

        Raises:
            OutboundRefused: not ``https://`` (``http://`` only to an allow-listed target), no
                host, or a literal address (or ``localhost``) that is neither public nor
                allow-listed. The message names the rule, never resolved addresses.
        """
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 0)
        except ValueError:
            raise OutboundRefused("url is not a valid URL") from None
        if parts.scheme not in ("https", "http") or not host:
            raise OutboundRefused("url must be https://")
        ip = _literal(host)
        name = host.rstrip(".")
        if ip is None and (name == "localhost" or name.endswith(".localhost")):
            ip = ipaddress.ip_address("127.0.0.1")
        if parts.scheme == "http" and not self.allowed(host, ip, port):
            raise OutboundRefused("url must be https:// (http:// only to an allow-listed host)")
        if ip is not None and not self.address_ok(host, ip, port):
            raise OutboundRefused(
                "url points at a private, loopback, link-local or reserved address "
                "(allow it with GATEWAY_OUTBOUND_ALLOW)"
            )
        return host, port

    def check_addresses(self, host: str, port: int, addrs: list[str]) -> list[str]:
        """Check every address ``host`` resolved to; return them (one bad address refuses all).

        Raises:
            OutboundRefused: ``addrs`` is empty, or one of them is not allowed.
        """
        if not addrs:
            raise OutboundRefused(f"host {host!r} does not resolve")
        for addr in addrs:
            if not self.address_ok(host, ipaddress.ip_address(addr.split("%")[0]), port):
                raise OutboundRefused(
                    f"host {host!r} resolves to a private, loopback, link-local or reserved "
                    "address (allow it with GATEWAY_OUTBOUND_ALLOW)"
                )
        return addrs
