"""Bad input, for every adapter: each case gives the right ProtocolError / Unhandled, never raises.

Also a mutation sweep over every documented message (every field deleted or given every JSON
type) that must never raise nor hit the adapters' last-resort ``internal`` error, and checks
that error details never echo payloads.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Callable

import pytest

from gateway.carriers.events import (
    MAX_FRAME_BYTES,
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


@dataclass(frozen=True)
class Carrier:
    name: str
    start: list  # frames that take a fresh adapter to streaming
    media: Callable[[str], str] | None  # JSON media message with this base64 payload (text protocols)
    binary_audio: bool  # caller audio comes as binary frames


def _json_media(message: dict, path: tuple[str, ...] = ("media", "payload")) -> Callable[[str], str]:
    def build(payload: str) -> str:
        msg = copy.deepcopy(message)
        node = msg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = payload
        return text(msg)

    return build


_TW, _TX, _PL, _VO, _EX = (golden(n) for n in ("twilio", "telnyx", "plivo", "vonage", "exotel"))

CARRIER_TABLE = {
    "twilio": Carrier(
        "twilio", [text(_TW["inbound"]["start"])], _json_media(_TW["inbound"]["media_inbound_track"]), False
    ),
    "telnyx": Carrier("telnyx", [text(_TX["inbound"]["start"])], _json_media(_TX["inbound"]["media"]), False),
    "plivo": Carrier("plivo", [text(_PL["inbound"]["start"])], _json_media(_PL["inbound"]["media"]), False),
    "exotel": Carrier("exotel", [text(_EX["inbound"]["start"])], _json_media(_EX["inbound"]["media"]), False),
    "vonage": Carrier("vonage", [text(_VO["inbound"]["connected_minimal"])], None, True),
    "raw": Carrier("raw", ['{"event":"start","sampleRate":16000}'], None, True),
    "webrtc": Carrier("webrtc", ['{"event":"start","streamId":"pc","sampleRate":16000}'], None, True),
}


def test_table_covers_every_carrier() -> None:
    assert set(CARRIER_TABLE) == set(CARRIERS)


def fresh(name: str):
    return make_adapter(name)


def streaming(name: str):
    adapter = make_adapter(name)
    for frame in CARRIER_TABLE[name].start:
        events = adapter.receive(frame)
        assert any(isinstance(e, Started) for e in events), events
    return adapter


def one(adapter, frame) -> object:
    events = adapter.receive(frame)
    assert isinstance(events, list) and len(events) == 1, events
    return events[0]


ALL = sorted(CARRIER_TABLE)
TEXT_AUDIO = [n for n in ALL if not CARRIER_TABLE[n].binary_audio]
BINARY_AUDIO = [n for n in ALL if CARRIER_TABLE[n].binary_audio]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("state", ["fresh", "streaming"])
@pytest.mark.parametrize(
    ("frame", "kind", "detail"),
    [
        ("{", "malformed_json", "1 chars"),
        ('{"event": "media", "media": {"payload": "AAAA"', "malformed_json", None),
        ("[1, 2]", "malformed_json", "not a JSON object"),
        ('"start"', "malformed_json", "not a JSON object"),
        ("", "malformed_json", "0 chars"),
        ('{"foo": 1}', "missing_field", "event"),
        ('{"event": 5}', "bad_field", "event"),
        ('{"event": null}', "missing_field", "event"),
    ],
)
def test_unparseable_text(name: str, state: str, frame: str, kind: str, detail: str | None) -> None:
    adapter = fresh(name) if state == "fresh" else streaming(name)
    event = one(adapter, frame)
    assert isinstance(event, ProtocolError) and event.kind == kind
    if detail is not None:
        assert event.detail == detail


@pytest.mark.parametrize("name", ALL)
def test_unknown_event_is_unhandled(name: str) -> None:
    assert one(fresh(name), '{"event": "bogus"}') == Unhandled("bogus")
    assert one(streaming(name), '{"event": "bogus", "x": 1}') == Unhandled("bogus")


@pytest.mark.parametrize("name", ALL)
def test_unknown_event_name_is_truncated(name: str) -> None:
    event = one(fresh(name), text({"event": "e" * 1000}))
    assert event == Unhandled("e" * 64)


@pytest.mark.parametrize("name", ALL)
def test_oversize_text(name: str) -> None:
    frame = '{"event":"media","pad":"' + "x" * MAX_FRAME_BYTES + '"}'
    event = one(streaming(name), frame)
    assert event.kind == "oversize" and str(MAX_FRAME_BYTES) in event.detail


@pytest.mark.parametrize("name", BINARY_AUDIO)
def test_oversize_binary(name: str) -> None:
    event = one(streaming(name), bytes(MAX_FRAME_BYTES + 2))
    assert event.kind == "oversize"


@pytest.mark.parametrize("name", BINARY_AUDIO)
def test_binary_audio_before_start(name: str) -> None:
    assert one(fresh(name), bytes(320)).kind == "before_start"


@pytest.mark.parametrize("name", TEXT_AUDIO)
def test_binary_on_a_text_protocol(name: str) -> None:
    for adapter in (fresh(name), streaming(name)):
        assert one(adapter, b"\x00\x01\x02") == ProtocolError("unexpected_binary", "3 bytes")
        assert one(adapter, bytearray(4)) == ProtocolError("unexpected_binary", "4 bytes")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("frame", [None, 123, 1.5, object()])
def test_not_a_frame_at_all(name: str, frame: object) -> None:
    event = one(streaming(name), frame)
    assert isinstance(event, ProtocolError) and event.kind == "bad_field"


@pytest.mark.parametrize("name", TEXT_AUDIO)
def test_media_before_start(name: str) -> None:
    event = one(fresh(name), CARRIER_TABLE[name].media("AAAA"))
    assert event == ProtocolError("before_start", "media")


@pytest.mark.parametrize("name", TEXT_AUDIO)
@pytest.mark.parametrize("payload", ["!!!!", "AAA", "AA=A", "AAAA\n", "é", "AAAA AAAA"])
def test_bad_base64(name: str, payload: str) -> None:
    event = one(streaming(name), CARRIER_TABLE[name].media(payload))
    assert event == ProtocolError("bad_base64", f"media.payload ({len(payload)} chars)")


@pytest.mark.parametrize("name", TEXT_AUDIO)
def test_media_without_payload(name: str) -> None:
    msg = json.loads(CARRIER_TABLE[name].media("AAAA"))
    del msg["media"]["payload"]
    assert one(streaming(name), text(msg)) == ProtocolError("missing_field", "media.payload")
    msg["media"]["payload"] = 12
    assert one(streaming(name), text(msg)) == ProtocolError("bad_field", "media.payload")
    del msg["media"]
    assert one(streaming(name), text(msg)) == ProtocolError("missing_field", "media")


@pytest.mark.parametrize("name", TEXT_AUDIO)
def test_start_without_its_object(name: str) -> None:
    assert one(fresh(name), '{"event": "start"}') == ProtocolError("missing_field", "start", fatal=True)


@pytest.mark.parametrize("name", ["twilio", "telnyx", "exotel"])
def test_mark_before_start(name: str) -> None:
    assert one(fresh(name), '{"event": "mark", "mark": {"name": "m"}}') == ProtocolError("before_start", "mark")


@pytest.mark.parametrize("name", ALL)
def test_details_never_echo_payloads(name: str) -> None:
    secret = "SECRETxPAYLOADxTOKEN"
    adapter = streaming(name)
    frames = [
        "{" + secret,
        text({"event": "media", "media": {"payload": secret + "!"}}),
        text({"event": "start", "start": {"streamSid": secret, "callSid": 5}, "customParameters": secret}),
        text({"event": secret}),
    ]
    if CARRIER_TABLE[name].media:
        frames.append(CARRIER_TABLE[name].media(secret + "!!"))
    for frame in frames:
        for event in adapter.receive(frame):
            if isinstance(event, ProtocolError):
                assert secret not in event.detail, (frame, event)
                assert len(event.detail) <= 100, event


# ------------------------------------------------------------------ mutation sweep

_VALUES = [None, 0, -1, 7, 1.5, True, "", "x", "9" * 40, [], ["a"], {}, {"k": "v"}]


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(prefix + (key,))
            out += _paths(value, prefix + (key,))
    return out


def _mutants(message: dict):
    for path in _paths(message):
        for value in [_DELETE, *_VALUES]:
            msg = copy.deepcopy(message)
            node = msg
            for key in path[:-1]:
                node = node[key]
            if value is _DELETE:
                del node[path[-1]]
            else:
                node[path[-1]] = value
            yield msg


_DELETE = object()


def _documented_messages(name: str) -> list[dict]:
    if name == "raw":
        return [
            {"event": "start", "sampleRate": 16000, "encoding": "l16", "customParameters": {"a": "b"}, "callId": "c"},
            {"event": "mark", "name": "m"},
            {"event": "dtmf", "digit": "5"},
            {"event": "stop", "reason": "r"},
        ]
    if name == "webrtc":  # the WebRTC transport's internal frames (gateway.carriers.webrtc)
        return [
            {"event": "start", "streamId": "pc", "sampleRate": 16000},
            {"event": "mark", "name": "m"},
            {"event": "cleared"},
            {"event": "page", "text": '{"type": "dtmf", "digit": "5"}'},
            {"event": "page", "binary": 3},
            {"event": "stop", "reason": "r"},
        ]
    doc = golden(name)["inbound"]
    return [m for m in doc.values() if isinstance(m, dict)]


@pytest.mark.parametrize("name", ALL)
def test_mutated_documented_messages_never_raise(name: str) -> None:
    count = 0
    for message in _documented_messages(name):
        for mutant in _mutants(message):
            frame = text(mutant)
            for adapter in (fresh(name), streaming(name)):
                events = adapter.receive(frame)
                assert isinstance(events, list) and events, (mutant, events)
                for event in events:
                    assert isinstance(event, EVENT_TYPES), (mutant, event)
                    assert not (isinstance(event, ProtocolError) and event.kind == "internal"), (mutant, event)
                count += 1
    assert count > 100
