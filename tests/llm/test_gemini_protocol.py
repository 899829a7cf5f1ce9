"""Sans-I/O tests of the Gemini Live protocol core.

Every client message is validated with ``google.genai.types.LiveClientMessage`` from its JSON
text (extras forbidden, camelCase keys); every server sample with ``LiveServerMessage``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pydantic
import pytest

from gateway.llm.base import AgentConfig, AudioOut, Interrupted, ResponseDone, Transcript
from gateway.llm.gemini_live import LiveProtocol
from gateway.llm.tools import ToolCall, parse_tools
from tests.llm.conformance import check_gemini_client_message, check_gemini_server_message

TOOL = {"name": "lookup", "description": "Look up an order", "url": "https://t.example/lookup",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}  # fmt: skip


def make(config: AgentConfig | None = None, tools=()) -> LiveProtocol:
    return LiveProtocol(config or AgentConfig(), "gemini-2.5-flash-native-audio", parse_tools(tools))


def feed(p: LiveProtocol, msg: dict[str, Any]) -> list[Any]:
    check_gemini_server_message(msg)
    return p.receive(json.dumps(msg).encode())


def audio(ms: int) -> dict[str, Any]:
    data = base64.b64encode(b"\x01\x00" * (24 * ms)).decode()
    return {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}}}


def said(text: str) -> dict[str, Any]:
    return {"serverContent": {"outputTranscription": {"text": text}}}


def heard(text: str) -> dict[str, Any]:
    return {"serverContent": {"inputTranscription": {"text": text}}}


TURN_COMPLETE = {"serverContent": {"turnComplete": True}}


@pytest.mark.parametrize(("mode", "interruptible", "ric"), [
    ("gateway", True, {"automaticActivityDetection": {"disabled": True}, "activityHandling": "START_OF_ACTIVITY_INTERRUPTS"}),
    ("gateway", False, {"automaticActivityDetection": {"disabled": True}, "activityHandling": "NO_INTERRUPTION"}),
    # The gateway owns barge-in: Gemini's own detector never cuts the reply (its VAD hears echo
    # and backchannels); the gateway's commit cuts the audio and transcript locally.
    ("server_vad", True, {"automaticActivityDetection": {"disabled": False}, "activityHandling": "NO_INTERRUPTION"}),
    ("server_vad", False, {"automaticActivityDetection": {"disabled": False}, "activityHandling": "NO_INTERRUPTION"}),
])  # fmt: skip
def test_setup_golden(mode, interruptible, ric):
    p = make(AgentConfig(system_prompt="Be brief.", voice="kore", temperature=0.4, turn_mode=mode, interruptible=interruptible), tools=[TOOL])
    msg = p.setup_message()
    check_gemini_client_message(msg)
    assert msg == {"setup": {
        "model": "models/gemini-2.5-flash-native-audio",
        "generationConfig": {
            "responseModalities": ["AUDIO"],
            "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}},
            "temperature": 0.4,
        },
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "realtimeInputConfig": ric,
        "sessionResumption": {},
        "contextWindowCompression": {"slidingWindow": {}},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "tools": [{"functionDeclarations": [{"name": "lookup", "description": "Look up an order",
                                             "parametersJsonSchema": TOOL["parameters"]}]}],
    }}  # fmt: skip


def test_setup_carries_the_latest_resumption_handle_and_default_voice():
    p = make(AgentConfig(voice="joe"))
    feed(p, {"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": True}})
    feed(p, {"sessionResumptionUpdate": {"resumable": False, "newHandle": ""}})  # not resumable now
    assert p.take_handle_update() is True and p.take_handle_update() is False
    msg = p.setup_message()
    check_gemini_client_message(msg)
    assert msg["setup"]["sessionResumption"] == {"handle": "h-1"}
    assert msg["setup"]["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Puck"
    assert "temperature" not in msg["setup"]["generationConfig"]


def test_client_messages_conform():
    p = make(AgentConfig(greeting="Hi, Ana here."))
    greet = p.greeting_message()
    assert greet is not None and "Hi, Ana here." in greet["clientContent"]["turns"][0]["parts"][0]["text"]
    msgs = [greet, p.audio_message(b"\x01\x02\x03\x04"), p.activity_start(), p.activity_end(),
            p.tool_response(ToolCall("fc-1", "lookup", {}), '{"status":"shipped"}'),
            p.tool_response(ToolCall("fc-2", "lookup", {}), '{"error":"timed out"}'),
            p.tool_response(ToolCall("fc-3", "lookup", {}), "plain text")]  # fmt: skip
    for m in msgs:
        check_gemini_client_message(m)
    assert msgs[1] == {"realtimeInput": {"audio": {"data": "AQIDBA==", "mimeType": "audio/pcm;rate=16000"}}}
    assert msgs[4]["toolResponse"]["functionResponses"][0] == {"id": "fc-1", "name": "lookup", "response": {"output": {"status": "shipped"}}}
    assert msgs[5]["toolResponse"]["functionResponses"][0]["response"] == {"error": "timed out"}
    assert msgs[6]["toolResponse"]["functionResponses"][0]["response"] == {"output": "plain text"}


def test_activity_messages_follow_an_open_close_state():
    p = make()
    assert p.activity_end() is None  # nothing open
    assert p.activity_start() == {"realtimeInput": {"activityStart": {}}}
    assert p.activity_start() is None  # already open
    assert p.activity_end() == {"realtimeInput": {"activityEnd": {}}}
    assert p.activity_end() is None


def test_model_turn_audio_transcripts_and_turn_complete():
    p = make()
    out = feed(p, audio(100)) + feed(p, said("Hello, ")) + feed(p, audio(100)) + feed(p, said("how can I help?"))
    assert [type(e) for e in out] == [AudioOut, AudioOut]
    assert {e.item_id for e in out} == {"gemini-turn-1"} and len(out[0].audio) == 4800
    out = feed(p, {"serverContent": {"generationComplete": True}}) + feed(p, TURN_COMPLETE)
    assert out == [ResponseDone("gemini-turn-1", "completed"), Transcript("agent", "Hello, how can I help?", "gemini-turn-1")]
    # The caller answers; their words come out before the agent's reply to them.
    p.activity_start()
    p.activity_end()
    assert feed(p, heard("I want to ")) == []
    out = feed(p, heard("reschedule.")) + feed(p, audio(50)) + feed(p, said("Sure.")) + feed(p, TURN_COMPLETE)
    turn = out[0].item_id
    assert out[1:] == [ResponseDone(turn, "completed"), Transcript("user", "I want to reschedule."), Transcript("agent", "Sure.", turn)]
    assert p.flush_transcripts() == []


def test_interrupted_turn_is_cut_to_what_the_caller_heard():
    p = make(AgentConfig(interruptible=True))
    for _ in range(10):
        feed(p, audio(200))
    feed(p, said("One two three four five six seven eight nine ten."))
    p.interrupt("gemini-turn-1", 700)  # 700 of the 2000 ms received
    assert feed(p, audio(200)) == []  # the rest is not played
    out = feed(p, {"serverContent": {"interrupted": True}})
    assert out == [ResponseDone("gemini-turn-1", "cancelled"), Transcript("agent", "One two three…", "gemini-turn-1"), Interrupted()]
    assert feed(p, TURN_COMPLETE) == []  # no second ResponseDone
    assert p.flush_transcripts() == []


def test_transcript_released_before_a_barge_in_is_whole_and_comes_before_interrupted():
    p = make(AgentConfig(turn_mode="server_vad", interruptible=True))
    feed(p, audio(300))
    feed(p, said("A whole sentence."))
    out = feed(p, {"serverContent": {"interrupted": True}})  # the model's own VAD cut it
    # The session cuts its stored copy when it sees Interrupted: the transcript must be there.
    assert out == [ResponseDone("gemini-turn-1", "cancelled"), Transcript("agent", "A whole sentence.", "gemini-turn-1"), Interrupted()]


def test_interrupt_clamps_and_zero_drops_the_transcript():
    p = make()
    feed(p, audio(500))
    feed(p, said("Nothing heard."))
    p.interrupt(None, 0)
    assert feed(p, TURN_COMPLETE) == [ResponseDone("gemini-turn-1", "completed")]
    assert p.flush_transcripts() == []
    q = make()
    feed(q, audio(500))
    feed(q, said("All of it."))
    q.interrupt("gemini-turn-1", 10**6)
    assert feed(q, TURN_COMPLETE)[-1] == Transcript("agent", "All of it.", "gemini-turn-1")


def test_go_away_tool_calls_and_unknown_messages():
    p = make(tools=[TOOL])
    feed(p, {"goAway": {"timeLeft": "10s"}})
    assert p.go_away
    feed(p, {"toolCall": {"functionCalls": [{"id": "fc-9", "name": "lookup", "args": {"order_id": "A1"}}]}})
    assert p.take_tool_calls() == [ToolCall("fc-9", "lookup", {"order_id": "A1"})]
    feed(p, {"usageMetadata": {"totalTokenCount": 12}})
    assert p.receive(b"{not json") == [] and p.receive(b'{"brandNew": {}}') == []
    assert p.unhandled == 2


def test_checker_rejects_snake_case_and_unknown_fields():
    with pytest.raises(AssertionError):
        check_gemini_client_message({"realtime_input": {"audio": {"data": "AA==", "mime_type": "audio/pcm;rate=16000"}}})
    with pytest.raises(pydantic.ValidationError):
        check_gemini_client_message({"realtimeInput": {"audioChunk": {}}})


# ------------------------------------------------------------ server turns, gateway barge-in


def test_a_pending_pause_holds_caller_audio_a_backchannel_becomes_silence():
    p = make(AgentConfig(turn_mode="server_vad", interruptible=True))
    assert p.holds_turns
    assert p.input_audio(b"\x01\x02" * 160) == [b"\x01\x02" * 160]
    assert p.turn_verdict("pending") == []
    assert p.input_audio(b"\x03\x04" * 320) == [] and p.input_audio(b"\x05\x06" * 160) == []
    # Short speech: the model's VAD hears the same length of silence, never the backchannel.
    assert p.turn_verdict("backchannel") == [bytes(640), bytes(320)]
    assert p.input_audio(b"\x07\x08") == [b"\x07\x08"]
    for chunk in (b"\x03\x04" * 320, bytes(640)):
        check_gemini_client_message(p.audio_message(chunk))


def test_a_pending_pause_that_proves_a_turn_sends_the_held_audio_as_it_was():
    p = make(AgentConfig(turn_mode="semantic_vad", interruptible=True))
    p.turn_verdict("pending")
    p.input_audio(b"\x03\x04" * 320)
    assert p.turn_verdict("turn") == [b"\x03\x04" * 320]
    assert p.turn_verdict("turn") == []


def test_held_audio_is_bounded():
    from gateway.llm.gemini_protocol import HOLD_LIMIT_BYTES

    p = make(AgentConfig(turn_mode="server_vad", interruptible=True))
    p.turn_verdict("pending")
    chunk = bytes(640)
    sent_now = [p.input_audio(chunk) for _ in range(HOLD_LIMIT_BYTES // 640 + 1)]
    assert sum(len(c) for out in sent_now for c in out) == HOLD_LIMIT_BYTES + 640  # all of it, in order
    assert p.input_audio(chunk) == [chunk]  # no longer holding


@pytest.mark.parametrize("config", [AgentConfig(turn_mode="server_vad"), AgentConfig(interruptible=True)])
def test_verdicts_do_nothing_unless_the_gateway_owns_barge_in_over_server_turns(config):
    p = make(config)
    assert not p.holds_turns
    assert p.turn_verdict("pending") == []
    assert p.input_audio(b"\x01\x02") == [b"\x01\x02"]
