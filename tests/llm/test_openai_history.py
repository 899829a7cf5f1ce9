"""Carrying an OpenAI Realtime conversation into a new session, sans-I/O.

The old session's protocol is driven with server events (each validated with the SDK's server
union); the new session's client events are validated with the SDK's concrete classes, strictly
(:func:`tests.llm.test_openai_protocol.sent`).
"""

from __future__ import annotations

import base64
from typing import Any

from gateway.formats import PCMU_8K
from gateway.llm.base import AgentConfig, ResponseDone, Transcript
from gateway.llm.common import cut_heard_text
from gateway.llm.openai_history import CONTINUING_NOTE
from gateway.llm.openai_realtime import RealtimeProtocol
from tests.llm.test_openai_protocol import (
    TOOL,
    committed,
    created,
    delta,
    done,
    feed,
    item_added,
    make,
    sent,
    speak,
    user_text,
)

REPLY = "Booked for Monday at nine."


def caller_turn(p: RealtimeProtocol, ms: int = 300, fill: int = 0x7F) -> bytes:
    """The caller speaks ``ms`` of audio and the gateway's VAD ends the turn."""
    audio = bytes([fill]) * PCMU_8K.bytes_for_ms(ms)
    p.speech_started()
    p.append_audio(audio)
    p.end_of_turn()
    return audio


def carried(p: RealtimeProtocol) -> RealtimeProtocol:
    """A new session's protocol that took over ``p``'s conversation (after ``p.abort()``)."""
    q = make(p.config, tools=[TOOL] if p._tools else ())
    q.session_update(continuing=True)
    q.carry_from(p)
    return q


def items(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The ``conversation.item.create`` items as (role or type, text or call id)."""
    out: list[tuple[str, ...]] = []
    for ev in events:
        if ev["type"] != "conversation.item.create":
            continue
        it = ev["item"]
        if it["type"] == "message":
            [content] = it["content"]
            out.append((it["role"], content["type"], content["text"]))
        else:
            out.append((it["type"], it["call_id"]))
    return out


def test_history_is_carried_in_order_cut_at_barge_in_with_tool_calls():
    p = make(AgentConfig(greeting="Hello?"), tools=[TOOL])
    p.session_update()
    p.greeting()
    p.data_to_send()
    speak(p, "resp_1", {"item_1": (1000, "Hello, how can I help?")})
    caller_turn(p)
    feed(p, committed("item_u1"))
    feed(p, user_text("item_u1", "Book Monday please."))
    feed(p, created("resp_2"))
    feed(p, {"type": "response.function_call_arguments.done", "response_id": "resp_2", "item_id": "item_fc",
             "output_index": 0, "call_id": "call_1", "name": "book_slot", "arguments": '{"day": "Monday"}'})  # fmt: skip
    feed(p, done("resp_2"))
    assert not p.idle  # the tool call is running
    [call] = p.take_tool_calls()
    p.tool_output(call.call_id, '{"booked": true}')
    speak(p, "resp_3", {"item_3": (2000, REPLY)})
    p.interrupt("item_3", 1000)  # the caller heard half of the reply
    assert p.idle
    assert p.abort() == []  # nothing was running or held

    q = carried(p)
    out = sent(q)  # every event validates against the SDK's classes
    assert out[0]["type"] == "session.update"
    assert out[0]["session"]["instructions"].endswith(CONTINUING_NOTE)
    assert items(out) == [
        ("assistant", "output_text", "Hello, how can I help?"),
        ("user", "input_text", "Book Monday please."),
        ("function_call", "call_1"),
        ("function_call_output", "call_1"),
        ("assistant", "output_text", cut_heard_text(REPLY, 1000, 2000)),
    ]
    assert items(out)[-1][2] == "Booked for…"
    [fc] = [e["item"] for e in out if e.get("item", {}).get("type") == "function_call"]
    assert fc["name"] == "book_slot" and fc["arguments"] == '{"day": "Monday"}'
    assert [e["type"] for e in out].count("response.create") == 0  # nothing owed: no greeting
    assert q.idle and len({e["item"]["id"] for e in out if "item" in e}) == 5


def test_a_response_cut_by_the_drop_ends_incomplete_and_is_asked_for_again():
    p = make(AgentConfig(first_speaker="user"))
    p.session_update()
    caller_turn(p)
    feed(p, committed("item_u1"))
    feed(p, user_text("item_u1", "What time is it?"))
    feed(p, created("resp_1"))
    feed(p, item_added("resp_1", "item_a"))
    feed(p, delta("resp_1", "item_a", b"\xff" * 800))
    feed(p, {"type": "response.output_audio_transcript.delta", "response_id": "resp_1", "item_id": "item_a",
             "output_index": 0, "content_index": 0, "delta": "It is nine"})  # fmt: skip
    p.data_to_send()
    out = p.abort()
    assert out == [
        ResponseDone("item_a", "incomplete"),
        ResponseDone("resp_1", "incomplete"),
        Transcript("agent", "It is nine", "item_a"),
    ]
    q = carried(p)
    events = sent(q)
    assert items(events) == [("user", "input_text", "What time is it?"), ("assistant", "output_text", "It is nine")]
    assert events[-1]["type"] == "response.create"  # the answer owed is asked for again
    assert not q.idle


def test_a_turn_whose_transcript_was_lost_is_replayed_and_answered():
    p = make(AgentConfig(first_speaker="user"))
    p.session_update()
    audio = caller_turn(p, 400)
    feed(p, committed("item_u1"))  # the socket drops before its transcript and the answer
    p.data_to_send()
    assert p.abort() == []
    events = sent(carried(p))
    types = [e["type"] for e in events]
    assert types[0] == "session.update" and types[-2:] == ["input_audio_buffer.commit", "response.create"]
    replayed = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "input_audio_buffer.append")
    assert replayed == audio


def test_caller_speech_in_progress_is_replayed_and_committed_in_the_new_session():
    p = make(AgentConfig(first_speaker="user"))
    p.session_update()
    p.speech_started()
    audio = b"\x11" * PCMU_8K.bytes_for_ms(300)
    p.append_audio(audio)
    p.data_to_send()
    assert not p.idle
    p.abort()
    q = carried(p)
    events = sent(q)
    assert [e["type"] for e in events] == ["session.update", "input_audio_buffer.append"]
    assert not q.idle  # the caller is still talking
    q.end_of_turn()
    assert [e["type"] for e in sent(q)] == ["input_audio_buffer.commit", "response.create"]


def test_barge_in_on_an_item_of_the_earlier_session_recuts_its_carried_text():
    p = make(AgentConfig(greeting="Hi"))
    p.session_update()
    p.greeting()
    p.data_to_send()
    speak(p, "resp_1", {"item_1": (1000, "one two three four")})
    caller_turn(p)
    feed(p, committed("item_u1"))
    feed(p, user_text("item_u1", "hello"))
    speak(p, "resp_2", {"item_2": (1000, "five six seven eight")})
    p.abort()
    q = carried(p)
    first = sent(q)
    ids = [e["item"]["id"] for e in first if e["type"] == "conversation.item.create"]
    # The caller was still hearing item_2 (queued before the switch) and talks over it.
    q.interrupt("item_2", 500)
    out = sent(q)
    assert [e["type"] for e in out] == ["response.cancel", "conversation.item.delete", "conversation.item.create"]
    assert out[1]["item_id"] == ids[2]
    assert out[2]["previous_item_id"] == ids[1]  # in its place, after the caller's turn
    assert out[2]["item"]["content"] == [{"type": "output_text", "text": "five six…"}]
    q.interrupt("item_2", 800)  # a later, longer cut changes nothing
    assert [e["type"] for e in sent(q)] == ["response.cancel"]
    # A third session carries the cut text.
    q.abort()
    r = carried(q)
    assert items(sent(r))[-1] == ("assistant", "output_text", "five six…")
