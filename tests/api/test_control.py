"""``POST /calls/{callId}/control`` against a live call's ControlPolicy: 429 once its queue is full."""

from __future__ import annotations

from types import SimpleNamespace

import httpx

from gateway.api import create_api
from gateway.llm.base import AgentConfig
from gateway.session.control import MAX_PENDING, ControlPolicy
from tests.api.conftest import BASE_URL, fake_instructions


async def test_dtmf_to_a_call_with_a_full_control_queue_is_429(store, settings, api_key) -> None:
    rec, _token = store.create_call(AgentConfig(), "twilio")
    control = ControlPolicy()  # the stream has not started: nothing drains the queue
    app = create_api(store, settings, instruction_document=fake_instructions)
    app.state.api.live_session = {rec.id: SimpleNamespace(control=control)}.get
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers={"X-API-Key": api_key}) as c:
        for _ in range(MAX_PENDING):
            r = await c.post(f"/calls/{rec.id}/control", json={"action": "send_dtmf", "digits": "1"})
            assert r.status_code == 202 and r.json()["via"] == "in_band", r.text
        r = await c.post(f"/calls/{rec.id}/control", json={"action": "send_dtmf", "digits": "2"})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "too_many_requests"
        r = await c.post(f"/calls/{rec.id}/control", json={"action": "hangup"})
        assert r.status_code == 202 and r.json()["via"] == "session", r.text
    assert len(control.take()) == MAX_PENDING + 1


async def test_dtmf_says_which_way_it_went_for_each_carrier(store, settings, api_key) -> None:
    """Plivo's stream protocol has sendDTMF (via stream); Twilio's has none (in-band tones)."""
    from gateway.carriers.registry import make_adapter

    app = create_api(store, settings, instruction_document=fake_instructions)
    sessions = {}
    for carrier in ("plivo", "twilio"):
        rec, _token = store.create_call(AgentConfig(), carrier)
        sessions[rec.id] = (carrier, SimpleNamespace(control=ControlPolicy(), adapter=make_adapter(carrier)))
    app.state.api.live_session = lambda call_id: sessions[call_id][1]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers={"X-API-Key": api_key}) as c:
        for call_id, (carrier, session) in sessions.items():
            r = await c.post(f"/calls/{call_id}/control", json={"action": "send_dtmf", "digits": "12#"})
            assert r.status_code == 202, r.text
            assert r.json()["via"] == {"plivo": "stream", "twilio": "in_band"}[carrier]
            assert len(session.control.take()) == 1


async def test_a_bad_control_body_names_the_field(store, settings, api_key) -> None:
    rec, _token = store.create_call(AgentConfig(), "twilio")
    app = create_api(store, settings, instruction_document=fake_instructions)
    transport = httpx.ASGITransport(app=app)
    cases = [
        ({"action": "send_dtmf"}, "digits", "field required"),
        ({"action": "send_dtmf", "digits": "12x"}, "digits", "String should match pattern '^[0-9*#A-D]{1,32}$'"),
        ({"action": "hangup", "digits": "1"}, "digits", "unknown field"),
        ({"action": "teleport"}, "action", "must be one of 'hangup', 'send_dtmf', 'say', 'mute', 'unmute', 'transfer'"),
        ({"action": "transfer"}, "to", "field required"),
        ({"digits": "1"}, "action", "field required"),
    ]
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers={"X-API-Key": api_key}) as c:
        for body, field, message in cases:
            r = await c.post(f"/calls/{rec.id}/control", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["fields"] == [{"field": field, "message": message}], body
        r = await c.post(f"/calls/{rec.id}/control", json={"action": "hangup"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_live", "not served here"
