"""Realtime model bridges through the whole gateway: carrier socket → session → bridge → model.

Each test serves the real app on loopback (``gateway`` fixture), points it at a fake model server
speaking the vendor's wire protocol (:mod:`tests.llm.fake_servers`, whose "model" speaks real
recordings), and places a call with a simulated carrier caller that streams real recorded speech
in real time, plays the gateway's audio at real time and acknowledges marks as it plays them.

What the caller actually played is measured from its own ear (``report.heard``): the model's
audio for the interrupted item is found in it frame by frame (bit-exact for μ-law passthrough)
up to the ``clear``. That is compared with the ``barge_in`` event the session recorded (the
playout ledger's heard-ms from mark acknowledgements) and with the ``audio_end_ms`` of the
``conversation.item.truncate`` the model server received.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from gateway.codecs.transcode import Transcoder, decode
from gateway.formats import L16_16K, L16_24K, PCMU_8K, AudioFormat
from gateway.simulator.caller import BargeIn, CallerReport, Say, SimulatedCaller, Step, WaitForAgent
from gateway.simulator.dialects import RawCaller, TwilioCaller
from gateway.simulator.run import to_rate
from tests.conftest import SHARED_AUDIO, load_wav
from tests.llm.conformance import check_gemini_client_message, check_openai_client_event
from tests.llm.fake_servers import FakeLiveServer, FakeRealtimeServer, Reply, speech, transcript_of
from tests.llm.fake_servers import Say as ModelSays

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(60)]

KEY = "sk-e2e-0123456789abcdef"
GREETING = "speech/cards-001"  # what the fake model says as its greeting (1.1 s)
LONG_REPLY = "speech/librivox-0870"  # 7.1 s: the caller talks over it
FRAME_MS = 20


# ------------------------------------------------------------------------------- helpers


def line(name: str, rate: int) -> np.ndarray:
    """A caller recording from ``../shared/audio`` as int16 at ``rate`` Hz."""
    pcm, sr = load_wav(SHARED_AUDIO / f"{name}.wav")
    return to_rate(pcm, sr, rate)


class _Mouth:
    """Keeps every media payload a dialect sends: what the gateway got from the caller."""

    def media(self, payload: bytes):  # type: ignore[override]
        self.sent.append(payload)
        return super().media(payload)  # type: ignore[misc]


class TwilioMouth(_Mouth, TwilioCaller):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []


class RawMouth(_Mouth, RawCaller):
    def __init__(self, sample_rate: int = 16000) -> None:
        super().__init__(sample_rate=sample_rate)
        self.sent: list[bytes] = []


@dataclass
class Call:
    """One finished call: the stored record, the caller's report and what the caller sent."""

    record: dict[str, Any]
    report: CallerReport
    sent: bytes
    created: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.record["events"] if e["kind"] == kind]

    def turns(self, role: str) -> list[dict[str, Any]]:
        return [t for t in self.record["transcript"] if t["role"] == role]


async def place_call(gw, dialect, script: list[Step], *, during=None, **body: Any) -> Call:
    """Create an inline call, run ``script`` against its stream URL, wait for the record.

    ``during(call_id)``, if given, runs while the caller is on the line (to act on the model
    server mid-call); whatever dict it returns is kept in :attr:`Call.extra`.
    """
    created = await gw.create_inline_call(connectionType=dialect.name, **body)
    caller = SimulatedCaller(created["streamUrl"], dialect, hangup_quiet_ms=0)
    run = asyncio.create_task(caller.run(script))
    extra: dict[str, Any] = {}
    if during is not None:
        try:
            extra = await during(created["callId"]) or {}
        except BaseException:
            run.cancel()
            raise
    async with asyncio.timeout(40):
        report = await run
    record = await gw.call_record(created["callId"])
    return Call(record, report, b"".join(dialect.sent), created, extra)


def find_played(report: CallerReport, fmt: AudioFormat, reference: bytes, *, exact_from: int = 0) -> tuple[int, int]:
    """Where ``reference`` (carrier-format audio) starts in the caller's ear, and how many of
    its whole 20 ms frames the caller played: ``(start tick, frames played)``.

    The caller plays one frame per tick and the gateway pads items to whole frames, so an item
    sits on the tick grid of ``report.heard``: find the tick where it starts, then count the
    ticks that match it frame for frame, bit-exact from frame ``exact_from`` on (the frames
    before it are not compared: after a rate change they still hold the resampler's memory of
    the audio before the item, the previous item's last few ms).
    """
    heard = report.heard
    ref = decode(reference, fmt.encoding)
    n = fmt.sample_rate * FRAME_MS // 1000
    ticks = heard.size // n
    frames = heard[: ticks * n].reshape(ticks, n).astype(np.int32)
    ref_ticks = ref.size // n
    refs = ref[: ref_ticks * n].reshape(ref_ticks, n).astype(np.int32)
    probe = min(10, ref_ticks)
    cost = [np.abs(frames[t : t + probe] - refs[:probe]).sum() for t in range(ticks - probe + 1)]
    start = int(np.argmin(cost))
    assert cost[start] < np.abs(refs[:probe]).sum() * 0.05, "the caller never played that audio"
    played = 0
    while played < ref_ticks and start + played < ticks:
        if played >= exact_from and not np.array_equal(frames[start + played], refs[played]):
            break
        played += 1
    return start, played


def played_ms(report: CallerReport, fmt: AudioFormat, reference: bytes, *, exact_from: int = 0) -> int:
    """ms of ``reference`` the caller played before a ``clear`` cut it (see :func:`find_played`).

    The first frame that does not match must be the caller's own silence: its buffer was
    emptied by the ``clear``, not filled with something else.
    """
    start, played = find_played(report, fmt, reference, exact_from=exact_from)
    n = fmt.sample_rate * FRAME_MS // 1000
    assert played < len(decode(reference, fmt.encoding)) // n, "the whole item played: no barge-in cut it"
    after = report.heard[(start + played) * n : (start + played + 1) * n]
    assert after.size == n and not after.any(), "after the clear the caller should hear silence"
    return played * FRAME_MS


def resample(data: bytes, src: AudioFormat, dst: AudioFormat, *, aligned: bool) -> bytes:
    """``data`` through a fresh :class:`Transcoder`, as the session converts a stream."""
    return Transcoder(src, dst, aligned=aligned).process(data)


def to_16k(model_audio: bytes) -> bytes:
    """What the session makes of a model's 24 kHz audio for a 16 kHz caller."""
    return resample(model_audio, L16_24K, L16_16K, aligned=False)


def to_pcmu(model_audio: bytes) -> bytes:
    """What the session makes of a model's 24 kHz audio for a μ-law caller."""
    return resample(model_audio, L16_24K, PCMU_8K, aligned=False)


def speech_24k(name: str) -> bytes:
    """The fake Gemini model's audio for recording ``name`` (L16 24 kHz)."""
    return speech(name, 24000).tobytes()


def conforms_openai(srv: FakeRealtimeServer) -> None:
    for msg in srv.received:
        check_openai_client_event(msg)


def script_barge_in(rate: int) -> list[Step]:
    """Hear the greeting, say hello, talk over the reply after 600 ms of it, hang up."""
    return [
        WaitForAgent(timeout_s=10, quiet_ms=300),
        Say(line("caller/hello", rate), "hello"),
        BargeIn(line("caller/interrupt", rate), after_ms=600, timeout_s=10),
    ]


def check_openai_barge_in(call: Call, srv: FakeRealtimeServer, fmt: AudioFormat, to_carrier, *, exact_from: int) -> None:
    """The acceptance checks shared by the OpenAI barge-in calls (prints the figures).

    ``to_carrier(model_audio) -> carrier_audio`` is what the session does to the model's audio.
    """
    rec, report = call.record, call.report
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec["error"]
    assert not call.events("model_error")
    greet_item, reply_item = list(srv.item_ms)[:2]
    # The greeting reached the caller, every frame of it, in order.
    greeting = to_carrier(srv.item_audio[greet_item])
    _, frames = find_played(report, fmt, greeting, exact_from=exact_from)
    assert frames == len(decode(greeting, fmt.encoding)) // (fmt.sample_rate * FRAME_MS // 1000)
    # Barge-in: one clear to the carrier; cancel, then truncate of the reply at heard-ms.
    assert report.clears == 1
    [barge] = call.events("barge_in")
    assert barge["source"] == "vad" and barge["itemId"] == reply_item
    types = [m["type"] for m in srv.received if m["type"] != "input_audio_buffer.append"]
    cut = types.index("conversation.item.truncate")
    assert types[cut - 1] == "response.cancel"
    [truncate] = srv.of_type("conversation.item.truncate")
    end_ms = truncate["audio_end_ms"]
    assert type(end_ms) is int and truncate["item_id"] == reply_item and truncate["content_index"] == 0
    assert srv.truncated == {reply_item: end_ms}  # the server accepted it (≤ audio it sent)
    assert not srv.deleted
    played = played_ms(report, fmt, to_carrier(srv.item_audio[reply_item]), exact_from=exact_from)
    assert end_ms == barge["heardMs"]
    assert abs(end_ms - played) <= FRAME_MS, (end_ms, played)
    assert 300 <= played < srv.item_ms[reply_item]
    assert rec["metrics"]["marksAcked"] > 0 and rec["metrics"]["bargeIns"] == 1
    # Transcripts stored as turns, in conversation order; the reply cut to what was heard.
    agent, user = call.turns("agent"), call.turns("user")
    assert [t["role"] for t in rec["transcript"]][:3] == ["agent", "user", "agent"]
    assert agent[0]["text"] == transcript_of(GREETING)
    assert user[0]["text"] == "Hello?"
    said, full = agent[1]["text"].rstrip("…").split(), transcript_of(LONG_REPLY).split()
    assert 0 < len(said) < len(full) and full[: len(said)] == said
    conforms_openai(srv)
    print(f"barge-in {call.created['callId']}: truncate audio_end_ms={end_ms} heard_ms={barge['heardMs']} played_ms={played}")


# ------------------------------------------------------------------------------- OpenAI


async def test_openai_twilio_mulaw_passthrough_barge_in_truncates_at_heard_ms(gateway):
    # The model streams at twice real time: its reply is still in progress at barge-in.
    srv = FakeRealtimeServer(
        api_key=KEY,
        replies=[Reply([ModelSays(GREETING)]), Reply([ModelSays(LONG_REPLY)])],
        user_transcripts=["Hello?", transcript_of("caller/interrupt")],
        pace_s=0.05,
    )
    async with srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key=KEY)
        call = await place_call(
            gw, TwilioMouth(), script_barge_in(8000), model="openai:gpt-realtime", interruptible=True
        )
    # μ-law passthrough both ways: the model was asked for audio/pcmu and got the caller's
    # bytes untouched, in order.
    assert srv.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert srv.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    got = bytes(srv.input_audio)
    assert call.sent.startswith(got) and len(call.sent) - len(got) <= 160
    check_openai_barge_in(call, srv, PCMU_8K, bytes, exact_from=0)
    # The reply was still streaming at barge-in: the cancel really cancelled it, and its
    # transcript, final only then, is stored cut and flagged with what the caller heard.
    assert any(e["type"] == "response.done" and e["response"]["status"] == "cancelled" for e in srv.sent)
    [barge] = call.events("barge_in")
    reply = call.turns("agent")[1]
    assert reply["text"].endswith("…") and reply["interrupted"] is True and reply["heardMs"] == barge["heardMs"]


async def test_openai_raw_l16_16k_resampled_to_24k_barge_in(gateway):
    # The model streams its whole reply at once: the transcript is final before the barge-in
    # (the session cuts its stored copy), and response.cancel finds nothing running
    # (response_cancel_not_active, swallowed).
    srv = FakeRealtimeServer(
        api_key=KEY,
        replies=[Reply([ModelSays(GREETING)]), Reply([ModelSays(LONG_REPLY)])],
        user_transcripts=["Hello?", transcript_of("caller/interrupt")],
    )
    async with srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key=KEY)
        call = await place_call(
            gw, RawMouth(16000), script_barge_in(16000), model="openai:gpt-realtime", interruptible=True
        )
    assert srv.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert srv.session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    # The caller's 16 kHz audio reached the model resampled to 24 kHz, time-aligned.
    expected = resample(call.sent, L16_16K, L16_24K, aligned=True)
    got = bytes(srv.input_audio)
    assert len(got) % 2 == 0 and abs(len(expected) - len(got)) <= 960 * 2
    n = min(len(got), len(expected))
    assert got[:n] == expected[:n]
    # The caller hears the model's 24 kHz reply resampled to 16 kHz (not bit-exact only in its
    # first frame, where the resampler still holds the greeting's tail).
    check_openai_barge_in(call, srv, L16_16K, to_16k, exact_from=1)
    [barge] = call.events("barge_in")
    reply = call.turns("agent")[1]
    assert reply["interrupted"] is True and reply["heardMs"] == barge["heardMs"]


async def test_compatible_server_without_truncate_still_clears_and_cancels(gateway):
    srv = FakeRealtimeServer(
        api_key=KEY,
        truncate=False,
        replies=[Reply([ModelSays(GREETING)]), Reply([ModelSays(LONG_REPLY)])],
        user_transcripts=["Hello?", transcript_of("caller/interrupt")],
        pace_s=0.05,
    )
    async with srv:
        gw = await gateway(
            compat_realtime_url=f"ws://127.0.0.1:{srv.port}/v1",
            compat_api_key=KEY,
            compat_supports_truncate=False,
        )
        call = await place_call(
            gw, TwilioMouth(), script_barge_in(8000), model="compat:local-model", interruptible=True
        )
    rec = call.record
    assert rec["status"] == "completed" and not call.events("model_error"), rec["error"]
    # No G.711 on this server: L16 24 kHz both ways, transcoded by the session.
    assert srv.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    greet_item, reply_item = list(srv.item_ms)[:2]
    assert call.report.clears == 1
    [barge] = call.events("barge_in")
    assert barge["itemId"] == reply_item
    types = [m["type"] for m in srv.received if m["type"] != "input_audio_buffer.append"]
    assert "response.cancel" in types
    assert "conversation.item.truncate" not in types and "conversation.item.delete" not in types
    assert any(e["type"] == "response.done" and e["response"]["status"] == "cancelled" for e in srv.sent)
    played = played_ms(call.report, PCMU_8K, to_pcmu(srv.item_audio[reply_item]), exact_from=1)
    assert abs(barge["heardMs"] - played) <= FRAME_MS, (barge["heardMs"], played)
    print(f"barge-in {call.created['callId']} (no truncate): heard_ms={barge['heardMs']} played_ms={played}")
    said, full = call.turns("agent")[1]["text"].rstrip("…").split(), transcript_of(LONG_REPLY).split()
    assert 0 < len(said) < len(full) and full[: len(said)] == said
    conforms_openai(srv)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("backend", ["openai", "gemini"])
async def test_rejected_key_fails_the_call_model_auth_with_silence_and_a_clean_close(gateway, backend):
    wrong = "sk-wrong-key-9876543210"
    if backend == "openai":  # OpenAI answers the handshake with HTTP 401
        server: Any = FakeRealtimeServer(api_key=KEY)
        settings = {"openai_realtime_url": "", "openai_api_key": wrong}
        model = "openai:gpt-realtime"
    else:  # Gemini accepts the socket, then closes it (1008 "API key not valid") after setup
        server = FakeLiveServer(api_key=KEY)
        settings = {"gemini_live_url": "", "gemini_api_key": wrong}
        model = "gemini:gemini-live-test"
    async with server as srv:
        settings[f"{backend}_{'realtime' if backend == 'openai' else 'live'}_url"] = srv.url
        gw = await gateway(**settings)
        call = await place_call(gw, TwilioMouth(), [WaitForAgent(timeout_s=5)], model=model)
    rec, report = call.record, call.report
    if backend == "openai":
        assert srv.handshakes and not srv.received  # refused at the handshake
    else:
        assert len(srv.setups) == 1  # refused after setup
    assert rec["status"] == "failed" and rec["endReason"] == "model_error"
    assert rec["error"]["code"] == "model_auth", rec["error"]
    assert ("401" if backend == "openai" else "API key not valid") in rec["error"]["message"]
    assert wrong not in str(rec)
    # Silence: the gateway sent no audio at all; the caller heard only its own silence.
    assert report.frames_received == 0 and not report.heard.any()
    # A clean close: a close frame with a code (1011: the call failed), not a dropped TCP.
    assert report.close_code == 1011


async def test_fatal_model_error_event_fails_the_call_with_its_reason(gateway):
    async with FakeRealtimeServer(api_key=KEY, replies=[Reply([ModelSays(LONG_REPLY)])], pace_s=0.05) as srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key=KEY)

        async def quota_error(call_id: str) -> None:
            await srv.wait_for(lambda: len(srv.of_type("input_audio_buffer.append")) >= 25, timeout=10)
            await srv.error("You exceeded your current quota, please check your plan and billing details.",
                            "insufficient_quota", type_="insufficient_quota")  # fmt: skip

        call = await place_call(
            gw, TwilioMouth(), [WaitForAgent(timeout_s=10)], during=quota_error, model="openai:gpt-realtime"
        )
    rec = call.record
    assert rec["status"] == "failed" and rec["endReason"] == "model_error"
    assert rec["error"]["code"] == "model_error"
    assert "insufficient_quota" in rec["error"]["message"] and "exceeded your current quota" in rec["error"]["message"]
    assert call.report.frames_received > 0  # the greeting was playing when the error came
    assert call.report.close_code == 1011


def model_sessions(call: Call) -> list[dict[str, Any]]:
    """The call's ``model_session`` events (the bridge moved to a new model session)."""
    return call.events("model_session")


def carried_turns(log: Any) -> list[tuple[str, str]]:
    """The conversation items a model session got before any caller audio: (role, text)."""
    out = []
    for msg in log.received[1:]:
        if msg["type"] != "conversation.item.create":
            break
        item = msg["item"]
        out.append(("agent" if item["role"] == "assistant" else "user", item["content"][0]["text"]))
    return out


def check_caller_audio_reached_the_model(call: Call, srv: FakeRealtimeServer) -> int:
    """Every byte the caller sent reached the model sessions in order (μ-law passthrough); only
    the end of the call may be missing: the < 40 ms chunk still buffered at the hang-up, and one
    40 ms chunk that was on its way to the model as the call closed (on a loaded machine the
    carrier's stop can overtake it).

    A session that took over mid-turn starts with the turn so far sent again (``replayedBytes``
    of its ``model_session`` event): that must be the end of the old session's audio since its
    last commit (the turn and up to 1 s before it), and is counted once. Returns the bytes
    replayed.
    """
    sessions = srv.sessions
    stream = bytes(sessions[0].input_audio)
    replayed = 0
    for prev, log, renewed in zip(sessions[:-1], sessions[1:], model_sessions(call), strict=True):
        data, n = bytes(log.input_audio), renewed["replayedBytes"]
        since = prev.commits[-1] if prev.commits else 0
        assert n <= len(prev.input_audio) - since and data[:n] == bytes(prev.input_audio)[len(prev.input_audio) - n :]
        stream += data[n:]
        replayed += n
    assert call.sent.startswith(stream) and len(call.sent) - len(stream) < 2 * 8 * 40, (len(call.sent), len(stream))
    return replayed


async def test_dropped_model_connection_reconnects_and_the_call_completes(gateway):
    answer = "speech/cards-002"
    async with FakeRealtimeServer(
        api_key=KEY, replies=[Reply([ModelSays(GREETING)]), Reply([ModelSays(answer)])], user_transcripts=["Hello?"]
    ) as srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key=KEY)

        async def drop(call_id: str) -> None:
            await srv.wait_for(lambda: any(e["type"] == "response.done" for e in srv.sent), timeout=10)
            srv.drop()  # TCP cut, no close frame, after the greeting

        script = [WaitForAgent(timeout_s=10, quiet_ms=300), Say(line("caller/hello", 8000), "hello"),
                  WaitForAgent(timeout_s=10, quiet_ms=300)]  # fmt: skip
        call = await place_call(gw, TwilioMouth(), script, during=drop, model="openai:gpt-realtime")
    rec = call.record
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec["error"]
    assert not call.events("model_error")
    [renewed] = model_sessions(call)
    assert renewed["reason"] == "reconnect" and renewed["attempts"] == 1 and renewed["carried"] == 1
    first, second = srv.sessions
    assert carried_turns(second) == [("agent", transcript_of(GREETING))]
    assert not first.of_type("input_audio_buffer.commit") and second.of_type("input_audio_buffer.commit")
    assert [(t["role"], t["text"]) for t in rec["transcript"]] == [
        ("agent", transcript_of(GREETING)), ("user", "Hello?"), ("agent", transcript_of(answer)),
    ]  # fmt: skip
    # The answer came from the new session and the caller heard all of it.
    reply_item = list(srv.item_ms)[1]
    _, frames = find_played(call.report, PCMU_8K, srv.item_audio[reply_item])
    assert frames == len(srv.item_audio[reply_item]) // 160
    check_caller_audio_reached_the_model(call, srv)
    assert call.report.close_code != 1011
    conforms_openai(srv)
    print(f"reconnect {call.created['callId']}: gap_ms={renewed['gapMs']}")


async def test_openai_call_outlives_several_model_sessions(gateway):
    turns = ["Hello?", "I would like to reschedule.", "Thanks, goodbye."]
    async with FakeRealtimeServer(
        api_key=KEY, replies=[Reply([ModelSays(GREETING)])], user_transcripts=list(turns), session_limit_s=2.0
    ) as srv:
        gw = await gateway(
            openai_realtime_url=srv.url, openai_api_key=KEY, model_session_limit_s=2.0, model_session_margin_s=0.5
        )
        script: list[Step] = [WaitForAgent(timeout_s=10, quiet_ms=300)]
        for name in ("caller/hello", "caller/reschedule", "caller/goodbye"):
            script += [Say(line(name, 8000), name), WaitForAgent(timeout_s=10, quiet_ms=300)]
        call = await place_call(gw, TwilioMouth(), script, model="openai:gpt-realtime")
    rec = call.record
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec["error"]
    assert not call.events("model_error") and srv.expired == 0  # always ahead of the limit
    renewals = model_sessions(call)
    assert len(renewals) >= 2 and {r["reason"] for r in renewals} == {"rollover"}
    assert len(srv.sessions) == len(renewals) + 1
    assert not any(s.response_active_at_close for s in srv.sessions[:-1])  # never mid-response
    said = [(t["role"], t["text"]) for t in rec["transcript"]]
    assert [text for role, text in said if role == "user"] == turns
    for log in srv.sessions[1:]:  # each session starts with everything said before it
        carried = carried_turns(log)
        assert carried and said[: len(carried)] == carried
    # One greeting for the whole call: every later response answers a caller turn.
    assert srv.responses_started == 1 + len(srv.of_type("input_audio_buffer.commit"))
    replayed = check_caller_audio_reached_the_model(call, srv)
    conforms_openai(srv)
    print(f"rollover {call.created['callId']}: sessions={len(srv.sessions)} gaps_ms={[r['gapMs'] for r in renewals]}"
          f" replayed_ms={replayed // 8}")  # fmt: skip


async def test_refused_key_on_reconnect_fails_the_call_model_auth(gateway):
    async with FakeRealtimeServer(api_key=KEY, replies=[Reply([ModelSays(GREETING)])]) as srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key=KEY)

        async def rotate_and_drop(call_id: str) -> None:
            await srv.wait_for(lambda: any(e["type"] == "response.done" for e in srv.sent), timeout=10)
            srv.api_key = "sk-rotated"
            srv.drop()

        call = await place_call(gw, TwilioMouth(), [WaitForAgent(timeout_s=10)], during=rotate_and_drop, model="openai:gpt-realtime")
    rec = call.record
    assert rec["status"] == "failed" and rec["endReason"] == "model_error"
    assert rec["error"]["code"] == "model_auth" and "401" in rec["error"]["message"], rec["error"]
    assert len(srv.handshakes) == 2 and not model_sessions(call)
    assert rec["endedAt"] and rec["durationMs"] is not None
    assert call.report.close_code == 1011


# ------------------------------------------------------------------------------- Gemini Live


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll ``predicate`` (state without a notification to wait on) every 10 ms."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def activity_starts(srv: FakeLiveServer) -> int:
    return sum("activityStart" in (m.get("realtimeInput") or {}) for m in srv.received)


THIRD = "speech/cards-002"  # the fake Gemini's answer to the caller's interruption


async def test_gemini_barge_in_then_go_away_resumes_mid_utterance(gateway):
    srv = FakeLiveServer(
        api_key=KEY,
        replies=[GREETING, LONG_REPLY, THIRD],
        user_transcripts=["Hello?", transcript_of("caller/interrupt")],
        pace_s=0.05,
        handle_with_input=True,
    )
    async with srv:
        gw = await gateway(gemini_live_url=srv.url, gemini_api_key=KEY)

        async def go_away(call_id: str) -> dict[str, Any]:
            # The caller has barged in (its second turn opened) and the handle the server issued
            # after the interruption reached the bridge: goAway while the caller still talks.
            await srv.wait_for(lambda: activity_starts(srv) >= 2 and len(srv.handles) >= 2, timeout=20)
            handle = list(srv.handles)[-1]
            bridge = gw.services.live[call_id].bridge
            await wait_until(lambda: bridge.protocol.handle == handle)
            await srv.go_away("10s")
            await srv.wait_for(lambda: srv.connections == 2 and srv._conn is not None, timeout=5)
            return {"handle": handle, "bridge": bridge}

        # After a BargeIn the first WaitForAgent returns at once (the simulator still counts the
        # interrupted audio as "the agent spoke") and resets; the second one waits for the answer.
        script = [*script_barge_in(16000), WaitForAgent(timeout_s=1), WaitForAgent(timeout_s=10, quiet_ms=300)]
        call = await place_call(
            gw, RawMouth(16000), script, during=go_away, model="gemini:gemini-live-test", interruptible=True
        )
    rec, report = call.record, call.report
    # One call, still up after the goAway: completed by the caller's hang-up.
    assert rec["status"] == "completed" and rec["endReason"] == "carrier_stop", rec["error"]
    assert not call.events("model_error")
    assert srv.connections == 2 and call.extra["bridge"].reconnects == 1
    assert srv.setups[0]["setup"]["sessionResumption"] == {}
    assert srv.setups[1]["setup"]["sessionResumption"] == {"handle": call.extra["handle"]}
    # No second greeting.
    assert srv.greetings == 1 and sum("clientContent" in m for m in srv.received) == 1
    # The goAway came in the middle of the caller's interruption: its end reached the new
    # connection.
    second_setup = next(i for i, m in enumerate(srv.received) if m is srv.setups[1])
    ends = [i for i, m in enumerate(srv.received) if "activityEnd" in (m.get("realtimeInput") or {})]
    assert len(ends) == 2 and ends[0] < second_setup < ends[1]
    # No caller audio lost (nor doubled): the resumed session holds every byte the caller
    # sent, in order (the handle's state, the replay, the audio buffered during the gap).
    got = bytes(srv.session.audio)
    assert call.sent.startswith(got) and len(call.sent) - len(got) <= 640
    # Barge-in: the server was still speaking and says so; the session's VAD cut first.
    assert {"serverContent": {"interrupted": True}} in srv.sent
    assert report.clears == 1
    [barge] = call.events("barge_in")
    reply = speech_24k(LONG_REPLY)[: srv.turn_audio[2]]
    played = played_ms(report, L16_16K, to_16k(reply), exact_from=1)
    assert abs(barge["heardMs"] - played) <= FRAME_MS, (barge["heardMs"], played)
    print(f"barge-in {call.created['callId']} (gemini): heard_ms={barge['heardMs']} played_ms={played}")
    # The turn after the resumption was answered and heard whole.
    answer = to_16k(speech_24k(THIRD))
    _, frames = find_played(report, L16_16K, answer, exact_from=1)
    assert frames == len(answer) // 640
    # Transcripts: greeting, caller, cut reply, caller, answer.
    texts = [(t["role"], t["text"]) for t in rec["transcript"]]
    assert texts[0] == ("agent", transcript_of(GREETING)) and texts[1] == ("user", "Hello?")
    said, full = texts[2][1].rstrip("…").split(), transcript_of(LONG_REPLY).split()
    assert texts[2][0] == "agent" and texts[2][1].endswith("…") and full[: len(said)] == said
    cut = rec["transcript"][2]
    assert cut["interrupted"] is True and cut["heardMs"] == barge["heardMs"]
    assert texts[3:] == [("user", transcript_of("caller/interrupt")), ("agent", transcript_of(THIRD))]
    for m in srv.received:
        check_gemini_client_message(m)


async def test_gemini_dropped_connection_with_a_handle_resumes_and_the_call_goes_on(gateway):
    answer = "speech/cards-003"
    srv = FakeLiveServer(api_key=KEY, replies=[GREETING, answer], user_transcripts=["Hello?"], handle_with_input=True)
    async with srv:
        gw = await gateway(gemini_live_url=srv.url, gemini_api_key=KEY)

        async def drop(call_id: str) -> None:
            await srv.wait_for(lambda: len(srv.handles) >= 1, timeout=10)
            bridge = gw.services.live[call_id].bridge
            await wait_until(lambda: bridge.protocol.handle == list(srv.handles)[-1])
            srv.drop()
            await srv.wait_for(lambda: srv.connections == 2 and srv._conn is not None, timeout=5)

        script = [
            WaitForAgent(timeout_s=10, quiet_ms=300),
            Say(line("caller/hello", 16000), "hello"),
            WaitForAgent(timeout_s=10, quiet_ms=300),
        ]
        call = await place_call(gw, RawMouth(16000), script, during=drop, model="gemini:gemini-live-test")
    rec = call.record
    assert srv.setups[1]["setup"]["sessionResumption"] == {"handle": list(srv.handles)[0]}
    assert rec["status"] == "completed" and not call.events("model_error"), rec["error"]
    assert srv.connections == 2 and srv.greetings == 1
    got = bytes(srv.session.audio)
    assert call.sent.startswith(got) and len(call.sent) - len(got) <= 640
    reply = to_16k(speech_24k(answer))
    _, frames = find_played(call.report, L16_16K, reply, exact_from=1)
    assert frames == len(reply) // 640
    assert [t["text"] for t in rec["transcript"]] == [transcript_of(GREETING), "Hello?", transcript_of(answer)]


async def test_gemini_dropped_connection_before_any_handle_fails_model_disconnected(gateway):
    async with FakeLiveServer(api_key=KEY) as srv:
        gw = await gateway(gemini_live_url=srv.url, gemini_api_key=KEY)

        async def drop(call_id: str) -> None:
            await srv.wait_for(lambda: srv._conn is not None and len(srv.received) >= 5, timeout=10)
            srv.drop()

        call = await place_call(
            gw, RawMouth(16000), [WaitForAgent(timeout_s=10)], during=drop,
            model="gemini:gemini-live-test", firstSpeaker="user",
        )  # fmt: skip
    rec = call.record
    assert rec["status"] == "failed" and rec["error"]["code"] == "model_disconnected"
    assert call.report.frames_received == 0 and call.report.close_code == 1011
