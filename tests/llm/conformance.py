"""Validate wire messages with the vendors' official SDK types, strictly.

OpenAI client events: the concrete ``openai.types.realtime.<X>Event`` class per event type,
``model_validate(strict=True)`` (no int/float/str coercion), and no field the class does not
declare anywhere in the tree (the SDK models allow extras, so a misspelt field would otherwise
pass). Gemini client messages: ``google.genai.types.LiveClientMessage`` (extras forbidden), from
the JSON text, with every key in the API's camelCase spelling. Server samples: the SDKs' server
unions (``RealtimeServerEvent`` through a ``TypeAdapter``; ``LiveServerMessage``).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
from google.genai import types as gtypes
from openai.types import realtime as rt

OPENAI_CLIENT_EVENTS: dict[str, type[pydantic.BaseModel]] = {
    "session.update": rt.SessionUpdateEvent,
    "input_audio_buffer.append": rt.InputAudioBufferAppendEvent,
    "input_audio_buffer.commit": rt.InputAudioBufferCommitEvent,
    "input_audio_buffer.clear": rt.InputAudioBufferClearEvent,
    "response.create": rt.ResponseCreateEvent,
    "response.cancel": rt.ResponseCancelEvent,
    "conversation.item.create": rt.ConversationItemCreateEvent,
    "conversation.item.truncate": rt.ConversationItemTruncateEvent,
    "conversation.item.delete": rt.ConversationItemDeleteEvent,
}

_SERVER = pydantic.TypeAdapter(rt.RealtimeServerEvent)

#: Beta names → GA names (a beta sample is validated under its GA type).
BETA_TO_GA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
}


def assert_no_extra(obj: Any, path: str = "$") -> None:
    """Fail if any model in the tree holds fields its class does not declare."""
    if isinstance(obj, pydantic.BaseModel):
        extra = obj.model_extra or {}
        assert not extra, f"{path}: undeclared fields {sorted(extra)} on {type(obj).__name__}"
        for name in type(obj).model_fields:
            assert_no_extra(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_no_extra(v, f"{path}[{i}]")


def check_openai_client_event(msg: dict[str, Any], *, allow_extra: frozenset[str] = frozenset()) -> pydantic.BaseModel:
    """Validate one client event with its concrete SDK class; return the model.

    Args:
        allow_extra: top-level ``session`` fields allowed beyond the GA schema (xAI's).
    """
    cls = OPENAI_CLIENT_EVENTS[msg["type"]]
    if allow_extra and msg["type"] == "session.update":
        msg = {**msg, "session": {k: v for k, v in msg["session"].items() if k not in allow_extra}}
    model = cls.model_validate(msg, strict=True)
    assert_no_extra(model)
    assert model.type == msg["type"]
    return model


def check_openai_server_event(event: dict[str, Any]) -> pydantic.BaseModel:
    """Validate one server event sample with the SDK's ``RealtimeServerEvent`` union."""
    event = {**event, "type": BETA_TO_GA.get(event["type"], event["type"])}
    model = _SERVER.validate_python(event)
    assert model.type == event["type"]
    return model


def _key_paths(value: Any, prefix: str = "", free: frozenset[str] = frozenset()) -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{prefix}.{k}"
            out.add(p)
            if k not in free:
                out |= _key_paths(v, p, free)
    elif isinstance(value, list):
        for v in value:
            out |= _key_paths(v, f"{prefix}[]", free)
    return out


#: Fields holding free-form JSON (their inner keys are the user's, not the API's).
_GEMINI_FREE = frozenset({"parametersJsonSchema", "response", "args"})


def check_gemini_client_message(msg: dict[str, Any]) -> gtypes.LiveClientMessage:
    """Validate one client message with ``LiveClientMessage`` from its JSON text.

    Also checks every key is the API's camelCase name (``populate_by_name`` would accept the
    SDK's snake_case too, which the server does not document).
    """
    setup = msg.get("setup")
    if isinstance(setup, dict) and "realtimeInputConfig" in setup:
        # google-genai's LiveClientSetup type lacks this field although the SDK's own connect()
        # sends it there (_live_converters: setv(['setup', 'realtimeInputConfig'])) as the API
        # reference documents: validate it with its own type, the rest with the message type.
        ric = setup["realtimeInputConfig"]
        dumped_ric = gtypes.RealtimeInputConfig.model_validate_json(json.dumps(ric)).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        assert _key_paths(ric) == _key_paths(dumped_ric), f"realtimeInputConfig keys: {ric}"
        msg = {**msg, "setup": {k: v for k, v in setup.items() if k != "realtimeInputConfig"}}
    text = json.dumps(msg)
    model = gtypes.LiveClientMessage.model_validate_json(text)
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert _key_paths(msg, free=_GEMINI_FREE) == _key_paths(dumped, free=_GEMINI_FREE), (
        f"keys differ from the API's camelCase spelling: {msg}"
    )
    return model


def check_gemini_server_message(msg: dict[str, Any]) -> gtypes.LiveServerMessage:
    """Validate one server message sample with ``LiveServerMessage`` (JSON, as sent)."""
    return gtypes.LiveServerMessage.model_validate_json(json.dumps(msg))
