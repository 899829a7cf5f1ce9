"""The REST API (FastAPI): agents, calls (stream URL + carrier instructions), call records and
carrier accounts.

``create_api(store, settings, …)`` returns the app; one router per resource
(:mod:`gateway.api.agents`, :mod:`~gateway.api.calls`, :mod:`~gateway.api.carrier_accounts`,
:mod:`~gateway.api.meta`); ``exception_handlers`` give every error the API's JSON shape.
"""

from gateway.api.errors import ApiError, exception_handlers
from gateway.api.factory import ROUTERS, create_api
from gateway.api.openapi import openapi_document
from gateway.api.routing import MAX_BODY_BYTES, RETRY_AFTER_S
from gateway.api.urls import public_url, stream_path

__all__ = [
    "create_api",
    "ROUTERS",
    "openapi_document",
    "exception_handlers",
    "ApiError",
    "public_url",
    "stream_path",
    "MAX_BODY_BYTES",
    "RETRY_AFTER_S",
]
