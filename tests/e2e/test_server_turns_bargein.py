"""End to end over real sockets: pause-then-commit with the model's own turn detection.

The real gateway (uvicorn on loopback) bridges a Twilio media stream to the fake OpenAI Realtime
server running its own VAD (``FakeRealtimeServer(server_vad=True)``: an energy detector that
sends ``speech_started`` / ``speech_stopped``, commits the turn, and cancels or answers on its
own when ``interrupt_response`` / ``create_response`` say so). The call is interruptible,
``turnMode: server_vad``, ``bargeInMode: pause_then_commit``; the agent's greeting is a real
7.1 s recording, and over it the caller says

1. a 250 ms "mm-hm": the gateway pauses, then resumes where it paused. The server's VAD heard it
   and committed a user item, but the model was not interrupted (no ``response.cancel``, no
   ``clear``), the item is deleted (``conversation.item.delete``) and no response answers it;
2. a real interruption: the pause commits with one ``clear``, ``response.cancel`` and
   ``conversation.item.truncate`` at the heard ms (what the caller's own ear played, to within
   a 20 ms frame), and the server's committed turn is answered by the gateway's
   ``response.create``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.bargein_audio import cut_backchannel
from gateway.codecs.transcode import decode
from gateway.simulator.caller import Backchannel, BargeIn, SimulatedCaller, WaitForAgent
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.script import CallerReport
from tests.e2e.test_echo_bargein import echo_caller, heard_whole
from tests.e2e.test_realtime_bridges import FRAME_MS, line
from tests.llm.fake_servers import FakeRealtimeServer, Reply, speech, transcript_of
from tests.llm.fake_servers import Say as ModelSays

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(90)]

KEY = "sk-e2e-server-turns-0123456789"
GREETING = "speech/librivox-0870"  # 7.1 s
ANSWER = "speech/cards-001"


def client_types(srv: FakeRealtimeServer) -> list[str]:
    keep = ("response.create", "response.cancel", "conversation.item.truncate", "conversation.item.delete")
    return [m["type"] for m in srv.received if m["type"] in keep]


def committed_items(srv: FakeRealtimeServer) -> list[str]:
    return [e["item_id"] for e in srv.sent if e["type"] == "input_audio_buffer.committed"]


def played_ms_across_pauses(report: CallerReport, reference: bytes) -> int:
    """ms of ``reference`` (μ-law) the caller's ear played, in order and bit-exact, from its
    start up to the ``clear``, the silence of a pause (which resumed) skipped."""
    def frames(pcm) -> list[bytes]:
        return [pcm[i:i + 160].tobytes() for i in range(0, pcm.size // 160 * 160, 160)]

    ref = frames(decode(reference, "pcmu"))
    heard = [f for f in frames(report.heard) if any(f)]  # the pauses' digital silence dropped
    voiced = [i for i, f in enumerate(ref) if any(f)]  # the reference's own frames, by index
    start = heard.index(ref[voiced[0]])
    matched = 0
    while matched < len(voiced) and start + matched < len(heard) and heard[start + matched] == ref[voiced[matched]]:
        matched += 1
    return (voiced[matched - 1] + 1) * FRAME_MS


def events(record: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in record["events"] if e["kind"] == kind]


async def test_server_vad_backchannel_is_deleted_unanswered_and_a_barge_in_commits_at_heard_ms(gateway):
    mm = cut_backchannel(speech("speech/cards-001", 8000), 8000, ms=250)
    interrupt = line("caller/interrupt", 8000)
    srv = FakeRealtimeServer(api_key=KEY, server_vad=True, pace_s=0.05,
                             replies=[Reply([ModelSays(GREETING)]), Reply([ModelSays(ANSWER)])],
                             user_transcripts=["Mm-hm.", transcript_of("caller/interrupt")])  # fmt: skip
    script = [Backchannel(mm, after_ms=1500, timeout_s=20), BargeIn(interrupt, after_ms=1200, timeout_s=20),
              WaitForAgent(timeout_s=20, quiet_ms=800)]  # fmt: skip
    async with srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key=KEY)
        created = await gw.create_inline_call(connectionType="twilio", model="openai:gpt-realtime", interruptible=True,
                                              turnMode="server_vad", bargeInMode="pause_then_commit")  # fmt: skip
        async with asyncio.timeout(60):
            report = await SimulatedCaller(created["streamUrl"], TwilioCaller(), hangup_quiet_ms=0).run(script)
        record = await gw.call_record(created["callId"])
    assert record["status"] == "completed", record.get("error")
    assert not events(record, "model_error"), events(record, "model_error")
    # The model was asked never to cut nor answer on its own.
    assert srv.session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "create_response": False, "interrupt_response": False,
    }  # fmt: skip
    # The server's VAD heard both utterances and committed each as a user item.
    assert [kind for kind, _ in srv.vad_events] == ["speech_started", "speech_stopped"] * 2, srv.vad_events
    mm_item, interrupt_item = committed_items(srv)
    barge = [(e["kind"], e["data"]) for e in record["events"] if e["kind"].startswith("barge_in")]
    assert [k for k, _ in barge] == ["barge_in_paused", "barge_in_resumed", "barge_in_paused", "barge_in"], barge
    assert barge[1][1]["reason"] == "short"
    # 1. The backchannel: no clear, no cancel; its item deleted, never answered.
    # 2. The barge-in: cancel, then truncate at the heard ms; its turn answered.
    types = client_types(srv)
    assert types == ["response.create", "conversation.item.delete", "response.cancel",
                     "conversation.item.truncate", "response.create"], types  # fmt: skip
    assert srv.deleted == [mm_item] and srv.responses_started == 2
    greeting = next(iter(srv.item_ms))
    [truncate] = srv.of_type("conversation.item.truncate")
    [commit] = events(record, "barge_in")
    assert truncate["item_id"] == greeting and truncate["audio_end_ms"] == commit["heardMs"]
    played = played_ms_across_pauses(report, srv.item_audio[greeting])
    assert abs(truncate["audio_end_ms"] - played) <= FRAME_MS, (truncate["audio_end_ms"], played)
    assert 2500 <= played < srv.item_ms[greeting]  # past the resumed pause, short of the whole
    assert report.clears == 1, report.log
    # The conversation: the cut greeting, the interruption, the answer; no "Mm-hm." turn.
    turns = [(t["role"], t["text"]) for t in record["transcript"]]
    assert ("user", "Mm-hm.") not in turns, turns
    assert turns[1:] == [("user", transcript_of("caller/interrupt")), ("agent", transcript_of(ANSWER))], turns
    assert record["transcript"][0]["interrupted"] is True and interrupt_item not in srv.deleted
    print(f"server_vad: mm-hm item {mm_item} deleted; truncate at {truncate['audio_end_ms']} ms, played {played} ms")


async def test_server_vad_hearing_only_the_agents_echo_neither_cuts_nor_answers_it(gateway):
    # The caller stays silent; its leg returns the greeting as echo, 25 dB down, 120 ms late, in
    # line noise (as tests.e2e.test_echo_bargein). The server's VAD is made sensitive enough to
    # take that echo for speech: the gateway's echo-aware VAD hears no caller in it.
    srv = FakeRealtimeServer(api_key=KEY, server_vad=True, vad_threshold_dbfs=-47.0, pace_s=0.05,
                             replies=[Reply([ModelSays(GREETING)]), Reply([ModelSays(ANSWER)])])  # fmt: skip
    async with srv:
        gw = await gateway(openai_realtime_url=srv.url, openai_api_key=KEY, echo_cancel="on")
        created = await gw.create_inline_call(connectionType="twilio", model="openai:gpt-realtime", interruptible=True,
                                              turnMode="server_vad", bargeInMode="pause_then_commit")  # fmt: skip
        async with asyncio.timeout(60):
            report = await echo_caller(created["streamUrl"], seed=4).run([WaitForAgent(timeout_s=20, quiet_ms=1500)])
        record = await gw.call_record(created["callId"])
    assert record["status"] == "completed", record.get("error")
    echo_turns = committed_items(srv)
    assert echo_turns, f"the server's VAD never took the echo for speech: {srv.vad_events}"
    assert [e["kind"] for e in record["events"] if e["kind"].startswith("barge_in")] == []
    assert report.clears == 0, report.log
    # Not cut, not answered: each echo turn deleted, the only response the greeting.
    assert client_types(srv) == ["response.create"] + ["conversation.item.delete"] * len(echo_turns)
    assert srv.deleted == echo_turns and srv.responses_started == 1
    assert heard_whole(report, srv.item_audio[next(iter(srv.item_ms))])
    assert [t["role"] for t in record["transcript"]] == ["agent"]
    print(f"echo only: the server VAD committed {len(echo_turns)} echo turns, all deleted: {srv.vad_events}")
