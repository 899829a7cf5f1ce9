"""The gateway's MCP server (the official ``mcp`` SDK's low-level ``Server``), over stdio or
streamable HTTP.

* stdio (:func:`run_stdio`, ``gateway mcp --url … --api-key-env …``): an MCP client (Claude
  Desktop, Cursor) starts the process; every tool talks to the gateway at the URL through one
  :class:`gateway.client.AsyncGatewayClient` with the key from the named environment variable.
* streamable HTTP (:class:`McpHttp`, mounted by :func:`gateway.api.create_api` at ``/mcp``):
  each request must carry an API key (``X-API-Key``, or ``Authorization: Bearer <key>``),
  checked like the REST API's (401 ``unauthorized`` in the API's error shape otherwise); each
  tool call then runs against this same app in process (``httpx.ASGITransport``) with that
  request's key, so it sees exactly the REST API's validation, tenant scope and errors.
  Stateless (no MCP session kept between requests) and JSON answers: any node of a
  multi-node gateway can serve any request.

Tools and their schemas: :mod:`gateway.mcp.tools`. Source: the MCP specification
2025-06-18 / 2026-07-28, "Transports" (stdio, Streamable HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from gateway.api.auth import API_KEY_HEADER
from gateway.api.errors import error_response
from gateway.client import AsyncGatewayClient
from gateway.mcp.tools import call_tool, tool_list

__all__ = ["SERVER_NAME", "Connect", "build_server", "run_stdio", "api_key_of", "McpHttp"]

SERVER_NAME = "ai-phone-gateway"
INSTRUCTIONS = (
    "Place AI phone calls and read their results: place_call dials a number with an agent and an "
    "objective; wait_for_call returns the finished record (status, transcript, summary, extracted fields)."
)

#: ``connect(ctx)`` → an async context manager yielding the client a tool call uses.
Connect = Callable[[ServerRequestContext[Any]], contextlib.AbstractAsyncContextManager[AsyncGatewayClient]]


def _version() -> str:
    try:
        return importlib.metadata.version("gateway")
    except importlib.metadata.PackageNotFoundError:  # a checkout that is not installed
        return "0"


def build_server(connect: Connect) -> Server[Any]:
    """The MCP server: ``tools/list`` and ``tools/call`` of :mod:`gateway.mcp.tools`."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tool_list())

    async def call(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        async with connect(ctx) as gw:
            return await call_tool(gw, params.name, params.arguments)

    return Server(SERVER_NAME, version=_version(), instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call)  # fmt: skip


async def run_stdio(url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
    """Serve MCP on this process's stdin/stdout until the client closes it; tools act on the
    gateway at ``url`` with ``api_key`` (each request limited to ``timeout_s``)."""
    async with AsyncGatewayClient(url, api_key=api_key, timeout=timeout_s) as gw:
        server = build_server(lambda ctx: contextlib.nullcontext(gw))
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


def api_key_of(headers: Headers) -> str | None:
    """The API key of an MCP HTTP request: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
    key = headers.get(API_KEY_HEADER)
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class McpHttp:
    """The streamable HTTP endpoint: an ASGI app behind the API key, and its lifespan.

    Mount the instance (an ASGI app) as a route (``/mcp``) and run :meth:`lifespan` around the
    app's own (the SDK's session manager needs a running task group). A tool call's requests go to
    ``scope["app"]`` (the app serving the MCP request) over ``httpx.ASGITransport``, with the
    request's key and Host, each limited to ``timeout_s`` (``wait_for_call`` to its own
    limit, at most 600 s).
    """

    def __init__(self, *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.server = build_server(self._connect)
        self.manager = StreamableHTTPSessionManager(app=self.server, stateless=True, json_response=True)

    @contextlib.asynccontextmanager
    async def _connect(self, ctx: ServerRequestContext[Any]) -> AsyncIterator[AsyncGatewayClient]:
        request = ctx.request
        key = api_key_of(request.headers) if request is not None else None
        if request is None or key is None:  # the gate let it through, so this is a bug of ours
            raise RuntimeError("an MCP tool call without its HTTP request and API key")
        transport = httpx.ASGITransport(app=request.scope["app"])
        base = str(request.base_url).rstrip("/")
        async with AsyncGatewayClient(base, api_key=key, timeout=self.timeout_s, transport=transport) as gw:
            yield gw

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run a session manager for this run of the app: the SDK's runs once per instance, and
        an app's lifespan may run more than once (a test client per test, schemathesis per case)."""
        self.manager = StreamableHTTPSessionManager(app=self.server, stateless=True, json_response=True)
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint: 401 without a valid key, else the SDK's streamable HTTP transport."""
        key = api_key_of(Headers(scope=scope))
        store = scope["app"].state.api.store
        found = await asyncio.to_thread(store.authenticate_api_key, key) if key else None
        if not found:
            message = f"missing {API_KEY_HEADER} header" if not key else "invalid or revoked API key"
            response = error_response(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)

