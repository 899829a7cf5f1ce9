"""``POST /calls/{callId}/control`` on live outbound calls through the carrier simulator: transfer
through each carrier's REST API (the real SDKs), and say / mute / unmute on the running session."""

from __future__ import annotations

import asyncio

import pytest

from gateway.simulator.carrier_api import ScriptBook, line_from_wav, person
from tests.e2e.conftest import gateway  # noqa: F401  (the fixture)
from tests.e2e.test_outbound_calls import CALLEE, KINDS, outbound  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

TRANSFER_TO = "+14155550142"


async def _live(ob, call_id: str) -> None:
    for _ in range(400):
        if call_id in ob.gw.services.live:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} never went live")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_transfer_goes_through_the_carrier_and_ends_the_call_here(kind, outbound, shared_audio):  # noqa: F811
    hello = line_from_wav(shared_audio / "caller/hello.wav")
    ob = await outbound(kind, ScriptBook({CALLEE: person(hello, answer_pause_ms=300, listen_timeout_s=30)}))
    placed = await ob.place(CALLEE)
    call_id = placed["callId"]
    await _live(ob, call_id)
    async with ob.gw.client() as c:
        r = await c.post(f"/calls/{call_id}/control", json={"action": "transfer", "to": TRANSFER_TO})
        assert r.status_code == 202, r.text
        assert r.json() == {"callId": call_id, "action": "transfer", "via": "carrier"}
    rec = await ob.final(call_id)
    assert rec["status"] == "completed" and rec["endReason"] in ("transferred", "carrier_stop", "carrier_closed"), rec
    assert rec["transfer"]["to"] == TRANSFER_TO and rec["transfer"]["at"] is not None
    assert not [e for e in rec["events"] if e["kind"] == "carrier_hangup"], "a transferred call is not hung up"
    sim_call = await ob.sim.wait_done(rec["carrierCallId"], 30)
    assert sim_call.transferred_to == TRANSFER_TO and not sim_call.hung_up_by_api
    caller_id = {"telnyx": sim_call.request.get("transfer_from"), "vonage": sim_call.request.get("transfer_from"),
                 "plivo": sim_call.request.get("transfer_caller_id")}.get(kind)  # fmt: skip
    assert kind == "twilio" or caller_id in (rec["from"], rec["from"].lstrip("+")), (rec["from"], sim_call.request)
    async with ob.gw.client() as c:
        r = await c.post(f"/calls/{call_id}/control", json={"action": "transfer", "to": TRANSFER_TO})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_live"


async def test_say_mute_and_unmute_act_on_the_running_call(outbound, shared_audio):  # noqa: F811
    hello = line_from_wav(shared_audio / "caller/hello.wav")
    ob = await outbound("twilio", ScriptBook({CALLEE: person(hello, answer_pause_ms=300, listen_timeout_s=30)}))
    placed = await ob.place(CALLEE)
    call_id = placed["callId"]
    await _live(ob, call_id)
    async with ob.gw.client() as c:
        for body in ({"action": "mute"}, {"action": "say", "text": "You will not hear this."}, {"action": "unmute"},
                     {"action": "say", "text": "Thanks for holding."}):  # fmt: skip
            r = await c.post(f"/calls/{call_id}/control", json=body)
            assert r.status_code == 202 and r.json()["via"] == "session", r.text
        session = ob.gw.services.live[call_id]
        for _ in range(200):  # the line said after the unmute plays
            if any("Thanks for holding" in t["text"] for t in session.turns.transcript):
                break
            await asyncio.sleep(0.05)
        r = await c.post(f"/calls/{call_id}/control", json={"action": "hangup"})
        assert r.status_code == 202, r.text
    rec = await ob.final(call_id)
    kinds = [e["kind"] for e in rec["events"]]
    assert kinds.index("agent_muted") < kinds.index("agent_unmuted"), kinds
    stops = [e["data"]["reason"] for e in rec["events"] if e["kind"] == "agent_stopped"]
    assert "agent_muted" in stops, rec["events"]
    agent = [t for t in rec["transcript"] if t["speaker"] == "agent"]
    assert any("Thanks for holding" in t["text"] and not t["interrupted"] for t in agent), agent
