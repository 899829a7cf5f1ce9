"""The MCP tools of the gateway: what each takes and returns (JSON Schemas of the API's own
pydantic models) and how it runs (through :class:`gateway.client.AsyncGatewayClient`).

* ``place_call``: arguments ``OutboundCallCreate`` → ``POST /calls/outbound`` → ``OutboundCallCreated``
* ``get_call``: :class:`CallRef` → ``GET /calls/{callId}`` → ``CallOut``
* ``list_calls``: :class:`ListCallsArgs` → ``GET /calls`` → ``CallList``
* ``hangup_call``: :class:`CallRef` → ``POST /calls/{callId}/control`` (hangup) → ``ControlOut``
* ``wait_for_call``: :class:`WaitArgs` → polls ``GET /calls/{callId}`` → ``CallOut``

A result carries the model as ``structuredContent`` (wire names, as the REST API answers)
and the same JSON as text. A gateway error is a tool error (``isError``) whose text is the
API's error body ``{"error": {code, message, fields?}}``; a ``wait_for_call`` that runs out
of time is a tool error saying the last status seen. Arguments of ``place_call`` go to the
gateway as given: it validates them for the key's tenant (a bad field comes back as a
``validation_error`` naming it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from gateway.api.calls_list import _ISO_8601 as ISO_8601
from gateway.api.calls_schemas import CallList
from gateway.api.control import ControlOut
from gateway.api.errors import field_errors
from gateway.api.outbound_schemas import OutboundCallCreate, OutboundCallCreated
from gateway.api.schemas import CallOut, CallStatusT
from gateway.client import AsyncGatewayClient, CallWaitTimeout, GatewayError

__all__ = ["CallRef", "WaitArgs", "ListCallsArgs", "ToolDef", "TOOLS", "MAX_WAIT_S", "tool_list", "call_tool"]

#: The longest ``wait_for_call`` (s): an MCP request should not hang for longer.
MAX_WAIT_S = 600.0


class _Args(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CallRef(_Args):
    """Arguments of ``get_call`` and ``hangup_call``."""

    call_id: str = Field(min_length=1, max_length=64, description="The call's id (call_…).")


class WaitArgs(CallRef):
    """Arguments of ``wait_for_call``."""

    timeout_s: float = Field(120.0, gt=0, le=MAX_WAIT_S, description="Longest wait (s), at most 600.")


#: ISO 8601 as ``GET /calls`` takes it (passed on as written: a date alone means its whole day there).
_ISO = f"^{ISO_8601.pattern}$"


class ListCallsArgs(_Args):
    """Arguments of ``list_calls`` (the query of ``GET /calls``)."""

    limit: int = Field(100, ge=1, le=1000, description="Calls per page (1–1000).")
    offset: int = Field(0, ge=0, description="Calls to skip (newest first).")
    status: CallStatusT | None = Field(None, description="Only calls in this status.")
    direction: Literal["inbound", "outbound"] | None = Field(None, description="Only calls of this direction.")
    start_date: str | None = Field(None, pattern=_ISO, description="Only calls created at or after this (ISO 8601).")
    end_date: str | None = Field(
        None, pattern=_ISO, description="Only calls created before this (ISO 8601; a date alone includes that day)."
    )


Run = Callable[[AsyncGatewayClient, Mapping[str, Any]], Awaitable[BaseModel]]


@dataclass(frozen=True)
class ToolDef:
    """One tool: its name, description, argument model and result model, and how it runs."""

    name: str
    description: str
    args: type[BaseModel]
    result: type[BaseModel]
    run: Run
    read_only: bool = True

    def tool(self) -> types.Tool:
        """The tool as ``tools/list`` declares it (schemas by wire name)."""
        return types.Tool(
            name=self.name, description=self.description,
            input_schema=self.args.model_json_schema(by_alias=True),
            output_schema=self.result.model_json_schema(by_alias=True, mode="serialization"),
            annotations=types.ToolAnnotations(read_only_hint=self.read_only, destructive_hint=not self.read_only,
                                              open_world_hint=not self.read_only),
        )  # fmt: skip


async def _place(gw: AsyncGatewayClient, args: Mapping[str, Any]) -> BaseModel:
    return await gw.place_call(dict(args))  # validated by the gateway, for the key's tenant


async def _get(gw: AsyncGatewayClient, args: Mapping[str, Any]) -> BaseModel:
    return await gw.get_call(CallRef.model_validate(args).call_id)


async def _list(gw: AsyncGatewayClient, args: Mapping[str, Any]) -> BaseModel:
    return await gw.list_calls(**ListCallsArgs.model_validate(args).model_dump())


async def _hang_up(gw: AsyncGatewayClient, args: Mapping[str, Any]) -> BaseModel:
    return await gw.hangup(CallRef.model_validate(args).call_id)


async def _wait(gw: AsyncGatewayClient, args: Mapping[str, Any]) -> BaseModel:
    a = WaitArgs.model_validate(args)
    return await gw.wait_for_call(a.call_id, timeout=a.timeout_s)


TOOLS: tuple[ToolDef, ...] = (
    ToolDef("place_call", "Place an outbound phone call through the tenant's carrier account: an AI agent "
            "(systemPrompt, or a stored agentId) calls `to` (E.164) with an objective. Answers at once with the "
            "queued call's id; follow it with wait_for_call or get_call.", OutboundCallCreate,
            OutboundCallCreated, _place, read_only=False),
    ToolDef("get_call", "Read a call's record: status, transcript, summary, extracted fields, recording, "
            "end reason, timeline.", CallRef, CallOut, _get),
    ToolDef("list_calls", "List the tenant's calls, newest first, with filters (status, direction, created "
            "between startDate and endDate) and pagination.", ListCallsArgs, CallList, _list),
    ToolDef("hangup_call", "Hang up a live call (or cancel one still ringing).", CallRef, ControlOut, _hang_up,
            read_only=False),
    ToolDef("wait_for_call", "Wait until a call has ended and its post-call results (summary, extracted "
            "fields) are final, then return its record; fails after timeoutS seconds (at most 600).", WaitArgs,
            CallOut, _wait),
)  # fmt: skip
_BY_NAME = {t.name: t for t in TOOLS}


def tool_list() -> list[types.Tool]:
    """Every tool, as ``tools/list`` answers."""
    return [t.tool() for t in TOOLS]


def _text(payload: Any) -> list[types.TextContent]:
    return [types.TextContent(type="text", text=json.dumps(payload, ensure_ascii=False))]


def _failure(payload: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=_text(payload), is_error=True)


async def call_tool(gw: AsyncGatewayClient, name: str, arguments: Mapping[str, Any] | None) -> types.CallToolResult:
    """Run tool ``name`` with ``arguments`` through ``gw``.

    Returns:
        The result (structured content and its JSON as text), or a tool error: unknown tool,
        arguments that fail the tool's model (``validation_error`` with ``fields``), a gateway
        error (its ``{"error": …}`` body), or a ``wait_for_call`` timeout.
    """
    tool = _BY_NAME.get(name)
    if tool is None:
        return _failure({"error": {"code": "not_found", "message": f"no tool {name!r}"}})
    try:
        result = await tool.run(gw, arguments or {})
    except ValidationError as exc:
        fields = field_errors(exc)
        return _failure({"error": {"code": "validation_error", "message": f"invalid arguments of {name}",
                                   "fields": fields}})  # fmt: skip
    except CallWaitTimeout as exc:
        last = None if exc.last is None else exc.last.status
        return _failure({"error": {"code": "timeout", "message": str(exc), "lastStatus": last}})
    except GatewayError as exc:
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.fields:
            body["fields"] = [f.model_dump(by_alias=True) for f in exc.fields]
        return _failure({"error": body})
    data = result.model_dump(mode="json", by_alias=True)
    return types.CallToolResult(content=_text(data), structured_content=data)
