"""``/health`` and ``/openapi.json``: the two operations that need no key."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gateway.api.routing import GatewayRoute
from gateway.api.schemas import HealthOut

__all__ = ["router"]

router = APIRouter(tags=["meta"], route_class=GatewayRoute)


@router.get(
    "/health",
    operation_id="health",
    summary="Liveness check",
    response_model=HealthOut,
    responses={200: {"description": "The gateway is up."}},
)
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.head("/health", include_in_schema=False)
async def health_head() -> Response:
    """``HEAD /health`` for probes that use it (200, no body; not in the document)."""
    return Response(status_code=200)


@router.get(
    "/openapi.json",
    operation_id="openapi",
    summary="This document",
    response_class=JSONResponse,
    responses={200: {"description": "The OpenAPI 3.1 document.",
                     "content": {"application/json": {"schema": {"type": "object"}}}}},  # fmt: skip
)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())
