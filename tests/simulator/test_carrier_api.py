"""The carrier simulator on its own: scripts, the number book, and each API's wire format as a
plain HTTP client sees it (what the SDKs parse), over loopback sockets."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from gateway.simulator.caller import Pause, Say, WaitForAgent
from gateway.simulator.carrier_api import (
    ApiFault,
    CarrierSimulator,
    ScriptBook,
    line_from_wav,
    person,
    screening,
    simple,
    synth_speech,
    tone,
    voicemail,
)
from gateway.simulator.carrier_api.scripts import DEFAULT_NUMBERS

TWILIO = {"account_sid": "AC" + "7" * 32, "auth_token": "tok"}
PLIVO = {"auth_id": "MAZJKXNZQ2ODBMMJEXNG", "auth_token": "ptok"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_synthesised_speech_has_syllables_and_the_beep_is_one_narrow_tone():
    pcm, rate = synth_speech(1500, 8000)
    assert rate == 8000 and 1.5 <= pcm.size / rate <= 2.2
    frames = pcm[: pcm.size // 160 * 160].reshape(-1, 160).astype(float)
    rms = np.sqrt((frames**2).mean(axis=1))
    voiced = rms > 0.1 * rms.max()
    assert 0.5 < voiced.mean() < 0.95, "speech with gaps between syllables"
    assert np.count_nonzero(np.diff(voiced.astype(int)) == 1) >= 4, "several syllables"
    beep, _ = tone(1000, 400, 8000)
    spectrum = np.abs(np.fft.rfft(beep.astype(float)))
    assert abs(np.argmax(spectrum) * 8000 / beep.size - 1000) < 5
    assert spectrum[np.abs(np.fft.rfftfreq(beep.size, 1 / 8000) - 1000) > 50].max() < 0.05 * spectrum.max()


def test_scripts_become_caller_steps(shared_audio):
    hello = line_from_wav(shared_audio / "caller/hello.wav")
    steps = person(hello, answer_pause_ms=200).steps(8000)
    assert isinstance(steps[0], Pause) and steps[0].ms == 200
    assert isinstance(steps[1], Say) and isinstance(steps[2], WaitForAgent)
    assert steps[1].pcm.size == pytest.approx(hello[0].size / 2, abs=2), "resampled 16 → 8 kHz"
    greeting = line_from_wav(shared_audio / "voicemail/vm-nobodyavail.wav")
    vm = voicemail(greeting, beep=line_from_wav(shared_audio / "voicemail/beep.wav"), silence_ms=1500).steps(8000)
    assert [type(s).__name__ for s in vm] == ["Pause", "Say", "Say", "Pause"]
    assert vm[2].label == "beep" and vm[3].ms == 1500
    assert [type(s).__name__ for s in screening().steps(8000)] == ["Pause", "Say", "WaitForAgent", "Pause"]
    assert [type(s).__name__ for s in simple("silence", silence_ms=900).steps(16000)] == ["Pause", "Pause"]
    assert simple("busy").steps(8000) == [Pause(300)] and not simple("busy").answers


def test_the_book_has_a_number_for_every_script_and_takes_overrides(shared_audio):
    book = ScriptBook()
    assert {book.lookup(n).kind for n in DEFAULT_NUMBERS} == {"person", "voicemail", "screening", "silence", "busy",
                                                              "no_answer", "failed", "declined"}
    assert book.lookup("+449999").kind == "person"
    real = ScriptBook.from_recordings(shared_audio)
    assert real.lookup("+15550100001").lines[0][1] == 16000 and len(real.lookup("+15550100001").lines) == 2
    assert real.lookup("+15550100002").beep[0].size == pytest.approx(0.43 * 8000, rel=0.05)
    assert real.lookup("+449999") is real.lookup("+15550100001")
    with pytest.raises(FileNotFoundError):
        ScriptBook.from_recordings(shared_audio / "nowhere")
    fault = ApiFault(400, "21211", "Invalid 'To'")
    book.add("+15550100001", fault)
    assert book.lookup("+15550100001") is fault


async def test_twilio_api_speaks_twilio_json_and_errors():
    sim = CarrierSimulator({"twilio": TWILIO})
    calls = f"/2010-04-01/Accounts/{TWILIO['account_sid']}/Calls.json"
    async with sim.serving() as api, httpx.AsyncClient(base_url=api) as http:
        auth = basic(TWILIO["account_sid"], TWILIO["auth_token"])
        denied = await http.post(calls, data={"To": "+15550100005"}, headers=basic(TWILIO["account_sid"], "x"))
        bad_to = await http.post(calls, data={"To": "555", "From": "+15550009999", "Twiml": "<Response/>"},
                                 headers=auth)
        no_url = await http.post(calls, data={"To": "+15550100005", "From": "+15550009999"}, headers=auth)
        made = await http.post(calls, data={"To": "+15550100005", "From": "+15550009999", "Twiml": "<Response/>"},
                               headers=auth)
        sid = made.json()["sid"]
        fetched = await http.get(calls.replace(".json", f"/{sid}.json"), headers=auth)
        unknown = await http.post(calls.replace(".json", "/CA00.json"), data={"Status": "completed"}, headers=auth)
        await sim.wait_done(sid, 10)
        ended = await http.post(calls.replace(".json", f"/{sid}.json"), data={"Status": "completed"}, headers=auth)
    assert denied.status_code == 401 and denied.json()["code"] == 20003
    assert bad_to.status_code == 400 and bad_to.json() == {
        "code": 21211, "message": "Invalid 'To' Phone Number: 555",
        "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}
    assert no_url.json()["code"] == 21205
    assert made.status_code == 201 and made.json()["status"] == "queued" and sid.startswith("CA")
    assert fetched.json()["to"] == "+15550100005"
    assert unknown.status_code == 404 and unknown.json()["code"] == 20404
    assert ended.status_code == 400 and ended.json()["code"] == 21220


async def test_plivo_api_speaks_plivo_json_and_errors():
    sim = CarrierSimulator({"plivo": PLIVO})
    base = f"/v1/Account/{PLIVO['auth_id']}"
    async with sim.serving() as api, httpx.AsyncClient(base_url=api) as http:
        auth = basic(PLIVO["auth_id"], PLIVO["auth_token"])
        denied = await http.post(base + "/Call/", json={}, headers=basic(PLIVO["auth_id"], "x"))
        bad_to = await http.post(base + "/Call/", json={"to": "12", "from": "15550009999",
                                                        "answer_url": "http://127.0.0.1:9/a"}, headers=auth)
        made = await http.post(base + "/Call/", json={"to": "15550100006", "from": "15550009999",
                                                      "answer_url": "http://127.0.0.1:9/a"}, headers=auth)
        uuid = made.json()["request_uuid"]
        not_live = await http.delete(f"{base}/Call/{uuid}/", headers=auth)  # ringing: not a live call yet
        cancelled = await http.delete(f"{base}/Request/{uuid}/", headers=auth)
        call = await sim.wait_done(uuid, 5)
        gone = await http.delete(f"{base}/Request/{uuid}/", headers=auth)
    assert denied.status_code == 401 and "error" in denied.json()
    assert bad_to.status_code == 400 and set(bad_to.json()) == {"api_id", "error"}
    assert made.status_code == 201 and made.json()["message"] == "call fired"
    assert not_live.status_code == 404 and cancelled.status_code == 204 and gone.status_code == 404
    assert call.status == "canceled"


async def test_an_answer_url_that_fails_fails_the_call_instead_of_crashing_the_simulator():
    sim = CarrierSimulator({"plivo": PLIVO}, scripts=ScriptBook({"+15551239999": person(ring_ms=50)}))
    async with sim.serving() as api, httpx.AsyncClient(base_url=api) as http:
        made = await http.post(f"/v1/Account/{PLIVO['auth_id']}/Call/",
                               json={"to": "+15551239999", "from": "+15550009999",
                                     "answer_url": f"{api}/nothing-here"},
                               headers=basic(PLIVO["auth_id"], PLIVO["auth_token"]))
        call = await sim.wait_done(made.json()["request_uuid"], 10)
    assert call.status == "failed" and "answer URL answered 404" in call.error
    assert ("answer_url", 404) in call.callbacks


def test_an_unknown_carrier_is_refused():
    with pytest.raises(ValueError, match="no simulated API for 'exotel'"):
        CarrierSimulator({"exotel": {}})


async def test_plivo_answer_url_is_fetched_with_the_method_the_call_asked_for():
    from gateway.dialer import make_dialer
    from tests.dialer.harness import CallbackReceiver, MediaSink, serve

    sim = CarrierSimulator({"plivo": PLIVO}, scripts=ScriptBook({"+15551238888": simple("silence", silence_ms=200)}))
    receiver = CallbackReceiver(make_dialer("plivo"), PLIVO, "plivo")
    sink = MediaSink()
    async with sim.serving() as api, serve(receiver.app) as base, sink.running(), httpx.AsyncClient() as http:
        receiver.base_url, receiver.stream_url = base, f"{sink.url}/stream/plivo/c/t"
        made = await http.post(f"{api}/v1/Account/{PLIVO['auth_id']}/Call/",
                               json={"to": "+15551238888", "from": "+15550009999", "answer_method": "GET",
                                     "answer_url": receiver.answer_url("c") + "?tenant=a"},
                               headers=basic(PLIVO["auth_id"], PLIVO["auth_token"]))
        call = await sim.wait_done(made.json()["request_uuid"], 10)
    answer = [r for r in receiver.received if "/answer/" in r.url]
    assert [r.method for r in answer] == ["GET"] and answer[0].verified and answer[0].body == b""
    assert "tenant=a" in answer[0].url and "Event=StartApp" in answer[0].url
    assert answer[0].event.status == "in_progress"
    assert call.error is None and sink.paths == ["/stream/plivo/c/t"]
