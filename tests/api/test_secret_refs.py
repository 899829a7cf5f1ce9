"""Credentials by reference: only the environment variable's name is stored or returned."""

from __future__ import annotations

import os

from gateway.store import CallConfig

AGENT = {"name": "Front desk", "systemPrompt": "Be brief.", "voice": "alloy", "language": "en-US",
         "greeting": "Hi!", "model": "openai:gpt-realtime"}
INLINE = {k: v for k, v in AGENT.items() if k != "name"}


async def test_agent_secret_refs_are_stored_as_references_and_resolved_per_call(client, store, monkeypatch):
    monkeypatch.setenv("GATEWAY_SECRET_TEAM_A_OPENAI", "sk-team-a-value")
    r = await client.post("/agents", json={**AGENT, "secretRefs": {"openai_api_key": "GATEWAY_SECRET_TEAM_A_OPENAI"}})
    assert r.status_code == 201, r.text
    assert r.json()["secretRefs"] == {"openai_api_key": "GATEWAY_SECRET_TEAM_A_OPENAI"}
    assert "sk-team-a-value" not in r.text
    r = await client.post("/calls/create", json={"agentId": r.json()["id"]})
    assert r.status_code == 201
    call = store.get_call(r.json()["callId"])
    cfg = CallConfig.from_json(call.config) if isinstance(call.config, dict) else call.config
    assert cfg.secret_refs == {"openai_api_key": "GATEWAY_SECRET_TEAM_A_OPENAI"}
    assert cfg.agent_config(secrets=cfg.resolve_secrets(os.environ)).secrets == {"openai_api_key": "sk-team-a-value"}
    assert "sk-team-a-value" not in repr(cfg.agent_config(secrets=cfg.resolve_secrets(os.environ)))
    got = await client.get(f"/calls/{call.id}")
    assert "sk-team-a-value" not in got.text and "GATEWAY_SECRET_TEAM_A_OPENAI" in got.text


async def test_secret_refs_are_refused_with_field_errors(client, monkeypatch):
    monkeypatch.setenv("GATEWAY_TWILIO_AUTH_TOKEN", "not-for-agents")
    cases = {
        "GATEWAY_TWILIO_AUTH_TOKEN": "must name an environment variable starting with GATEWAY_SECRET_",
        "PATH": "must name an environment variable starting with GATEWAY_SECRET_",
        "GATEWAY_SECRET_NOT_SET_ANYWHERE": "is not set on the gateway",
    }
    for var, message in cases.items():
        r = await client.post("/calls/inline", json={**INLINE, "secretRefs": {"openai_api_key": var}})
        assert r.status_code == 422, r.text
        (field,) = r.json()["error"]["fields"]
        assert field["field"].startswith("secretRefs") and message in field["message"], field
    r = await client.post("/calls/inline", json={**INLINE, "secretRefs": {"Bad-Name": "GATEWAY_SECRET_X"}})
    assert r.status_code == 422
