"""API key authentication: the ``X-API-Key`` header, checked against the store's hashes.

Keys are checked by :meth:`gateway.store.Store.authenticate_api_key` in a worker thread (it is
a database read). A valid key's tenant is put on the request (:func:`request_tenant`): the
routes scope what they read and create to it. Nothing here logs a key, not even a wrong one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.errors import error_response
from gateway.tenants import DEFAULT_TENANT

__all__ = ["API_KEY_HEADER", "requires_api_key", "request_tenant"]

API_KEY_HEADER = "X-API-Key"

Endpoint = Callable[[Request], Awaitable[Response]]
#: A presented key → its record (with ``tenant``), ``True`` (valid, tenant ``default``), or
#: ``None`` / ``False`` (invalid).
Authenticate = Callable[[str], Any]


def request_tenant(request: Request) -> str:
    """The tenant of the request's API key (set by :func:`requires_api_key`).

    Raises:
        RuntimeError: the request did not pass through :func:`requires_api_key` (a bug: a
            route without the guard must not act for any tenant).
    """
    tenant = getattr(request.state, "tenant", None)
    if not tenant:
        raise RuntimeError("request_tenant() on a route without requires_api_key")
    return str(tenant)


def requires_api_key(verify: Authenticate) -> Callable[[Endpoint], Endpoint]:
    """Decorator factory: the endpoint answers 401 ``unauthorized`` without a valid key.

    Args:
        verify: synchronous check of a presented key, run in a worker thread:
            ``Store.authenticate_api_key`` (its record's ``tenant`` is put on the request),
            or a ``bool`` check such as ``Store.verify_api_key`` (tenant ``default``).
    """

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            key = request.headers.get(API_KEY_HEADER)
            if not key:
                return error_response(401, "unauthorized", f"missing {API_KEY_HEADER} header")
            found = await asyncio.to_thread(verify, key)
            if not found:
                return error_response(401, "unauthorized", "invalid or revoked API key")
            request.state.tenant = getattr(found, "tenant", None) or DEFAULT_TENANT
            return await endpoint(request)

        return guarded

    return decorate
