"""Outbound calls through the gateway's own API, for every carrier: ``POST /carrier-accounts``,
``POST /calls/outbound``, the real carrier SDK placing the call against the carrier simulator,
signed status callbacks into the gateway's callback routes, the callee's media stream into the
gateway, and the record's lifecycle with each transition's source.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.simulator.carrier_api import CarrierSimulator, ScriptBook, line_from_wav, person, simple
from gateway.simulator.carrier_api.accounts import new_account, secret_refs
from tests.e2e.conftest import gateway  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

KINDS = ["twilio", "telnyx", "plivo", "vonage"]
# valid numbers (phonenumbers refuses the fictional +1 555 range) in the 555-01xx block
CALLEE, FROM = "+14155550101", "+14155550199"
BUSY, NO_ANSWER, FAILED, REFUSED = "+14155550105", "+14155550106", "+14155550107", "+14155550109"
OUTCOMES = {BUSY: simple("busy"), NO_ANSWER: simple("no_answer", ring_ms=20000), FAILED: simple("failed")}
TERMINAL = {"completed", "failed", "no_answer", "busy", "declined", "voicemail", "canceled", "expired"}
AGENT = {
    "systemPrompt": "You are a test agent.",
    "firstMessage": "Hello, this is the test desk calling. How can I help you today?",
    "objective": "Find out what the callee needs.",
}


class Outbound:
    """A gateway, the simulator serving ``kind``'s API, and an account registered through the API."""

    def __init__(self, gw, sim: CarrierSimulator, kind: str, account_id: str) -> None:
        self.gw, self.sim, self.kind, self.account_id = gw, sim, kind, account_id

    async def place(self, to: str, **body) -> dict:
        async with self.gw.client() as c:
            r = await c.post("/calls/outbound", json={"to": to, **AGENT, **body})
        assert r.status_code == 201, r.text
        return r.json()

    async def final(self, call_id: str, timeout_s: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout_s
        async with self.gw.client() as c:
            while True:
                rec = (await c.get(f"/calls/{call_id}")).json()
                if rec["status"] in TERMINAL or time.monotonic() > deadline:
                    return rec
                await asyncio.sleep(0.1)

    def sim_call(self, rec: dict):
        return self.sim.calls[rec["carrierCallId"]]


@pytest.fixture
async def outbound(gateway, monkeypatch):  # noqa: F811
    """``await outbound(kind, book)`` → :class:`Outbound` (the simulator stops at teardown)."""
    stack = []

    async def start(kind: str, book: ScriptBook | None = None) -> Outbound:
        creds = new_account(kind)
        refs, env = secret_refs(kind, creds)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        book = book or ScriptBook()
        for number, script in OUTCOMES.items():
            book.entries.setdefault(number, script)
        sim = CarrierSimulator({kind: creds}, scripts=book)
        cm = sim.serving()
        api = await cm.__aenter__()
        stack.append(cm)
        gw = await gateway(carrier_api_urls={kind: api})
        async with gw.client() as c:
            r = await c.post("/carrier-accounts", json={"kind": kind, "name": f"sim {kind}", "secretRefs": refs,
                                                        "numbers": [FROM], "default": True})  # fmt: skip
        assert r.status_code == 201, r.text
        return Outbound(gw, sim, kind, r.json()["id"])

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


def lifecycle(rec: dict) -> list[tuple[str, str]]:
    return [(t["to"], t["source"]) for t in rec["transitions"]]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_outbound_call_completes_with_a_transcript_and_its_whole_lifecycle(kind, outbound, shared_audio):
    hello = line_from_wav(shared_audio / "caller/hello.wav")
    clubs = line_from_wav(shared_audio / "speech/cards-003.wav")  # "seven of clubs"
    book = ScriptBook({CALLEE: person(hello, clubs, answer_pause_ms=300, listen_timeout_s=20)})
    ob = await outbound(kind, book)
    placed = await ob.place(CALLEE)
    assert placed["status"] == "queued" and placed["to"] == CALLEE and placed["from"] == FROM
    rec = await ob.final(placed["callId"])

    assert rec["status"] == "completed", rec
    assert rec["direction"] == "outbound" and rec["carrierAccountId"] == ob.account_id
    agent = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
    user = " ".join(t["text"] for t in rec["transcript"] if t["role"] == "user").lower()
    assert agent and agent[0].startswith("Hello, this is the test desk calling"), rec["transcript"]
    assert "clubs" in user, rec["transcript"]
    steps = lifecycle(rec)
    statuses = [s for s, _ in steps]
    assert statuses[:2] == ["queued", "initiated"] and statuses[-1] == "completed", steps
    assert "in_progress" in statuses and statuses.index("in_progress") < len(statuses) - 1
    if kind != "telnyx":  # Telnyx Call Control sends no ringing event
        assert ("ringing", "carrier") in steps, steps
    assert dict(steps)["queued"] == "gateway" and dict(steps)["in_progress"] in ("carrier", "media")
    stamps = [t["at"] for t in rec["transitions"]]
    assert stamps == sorted(stamps)
    # the simulator's duplicate and late callbacks reached the gateway and changed nothing
    sim_call = ob.sim_call(rec)
    assert sim_call.error is None
    codes = {event: code for event, code in sim_call.callbacks}
    assert codes and all(code == (200 if event == "answer_url" else 204) for event, code in codes.items()), codes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("number, status", [(BUSY, "busy"), (NO_ANSWER, "no_answer"), (FAILED, "failed")])
async def test_calls_nobody_answers_end_in_the_carriers_status(kind, number, status, outbound):
    ob = await outbound(kind)
    placed = await ob.place(number, ringTimeout=5)
    rec = await ob.final(placed["callId"], timeout_s=30)
    assert rec["status"] == status, rec
    steps = lifecycle(rec)
    assert steps[0] == ("queued", "gateway") and steps[-1] == (status, "carrier"), steps
    assert rec["transcript"] == [] and rec["recording"] is None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tampered_callback_is_refused_and_changes_nothing(kind, outbound):
    ob = await outbound(kind)
    placed = await ob.place(BUSY)
    rec = await ob.final(placed["callId"], timeout_s=30)
    assert rec["status"] == "busy"
    sent = ob.sim_call(rec).sent
    original = sent.get("ringing") or sent["initiated"]
    tampered = original.body.replace(b"ringing", b"in-progress").replace(b"initiated", b"answered")
    assert tampered != original.body
    async with httpx.AsyncClient(timeout=10) as http:
        bad = await http.request(original.method, original.url, headers=dict(original.headers), content=tampered)
        unsigned = await http.request(original.method, original.url, content=original.body,
                                      headers={k: v for k, v in original.headers.items()
                                               if k.lower() in ("content-type",)})  # fmt: skip
        again = await http.request(original.method, original.url, headers=dict(original.headers),
                                   content=original.body)  # fmt: skip
    assert bad.status_code == 403 and unsigned.status_code == 403
    assert again.status_code == 204  # a genuine re-delivery: a duplicate, nothing changes
    after = await ob.final(placed["callId"])
    assert after["status"] == "busy" and after["transitions"] == rec["transitions"]


async def test_a_carrier_refusal_fails_the_call_with_the_carriers_code(outbound):
    from gateway.simulator.carrier_api import ApiFault

    book = ScriptBook({REFUSED: ApiFault(400, "21215", "Geo permission configuration is not permitting call")})
    ob = await outbound("twilio", book)
    placed = await ob.place(REFUSED)
    rec = await ob.final(placed["callId"], timeout_s=30)
    assert rec["status"] == "failed" and rec["endReason"] == "carrier_error", rec
    assert rec["error"]["code"] == "carrier_21215" and "Geo permission" in rec["error"]["message"]
    assert lifecycle(rec) == [("queued", "gateway"), ("failed", "gateway")]


@pytest.mark.parametrize("kind, via", [("twilio", "in_band"), ("plivo", "carrier")])
async def test_control_sends_dtmf_and_hangs_up_through_the_carrier(kind, via, outbound, shared_audio):
    hello = line_from_wav(shared_audio / "caller/hello.wav")
    book = ScriptBook({CALLEE: person(hello, answer_pause_ms=300, listen_timeout_s=30)})
    ob = await outbound(kind, book)
    placed = await ob.place(CALLEE)
    call_id = placed["callId"]
    async with ob.gw.client() as c:
        for _ in range(300):
            if call_id in ob.gw.services.live:
                break
            await asyncio.sleep(0.05)
        r = await c.post(f"/calls/{call_id}/control", json={"action": "send_dtmf", "digits": "123#"})
        assert r.status_code == 202 and r.json()["via"] == via, r.text
        r = await c.post(f"/calls/{call_id}/control", json={"action": "hangup"})
        assert r.status_code == 202 and r.json()["via"] == "session", r.text
    rec = await ob.final(call_id)
    assert rec["status"] == "completed" and rec["endReason"] == "api_hangup", rec
    hangup = [e for e in rec["events"] if e["kind"] == "carrier_hangup"]
    assert hangup and hangup[0]["data"]["ok"] is True, rec["events"]
    sim_call = await ob.sim.wait_done(rec["carrierCallId"], 30)
    assert sim_call.hung_up_by_api
    if via == "carrier":
        assert sim_call.dtmf == ["123#"]
    else:
        assert any(e["kind"] == "dtmf_sent" for e in rec["events"]), rec["events"]
    async with ob.gw.client() as c:
        r = await c.post(f"/calls/{call_id}/control", json={"action": "hangup"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_live"
