"""Credentials by reference, scoped to the API key's tenant; agents and calls owned by it."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from gateway.config import Settings
from gateway.store import CallConfig, Store
from gateway.tenants import SecretGrants

AGENT = {"name": "Front desk", "systemPrompt": "Be brief.", "voice": "alloy", "language": "en-US",
         "greeting": "Hi!", "model": "openai:gpt-realtime"}
INLINE = {k: v for k, v in AGENT.items() if k != "name"}


@pytest.fixture
async def tenants(make_client: Callable[..., httpx.AsyncClient], store: Store, settings: Settings):
    """``open(tenant, **settings)`` → a client whose API key belongs to ``tenant``."""
    opened: list[httpx.AsyncClient] = []

    async def open_(tenant: str, **overrides) -> httpx.AsyncClient:
        key, record = store.create_api_key(f"key of {tenant}", tenant=tenant)
        assert record.tenant == tenant
        c = make_client(settings_=settings.model_copy(update=overrides) if overrides else None)
        c.headers["X-API-Key"] = key
        opened.append(c)
        return c

    yield open_
    for c in opened:
        await c.aclose()


async def test_agent_secret_refs_are_stored_as_references_and_resolved_per_call(client, store, monkeypatch):
    monkeypatch.setenv("GATEWAY_SECRET_DEFAULT_OPENAI", "sk-default-value")
    r = await client.post("/agents", json={**AGENT, "secretRefs": {"openai_api_key": "GATEWAY_SECRET_DEFAULT_OPENAI"}})
    assert r.status_code == 201, r.text
    assert r.json()["secretRefs"] == {"openai_api_key": "GATEWAY_SECRET_DEFAULT_OPENAI"}
    assert "sk-default-value" not in r.text
    r = await client.post("/calls/create", json={"agentId": r.json()["id"]})
    assert r.status_code == 201
    call = store.get_call(r.json()["callId"])
    assert call.tenant == "default"
    cfg = CallConfig.from_json(call.config) if isinstance(call.config, dict) else call.config
    assert cfg.secret_refs == {"openai_api_key": "GATEWAY_SECRET_DEFAULT_OPENAI"}
    secrets = SecretGrants().resolve(call.tenant, cfg.secret_refs, os.environ)
    assert secrets == {"openai_api_key": "sk-default-value"}
    assert "sk-default-value" not in repr(cfg.agent_config(secrets=secrets))
    got = await client.get(f"/calls/{call.id}")
    assert "sk-default-value" not in got.text and "GATEWAY_SECRET_DEFAULT_OPENAI" in got.text


async def test_secret_refs_are_refused_with_field_errors(client, monkeypatch):
    monkeypatch.setenv("GATEWAY_TWILIO_AUTH_TOKEN", "not-for-agents")
    cases = {
        "GATEWAY_TWILIO_AUTH_TOKEN": "must name an environment variable starting with GATEWAY_SECRET_",
        "PATH": "must name an environment variable starting with GATEWAY_SECRET_",
        "GATEWAY_SECRET_DEFAULT_NOT_SET": "is not available to this API key",
    }
    for var, message in cases.items():
        r = await client.post("/calls/inline", json={**INLINE, "secretRefs": {"openai_api_key": var}})
        assert r.status_code == 422, r.text
        (field,) = r.json()["error"]["fields"]
        assert field["field"].startswith("secretRefs") and message in field["message"], field
    r = await client.post("/calls/inline", json={**INLINE, "secretRefs": {"Bad-Name": "GATEWAY_SECRET_X"}})
    assert r.status_code == 422


async def test_a_key_cannot_tell_another_tenants_secret_from_a_missing_one(tenants, monkeypatch):
    monkeypatch.setenv("GATEWAY_SECRET_ACME_OPENAI", "sk-acme")
    monkeypatch.setenv("GATEWAY_SECRET_GLOBEX_OPENAI", "sk-globex")
    acme = await tenants("acme")
    ok = await acme.post("/calls/inline", json={**INLINE, "secretRefs": {"openai_api_key": "GATEWAY_SECRET_ACME_OPENAI"}})
    assert ok.status_code == 201, ok.text
    messages = []
    for var in ("GATEWAY_SECRET_GLOBEX_OPENAI", "GATEWAY_SECRET_GLOBEX_NOPE", "GATEWAY_SECRET_ACME_NOPE"):
        r = await acme.post("/calls/inline", json={**INLINE, "secretRefs": {"openai_api_key": var}})
        assert r.status_code == 422, r.text
        (field,) = r.json()["error"]["fields"]
        messages.append(field["message"].replace(var, "<var>"))
    assert len(set(messages)) == 1, messages  # set-but-not-granted reads like not-set
    assert "sk-globex" not in "".join(messages)


async def test_operator_grants_widen_a_tenant_and_default_needs_one_too(tenants, monkeypatch):
    monkeypatch.setenv("GATEWAY_SECRET_SHARED_TTS", "tts-key")
    monkeypatch.setenv("GATEWAY_SECRET_OPENAI", "sk-legacy-name")
    body = {**INLINE, "secretRefs": {"tts": "GATEWAY_SECRET_SHARED_TTS"}}
    plain = await tenants("default")
    assert (await plain.post("/calls/inline", json=body)).status_code == 422
    legacy = {**INLINE, "secretRefs": {"openai_api_key": "GATEWAY_SECRET_OPENAI"}}
    assert (await plain.post("/calls/inline", json=legacy)).status_code == 422
    granted = await tenants("default", tenant_secrets={"default": ["*"], "acme": ["GATEWAY_SECRET_SHARED_*"]})
    assert (await granted.post("/calls/inline", json=legacy)).status_code == 201
    acme = await tenants("acme", tenant_secrets={"acme": ["GATEWAY_SECRET_SHARED_*"]})
    assert (await acme.post("/calls/inline", json=body)).status_code == 201
    assert (await acme.post("/calls/inline", json=legacy)).status_code == 422


async def test_agents_and_calls_of_another_tenant_are_not_found(tenants, store):
    acme, globex = await tenants("acme"), await tenants("globex")
    agent = (await acme.post("/agents", json=AGENT)).json()
    assert (await acme.get(f"/agents/{agent['id']}")).status_code == 200
    assert (await globex.get(f"/agents/{agent['id']}")).status_code == 404
    r = await globex.post("/calls/create", json={"agentId": agent["id"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    call = (await acme.post("/calls/create", json={"agentId": agent["id"]})).json()
    assert store.get_call(call["callId"]).tenant == "acme"
    assert (await acme.get(f"/calls/{call['callId']}")).status_code == 200
    assert (await globex.get(f"/calls/{call['callId']}")).status_code == 404
    assert (await globex.get(f"/calls/{call['callId']}/recording")).status_code == 404
    assert store.get_agent(agent["id"], tenant="globex") is None


async def test_secrets_resolve_only_within_the_calls_tenant(monkeypatch):
    """A reference stored before a grant was withdrawn does not resolve at call time."""
    monkeypatch.setenv("GATEWAY_SECRET_SHARED_KEY", "v")
    refs = {"k": "GATEWAY_SECRET_SHARED_KEY", "own": "GATEWAY_SECRET_ACME_UNSET"}
    assert SecretGrants({"acme": ("GATEWAY_SECRET_SHARED_KEY",)}).resolve("acme", refs, os.environ) == {"k": "v"}
    assert SecretGrants().resolve("acme", refs, os.environ) == {}
    assert SecretGrants({"default": ("*",)}).resolve("acme", refs, os.environ) == {}


def test_grant_patterns_and_tenant_names_are_checked():
    with pytest.raises(ValueError):
        SecretGrants({"acme": ("PATH",)})
    with pytest.raises(ValueError):
        SecretGrants({"Bad_Tenant": ("*",)})
    g = SecretGrants({"acme": ("*",)})
    assert g.granted("acme", "GATEWAY_SECRET_ANYTHING") and not g.granted("acme", "GATEWAY_OPENAI_API_KEY")
    # tenant names hold no underscore, so one tenant's prefix never covers another's
    assert not SecretGrants().granted("acme", "GATEWAY_SECRET_ACME2_KEY")
    assert SecretGrants().granted("acme2", "GATEWAY_SECRET_ACME2_KEY")


def test_settings_reject_a_bad_grant(monkeypatch):
    monkeypatch.setenv("GATEWAY_TENANT_SECRETS", '{"acme": ["GATEWAY_OPENAI_API_KEY"]}')
    with pytest.raises(ValueError):
        Settings(_env_file=None)


def test_keys_belong_to_a_tenant(store):
    key, rec = store.create_api_key("ops", tenant="acme")
    assert store.authenticate_api_key(key).tenant == "acme"
    assert store.create_api_key("plain")[1].tenant == "default"
    with pytest.raises(ValueError):
        store.create_api_key("bad", tenant="Acme_Corp")
    assert store.authenticate_api_key("gw_nope") is None and store.verify_api_key(key)
