"""The agent state the page sees (gateway.webrtc.state.AgentState) and the message shapes."""

from __future__ import annotations

from gateway.webrtc.state import QUIET_FRAMES, AgentState, ended_message, event_message, transcript_message


def test_a_turn_goes_listening_thinking_speaking_listening():
    s = AgentState()
    assert s.connected() == ["listening"] and s.connected() == []
    assert s.event("caller_speech_start") == []
    assert s.event("caller_speech_end") == ["thinking"]
    assert s.emitted(False) == []  # silence while it thinks
    assert s.emitted(True) == ["speaking"] and s.emitted(True) == []
    assert s.event("caller_speech_end") == []  # the agent speaks: not thinking
    for _ in range(QUIET_FRAMES - 1):  # a short gap inside the reply keeps it speaking
        assert s.emitted(False) == []
    assert s.emitted(True) == []
    quiet = [s.emitted(False) for _ in range(QUIET_FRAMES)]
    assert quiet[-1] == ["listening"] and not any(quiet[:-1])


def test_a_clear_is_interrupted_then_listening():
    s = AgentState()
    s.connected()
    s.emitted(True)
    assert s.cleared() == ["interrupted", "listening"]
    assert s.state == "listening" and s.emitted(False) == []


def test_messages():
    turn = {"role": "agent", "text": "Hello", "at_ms": 120, "interrupted": True, "heard_ms": 800, "latency_ms": 900}
    assert transcript_message(3, turn) == {
        "type": "transcript", "role": "agent", "text": "Hello", "final": True, "atMs": 120, "latencyMs": 900,
        "interrupted": True, "heardMs": 800, "index": 3,
    }  # fmt: skip
    user = transcript_message(0, {"role": "user", "text": "hi", "at_ms": 5, "interrupted": False})
    assert user["latencyMs"] is None and user["heardMs"] is None and user["interrupted"] is False
    assert event_message({"kind": "barge_in", "at_ms": 7, "data": {"heardMs": 5}}) == {
        "type": "event", "kind": "barge_in", "atMs": 7, "data": {"heardMs": 5}}
    assert ended_message("completed", "carrier_stop") == {"type": "ended", "status": "completed",
                                                          "endReason": "carrier_stop"}
