"""``POST /calls/outbound``: place a call through the tenant's own carrier account.

The route validates the body (:mod:`gateway.api.outbound_schemas`), resolves the carrier
account, caller ID, agent, language and voice, stores the call (status ``queued``,
direction ``outbound``) with its one-time stream token, and hands it to
``ApiServices.on_outbound_call``, which places it in the background; the 201 comes at once.
What happens next (initiated, ringing, in_progress, …) is on ``GET /calls/{callId}``.

Errors, in this order: 401; 400 / 413 / 415; 422 for the body's own rules (agentId xor
inline agent fields, numbers, variables, voicemail); 503 ``unavailable`` at capacity (with
``Retry-After``); 404 for an unknown agent or ``carrierAccountId``; 422 for a ``from`` the
account does not own, no default account, or a ``{{name}}`` of the agent's prompt or greeting
that ``variables`` lacks; 503 ``unavailable`` when this gateway places no outbound calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.api.auth import Tenant
from gateway.api.calls import check_capacity, maybe_await
from gateway.api.deps import Api, ApiServices
from gateway.api.errors import ApiError
from gateway.api.outbound_schemas import (
    OutboundCallCreate,
    OutboundCallCreated,
    Resolved,
    request_errors,
    resolve,
    substitute,
    template_errors,
    with_objective,
)
from gateway.api.responses import BODY, NOT_FOUND, location
from gateway.api.schemas import ErrorResponse
from gateway.api.routing import GatewayRoute
from gateway.store import AgentRecord, CallConfig, CarrierAccountRecord, UnknownAgent

__all__ = ["router"]

log = logging.getLogger("gateway.api")


#: The 503 message when outbound calls are off: the gateway has no public URL to give carriers
#: (``create_app`` enables them only with ``GATEWAY_PUBLIC_URL`` set, so no request's ``Host``
#: header decides where a carrier streams and calls back).
OUTBOUND_OFF = "outbound calls are not enabled (set GATEWAY_PUBLIC_URL, the address carriers reach the gateway at)"

router = APIRouter(tags=["calls"], route_class=GatewayRoute)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"description": "The call is queued; it is placed in the background.", **location("/calls/{callId}")},
    **BODY,
    **NOT_FOUND,
    503: {
        "model": ErrorResponse,
        "description": "GATEWAY_MAX_CALLS calls are live (with Retry-After), or this gateway places no "
        "outbound calls (code unavailable).",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying (at capacity only).",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
}


def invalid(fields: list[dict[str, str]]) -> ApiError:
    """A 422 ``validation_error`` naming ``fields`` (the shape of the body's own 422s)."""
    noun = "field" if len(fields) == 1 else "fields"
    names = ", ".join(f["field"] for f in fields[:5])
    return ApiError(422, "validation_error", f"invalid request body: {len(fields)} {noun} ({names})", fields=fields)


async def _account(api: ApiServices, body: OutboundCallCreate, tenant: str) -> CarrierAccountRecord:
    """The carrier account: ``carrierAccountId`` (404 when not the tenant's live account), else
    the tenant's default (422 at ``carrierAccountId`` when it has none)."""
    if body.carrier_account_id is not None:
        account = await asyncio.to_thread(api.store.get_carrier_account, body.carrier_account_id, tenant=tenant)
        if account is None:
            raise ApiError(404, "not_found", f"carrier account {body.carrier_account_id!r} not found")
        return account
    account = await asyncio.to_thread(api.store.default_carrier_account, tenant=tenant)
    if account is None:
        raise invalid([{"field": "carrierAccountId", "message": "required: the tenant has no default carrier account"}])
    return account


async def _agent(api: ApiServices, body: OutboundCallCreate, tenant: str) -> AgentRecord | None:
    if body.agent_id is None:
        return None
    agent = await asyncio.to_thread(api.store.get_agent, body.agent_id, tenant=tenant)
    if agent is None:
        raise ApiError(404, "not_found", f"agent {body.agent_id!r} not found")
    return agent


def _caller_id(body: OutboundCallCreate, account: CarrierAccountRecord) -> tuple[str, list[dict[str, str]]]:
    """``from`` (E.164) if the account owns it, else the account's first number; and the errors."""
    if body.from_ is None:
        return account.numbers[0], []
    if body.from_ in account.numbers:
        return body.from_, []
    owned = ", ".join(account.numbers)
    return body.from_, [{"field": "from", "message": f"{body.from_} is not a number of carrier account "
                         f"{account.id} (its numbers: {owned})"}]  # fmt: skip


def _agent_template_errors(body: OutboundCallCreate, agent: AgentRecord | None) -> list[dict[str, str]]:
    """``{{name}}`` uses in the stored agent's prompt and (unless replaced) greeting."""
    if agent is None:
        return []
    texts = {"systemPrompt": agent.system_prompt}
    if body.first_message is None:
        texts["greeting"] = agent.greeting
    errors = template_errors(texts, body.variables)
    return [{"field": "agentId", "message": f"the agent's {e['field']} {e['message']}"} for e in errors]


def _config(body: OutboundCallCreate, agent: AgentRecord | None, res: Resolved) -> CallConfig:
    """The call's configuration: the agent's (or the inline fields), resolved, substituted."""
    v = body.variables
    base = agent.call_config() if agent is not None else CallConfig(**{**body.policy(), "max_duration_s": 3000})
    return dataclasses.replace(
        base,
        system_prompt=with_objective(substitute(base.system_prompt, v), substitute(body.objective, v),
                                     substitute(body.context, v)),
        voice=res.voice, language=res.language, greeting=substitute(res.greeting, v),
        first_speaker=res.first_speaker, max_duration_s=body.max_duration or base.max_duration_s,
        voicemail=body.voicemail.policy(v),
    )  # fmt: skip


def _record(body: OutboundCallCreate) -> dict[str, Any]:
    """The request details kept on the call (``outbound``): templates and variable names, no values."""
    return {
        "objective": body.objective, "context": body.context, "ringTimeout": body.ring_timeout,
        "voicemail": body.voicemail.model_dump(by_alias=True), "variables": list(body.variables),
    }  # fmt: skip


@router.post(
    "/calls/outbound",
    operation_id="placeOutboundCall",
    summary="Place an outbound call through a carrier account",
    description="Answers at once with the queued call and the resolved language and voice; the "
    "call is dialed in the background (follow it on GET /calls/{callId}). variables fill "
    "{{name}} in the system prompt, greeting / firstMessage, objective, context and the "
    "voicemail message; objective and context are appended to the system prompt as "
    "<call_objective>…</call_objective> and <call_context>…</call_context> blocks.",
    status_code=201,
    response_model=OutboundCallCreated,
    responses=_RESPONSES,
)
async def place_outbound_call(
    body: OutboundCallCreate, tenant: Tenant, api: Api, request: Request, response: Response
) -> OutboundCallCreated:
    errors = request_errors(body)
    if errors:
        raise invalid(errors)
    check_capacity(api)
    account = await _account(api, body, tenant)
    agent = await _agent(api, body, tenant)
    caller, errors = _caller_id(body, account)
    errors += _agent_template_errors(body, agent)
    if errors:
        raise invalid(errors)
    if api.on_outbound_call is None:
        raise ApiError(503, "unavailable", OUTBOUND_OFF)
    res = resolve(body, agent)
    try:
        call, token = await asyncio.to_thread(
            api.store.create_call, _config(body, agent, res), account.kind, agent_id=body.agent_id,
            ttl_s=max(api.settings.stream_token_ttl_s, body.ring_timeout + 120), direction="outbound",
            tenant=tenant, to=body.to, from_=caller, carrier_account_id=account.id, outbound=_record(body),
            post_call_fields=body.post_call_fields(), webhook_url=body.webhook_url,
        )  # fmt: skip
    except UnknownAgent:  # deleted since it was read
        raise ApiError(404, "not_found", f"agent {body.agent_id!r} not found") from None
    log.info("outbound call %s queued (%s account %s, agent %s)", call.id, account.kind, account.id,
             body.agent_id or "inline")  # fmt: skip
    try:
        await maybe_await(api.on_outbound_call(call, token, request))
    except Exception:  # a bug of ours: the stored call must not wait for its token to expire
        log.exception("outbound call %s could not be handed to the dialer", call.id)
        await asyncio.to_thread(api.store.finalise_call, call.id, status="failed", end_reason="internal_error",
                                duration_ms=0, error_code="internal_error", error_message="not placed")  # fmt: skip
        raise
    response.headers["Location"] = f"/calls/{call.id}"
    return OutboundCallCreated(
        call_id=call.id, status="queued", to=body.to, from_=caller,  # type: ignore[call-arg]  # alias "from"
        carrier_account_id=account.id, language=res.language, language_source=res.language_source,
        voice=res.voice,
    )  # fmt: skip
