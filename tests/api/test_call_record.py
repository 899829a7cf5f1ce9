"""``GET /calls/{callId}`` (the full record: objective, post-call results, transcript spans,
latency figures, recording URL) and ``GET /calls/{callId}/recording`` with ``Range``, over real
HTTP on loopback; ``call_out`` outside a request (the end-of-call report's use)."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from gateway.api import create_api
from gateway.api.call_views import call_out
from gateway.config import Settings
from gateway.llm.base import AgentConfig
from gateway.store import CallRecorder, Store
from gateway.store.models import Call
from tests.api.conftest import fake_instructions
from tests.api.loopback import serve
from tests.conftest import load_wav

TRANSCRIPT = [
    {"role": "agent", "text": "Hello, Smile Dental.", "at_ms": 900, "start_ms": 150, "end_ms": 1650},
    {"role": "user", "text": "Hi, I need a cleaning.", "at_ms": 4100, "start_ms": 2000, "end_ms": 3600},
    {"role": "agent", "text": "Sure, which day suits you?", "at_ms": 4500, "start_ms": 4080, "end_ms": 4680,
     "latency_ms": 480, "interrupted": True, "heard_ms": 600},
    {"role": "user", "text": "Tuesday.", "at_ms": 6000, "start_ms": 4550, "end_ms": 5400},
    {"role": "agent", "text": "Tuesday at ten it is.", "at_ms": 6400, "start_ms": 5760, "end_ms": 7260,
     "latency_ms": 360},
]
METRICS = {"turnLatencyMs": [480.4, 360.0, 1210.2], "bargeInReactionMs": [182.6]}


def _record(path: Path, caller_wav: Path) -> None:
    """A two-channel recording whose caller side is a real recording."""
    pcm, rate = load_wav(caller_wav)
    with CallRecorder(path, sample_rate=rate) as rec:
        rec.caller(pcm, 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, shared_audio: Path) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("call-record")
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp / 'gw.db'}", public_url="",
                        recordings_dir=tmp / "rec")  # fmt: skip
    store = Store(settings.database_url)
    store.create_all()
    rec, _ = store.create_call(AgentConfig(), "twilio", direction="outbound", to="+14155550100",
                               from_="+14155550199", outbound={"objective": "Book a cleaning"})  # fmt: skip
    wav = tmp / "rec" / f"{rec.id}.wav"
    _record(wav, shared_audio / "caller" / "hello.wav")
    store.mark_call_started(rec.id)
    store.finalise_call(rec.id, status="completed", end_reason="caller_hangup", duration_ms=7_420,
                        transcript=TRANSCRIPT, metrics=METRICS, recording_path=wav)  # fmt: skip
    with store._session() as s, s.begin():  # the post-call step's results, as it stores them
        s.execute(update(Call).where(Call.id == rec.id).values(
            post_call_status="completed", summary="The caller booked a cleaning on Tuesday at ten.",
            extracted={"day": "Tuesday", "confirmed": True}))  # fmt: skip
    bare, _ = store.create_call(AgentConfig(), "twilio")
    key = store.create_api_key("tests")[0]
    other = store.create_api_key("other", tenant="other")[0]
    app = create_api(store, settings, instruction_document=fake_instructions)
    with serve(app) as base_url, httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as http:
        yield {"http": http, "id": rec.id, "bare": bare.id, "wav": wav.read_bytes(), "store": store,
               "app": app, "base_url": base_url, "other": other}  # fmt: skip
    store.close()


def test_the_record_has_the_after_call_fields(world) -> None:
    r = world["http"].get(f"/calls/{world['id']}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["objective"] == "Book a cleaning"
    assert body["summary"] == "The caller booked a cleaning on Tuesday at ten."
    assert body["extracted"] == {"day": "Tuesday", "confirmed": True}
    assert body["postCall"] == {"status": "completed", "error": None}
    assert body["durationSec"] == 7.42 and body["durationMs"] == 7_420
    assert body["recordingUrl"] == f"{world['base_url']}/calls/{world['id']}/recording" == body["recording"]["url"]
    speakers = [(t["speaker"], t["startMs"], t["endMs"], t["latencyMs"]) for t in body["transcript"]]
    assert speakers == [("agent", 150, 1650, None), ("caller", 2000, 3600, None), ("agent", 4080, 4680, 480),
                        ("caller", 4550, 5400, None), ("agent", 5760, 7260, 360)]  # fmt: skip
    assert body["transcript"][2]["interrupted"] and body["transcript"][2]["heardMs"] == 600
    # per turn from the transcript; the median and maximum over every sample the call took
    assert body["latency"] == {"turns": [{"turn": 2, "ms": 480}, {"turn": 4, "ms": 360}],
                               "responseP50Ms": 480, "responseMaxMs": 1210, "bargeInMs": [183]}  # fmt: skip


def test_a_call_that_never_ran_has_empty_figures(world) -> None:
    body = world["http"].get(f"/calls/{world['bare']}").json()
    assert (body["objective"], body["summary"], body["extracted"], body["recordingUrl"], body["durationSec"]) == (
        None, None, None, None, None)  # fmt: skip
    assert body["postCall"] == {"status": None, "error": None}
    assert body["latency"] == {"turns": [], "responseP50Ms": None, "responseMaxMs": None, "bargeInMs": []}


async def test_call_out_outside_a_request_gives_paths(world) -> None:
    """The end-of-call report renders the record with no request: URLs are paths then."""
    rec = world["store"].get_call(world["id"])
    out = await call_out(rec, world["app"].state.api)
    assert out.recording_url == f"/calls/{world['id']}/recording"
    assert out.model_dump(by_alias=True)["postCall"]["status"] == "completed"


def test_the_recording_whole_and_in_ranges(world) -> None:
    http, wav, url = world["http"], world["wav"], f"/calls/{world['id']}/recording"
    with wave.open(__import__("io").BytesIO(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2) and w.getnframes() > 8000
    r = http.get(url)
    assert r.status_code == 200 and r.content == wav and r.headers["accept-ranges"] == "bytes"
    r = http.get(url, headers={"Range": "bytes=0-43"})  # the WAV header
    assert r.status_code == 206 and r.content == wav[:44] and r.content[:4] == b"RIFF"
    assert r.headers["content-range"] == f"bytes 0-43/{len(wav)}"
    r = http.get(url, headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == wav[-100:]
    assert r.headers["content-range"] == f"bytes {len(wav) - 100}-{len(wav) - 1}/{len(wav)}"
    r = http.get(url, headers={"Range": f"bytes={len(wav) - 10}-"})
    assert r.status_code == 206 and r.content == wav[-10:]
    r = http.get(url, headers={"Range": "bytes=0-9, 20-29"})
    assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")
    assert wav[:10] in r.content and wav[20:30] in r.content


def test_a_range_past_the_end_is_416_with_the_size(world) -> None:
    size = len(world["wav"])
    r = world["http"].get(f"/calls/{world['id']}/recording", headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416, r.text
    assert r.headers["content-range"] == f"bytes */{size}"
    assert r.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=10-5", "bytes", "Bytes=x-y"])
def test_a_malformed_range_is_400(world, header) -> None:
    r = world["http"].get(f"/calls/{world['id']}/recording", headers={"Range": header})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_range"


@pytest.mark.parametrize("header", ["items=0-10", "items", "none=abc"])
def test_a_range_of_another_unit_is_ignored(world, header) -> None:
    """RFC 9110 §14.2: a server MUST ignore a Range of a unit it does not understand."""
    r = world["http"].get(f"/calls/{world['id']}/recording", headers={"Range": header})
    assert r.status_code == 200 and r.content == world["wav"], (r.status_code, r.text[:200])


def test_if_range_decides_whether_the_range_applies(world) -> None:
    """RFC 9110 §13.1.5: an If-Range matching the ETag or Last-Modified applies the Range (206,
    or 416 past the end); any other serves the whole file (200), whatever the Range asks."""
    http, wav, url = world["http"], world["wav"], f"/calls/{world['id']}/recording"
    whole = http.get(url)
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    for validator in (etag, modified):
        r = http.get(url, headers={"Range": "bytes=0-43", "If-Range": validator})
        assert r.status_code == 206 and r.content == wav[:44]
        r = http.get(url, headers={"Range": f"bytes={len(wav) + 10}-", "If-Range": validator})
        assert r.status_code == 416 and r.json()["error"]["code"] == "range_not_satisfiable"
    for validator in ('"not-the-etag"', f"W/{etag}", "Thu, 01 Jan 1970 00:00:00 GMT"):
        for wanted in ("bytes=0-43", f"bytes={len(wav) + 10}-", "bytes=10-5"):
            r = http.get(url, headers={"Range": wanted, "If-Range": validator})
            assert r.status_code == 200 and r.content == wav, (validator, wanted, r.status_code)


def test_no_recording_another_tenant_or_no_key(world) -> None:
    http = world["http"]
    r = http.get(f"/calls/{world['bare']}/recording")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for path in (f"/calls/{world['id']}", f"/calls/{world['id']}/recording"):
        r = http.get(path, headers={"X-API-Key": world["other"]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        r = httpx.get(world["base_url"] + path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", path
