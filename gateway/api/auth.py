"""API key authentication: the ``X-API-Key`` header, checked against the store's hashes.

Routes that act for a tenant declare the :data:`Tenant` dependency (a FastAPI ``Security``
dependency on :data:`api_key_header`, so the OpenAPI document states the scheme). A key is
checked by :meth:`gateway.store.Store.authenticate_api_key` in a worker thread (a database
read); a valid key's tenant is put on the request (:func:`request_tenant`) and handed to the
route, which scopes what it reads and creates to it. The API's route class
(:class:`gateway.api.routing.GatewayRoute`) runs the check before the body is read, so a
request without a valid key is a 401 whatever its body. Nothing here logs a key, not even a
wrong one.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from gateway.api.errors import ApiError
from gateway.tenants import DEFAULT_TENANT

__all__ = ["API_KEY_HEADER", "api_key_header", "authenticate", "api_tenant", "Tenant", "request_tenant"]

API_KEY_HEADER = "X-API-Key"

#: The security scheme (``ApiKeyAuth`` in the OpenAPI document). ``auto_error=False``: a
#: missing key is answered by :func:`authenticate` in the API's error shape.
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKeyAuth",
    auto_error=False,
    description="An API key made with `gateway keys create`; it acts for its tenant.",
)


def _verify(request: Request) -> Any:
    """The API's key check: ``Store.authenticate_api_key`` of the app's API services."""
    return request.app.state.api.store.authenticate_api_key


async def authenticate(request: Request) -> str:
    """Check the request's ``X-API-Key`` and put its tenant on the request.

    Returns:
        The key's tenant (``default`` for a check that returns a plain ``True``).

    Raises:
        ApiError: 401 ``unauthorized``: the header is missing, or the key is unknown or
            revoked.
    """
    key = request.headers.get(API_KEY_HEADER)
    if not key:
        raise ApiError(401, "unauthorized", f"missing {API_KEY_HEADER} header")
    found = await asyncio.to_thread(_verify(request), key)
    if not found:
        raise ApiError(401, "unauthorized", "invalid or revoked API key")
    tenant = str(getattr(found, "tenant", None) or DEFAULT_TENANT)
    request.state.tenant = tenant
    return tenant


async def api_tenant(request: Request, key: Annotated[str | None, Security(api_key_header)] = None) -> str:
    """Dependency: the tenant of the request's API key (checked once per request).

    Raises:
        ApiError: 401, see :func:`authenticate`.
    """
    tenant = getattr(request.state, "tenant", None)
    if tenant:
        return str(tenant)
    return await authenticate(request)


#: A route parameter typed ``Tenant`` receives the key's tenant (and declares the scheme).
Tenant = Annotated[str, Security(api_tenant)]


def request_tenant(request: Request) -> str:
    """The tenant of the request's API key (set by :func:`authenticate`).

    Raises:
        RuntimeError: the request was not authenticated (a bug: a route without the
            :data:`Tenant` dependency must not act for any tenant).
    """
    tenant = getattr(request.state, "tenant", None)
    if not tenant:
        raise RuntimeError("request_tenant() on a route without the Tenant dependency")
    return str(tenant)
