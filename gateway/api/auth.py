"""API key authentication: the ``X-API-Key`` header, checked against the store's hashes.

Keys are verified by :meth:`gateway.store.Store.verify_api_key` in a worker thread (it is a
database read). Nothing here logs a key, not even a wrong one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.errors import error_response

__all__ = ["API_KEY_HEADER", "requires_api_key"]

API_KEY_HEADER = "X-API-Key"

Endpoint = Callable[[Request], Awaitable[Response]]


def requires_api_key(verify: Callable[[str], bool]) -> Callable[[Endpoint], Endpoint]:
    """Decorator factory: the endpoint answers 401 ``unauthorized`` without a valid key.

    Args:
        verify: synchronous check of a presented key (``Store.verify_api_key``); run in a
            worker thread.
    """

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            key = request.headers.get(API_KEY_HEADER)
            if not key:
                return error_response(401, "unauthorized", f"missing {API_KEY_HEADER} header")
            if not await asyncio.to_thread(verify, key):
                return error_response(401, "unauthorized", "invalid or revoked API key")
            return await endpoint(request)

        return guarded

    return decorate
