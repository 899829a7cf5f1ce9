"""Requests never choose a network destination: model endpoints by name, tool URLs by policy."""

from __future__ import annotations

import pytest

from gateway.config import Settings

INLINE = {"systemPrompt": "Be brief.", "voice": "alloy", "language": "en-US", "greeting": "Hi!"}


def field_of(r) -> dict:
    assert r.status_code == 422, r.text
    (field,) = r.json()["error"]["fields"]
    return field


@pytest.mark.parametrize("model", [
    "compat:m@ws://attacker.example/v1", "compat:m@wss://169.254.169.254/x", "openai:gpt-realtime@10.0.0.1:443",
    "compat:m@nosuch",
])  # fmt: skip
async def test_a_url_or_unknown_endpoint_in_the_model_is_a_field_error(client, model):
    field = field_of(await client.post("/calls/inline", json={**INLINE, "model": model}))
    assert field["field"] == "model" and ("endpoint" in field["message"]), field


async def test_a_named_endpoint_of_the_operator_is_accepted(make_client, api_key, settings: Settings):
    s = settings.model_copy(update={"model_endpoints": {"gpu1": {"backend": "compat", "url": "ws://10.0.0.7/v1"}}})
    async with make_client(settings_=s) as c:
        c.headers["X-API-Key"] = api_key
        assert (await c.post("/calls/inline", json={**INLINE, "model": "compat:qwen@gpu1"})).status_code == 201
        field = field_of(await c.post("/calls/inline", json={**INLINE, "model": "openai:gpt-realtime@gpu1"}))
        assert "serves 'compat'" in field["message"]


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data", "https://10.1.2.3/book", "http://127.0.0.1:9000/book",
    "https://[::ffff:127.0.0.1]/book", "https://localhost/book", "http://tools.example.com/book",
])  # fmt: skip
async def test_tool_urls_to_private_targets_are_refused_at_creation(client, url):
    tool = {"name": "book", "url": url}
    field = field_of(await client.post("/agents", json={**INLINE, "name": "a", "tools": [tool]}))
    assert field["field"].startswith("tools"), field


async def test_allow_listed_tool_targets_are_accepted(make_client, api_key, settings: Settings):
    s = settings.model_copy(update={"outbound_allow": ["127.0.0.1:9000", "10.0.0.0/8"]})
    async with make_client(settings_=s) as c:
        c.headers["X-API-Key"] = api_key
        for url in ("http://127.0.0.1:9000/book", "https://10.1.2.3/book", "https://tools.example.com/book"):
            r = await c.post("/agents", json={**INLINE, "name": "a", "tools": [{"name": "book", "url": url}]})
            assert r.status_code == 201, (url, r.text)
        r = await c.post("/agents", json={**INLINE, "name": "a", "tools": [{"name": "b", "url": "http://127.0.0.1:9001/"}]})
        assert r.status_code == 422
