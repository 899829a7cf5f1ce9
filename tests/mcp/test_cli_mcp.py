"""``gateway mcp``: the key comes from the environment variable it names, and a missing one
(or a URL that is not http(s)) fails at once with exit 2, before any MCP traffic."""

from __future__ import annotations

from typer.testing import CliRunner

from gateway.cli import app


def test_gateway_mcp_needs_the_key_in_the_named_variable_and_an_http_url(monkeypatch):
    monkeypatch.delenv("GW_MCP_TEST_KEY", raising=False)
    unset = CliRunner().invoke(app, ["mcp", "--url", "http://127.0.0.1:9", "--api-key-env", "GW_MCP_TEST_KEY"])
    assert unset.exit_code == 2 and "GW_MCP_TEST_KEY is not set" in unset.output, unset.output
    monkeypatch.setenv("GW_MCP_TEST_KEY", "gw_x")
    bad = CliRunner().invoke(app, ["mcp", "--url", "ftp://h", "--api-key-env", "GW_MCP_TEST_KEY"])
    assert bad.exit_code == 2 and "http(s)://" in bad.output, bad.output
