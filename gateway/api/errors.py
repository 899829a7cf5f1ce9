"""Error responses of the REST API: always ``{"error": {"code", "message", "fields"?}}``.

Codes are stable, lowercase labels: ``unauthorized`` (401), ``not_found`` (404),
``method_not_allowed`` (405), ``invalid_json`` (400), ``payload_too_large`` (413),
``unsupported_media_type`` (415: a JSON route's body is not ``application/json``),
``validation_error`` (422, with field-level ``fields``), ``internal_error`` (500),
``unavailable`` (503, with ``Retry-After``: ``GATEWAY_MAX_CALLS`` calls are live).

:data:`exception_handlers` maps Starlette's own ``HTTPException`` (unknown path, wrong
method) onto the same shape; pass it to ``Starlette(exception_handlers=…)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

__all__ = [
    "ApiError",
    "error_response",
    "validation_error_response",
    "field_errors",
    "http_exception_handler",
    "exception_handlers",
]

log = logging.getLogger("gateway.api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise inside a handler to answer with an error response.

    Args:
        status: HTTP status code.
        code: stable error label.
        message: human-readable explanation (never include secrets).
        fields: field-level errors for ``validation_error``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Sequence[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.code, self.message, fields=self.fields, headers=self.headers
        )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    fields: Sequence[Mapping[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in the API's shape."""
    body: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = [dict(f) for f in fields]
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers or {}))


def _loc_to_field(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "tools.0.name", "message": "…"}]`` (wire names)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "field required"
        elif kind == "model_type":
            message = "must be a JSON object"
        elif kind == "value_error" and (err.get("ctx") or {}).get("error") is not None:
            message = str(err["ctx"]["error"])
        else:
            message = err.get("msg", "invalid value")
        out.append({"field": _loc_to_field(err.get("loc", ())), "message": message})
    return out


def validation_error_response(exc: ValidationError) -> JSONResponse:
    """400 ``invalid_json`` for a body that is not JSON, else 422 ``validation_error``."""
    errors = exc.errors(include_url=False, include_input=False)
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "")
        message = "request body is not valid JSON" + (f": {reason}" if reason else "")
        return error_response(400, "invalid_json", message)
    fields = field_errors(exc)
    noun = "field" if len(fields) == 1 else "fields"
    names = ", ".join(f["field"] for f in fields[:5])
    return error_response(
        422, "validation_error", f"invalid request body: {len(fields)} {noun} ({names})",
        fields=fields,
    )  # fmt: skip


async def http_exception_handler(request: Request | WebSocket, exc: Exception) -> Response | None:
    """Render Starlette ``HTTPException`` (404 unknown path, 405 wrong method) as API errors.

    On a WebSocket connection (no HTTP response possible) the socket is closed with 1008.
    """
    assert isinstance(exc, HTTPException)
    if isinstance(request, WebSocket):
        await request.close(code=1008, reason=_STATUS_CODES.get(exc.status_code, "error"))
        return None
    code = _STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, code, message, headers=exc.headers)


#: Pass to ``Starlette(exception_handlers=…)`` so framework errors share the API's shape.
exception_handlers: dict[Any, Any] = {HTTPException: http_exception_handler}
