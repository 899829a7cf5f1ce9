"""The gateway's MCP server: tools to place calls and read their results, for MCP clients
(Claude Desktop, Cursor …), over stdio (``gateway mcp``) or streamable HTTP (``/mcp`` on the
gateway, behind the API key). See :mod:`gateway.mcp.server` and :mod:`gateway.mcp.tools`."""

from gateway.mcp.server import McpHttp, build_server, run_stdio
from gateway.mcp.tools import TOOLS, call_tool, tool_list

__all__ = ["McpHttp", "build_server", "run_stdio", "TOOLS", "call_tool", "tool_list"]
