"""Per-call secret resolution is scoped to the call's tenant, over real sockets: the key a
tenant references reaches the model's handshake; a call of another tenant holding the same
reference (stored before a grant was withdrawn, or written by anything but the API) gets
nothing, and the model never sees the key."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gateway.simulator.caller import SimulatedCaller, WaitForAgent
from gateway.store import TERMINAL_STATUSES, CallConfig
from tests.e2e.test_realtime_bridges import GREETING, TwilioMouth
from tests.llm.fake_servers import FakeRealtimeServer, Reply
from tests.llm.fake_servers import Say as ModelSays

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(60)]

AGENT = {"name": "acme desk", "systemPrompt": "You are a test agent.", "voice": "marin", "language": "en-US",
         "greeting": "Hello.", "model": "openai:gpt-realtime",
         "secretRefs": {"openai_api_key": "GATEWAY_SECRET_ACME_OPENAI"}}  # fmt: skip


async def _final(store, call_id: str):
    """The call's record once it is final (the default tenant's REST key cannot read it)."""
    for _ in range(200):
        rec = store.get_call(call_id)
        if rec.status in TERMINAL_STATUSES:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} never finalised: {rec}")


async def test_secret_references_resolve_only_within_the_calls_tenant(gateway, monkeypatch):
    value = "sk-acme-" + secrets.token_hex(12)
    monkeypatch.setenv("GATEWAY_SECRET_ACME_OPENAI", value)
    async with FakeRealtimeServer(api_key=value, replies=[Reply([ModelSays(GREETING)])]) as srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key="")
        store = gw.services.store
        acme_key, _ = store.create_api_key("acme", tenant="acme")
        async with gw.client() as c:
            c.headers["X-API-Key"] = acme_key
            r = await c.post("/agents", json=AGENT)
            assert r.status_code == 201, r.text
            created = (await c.post("/calls/create", json={"agentId": r.json()["id"]})).json()
        await SimulatedCaller(created["streamUrl"], TwilioMouth(), hangup_quiet_ms=0).run(
            [WaitForAgent(timeout_s=10, quiet_ms=300)]
        )
        assert [h["authorization"] for _, h in srv.handshakes] == [f"Bearer {value}"]
        ok = await _final(store, created["callId"])
        assert (ok.tenant, ok.status.value) == ("acme", "completed"), ok.error_message

        # the same reference on a call of another tenant resolves to nothing
        config = CallConfig(model="openai:gpt-realtime", secret_refs={"openai_api_key": "GATEWAY_SECRET_ACME_OPENAI"})
        call, token = store.create_call(config, "twilio", tenant="globex")
        url = f"{gw.http.replace('http://', 'ws://')}/stream/twilio/{call.id}/{token}"
        await SimulatedCaller(url, TwilioMouth(), hangup_quiet_ms=0).run([WaitForAgent(timeout_s=5, quiet_ms=300)])
        rec = await _final(store, call.id)
    assert (rec.status.value, rec.error_code) == ("failed", "model_config"), rec
    assert value not in str(rec)
    assert len(srv.handshakes) == 1  # the model never saw a handshake for the other tenant
