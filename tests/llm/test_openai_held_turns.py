"""Sans-I/O tests: the server's turn detection while the gateway owns barge-in (golden events).

With ``turn_mode`` ``server_vad`` / ``semantic_vad`` on an interruptible call the protocol asks
for ``create_response: false, interrupt_response: false`` and answers each user turn the server
commits itself, after the gateway's verdict (``RealtimeProtocol.turn_verdict``): a resumed
backchannel's item is deleted and never answered; a committed barge-in is cancelled and
truncated at the heard ms, then answered. Every client event is validated with its
``openai.types.realtime`` class, every server event with ``RealtimeServerEvent``.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.llm.base import AgentConfig, Transcript
from gateway.llm.openai_realtime import xai_backend
from tests.llm.test_openai_protocol import committed, created, delta, done, feed, make, sent, speak, user_text

HELD = AgentConfig(turn_mode="server_vad", interruptible=True)


def started(item: str, ms: int = 0) -> dict[str, Any]:
    return {"type": "input_audio_buffer.speech_started", "audio_start_ms": ms, "item_id": item}


def stopped(item: str, ms: int = 0) -> dict[str, Any]:
    return {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ms, "item_id": item}


def server_turn(p, item: str) -> list[Any]:
    """The server's VAD hears a whole turn: start, stop, commit."""
    return feed(p, started(item)) + feed(p, stopped(item)) + feed(p, committed(item))


def types(p) -> list[str]:
    return [e["type"] for e in sent(p) if e["type"] != "input_audio_buffer.append"]


def agent_said(p, rid: str = "r1", item: str = "i1", *, finish: bool = True) -> None:
    """A reply whose audio is playing at the caller (its response may be done already)."""
    speak(p, rid, {item: (2000, "one two three four five six")}, finish=finish)
    sent(p)


@pytest.mark.parametrize("mode", ["server_vad", "semantic_vad"])
def test_session_update_asks_the_server_neither_to_answer_nor_to_interrupt(mode):
    p = make(AgentConfig(turn_mode=mode, interruptible=True))
    p.session_update()
    [ev] = sent(p)
    assert ev["session"]["audio"]["input"]["turn_detection"] == {
        "type": mode, "create_response": False, "interrupt_response": False,
    }  # fmt: skip
    assert p.holds_turns


def test_a_turn_with_no_agent_audio_is_answered_at_once():
    p = make(HELD)
    server_turn(p, "u1")
    [create] = [e for e in sent(p) if e["type"] == "response.create"]
    assert create == {"type": "response.create", "event_id": create["event_id"]}
    assert feed(p, user_text("u1", "What time is it?")) == [Transcript("user", "What time is it?", "u1")]


def test_a_backchannel_resumed_before_the_commit_is_deleted_and_not_answered():
    p = make(HELD)
    agent_said(p)
    p.turn_verdict("pending")
    feed(p, started("u1"))
    p.turn_verdict("backchannel")
    assert types(p) == []  # nothing to delete yet: the server has not committed it
    feed(p, stopped("u1"))
    feed(p, committed("u1"))
    evs = sent(p)
    assert evs == [{"type": "conversation.item.delete", "event_id": evs[0]["event_id"], "item_id": "u1"}]
    # Its late transcript is no turn of the conversation; nothing is owed.
    assert feed(p, user_text("u1", "Mm-hm.")) == []
    assert not p.response_owed and p.idle
    # The caller's next turn is answered as usual.
    server_turn(p, "u2")
    assert types(p) == ["response.create"]


def test_a_commit_before_the_verdict_waits_for_it_backchannel():
    p = make(HELD)
    agent_said(p)
    p.turn_verdict("pending")
    server_turn(p, "u1")
    assert types(p) == [] and p.response_owed  # held: neither answered nor deleted yet
    p.turn_verdict("backchannel")
    assert [(e["type"], e.get("item_id")) for e in sent(p)] == [("conversation.item.delete", "u1")]
    assert not p.response_owed


def test_a_commit_before_the_verdict_waits_for_it_turn():
    p = make(HELD)
    agent_said(p)
    p.turn_verdict("pending")
    server_turn(p, "u1")
    assert types(p) == []
    p.turn_verdict("turn")  # e.g. the pause timed out, or the reply had played out
    assert types(p) == ["response.create"]


def test_a_committed_barge_in_cancels_truncates_then_answers():
    p = make(HELD)
    agent_said(p, finish=False)  # the reply is still being generated
    p.turn_verdict("pending")
    feed(p, started("u1"))
    p.interrupt("i1", 640)  # the pause committed: the caller heard 640 ms
    p.turn_verdict("turn")
    evs = sent(p)
    assert [e["type"] for e in evs] == ["response.cancel", "conversation.item.truncate"]
    assert evs[1]["item_id"] == "i1" and evs[1]["audio_end_ms"] == 640 and evs[1]["content_index"] == 0
    feed(p, stopped("u1"))
    feed(p, committed("u1"))
    assert types(p) == []  # the cancelled response is still running: its answer waits
    feed(p, done("r1", "cancelled"))
    assert types(p) == ["response.create"]
    feed(p, created("r2"))
    assert feed(p, delta("r2", "i2", b"\xff" * 160))  # the answer is heard


def test_a_backchannel_the_server_never_heard_leaves_the_next_turn_alone():
    p = make(HELD)
    agent_said(p)
    p.turn_verdict("pending")
    p.turn_verdict("backchannel")  # no server turn was open
    server_turn(p, "u1")
    assert types(p) == ["response.create"]


def test_new_speech_after_a_backchannel_in_the_same_server_turn_is_a_turn():
    p = make(HELD)
    agent_said(p)
    p.turn_verdict("pending")
    feed(p, started("u1"))
    p.turn_verdict("backchannel")
    p.turn_verdict("turn")  # the caller spoke on (the gateway's VAD: a new start, no agent audio)
    feed(p, stopped("u1"))
    feed(p, committed("u1"))
    assert types(p) == ["response.create"]


@pytest.mark.parametrize(
    ("config", "backend"),
    [(AgentConfig(turn_mode="server_vad"), None), (HELD, xai_backend("grok")), (AgentConfig(interruptible=True), None)],
    ids=["not-interruptible", "xai", "gateway-turns"],
)
def test_verdicts_do_nothing_where_the_server_answers_or_the_gateway_ends_turns(config, backend):
    p = make(config, backend=backend) if backend else make(config)
    assert not p.holds_turns
    p.turn_verdict("pending")
    server_turn(p, "u1")
    p.turn_verdict("backchannel")
    assert types(p) == []


def test_a_server_turn_the_gateway_never_heard_over_agent_audio_is_deleted():
    p = make(HELD)
    agent_said(p)
    feed(p, started("u1"))  # the agent's own echo, as the server's VAD hears it
    p.turn_verdict("unheard")
    feed(p, stopped("u1"))
    feed(p, committed("u1"))
    assert [(e["type"], e.get("item_id")) for e in sent(p)] == [("conversation.item.delete", "u1")]
    assert feed(p, user_text("u1", "one two three")) == [] and not p.response_owed


def test_unheard_speech_the_gateway_then_hears_is_answered():
    p = make(HELD)
    agent_said(p)
    feed(p, started("u1"))
    p.turn_verdict("unheard")
    p.turn_verdict("pending")  # the gateway's VAD confirmed the caller: a pause
    p.turn_verdict("turn")
    feed(p, stopped("u1"))
    feed(p, committed("u1"))
    assert types(p) == ["response.create"]


def test_unheard_while_a_pause_is_pending_changes_nothing():
    p = make(HELD)
    agent_said(p)
    p.turn_verdict("pending")
    feed(p, started("u1"))
    p.turn_verdict("unheard")
    feed(p, committed("u1"))
    p.turn_verdict("turn")
    assert types(p) == ["response.create"]
