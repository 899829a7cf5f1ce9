"""``/webhook-endpoints`` and ``/webhook-call-secret``: where a tenant's call events are sent.

Events (:mod:`gateway.webhooks`): ``call.queued``, ``call.ringing``, ``call.answered``,
``call.voicemail``, ``call.ended`` (each status change) and ``call.report`` (the full record,
after the post-call results), delivered from the outbox with Standard Webhooks signatures.

* Each endpoint (``POST /webhook-endpoints``) has its own secret, returned once, and gets
  every call of the tenant (optionally only some event types).
* A call's own ``webhookUrl`` (given when the call is created) gets that call's events too,
  signed with the tenant's **call-URL secret**, made or replaced (returned once) by
  ``POST /webhook-call-secret``. Until the tenant has one, deliveries to per-call URLs are
  retried on the schedule rather than sent unsigned; a replacement signs at once every
  delivery still pending.

Another tenant's endpoint is a 404, as is a deleted one. No route returns a secret twice,
and none is logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Path, Response

from gateway.api.auth import Tenant
from gateway.api.deps import Api
from gateway.api.errors import ApiError
from gateway.api.responses import AUTH, BODY, NOT_FOUND, location
from gateway.api.routing import GatewayRoute
from gateway.api.webhook_schemas import (
    WebhookCallSecretOut,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointOut,
)

__all__ = ["router"]

log = logging.getLogger("gateway.api")

router = APIRouter(tags=["webhooks"], route_class=GatewayRoute)

EndpointId = Annotated[str, Path(alias="endpointId", description="Webhook endpoint id (whe_…).")]


@router.post(
    "/webhook-endpoints",
    operation_id="createWebhookEndpoint",
    summary="Add a webhook endpoint",
    description="The answer holds the endpoint's signing secret (whsec_…), shown this once.",
    status_code=201,
    response_model=WebhookEndpointCreated,
    responses={201: {"description": "The endpoint and its secret.", **location("/webhook-endpoints")}, **BODY},
)
async def create_webhook_endpoint(
    body: WebhookEndpointCreate, tenant: Tenant, api: Api, response: Response
) -> WebhookEndpointCreated:
    rec, secret = await asyncio.to_thread(
        api.store.create_webhook_endpoint, body.url, tenant=tenant, events=body.events
    )
    log.info("webhook endpoint %s created (%s)", rec.id, ", ".join(rec.events) if rec.events else "every event")
    response.headers["Location"] = "/webhook-endpoints"
    return WebhookEndpointCreated(**WebhookEndpointOut.of(rec).model_dump(), secret=secret)


@router.get(
    "/webhook-endpoints",
    operation_id="listWebhookEndpoints",
    summary="List the tenant's webhook endpoints",
    response_model=WebhookEndpointList,
    responses={200: {"description": "The endpoints, oldest first (no secrets)."}, **AUTH},
)
async def list_webhook_endpoints(tenant: Tenant, api: Api) -> WebhookEndpointList:
    recs = await asyncio.to_thread(api.store.list_webhook_endpoints, tenant=tenant)
    return WebhookEndpointList(data=[WebhookEndpointOut.of(r) for r in recs])


@router.delete(
    "/webhook-endpoints/{endpointId}",
    operation_id="deleteWebhookEndpoint",
    summary="Delete a webhook endpoint",
    description="Nothing more is sent to it; its deliveries still pending are dropped.",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted."}, **AUTH, **NOT_FOUND},
)
async def delete_webhook_endpoint(endpoint_id: EndpointId, tenant: Tenant, api: Api) -> Response:
    if not await asyncio.to_thread(api.store.delete_webhook_endpoint, endpoint_id, tenant=tenant):
        raise ApiError(404, "not_found", f"webhook endpoint {endpoint_id!r} not found")
    log.info("webhook endpoint %s deleted", endpoint_id)
    return Response(status_code=204)


@router.post(
    "/webhook-call-secret",
    operation_id="rotateWebhookCallSecret",
    summary="Make or replace the secret signing deliveries to calls' own webhookUrl",
    description="Every delivery to a call's webhookUrl (of this tenant) is signed with this secret, "
    "shown this once; a new one replaces the previous at once, pending deliveries included.",
    status_code=201,
    response_model=WebhookCallSecretOut,
    responses={201: {"description": "The secret."}, **AUTH},
)
async def rotate_webhook_call_secret(tenant: Tenant, api: Api) -> WebhookCallSecretOut:
    created_at, secret = await asyncio.to_thread(api.store.rotate_call_url_secret, tenant=tenant)
    log.info("webhook call-URL secret replaced for tenant %s", tenant)
    return WebhookCallSecretOut(secret=secret, created_at=created_at)
