"""The error responses routes document (FastAPI ``responses=``), all in the error shape.

Every operation lists the statuses it can answer besides its success: :data:`AUTH` for
operations that need a key, :data:`NOT_FOUND` for those that read a record by id,
:data:`BODY` for those taking a JSON body (400, 401, 413, 415, 422), and :data:`AT_CAPACITY`
(503 with ``Retry-After``) for those that create a call.
"""

from __future__ import annotations

from typing import Any

from gateway.api.routing import MAX_BODY_BYTES
from gateway.api.schemas import ErrorResponse

__all__ = ["AUTH", "NOT_FOUND", "BODY", "AT_CAPACITY", "location"]

Responses = dict[int | str, dict[str, Any]]


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description, **extra}


AUTH: Responses = {401: _error("Missing or invalid API key (code unauthorized).")}
NOT_FOUND: Responses = {404: _error("No such resource for this key's tenant (code not_found).")}
BODY: Responses = {
    400: _error("The body is not valid JSON (code invalid_json)."),
    **AUTH,
    413: _error(f"Body over {MAX_BODY_BYTES // 1024 // 1024} MiB (code payload_too_large)."),
    415: _error(
        "The body is not sent as Content-Type: application/json (UTF-8) (code unsupported_media_type)."
    ),
    422: _error(
        "The body failed validation (code validation_error); fields lists each invalid field by "
        "its dotted path."
    ),
}
AT_CAPACITY: Responses = {
    503: _error(
        "GATEWAY_MAX_CALLS calls are live; retry later (code unavailable).",
        headers={
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    )
}


def location(template: str) -> dict[str, Any]:
    """The ``Location`` header of a 201 (``template``: e.g. ``/agents/{agentId}``)."""
    return {"headers": {"Location": {"description": template, "schema": {"type": "string"}}}}
