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
    await ob.sim.wait_done(rec["carrierCallId"], 30)  # every callback sent, the late ones too
    rec = await ob.final(placed["callId"])

    assert rec["status"] == "completed", rec
    assert rec["direction"] == "outbound" and rec["carrierAccountId"] == ob.account_id
    agent = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
    user = " ".join(t["text"] for t in rec["transcript"] if t["role"] == "user").lower()
    assert agent and agent[0].startswith("Hello, this is the test desk calling"), rec["transcript"]
    steps = lifecycle(rec)
    ringing = [] if kind == "telnyx" else ["ringing"]  # Telnyx Call Control sends no ringing event
    assert [s for s, _ in steps] == ["queued", "initiated", *ringing, "in_progress", "completed"], steps
    sources = dict(steps)
    assert sources["queued"] == "gateway" and sources["completed"] == "gateway", steps
    assert sources["initiated"] in ("gateway", "carrier") and sources["in_progress"] in ("carrier", "media")
    assert not ringing or sources["ringing"] == "carrier"
    assert rec["carrierStatus"] == "completed", "the carrier's own final word, after the gateway's"
    stamps = [t["at"] for t in rec["transitions"]]
    assert stamps == sorted(stamps)
    # the simulator's duplicate and late callbacks reached the gateway and changed nothing
    sim_call = ob.sim_call(rec)
    assert sim_call.error is None
    codes = {event: code for event, code in sim_call.callbacks}
    assert codes and all(code == (200 if event == "answer_url" else 204) for event, code in codes.items()), codes
    # Each carrier streams what the instruction documents ask for: Vonage wideband L16 16 kHz.
    started = next(e for e in rec["events"] if e["kind"] == "started")
    assert started["data"]["format"] == ("l16@16000" if kind == "vonage" else "pcmu@8000"), started
    # The callee's second line was heard and answered ("I heard you say: …").
    assert len(agent) >= 2 and agent[-1].startswith("I heard you say:") and user.strip(), rec["transcript"]
    assert "clubs" in user, rec["transcript"]


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


RINGING_LONG = "+14155550108"
#: The word a tampered body says instead, per carrier (a forged answer).
FORGED = {"twilio": (b"ringing", b"in-progress"), "plivo": (b"ringing", b"in-progress"),
          "telnyx": (b"call.initiated", b"call.answered"), "vonage": (b"ringing", b"answered")}


async def _until(ob: Outbound, call_id: str, status: str, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    async with ob.gw.client() as c:
        while True:
            rec = (await c.get(f"/calls/{call_id}")).json()
            if rec["status"] == status and rec["carrierCallId"] or time.monotonic() > deadline:
                return rec
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", KINDS)
async def test_forged_and_replayed_callbacks_are_refused_and_change_nothing(kind, outbound):
    """While two calls ring: a tampered body, an unsigned one and a callback of one call replayed
    at the other's URL change nothing; a genuine re-delivery is a 204 duplicate; a hang-up
    requested through the API while ringing ends the call ``canceled`` through the carrier."""
    ob = await outbound(kind, ScriptBook({RINGING_LONG: simple("no_answer", ring_ms=60000)}))
    first, second = await ob.place(RINGING_LONG, ringTimeout=60), await ob.place(RINGING_LONG, ringTimeout=60)
    want = "initiated" if kind == "telnyx" else "ringing"  # Telnyx sends no ringing event
    a, b = await _until(ob, first["callId"], want), await _until(ob, second["callId"], want)
    assert a["status"] == want and b["status"] == want, (a, b)
    for _ in range(100):  # the simulator's duplicate arrives just after
        if len(ob.sim_call(a).callbacks) >= 2:
            break
        await asyncio.sleep(0.05)
    original = ob.sim_call(a).sent[want]
    old, new = FORGED[kind]
    tampered = original.body.replace(old, new)
    assert tampered != original.body
    async with httpx.AsyncClient(timeout=10) as http:
        async def send(url: str, body: bytes, headers: dict) -> int:
            return (await http.request(original.method, url, headers=headers, content=body)).status_code

        signed = dict(original.headers)
        plain = {k: v for k, v in signed.items() if k.lower() == "content-type"}
        assert await send(original.url, tampered, signed) == 403
        assert await send(original.url, original.body, plain) == 403
        assert await send(original.url, original.body, signed) == 204  # a genuine re-delivery
        async with ob.gw.client() as c:
            r = await c.post(f"/calls/{first['callId']}/control", json={"action": "hangup"})
        assert r.status_code == 202 and r.json()["via"] == "carrier", r.text
        ended = await ob.final(first["callId"], timeout_s=20)
        assert ended["status"] == "canceled", ended
        # the first call's signed "canceled", replayed at the second call's URL
        canceled = ob.sim_call(a).sent["canceled"]
        replay_url = canceled.url.replace(first["callId"], second["callId"])
        replayed = await send(replay_url, canceled.body, dict(canceled.headers))
    assert replayed in (403, 204), replayed  # URL-signed carriers refuse it; the others ignore it
    after_a = await _until(ob, first["callId"], "canceled")
    after_b = await _until(ob, second["callId"], want)
    assert after_b["status"] == want and after_b["transitions"] == b["transitions"], after_b
    assert [t["to"] for t in after_a["transitions"]] == [t["to"] for t in a["transitions"]] + ["canceled"]


@pytest.mark.parametrize("kind", ["telnyx", "vonage", "twilio"])
async def test_only_plivo_has_an_answer_url(kind, outbound):
    ob = await outbound(kind)
    placed = await ob.place(BUSY)
    async with httpx.AsyncClient(base_url=ob.gw.http, timeout=10) as http:
        r = await http.post(f"/carriers/{kind}/answer/{placed['callId']}", content=b"{}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_a_twilio_account_stream_needs_the_accounts_signature(outbound):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
    import xml.etree.ElementTree as ET

    ob = await outbound("twilio", ScriptBook({RINGING_LONG: simple("no_answer", ring_ms=60000)}))
    placed = await ob.place(RINGING_LONG, ringTimeout=60)
    rec = await _until(ob, placed["callId"], "ringing")
    url = ET.fromstring(ob.sim_call(rec).request["twiml"]).find("./Connect/Stream").get("url")
    for headers in ({}, {"X-Twilio-Signature": "bm90IHRoZSBzaWduYXR1cmU="}):
        async with connect(url, additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 4403
    after = await _until(ob, placed["callId"], "ringing")
    assert after["startedAt"] is None, "the refused socket did not claim the call"


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
