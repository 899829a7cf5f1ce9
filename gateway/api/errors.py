"""Error responses of the REST API: always ``{"error": {"code", "message", "fields"?}}``.

Codes are stable, lowercase labels: ``unauthorized`` (401), ``not_found`` (404),
``method_not_allowed`` (405), ``invalid_json`` (400), ``payload_too_large`` (413),
``unsupported_media_type`` (415: a JSON route's body is not ``application/json``),
``validation_error`` (422, with field-level ``fields``), ``internal_error`` (500),
``unavailable`` (503, with ``Retry-After``: ``GATEWAY_MAX_CALLS`` calls are live).

:data:`exception_handlers` maps :class:`ApiError` (raised by handlers and dependencies),
FastAPI's ``RequestValidationError`` (a body that fails its pydantic model: 422 with one
entry per field, named by its dotted wire path such as ``tools.0.url``) and Starlette's own
``HTTPException`` (unknown path, wrong method) onto the same shape; pass it to
``FastAPI(exception_handlers=…)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
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
    "api_error_handler",
    "request_validation_handler",
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


#: The first element of a FastAPI error location: where the value came from, not its name.
_SOURCES = ("body", "path", "query", "header", "cookie")
#: Error types meaning "the body is not an object" (at the body's root).
_NOT_AN_OBJECT = ("model_type", "model_attributes_type", "dict_type", "missing")


#: Tags of bodies that are discriminated unions (``{"action": "hangup"} | {"action": …}``):
#: pydantic puts the tag in an error's location (``send_dtmf.digits``); the field is ``digits``.
_UNION_TAGS: set[str] = set()


def register_union_tags(*tags: str) -> None:
    """Name the tags of a body that is a discriminated union (see :data:`_UNION_TAGS`)."""
    _UNION_TAGS.update(tags)


def _loc_to_field(loc: Sequence[int | str]) -> str:
    if len(loc) > 1 and loc[0] in _SOURCES:
        loc = loc[1:]
    if len(loc) > 1 and loc[0] in _UNION_TAGS:
        loc = loc[1:]
    return ".".join(str(p) for p in loc) or "body"


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    at_root = tuple(err.get("loc", ())) in ((), ("body",))
    if kind == "extra_forbidden":
        return "unknown field"
    if at_root and kind in _NOT_AN_OBJECT:
        return "must be a JSON object"
    if kind == "missing":
        return "field required"
    if kind == "value_error" and (err.get("ctx") or {}).get("error") is not None:
        return str(err["ctx"]["error"])
    return str(err.get("msg", "invalid value"))


def field_errors(exc: ValidationError | Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "tools.0.name", "message": "…"}]`` (wire names).

    Args:
        exc: a pydantic ``ValidationError``, or FastAPI's error list
            (``RequestValidationError.errors()``, locations starting with ``"body"``).
    """
    errors = exc.errors(include_url=False, include_input=False) if isinstance(exc, ValidationError) else exc
    return [_field_error(err) for err in errors]


def _field_error(err: Mapping[str, Any]) -> dict[str, str]:
    ctx = err.get("ctx") or {}
    if err.get("type") in ("union_tag_invalid", "union_tag_not_found") and ctx.get("discriminator"):
        # a discriminated union's tag is missing or unknown: the tag field is what is wrong
        name = str(ctx["discriminator"]).strip("'\"")
        loc = tuple(err.get("loc", ())) + (name,)
        tags = ctx.get("expected_tags")
        message = f"must be one of {tags}" if tags and err.get("type") == "union_tag_invalid" else "field required"
        return {"field": _loc_to_field(loc), "message": message}
    return {"field": _loc_to_field(err.get("loc", ())), "message": _message(err)}


def _errors_response(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    invalid = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if invalid is not None:
        reason = (invalid.get("ctx") or {}).get("error", "")
        message = "request body is not valid JSON" + (f": {reason}" if reason else "")
        return error_response(400, "invalid_json", message)
    fields = field_errors(errors)
    noun = "field" if len(fields) == 1 else "fields"
    names = ", ".join(f["field"] for f in fields[:5])
    return error_response(
        422, "validation_error", f"invalid request body: {len(fields)} {noun} ({names})",
        fields=fields,
    )  # fmt: skip


def validation_error_response(exc: ValidationError) -> JSONResponse:
    """400 ``invalid_json`` for a body that is not JSON, else 422 ``validation_error``."""
    return _errors_response(exc.errors(include_url=False, include_input=False))


async def request_validation_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's ``RequestValidationError`` as 422 ``validation_error`` (400 ``invalid_json``)."""
    assert isinstance(exc, RequestValidationError)
    return _errors_response(list(exc.errors()))


async def api_error_handler(request: Request, exc: Exception) -> Response:
    """An :class:`ApiError` raised by a handler or dependency, as its response."""
    assert isinstance(exc, ApiError)
    return exc.response()


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


#: Pass to ``FastAPI(exception_handlers=…)`` so every error shares the API's shape.
exception_handlers: dict[Any, Any] = {
    HTTPException: http_exception_handler,
    ApiError: api_error_handler,
    RequestValidationError: request_validation_handler,
}
