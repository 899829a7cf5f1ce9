"""Outbound HTTP that obeys the operator's :class:`~gateway.netpolicy.OutboundPolicy` (the I/O).

:func:`check_outbound_url` resolves a URL's host and checks every address;
:class:`OutboundTransport` (and :func:`outbound_client`) does that for each new connection and
then connects to a checked address, never to the name again, so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot redirect it. TLS verification and
SNI still use the host name. Tool calls use it; webhooks should too.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from gateway.netpolicy import OutboundPolicy, OutboundRefused
from gateway.resolver import ResolverBusy, ResolverPool, default_resolver

__all__ = [
    "resolve_checked", "check_outbound_url", "OutboundTransport", "outbound_client", "shared_ssl_context",
    "AppClients",
]  # fmt: skip

#: DNS resolution time limit (s) when the caller gives none.
RESOLVE_TIMEOUT_S = 5.0


async def resolve_checked(
    policy: OutboundPolicy, host: str, port: int, *, timeout_s: float | None = None,
    resolver: ResolverPool | None = None,
) -> list[str]:
    """Resolve ``host`` (on ``resolver``, default :func:`~gateway.resolver.default_resolver`,
    never the loop's default executor) and check every address with ``policy``; return them
    (IP strings, resolver order; a literal address is returned as is).

    Raises:
        OutboundRefused: the name does not resolve (in ``timeout_s``, default 5 s), too many
            lookups are pending (:class:`~gateway.resolver.ResolverBusy`), or any address it
            resolves to is not allowed (one bad address refuses the host).
    """
    literal = host.strip("[]")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in literal else socket.AF_INET, literal)
        addrs = [literal]
    except OSError:
        pool = resolver or default_resolver()
        try:
            infos = await pool.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                           timeout_s=timeout_s or RESOLVE_TIMEOUT_S)  # fmt: skip
        except ResolverBusy as exc:
            raise OutboundRefused(f"host {host!r} not resolved: {exc}") from None
        except (OSError, TimeoutError):
            raise OutboundRefused(f"host {host!r} does not resolve") from None
        addrs = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    return policy.check_addresses(host, port, addrs)


async def check_outbound_url(url: str, policy: OutboundPolicy, *, timeout_s: float | None = None) -> list[str]:
    """Check ``url`` fully (scheme, then every resolved address); return the addresses.

    Connect to one of the returned addresses (as :class:`OutboundTransport` does), not to the
    name again.

    Raises:
        OutboundRefused: see :meth:`OutboundPolicy.check_static` and :func:`resolve_checked`.
    """
    host, port = policy.check_static(url)
    return await resolve_checked(policy, host, port, timeout_s=timeout_s)


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """The process's one client TLS context (``httpx.create_ssl_context(trust_env=False)``:
    certifi's CA bundle, hostname checks on), built on first use.

    Building one loads the CA bundle (~10 ms of CPU): every client shares this one instead.
    """
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context(trust_env=False)
        return _ssl_context


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves, checks, then connects to a checked address."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addrs = await resolve_checked(self._policy, host, port, timeout_s=timeout)
        except OutboundRefused as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: Exception | None = None
        for addr in addrs:
            try:
                return await self._inner.connect_tcp(
                    addr, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not outbound targets")  # fmt: skip

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class OutboundTransport(httpx.AsyncHTTPTransport):
    """An httpx transport enforcing an :class:`OutboundPolicy` on every request.

    Each request's URL gets :meth:`OutboundPolicy.check_static`; each new connection resolves
    the host, checks every address and connects to a checked one (TLS verification and SNI
    still use the host name). No proxies from the environment are used. A refused target
    raises :class:`httpx.ConnectError` whose cause is :class:`OutboundRefused`.
    """

    def __init__(self, policy: OutboundPolicy, *, keepalive: bool = False) -> None:
        super().__init__(verify=shared_ssl_context(), trust_env=False)
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=shared_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20 if keepalive else 0,
            keepalive_expiry=5.0,
            network_backend=_CheckedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            self.policy.check_static(str(request.url))
        except OutboundRefused as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return await super().handle_async_request(request)


class AppClients:
    """The app's shared HTTP clients, built once (the lifespan) and closed at shutdown; bridges
    and responders get them injected instead of building a client (and TLS context) per call.

    Attributes:
        tools: for request-supplied URLs (tool calls, webhooks): :func:`outbound_client` with
            the settings' ``outbound_allow`` policy; every request re-checked.
        operator: for endpoints the operator configured (``llm_base_url``): a plain client
            (no policy: loopback servers are the point), the shared TLS context.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.tools = outbound_client(policy)
        self.operator = httpx.AsyncClient(verify=shared_ssl_context())

    @classmethod
    def from_settings(cls, settings: Any) -> AppClients:
        """Clients obeying ``settings.outbound_allow``."""
        return cls(OutboundPolicy.from_settings(settings))

    async def aclose(self) -> None:
        """Close both clients (idempotent)."""
        await self.tools.aclose()
        await self.operator.aclose()


def outbound_client(policy: OutboundPolicy, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every request obeys ``policy`` (no redirects followed,
    no environment proxies). Connections are not kept alive, so every request is re-checked.
    ``kwargs`` go to ``AsyncClient`` (e.g. ``timeout``)."""
    return httpx.AsyncClient(
        transport=OutboundTransport(policy), follow_redirects=False, trust_env=False, **kwargs
    )
