"""Sans-I/O tests of the OpenAI Realtime protocol core: golden client events and state.

Every client event the protocol emits is validated with its concrete ``openai.types.realtime``
class in strict mode (no coercion) with no undeclared fields; every server sample fed in is
validated with the SDK's ``RealtimeServerEvent`` union first.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pydantic
import pytest

from gateway.formats import L16_16K, L16_24K, PCMA_8K, PCMU_8K, AudioFormat
from gateway.llm.base import AgentConfig, AudioOut, BridgeError, ResponseDone, SpeechStarted, Transcript
from gateway.llm.openai_realtime import (
    RealtimeProtocol,
    azure_backend,
    choose_formats,
    compat_backend,
    cut_heard_text,
    openai_backend,
    xai_backend,
)
from gateway.llm.tools import parse_tools
from tests.llm.conformance import check_openai_client_event, check_openai_server_event

GPT = openai_backend("gpt-realtime")
TOOL = {
    "name": "book_slot",
    "description": "Book a slot",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
    "url": "https://tools.example.com/book",
}


def make(config: AgentConfig | None = None, backend=GPT, carrier: AudioFormat = PCMU_8K, tools=()) -> RealtimeProtocol:
    wire, fmt = choose_formats(backend, carrier)
    return RealtimeProtocol(backend, config or AgentConfig(), wire_format=wire, audio_format=fmt, tools=parse_tools(tools))


def sent(p: RealtimeProtocol, *, allow_extra: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    out = p.data_to_send()
    for ev in out:
        check_openai_client_event(ev, allow_extra=allow_extra)
    return out


def feed(p: RealtimeProtocol, event: dict[str, Any]) -> list[Any]:
    event = {"event_id": "event_x", **event}
    check_openai_server_event(event)
    return p.receive(json.dumps(event))


def created(rid: str) -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": rid, "object": "realtime.response", "status": "in_progress", "output": []}}


def item_added(rid: str, item: str, index: int = 0) -> dict[str, Any]:
    return {"type": "response.output_item.added", "response_id": rid, "output_index": index,
            "item": {"id": item, "type": "message", "role": "assistant", "status": "in_progress", "content": []}}  # fmt: skip


def delta(rid: str, item: str, audio: bytes, *, beta: bool = False) -> dict[str, Any]:
    return {"type": "response.audio.delta" if beta else "response.output_audio.delta", "response_id": rid,
            "item_id": item, "output_index": 0, "content_index": 0, "delta": base64.b64encode(audio).decode()}  # fmt: skip


def transcript_done(rid: str, item: str, text: str) -> dict[str, Any]:
    return {"type": "response.output_audio_transcript.done", "response_id": rid, "item_id": item,
            "output_index": 0, "content_index": 0, "transcript": text}  # fmt: skip


def done(rid: str, status: str = "completed", output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": rid, "object": "realtime.response", "status": status, "output": output or []}}


def committed(item: str) -> dict[str, Any]:
    return {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None}


def user_text(item: str, text: str) -> dict[str, Any]:
    return {"type": "conversation.item.input_audio_transcription.completed", "item_id": item, "content_index": 0,
            "transcript": text, "usage": {"type": "duration", "seconds": 1.0}}  # fmt: skip


def error(message: str, code: str | None = None, type_: str = "invalid_request_error", event_id: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "code": code, "message": message, "event_id": event_id}}


def speak(p: RealtimeProtocol, rid: str, items: dict[str, tuple[int, str]], *, finish: bool = True) -> list[Any]:
    """Feed a response whose items carry ``ms`` of silence each and a transcript."""
    out = feed(p, created(rid))
    for i, (item, (ms, text)) in enumerate(items.items()):
        out += feed(p, item_added(rid, item, i))
        out += feed(p, delta(rid, item, b"\xff" * p.audio_format.bytes_for_ms(ms)))
        out += feed(p, transcript_done(rid, item, text))
    if finish:
        out += feed(p, done(rid))
    return out


# ----------------------------------------------------------------------------- session.update


@pytest.mark.parametrize(
    ("carrier", "wire", "fmt"),
    [
        (PCMU_8K, {"type": "audio/pcmu"}, PCMU_8K),
        (PCMA_8K, {"type": "audio/pcma"}, PCMA_8K),
        (L16_16K, {"type": "audio/pcm", "rate": 24000}, L16_24K),
    ],
)
def test_formats_pass_g711_through_else_l16_24k(carrier, wire, fmt):
    assert choose_formats(GPT, carrier) == (wire, fmt)


@pytest.mark.parametrize(
    ("mode", "interruptible", "expected"),
    [
        ("gateway", True, None),
        # The gateway owns barge-in (interruptible): the server neither cuts nor answers on its own.
        ("server_vad", True, {"type": "server_vad", "create_response": False, "interrupt_response": False}),
        ("semantic_vad", True, {"type": "semantic_vad", "create_response": False, "interrupt_response": False}),
        # Nobody barges in: the server answers its turns itself, never cutting its reply.
        ("semantic_vad", False, {"type": "semantic_vad", "create_response": True, "interrupt_response": False}),
    ],
)
def test_session_update_golden(mode, interruptible, expected):
    cfg = AgentConfig(system_prompt="Be brief.", voice="Cedar", language="en-GB", turn_mode=mode, interruptible=interruptible)
    p = make(cfg, tools=[TOOL])
    p.session_update()
    [ev] = sent(p)
    assert ev["type"] == "session.update"
    assert ev["session"] == {
        "type": "realtime",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": expected,
                      "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"},
        },
        "tools": [{"type": "function", "name": "book_slot", "description": "Book a slot", "parameters": TOOL["parameters"]}],
        "tool_choice": "auto",
    }  # fmt: skip


def test_unknown_voice_falls_back_to_the_backend_default():
    p = make(AgentConfig(voice="joe"))
    p.session_update()
    assert sent(p)[0]["session"]["audio"]["output"]["voice"] == "marin"


def test_xai_session_puts_voice_and_turn_detection_on_top():
    p = make(AgentConfig(voice="ara", turn_mode="server_vad"), backend=xai_backend("grok"), carrier=PCMU_8K)
    assert p.audio_format == AudioFormat(L16_24K.encoding, 8000)
    p.session_update()
    [ev] = p.data_to_send()
    # xAI's session is not OpenAI's schema (rate 8000, voice/turn_detection on top): check the
    # documented shape here; every other event xAI gets is validated with the OpenAI classes.
    assert ev["session"] == {
        "instructions": AgentConfig().system_prompt,
        "voice": "Ara",
        "turn_detection": {"type": "server_vad"},
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}},
                  "output": {"format": {"type": "audio/pcm", "rate": 8000}}},
    }  # fmt: skip
    assert set(ev) == {"type", "event_id", "session"}


def test_backend_urls_and_auth_headers():
    assert GPT.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert GPT.auth_headers("k") == {"Authorization": "Bearer k"}
    az = azure_backend("my-dep", endpoint="https://res.openai.azure.com/")
    assert az.url == "wss://res.openai.azure.com/openai/v1/realtime?model=my-dep"
    assert az.auth_headers("k") == {"api-key": "k"}
    assert xai_backend("grok").url == "wss://api.x.ai/v1/realtime?model=grok"
    c = compat_backend("qwen", base_url="http://10.0.0.5:8000/v1")
    assert c.url == "ws://10.0.0.5:8000/v1/realtime?model=qwen"
    assert c.auth_headers("") == {}


# ----------------------------------------------------------------------------- greeting, turns


def test_greeting_is_a_response_create_with_instructions():
    p = make(AgentConfig(greeting="Hi, this is Ana."))
    p.greeting()
    [ev] = sent(p)
    assert ev["type"] == "response.create"
    assert "Hi, this is Ana." in ev["response"]["instructions"]


def test_greeting_as_system_item_for_compatible_servers():
    p = make(AgentConfig(greeting="Hello there."), backend=compat_backend("m", base_url="ws://h/v1"))
    p.greeting()
    evs = sent(p)
    assert [e["type"] for e in evs] == ["conversation.item.create", "response.create"]
    assert evs[0]["item"]["role"] == "system"


def test_gateway_end_of_turn_commits_and_creates_a_response():
    p = make()
    p.append_audio(b"\xff" * 800)  # 100 ms of μ-law
    p.end_of_turn()
    evs = sent(p)
    assert [e["type"] for e in evs] == ["input_audio_buffer.append", "input_audio_buffer.commit", "response.create"]
    assert base64.b64decode(evs[0]["audio"]) == b"\xff" * 800


def test_too_short_turn_is_not_committed():
    p = make()
    p.append_audio(b"\xff" * 400)  # 50 ms
    p.end_of_turn()
    assert [e["type"] for e in sent(p)] == ["input_audio_buffer.append"]


def test_response_create_waits_for_the_running_response():
    p = make()
    feed(p, created("r1"))
    p.append_audio(b"\xff" * 1600)
    p.end_of_turn()
    assert [e["type"] for e in sent(p)] == ["input_audio_buffer.append", "input_audio_buffer.commit"]
    feed(p, done("r1"))
    assert [e["type"] for e in sent(p)] == ["response.create"]


def test_end_of_turn_is_ignored_with_server_vad():
    p = make(AgentConfig(turn_mode="server_vad"))
    p.append_audio(b"\xff" * 1600)
    p.end_of_turn()
    assert [e["type"] for e in sent(p)] == ["input_audio_buffer.append"]


# ----------------------------------------------------------------------------- audio, barge-in


def test_audio_deltas_become_audio_out_and_beta_names_are_aliases():
    p = make()
    feed(p, created("r1"))
    a = feed(p, delta("r1", "i1", b"\x01\x02"))
    b = feed(p, delta("r1", "i1", b"\x03", beta=True))
    assert a + b == [AudioOut("i1", b"\x01\x02"), AudioOut("i1", b"\x03")]
    assert p.item_ms("i1") == 0  # 3 bytes of μ-law: under a ms


def test_interrupt_cancels_then_truncates_at_heard_ms():
    p = make()
    speak(p, "r1", {"i1": (1000, "one two three four")}, finish=False)
    p.interrupt("i1", 400)
    evs = sent(p)
    assert [e["type"] for e in evs] == ["response.cancel", "conversation.item.truncate"]
    assert evs[1]["item_id"] == "i1" and evs[1]["content_index"] == 0
    assert evs[1]["audio_end_ms"] == 400 and type(evs[1]["audio_end_ms"]) is int
    # Audio still in flight for the cancelled response is not played.
    assert feed(p, delta("r1", "i1", b"\xff" * 80)) == []


def test_interrupt_clamps_to_audio_received_and_casts_to_int():
    p = make()
    speak(p, "r1", {"i1": (700, "a b c")})
    p.interrupt("i1", 5000)
    assert sent(p)[1]["audio_end_ms"] == 700
    q = make()
    speak(q, "r1", {"i1": (700, "a b c")})
    q.interrupt("i1", 333.9)  # a sloppy caller: still a whole int on the wire
    ev = sent(q)[1]
    assert ev["audio_end_ms"] == 333 and type(ev["audio_end_ms"]) is int


def test_interrupt_with_nothing_heard_deletes_the_item():
    p = make()
    speak(p, "r1", {"i1": (500, "hello")})
    p.interrupt("i1", 0)
    evs = sent(p)
    assert [e["type"] for e in evs] == ["response.cancel", "conversation.item.delete"]
    assert evs[1]["item_id"] == "i1"


def test_interrupt_deletes_later_unheard_items_of_a_multi_item_response():
    p = make()
    speak(p, "r1", {"i1": (600, "first part"), "i2": (800, "second part")})
    p.interrupt("i1", 250)
    evs = sent(p)
    assert [(e["type"], e.get("item_id")) for e in evs] == [
        ("response.cancel", None), ("conversation.item.truncate", "i1"), ("conversation.item.delete", "i2"),
    ]  # fmt: skip


def test_interrupt_without_item_uses_the_latest_audio_item():
    p = make()
    speak(p, "r1", {"i1": (300, "a"), "i2": (300, "b")})
    p.interrupt(None, 100)
    trunc = sent(p)[1]
    assert (trunc["type"], trunc["item_id"], trunc["audio_end_ms"]) == ("conversation.item.truncate", "i2", 100)


@pytest.mark.parametrize(("truncate", "cancel", "types"), [
    (False, True, ["response.cancel"]),
    (True, False, ["conversation.item.truncate"]),
    (False, False, []),
])  # fmt: skip
def test_backend_switches_for_servers_without_truncate_or_cancel(truncate, cancel, types):
    p = make(backend=compat_backend("m", base_url="ws://h/v1", supports_truncate=truncate, supports_cancel=cancel))
    speak(p, "r1", {"i1": (500, "one two")})
    p.interrupt("i1", 250)
    assert [e["type"] for e in sent(p)] == types


# ----------------------------------------------------------------------------- transcripts


@pytest.mark.parametrize(("text", "heard", "total", "expected"), [
    ("one two three four", 1000, 1000, "one two three four"),
    ("one two three four", 500, 1000, "one two…"),
    ("one two three four", 240, 1000, ""),
    ("one two three four", 0, 1000, ""),
    ("one two three four", 260, 1000, "one…"),
    ("  spaced   out  ", 2000, 1000, "spaced   out"),
])  # fmt: skip
def test_cut_heard_text(text, heard, total, expected):
    assert cut_heard_text(text, heard, total) == expected


def test_transcripts_come_in_conversation_order_and_cut_to_what_was_heard():
    p = make()
    out = speak(p, "r1", {"greet": (1000, "Hello, how can I help you today?")})
    assert out[-3:] == [ResponseDone("greet", "completed"), ResponseDone("r1", "completed"),
                        Transcript("agent", "Hello, how can I help you today?", "greet")]  # fmt: skip
    assert feed(p, committed("u1")) == []
    # OpenAI transcribes the caller late: the reply waits behind the caller's words.
    out = speak(p, "r2", {"a1": (2000, "Sure, Thursday at nine works, shall I book it?")})
    assert [e for e in out if isinstance(e, Transcript)] == []
    p.interrupt("a1", 1000)  # the caller heard half of the reply, meanwhile
    out = feed(p, user_text("u1", "Can I move my appointment?"))
    assert out == [Transcript("user", "Can I move my appointment?", "u1"), Transcript("agent", "Sure, Thursday at nine…", "a1")]
    assert p.flush_transcripts() == []


def test_flush_releases_what_is_held_at_the_end():
    p = make()
    speak(p, "r1", {"i1": (1000, "Goodbye now.")}, finish=False)
    assert p.flush_transcripts() == [Transcript("agent", "Goodbye now.", "i1")]


def test_response_done_per_audio_item_then_for_the_response():
    p = make()
    out = speak(p, "r1", {"i1": (200, "a"), "i2": (200, "b")})
    assert [e for e in out if isinstance(e, ResponseDone)] == [
        ResponseDone("i1", "completed"), ResponseDone("i2", "completed"), ResponseDone("r1", "completed"),
    ]  # fmt: skip


def test_say_speaks_now_or_after_the_running_response():
    p = make()
    p.say("Are you still there?")
    [ev] = sent(p)
    assert ev["type"] == "response.create" and "Are you still there?" in ev["response"]["instructions"]
    q = make()
    feed(q, created("r1"))
    q.say("Are you still there?")
    assert sent(q) == []
    feed(q, done("r1"))
    assert [e["type"] for e in sent(q)] == ["response.create"]


def test_server_vad_speech_started_and_user_transcript():
    p = make(AgentConfig(turn_mode="server_vad"))
    assert feed(p, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 120, "item_id": "u1"}) == [SpeechStarted()]
    feed(p, committed("u1"))
    assert feed(p, user_text("u1", "hi")) == [Transcript("user", "hi", "u1")]


def test_response_done_event_carries_id_and_status():
    p = make()
    feed(p, created("r9"))
    assert feed(p, done("r9", "cancelled")) == [ResponseDone("r9", "cancelled")]
    assert p.response_id is None


# ----------------------------------------------------------------------------- errors


def test_cancel_not_active_is_not_an_error():
    p = make()
    p.interrupt(None, 0)
    [cancel] = sent(p)
    assert feed(p, error("no active response", "response_cancel_not_active", event_id=cancel["event_id"])) == []


def test_session_update_rejection_is_fatal():
    p = make()
    p.session_update()
    [ev] = sent(p)
    [err] = feed(p, error("Invalid value: 'x'", "invalid_value", event_id=ev["event_id"]))
    assert isinstance(err, BridgeError) and err.fatal and "invalid_value" in err.message


@pytest.mark.parametrize(("code", "type_", "fatal", "label"), [
    ("invalid_api_key", "invalid_request_error", True, "model_error"),
    (None, "authentication_error", True, "model_error"),
    ("session_expired", "invalid_request_error", True, "model_session_limit"),
    ("server_error", "server_error", False, "model_error"),
    ("conversation_already_has_active_response", "invalid_request_error", False, "model_error"),
])  # fmt: skip
def test_error_classification(code, type_, fatal, label):
    [err] = feed(make(), error("boom", code, type_))
    assert err == BridgeError(label, err.message, fatal) and "boom" in err.message


def test_unsupported_truncate_is_switched_off_not_fatal():
    p = make(backend=compat_backend("m", base_url="ws://h/v1"))
    speak(p, "r1", {"i1": (500, "x y")})
    p.interrupt("i1", 100)
    trunc = sent(p)[1]
    [err] = feed(p, error("Unknown event type: conversation.item.truncate", "unknown_event", event_id=trunc["event_id"]))
    assert not err.fatal and p.supports_truncate is False


def test_unsupported_cancel_is_switched_off_silently():
    p = make(backend=compat_backend("m", base_url="ws://h/v1"))
    p.interrupt(None, 0)
    [cancel] = sent(p)
    assert feed(p, error("Unknown event type: response.cancel", "unknown_event", event_id=cancel["event_id"])) == []
    assert p.supports_cancel is False
    p.interrupt(None, 0)
    assert sent(p) == []


def test_malformed_and_unknown_events_are_counted_not_raised():
    p = make()
    assert p.receive("not json") == []
    assert p.receive(json.dumps({"type": "brand.new.event"})) == []
    assert p.receive(json.dumps({"type": "response.output_audio.delta"})) == []  # no item_id
    assert p.unhandled == 3


# ----------------------------------------------------------------------------- tools


def test_function_call_then_output_then_response_create():
    p = make(tools=[TOOL])
    feed(p, created("r1"))
    feed(p, {"type": "response.output_item.added", "response_id": "r1", "output_index": 0,
             "item": {"id": "fc1", "type": "function_call", "name": "book_slot", "call_id": "c1", "arguments": ""}})  # fmt: skip
    feed(p, {"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "fc1", "output_index": 0,
             "call_id": "c1", "name": "book_slot", "arguments": '{"day": "thu"}'})  # fmt: skip
    [call] = p.take_tool_calls()
    assert (call.call_id, call.name, call.arguments) == ("c1", "book_slot", '{"day": "thu"}')
    p.tool_output("c1", '{"ok":true}')  # the response is still running: no response.create yet
    assert [e["type"] for e in sent(p)] == ["conversation.item.create"]
    feed(p, done("r1", output=[{"id": "fc1", "type": "function_call", "name": "book_slot", "call_id": "c1",
                                "arguments": '{"day": "thu"}', "status": "completed"}]))  # fmt: skip
    assert p.take_tool_calls() == []  # seen once only
    assert [e["type"] for e in sent(p)] == ["response.create"]


def test_function_call_only_in_response_done_is_picked_up():
    p = make(tools=[TOOL])
    feed(p, created("r1"))
    feed(p, done("r1", output=[{"id": "fc1", "type": "function_call", "name": "book_slot", "call_id": "c7", "arguments": "{}"}]))
    [call] = p.take_tool_calls()
    assert call.call_id == "c7"
    p.tool_output("c7", "{}")
    evs = sent(p)
    assert [e["type"] for e in evs] == ["conversation.item.create", "response.create"]
    assert evs[0]["item"] == {"type": "function_call_output", "call_id": "c7", "output": "{}"}


# ----------------------------------------------------------------------------- the checker itself


def test_conformance_rejects_a_float_audio_end_ms():
    ok = {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 12}
    check_openai_client_event(ok)
    with pytest.raises(pydantic.ValidationError):
        check_openai_client_event({**ok, "audio_end_ms": 12.0})


def test_conformance_rejects_undeclared_fields_and_unknown_types():
    with pytest.raises(AssertionError):
        check_openai_client_event({"type": "response.cancel", "reason": "barge-in"})
    with pytest.raises(AssertionError):
        check_openai_client_event({"type": "session.update", "session": {"type": "realtime", "voice": "marin"}})
    with pytest.raises(KeyError):
        check_openai_client_event({"type": "response.audio.delta"})
