"""The API's route class: authentication, then the body's media type, size and JSON syntax,
before FastAPI reads and validates the body.

FastAPI reads and parses a body before it runs dependencies, so on its own a request with a
broken body and no key would get a 400, and a form post a 422. :class:`GatewayRoute` answers
in the order clients rely on: 401 (no valid ``X-API-Key``, for routes that declare
:data:`gateway.api.auth.Tenant`), 415 (not ``application/json``, UTF-8), 413 (over
:data:`MAX_BODY_BYTES`), 400 (not JSON); the parsed body is then handed to FastAPI, which
validates it against the route's pydantic model with the key's :class:`RequestScope` (tenant
grants, outbound policy, model endpoints) set by :func:`gateway.api.context.use_scope`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.api.auth import api_tenant, authenticate
from gateway.api.context import use_scope
from gateway.api.errors import ApiError
from gateway.tenants import DEFAULT_TENANT

__all__ = ["GatewayRoute", "MAX_BODY_BYTES", "RETRY_AFTER_S", "require_json", "read_json_body"]

#: Largest request body accepted (bytes); larger answers 413.
MAX_BODY_BYTES = 1024 * 1024
#: ``Retry-After`` (s) of the 503 answered while ``Settings.max_calls`` calls are live.
RETRY_AFTER_S = 5


def require_json(request: Request) -> None:
    """415 unless ``Content-Type`` is ``application/json`` (any case; ``charset`` UTF-8 only)."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8", "utf8"):
        raise ApiError(
            415, "unsupported_media_type", "the request body must be JSON: Content-Type: application/json"
        )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json_body(request: Request) -> Any:
    """Read the body (at most :data:`MAX_BODY_BYTES`) and parse it as UTF-8 JSON.

    The bytes and the parsed value are cached on the request, where FastAPI reads them.

    Raises:
        ApiError: 413 ``payload_too_large``; 400 ``invalid_json`` (not UTF-8, not JSON,
            ``NaN``/``Infinity``, or empty).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        reason = "empty body" if not raw else str(exc)
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {reason}") from None
    request._body = raw  # Starlette's cache of request.body() / request.json()
    request._json = value
    return value


def _needs_key(dependant: Dependant) -> bool:
    return any(d.call is api_tenant or _needs_key(d) for d in dependant.dependencies)


class GatewayRoute(APIRoute):
    """An ``APIRoute`` that checks the key, then the JSON body, before FastAPI's handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needs_key = _needs_key(self.dependant)
        takes_json = self.body_field is not None

        async def gated(request: Request) -> Response:
            try:
                tenant = await authenticate(request) if needs_key else DEFAULT_TENANT
                if takes_json:
                    require_json(request)
                    await read_json_body(request)
            except ApiError as exc:
                return exc.response()
            with use_scope(request.app.state.api.scope(tenant)):
                return await handler(request)

        return gated
