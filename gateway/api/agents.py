"""``/agents``: reusable agent configurations of the key's tenant."""

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
from gateway.api.schema_base import _Response
from gateway.api.schemas import AgentCreate, AgentOut
from gateway.api.views import agent_out

__all__ = ["router", "AgentList"]

log = logging.getLogger("gateway.api")

router = APIRouter(tags=["agents"], route_class=GatewayRoute)

AgentId = Annotated[str, Path(alias="agentId", description="Agent id (agt_…).")]


@router.post(
    "/agents",
    operation_id="createAgent",
    summary="Create an agent",
    status_code=201,
    response_model=AgentOut,
    responses={201: {"description": "The agent.", **location("/agents/{agentId}")}, **BODY},
)
async def create_agent(body: AgentCreate, tenant: Tenant, api: Api, response: Response) -> AgentOut:
    rec = await asyncio.to_thread(api.store.create_agent, name=body.name, tenant=tenant, **body.policy())
    log.info("agent %s created", rec.id)
    response.headers["Location"] = f"/agents/{rec.id}"
    return agent_out(rec)


class AgentList(_Response):
    """``GET /agents``: the tenant's agents, oldest first (at most 1000)."""

    data: list[AgentOut]


@router.get(
    "/agents",
    operation_id="listAgents",
    summary="List the tenant's agents",
    response_model=AgentList,
    responses={200: {"description": "The agents, oldest first (at most 1000)."}, **AUTH},
)
async def list_agents(tenant: Tenant, api: Api) -> AgentList:
    recs = await asyncio.to_thread(api.store.list_agents, tenant=tenant)
    return AgentList(data=[agent_out(r) for r in recs])


@router.get(
    "/agents/{agentId}",
    operation_id="getAgent",
    summary="Get an agent",
    response_model=AgentOut,
    responses={200: {"description": "The agent."}, **AUTH, **NOT_FOUND},
)
async def get_agent(agent_id: AgentId, tenant: Tenant, api: Api) -> AgentOut:
    rec = await asyncio.to_thread(api.store.get_agent, agent_id, tenant=tenant)
    if rec is None:
        raise ApiError(404, "not_found", f"agent {agent_id!r} not found")
    return agent_out(rec)
