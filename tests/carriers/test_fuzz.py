"""Property-based fuzzing of every carrier adapter (hypothesis, bounded for CI).

Property: whatever one WebSocket message holds — a carrier's documented message with fields
mutated, deleted or given wrong types, huge numbers, unicode digits, deep nesting; truncated
JSON; arbitrary JSON; random text or bytes — ``adapter.receive()`` returns a non-empty list of
typed events, before and after ``start``, and never falls back to its last-resort
``ProtocolError("internal")`` (a parser bug). A stream of such messages fed to one adapter keeps
that property at every step, and once an adapter has returned :class:`Started` its outbound
builders (``mark``, ``clear``) work.

Bounds: ``max_examples`` per test and adapter (see ``FUZZ``), ``deadline=None`` (a busy CI
machine), well under 30 s in all.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.carriers.events import (
    Cleared,
    Connected,
    Dtmf,
    MarkAck,
    Media,
    ProtocolError,
    Started,
    Stopped,
    Unhandled,
)
from gateway.carriers.registry import CARRIERS, make_adapter

from ._golden import golden, text

EVENT_TYPES = (Connected, Started, Media, Dtmf, MarkAck, Cleared, Stopped, ProtocolError, Unhandled)

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_RAW_DOCUMENTED = [
    {"event": "start", "sampleRate": 16000, "encoding": "l16", "customParameters": {"a": "b"}, "callId": "c"},
    {"event": "start", "encoding": "pcmu"},
    {"event": "mark", "name": "m"},
    {"event": "dtmf", "digit": "5"},
    {"event": "cleared"},
    {"event": "stop", "reason": "hangup"},
]


#: The WebRTC transport's internal frames (gateway.carriers.webrtc's docstring).
_WEBRTC_DOCUMENTED = [
    {"event": "start", "streamId": "webrtc-call_1", "sampleRate": 16000},
    {"event": "mark", "name": "m"},
    {"event": "cleared"},
    {"event": "page", "text": '{"type": "dtmf", "digit": "5"}'},
    {"event": "page", "text": '{"type": "hangup"}'},
    {"event": "page", "binary": 12},
    {"event": "stop", "reason": "peer_closed"},
]


def documented(name: str) -> list[dict]:
    """The carrier's documented inbound messages (golden files; the raw and webrtc protocols' own docs)."""
    if name == "raw":
        return copy.deepcopy(_RAW_DOCUMENTED)
    if name == "webrtc":
        return copy.deepcopy(_WEBRTC_DOCUMENTED)
    return [m for m in golden(name)["inbound"].values() if isinstance(m, dict)]


def start_frames(name: str) -> list[str]:
    """Frames that take a fresh adapter to streaming."""
    if name == "raw":
        return [text(_RAW_DOCUMENTED[0])]
    if name == "webrtc":
        return [text(_WEBRTC_DOCUMENTED[0])]
    doc = golden(name)["inbound"]
    return [text(doc["connected_minimal" if name == "vonage" else "start"])]


# ------------------------------------------------------------------ strategies

#: Strings carriers never send but parsers meet: unicode digits, signs, spaces, huge digit runs.
_ODD_TEXT = st.sampled_from(
    ["", " ", "²", "٥", "８０００", "1_0", " 8000", "-1", "1e3", "NaN", "9" * 25, "9" * 5000, "\x00", "\ud7ff",
     "audio/x-mulaw", "audio/l16;rate=²", "audio/l16;rate=16000", "PCMU", "L16", "media", "start", "0", "#", "*"]
)
_ODD_INTS = st.sampled_from([0, -1, 1, 2, 5, 7999, 8000, 8001, 16000, 22050, 2**31, 2**63 - 1, -(2**63), 10**30])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    _ODD_INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
    _ODD_TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_DELETE = object()


def _nested_json(depth: int, leaf: str = '"x"') -> str:
    return "[" * depth + leaf + "]" * depth


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out: list[tuple] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(prefix + (key,))
            out += _paths(value, prefix + (key,))
    return out


@st.composite
def mutated_message(draw, name: str) -> str:
    """A documented message with 1–3 fields replaced, deleted or nested very deep, as JSON text."""
    msg = draw(st.sampled_from(documented(name)))
    deep_at: tuple | None = None
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(msg)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        node = msg
        for key in path[:-1]:
            node = node[key]
        choice = draw(st.sampled_from(["value", "value", "delete", "deep"]))
        if choice == "delete":
            del node[path[-1]]
        elif choice == "deep" and deep_at is None:
            node[path[-1]] = "__DEEP__"
            deep_at = path
        else:
            node[path[-1]] = draw(_JSON)
    frame = json.dumps(msg)
    if deep_at is not None:
        frame = frame.replace('"__DEEP__"', _nested_json(draw(st.sampled_from([17, 255, 300, 1000, 1023]))))
    return frame


@st.composite
def truncated_message(draw, name: str) -> str:
    frame = json.dumps(draw(st.sampled_from(documented(name))))
    return frame[: draw(st.integers(0, max(0, len(frame) - 1)))]


def frames(name: str) -> st.SearchStrategy:
    """Any one WebSocket message a peer could send to ``name``'s stream."""
    extra_fields = st.fixed_dictionaries({"event": st.sampled_from(_events(name)) | st.text(max_size=12)}).flatmap(
        lambda head: st.dictionaries(st.text(max_size=10), _JSON, max_size=5).map(lambda rest: json.dumps(head | rest))
    )
    return st.one_of(
        mutated_message(name),
        mutated_message(name),
        truncated_message(name),
        extra_fields,
        _JSON.map(json.dumps),
        st.text(max_size=64),
        st.binary(max_size=700),
        st.sampled_from([b"", bytes(320), bytes(640), bytes(641), bytearray(8), memoryview(bytes(16))]),
    )


def _events(name: str) -> list[str]:
    return sorted({m["event"] for m in documented(name) if isinstance(m.get("event"), str)} | {"media", "start"})


# ------------------------------------------------------------------ properties


def _check(events: object, frame: object) -> None:
    assert isinstance(events, list) and events, (frame, events)
    for event in events:
        assert isinstance(event, EVENT_TYPES), (frame, event)
        assert not (isinstance(event, ProtocolError) and event.kind == "internal"), (str(frame)[:300], event)


def _streaming(name: str):
    adapter = make_adapter(name)
    for frame in start_frames(name):
        assert any(isinstance(e, Started) for e in adapter.receive(frame))
    return adapter


@pytest.mark.parametrize("name", CARRIERS)
def test_any_single_frame_gives_typed_events_before_and_after_start(name: str) -> None:
    @FUZZ
    @given(frame=frames(name))
    def run(frame: object) -> None:
        _check(make_adapter(name).receive(frame), frame)
        _check(_streaming(name).receive(frame), frame)

    run()


@pytest.mark.parametrize("name", CARRIERS)
def test_a_stream_of_fuzzed_frames_keeps_the_adapter_sound(name: str) -> None:
    @FUZZ
    @given(stream=st.lists(frames(name) | st.sampled_from(start_frames(name)), min_size=1, max_size=12))
    def run(stream: list) -> None:
        adapter = make_adapter(name)
        started = False
        for frame in stream:
            events = adapter.receive(frame)
            _check(events, frame)
            started = started or any(isinstance(e, Started) for e in events)
        if started:  # outbound builders work once a start was accepted
            assert adapter.audio_format is not None
            adapter.clear()
            adapter.mark("m1")

    run()
