"""The REST API: agents, calls (stream URL + carrier instructions) and call records.

``build_api(store, settings, …)`` returns the routes; ``exception_handlers`` makes
Starlette's own 404/405 answers use the API's JSON error shape.
"""

from gateway.api.errors import ApiError, exception_handlers
from gateway.api.openapi import build_openapi
from gateway.api.routes import MAX_BODY_BYTES, build_api
from gateway.api.urls import public_url, stream_path

__all__ = [
    "build_api",
    "build_openapi",
    "exception_handlers",
    "ApiError",
    "public_url",
    "stream_path",
    "MAX_BODY_BYTES",
]
